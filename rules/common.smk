# Helpers of the rules: code stamps, params, resources and paths. Where an artifact lives is
# kiln.layout (a rule takes its `.pattern(KILN)`), what a stage's job reserves is
# kiln.workflow.resources (a rule takes `stage_resources(...)`), and every rule's script runs its job by
# name (kiln.workflow.entry.run_job).

#: every job's software: `snakemake --software-deployment-method conda` runs each job in this
#: environment (it mirrors pyproject.toml's pins: tests/test_envs.py); without it, jobs run in the
#: environment Snakemake runs in (make setup's .venv). A path relative to the rule files.
KILN_ENV = "../envs/kiln.yaml"

import inspect

from snakemake.common import overwrite_function_params


def known_signature(func):
    """``func`` with its signature read once: Snakemake inspects a rule function's signature at every
    call (``inspect.signature``, ~800 calls per start); ``overwrite_function_params`` is how its
    own helpers (``subpath``, ``as_py_module``) hand it a known signature."""
    overwrite_function_params(func, inspect.signature(func).parameters)
    return func


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


@known_signature
def quantize_code(wildcards):
    """Quantize code: the family's build part, the validation, the compiler and the executor."""
    return code_stamp("quantize", wildcards.model)


@known_signature
def quantization_summary_code(wildcards):
    """The quantization summary runs the family's judging code (task metrics of every variant)."""
    return code_stamp("quantization_summary", wildcards.model)


@known_signature
def validate_code(wildcards):
    """Validation code (family, validation, executor): edits to it re-validate, not re-export."""
    return code_stamp("validate", wildcards.model)


def derived(value):
    """A param fixed by the rule's outputs (kiln's path layout). Snakemake counts a param function
    that takes ``output`` as derived from the outputs and neither records nor compares it: kiln's
    settings reach jobs through stamps (content, not Snakemake's local metadata), and a no-op start
    does not import pandas to serialize params (0.3 s of `snakemake -n` on a built tree).
    Every param of every rule is either this or a ``lambda wildcards, output: ...``."""
    return known_signature(lambda wildcards, output: value)


# -- paths (kiln.layout) ---------------------------------------------------------------------


def at(artifact):
    """Param: ``artifact``'s path for the job's wildcards (e.g. a model's plots folder)."""
    return known_signature(lambda wildcards, output: str(artifact.path(KILN, **{w: wildcards[w] for w in artifact.wildcards})))


def component_files(artifact):
    """Input: ``artifact`` of every configured component of the job's model."""
    return known_signature(lambda wildcards: [str(artifact.path(KILN, model=wildcards.model, component=c))
                                              for c in KILN.models[wildcards.model].components])


def component_map(artifact):
    """Param: ``{component: path}`` of ``artifact`` for the job's model (what the job reads of the
    input of the same name)."""
    return known_signature(lambda wildcards, output: {c: str(artifact.path(KILN, model=wildcards.model, component=c))
                                                      for c in KILN.models[wildcards.model].components})


# -- resources (kiln.workflow.resources) -------------------------------------------------------------


def stage_mem_mb(stage, model=None):
    """``resources: mem_mb`` of a stage's jobs: fixed for a per-model rule (``model`` given), else
    per job from its model wildcard. With the workflow profile's global limit (profiles/default),
    parallel jobs never oversubscribe the host."""
    if model is not None:
        return resources.stage(KILN, model, stage).mem_mb
    return known_signature(lambda wildcards: resources.stage(KILN, wildcards.model, stage).mem_mb)


def stage_threads(stage, model=None):
    if model is not None:
        return resources.stage(KILN, model, stage).threads
    return known_signature(lambda wildcards: resources.stage(KILN, wildcards.model, stage).threads)


def stage_runtime(stage, model=None):
    """``resources: runtime`` (minutes, for cluster executors) where the stage sets one."""
    if model is not None:
        return resources.stage(KILN, model, stage).runtime
    return known_signature(lambda wildcards: resources.stage(KILN, wildcards.model, stage).runtime)
