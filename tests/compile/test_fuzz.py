"""Bounded fuzz test of the compiler: byte flips and truncations anywhere in a package give a bundle
or a kiln error, never a crash, and never leave a temporary or a partial bundle behind."""

from __future__ import annotations

import shutil

import numpy as np

from kiln.compile import compile_package
from kiln.foundation.errors import KilnError
from tests.fuzzing import corrupt_copy


def test_fuzz_byte_flips_compile_or_raise_kiln_errors(value_kinds_package, tmp_path):
    files = sorted(p for p in value_kinds_package.rglob("*") if p.is_file())
    originals = {p.relative_to(value_kinds_package): p.read_bytes() for p in files}
    rng = np.random.default_rng(2026)
    outcomes = {"ok": 0, "error": 0}
    for iteration in range(160):
        work = tmp_path / f"w{iteration % 4}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        package = work / "fuzz.mlpackage"
        corrupt_copy(originals, value_kinds_package, package, rng)
        out = work / "fuzz.mlmodelc"
        try:
            compile_package(package, out)
            outcomes["ok"] += 1
            assert (out / "model.mil").is_file()
        except KilnError:
            outcomes["error"] += 1
            assert not out.exists()
        assert sorted(p.name for p in work.iterdir()) in (["fuzz.mlmodelc", "fuzz.mlpackage"], ["fuzz.mlpackage"])
    assert outcomes["error"] > 30 and outcomes["ok"] > 10, outcomes
