"""Loading Core ML ML Programs from ``.mlpackage`` and ``.mlmodelc`` bundles.

The common representation is the MILSpec ``Program`` protobuf (``coremltools.proto.MIL_pb2``)
plus the ``ModelDescription`` (``coremltools.proto.Model_pb2``) holding the I/O contract.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kiln.coreml import paths
from kiln.coreml.manifest import MANIFEST, read_package
from kiln.coreml.ops import op_histogram

from . import dtypes
from .errors import ModelFormatError
from .compiler import build_plan
from .constant_pool import ConstantPool
from .plan import ExecutionPlan
from .plan_io import IOSpec, Prediction
from .registry import opset_name
from .values import BlobStore, tensor_type_from_proto


@dataclass
class LoadedModel:
    """An ML Program read from disk, ready to be compiled into execution plans."""

    path: Path
    kind: str  # "mlpackage" or "mlmodelc"
    specification_version: int
    description: object  # coremltools.proto.Model_pb2.ModelDescription
    program: object  # coremltools.proto.MIL_pb2.Program
    model_root: Path  # what "@model_path" in blob references resolves to
    _plans: dict = field(default_factory=dict, repr=False)
    # const/constexpr values shared by every plan of this model (fp16 weights kept as float16)
    constants: ConstantPool = field(default_factory=ConstantPool, repr=False)

    # -- program structure ---------------------------------------------------------------------
    @property
    def function_names(self) -> list[str]:
        return sorted(self.program.functions)

    @property
    def default_function(self) -> str:
        name = getattr(self.description, "defaultFunctionName", "") or "main"
        return name

    def opset(self, function: str | None = None) -> str:
        """Canonical opset name ("iOS15".."iOS18") of a function (default: main)."""
        fn = self._function(function)
        try:
            return opset_name(fn.opset)
        except ValueError:
            raise ModelFormatError(f"unknown opset {fn.opset!r}", self.path) from None

    def _function(self, function: str | None):
        name = function or self.default_function
        if name not in self.program.functions:
            raise ModelFormatError(
                f"program has no function '{name}' (functions: {self.function_names})", self.path
            )
        return self.program.functions[name]

    def block(self, function: str | None = None):
        fn = self._function(function)
        if fn.opset not in fn.block_specializations:
            raise ModelFormatError(f"function has no block for its opset {fn.opset}", self.path)
        return fn.block_specializations[fn.opset]

    def inputs(self, function: str | None = None) -> list[IOSpec]:
        """The function's inputs (name, MIL dtype, shape with None for flexible dimensions)."""
        specs = []
        for value in self._function(function).inputs:
            ttype = tensor_type_from_proto(value.type, f"input '{value.name}'")
            if ttype is None:
                raise ModelFormatError(f"function input '{value.name}' is not a tensor", self.path)
            specs.append(IOSpec(value.name, ttype))
        return specs

    def outputs(self, function: str | None = None) -> list[IOSpec]:
        """The function's outputs, typed by the ops that produce them."""
        block = self.block(function)
        types = {}

        def collect(b):
            for op in b.operations:
                for out in op.outputs:
                    types[out.name] = out.type
                for nested in op.blocks:
                    collect(nested)

        collect(block)
        for value in self._function(function).inputs:
            types[value.name] = value.type
        specs = []
        for name in block.outputs:
            if name not in types:
                raise ModelFormatError(f"function output '{name}' is never defined", self.path)
            ttype = tensor_type_from_proto(types[name], f"output '{name}'")
            if ttype is None:
                raise ModelFormatError(f"function output '{name}' is not a tensor", self.path)
            specs.append(IOSpec(name, ttype))
        return specs

    def op_histogram(self, function: str | None = None) -> dict[str, int]:
        return op_histogram(self.block(function))

    def weight_files(self) -> list[Path]:
        """The weight files below ``weights/`` (regular files only: a link is refused, not followed)."""
        weights = self.model_root / "weights"
        if weights.is_symlink():
            raise ModelFormatError("weights/ is a symlink; kiln never follows links inside a model", weights)
        if not weights.is_dir():
            return []
        return [p for p in paths.files_below(weights) if p.suffix == ".bin"]

    # -- execution -----------------------------------------------------------------------------
    def plan(self, precision: str = dtypes.FP32, function: str | None = None, *, fuse: bool = True) -> ExecutionPlan:
        """The execution plan of ``function`` (default: main) in ``precision``; built once, cached.
        ``fuse=False``: no op fusion (the reference the fused plan is tested against)."""
        dtypes.check_precision(precision)
        key = (function or self.default_function, precision, fuse)
        plan = self._plans.get(key)
        if plan is None:
            with BlobStore(self.model_root) as blobs:
                plan = build_plan(self.program, key[0], precision, blobs, self.constants, fuse=fuse)
            self._plans[key] = plan
        return plan

    def predict(self, inputs, precision: str = dtypes.FP32, function: str | None = None) -> Prediction:
        return self.plan(precision, function).run(inputs)


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Load an ``.mlpackage`` or ``.mlmodelc`` directory holding an ML Program."""
    path = Path(path)
    if not path.exists():
        raise ModelFormatError("no such model", path)
    if not path.is_dir():
        raise ModelFormatError("a model must be an .mlpackage or .mlmodelc directory", path)
    if (path / MANIFEST).exists() or path.suffix == ".mlpackage":
        return _load_mlpackage(path)
    if (path / "model.mil").exists() or path.suffix == ".mlmodelc":
        return _load_mlmodelc(path)
    raise ModelFormatError("neither an .mlpackage (Manifest.json) nor an .mlmodelc (model.mil)", path)


def _load_mlpackage(package: Path) -> LoadedModel:
    source = read_package(package)
    return LoadedModel(
        path=package,
        kind="mlpackage",
        specification_version=int(source.model.specificationVersion),
        description=source.model.description,
        program=source.model.mlProgram,
        model_root=source.model_dir,
    )


def _load_mlmodelc(bundle: Path) -> LoadedModel:
    from kiln.coreml.coremldata import read_coremldata
    from kiln.coreml.mil_text.parser import parse_program

    mil_file = bundle / "model.mil"
    data_file = bundle / "coremldata.bin"
    for required in (mil_file, data_file):
        if not required.exists():
            raise ModelFormatError(f"missing {required.name}", bundle)
        paths.regular_file(required, required.name)
    try:
        text = mil_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"unreadable model.mil: {exc}", mil_file) from None
    program = parse_program(text, file=str(mil_file))
    spec_version, description = read_coremldata(data_file)
    return LoadedModel(
        path=bundle,
        kind="mlmodelc",
        specification_version=int(spec_version),
        description=description,
        program=program,
        model_root=bundle,
    )
