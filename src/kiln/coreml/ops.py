"""Walking a MIL ``Program`` protobuf: its functions' blocks, every op (nested blocks of ``cond``,
``while_loop`` and ``scan`` included), and every ``BLOBFILE`` reference with the op that holds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

MODEL_PATH_PREFIX = "@model_path/"


def function_blocks(program) -> Iterator[tuple[str, str, object]]:
    """(function name, opset, block) of every block specialization, in name order."""
    for name in sorted(program.functions):
        function = program.functions[name]
        for opset in sorted(function.block_specializations):
            yield name, opset, function.block_specializations[opset]


def walk_operations(block) -> Iterator[object]:
    """Every operation of ``block`` and of its nested blocks, in program order (depth first)."""
    for op in block.operations:
        yield op
        for nested in op.blocks:
            yield from walk_operations(nested)


def op_label(op) -> str:
    """How errors name an op: its first output, else its type."""
    return op.outputs[0].name if op.outputs else op.type


def op_histogram(block) -> dict[str, int]:
    """Op type -> count over ``block`` and its nested blocks, most frequent first."""
    counts: dict[str, int] = {}
    for op in walk_operations(block):
        counts[op.type] = counts.get(op.type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class BlobReference:
    """One ``BLOBFILE(path, offset)`` in a program, with the type the program declares for it."""

    file_name: str  # "@model_path/weights/weight.bin"
    offset: int
    value_type: object  # MIL_pb2.ValueType of the value
    where: str  # "function 'main' (CoreML7), operation 'w'"


def _blob_values(value) -> Iterator[object]:
    kind = value.WhichOneof("value")
    if kind == "blobFileValue":
        yield value
    elif kind == "immediateValue":
        immediate = value.immediateValue
        inner = immediate.WhichOneof("value")
        if inner in ("list", "tuple"):
            for item in getattr(immediate, inner).values:
                yield from _blob_values(item)
        elif inner == "dictionary":
            for pair in immediate.dictionary.values:
                yield from _blob_values(pair.key)
                yield from _blob_values(pair.value)


def _op_values(op) -> Iterator[object]:
    for key in sorted(op.attributes):
        yield op.attributes[key]
    for key in sorted(op.inputs):
        for binding in op.inputs[key].arguments:
            if binding.WhichOneof("binding") == "value":
                yield binding.value


def blob_references(program) -> Iterator[BlobReference]:
    """Every blob reference of every function, op by op."""
    for name, opset, block in function_blocks(program):
        for op in walk_operations(block):
            where = f"function '{name}' ({opset}), operation '{op_label(op)}'"
            for value in _op_values(op):
                for blob in _blob_values(value):
                    ref = blob.blobFileValue
                    yield BlobReference(ref.fileName, int(ref.offset), blob.type, where)
