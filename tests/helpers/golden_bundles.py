"""Where the golden Apple bundles live (read in place from ../shared/golden), shared by the
compiler tests (tests/compile) and the MIL text tests (tests/coreml/mil_text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.golden import golden_missing

GOLDEN_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "golden"
GOLDEN_MODEL_DIR = GOLDEN_ROOT / "silero-vad-coreml-v6.0.0"
GOLDEN_VARIANTS = ("unified", "unified_int8", "unified_palette_6bit")

# The file names the packages had when Apple compiled them (PROVENANCE: renamed to input.mlpackage
# since); Xcode derives generatedClassName from them. The names are assumed (the unified one is
# the name FluidInference publishes it under); Apple's generatedClassName values agree with them.
ORIGINAL_PACKAGE_NAMES = {
    "unified": "silero-vad-unified-v6.0.0.mlpackage",
    "unified_int8": "unified_int8.mlpackage",
    "unified_palette_6bit": "unified_palette_6bit.mlpackage",
}


def require_golden() -> Path:
    if not GOLDEN_MODEL_DIR.is_dir():
        golden_missing(f"golden Apple bundles not found at {GOLDEN_MODEL_DIR} (the shared/ folder beside the repo)")
    return GOLDEN_MODEL_DIR
