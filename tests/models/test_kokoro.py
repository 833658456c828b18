"""Kokoro on a random-initialised tiny model (synthetic, built offline once per session): the
fixed-shape wrapper against the kokoro package's own forward with the same randomness, export
without random ops, kiln executor parity, the clamp flag, and input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kiln.config import build_config
from kiln.foundation.errors import ContractError, ModelError
from kiln.export import rewrites as rw
from kiln.sources import SourceRecord, describe_file

pytest.importorskip("kokoro", reason="the kokoro extra is not installed")

from kiln.models import kokoro as K  # noqa: E402
from kiln.models.kokoro import build as KB, checkpoint as KC, waveform as KW  # noqa: E402

MODEL = "kokoro_test"
TOKENS = 32
SAMPLES = 48_000          # 2 s at 24 kHz: 80 duration frames of 600 samples
PHONEMES = "plˈiːz kˈɔːl stˈɛlə."   # espeak-ng's "Please call Stella." (20 phonemes, ~72 frames)


def contract(tokens: int, samples: int, harmonics: int = 9) -> dict:
    return {
        "spec": "kokoro",      # the family's one component spec, at this entry's lengths
        "options": {"max_tokens": tokens, "seconds": round(samples / 24_000, 3)},
        "inputs": {
            "input_ids": {"shape": [1, tokens], "dtype": "int32"},
            "attention_mask": {"shape": [1, tokens], "dtype": "int32"},
            "ref_s": {"shape": [1, 256], "dtype": "float32"},
            "random_phases": {"shape": [1, harmonics], "dtype": "float32"},
            "source_noise": {"shape": [1, samples, harmonics], "dtype": "float32"},
            "speed": {"shape": [1], "dtype": "float32"},
        },
        "outputs": {
            "audio": {"shape": [1, samples], "dtype": "float32"},
            "pred_dur": {"shape": [1, tokens], "dtype": "int32"},
            "audio_length": {"shape": [1], "dtype": "int32"},
            "clamped": {"shape": [1], "dtype": "int32"},
        },
    }


@pytest.fixture(scope="session")
def source(tmp_path_factory):
    path = KC.build_random("tiny", seed=0, overrides={}, out_dir=tmp_path_factory.mktemp("kokoro"))
    record = SourceRecord(kind="random", id="random:kokoro/tiny", revision=None, version=None,
                          synthetic=True, files=[describe_file(path)])
    return KB.load(record)


@pytest.fixture(scope="session")
def facts(source):
    return KB.facts(source)


def component(tokens=TOKENS, samples=SAMPLES, harmonics=9, name="kokoro_5s", precision="float32"):
    raw = {"models": {MODEL: {"family": "kokoro", "task": "tts", "synthetic": True,
                              "source": {"kind": "random", "architecture": "tiny", "seed": 0},
                              "export": {"compute_precision": precision},
                              "components": {name: contract(tokens, samples, harmonics)}}}}
    return build_config(raw).component(MODEL, name)


@pytest.fixture(scope="session")
def wrapper(source):
    return K.FAMILY.build_component(source, component())


def run_torch(wrapper, comp, feed) -> dict:
    with torch.no_grad():
        out = wrapper(*[torch.from_numpy(feed[s.name]) for s in comp.inputs])
    return {s.name: o.numpy() for s, o in zip(comp.outputs, out)}


def feed_for(facts, source, phonemes, seed=0, comp=None):
    return KB.make_feed(facts, comp or component(), phonemes, seed=seed)


def test_facts_come_from_the_checkpoint_config(source, facts):
    assert facts["frame_samples"] == 600 and facts["harmonics"] == 9 and facts["ref_s_dim"] == 256
    assert facts["n_fft"] == 20 and facts["hop"] == 5 and facts["synthetic"] is True
    np.testing.assert_array_equal(KB.voice_rows(facts), source.voices["synthetic"].numpy().reshape(510, 256))
    assert json.loads(json.dumps(facts)) == facts
    with pytest.raises(ModelError, match="kokoro config has no 'istftnet.gen_istft_hop_size'"):
        KB._required({"istftnet": {}}, "istftnet", "gen_istft_hop_size")


def test_wrapper_equals_kokoro_forward_with_the_same_randomness(source, facts, wrapper):
    """kokoro's own KModel.forward_with_tokens on the unpadded ids, its random draws recorded,
    against the fixed-shape wrapper given those draws as inputs."""
    feed = feed_for(facts, source, PHONEMES)
    length = int(feed["attention_mask"].sum())
    ids = torch.from_numpy(feed["input_ids"][:, :length]).long()
    ref_s = torch.from_numpy(feed["ref_s"])
    with rw.record_random() as draws:
        audio_ref, dur_ref = source.model.forward_with_tokens(ids, ref_s, 1)
    assert [d.function for d in draws] == ["rand", "randn_like", "randn_like"]
    samples = audio_ref.numel()
    feed["random_phases"] = draws[0].values.numpy()
    noise = np.zeros_like(feed["source_noise"])
    noise[:, :samples] = draws[1].values.numpy()
    feed["source_noise"] = noise
    out = run_torch(wrapper, component(), feed)
    np.testing.assert_array_equal(out["pred_dur"][0, :length], dur_ref.numpy())
    assert np.all(out["pred_dur"][0, length:] == 0)
    assert int(out["audio_length"][0]) == samples and int(out["clamped"][0]) == 0
    assert np.all(out["audio"][0, samples:] == 0)
    metrics = KW.waveform_metrics([{"audio": audio_ref.numpy()[None], "audio_length": np.array([samples]),
                                   "pred_dur": dur_ref.numpy(), "clamped": np.array([0])}],
                                 [{**out, "pred_dur": out["pred_dur"][0, :length]}], facts)
    # the STFT phase of the harmonic source is atan2 at its branch cut for a few bins whose
    # imaginary part is ~1e-8: a sign flip there moves one input of the vocoder by 2 pi
    assert metrics["min_correlation"] > 0.9999, metrics
    assert metrics["max_log_mel_distance_db"] < 0.05, metrics


def test_vocoder_equals_kokoro_generator_given_the_same_source(source, facts, wrapper):
    """Past the harmonic source's STFT the rewrite is exact to float rounding (masked norms,
    masked iSTFT)."""
    net = wrapper.net
    gen = source.model.decoder.generator
    g = torch.Generator().manual_seed(1)
    frames = 30
    x = 0.5 * torch.randn(1, gen.ups[0].in_channels, 2 * frames, generator=g)
    s = torch.randn(1, 128, generator=g)
    har_frames = frames * 2 * 300 // 5 + 1
    har = torch.randn(1, 22, har_frames, generator=g)
    with torch.no_grad():
        ref = gen.stft.inverse(*_generator_spec(gen, x, s, har)).flatten()
        x_pad = torch.zeros(1, x.shape[1], 2 * net.max_frames)
        x_pad[..., :2 * frames] = x
        har_pad = torch.zeros(1, 22, net.max_frames * 120 + 1)
        har_pad[..., :har_frames] = har
        f0_mask = rw.length_mask(torch.tensor([2 * frames]), 2 * net.max_frames)
        got = net.vocode(x_pad, s, har_pad, f0_mask).flatten()
    assert torch.allclose(got[:ref.numel()], ref, atol=2e-5 * ref.abs().max().item())
    assert torch.all(got[ref.numel() + net.n_fft:] == 0)


def _generator_spec(gen, x, s, har):
    """kokoro's Generator.forward after its harmonic source (copied order of operations)."""
    import torch.nn.functional as F

    for i in range(gen.num_upsamples):
        x = F.leaky_relu(x, negative_slope=0.1)
        x_source = gen.noise_res[i](gen.noise_convs[i](har), s)
        x = gen.ups[i](x)
        if i == gen.num_upsamples - 1:
            x = gen.reflection_pad(x)
        x = x + x_source
        xs = None
        for j in range(gen.num_kernels):
            y = gen.resblocks[i * gen.num_kernels + j](x, s)
            xs = y if xs is None else xs + y
        x = xs / gen.num_kernels
    x = gen.conv_post(F.leaky_relu(x))
    bins = gen.post_n_fft // 2 + 1
    return torch.exp(x[:, :bins, :]), torch.sin(x[:, bins:, :])


