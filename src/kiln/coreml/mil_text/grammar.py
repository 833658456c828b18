"""What the MIL text printer and parser share: the dialects, the opset names of a function
header, the BLOBFILE keys, the order keys are printed in, and a tensor type's element count."""

from __future__ import annotations

from kiln.coreml.proto import MIL_pb2

DIALECTS = ("1.0", "1.3")

# Protobuf opset names <-> the names in a function header.
OPSET_TEXT = {"CoreML5": "ios15", "CoreML6": "ios16", "CoreML7": "ios17", "CoreML8": "ios18", "CoreML9": "ios26"}
OPSET_FROM_TEXT = {text: opset for opset, text in OPSET_TEXT.items()}

BLOB_PATH_KEY = "path"
BLOB_OFFSET_KEY = "offset"


def byte_order(key: str) -> bytes:
    # Apple sorts with std::string comparison: byte order of the UTF-8 encoding.
    return key.encode("utf-8")


def element_count(tensor_type: MIL_pb2.TensorType) -> int | None:
    count = 1
    for dim in tensor_type.dimensions:
        if dim.WhichOneof("dimension") != "constant":
            return None
        count *= dim.constant.size
    return count
