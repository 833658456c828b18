"""ONNX sources: the graphs the silero-vad package ships, specialised and converted with onnx2torch,
against onnxruntime on the original files; unconvertible ops named; kiln's opset-18 converters."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kiln.foundation.errors import ConversionError, SourceError
from kiln.sources import fetch, onnx_graph

DATA = Path(importlib.util.find_spec("silero_vad").submodule_search_locations[0]) / "data"
SILERO_INPUTS = {"input": {"shape": [1, 576]}, "state": {"shape": [2, 1, 128]}, "sr": {"value": 16000}}


def silero_source(resource: str, inputs=SILERO_INPUTS) -> dict:
    return {"kind": "onnx", "package": "silero-vad", "module": "silero_vad", "resource": f"data/{resource}",
            "inputs": inputs}


@pytest.fixture(scope="module")
def ifless(tmp_path_factory):
    return fetch("vad_onnx", "silero_vad_onnx", silero_source("silero_vad_op18_ifless.onnx"),
                 tmp_path_factory.mktemp("onnx"))


def test_fetch_folds_the_16khz_branch_and_records_both_graphs(ifless, tmp_path):
    assert [f.role for f in ifless.files] == ["checkpoint", "static_graph"]
    details = ifless.details
    assert details["opset"] == 18
    assert details["folded"] == [{"node": "node_cond__1", "branch": "then_branch"}]   # sr == 16000
    assert details["ops"]["If"] == 1 and "If" not in details["static_ops"]
    assert details["static_ops"]["Gemm"] == 2          # the LSTM cell, unrolled by the exporter
    static = onnx_graph.load(ifless.file("static_graph"))
    assert [i.name for i in static.graph.input] == ["input", "state"]
    dims = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in static.graph.input]
    assert dims == [[1, 576], [2, 1, 128]]
    # deterministic: a second fetch writes the same bytes
    again = fetch("vad_onnx", "silero_vad_onnx", silero_source("silero_vad_op18_ifless.onnx"), tmp_path)
    assert again.files[1].sha256 == ifless.files[1].sha256


def test_converted_module_streams_like_onnxruntime_on_speech(ifless, speech_16k):
    """The onnx2torch module (through kiln's contract wrapper) against onnxruntime on the original,
    unmodified file, 3 s of speech streamed with the LSTM state carried by each runtime itself."""
    from kiln.config import load_config
    from kiln.models import get_family

    family = get_family("silero_vad_onnx")
    source = family.load(ifless)
    facts = family.facts(source)
    component = load_config(Path(__file__).resolve().parents[2] / "config.yaml").component("silero_vad_onnx",
                                                                                             "unified")
    wrapper = family.build_component(source, component, facts)
    ort = family.source_runtime(facts, component)
    h = c = np.zeros((1, 128), np.float32)
    th, tc = torch.zeros(1, 128), torch.zeros(1, 128)
    context = np.zeros((1, 64), np.float32)
    worst, probabilities = 0.0, []
    for start in range(0, 3 * 16000 - 512, 512):
        audio = np.concatenate([context, speech_16k[None, start:start + 512]], axis=1).astype(np.float32)
        context = audio[:, -64:]
        out = ort.predict({"audio_input": audio, "hidden_state": h, "cell_state": c})
        h, c = out["new_hidden_state"], out["new_cell_state"]
        with torch.no_grad():
            p, th, tc = wrapper(torch.from_numpy(audio), th, tc)
        worst = max(worst, float(np.abs(p.numpy() - out["vad_output"]).max()),
                    float(np.abs(th.numpy() - h).max()), float(np.abs(tc.numpy() - c).max()))
        probabilities.append(float(out["vad_output"].ravel()[0]))
    assert worst < 1e-4, worst
    assert max(probabilities) > 0.9 and min(probabilities) < 0.1   # speech and silence were both seen


def test_the_16k_graph_matches_the_pytorch_network(ifless, kiln_config, tmp_path):
    """The ONNX graph and the TorchScript archive of the same release (the ONNX source's, 6.2.3) are
    the same network: the converted graph agrees with kiln's rebuild of the .jit on one window."""
    from kiln.models import get_family
    from kiln.models.silero_vad_onnx.build import OnnxVADStep
    from kiln.sources import fetch

    jit_source = {"kind": "pypi", "package": "silero-vad", "module": "silero_vad", "resource": "data/silero_vad.jit",
                  "version": kiln_config.model("silero_vad_onnx").source["version"]}
    silero_net = get_family("silero_vad").load(fetch("silero_vad", "silero_vad", jit_source, tmp_path))
    source = get_family("silero_vad_onnx").load(ifless)
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 576)).astype(np.float32) * 0.1)
    h = c = torch.zeros(1, 128)
    with torch.no_grad():
        ours = OnnxVADStep(source.graph)(audio, h, c)
        theirs = silero_net(audio, h, c)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a.reshape(b.shape), b, atol=1e-5)


