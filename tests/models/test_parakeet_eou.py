"""Parakeet EOU on a random-initialised tiny cache-aware model (synthetic, built once per session):
the .nemo builds and restores, the traced per-chunk wrappers equal NeMo's own cache-aware streaming
(every cache after every chunk) and its offline encoder, the exported components on kiln's executor
(fp32, fp16) agree chunk by chunk and on where <EOU> fires, and bad checkpoints are refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from kiln.config import load_config
from kiln.foundation.errors import ContractError, ModelError

pytest.importorskip("nemo.collections.asr", reason="nemo_toolkit[asr] is not installed")

from kiln.models import _nemo  # noqa: E402
from kiln.models import parakeet_eou as eou  # noqa: E402
from kiln.models.parakeet_eou import build as eou_build, checkpoint as eou_checkpoint  # noqa: E402
from kiln.models.parakeet_eou import contract as eou_contract, pipeline as eou_pipeline  # noqa: E402
from kiln.models.parakeet_eou import feeds as eou_feeds, judge as eou_judge, net as _eou  # noqa: E402

MODEL = "parakeet_eou_tiny"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # two cores shared by many processes: torch's thread pool spins instead of computing
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_nemo(tmp_path_factory) -> Path:
    return eou_checkpoint.build_random("tiny", seed=0, overrides={}, out_dir=tmp_path_factory.mktemp("eou"))


@pytest.fixture(scope="module")
def source(tiny_nemo):
    return _eou.load(tiny_nemo)


def test_the_random_checkpoint_is_the_same_bytes_from_another_process_and_folder(tiny_nemo, tmp_path):
    """Same seed, same bytes: NeMo's random artifact names and save times are not in the archive, and
    no absolute path is (tokenizer.dir is relative), so two checkouts build one source digest."""
    import subprocess
    import sys
    import tarfile

    other = tmp_path / "second" / "checkout"
    # one thread, as here: the decision calibration runs the model, and float sums follow the threads
    code = ("import sys, torch; torch.set_num_threads(1); from kiln.models.parakeet_eou import checkpoint as eou_checkpoint; "
            "print(eou_checkpoint.build_random('tiny', seed=0, overrides={}, out_dir=sys.argv[1]))")
    run = subprocess.run([sys.executable, "-c", code, str(other)], capture_output=True, text=True, check=True)
    rebuilt = Path(run.stdout.strip().splitlines()[-1])
    assert rebuilt.parent == other and rebuilt.read_bytes() == tiny_nemo.read_bytes()
    with tarfile.open(tiny_nemo) as archive:
        members = archive.getmembers()
        config = archive.extractfile("./model_config.yaml").read().decode()
    assert all(m.mtime == 0 and m.uname == "" for m in members)
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert str(tiny_nemo.parent) not in config and "dir: tokenizer_eou_tiny" in config


def test_a_failed_save_leaves_nothing_behind(tmp_path):
    class Failing:
        def save_to(self, path):
            Path(path).write_bytes(b"half an archive")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _nemo.save_reproducibly(Failing(), tmp_path / "m.nemo")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def facts(source):
    return eou_build.facts(source)


@pytest.fixture(scope="module")
def model(facts):
    """The tiny model's config.yaml entry, bound to its contracts as the prepare job resolves them
    from the checkpoint's facts and the entries' options."""
    from kiln.workflow.jobs import resolved_contracts

    config = load_config(REPO / "config.yaml")
    return config.bound(MODEL, resolved_contracts(config, MODEL, facts)).model(MODEL)


@pytest.fixture(scope="module")
def traced(source, facts, model):
    """The prepare job's work: every component's wrapper, traced with its example inputs."""
    from kiln.export.convert import trace_component

    programs = {}
    for name, component in model.components.items():
        spec = eou.FAMILY.check_contract(component)
        wrapper = spec.wrapper(source, component, facts)
        programs[name] = trace_component(wrapper, component, spec.example_inputs(component, facts))
    return programs


def predictor(program, spec):
    return _eou.torch_predict(program, spec.inputs, spec.outputs)


@pytest.fixture(scope="module")
def torch_predicts(traced, model):
    return {name: predictor(p, eou.FAMILY.spec_of(model.components[name])) for name, p in traced.items()}


@pytest.fixture(scope="module")
def faithfulness(source, torch_predicts, facts, model):
    return eou_build.faithfulness(source, torch_predicts, facts, model.components)


@pytest.fixture(scope="module")
def audio(facts):
    return eou_pipeline.eou_audio(facts["sample_rate"], multiple=5120)


# -- building and restoring ----------------------------------------------------------------------------

def test_tiny_nemo_restores_with_streaming_facts_from_its_config(tiny_nemo, source, facts):
    config = _nemo.check_nemo_archive(tiny_nemo)
    assert config["kiln"]["synthetic"] is True
    assert config["encoder"]["att_context_style"] == "chunked_limited"
    assert facts["att_context_size"] == config["encoder"]["att_context_size"] == [16, 1]
    assert facts["last_channel_cache_size"] == 16 and facts["conv_cache_size"] == 8
    assert facts["pre_encode_cache_size"] == 9 and facts["drop_extra_pre_encoded"] == 2
    # the published layout: <EOU>, <EOB> last in the vocabulary, blank right after
    vocab = facts["vocab_size"]
    assert (facts["eou_id"], facts["eob_id"], facts["blank_id"]) == (vocab - 2, vocab - 1, vocab)
    assert facts["vocabulary"][-2:] == ["<EOU>", "<EOB>"]
    assert facts["mel_lag_frames"] == 7 and facts["stft_context"] == 256 + 7 * 160 + 1


def test_config_contracts_are_what_the_checkpoint_gives(facts, model):
    for component in model.components.values():
        eou.FAMILY.check_contract(component, facts)   # raises naming model, component, tensor, axis


def test_a_chunk_off_the_native_attention_chunk_is_refused(facts):
    with pytest.raises(ModelError, match="not a multiple of the model's native attention chunk"):
        eou_contract.chunk_values(facts, {"chunk_ms": 240})   # 1.5 native chunks of 160 ms


def test_a_chunk_option_that_contradicts_the_contract_is_refused(facts, model):
    wrong = dataclasses.replace(model.components["streaming_encoder"], options={"chunk_ms": 160})
    with pytest.raises(ContractError, match=r"models.parakeet_eou_tiny.components.streaming_encoder.inputs.audio_signal: "
                                            r"axis 2 is 32 in \[1, 80, 32\], the family's contract gives 16 "):
        eou.FAMILY.check_contract(wrong, facts)
    # the name says nothing: an entry of any name is sized by its option alone
    renamed = dataclasses.replace(model.components["streaming_encoder"], name="streaming_encoder_160ms")
    assert eou.FAMILY.check_contract(renamed, facts).name == "streaming_encoder"
    assert eou_contract.chunk_samples_of(renamed, facts) == 5120


def test_each_encoder_is_fed_by_the_preprocessor_of_its_chunk(model):
    assert eou_contract.chunk_pairs(model.components) == {"streaming_encoder": "preprocessor",
                                                       "streaming_encoder_160ms": "preprocessor_160ms"}
    alone = {n: c for n, c in model.components.items() if n != "preprocessor_160ms"}
    with pytest.raises(ContractError, match="streaming_encoder_160ms: no preprocessor entry with chunk_ms 160"):
        eou_contract.chunk_pairs(alone)


# -- faithfulness: traced wrappers vs NeMo ------------------------------------------------------------

@pytest.mark.parametrize("name", ["streaming_encoder", "streaming_encoder_160ms"])
def test_wrapper_streaming_equals_nemo_cache_aware_streaming(faithfulness, audio, name):
    report = faithfulness[name]
    assert report["chunks"] == audio.size // (5120 if name == "streaming_encoder" else 2560) >= 20
    errors = report["vs_nemo_streaming_max_abs"]
    assert set(errors) == {"encoded_output", "encoded_length", "new_pre_cache", "new_cache_last_channel",
                           "new_cache_last_time", "new_cache_last_channel_len"}
    assert max(errors.values()) <= 1e-5, errors
    assert report["mel_vs_nemo_offline_max_abs"] <= 1e-3


@pytest.mark.parametrize("name", ["streaming_encoder", "streaming_encoder_160ms"])
def test_streaming_matches_nemo_offline_encoder_from_the_first_frame(faithfulness, name):
    offline = faithfulness[name]["offline"]
    assert offline["greedy_tokens"] > 10 and offline["frames"] >= 60
    assert offline["greedy_token_differences"] == 0 and offline["match"]
    assert offline["encoder_max_abs"] <= 1e-5      # measured 1.3e-6 (320 ms), 1.4e-6 (160 ms)


@pytest.fixture(scope="module")
def minute_of_speech(facts):
    """A one-minute espeak-ng recording (sentences and pauses), a whole number of 320 ms chunks."""
    from kiln.audio import speech_mix

    audio = speech_mix(60.0, facts["sample_rate"], seed=0)
    return audio[:audio.size // 5120 * 5120]


@pytest.mark.parametrize("preprocessor,encoder,chunk", [("preprocessor", "streaming_encoder", 5120),
                                                        ("preprocessor_160ms", "streaming_encoder_160ms", 2560)])
def test_a_session_starts_as_nemo_streams_it(torch_predicts, source, facts, minute_of_speech, preprocessor, encoder,
                                             chunk):
    """A minute of speech through kiln's pipeline (streamed mel, encoder from zero caches, greedy
    RNNT) and through NeMo end to end (its preprocessor, CacheAwareStreamingAudioBuffer's first
    short step, conformer_stream_step, its greedy decoding): the same tokens in every chunk and
    <EOU> in the same chunks from chunk 0 (before the session start was NeMo's, chunks 0-6 at
    320 ms and 0-12 at 160 ms differed)."""
    run = eou_pipeline.run_pipeline(torch_predicts, facts, minute_of_speech, chunk, preprocessor, encoder)
    frames = eou_contract.chunk_geometry(facts, chunk)["encoder_frames"]
    session = eou_build.session_comparison(source, run, facts, minute_of_speech, frames)
    assert session["chunks"] == minute_of_speech.size // chunk and session["nemo_steps"] >= session["chunks"]
    assert sum(map(len, session["tokens_per_chunk_nemo"][:3])) > 0, "NeMo must emit tokens in the first chunks"
    assert session["tokens_per_chunk"][:15] == session["tokens_per_chunk_nemo"][:15]
    assert session["first_differing_chunk"] is None and session["match"], session["first_differing_chunk"]
    assert len(session["eou_chunks"]) >= 10 and session["eou_chunks"] == session["eou_chunks_nemo"]
    assert session["encoder_max_abs"] <= 1e-5      # measured 1.8e-6 (320 ms), 2.1e-6 (160 ms)


def test_the_session_start_ignores_what_precedes_the_stream(torch_predicts, facts, minute_of_speech):
    """At cache_last_channel_len 0 the pre-encode cache and the preprocessor's lag frames lie
    before the stream (NeMo's first step has no such frames): whatever they hold, the first
    chunk's outputs are the same; once the cache is non-empty they count."""
    mels = eou_pipeline.stream_mel(torch_predicts["preprocessor"], facts, minute_of_speech, 5120)
    encoder = torch_predicts["streaming_encoder"]
    lag, rng = facts["mel_lag_frames"], np.random.default_rng(3)
    first = {"audio_signal": mels[0]["mel"], "audio_length": np.array([mels[0]["mel"].shape[-1]], np.int32),
             **eou_pipeline._zeros_state(facts)}
    noisy = dict(first, audio_signal=first["audio_signal"].copy(),
                 pre_cache=rng.normal(-4.0, 3.0, first["pre_cache"].shape).astype(np.float32))
    noisy["audio_signal"][:, :, :lag] = rng.normal(-4.0, 3.0, (1, facts["n_mels"], lag))
    reference, moved = encoder(first), encoder(noisy)
    for name in ("encoded_output", "new_cache_last_channel", "new_cache_last_time"):
        assert np.array_equal(reference[name], moved[name]), name
    # mid-stream the same change is not ignored
    later = dict(noisy, cache_last_channel_len=np.array([4], np.int32))
    assert not np.allclose(encoder(later)["encoded_output"], encoder(dict(first, cache_last_channel_len=later["cache_last_channel_len"]))["encoded_output"])


def test_attention_cache_fills_then_saturates(torch_predicts, facts, audio):
    mels = eou_pipeline.stream_mel(torch_predicts["preprocessor"], facts, audio, 5120)
    steps = eou_pipeline.stream_encoder(torch_predicts["streaming_encoder"], facts, [m["mel"] for m in mels])
    lengths = [int(s["new_cache_last_channel_len"][0]) for s in steps]
    assert lengths[:5] == [4, 8, 12, 16, 16] and set(lengths[4:]) == {16}


# -- export + kiln executor ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kiln_predicts(traced, model, tmp_path_factory):
    """The 320 ms components exported (fp32 for the preprocessor, as configured; fp32 and fp16
    otherwise) and run on kiln's executor in fp32 and fp16 modes."""
    from kiln.export.convert import convert_traced
    from kiln.export.package import save_mlpackage
    from kiln.validate.backends import kiln_backend

    out = tmp_path_factory.mktemp("eou_packages")
    backends = {"kiln_fp32": {}, "kiln_fp16": {}}
    for name in ("preprocessor", "streaming_encoder", "decoder", "joint_decision"):
        component = model.components[name]
        for mode, precision in (("kiln_fp32", "float32"), ("kiln_fp16", "float16")):
            if name == "preprocessor":
                precision = component.export.compute_precision
            c = dataclasses.replace(component, export=dataclasses.replace(component.export,
                                                                          compute_precision=precision))
            path = out / f"{name}_{precision}.mlpackage"
            if not path.exists():
                save_mlpackage(convert_traced(traced[name], c, c.export), path)
            backends[mode][name] = kiln_backend(path, mode.split("_")[1]).predict
    return backends


@pytest.mark.parametrize("mode,atol", [("kiln_fp32", 1e-4), ("kiln_fp16", 0.05)])
def test_kiln_executor_streams_every_cache_like_torch(torch_predicts, kiln_predicts, facts, audio, mode, atol):
    mels = [m["mel"] for m in eou_pipeline.stream_mel(torch_predicts["preprocessor"], facts, audio, 5120)]
    reference = eou_pipeline.stream_encoder(torch_predicts["streaming_encoder"], facts, mels)
    candidate = eou_pipeline.stream_encoder(kiln_predicts[mode]["streaming_encoder"], facts, mels)
    assert len(candidate) == len(reference) == audio.size // 5120
    for output in eou_contract.ENCODER_CONTRACT.output_names:
        worst = max(_eou.max_abs(r[output], c[output]) for r, c in zip(reference, candidate))
        limit = 0 if output.endswith("_len") or output == "encoded_length" else \
            (2e-2 if output == "new_pre_cache" and mode == "kiln_fp16" else atol)
        assert worst <= limit, (output, worst)
    kiln_mels = eou_pipeline.stream_mel(kiln_predicts[mode]["preprocessor"], facts, audio, 5120)
    assert max(_eou.max_abs(a, b["mel"]) for a, b in zip(mels, kiln_mels)) <= 1e-3


@pytest.mark.parametrize("mode", ["kiln_fp32", "kiln_fp16"])
def test_eou_fires_in_the_same_chunks_on_kiln(torch_predicts, kiln_predicts, facts, audio, mode):
    inputs = {"audio": audio, "encoders": np.array(["streaming_encoder"]), "preprocessors": np.array(["preprocessor"]),
              "chunk_samples": np.array([5120])}
    reference = eou_feeds.task_run(torch_predicts, facts, inputs)
    result = eou_feeds.task_run({**torch_predicts, **kiln_predicts[mode]}, facts, inputs)
    ref = reference["by_chunk_size"]["streaming_encoder"]
    assert ref["chunks"] == audio.size // 5120 and ref["eou_chunks"], "the calibrated tiny model must emit <EOU>"
    assert 0 < len(ref["tokens"]) < 5 * 100, "blank must win on most frames"
    compared = eou_judge.task_compare(reference, result)["streaming_encoder"]
    assert compared["first_eou_same_chunk"] and compared["first_eou_chunk_delta"] == 0
    if mode == "kiln_fp32":
        assert compared["tokens"]["exact_match"] and compared["eou_chunk_agreement"] == 1.0
    else:
        # the fp16 encoder alone (its session start included) gives the fp32 tokens exactly
        encoder_only = eou_feeds.task_run({**torch_predicts, "streaming_encoder": kiln_predicts[mode]["streaming_encoder"]},
                                    facts, inputs)
        assert eou_judge.task_compare(reference, encoder_only)["streaming_encoder"]["tokens"]["exact_match"]
        # fp16 decoder and joint flip near-ties of the random joint, after which the stream shifts
        # (measured: every reference <EOU> chunk kept, 3 extra of 12, the first one identical)
        assert set(compared["eou_chunks_reference"]) <= set(compared["eou_chunks"])
        assert compared["eou_chunk_agreement"] >= 0.7


# -- bad input ---------------------------------------------------------------------------------------------

def _full_context(config: dict) -> None:
    config["encoder"].update({"att_context_size": [-1, -1], "att_context_style": "regular",
                              "conv_context_size": None, "causal_downsampling": False})


def test_full_context_encoder_is_refused_before_export(tmp_path):
    path = eou_checkpoint.build_random("tiny", seed=1, overrides={"n_layers": 1}, out_dir=tmp_path, config_edit=_full_context)
    with pytest.raises(ModelError) as err:
        _eou.load(path)
    message = str(err.value)
    assert str(path) in message and "not cache-aware" in message
    assert "full-context attention (att_context_size=[-1, -1])" in message
    assert "non-causal convolutions" in message and "non-causal downsampling" in message


def test_vocabulary_without_eou_is_refused_before_export(tmp_path):
    plain = _nemo.build_sentencepiece(tmp_path / "plain_tokenizer", 40, eou_checkpoint.TOKENIZER_TEXT)

    def without_eou(config: dict) -> None:
        config["tokenizer"]["dir"] = str(plain)

    path = eou_checkpoint.build_random("tiny", seed=2, overrides={"n_layers": 1}, out_dir=tmp_path, config_edit=without_eou)
    with pytest.raises(ModelError, match=r"no end-of-utterance token '<EOU>'") as err:
        _eou.load(path)
    assert str(path) in str(err.value)


def test_quantization_summary_recommends_fp16_when_int8_moves_the_eou():
    def result(eou_chunks):
        tokens = [5] * len(eou_chunks)
        return {"by_chunk_size": {"streaming_encoder": {
            "tokens": tokens, "token_chunks": list(eou_chunks), "eou_chunks": list(eou_chunks),
            "first_eou_chunk": eou_chunks[0] if eou_chunks else None}}}

    reference = result([4, 9])
    summary = eou_judge.quantization_eou_summary(reference, {"int8_per_channel": result([5, 9]),
                                                       "int8_per_tensor": result([9]),
                                                       "palettize_6bit": result([4, 9])})
    assert summary["strategies"]["int8_per_channel"]["eou_degraded"]
    assert summary["strategies"]["int8_per_channel"]["first_eou_chunk_delta"] == 1
    assert not summary["strategies"]["palettize_6bit"]["eou_degraded"]
    assert summary["recommendation"].startswith("fp16 only: every int8 strategy moves")
    fine = eou_judge.quantization_eou_summary(reference, {"int8_per_channel": result([4, 9])})
    assert fine["recommendation"].startswith("no measured strategy")
    # a component shared by every chunk size (decoder, joint) is judged on the streaming_encoder entry's size
    shared = eou_judge.quantization_eou_summary(reference, {"int8_per_channel": result([5, 9])}, component="decoder")
    assert shared["component"] == "decoder" and shared["strategies"]["int8_per_channel"]["eou_degraded"]
