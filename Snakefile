# kiln: source checkpoints -> Core ML packages -> compiled bundles, parity reports, quantized variants.
#
#   snakemake --cores 2 all                      everything for every model (default target)
#   snakemake --cores 2 export_all               every component's .mlpackage
#   snakemake --cores 2 all_silero_vad           everything for one model
#   snakemake --cores 2 results/silero_vad/unified.mlpackage
#
# The config is validated against src/kiln/schemas/config.schema.json before any job is planned.
# Per-job settings become stamp files (.kiln/stamps/), so edits to config.yaml rebuild exactly the
# affected jobs, also in a fresh clone after `dvc pull` (see src/kiln/workflow/stamps.py).

from kiln.config import CHECKS_CACHE, build_config, check_config_file, strategy_names
from kiln import layout
from kiln.workflow import codedeps, ledger, plan, resources, stamps, startup

check_config_file("config.yaml", cache=CHECKS_CACHE)   # bounded (kiln.foundation.yamlio) before Snakemake's loader
with startup.cached_loader():   # Snakemake's parse of the same bytes, remembered (60 ms per start)
    configfile: "config.yaml"
# `snakemake --report report.html`: every plot and summary table, grouped by model (report/*.rst)
report: "report/workflow.rst"

KILN = build_config(config, path=str(workflow.configfiles[0]) if workflow.configfiles else "config.yaml",
                    cache=CHECKS_CACHE)
plan.check_models(KILN)   # contracts against the families' component specs (cached by content)
STAMP_REPORT = startup.sync_stamps(KILN)   # stamps.sync(plan.stamps(KILN)), skipped while its inputs are unchanged
for _kind in ("changed", "created", "adopted"):
    if STAMP_REPORT[_kind]:
        logger.info(f"kiln: {len(STAMP_REPORT[_kind])} stamp(s) {_kind}: {', '.join(STAMP_REPORT[_kind])}")
# Staleness follows content (src/kiln/workflow/ledger.py): a file whose bytes equal what the last run
# recorded gets that run's mtime back, so byte-identical rewrites and reverted edits plan nothing.
CODE_STAMPS = codedeps.sync_code_stamps(plan.code_stages(KILN))   # before the ledger: see code_stamp below
LEDGER = ledger.Ledger(layout.LEDGER.path(KILN), plan.ledger_roots(KILN))
if workflow.is_main_process:
    _restored = LEDGER.restore()
    if _restored:
        logger.info(f"kiln: {len(_restored)} unchanged file(s) given their recorded mtime back: "
                    f"{', '.join(_restored[:5])}{' …' if len(_restored) > 5 else ''}")
    codedeps.date_created_stamps([s for s in CODE_STAMPS["created"] if s not in _restored])


wildcard_constraints:
    model="|".join(KILN.models),
    component="[a-z][a-z0-9_]*",
    strategy="|".join(strategy_names()),


# Rules carry `group:` names (a model's source chain, each component's pipeline, a model's summaries):
# inactive in local runs; on a cluster (profiles/slurm) each group is one scheduler job, so a small
# model is a handful of jobs instead of dozens of seconds-long ones.
include: "rules/common.smk"
include: "rules/fetch.smk"
include: "rules/prepare.smk"
include: "rules/export.smk"
include: "rules/compile.smk"
include: "rules/validate.smk"
include: "rules/quantize.smk"
include: "rules/contract.smk"
include: "rules/publish.smk"


rule all:
    default_target: True
    input:
        [target for model in KILN.enabled_models for target in plan.model_targets(KILN, model)],


rule export_all:
    input:
        plan.export_targets(KILN),


rule compile_all:
    input:
        plan.compile_targets(KILN),


rule validate_all:
    input:
        plan.validate_targets(KILN),


rule quantize_all:
    input:
        plan.quantize_targets(KILN),


for _model in KILN.models:

    rule:
        name:
            f"all_{_model}"
        input:
            plan.model_targets(KILN, _model),


# The ledger records what every job will read before any job runs, and what the run built once it is
# over (dry runs record nothing).
onstart:
    LEDGER.record()


# Snakemake marks directory outputs with an empty `.snakemake_timestamp` file; .mlpackage and
# .mlmodelc bundles ship inside apps, so kiln removes the marker once the run is over (Snakemake then
# uses the directory's own mtime).
onsuccess:
    stamps.remove_directory_markers(KILN.results_dir)
    LEDGER.record()


onerror:
    stamps.remove_directory_markers(KILN.results_dir)
    LEDGER.record()
