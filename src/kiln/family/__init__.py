"""The family layer: what a model family declares, below the families (``kiln.models.<family>``)
and below the stages that run them (export, validate, quantize), which import it from here.

- :mod:`kiln.family.spec`: the spec types (:class:`~kiln.family.spec.FamilySpec`,
  :class:`~kiln.family.spec.ComponentSpec`, metrics, plots, feeds, state pairs, the task) and the
  one streaming driver every backend runs through.

A family is a small package, ``kiln/models/<family>/``, whose modules say by their name which part
of the family they are (:data:`PARTS`): ``checkpoint`` builds random-initialised checkpoints (the
fetch job), ``build`` builds the network (load, facts, wrappers, tracing examples, faithfulness: the
prepare job), ``feeds`` makes the validation inputs (the reference job: feeds, the task's inputs and
run), ``judge`` judges the outputs (metrics, plots, artifacts, the task's comparisons: the parity,
end-to-end and summary jobs); ``__init__`` assembles them into ``FAMILY``, the list of its
components, and holds nothing else a job runs. It imports no torch: the hooks of ``build`` and
``checkpoint`` are :class:`~kiln.family.spec.DeferredPart` attributes (imported on first call), and
what the spec, feeds and judge share (contracts, sizes) lives in a torch-free ``contract`` module. Modules of no part (a network, a comparison two
parts share) belong to whichever parts import them. The workflow's code stamps read these names statically (:func:`part_of`,
:mod:`kiln.workflow.codedeps`): a stage that does not run a part does not depend on its code, so an
edit rebuilds only what it touches. Nothing here imports anything (the workflow reads it at
start-up).
"""

from __future__ import annotations

#: the parts of a family package, by module name: what each holds
PARTS = {
    "checkpoint": "random-initialised checkpoints (build_random): the fetch job",
    "build": "load, facts, wrappers, tracing examples, faithfulness: the prepare job",
    "feeds": "validation inputs, the task's inputs and run: the reference job",
    "judge": "metrics, plots, artifacts, the task's comparisons: parity, end-to-end, summaries",
}

#: the dotted-name prefix of family packages (``kiln.models.<family>``; with its dot, so the
#: workflow's import walk does not read it as an import of the registry)
FAMILIES_PREFIX = "kiln.models."


def part_of(module: str) -> str | None:
    """The part (a key of :data:`PARTS`) module ``module`` (a dotted name) belongs to: the first name
    below a family package (:data:`FAMILIES_PREFIX`) that names a part (``kiln.models.kokoro.judge`` ->
    ``judge``, ``kiln.models.kokoro.judge.metrics`` -> ``judge``); None for a family's ``__init__``
    and for the helpers its parts share (they belong to whoever imports them)."""
    if not module.startswith(FAMILIES_PREFIX):
        return None
    return next((name for name in module[len(FAMILIES_PREFIX):].split(".")[1:] if name in PARTS), None)
