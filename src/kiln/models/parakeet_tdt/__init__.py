"""Parakeet TDT (NVIDIA FastConformer + Token-and-Duration Transducer), from a NeMo ``.nemo`` file.

Source: ``nvidia/parakeet-tdt-0.6b-v3`` (``EncDecRNNTBPEModel`` with TDT loss/decoding), or a
random-initialised model of the same architecture built offline (``checkpoint.build_random``, synthetic).

Components (names, shapes and dtypes follow the consuming runtime, FluidAudio; every shape comes
from the checkpoint's config and the component's contract, none is a constant here):

``preprocessor``  ``audio_signal [1,N]`` fp32, ``audio_length [1]`` int32 -> ``mel [1,n_mels,F]``,
                  ``mel_length [1]`` int32. NeMo's STFT front end rewritten traceably
                  (:class:`kiln.models._nemo.MelFrontend`). Export it at float32 precision: the log
                  of near-zero power bins and the variance are where fp16 loses.
``encoder``       ``mel [1,n_mels,F]``, ``mel_length [1]`` -> ``encoder [1,d_model,T]``,
                  ``encoder_length [1]`` int32. FastConformer with fixed shapes: the relative
                  positional encodings are precomputed for exactly ``T`` frames; padding is masks.
``mel_encoder``   both fused: ``audio_signal``, ``audio_length`` -> ``encoder``, ``encoder_length``.
``decoder``       RNN-T prediction net, one step (U=1): ``targets [1,1]`` int32, ``target_length
                  [1]`` int32 (accepted for the consumer's contract, not used: U is always 1),
                  ``h_in``/``c_in [L,1,H]`` -> ``decoder [1,H,1]`` (the LSTM output, channels first
                  like the encoder, what the joint's ``pred`` projection consumes), ``h_out``,
                  ``c_out``. The blank id is the embedding's padding row (zeros): feeding blank with
                  zero states is NeMo's start-of-sequence step.
``joint``         ``encoder_step [1,d_model,1]``, ``decoder_step [1,H,1]`` -> ``logits [1,1,1,V+1+D]``:
                  raw joint output (``joint_net(enc(f) + pred(g))``), token logits then D duration
                  logits. NeMo's ``RNNTJoint.joint`` would log-softmax over all V+1+D values on
                  CPU; kiln calls the projections directly and leaves normalisation to consumers.
``joint_decision``  all frames at once: ``encoder [1,d_model,T]``, ``decoder_step [1,H,1]`` ->
                  ``token_id [1,T,1]`` int32 (argmax over the V+1 token logits, blank = V),
                  ``token_prob [1,T,1]`` fp32 (softmax over token logits only), ``duration [1,T,1]``
                  int32 (the duration *value* ``durations[argmax]``, in encoder frames).
``joint_decision_single_step``  the same for one frame (``encoder_step [1,d_model,1]``, outputs
                  ``[1,1,1]``): FluidAudio's ``JointDecisionv3``.

Traps handled deliberately: NeMo's ``@typecheck`` is bypassed (inner modules are called directly);
the joint's log-softmax path is skipped; ``pack_padded_sequence`` never appears (one step, explicit
LSTM state); attention masks use -10000 (NeMo's value, finite in fp16) and ``q`` is pre-scaled by
``1/sqrt(d_k)`` before ``q·k`` and ``q·p`` so the scores' intermediate products stay in fp16 range
(the unscaled ``q·k`` of a 1024-wide model is where fp16 overflows first); softmax of fully masked
padding rows is zeroed by multiplication, not by ``masked_fill`` on a NaN path.
"""

from __future__ import annotations

from kiln.family.spec import (ComponentSpec, DeferredPart, FamilySpec, Metric, Option, PlotSeries, StatePair, Task,
                              declared)
from kiln.models.parakeet_tdt import feeds, judge
from kiln.models.parakeet_tdt.contract import CONTRACTS, FAMILY_NAME, WINDOWED  # noqa: F401

#: the network and checkpoint parts, imported when a hook is first called (torch: judging jobs never
#: import them); not named ``build``/``checkpoint``, which would hide the submodules from ``from ... import``
build_part = DeferredPart("kiln.models.parakeet_tdt.build")
checkpoint_part = DeferredPart("kiln.models.parakeet_tdt.checkpoint")

# -- the family: its components --------------------------------------------------------------------


#: the window of the audio-sized components, in seconds (config.yaml ``options.seconds``)
SECONDS = Option("seconds", "the fixed audio window in seconds (the preprocessor, encoder and joint_decision "
                 "frame counts follow from it and the checkpoint's STFT and subsampling)", kind=float, minimum=None)


TASK = Task(
    description="TDT greedy decoding (host loop; decoder state carried per backend)",
    requires=(("preprocessor", "encoder", "decoder", "joint_decision_single_step"),
              ("mel_encoder", "decoder", "joint_decision_single_step")),
    inputs=feeds.task_inputs, run=feeds.run_task, compare=judge.compare_task)

FAMILY = FamilySpec(
    name=FAMILY_NAME,
    load=build_part.load,
    facts=build_part.facts,
    build_random=checkpoint_part.build_random,
    task=TASK,
    components=(
        ComponentSpec("preprocessor", **declared(CONTRACTS["preprocessor"]), wrapper=build_part.preprocessor,
                      feeds=feeds.audio_feeds, example=build_part.audio_example, options=(SECONDS,),
                      metrics=(Metric("mel", judge.similarity("mel", "mel_length")),)),
        ComponentSpec("encoder", **declared(CONTRACTS["encoder"]), wrapper=build_part.encoder, feeds=feeds.mel_feeds,
                      example=build_part.mel_example, options=(SECONDS,),
                      metrics=(Metric("encoder", judge.similarity("encoder", "encoder_length")),)),
        ComponentSpec("mel_encoder", **declared(CONTRACTS["mel_encoder"]), wrapper=build_part.mel_encoder,
                      feeds=feeds.audio_feeds, example=build_part.audio_example, options=(SECONDS,),
                      metrics=(Metric("encoder", judge.similarity("encoder", "encoder_length")),)),
        ComponentSpec("decoder", **declared(CONTRACTS["decoder"]), wrapper=build_part.decoder, feeds=feeds.decoder_feeds,
                      example=build_part.decoder_example, options=(),
                      state=(StatePair("h_in", "h_out"), StatePair("c_in", "c_out")),
                      metrics=(Metric("decoder", judge.decoder_metrics),),
                      plot=PlotSeries("decoder output L2 norm per step", judge.decoder_norms)),
        ComponentSpec("joint", **declared(CONTRACTS["joint"]), wrapper=build_part.joint, feeds=feeds.joint_step_feeds,
                      options=(),
                      metrics=(Metric("argmax", judge.joint_argmax_metrics, rank_by="token_argmax_agreement"),),
                      plot=PlotSeries("max joint logit per step", judge.max_logits)),
        ComponentSpec("joint_decision", **declared(CONTRACTS["joint_decision"]), wrapper=build_part.joint_decision,
                      feeds=feeds.joint_decision_feeds, options=(SECONDS,),
                      metrics=(Metric("decisions", judge.decision_metrics, rank_by="token_agreement"),)),
        ComponentSpec("joint_decision_single_step", **declared(CONTRACTS["joint_decision_single_step"]),
                      wrapper=build_part.joint_decision_single_step, feeds=feeds.joint_step_feeds, options=(),
                      metrics=(Metric("decisions", judge.decision_metrics, rank_by="token_agreement"),),
                      plot=PlotSeries("token probability per step", judge.token_probs)),
    ),
)
