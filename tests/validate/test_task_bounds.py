"""validate.task_bounds: task metrics (Kokoro's waveform correlation, log-mel distance) gate the
parity job, per precision, with the failure named."""

from __future__ import annotations

import pytest

from kiln.config import ConfigError, build_config
from kiln.foundation.errors import ParityError
from kiln.validate.run import check_parity, task_bound_checks


def _component(bounds, **validate):
    raw = {"models": {"m": {"family": "kokoro", "task": "tts", "synthetic": True,
                            "source": {"kind": "random", "architecture": "tiny", "seed": 0},
                            "validate": {"task_bounds": bounds, **validate},
                            "components": {"c": {"inputs": {"x": {"shape": [1, 4], "dtype": "float32"}},
                                                 "outputs": {"audio": {"shape": [1, 4], "dtype": "float32"}}}}}}}
    return build_config(raw).component("m", "c")


TASK = {"kiln_fp32": {"waveform": {"min_correlation": 0.9999, "max_log_mel_distance_db": 0.02}},
        "kiln_fp16": {"waveform": {"min_correlation": 0.98, "max_log_mel_distance_db": 0.9}},
        "onnxruntime": {"waveform": {"min_correlation": 0.5}}}


def test_bounds_pass_and_fail_per_precision():
    comp = _component({"waveform.min_correlation": {"fp32": 0.999, "fp16": 0.99},
                       "waveform.max_log_mel_distance_db": {"fp32": 0.1, "fp16": 0.5}})
    checks = task_bound_checks(comp, TASK)
    assert {(c["metric"], c["backend"]): c["passed"] for c in checks} == {
        ("waveform.max_log_mel_distance_db", "kiln_fp32"): True,
        ("waveform.max_log_mel_distance_db", "kiln_fp16"): False,
        ("waveform.min_correlation", "kiln_fp32"): True,
        ("waveform.min_correlation", "kiln_fp16"): False}
    with pytest.raises(ParityError, match=r"m/c task metric waveform.min_correlation on kiln_fp16: 0.98 "
                                          r"\(at least 0.99 required by validate.task_bounds\)"):
        check_parity("m", comp, [], checks)
    # report-only: recorded, not raised
    lenient = _component({"waveform.min_correlation": {"fp16": 0.99}}, report_only=True)
    assert len(check_parity("m", lenient, [], task_bound_checks(lenient, TASK))) == 1


def test_a_bound_on_a_metric_the_family_does_not_produce_fails():
    comp = _component({"waveform.min_snr_db": {"fp32": 10}})
    (check,) = task_bound_checks(comp, TASK)
    assert check["value"] is None and not check["passed"]
    with pytest.raises(ParityError, match="min_snr_db on kiln_fp32: missing"):
        check_parity("m", comp, [], [check])


def test_a_bound_must_say_its_direction():
    with pytest.raises(ConfigError, match="task_bounds"):
        _component({"waveform.correlation": {"fp32": 0.9}})
    with pytest.raises(ConfigError, match="task_bounds"):
        _component({"waveform.min_correlation": {"fp64": 0.9}})
