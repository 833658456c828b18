"""The executor's value model: MIL data types, their numpy storage, and precision modes.

Every MIL tensor is held as a numpy array. Floating point tensors of any MIL width (fp16, bf16,
fp8, fp32) are stored as ``float32``; in ``fp16`` precision mode an op output declared ``fp16`` is
rounded through IEEE half precision, emulating Core ML's fp16 storage. Integer types keep their
numpy type (sub-byte types unpacked to ``int8``/``uint8``), ``bool`` is ``bool`` and strings are
Python ``str`` (scalars) or numpy unicode arrays.

The data type table itself (names, proto codes, storage) and the narrow-float and sub-byte codecs
are facts of the file format and live in :mod:`kiln.coreml.dtypes`; they are re-exported here for
the op implementations.
"""

from __future__ import annotations

import numpy as np

from kiln.coreml.dtypes import (  # noqa: F401  (re-exported for kiln.mil.ops)
    BY_NAME,
    BY_PROTO,
    FP8E4M3FN_TABLE,
    FP8E5M2_TABLE,
    SUB_BYTE,
    MilDType,
    bf16_bits_to_float32,
    dtype_from_name,
    numpy_for_dtype_string,
    unpack_bits,
)

from .errors import PrecisionError

# Precision modes.
FP32 = "fp32"
FP16 = "fp16"
PRECISIONS = (FP32, FP16)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    return precision


# --- rounding to narrow float formats (fp16 precision mode, and bf16 / fp8 constants) ---------


# From this many elements up, fp16 rounding runs on torch: numpy converts float32 <-> float16 in
# software (~11 ns an element both ways), torch with the CPU's F16C instructions (~10x faster);
# below it torch's per-call overhead dominates. Both round to nearest even, overflow to inf.
TORCH_ROUND_MIN = 4096


def torch_can_share(a, min_size: int = 0) -> bool:
    """Whether ``a`` is a float32 array of at least ``min_size`` elements that torch can wrap
    without a copy (C-contiguous, writeable)."""
    return (type(a) is np.ndarray and a.dtype == np.float32 and a.size >= min_size
            and a.flags.c_contiguous and a.flags.writeable)


# Rounding into a new array converts this many elements at a time: ``.half().float()`` on a whole
# tensor allocates two full-size temporaries and pays their page faults (21 ms for 8M elements);
# chunks through a small cache-resident half buffer into the result took 3 ms, same bits.
ROUND_CHUNK = 1 << 16


def round_to_fp16(a: np.ndarray) -> np.ndarray:
    """Round float values to the nearest IEEE half and widen back to float32 (a new array)."""
    if torch_can_share(a, TORCH_ROUND_MIN):
        import torch

        out = np.empty_like(a)
        source, target = torch.from_numpy(a).view(-1), torch.from_numpy(out).view(-1)
        for start in range(0, source.numel(), ROUND_CHUNK):
            target[start:start + ROUND_CHUNK].copy_(source[start:start + ROUND_CHUNK].half())
        return out
    return np.asarray(a).astype(np.float16).astype(np.float32)


# In-place rounding converts this many elements at a time: a bounded float16 temporary (2 MB)
# instead of one as large as the tensor.
ROUND_IN_PLACE_CHUNK = 1 << 20


def round_to_fp16_in_place(a: np.ndarray) -> np.ndarray:
    """:func:`round_to_fp16` overwriting ``a`` when it is a C-contiguous, writeable float32 array
    (the caller must own it); other inputs are rounded into a new array."""
    if not torch_can_share(a):
        return round_to_fp16(a)
    if a.size < TORCH_ROUND_MIN:
        a[...] = a.astype(np.float16)
        return a
    import torch

    flat = torch.from_numpy(a).view(-1)
    for start in range(0, flat.numel(), ROUND_IN_PLACE_CHUNK):
        part = flat[start:start + ROUND_IN_PLACE_CHUNK]
        part.copy_(part.half())
    return a


def round_to_bf16(a: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (round-to-nearest-even) and widen back to float32."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    nan = np.isnan(a)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    rounded = ((bits + rounding) & np.uint32(0xFFFF0000)).view(np.float32)
    return np.where(nan, np.float32(np.nan), rounded).astype(np.float32)
