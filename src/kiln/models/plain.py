"""Family ``plain``: a model from a config block alone, no Python.

Most models a user brings are one network with weights and a fixed contract. The model's
``network`` block says what the fetched file is; its components' inputs and outputs (shapes,
dtypes, output ``kind``), ``state`` pairs and ``feeds`` say the rest::

    network: {kind: torchscript, submodule: _model}      # a TorchScript archive (scripted or traced)
    network: {kind: module, factory: "pkg.mod:make", kwargs: {dim: 64}, weights_kwarg: path}
    network: {kind: module, factory: "pkg.mod:Net", state_dict: true}   # torch.load -> load_state_dict
    network: {kind: onnx}                                 # the static graph of an ``onnx`` source

- the network is called with the contract's inputs in config order and returns its outputs in
  config order (a tensor, a tuple/list, or a dict keyed by the output names);
- ``torchscript``: a scripted archive keeps Python control flow (``if``, loops, ``len`` of a
  tensor) that Core ML cannot take; it is specialised to the contract's fixed shapes by running it
  once under ``make_fx`` (every branch decided by the example inputs, as ``torch.jit.trace`` decides a
  Python branch; data-dependent control flow is therefore fixed to the example's path);
- ``onnx``: the graph's free inputs (after ``source.inputs`` binds constants) are the contract's
  inputs by position (and its outputs the contract's outputs); parity is then three-way (onnxruntime runs the original file);
- ``state: {hidden_in: hidden_out}``: the output fed back to the input on the next step (zeros first),
  carried by the generic streaming driver on torch and every Core ML backend;
- ``feeds: {input: {modality: speech | log_mel | random | token_ids | npz, ...}}``: validation
  inputs (default: uniform in [-1, 1], 8 steps); ``log_mel`` computes frames of speech with a named
  frontend (:data:`FRONTENDS`).

Judgement comes from the outputs' ``kind`` (:mod:`kiln.validate.kinds`), recorded by the parity and
quantize jobs for any family. The spec is built per model by :func:`family_for`.
"""

from __future__ import annotations

import importlib
from functools import partial
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kiln.errors import ContractError, ModelError, SourceError
from kiln.family.spec import (NUMPY_DTYPES, ComponentSpec, Context, FamilySpec, Feeds, PlotSeries, StatePair,
                              default_example)
from kiln.sources import SourceRecord

NAME = "plain"
DEFAULT_STEPS = 8
DEFAULT_SPEECH_SECONDS = 10.0
DEFAULT_SAMPLE_RATE = 16_000


class PlainSource:
    """The loaded network and what it came from."""

    def __init__(self, network, kind: str, record: SourceRecord):
        self.network = network
        self.kind = kind
        self.record = record


# -- load ------------------------------------------------------------------------------------------

def _attribute(obj, dotted: str, what: str):
    for part in dotted.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelError(f"{what}: has no attribute '{part}' (of '{dotted}')") from None
    return obj


def _factory(spec: str, where: str):
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"{where}: cannot import '{module_name}' ({exc}); install the package that "
                         f"provides it (docs/adding-a-model.md: a model's own dependency)") from None
    return _attribute(module, attr, f"{where}: module '{module_name}'")


def _load_torchscript(path: Path, network: Mapping[str, Any], where: str):
    import torch

    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError subclasses for bad archives
        raise SourceError(f"{path}: not a loadable TorchScript archive: {str(exc).splitlines()[0]}") from exc
    if network.get("submodule"):
        scripted = _attribute(scripted, network["submodule"], f"{where}.submodule: {path}")
    return scripted.eval()


