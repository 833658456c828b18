"""Conformance of the heavy ops (conv, pooling, normalization, linear algebra, recurrent) against
torch's functional kernels and numpy versions of the MIL definitions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb
from milprog import run_program

RNG = np.random.default_rng(11)


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("opset", ["iOS16", "iOS17"])  # same_lower needs iOS16+
def test_conv_variants(mil_dir, opset):
    x1 = rand(2, 4, 17)
    x2 = rand(1, 6, 9, 8)
    w1 = rand(6, 2, 3)
    w2 = rand(4, 6, 3, 2)
    wd = rand(6, 1, 5)
    b1 = rand(6)

    def build(x1, x2):
        return [
            mb.conv(x=x1, weight=w1, bias=b1, groups=2, pad_type="custom", pad=[2, 1], strides=[2]),
            mb.conv(x=x1, weight=w1, groups=2, pad_type="same", dilations=[2]),
            mb.conv(x=x2, weight=w2, pad_type="valid", strides=[2, 1], dilations=[1, 2]),
            mb.conv(x=x2, weight=w2, pad_type="same", strides=[2, 2]),
            mb.conv(x=x2, weight=w2, pad_type="same_lower", strides=[1, 1]),
            mb.conv(x=x1, weight=wd[:4], groups=4, pad_type="valid"),
        ]

    outs = run_program(build, {"x1": x1, "x2": x2}, mil_dir, opset)
    refs = [
        F.conv1d(F.pad(t(x1), (2, 1)), t(w1), t(b1), stride=2, groups=2),
        F.conv1d(F.pad(t(x1), (2, 2)), t(w1), None, dilation=2, groups=2),
        F.conv2d(t(x2), t(w2), None, stride=(2, 1), dilation=(1, 2)),
        # same, stride 2: out = ceil(in/2); total pad = (out-1)*s + k - in, extra after
        F.conv2d(F.pad(t(x2), (0, 1, 1, 1)), t(w2), None, stride=2),
        F.conv2d(F.pad(t(x2), (1, 0, 1, 1)), t(w2), None),
        F.conv1d(t(x1), t(wd[:4]), None, groups=4),
    ]
    for i, (got, want) in enumerate(zip(outs, refs)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4, err_msg=str(i))


def test_large_conv_uses_same_semantics(mil_dir):
    x = rand(1, 16, 64, 64)
    w = rand(16, 16, 3, 3, scale=0.1)
    (got,) = run_program(lambda x: [mb.conv(x=x, weight=w, pad_type="custom", pad=[1, 1, 1, 1])], {"x": x}, mil_dir)
    np.testing.assert_allclose(got, F.conv2d(t(x), t(w), padding=1).numpy(), rtol=1e-4, atol=1e-4)


def test_convs_above_the_im2col_limit_pad_as_the_spec_says(mil_dir):
    """Above conv's im2col limit kiln runs torch's conv: symmetric padding is the conv's own,
    asymmetric padding (same with an even kernel or stride 2, custom) pads the input first."""
    from kiln.mil.ops import conv as conv_ops

    x = rand(1, 32, 96, 64)
    assert 32 * 96 * 64 * 9 > conv_ops._IM2COL_LIMIT
    w = rand(32, 32, 3, 3, scale=0.1)
    wd = rand(32, 1, 3, 3, scale=0.3)  # depthwise, as in Parakeet's subsampling
    w2 = rand(32, 32, 2, 2, scale=0.1)
    b = rand(32)

    def build(x):
        return [
            mb.conv(x=x, weight=w, bias=b, pad_type="custom", pad=[1, 1, 1, 1]),
            mb.conv(x=x, weight=wd, groups=32, pad_type="custom", pad=[1, 1, 1, 1], strides=[2, 2]),
            mb.conv(x=x, weight=w, pad_type="custom", pad=[2, 0, 1, 3]),
            mb.conv(x=x, weight=w2, pad_type="same"),
            mb.conv(x=x, weight=w, pad_type="same", strides=[2, 2]),
        ]

    outs = run_program(build, {"x": x}, mil_dir)
    refs = [
        F.conv2d(F.pad(t(x), (1, 1, 1, 1)), t(w), t(b)),
        F.conv2d(F.pad(t(x), (1, 1, 1, 1)), t(wd), None, stride=2, groups=32),
        F.conv2d(F.pad(t(x), (1, 3, 2, 0)), t(w), None),
        F.conv2d(F.pad(t(x), (0, 1, 0, 1)), t(w2), None),
        F.conv2d(F.pad(t(x), (0, 1, 0, 1)), t(w), None, stride=2),
    ]
    for i, (got, want) in enumerate(zip(outs, refs)):
        assert got.shape == tuple(want.shape), i
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4, err_msg=str(i))


def test_conv_transpose(mil_dir):
    x1 = rand(1, 4, 7)
    w1 = rand(4, 3, 5)
    x2 = rand(2, 4, 5, 6)
    w2 = rand(4, 2, 3, 3)
    b2 = rand(4)

    def build(x1, x2):
        return [
            mb.conv_transpose(x=x1, weight=w1, strides=[2]),
            mb.conv_transpose(x=x1, weight=w1, strides=[3], pad_type="custom", pad=[1, 2], dilations=[2]),
            mb.conv_transpose(x=x2, weight=w2, bias=b2, strides=[2, 2], groups=2, pad_type="custom", pad=[1, 1, 1, 1]),
            mb.conv_transpose(x=x2, weight=w2, strides=[2, 2], groups=2, pad_type="custom", pad=[1, 1, 1, 1],
                              output_shape=[2, 4, 10, 12]),
        ]

    outs = run_program(build, {"x1": x1, "x2": x2}, mil_dir, "iOS17")
    refs = [
        F.conv_transpose1d(t(x1), t(w1), stride=2),
        F.conv_transpose1d(t(x1), t(w1), stride=3, dilation=2)[..., 1:-2],
        F.conv_transpose2d(t(x2), t(w2), t(b2), stride=2, padding=1, groups=2),
        F.conv_transpose2d(t(x2), t(w2), None, stride=2, padding=1, output_padding=1, groups=2),
    ]
    for i, (got, want) in enumerate(zip(outs, refs)):
        assert got.shape == tuple(want.shape), (i, got.shape, want.shape)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4, err_msg=str(i))


def test_pooling(mil_dir):
    x = rand(2, 3, 9, 10)
    x1 = rand(1, 2, 11)

    def build(x, x1):
        return [
            mb.max_pool(x=x, kernel_sizes=[3, 2], strides=[2, 2], pad_type="valid"),
            mb.max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1], ceil_mode=True),
            mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
                        exclude_padding_from_average=True),
            mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
                        exclude_padding_from_average=False),
            mb.avg_pool(x=x1, kernel_sizes=[4], strides=[3], pad_type="valid", ceil_mode=True),
            mb.l2_pool(x=x1, kernel_sizes=[3], strides=[2], pad_type="valid"),
        ]

    outs = run_program(build, {"x": x, "x1": x1}, mil_dir)
    refs = [
        F.max_pool2d(t(x), (3, 2), (2, 2)),
        F.max_pool2d(t(x), 3, 2, padding=1, ceil_mode=True),
        F.avg_pool2d(t(x), 3, 2, padding=1, count_include_pad=False),
        F.avg_pool2d(t(x), 3, 2, padding=1, count_include_pad=True),
        F.avg_pool1d(t(x1), 4, 3, ceil_mode=True),
        F.lp_pool1d(t(x1), 2, 3, 2),
    ]
    for i, (got, want) in enumerate(zip(outs, refs)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5, err_msg=str(i))


def test_normalization(mil_dir):
    x = rand(2, 3, 4, 5)
    x3 = rand(2, 5, 6)
    g, b, m, v = rand(3), rand(3), rand(3), np.abs(rand(3)) + 0.5
    lg, lb = rand(4, 5), rand(4, 5)

    def build(x, x3):
        return [
            mb.batch_norm(x=x, mean=m, variance=v, gamma=g, beta=b, epsilon=1e-3),
            mb.instance_norm(x=x, gamma=g, beta=b, epsilon=1e-4),
            mb.layer_norm(x=x, axes=[-2, -1], gamma=lg, beta=lb, epsilon=1e-5),
            mb.layer_norm(x=x3, axes=[1]),
            mb.l2_norm(x=x, epsilon=1e-6),
            mb.local_response_norm(x=x, size=3, alpha=1e-2, beta=0.75, k=2.0),
        ]

    outs = run_program(build, {"x": x, "x3": x3}, mil_dir)
    mean3 = x3.mean(axis=1, keepdims=True)
    var3 = x3.var(axis=1, keepdims=True)
    refs = [
        F.batch_norm(t(x), t(m), t(v), t(g), t(b), eps=1e-3).numpy(),
        F.instance_norm(t(x), weight=t(g), bias=t(b), eps=1e-4).numpy(),
        F.layer_norm(t(x), (4, 5), t(lg), t(lb), eps=1e-5).numpy(),
        (x3 - mean3) / np.sqrt(var3 + 1e-5),
        x / np.sqrt((x * x).sum(axis=(1, 2, 3), keepdims=True) + 1e-6),
        F.local_response_norm(t(x), 3, alpha=1e-2, beta=0.75, k=2.0).numpy(),
    ]
    for i, (got, want) in enumerate(zip(outs, refs)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=str(i))


def test_linear_matmul_einsum(mil_dir):
    x = rand(2, 3, 4)
    y = rand(5, 1, 4, 6)
    v = rand(4)
    w, b = rand(7, 4), rand(7)
    e1, e2 = rand(2, 3, 4, 5), rand(1, 5, 4, 6)
    f1, f2 = rand(3, 4, 5), rand(5, 1, 2)

    def build(x, y, v, e1, e2, f1, f2):
        return [
            mb.linear(x=x, weight=w, bias=b),
            mb.linear(x=v, weight=w),
            mb.matmul(x=x, y=y),
            mb.matmul(x=y, y=x, transpose_x=True, transpose_y=True),
            mb.einsum(values=(e1, e2), equation="nchw,nwhu->nchu"),
            mb.einsum(values=(f1, f2), equation="chw,whr->chr"),
        ]

    inputs = dict(x=x, y=y, v=v, e1=e1, e2=e2, f1=f1, f2=f2)
    outs = run_program(build, inputs, mil_dir)
    refs = [
        x @ w.T + b, v @ w.T, x @ y,
        np.swapaxes(y, -1, -2) @ np.swapaxes(x, -1, -2),
        np.einsum("nchw,nwhu->nchu", e1, np.broadcast_to(e2, (2, 5, 4, 6))),
        np.einsum("chw,whr->chr", f1, np.broadcast_to(f2, (5, 4, 2))),
    ]
    for i, (got, want) in enumerate(zip(outs, refs)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=str(i))


def _torch_lstm(hidden, inp, bidirectional):
    torch.manual_seed(3)
    return torch.nn.LSTM(inp, hidden, bidirectional=bidirectional)


def _ifzo_to_ifoz(w):
    i, f, z, o = np.split(w, 4)
    return np.concatenate([i, f, o, z])


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_matches_torch(mil_dir, direction):
    seq, batch, inp, hidden = 5, 2, 3, 4
    net = _torch_lstm(hidden, inp, direction == "bidirectional")
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    x = rand(seq, batch, inp)
    dirs = 2 if direction == "bidirectional" else 1
    h0, c0 = rand(dirs, batch, hidden), rand(dirs, batch, hidden)
    params = dict(
        weight_ih=_ifzo_to_ifoz(sd["weight_ih_l0"]), weight_hh=_ifzo_to_ifoz(sd["weight_hh_l0"]),
        bias=_ifzo_to_ifoz(sd["bias_ih_l0"] + sd["bias_hh_l0"]),
    )
    if dirs == 2:
        params.update(
            weight_ih_back=_ifzo_to_ifoz(sd["weight_ih_l0_reverse"]),
            weight_hh_back=_ifzo_to_ifoz(sd["weight_hh_l0_reverse"]),
            bias_back=_ifzo_to_ifoz(sd["bias_ih_l0_reverse"] + sd["bias_hh_l0_reverse"]),
        )
    mil_h0 = np.concatenate(list(h0), axis=1)
    mil_c0 = np.concatenate(list(c0), axis=1)

    def build(x, h, c):
        return list(mb.lstm(x=x, initial_h=h, initial_c=c, direction=direction, output_sequence=True, **params))

    out, h, c = run_program(build, {"x": x, "h": mil_h0, "c": mil_c0}, mil_dir, "iOS17")
    with torch.no_grad():
        xin = t(x[::-1].copy()) if direction == "reverse" else t(x)
        ref_out, (ref_h, ref_c) = net(xin, (t(h0), t(c0)))
    np.testing.assert_allclose(out, ref_out.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h, np.concatenate(list(ref_h.numpy()), axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c, np.concatenate(list(ref_c.numpy()), axis=1), rtol=1e-4, atol=1e-5)


def test_lstm_peephole_clip_and_last_step(mil_dir):
    seq, batch, inp, hidden = 4, 1, 3, 2
    wi, wh, b, p = rand(4 * hidden, inp), rand(4 * hidden, hidden), rand(4 * hidden), rand(3 * hidden)
    x, h0, c0 = rand(seq, batch, inp), rand(batch, hidden), rand(batch, hidden)

    def build(x, h, c):
        return list(mb.lstm(x=x, initial_h=h, initial_c=c, weight_ih=wi, weight_hh=wh, bias=b, peephole=p,
                            clip=0.3, recurrent_activation="hard_sigmoid", output_sequence=False))

    out, h, c = run_program(build, {"x": x, "h": h0, "c": c0}, mil_dir, "iOS15")
    hs = lambda v: np.clip(0.2 * v + 0.5, 0, 1)
    hh, cc = h0.astype(np.float64), c0.astype(np.float64)
    pi, pf, po = np.split(p, 3)
    for step in range(seq):
        g = x[step] @ wi.T + hh @ wh.T + b
        i, f, o, z = np.split(g, 4, axis=1)
        i, f = hs(i + pi * cc), hs(f + pf * cc)
        cc = np.clip(f * cc + i * np.tanh(z), -0.3, 0.3)
        hh = hs(o + po * cc) * np.tanh(cc)
    np.testing.assert_allclose(out[0], hh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, hh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, cc, rtol=1e-5, atol=1e-6)


def test_gru_and_rnn(mil_dir):
    seq, batch, inp, hidden = 4, 2, 3, 5
    torch.manual_seed(5)
    gru = torch.nn.GRU(inp, hidden)
    sd = {k: v.detach().numpy() for k, v in gru.state_dict().items()}
    r_i, z_i, n_i = np.split(sd["weight_ih_l0"], 3)
    r_h, z_h, n_h = np.split(sd["weight_hh_l0"], 3)
    br_i, bz_i, bn_i = np.split(sd["bias_ih_l0"], 3)
    br_h, bz_h, bn_h = np.split(sd["bias_hh_l0"], 3)
    wr, whh, bias = rand(hidden, inp), rand(hidden, hidden, scale=0.3), rand(hidden)
    x, h0 = rand(seq, batch, inp), rand(batch, hidden)

    def build(x, h):
        g = mb.gru(x=x, initial_h=h, weight_ih=np.concatenate([r_i, n_i, z_i]),
                   weight_hh=np.concatenate([r_h, n_h, z_h]), input_bias=np.concatenate([br_i, bn_i, bz_i]),
                   bias=np.concatenate([br_h, bn_h, bz_h]), reset_after=True, output_sequence=True)
        r = mb.rnn(x=x, initial_h=h, weight_ih=wr, weight_hh=whh, bias=bias, direction="reverse",
                   output_sequence=True, activation="relu")
        return list(g) + list(r)

    g_out, g_h, r_out, r_h_final = run_program(build, {"x": x, "h": h0}, mil_dir, "iOS18")
    with torch.no_grad():
        ref_out, ref_h = gru(t(x), t(h0[None]))
    np.testing.assert_allclose(g_out, ref_out.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_h, ref_h.numpy()[0], rtol=1e-4, atol=1e-5)
    hh = h0
    expected = []
    for step in reversed(range(seq)):
        hh = np.maximum(x[step] @ wr.T + hh @ whh.T + bias, 0)
        expected.append(hh)
    np.testing.assert_allclose(r_out, np.stack(expected), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r_h_final, hh, rtol=1e-4, atol=1e-5)


def test_gru_ios15_reset_before(mil_dir):
    seq, batch, inp, hidden = 3, 1, 2, 3
    wi, wh, b = rand(3 * hidden, inp), rand(3 * hidden, hidden), rand(3 * hidden)
    x, h0 = rand(seq, batch, inp), rand(batch, hidden)

    def build(x, h):
        return list(mb.gru(x=x, initial_h=h, weight_ih=wi, weight_hh=wh, bias=b, output_sequence=False))

    out, h = run_program(build, {"x": x, "h": h0}, mil_dir, "iOS15")
    sig = lambda v: 1 / (1 + np.exp(-v))
    Wr, Wo, Wz = np.split(wi, 3)
    Rr, Ro, Rz = np.split(wh, 3)
    br, bo, bz = np.split(b, 3)
    hh = h0
    for step in range(seq):
        r = sig(x[step] @ Wr.T + hh @ Rr.T + br)
        z = sig(x[step] @ Wz.T + hh @ Rz.T + bz)
        o = np.tanh(x[step] @ Wo.T + (r * hh) @ Ro.T + bo)
        hh = (1 - z) * o + z * hh
    np.testing.assert_allclose(h, hh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[0], hh, rtol=1e-5, atol=1e-6)


def test_scaled_dot_product_attention(mil_dir):
    q, k, v = rand(1, 2, 4, 8), rand(1, 2, 6, 8), rand(1, 2, 6, 3)
    mask = rand(4, 6)

    def build(q, k, v, m):
        return [mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=m)]

    (got,) = run_program(build, {"q": q, "k": k, "v": v, "m": mask}, mil_dir, "iOS18")
    want = F.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=t(mask)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_matmul_vector_rules():
    """1-D operands (coremltools' type inference rejects them in the builder, so call the op)."""
    from kiln.mil.ops.linear import matmul

    x, y, v = rand(2, 3, 4), rand(5, 1, 4, 6), rand(4)
    np.testing.assert_allclose(matmul(x, v), x @ v, rtol=1e-5)
    np.testing.assert_allclose(matmul(v, y), v @ y, rtol=1e-5)
    np.testing.assert_allclose(matmul(v, v), v @ v, rtol=1e-5)


@pytest.mark.parametrize("axes", [[-1], [-2, -1], [1]], ids=["last", "last-two", "middle"])
def test_large_layer_norm_matches_the_definition(mil_dir, axes):
    """Large inputs normalised over trailing axes run torch's layer norm (prepared kernel),
    others the numpy definition: both match a float64 reference."""
    x = rand(2, 64, 300) * 3 + 1
    shape = tuple(x.shape[a] for a in axes)
    gamma, beta = rand(*shape), rand(*shape)
    (got, got_plain) = run_program(
        lambda x: [mb.layer_norm(x=x, axes=axes, gamma=gamma, beta=beta, epsilon=1e-5),
                   mb.layer_norm(x=x, axes=axes, epsilon=1e-3)], {"x": x}, mil_dir)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=tuple(axes), keepdims=True)
    var = x64.var(axis=tuple(axes), keepdims=True)
    norm = (x64 - mean) / np.sqrt(var + 1e-5)
    shape_b = [1] * 3
    for a in axes:
        shape_b[a] = x.shape[a]
    np.testing.assert_allclose(got, norm * gamma.reshape(shape_b) + beta.reshape(shape_b), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_plain, (x64 - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-4)
