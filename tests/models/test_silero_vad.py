"""The rebuilt Silero VAD module is bit-identical to silero's own model, streamed with state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kiln.foundation.errors import ContractError, ModelError, SourceError
from kiln.models import get_family
from kiln.models.silero_vad.build import CHUNK_SAMPLES, CONTEXT_SAMPLES, SileroVADWindow, load_weights

CHUNKS = 150


def _stream(net, record, audio: np.ndarray, chunks: int):
    """Stream 512-sample chunks through silero's model and kiln's, state and context carried. Silero's
    model: its own loader on the .jit of the release the source record took (6.0.0, not necessarily
    the environment's package)."""
    from silero_vad.utils_vad import init_jit_model

    reference = init_jit_model(str(record.file()))
    reference.reset_states()
    context = torch.zeros(1, CONTEXT_SAMPLES)
    h = torch.zeros(1, 128)
    c = torch.zeros(1, 128)
    ours, theirs = [], []
    with torch.no_grad():
        for i in range(chunks):
            chunk = torch.from_numpy(audio[i * CHUNK_SAMPLES:(i + 1) * CHUNK_SAMPLES])[None]
            theirs.append(reference(chunk, 16000).item())
            window = torch.cat([context, chunk], dim=1)
            probability, h, c = net(window, h, c)
            context = window[:, -CONTEXT_SAMPLES:]
            ours.append(probability.item())
    return np.array(ours), np.array(theirs)


def test_bit_identical_on_noise(silero_net, silero_record):
    noise = (0.2 * np.random.default_rng(7).standard_normal(CHUNKS * CHUNK_SAMPLES)).astype(np.float32)
    ours, theirs = _stream(silero_net, silero_record, noise, CHUNKS)
    assert np.array_equal(ours, theirs)


def test_bit_identical_on_speech(silero_net, silero_record, speech_16k):
    chunks = speech_16k.size // CHUNK_SAMPLES
    assert chunks >= 100
    ours, theirs = _stream(silero_net, silero_record, speech_16k, chunks)
    assert np.array_equal(ours, theirs)
    # the audio really exercises the model: both speech and non-speech decisions occur
    decisions = theirs > 0.5
    assert 0.1 < decisions.mean() < 0.9


def test_256ms_window_is_eight_steps_and_noisy_or(silero_net, speech_16k):
    window = SileroVADWindow(silero_net, steps=8)
    rng = np.random.default_rng(3)
    start = int(rng.integers(0, speech_16k.size - 4160))
    audio = torch.from_numpy(speech_16k[start:start + 4160])[None]
    h0 = torch.from_numpy(rng.standard_normal((1, 128)).astype(np.float32) * 0.1)
    c0 = torch.from_numpy(rng.standard_normal((1, 128)).astype(np.float32) * 0.1)
    with torch.no_grad():
        p, h, c = window(audio, h0, c0)
        none = torch.ones(1, 1, 1)
        hs, cs = h0, c0
        for step in range(8):
            pi, hs, cs = silero_net(audio[:, step * 512:step * 512 + 576], hs, cs)
            none = none * (1 - pi)
    assert p.shape == (1, 1, 1)
    assert torch.equal(p, 1 - none) and torch.equal(h, hs) and torch.equal(c, cs)


def test_component_contract_is_checked(kiln_config, silero_net):
    import dataclasses

    family = get_family("silero_vad")
    comp = kiln_config.component("silero_vad", "unified")
    bad = dataclasses.replace(comp, options={"steps": 8})
    with pytest.raises(ContractError, match=r"^models\.silero_vad\.components\.unified\.inputs\.audio_input: axis 1 "
                                            r"is 576 in \[1, 576\], the family's contract gives 4160"):
        family.build_component(silero_net, bad)
    # an entry is built by the spec it names (its own name unless `spec:` says another), not by its name
    assert family.check_contract(dataclasses.replace(comp, name="unified_36ms")).name == "unified"
    with pytest.raises(ContractError, match="models.silero_vad.components.decoder: the silero_vad family builds no "
                                            "component 'decoder'"):
        family.build_component(silero_net, dataclasses.replace(comp, name="decoder", spec="decoder"))


def test_corrupt_checkpoint_names_the_file(tmp_path, silero_record):
    broken = tmp_path / "silero_vad.jit"
    broken.write_bytes(open(silero_record.files[0].path, "rb").read()[:5000])
    with pytest.raises(SourceError, match="silero_vad.jit: not a loadable TorchScript archive"):
        load_weights(broken)
