"""Recurrent ops (coremltools defs iOS15/17/18 recurrent.py): ``lstm``, ``gru``, ``rnn``.

Layouts: ``x`` is ``[seq, batch, input]``. Gate order in weights and biases: LSTM ``[i, f, o, z]``
(input, forget, output, cell), GRU ``[r, o, z]`` (reset, output/new, update). A ``reverse`` layer
emits its sequence in processing order (last time step first); a ``bidirectional`` LSTM aligns
the backward outputs with their time steps and concatenates ``[forward | backward]``."""

from __future__ import annotations

import numpy as np

from ..registry import register
from ._util import activation as _activation
from ._util import as_bool, as_float, as_str


def _rank3(x):
    if x.ndim != 3:
        raise ValueError(f"recurrent ops need x of rank 3 [seq, batch, input], got {x.ndim}")


def _hidden_size(x, initial_h, weight_ih, weight_hh, gates: int) -> int:
    """The hidden size, after checking weights ``[gates*H, input]``/``[gates*H, H]`` and the initial
    state ``[batch, H]`` against ``x``."""
    hidden = weight_hh.shape[1]
    if weight_ih.shape != (gates * hidden, x.shape[2]) or weight_hh.shape != (gates * hidden, hidden):
        raise ValueError(f"weights {list(weight_ih.shape)}, {list(weight_hh.shape)} do not match x {list(x.shape)}")
    if initial_h.shape != (x.shape[1], hidden):
        raise ValueError(f"initial state {list(initial_h.shape)} does not match [batch, {hidden}]")
    return hidden


def _one_direction(direction) -> bool:
    """``True`` for ``reverse``, ``False`` for ``forward`` (GRU and RNN are single-direction)."""
    direction = as_str(direction, "direction")
    if direction not in ("forward", "reverse"):
        raise ValueError(f"unknown direction {direction!r}")
    return direction == "reverse"


def _lstm_layer(x, h, c, w_ih, w_hh, bias, peephole, clip, acts, reverse):
    """One direction; returns (outputs [seq, batch, H] in processing order, h, c)."""
    hidden = _hidden_size(x, h, w_ih, w_hh, gates=4)
    if c.shape != h.shape:
        raise ValueError(f"initial states {list(h.shape)}, {list(c.shape)} do not match [batch, {hidden}]")
    recurrent_act, cell_act, out_act = acts
    projected = np.matmul(x, w_ih.T.astype(x.dtype, copy=False))
    if bias is not None:
        if np.shape(bias) != (4 * hidden,):
            raise ValueError(f"bias of shape {list(np.shape(bias))}, expected [{4 * hidden}]")
        projected = projected + bias.astype(x.dtype, copy=False)
    w_hh_t = w_hh.T.astype(x.dtype, copy=False)
    if peephole is not None:
        if np.shape(peephole) != (3 * hidden,):
            raise ValueError(f"peephole of shape {list(np.shape(peephole))}, expected [{3 * hidden}]")
        p_i, p_f, p_o = np.split(peephole.astype(x.dtype, copy=False), 3)
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    outputs = []
    for t in steps:
        gates = projected[t] + h @ w_hh_t
        i, f, o, z = gates[:, :hidden], gates[:, hidden:2 * hidden], gates[:, 2 * hidden:3 * hidden], gates[:, 3 * hidden:]
        if peephole is not None:
            i = i + p_i * c
            f = f + p_f * c
        c = recurrent_act(f) * c + recurrent_act(i) * cell_act(z)
        if clip is not None:
            c = np.clip(c, -clip, clip)
        if peephole is not None:
            o = o + p_o * c
        h = recurrent_act(o) * out_act(c)
        outputs.append(h)
    return np.stack(outputs) if outputs else np.zeros((0,) + h.shape, x.dtype), h, c


