"""Bounding a job's memory: refuse up front what cannot fit, and cap what runs away.

``resources.mem_mb`` tells Snakemake how much a job reserves; on its own it limits nothing, so a
contract of ``[1, 100000000]`` samples would take the machine down within a minute. Two guards:

* :func:`check_fits` (before the job loads anything): the job's peak estimated from its component's
  contract and its source files (:func:`estimate_peak_mb`, constants measured by
  ``benchmarks/bench_memory.py``) must fit the reservation, else a :class:`MemoryLimitError` names
  the largest tensor of the contract and the estimate.
* :func:`apply_memory_limit` (in ``kiln.workflow.logs.run_job``): an OS limit equal to the
  reservation, so a job the estimate misjudged fails with an allocation error, which
  :func:`out_of_memory_message` turns into a diagnosis, instead of swapping the host to death.

Which OS limit (measured here): the machine runs cgroup v1 with one memory cgroup per session,
managed from outside; creating a per-job cgroup needs a writable hierarchy that a job cannot count
on. ``setrlimit(RLIMIT_AS)`` works for every process everywhere on Linux and macOS, so kiln uses it.
It bounds *virtual* size, which exceeds resident size by what libraries reserve: a process that
imported torch and coremltools measured VmSize 1,169 MB for VmRSS 451 MB, with NeMo's ASR collection
2,598 MB for 713 MB; the model reservations in config.yaml (4,000 MB and more) leave room for that,
which is why only the jobs that reserve a model's ``mem_mb`` (fetch, prepare, reference, export,
compile, parity, end_to_end, quantize) get the limit, not the small fixed reservations of the
summaries. Fetch is among them because what it runs depends on the source: a random source builds
the model (NeMo), and an ONNX source's folding evaluates nodes (whose outputs it also budgets,
:data:`kiln.sources.onnx_graph.FOLD_BUDGET_BYTES`).
"""

from __future__ import annotations

import math
import os
import resource
from pathlib import Path
from typing import Iterable

from kiln.foundation.errors import KilnError

MIB = 1 << 20

# Measured with benchmarks/bench_memory.py (peak RSS of fresh processes, this machine, x86_64;
# figures in benchmarks/memory.json):
#: intercept of the executor fit below: imports (torch, coremltools, kiln: 452 MB) + a loaded model
BASE_MB = 760.0
#: peak growth per MB of checkpoint loaded with torch.load(weights_only=True) (400 MB -> +401 MB)
SOURCE_FACTOR = 1.0
#: peak growth of kiln's executor per MB of a component's inputs + outputs (Parakeet preprocessor at
#: 240k / 960k / 3.84M samples: 783 / 837 / 1111 MB; intermediates such as STFT frames dwarf the I/O)
TENSOR_FACTOR = 16.1

_ITEMSIZE = {"float32": 4, "float16": 2, "int32": 4, "int64": 8, "int8": 1, "uint8": 1, "bool": 1}

#: the reservation of the job this process runs (set by run_job from Snakemake's resources.mem_mb)
_reserved_mb: int | None = None


class MemoryLimitError(KilnError):
    """A job would need, or did need, more memory than it reserved. Names the input and the numbers."""


def reserved_mb() -> int | None:
    return _reserved_mb


