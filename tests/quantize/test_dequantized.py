"""kiln's execution of a quantized variant vs torch running the traced program with the variant's
dequantized weights (kiln.quantize.dequantized): equal for one strategy per family, and the check
fails when the executor runs other weights or when the weights cannot be mapped to torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kiln.export.convert import export_traced, trace
from kiln.models import get_family
from kiln.family.spec import Context, stream
from kiln.quantize import dequantized
from kiln.quantize.run import compress
from kiln.quantize.strategies import QuantizeContext, needs_target
from kiln.validate.backends import kiln_backend, torch_backend
from kiln.validate.reference import make_reference
from kiln.workflow.plan import ios18_component

#: one strategy per family of the registry: linear, palettized, pruned (jointly with int8)
FAMILIES = ("int8_per_tensor", "palettize_4bit", "prune_50_int8")


@pytest.fixture(scope="module")
def silero(tmp_path_factory, kiln_config, silero_net):
    """The traced `unified` program (as the prepare job writes it), its float packages at iOS17
    and iOS18, and the validation reference (625 streamed windows)."""
    family = get_family("silero_vad")
    comp = kiln_config.component("silero_vad", "unified")
    facts = family.facts(silero_net)
    root = tmp_path_factory.mktemp("dequantized")
    traced = trace(family, silero_net, comp, facts)
    program = root / "unified.pt"
    torch.jit.save(traced, str(program))
    export_traced(traced, comp, root / "iOS17" / "unified.mlpackage")
    export_traced(traced, ios18_component(comp), root / "iOS18" / "unified.mlpackage")
    module = torch.jit.load(str(program)).eval()
    ctx = Context(family=family, model=kiln_config.model("silero_vad"), facts=facts,
                  predictors={"unified": torch_backend(module, comp).predict})
    return {"comp": comp, "spec": family.check_contract(comp), "program": program, "root": root,
            "reference": make_reference(ctx, comp)}


def _variant(silero, strategy: str) -> tuple[Path, Path]:
    base = silero["root"] / needs_target(strategy, "iOS17") / "unified.mlpackage"
    out = silero["root"] / strategy / "unified.mlpackage"
    if not out.exists():
        compress(strategy, base, silero["comp"], QuantizeContext(), out)
    return base, out


def _kiln_steps(silero, package: Path) -> list:
    ref = silero["reference"]
    return stream(kiln_backend(package, "fp32").predict, silero["spec"], ref.feeds, ref.initial, silero["comp"])


@pytest.mark.parametrize("strategy", FAMILIES)
def test_kiln_equals_torch_on_the_dequantized_weights(silero, strategy):
    base, variant = _variant(silero, strategy)
    record = dequantized.check(silero["spec"], silero["comp"], silero["reference"], silero["program"], base,
                               variant, _kiln_steps(silero, variant))
    assert record["verdict"] == dequantized.EQUAL, record
    # the STFT basis, four encoder convs and both LSTM matrices are compressed and replaced
    assert record["compressed_weights"] == 7
    assert {"net.stft.basis", "net.encoder_weights.3", "net.weight_hh", "net.weight_ih"} <= set(
        record["torch_tensors_replaced"])
    # far inside the parity tolerance (0.02 on the probability): the same computation
    assert record["outputs"]["vad_output"]["max_abs"] < 1e-5
    assert record["outputs"]["new_cell_state"]["max_abs"] < 1e-3


def test_the_torch_weights_are_the_ones_kiln_decodes(silero):
    """The values written into torch are the executor's decoded constexpr outputs, and differ from
    the float weights (a check that substituted nothing could not pass the test above)."""
    base, variant = _variant(silero, "int8_per_tensor")
    pairs = [p for p in dequantized.weight_pairs(base, variant) if p["compressed"]]
    assert {p["op"] for p in pairs} == {"constexpr_affine_dequantize"}
    conv3 = next(p for p in pairs if "encoder_weights_3" in p["const"])
    # one scale for the tensor: every value is a multiple of it, and most of this conv rounds to 0
    step = np.abs(conv3["dequantized"]).max() / 127
    assert np.allclose(conv3["dequantized"] / step, np.round(conv3["dequantized"] / step), atol=1e-2)
    assert np.mean(conv3["dequantized"][conv3["float"] != 0] == 0) > 0.8


def test_an_executor_running_other_weights_is_caught(silero):
    base, variant = _variant(silero, "int8_per_tensor")
    # kiln's outputs of the float package stand in for an executor that ignores the constexpr ops
    record = dequantized.check(silero["spec"], silero["comp"], silero["reference"], silero["program"], base,
                               variant, _kiln_steps(silero, base))
    assert record["verdict"] == dequantized.DIFFERENT
    assert record["outputs"]["vad_output"]["match"] is False
    assert record["outputs"]["vad_output"]["max_abs"] > 0.1


def test_a_weight_torch_does_not_hold_is_not_checked(silero, tmp_path):
    """A compressed weight no tensor of the program equals (as when the converter folds one) leaves
    the check not_checked, naming the weight: torch cannot run the same network."""
    base, variant = _variant(silero, "palettize_4bit")
    module = torch.jit.load(str(silero["program"]))
    with torch.no_grad():
        dict(module.named_parameters())["net.encoder_weights.3"].mul_(1.5)
    program = tmp_path / "folded.pt"
    torch.jit.save(module, str(program))
    record = dequantized.check(silero["spec"], silero["comp"], silero["reference"], program, base, variant,
                               _kiln_steps(silero, variant))
    assert record["verdict"] == dequantized.NOT_CHECKED
    assert "net_encoder_weights_3" in record["reason"] and "outputs" not in record
    assert dequantized.describe(record).startswith("not checked: ")


def test_substitute_matches_each_weight_against_the_tensors_as_they_are_then():
    """Each tensor's stored forms are converted once and reused across weights, but a tensor a
    weight replaced is matched by its new values afterwards (as without the reuse), in fp32 and
    fp16-rounded storage, up to a reshape and a 2-D transpose."""
    module = torch.nn.Module()
    module.a = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    module.b = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    module.c = torch.nn.Parameter(torch.tensor([1.0 + 2 ** -20, 9.0, 9.0, 9.0]))   # fp16-rounded: [1, 9, 9, 9]
    pair = lambda f, d: {"const": "w", "compressed": True, "float": np.array(f, np.float32),   # noqa: E731
                         "dequantized": np.array(d, np.float32)}
    replaced, unmapped = dequantized.substitute(module, [
        pair([[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]),   # a (reshaped) and b (same)
        pair([5.0, 6.0, 7.0, 8.0], [0.5, 0.5, 0.5, 0.5]),           # a and b as the first pair left them
        pair([[1.0, 9.0], [9.0, 9.0]], [[2.0, 2.0], [2.0, 2.0]]),   # c, fp16-rounded
        pair([[0.5, 3.0], [0.5, 0.5]], [[0.0, 0.0], [0.0, 0.0]]),   # nothing
    ])
    assert replaced == ["a", "b", "c"] and unmapped == ["w"]
    assert module.a.tolist() == [0.5] * 4 and module.b.tolist() == [[0.5, 0.5], [0.5, 0.5]]
    assert module.c.tolist() == [2.0] * 4
    module.d = torch.nn.Parameter(torch.tensor([[1.0, 3.0], [2.0, 4.0]]))
    assert dequantized._match(module.d.detach().numpy(), np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)) == "transposed"


def test_a_transposed_match_is_probed_first_and_still_compared_whole():
    """The transposed comparison samples a few elements before comparing whole (a conformer's dozens
    of same-sized weights are each a candidate for every const), without changing what matches:
    non-square transposes match, and a tensor equal at every probed element but one other does not."""
    rng = np.random.default_rng(0)
    tensor = rng.standard_normal((3, 40)).astype(np.float32)
    assert dequantized._match(tensor, np.ascontiguousarray(tensor.T)) == "transposed"
    assert dequantized._match(tensor, tensor.reshape(40, 3)) == "same"   # a reshape, not a transpose
    const = np.ascontiguousarray(tensor.T)
    probed = set(dequantized._probe(const.size).tolist())
    other = next(i for i in range(const.size) if i not in probed)
    const.reshape(-1)[other] += 1.0
    assert dequantized._match(tensor, const) is None
    assert dequantized._match(tensor, rng.standard_normal((40, 3)).astype(np.float32)) is None


def test_the_weights_are_listed_in_the_same_order_in_every_process(silero):
    """The record lists the weights (and names the unmapped ones) in weight_pairs' order: it must not
    follow a protobuf map's iteration order, which differs between processes (two processes here,
    with different hash seeds)."""
    import json
    import os
    import subprocess
    import sys

    base, variant = _variant(silero, "int8_per_tensor")
    script = ("import json, sys; from kiln.quantize.dequantized import weight_pairs; "
              "print(json.dumps([(p['const'], p['op']) for p in weight_pairs(sys.argv[1], sys.argv[2])]))")
    orders = [json.loads(subprocess.run([sys.executable, "-c", script, str(base), str(variant)], check=True,
                                        capture_output=True, text=True,
                                        env={**os.environ, "PYTHONHASHSEED": seed}).stdout)
              for seed in ("1", "2", "3")]
    assert orders[0] == orders[1] == orders[2]
    assert len(orders[0]) > 1
