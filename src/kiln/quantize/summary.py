"""``results/<model>/quantization_summary.json`` (schema ``kiln/schemas/quantization_summary.schema.json``)
and ``results/<model>/plots/quantization/*.png``."""

from __future__ import annotations

from pathlib import Path

from kiln import schemas
from kiln.foundation.errors import KilnError
from kiln.integrity.provenance import toolchain

SCHEMA_VERSION = 1


class SummaryError(KilnError):
    """quantization_summary.json does not satisfy its schema."""


def validate_summary(summary: dict, where: str = "quantization_summary.json") -> None:
    schemas.check(summary, "quantization_summary", SummaryError, where)


def pareto_front(points: list[tuple[float, float, str]]) -> set[str]:
    """Names of the points not dominated by another (smaller size and higher quality is better)."""
    front = set()
    for size, qual, name in points:
        dominated = any((s <= size and q >= qual) and (s < size or q > qual) for s, q, _ in points)
        if not dominated:
            front.add(name)
    return front


def _kinds_note(records: list[dict]) -> str:
    """How outputs with a declared kind were scored, where any was (kiln.validate.kinds)."""
    from kiln.validate.kinds import OUTPUT_KINDS

    kinds = sorted({o["kind"] for r in records for o in (r.get("outputs") or {}).values() if "kind" in o})
    if not kinds:
        return ""
    return "; an output with a declared kind is scored by it instead (" + ", ".join(
        f"{k}: {OUTPUT_KINDS[k].score_name}" for k in kinds) + ")"


def rank(entries: list[dict]) -> dict:
    """Order one component's scored variants best first: by the family's task metric where every
    variant has it (``task_score``, e.g. Silero's decision agreement: what an app sees), else by
    quality; ties by quality, then by the smaller package. Sets each entry's ``rank`` (1 = best)."""
    ok = [e for e in entries if e["status"] == "ok"]
    metrics = {(e.get("task_score") or {}).get("metric") for e in ok}
    by = next(iter(metrics)) if len(metrics) == 1 and None not in metrics else None
    ordered = sorted(ok, key=lambda e: (-(e["task_score"]["value"] if by else e["quality"]), -e["quality"],
                                        e["size_ratio"], e["strategy"]))
    for position, e in enumerate(ordered, 1):
        e["rank"] = position
    return {"by": by or "quality", "order": [e["strategy"] for e in ordered]}


def build_summary(model: str, synthetic: bool, records: list[dict], task: dict | None = None) -> dict:
    """``task``: the family's task run with each quantized component swapped in (see
    :func:`kiln.workflow.jobs.quantized_task_check`), with the family's recommendation."""
    by_component: dict[str, list[dict]] = {}
    for record in records:
        by_component.setdefault(record["component"], []).append(record)
    rankings = {}
    for component, entries in sorted(by_component.items()):
        # a variant no better than zeros (quality 0, e.g. NaN outputs) is never a trade-off worth offering
        ok = [(e["size_ratio"], e["quality"], e["strategy"]) for e in entries
              if e["status"] == "ok" and e["quality"] > 0]
        front = pareto_front(ok)
        for e in entries:
            if e["status"] == "ok":
                e["pareto_optimal"] = e["strategy"] in front
        rankings[component] = rank(entries)
    return {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "synthetic": synthetic,
        "quality_definition": "max(0, 1 - ||y_q - y|| / ||y||) against the float Core ML baseline on kiln's "
                              "executor (fp32 mode), worst float output (integer outputs: agreement); 1.0 = identical, 0 = no better than zeros; "
                              "normalized_error is ||y_q - y|| / ||y|| itself" + _kinds_note(records) +
                              "; variants rank by the family's task metric where it has one (rankings), else by quality; "
                              "dequantized_torch: kiln's execution of the variant vs torch running the traced program "
                              "with the variant's dequantized weights (equal = the score is the quantization's)",
        "toolchain": toolchain(),
        # per component best first (see rank), skipped strategies last
        "results": sorted(records, key=lambda r: (r["component"], r.get("rank", len(records) + 1), r["strategy"])),
        "rankings": rankings,
        **({"task": task} if task is not None else {}),
    }


