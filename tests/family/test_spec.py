"""The component-spec layer: contracts checked against the families' specs (before any job), the one
streaming driver carrying state pairs, and a family declared without mutable module state."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from kiln.config import build_config
from kiln.errors import ConfigError, ContractError, ModelError
from kiln.models import check_models, family_names, get_family
from kiln.family.spec import ComponentSpec, Feeds, StatePair, stream


@pytest.fixture()
def raw(repo):
    return yaml.safe_load((repo / "config.yaml").read_text())


def _check(raw):
    check_models(build_config(raw))


def test_the_shipped_config_matches_every_family(raw):
    _check(raw)


def test_families_are_the_public_modules_only():
    assert "silero_vad" in family_names() and "parakeet_tdt" in family_names()
    assert not [n for n in family_names() if n.startswith("_") or n == "spec"]


@pytest.mark.parametrize("edit,key,text", [
    (lambda m: m["components"]["unified"]["inputs"].pop("cell_state"),
     "models.silero_vad.components.unified.inputs", "missing ['cell_state']"),
    (lambda m: m["components"]["unified"]["inputs"].update(
        {"audio": m["components"]["unified"]["inputs"].pop("audio_input")}),
     "models.silero_vad.components.unified.inputs", "unknown ['audio']"),
    (lambda m: m["components"].update({"streaming": copy.deepcopy(m["components"]["unified"])}),
     "models.silero_vad.components.streaming", "builds no component 'streaming'"),
    (lambda m: m.update({"source": {"kind": "random", "architecture": "tiny", "seed": 0}}),
     "models.silero_vad.source.kind", "cannot build a random-initialised model"),
])
def test_contract_problems_are_config_errors_naming_the_key(raw, edit, key, text):
    edit(raw["models"]["silero_vad"])
    with pytest.raises(ConfigError) as err:
        _check(raw)
    assert f"at '{key}'" in str(err.value) and text in str(err.value)


def test_a_family_that_cannot_build_the_model(raw):
    raw["models"]["silero_vad"]["family"] = "parakeet_tdt"
    with pytest.raises(ConfigError, match="parakeet_tdt family builds no component 'unified'"):
        _check(raw)


def test_check_contract_at_job_time_is_typed():
    family = get_family("silero_vad")
    with pytest.raises(ModelError, match="no component 'decoder'"):
        family.component("decoder")


class _Accumulator:
    """A backend with state: out = x + state; new_state = out."""

    def __init__(self):
        self.calls = []

    def __call__(self, inputs):
        self.calls.append({k: np.array(v) for k, v in inputs.items()})
        total = inputs["x"] + inputs["state"]
        return {"y": total, "new_state": total}


def test_stream_carries_each_backends_own_state():
    spec = ComponentSpec("acc", inputs=("x", "state"), outputs=("y", "new_state"), wrapper=None, feeds=None,
                         state=(StatePair("state", "new_state"),))
    assert spec.feed_inputs == ("x",) and spec.state_inputs == ("state",)
    backend = _Accumulator()
    feeds = [{"x": np.array([1.0])}, {"x": np.array([2.0])}, {"x": np.array([3.0])}]
    steps = stream(backend, spec, feeds, {"state": np.array([10.0])})
    assert [float(s["y"][0]) for s in steps] == [11.0, 13.0, 16.0]
    assert [float(c["state"][0]) for c in backend.calls] == [10.0, 11.0, 13.0]
    with pytest.raises(ContractError, match=r"no initial value for state input\(s\) \['state'\]"):
        stream(backend, spec, feeds, {})

    def forgetful(inputs):
        return {"y": inputs["x"]}
    with pytest.raises(ContractError, match="step 0 produced no 'new_state'"):
        stream(forgetful, spec, feeds, {"state": np.array([0.0])})


def test_initial_state_defaults_to_zeros_of_the_contract(kiln_config):
    component = kiln_config.component("silero_vad", "unified")
    spec = get_family("silero_vad").component("unified")
    initial = spec.initial_state(component, {})
    assert set(initial) == {"hidden_state", "cell_state"}
    assert initial["hidden_state"].shape == (1, 128) and initial["hidden_state"].dtype == np.float32
    assert not initial["cell_state"].any()


def test_feeds_are_data_not_callbacks():
    feeds = Feeds([{"x": np.zeros(2)}], "two zeros", step_seconds=0.5)
    assert feeds.steps[0]["x"].shape == (2,) and feeds.step_seconds == 0.5


def test_task_quantization_result_is_checked_naming_the_field():
    from kiln.errors import ModelError
    from kiln.family.spec import check_quantization_result

    good = {"strategies": {"int8_per_channel": {"eou_delay_ms": 80}}, "recommendation": "int8", "extra": 1}
    assert check_quantization_result(good, "fam", "encoder") == good
    with pytest.raises(ModelError, match=r"family fam: task.quantization\(\.\.\., component='encoder'\) "
                                         r"returned no 'strategies' \(strategy -> "):
        check_quantization_result({"recommendation": "x"}, "fam", "encoder")
    with pytest.raises(ModelError, match="'recommendation' is int, expected str"):
        check_quantization_result({"strategies": {}, "recommendation": 3}, "fam", "encoder")
    with pytest.raises(ModelError, match="'strategies.int8' is float"):
        check_quantization_result({"strategies": {"int8": 0.9}, "recommendation": "x"}, "fam", "encoder")
    with pytest.raises(ModelError, match="returned list, not a dict"):
        check_quantization_result([], "fam", "encoder")
