"""fp16 rounding of the fp16 precision mode: the torch path (large arrays) rounds exactly as
IEEE/numpy does, at every boundary a float32 can sit on."""
import numpy as np
import pytest

from kiln.mil import dtypes


def _numpy_round(a):
    with np.errstate(over="ignore"):  # overflow to inf is the expected rounding
        return a.astype(np.float16).astype(np.float32)


def _boundary_values() -> np.ndarray:
    """Every finite fp16 value, the float32 midpoints between neighbours (ties, which round to
    even) and one float32 ulp either side of each midpoint, both signs; plus the overflow edge,
    infinities, NaN and random float32 bit patterns."""
    halves = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)
    mids = (halves[:-1] + (halves[1:] - halves[:-1]) / 2).astype(np.float32)
    near = np.concatenate([np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(0))])
    edge = np.array([65504, 65519.996, 65520, 65520.004, 1e6, np.inf, np.nan, 2.0 ** -25,
                     2.0 ** -24, 3 * 2.0 ** -26, 2.0 ** -14], np.float32)
    rng = np.random.default_rng(0)
    random_bits = rng.integers(0, 2 ** 32, 1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32)
    positive = np.concatenate([halves, mids, near, edge])
    return np.concatenate([positive, -positive, random_bits])


def test_round_to_fp16_large_arrays_match_ieee_rounding_bit_for_bit():
    values = _boundary_values()
    assert values.size >= dtypes.TORCH_ROUND_MIN  # the torch path is the one under test
    rounded = dtypes.round_to_fp16(values)
    expected = _numpy_round(values)
    assert rounded.dtype == np.float32 and rounded.shape == values.shape
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(rounded), nan)
    assert np.array_equal(rounded[~nan].view(np.uint32), expected[~nan].view(np.uint32))
    assert np.isinf(dtypes.round_to_fp16(np.full(8192, 65520, np.float32))).all()


@pytest.mark.parametrize("make", [
    lambda: np.linspace(-3, 3, 100, dtype=np.float32),                       # small: numpy path
    lambda: np.linspace(-3, 3, 10000, dtype=np.float32)[::2],                # strided
    lambda: np.linspace(-3, 3, 10000, dtype=np.float64),                     # float64 in
    lambda: np.float32(1.0001),                                              # scalar
], ids=["small", "strided", "float64", "scalar"])
def test_round_to_fp16_other_inputs_take_the_numpy_path_with_the_same_result(make):
    value = make()
    rounded = dtypes.round_to_fp16(value)
    assert rounded.dtype == np.float32
    assert np.array_equal(rounded, _numpy_round(np.asarray(value)))


def test_round_to_fp16_returns_a_new_array_and_leaves_read_only_input_alone():
    value = np.linspace(-3, 3, 10000, dtype=np.float32)
    original = value.copy()
    rounded = dtypes.round_to_fp16(value)
    assert not np.shares_memory(rounded, value) and np.array_equal(value, original)
    value.flags.writeable = False
    assert np.array_equal(dtypes.round_to_fp16(value), rounded)


def test_widening_scratch_reuses_one_buffer_per_thread():
    import threading

    import torch

    from kiln.mil.ops._util import WideningScratch

    scratch = WideningScratch()
    big = torch.from_numpy(np.arange(12, dtype=np.float16).reshape(3, 4))
    small = torch.from_numpy(np.full((2, 2), 0.5, np.float16))
    first = scratch.widen(big)
    assert first.dtype == torch.float32 and first.shape == (3, 4)
    assert np.array_equal(first.numpy(), np.arange(12, dtype=np.float32).reshape(3, 4))
    address = first.data_ptr()
    second = scratch.widen(small)  # fits: the same memory, overwritten
    assert second.data_ptr() == address and np.array_equal(second.numpy(), np.full((2, 2), 0.5, np.float32))
    grown = scratch.widen(torch.zeros(100, dtype=torch.float16))
    assert grown.numel() == 100
    other = {}
    thread = threading.Thread(target=lambda: other.update(ptr=scratch.widen(small).data_ptr()))
    thread.start()
    thread.join()
    assert other["ptr"] != grown.data_ptr()  # each thread widens into its own buffer


@pytest.mark.parametrize("size", [100, 1 << 16], ids=["numpy", "torch"])
def test_sigmoid_and_silu_are_within_a_few_ulp_of_exact_on_both_paths(size):
    from kiln.mil.ops._util import sigmoid, sigmoid_in_place
    from kiln.mil.ops.activation import silu

    x = np.linspace(-30, 30, size, dtype=np.float32)
    exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    for got in (sigmoid(x), sigmoid_in_place(x.copy())):
        assert got.dtype == np.float32 and np.all(np.abs(got - exact) <= 4 * ulp)
    exact_silu = x * exact
    got = silu(x)
    assert got.dtype == np.float32
    assert np.all(np.abs(got - exact_silu) <= 4 * np.spacing(np.abs(exact_silu).astype(np.float32)) + 1e-30)
    assert np.array_equal(sigmoid(x), sigmoid_in_place(x.copy()))  # fused and unfused agree bit for bit


@pytest.mark.parametrize("size", [100, 3 * dtypes.ROUND_IN_PLACE_CHUNK + 7], ids=["numpy", "torch-chunked"])
def test_round_to_fp16_in_place_overwrites_its_input_with_the_same_bits(size):
    values = np.resize(_boundary_values(), size).astype(np.float32)
    expected = _numpy_round(values)
    rounded = dtypes.round_to_fp16_in_place(values)
    assert rounded is values
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(rounded), nan)
    assert np.array_equal(rounded[~nan].view(np.uint32), expected[~nan].view(np.uint32))


def test_round_to_fp16_in_place_copies_what_it_must_not_overwrite():
    values = np.linspace(-3, 3, 10000, dtype=np.float32)
    values.flags.writeable = False
    rounded = dtypes.round_to_fp16_in_place(values)
    assert rounded is not values and np.array_equal(rounded, _numpy_round(values))
    strided = np.linspace(-3, 3, 20000, dtype=np.float32)[::2]
    assert dtypes.round_to_fp16_in_place(strided) is not strided
