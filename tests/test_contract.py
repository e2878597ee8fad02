"""conv2d argument semantics and validation (contract.py) against PyTorch, and the
integer requantization contract against hand-worked numbers and its definition."""

import math
import os
import re
from fractions import Fraction

import numpy as np
import pytest

import torch
import torch.nn.functional as F  # noqa: E402

from systolic_conv.contract import (  # noqa: E402
    DATA_WIDTHS, ConvGeometry, Requant, acc_bound_ok, check_int_tensor, compute_padding,
    conv_geometry, default_acc_width, max_reduction_tile, normalize_pair, output_size,
    requantize)
from systolic_conv.golden import conv2d_int  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning"),
    pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning"),
]


def torch_conv(input_shape, weight_shape, bias_shape=None, stride=1, padding=0,
               dilation=1, groups=1, padding_mode="zeros"):
    """Run nn.Conv2d (constructor + forward) on zero tensors of the given shapes."""
    C_in = input_shape[-3] if len(input_shape) >= 3 else 1
    m = torch.nn.Conv2d(C_in, weight_shape[0], tuple(weight_shape[2:4]), stride=stride,
                        padding=padding, dilation=dilation, groups=groups,
                        bias=bias_shape is not None, padding_mode=padding_mode)
    m.weight = torch.nn.Parameter(torch.zeros(weight_shape, dtype=torch.float64))
    if bias_shape is not None:
        m.bias = torch.nn.Parameter(torch.zeros(bias_shape, dtype=torch.float64))
    with torch.no_grad():
        return m(torch.zeros(input_shape, dtype=torch.float64))


X = (2, 4, 5, 6)
Wt = (6, 4, 3, 3)

