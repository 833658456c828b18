"""Where every artifact of the workflow lives: one table, read by the rules and by the code.

Each :class:`Artifact` is a template relative to the config's ``results_dir`` with Snakemake
wildcards (``{model}``, ``{component}``, ``{strategy}``). A rule takes its :meth:`Artifact.pattern`
(wildcards it does not fix stay wildcards); code takes its :meth:`Artifact.path` (every wildcard
given). No other module spells a results path (``tests/test_layout.py`` greps for them).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

WILDCARDS = ("model", "component", "strategy")


def _results_dir(where: Any) -> Path:
    """A :class:`kiln.config.Config` (its ``results_dir``) or the results directory itself."""
    return Path(getattr(where, "results_dir", where))


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass(frozen=True)
class Artifact:
    name: str
    template: str
    doc: str = ""

    @cached_property   # read ~2,400 times by each Snakemake start: parsed once per artifact
    def wildcards(self) -> tuple[str, ...]:
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.template) if f)

    def pattern(self, where: Any, **fixed: str) -> str:
        """The path with its wildcards, those in ``fixed`` filled in (for a rule's input/output)."""
        self._check(fixed, complete=False)
        return str(_results_dir(where) / self.template.format_map(_KeepMissing(fixed)))

    def path(self, where: Any, **wildcards: str) -> Path:
        """The concrete path (every wildcard given)."""
        self._check(wildcards, complete=True)
        return _results_dir(where) / self.template.format(**wildcards)

    def in_model_dir(self, model_dir: str | Path, **wildcards: str) -> Path:
        """The path inside a model's results folder ``model_dir`` (wherever that folder lies: a
        clone's results, a folder being verified), every wildcard but ``model`` given."""
        prefix = "{model}/"
        if not self.template.startswith(prefix):
            raise TypeError(f"artifact {self.name} ({self.template}): not inside a model's folder")
        self._check({"model": "", **wildcards}, complete=True)
        return Path(model_dir) / self.template.removeprefix(prefix).format(**wildcards)

    def _check(self, given: dict, complete: bool) -> None:
        unknown = sorted(set(given) - set(self.wildcards))
        missing = sorted(set(self.wildcards) - set(given)) if complete else []
        if unknown or missing:
            raise TypeError(f"artifact {self.name} ({self.template}): "
                            + "; ".join([*(["unknown wildcard(s) " + ", ".join(unknown)] if unknown else []),
                                         *(["missing wildcard(s) " + ", ".join(missing)] if missing else [])]))


def _artifact(name: str, template: str, doc: str = "") -> Artifact:
    artifact = Artifact(name, template, doc)
    unknown = set(artifact.wildcards) - set(WILDCARDS)
    assert not unknown, f"{name}: unknown wildcard(s) {unknown}"
    ARTIFACTS[name] = artifact
    return artifact


ARTIFACTS: dict[str, Artifact] = {}

MODEL_DIR = _artifact("model_dir", "{model}", "everything the workflow builds for a model")
# -- fetch, prepare, reference ----------------------------------------------------------------------
SOURCE = _artifact("source", "{model}/source.json", "the source's record (kind, id, revision, file sha256s)")
CHECKPOINT_DIR = _artifact("checkpoint_dir", "{model}/checkpoint",
                           "fetched or generated checkpoint files (versioned by DVC with the results)")
PREPARED_PROGRAM = _artifact("prepared_program", "{model}/prepared/{component}.pt",
                             "a component's traced TorchScript program (prepare job)")
FACTS = _artifact("facts", "{model}/prepared/facts.json", "the family facts derived from the checkpoint")
PREPARE_RECORD = _artifact("prepare_record", "{model}/prepared/prepare.json")
CONTRACTS = _artifact("contracts", "{model}/prepared/contracts.json",
                      "each component's contract resolved from the facts and its options (prepare job; "
                      "every later job reads its shapes from here)")
REFERENCE = _artifact("reference", "{model}/reference/{component}.npz",
                      "a component's validation inputs and torch outputs (reference job)")
TASK_REFERENCE = _artifact("task_reference", "{model}/reference/task.json", "the cross-component task's torch result")
TASK_INPUTS = _artifact("task_inputs", "{model}/reference/task.npz", "the cross-component task's inputs")
TORCH_LATENCY = _artifact("torch_latency", "{model}/reference/torch_latency.json")
# -- export, compile --------------------------------------------------------------------------------
PACKAGE = _artifact("package", "{model}/{component}.mlpackage")
EXPORT_RECORD = _artifact("export_record", "{model}/export/{component}.json")
IOS18_PACKAGE = _artifact("ios18_package", "{model}/ios18/{component}.mlpackage",
                          "the component re-exported at iOS18, shared by the strategies that need it")
IOS18_RECORD = _artifact("ios18_record", "{model}/ios18/{component}.json")
BUNDLE = _artifact("bundle", "{model}/{component}.mlmodelc")
COMPILE_RECORD = _artifact("compile_record", "{model}/compile/{component}.json")
# -- validate ---------------------------------------------------------------------------------------
PARITY_RECORD = _artifact("parity_record", "{model}/parity/{component}.json")
PLOTS_DIR = _artifact("plots_dir", "{model}/plots", "a model's plots (the jobs write their plots there)")
PARITY_PLOT = _artifact("parity_plot", "{model}/plots/{component}_parity.png")
LATENCY_PLOT = _artifact("latency_plot", "{model}/plots/{component}_latency.png")
FP16_PLOT = _artifact("fp16_plot", "{model}/plots/{component}_fp16.png")
END_TO_END = _artifact("end_to_end", "{model}/end_to_end.json")
METADATA = _artifact("metadata", "{model}/metadata.json")
LATENCY_OVERVIEW_PLOT = _artifact("latency_overview_plot", "{model}/plots/latency.png")
PARITY_TABLE = _artifact("parity_table", "{model}/tables/parity.html")
# -- quantize ---------------------------------------------------------------------------------------
QUANTIZED_DIR = _artifact("quantized_dir", "{model}/quantized/{strategy}",
                          "a strategy's variants (.mlpackage/.mlmodelc beside their records)")
QUANTIZE_RECORD = _artifact("quantize_record", "{model}/quantized/{strategy}/{component}.json")
QUANTIZATION_SUMMARY = _artifact("quantization_summary", "{model}/quantization_summary.json")
QUANTIZATION_STRATEGIES_PLOT = _artifact("quantization_strategies_plot", "{model}/plots/quantization/strategies.png")
QUANTIZATION_TABLE = _artifact("quantization_table", "{model}/tables/quantization.html")
QUANTIZATION_PLOT = _artifact("quantization_plot", "{model}/plots/quantization/size_vs_quality_{component}.png")
# -- consumer contract, the ledger ------------------------------------------------------------------
CONTRACT_REPORT = _artifact("contract_report", "{model}/contract.json")
LEDGER = _artifact("ledger", ".kiln-ledger.json", "the content ledger (kiln.workflow.ledger)")
