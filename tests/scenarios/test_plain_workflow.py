"""Models from a config block alone (family ``plain``) build through every stage, in a separate
Snakemake process, as a user runs them: a random-weight ``nn.Module`` from a factory (a package of
the user's, here tests/helpers), and Silero VAD's TorchScript and ONNX files."""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml

from tests.helpers.workspaces import REPO, VENV_BIN, commit_workspace, copy_workflow, parse_dry_run

pytestmark = pytest.mark.slow

#: everything the user writes for the factory model: 15 lines of config, no Python
TINY_BLOCK = """\
tiny_encoder:
  family: plain
  task: speaker_embedding
  source: {kind: path, path: weights/tiny_encoder.pt}
  network: {kind: module, factory: "kiln_test_nets:TinyEncoder", kwargs: {bands: 40, dim: 64}, state_dict: true}
  quantize: {strategies: [int8_per_channel]}
  components:
    encoder:
      inputs:
        mels: {shape: [1, 40, 50], dtype: float32}
      outputs:
        embedding: {shape: [1, 64], dtype: float32, kind: embedding}
        frames: {shape: [1, 64, 50], dtype: float32, kind: features}
      feeds: {mels: {modality: random, low: -4, high: 4, steps: 6}}
"""

#: a model whose validation inputs and metric are the user's own: this block plus
#: tests/helpers/kiln_test_nets/hooks.py (28 lines of Python)
HOOKS_BLOCK = """\
tiny_speakers:
  family: plain
  task: speaker_embedding
  source: {kind: path, path: weights/tiny_encoder.pt}
  network: {kind: module, factory: "kiln_test_nets:TinyEncoder", kwargs: {bands: 40, dim: 64}, state_dict: true}
  quantize: {strategies: [int8_per_channel]}
  components:
    encoder:
      inputs:
        mels: {shape: [1, 40, 50], dtype: float32}
      outputs:
        embedding: {shape: [1, 64], dtype: float32, kind: embedding}
        frames: {shape: [1, 64, 50], dtype: float32, kind: features}
      feeds: {mels: {modality: function, function: "kiln_test_nets.hooks:utterances"}}
      metrics: [{name: speakers, function: "kiln_test_nets.hooks:speaker_agreement", rank_by: speaker_agreement}]
"""
HOOKS = REPO / "tests" / "helpers" / "kiln_test_nets" / "hooks.py"

SILERO_PLAIN = ("silero_vad_plain", "silero_vad_onnx_plain")


@pytest.fixture(scope="module")
def plain_workspace(tmp_path_factory):
    """The workflow with only the plain models enabled (the Silero blocks as config.yaml has them,
    plus the factory model's block), built by `snakemake --cores 2 all` in its own process."""
    import torch

    from tests.helpers.kiln_test_nets import random_state_dict

    ws = copy_workflow(tmp_path_factory.mktemp("plain") / "kiln")
    config = yaml.safe_load((ws.root / "config.yaml").read_text())
    for name, model in config["models"].items():
        model["enabled"] = name in SILERO_PLAIN
    config["models"].update(yaml.safe_load(TINY_BLOCK))
    config["models"].update(yaml.safe_load(HOOKS_BLOCK))
    (ws.root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (ws.root / "weights").mkdir()
    torch.save(random_state_dict(seed=0, bands=40, dim=64), ws.root / "weights" / "tiny_encoder.pt")
    commit_workspace(ws)
    ws.env["PYTHONPATH"] = f"{REPO / 'src'}:{REPO / 'tests' / 'helpers'}"
    import time

    started = time.perf_counter()
    ws.snakemake("--cores", "2", "all")
    ws.seconds = time.perf_counter() - started
    return ws


def _metadata(ws, model):
    return json.loads((ws.root / "results" / model / "metadata.json").read_text())


def _summary(ws, model):
    return json.loads((ws.root / "results" / model / "quantization_summary.json").read_text())


def _config_block(name: str) -> list[str]:
    """The lines of config.yaml's block of model ``name`` (up to the next model or a blank line)."""
    lines = (REPO / "config.yaml").read_text().splitlines()
    start = lines.index(f"  {name}:")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].strip() or
               (lines[i].startswith("  ") and not lines[i].startswith("   ")))
    return lines[start:end]


def test_the_factory_block_is_at_most_20_lines():
    assert len(TINY_BLOCK.strip().splitlines()) <= 20


@pytest.mark.parametrize("model", SILERO_PLAIN)
def test_the_silero_blocks_are_at_most_20_lines(model):
    block = _config_block(model)
    assert 10 < len(block) <= 20, block


