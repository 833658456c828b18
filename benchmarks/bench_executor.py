"""kiln's executor vs torch eager on the same computation: Silero `unified` over 1,000 streamed
chunks (state carried), fp32 and fp16 modes; torch with 1 thread and with its default threads."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import REPO

CHUNKS = 1000


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
        package = Path(tmp) / "unified.mlpackage"
        export_component(family, net, comp, package)
        torch_predict = torch_backend(family.build_component(net, comp), comp).predict
        results = {}
        default_threads = torch.get_num_threads()
        for threads in (1, default_threads):
            torch.set_num_threads(threads)
            _stream(torch_predict, chunks[:50])  # warm-up
            results[f"torch_eager_{threads}_threads_ms_per_chunk"] = round(_stream(torch_predict, chunks), 4)
        torch.set_num_threads(1)
        for precision in ("fp32", "fp16"):
            predict = kiln_backend(package, precision).predict
            _stream(predict, chunks[:50])
            results[f"kiln_{precision}_ms_per_chunk"] = round(_stream(predict, chunks), 4)
        torch.set_num_threads(default_threads)
    results["ratio_fp32_vs_torch_1_thread"] = round(
        results["kiln_fp32_ms_per_chunk"] / results["torch_eager_1_threads_ms_per_chunk"], 3)
    results["ratio_fp16_vs_torch_1_thread"] = round(
        results["kiln_fp16_ms_per_chunk"] / results["torch_eager_1_threads_ms_per_chunk"], 3)
    results["goal_ratio_max"] = 1.5
    return {"model": "silero_vad/unified", "chunks": CHUNKS, "synthetic": False, **results}
