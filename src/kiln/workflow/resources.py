"""What each stage's job reserves (memory, threads, cluster runtime): one table, read by the rules.

A stage reserves the model's memory (``models.<m>.resources.mem_mb``) or a fixed amount; a model
can raise or lower any stage (``models.<m>.resources.stages.<stage>``). A reservation marked
``enforced`` becomes the job's OS memory limit (:mod:`kiln.workflow.limits`): a runaway job fails
with a diagnosis naming it. The small summary jobs reserve a fixed amount that is not enforced
(plotting libraries map more address space than they use).
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.config import Config


@dataclass(frozen=True)
class StageResources:
    #: MB reserved; None: the model's ``resources.mem_mb``
    mem_mb: int | None = None
    threads: int = 1
    #: minutes of wall time, for cluster executors (profiles/slurm)
    runtime: int = 30
    #: the reservation is the job's OS memory limit
    enforced: bool = True
    #: torch's threads are pinned to ``threads`` (the other stages keep torch's default, under which
    #: their artifacts were measured byte-identical across builds)
    pin_threads: bool = False


#: every stage whose jobs run kiln code, and its defaults
STAGES: dict[str, StageResources] = {
    # a random source builds the model, an ONNX source is folded, a Hub download streams
    "fetch": StageResources(runtime=30),
    # loading and tracing a full-size checkpoint: nothing of the model runs before it
    "prepare": StageResources(threads=2, runtime=120, pin_threads=True),
    "reference": StageResources(threads=2, runtime=120, pin_threads=True),
    "export": StageResources(runtime=60),
    "compile": StageResources(runtime=30),
    # kiln's executor on torch kernels: pinned to the one thread the job reserves, so two jobs on
    # two cores do not run four threads (torch's default, measured 3x slower per op when oversubscribed)
    "parity": StageResources(runtime=60, pin_threads=True),
    "end_to_end": StageResources(runtime=60, pin_threads=True),
    "quantize": StageResources(runtime=90, pin_threads=True),   # its threads are also the scoring workers
    # judges each variant on the family's task: loads every float package
    "quantization_summary": StageResources(runtime=10),
    "quantization_plot": StageResources(mem_mb=1000, runtime=10, enforced=False),
    "metadata": StageResources(mem_mb=1000, runtime=10, enforced=False),
    "contract": StageResources(mem_mb=1000, enforced=False),
}

#: the keys a model may override per stage (config: models.<m>.resources.stages.<stage>)
OVERRIDABLE = ("mem_mb", "threads", "runtime")


def stage(config: Config, model: str, name: str) -> StageResources:
    """The resources of ``model``'s ``name`` jobs: the table's defaults, the model's memory, then
    the model's per-stage overrides."""
    try:
        defaults = STAGES[name]
    except KeyError:
        raise KeyError(f"no resources for stage {name!r} (kiln.workflow.resources.STAGES: "
                       f"{', '.join(STAGES)})") from None
    values = {"mem_mb": defaults.mem_mb if defaults.mem_mb is not None else config.models[model].mem_mb,
              "threads": defaults.threads, "runtime": defaults.runtime}
    values.update(overrides(config, model).get(name, {}))
    return StageResources(enforced=defaults.enforced, pin_threads=defaults.pin_threads, **values)




def overrides(config: Config, model: str) -> dict[str, dict[str, int]]:
    """The model's per-stage overrides (``models.<m>.resources.stages``, checked by the config
    schema). Read from the validated file here, not kept on ModelConfig: the config module is code
    every job runs (kiln.workflow.codedeps), resources are the scheduler's business only."""
    raw = ((config.raw.get("models") or {}).get(model) or {}).get("resources") or {}
    return {stage: {k: int(v) for k, v in values.items()} for stage, values in (raw.get("stages") or {}).items()}