def test_overflowing_tokens_are_clamped_and_flagged(source, facts, wrapper):
    long = (PHONEMES * 2)[: TOKENS - 2]
    out = run_torch(wrapper, component(), feed_for(facts, source, long))
    frames = SAMPLES // facts["frame_samples"]
    assert int(out["clamped"][0]) == 1
    assert int(out["pred_dur"].sum()) == frames and int(out["audio_length"][0]) == SAMPLES
    short = run_torch(wrapper, component(), feed_for(facts, source, PHONEMES[:6]))
    assert int(short["clamped"][0]) == 0 and int(short["audio_length"][0]) < SAMPLES


def test_bad_inputs_name_what_is_wrong(source, facts):
    with pytest.raises(ContractError, match=r"phoneme\(s\) \['Ж'\] not in the model's vocabulary"):
        feed_for(facts, source, "plˈiːzЖ")
    with pytest.raises(ContractError, match="40 phonemes \\+ 2 boundary tokens = 42 tokens, input_ids holds 32"):
        feed_for(facts, source, PHONEMES * 2)
    # the family's one contract (kiln.models.kokoro.build.CONTRACT) names model, component, tensor, axis
    with pytest.raises(ContractError, match="not a whole number of 600-sample duration frames"):
        K.FAMILY.build_component(source, component(samples=48_060))     # 2.0025 s: 48,060 samples
    with pytest.raises(ContractError, match=r"^models\.kokoro_test\.components\.kokoro_5s\.inputs\.random_phases: "
                                            r"axis 1 is 8 in \[1, 8\], the family's contract gives 9"):
        K.FAMILY.build_component(source, component(harmonics=8))
    with pytest.raises(ContractError, match=r"unknown \['noise'\]"):
        raw = contract(TOKENS, SAMPLES)
        raw["inputs"]["noise"] = raw["inputs"].pop("source_noise")
        comp = build_config({"models": {MODEL: {"family": "kokoro", "task": "tts", "source": {
            "kind": "random", "architecture": "tiny", "seed": 0}, "components": {"kokoro_5s": raw}}}})
        K.FAMILY.build_component(source, comp.component(MODEL, "kokoro_5s"))
    with pytest.raises(ModelError, match="unknown architecture 'huge'"):
        KC.build_random("huge", seed=0, overrides={}, out_dir=None)


