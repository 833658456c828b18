"""`metadata.json` of a compiled bundle: a one-element array describing the model.

Rules, derived from the three golden bundles (spec 6 and 7) and a few public Apple-compiled
bundles (spec 9, `coremlc` 3520/3600); anything not covered by that evidence is marked
"unverified" where it is decided:

* ``inputSchema``/``outputSchema`` come from the ModelDescription (not from the MIL program).
* ``availability`` follows from the specification version alone.
* ``mlProgramOperationTypeHistogram`` counts every operation except ``const``. Under an iOS15
  opset names are PascalCase (``SliceByIndex``). Under iOS16+ an operation Apple re-versioned is
  ``Ios{N}.{camelCase}`` with N the newest version <= the opset that re-versioned it
  (``Ios16.constexprAffineDequantize``, ``Ios17.add``); the rest stay PascalCase.
* ``storagePrecision`` lists the storage kinds of the weights (``const`` ops holding a blob file
  value, and ``constexpr_*`` ops): ``Float16``, ``Int8``, ``Palettized (6 bits)`` ...; one kind
  is printed alone, several as ``Mixed (A, B)`` sorted; no weights, no key.
* ``computePrecision`` lists the numeric data types of the inputs and outputs of every
  non-constant operation (bool and string do not count), in the same form.
* ``shortDescription``/``version``/``author``/``license`` appear only when set.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter

from kiln.coreml.proto import FeatureTypes_pb2, MIL_pb2, Model_pb2

from kiln.coreml.ops import walk_operations

DataType = MIL_pb2.DataType

METADATA_OUTPUT_VERSION = "3.0"

# spec version -> deployment versions; spec 6-9 observed in Apple bundles, 10 (iOS 26) unverified.
AVAILABILITY = {
    6: {"macOS": "12.0", "tvOS": "15.0", "visionOS": "1.0", "watchOS": "8.0", "iOS": "15.0", "macCatalyst": "15.0"},
    7: {"macOS": "13.0", "tvOS": "16.0", "visionOS": "1.0", "watchOS": "9.0", "iOS": "16.0", "macCatalyst": "16.0"},
    8: {"macOS": "14.0", "tvOS": "17.0", "visionOS": "1.0", "watchOS": "10.0", "iOS": "17.0", "macCatalyst": "17.0"},
    9: {"macOS": "15.0", "tvOS": "18.0", "visionOS": "2.0", "watchOS": "11.0", "iOS": "18.0", "macCatalyst": "18.0"},
    10: {"macOS": "26.0", "tvOS": "26.0", "visionOS": "26.0", "watchOS": "26.0", "iOS": "26.0", "macCatalyst": "26.0"},
}

OPSET_VERSION = {"CoreML5": 15, "CoreML6": 16, "CoreML7": 17, "CoreML8": 18, "CoreML9": 26}

_ELEMENTWISE_UNARY = {
    "abs", "acos", "asin", "atan", "atanh", "cast", "ceil", "clip", "cos", "cosh", "erf", "exp", "exp2",
    "floor", "inverse", "log", "logical_not", "round", "rsqrt", "sign", "sin", "sinh", "sqrt", "square",
    "tan", "tanh", "threshold",
}
_ELEMENTWISE_BINARY = {
    "add", "equal", "floor_div", "greater", "greater_equal", "less", "less_equal", "logical_and",
    "logical_or", "logical_xor", "maximum", "minimum", "mod", "mul", "not_equal", "pow", "real_div", "sub",
}
_ACTIVATIONS = {
    "clamped_relu", "elu", "gelu", "leaky_relu", "linear_activation", "prelu", "relu", "relu6", "scaled_tanh",
    "sigmoid", "sigmoid_hard", "silu", "softmax", "softplus", "softplus_parametric", "softsign", "thresholded_relu",
}
_COMPUTE = {
    "conv", "conv_transpose", "linear", "matmul", "einsum", "batch_norm", "instance_norm", "l2_norm",
    "layer_norm", "local_response_norm", "avg_pool", "max_pool", "l2_pool", "gru", "lstm", "rnn",
    "upsample_bilinear", "upsample_nearest_neighbor", "resize_bilinear", "resize_nearest_neighbor",
    "reduce_argmax", "reduce_argmin", "reduce_l1_norm", "reduce_l2_norm", "reduce_log_sum",
    "reduce_log_sum_exp", "reduce_max", "reduce_mean", "reduce_min", "reduce_prod", "reduce_sum",
    "reduce_sum_square", "cumsum",
}
# Operations with an Apple-internal version per opset. Observed in Apple output: iOS16 cast, sqrt,
# sigmoid, conv, add, relu, clip, lstm, pow, mul, sub, gelu, einsum, layer_norm, batch_norm,
# reduce_mean, gather, upsample_bilinear, constexpr_*; iOS17 add, mul, less, maximum, minimum, cast,
# gather; unversioned under iOS16: slice_by_index, transpose, squeeze, expand_dims, pad, concat,
# split. The rest of each set is inferred (same op family, or re-defined in coremltools' opset of
# that version) and unverified.
VERSIONED_OPS = {
    16: _ELEMENTWISE_UNARY | _ELEMENTWISE_BINARY | _ACTIVATIONS | _COMPUTE | {
        "constexpr_affine_dequantize", "constexpr_cast", "constexpr_lut_to_dense", "constexpr_sparse_to_dense",
        "crop_resize", "fill_like", "gather", "gather_along_axis", "gather_nd", "pixel_unshuffle", "resample",
        "reshape_like", "topk",
    },
    17: _ELEMENTWISE_BINARY | {
        "batch_norm", "cast", "clamped_relu", "clip", "conv", "conv_transpose", "crop_resize", "dequantize", "elu",
        "expand_dims", "gather", "gather_along_axis", "gather_nd", "gru", "instance_norm", "inverse", "l2_norm",
        "layer_norm", "leaky_relu", "linear", "linear_activation", "local_response_norm", "log", "lstm", "matmul",
        "non_maximum_suppression", "prelu", "quantize", "reduce_argmax", "reduce_argmin", "resample", "reshape",
        "reshape_like", "resize", "reverse", "reverse_sequence", "rnn", "rsqrt", "scaled_tanh", "scatter",
        "scatter_along_axis", "scatter_nd", "sigmoid_hard", "slice_by_index", "slice_by_size", "sliding_windows",
        "softplus_parametric", "squeeze", "thresholded_relu", "topk", "transpose",
    },
    18: {
        "constexpr_blockwise_shift_scale", "constexpr_cast", "constexpr_lut_to_dense", "constexpr_lut_to_sparse",
        "constexpr_sparse_blockwise_shift_scale", "constexpr_sparse_to_dense", "gru", "read_state",
        "scaled_dot_product_attention", "slice_update",
    },
}

MIL_DTYPE_NAMES = {
    DataType.FLOAT16: "Float16", DataType.FLOAT32: "Float32", DataType.FLOAT64: "Float64",
    DataType.BFLOAT16: "BFloat16", DataType.FLOAT8E4M3FN: "Float8E4M3FN", DataType.FLOAT8E5M2: "Float8E5M2",
    DataType.INT4: "Int4", DataType.INT8: "Int8", DataType.INT16: "Int16", DataType.INT32: "Int32",
    DataType.INT64: "Int64", DataType.UINT1: "UInt1", DataType.UINT2: "UInt2", DataType.UINT3: "UInt3",
    DataType.UINT4: "UInt4", DataType.UINT6: "UInt6", DataType.UINT8: "UInt8", DataType.UINT16: "UInt16",
    DataType.UINT32: "UInt32", DataType.UINT64: "UInt64",
}
ARRAY_DTYPE_NAMES = {
    FeatureTypes_pb2.ArrayFeatureType.FLOAT32: "Float32",
    FeatureTypes_pb2.ArrayFeatureType.FLOAT16: "Float16",
    FeatureTypes_pb2.ArrayFeatureType.DOUBLE: "Double",
    FeatureTypes_pb2.ArrayFeatureType.INT32: "Int32",
    FeatureTypes_pb2.ArrayFeatureType.INT8: "Int8",
}
COLOR_SPACE_NAMES = {  # unverified
    FeatureTypes_pb2.ImageFeatureType.GRAYSCALE: "Grayscale",
    FeatureTypes_pb2.ImageFeatureType.RGB: "RGB",
    FeatureTypes_pb2.ImageFeatureType.BGR: "BGR",
    FeatureTypes_pb2.ImageFeatureType.GRAYSCALE_FLOAT16: "Grayscale16Half",
}


def class_name(package_stem: str) -> str:
    """`generatedClassName`: the package's file name made a Swift/Objective-C identifier
    (``silero-vad-unified-v6.0.0`` -> ``silero_vad_unified_v6_0_0``)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", package_stem)
    return f"_{name}" if not name or name[0].isdigit() else name


