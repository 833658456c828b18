"""fp16 risks found by the build, as a user meets them: a model (family ``plain``, from a config
block) whose fp16 package overflows on its validation inputs fails its parity job naming the op,
in a separate Snakemake process; the fp32 fallback the message suggests (``export.fp32_ops``)
makes the same build pass, with the fp16 report and its plot recorded."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.helpers.workspaces import REPO, commit_workspace, copy_workflow

pytestmark = pytest.mark.slow

#: EnergyEncoder on loud input: its energy (a sum of squares) reaches 4e6, its outputs stay small
LOUD_BLOCK = """\
loud_encoder:
  family: plain
  task: speaker_embedding
  source: {kind: path, path: weights/encoder.pt}
  network: {kind: module, factory: "kiln_test_nets:EnergyEncoder", kwargs: {bands: 40, dim: 64}, state_dict: true}
  quantize: {strategies: []}
  validate: {outputs: {frames: {atol: 4.0, rtol: 0.0}}}   # frames reach 4000: fp16 weights move them by ~1
  components:
    encoder:
      inputs:
        mels: {shape: [1, 40, 50], dtype: float32}
      outputs:
        embedding: {shape: [1, 64], dtype: float32, kind: embedding}
        frames: {shape: [1, 64, 50], dtype: float32, kind: features}
      feeds: {mels: {modality: random, low: -3000, high: 3000, steps: 4}}
"""

TARGET = "results/loud_encoder/parity/encoder.json"


@pytest.fixture()
def loud_workspace(tmp_path):
    from tests.helpers.kiln_test_nets import random_state_dict

    import torch

    ws = copy_workflow(tmp_path / "kiln")
    config = yaml.safe_load((ws.root / "config.yaml").read_text())
    for model in config["models"].values():
        model["enabled"] = False
    config["models"].update(yaml.safe_load(LOUD_BLOCK))
    (ws.root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (ws.root / "weights").mkdir()
    torch.save(random_state_dict(seed=0, bands=40, dim=64), ws.root / "weights" / "encoder.pt")
    commit_workspace(ws)
    ws.env["PYTHONPATH"] = f"{REPO / 'src'}:{REPO / 'tests' / 'helpers'}"
    return ws


def _suggested(log: str) -> list[str]:
    found = re.findall(r"export\.fp32_ops: \[([^\]]*)\]", log)
    assert found, log[-2000:]
    return found[-1].split(", ")


def test_an_overflowing_fp16_export_fails_naming_the_op_and_the_fallback_fixes_it(loud_workspace):
    """The user's loop: the parity job fails naming the op and the export.fp32_ops that keeps it in
    fp32; with it, the op's value is cast back to fp16 where it is read, which fails naming the
    reader; with that too, the build passes and records the report."""
    ws = loud_workspace
    log_path = ws.root / "logs" / "loud_encoder" / "parity" / "encoder.log"
    failed = ws.snakemake("--cores", "2", TARGET, check=False)
    assert failed.returncode != 0 and not (ws.root / TARGET).exists()
    log = log_path.read_text()
    assert re.search(r"Fp16OverflowError: loud_encoder/encoder: fp16 overflow: op 'energy\w*' \(reduce_sum\) "
                     r"reaches \|x\| = 4\.\d+e\+06 > 65504", log), log[-2000:]
    first = _suggested(log)
    assert len(first) == 2 and first[0].startswith("energy")

    def fallback(names):
        def edit(config):
            config["models"]["loud_encoder"]["components"]["encoder"]["export"] = {"fp32_ops": names}
        return edit

    ws.edit_config(fallback(first))
    failed = ws.snakemake("--cores", "2", TARGET, check=False)
    assert failed.returncode != 0
    log = log_path.read_text()
    assert re.search(r"op '\w+_to_fp16' \(cast\).*ops reading it must stay fp32", log), log[-2000:]
    second = _suggested(log)
    assert second[:2] == first and len(second) == 3

    ws.edit_config(fallback(second))
    ws.snakemake("--cores", "2", TARGET)
    record = json.loads((ws.root / TARGET).read_text())
    report = record["fp16_report"]
    assert report["overflows"] == [] and report["fp32_fallback_ops"] == second
    assert report["suggested_fp32_ops"] == []
    near = {o["name"]: o for o in report["near_range"]}
    assert near[first[0]]["dtype"] == "fp32" and near[first[0]]["max_abs"] > 65504
    assert len(report["steps"]) <= 3 and report["fp16_ops"] > 0
    assert record["validation"]["passed"], record["validation"]["failures"]
    plot = ws.root / "results" / "loud_encoder" / "plots" / "encoder_fp16.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(plot.relative_to(ws.root)) in record["plots"]
    export = json.loads((ws.root / "results" / "loud_encoder" / "export" / "encoder.json").read_text())
    assert export["fp32_fallback_ops"] == sorted(second)