@pytest.fixture(scope="session")
def exported(source, wrapper, tmp_path_factory):
    """The test component converted once (fp32 compute), saved as an .mlpackage."""
    from kiln.export.convert import convert_traced, trace_component
    from kiln.export.package import save_mlpackage

    comp = component()
    facts_ = KB.facts(source)
    traced = trace_component(wrapper, comp, K.FAMILY.component("kokoro").example_inputs(comp, facts_))
    mlmodel = convert_traced(traced, comp, comp.export)
    ops = {op.op_type for op in mlmodel._mil_program.functions["main"].operations}
    return save_mlpackage(mlmodel, tmp_path_factory.mktemp("pkg") / "kokoro.mlpackage"), ops


def test_export_holds_no_random_op(exported):
    _, ops = exported
    assert not [o for o in ops if o.startswith("random")], ops
    assert {"conv_transpose", "cumsum", "lstm"} <= ops   # iSTFT, alignment, LSTMs are there


def test_executor_parity(exported, source, facts, wrapper):
    """fp32 mode (the package computes in fp32, so the executor's fp16 mode, which rounds
    fp16-typed values, would give the same numbers; fp16 compute is measured by the benchmark)."""
    from kiln.mil import load_model

    path, _ = exported
    plan = load_model(path).plan(precision="fp32")
    feeds = [feed_for(facts, source, PHONEMES, seed=5), feed_for(facts, source, (PHONEMES * 2)[:30], seed=6)]
    reference = [run_torch(wrapper, component(), f) for f in feeds]
    candidate = [plan.run(f) for f in feeds]
    metrics = KW.waveform_metrics(reference, candidate, facts)
    assert metrics["pred_dur_equal"], metrics
    assert [c["clamped"] for c in metrics["cases"]] == [0, 1]
    assert all(c["clamped_equal"] for c in metrics["cases"])
    assert metrics["min_correlation"] > 0.9999, metrics
    assert metrics["max_log_mel_distance_db"] < 0.05, metrics


