"""Model state ops (coremltools defs iOS18/states.py; ``write_state`` is what coremltools' backend
emits for the ``coreml_update_state`` dialect op). The execution plan routes ``write_state``'s
value into the state's slot, so later ``read_state`` ops (and the run's final states) see it."""

from __future__ import annotations

from ..registry import register


@register("read_state", since="iOS18")
def read_state(input):
    """MIL ``read_state`` (iOS18+): the current value of a state."""
    return input


@register("write_state", since="iOS18")
def write_state(input, data):
    """MIL ``write_state`` (iOS18+): store ``data`` into the state ``input`` (returns the new value)."""
    if getattr(input, "shape", None) != getattr(data, "shape", None):
        raise ValueError(f"state of shape {list(input.shape)} cannot take data of shape {list(data.shape)}")
    return data
