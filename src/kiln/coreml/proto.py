"""Core ML's protobuf message modules (``Model_pb2``, ``MIL_pb2``, ``FeatureTypes_pb2``) without
importing the coremltools package.

``from kiln.coreml.proto import Model_pb2`` first runs ``coremltools/__init__``, which imports the
converters, torch and scikit-learn: 2.8-5 s and ~400 MB per process, paid by every kiln process
that only reads or writes Core ML files (``kiln compile`` of a small model took 3.2 s, nearly all of
it that import). Here the generated modules are imported by themselves, under their own names
(``coremltools.proto.Model_pb2``), so a later ``import coremltools`` in the same process finds them
in ``sys.modules`` and reuses them: one set of message classes per process, whichever came first.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

_PACKAGE = "coremltools"
_PROTO = "coremltools.proto"


def _import_without_package(names: tuple[str, ...]) -> list[types.ModuleType]:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("kiln needs coremltools (its Core ML protobuf definitions); it is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    # Stand-ins for the two packages, so the generated modules' relative imports resolve below
    # coremltools/proto; removed again, so a later `import coremltools` runs its real __init__.
    stand_ins = {}
    for name, path in ((_PACKAGE, root), (_PROTO, root / "proto")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        module.__package__ = name
        stand_ins[name] = module
    added = [name for name in stand_ins if name not in sys.modules]
    for name in added:
        sys.modules[name] = stand_ins[name]
    try:
        return [importlib.import_module(f"{_PROTO}.{name}") for name in names]
    finally:
        for name in added:
            if sys.modules.get(name) is stand_ins[name]:
                del sys.modules[name]


def _load(*names: str) -> list[types.ModuleType]:
    if _PACKAGE in sys.modules:  # coremltools is (being) imported: its own modules
        return [importlib.import_module(f"{_PROTO}.{name}") for name in names]
    return _import_without_package(names)


FeatureTypes_pb2, MIL_pb2, Model_pb2 = _load("FeatureTypes_pb2", "MIL_pb2", "Model_pb2")

__all__ = ["FeatureTypes_pb2", "MIL_pb2", "Model_pb2"]