#: glibc's mallopt parameter number for the mmap threshold (malloc.h: M_MMAP_THRESHOLD)
_M_MMAP_THRESHOLD = -3
#: the fixed mmap threshold of job processes: blocks above it are mapped on their own and returned
#: to the OS when freed; the many small tensors of a decoding loop come from the heap
MMAP_THRESHOLD = 4 * MIB


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (setting it turns off glibc's dynamic adjustment). True when set;
    False where the C library is not glibc (macOS), which has no such adjustment.

    Why: glibc raises the threshold (up to 32 MiB, and the trim threshold with it) each time a
    process frees a large mapped block. In the full-size Parakeet reference job, after the
    mel_encoder's 15 s run freed its buffers, the 3,760 small torch calls of greedy decoding that
    followed grew the resident size from 3.0 GB to 18.7 GB and broke the job's 10,000 MB limit;
    with the threshold fixed (128 KiB, 4 MiB or 32 MiB alike) it stayed at 2.9-3.1 GB."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def apply_memory_limit(mem_mb: int | None) -> int | None:
    """Cap this process's address space at ``mem_mb`` MiB (never raising an existing lower cap).
    Returns the limit in bytes now in force, or None when ``mem_mb`` is unset."""
    global _reserved_mb
    if not mem_mb:
        return None
    _reserved_mb = int(mem_mb)
    limit = int(mem_mb) * MIB
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY and soft <= limit:
        return soft
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


def tensor_mb(shape: Iterable[int], dtype: str) -> float:
    return math.prod(int(d) for d in shape) * _ITEMSIZE.get(dtype, 4) / MIB


def estimate_peak_mb(component, source_bytes: int) -> float:
    """Estimated peak resident memory of a job that loads a source of ``source_bytes`` and runs
    ``component`` (a :class:`kiln.config.ComponentConfig`) on its contract's tensors."""
    # tensors without a shape yet (a family entry before the prepare job resolves it) count nothing
    contract = sum(tensor_mb(t.shape, t.dtype) for t in (*component.inputs, *component.outputs) if t.shape is not None)
    return BASE_MB + SOURCE_FACTOR * source_bytes / MIB + TENSOR_FACTOR * contract


def check_fits(component, source_files: Iterable[str | os.PathLike], mem_mb: int | None = None) -> float:
    """Refuse (before any loading) a job whose estimated peak exceeds its reservation. Returns the
    estimate in MB. ``mem_mb`` defaults to the reservation :func:`apply_memory_limit` recorded."""
    mem_mb = mem_mb if mem_mb is not None else _reserved_mb
    source_bytes = sum(Path(f).stat().st_size for f in source_files if Path(f).is_file())
    estimate = estimate_peak_mb(component, source_bytes)
    if mem_mb and estimate > mem_mb:
        tensors = [(tensor_mb(t.shape, t.dtype), kind, t) for kind, specs in
                   (("input", component.inputs), ("output", component.outputs)) for t in specs if t.shape is not None]
        if not tensors:
            raise MemoryLimitError(
                f"{component.model}/{component.name}: estimated peak {estimate:,.0f} MB exceeds the job's "
                f"reservation of {mem_mb:,} MB (models.{component.model}.resources.mem_mb) with the source "
                f"({source_bytes / MIB:,.0f} MB) alone. Raise mem_mb.")
        size, kind, largest = max(tensors, key=lambda item: item[0])
        raise MemoryLimitError(
            f"{component.model}/{component.name}: estimated peak {estimate:,.0f} MB exceeds the job's "
            f"reservation of {mem_mb:,} MB (models.{component.model}.resources.mem_mb); the largest tensor "
            f"is {kind} '{largest.name}' {list(largest.shape)} {largest.dtype} ({size:,.0f} MB), the source "
            f"{source_bytes / MIB:,.0f} MB. Shrink the contract or raise mem_mb.")
    return estimate


_ALLOCATION_FAILURES = ("can't allocate memory", "cannot allocate memory", "std::bad_alloc",
                        "out of memory", "unable to allocate")


def out_of_memory_message(exc: BaseException) -> str | None:
    """A diagnosis when ``exc`` is an allocation failure (Python's MemoryError, numpy's
    _ArrayMemoryError, torch's RuntimeError from its allocator, ENOMEM), else None."""
    text = str(exc).lower()
    if not (isinstance(exc, MemoryError) or (isinstance(exc, (RuntimeError, OSError))
                                             and any(s in text for s in _ALLOCATION_FAILURES))):
        return None
    limit = f"its reservation of {_reserved_mb:,} MB (resources.mem_mb), enforced as an address-space " \
            f"limit" if _reserved_mb else "the memory available"
    return (f"out of memory: the job needed more than {limit}; "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. Raise the model's "
            f"resources.mem_mb in config.yaml or shrink its contract.")
