"""Requantization rounding rules (contract.py) against literal Python-int transcriptions."""

import re

import numpy as np
import pytest

from systolic_conv.contract import (
    HALF_UP_M_WIDTH, HALF_UP_S_MAX, Requant, requantize, round_shift_half_up,
    rounding_divide_by_pot, saturating_rounding_doubling_high_mul)
from systolic_conv.quant import make_requant, quantize_multiplier, quantize_multiplier_half_up

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
SEED = 20240531


# ---- independent references: gemmlowp's C semantics with Python ints ----

def c_div(n, d):
    """C integer division: truncation toward zero."""
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


def ref_srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul (a widened to 48 bits)."""
    overflow = a == b and a == INT32_MIN
    ab_64 = a * b
    nudge = (1 << 30) if ab_64 >= 0 else (1 - (1 << 30))
    ab_x2_high32 = c_div(ab_64 + nudge, 1 << 31)
    return INT32_MAX if overflow else ab_x2_high32


def ref_rdbpot(x, exponent):
    """gemmlowp RoundingDivideByPOT (two's-complement & and arithmetic >>)."""
    mask = (1 << exponent) - 1
    zero = 0
    one = 1
    remainder = x & mask
    threshold = (mask >> 1) + (one if x < zero else zero)
    return (x >> exponent) + (one if remainder > threshold else zero)


def ref_requant(acc, M, S, zp, relu, width, mode):
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if relu:
        lo = max(lo, zp)
    if mode == "tflite":
        v = ref_rdbpot(ref_srdhm(acc, M), S)
    else:
        p = acc * M
        v = p if S == 0 else (p + (1 << (S - 1))) >> S
    return min(max(v + zp, lo), hi)


def edge_int32():
    vals = {INT32_MIN, INT32_MIN + 1, -2**30, -1, 0, 1, 2**30, INT32_MAX - 1, INT32_MAX,
            3, -3, 5, -5, 2**16, -2**16, 2**16 - 1, 12345, -12345}
    return sorted(vals)


# ---- saturating_rounding_doubling_high_mul ----

def test_srdhm_int32_edges():
    vals = edge_int32()
    a = np.array([x for x in vals for _ in vals], dtype=np.int64)
    b = np.array([y for _ in vals for y in vals], dtype=np.int64)
    got = saturating_rounding_doubling_high_mul(a, b)
    want = [ref_srdhm(int(x), int(y)) for x, y in zip(a, b)]
    assert got.tolist() == want
    assert saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX
    assert isinstance(saturating_rounding_doubling_high_mul(3, 5), np.int64)


def test_srdhm_ties():
    # a*b = +-1.5 * 2**31 and +-2.5 * 2**31: exact ties of the high half
    assert saturating_rounding_doubling_high_mul(3, 2**30) == 2
    assert saturating_rounding_doubling_high_mul(-3, 2**30) == -1
    assert saturating_rounding_doubling_high_mul(5, 2**30) == 3
    assert saturating_rounding_doubling_high_mul(-5, 2**30) == -2
    assert saturating_rounding_doubling_high_mul(-3, 2**30) == ref_srdhm(-3, 2**30)
    # just below / above a tie
    assert saturating_rounding_doubling_high_mul(3, 2**30 - 1) == ref_srdhm(3, 2**30 - 1) == 1
    assert saturating_rounding_doubling_high_mul(-3, 2**30 + 1) == ref_srdhm(-3, 2**30 + 1)


@pytest.mark.parametrize("acc_bits", [32, 40, 48])
def test_srdhm_random_wide(acc_bits):
    rng = np.random.default_rng(SEED + acc_bits)
    n = 4000
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    a = rng.integers(lo, hi, n, endpoint=True, dtype=np.int64)
    a[:6] = [lo, hi, lo + 1, hi - 1, 0, -1]
    b = rng.integers(0, INT32_MAX, n, endpoint=True, dtype=np.int64)
    b[:12] = [INT32_MAX, 0, 1, 2**30, INT32_MAX, INT32_MAX, 2**30, 2**30, 1, 1, 2**16, 2**16 - 1]
    b[12:1000] = rng.integers(INT32_MIN, INT32_MAX, 988, endpoint=True)   # negative b too
    got = saturating_rounding_doubling_high_mul(a, b)
    want = [ref_srdhm(int(x), int(y)) for x, y in zip(a, b)]
    assert got.tolist() == want


def test_srdhm_ties_random():
    """Products landing exactly on ties (a*b = (2k+1) * 2**30), both signs."""
    rng = np.random.default_rng(SEED)
    k = rng.integers(-2**40, 2**40, 2000, dtype=np.int64)
    a = 2 * k + 1
    b = np.full_like(a, 2**30)
    got = saturating_rounding_doubling_high_mul(a, b)
    assert got.tolist() == [ref_srdhm(int(x), 2**30) for x in a]


def test_srdhm_range_checked():
    with pytest.raises(ValueError, match=re.escape("a has value 140737488355328 outside "
                                                   "the signed 48-bit range")):
        saturating_rounding_doubling_high_mul(2**47, 3)
    with pytest.raises(ValueError, match=re.escape("b has value 2147483648 outside the "
                                                   "signed 32-bit range")):
        saturating_rounding_doubling_high_mul(1, 2**31)
    with pytest.raises(TypeError, match=r"^a must be integer, not float64$"):
        saturating_rounding_doubling_high_mul(np.array([1.5]), 3)


# ---- rounding_divide_by_pot ----

@pytest.mark.parametrize("exponent", [0, 1, 2, 7, 16, 30, 31])
def test_rdbpot_edges(exponent):
    xs = edge_int32() + [(1 << exponent) // 2, -((1 << exponent) // 2),
                         3 * (1 << exponent) // 2, -(3 * (1 << exponent) // 2),
                         2**47 - 1, -2**47, 2**40 + 2**(exponent - 1 if exponent else 0)]
    x = np.array(xs, dtype=np.int64)
    got = rounding_divide_by_pot(x, exponent)
    assert got.tolist() == [ref_rdbpot(int(v), exponent) for v in xs]


def test_rdbpot_ties_and_random():
    assert rounding_divide_by_pot(5, 1) == 3       # 2.5 -> 3
    assert rounding_divide_by_pot(-5, 1) == -3     # -2.5 -> -3 (half away from zero)
    assert rounding_divide_by_pot(-6, 2) == -2     # -1.5 -> -2
    assert rounding_divide_by_pot(6, 2) == 2
    assert rounding_divide_by_pot(-7, 0) == -7
    assert rounding_divide_by_pot(INT32_MIN, 31) == -1
    assert rounding_divide_by_pot(INT32_MAX, 31) == 1
    rng = np.random.default_rng(SEED + 1)
    x = rng.integers(-2**47, 2**47, 5000, dtype=np.int64)
    e = rng.integers(0, 31, 5000, endpoint=True, dtype=np.int64)
    got = rounding_divide_by_pot(x, e)
    assert got.tolist() == [ref_rdbpot(int(v), int(s)) for v, s in zip(x, e)]


def test_rdbpot_exponent_range():
    with pytest.raises(ValueError, match=r"^exponent=32 must be in \[0, 31\]$"):
        rounding_divide_by_pot(5, 32)
    with pytest.raises(ValueError, match=r"^exponent=-1 must be in \[0, 31\]$"):
        rounding_divide_by_pot(5, np.array([1, -1]))


# ---- round_shift_half_up ----

def test_round_shift_half_up():
    v = np.array([3, -3, 1, -1, 2, -2, 5, -5, 0, 7, -7], dtype=np.int64)
    assert round_shift_half_up(v, 1).tolist() == [2, -1, 1, 0, 1, -1, 3, -2, 0, 4, -3]
    assert round_shift_half_up(v, 0).tolist() == v.tolist()
    assert round_shift_half_up(-6, 2) == -1        # -1.5 -> -1 (ties toward +inf)
    assert round_shift_half_up(6, 2) == 2
    rng = np.random.default_rng(SEED + 2)
    x = rng.integers(-2**62, 2**62, 3000, dtype=np.int64)
    s = rng.integers(0, HALF_UP_S_MAX, 3000, endpoint=True, dtype=np.int64)
    want = [int(a) if int(b) == 0 else (int(a) + (1 << (int(b) - 1))) >> int(b)
            for a, b in zip(x, s)]
    assert round_shift_half_up(x, s).tolist() == want


# ---- requantize ----

@pytest.mark.parametrize("mode", ["tflite", "half_up"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("out_width", [4, 8, 16])
def test_requantize_random_per_channel(mode, relu, out_width):
    rng = np.random.default_rng(SEED + out_width + 10 * relu + (mode == "half_up"))
    C = 5
    acc = rng.integers(-2**47, 2**47, (3, C, 4, 6), dtype=np.int64)
    acc[0, :, 0, :] = rng.integers(-2**20, 2**20, (C, 6))
    acc[0, 0, 0, :2] = [-2**47, 2**47 - 1]
    if mode == "tflite":
        M = rng.integers(0, 2**31, C, dtype=np.int64)
        M[0] = INT32_MAX
        S = rng.integers(0, 31, C, endpoint=True, dtype=np.int64)
        S[:2] = [0, 31]
    else:
        M = rng.integers(0, 2**HALF_UP_M_WIDTH, C, dtype=np.int64)
        S = rng.integers(0, HALF_UP_S_MAX, C, endpoint=True, dtype=np.int64)
        S[:2] = [0, HALF_UP_S_MAX]
    zp = int(rng.integers(-(1 << (out_width - 1)), 1 << (out_width - 1)))
    rq = Requant(mode=mode, multiplier=M.tolist(), shift=S.tolist(), out_zero_point=zp,
                 out_width=out_width, relu=relu)
    got = requantize(acc, rq)
    want = np.empty_like(acc)
    for idx in np.ndindex(acc.shape):
        c = idx[1]
        want[idx] = ref_requant(int(acc[idx]), int(M[c]), int(S[c]), zp, relu, out_width, mode)
    assert got.dtype == np.int64
    assert np.array_equal(got, want)
    lo = max(-(1 << (out_width - 1)), zp) if relu else -(1 << (out_width - 1))
    assert got.min() >= lo and got.max() <= (1 << (out_width - 1)) - 1


def test_requantize_saturation_and_relu():
    rq = Requant(mode="tflite", multiplier=2**30, shift=0, out_zero_point=10)
    acc = np.array([2**40, -2**40, 0, 200, -300])
    assert requantize(acc, rq, channel_axis=0).tolist() == [127, -128, 10, 110, -128]
    rq = Requant(mode="tflite", multiplier=2**30, shift=0, out_zero_point=10, relu=True)
    assert requantize(acc, rq, channel_axis=0).tolist() == [127, 10, 10, 110, 10]
    rq = Requant(mode="half_up", multiplier=3, shift=2, out_zero_point=-5, relu=True)
    # (acc*3 + 2) >> 2, + zp, clamp to [-5, 127]
    assert requantize(np.array([2, -2, 1, 100, -100]), rq, 0).tolist() == [-3, -5, -4, 70, -5]


def test_requantize_half_up_ties():
    rq = Requant(mode="half_up", multiplier=1, shift=1)
    acc = np.array([[1, -1, 3, -3, 5, -5]])
    assert requantize(acc, rq, channel_axis=0).tolist() == [[1, 0, 2, -1, 3, -2]]


def test_requantize_tflite_known_values():
    # real multiplier 0.25: M = 2**30 (0.5), S = 1
    rq = Requant(mode="tflite", multiplier=2**30, shift=1)
    acc = np.array([100, -100, 6, -6, 2, -2])
    # srdhm(6, 2**30) = 3, rdbpot(3, 1) = 2 (1.5 -> 2); srdhm(-6, 2**30) = -3 -> -2
    assert requantize(acc, rq, channel_axis=0).tolist() == [25, -25, 2, -2, 1, -1]


def test_requantize_unbatched_and_shapes():
    rq = Requant(mode="tflite", multiplier=[2**30, 2**29], shift=[0, 0])
    acc = np.full((2, 3, 3), 8)
    out = requantize(acc, rq, channel_axis=0)
    assert out[0].tolist() == [[4] * 3] * 3 and out[1].tolist() == [[2] * 3] * 3
    with pytest.raises(ValueError, match=r"^requant has 2 channels but acc has 3 along "
                                         r"channel_axis=1$"):
        requantize(np.zeros((1, 3, 2, 2), np.int64), rq)
    with pytest.raises(ValueError, match=r"^acc has value 140737488355328 outside the "
                                         r"signed 48-bit range"):
        requantize(np.array([2**47]), Requant(), channel_axis=0)
    with pytest.raises(TypeError, match=r"^acc must have an integer dtype, not float64$"):
        requantize(np.array([1.0]), Requant(), channel_axis=0)
    with pytest.raises(TypeError, match=r"^requant must be a Requant, not dict$"):
        requantize(np.array([1]), {}, channel_axis=0)


@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(mode="floor"), ValueError, "mode='floor' must be one of 'tflite', 'half_up'"),
    (dict(mode="tflite", multiplier=-1), ValueError,
     "multiplier=-1 must be in [0, 2147483647] (Q31 int32) for mode='tflite'"),
    (dict(mode="tflite", multiplier=2**31), ValueError,
     "multiplier=2147483648 must be in [0, 2147483647] (Q31 int32) for mode='tflite'"),
    (dict(mode="half_up", multiplier=[1, 2**16]), ValueError,
     "multiplier=65536 must be in [0, 65535] (unsigned 16-bit) for mode='half_up'"),
    (dict(mode="tflite", shift=32), ValueError, "shift=32 must be in [-31, 31] for mode='tflite'"),
    (dict(mode="tflite", shift=[0, -32]), ValueError,
     "shift=-32 must be in [-31, 31] for mode='tflite'"),
    (dict(mode="half_up", multiplier=1, shift=[0, -1]), ValueError,
     "shift=-1 must be in [0, 47] for mode='half_up'"),
    (dict(mode="half_up", multiplier=1, shift=48), ValueError,
     "shift=48 must be in [0, 47] for mode='half_up'"),
    (dict(multiplier=[1, 2], shift=[1, 2, 3]), ValueError,
     "multiplier has 2 channels but shift has 3"),
    (dict(multiplier=[]), ValueError, "multiplier=() must not be empty"),
    (dict(multiplier=1.5), TypeError, "multiplier=1.5 must be an int or a 1-D sequence of ints"),
    (dict(shift=[1, 2.0]), TypeError, "shift=[1, 2.0] must be an int or a 1-D sequence of ints"),
    (dict(out_width=1), ValueError, "out_width=1 must be in [2, 32]"),
    (dict(out_width=33), ValueError, "out_width=33 must be in [2, 32]"),
    (dict(out_zero_point=128), ValueError,
     "out_zero_point=128 must be within the 8-bit output range [-128, 127]"),
    (dict(out_zero_point=8, out_width=4), ValueError,
     "out_zero_point=8 must be within the 4-bit output range [-8, 7]"),
    (dict(relu=1), TypeError, "relu=1 must be a bool"),
    (dict(act_min=1.0), TypeError, "act_min=1.0 must be an int or None"),
    (dict(act_max="6"), TypeError, "act_max='6' must be an int or None"),
    (dict(act_min=-129), ValueError, "act_min=-129 must be within the 8-bit output range [-128, 127]"),
    (dict(act_max=128), ValueError, "act_max=128 must be within the 8-bit output range [-128, 127]"),
    (dict(act_max=8, out_width=4), ValueError,
     "act_max=8 must be within the 4-bit output range [-8, 7]"),
    (dict(act_min=5, act_max=4), ValueError, "act_max=4 must be >= act_min=5"),
    (dict(relu=True, act_min=-3), ValueError,
     "relu=True is shorthand for act_min=out_zero_point: give relu=True or act_min=-3, not both"),
    (dict(relu=True, act_min=0), ValueError,
     "relu=True is shorthand for act_min=out_zero_point: give relu=True or act_min=0, not both"),
    (dict(relu=True, out_zero_point=10, act_max=9), ValueError,
     "act_max=9 must be >= out_zero_point=10 (relu=True)"),
])
def test_requant_validation(kwargs, exc, message):
    with pytest.raises(exc, match="^" + re.escape(message) + "$"):
        Requant(**kwargs)