# (id, conv_geometry kwargs, exception, exact message)
REJECTIONS = [
    ("input_rank2", dict(input_shape=(5, 6), weight_shape=Wt), ValueError,
     "input must be 3-D (C, H, W) or 4-D (N, C, H, W), not of shape (5, 6)"),
    ("input_rank5", dict(input_shape=(1, 2, 4, 5, 6), weight_shape=Wt), ValueError,
     "input must be 3-D (C, H, W) or 4-D (N, C, H, W), not of shape (1, 2, 4, 5, 6)"),
    ("weight_rank3", dict(input_shape=X, weight_shape=(6, 4, 3)), ValueError,
     "weight must be 4-D (C_out, C_in/groups, kh, kw), not of shape (6, 4, 3)"),
    ("weight_rank5", dict(input_shape=X, weight_shape=(6, 4, 3, 3, 1)), ValueError,
     "weight must be 4-D (C_out, C_in/groups, kh, kw), not of shape (6, 4, 3, 3, 1)"),
    ("in_channels_mismatch", dict(input_shape=X, weight_shape=(6, 3, 3, 3)), ValueError,
     "weight shape (6, 3, 3, 3) with groups=1 expects in_channels=3, but the input has "
     "in_channels=4 (input shape (2, 4, 5, 6))"),
    ("in_channels_mismatch_groups", dict(input_shape=X, weight_shape=(6, 4, 3, 3), groups=2),
     ValueError, "weight shape (6, 4, 3, 3) with groups=2 expects in_channels=8, but the "
     "input has in_channels=4 (input shape (2, 4, 5, 6))"),
    ("groups_divide_in", dict(input_shape=(1, 16, 8, 8), weight_shape=(33, 5, 3, 3), groups=3),
     ValueError, "groups=3 must divide in_channels=16"),
    ("groups_divide_out", dict(input_shape=X, weight_shape=(5, 2, 3, 3), groups=2),
     ValueError, "groups=2 must divide out_channels=5"),
    ("groups_zero", dict(input_shape=X, weight_shape=Wt, groups=0), ValueError,
     "groups=0 must be a positive integer"),
    ("groups_negative", dict(input_shape=X, weight_shape=Wt, groups=-1), ValueError,
     "groups=-1 must be a positive integer"),
    ("stride_zero", dict(input_shape=X, weight_shape=Wt, stride=0), ValueError,
     "stride=(0, 0) must be positive"),
    ("stride_negative", dict(input_shape=X, weight_shape=Wt, stride=(1, -1)), ValueError,
     "stride=(1, -1) must be positive"),
    ("stride_three", dict(input_shape=X, weight_shape=Wt, stride=(1, 1, 1)), ValueError,
     "stride=(1, 1, 1) must be an int or a pair of ints, not 3 values"),
    ("dilation_zero", dict(input_shape=X, weight_shape=Wt, dilation=0), ValueError,
     "dilation=(0, 0) must be positive"),
    ("padding_negative", dict(input_shape=X, weight_shape=Wt, padding=-1), ValueError,
     "padding=-1 must be non-negative"),
    ("padding_negative_pair", dict(input_shape=X, weight_shape=Wt, padding=(1, -1)),
     ValueError, "padding=(1, -1) must be non-negative"),
    ("padding_string", dict(input_shape=X, weight_shape=Wt, padding="foo"), ValueError,
     "padding='foo' must be 'valid', 'same', an int or a pair of ints"),
    ("same_strided", dict(input_shape=X, weight_shape=Wt, padding="same", stride=2),
     ValueError, "padding='same' requires stride=1, not stride=(2, 2)"),
    ("same_strided_w", dict(input_shape=X, weight_shape=Wt, padding="same", stride=(1, 2)),
     ValueError, "padding='same' requires stride=1, not stride=(1, 2)"),
    ("kernel_too_big", dict(input_shape=X, weight_shape=(6, 4, 6, 3)), ValueError,
     "kernel (6, 3) with dilation=(1, 1) spans (6, 3), larger than the padded input (5, 6)"),
    ("kernel_too_big_dilated", dict(input_shape=X, weight_shape=Wt, dilation=3), ValueError,
     "kernel (3, 3) with dilation=(3, 3) spans (7, 7), larger than the padded input (5, 6)"),
    ("kernel_too_big_valid", dict(input_shape=X, weight_shape=(6, 4, 3, 7), padding="valid"),
     ValueError, "kernel (3, 7) with dilation=(1, 1) spans (3, 7), larger than the padded "
     "input (5, 6)"),
    ("kernel_too_big_n0", dict(input_shape=(0, 4, 2, 6), weight_shape=Wt), ValueError,
     "kernel (3, 3) with dilation=(1, 1) spans (3, 3), larger than the padded input (2, 6)"),
    ("kernel_zero", dict(input_shape=X, weight_shape=(6, 4, 0, 3)), ValueError,
     "kernel size (0, 3) of weight shape (6, 4, 0, 3) must be positive"),
    ("out_channels_zero", dict(input_shape=X, weight_shape=(0, 4, 3, 3)), ValueError,
     "out_channels=0 (weight shape (0, 4, 3, 3)) must be positive"),
    ("empty_height", dict(input_shape=(2, 4, 0, 6), weight_shape=Wt, padding=2), ValueError,
     "input spatial size (0, 6) must be positive (input shape (2, 4, 0, 6))"),
    ("empty_height_n0_reflect", dict(input_shape=(0, 4, 0, 6), weight_shape=Wt, padding=2,
                                     padding_mode="reflect"), ValueError,
     "input spatial size (0, 6) must be positive (input shape (0, 4, 0, 6))"),
    ("bias_length", dict(input_shape=X, weight_shape=Wt, bias_shape=(5,)), ValueError,
     "bias shape (5,) must be (out_channels,) = (6,)"),
    ("bias_rank", dict(input_shape=X, weight_shape=Wt, bias_shape=(6, 1)), ValueError,
     "bias shape (6, 1) must be (out_channels,) = (6,)"),
    ("reflect_pad_h", dict(input_shape=X, weight_shape=Wt, padding=5, padding_mode="reflect"),
     ValueError, "padding_mode='reflect' needs padding < input size, but pads (5, 5) on H=5"),
    ("reflect_pad_w", dict(input_shape=X, weight_shape=Wt, padding=(1, 6),
                           padding_mode="reflect"),
     ValueError, "padding_mode='reflect' needs padding < input size, but pads (6, 6) on W=6"),
    ("reflect_same_asymmetric", dict(input_shape=X, weight_shape=(6, 4, 4, 4), padding="same",
                                     dilation=3, padding_mode="reflect"),
     ValueError, "padding_mode='reflect' needs padding < input size, but pads (4, 5) on H=5"),
    ("circular_pad", dict(input_shape=X, weight_shape=Wt, padding=6, padding_mode="circular"),
     ValueError, "padding_mode='circular' needs padding <= input size, but pads (6, 6) on H=5"),
    ("padding_mode", dict(input_shape=X, weight_shape=Wt, padding_mode="foo"), ValueError,
     "padding_mode='foo' must be one of 'zeros', 'reflect', 'replicate', 'circular'"),
    ("stride_float", dict(input_shape=X, weight_shape=Wt, stride=1.0), TypeError,
     "stride=1.0 must be an int or a pair of ints, not float"),
    ("stride_bool", dict(input_shape=X, weight_shape=Wt, stride=True), TypeError,
     "stride=True must be an int or a pair of ints, not bool"),
    ("dilation_float_pair", dict(input_shape=X, weight_shape=Wt, dilation=(1, 2.0)), TypeError,
     "dilation=(1, 2.0) must be an int or a pair of ints"),
    ("groups_bool", dict(input_shape=X, weight_shape=Wt, groups=True), TypeError,
     "groups=True must be an int, not bool"),
    ("groups_float", dict(input_shape=X, weight_shape=Wt, groups=1.0), TypeError,
     "groups=1.0 must be an int, not float"),
]


