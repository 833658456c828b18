"""The contract stated once: each family's symbolic contract, resolved by the prepare job from the
checkpoint's facts and the entry's options (written to ``prepared/contracts.json``, which binds every
later job), is the I/O of the package and the compiled bundle the workflow built, feature for feature
(workspaces built by separate Snakemake processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def assert_built_as_resolved(results: Path, model: str) -> int:
    """Every component of ``model`` under ``results``: its recorded resolved contract equals the
    features of its ``.mlpackage`` and ``.mlmodelc`` (names, shapes, dtypes, order). Returns how many
    artifacts were compared."""
    from kiln.distribution.contracts import artifact_features

    from tests.conftest import RESOLVED_CONTRACTS

    resolved = json.loads((results / model / "prepared" / "contracts.json").read_text())["contracts"]
    assert resolved, f"{model}: the prepare job recorded no resolved contract"
    # what the unit tests bind the repository's entries to is what the prepare job resolves
    recorded = json.loads(RESOLVED_CONTRACTS.read_text())[model]
    assert {c: recorded[c] for c in resolved} == resolved, model   # (a workspace may build fewer components)
    compared = 0
    for component, contract in resolved.items():
        for suffix in (".mlpackage", ".mlmodelc"):
            built = artifact_features(results / model / f"{component}{suffix}")
            for side in ("inputs", "outputs"):
                assert list(built[side].items()) == list(contract[side].items()), (model, component, suffix, side)
            compared += 1
    return compared


def test_silero_families_build_their_resolved_contracts(built_workspace):
    counts = [assert_built_as_resolved(built_workspace.root / "results", m) for m in ("silero_vad", "silero_vad_onnx")]
    assert counts == [2, 2]     # `unified` of each, package and bundle


def test_eou_and_kokoro_build_their_resolved_contracts(tiny_streaming_and_tts):
    results = tiny_streaming_and_tts.root / "results"
    assert assert_built_as_resolved(results, "parakeet_eou_tiny") == 8   # 4 components after the trim
    assert assert_built_as_resolved(results, "kokoro_tiny") == 2


def test_a_wrong_explicit_shape_fails_the_prepare_job_in_one_line(workspace):
    """config.yaml's shapes of a family entry are a check of the family's contract: one off by a
    sample stops the prepare job (a separate Snakemake process) with one line naming the model,
    component, tensor and axis, and nothing a later run would take as done."""
    def widen(config):   # config.yaml states no shapes of a family entry; written anyway, they are a check
        config["models"]["silero_vad"]["components"]["unified"]["inputs"] = {
            "audio_input": {"shape": [1, 577], "dtype": "float32"},
            "hidden_state": {"shape": [1, 128], "dtype": "float32"},
            "cell_state": {"shape": [1, 128], "dtype": "float32"}}
    workspace.edit_config(widen)
    target = "results/silero_vad/prepared/prepare.json"
    failed = workspace.snakemake("--cores", "1", target, check=False)
    assert failed.returncode != 0 and not (workspace.root / target).exists()
    log = (workspace.root / "logs" / "silero_vad" / "prepare.log").read_text()
    lines = [line for line in log.splitlines() if "the family's contract gives" in line]
    assert lines and lines[-1].endswith("models.silero_vad.components.unified.inputs.audio_input: axis 1 is 577 in "
                                        "[1, 577], the family's contract gives 576 ([1, 576]) from the facts and "
                                        "options"), log[-2000:]
