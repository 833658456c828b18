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

import glob

from kiln.config import build_config
from kiln.quantize.strategies import STRATEGIES
from kiln.workflow import plan, stamps

configfile: "config.yaml"

KILN = build_config(config, path=str(workflow.configfiles[0]) if workflow.configfiles else "config.yaml")
RESULTS = KILN.results_dir
STAMP_REPORT = stamps.sync(plan.stamps(KILN), plan.adopt_roots(KILN))
for _kind in ("changed", "created", "adopted"):
    if STAMP_REPORT[_kind]:
        logger.info(f"kiln: {len(STAMP_REPORT[_kind])} stamp(s) {_kind}: {', '.join(STAMP_REPORT[_kind])}")

wildcard_constraints:
    model="|".join(KILN.models),
    component="[a-z][a-z0-9_]*",
    strategy="|".join(STRATEGIES),


def family_code(model):
    """The source files that define how a family's components are traced and validated: edits to
    them re-run its prepare and reference jobs (unchanged outputs stop the rebuild there)."""
    family = KILN.models[model].family
    return sorted({f"src/kiln/models/{family}.py", "src/kiln/models/spec.py",
                   *glob.glob("src/kiln/models/_*.py"), "src/kiln/export/convert.py",
                   "src/kiln/export/rewrites.py"} & set(glob.glob("src/kiln/**/*.py", recursive=True)))


EXECUTOR_CODE = sorted(glob.glob("src/kiln/mil/**/*.py", recursive=True))
EXPORT_CODE = ["src/kiln/export/convert.py", "src/kiln/export/package.py", "src/kiln/export/torch_ops.py"]
COMPILER_CODE = sorted(glob.glob("src/kiln/compile/*.py")) + ["src/kiln/workflow/compile_stage.py"]
VALIDATE_CODE = ["src/kiln/validate/run.py", "src/kiln/validate/metrics.py", "src/kiln/validate/backends.py",
                 "src/kiln/validate/reference.py", "src/kiln/models/spec.py", *EXECUTOR_CODE]
QUANTIZE_CODE = sorted(glob.glob("src/kiln/quantize/*.py")) + VALIDATE_CODE + COMPILER_CODE


def KILN_MEM_MB(model, stage):
    """Memory a heavy job of ``model`` reserves (config: models.<m>.resources.mem_mb). With the
    workflow profile's global limit (profiles/default), parallel jobs never oversubscribe the host."""
    return KILN.models[model].mem_mb


def validate_code(wildcards):
    """Validation code: edits to it re-validate (the packages themselves are not rebuilt)."""
    return [f"src/kiln/models/{KILN.models[wildcards.model].family}.py", *VALIDATE_CODE]


include: "rules/fetch.smk"
include: "rules/prepare.smk"
include: "rules/export.smk"
include: "rules/compile.smk"
include: "rules/validate.smk"
include: "rules/quantize.smk"


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


# Snakemake marks directory outputs with an empty `.snakemake_timestamp` file; .mlpackage and
# .mlmodelc bundles ship inside apps, so kiln removes the marker once the run is over (Snakemake then
# uses the directory's own mtime).
onsuccess:
    stamps.remove_directory_markers(RESULTS)


onerror:
    stamps.remove_directory_markers(RESULTS)