def test_factory_module_builds_every_stage(plain_workspace):
    ws = plain_workspace
    metadata = _metadata(ws, "tiny_encoder")
    assert metadata["family"] == "plain" and metadata["task"] == "speaker_embedding"
    encoder = metadata["components"]["encoder"]
    assert encoder["validation"]["passed"], encoder["validation"]["failures"]
    assert encoder["validation"]["steps"] == 6
    by_output = {(e["output"], e["backend"]): e for e in encoder["parity"]}
    embedding = by_output[("embedding", "kiln_fp16")]["by_kind"]
    assert embedding["kind"] == "embedding" and embedding["mean_cosine"] > 0.999
    assert embedding["similarity_matrix_error"] < 0.01
    # the ReLU leaves exact zeros: max_rel stays a relative error, not |d| / 1e-12
    frames = by_output[("frames", "kiln_fp16")]
    assert frames["max_rel"] < 10, frames
    summary = _summary(ws, "tiny_encoder")
    (result,) = summary["results"]
    assert result["status"] == "ok" and result["strategy"] == "int8_per_channel"
    scored = result["outputs"]["embedding"]
    # an embedding is scored by its mean cosine, not by 1 - ||d|| / ||y||
    assert scored["kind"] == "embedding" and scored["quality"] == pytest.approx(scored["by_kind"]["mean_cosine"])
    assert scored["quality"] > 0.99
    assert "embedding: mean cosine similarity" in summary["quality_definition"]


def test_own_feeds_and_metric_take_at_most_40_lines_of_python():
    assert len(HOOKS.read_text().splitlines()) <= 40
    assert len(HOOKS_BLOCK.strip().splitlines()) <= 20


def test_own_feeds_and_metric_build_every_stage(plain_workspace):
    ws = plain_workspace
    metadata = _metadata(ws, "tiny_speakers")
    encoder = metadata["components"]["encoder"]
    assert encoder["validation"]["passed"], encoder["validation"]["failures"]
    assert encoder["validation"]["steps"] == 12          # hooks.utterances: 4 speakers, 3 utterances each
    speakers = encoder["task_metrics"]["kiln_fp32"]
    assert speakers["speaker_agreement"] == 1.0 and speakers["utterances"] == 12, speakers
    (result,) = _summary(ws, "tiny_speakers")["results"]
    assert result["status"] == "ok" and result["strategy"] == "int8_per_channel"
    print(json.dumps({k: result[k] for k in result if k not in ("outputs",)}, default=str)[:2000])


@pytest.mark.parametrize("model", SILERO_PLAIN)
def test_silero_files_build_from_config_alone(plain_workspace, model):
    metadata = _metadata(plain_workspace, model)
    unified = metadata["components"]["unified"]
    assert unified["validation"]["passed"], unified["validation"]["failures"]
    assert unified["validation"]["steps"] == 625        # 20 s of speech, 512 new samples per step
    decisions = {e["backend"]: e["by_kind"] for e in unified["parity"]
                 if e["output"] == "vad_output" and e["reference"] == "torch_cpu"}
    assert decisions["kiln_fp32"]["decision_agreement"] >= 0.99
    assert 0.05 < decisions["kiln_fp32"]["positive_fraction_reference"] < 0.95   # speech and silence
    state = next(e["by_kind"] for e in unified["parity"] if e["output"] == "new_lstm_state"
                 and e["backend"] == "kiln_fp32")
    assert state["kind"] == "state" and state["steps"] == 625
    if model == "silero_vad_onnx_plain":   # three-way: onnxruntime on the original file
        assert "onnxruntime" in decisions
        assert decisions["onnxruntime"]["decision_agreement"] == 1.0
    (result,) = _summary(plain_workspace, model)["results"]
    assert result["status"] == "ok"
    assert result["outputs"]["vad_output"]["kind"] == "probability"
    assert result["quality"] > 0.9


def test_nothing_left_to_do_and_the_report_lists_them(plain_workspace):
    ws = plain_workspace
    assert parse_dry_run(ws.snakemake("-n", "all").stdout) == []
    print(f"plain workflow (4 models): {ws.seconds:.1f} s")
    ws.snakemake("--report", "report.html", "all")
    html = (ws.root / "report.html").read_text(errors="replace")
    assert all(m in html for m in ("tiny_encoder", "tiny_speakers", *SILERO_PLAIN))


def test_publish_and_verify_a_plain_model(plain_workspace, tmp_path_factory):
    """A plain model is published and rebuilt byte for byte like any family's."""
    ws = plain_workspace
    ws.dvc("commit", "-f")
    ws.git("add", "dvc.lock")
    ws.git("commit", "-q", "-m", "built")
    kiln = str(VENV_BIN / "kiln")
    out = ws.run(kiln, "publish", "tiny_encoder", "--dry-run")
    assert "dry run: nothing uploaded" in out.stdout
    staged = ws.root / "publish" / "tiny_encoder"
    provenance = json.loads((staged / "kiln" / "provenance.json").read_text())
    assert provenance["family"] == "plain"
    scratch = tmp_path_factory.mktemp("verify") / "scratch"
    report = scratch.parent / "report.json"
    ws.run(kiln, "verify", str(staged), "--workdir", str(scratch), "--report", str(report))
    result = json.loads(report.read_text())
    assert result["reproduced"] and result["counts"]["differing"] == 0, result["counts"]
