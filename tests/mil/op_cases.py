"""kiln's own cases for the op types no case of coremltools' suite executes on kiln.

Each case builds a small ML Program with coremltools' builder at every opset that defines the op,
runs it on kiln's executor, and compares with values worked out by hand from what the op's docstring
in coremltools (``converters/mil/mil/ops/defs/iOS15..iOS17``, the MIL spec) says; ``spec`` quotes the
words each expectation follows. Where the spec leaves something open (the padding rows of
``non_maximum_suppression``), the expected element is NaN (-999 for integers) and only the shape is
checked there.

``python -m tests.mil.op_cases --out src/kiln/mil/kiln_op_cases.json`` runs every case and writes the
op types each opset's passing cases executed (read by ``kiln ops --coverage`` beside the conformance
coverage); ``tests/mil/test_op_cases.py`` runs the cases and checks the file still says what they do.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

OPSETS = ("iOS15", "iOS16", "iOS17", "iOS18")
_counter = itertools.count()


@dataclass(frozen=True)
class OpCase:
    name: str
    op: str
    opsets: tuple[str, ...]
    spec: str                       # the docstring's words the expectation follows
    build: Callable                 # placeholders -> output var(s)
    inputs: dict[str, np.ndarray]
    expected: list                  # per output: an array, a value (classify) or None (unspecified)
    precisions: tuple[str, ...] = ("fp32", "fp16")
    class_labels: list | None = None            # a classifier (ct.ClassifierConfig) for ``classify``
    edit: Callable | None = None                # edits the saved program's protobuf (see _const_symbolic)

    def case_id(self, opset: str, precision: str) -> str:
        return f"{self.name}[{opset}-{precision}]"


def _mb():
    from coremltools.converters.mil import Builder as mb

    return mb


def _bools(pf, qf=None):
    """Core ML inputs have no bool: the cases feed 0/1 floats, cast to bool inside."""
    mb = _mb()
    return [mb.cast(x=v, dtype="bool") for v in (pf, qf) if v is not None]


P = np.array([[1, 1, 0, 0]], np.float32)
Q = np.array([[1, 0, 1, 0]], np.float32)
COLUMN = np.array([[1], [0]], np.float32)       # broadcasts against a [1, 4] row


def _logical(op):
    def build(pf, qf):
        p, q = _bools(pf, qf)
        return getattr(_mb(), op)(x=p, y=q)
    return build


def _logical_not(pf):
    (p,) = _bools(pf)
    return _mb().logical_not(x=p)


# non_maximum_suppression: four center-size boxes (x, y, width, height), one class
#   box 0: (0, 0, 2, 2) score 0.9
#   box 1: (0.1, 0, 2, 2) score 0.8 -> overlaps box 0 by 1.9 x 2 = 3.8 of a union 4 + 4 - 3.8 = 4.2:
#          IoU 0.905 > 0.5, suppressed
#   box 2: (5, 5, 2, 2) score 0.7 -> no overlap, kept
#   box 3: (10, 10, 2, 2) score 0.05 -> below score_threshold 0.1 (iOS15/16), rejected
BOXES = np.array([[[0, 0, 2, 2], [0.1, 0, 2, 2], [5, 5, 2, 2], [10, 10, 2, 2]]], np.float32)
SCORES = np.array([[[0.9], [0.8], [0.7], [0.05]]], np.float32)
# two classes: box 1 is class 1 (its larger score), the others class 0
SCORES_2 = np.array([[[0.9, 0.1], [0.1, 0.8], [0.7, 0.0], [0.05, 0.0]]], np.float32)


def _nms15(boxes, scores, per_class=False):
    return list(_mb().non_maximum_suppression(boxes=boxes, scores=scores, iou_threshold=0.5, score_threshold=0.1,
                                              max_boxes=3, per_class_suppression=per_class))


def _nms17(boxes, scores):
    return list(_mb().non_maximum_suppression(boxes=boxes, scores=scores, iou_threshold=0.5, max_boxes=3))


def _const_symbolic_program(x):
    mb = _mb()
    return mb.add(x=x, y=mb._const_symbolic(val=np.array([[10.0, 20.0]], np.float32)))


def _give_const_symbolic_its_value(model) -> None:
    """coremltools writes ``_const_symbolic`` with no value at all (neither input nor attribute: its
    serializer handles only ``const``). Written as a ``const`` is, with a ``val`` attribute, the op is
    what its definition says: ``class _const_symbolic(const)``, a const."""
    from kiln.coreml.proto import MIL_pb2

    main = model.mlProgram.functions["main"]
    op = next(o for o in main.block_specializations[main.opset].operations if o.type == "_const_symbolic")
    val = MIL_pb2.Value()
    val.type.tensorType.dataType = MIL_pb2.FLOAT32
    val.type.tensorType.rank = 2
    for size in (1, 2):
        val.type.tensorType.dimensions.add().constant.size = size
    val.immediateValue.tensor.floats.values.extend([10.0, 20.0])
    op.attributes["val"].CopyFrom(val)


CASES = (
    OpCase("ceil", "ceil", OPSETS, "Return the ceil values of the input x, element-wise",
           lambda x: _mb().ceil(x=x),
           {"x": np.array([[-1.5, -0.5, 0.0, 0.25, 1.0, 2.75]], np.float32)},
           [np.array([[-1.0, -0.0, 0.0, 1.0, 1.0, 3.0]], np.float32)]),
    OpCase("logical_and", "logical_and", OPSETS, "Return the truth value of x AND y element-wise with broadcasting",
           _logical("logical_and"), {"pf": P, "qf": Q}, [np.array([[True, False, False, False]])]),
    OpCase("logical_and_broadcast", "logical_and", OPSETS, "x AND y element-wise with broadcasting",
           _logical("logical_and"), {"pf": P, "qf": COLUMN},
           [np.array([[True, True, False, False], [False, False, False, False]])]),
    OpCase("logical_or", "logical_or", OPSETS, "Return the truth value of x OR y element-wise with broadcasting",
           _logical("logical_or"), {"pf": P, "qf": Q}, [np.array([[True, True, True, False]])]),
    OpCase("logical_xor", "logical_xor", OPSETS, "Return the truth value of x XOR y element-wise with broadcasting",
           _logical("logical_xor"), {"pf": P, "qf": Q}, [np.array([[False, True, True, False]])]),
    OpCase("logical_not", "logical_not", OPSETS, "Return the value of NOT x element-wise",
           _logical_not, {"pf": P}, [np.array([[False, False, True, True]])]),
    # W_float = W_quantized * scale + bias: uint8 [2, 4] * 0.5 - 1 = [0, 1], so y[i] = x[i + 1]
    OpCase("conv_quantized_linear", "conv_quantized", OPSETS,
           "W_float = W_quantized * scale + bias (quantization_type linear); otherwise a conv",
           lambda x: _mb().conv_quantized(x=x, weight=np.array([[[2, 4]]], np.uint8), quantization_type="linear",
                                          quant_scale=np.float32(0.5), quant_bias=np.float32(-1.0)),
           {"x": np.array([[[1.0, 2.0, 3.0, 4.0]]], np.float32)},
           [np.array([[[2.0, 3.0, 4.0]]], np.float32)]),
    # the predicted class label and the class -> probability dictionary
    OpCase("classify_strings", "classify", OPSETS,
           "the predicted class label and the output probability dictionary (ClassT str)",
           lambda x: _mb().softmax(x=x, axis=-1), {"x": np.log(np.array([[0.1, 0.7, 0.2]], np.float32))},
           ["dog", {"cat": 0.1, "dog": 0.7, "bird": 0.2}], precisions=("fp32",),
           class_labels=["cat", "dog", "bird"]),
    OpCase("classify_ints", "classify", OPSETS,
           "the predicted class label and the output probability dictionary (ClassT i64)",
           lambda x: _mb().softmax(x=x, axis=-1), {"x": np.log(np.array([[0.5, 0.2, 0.3]], np.float32))},
           [10, {10: 0.5, 20: 0.2, 30: 0.3}], precisions=("fp32",), class_labels=[10, 20, 30]),
    # boxes in descending score order, overlapping ones (IoU > iou_threshold) removed, scores below
    # score_threshold rejected first, padded up to max_boxes (the padding's values are not specified)
    OpCase("non_maximum_suppression", "non_maximum_suppression", ("iOS15", "iOS16"),
           "selects boxes in descending order of score, removes boxes with IoU > iou_threshold with a "
           "selected box; boxes with scores below score_threshold are rejected; padded up to max_boxes",
           _nms15, {"boxes": BOXES, "scores": SCORES},
           [np.array([[BOXES[0, 0], BOXES[0, 2], np.full(4, np.nan)]], np.float32),
            np.array([[[0.9], [0.7], [np.nan]]], np.float32),
            np.array([[0, 2, -999]], np.int32), np.array([2], np.int32)]),
    OpCase("non_maximum_suppression_per_class", "non_maximum_suppression", ("iOS15", "iOS16"),
           "if per_class_suppression, suppression is performed independently within boxes of each class",
           lambda boxes, scores: _nms15(boxes, scores, per_class=True), {"boxes": BOXES, "scores": SCORES_2},
           [np.array([[BOXES[0, 0], BOXES[0, 1], BOXES[0, 2]]], np.float32), SCORES_2[:, :3],
            np.array([[0, 1, 2]], np.int32), np.array([3], np.int32)]),
    # iOS17: boxes [n, 4, B], scores [n, K, B], no score_threshold (box 3 is kept), no count output
    OpCase("non_maximum_suppression_ios17", "non_maximum_suppression", ("iOS17", "iOS18"),
           "iOS17: score_threshold removed; boxes and scores have the number of boxes last",
           _nms17, {"boxes": BOXES.transpose(0, 2, 1).copy(), "scores": SCORES.transpose(0, 2, 1).copy()},
           [BOXES[:, [0, 2, 3]].transpose(0, 2, 1), SCORES[:, [0, 2, 3]].transpose(0, 2, 1),
            np.array([[0, 2, 3]], np.int32)]),
    # iOS15's conformance cases of crop_resize all use the box outside the image (a known disagreement
    # with Apple's runtime, kiln.mil.coverage): a box inside it, ALIGN_CORNERS (grid points from the
    # box's start to its end), normalized coordinates scaled by H - 1 = W - 1 = 3, on the ramp 1..16
    # (image 0) and 101..116 (image 1): rows 0 and 3, columns 1 and 3 -> 2, 4, 14, 16. A [N,1,4,1,1]
    # roi crops every image of the batch; a [N,1,5,1,1] roi the one its first element names (with a
    # batch of 1 here: for a larger batch coremltools' type inference declares [N, B, ...] where its
    # docstring says [N, 1, ...])
    OpCase("crop_resize_ios15", "crop_resize", ("iOS15",),
           "normalized coordinates: scaling is based on (H_in - 1) and (W_in - 1); ALIGN_CORNERS: "
           "spacing = (Xin - 1) / (Xout - 1); a [N,1,4,1,1] roi: resized images for all B input images",
           lambda x: _mb().crop_resize(x=x, roi=np.array([0, 1 / 3, 1, 1], np.float32).reshape(1, 1, 4, 1, 1),
                                       target_height=2, target_width=2, normalized_coordinates=True,
                                       sampling_mode="ALIGN_CORNERS"),
           {"x": np.stack([np.arange(1, 17, dtype=np.float32), np.arange(101, 117, dtype=np.float32)]).reshape(2, 1, 4, 4)},
           [np.array([2, 4, 14, 16, 102, 104, 114, 116], np.float32).reshape(1, 2, 1, 2, 2)]),
    OpCase("crop_resize_ios15_indexed", "crop_resize", ("iOS15",),
           "a [N,1,5,1,1] roi: the first element is the batch index; one crop per box, [N, 1, C, h, w]",
           lambda x: _mb().crop_resize(x=x, roi=np.array([[0, 0, 1 / 3, 1, 1], [0, 0, 0, 2 / 3, 2 / 3]],
                                                         np.float32).reshape(2, 1, 5, 1, 1),
                                       target_height=2, target_width=2, normalized_coordinates=True,
                                       sampling_mode="ALIGN_CORNERS"),
           {"x": np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)},
           # box 2: rows and columns 0 and 2 -> 1, 3, 9, 11
           [np.array([2, 4, 14, 16, 1, 3, 9, 11], np.float32).reshape(2, 1, 1, 2, 2)]),
    OpCase("_const_symbolic", "_const_symbolic", OPSETS,
           "class _const_symbolic(const): a const (that may also hold a symbolic value)",
           _const_symbolic_program, {"x": np.array([[1.0, 2.0]], np.float32)},
           [np.array([[11.0, 22.0]], np.float32)], edit=_give_const_symbolic_its_value),
)


def save_case(case: OpCase, opset: str, out_dir: Path) -> Path:
    """The case's program as an ``.mlpackage`` at ``opset`` (no graph pass: the op reaches the file)."""
    import coremltools as ct
    from coremltools.converters.mil.mil import types

    mb = _mb()
    target = getattr(ct.target, opset)
    names = list(case.inputs)
    specs = [mb.TensorSpec(shape=v.shape, dtype=types.numpy_type_to_builtin_type(v.dtype)) for v in case.inputs.values()]
    source = f"def prog({', '.join(names)}):\n    return build({', '.join(f'{n}={n}' for n in names)})\n"
    namespace = {"build": case.build}
    exec(source, namespace)
    prog = mb.program(input_specs=specs, opset_version=target)(namespace["prog"])
    options = {"classifier_config": ct.ClassifierConfig(case.class_labels)} if case.class_labels else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                           compute_precision=ct.precision.FLOAT32, pass_pipeline=ct.PassPipeline.EMPTY, **options)
    path = out_dir / f"{case.name}_{opset}_{next(_counter)}.mlpackage"
    model.save(str(path))
    if case.edit is not None:
        spec_file = path / "Data" / "com.apple.CoreML" / "model.mlmodel"
        from kiln.coreml.proto import Model_pb2

        spec = Model_pb2.Model()
        spec.ParseFromString(spec_file.read_bytes())
        case.edit(spec)
        spec_file.write_bytes(spec.SerializeToString())
    return path