def test_requant_fields():
    rq = Requant(mode="half_up", multiplier=np.array([1, 2, 3]), shift=4, out_zero_point=-3,
                 relu=True)
    assert rq.multiplier == (1, 2, 3) and rq.shift == 4 and rq.channels == 3
    assert (rq.qmin, rq.qmax) == (-3, 127)
    assert hash(rq) == hash(Requant(mode="half_up", multiplier=[1, 2, 3], shift=4,
                                    out_zero_point=-3, relu=True))
    assert Requant().channels is None


# ---- multiplier helpers ----

def test_quantize_multiplier():
    rng = np.random.default_rng(SEED + 3)
    real = np.concatenate([rng.uniform(0, 1, 500), 2.0 ** -rng.uniform(0, 31, 500)])
    M, S = quantize_multiplier(real)
    assert M.min() >= 0 and M.max() <= INT32_MAX and S.min() >= 0 and S.max() <= 31
    approx = M / 2.0**31 / 2.0**S
    assert np.all(np.abs(approx - real) <= real * 2.0**-30)
    assert quantize_multiplier(0.5) == (2**30, 0)
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1 - 2**-40) == (INT32_MAX, 0)
    m, s = quantize_multiplier(2.0**-40)
    assert s == 31 and m == 2**22
    for bad in (1.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"must be in \[0, 1\): the tflite requantizer "
                                             r"has a right shift only"):
            quantize_multiplier(bad)


