"""metadata.json's schema accepts what kiln writes and rejects invented or missing fields."""

from __future__ import annotations

import copy
import json

import pytest

from kiln.validate.metadata import MetadataError, schema, validate_metadata


def _minimal() -> dict:
    component = {
        "export": {"deployment_target": "iOS17", "compute_precision": "float16", "compute_units": "CPU_ONLY",
                   "runtime_compute_units": ["all"]},
        "package": {"path": "results/m/c.mlpackage", "sha256": "a" * 64, "size_bytes": 10,
                    "specification_version": 8, "opset": "CoreML7"},
        "compiled": None,
        "inputs": [{"name": "x", "shape": [1, 4], "dtype": "float32"}],
        "outputs": [{"name": "y", "shape": [1, 4], "dtype": "float32"}],
        "validation": {"inputs": "speech", "steps": 3, "reference_backend": "torch_cpu", "report_only": False,
                       "passed": True, "failures": []},
        "parity": [{"output": "y", "backend": "kiln_fp32", "precision": "fp32", "max_abs": 0.0, "max_rel": 0.0,
                    "psnr_db": None, "quality": 1.0, "atol": 1e-3, "rtol": 0.0, "min_psnr_db": 35.0,
                    "match": True}],
        "task_metrics": {},
        "latency": {"torch_cpu": {"calls": 3, "median_ms": 1.0, "mean_ms": 1.0, "p90_ms": 1.0},
                    "coreml_all": None},
        "absent_backends": {"coreml_all": "Apple's Core ML runtime exists only on macOS"},
    }
    return {
        "schema_version": 1, "model": "m", "family": "f", "task": "vad", "synthetic": False,
        "source": {"kind": "pypi", "id": "x==1", "revision": None, "version": "1", "synthetic": False,
                   "files": [{"role": "checkpoint", "path": "a", "sha256": "b" * 64, "size": 1}]},
        "toolchain": {"python": "3.11", "torch": "2.13.0", "coremltools": "9.0", "numpy": "2.3.5",
                      "nemo_toolkit": None, "kiln": {"version": "0.1.0", "git_commit": None}},
        "platform": {"system": "Linux", "machine": "x86_64", "apple_runtime": False,
                     "apple_runtime_absent_reason": "Linux"},
        "components": {"c": component},
    }


def test_schema_is_versioned_and_accepts_a_valid_document():
    assert schema()["properties"]["schema_version"] == {"const": 1}
    validate_metadata(_minimal())


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d.pop("toolchain"), "<root>"),
    (lambda d: d["components"]["c"]["latency"].update({"coreml_all": {"median_ms": -1}}), "components.c.latency.coreml_all"),
    (lambda d: d["components"]["c"]["parity"][0].pop("match"), "components.c.parity.0"),
    (lambda d: d.update({"schema_version": 2}), "schema_version"),
    (lambda d: d["components"]["c"]["package"].update({"sha256": "nope"}), "components.c.package.sha256"),
])
def test_schema_rejects(mutate, where):
    doc = copy.deepcopy(_minimal())
    mutate(doc)
    with pytest.raises(MetadataError, match=f"at '{where}"):
        validate_metadata(doc)


def test_an_open_task_label_and_kind_metrics_are_accepted_and_shown():
    from kiln.distribution.report import parity_page

    data = _minimal()
    data["task"] = "speaker_embedding"
    data["components"]["c"]["parity"][0]["by_kind"] = {"kind": "embedding", "mean_cosine": 0.99912,
                                                        "min_cosine": 0.998, "similarity_matrix_error": 0.0021}
    validate_metadata(data)
    page = parity_page(data)
    assert "judged by its kind" in page and "mean_cosine 0.9991" in page
    assert "judged by its kind" not in parity_page(_minimal())   # no kinds: the page as before
    data["task"] = "Not A Label"
    with pytest.raises(MetadataError):
        validate_metadata(data)
