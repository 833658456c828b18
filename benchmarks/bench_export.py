"""Silero VAD: the prepare job (the one source load, every component traced) and each export job
(convert the traced program), each in a fresh process as Snakemake runs them: wall time, peak RSS."""

from __future__ import annotations

import json
import sys
import tempfile

from common import REPO, run_measured

# Each job reads and writes where the workflow puts it (``kiln.workflow.plan``), under a temporary
# results directory: an export job checks its traced program against the prepare record there.
SETUP = """
import dataclasses, sys
from kiln.config import load_config
from kiln.workflow import plan
config = dataclasses.replace(load_config(sys.argv[1]), results_dir=sys.argv[2])
model = sys.argv[3]
"""

PREPARE = SETUP + """
from kiln.workflow.jobs import fetch_job, prepare_job
fetch_job(config, model, plan.source_record(config, model), plan.checkpoint_dir(config, model))
programs = {c: str(plan.prepared_program(config, model, c)) for c in config.model(model).components}
prepare_job(config, model, plan.source_record(config, model), programs, plan.facts_path(config, model),
            plan.prepare_record(config, model))
"""

EXPORT = SETUP + """
from kiln.workflow.jobs import export_job
component = sys.argv[4]
export_job(config, model, component, plan.source_record(config, model),
           plan.prepared_program(config, model, component), plan.package_path(config, model, component),
           plan.export_record(config, model, component))
"""


def run(model: str = "silero_vad") -> dict:
    import dataclasses

    from kiln.config import load_config
    from kiln.workflow import plan

    config = load_config(REPO / "config.yaml")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = dataclasses.replace(config, results_dir=tmp)
        measured = run_measured([sys.executable, "-c", PREPARE, str(REPO / "config.yaml"), tmp, model])
        record = json.loads(plan.prepare_record(paths, model).read_text())
        prepare = {"process_wall_s": measured["wall_s"], "peak_rss_mib": measured["peak_rss_mib"],
                   "seconds": record["seconds"], "source_loads": record["source_loads"]}
        for component in config.model(model).components:
            measured = run_measured([sys.executable, "-c", EXPORT, str(REPO / "config.yaml"), tmp, model,
                                     component])
            record = json.loads(plan.export_record(paths, model, component).read_text())
            out[component] = {
                "process_wall_s": measured["wall_s"],
                "peak_rss_mib": measured["peak_rss_mib"],
                "convert_save_s": record["seconds"],
                "package_bytes": record["package"]["size_bytes"],
            }
    return {"model": model, "synthetic": config.model(model).synthetic, "prepare": prepare, "export": out}