def test_quantize_multiplier_half_up():
    rng = np.random.default_rng(SEED + 4)
    real = 2.0 ** rng.uniform(-30, 15, 1000)
    M, S = quantize_multiplier_half_up(real)
    assert M.max() < 2**HALF_UP_M_WIDTH and S.min() >= 0 and S.max() <= HALF_UP_S_MAX
    assert np.all(M >= 2**15)                         # full 16-bit precision
    assert np.all(np.abs(M / 2.0**S - real) <= real * 2.0**-15)
    with pytest.raises(ValueError, match=r"must be in \[0, 65535.5\)"):
        quantize_multiplier_half_up(70000.0)


@pytest.mark.parametrize("mode", ["tflite", "half_up"])
def test_make_requant_close_to_real(mode):
    rng = np.random.default_rng(SEED + 5)
    real = rng.uniform(1e-4, 1e-2, 4)
    rq = make_requant(real, out_zero_point=3, mode=mode, out_width=16)
    acc = rng.integers(-2**24, 2**24, (2, 4, 5, 5))
    got = requantize(acc, rq)
    ideal = np.clip(acc * real.reshape(1, -1, 1, 1) + 3, -2**15, 2**15 - 1)
    assert np.all(np.abs(got - ideal) <= 1.0)


# ---- left shifts (negative shift in tflite mode) and clamp bounds ----

