"""Family ``plain``, the build part: load the network a config block names (TorchScript, an
``nn.Module`` factory, an ONNX graph), its facts, and the wrapper with the contract's inputs and
outputs (a scripted archive specialised to the contract's fixed shapes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kiln.foundation.errors import ContractError, ModelError, SourceError
from kiln.family.spec import default_example
from kiln.models.plain.hooks import attribute, user_callable
from kiln.sources import SourceRecord


NAME = "plain"


class PlainSource:
    """The loaded network and what it came from."""

    def __init__(self, network, kind: str, record: SourceRecord):
        self.network = network
        self.kind = kind
        self.record = record


def _load_torchscript(path: Path, network: Mapping[str, Any], where: str):
    import torch

    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError subclasses for bad archives
        raise SourceError(f"{path}: not a loadable TorchScript archive: {str(exc).splitlines()[0]}") from exc
    if network.get("submodule"):
        scripted = attribute(scripted, network["submodule"], f"{where}.submodule: {path}")
    return scripted.eval()


def _load_module(path: Path, network: Mapping[str, Any], where: str):
    import torch

    make = user_callable(network["factory"], f"{where}.factory")
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
