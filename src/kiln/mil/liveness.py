"""Liveness: each value of a function body is dropped after its last read, so a run does not hold
every intermediate of a large network until its end."""

from __future__ import annotations

from .steps import Free, Node, node_reads


def free_dead_values(items: list, keep: set[int], is_const: list[bool]) -> list:
    """Attach to each node the values it reads last, so a run does not hold every intermediate
    of a large network until its end (only values no opaque step reads; never outputs or inputs)."""
    last: dict[int, int] = {}
    for index, item in enumerate(items):
        if isinstance(item, Node):
            for slot in node_reads(item):
                last[slot] = index
    frees: dict[int, list[int]] = {}
    for slot, index in last.items():
        if slot not in keep and not is_const[slot]:
            frees.setdefault(index, []).append(slot)
    return [Free(item, sorted(frees[index])) if index in frees else item for index, item in enumerate(items)]