@pytest.mark.parametrize("kwargs,exc,message", [r[1:] for r in REJECTIONS],
                         ids=[r[0] for r in REJECTIONS])
def test_rejections_match_torch(kwargs, exc, message):
    with pytest.raises(exc, match="^" + re.escape(message) + "$"):
        conv_geometry(**kwargs)
    # PyTorch rejects the same arguments (constructor or forward)
    with pytest.raises((RuntimeError, ValueError, TypeError)):
        torch_conv(**kwargs)


# Stricter than PyTorch, on purpose (documented in conv_geometry).
STRICTER = [
    ("in_channels_zero", dict(input_shape=(2, 0, 5, 6), weight_shape=(6, 0, 3, 3)),
     "in_channels=0 (input shape (2, 0, 5, 6)) must be positive"),
    ("negative_padding_reflect", dict(input_shape=X, weight_shape=Wt, padding=-1,
                                      padding_mode="reflect"),
     "padding=-1 must be non-negative"),
]


@pytest.mark.parametrize("kwargs,message", [r[1:] for r in STRICTER],
                         ids=[r[0] for r in STRICTER])
def test_stricter_than_torch(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        conv_geometry(**kwargs)
    torch_conv(**kwargs)        # PyTorch accepts these (with surprising results)


def test_golden_validates_before_work():
    x = np.zeros((1, 16, 8, 8), np.int8)
    w = np.zeros((33, 5, 3, 3), np.int8)
    with pytest.raises(ValueError, match=r"^groups=3 must divide in_channels=16$"):
        conv2d_int(x, w, groups=3)


@pytest.mark.parametrize("value,expected", [
    (3, (3, 3)), ((2, 5), (2, 5)), ([1, 4], (1, 4)), ((7,), (7, 7)),
    (np.int64(2), (2, 2)), ((np.int32(1), 3), (1, 3))])
def test_normalize_pair(value, expected):
    assert normalize_pair(value, "stride") == expected


@pytest.mark.parametrize("value,exc,message", [
    (True, TypeError, "stride=True must be an int or a pair of ints, not bool"),
    (np.bool_(True), TypeError, "stride=np.True_ must be an int or a pair of ints, not bool"),
    ((1, False), TypeError, "stride=(1, False) must be an int or a pair of ints"),
    ("2", TypeError, "stride='2' must be an int or a pair of ints, not str"),
    ((1, 2, 3), ValueError, "stride=(1, 2, 3) must be an int or a pair of ints, not 3 values"),
    ((), ValueError, "stride=() must be an int or a pair of ints, not 0 values"),
])
def test_normalize_pair_rejects(value, exc, message):
    with pytest.raises(exc, match="^" + re.escape(message) + "$"):
        normalize_pair(value, "stride")


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_same_padding_matches_torch(kernel, dilation):
    """'same': the odd extra row/column goes to the bottom/right, as in PyTorch."""
    k = (kernel, kernel + 1)
    d = (dilation, dilation + 1)
    top, bottom, left, right = compute_padding("same", k, d, 1)
    m = torch.nn.Conv2d(1, 1, k, padding="same", dilation=d, padding_mode="reflect")
    # nn.Conv2d stores F.pad-order pads: (left, right, top, bottom)
    assert (left, right, top, bottom) == tuple(m._reversed_padding_repeated_twice)
    total_h, total_w = d[0] * (k[0] - 1), d[1] * (k[1] - 1)
    assert (top + bottom, left + right) == (total_h, total_w)
    assert bottom - top == total_h % 2 and right - left == total_w % 2


def test_same_even_kernel_numerics():
    """The extra padding row/column is placed exactly where F.conv2d puts it."""
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (1, 2, 7, 8), dtype=np.int8)
    w = rng.integers(-128, 128, (3, 2, 4, 2), dtype=np.int8)
    for d in [(1, 1), (1, 2), (3, 1)]:
        ref = F.conv2d(torch.from_numpy(x.astype(np.float64)),
                       torch.from_numpy(w.astype(np.float64)), padding="same", dilation=d)
        got = conv2d_int(x, w, padding="same", dilation=d)
        assert got.shape == (1, 3, 7, 8)
        assert np.array_equal(got, ref.numpy().astype(np.int64))


