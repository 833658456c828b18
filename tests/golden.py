"""What a test does when the golden Apple artifacts (../shared/golden) or their reference are absent.

Locally it skips (a checkout without ../shared can still run the rest); under CI (`.ci/run` sets
``KILN_REQUIRE_GOLDEN=1``) it fails, so a missing folder cannot turn the byte comparisons against
Apple's compiler into a green run."""

from __future__ import annotations

import os

import pytest


def golden_missing(message: str):
    if os.environ.get("KILN_REQUIRE_GOLDEN") == "1":
        pytest.fail(f"{message} (required: KILN_REQUIRE_GOLDEN=1)")
    pytest.skip(message)
