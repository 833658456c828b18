"""The component-spec layer: contracts checked against the families' specs (before any job), the one
streaming driver carrying state pairs, and a family declared without mutable module state."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from kiln.config import build_config
from kiln.foundation.errors import ConfigError, ContractError, ModelError
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


#: the names a silero_vad entry may state explicitly (a check of the family's contract)
UNIFIED_INPUTS = {"audio_input": {"shape": [1, 576], "dtype": "float32"},
                  "hidden_state": {"shape": [1, 128], "dtype": "float32"},
                  "cell_state": {"shape": [1, 128], "dtype": "float32"}}


def _explicit(model):
    model["components"]["unified"]["inputs"] = copy.deepcopy(UNIFIED_INPUTS)
    return model["components"]["unified"]["inputs"]


@pytest.mark.parametrize("edit,key,text", [
    (lambda m: _explicit(m).pop("cell_state"),
     "models.silero_vad.components.unified.inputs", "missing ['cell_state']"),
    (lambda m: _explicit(m).update({"audio": m["components"]["unified"]["inputs"].pop("audio_input")}),
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
    from kiln.foundation.errors import ModelError
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


def test_hook_results_are_checked_when_they_return_naming_the_hook_and_field(kiln_config):
    """A family hook's result is checked where it returns (the job that calls it), not three jobs
    later by a schema: its type, the JSON-ability of each recorded field, a feed step's inputs."""
    import dataclasses

    from kiln.family.spec import Context, Metric, check_hook_result

    assert check_hook_result({"blank_id": 3}, dict, "family f: facts(source)", json_fields=True) == {"blank_id": 3}
    with pytest.raises(ModelError, match=r"family f: facts\(source\): field 'vocab' is not JSON-able"):
        check_hook_result({"vocab": {1, 2}}, dict, "family f: facts(source)", json_fields=True)
    with pytest.raises(ModelError, match=r"family f: task.run\(\.\.\.\) on torch returned list, expected dict"):
        check_hook_result([], dict, "family f: task.run(...) on torch")

    family = get_family("silero_vad")
    component = kiln_config.component("silero_vad", "unified")
    spec = family.component("unified")
    bad_metric = dataclasses.replace(spec, metrics=(Metric("decisions", lambda r, c, f: 0.5),))
    with pytest.raises(ModelError, match="component unified: metric 'decisions' returned float, expected dict"):
        bad_metric.task_metrics([], [], {})

    ctx = Context(family=family, model=kiln_config.model("silero_vad"), facts={}, predictors={})
    frame = np.zeros((1, 576), np.float32)
    for feeds, text in ((lambda c, comp: [{"audio_input": frame}], "returned list, not kiln.family.spec.Feeds"),
                        (lambda c, comp: Feeds([{"audio": frame}], "x"),
                         r"step 0 misses input\(s\) \['audio_input'\]; has unknown input\(s\) \['audio'\]"),
                        (lambda c, comp: Feeds([{"audio_input": frame, "hidden_state": frame}], "x"),
                         r"has unknown input\(s\) \['hidden_state'\] \(the contract's non-state inputs")):
        with pytest.raises(ModelError, match=r"family silero_vad, component unified: feeds\(ctx, component\)"):
            dataclasses.replace(spec, feeds=feeds).validation_feeds(ctx, component)
        with pytest.raises(ModelError, match=text):
            dataclasses.replace(spec, feeds=feeds).validation_feeds(ctx, component)
    good = dataclasses.replace(spec, feeds=lambda c, comp: Feeds([{"audio_input": frame}], "one frame"))
    assert good.validation_feeds(ctx, component).steps[0]["audio_input"] is frame
