"""Judgement by output kind: each kind's metrics and quantization score, on crafted outputs whose
right answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kiln import schemas
from kiln.foundation.errors import ContractError
from kiln.validate.kinds import OUTPUT_KINDS, cosines, kind_metrics, kind_score
from kiln.validate.metrics import max_rel, quality


def _unit(rng, n, d):
    v = rng.standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_embedding_is_scored_by_cosine_not_by_relative_l2():
    rng = np.random.default_rng(0)
    ref = _unit(rng, 64, 192)
    # a perturbation at a known angle: cos = 0.989 for every vector, as int8 gave in issue 25
    noise = rng.standard_normal(ref.shape)
    noise -= np.sum(noise * ref, axis=1, keepdims=True) * ref
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    angle = np.arccos(0.989)
    out = np.cos(angle) * ref + np.sin(angle) * noise
    assert np.allclose(cosines(ref, out), 0.989)
    assert quality(ref, out) == pytest.approx(1 - np.sqrt(2 - 2 * 0.989), abs=1e-9)   # 0.852: misleading
    assert kind_score("embedding", ref, out) == pytest.approx(0.989)
    metrics = kind_metrics("embedding", ref, out)
    assert metrics["kind"] == "embedding" and metrics["min_cosine"] == pytest.approx(0.989)
    assert 0 < metrics["similarity_matrix_error"] < 0.1
    assert kind_metrics("embedding", ref, ref)["similarity_matrix_error"] == pytest.approx(0, abs=1e-12)


def test_probability_decisions():
    ref = np.array([0.1, 0.4, 0.6, 0.9])
    out = np.array([0.1, 0.55, 0.6, 0.9])     # one window crosses 0.5
    assert kind_score("probability", ref, out) == 0.75
    m = kind_metrics("probability", ref, out)
    assert m["decision_agreement"] == 0.75 and m["positive_fraction_reference"] == 0.5
    assert m["max_abs_probability_error"] == pytest.approx(0.15)


def test_ids_and_logits_agreement():
    assert kind_score("ids", np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75
    ref = np.array([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    out = np.array([[0.0, 4.0, 4.5], [3.0, 0.1, 0.0]])   # the first position's argmax flips
    assert kind_score("logits", ref, out) == 0.5
    assert kind_metrics("logits", ref, ref)["max_kl_divergence"] == pytest.approx(0.0, abs=1e-12)


def test_audio_correlation():
    t = np.linspace(0, 1, 16000)
    ref = np.sin(2 * np.pi * 440 * t)
    assert kind_score("audio", ref, 0.5 * ref) == pytest.approx(1.0)   # a gain change: same waveform
    assert kind_score("audio", ref, -ref) == 0.0
    assert kind_metrics("audio", ref, ref + 0.01)["correlation"] == pytest.approx(1.0)


def test_state_per_step_error():
    ref = np.ones((4, 2, 8))
    out = ref.copy()
    out[3] *= 1.5                     # the last step drifts by 50%
    m = kind_metrics("state", ref, out)
    assert m["steps"] == 4 and m["max_step_error"] == pytest.approx(0.5) and m["last_step_error"] == pytest.approx(0.5)
    assert m["mean_step_error"] == pytest.approx(0.125)
    assert kind_score("state", ref, out) == pytest.approx(0.875)


def test_non_finite_candidates_score_zero():
    ref = np.ones((3, 4))
    out = ref.copy()
    out[1, 2] = np.nan
    for kind in ("embedding", "audio", "features", "state", "logits"):
        assert kind_score(kind, ref, out) == 0.0, kind
    assert kind_metrics("embedding", ref, out)["mean_cosine"] is None


def test_unknown_kind_is_named():
    with pytest.raises(ContractError, match="unknown output kind 'pitchiness'"):
        kind_score("pitchiness", np.ones(2), np.ones(2))


def test_config_schema_lists_every_kind():
    tensor = schemas.load("config")["$defs"]["tensor"]["properties"]["kind"]
    assert set(tensor["enum"]) == set(OUTPUT_KINDS)


def test_max_rel_at_exact_zeros_stays_relative():
    # a ReLU output: exact zeros where fp16 leaves 1e-5
    ref = np.array([0.0, 0.0, 1.0, 2.0])
    out = np.array([1e-5, 0.0, 1.001, 2.0])
    assert max_rel(ref, out) == pytest.approx(1e-5 / (1e-3 * 2.0))   # was 1e-5 / 1e-12 = 1e7
    assert max_rel(ref, out) < 0.01
    assert max_rel(np.zeros(3), np.full(3, 1e-6)) == pytest.approx(1e6)   # all-zero reference: tiny floor
    json.dumps(kind_metrics("embedding", _unit(np.random.default_rng(1), 2, 4), _unit(np.random.default_rng(2), 2, 4)))
