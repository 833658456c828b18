"""Parakeet TDT on a random-initialised tiny model (synthetic, built offline once per session):
.nemo safety, each wrapper against NeMo's own forward, export of every component, kiln executor
parity, and TDT greedy decoding through the exported components."""

from __future__ import annotations

import dataclasses
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kiln.config import build_config
from kiln.foundation.errors import ContractError, ModelError, SourceError
from kiln.models import _nemo
from kiln.models._tdt import agreement
from kiln.models.parakeet_tdt import FAMILY
from kiln.models.parakeet_tdt.build import config_blocks, load_path
from kiln.models.parakeet_tdt.feeds import _audio_inputs, _reference_decode, run_task
from kiln.models.parakeet_tdt.judge import compare_task
from kiln.family.spec import stream
from kiln.validate.reference import make_reference, torch_context

COMPONENTS = FAMILY.component_names

MODEL = "parakeet_tdt_v3_tiny"
N = 240_000


@pytest.fixture(scope="session")
def tiny_nemo(tmp_path_factory) -> Path:
    return FAMILY.make_random("tiny", seed=0, overrides={}, out_dir=tmp_path_factory.mktemp("parakeet"))


@pytest.fixture(scope="session")
def source(tiny_nemo):
    return load_path(tiny_nemo)


