"""Latency of a backend's calls: a timing wrapper and its summary (median, mean, p90)."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def timed(predict: Callable) -> tuple[Callable, list[float]]:
    """Wrap ``predict`` to record each call's wall time in milliseconds."""
    times: list[float] = []

    def call(inputs):
        started = time.perf_counter()
        out = predict(inputs)
        times.append((time.perf_counter() - started) * 1e3)
        return out

    return call, times


def latency_summary(times_ms: list[float]) -> dict:
    ordered = sorted(times_ms)
    return {
        "calls": len(ordered),
        "median_ms": round(statistics.median(ordered), 4),
        "mean_ms": round(statistics.fmean(ordered), 4),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 4),
    }
