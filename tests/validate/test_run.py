"""The validate stage on Silero VAD: real parity, typed failures, absent backends, schema."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kiln.errors import ParityError
from kiln.export.convert import export_component
from kiln.models import get_family
from kiln.validate import backends as bk
from kiln.validate.run import check_parity, parity_entries, validate_component


@pytest.fixture(scope="module")
def unified_package(tmp_path_factory, kiln_config, silero_net):
    out = tmp_path_factory.mktemp("pkg") / "unified.mlpackage"
    export_component(get_family("silero_vad"), silero_net, kiln_config.component("silero_vad", "unified"), out)
    return out


def test_silero_unified_parity_and_decisions(kiln_config, silero_net, unified_package, tmp_path):
    model = kiln_config.model("silero_vad")
    comp = kiln_config.component("silero_vad", "unified")
    result = validate_component(get_family("silero_vad"), silero_net, model, comp, unified_package, tmp_path)
    assert result["validation"]["passed"], result["validation"]["failures"]
    assert result["validation"]["steps"] == 625  # 20 s of audio in 512-sample steps
    backends = {e["backend"] for e in result["parity"]}
    assert backends == {"kiln_fp32", "kiln_fp16"}
    for name in ("kiln_fp32", "kiln_fp16"):
        assert result["task_metrics"][name]["decision_agreement"] >= 0.99
    fp32 = next(e for e in result["parity"] if e["backend"] == "kiln_fp32" and e["output"] == "vad_output")
    assert fp32["max_abs"] < 5e-3 and fp32["precision"] == "fp32"
    # the Apple runtime does not exist on Linux: recorded as null with the reason, never a number
    for unit in comp.export.runtime_compute_units:
        assert result["latency"][f"coreml_{unit}"] is None
        assert "macOS" in result["absent_backends"][f"coreml_{unit}"]
    assert result["latency"]["torch_cpu"]["calls"] == 625
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unified_latency.png", "unified_parity.png"]


def test_mismatch_is_a_typed_error_naming_output_difference_and_tolerance(kiln_config):
    comp = kiln_config.component("silero_vad", "unified")
    ref = [{"vad_output": np.full((1, 1, 1), 0.5, np.float32),
            "new_hidden_state": np.zeros((1, 128), np.float32),
            "new_cell_state": np.zeros((1, 128), np.float32)}]
    bad = [{**ref[0], "vad_output": np.full((1, 1, 1), 0.6, np.float32)}]
    entries = parity_entries(comp, {"torch_cpu": ref, "kiln_fp16": bad}, "torch_cpu")
    with pytest.raises(ParityError) as info:
        check_parity("silero_vad", comp, entries)
    message = str(info.value)
    assert "output 'vad_output' on kiln_fp16" in message
    assert "max |diff| 0.1" in message and "atol 0.02" in message
    relaxed = dataclasses.replace(comp, validate=dataclasses.replace(comp.validate, report_only=True))
    failures = check_parity("silero_vad", relaxed, entries)
    assert len(failures) == 1 and "vad_output" in failures[0]


def test_apple_backend_is_absent_off_macos(unified_package):
    import platform

    backend = bk.apple_backend(unified_package, "cpuAndNeuralEngine")
    if platform.system() != "Darwin":
        assert isinstance(backend, bk.Absent) and backend.name == "coreml_cpuAndNeuralEngine"
