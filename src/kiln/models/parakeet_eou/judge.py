"""Parakeet EOU's judging part: per-chunk metrics and plots, EOU timing against the reference per chunk
size and per quantization strategy (with the recommendation)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from kiln.models._tdt import agreement
from kiln.models.parakeet_eou.contract import ENCODER_FLOAT_OUTPUTS, ENCODER_STREAM


def _max_abs_per_step(reference, candidate, name) -> list[float]:
    return [float(np.max(np.abs(np.asarray(r[name], np.float64) - np.asarray(c[name], np.float64))))
            for r, c in zip(reference, candidate)]


def encoder_chunk_metric(reference, candidate, facts) -> dict:
    """Per chunk: the encoder output's max error and whether every cache length agrees."""
    lens = [int(np.ravel(r["new_cache_last_channel_len"])[0]) == int(np.ravel(c["new_cache_last_channel_len"])[0])
            for r, c in zip(reference, candidate)]
    per_chunk = {f"{name}_max_abs_per_chunk": _max_abs_per_step(reference, candidate, name)
                 for name in ENCODER_FLOAT_OUTPUTS}
    return {"chunks": len(reference), **per_chunk,
            "cache_last_channel_len_agreement": float(np.mean(lens)) if lens else None}


def encoder_error_plot(out_dir, label: str, facts, reference: list, candidates: Mapping[str, list]) -> list:
    """Per chunk, the max |error| of the encoder output and of every float cache, per backend."""
    from kiln.validate.plots import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(len(candidates), 1, figsize=(10, 2.6 * len(candidates) + 0.6), squeeze=False)
    for ax, (backend, steps) in zip(axes[:, 0], candidates.items()):
        for name in ENCODER_FLOAT_OUTPUTS:
            errors = np.maximum(_max_abs_per_step(reference, steps, name), 1e-9)
            ax.semilogy(np.arange(len(errors)), errors, marker=".", linewidth=0.9, label=name)
        ax.set_title(f"{backend}: max |error| per chunk vs torch", fontsize=9)
        ax.set_ylabel("max |error|")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("chunk")
    fig.suptitle(f"{label}: encoder output and caches, chunk by chunk" +
                 (" [synthetic weights]" if facts.get("synthetic") else ""), fontsize=10)
    path = Path(out_dir) / f"{label}_chunk_errors.png"
    _save(fig, path)
    plt.close(fig)
    return [path]