def test_random_phases_reach_no_sample_of_the_package(exported, source, facts):
    """kokoro 0.9.4 adds the initial phases to sample 0 of the phase increments, which the linear
    downsampling by 300 never reads: the input is dead in the network. It stays an input because
    FluidAudio's contract (contracts/kokoro.yaml) feeds it; this pins that it changes nothing."""
    from kiln.mil import load_model

    path, _ = exported
    plan = load_model(path).plan(precision="fp32")
    feed = feed_for(facts, source, PHONEMES, seed=5)
    other = dict(feed, random_phases=np.random.default_rng(9).random(feed["random_phases"].shape, dtype=np.float32))
    np.testing.assert_array_equal(plan.run(feed)["audio"], plan.run(other)["audio"])


def test_faithfulness_record(source, facts, wrapper):
    """The prepare job's check: each component's program against kokoro's own forward."""
    from kiln.validate.backends import torch_backend

    comp = component()
    check = KB.faithfulness(source, {"kokoro_5s": torch_backend(wrapper, comp).predict}, facts,
                           {"kokoro_5s": comp})["traced_program_vs_kokoro_forward"]["kokoro_5s"]
    assert check["pred_dur_equal"] and check["clamped_equal"] and check["valid_samples_equal"]
    assert check["tokens"] == TOKENS and check["samples"] == SAMPLES
    assert check["correlation"] > 0.9999 and check["log_mel_distance_db"] < 0.05, check


def test_an_fp16_package_keeps_sample_and_frame_counts_in_int32(source, facts, tmp_path):
    """A 13.75 s window filled to its end (slow speed: the durations are clamped): the vocoder's STFT
    has 330,000 / 5 + 1 = 66,001 frames, past fp16's 65,504. The fp16 package must count them in
    int32 (it once added the 1 in fp16: inf, and a failed cast to int32 on kiln's fp16 mode)."""
    from kiln.export.convert import convert_traced, trace_component
    from kiln.export.package import save_mlpackage
    from kiln.mil import load_model

    samples = 330_000
    comp = component(samples=samples, precision="float16")
    net = K.FAMILY.build_component(source, comp)
    traced = trace_component(net, comp, K.FAMILY.component("kokoro").example_inputs(comp, facts))
    policy: dict = {}
    mlmodel = convert_traced(traced, comp, comp.export, policy)
    # kept fp32 by the fp16 policy: the phase accumulator and, after its sine, the harmonic
    # source's STFT (one conv) with its DFT basis, which fp16 storage rounds to 11 bits
    assert policy["fp32_op_types"]["cumsum"] == 1 and policy["fp32_op_types"]["sin"] == 1
    assert policy["fp32_op_types"]["conv"] == 1
    model = load_model(save_mlpackage(mlmodel, tmp_path / "k.mlpackage"))
    # no integer becomes fp16, and the only fp16 value cast to an integer is the rounded, clamped
    # duration of each token
    program = model.program.functions["main"]
    block = program.block_specializations[program.opset]
    dtype = {out.name: out.type.tensorType.dataType for op in block.operations for out in op.outputs}
    kind = {out.name: op.type for op in block.operations for out in op.outputs}
    integer, fp16 = (22, 23), 10  # MIL_pb2.DataType INT16, INT32, FLOAT16
    casts = [(op.inputs["x"].arguments[0].name, op.outputs[0].name) for op in block.operations if op.type == "cast"]
    assert [kind[x] for x, y in casts if dtype.get(x) == fp16 and dtype[y] in integer] == ["clip"]
    assert [x for x, y in casts if dtype.get(x) in integer and dtype[y] == fp16] == []
    feed = feed_for(facts, source, PHONEMES, seed=3, comp=comp)
    feed["speed"] = np.array([0.05], np.float32)
    out = model.predict(feed, precision="fp16")
    reference = run_torch(net, comp, feed)
    assert int(out["clamped"][0]) == int(reference["clamped"][0]) == 1
    assert int(out["audio_length"][0]) == int(reference["audio_length"][0]) == samples


