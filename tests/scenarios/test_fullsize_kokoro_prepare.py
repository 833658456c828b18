"""Full-size Kokoro stand-in (random weights of the Kokoro-82M config) through the prepare job with the
real `kokoro` entry's contracts, in a separate Snakemake process: the faithfulness sentence is cut to
fit kokoro_5s (random duration predictors speak 22 tokens in 13.75 s), the record says so, and every
traced program agrees with kokoro's own forward on that input (issue 29 item 3).

Several minutes of both cores (the two variants trace in ~100 s and the full-size checkpoint is built
first), so it runs only when asked: KILN_FULLSIZE=1 python -m pytest tests/scenarios/test_fullsize_kokoro_prepare.py
(benchmarks/bench_fullsize.py builds the whole model)."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers.workspaces import commit_workspace, copy_workflow

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("KILN_FULLSIZE") != "1",
                                 reason="full-size build: set KILN_FULLSIZE=1 to run it")]

MODEL = "kokoro"


def test_fullsize_kokoro_prepare_cuts_the_faithfulness_sentence_to_fit(tmp_path):
    ws = copy_workflow(tmp_path / "kiln")

    def standin(config):
        for name, entry in config["models"].items():
            entry["enabled"] = name == MODEL
        config["models"][MODEL]["source"] = {"kind": "random", "architecture": "full", "seed": 0}
        config["models"][MODEL]["synthetic"] = True

    ws.edit_config(standin)
    commit_workspace(ws)
    ws.snakemake("--cores", "2", f"results/{MODEL}/prepared/prepare.json")
    record = json.loads((ws.root / "results" / MODEL / "prepared" / "prepare.json").read_text())
    faithful = record["faithfulness"]
    choice = faithful["input"]
    # the shortest validation sentence does not fit the 5 s window on random weights: cut, and said so
    assert choice["cut"] and choice["sentence_phonemes"].startswith(choice["phonemes"])
    assert 0 < len(choice["phonemes"]) < len(choice["sentence_phonemes"])
    assert choice["window"] == {"tokens": 128, "samples": 120000}
    assert choice["tokens"] == len(choice["phonemes"]) + 2 and choice["samples"] <= 120000
    # every prefix tried before the chosen one made kokoro speak past the window
    assert choice["tried"][-1] == {"phonemes": len(choice["phonemes"]), "samples": choice["samples"]}
    assert all(t["samples"] > 120000 for t in choice["tried"][:-1]) and len(choice["tried"]) >= 2
    checks = faithful["traced_program_vs_kokoro_forward"]
    assert set(checks) == {"kokoro_5s", "kokoro_15s"}
    for name, check in checks.items():
        assert check["phonemes"] == choice["phonemes"], name
        assert check["valid_samples"] == choice["samples"] and check["valid_samples_equal"], (name, check)
        assert check["pred_dur_equal"] and check["clamped"] == 0, (name, check)
        # same bound as the tiny entry's workflow test (branch-cut flips measured >= 0.99987)
        assert check["correlation"] > 0.999, (name, check)
