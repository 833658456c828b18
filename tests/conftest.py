"""Shared fixtures: paths, the golden folder, real speech, the Silero source."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden" / "silero-vad-coreml-v6.0.0"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub


def pytest_collection_finish(session):
    # ct.convert ends with a full gc.collect() over every live object (torch, NeMo, the collected
    # tests): frozen, what exists now is left out of those collections
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def golden() -> Path:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden fixtures not found at {GOLDEN} (they live in ../shared beside the checkout)")
    return GOLDEN


@pytest.fixture(scope="session")
def speech_16k() -> np.ndarray:
    """20 s of espeak-ng speech mixed with silence and noise, 16 kHz."""
    from kiln.audio import speech_mix

    return speech_mix(20.0, rate=16_000, seed=1)


@pytest.fixture(scope="session")
def kiln_config():
    from kiln.config import load_config

    return load_config(REPO / "config.yaml")


@pytest.fixture(scope="session")
def silero_record(kiln_config, tmp_path_factory):
    from kiln.sources import fetch

    model = kiln_config.model("silero_vad")
    return fetch("silero_vad", model.family, model.source, tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="session")
def silero_net(silero_record):
    from kiln.models import get_family

    return get_family("silero_vad").load(silero_record)
