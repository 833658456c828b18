"""Silero VAD export: wall time and peak RSS per component, each in a fresh process."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from common import REPO, run_measured

CHILD = """
import sys
from kiln.config import load_config
from kiln.workflow.jobs import fetch_job, export_job
config = load_config(sys.argv[1])
fetch_job(config, sys.argv[2], sys.argv[4] + "/source.json", sys.argv[4] + "/checkpoint")
export_job(config, sys.argv[2], sys.argv[3], sys.argv[4] + "/source.json",
           sys.argv[4] + "/" + sys.argv[3] + ".mlpackage", sys.argv[4] + "/record.json")
"""


def run(model: str = "silero_vad") -> dict:
    from kiln.config import load_config

    config = load_config(REPO / "config.yaml")
    out = {}
    for component in config.model(model).components:
        with tempfile.TemporaryDirectory() as tmp:
            measured = run_measured([sys.executable, "-c", CHILD, str(REPO / "config.yaml"), model,
                                     component, tmp])
            record = json.loads((Path(tmp) / "record.json").read_text())
        out[component] = {
            "process_wall_s": measured["wall_s"],
            "peak_rss_mib": measured["peak_rss_mib"],
            "trace_convert_save_s": record["seconds"],
            "package_bytes": record["package"]["size_bytes"],
        }
    return {"model": model, "synthetic": config.model(model).synthetic, "components": out}
