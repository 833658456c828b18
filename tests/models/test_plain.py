"""Family ``plain`` in process: the config block's checks (each naming its key), the feeds by
modality, the network kinds' loaders and their errors. The whole workflow of plain models runs in
tests/scenarios/test_plain_workflow.py."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kiln.config import build_config
from kiln.foundation.errors import ConfigError, ModelError, SourceError
from kiln.models import check_models, family_of, get_family
from kiln.family.spec import Context
from kiln.sources import SourceRecord, describe_file

HELPERS = Path(__file__).resolve().parents[1] / "helpers"

BLOCK = yaml.safe_load("""
family: plain
task: speaker_embedding
source: {kind: path, path: PLACEHOLDER}
network: {kind: module, factory: "kiln_test_nets:TinyEncoder", kwargs: {bands: 40, dim: 64}, state_dict: true}
components:
  encoder:
    inputs:
      mels: {shape: [1, 40, 50], dtype: float32}
    outputs:
      embedding: {shape: [1, 64], dtype: float32, kind: embedding}
      frames: {shape: [1, 64, 50], dtype: float32, kind: features}
""")


@pytest.fixture()
def helpers_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HELPERS))


@pytest.fixture()
def checkpoint(tmp_path, helpers_path):
    from kiln_test_nets import random_state_dict

    path = tmp_path / "tiny.pt"
    torch.save(random_state_dict(seed=3), path)
    return path


def _config(block, tmp_path, **top):
    raw = {"results_dir": "results", "models": {"tiny": block}, **top}
    return build_config(raw, str(tmp_path / "config.yaml"))


def _block(checkpoint, edit=None):
    block = copy.deepcopy(BLOCK)
    block["source"]["path"] = str(checkpoint)
    if edit:
        edit(block)
    return block


def _error(block, tmp_path, **top) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check_models(_config(block, tmp_path, **top))
    return info.value


def _load(model, checkpoint):
    family = family_of(model)
    record = SourceRecord("path", str(checkpoint), None, None, False, [describe_file(checkpoint)])
    return family, family.load(record)


def test_module_factory_with_state_dict(checkpoint, tmp_path):
    config = _config(_block(checkpoint), tmp_path)
    check_models(config)
    model = config.model("tiny")
    family, source = _load(model, checkpoint)
    component = model.components["encoder"]
    assert component.kinds == {"embedding": "embedding", "frames": "features"}
    net = family.build_component(source, component)
    x = torch.randn(1, 40, 50)
    embedding, frames = net(x)
    assert embedding.shape == (1, 64) and torch.allclose(embedding.norm(), torch.tensor(1.0))
    from kiln_test_nets import TinyEncoder, random_state_dict

    reference = TinyEncoder()
    reference.load_state_dict(random_state_dict(seed=3))   # the checkpoint's weights, not the factory's
    assert torch.equal(reference(x)[1], frames)
    assert family.facts(source) == {"network": "module", "parameters": sum(p.numel() for p in reference.parameters())}


def test_get_family_points_to_family_of():
    with pytest.raises(ModelError, match="family_of"):
        get_family("plain")


@pytest.mark.parametrize("edit,key,message", [
    (lambda b: b.pop("network"), "models.tiny.network", "needs a network block"),
    (lambda b: b["network"].pop("factory"), "models.tiny.network.factory", "needs 'factory'"),
    (lambda b: b["network"].update(submodule="x"), "models.tiny.network.submodule", "not a key of a module network"),
    (lambda b: b["network"].update(weights_kwarg="path"), "models.tiny.network.state_dict", "not both"),
    (lambda b: b.update(network={"kind": "onnx"}), "models.tiny.network.kind", "onnx source"),
    (lambda b: b["components"]["encoder"].update(state={"mels": "nothing"}),
     "models.tiny.components.encoder.state.mels", "'nothing' is not an output"),
    (lambda b: b["components"]["encoder"].update(state={"mels": "frames"}),
     "models.tiny.components.encoder.state.mels", "shapes"),
    (lambda b: b["components"]["encoder"].update(feeds={"nope": {"modality": "random"}}),
     "models.tiny.components.encoder.feeds.nope", "not a non-state input"),
    (lambda b: b["components"]["encoder"]["outputs"].update(state={"shape": [1], "dtype": "float32"}),
     "models.tiny.components.encoder.outputs.state", "coremltools renames"),
    (lambda b: b.update(family="silero_vad"), "models.tiny.network", "only family 'plain'"),
])
def test_block_errors_name_the_key(checkpoint, tmp_path, edit, key, message):
    with pytest.raises(ConfigError) as info:
        _config(_block(checkpoint, edit), tmp_path)
    assert info.value.key == key and message in str(info.value), str(info.value)


def test_factory_errors_are_typed(checkpoint, tmp_path):
    config = _config(_block(checkpoint, lambda b: b["network"].update(factory="no_such_pkg.mod:Net")), tmp_path)
    with pytest.raises(ModelError, match="models.tiny.network.factory: cannot import 'no_such_pkg.mod'"):
        _load(config.model("tiny"), checkpoint)
    config = _config(_block(checkpoint, lambda b: b["network"].update(kwargs={"dim": 32})), tmp_path)
    with pytest.raises(SourceError, match="does not fit kiln_test_nets:TinyEncoder"):
        _load(config.model("tiny"), checkpoint)
    config = _config(_block(checkpoint, lambda b: b["network"].update(factory="kiln_test_nets:random_state_dict",
                                                                      state_dict=False, kwargs={})), tmp_path)
    with pytest.raises(ModelError, match="returned OrderedDict, not a torch.nn.Module"):
        _load(config.model("tiny"), checkpoint)


def test_unknown_task_is_named_and_a_config_may_add_one(checkpoint, tmp_path):
    block = _block(checkpoint, lambda b: b.update(task="bird_song"))
    err = _error(block, tmp_path)
    assert err.key == "models.tiny.task" and "unknown task 'bird_song'" in str(err) and "speaker_embedding" in str(err)
    check_models(_config(block, tmp_path, tasks={"bird_song": "which bird sings"}))


def test_task_registry_extends():
    from kiln import tasks

    assert {"vad", "stt", "tts", "speaker_embedding"} <= set(tasks.TASKS)
    tasks.register_task("test_only_task", "a label a family registers")
    try:
        tasks.check_task("m", "test_only_task")
        with pytest.raises(ValueError, match="registered already"):
            tasks.register_task("test_only_task", "something else")
    finally:
        tasks.TASKS.pop("test_only_task")
    with pytest.raises(ConfigError, match="unknown task 'test_only_task'"):
        tasks.check_task("m", "test_only_task")


def _feeds(tmp_path, checkpoint, component_edit, inputs):
    def edit(block):
        block["components"]["encoder"]["inputs"] = inputs
        block["components"]["encoder"].update(component_edit)
    config = _config(_block(checkpoint, edit), tmp_path)
    model = config.model("tiny")
    family = family_of(model)
    ctx = Context(family=family, model=model, facts={}, predictors={})
    return family.component("encoder").feeds(ctx, model.components["encoder"])


def test_speech_windows_carry_context(tmp_path, checkpoint):
    feeds = _feeds(tmp_path, checkpoint, {"feeds": {"audio": {"modality": "speech", "hop": 512, "seconds": 2}}},
                   {"audio": {"shape": [1, 576], "dtype": "float32"}})
    steps = [s["audio"] for s in feeds.steps]
    assert len(steps) == 32000 // 512 and steps[0].shape == (1, 576)
    assert np.all(steps[0][0, :64] == 0)                       # zeros before the first window
    assert np.array_equal(steps[1][0, :64], steps[0][0, -64:])  # then the previous window's tail
    assert feeds.step_seconds == 512 / 16000


def test_token_ids_random_and_npz(tmp_path, checkpoint):
    recorded = np.arange(3 * 2 * 4, dtype=np.float64).reshape(3, 2, 4)
    np.savez(tmp_path / "rec.npz", feats=recorded)
    feeds = _feeds(tmp_path, checkpoint, {"feeds": {
        "ids": {"modality": "token_ids", "low": 5, "high": 9},
        "feats": {"modality": "npz", "path": "rec.npz"},
        "noise": {"modality": "random", "low": 2, "high": 3}}},
        {"ids": {"shape": [1, 7], "dtype": "int32"}, "feats": {"shape": [2, 4], "dtype": "float32"},
         "noise": {"shape": [1, 3], "dtype": "float32"}})
    assert len(feeds.steps) == 3                              # the recorded steps set the count
    ids = np.stack([s["ids"] for s in feeds.steps])
    assert ids.dtype == np.int32 and ids.min() >= 5 and ids.max() < 9
    assert np.array_equal(np.stack([s["feats"] for s in feeds.steps]), recorded.astype(np.float32))
    noise = np.stack([s["noise"] for s in feeds.steps])
    assert noise.min() >= 2 and noise.max() < 3


def test_feed_errors_are_named(tmp_path, checkpoint):
    with pytest.raises(ModelError, match=r"feeds.ids: an integer input needs a feed"):
        _feeds(tmp_path, checkpoint, {}, {"ids": {"shape": [1, 7], "dtype": "int32"}})
    with pytest.raises(ModelError, match="different numbers of steps"):
        _feeds(tmp_path, checkpoint, {"feeds": {"a": {"modality": "random", "steps": 2},
                                                "b": {"modality": "random", "steps": 3}}},
               {"a": {"shape": [1], "dtype": "float32"}, "b": {"shape": [1], "dtype": "float32"}})
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 5)))
    with pytest.raises(ModelError, match=r"'x' in .*bad.npz is \[2, 5\]; expected \[steps, 1, 4\]"):
        _feeds(tmp_path, checkpoint, {"feeds": {"x": {"modality": "npz", "path": "bad.npz"}}},
               {"x": {"shape": [1, 4], "dtype": "float32"}})


def test_recorded_feeds_are_part_of_the_reference_stamp(tmp_path, checkpoint):
    from kiln.config import prepare_settings, settings_digest

    np.savez(tmp_path / "rec.npz", mels=np.zeros((2, 1, 40, 50)))
    block = _block(checkpoint, lambda b: b["components"]["encoder"].update(
        feeds={"mels": {"modality": "npz", "path": "rec.npz"}}))
    before = settings_digest(prepare_settings(_config(block, tmp_path).model("tiny")))
    np.savez(tmp_path / "rec.npz", mels=np.ones((2, 1, 40, 50)))
    after = settings_digest(prepare_settings(_config(block, tmp_path).model("tiny")))
    assert before != after     # new recordings: the reference job runs again


def test_log_mel_frames_from_a_named_frontend(tmp_path, checkpoint):
    from kiln.validate.audio import log_mel

    feeds = _feeds(tmp_path, checkpoint, {"feeds": {"mels": {"modality": "log_mel", "seconds": 2}}},
                   {"mels": {"shape": [1, 40, 50], "dtype": "float32"}})
    assert len(feeds.steps) == 3                # 2 s at a 10 ms hop: 198 frames, three whole windows of 50
    first = feeds.steps[0]["mels"]
    assert first.shape == (1, 40, 50) and first.dtype == np.float32
    from kiln.audio import speech_mix

    expected = log_mel(speech_mix(2.0, rate=16000, seed=0), 16000, n_fft=400, hop=160, n_mels=40)
    assert np.allclose(first[0], expected[:, :50].astype(np.float32))
    assert np.allclose(feeds.steps[1]["mels"][0], expected[:, 50:100].astype(np.float32))


def test_every_modality_of_the_schema_has_a_feed_kind():
    import json

    from kiln.models.plain.feeds import FEED_KINDS

    schema = json.loads((Path(__file__).resolve().parents[2] / "src/kiln/schemas/config.schema.json").read_text())
    assert set(schema["$defs"]["feed"]["properties"]["modality"]["enum"]) == set(FEED_KINDS)


def test_a_function_feed_calls_the_users_code(tmp_path, checkpoint):
    from kiln_test_nets.hooks import utterances

    feeds = _feeds(tmp_path, checkpoint, {"feeds": {
        "mels": {"modality": "function", "function": "kiln_test_nets.hooks:utterances",
                 "kwargs": {"speakers": 2, "per_speaker": 2}},
        "noise": {"modality": "random"}}},
        {"mels": {"shape": [1, 40, 50], "dtype": "float32"}, "noise": {"shape": [1, 3], "dtype": "float32"}})
    assert len(feeds.steps) == 4                              # the function set the count; random matched it
    expected = utterances([1, 40, 50], "float32", speakers=2, per_speaker=2)
    assert all(np.array_equal(s["mels"], e) for s, e in zip(feeds.steps, expected))
    assert "mels: from kiln_test_nets.hooks:utterances" in feeds.description


@pytest.mark.parametrize("function, kwargs, message", [
    ("kiln_test_nets.nowhere:make", {}, r"feeds.mels.function: cannot import 'kiln_test_nets.nowhere'"),
    ("kiln_test_nets.hooks:absent", {}, r"feeds.mels.function: module 'kiln_test_nets.hooks': has no attribute 'absent'"),
    ("kiln_test_nets.hooks:utterances", {"colour": 1}, r"feeds.mels.function: kiln_test_nets.hooks:utterances raised TypeError"),
])
def test_function_feed_errors_name_the_key(tmp_path, checkpoint, function, kwargs, message):
    with pytest.raises(ModelError, match=message):
        _feeds(tmp_path, checkpoint, {"feeds": {"mels": {"modality": "function", "function": function,
                                                         "kwargs": kwargs}}},
               {"mels": {"shape": [1, 40, 50], "dtype": "float32"}})


def test_a_function_feed_of_the_wrong_shape_is_named(tmp_path, checkpoint):
    # one array of the input's shape, not one per step: its rows are taken as the steps
    with pytest.raises(ModelError, match=r"feeds.mels.function: step 0 from numpy:zeros is \[40, 60\]; "
                                         r"the input is \[1, 40, 60\]"):
        _feeds(tmp_path, checkpoint, {"feeds": {"mels": {"modality": "function", "function": "numpy:zeros"}}},
               {"mels": {"shape": [1, 40, 60], "dtype": "float32"}})


def test_a_users_metric_joins_the_spec_and_its_errors_name_it(tmp_path, checkpoint):
    from kiln.config import settings_digest, validate_settings

    def edit(block):
        block["components"]["encoder"]["metrics"] = [
            {"name": "speaker", "function": "kiln_test_nets.hooks:speaker_agreement", "rank_by": "speaker_agreement"},
            {"name": "broken", "function": "kiln_test_nets.hooks:utterances"}]
    model = _config(_block(checkpoint, edit), tmp_path).model("tiny")
    metrics = {m.name: m for m in family_of(model).component("encoder").metrics}
    assert metrics["speaker"].rank_by == "speaker_agreement"
    rng = np.random.default_rng(0)
    steps = [{"embedding": rng.normal(size=(1, 8))} for _ in range(6)]
    assert metrics["speaker"].fn(steps, steps, {}) == {"speaker_agreement": 1.0, "utterances": 6}
    with pytest.raises(ModelError, match=r"models.tiny.components.encoder.metrics.broken.function: "
                                         r"kiln_test_nets.hooks:utterances raised TypeError"):
        metrics["broken"].fn(steps, steps, {})
    # the parity job's stamp holds the metrics: naming another one re-runs parity
    plain = _config(_block(checkpoint), tmp_path).model("tiny")
    assert (settings_digest(validate_settings(model, model.components["encoder"]))
            != settings_digest(validate_settings(plain, plain.components["encoder"])))


def test_only_family_plain_takes_metrics_from_config(tmp_path):
    import kiln.config as kc

    with pytest.raises(ConfigError, match="only family 'plain' takes 'metrics'"):
        kc._check_plain("m", {"family": "silero_vad", "components": {"unified": {"metrics": []}}}, "config.yaml")
