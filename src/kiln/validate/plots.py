"""Validation plots (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.fsutil import atomic_file


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