def test_compute_padding_forms():
    assert compute_padding(2, 3) == (2, 2, 2, 2)
    assert compute_padding((1, 3), (3, 5)) == (1, 1, 3, 3)
    assert compute_padding("valid", (3, 5), 2, 3) == (0, 0, 0, 0)
    assert compute_padding("same", (1, 1)) == (0, 0, 0, 0)
    assert compute_padding("same", (4, 3), (1, 1)) == (1, 2, 1, 1)


@pytest.mark.parametrize("in_size,lo,hi,dil,k,s,expected", [
    # padded size, kernel span (k - 1) * dil + 1, then the stride, worked by hand
    (50, 4, 4, 1, 3, 2, 28),        # 58 padded, span 3: 55 // 2 + 1
    (100, 2, 2, 1, 5, 1, 100),      # 104 padded, span 5: 99 + 1
    (50, 4, 4, 3, 3, 2, 26),        # 58 padded, span 7: 51 // 2 + 1
    (7, 0, 0, 1, 7, 3, 1),          # the kernel spans the input exactly
    (8, 1, 2, 2, 4, 3, 2),          # 11 padded, span 7: 4 // 3 + 1
    (5, 0, 0, 1, 3, 5, 1),          # the stride is larger than what is left
    (9, 0, 1, 1, 2, 2, 5)])         # asymmetric pad: the extra column makes a 5th output
def test_output_size(in_size, lo, hi, dil, k, s, expected):
    assert output_size(in_size, lo, hi, dil, k, s) == expected
    # PyTorch agrees: F.pad by (lo, hi), then an unpadded conv along that axis
    x = F.pad(torch.zeros((1, 1, 1, in_size), dtype=torch.float64), (lo, hi))
    y = F.conv2d(x, torch.zeros((1, 1, 1, k), dtype=torch.float64), stride=(1, s),
                 dilation=(1, dil))
    assert y.shape[-1] == expected


