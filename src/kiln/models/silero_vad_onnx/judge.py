"""Silero VAD from ONNX, the judging part: onnxruntime on the original, unmodified .onnx file as a
third backend of the parity job (the feeds, metric and plot are :mod:`kiln.models.silero_vad`'s)."""

from __future__ import annotations

import numpy as np

from kiln.models.silero_vad import contract as silero_vad
from kiln.models.silero_vad_onnx.contract import GRAPH_OUTPUTS
from kiln.sources import onnx_graph


def _ort_step(session, constants: dict):
    """One 512-sample step on onnxruntime, in the contract's terms."""
    dtypes = {i.name: i.type for i in session.get_inputs()}
    fixed = {k: np.asarray(v, dtype=np.int64 if "int64" in dtypes.get(k, "") else np.float32)
             for k, v in constants.items()}

    def step(audio, h, c):
        probability, state = session.run(list(GRAPH_OUTPUTS), {"input": audio.astype(np.float32),
                                                                "state": np.stack([h, c]).astype(np.float32),
                                                                **fixed})
        return probability.reshape(1, 1, 1), state[0], state[1]

    return step


def source_runtime(facts, component):
    """onnxruntime on the original .onnx file, streaming windows like the exported component
    (``steps`` steps, noisy-OR), after checking the file still has the fetched sha256."""
    from kiln.sources import SourceFile, verify_file
    from kiln.validate.backends import Backend

    info = facts["onnxruntime"]
    path = verify_file(SourceFile(role="checkpoint", path=info["path"], sha256=info["sha256"], size=0))
    step = _ort_step(onnx_graph.session(path), info["constants"])
    steps = silero_vad.steps_of(component)
    size = silero_vad.CONTEXT_SAMPLES + silero_vad.CHUNK_SAMPLES

    def predict(inputs):
        audio, h, c = inputs["audio_input"], inputs["hidden_state"], inputs["cell_state"]
        none_speech = np.ones((1, 1, 1), dtype=np.float32)
        for i in range(steps):
            start = i * silero_vad.CHUNK_SAMPLES
            probability, h, c = step(audio[:, start:start + size], h, c)
            none_speech = none_speech * (1.0 - probability)
        probability = probability if steps == 1 else 1.0 - none_speech
        return {"vad_output": probability, "new_hidden_state": h, "new_cell_state": c}

    return Backend("onnxruntime", "source", None, predict)