def wrap_int32(v):
    """C int32 arithmetic result of an exact integer ``v`` (two's-complement wrap)."""
    return (v + 2**31) % 2**32 - 2**31


def ref_multiply_by_quantized_multiplier(x, M, tflite_shift):
    """TFLite's MultiplyByQuantizedMultiplier in TFLite's own convention (positive = left)."""
    left_shift = tflite_shift if tflite_shift > 0 else 0
    right_shift = 0 if tflite_shift > 0 else -tflite_shift
    return ref_rdbpot(ref_srdhm(wrap_int32(x * (1 << left_shift)), M), right_shift)


def test_requantize_left_shift_hand_worked():
    # M = 2**30 (0.5), S = -3 (left 3): real multiplier 4.0
    rq = Requant(mode="tflite", multiplier=2**30, shift=-3, out_zero_point=-7)
    assert requantize(np.array([5, -5, 0, 30, 40]), rq, 0).tolist() == [13, -27, -7, 113, 127]
    # M = 3 * 2**29 (0.75), S = -1: 6 * 0.75 = 4.5 -> 5; -6 * 0.75 = -4.5 -> -4 (SRDHM ties up)
    rq = Requant(mode="tflite", multiplier=3 * 2**29, shift=-1)
    assert requantize(np.array([3, -3, 1]), rq, 0).tolist() == [5, -4, 2]
    # the int32 wrap: 2**28 * 2**4 = 2**32 -> 0; (2**27 + 1) * 2**4 = 2**31 + 16 -> -2**31 + 16
    rq = Requant(mode="tflite", multiplier=2**30, shift=-4, out_zero_point=3)
    assert requantize(np.array([2**28, 2**27 + 1, 2**26]), rq, 0).tolist() == [3, -128, 127]
    assert rq.left_shift == 4 and Requant(shift=[2, -5, 0]).left_shift == 5
    assert Requant(shift=[2, 0]).left_shift == 0