@pytest.mark.parametrize("cfg", [
    dict(input_shape=(20, 16, 50, 100), weight_shape=(33, 16, 3, 3), stride=2),
    dict(input_shape=(20, 16, 50, 100), weight_shape=(33, 16, 3, 5), stride=(2, 1),
         padding=(4, 2)),
    dict(input_shape=(20, 16, 50, 100), weight_shape=(33, 16, 3, 5), stride=(2, 1),
         padding=(4, 2), dilation=(3, 1)),
    dict(input_shape=(0, 4, 9, 7), weight_shape=(6, 2, 2, 3), groups=2, padding=1),
    dict(input_shape=(0, 4, 0, 7), weight_shape=(6, 4, 1, 3), padding=2),
    dict(input_shape=(4, 9, 7), weight_shape=(8, 1, 3, 3), groups=4, stride=(2, 3)),
    dict(input_shape=(4, 9, 7), weight_shape=(8, 4, 4, 2), padding="same", dilation=(2, 3)),
    dict(input_shape=(1, 3, 6, 6), weight_shape=(3, 1, 3, 3), groups=3, padding=5,
         padding_mode="circular"),
    dict(input_shape=(1, 3, 6, 6), weight_shape=(3, 3, 2, 2), padding=(5, 4),
         padding_mode="reflect"),
    dict(input_shape=(2, 3, 2, 2), weight_shape=(3, 3, 3, 3), padding=7,
         padding_mode="replicate"),
])
def test_output_shapes_match_torch(cfg):
    g = conv_geometry(bias_shape=(cfg["weight_shape"][0],), **cfg)
    ref = torch_conv(bias_shape=(cfg["weight_shape"][0],), **cfg)
    assert g.output_shape == tuple(ref.shape)
    assert g.batched == (len(cfg["input_shape"]) == 4)


def test_geometry_fields_and_str():
    g = conv_geometry((20, 16, 50, 100), (33, 16, 3, 5), (33,), stride=(2, 1),
                      padding=(4, 2), dilation=(3, 1))
    assert isinstance(g, ConvGeometry)
    assert (g.H_out, g.W_out) == (26, 100)
    assert g.pad == (4, 4, 2, 2) and g.has_bias and g.batched
    assert g.reduction == 16 * 3 * 5
    assert g.macs == 20 * 33 * 26 * 100 * 16 * 15
    assert g.padded_size == (58, 104)
    assert g.weight_shape == (33, 16, 3, 5)
    s = str(g)
    assert "16x50x100 -> 33x26x100" in s and "dilation 3x1" in s and str(g.macs) in s
    u = conv_geometry((4, 9, 7), (8, 1, 3, 3), groups=4)
    assert u.N == 1 and not u.batched and u.output_shape == (8, 7, 5)
    assert "unbatched" in str(u)
    assert conv_geometry((0, 4, 9, 7), (6, 4, 3, 3)).macs == 0


def test_check_int_tensor():
    a = np.array([-128, 0, 127], dtype=np.int16)
    assert check_int_tensor(a, "x", 8) is a
    with pytest.raises(TypeError, match=r"^x must have an integer dtype, not float32$"):
        check_int_tensor(a.astype(np.float32), "x", 8)
    with pytest.raises(TypeError, match=r"^weight must have an integer dtype, not bool$"):
        check_int_tensor(np.array([True]), "weight", 8)
    with pytest.raises(ValueError,
                       match=re.escape("x has value 128 outside the signed 8-bit range "
                                       "[-128, 127]")):
        check_int_tensor(np.array([1, 128]), "x", 8)
    with pytest.raises(ValueError,
                       match=re.escape("bias has value -2147483649 outside the signed "
                                       "32-bit range [-2147483648, 2147483647]")):
        check_int_tensor(np.array([-2**31 - 1, 5]), "bias", 32)
    with pytest.raises(ValueError, match=re.escape("x has value -9 outside the signed "
                                                   "4-bit range [-8, 7]")):
        check_int_tensor(np.array([-9, 7], dtype=np.int8), "x", 4)
    check_int_tensor(np.zeros((0, 3), np.int32), "x", 4)


