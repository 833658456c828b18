"""ONNX checkpoints: specialised to kiln's fixed contract, then converted to torch with onnx2torch.

Core ML is exported with static shapes, so an ONNX graph's dynamic parts are decided before
conversion, the way ``torch.jit.trace`` decides a Python branch:

1. **bind** the graph's inputs: each gets a fixed shape (``{shape: [1, 576]}``) or becomes a
   constant (``{value: 16000}``, e.g. Silero's sample-rate input ``sr``);
2. **fold**: with those facts, every node whose inputs are all known is evaluated (``Shape`` of a
   now-static tensor, ``Equal``, ``Cast``, ... with ONNX's reference evaluator); an ``If`` whose
   condition became known is replaced by the nodes of the branch it takes (Silero's 16 kHz branch;
   the shape checks inside the exporter's LSTM wrappers); repeated until nothing changes;
3. **prune** the nodes no graph output needs.

What is left must be ops onnx2torch converts; :func:`check_convertible` names the first op without
a converter (op type, opset version, node, file) instead of onnx2torch's bare ``NotImplementedError``.
An ``If`` that depends on runtime values (or a ``Loop``) stays and is named the same way.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kiln.foundation.errors import ConversionError, SourceError

#: onnx2torch converters that need torchvision (kiln's CPU environment has none: PyPI's torchvision
#: is a CUDA build that cannot load against torch's CPU wheel)
TORCHVISION_OPS = ("NonMaxSuppression", "RoiAlign")
#: folding evaluates nodes with all-constant inputs; larger results stay in the graph
MAX_FOLDED_ELEMENTS = 1 << 16
#: the most one folded constant may take: a node whose output would be larger is refused by name
#: before it runs (a ``ConstantOfShape`` of two int64s can ask for terabytes)
FOLD_BUDGET_BYTES = 64 << 20


def load(path: str | Path):
    """The ONNX model at ``path``, checked by onnx's own checker; a damaged file names itself."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError ...
        raise SourceError(f"{path}: not a valid ONNX model: {str(exc).splitlines()[0]}") from exc
    return model


def opset(model) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def op_counts(graph) -> dict[str, int]:
    """Op types of ``graph`` and every subgraph inside it."""
    counts: Counter = Counter()
    for node in graph.node:
        counts[node.op_type] += 1
        for sub in _subgraphs(node):
            counts.update(op_counts(sub))
    return dict(sorted(counts.items()))


def _subgraphs(node):
    import onnx

    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


# -- 1. bind -----------------------------------------------------------------------------------------

def bind_inputs(model, bindings: Mapping[str, Mapping[str, Any]], path) -> None:
    """Fix each bound input's shape, or turn it into a constant initializer (in place)."""
    import onnx
    from onnx import helper, numpy_helper

    graph_inputs = {i.name: i for i in model.graph.input}
    unknown = sorted(set(bindings) - set(graph_inputs))
    if unknown:
        raise SourceError(f"{path}: source.inputs names {unknown}, which the graph does not have "
                          f"(its inputs: {sorted(graph_inputs)})")
    unbound = sorted(n for n in graph_inputs if n not in bindings
                     and n not in {init.name for init in model.graph.initializer})
    if unbound:
        raise SourceError(f"{path}: graph input(s) {unbound} need a shape or a value in source.inputs "
                          "(Core ML is exported with static shapes)")
    for name, binding in bindings.items():
        value_info = graph_inputs[name]
        elem_type = value_info.type.tensor_type.elem_type
        dims = value_info.type.tensor_type.shape.dim
        if "value" in binding:
            array = np.asarray(binding["value"], dtype=helper.tensor_dtype_to_np_dtype(elem_type))
            if len(dims) != array.ndim:
                raise SourceError(f"{path}: source.inputs.{name}.value has rank {array.ndim}, the graph "
                                  f"input has rank {len(dims)}")
            model.graph.input.remove(value_info)
            model.graph.initializer.append(numpy_helper.from_array(array, name))
            continue
        shape = [int(d) for d in binding["shape"]]
        if len(shape) != len(dims):
            raise SourceError(f"{path}: source.inputs.{name}.shape {shape} has rank {len(shape)}, the "
                              f"graph input has rank {len(dims)}")
        for i, (dim, size) in enumerate(zip(dims, shape)):
            if dim.HasField("dim_value") and dim.dim_value != size:
                raise SourceError(f"{path}: source.inputs.{name}.shape[{i}] is {size}, the graph fixes "
                                  f"it to {dim.dim_value}")
            dim.Clear()
            dim.dim_value = size
    onnx.checker.check_model(model)


