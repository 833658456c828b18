"""An executor error in the parity job is a failed row naming the op, and the other backends still
run: a separate Snakemake process validates a Silero package whose first conv kiln cannot execute
(groups 7 over one input channel; the export record re-stamped as an exporter that wrote such a
program would have), report-only and then blocking."""

from __future__ import annotations

import json
import shutil

from kiln.integrity.digests import cached_digest
from kiln.foundation.fsutil import tree_size
from tests.validate.test_run import _with_broken_conv

RESULTS = "results/silero_vad"


def _one_component(report_only: bool):
    def edit(config):
        silero = config["models"]["silero_vad"]
        silero["components"] = {"unified": silero["components"]["unified"]}
        silero["validate"]["report_only"] = report_only
    return edit


def test_an_executor_error_is_recorded_per_backend_and_the_job_goes_on(workspace):
    workspace.edit_config(_one_component(report_only=True))
    (workspace.root / "contracts" / "silero_vad.yaml").unlink()   # one component: not FluidAudio's bundle
    workspace.snakemake("--cores", "1", f"{RESULTS}/export/unified.json")
    package = workspace.root / RESULTS / "unified.mlpackage"
    broken, node = _with_broken_conv(package, workspace.root / "broken.mlpackage")
    shutil.rmtree(package)
    broken.rename(package)
    record_path = workspace.root / RESULTS / "export" / "unified.json"
    record = json.loads(record_path.read_text())
    record["package"].update(sha256=cached_digest(package), size_bytes=tree_size(package))
    record_path.write_text(json.dumps(record, indent=2))

    workspace.snakemake("--cores", "1", f"{RESULTS}/parity/unified.json")
    parity = json.loads((workspace.root / RESULTS / "parity" / "unified.json").read_text())
    assert set(parity["backend_errors"]) == {"kiln_fp32", "kiln_fp16"}
    for backend, error in parity["backend_errors"].items():
        assert (error["op"], error["node"], error["step"]) == ("conv", node, 0), backend
    rows = {(e["backend"], e["output"]): e for e in parity["parity"]}
    assert len(rows) == 6 and all(not e["match"] and e["op"] == "conv" for e in rows.values())
    assert parity["validation"]["passed"] is False and parity["latency"]["kiln_fp16"] is None

    # blocking: the job fails, its log names the op on both backends, and no record is left
    workspace.edit_config(_one_component(report_only=False))
    result = workspace.snakemake("--cores", "1", f"{RESULTS}/parity/unified.json", check=False)
    assert result.returncode != 0
    log = (workspace.root / "logs" / "silero_vad" / "parity" / "unified.log").read_text()
    for backend in ("kiln_fp32", "kiln_fp16"):
        assert f"output 'vad_output' on {backend}: executor error at step 0: op 'conv' (opset iOS17)" in log
    assert not (workspace.root / RESULTS / "parity" / "unified.json").exists()