def _pascal(op_type: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in op_type.split("_"))


def _camel(op_type: str) -> str:
    pascal = _pascal(op_type)
    return pascal[:1].lower() + pascal[1:]


def histogram_name(op_type: str, opset: str) -> str:
    opset_version = OPSET_VERSION.get(opset, 15)
    for version in sorted(VERSIONED_OPS, reverse=True):
        if version <= opset_version and op_type in VERSIONED_OPS[version]:
            return f"Ios{version}.{_camel(op_type)}"
    return _pascal(op_type)


def _mixed(kinds: set[str]) -> str | None:
    if not kinds:
        return None
    ordered = sorted(kinds)
    return ordered[0] if len(ordered) == 1 else f"Mixed ({', '.join(ordered)})"


def _tensor_dtype(value_type: MIL_pb2.ValueType) -> int | None:
    kind = value_type.WhichOneof("type")
    if kind == "tensorType":
        return value_type.tensorType.dataType
    if kind == "stateType":
        return _tensor_dtype(value_type.stateType.wrappedType)
    return None


def _lut_bits(op: MIL_pb2.Operation, types: dict[str, MIL_pb2.ValueType]) -> int | None:
    """Index width of a palettization: the sub-byte dtype of iOS18 indices, else log2(LUT size)."""
    def value_type(key):
        if key in op.attributes:
            return op.attributes[key].type
        if key in op.inputs and op.inputs[key].arguments:
            binding = op.inputs[key].arguments[0]
            return binding.value.type if binding.WhichOneof("binding") == "value" else types.get(binding.name)
        return None

    indices = value_type("indices")
    sub_byte_bits = {DataType.UINT1: 1, DataType.UINT2: 2, DataType.UINT3: 3, DataType.UINT4: 4, DataType.UINT6: 6}
    if indices is not None and _tensor_dtype(indices) in sub_byte_bits:
        return sub_byte_bits[_tensor_dtype(indices)]
    lut = value_type("lut")
    if lut is None or lut.WhichOneof("type") != "tensorType" or not lut.tensorType.dimensions:
        return None
    dims = lut.tensorType.dimensions
    # iOS16: lut is [2^n]; iOS18: [..., 2^n, vector_size]
    entries = dims[0] if len(dims) == 1 else dims[-2]
    if entries.WhichOneof("dimension") != "constant" or entries.constant.size < 1:
        return None
    return int(math.log2(entries.constant.size))


