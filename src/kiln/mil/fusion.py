"""Fusion: a node whose single output is read exactly once is inlined into the node that reads it,
so one step runs both kernels without storing the intermediate (bit-identical results). Also how
often each value is read, which decides it."""

from __future__ import annotations

from .steps import Node

# Longest chain of producers inlined into one step (each level adds a Python frame per run).
MAX_FUSED_DEPTH = 24


class BlockFusion:
    """The fusion of one block, fed its nodes in program order."""

    def __init__(self, uses: dict[str, int]):
        self.uses = uses  # value name -> times it is read (see value_uses)
        self.inlinable: dict[int, Node] = {}  # slot -> pending single-output node used exactly once
        self.inlined: set[int] = set()  # id() of nodes now part of a consumer

    def add(self, node: Node, op) -> None:
        """Inline into ``node`` (compiled from ``op``) the pending producers it reads; ``node`` is
        pending in turn when its single output is read exactly once."""
        for position, source in enumerate(node.inputs):
            producer = self.inlinable.get(source) if isinstance(source, int) else None
            if producer is not None and producer.depth < MAX_FUSED_DEPTH:
                del self.inlinable[source]
                node.inputs[position] = producer
                node.depth = max(node.depth, producer.depth + 1)
                self.inlined.add(id(producer))
        if len(node.out_slots) == 1 and self.uses.get(op.outputs[0].name, 0) == 1:
            self.inlinable[node.out_slots[0]] = node

    def remaining(self, items: list) -> list:
        """``items`` without the nodes now inlined into a consumer."""
        return [item for item in items if id(item) not in self.inlined]


def value_uses(block) -> tuple[dict[str, int], bool]:
    """How often each value name is read (op inputs and block outputs, nested blocks included),
    and whether the block writes a state."""
    uses: dict[str, int] = {}
    writes_state = False

    def walk(b):
        nonlocal writes_state
        for name in b.outputs:
            uses[name] = uses.get(name, 0) + 1
        for op in b.operations:
            writes_state = writes_state or op.type == "write_state"
            for argument in op.inputs.values():
                for binding in argument.arguments:
                    if binding.WhichOneof("binding") == "name":
                        uses[binding.name] = uses.get(binding.name, 0) + 1
            for nested in op.blocks:
                walk(nested)

    walk(block)
    return uses, writes_state