def _load_module(path: Path, network: Mapping[str, Any], where: str):
    import torch

    make = _factory(network["factory"], f"{where}.factory")
    kwargs = dict(network.get("kwargs") or {})
    if network.get("weights_kwarg"):
        kwargs[network["weights_kwarg"]] = str(path)
    try:
        module = make(**kwargs)
    except TypeError as exc:
        raise ModelError(f"{where}.factory: {network['factory']}(**{sorted(kwargs)}) failed: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{where}.factory: {network['factory']} returned {type(module).__name__}, "
                         f"not a torch.nn.Module")
    if network.get("state_dict"):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SourceError(f"{path}: not a loadable state dict: {str(exc).splitlines()[0]}") from exc
        if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise SourceError(f"{path}: does not fit {network['factory']}: "
                              f"{' '.join(str(exc).split())[:400]}") from None
    return module.eval()


def _load_onnx(record: SourceRecord, model, where: str):
    from kiln.sources import onnx_graph

    path = record.file("static_graph")
    graph = onnx_graph.load(path)
    initializers = {i.name for i in graph.graph.initializer}
    free = tuple(i.name for i in graph.graph.input if i.name not in initializers)
    outputs = tuple(o.name for o in graph.graph.output)
    for cname, component in model.components.items():
        # by position: the contract's names are the package's (a graph's may be a Core ML keyword)
        if len(component.inputs) != len(free):
            raise ModelError(f"models.{model.name}.components.{cname}.inputs: the graph has {len(free)} "
                             f"free inputs {list(free)} (after binding source.inputs), the contract "
                             f"{len(component.inputs)}; they are matched by position")
        if len(component.outputs) != len(outputs):
            raise ModelError(f"models.{model.name}.components.{cname}.outputs: the graph has "
                             f"{len(outputs)} outputs {list(outputs)}, the contract {len(component.outputs)}")
    return onnx_graph.to_torch(graph, path)


def load(model, record: SourceRecord) -> PlainSource:
    network = model.network
    where = f"models.{model.name}.network"
    kind = network["kind"]
    if kind == "onnx":
        return PlainSource(_load_onnx(record, model, where), kind, record)
    path = record.file("checkpoint")
    loader = {"torchscript": _load_torchscript, "module": _load_module}[kind]
    return PlainSource(loader(path, network, where), kind, record)


def facts(source: PlainSource) -> dict:
    """What the network is (parameter count); for an ONNX source, the original graph for onnxruntime."""
    params = sum(int(p.numel()) for p in source.network.parameters())
    out = {"network": source.kind, "parameters": params}
    if source.kind == "onnx":
        original = next(f for f in source.record.files if f.role == "checkpoint")
        bound = source.record.details.get("inputs", {})
        out["onnxruntime"] = {"path": original.path, "sha256": original.sha256,
                              "constants": {k: v["value"] for k, v in bound.items() if "value" in v}}
    return out


# -- the traceable module --------------------------------------------------------------------------

def _contract_module(network, component):
    """``network`` called with the contract's inputs in order, its outputs as a tuple in the
    contract's order (from a tensor, a tuple/list or a dict keyed by output names)."""
    import torch

    names = tuple(t.name for t in component.outputs)
    where = f"{component.model}/{component.name}"

    class ContractModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # not ``graph``: coremltools resolves submodules by attribute, and TorchScript owns ``graph``
            self.network = network

        def forward(self, *inputs):
            out = self.network(*inputs)
            if isinstance(out, torch.Tensor):
                return (out,)
            if isinstance(out, Mapping):
                missing = [n for n in names if n not in out]
                if missing:
                    raise ContractError(f"{where}: the network returned {sorted(out)}, no {missing}")
                return tuple(out[n] for n in names)
            return tuple(out)

    return ContractModule().eval()


