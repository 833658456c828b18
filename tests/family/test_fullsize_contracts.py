"""The resolved contracts the unit tests bind config.yaml's family entries to
(tests/helpers/resolved_contracts.json) are the prepare job's resolution. The full-size entries
(``enabled: false``, built from the Hub) are resolved from the facts of their full-size
architectures (tests/helpers/fullsize_facts.py records them; the slow test derives them again
from freshly built full-size checkpoints), and equal what config.yaml stated before it kept only
the knobs (the shapes the prepare job had checked against the same resolution). The tiny entries
are compared with real prepare jobs' contracts.json in tests/scenarios/test_resolved_contracts.py."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, RESOLVED_CONTRACTS
from tests.helpers import fullsize_facts

#: the last commit whose config.yaml stated every family entry's shapes
SHAPES_IN_CONFIG = "4180a0a"


def ordered(contracts: dict) -> str:
    """The contracts as JSON in their order (tensor order is the package's feature order)."""
    return json.dumps(contracts)


@pytest.mark.parametrize("model", fullsize_facts.FULLSIZE_MODELS)
def test_recorded_fullsize_contracts_are_resolved_from_the_fullsize_facts(model):
    recorded = json.loads(RESOLVED_CONTRACTS.read_text())[model]
    resolved = fullsize_facts.resolve(model, fullsize_facts.recorded_facts()[model])
    assert set(resolved) == set(fullsize_facts.repository_config().model(model).components)
    assert resolved == recorded
    assert ordered(resolved) == ordered(recorded)


@pytest.mark.parametrize("model", fullsize_facts.FULLSIZE_MODELS)
def test_recorded_fullsize_contracts_equal_the_shapes_config_yaml_stated(model):
    shown = subprocess.run(["git", "show", f"{SHAPES_IN_CONFIG}:config.yaml"], cwd=REPO, capture_output=True,
                           text=True)
    if shown.returncode:
        pytest.skip(f"commit {SHAPES_IN_CONFIG} is not in this clone's history (a shallow clone)")
    stated = {c: {side: {n: {"shape": t["shape"], "dtype": t["dtype"]} for n, t in comp[side].items()}
                  for side in ("inputs", "outputs")}
              for c, comp in yaml.safe_load(shown.stdout)["models"][model]["components"].items()}
    recorded = json.loads(RESOLVED_CONTRACTS.read_text())[model]
    assert ordered(recorded) == ordered(stated)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KILN_FULLSIZE") != "1",
                    reason="builds full-size checkpoints (about 100 s, 6 GB for Parakeet TDT v3): set KILN_FULLSIZE=1")
@pytest.mark.parametrize("model", fullsize_facts.FULLSIZE_MODELS)
def test_recorded_fullsize_facts_are_those_of_a_freshly_built_fullsize_checkpoint(model):
    with tempfile.TemporaryDirectory(prefix=f"fullsize_{model}_") as tmp:
        derived = fullsize_facts.derive(model, Path(tmp))
    assert json.loads(json.dumps(derived)) == fullsize_facts.recorded_facts()[model]
