"""Silero VAD: the prepare job (the one source load, every component traced) and each export job
(convert the traced program), each in a fresh process as Snakemake runs them: wall time, peak RSS."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from common import REPO, run_measured

PREPARE = """
import sys
from kiln.config import load_config
from kiln.workflow.jobs import fetch_job, prepare_job
config = load_config(sys.argv[1])
model, out = sys.argv[2], sys.argv[3]
fetch_job(config, model, out + "/source.json", out + "/checkpoint")
programs = {c: f"{out}/{c}.pt" for c in config.model(model).components}
prepare_job(config, model, out + "/source.json", programs, out + "/facts.json", out + "/prepare.json")
"""

EXPORT = """
import sys
from kiln.config import load_config
from kiln.workflow.jobs import export_job
config = load_config(sys.argv[1])
model, component, out = sys.argv[2:5]
export_job(config, model, component, out + "/source.json", f"{out}/{component}.pt",
           f"{out}/{component}.mlpackage", f"{out}/{component}.json")
"""


def run(model: str = "silero_vad") -> dict:
    from kiln.config import load_config

    config = load_config(REPO / "config.yaml")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        measured = run_measured([sys.executable, "-c", PREPARE, str(REPO / "config.yaml"), model, tmp])
        record = json.loads((Path(tmp) / "prepare.json").read_text())
        prepare = {"process_wall_s": measured["wall_s"], "peak_rss_mib": measured["peak_rss_mib"],
                   "seconds": record["seconds"], "source_loads": record["source_loads"]}
        for component in config.model(model).components:
            measured = run_measured([sys.executable, "-c", EXPORT, str(REPO / "config.yaml"), model, component, tmp])
            record = json.loads((Path(tmp) / f"{component}.json").read_text())
            out[component] = {
                "process_wall_s": measured["wall_s"],
                "peak_rss_mib": measured["peak_rss_mib"],
                "convert_save_s": record["seconds"],
                "package_bytes": record["package"]["size_bytes"],
            }
    return {"model": model, "synthetic": config.model(model).synthetic, "prepare": prepare, "export": out}
