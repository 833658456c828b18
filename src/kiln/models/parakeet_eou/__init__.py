"""Parakeet EOU (``nvidia/parakeet_realtime_eou_120m-v1``): cache-aware streaming FastConformer + RNNT
with an end-of-utterance token, exported per chunk with every cache explicit.

Components (names, shapes and dtypes follow FluidAudio; every size comes from the checkpoint's
facts and the entry's ``chunk_ms``: the symbolic contracts in :mod:`kiln.models.parakeet_eou.contract`,
resolved by :mod:`kiln.family.contract`):

``preprocessor``       ``audio_signal [1, N]`` (one chunk), ``audio_context [1, C]`` -> ``mel
                       [1, n_mels, N/hop]`` (un-normalised log-mel), ``new_audio_context``: the STFT's
                       left context as state.
``streaming_encoder``  ``audio_signal [1, n_mels, T]``, ``audio_length [1]``, ``pre_cache``,
                       ``cache_last_channel``, ``cache_last_time``, ``cache_last_channel_len`` ->
                       ``encoded_output [1, d, T/8]``, ``encoded_length``, ``new_pre_cache``,
                       ``new_cache_last_channel``, ``new_cache_last_time``, ``new_cache_last_channel_len``
                       (the four caches are state pairs). A session starts from zero caches:
                       ``cache_last_channel_len`` 0 makes the step NeMo's first streaming step
                       (``pre_cache`` and the first ``mel_lag_frames`` of the chunk precede the
                       stream and are ignored).
``decoder``            RNNT prediction net, one step, explicit LSTM state (``h_in``/``c_in`` pairs).
``joint_decision``     ``encoder_step [1, d, 1]``, ``decoder_step [1, H, 1]`` -> ``token_id``,
                       ``token_prob`` ([1,1,1]; RNNT: no durations).

Chunk sizes are options, not names: every ``preprocessor`` / ``streaming_encoder`` entry in
config.yaml gives its chunk as ``options.chunk_ms`` (checked against its contract's shapes), and an
entry of another name says which spec it builds: ``streaming_encoder_160ms: {spec:
streaming_encoder, options: {chunk_ms: 160}}``. Each encoder is fed by the preprocessor entry of the
same ``chunk_ms``; the entries are built side by side in one model directory, under their own names.
FluidAudio keeps one directory per chunk size with the same file names: the consumer contract maps
each entry to its published file (``streaming_encoder_160ms`` -> ``160ms/streaming_encoder``); the
chunk-independent ``decoder`` / ``joint_decision`` are shared by every chunk size.
"""

from __future__ import annotations

from kiln.family.spec import (ComponentSpec, DeferredPart, FamilySpec, Metric, Option, PlotSeries, StatePair, Task,
                              declared)
from kiln.models.parakeet_eou import feeds, judge
from kiln.models.parakeet_eou.contract import (DECODER_CONTRACT, ENCODER_CONTRACT, ENCODER_STATE, FAMILY_NAME,
                                               JOINT_CONTRACT, PREPROCESSOR_CONTRACT, PREPROCESSOR_STATE)

#: the network and checkpoint parts, imported when a hook is first called (torch: judging jobs never
#: import them); not named ``build``/``checkpoint``, which would hide the submodules from ``from ... import``
build_part = DeferredPart("kiln.models.parakeet_eou.build")
checkpoint_part = DeferredPart("kiln.models.parakeet_eou.checkpoint")


CHUNK_MS = Option("chunk_ms", "the streamed chunk in milliseconds, a whole number of the model's native "
                  "attention chunks (160, 320, 1280 for FluidAudio)")


COMPONENTS = (
    ComponentSpec(
        name="preprocessor", **declared(PREPROCESSOR_CONTRACT), wrapper=build_part.preprocessor_wrapper,
        feeds=feeds.preprocessor_feeds, state=PREPROCESSOR_STATE, options=(CHUNK_MS,),
        plot=PlotSeries("mean log-mel per chunk", judge.mean_mel),
        description="one chunk of audio -> un-normalised log-mel frames; STFT left context as state"),
    ComponentSpec(
        name="streaming_encoder", **declared(ENCODER_CONTRACT), wrapper=build_part.encoder_wrapper,
        feeds=feeds.encoder_feeds, state=ENCODER_STATE, example=build_part.encoder_example, options=(CHUNK_MS,),
        metrics=(Metric("chunks", judge.encoder_chunk_metric),),
        plot=PlotSeries("encoder output L2 norm per chunk", judge._plot_encoder), artifacts=judge.encoder_error_plot,
        description="cache-aware FastConformer, one chunk; every cache an explicit input and output"),
    ComponentSpec(
        name="decoder", **declared(DECODER_CONTRACT), wrapper=build_part.decoder_wrapper,
        feeds=feeds.decoder_feeds, state=(StatePair("h_in", "h_out"), StatePair("c_in", "c_out")),
        example=build_part.decoder_example, metrics=(Metric("decoder", judge.decoder_metric),), options=(),
        plot=PlotSeries("decoder output L2 norm per step", judge.decoder_norms),
        description="RNNT prediction network, one step (U=1), explicit LSTM state"),
    ComponentSpec(
        name="joint_decision", **declared(JOINT_CONTRACT), wrapper=build_part.joint_wrapper,
        feeds=feeds.joint_feeds, metrics=(Metric("decisions", judge.joint_metric),), options=(),
        plot=PlotSeries("token probability per step", judge.token_probs),
        description="RNNT joint, one frame: argmax token id (blank = vocabulary size) and its probability"),
)

TASK = Task(
    description="greedy RNNT on the host over the streamed chunks (decoder state kept across chunks): "
                "token stream and the chunks where <EOU> fires, per chunk size",
    requires=(("preprocessor", "streaming_encoder", "decoder", "joint_decision"),),
    inputs=feeds.task_inputs, run=feeds.task_run, compare=judge.task_compare,
    quantization=judge.quantization_eou_summary, plot=judge.token_timeline_plot)

FAMILY = FamilySpec(name=FAMILY_NAME, load=build_part.load, facts=build_part.facts, components=COMPONENTS,
                    build_random=checkpoint_part.build_random, task=TASK, faithfulness=build_part.faithfulness)
