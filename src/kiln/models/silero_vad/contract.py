"""Silero VAD's contract and sizes, torch-free: the spec (``__init__``), the validation feeds and
the ONNX twin's judge read them without importing the network (``build``)."""

from __future__ import annotations

from kiln.family.contract import Contract, f32

SAMPLE_RATE = 16_000
CONTEXT_SAMPLES = 64
CHUNK_SAMPLES = 512
STATE_SIZE = 128


def steps_of(component) -> int:
    return component.options["steps"]   # declared and checked (kiln.models.silero_vad.STEPS)


#: the contract, stated once: the window is ``steps`` 512-sample steps after 64 context samples
CONTRACT = Contract(
    inputs=(f32("audio_input", 1, "context_samples + steps * chunk_samples"), f32("hidden_state", 1, "state_size"),
            f32("cell_state", 1, "state_size")),
    outputs=(f32("vad_output", 1, 1, 1), f32("new_hidden_state", 1, "state_size"),
             f32("new_cell_state", 1, "state_size")))