# -- 2. fold -----------------------------------------------------------------------------------------

def _static_shapes(model, path=None) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """(static shape, ONNX element type) of every tensor whose shape inference fixes (data_prop:
    shapes computed from constants too).

    ONNX's data propagation holds a shape-like tensor as one object per element: a graph that
    expands a constant to 2^28 elements and casts it takes it past 3.8 GB (``std::bad_alloc``), which
    the job's memory limit turns into a :class:`MemoryError`, named here."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except MemoryError as exc:
        raise ConversionError(f"{path}: ONNX shape inference ran out of memory propagating the graph's "
                              f"constant shapes ({type(exc).__name__}: {exc}): the graph computes a shape-like "
                              f"tensor too large to fold; refusing the graph") from None
    return _static_tensors(inferred.graph.input, inferred.graph.value_info, inferred.graph.output)


def _static_tensors(*infos) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """(shape, element type) of each value info (of each list given) whose shape is fully static."""
    shapes, elem_types = {}, {}
    for info in (i for group in infos for i in group):
        tensor = info.type.tensor_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[info.name] = tuple(d.dim_value for d in tensor.shape.dim)
            elem_types[info.name] = tensor.elem_type
    return shapes, elem_types


def _size(shape: tuple[int, ...], elem_type: int) -> tuple[tuple[int, ...], int]:
    """(shape, bytes) of a tensor (an unknown element type counts 8 bytes per element)."""
    return shape, int(np.prod([max(d, 0) for d in shape], dtype=object)) * _itemsize(elem_type)


def _evaluate(node, values: Mapping[str, np.ndarray], model) -> list[np.ndarray]:
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(values[n].dtype), None)
              for n in node.input if n]
    outputs = [helper.make_tensor_value_info(n, 0, None) for n in node.output]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    single = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return ReferenceEvaluator(single).run(None, {n: values[n] for n in node.input if n})


def _output_sizes(node, values: Mapping[str, np.ndarray], shapes, elem_types, model) -> list[tuple[tuple[int, ...], int] | None]:
    """(shape, bytes) of each output of ``node``, known before it runs, or None where ONNX's shape
    inference cannot tell: from the whole graph's inference, else from inferring ``node`` alone with
    its constant inputs as initializers (``ConstantOfShape``, ``Expand``, ``Range`` read their
    values)."""
    import onnx
    from onnx import helper, numpy_helper

    types: tuple[dict, dict] = ({}, {})
    if any(n and n not in shapes for n in node.output):
        inputs = [numpy_helper.from_array(np.asarray(values[n]), n) for n in dict.fromkeys(node.input) if n]
        outputs = [helper.make_empty_tensor_value_info(n) for n in node.output if n]
        graph = helper.make_graph([node], "size", [], outputs, initializer=inputs)
        single = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        try:
            inferred = onnx.shape_inference.infer_shapes(single, data_prop=True)
            types = _static_tensors(inferred.graph.output, inferred.graph.value_info)
        except Exception:  # onnx raises InferenceError, ValidationError, RuntimeError ...
            pass
    sizes = []
    for name in (n for n in node.output if n):
        if name in shapes:
            sizes.append(_size(shapes[name], elem_types.get(name, 0)))
        elif name in types[0]:
            sizes.append(_size(types[0][name], types[1].get(name, 0)))
        else:
            sizes.append(None)
    return sizes


def _check_budget(node, sizes, path) -> bool:
    """Whether ``node`` may be folded: every output's size known and within the budget. A known size
    over the budget is refused (:class:`ConversionError` naming the node), before anything runs."""
    for name, size in zip([n for n in node.output if n], sizes):
        if size is None:
            return False   # unknown before it runs: stays in the graph
        shape, nbytes = size
        if nbytes > FOLD_BUDGET_BYTES:
            raise ConversionError(f"{path}: {node.op_type} node '{node.name}' would fold to a constant "
                                  f"'{name}' of shape {list(shape)} ({_bytes(nbytes)}), more than the folding "
                                  f"budget of {_bytes(FOLD_BUDGET_BYTES)} per constant; refusing the graph")
    return True


def _bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _known_values(model, shapes, elem_types, path=None) -> dict[str, np.ndarray]:
    """Every value computable before the graph runs: initializers, constants, shapes of static
    tensors and what follows from them (small results only; a result over the folding budget is
    refused before it is computed, see :func:`_check_budget`)."""
    from onnx import numpy_helper

    known = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if any(True for _ in _subgraphs(node)):
            continue
        if node.op_type == "Shape" and node.input[0] in shapes and not node.attribute:
            known[node.output[0]] = np.array(shapes[node.input[0]], dtype=np.int64)
            continue
        if node.op_type == "Size" and node.input[0] in shapes:
            known[node.output[0]] = np.array(int(np.prod(shapes[node.input[0]])), dtype=np.int64)
            continue
        if not all(n in known for n in node.input if n):
            continue
        if sum(known[n].size for n in node.input if n) > MAX_FOLDED_ELEMENTS:
            continue
        if not _check_budget(node, _output_sizes(node, known, shapes, elem_types, model), path):
            continue
        for name, value in zip(node.output, _evaluate(node, known, model)):
            known[name] = np.asarray(value)
    return known


def _inline_if(model, index: int, condition: bool, path) -> str:
    """Replace the ``If`` at ``model.graph.node[index]`` by the nodes of the branch it takes."""
    from onnx import helper

    node = model.graph.node[index]
    branch_name = "then_branch" if condition else "else_branch"
    branch = next(a.g for a in node.attribute if a.name == branch_name)
    existing = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.initializer}
    clash = sorted({o for n in branch.node for o in n.output} & existing)
    if clash:
        raise ConversionError(f"{path}: inlining {node.op_type} node '{node.name}' would redefine {clash[:3]}")
    new_nodes = list(branch.node) + [
        helper.make_node("Identity", [out.name], [target], name=f"{node.name}/{branch_name}/{target}")
        for out, target in zip(branch.output, node.output)]
    model.graph.initializer.extend(branch.initializer)
    del model.graph.node[index]
    for offset, new in enumerate(new_nodes):
        model.graph.node.insert(index + offset, new)
    return branch_name


def _check_constant_sizes(model, path) -> None:
    """Refuse by name, before ONNX's data propagation runs, a node computed from constants alone
    whose output the plain shape inference already sizes over the folding budget (``Expand``,
    ``Tile``, ``Range`` of initializers): data propagation would materialise it first."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes, elem_types = _static_tensors(inferred.graph.value_info, inferred.graph.output)
    constant = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        if any(True for _ in _subgraphs(node)) or not all(n in constant for n in node.input if n):
            continue
        outputs = [n for n in node.output if n]
        _check_budget(node, [_size(shapes[n], elem_types.get(n, 0)) if n in shapes else None for n in outputs], path)
        constant.update(outputs)


