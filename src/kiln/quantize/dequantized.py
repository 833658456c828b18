"""Is a quantized variant's score the quantization's or the executor's?

The quantize job scores a variant by kiln's execution of it against kiln's execution of the float
package. A low score could come from the compression or from kiln decoding or executing the
``constexpr_*`` ops wrongly. This check separates the two: it reads the weights kiln decodes from
the variant's ``constexpr_*`` ops (the values the executor's constant pool holds), writes them
into the component's traced program (the prepare job's ``.pt``) in place of the float weights, runs
torch on the same validation inputs and compares kiln's execution of the variant with it, output
by output, within the component's parity tolerances.

Which torch tensor a compressed weight replaces is found by value: every compute op that consumes
a ``constexpr_*`` output is the same op in the float base package, where it consumes a ``const``;
the torch parameter or buffer equal to that const (after the export's fp16 rounding, as stored or
transposed) is the one replaced. Every other const the program shares with a torch tensor is
written too (fp16-rounded, as the package stores it), so torch runs exactly the weights kiln runs.
A weight no torch tensor equals (folded by the converter, e.g. conv + batch norm) leaves the
check ``not_checked``, naming it: a partial substitution would compare different networks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from kiln.validate.metrics import Tolerance, compare

#: the verdicts, in the summary's words
EQUAL = "equal"            # kiln on the variant == torch on the dequantized weights, within tolerance
DIFFERENT = "different"    # the executor disagrees with torch on the same weights
NOT_CHECKED = "not_checked"


def _block(model):
    return model.block()


def _weight_bindings(block) -> dict[tuple[str, str], str]:
    """``(consuming op's first output, input name) -> bound value name`` for every named binding of
    a non-constant op."""
    bindings = {}
    for op in block.operations:
        if op.type == "const" or op.type.startswith("constexpr_") or not len(op.outputs):
            continue
        # sorted: a protobuf map iterates in an order that varies between processes, and the
        # record lists the weights in this order
        for param, argument in sorted(op.inputs.items()):
            for i, binding in enumerate(argument.arguments):
                if binding.WhichOneof("binding") == "name":
                    bindings[(op.outputs[0].name, f"{param}[{i}]")] = binding.name
    return bindings


def _constants(model, block) -> dict[str, np.ndarray]:
    """Every const/constexpr output of the main function as kiln's constant pool holds it (decoded
    by the executor's own ``constexpr_*`` kernels)."""
    model.plan("fp32")
    values = {}
    for op in block.operations:
        if op.type == "const" or op.type.startswith("constexpr_"):
            pooled = model.constants.get(model.default_function, op.outputs[0].name)
            if pooled is None:
                continue
            for out, value in zip(op.outputs, pooled):
                if isinstance(value, np.ndarray):
                    values[out.name] = value
    return values


def weight_pairs(base_package: Path, quantized_package: Path) -> list[dict]:
    """For each weight a compute op of the variant reads from a ``constexpr_*`` op: the float
    const it replaced (from ``base_package``) and the dequantized value kiln decodes."""
    from kiln.mil import load_model

    base, quantized = load_model(base_package), load_model(quantized_package)
    base_block, q_block = _block(base), _block(quantized)
    producers = {out.name: op.type for op in q_block.operations for out in op.outputs}
    base_values, q_values = _constants(base, base_block), _constants(quantized, q_block)
    base_bindings = _weight_bindings(base_block)
    pairs, seen = [], set()
    for key, name in _weight_bindings(q_block).items():
        if name not in q_values:
            continue
        float_name = base_bindings.get(key)
        if float_name is None or float_name not in base_values or name in seen:
            continue
        if base_values[float_name].dtype.kind != "f":   # strides, pads, axes: not weights
            continue
        seen.add(name)
        pairs.append({"const": float_name, "op": producers[name], "compressed": producers[name].startswith("constexpr_"),
                      "float": base_values[float_name], "dequantized": q_values[name]})
    return pairs


def _match(tensor: np.ndarray, const: np.ndarray, stored_forms: dict | None = None) -> str | None:
    """How ``const`` (as the package stores it) is ``tensor`` (fp32 from torch): ``"same"`` (up to a
    reshape), ``"transposed"`` (2-D), or None. ``stored_forms``: a cache of ``tensor``'s stored
    forms by dtype (one per tensor, so the conversions are made once, not once per const)."""
    if tensor.size != const.size:
        return None
    if stored_forms is None:
        stored_forms = {}
    forms = stored_forms.get(const.dtype)
    if forms is None:
        # an fp16 export stores fp16-rounded weights; kiln's pool widens small ones back to float32
        # (an fp16 const has one stored form: no second copy of a 600M-parameter encoder's weights)
        as_stored = tensor.astype(const.dtype, copy=False)
        forms = stored_forms[const.dtype] = ((as_stored,) if const.dtype == np.float16 else
                                             (as_stored, tensor.astype(np.float16).astype(const.dtype)))
    flat = const.reshape(-1)
    probe = _probe(flat.size)
    transposable = tensor.ndim == 2 and const.ndim == 2 and tensor.shape == const.shape[::-1]
    if transposable:
        rows, cols = np.unravel_index(probe, const.shape)
    for stored in forms:
        # a few elements first: equal arrays are equal there (most candidates differ at once; a
        # conformer has dozens of same-sized weights, each a candidate for every const)
        if np.array_equal(stored.reshape(-1)[probe], flat[probe]) and np.array_equal(stored.reshape(-1), flat):
            return "same"
        if transposable and np.array_equal(stored[cols, rows], flat[probe]) and np.array_equal(stored.T, const):
            return "transposed"
    return None


def _probe(size: int) -> np.ndarray:
    """Up to 8 evenly spaced element indices of a flat array of ``size`` elements."""
    return np.unique(np.linspace(0, size - 1, min(size, 8)).astype(np.intp))


def substitute(module, pairs: Sequence[dict]) -> tuple[list[str], list[str]]:
    """Write each pair's dequantized value into the torch tensor of ``module`` (a traced program)
    equal to its float const. Returns (the torch names replaced, the compressed consts no torch
    tensor equals)."""
    import torch

    tensors = {**dict(module.named_buffers()), **dict(module.named_parameters())}
    as_numpy = {n: t.detach().cpu().numpy() for n, t in tensors.items() if t.is_floating_point()}
    forms: dict[str, dict] = {n: {} for n in as_numpy}   # each tensor's stored forms (see _match)
    replaced, unmapped = [], []
    for pair in pairs:
        found = False
        for name, value in as_numpy.items():
            how = _match(value, pair["float"], forms[name])
            if how is None:
                continue
            new = pair["dequantized"].astype(np.float32)
            new = new.T if how == "transposed" else new.reshape(value.shape)
            with torch.no_grad():
                tensors[name].copy_(torch.tensor(new))   # (ascontiguousarray would make a 0-d value 1-d)
            forms[name].clear()   # as_numpy[name] shares the tensor's memory: its stored forms changed
            replaced.append(name)
            found = True
        if not found and pair["compressed"]:
            unmapped.append(pair["const"])
    return sorted(set(replaced)), unmapped


def check(spec, component, reference, program: Path, base_package: Path, quantized_package: Path,
          kiln_steps: list[dict]) -> dict:
    """kiln's execution of the variant (``kiln_steps``, fp32 mode, over ``reference``'s feeds) vs
    torch running ``program`` with the variant's dequantized weights, per output."""
    import torch

    from kiln.family.spec import stream
    from kiln.validate.backends import torch_backend
    from kiln.validate.run import stack

    started = time.perf_counter()
    pairs = weight_pairs(base_package, quantized_package)
    compressed = [p for p in pairs if p["compressed"]]
    module = torch.jit.load(str(program), map_location="cpu").eval()
    replaced, unmapped = substitute(module, pairs)
    record: dict = {"program": str(program), "compressed_weights": len(compressed),
                    "torch_tensors_replaced": replaced}
    if not compressed or unmapped:
        record.update(verdict=NOT_CHECKED, reason=(
            "no weight is read from a constexpr op" if not compressed else
            f"no tensor of the traced program equals the float weight(s) {unmapped} (folded by the "
            "converter): torch cannot run the same weights"))
        record["seconds"] = round(time.perf_counter() - started, 3)
        return record
    torch_steps = stream(torch_backend(module, component).predict, spec, reference.feeds, reference.initial,
                         component)
    outputs = {}
    for out in component.outputs:
        tol = Tolerance(**{k: v for k, v in component.validate.tolerance(out.name).items()
                           if k in ("atol", "rtol", "min_psnr_db", "min_agreement")})
        result = compare(stack(torch_steps, out.name), stack(kiln_steps, out.name), tol)
        outputs[out.name] = {k: result[k] for k in ("max_abs", "match", "atol", "rtol") if k in result}
        if "problem" in result:
            outputs[out.name]["problem"] = result["problem"]
        if "agreement" in result:
            outputs[out.name]["agreement"] = result["agreement"]
    record["outputs"] = outputs
    record["verdict"] = EQUAL if all(o["match"] for o in outputs.values()) else DIFFERENT
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def describe(record: Mapping) -> str:
    """One line for logs and tables."""
    if record["verdict"] == NOT_CHECKED:
        return f"not checked: {record['reason']}"
    worst = ", ".join(f"{name} {o['max_abs']:.3g}" if o.get("max_abs") is not None else f"{name} n/a"
                      for name, o in record["outputs"].items())
    return f"{record['verdict']} (max |kiln - dequantized torch|: {worst})"