def _storage_kind(op: MIL_pb2.Operation, types: dict[str, MIL_pb2.ValueType]) -> str | None:
    if op.type == "const":
        value = op.attributes.get("val") if "val" in op.attributes else None
        if value is not None and value.WhichOneof("value") == "blobFileValue":
            return MIL_DTYPE_NAMES.get(_tensor_dtype(value.type))
        return None
    if not op.type.startswith("constexpr_"):
        return None
    if "lut" in op.type:
        bits = _lut_bits(op, types)
        return f"Palettized ({bits} bits)" if bits else "Palettized"
    if "sparse" in op.type:  # unverified name
        return "Sparse"
    for key in ("quantized_data", "data", "source_val"):
        if key in op.attributes:
            return MIL_DTYPE_NAMES.get(_tensor_dtype(op.attributes[key].type))
        if key in op.inputs and op.inputs[key].arguments:
            binding = op.inputs[key].arguments[0]
            bound = binding.value.type if binding.WhichOneof("binding") == "value" else types.get(binding.name)
            return MIL_DTYPE_NAMES.get(_tensor_dtype(bound)) if bound is not None else None
    return None


def _function_summary(function: MIL_pb2.Function) -> tuple[dict[str, int], str | None, str | None]:
    """(operation histogram, storagePrecision, computePrecision) of one function."""
    block = function.block_specializations[function.opset]
    types: dict[str, MIL_pb2.ValueType] = {named.name: named.type for named in function.inputs}
    histogram: Counter[str] = Counter()
    storage: set[str] = set()
    compute: set[str] = set()
    for op in walk_operations(block):
        for named in op.outputs:
            types[named.name] = named.type
        for nested in op.blocks:
            for named in nested.inputs:
                types[named.name] = named.type
        kind = _storage_kind(op, types)
        if kind:
            storage.add(kind)
        if op.type == "const":
            continue
        histogram[histogram_name(op.type, function.opset)] += 1
        if op.type.startswith("constexpr_"):
            continue
        used = [named.type for named in op.outputs]
        for argument in op.inputs.values():
            for binding in argument.arguments:
                if binding.WhichOneof("binding") == "name":
                    if binding.name in types:
                        used.append(types[binding.name])
                else:
                    used.append(binding.value.type)
        for value_type in used:
            name = MIL_DTYPE_NAMES.get(_tensor_dtype(value_type))
            if name:
                compute.add(name)
    return dict(histogram), _mixed(storage), _mixed(compute)


