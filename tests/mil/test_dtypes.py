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