def token_timeline_plot(out_dir, title: str, reference: dict, candidates: Mapping[str, dict]) -> list:
    """Per chunk size: tokens emitted per chunk and where <EOU> fires, torch vs each backend."""
    from kiln.validate.plots import _pyplot, _save

    plt = _pyplot()
    sizes = sorted(reference["by_chunk_size"])
    backends = {"torch_cpu": reference, **candidates}
    fig, axes = plt.subplots(len(sizes), 1, figsize=(11, 2.2 + 0.5 * len(backends) * len(sizes)), squeeze=False)
    for ax, size in zip(axes[:, 0], sizes):
        for row, (backend, result) in enumerate(backends.items()):
            entry = result["by_chunk_size"].get(size)
            if entry is None:
                continue
            chunks = np.arange(entry["chunks"])
            counts = np.asarray(entry["tokens_per_chunk"], float)
            ax.scatter(chunks[counts > 0], np.full(int((counts > 0).sum()), row), s=8 + 10 * counts[counts > 0],
                       color="#4c72b0", alpha=0.6, label="tokens (size = count)" if row == 0 else None)
            eou = entry["eou_chunks"]
            ax.scatter(eou, np.full(len(eou), row), marker="|", s=300, color="#c44e52", linewidths=2,
                       label="<EOU>" if row == 0 else None)
        ax.set_yticks(range(len(backends)), list(backends))
        ax.set_ylim(-0.7, len(backends) - 0.3)
        ax.set_title(f"{size} ({reference['by_chunk_size'][size]['chunk_ms']:g} ms chunks)", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("chunk")
    fig.suptitle(title, fontsize=10)
    path = Path(out_dir) / "end_to_end_token_timeline.png"
    _save(fig, path)
    plt.close(fig)
    return [path]


def joint_metric(reference, candidate, facts) -> dict:
    ref = np.array([int(np.ravel(s["token_id"])[0]) for s in reference])
    out = np.array([int(np.ravel(s["token_id"])[0]) for s in candidate])
    eou = facts.get("eou_id")
    return {"decisions": int(ref.size), "token_agreement": float(np.mean(ref == out)) if ref.size else None,
            "eou_decision_agreement": float(np.mean((ref == eou) == (out == eou))) if ref.size else None,
            "blank_fraction_reference": float(np.mean(ref == facts["blank_id"])) if ref.size else None}


def decoder_metric(reference, candidate, facts) -> dict:
    return {"steps": len(reference),
            "decoder_max_abs_per_step": _max_abs_per_step(reference, candidate, "decoder")}


def eou_timing(reference: dict, candidate: dict) -> dict:
    """Agreement of one chunk size's result with the reference: tokens and EOU chunks."""
    ref_eou, out_eou = set(reference["eou_chunks"]), set(candidate["eou_chunks"])
    first_ref, first_out = reference["first_eou_chunk"], candidate["first_eou_chunk"]
    return {"tokens": agreement(reference["tokens"], candidate["tokens"]),
            "token_chunk_agreement":
                agreement(reference["token_chunks"], candidate["token_chunks"])["position_agreement"],
            "eou_chunks_reference": sorted(ref_eou), "eou_chunks": sorted(out_eou),
            "eou_chunk_agreement": 1.0 if not (ref_eou | out_eou) else len(ref_eou & out_eou) / len(ref_eou | out_eou),
            "first_eou_chunk_delta": None if first_ref is None or first_out is None else first_out - first_ref,
            "first_eou_same_chunk": first_ref == first_out}


def task_compare(reference: dict, result: dict) -> dict:
    return {name: eou_timing(reference["by_chunk_size"][name], entry)
            for name, entry in result["by_chunk_size"].items() if name in reference["by_chunk_size"]}


def quantization_eou_summary(reference: dict, results: Mapping[str, dict], component: str = "streaming_encoder",
                             min_agreement: float = 1.0) -> dict:
    """EOU timing agreement per quantization strategy of the encoder, and the recommendation.

    ``reference``: :func:`task_run` with the float encoder; ``results``: strategy -> :func:`task_run`
    with that strategy's quantized encoder (other components float). A strategy *degrades the EOU
    decision* when the chunks where ``<EOU>`` fires agree on less than ``min_agreement`` or the first
    EOU moves; when every int8 strategy does, the recommendation is fp16 weights only (what the
    converter's authors published for the real model)."""
    per_strategy = {}
    for strategy, result in results.items():
        compared = task_compare(reference, result)
        # a streaming encoder has its own chunk size's entry; a shared component (decoder, joint)
        # is judged on the unsuffixed chunk size
        timing = compared.get(component, compared.get(ENCODER_STREAM.name))
        if timing is None:
            continue
        degraded = timing["eou_chunk_agreement"] < min_agreement or not timing["first_eou_same_chunk"]
        per_strategy[strategy] = {**timing, "eou_degraded": degraded}
    int8 = {s: v for s, v in per_strategy.items() if s.startswith("int8")}
    degraded_int8 = sorted(s for s, v in int8.items() if v["eou_degraded"])
    if int8 and len(degraded_int8) == len(int8):
        recommendation = (f"fp16 only: every int8 strategy moves the end-of-utterance decision "
                          f"({', '.join(degraded_int8)})")
    elif degraded_int8:
        recommendation = f"avoid {', '.join(degraded_int8)}: it moves the end-of-utterance decision"
    else:
        recommendation = "no measured strategy moves the end-of-utterance decision on the validation audio"
    return {"component": component, "min_eou_chunk_agreement": min_agreement, "strategies": per_strategy,
            "recommendation": recommendation}


def _plot_encoder(steps) -> np.ndarray:
    return np.array([float(np.linalg.norm(s["encoded_output"])) for s in steps])


def mean_mel(steps) -> np.ndarray:
    return np.array([float(np.mean(s["mel"])) for s in steps])


def decoder_norms(steps) -> np.ndarray:
    return np.array([float(np.linalg.norm(s["decoder"])) for s in steps])


def token_probs(steps) -> np.ndarray:
    return np.array([float(np.ravel(s["token_prob"])[0]) for s in steps])