def _shape_text(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def feature_schema(feature: Model_pb2.FeatureDescription, *, state: bool = False) -> dict[str, str]:
    entry = {
        "name": feature.name,
        "shortDescription": feature.shortDescription,
        "isOptional": "1" if feature.type.isOptional else "0",
        "hasShapeFlexibility": "0",
    }
    feature_type = feature.type
    kind = feature_type.WhichOneof("Type")
    if kind == "stateType":  # unverified layout
        array = feature_type.stateType.arrayType
        data_type = ARRAY_DTYPE_NAMES.get(array.dataType, "Float32")
        shape = list(array.shape)
        entry.update(type="State", dataType=data_type, shape=_shape_text(shape),
                     formattedType=f"State ({data_type}{' ' if shape else ''}{' × '.join(map(str, shape))})")
        return entry
    if kind == "multiArrayType":
        array = feature_type.multiArrayType
        data_type = ARRAY_DTYPE_NAMES.get(array.dataType, "Float32")
        shape = list(array.shape)
        flexibility = array.WhichOneof("ShapeFlexibility")
        if not shape and flexibility == "enumeratedShapes" and array.enumeratedShapes.shapes:
            shape = list(array.enumeratedShapes.shapes[0].shape)
        entry.update(type="MultiArray", dataType=data_type, shape=_shape_text(shape),
                     formattedType=f"MultiArray ({data_type}{' ' if shape else ''}{' × '.join(map(str, shape))})")
        if flexibility == "shapeRange":
            ranges = [(r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges]
            entry["hasShapeFlexibility"] = "1"
            entry["shapeRange"] = "[" + ", ".join(f"[{lo}, {hi}]" for lo, hi in ranges) + "]"
            entry["shapeFlexibility"] = " × ".join(str(lo) if lo == hi else f"{lo}...{hi}" for lo, hi in ranges)
        elif flexibility == "enumeratedShapes":  # unverified layout
            entry["hasShapeFlexibility"] = "1"
            entry["shapeFlexibility"] = " | ".join(" × ".join(map(str, s.shape)) for s in array.enumeratedShapes.shapes)
        return entry
    # The remaining feature kinds are rare for ML Programs; their strings are unverified.
    if kind == "imageType":
        image = feature_type.imageType
        color = COLOR_SPACE_NAMES.get(image.colorSpace, "RGB")
        entry.update(type="Image", formattedType=f"Image ({color} {image.width} × {image.height})",
                     colorspace=color, width=str(image.width), height=str(image.height))
        return entry
    simple = {"int64Type": "Int64", "doubleType": "Double", "stringType": "String"}
    if kind in simple:
        entry.update(type=simple[kind], formattedType=simple[kind])
        return entry
    if kind == "dictionaryType":
        key = "String" if feature_type.dictionaryType.WhichOneof("KeyType") == "stringKeyType" else "Int64"
        entry.update(type="Dictionary", formattedType=f"Dictionary ({key} → Double)")
        return entry
    entry.update(type=kind or "Unknown", formattedType=kind or "Unknown")
    return entry


def build_metadata(model: Model_pb2.Model, *, generated_class_name: str) -> list[dict]:
    description = model.description
    program = model.mlProgram
    spec_version = model.specificationVersion
    default_function = description.defaultFunctionName or ("main" if "main" in program.functions else sorted(program.functions)[0])
    histogram, storage, compute = _function_summary(program.functions[default_function])

    info: dict = {}
    meta = description.metadata
    for key, value in (("shortDescription", meta.shortDescription), ("version", meta.versionString),
                       ("author", meta.author), ("license", meta.license)):
        if value:
            info[key] = value
    info["metadataOutputVersion"] = METADATA_OUTPUT_VERSION
    info["outputSchema"] = [feature_schema(f) for f in description.output]
    info["modelParameters"] = []
    info["specificationVersion"] = spec_version
    if storage:
        info["storagePrecision"] = storage
    info["mlProgramOperationTypeHistogram"] = histogram
    if compute:
        info["computePrecision"] = compute
    info["stateSchema"] = [feature_schema(f, state=True) for f in description.state]
    info["isUpdatable"] = "1" if model.isUpdatable else "0"
    info["availability"] = dict(AVAILABILITY.get(spec_version, AVAILABILITY[max(AVAILABILITY)]))
    info["modelType"] = {"name": "MLModelType_mlProgram"}
    info["inputSchema"] = [feature_schema(f) for f in description.input]
    info["userDefinedMetadata"] = dict(sorted(meta.userDefined.items()))
    if description.functions:  # multi-function models (spec 9+); layout unverified
        functions = []
        for function_description in description.functions:
            name = function_description.name
            f_hist, _, f_compute = _function_summary(program.functions[name]) if name in program.functions else ({}, None, None)
            functions.append({
                "name": name,
                "inputSchema": [feature_schema(f) for f in function_description.input],
                "outputSchema": [feature_schema(f) for f in function_description.output],
                "stateSchema": [feature_schema(f, state=True) for f in function_description.state],
                "mlProgramOperationTypeHistogram": f_hist,
                **({"computePrecision": f_compute} if f_compute else {}),
            })
        info["functions"] = functions
        info["defaultFunctionName"] = default_function
    info["generatedClassName"] = generated_class_name
    info["method"] = "predict"
    return [info]


def metadata_json_text(metadata: list[dict]) -> str:
    """Apple's layout (two-space indent, ``"key" : value``); key order is not significant."""
    return json.dumps(metadata, indent=2, ensure_ascii=False, separators=(",", " : "))