def test_quantized_variants_rank_by_the_waveform_correlation():
    """Kokoro has a task metric (the worst sentence's waveform correlation, which validate.task_bounds
    gates the build on): the quantization summary ranks the variants by it, not by sample error. A
    variant that only scales the audio (correlation 1, 20% sample error) ranks above one that adds
    noise (10% sample error, audible)."""
    from kiln.quantize.run import task_scores
    from kiln.quantize.summary import build_summary, validate_summary

    spec = K.FAMILY.component("kokoro")   # the spec kokoro_5s and kokoro_15s are entries of
    assert spec.rank_by == "min_correlation"
    rng = np.random.default_rng(0)
    t = np.arange(24_000) / 24_000

    def steps(transform):
        return [{"audio": transform(np.sin(2 * np.pi * f * t)).astype(np.float32)[None],
                 "audio_length": np.array([24_000], np.int32), "clamped": np.array([0], np.int32),
                 "pred_dur": np.full((1, TOKENS), 2, np.int32)} for f in (180.0, 240.0)]

    baseline = steps(lambda a: a)
    variants = {"scaled": steps(lambda a: 0.8 * a),
                "noisy": steps(lambda a: a + rng.normal(0, 0.1 * np.sqrt(0.5), a.shape))}
    records = []
    for name, variant in variants.items():
        scores = task_scores(spec, {"baseline": baseline, "variant": variant}, {"sample_rate": 24_000})
        assert scores["task_score"]["metric"] == "min_correlation"
        error = max(np.linalg.norm(v["audio"] - b["audio"]) / np.linalg.norm(b["audio"]) for v, b in zip(variant, baseline))
        records.append({"strategy": name, "description": name, "component": "kokoro_5s", "status": "ok",
                        "baseline_bytes": 100, "deployment_target": "iOS17", "specification_version": 8,
                        "constexpr_ops": ["constexpr_affine_dequantize"],
                        "package": {"path": "p", "sha256": "0" * 64, "size_bytes": 10},
                        "bundle": {"path": "b", "sha256": "0" * 64, "size_bytes": 10},
                        "size_ratio": 0.5, "quality": 1 - error, "normalized_error": error,
                        "outputs": {"audio": {"quality": 1 - error, "normalized_error": error, "psnr_db": 20.0,
                                              "max_abs": 0.3}},
                        "latency": {}, **scores})
    quality = {r["strategy"]: r["quality"] for r in records}
    assert quality["noisy"] > quality["scaled"]          # by sample error the noisy one would win
    summary = build_summary("kokoro_tiny", True, records)
    validate_summary(summary)
    assert summary["rankings"]["kokoro_5s"] == {"by": "min_correlation", "order": ["scaled", "noisy"]}