@pytest.mark.parametrize("resource, op", [("silero_vad_openvino_16k.onnx", "LSTM"),
                                          ("silero_vad_16k_sequence.onnx", "LSTM"),
                                          ("silero_vad.onnx", "If")])
def test_an_op_without_converter_is_named_with_the_file(resource, op, tmp_path):
    inputs = dict(SILERO_INPUTS)
    if resource == "silero_vad_openvino_16k.onnx":
        inputs.pop("sr")
    if resource == "silero_vad_16k_sequence.onnx":
        inputs = {"input": {"shape": [1, 576]}, "h": {"shape": [1, 1, 128]}, "c": {"shape": [1, 1, 128]}}
    with pytest.raises(ConversionError) as err:
        fetch("vad_onnx", "silero_vad_onnx", silero_source(resource, inputs), tmp_path)
    message = str(err.value)
    assert resource in message and f"ONNX op '{op}'" in message and "no onnx2torch converter" in message
    assert "LSTM" in message   # every such graph keeps the exporter's LSTM op
    assert not list(tmp_path.glob("*.static.onnx"))   # nothing written for a graph that cannot convert


def test_bad_bindings_name_the_input(tmp_path):
    with pytest.raises(SourceError, match=r"source.inputs names \['audio'\], which the graph does not have"):
        fetch("v", "silero_vad_onnx", silero_source("silero_vad_op18_ifless.onnx",
                                                    {**SILERO_INPUTS, "audio": {"shape": [1]}}), tmp_path)
    with pytest.raises(SourceError, match=r"graph input\(s\) \['sr'\] need a shape or a value"):
        fetch("v", "silero_vad_onnx", silero_source("silero_vad_op18_ifless.onnx",
                                                    {"input": {"shape": [1, 576]}, "state": {"shape": [2, 1, 128]}}),
              tmp_path)
    with pytest.raises(SourceError, match=r"source.inputs.state.shape \[2, 128\] has rank 2"):
        fetch("v", "silero_vad_onnx", silero_source("silero_vad_op18_ifless.onnx",
                                                    {**SILERO_INPUTS, "state": {"shape": [2, 128]}}), tmp_path)
    with pytest.raises(SourceError, match=r"source.inputs.state.shape\[0\] is 3, the graph fixes it to 2"):
        fetch("v", "silero_vad_onnx", silero_source("silero_vad_op18_ifless.onnx",
                                                    {**SILERO_INPUTS, "state": {"shape": [3, 1, 128]}}), tmp_path)