def _specialised(scripted, component, example: Mapping[str, np.ndarray]):
    """A scripted module run once under ``make_fx`` with the contract's example inputs: an fx graph
    of aten ops with every branch decided, which ``torch.jit.trace`` and Core ML then take."""
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    args = tuple(torch.from_numpy(np.ascontiguousarray(example[t.name])) for t in component.inputs)
    try:
        with torch.no_grad():
            return make_fx(lambda *a: scripted(*a))(*args)
    except Exception as exc:
        raise ModelError(f"{component.model}/{component.name}: the TorchScript network does not run on "
                         f"the contract's inputs {[f'{t.name} {list(t.shape)}' for t in component.inputs]}: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def wrapper(source: PlainSource, component, facts) -> Any:
    if source.kind == "torchscript":
        example = default_example(component, np.random.default_rng(0))
        return _contract_module(_specialised(source.network, component, example), component)
    return _contract_module(source.network, component)


# -- validation feeds --------------------------------------------------------------------------------

def _speech(ctx: Context, tensor, spec: Mapping[str, Any], where: str) -> list[np.ndarray]:
    """Windows of the input's size that advance by ``hop`` samples: each window is the previous
    window's last ``size - hop`` samples (zeros at first) followed by ``hop`` new ones."""
    size = int(np.prod(tensor.shape))
    hop = int(spec.get("hop", size))
    if hop > size:
        raise ModelError(f"{where}.hop: {hop} is more than the input's {size} samples")
    rate = int(spec.get("sample_rate", DEFAULT_SAMPLE_RATE))
    seconds = float(spec.get("seconds", DEFAULT_SPEECH_SECONDS))
    seed = int(spec.get("seed", 0))
    audio = ctx.memo(f"speech:{seconds}:{rate}:{seed}", lambda: ctx.speech(seconds, rate=rate, seed=seed))
    context = np.zeros(size - hop, dtype=np.float32)
    steps = []
    for start in range(0, audio.size - hop + 1, hop):
        window = np.concatenate([context, audio[start:start + hop]]).astype(np.float32)
        steps.append(window.reshape(tensor.shape).astype(NUMPY_DTYPES[tensor.dtype]))
        context = window[hop:] if size > hop else context
    if not steps:
        raise ModelError(f"{where}: {seconds} s of audio is shorter than one hop ({hop} samples)")
    return steps


def _kiln_log_mel(audio: np.ndarray, rate: int, bands: int, n_fft: int, hop: int) -> np.ndarray:
    """kiln's stock frontend: 10 log10 of HTK mel power, Hann window (kiln.validate.audio.log_mel)."""
    from kiln.validate.audio import log_mel

    return log_mel(audio, rate, n_fft=n_fft, hop=hop, n_mels=bands)


#: named frontends a ``log_mel`` feed computes frames with: (audio, rate, bands, n_fft, hop) -> [bands, frames]
FRONTENDS = {"kiln_log_mel_db": _kiln_log_mel}


def _log_mel(ctx: Context, tensor, spec: Mapping[str, Any], where: str) -> list[np.ndarray]:
    """Mel frames of speech from a named frontend, cut into the input's ``[..., bands, frames]``
    windows one after the other."""
    if len(tensor.shape) < 2:
        raise ModelError(f"{where}: a log_mel feed needs an input [..., bands, frames], not {list(tensor.shape)}")
    bands, frames = tensor.shape[-2:]
    name = spec.get("frontend", "kiln_log_mel_db")
    if name not in FRONTENDS:
        raise ModelError(f"{where}.frontend: unknown frontend '{name}' (known: {', '.join(FRONTENDS)})")
    rate = int(spec.get("sample_rate", DEFAULT_SAMPLE_RATE))
    seconds = float(spec.get("seconds", DEFAULT_SPEECH_SECONDS))
    n_fft, hop = int(spec.get("n_fft", 400)), int(spec.get("hop", 160))
    audio = ctx.memo(f"speech:{seconds}:{rate}:0", lambda: ctx.speech(seconds, rate=rate, seed=0))
    mel = FRONTENDS[name](audio, rate, bands, n_fft, hop)
    steps = [mel[:, i:i + frames].reshape(tensor.shape).astype(NUMPY_DTYPES[tensor.dtype])
             for i in range(0, mel.shape[1] - frames + 1, frames)]
    if not steps:
        raise ModelError(f"{where}: {seconds} s of speech gives {mel.shape[1]} frames, fewer than the "
                         f"input's {frames}")
    return steps


def _random(tensor, spec: Mapping[str, Any], steps: int, integers: bool, where: str) -> list[np.ndarray]:
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    if integers:
        if "high" not in spec:
            raise ModelError(f"{where}.high: token_ids need an upper bound (the vocabulary size)")
        low, high = int(spec.get("low", 0)), int(spec["high"])
        if high <= low:
            raise ModelError(f"{where}: high {high} must exceed low {low}")
        return [rng.integers(low, high, size=tensor.shape).astype(NUMPY_DTYPES[tensor.dtype]) for _ in range(steps)]
    low, high = float(spec.get("low", -1.0)), float(spec.get("high", 1.0))
    if high <= low:
        raise ModelError(f"{where}: high {high} must exceed low {low}")
    return [rng.uniform(low, high, size=tensor.shape).astype(NUMPY_DTYPES[tensor.dtype]) for _ in range(steps)]


def _npz(model, tensor, spec: Mapping[str, Any], where: str) -> list[np.ndarray]:
    path = Path(spec["path"]) if Path(spec["path"]).is_absolute() else Path(model.config_dir) / spec["path"]
    key = spec.get("key", tensor.name)
    try:
        with np.load(path, allow_pickle=False) as data:
            if key not in data.files:
                raise ModelError(f"{where}: {path} has no array '{key}' (it has: {', '.join(data.files)})")
            array = np.asarray(data[key])
    except (OSError, ValueError) as exc:
        raise ModelError(f"{where}.path: cannot read {path}: {exc}") from None
    if array.shape == tensor.shape:
        array = array[None]
    if array.shape[1:] != tensor.shape:
        raise ModelError(f"{where}: '{key}' in {path} is {list(array.shape)}; expected [steps, "
                         f"{', '.join(map(str, tensor.shape))}]")
    return [a.astype(NUMPY_DTYPES[tensor.dtype]) for a in array]


def feeds(ctx: Context, component) -> Feeds:
    """Every non-state input's values per step, from its ``feeds`` entry (default: uniform in
    [-1, 1]); all inputs must come to the same number of steps."""
    where = f"models.{component.model}.components.{component.name}.feeds"
    carried = set(component.state)
    tensors = [t for t in component.inputs if t.name not in carried]
    columns: dict[str, list[np.ndarray]] = {}
    described, step_seconds = [], None
    # what fixes its own count first (speech, recorded arrays), then random values to match
    for tensor in tensors:
        spec = component.feeds.get(tensor.name, {"modality": "random"})
        at = f"{where}.{tensor.name}"
        if spec["modality"] == "speech":
            columns[tensor.name] = _speech(ctx, tensor, spec, at)
            rate = int(spec.get("sample_rate", DEFAULT_SAMPLE_RATE))
            step_seconds = int(spec.get("hop", int(np.prod(tensor.shape)))) / rate
            described.append(f"{tensor.name}: espeak-ng speech mixed with silence and noise, "
                             f"{float(spec.get('seconds', DEFAULT_SPEECH_SECONDS)):.1f} s at {rate} Hz")
        elif spec["modality"] == "log_mel":
            columns[tensor.name] = _log_mel(ctx, tensor, spec, at)
            step_seconds = tensor.shape[-1] * int(spec.get("hop", 160)) / int(spec.get("sample_rate", DEFAULT_SAMPLE_RATE))
            described.append(f"{tensor.name}: {spec.get('frontend', 'kiln_log_mel_db')} frames of espeak-ng "
                             f"speech, {float(spec.get('seconds', DEFAULT_SPEECH_SECONDS)):.1f} s")
        elif spec["modality"] == "npz":
            columns[tensor.name] = _npz(ctx.model, tensor, spec, at)
            described.append(f"{tensor.name}: recorded inputs from {spec['path']}")
    counts = {len(v) for v in columns.values()}
    for tensor in tensors:
        if tensor.name in columns:
            continue
        spec = component.feeds.get(tensor.name)
        if spec is None and tensor.dtype == "int32":
            raise ModelError(f"{where}.{tensor.name}: an integer input needs a feed (modality: token_ids "
                             f"with high: the vocabulary size, or npz)")
        spec = spec or {"modality": "random"}
        steps = int(spec.get("steps", next(iter(counts)) if len(counts) == 1 else DEFAULT_STEPS))
        integers = spec["modality"] == "token_ids"
        columns[tensor.name] = _random(tensor, spec, steps, integers, f"{where}.{tensor.name}")
        bounds = (f"[{spec.get('low', 0)}, {spec['high']})" if integers
                  else f"[{spec.get('low', -1.0)}, {spec.get('high', 1.0)})")
        described.append(f"{tensor.name}: {'token ids' if integers else 'uniform random'} in {bounds}")
    counts = {name: len(v) for name, v in columns.items()}
    if len(set(counts.values())) > 1:
        raise ModelError(f"{where}: the inputs' feeds give different numbers of steps: {counts}")
    n = next(iter(counts.values()), 1)
    steps = [{name: columns[name][i] for name in columns} for i in range(n)]
    state = f", state carried ({', '.join(f'{o} -> {i}' for i, o in component.state.items())})" if component.state else ""
    return Feeds(steps, "; ".join(described) + f"; {n} steps{state}", step_seconds=step_seconds)


# -- onnxruntime on the original file ---------------------------------------------------------------

def source_runtime(facts, component):
    """onnxruntime on the original .onnx file (checked against its fetched sha256), its outputs
    named and shaped as the contract's."""
    from kiln.sources import SourceFile, onnx_graph, verify_file
    from kiln.validate.backends import Backend

    info = facts["onnxruntime"]
    path = verify_file(SourceFile(role="checkpoint", path=info["path"], sha256=info["sha256"], size=0))
    session = onnx_graph.session(path)
    dtypes = {i.name: i.type for i in session.get_inputs()}
    fixed = {k: np.asarray(v, dtype=np.int64 if "int64" in dtypes.get(k, "") else np.float32)
             for k, v in info["constants"].items()}

    graph_inputs = [i.name for i in session.get_inputs() if i.name not in fixed]

    def predict(inputs):
        feed = {g: np.asarray(inputs[t.name]) for g, t in zip(graph_inputs, component.inputs)}
        got = session.run(None, {**feed, **fixed})
        return {t.name: np.asarray(v).reshape(t.shape) for t, v in zip(component.outputs, got)}

    return Backend("onnxruntime", "source", None, predict)


# -- the spec ----------------------------------------------------------------------------------------

def _probability_plot(component) -> PlotSeries | None:
    """The first probability output over time (the mean of its elements per step)."""
    name = next((t.name for t in component.outputs if t.kind == "probability"), None)
    if name is None:
        return None
    return PlotSeries(f"{name} (probability)", lambda steps: np.array([float(np.mean(s[name])) for s in steps]))


def _component(component) -> ComponentSpec:
    return ComponentSpec(
        component.name, inputs=tuple(t.name for t in component.inputs),
        outputs=tuple(t.name for t in component.outputs), wrapper=wrapper, feeds=feeds,
        state=tuple(StatePair(i, o) for i, o in component.state.items()),
        plot=_probability_plot(component), description=component.description)


def family_for(model) -> FamilySpec:
    """The spec of ``model`` (a ModelConfig of family ``plain``), from its config block."""
    if model.network is None:
        raise ModelError(f"models.{model.name}: family plain needs a network block")
    return FamilySpec(name=NAME, load=partial(load, model), facts=facts,
                      components=tuple(_component(c) for c in model.components.values()),
                      source_runtime=source_runtime if model.network["kind"] == "onnx" else None)
