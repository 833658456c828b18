"""The one resolver of a family's symbolic contracts: shapes from facts and options, config.yaml's
explicit shapes checked against them naming model, component, tensor and axis."""

from __future__ import annotations

import dataclasses

import pytest

from kiln.config import ComponentConfig, TensorSpec, load_config
from kiln.family.contract import Contract, evaluate, f32, i32, resolve
from kiln.foundation.errors import ContractError, ModelError

CONTRACT = Contract(inputs=(f32("audio", 1, "chunk_ms * sample_rate // 1000"), i32("length", 1)),
                    outputs=(f32("mel", 1, "n_mels", "(chunk_ms * sample_rate // 1000) // hop"),))
FACTS = {"sample_rate": 16000, "n_mels": 80, "hop": 160}


def test_shapes_resolve_from_facts_and_options():
    resolved = resolve(CONTRACT, FACTS, {"chunk_ms": 320})
    assert resolved == {"inputs": {"audio": {"shape": [1, 5120], "dtype": "float32"},
                                   "length": {"shape": [1], "dtype": "int32"}},
                        "outputs": {"mel": {"shape": [1, 80, 32], "dtype": "float32"}}}


@pytest.mark.parametrize("expression,message", [
    ("n_mel", "needs 'n_mel', which neither the facts nor the options give"),
    ("n_mels ** 2", "only integers, names"),
    ("__import__('os')", "only integers, names"),
    ("n_mels +", "is not an axis expression"),
])
def test_a_bad_expression_is_named(expression, message):
    with pytest.raises(ModelError, match=message):
        evaluate(expression, FACTS, "family f, m/c (spec).inputs.x")


def _entry(**shapes) -> ComponentConfig:
    model = load_config("config.yaml").model("silero_vad")
    base = model.components["unified"]
    return dataclasses.replace(base, model="m", name="pre_160", spec="pre",
                               inputs=tuple(TensorSpec(n, s, d) for n, (s, d) in shapes.items() if n != "mel"),
                               outputs=(TensorSpec("mel", shapes["mel"][0], shapes["mel"][1]),))


def test_explicit_shapes_are_checked_naming_model_component_tensor_and_axis(repo, monkeypatch):
    from kiln.family.contract import check

    monkeypatch.chdir(repo)
    resolved = resolve(CONTRACT, FACTS, {"chunk_ms": 160})
    good = _entry(audio=((1, 2560), "float32"), length=((1,), "int32"), mel=((1, 80, 16), "float32"))
    check(good, resolved, "f")
    wrong_axis = _entry(audio=((1, 2560), "float32"), length=((1,), "int32"), mel=((1, 80, 32), "float32"))
    with pytest.raises(ContractError, match=r"^models.m.components.pre_160.outputs.mel: axis 2 is 32 in \[1, 80, 32\], "
                                            r"the family's contract gives 16 \(\[1, 80, 16\]\)"):
        check(wrong_axis, resolved, "f")
    wrong_rank = _entry(audio=((2560,), "float32"), length=((1,), "int32"), mel=((1, 80, 16), "float32"))
    with pytest.raises(ContractError, match=r"inputs.audio: shape \[2560\] has 1 axes"):
        check(wrong_rank, resolved, "f")
    wrong_dtype = _entry(audio=((1, 2560), "float32"), length=((1,), "float32"), mel=((1, 80, 16), "float32"))
    with pytest.raises(ContractError, match=r"inputs.length: dtype float32, the family's contract gives int32"):
        check(wrong_dtype, resolved, "f")
