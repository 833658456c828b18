"""Kokoro's audio gates the build (issue 28, item 4), as a user meets it: in a separate Snakemake
process, the tiny Kokoro's parity job fails when its waveform correlation on kiln's fp16 mode is
below config.yaml's validate.task_bounds, naming the metric, the backend, the measured value and
the bound, and leaves no parity record a later run would take as done; with the bound the checkout
ships, the same job passes and records every bound it checked. It works on a copy of the shared
tiny workspace at another path: the copy is up to date, and the bound edit plans the parity job alone."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers.workspaces import copy_built

pytestmark = pytest.mark.slow

MODEL = "kokoro_tiny"
TARGET = f"results/{MODEL}/parity/kokoro_5s.json"


def test_kokoro_audio_below_its_task_bound_fails_the_parity_job(tiny_streaming_and_tts, tmp_path):
    ws = copy_built(tiny_streaming_and_tts, tmp_path / "kiln")
    assert ws.planned_jobs(TARGET) == []
    shipped = {}

    def raise_the_fp16_bound(config):
        kokoro = config["models"][MODEL]
        shipped.update(kokoro["validate"]["task_bounds"]["min_correlation"])
        # kiln's fp16 mode measures 0.99923 on the validation sentences: a bound above it must fail
        kokoro["validate"]["task_bounds"]["min_correlation"]["fp16"] = 0.99999
    ws.edit_config(raise_the_fp16_bound)
    assert [rule for rule, _ in ws.planned_jobs(TARGET)] == ["parity"]

    failed = ws.snakemake("--cores", "2", TARGET, check=False)
    assert failed.returncode != 0
    log = (ws.root / "logs" / MODEL / "parity" / "kokoro_5s.log").read_text()
    found = re.search(r"kokoro_tiny/kokoro_5s task metric min_correlation on kiln_fp16: (0\.\d+) "
                      r"\(at least 0\.99999 required by validate\.task_bounds\)", log)
    assert found, log[-3000:]
    assert shipped["fp16"] <= float(found.group(1)) < 0.99999
    # only the failing bound blocks: kiln's fp32 mode and the distance bounds are not named
    assert "on kiln_fp32" not in log[log.index("parity check failed"):]
    assert not (ws.root / TARGET).exists()

    def shipped_bound(config):
        config["models"][MODEL]["validate"]["task_bounds"]["min_correlation"]["fp16"] = shipped["fp16"]
    ws.edit_config(shipped_bound)
    ws.snakemake("--cores", "2", TARGET)
    record = json.loads((ws.root / TARGET).read_text())
    bounds = {(b["metric"], b["backend"]): b for b in record["validation"]["task_bounds"]}
    assert set(bounds) == {(m, b) for m in ("max_log_mel_distance_db", "min_correlation")
                           for b in ("kiln_fp32", "kiln_fp16")}
    assert all(b["passed"] for b in bounds.values()) and record["validation"]["passed"]
    assert bounds[("min_correlation", "kiln_fp16")]["value"] == pytest.approx(float(found.group(1)))
