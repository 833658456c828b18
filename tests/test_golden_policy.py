"""The golden comparisons cannot be skipped into a green CI run (tests/golden.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.golden import golden_missing

REPO = Path(__file__).resolve().parents[1]


def test_missing_golden_skips_locally(monkeypatch):
    monkeypatch.delenv("KILN_REQUIRE_GOLDEN", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        golden_missing("golden fixtures not found at /nowhere")


def test_missing_golden_fails_under_ci(monkeypatch):
    monkeypatch.setenv("KILN_REQUIRE_GOLDEN", "1")
    with pytest.raises(pytest.fail.Exception, match="KILN_REQUIRE_GOLDEN=1"):
        golden_missing("golden fixtures not found at /nowhere")


def test_ci_entry_point_requires_the_golden_folder():
    text = (REPO / ".ci" / "run").read_text()
    assert "export KILN_REQUIRE_GOLDEN=1" in text and text.index("KILN_REQUIRE_GOLDEN") < text.index("make test")