@pytest.fixture(scope="session")
def config(source, tiny_nemo):
    raw = {"models": {MODEL: {"family": "parakeet_tdt", "task": "stt",
                              "source": {"kind": "random", "architecture": "tiny", "seed": 0},
                              "components": config_blocks(FAMILY.facts(source), N // 16_000)}}}
    return build_config(raw)


def comp(config, name, precision=None):
    c = config.component(MODEL, name)
    if precision:
        c = dataclasses.replace(c, export=dataclasses.replace(c.export, compute_precision=precision))
    return c


@pytest.fixture(scope="session")
def facts(source):
    return FAMILY.facts(source)


@pytest.fixture(scope="session")
def ctx(source, config):
    """The reference job's context, with the wrappers run untraced."""
    return torch_context(FAMILY, source, config.model(MODEL))


@pytest.fixture(scope="session")
def audio(ctx):
    return _audio_inputs(ctx)["audio_signal"][0]


@pytest.fixture(scope="session")
def packages(source, config, tmp_path_factory):
    """Every component exported at float32, and the encoder-side ones also at float16 (default)."""
    from kiln.export.convert import export_component

    out = tmp_path_factory.mktemp("packages")
    paths = {}
    for name in COMPONENTS:
        for precision in ("float32", "float16"):
            if precision == "float16" and name in ("preprocessor", "joint", "joint_decision"):
                continue
            path = out / f"{name}_{precision}.mlpackage"
            export_component(FAMILY, source, comp(config, name, precision), path)
            paths[(name, precision)] = path
    return paths


# -- building and restoring ----------------------------------------------------------------------------

def test_random_tiny_builds_and_restores(source, tiny_nemo, facts):
    model = source.model
    assert type(model).__name__ == "EncDecRNNTBPEModel"
    assert model.cfg.kiln.synthetic is True
    assert facts["durations"] == [0, 1, 2, 3, 4] and facts["max_symbols"] == 10
    assert facts["vocab_size"] == 48 and facts["blank_id"] == 48 and len(facts["vocabulary"]) == 48
    assert facts["num_outputs"] == 48 + 1 + 5
    assert facts["c_shape"] == [2, 1, 64] and facts["n_mels"] == 80 and facts["d_model"] == 64
    # the blank embedding is the zero padding row: blank + zero state is NeMo's start step
    assert torch.count_nonzero(model.decoder.prediction["embed"].weight[facts["blank_id"]]) == 0
    # facts are JSON (the prepare job writes them; later jobs never load the checkpoint)
    import json
    assert json.loads(json.dumps(facts)) == facts
    assert tiny_nemo.stat().st_size > 100_000


def test_contracts_follow_the_config(facts):
    c = config_blocks(facts, N // 16_000)
    assert c["preprocessor"]["options"] == {"seconds": 15} and "options" not in c["decoder"]
    assert c["preprocessor"]["outputs"]["mel"]["shape"] == [1, 80, 1501]
    assert c["encoder"]["outputs"]["encoder"]["shape"] == [1, 64, 188]  # 1501 -> 751 -> 376 -> 188
    assert c["decoder"]["inputs"]["h_in"]["shape"] == [2, 1, 64]
    assert c["joint"]["outputs"]["logits"]["shape"] == [1, 1, 1, 54]
    assert c["joint_decision"]["outputs"]["token_id"] == {"shape": [1, 188, 1], "dtype": "int32"}


def test_contract_frames_are_the_modules_frames(source, facts):
    """The contract's frame counts (from the facts alone) are what NeMo's STFT framing and the
    encoder's subsampling give, at windows other than the configured one."""
    from kiln.models._fastconformer import EncoderWrapper
    from kiln.models.parakeet_tdt.contract import window_values

    for seconds in (1, 2, 7):
        values = window_values(facts, {"seconds": seconds})
        frontend = _nemo.MelFrontend(source.featurizer, seconds * 16_000)
        assert values["mel_frames"] == frontend.out_frames
        assert values["encoder_frames"] == EncoderWrapper.output_frames(source.model.encoder, frontend.out_frames)


def test_unknown_architecture_and_override_refused(tmp_path):
    with pytest.raises(ModelError, match="unknown architecture 'huge'"):
        FAMILY.make_random("huge", seed=0, overrides={}, out_dir=tmp_path)
    with pytest.raises(ModelError, match=r"unknown architecture override\(s\) \['d_modle'\]"):
        FAMILY.make_random("tiny", seed=0, overrides={"d_modle": 8}, out_dir=tmp_path)


def test_wrong_contract_is_refused(source, config):
    c = comp(config, "encoder")
    bad = dataclasses.replace(c, outputs=(dataclasses.replace(c.outputs[0], shape=(1, 64, 100)), c.outputs[1]))
    with pytest.raises(ContractError, match=r"^models\.parakeet_tdt_v3_tiny\.components\.encoder\.outputs\.encoder: "
                                            r"axis 2 is 100 in \[1, 64, 100\], the family's contract gives 188"):
        FAMILY.build_component(source, bad)
    # an entry is built by the spec it names (`spec:`), whatever its own name
    with pytest.raises(ContractError, match="builds no component 'streaming_encoder'"):
        FAMILY.build_component(source, dataclasses.replace(c, name="streaming_encoder", spec="streaming_encoder"))


# -- .nemo safety -----------------------------------------------------------------------------------------

def _tar_with(path: Path, tiny_nemo: Path, extra: tarfile.TarInfo | None = None, data: bytes = b"",
              replace: dict[str, bytes] | None = None) -> Path:
    """A copy of the tiny .nemo with one crafted member added and/or members' bytes replaced."""
    replace = replace or {}
    with tarfile.open(tiny_nemo, "r:") as src, tarfile.open(path, "w:") as dst:
        for member in src.getmembers():
            payload = src.extractfile(member).read() if member.isfile() else None
            for suffix, new in replace.items():
                if member.name.endswith(suffix):
                    payload = new
                    member.size = len(new)
            dst.addfile(member, io.BytesIO(payload) if payload is not None else None)
        if extra is not None:
            extra.size = len(data) if extra.isfile() else 0
            dst.addfile(extra, io.BytesIO(data) if extra.isfile() else None)
    return path


@pytest.mark.parametrize("member,reason", [
    (dict(name="../../etc/kiln_evil"), "'..' path component"),
    (dict(name="/tmp/kiln_evil"), "absolute path"),
    (dict(name="./ok/../../kiln_evil"), "'..' path component"),
    (dict(name="./link", type=tarfile.SYMTYPE, linkname="/etc/passwd"), "link to absolute path"),
    (dict(name="./sub/link", type=tarfile.SYMTYPE, linkname="../../outside"), "pointing outside"),
    (dict(name="./hard", type=tarfile.LNKTYPE, linkname="../outside"), "pointing outside"),
])
def test_unsafe_nemo_member_refused(tmp_path, tiny_nemo, member, reason):
    info = tarfile.TarInfo(member["name"])
    info.type = member.get("type", tarfile.REGTYPE)
    info.linkname = member.get("linkname", "")
    bad = _tar_with(tmp_path / "evil.nemo", tiny_nemo, info, b"pwned")
    with pytest.raises(SourceError, match=reason) as err:
        _nemo.restore_nemo(bad)
    assert "evil.nemo" in str(err.value) and member["name"] in str(err.value)
    assert not Path("/tmp/kiln_evil").exists()


def test_nemo_config_target_outside_nemo_refused(tmp_path, tiny_nemo):
    import yaml

    with tarfile.open(tiny_nemo) as tar:
        cfg_member = next(m for m in tar.getmembers() if m.name.endswith("model_config.yaml"))
        cfg = yaml.safe_load(tar.extractfile(cfg_member).read())
    cfg["preprocessor"]["_target_"] = "os.system"
    bad = _tar_with(tmp_path / "target.nemo", tiny_nemo, replace={"model_config.yaml": yaml.safe_dump(cfg).encode()})
    with pytest.raises(SourceError, match=r"target.nemo: model_config.yaml 'preprocessor._target_' names 'os.system'"):
        _nemo.restore_nemo(bad)


class _Pickled:
    def __reduce__(self):
        return (print, ("kiln: arbitrary code ran while loading weights",))


def test_weights_are_loaded_weights_only(tmp_path, tiny_nemo, monkeypatch):
    buffer = io.BytesIO()
    torch.save({"payload": _Pickled()}, buffer)
    bad = _tar_with(tmp_path / "pickle.nemo", tiny_nemo, replace={"model_weights.ckpt": buffer.getvalue()})
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # kiln's explicit flag still wins
    with pytest.raises(SourceError, match="pickle.nemo: NeMo could not restore the model: UnpicklingError"):
        _nemo.restore_nemo(bad)


def test_not_a_nemo_file(tmp_path):
    junk = tmp_path / "junk.nemo"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(SourceError, match="junk.nemo: not a .nemo archive"):
        _nemo.restore_nemo(junk)


# -- wrappers equal NeMo's own forward -------------------------------------------------------------

@pytest.fixture(scope="session")
def nemo_features(source, audio):
    """NeMo's own preprocessor and encoder on the speech, full length and a shorter valid length."""
    model = source.model
    x = torch.from_numpy(audio)[None]
    out = {}
    with torch.no_grad(), _nemo.typecheck_disabled():
        for length in (N, 170_001):
            mel, mel_len = model.preprocessor(input_signal=x, length=torch.tensor([length]))
            enc, enc_len = model.encoder(audio_signal=mel, length=mel_len)
            out[length] = (mel, mel_len, enc, enc_len)
    return out


@pytest.mark.parametrize("length", [N, 170_001])
def test_preprocessor_equals_nemo(source, config, audio, nemo_features, length):
    wrapper = FAMILY.build_component(source, comp(config, "preprocessor"))
    x = torch.from_numpy(audio)[None]
    with torch.no_grad():
        mel, mel_len = wrapper(x, torch.tensor([length], dtype=torch.int32))
    ref, ref_len = nemo_features[length][:2]
    assert mel_len.dtype == torch.int32 and int(mel_len) == int(ref_len)
    torch.testing.assert_close(mel, ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("length", [N, 170_001])
def test_encoder_equals_nemo(source, config, nemo_features, length):
    wrapper = FAMILY.build_component(source, comp(config, "encoder"))
    mel, mel_len, ref, ref_len = nemo_features[length]
    with torch.no_grad():
        enc, enc_len = wrapper(mel, mel_len.to(torch.int32))
    assert enc_len.dtype == torch.int32 and int(enc_len) == int(ref_len)
    torch.testing.assert_close(enc, ref, atol=1e-5, rtol=1e-5)


def test_mel_encoder_equals_nemo(source, config, audio, nemo_features):
    wrapper = FAMILY.build_component(source, comp(config, "mel_encoder"))
    with torch.no_grad():
        enc, enc_len = wrapper(torch.from_numpy(audio)[None], torch.tensor([N], dtype=torch.int32))
    torch.testing.assert_close(enc, nemo_features[N][2], atol=1e-4, rtol=1e-4)
    assert int(enc_len) == int(nemo_features[N][3])


def test_decoder_equals_nemo_predict(source, config):
    wrapper = FAMILY.build_component(source, comp(config, "decoder"))
    g = torch.Generator().manual_seed(0)
    h, c = torch.randn(2, 1, 64, generator=g), torch.randn(2, 1, 64, generator=g)
    blank_id = FAMILY.facts(source)["blank_id"]
    for target in (0, 17, blank_id):
        targets = torch.tensor([[target]], dtype=torch.int32)
        with torch.no_grad():
            out, h_out, c_out = wrapper(targets, torch.ones(1, dtype=torch.int32), h, c)
            ref, (h_ref, c_ref) = source.model.decoder.predict(targets.long(), state=(h, c), add_sos=False)
        assert out.shape == (1, 64, 1)
        torch.testing.assert_close(out.permute(0, 2, 1), ref, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(h_out, h_ref, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(c_out, c_ref, atol=1e-6, rtol=1e-6)
    # blank with zero state is NeMo's start-of-sequence step (predict(None))
    zeros = torch.zeros(2, 1, 64)
    with torch.no_grad():
        out, _, _ = wrapper(torch.tensor([[blank_id]], dtype=torch.int32), torch.ones(1, dtype=torch.int32),
                            zeros, zeros)
        ref, _ = source.model.decoder.predict(None, state=None, add_sos=False, batch_size=1)
    torch.testing.assert_close(out.permute(0, 2, 1), ref, atol=1e-6, rtol=1e-6)


def test_joint_components_equal_nemo_joint(source, config, nemo_features):
    enc = nemo_features[N][2]                                  # [1, 64, 188]
    g = torch.randn(1, 64, 1, generator=torch.Generator().manual_seed(1))
    joint = source.model.joint
    with torch.no_grad():
        # NeMo's RNNTJoint.joint log-softmaxes all V+1+D outputs on CPU
        ref = joint.joint(enc.transpose(1, 2), g.transpose(1, 2))  # [1, 188, 1, 54]
        logits = FAMILY.build_component(source, comp(config, "joint"))(enc[:, :, 5:6], g)
        torch.testing.assert_close(torch.log_softmax(logits, -1), ref[:, 5:6], atol=1e-5, rtol=1e-5)
        token_id, prob, duration = FAMILY.build_component(source, comp(config, "joint_decision"))(enc, g)
        tok_ref = ref[0, :, 0, :-5]
        assert token_id.dtype == torch.int32 and duration.dtype == torch.int32
        assert torch.equal(token_id[0, :, 0].long(), tok_ref.argmax(-1))
        assert torch.equal(duration[0, :, 0].long(), ref[0, :, 0, -5:].argmax(-1))  # durations [0..4]
        torch.testing.assert_close(prob[0, :, 0], torch.softmax(tok_ref, -1).max(-1).values, atol=1e-6, rtol=1e-5)
        single = FAMILY.build_component(source, comp(config, "joint_decision_single_step"))
        for t in (0, 100, 187):
            s_tok, s_prob, s_dur = single(enc[:, :, t:t + 1], g)
            assert int(s_tok) == int(token_id[0, t, 0]) and int(s_dur) == int(duration[0, t, 0])


def test_host_greedy_decoding_equals_nemo(source, ctx, nemo_features):
    """kiln's host TDT loop over the torch components gives NeMo's own greedy TDT hypothesis."""
    ref = _reference_decode(ctx)
    enc, enc_len = nemo_features[N][2:]
    with torch.no_grad(), _nemo.typecheck_disabled():
        hyps = source.model.decoding.rnnt_decoder_predictions_tensor(encoder_output=enc, encoded_lengths=enc_len)
    hyp = hyps[0] if isinstance(hyps, list) else hyps[0][0]
    nemo_tokens = [int(t) for t in hyp.y_sequence]
    assert ref["decoded"]["tokens"] == nemo_tokens
    assert len(nemo_tokens) > 0  # random weights still emit tokens on speech


# -- export and kiln executor parity ---------------------------------------------------------------------

TOLERANCE = {  # (atol, rtol) of the kiln executor vs torch, float32 package in fp32 mode
    "preprocessor": (5e-4, 1e-4),
}


def _kiln(path, precision):
    from kiln.validate.backends import kiln_backend

    return kiln_backend(path, precision).predict


def _streamed(ctx, c, package, precision):
    """(torch reference, kiln candidate) steps of component ``c`` over its validation feeds."""
    ref = make_reference(ctx, c)
    spec = FAMILY.component(c.name)
    return ref.outputs, stream(_kiln(package, precision), spec, ref.feeds, ref.initial, c)


def test_exported_packages_declare_the_contract(packages, config):
    import coremltools as ct

    for (name, precision), path in packages.items():
        spec = ct.utils.load_spec(str(path))
        assert spec.specificationVersion == 8  # iOS17
        c = comp(config, name)
        inputs = {i.name: list(i.type.multiArrayType.shape) for i in spec.description.input}
        outputs = [o.name for o in spec.description.output]
        assert inputs == {t.name: list(t.shape) for t in c.inputs}, (name, precision)
        assert outputs == [t.name for t in c.outputs]
        for i in spec.description.input:
            expect = {"float32": ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32,
                      "int32": ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32}[
                next(t.dtype for t in c.inputs if t.name == i.name)]
            assert i.type.multiArrayType.dataType == expect


@pytest.mark.parametrize("name", COMPONENTS)
def test_kiln_executor_parity_fp32(name, ctx, config, packages, facts):
    c = comp(config, name)
    reference, candidate = _streamed(ctx, c, packages[(name, "float32")], "fp32")
    assert len(reference) == len(candidate) >= 1
    atol, rtol = TOLERANCE.get(name, (1e-4, 1e-4))
    for ref, out in zip(reference, candidate):
        for spec in c.outputs:
            r, o = np.asarray(ref[spec.name]), np.asarray(out[spec.name])
            if spec.dtype == "int32":
                assert np.array_equal(r, o.astype(r.dtype)), (name, spec.name)
            else:
                np.testing.assert_allclose(o, r, atol=atol, rtol=rtol, err_msg=f"{name}/{spec.name}")
    metrics = FAMILY.component(name).task_metrics(reference, candidate, facts)
    for key in ("token_agreement", "token_argmax_agreement", "duration_agreement"):
        if key in metrics:
            assert metrics[key] == 1.0


@pytest.mark.parametrize("name", ["encoder", "mel_encoder", "decoder", "joint_decision_single_step"])
def test_kiln_executor_parity_fp16_package(name, ctx, config, packages, facts):
    """The default float16 packages, run in the executor's fp16 emulation."""
    c = comp(config, name)
    reference, candidate = _streamed(ctx, c, packages[(name, "float16")], "fp16")
    if name in ("encoder", "mel_encoder"):
        ref, out = reference[0]["encoder"], candidate[0]["encoder"].astype(np.float32)
        assert np.array_equal(reference[0]["encoder_length"], candidate[0]["encoder_length"])
        quality = 1 - np.linalg.norm(out - ref) / np.linalg.norm(ref)
        assert quality > 0.99, quality
        assert np.max(np.abs(out - ref)) < 0.05
    elif name == "decoder":
        for r, o in zip(reference, candidate):
            np.testing.assert_allclose(o["decoder"], r["decoder"], atol=5e-3)
    else:
        metrics = FAMILY.component(name).task_metrics(reference, candidate, facts)
        assert metrics["token_agreement"] >= 0.95 and metrics["duration_agreement"] >= 0.95


def test_end_to_end_greedy_decoding_agrees(ctx, facts, packages):
    inputs = _audio_inputs(ctx)
    torch_result = run_task(ctx.predictors, facts, inputs)
    assert torch_result["tokens"] == _reference_decode(ctx)["decoded"]["tokens"] and torch_result["tokens"]
    assert isinstance(torch_result["text"], str)
    kiln32 = {n: _kiln(packages[(n, "float32")], "fp32") for n in ("mel_encoder", "decoder", "joint_decision_single_step")}
    kiln_split = {n: _kiln(packages[(n, "float32")], "fp32") for n in ("preprocessor", "encoder", "decoder",
                                                                         "joint_decision_single_step")}
    kiln16 = {n: _kiln(packages[(n, "float16")], "fp16") for n in ("mel_encoder", "decoder", "joint_decision_single_step")}
    for backend in (kiln32, kiln_split):
        result = run_task(backend, facts, inputs)
        assert result["tokens"] == torch_result["tokens"]
        assert result["durations"] == torch_result["durations"]
        assert compare_task(torch_result, result)["vs_torch_cpu"] == {"position_agreement": 1.0, "exact_match": True,
                                                                       "edit_distance": 0}
    # fp16 emulation: random weights have near-ties, so agreement is reported, and must stay high
    fp16 = compare_task(torch_result, run_task(kiln16, facts, inputs))
    assert fp16["vs_torch_cpu"]["position_agreement"] >= 0.8, fp16


def test_agreement_metric():
    assert agreement([1, 2, 3], [1, 2, 3]) == {"position_agreement": 1.0, "exact_match": True, "edit_distance": 0}
    assert agreement([1, 2, 3], [1, 3]) == {"position_agreement": 1 / 3, "exact_match": False, "edit_distance": 1}
    assert agreement([], []) == {"position_agreement": 1.0, "exact_match": True, "edit_distance": 0}