def _itemsize(elem_type: int) -> int:
    from onnx import helper

    try:
        return helper.tensor_dtype_to_np_dtype(elem_type).itemsize if elem_type else 8
    except (KeyError, TypeError, ValueError):
        return 8


def fold_branches(model, path) -> list[dict]:
    """Inline every ``If`` whose condition is known once the inputs are bound; returns what was
    folded (node, branch taken), outermost first."""
    folded = []
    while True:
        _check_constant_sizes(model, path)
        shapes, elem_types = _static_shapes(model, path)
        known = _known_values(model, shapes, elem_types, path)
        for index, node in enumerate(model.graph.node):
            if node.op_type == "If" and node.input[0] in known:
                condition = bool(np.asarray(known[node.input[0]]).reshape(-1)[0])
                folded.append({"node": node.name, "branch": _inline_if(model, index, condition, path)})
                break
        else:
            return folded


# -- 3. prune ----------------------------------------------------------------------------------------

def prune(model) -> None:
    """Drop nodes and initializers no graph output depends on (the branches not taken, dead checks)."""
    needed = {o.name for o in model.graph.output}
    keep = []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(n for n in node.input if n)
            for sub in _subgraphs(node):
                needed.update(_outer_names(sub))
    keep.reverse()
    del model.graph.node[:]
    model.graph.node.extend(keep)
    initializers = [i for i in model.graph.initializer if i.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    del model.graph.value_info[:]


def _outer_names(graph) -> set[str]:
    """Names a subgraph reads from its enclosing scope (or that its own nodes read)."""
    names = set()
    for node in graph.node:
        names.update(n for n in node.input if n)
        for sub in _subgraphs(node):
            names |= _outer_names(sub)
    return names


def specialise(model, bindings: Mapping[str, Mapping[str, Any]], path) -> tuple[Any, list[dict]]:
    """A copy of ``model`` with its inputs bound, its decidable branches folded and dead nodes pruned."""
    import onnx

    model = copy.deepcopy(model)
    bind_inputs(model, bindings, path)
    folded = fold_branches(model, path)
    prune(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"{path}: the specialised graph is invalid: {str(exc).splitlines()[0]}") from exc
    return model, folded


# -- onnx2torch ----------------------------------------------------------------------------------------

def import_onnx2torch():
    """``onnx2torch``, imported without torchvision when it is absent: only its NonMaxSuppression and
    RoiAlign converters use torchvision, and :func:`check_convertible` refuses those ops by name
    before any converter runs, so the placeholder modules are never called."""
    if "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is None:
        placeholder = types.ModuleType("torchvision")
        placeholder.ops = types.ModuleType("torchvision.ops")

        def _absent(*args, **kwargs):
            raise ConversionError("torchvision is not installed (needed by onnx2torch for "
                                  f"{' and '.join(TORCHVISION_OPS)})")

        placeholder.ops.roi_align = placeholder.ops.nms = placeholder.ops.box_convert = _absent
        placeholder.kiln_placeholder = True
        sys.modules["torchvision"] = placeholder
        sys.modules["torchvision.ops"] = placeholder.ops
    try:
        import onnx2torch
    except ImportError as exc:
        raise ConversionError(f"ONNX sources need onnx2torch (pinned in pyproject.toml): {exc}") from exc
    from kiln.sources import onnx_converters

    onnx_converters.register()
    return onnx2torch


def unconverted(model) -> list[dict]:
    """Nodes of ``model`` (subgraphs included) with no onnx2torch converter at the model's opset."""
    from onnx import defs

    import_onnx2torch()
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription

    version = opset(model)
    torchvision_absent = getattr(sys.modules.get("torchvision"), "kiln_placeholder", False)
    missing = []

    def visit(graph):
        for node in graph.node:
            domain = node.domain or defs.ONNX_DOMAIN
            try:
                since = defs.get_schema(node.op_type, max_inclusive_version=version, domain=domain).since_version
            except (RuntimeError, defs.SchemaError):
                since = version
            key = OperationDescription(domain=domain, operation_type=node.op_type, version=since)
            if key not in _CONVERTER_REGISTRY or (torchvision_absent and node.op_type in TORCHVISION_OPS):
                missing.append({"op": node.op_type, "version": since, "node": node.name})
            for sub in _subgraphs(node):
                visit(sub)

    visit(model.graph)
    return missing


def check_convertible(model, path) -> None:
    """Raise :class:`ConversionError` naming the first op onnx2torch cannot convert (and the file)."""
    missing = unconverted(model)
    if not missing:
        return
    first = missing[0]
    ops = sorted({m["op"] for m in missing})
    why = {"If": " (its condition depends on values known only at run time: bind the inputs it reads "
                 "in source.inputs)",
           "Loop": " (a data-dependent loop: onnx2torch has no Loop converter)"}.get(first["op"], "")
    raise ConversionError(f"{path}: ONNX op '{first['op']}' (opset {first['version']}, node "
                          f"'{first['node']}') has no onnx2torch converter{why}; ops without one: "
                          f"{', '.join(ops)}")


def to_torch(model, path):
    """``model`` as a ``torch.fx.GraphModule`` (onnx2torch), after :func:`check_convertible`."""
    check_convertible(model, path)
    onnx2torch = import_onnx2torch()
    try:
        return onnx2torch.convert(model).eval()
    except Exception as exc:  # onnx2torch raises bare NotImplementedError/KeyError/ValueError
        raise ConversionError(f"{path}: onnx2torch could not convert the graph: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def save(model, path: str | Path) -> None:
    """Write ``model`` atomically with deterministic bytes."""
    from kiln.foundation.fsutil import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(model.SerializeToString(deterministic=True))


def session(path: str | Path):
    """An onnxruntime CPU session on ``path`` (one thread: reproducible timings, shared machine)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConversionError(f"ONNX parity needs onnxruntime (pinned in pyproject.toml): {exc}") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
