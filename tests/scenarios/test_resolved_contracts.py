"""The contract stated once: each family's symbolic contract, resolved by the prepare job from the
checkpoint's facts and the entry's options (recorded in ``prepared/prepare.json``), is the I/O of the
package and the compiled bundle the workflow built, feature for feature (workspaces built by
separate Snakemake processes)."""

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

    record = json.loads((results / model / "prepared" / "prepare.json").read_text())
    resolved = record["contracts"]
    assert resolved, f"{model}: the prepare job recorded no resolved contract"
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