def test_left_shift_wrap32_hand_worked():
    from systolic_conv.contract import left_shift_wrap32
    assert left_shift_wrap32(2**30, 1) == -2**31
    assert left_shift_wrap32(-1, 31) == -2**31
    assert left_shift_wrap32(3, 31) == -2**31
    assert left_shift_wrap32(2**40 + 3, 4) == 48
    assert left_shift_wrap32(-5, 0) == -5
    assert left_shift_wrap32(np.array([2**31 - 1]), 1).tolist() == [-2]
    with pytest.raises(ValueError, match=r"^left=32 must be in \[0, 31\]$"):
        left_shift_wrap32(1, 32)


@pytest.mark.parametrize("acc_bits", [20, 32])
def test_requantize_signed_shift_random(acc_bits):
    """Every shift -31..31 against TFLite's rule written in TFLite's sign convention."""
    seed = SEED + 100 + acc_bits
    rng = np.random.default_rng(seed)
    C = 63
    tfl_shift = np.arange(-31, 32)                      # TFLite's convention
    M = rng.integers(2**30, 2**31, C, dtype=np.int64)
    M[:3] = [INT32_MAX, 2**30, 0]
    acc = rng.integers(-(1 << (acc_bits - 1)), 1 << (acc_bits - 1), (2, C, 3, 7), dtype=np.int64)
    acc[0, :, 0, :4] = [INT32_MIN if acc_bits == 32 else -(1 << (acc_bits - 1)), -1, 0, 1]
    zp = int(rng.integers(-128, 128))
    act_min, act_max = sorted(int(v) for v in rng.integers(-128, 128, 2))
    rq = Requant(mode="tflite", multiplier=M.tolist(), shift=(-tfl_shift).tolist(),
                 out_zero_point=zp, act_min=act_min, act_max=act_max)
    got = requantize(acc, rq)
    want = np.empty_like(acc)
    for idx in np.ndindex(acc.shape):
        c = idx[1]
        v = ref_multiply_by_quantized_multiplier(int(acc[idx]), int(M[c]), int(tfl_shift[c]))
        want[idx] = min(max(v + zp, act_min), act_max)
    assert np.array_equal(got, want), f"seed {seed}"


