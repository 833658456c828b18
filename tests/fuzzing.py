"""The mutation both fuzz tests (executor: tests/mil, compiler: tests/compile) apply to a package."""

from __future__ import annotations

import shutil
from pathlib import Path


def corrupt_copy(originals: dict[Path, bytes], source: Path, target: Path, rng) -> Path:
    """Copy the package ``source`` to ``target`` and damage one of its files (``originals``: relative
    path -> bytes): 1-5 bit flips, and a truncation one time in ten. Returns the damaged file."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    rel = list(originals)[rng.integers(len(originals))]
    data = bytearray(originals[rel])
    for _ in range(rng.integers(1, 6)):
        if data:
            data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
    if rng.random() < 0.1:
        data = data[: rng.integers(len(data) + 1)]
    (target / rel).write_bytes(bytes(data))
    return rel
