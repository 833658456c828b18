"""Shared fixtures: paths, the golden folder, real speech, the Silero source."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.golden import golden_missing
from tests.helpers.mil_packages import compressed_packages, value_kinds_package  # noqa: F401 (session fixtures)
from tests.helpers.workspaces import (  # noqa: F401 (workflow fixtures)
    built_silero_workspace, built_workspace, fake_built_families, small_built, tiny_streaming_and_tts, workspace)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden" / "silero-vad-coreml-v6.0.0"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub


#: end-to-end scenarios (Snakemake, DVC, kiln in separate processes on fresh workspaces): all slow
SCENARIOS = Path(__file__).resolve().parent / "scenarios"

#: fixtures that build a whole workflow (minutes each) or mark one done (fake_build), or copy the run's
#: one build of it: every test that uses one runs in the same xdist worker, so `make test`'s parallel
#: run builds each once, as a serial run does, and no worker waits for another's build
#: (tests/helpers/workspaces.shared_build)
SHARED_WORKSPACES = ("built_workspace", "tiny_streaming_and_tts", "built_silero_workspace", "fake_built_families")


#: seconds each test took (setup, call and teardown) in a measured run (tests/helpers/durations.py
#: writes it): a unit's cost is the sum over its tests; an unlisted test counts as quick, or, for a
#: scenario, as SCENARIO_SECONDS. The figures only order the queue. (Measured: a fresh clone's
#: `make test` on an idle machine, 2026-12-06, 634 s. Refresh it after moving slow tests.)
DURATIONS = json.loads((Path(__file__).resolve().parent / "durations.json").read_text())
SCENARIO_SECONDS = 20.0


def pytest_configure(config):
    # xdist's default queues the work units by their number of tests (--loadscope-reorder); the
    # order given by pytest_collection_modifyitems (longest first) is kept unless that is asked for
    if hasattr(config.option, "loadscopereorder") and "--loadscope-reorder" not in config.invocation_params.args:
        config.option.loadscopereorder = False


@pytest.hookimpl(tryfirst=True)   # before xdist's own hook turns the marks into work-unit names
def pytest_collection_modifyitems(config, items):
    """Work units for `pytest -n N --dist loadgroup` (``make test``). The tests sharing a workspace
    fixture form one unit across modules; a test that uses a module-scoped fixture (or a
    session-scoped one its own module defines) is in its module's unit, so the fixture is built once;
    every other test is a unit of its own. Units are queued longest first (their measured seconds,
    DURATIONS), so the long work starts at once, quick tests fill in, and both workers end together."""
    units: dict[str, list] = {}
    for item in items:
        if SCENARIOS in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)      # every end-to-end scenario (make test-fast skips them)
        shared = [name for name in SHARED_WORKSPACES if name in item.fixturenames]
        if shared:
            unit = shared[0]
        elif _uses_module_fixture(item):
            unit = item.nodeid.split("::")[0]
        else:
            unit = item.nodeid
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(unit))
        units.setdefault(unit, []).append(item)

    def seconds(item) -> float:
        default = SCENARIO_SECONDS if item.get_closest_marker("slow") else 0.0
        return DURATIONS.get(item.nodeid, default)

    def cost(unit: str) -> float:
        return -sum(seconds(item) for item in units[unit])
    items[:] = [item for unit in sorted(units, key=cost) for item in units[unit]]   # stable sort


def _uses_module_fixture(item) -> bool:
    module = getattr(item, "module", None)
    for defs in getattr(item, "_fixtureinfo").name2fixturedefs.values():
        fixturedef = defs[-1]
        if fixturedef.scope in ("module", "class", "package"):
            return True
        if fixturedef.scope == "session" and module is not None \
                and getattr(fixturedef.func, "__module__", None) == module.__name__:
            return True
    return False


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
        golden_missing(f"golden fixtures not found at {GOLDEN} (they live in ../shared beside the checkout)")
    return GOLDEN


@pytest.fixture(scope="session")
def speech_16k() -> np.ndarray:
    """20 s of espeak-ng speech mixed with silence and noise, 16 kHz."""
    from kiln.audio import speech_mix

    return speech_mix(20.0, rate=16_000, seed=1)


#: each family entry's contract as its prepare job resolves it (tiny entries: from their facts;
#: full-size entries: on the full-size stand-ins, benchmarks/bench_fullsize.py): config.yaml states
#: only the knobs, so tests that need a repository entry's shapes bind it to these
RESOLVED_CONTRACTS = REPO / "tests" / "helpers" / "resolved_contracts.json"


def bind_resolved(config):
    """``config`` (a kiln.config.Config) with every family entry bound to :data:`RESOLVED_CONTRACTS`,
    as the jobs after prepare see it (kiln.workflow.entry)."""
    import json

    recorded = json.loads(RESOLVED_CONTRACTS.read_text())
    for model in config.models:
        if model in recorded:
            config = config.bound(model, recorded[model], file=str(RESOLVED_CONTRACTS))
    return config


@pytest.fixture(scope="session")
def kiln_config():
    """The repository's config.yaml, bound to the resolved contracts (:func:`bind_resolved`)."""
    from kiln.config import load_config

    return bind_resolved(load_config(REPO / "config.yaml"))


@pytest.fixture(scope="session")
def silero_record(kiln_config, tmp_path_factory):
    from kiln.sources import fetch

    model = kiln_config.model("silero_vad")
    return fetch("silero_vad", model.family, model.source, tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="session")
def silero_net(silero_record):
    from kiln.models import get_family

    return get_family("silero_vad").load(silero_record)
