"""Validation plots (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.foundation.fsutil import atomic_file


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")


def parity_plot(path: Path, title: str, label: str, step_seconds: float,
                reference: np.ndarray, candidates: dict[str, np.ndarray], x_label: str = "time (s)") -> None:
    """Top: the reference series and each backend's over time. Bottom: absolute error (log scale)."""
    plt = _pyplot()
    t = np.arange(reference.size) * step_seconds
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    top.plot(t, reference, color="black", linewidth=1.6, label="torch (source)")
    for name, series in candidates.items():
        top.plot(t, series, linewidth=1.0, linestyle="--", label=name)
        err = np.abs(series - reference)
        bottom.semilogy(t, np.maximum(err, 1e-9), linewidth=0.9, label=name)
    top.set_ylabel(label)
    top.set_title(title)
    top.legend(loc="upper right", fontsize=8)
    top.grid(alpha=0.3)
    bottom.set_ylabel(f"|error| of {label}")
    bottom.set_xlabel(x_label)
    bottom.grid(alpha=0.3, which="both")
    bottom.legend(loc="upper right", fontsize=8)
    _save(fig, path)
    plt.close(fig)


def latency_plot(path: Path, title: str, latencies: dict[str, float | None], absent_note: str = "") -> None:
    """Horizontal bars of the median latency per backend; absent backends are listed, not drawn."""
    plt = _pyplot()
    present = {k: v for k, v in latencies.items() if v is not None}
    absent = [k for k, v in latencies.items() if v is None]
    fig, ax = plt.subplots(figsize=(8, 0.6 * max(2, len(present)) + 1.2))
    names = list(present)
    ax.barh(names, [present[n] for n in names], color="#4c72b0")
    for y, name in enumerate(names):
        ax.text(present[name], y, f" {present[name]:.3f} ms", va="center", fontsize=8)
    ax.set_xlabel("median latency per call (ms)")
    ax.set_title(title)
    if absent:
        ax.text(0, -0.25, f"not measured here: {', '.join(absent)}" + (f"\n{absent_note}" if absent_note else ""),
                transform=ax.transAxes, fontsize=7, va="top")
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)
    plt.close(fig)


def fp16_plot(path: Path, title: str, ops: list[dict], fp16_max: float, threshold: float,
              label_top: int = 5) -> None:
    """Top: each op's largest fp32 |activation| in program order (log scale) against fp16's maximum
    and the risk threshold, ops computed in fp16 and in fp32 told apart. Bottom: each op's relative
    fp16 error (fp16 plan vs fp32 plan). The ops nearest the range and adding the most error are named."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [1, 1]})
    x = np.arange(len(ops))
    max_abs = np.array([max(o["max_abs"], 1e-12) for o in ops])
    error = np.array([max(o["error"], 1e-12) for o in ops])
    fp16 = np.array([o["dtype"] == "fp16" for o in ops], dtype=bool)
    for mask, name, color in ((fp16, "computed in fp16", "#4c72b0"), (~fp16, "computed in fp32", "#999999")):
        if mask.any():
            top.scatter(x[mask], max_abs[mask], s=6, color=color, label=name)
            bottom.scatter(x[mask], error[mask], s=6, color=color, label=name)
    top.axhline(fp16_max, color="#c44e52", linewidth=1.0, label=f"fp16 max {fp16_max:g}")
    top.axhline(threshold, color="#dd8452", linewidth=1.0, linestyle="--", label=f"risk threshold {threshold:g}")
    top.set_yscale("log")
    top.set_ylabel("max |activation| (fp32 plan)")
    top.set_title(title, fontsize=10)
    bottom.set_yscale("log")
    bottom.set_ylabel("max |fp16 - fp32| / max |fp32|")
    bottom.set_xlabel("op (program order)")
    for axis, values, key in ((top, max_abs, "max_abs"), (bottom, error, "added")):
        ranked = sorted(range(len(ops)), key=lambda i: -ops[i][key])[:label_top]
        for i in ranked:
            if ops[i][key] > 0:
                axis.annotate(f"{ops[i]['name']} ({ops[i]['op']})", (x[i], values[i]), fontsize=6,
                              xytext=(3, 3), textcoords="offset points")
        axis.grid(alpha=0.3, which="both")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="lower right", fontsize=7)
    _save(fig, path)
    plt.close(fig)
