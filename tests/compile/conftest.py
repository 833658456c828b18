"""Fixtures for the compiler tests: the golden Apple pairs (read in place from ../shared/golden).
The small builder packages (`value_kinds_package`, `compressed_packages`) come from
tests/helpers/mil_packages.py, shared with the MIL text tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.golden_bundles import GOLDEN_VARIANTS, ORIGINAL_PACKAGE_NAMES, require_golden


@pytest.fixture(params=GOLDEN_VARIANTS)
def golden_pair(request, tmp_path) -> tuple[Path, Path]:
    """(package under its original file name, Apple's compiled bundle)."""
    root = require_golden()
    package = tmp_path / ORIGINAL_PACKAGE_NAMES[request.param]
    package.symlink_to(root / request.param / "input.mlpackage", target_is_directory=True)
    return package, root / request.param / "apple-compiled.mlmodelc"
