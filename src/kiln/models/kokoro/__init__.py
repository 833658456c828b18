"""Kokoro-82M text-to-speech (StyleTTS2 text/prosody model + iSTFTNet vocoder), 24 kHz.

Source: ``hexgrad/Kokoro-82M`` (``config.json``, ``kokoro-v1_0.pth``, a voice pack) or a
random-initialised bundle (``checkpoint.build_random``: ``tiny`` and ``full`` architectures, synthetic);
the network is the ``kokoro`` package's ``KModel``. One component spec, ``kokoro``; config.yaml's
``kokoro_5s`` and ``kokoro_15s`` (the consuming runtime's names) are two entries of it (``spec:
kokoro``), one fixed-shape network each (:class:`FixedKokoro` in ``net``): a token buffer of the contract's length with a padding mask in, a fixed window of
24 kHz audio out, the vocoder's randomness as inputs, durations clamped to the window with a flag.

Contract (:data:`kiln.models.kokoro.contract.CONTRACT`: lengths from the entry's options ``max_tokens``
and ``seconds``, sizes from the checkpoint's facts):

- inputs ``input_ids [1, T]`` int32 (config vocabulary ids, boundary token 0 first and after the
  last phoneme), ``attention_mask [1, T]`` int32 (1 on the valid prefix), ``ref_s [1, 2*style]``
  (a voice-pack row), ``random_phases [1, H]``, ``source_noise [1, samples, H]`` (H harmonics of
  the harmonic source), optional ``speed [1]``;
- outputs ``audio [1, samples]``, ``pred_dur [1, T]`` int32, ``audio_length [1]`` int32 (valid
  samples), ``clamped [1]`` int32 (1 when the predicted durations did not fit the window).
"""

from __future__ import annotations

from kiln.family.spec import ComponentSpec, DeferredPart, FamilySpec, Metric, Option, PlotSeries, declared
from kiln.models.kokoro import feeds, judge
from kiln.models.kokoro.contract import CONTRACT, SAMPLE_RATE

#: the network and checkpoint parts, imported when a hook is first called (torch: judging jobs never
#: import them); not named ``build``/``checkpoint``, which would hide the submodules from ``from ... import``
build_part = DeferredPart("kiln.models.kokoro.build")
checkpoint_part = DeferredPart("kiln.models.kokoro.checkpoint")


def kokoro_component(name: str = "kokoro") -> ComponentSpec:
    return ComponentSpec(
        name,
        **declared(CONTRACT),
        wrapper=build_part.wrapper, feeds=feeds.sentence_feeds, example=build_part.example,
        # variants rank by what a listener gets: the worst sentence's waveform correlation with the
        # float package (the metric validate.task_bounds gates the build on), not by sample error
        metrics=(Metric("waveform", judge.waveform_metrics, rank_by="min_correlation"),),
        plot=PlotSeries("RMS of the valid audio per sentence", judge.audio_rms), artifacts=judge.write_audio_artifacts,
        description="token ids + style vector + vocoder noise -> fixed window of 24 kHz audio",
        options=(Option("max_tokens", "the token buffer (boundary tokens included)"),
                 Option("seconds", "the fixed window of audio, in seconds (a whole number of duration frames)",
                        kind=float, minimum=None)))


FAMILY = FamilySpec(name="kokoro", load=build_part.load, facts=build_part.facts,
                    components=(kokoro_component(),),
                    build_random=checkpoint_part.build_random, faithfulness=build_part.faithfulness, sample_rate=SAMPLE_RATE)