def quantized_components(summary: dict) -> list[str]:
    return sorted({r["component"] for r in summary["results"]})


def plot_summary(summary: dict, plots_dir: Path) -> list[str]:
    """Every quantization plot of a model: size vs quality per component, strategies overview."""
    plots_dir = Path(plots_dir)
    written = [plot_component(summary, component, plots_dir / f"size_vs_quality_{component}.png")
               for component in quantized_components(summary)]
    written.append(plot_strategies(summary, plots_dir / "strategies.png"))
    return written


def plot_component(summary: dict, component: str, path: Path) -> str:
    """Size vs quality of every strategy of ``component``, with the Pareto front."""
    from kiln.validate.plots import _pyplot, _save

    plt = _pyplot()
    tag = " [synthetic weights]" if summary["synthetic"] else ""
    entries = [r for r in summary["results"] if r["component"] == component and r["status"] == "ok"]
    skipped = [r["strategy"] for r in summary["results"] if r["component"] == component and r["status"] != "ok"]
    fig, ax = plt.subplots(figsize=(8, 5))
    front = sorted((e for e in entries if e.get("pareto_optimal")), key=lambda e: e["size_ratio"])
    for i, e in enumerate(sorted(entries, key=lambda e: (e["size_ratio"], e["quality"]))):
        ax.scatter(e["size_ratio"], e["quality"], s=60 if e.get("pareto_optimal") else 30,
                   color="#c44e52" if e.get("pareto_optimal") else "#4c72b0", zorder=3)
        # quality is clipped at 0: a variant that broke the model shows its raw error
        broken = e["quality"] == 0.0 and e.get("normalized_error") is not None
        label = e["strategy"] + (f" (normalised error {e['normalized_error']:.2f})" if broken else "")
        ax.annotate(label, (e["size_ratio"], e["quality"]), fontsize=7, xytext=(4, 4 if i % 2 else -10),
                    textcoords="offset points")
    ax.set_ylim(-0.05, 1.05)
    if front:
        ax.plot([e["size_ratio"] for e in front], [e["quality"] for e in front], color="#c44e52",
                linewidth=1, linestyle="--", label="Pareto front")
        ax.legend(fontsize=8, loc="lower right")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("size relative to the float package")
    ax.set_ylabel("quality, worst output (max(0, 1 - relative L2 error); 1 = identical)")
    ax.set_title(f"{summary['model']}/{component}: size vs quality{tag}" +
                 (f"\nskipped: {', '.join(skipped)}" if skipped else ""), fontsize=10)
    ax.grid(alpha=0.3)
    _save(fig, Path(path))
    plt.close(fig)
    return str(path)


def plot_strategies(summary: dict, path: Path) -> str:
    """Per-strategy bars: size ratio and quality, one group per component."""
    from kiln.validate.plots import _pyplot, _save

    plt = _pyplot()
    tag = " [synthetic weights]" if summary["synthetic"] else ""
    components = quantized_components(summary)
    strategies = sorted({r["strategy"] for r in summary["results"]})
    fig, axes = plt.subplots(1, 2, sharey=True,
                             figsize=(12, 1.2 + 0.45 * len(strategies) * max(1, len(components))))
    height = 0.8 / max(1, len(components))
    for i, component in enumerate(components):
        rows = {r["strategy"]: r for r in summary["results"] if r["component"] == component}
        ys = [y + i * height for y in range(len(strategies))]
        sizes = [rows[s]["size_ratio"] if s in rows and rows[s]["status"] == "ok" else 0 for s in strategies]
        quals = [rows[s]["quality"] if s in rows and rows[s]["status"] == "ok" else 0 for s in strategies]
        axes[0].barh(ys, sizes, height=height, label=component)
        axes[1].barh(ys, quals, height=height, label=component)
    axes[0].set_yticks([y + height * (len(components) - 1) / 2 for y in range(len(strategies))], strategies)
    for ax, label in zip(axes, ("size relative to the float package", "quality, worst output (1 = identical)")):
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, axis="x")
        ax.legend(fontsize=8)
    fig.suptitle(f"{summary['model']}: quantization strategies{tag}", fontsize=10)
    _save(fig, Path(path))
    plt.close(fig)
    return str(path)