def test_a_damaged_file_is_named(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes((DATA / "silero_vad_op18_ifless.onnx").read_bytes()[:5000])
    with pytest.raises(SourceError, match="broken.onnx: not a valid ONNX model"):
        fetch("v", "silero_vad_onnx", {"kind": "onnx", "path": str(bad), "inputs": SILERO_INPUTS}, tmp_path)


def _opset18_model(node, inputs, outputs, initializers=()):
    from onnx import helper

    graph = helper.make_graph([node], "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


@pytest.mark.parametrize("case", ["pad_reflect_2d", "pad_constant", "reduce_mean", "split_uneven", "split_sizes"])
def test_opset18_converters_match_onnxruntime(case, tmp_path):
    """kiln's converters for opset-18 Pad, ReduceMean and Split, against onnxruntime."""
    from onnx import TensorProto, helper, numpy_helper

    x = np.random.default_rng(1).standard_normal((2, 7)).astype(np.float32)
    vi = helper.make_tensor_value_info
    cases = {
        "pad_reflect_2d": (helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect"),
                           [numpy_helper.from_array(np.array([0, 2, 0, 3], np.int64), "pads")], [[2, 12]]),
        "pad_constant": (helper.make_node("Pad", ["x", "pads", "v"], ["y"]),
                         [numpy_helper.from_array(np.array([1, 0, 0, 2], np.int64), "pads"),
                          numpy_helper.from_array(np.array(1.5, np.float32), "v")], [[3, 9]]),
        "reduce_mean": (helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0),
                        [numpy_helper.from_array(np.array([1], np.int64), "axes")], [[2]]),
        "split_uneven": (helper.make_node("Split", ["x"], ["y", "z", "w"], axis=1, num_outputs=3), [],
                         [[2, 3], [2, 3], [2, 1]]),
        "split_sizes": (helper.make_node("Split", ["x", "sizes"], ["y", "z"], axis=1),
                        [numpy_helper.from_array(np.array([5, 2], np.int64), "sizes")], [[2, 5], [2, 2]]),
    }
    node, inits, shapes = cases[case]
    names = ["y", "z", "w"][:len(shapes)]
    model = _opset18_model(node, [vi("x", TensorProto.FLOAT, [2, 7])],
                           [vi(n, TensorProto.FLOAT, shape) for n, shape in zip(names, shapes)], inits)
    path = tmp_path / f"{case}.onnx"
    path.write_bytes(model.SerializeToString())
    expected = onnx_graph.session(path).run(names, {"x": x})
    with torch.no_grad():
        got = onnx_graph.to_torch(onnx_graph.load(path), path)(torch.from_numpy(x))
    got = got if isinstance(got, (tuple, list)) else (got,)
    assert [tuple(g.shape) for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-6, atol=1e-6)


# --- folding has a size budget (issue 27, item 5) -----------------------------------------------------

def _fold_graph(path, shape) -> Path:
    """y = x if sum(ones(shape)) > 0 else -x: the If folds only after the ConstantOfShape is evaluated,
    so the constant's size is the folding's memory."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    vi = helper.make_tensor_value_info
    then_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                                    [vi("t", TensorProto.FLOAT, [1, 8])])
    else_branch = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                                    [vi("e", TensorProto.FLOAT, [1, 8])])
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["ones"], name="make_ones",
                              value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceSum", ["ones"], ["total"], name="sum_ones", keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["positive"], name="is_positive"),
             helper.make_node("If", ["positive"], ["y"], name="choose", then_branch=then_branch,
                              else_branch=else_branch)]
    graph = helper.make_graph(nodes, "fold", [vi("x", TensorProto.FLOAT, [1, "n"])],
                              [vi("y", TensorProto.FLOAT, [1, 8])],
                              initializer=[numpy_helper.from_array(np.array(shape, np.int64), "shape"),
                                           numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return Path(path)


def test_a_small_constant_still_folds_and_a_huge_one_is_refused_by_node_name(tmp_path):
    small = _fold_graph(tmp_path / "small.onnx", [16, 4])
    static, folded = onnx_graph.specialise(onnx_graph.load(small), {"x": {"shape": [1, 8]}}, small)
    assert folded == [{"node": "choose", "branch": "then_branch"}]
    assert [n.op_type for n in static.graph.node] == ["Identity", "Identity"]
    for shape, size in (([67108864, 4], "1.0 GiB"), ([1 << 40, 4], "16.0 TiB")):
        huge = _fold_graph(tmp_path / "huge.onnx", shape)
        with pytest.raises(ConversionError) as caught:
            onnx_graph.specialise(onnx_graph.load(huge), {"x": {"shape": [1, 8]}}, huge)
        assert str(caught.value) == (
            f"{huge}: ConstantOfShape node 'make_ones' would fold to a constant 'ones' of shape {shape} ({size}), "
            f"more than the folding budget of 64.0 MiB per constant; refusing the graph")


@pytest.mark.parametrize("shape, size", [([67108864, 4], "1.0 GiB"), ([1 << 40, 4], "16.0 TiB")])
def test_the_fetch_job_refuses_a_graph_folding_to_a_huge_constant_under_its_memory_limit(tmp_path, shape, size):
    """`snakemake results/<m>/source.json` on an ONNX source whose folding would allocate 1 GiB
    (measured before: 1,083 MB peak) or ask for 16 TiB (a MemoryError traceback): the fetch job runs
    under the model's memory limit, logs one line naming the node and the size, peaks far below the
    constant's size, and writes no record or specialised graph."""
    from kiln.config import load_config
    from tests.helpers.workspaces import VENV_BIN, copy_workflow

    graph = _fold_graph(tmp_path / "huge.onnx", shape)
    ws = copy_workflow(tmp_path / "ws")

    def edit(config):
        for name, model in config["models"].items():
            model["enabled"] = name == "silero_vad_onnx"
        config["models"]["silero_vad_onnx"]["source"] = {"kind": "onnx", "path": str(graph),
                                                         "inputs": {"x": {"shape": [1, 8]}}}
    ws.edit_config(edit)
    # the largest resident size of any process of the run (Snakemake, the job), as wait4 reports it
    peak = "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; " \
           "print('peak_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    result = ws.run(sys.executable, "-c", peak, str(VENV_BIN / "snakemake"), "--cores", "1",
                    "results/silero_vad_onnx/source.json", check=False, timeout=300)
    assert result.returncode != 0
    log = (ws.root / "logs/silero_vad_onnx/fetch.log").read_text()
    reserved = load_config(ws.root / "config.yaml").model("silero_vad_onnx").mem_mb
    assert f"memory limit: {reserved} MB (address space)" in log, log
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in log, log
    assert f"ConversionError: {graph}: ConstantOfShape node 'make_ones' would fold to a constant 'ones' of " \
           f"shape {shape} ({size})" in errors[0]
    peak_mb = int(result.stdout.split("peak_kb")[-1]) / 1024
    assert peak_mb < 700, peak_mb   # the job's imports; the constant is never allocated
    assert not list((ws.root / "results").rglob("source.json")) and not list(ws.root.rglob("*.static.onnx"))


def test_a_constant_expanded_past_the_budget_is_refused_before_data_propagation(tmp_path):
    """Expand of initializers to 2^28 elements: ONNX's data propagation (which runs before folding)
    held it element by element and died of std::bad_alloc at 3.8 GB; now named from the plain shape
    inference in a fraction of a second."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Expand", ["one", "shape"], ["big"], name="expand_one"),
             helper.make_node("Cast", ["big"], ["bigf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["bigf"], ["total"], keepdims=0),
             helper.make_node("Add", ["x", "total"], ["y"])]
    graph = helper.make_graph(nodes, "expand", [vi("x", TensorProto.FLOAT, [1, "n"])], [vi("y", TensorProto.FLOAT, [1, 8])],
                              initializer=[numpy_helper.from_array(np.array([1.0], np.float32), "one"),
                                           numpy_helper.from_array(np.array([1 << 28], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    path = tmp_path / "expand.onnx"
    onnx.save(model, path)
    with pytest.raises(ConversionError, match=r"Expand node 'expand_one' would fold to a constant 'big' of shape "
                                              r"\[268435456\] \(1.0 GiB\), more than the folding budget"):
        onnx_graph.specialise(onnx_graph.load(path), {"x": {"shape": [1, 8]}}, path)
