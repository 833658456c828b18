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
from kiln.workflow import codedeps, ledger, plan, stamps

check_config_file("config.yaml", cache=CHECKS_CACHE)   # bounded (kiln.yamlio) before Snakemake's loader
configfile: "config.yaml"
# `snakemake --report report.html`: every plot and summary table, grouped by model (report/*.rst)
report: "report/workflow.rst"

KILN = build_config(config, path=str(workflow.configfiles[0]) if workflow.configfiles else "config.yaml",
                    cache=CHECKS_CACHE)
RESULTS = KILN.results_dir
plan.check_models(KILN)   # contracts against the families' component specs (cached by content)
STAMP_REPORT = stamps.sync(plan.stamps(KILN))
for _kind in ("changed", "created", "adopted"):
    if STAMP_REPORT[_kind]:
        logger.info(f"kiln: {len(STAMP_REPORT[_kind])} stamp(s) {_kind}: {', '.join(STAMP_REPORT[_kind])}")
# Staleness follows content (src/kiln/workflow/ledger.py): a file whose bytes equal what the last run
# recorded gets that run's mtime back, so byte-identical rewrites and reverted edits plan nothing.
CODE_STAMPS = codedeps.sync_code_stamps(plan.code_stages(KILN))   # before the ledger: see code_stamp below
LEDGER = ledger.Ledger(plan.ledger_path(KILN), plan.ledger_roots(KILN))
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


# Code dependencies are derived from imports (kiln.workflow.codedeps): a job depends on the code stamp
# of its stage, the sha256 of every kiln module the stage runs, so an edit rebuilds exactly the jobs
# that execute the edited code, and a rewrite with the same bytes rebuilds nothing. The stamps are
# brought up to date before the ledger restores mtimes (an edit reverted before a build plans nothing).


def code_stamp(stage, model=None):
    return codedeps.code_stamp_path(stage, KILN.models[model].family if model else None)


def family_code(model):
    """Prepare runs the family's code (wrappers) and the tracing code."""
    return code_stamp("prepare", model)


def fetch_code(model):
    """A random source runs its family's builder: an edit to it rebuilds the checkpoint (what is
    downstream runs in that build too; a rebuild with the same bytes is undone by the ledger for
    later builds)."""
    return [code_stamp("fetch_random", model)] if KILN.models[model].source.get("kind") == "random" else []


EXPORT_CODE = code_stamp("export")
COMPILER_CODE = code_stamp("compile")


def quantize_code(wildcards):
    """Quantize code: the family's build part, the validation, the compiler and the executor."""
    return code_stamp("quantize", wildcards.model)


def quantization_summary_code(wildcards):
    """The quantization summary runs the family's judging code (task metrics of every variant)."""
    return code_stamp("quantization_summary", wildcards.model)


def derived(value):
    """A param fixed by the rule's outputs (kiln's path layout). Snakemake counts a param function
    that takes ``output`` as derived from the outputs and neither records nor compares it: kiln's
    settings reach jobs through stamps (content, not Snakemake's local metadata), and a no-op start
    does not import pandas to serialize params (0.3 s of `snakemake -n` on a built tree).
    Every param of every rule is either this or a ``lambda wildcards, output: ...``."""
    return lambda wildcards, output: value


def KILN_MEM_MB(model, stage):
    """Memory a heavy job of ``model`` reserves (config: models.<m>.resources.mem_mb). With the
    workflow profile's global limit (profiles/default), parallel jobs never oversubscribe the host."""
    return KILN.models[model].mem_mb


def validate_code(wildcards):
    """Validation code (family, validation, executor): edits to it re-validate, not re-export."""
    return code_stamp("validate", wildcards.model)


# Rules carry `group:` names (a model's source chain, each component's pipeline, a model's summaries):
# inactive in local runs; on a cluster (profiles/slurm) each group is one scheduler job, so a small
# model is a handful of jobs instead of dozens of seconds-long ones.
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
    stamps.remove_directory_markers(RESULTS)
    LEDGER.record()


onerror:
    stamps.remove_directory_markers(RESULTS)
    LEDGER.record()
