"""kiln's executor vs torch eager on the same computation: Silero `unified` over 1,000 streamed
chunks (state carried), fp32 and fp16 modes; torch with 1 thread and with its default threads.
Also the per-step profile of one call (ExecutionPlan.profile) of the fused plan and, op by op, of
the unfused plan, in both precisions.

    python benchmarks/bench_executor.py [--out results.json]

Goal (issue 10): kiln fp32 and fp16 each <= 1.2x torch eager with one thread, measured in one run."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import REPO, emit  # noqa: E402

CHUNKS = 1000
ROUNDS = 10


def _stream(predict, chunks: np.ndarray) -> float:
    hidden = np.zeros((1, 128), np.float32)
    cell = np.zeros((1, 128), np.float32)
    context = np.zeros((1, 64), np.float32)
    started = time.perf_counter()
    for chunk in chunks:
        window = np.concatenate([context, chunk[None]], axis=1)
        out = predict({"audio_input": window, "hidden_state": hidden, "cell_state": cell})
        hidden, cell = out["new_hidden_state"], out["new_cell_state"]
        context = window[:, -64:]
    return (time.perf_counter() - started) / len(chunks) * 1e3


def run() -> dict:
    from kiln.audio import speech_mix
    from kiln.config import load_config
    from kiln.export.convert import export_component
    from kiln.models import get_family
    from kiln.sources import fetch
    from kiln.validate.backends import kiln_backend, torch_backend

    config = load_config(REPO / "config.yaml")
    family = get_family("silero_vad")
    comp = config.component("silero_vad", "unified")
    audio = speech_mix(CHUNKS * 512 / 16000 + 0.1, seed=5)
    chunks = audio[: CHUNKS * 512].reshape(CHUNKS, 512)
    with tempfile.TemporaryDirectory() as tmp:
        record = fetch("silero_vad", "silero_vad", config.model("silero_vad").source, Path(tmp))
        net = family.load(record)
        # config.yaml states only the knobs: bind the entry to its contract, resolved from the
        # checkpoint's facts as the prepare job does
        from kiln.workflow.jobs import resolved_contracts

        facts = family.facts(net)
        comp = config.bound("silero_vad", resolved_contracts(config, "silero_vad", facts)).component(
            "silero_vad", "unified")
        package = Path(tmp) / "unified.mlpackage"
        export_component(family, net, comp, package)
        torch_predict = torch_backend(family.build_component(net, comp), comp).predict
        results = {}
        default_threads = torch.get_num_threads()
        if default_threads != 1:
            torch.set_num_threads(default_threads)
            _stream(torch_predict, chunks[:50])  # warm-up
            results[f"torch_eager_{default_threads}_threads_ms_per_chunk"] = round(_stream(torch_predict, chunks), 4)
        torch.set_num_threads(1)
        # The three run interleaved, ROUNDS blocks of the stream each, so a change of machine load
        # hits all of them; per backend the median block and the ratios of the median blocks.
        backends = {"torch_eager_1_threads": torch_predict,
                    "kiln_fp32": kiln_backend(package, "fp32").predict,
                    "kiln_fp16": kiln_backend(package, "fp16").predict}
        for predict in backends.values():
            _stream(predict, chunks[:50])  # warm-up (kiln: builds the plan)
        blocks = {name: [] for name in backends}
        for block in np.array_split(chunks, ROUNDS):
            for name, predict in backends.items():
                blocks[name].append(_stream(predict, block))
        for name, times in blocks.items():
            results[f"{name}_ms_per_chunk"] = round(statistics.median(times), 4)
            results[f"{name}_ms_per_chunk_blocks"] = [round(t, 4) for t in times]
        results["profile_one_call_us"] = _profile(package, chunks[0])
        torch.set_num_threads(default_threads)
    results["ratio_fp32_vs_torch_1_thread"] = round(
        results["kiln_fp32_ms_per_chunk"] / results["torch_eager_1_threads_ms_per_chunk"], 3)
    results["ratio_fp16_vs_torch_1_thread"] = round(
        results["kiln_fp16_ms_per_chunk"] / results["torch_eager_1_threads_ms_per_chunk"], 3)
    results["goal_ratio_max"] = 1.2
    return {"model": "silero_vad/unified", "chunks": CHUNKS, "synthetic": False, **results}


def _profile(package: Path, chunk: np.ndarray, repeats: int = 300) -> dict:
    """Per-step microseconds of one call: the fused plan's steps, and the unfused plan's time per
    op type (the op-by-op view), in each precision."""
    from kiln.mil import load_model

    model = load_model(package)
    inputs = {"audio_input": np.concatenate([np.zeros((1, 64), np.float32), chunk[None]], axis=1),
              "hidden_state": np.zeros((1, 128), np.float32), "cell_state": np.zeros((1, 128), np.float32)}
    out = {}
    for precision in ("fp32", "fp16"):
        fused = model.plan(precision).profile(inputs, repeats)
        unfused = model.plan(precision, fuse=False).profile(inputs, repeats)
        per_op = Counter()
        for row in unfused:
            per_op[row["op"]] += row["us"]
        out[precision] = {
            "fused_total_us": round(sum(r["us"] for r in fused), 1), "fused_steps": len(fused),
            "fused": [[r["op"], r["us"]] for r in fused],
            "unfused_total_us": round(sum(r["us"] for r in unfused), 1), "unfused_steps": len(unfused),
            "unfused_by_op": {op: round(us, 1) for op, us in per_op.most_common()}}
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    raise SystemExit(emit(run(), parser.parse_args().out))