def test_acc_bound():
    assert DATA_WIDTHS == (4, 8, 16)
    assert [default_acc_width(w) for w in DATA_WIDTHS] == [24, 32, 48]
    # 8-bit: K * 128 * 128 + 2**31 - 1 < 2**31 only for K = 0; a smaller bias leaves room
    assert acc_bound_ok(0, 128, 128, 2**31 - 1, 32)
    assert not acc_bound_ok(1, 128, 128, 2**31 - 1, 32)
    k = max_reduction_tile(128, 128, 2**20, 32)
    assert k == (2**31 - 1 - 2**20) // (128 * 128)
    assert acc_bound_ok(k, 128, 128, 2**20, 32)
    assert not acc_bound_ok(k + 1, 128, 128, 2**20, 32)
    # 16-bit data in a 48-bit accumulator: exactly at the boundary
    k16 = max_reduction_tile(2**15, 2**15, 2**31, 48)
    assert k16 * 2**30 + 2**31 < 2**47 <= (k16 + 1) * 2**30 + 2**31
    assert max_reduction_tile(0, 127, 5, 32) is None
    assert max_reduction_tile(1, 1, 2**31, 32) == 0
    # Python ints: no overflow for huge K
    assert not acc_bound_ok(2**70, 2**15, 2**15, 0, 48)