_SAVED: dict[tuple[str, str], Path] = {}   # (case, opset) -> package: both precisions run one file


def run_case(case: OpCase, opset: str, precision: str, out_dir: Path) -> tuple[list, set[str]]:
    """kiln's outputs (in program output order) and the op types of the program it ran."""
    from kiln.mil import load_model

    key = (case.name, opset)
    if key not in _SAVED or not _SAVED[key].exists():
        _SAVED[key] = save_case(case, opset, out_dir)
    model = load_model(_SAVED[key])
    plan = model.plan(precision)
    result = plan.run(case.inputs)
    return [result[spec.name] for spec in plan.outputs], set(model.op_histogram())


def mismatches(case: OpCase, precision: str, outputs: list) -> list[str]:
    """What differs from the case's expectation (empty: it holds). fp16 runs are held to fp16's
    rounding of the expected values (every expected value here is exact in fp16)."""
    problems = []
    if len(outputs) != len(case.expected):
        return [f"{len(outputs)} outputs, expected {len(case.expected)}"]
    for i, (got, want) in enumerate(zip(outputs, case.expected)):
        if isinstance(want, dict):
            got = {k.item() if hasattr(k, "item") else k: float(v) for k, v in dict(got).items()}
            if set(got) != set(want) or any(abs(got[k] - want[k]) > 1e-6 for k in want):
                problems.append(f"output {i}: {got} != {want}")
            continue
        if not isinstance(want, np.ndarray):
            got_value = got.item() if isinstance(got, np.ndarray) else got
            if got_value != want:
                problems.append(f"output {i}: {got_value!r} != {want!r}")
            continue
        got = np.asarray(got)
        if got.shape != want.shape:
            problems.append(f"output {i}: shape {list(got.shape)} != {list(want.shape)}")
            continue
        specified = ~np.isnan(want) if want.dtype.kind == "f" else (want != -999)
        tol = 1e-3 if precision == "fp16" else 1e-6
        if want.dtype == bool:
            ok = np.array_equal(got.astype(bool), want)
        else:
            ok = np.allclose(got[specified].astype(np.float64), want[specified].astype(np.float64), atol=tol, rtol=tol)
        if not ok:
            problems.append(f"output {i}: {got.tolist()} != {want.tolist()}")
    return problems


def coverage(out_dir: Path) -> dict:
    """Run every case; per opset, each op type a passing case executed on kiln, with its case id."""
    tested: dict[str, dict[str, str]] = {}
    for case in CASES:
        for opset in case.opsets:
            for precision in case.precisions:
                outputs, ops = run_case(case, opset, precision, out_dir)
                if mismatches(case, precision, outputs):
                    continue
                for op in sorted(ops):
                    tested.setdefault(opset, {}).setdefault(op, case.case_id(opset, precision))
    return {"source": "tests/mil/op_cases.py run by `python -m tests.mil.op_cases --out src/kiln/mil/kiln_op_cases.json`",
            "tested": {opset: dict(sorted(ops.items())) for opset, ops in sorted(tested.items())}}


def main(argv=None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m tests.mil.op_cases", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from kiln.foundation.fsutil import write_json

    with tempfile.TemporaryDirectory() as tmp:
        result = coverage(Path(tmp))
    write_json(args.out, result)
    print(f"{args.out}: " + ", ".join(f"{o} {len(ops)} ops" for o, ops in result["tested"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
