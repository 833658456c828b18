"""Reading a family spec imports no torch: a family's hooks in its build and checkpoint parts are
:class:`~kiln.family.spec.Deferred` (imported on first call), its contracts live in torch-free
modules, so a job that only judges (parity, end to end, summaries, contract, metadata, compile)
starts without torch's ~1 s of imports."""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.foundation.errors import ModelError
from kiln.family.spec import Deferred, DeferredPart

SRC = Path(__file__).resolve().parents[2] / "src"

#: the modules the judging jobs import (kiln.workflow.jobs: parity, end_to_end, metadata,
#: quantization summary and plot, contract, compile)
JUDGING_MODULES = ("kiln.workflow.jobs", "kiln.validate.run", "kiln.validate.backends", "kiln.validate.reference",
                   "kiln.validate.metadata", "kiln.distribution.report", "kiln.distribution.contracts",
                   "kiln.integrity.artifacts", "kiln.quantize.run", "kiln.quantize.summary", "kiln.compile.stage")


def test_a_deferred_hook_imports_its_module_on_first_call_only():
    hook = DeferredPart("kiln.models.silero_vad.contract").steps_of
    assert isinstance(hook, Deferred) and hook._target is None          # nothing resolved yet
    component = type("Component", (), {"options": {"steps": 8}})()
    assert hook(component) == 8
    from kiln.models.silero_vad.contract import steps_of
    assert hook.resolve() is steps_of


def test_a_deferred_hook_compares_hashes_and_pickles_as_its_module_and_name():
    a, b = Deferred("kiln.models.kokoro.build", "wrapper"), DeferredPart("kiln.models.kokoro.build").wrapper
    assert a == b and hash(a) == hash(b) and a != Deferred("kiln.models.kokoro.build", "example")
    copy = pickle.loads(pickle.dumps(a))
    assert copy == a and copy._target is None and "kiln.models.kokoro.build.wrapper" in repr(copy)
    with pytest.raises(AttributeError):   # dunders are not hooks (copy, pickle and hasattr probe them)
        DeferredPart("kiln.models.kokoro.build").__wrapped__


def test_a_missing_or_uncallable_hook_is_a_model_error_naming_module_and_attribute():
    with pytest.raises(ModelError, match=r"kiln\.models\.silero_vad\.contract\.no_such_hook is missing"):
        Deferred("kiln.models.silero_vad.contract", "no_such_hook")()
    with pytest.raises(ModelError, match=r"kiln\.models\.silero_vad\.contract\.CONTRACT is a Contract, not callable"):
        Deferred("kiln.models.silero_vad.contract", "CONTRACT").resolve()


def test_a_family_package_still_hands_out_its_part_modules():
    # the spec's DeferredParts are not bound to the parts' names: `from package import part` is the module
    import types

    from kiln.models.kokoro import checkpoint as kokoro_checkpoint
    from kiln.models.parakeet_eou import checkpoint as eou_checkpoint
    from kiln.models.parakeet_tdt import checkpoint as tdt_checkpoint

    for module in (kokoro_checkpoint, eou_checkpoint, tdt_checkpoint):
        assert isinstance(module, types.ModuleType) and hasattr(module, "build_random"), module


def _top_level_names(module: str) -> set[str]:
    """The names module ``module`` defines or imports at its top level, read from its source (the
    build parts import torch: this test does not import them)."""
    tree = ast.parse((SRC / (module.replace(".", "/") + ".py")).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _deferred_hooks(value, seen=None):
    """Every Deferred reachable from a spec (dataclass fields, tuples, partials)."""
    import dataclasses
    import functools

    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, Deferred):
        yield value
    elif isinstance(value, functools.partial):
        yield from _deferred_hooks(value.func, seen)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _deferred_hooks(getattr(value, f.name), seen)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _deferred_hooks(item, seen)


def test_every_deferred_hook_of_every_family_names_a_function_its_module_defines():
    from kiln.config import load_config
    from kiln.models import family_names, family_of, get_family

    specs = [get_family(n) for n in family_names() if n != "plain"]
    specs += [family_of(m) for m in load_config(SRC.parent / "config.yaml").models.values()]
    hooks = {h for spec in specs for h in _deferred_hooks(spec)}
    assert {h.module for h in hooks} == {  # the torch-importing parts (plain's build imports no torch)
        *(f"kiln.models.{f}.{part}" for f in ("kokoro", "parakeet_eou", "parakeet_tdt") for part in ("build", "checkpoint")),
        "kiln.models.silero_vad.build", "kiln.models.silero_vad_onnx.build"}
    missing = [h for h in hooks if h.attribute not in _top_level_names(h.module)]
    assert not missing, f"hooks naming nothing: {missing}"


def test_reading_every_family_spec_and_the_judging_modules_imports_no_torch():
    # a fresh process, as Snakemake starts a job: every family's spec, every configured model's spec
    # checked against config.yaml, and the modules of the judging jobs
    script = (
        "import sys\n"
        "from kiln.config import load_config\n"
        "from kiln.models import check_models, family_names, family_of, get_family\n"
        "[get_family(n) for n in family_names() if n != 'plain']\n"
        f"config = load_config({str(SRC.parent / 'config.yaml')!r})\n"
        "check_models(config)\n"
        "[family_of(m).components for m in config.models.values()]\n"
        f"for module in {JUDGING_MODULES!r}: __import__(module)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'nemo', 'coremltools')))\n")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]", out.stdout