def test_acc_bound_left_shift():
    # a tflite left shift L narrows the proof to B * 2**L < 2**31
    # 8-bit: 9 taps, |x| <= 128, |w| <= 127, |b| <= 1000: B = 147,304 < 2**18
    assert acc_bound_ok(9, 128, 127, 1000, 32, left_shift=13)       # 147304 * 2**13 < 2**31
    assert not acc_bound_ok(9, 128, 127, 1000, 32, left_shift=14)   # 147304 * 2**14 >= 2**31
    assert acc_bound_ok(9, 128, 127, 1000, 32, left_shift=0)
    # max_reduction_tile agrees at the boundary: (2**(31-L) - 1 - b) // (x * w)
    for L in (0, 1, 5, 13, 31):
        k = max_reduction_tile(128, 127, 1000, 32, left_shift=L)
        assert k == max((2**(31 - L) - 1 - 1000) // (128 * 127), 0)
        if k:
            assert acc_bound_ok(k, 128, 127, 1000, 32, left_shift=L)
        assert not acc_bound_ok(k + 1, 128, 127, 1000, 32, left_shift=L)
    # the narrower of the accumulator and the shifted value wins
    assert max_reduction_tile(1, 1, 0, 24, left_shift=2) == 2**23 - 1
    assert max_reduction_tile(1, 1, 0, 32, left_shift=31) == 0
    with pytest.raises(ValueError, match=r"^left_shift=32 must be in \[0, 31\]$"):
        acc_bound_ok(1, 1, 1, 0, 32, left_shift=32)
    with pytest.raises(ValueError, match=r"^left_shift=-1 must be in \[0, 31\]$"):
        max_reduction_tile(1, 1, 0, 32, left_shift=-1)


# ----------------------------------------------------------------------------- requantization
# The integer contract of DESIGN.md section 1, checked against hand-worked numbers and
# against a transcription of its definitions with exact rationals (fractions.Fraction),
# not against contract.py's bit-level code:
#   tflite:  h = acc * M / 2**31 rounded to nearest, ties toward +inf (gemmlowp's
#            SaturatingRoundingDoublingHighMul), then h / 2**S rounded to nearest, ties
#            away from zero (RoundingDivideByPOT); a negative S first multiplies acc by
#            2**-S in int32 (two's-complement wrap, as TFLite's kernels do);
#   half_up: acc * M / 2**S rounded to nearest, ties toward +inf;
#   then + out_zero_point and clamped to [qmin, qmax].

REQUANT_SEED = int(os.environ.get("CONTRACT_SEED", "20251203"))

# (id, Requant kwargs, accumulators, expected outputs), every number worked by hand
REQUANT_CASES = [
    ("tflite_half_ties_s0", dict(multiplier=2**30, shift=0),          # x 0.5
     [3, -3, 1, -1, 0, 5, -5, 254, -256], [2, -1, 1, 0, 0, 3, -2, 127, -128]),
    ("tflite_quarter_ties_away", dict(multiplier=2**30, shift=1),     # x 0.25
     # 6 -> h 3 -> 1.5 -> 2; -6 -> -3 -> -1.5 -> -2; 7 -> h 4 (3.5 up) -> 2;
     # -7 -> h -3 (-3.5 up) -> -1.5 -> -2; 10 -> 5 -> 2.5 -> 3
     [6, -6, 2, -2, 10, -10, 4, -4, 100, -100, 7, -7],
     [2, -2, 1, -1, 3, -3, 1, -1, 25, -25, 2, -2]),
    ("tflite_saturates_both_ends", dict(multiplier=2**30, shift=0, out_zero_point=10),
     [2**40, -2**40, 234, 236, -276, -278], [127, -128, 127, 127, -128, -128]),
    ("tflite_relu_at_zero_point", dict(multiplier=2**30, shift=0, out_zero_point=-3, relu=True),
     [-10, 20, -2, 2, 1], [-3, 7, -3, -2, -2]),
    ("tflite_act_bounds", dict(multiplier=2**30, shift=0, act_min=-5, act_max=20),
     [100, -100, 10, -9], [20, -5, 5, -4]),
    ("tflite_shift31_max_multiplier", dict(multiplier=2**31 - 1, shift=31, out_width=16),
     # 2**40 -> h 2**40 - 2**9 -> 511.99.. -> 512; 2**30 -> h 2**30 (ties up) -> 0.5 -> 1;
     # -2**30 -> h -2**30 + 1 -> -0.49.. -> 0
     [2**40, -2**40, 3 * 2**31, -3 * 2**31, 2**31, 2**30, -2**30],
     [512, -512, 3, -3, 1, 1, 0]),
    ("tflite_shift31_ties", dict(multiplier=2**30, shift=31, out_width=16),
     [3 * 2**31, -3 * 2**31, 2**31, -2**31, 2**31 - 2, -(2**31 - 2)], [2, -2, 1, -1, 0, 0]),
    ("tflite_48bit_accumulator", dict(multiplier=2**30, shift=20, out_width=32),
     [2**47 - 1, -2**47, 2**21 - 1, -(2**21 + 1)], [2**26, -2**26, 1, -1]),
    ("tflite_left_shift_wraps_int32", dict(multiplier=2**30, shift=-2),
     # acc * 4 in int32, then x 0.5: 2**29 -> 2**31 wraps to -2**31; 2**30 -> 2**32 wraps to 0
     [3, -3, 2**29 - 1, 2**29, 2**30, -2**29, -2**29 - 1], [6, -6, 127, -128, 0, -128, 127]),
    ("half_up_ties_up", dict(mode="half_up", multiplier=1, shift=1),
     [1, -1, 3, -3, 5, -5, 0, 2, -2], [1, 0, 2, -1, 3, -2, 0, 1, -1]),
    ("half_up_multiplier", dict(mode="half_up", multiplier=3, shift=2),
     [2, -2, 1, -1, 6, -6], [2, -1, 1, -1, 5, -4]),
    ("half_up_shift0_saturates", dict(mode="half_up", multiplier=5, shift=0),
     [-7, 25, 26, -26, -25], [-35, 125, 127, -128, -125]),
    ("half_up_shift47", dict(mode="half_up", multiplier=65535, shift=47, out_width=32),
     [2**47 - 1, -2**47, 2**46, -2**46], [65535, -65535, 32768, -32767]),
    ("half_up_4bit_relu", dict(mode="half_up", multiplier=1, shift=2, out_zero_point=-2,
                               relu=True, out_width=4),
     [40, -40, 6, -6, 10], [7, -2, 0, -2, 1]),
]


@pytest.mark.parametrize("kwargs,acc,expected", [c[1:] for c in REQUANT_CASES],
                         ids=[c[0] for c in REQUANT_CASES])
def test_requantize_hand_worked(kwargs, acc, expected):
    rq = Requant(**kwargs)
    got = requantize(np.array(acc, dtype=np.int64), rq, channel_axis=0)
    assert got.dtype == np.int64 and got.tolist() == expected
    assert [ref_requant(a, rq.mode, rq.multiplier, rq.shift, rq.out_zero_point, rq.qmin,
                        rq.qmax) for a in acc] == expected


def test_requantize_per_channel_hand_worked():
    # channel 0: x 0.5, S 0; channel 1: M 2**29 (x 0.25), then S 1 (x 0.125 in all)
    rq = Requant(mode="tflite", multiplier=[2**30, 2**29], shift=[0, 1])
    acc = np.array([[4, -3, 7], [8, -8, 12]])
    # ch1: 8 -> h 2 -> 1; -8 -> -2 -> -1; 12 -> h 3 -> 1.5 -> 2
    assert requantize(acc, rq, channel_axis=0).tolist() == [[2, -1, 4], [1, -1, 2]]
    assert requantize(acc.T[None], rq, channel_axis=-1).tolist() == [[[2, 1], [-1, -1], [4, 2]]]


def ref_requant(acc, mode, M, S, zp, lo, hi):
    """One accumulator through the contract's definition, with exact rationals."""
    half = Fraction(1, 2)
    if mode == "tflite":
        x = acc
        if S < 0:                           # int32 product acc * 2**-S, wrapped
            x = (acc * 2**-S + 2**31) % 2**32 - 2**31
        h = math.floor(Fraction(x * M, 2**31) + half)
        q = Fraction(h, 2**max(S, 0))
        mag = math.floor(abs(q) + half)
        r = mag if q >= 0 else -mag
    else:
        r = math.floor(Fraction(acc * M, 2**S) + half)
    return min(max(r + zp, lo), hi)


@pytest.mark.parametrize("mode", ["tflite", "half_up"])
def test_requantize_random_against_definition(mode):
    """Random per-channel parameters, accumulators over the whole 48-bit range and near
    rounding ties, against :func:`ref_requant` (seed printed; CONTRACT_SEED replays)."""
    seed = REQUANT_SEED + (mode == "half_up")
    print(f"CONTRACT_SEED={seed}")
    rng = np.random.default_rng(seed)
    C = 6
    for trial in range(6):
        # channel 0: the largest multiplier; channel 1: a multiplier that makes ties
        # (tflite 2**30: h = acc / 2, so odd * 2**S is a tie; half_up 1: odd * 2**(S-1))
        if mode == "tflite":
            M = rng.integers(0, 2**31, C)
            M[0], M[1] = 2**31 - 1, 2**30
            S = rng.integers(-31 if trial % 2 else 0, 32, C)
            tie_exp = np.maximum(S, 0)
        else:
            M = rng.integers(0, 2**16, C)
            M[0], M[1] = 2**16 - 1, 1
            S = rng.integers(0, 48, C)
            tie_exp = np.maximum(S - 1, 0)
        out_width = int(rng.choice([4, 8, 16, 32]))
        lo_w, hi_w = -2**(out_width - 1), 2**(out_width - 1) - 1
        zp = int(rng.integers(lo_w, hi_w + 1))
        relu = bool(rng.random() < 0.3)
        rq = Requant(mode=mode, multiplier=M, shift=S, out_zero_point=zp, out_width=out_width,
                     relu=relu)
        # a mix: full range, small, and values whose scaled result sits on or next to a tie
        acc = np.concatenate([rng.integers(-2**47, 2**47, (C, 20)),
                              rng.integers(-2**12, 2**12, (C, 20)),
                              np.clip((rng.integers(-50, 50, (C, 10)) * 2 + 1).astype(object)
                                      * (1 << tie_exp[:, None].astype(object))
                                      + rng.integers(-1, 2, (C, 10)),
                                      -2**47, 2**47 - 1).astype(np.int64),
                              [[-2**47, 2**47 - 1, 0, 1, -1]] * C], axis=1)
        got = requantize(acc, rq, channel_axis=0)
        for c in range(C):
            want = [ref_requant(int(a), mode, int(M[c]), int(S[c]), zp, rq.qmin, rq.qmax)
                    for a in acc[c]]
            assert got[c].tolist() == want, (
                f"CONTRACT_SEED={seed} trial {trial} channel {c}: M={M[c]} S={S[c]} "
                f"zp={zp} width={out_width} relu={relu}")
        assert got.min() >= rq.qmin and got.max() <= rq.qmax
