import sys
from pathlib import Path

import pytest

from tests.golden import golden_missing

sys.path.insert(0, str(Path(__file__).resolve().parent))

# shared/ sits beside the repository root: <root>/../shared/golden
GOLDEN_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "golden" / "silero-vad-coreml-v6.0.0"


@pytest.fixture(scope="session")
def mil_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mil")


@pytest.fixture(scope="session")
def golden_dir():
    if not GOLDEN_DIR.is_dir():
        golden_missing(f"golden fixtures not present at {GOLDEN_DIR.resolve()} (shared/ beside the repo)")
    return GOLDEN_DIR
