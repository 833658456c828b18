"""Silero VAD: the prepare job (the one source load, every component traced) and each export job
(convert the traced program), each in a fresh process as Snakemake runs them: wall time, peak RSS."""

from __future__ import annotations

import json
import sys
import tempfile

from common import REPO, run_measured

# Each job reads and writes where the workflow puts it (``kiln.layout``), under a temporary
# results directory: an export job checks its traced program against the prepare record there.
SETUP = """
import dataclasses, sys
from kiln.config import load_config
from kiln import layout as at
config = dataclasses.replace(load_config(sys.argv[1]), results_dir=sys.argv[2])
model = sys.argv[3]
"""

PREPARE = SETUP + """
from kiln.workflow.jobs import fetch_job, prepare_job
fetch_job(config, model=model, record=at.SOURCE.path(config, model=model),
          checkpoint_dir=at.CHECKPOINT_DIR.path(config, model=model))
programs = {c: str(at.PREPARED_PROGRAM.path(config, model=model, component=c)) for c in config.model(model).components}
prepare_job(config, model=model, source=at.SOURCE.path(config, model=model), programs=programs,
            facts=at.FACTS.path(config, model=model), contracts=at.CONTRACTS.path(config, model=model),
            record=at.PREPARE_RECORD.path(config, model=model))
"""

EXPORT = SETUP + """
from kiln.workflow.entry import bound_config
from kiln.workflow.jobs import export_job
component = sys.argv[4]
config = bound_config(config, model, at.CONTRACTS.path(config, model=model))   # as the workflow's job entry does
export_job(config, model=model, component=component, source=at.SOURCE.path(config, model=model),
           program=at.PREPARED_PROGRAM.path(config, model=model, component=component),
           package=at.PACKAGE.path(config, model=model, component=component),
           record=at.EXPORT_RECORD.path(config, model=model, component=component))
"""


def run(model: str = "silero_vad") -> dict:
    import dataclasses

    from kiln.config import load_config
    from kiln import layout

    config = load_config(REPO / "config.yaml")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = dataclasses.replace(config, results_dir=tmp)
        measured = run_measured([sys.executable, "-c", PREPARE, str(REPO / "config.yaml"), tmp, model])
        record = json.loads(layout.PREPARE_RECORD.path(paths, model=model).read_text())
        prepare = {"process_wall_s": measured["wall_s"], "peak_rss_mib": measured["peak_rss_mib"],
                   "seconds": record["seconds"], "source_loads": record["source_loads"]}
        for component in config.model(model).components:
            measured = run_measured([sys.executable, "-c", EXPORT, str(REPO / "config.yaml"), tmp, model,
                                     component])
            record = json.loads(layout.EXPORT_RECORD.path(paths, model=model, component=component).read_text())
            out[component] = {
                "process_wall_s": measured["wall_s"],
                "peak_rss_mib": measured["peak_rss_mib"],
                "convert_save_s": record["seconds"],
                "package_bytes": record["package"]["size_bytes"],
            }
    return {"model": model, "synthetic": config.model(model).synthetic, "prepare": prepare, "export": out}