@register("lstm")
def lstm(x, initial_h, initial_c, weight_ih, weight_hh, bias=None, peephole=None,
         weight_ih_back=None, weight_hh_back=None, bias_back=None, peephole_back=None,
         direction="forward", output_sequence=False, recurrent_activation="sigmoid",
         cell_activation="tanh", activation="tanh", clip=None):
    """MIL ``lstm`` (iOS15 fp32, iOS17+ also fp16): single-layer LSTM, forward / reverse / bidirectional.

    ``c = f*c + i*z`` (clipped to ``[-clip, clip]`` when given), ``h = o * activation(c)``; peepholes
    feed ``c_{t-1}`` to i, f and the new ``c`` to o. Returns (output, h, c)."""
    _rank3(x)
    direction = as_str(direction, "direction")
    acts = (
        _activation(as_str(recurrent_activation)),
        _activation(as_str(cell_activation)),
        _activation(as_str(activation)),
    )
    clip_value = None if clip is None else as_float(clip, "clip")
    sequence = as_bool(output_sequence, "output_sequence")
    if direction in ("forward", "reverse"):
        out, h, c = _lstm_layer(x, initial_h, initial_c, weight_ih, weight_hh, bias, peephole,
                                clip_value, acts, direction == "reverse")
        return (out if sequence else out[-1:]), h, c
    if direction != "bidirectional":
        raise ValueError(f"unknown direction {direction!r}")
    if weight_ih_back is None or weight_hh_back is None:
        raise ValueError("bidirectional lstm needs weight_ih_back and weight_hh_back")
    hidden = weight_hh.shape[1]
    if initial_h.shape[-1] != 2 * hidden or initial_c.shape[-1] != 2 * hidden:
        raise ValueError(f"bidirectional states must have {2 * hidden} columns")
    out_f, h_f, c_f = _lstm_layer(x, initial_h[:, :hidden], initial_c[:, :hidden], weight_ih,
                                  weight_hh, bias, peephole, clip_value, acts, False)
    out_b, h_b, c_b = _lstm_layer(x, initial_h[:, hidden:], initial_c[:, hidden:], weight_ih_back,
                                  weight_hh_back, bias_back, peephole_back, clip_value, acts, True)
    out_b = out_b[::-1]  # align with time steps
    if sequence:
        out = np.concatenate([out_f, out_b], axis=2)
    else:
        out = np.concatenate([out_f[-1:], out_b[:1]], axis=2)
    return out, np.concatenate([h_f, h_b], axis=1), np.concatenate([c_f, c_b], axis=1)


def _gru(x, initial_h, weight_ih, weight_hh, bias, direction, output_sequence,
         recurrent_activation, activation, reset_after=False, input_bias=None):
    _rank3(x)
    hidden = _hidden_size(x, initial_h, weight_ih, weight_hh, gates=3)
    reverse = _one_direction(direction)
    rec_act = _activation(as_str(recurrent_activation))
    act = _activation(as_str(activation))
    zeros = np.zeros(3 * hidden, x.dtype)
    b_h = zeros if bias is None else bias.astype(x.dtype, copy=False)
    b_i = zeros if input_bias is None else input_bias.astype(x.dtype, copy=False)
    projected = np.matmul(x, weight_ih.T.astype(x.dtype, copy=False)) + b_i
    w_r, w_o, w_z = (w.T.astype(x.dtype, copy=False) for w in np.split(weight_hh, 3))
    b_r, b_o, b_z = np.split(b_h, 3)
    h = initial_h
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    outputs = []
    for t in steps:
        xr, xo, xz = np.split(projected[t], 3, axis=1)
        r = rec_act(xr + h @ w_r + b_r)
        z = rec_act(xz + h @ w_z + b_z)
        if reset_after:
            o = act(xo + r * (h @ w_o + b_o))
        else:
            o = act(xo + (r * h) @ w_o + b_o)
        h = (1 - z) * o + z * h
        outputs.append(h)
    out = np.stack(outputs) if outputs else np.zeros((0,) + h.shape, x.dtype)
    return (out if as_bool(output_sequence) else out[-1:]), h


@register("gru")
def gru(x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
        recurrent_activation="sigmoid", activation="tanh"):
    """MIL ``gru`` (iOS15 fp32, iOS17 fp16): ``r, z = ra(W x + R h + b)``, ``o = act(W_o x + R_o (r*h) + b_o)``,
    ``h = (1 - z) * o + z * h``. Returns (output, h)."""
    return _gru(x, initial_h, weight_ih, weight_hh, bias, direction, output_sequence,
                recurrent_activation, activation)


@register("gru", since="iOS18")
def gru_ios18(x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
              recurrent_activation="sigmoid", activation="tanh", reset_after=False, input_bias=None):
    """MIL ``gru`` (iOS18+): adds ``reset_after`` (``o = act(W_o x + b_io + r * (R_o h + b_ho))``,
    PyTorch style) and ``input_bias`` (``b_i*``; ``bias`` is then the hidden bias)."""
    return _gru(x, initial_h, weight_ih, weight_hh, bias, direction, output_sequence,
                recurrent_activation, activation, as_bool(reset_after), input_bias)


@register("rnn")
def rnn(x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
        activation="tanh"):
    """MIL ``rnn`` (iOS15 fp32, iOS17 fp16): ``h = activation(W x + R h + b)``. Returns (output, h)."""
    _rank3(x)
    _hidden_size(x, initial_h, weight_ih, weight_hh, gates=1)
    reverse = _one_direction(direction)
    act = _activation(as_str(activation))
    projected = np.matmul(x, weight_ih.T.astype(x.dtype, copy=False))
    if bias is not None:
        projected = projected + bias.astype(x.dtype, copy=False)
    w = weight_hh.T.astype(x.dtype, copy=False)
    h = initial_h
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    outputs = []
    for t in steps:
        h = act(projected[t] + h @ w)
        outputs.append(h)
    out = np.stack(outputs) if outputs else np.zeros((0,) + h.shape, x.dtype)
    return (out if as_bool(output_sequence) else out[-1:]), h