def test_requantize_clamp_bounds():
    acc = np.array([100, -100, 10, 0, 13])
    rq = Requant(mode="tflite", multiplier=2**30, shift=0, act_min=-10, act_max=20)
    assert (rq.qmin, rq.qmax) == (-10, 20)
    assert requantize(acc, rq, 0).tolist() == [20, -10, 5, 0, 7]
    # relu=True with act_max: ReLU6-like, lower bound is the zero point
    rq = Requant(mode="tflite", multiplier=2**30, shift=0, out_zero_point=-4, relu=True,
                 act_max=30)
    assert (rq.qmin, rq.qmax) == (-4, 30)
    assert requantize(acc, rq, 0).tolist() == [30, -4, 1, -4, 3]
    # act_min equal to the zero point is the same clamp as relu=True
    a = Requant(mode="half_up", multiplier=1, shift=1, out_zero_point=2, act_min=2)
    b = Requant(mode="half_up", multiplier=1, shift=1, out_zero_point=2, relu=True)
    assert requantize(acc, a, 0).tolist() == requantize(acc, b, 0).tolist() == \
        [52, 2, 7, 2, 9]
    # defaults are the output range
    rq = Requant(out_width=4)
    assert (rq.qmin, rq.qmax, rq.act_min, rq.act_max) == (-8, 7, None, None)
    assert Requant(act_min=np.int16(-3)).act_min == -3


def test_quantize_multiplier_tflite_hand_worked():
    from systolic_conv.quant import quantize_multiplier_tflite as qm
    # TFLite: 0.5 -> (2**30, shift 0); 1.0 -> (2**30, +1); 3.0 = 0.75 * 2**2 -> (3 * 2**29, +2);
    # our S is TFLite's shift negated
    assert qm(0.5) == (2**30, 0)
    assert qm(1.0) == (2**30, -1)
    assert qm(3.0) == (3 * 2**29, -2)
    assert qm(0.0) == (0, 0)
    assert qm(1 - 2**-40) == (2**30, -1)          # rounds to 2**31: halved, shift + 1
    assert qm(2.0**-32) == (2**30, 31)            # TFLite shift -31: kept
    assert qm(2.0**-33) == (0, 0)                 # TFLite shift -32: flushed to zero
    assert qm(1.5 * 2**30) == (3 * 2**29, -31)
    M, S = qm(np.array([0.25, 8.0]))
    assert M.tolist() == [2**30, 2**30] and S.tolist() == [1, -4]
    for bad in (2.0**31, -0.5, float("inf")):
        with pytest.raises(ValueError, match=r"must be in \[0, 2\*\*31\) \(a left shift of "
                                             r"at most 31\)$"):
            qm(bad)


def test_make_requant_clamps():
    rq = make_requant(0.25, out_zero_point=-3, act_min=-3, act_max=50)
    assert (rq.multiplier, rq.shift, rq.qmin, rq.qmax) == (2**30, 1, -3, 50)
