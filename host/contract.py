"""The integer contract of systolic-conv and the argument semantics of conv2d.

This module is the single definition of

* how ``conv2d`` arguments are interpreted and validated (PyTorch's
  ``nn.Conv2d`` / ``torch.nn.functional.conv2d`` semantics): :func:`normalize_pair`,
  :func:`compute_padding`, :func:`output_size`, :func:`conv_geometry`;
* the integer data path: operand widths (:data:`DATA_WIDTHS`,
  :func:`default_acc_width`, :func:`check_int_tensor`), the accumulator
  no-wrap proof (:func:`acc_bound_ok`, :func:`max_reduction_tile`);
* requantization with its named rounding rules
  (:func:`saturating_rounding_doubling_high_mul`, :func:`rounding_divide_by_pot`,
  :func:`round_shift_half_up`, :func:`left_shift_wrap32`, :class:`Requant`,
  :func:`requantize`).

The golden model, the RTL checks and the host driver all import from here.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DATA_WIDTHS", "BIAS_WIDTH", "ACC_MAX_WIDTH", "PADDING_MODES", "REQUANT_MODES",
    "TFLITE_M_MAX", "TFLITE_S_MAX", "HALF_UP_M_WIDTH", "HALF_UP_S_MAX",
    "default_acc_width", "check_data_width", "normalize_pair", "compute_padding", "output_size",
    "ConvGeometry", "conv_geometry", "check_int_tensor", "int_range",
    "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot",
    "round_shift_half_up", "left_shift_wrap32", "Requant", "requantize", "acc_bound_ok",
    "max_reduction_tile", "TFLITE_S_MIN",
]

#: Operand widths (bits, signed) the hardware and the golden model support.
DATA_WIDTHS = (4, 8, 16)
#: Width of the bias (signed), as in TFLite int8 models.
BIAS_WIDTH = 32
#: Widest accumulator the requantizer accepts (``default_acc_width(16)``).
ACC_MAX_WIDTH = 48
#: ``padding_mode`` values, as in ``nn.Conv2d``.
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
#: Requantization rounding modes.
REQUANT_MODES = ("tflite", "half_up")
#: ``tflite`` mode: M is a non-negative Q31 int32, S a right shift in
#: ``0..TFLITE_S_MAX`` or, when negative, a left shift by ``-S`` (down to
#: ``TFLITE_S_MIN``).
TFLITE_M_MAX = 2**31 - 1
TFLITE_S_MAX = 31
TFLITE_S_MIN = -31
#: ``half_up`` mode: M is an unsigned integer of this many bits. With a
#: 48-bit accumulator the product ``acc * M`` needs 48 + 16 = 64 signed bits
#: (``|acc * M| <= 2**47 * (2**16 - 1) < 2**63``): it fits int64 exactly.
HALF_UP_M_WIDTH = 16
#: ``half_up`` mode: largest right shift S.
HALF_UP_S_MAX = 47

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def default_acc_width(data_width):
    """Default accumulator width for a data width: ``2 * data_width + 16``.

    Parameters
    ----------
    data_width : int
        Operand width in bits.

    Returns
    -------
    int
        32 for 8-bit data, 48 for 16-bit data, 24 for 4-bit data.
    """
    return 2 * _as_int(data_width, "data_width") + 16


def check_data_width(value, name="data_width"):
    """``value`` as an int if it is one of :data:`DATA_WIDTHS`, else an error naming ``name``.

    Raises
    ------
    TypeError
        When ``value`` is not an integer.
    ValueError
        When it is not 4, 8 or 16.
    """
    value = _as_int(value, name)
    if value not in DATA_WIDTHS:
        raise ValueError(f"{name}={value} must be one of {DATA_WIDTHS}")
    return value


def int_range(width):
    """Signed range ``(-2**(width-1), 2**(width-1) - 1)`` of a ``width``-bit integer."""
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


# --------------------------------------------------------------------------
# Argument normalization
# --------------------------------------------------------------------------

def _is_int(value):
    t = type(value)
    if t is int:
        return True
    if t is bool or t is np.bool_:
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _as_int(value, name):
    if not _is_int(value):
        raise TypeError(f"{name}={value!r} must be an int, not {type(value).__name__}")
    return operator.index(value)


def normalize_pair(value, name):
    """Normalize an int-or-pair argument (``stride``, ``dilation``, ...) to a pair.

    Parameters
    ----------
    value : int or tuple or list
        An int (used for both height and width) or a sequence of two ints
        ``(height, width)``. A one-element sequence is expanded, as
        ``torch.nn.functional.conv2d`` does. Bools are rejected.
    name : str
        Argument name used in error messages.

    Returns
    -------
    tuple of int
        ``(height_value, width_value)``.

    Raises
    ------
    TypeError
        If ``value`` (or an element) is not an int.
    ValueError
        If a sequence does not have one or two elements.
    """
    if type(value) is int:
        return (value, value)
    if _is_int(value):
        v = operator.index(value)
        return (v, v)
    if isinstance(value, (tuple, list)):
        if len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
            return tuple(value)
        if not all(_is_int(v) for v in value):
            raise TypeError(f"{name}={value!r} must be an int or a pair of ints")
        if len(value) == 1:
            v = operator.index(value[0])
            return (v, v)
        if len(value) == 2:
            return (operator.index(value[0]), operator.index(value[1]))
        raise ValueError(f"{name}={value!r} must be an int or a pair of ints, "
                         f"not {len(value)} values")
    raise TypeError(f"{name}={value!r} must be an int or a pair of ints, "
                    f"not {type(value).__name__}")


def compute_padding(padding, kernel_size, dilation=1, stride=1):
    """Resolve a ``padding`` argument to explicit ``(top, bottom, left, right)`` pads.

    Parameters
    ----------
    padding : int, pair of int, 'valid' or 'same'
        An int or ``(pad_h, pad_w)`` pads both sides of each dimension equally;
        ``'valid'`` is no padding; ``'same'`` pads so that the output has the
        input's size (stride must be 1). For ``'same'`` the total padding of a
        dimension is ``dilation * (kernel - 1)``; ``top = total // 2`` and
        ``bottom = total - top``: when the total is odd **the extra row goes to
        the bottom and the extra column to the right**, exactly as PyTorch
        does (``F.conv2d`` and ``nn.Conv2d`` with any ``padding_mode``).
    kernel_size, dilation, stride : int or pair of int
        As in ``nn.Conv2d``.

    Returns
    -------
    tuple of int
        ``(top, bottom, left, right)``.

    Raises
    ------
    ValueError
        Unknown padding string, negative padding, ``'same'`` with a stride
        other than 1, or non-positive kernel size, dilation or stride.
    TypeError
        Non-integer values.
    """
    kh, kw = normalize_pair(kernel_size, "kernel_size")
    dh, dw = normalize_pair(dilation, "dilation")
    sh, sw = normalize_pair(stride, "stride")
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel_size={(kh, kw)} must be positive")
    if dh < 1 or dw < 1:
        raise ValueError(f"dilation={(dh, dw)} must be positive")
    if sh < 1 or sw < 1:
        raise ValueError(f"stride={(sh, sw)} must be positive")
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError(f"padding='same' requires stride=1, not stride={(sh, sw)}")
            total_h, total_w = dh * (kh - 1), dw * (kw - 1)
            top, left = total_h // 2, total_w // 2
            return (top, total_h - top, left, total_w - left)
        raise ValueError(f"padding={padding!r} must be 'valid', 'same', an int or a pair of ints")
    ph, pw = normalize_pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding={padding!r} must be non-negative")
    return (ph, ph, pw, pw)


def output_size(in_size, pad_lo, pad_hi, dilation, kernel, stride):
    """Output length of one spatial dimension.

    ``floor((in_size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) / stride) + 1``
    (may be < 1 for an invalid geometry; :func:`conv_geometry` rejects that).
    """
    return (in_size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


# --------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvGeometry:
    """Validated geometry of one conv2d call (all sizes resolved).

    ``N`` is 1 for an unbatched ``(C, H, W)`` input (``batched`` is False).
    ``pad`` is ``(top, bottom, left, right)``; for non-``zeros`` padding modes
    the input is padded first (like ``F.pad``) by these amounts and then
    convolved without padding, as ``nn.Conv2d`` does.
    """

    N: int
    C_in: int
    H: int
    W: int
    C_out: int
    kh: int
    kw: int
    stride: tuple
    dilation: tuple
    groups: int
    pad: tuple
    padding_mode: str
    H_out: int
    W_out: int
    has_bias: bool
    batched: bool = True

    @property
    def reduction(self):
        """Reduction length per output: ``(C_in // groups) * kh * kw``."""
        return (self.C_in // self.groups) * self.kh * self.kw

    @property
    def macs(self):
        """``N * C_out * H_out * W_out * (C_in/groups) * kh * kw`` (padded taps count)."""
        return self.N * self.C_out * self.H_out * self.W_out * self.reduction

    @property
    def padded_size(self):
        """``(H + top + bottom, W + left + right)``."""
        t, b, l, r = self.pad
        return (self.H + t + b, self.W + l + r)

    @property
    def input_shape(self):
        """Shape of the input (without N when unbatched)."""
        shape = (self.C_in, self.H, self.W)
        return (self.N,) + shape if self.batched else shape

    @property
    def weight_shape(self):
        """``(C_out, C_in // groups, kh, kw)``."""
        return (self.C_out, self.C_in // self.groups, self.kh, self.kw)

    @property
    def output_shape(self):
        """Shape of the output (without N when unbatched)."""
        shape = (self.C_out, self.H_out, self.W_out)
        return (self.N,) + shape if self.batched else shape

    def __str__(self):
        t, b, l, r = self.pad
        batch = f"N={self.N}" if self.batched else "unbatched"
        return (f"conv2d {batch} {self.C_in}x{self.H}x{self.W} -> "
                f"{self.C_out}x{self.H_out}x{self.W_out}, "
                f"kernel {self.kh}x{self.kw}, stride {self.stride[0]}x{self.stride[1]}, "
                f"dilation {self.dilation[0]}x{self.dilation[1]}, groups {self.groups}, "
                f"pad t{t} b{b} l{l} r{r} ({self.padding_mode}), "
                f"{'bias' if self.has_bias else 'no bias'}, {self.macs} MACs")


def _shape(shape, name):
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{name}={shape!r} must be a shape (a sequence of ints)") from None
    if all(type(d) is int and d >= 0 for d in dims):
        return dims
    if not all(_is_int(d) and operator.index(d) >= 0 for d in dims):
        raise TypeError(f"{name}={shape!r} must be a sequence of non-negative ints")
    return tuple(operator.index(d) for d in dims)


def conv_geometry(input_shape, weight_shape, bias_shape=None, stride=1, padding=0,
                  dilation=1, groups=1, padding_mode="zeros"):
    """Validate conv2d arguments and resolve the geometry, before any work is done.

    Rejects every argument combination that ``nn.Conv2d`` / ``F.conv2d`` reject,
    with a ``ValueError`` or ``TypeError`` naming the argument and its value.
    Deviations (all stricter than PyTorch): ``in_channels=0`` is rejected
    (PyTorch returns a tensor with 0 output channels); negative padding is
    rejected for every ``padding_mode`` (``nn.Conv2d`` with a non-``zeros`` mode
    crops instead).

    Parameters
    ----------
    input_shape : sequence of int
        ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``. ``N = 0`` is allowed.
    weight_shape : sequence of int
        ``(C_out, C_in // groups, kh, kw)``.
    bias_shape : sequence of int, optional
        ``(C_out,)``, or None for no bias.
    stride, padding, dilation, groups, padding_mode
        As in ``nn.Conv2d``; ``padding`` may be ``'valid'`` or ``'same'``.

    Returns
    -------
    ConvGeometry
    """
    if not isinstance(padding_mode, str):
        raise TypeError(f"padding_mode={padding_mode!r} must be a string")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode={padding_mode!r} must be one of "
                         + ", ".join(repr(m) for m in PADDING_MODES))
    groups = _as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups={groups} must be a positive integer")
    stride = normalize_pair(stride, "stride")
    if min(stride) < 1:
        raise ValueError(f"stride={stride} must be positive")
    dilation = normalize_pair(dilation, "dilation")
    if min(dilation) < 1:
        raise ValueError(f"dilation={dilation} must be positive")

    ishape = _shape(input_shape, "input shape")
    if len(ishape) not in (3, 4):
        raise ValueError(f"input must be 3-D (C, H, W) or 4-D (N, C, H, W), "
                         f"not of shape {ishape}")
    batched = len(ishape) == 4
    N, C_in, H, W = ishape if batched else (1,) + ishape
    wshape = _shape(weight_shape, "weight shape")
    if len(wshape) != 4:
        raise ValueError(f"weight must be 4-D (C_out, C_in/groups, kh, kw), "
                         f"not of shape {wshape}")
    C_out, C_wg, kh, kw = wshape
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel size {(kh, kw)} of weight shape {wshape} must be positive")
    if C_out < 1:
        raise ValueError(f"out_channels={C_out} (weight shape {wshape}) must be positive")
    if C_in < 1:
        raise ValueError(f"in_channels={C_in} (input shape {ishape}) must be positive")
    if C_in % groups:
        raise ValueError(f"groups={groups} must divide in_channels={C_in}")
    if C_out % groups:
        raise ValueError(f"groups={groups} must divide out_channels={C_out}")
    if C_wg * groups != C_in:
        raise ValueError(f"weight shape {wshape} with groups={groups} expects "
                         f"in_channels={C_wg * groups}, but the input has "
                         f"in_channels={C_in} (input shape {ishape})")
    if (H < 1 or W < 1) and (N > 0 or padding_mode != "zeros"):
        raise ValueError(f"input spatial size {(H, W)} must be positive "
                         f"(input shape {ishape})")
    if bias_shape is not None:
        bshape = _shape(bias_shape, "bias shape")
        if bshape != (C_out,):
            raise ValueError(f"bias shape {bshape} must be (out_channels,) = ({C_out},)")

    pad = compute_padding(padding, (kh, kw), dilation, stride)
    top, bottom, left, right = pad
    if padding_mode == "reflect":
        for (lo, hi), size, dim in (((top, bottom), H, "H"), ((left, right), W, "W")):
            if lo >= size or hi >= size:
                raise ValueError(f"padding_mode='reflect' needs padding < input size, "
                                 f"but pads {(lo, hi)} on {dim}={size}")
    if padding_mode == "circular":
        for (lo, hi), size, dim in (((top, bottom), H, "H"), ((left, right), W, "W")):
            if lo > size or hi > size:
                raise ValueError(f"padding_mode='circular' needs padding <= input size, "
                                 f"but pads {(lo, hi)} on {dim}={size}")
    H_out = output_size(H, top, bottom, dilation[0], kh, stride[0])
    W_out = output_size(W, left, right, dilation[1], kw, stride[1])
    if H_out < 1 or W_out < 1:
        span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
        raise ValueError(f"kernel {(kh, kw)} with dilation={dilation} spans {span}, "
                         f"larger than the padded input {(H + top + bottom, W + left + right)}")
    return ConvGeometry(N=N, C_in=C_in, H=H, W=W, C_out=C_out, kh=kh, kw=kw,
                        stride=stride, dilation=dilation, groups=groups, pad=pad,
                        padding_mode=padding_mode, H_out=H_out, W_out=W_out,
                        has_bias=bias_shape is not None, batched=batched)


# --------------------------------------------------------------------------
# Integer operands
# --------------------------------------------------------------------------

def check_int_tensor(arr, name, width):
    """Check that ``arr`` holds integers that fit in ``width`` signed bits.

    Parameters
    ----------
    arr : array_like
        Integer array (any integer dtype; bool and float are rejected).
    name : str
        Argument name used in error messages.
    width : int
        Signed width in bits.

    Returns
    -------
    numpy.ndarray
        ``arr`` as an array (no copy when it already is one).

    Raises
    ------
    TypeError
        If the dtype is not an integer dtype.
    ValueError
        If a value lies outside ``[-2**(width-1), 2**(width-1) - 1]``.
    """
    return _int_tensor_extremes(arr, name, width)[0]


def _int_tensor_extremes(arr, name, width):
    """:func:`check_int_tensor`, also returning ``(array, min, max)`` (0, 0 if empty)."""
    a = np.asarray(arr)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, not {a.dtype}")
    if not a.size:
        return a, 0, 0
    amin, amax = int(a.min()), int(a.max())
    lo, hi = int_range(width)
    if amin < lo or amax > hi:
        bad = amin if amin < lo else amax
        raise ValueError(f"{name} has value {bad} outside the signed {width}-bit "
                         f"range [{lo}, {hi}]")
    return a, amin, amax


# --------------------------------------------------------------------------
# Accumulator bound
# --------------------------------------------------------------------------

def _left_shift(value):
    left = operator.index(value)
    if not 0 <= left <= -TFLITE_S_MIN:
        raise ValueError(f"left_shift={left} must be in [0, {-TFLITE_S_MIN}]")
    return left


def acc_bound_ok(k_tile, x_absmax, w_absmax, b_absmax, acc_width, left_shift=0):
    """Prove that a reduction tile cannot wrap a signed ``acc_width``-bit accumulator.

    True iff ``B = k_tile * x_absmax * w_absmax + b_absmax < 2**(acc_width - 1)``
    (exact Python-int arithmetic). ``x_absmax`` must include the pad value.

    With ``left_shift`` L > 0 (a ``tflite`` :class:`Requant` whose shift is
    ``-L``) the requantizer multiplies the accumulator by ``2**L`` in int32
    arithmetic, which wraps (see :func:`left_shift_wrap32`); the proof then also
    requires ``B * 2**L < 2**31``, i.e. the accumulator behaves as if it had
    ``min(acc_width, 32 - L)`` bits. ``left_shift`` is in ``0..31``.
    """
    k, x, w, b, aw = (operator.index(v) for v in (k_tile, x_absmax, w_absmax, b_absmax, acc_width))
    left = _left_shift(left_shift)
    bound = k * x * w + b
    return bound < 1 << (aw - 1) and (not left or bound << left < 1 << 31)


def max_reduction_tile(x_absmax, w_absmax, b_absmax, acc_width, left_shift=0):
    """Largest reduction length K for which :func:`acc_bound_ok` holds.

    ``left_shift`` as in :func:`acc_bound_ok`.

    Returns
    -------
    int or None
        The largest safe K (0 if even the bias alone does not fit), or None
        when ``x_absmax * w_absmax == 0`` and every K is safe (provided the
        bias fits).
    """
    x, w, b, aw = (operator.index(v) for v in (x_absmax, w_absmax, b_absmax, acc_width))
    left = _left_shift(left_shift)
    limit = min(1 << (aw - 1), 1 << (31 - left)) if left else 1 << (aw - 1)
    room = limit - 1 - b
    if room < 0:
        return 0
    if x * w == 0:
        return None
    return room // (x * w)


# --------------------------------------------------------------------------
# Requantization rounding rules
# --------------------------------------------------------------------------

def _int64(a, name):
    """``a`` as an int64 array; integers only (Python ints must fit int64)."""
    if isinstance(a, np.ndarray) and a.dtype == np.int64:
        return a
    try:
        arr = np.asarray(a)
    except OverflowError:
        raise ValueError(f"{name}={a!r} does not fit int64") from None
    if arr.dtype == object:
        try:
            arr = arr.astype(np.int64)
        except (OverflowError, TypeError):
            raise ValueError(f"{name} must hold integers that fit int64") from None
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integer, not {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} has value {int(arr.max())} that does not fit int64")
    return arr.astype(np.int64, copy=False)


def _scalar_or_array(r, *inputs):
    if all(np.ndim(v) == 0 for v in inputs):
        return np.int64(r)
    return r


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp's ``SaturatingRoundingDoublingHighMul``, widened for ``a``.

    ``(a*b + nudge) / 2**31`` truncated toward zero, with ``nudge = 2**30`` if
    ``a*b >= 0`` else ``1 - 2**30``; ``a == b == INT32_MIN`` saturates to
    ``INT32_MAX``. For int32 ``a`` and ``b`` this is gemmlowp's function bit
    for bit. Extension: ``a`` may be any signed 48-bit integer (accumulators
    up to :data:`ACC_MAX_WIDTH` bits); the product (up to 79 bits) is formed
    exactly by splitting ``b`` into 16-bit halves, so no intermediate wraps.

    Parameters
    ----------
    a : int or array_like of int
        Signed, within 48 bits.
    b : int or array_like of int
        int32 (for requantization, the multiplier ``0 <= M <= 2**31 - 1``).

    Returns
    -------
    numpy.int64 or numpy.ndarray of int64
        Broadcast result.
    """
    a64, b64 = _int64(a, "a"), _int64(b, "b")
    _check_range(a64, "a", ACC_MAX_WIDTH)
    _check_range(b64, "b", 32)
    b_hi = b64 >> 16                        # signed, |b_hi| <= 2**15
    b_lo = b64 & 0xFFFF                     # 0 .. 2**16 - 1
    # sign of a*b (the nudge and the truncation depend on it)
    neg = ((a64 < 0) & (b64 > 0)) | ((a64 > 0) & (b64 < 0))
    nudge = np.where(neg, 1 - (1 << 30), 1 << 30)
    u = a64 * b_hi                          # |u| <= 2**62
    v = a64 * b_lo + nudge                  # |v| < 2**63
    # a*b + nudge = u * 2**16 + v = (u_hi + v_hi) * 2**31 + (u_lo * 2**16 + v_lo)
    u_hi, u_lo = u >> 15, u & 0x7FFF
    v_hi, v_lo = v >> 31, v & 0x7FFFFFFF
    low = (u_lo << 16) + v_lo               # 0 .. 2**32 - 1
    floor_q = u_hi + v_hi + (low >> 31)
    inexact = (low & 0x7FFFFFFF) != 0
    q = floor_q + (neg & inexact)           # floor -> truncation toward zero
    q = np.where((a64 == _INT32_MIN) & (b64 == _INT32_MIN), _INT32_MAX, q)
    return _scalar_or_array(q, a, b)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp's ``RoundingDivideByPOT``: divide by ``2**exponent``, round half away from zero.

    ``mask = 2**exponent - 1``, ``remainder = x & mask``,
    ``threshold = (mask >> 1) + (x < 0)``, result
    ``(x >> exponent) + (remainder > threshold)`` (arithmetic shift).

    Parameters
    ----------
    x : int or array_like of int
        Signed, within int64.
    exponent : int or array_like of int
        0..31 (broadcast against ``x``).
    """
    x64, e64 = _int64(x, "x"), _int64(exponent, "exponent")
    if e64.size and (int(e64.min()) < 0 or int(e64.max()) > TFLITE_S_MAX):
        bad = int(e64.min()) if int(e64.min()) < 0 else int(e64.max())
        raise ValueError(f"exponent={bad} must be in [0, {TFLITE_S_MAX}]")
    mask = (np.int64(1) << e64) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    r = (x64 >> e64) + (remainder > threshold)
    return _scalar_or_array(r, x, exponent)


def round_shift_half_up(v, s):
    """Rounding right shift, ties toward +inf: ``(v + 2**(s-1)) >> s`` for ``s > 0``, ``v`` for ``s = 0``.

    Parameters
    ----------
    v : int or array_like of int
        Signed; ``|v| + 2**(s-1)`` must fit int64.
    s : int or array_like of int
        0..63, broadcast against ``v``.
    """
    v64, s64 = _int64(v, "v"), _int64(s, "s")
    if s64.size and (int(s64.min()) < 0 or int(s64.max()) > 63):
        bad = int(s64.min()) if int(s64.min()) < 0 else int(s64.max())
        raise ValueError(f"s={bad} must be in [0, 63]")
    half = np.where(s64 > 0, np.int64(1) << np.maximum(s64 - 1, 0), 0)
    return _scalar_or_array((v64 + half) >> s64, v, s)


def left_shift_wrap32(x, left):
    """Two's-complement int32 product ``x * 2**left``: the low 32 bits, as a signed value.

    TFLite's ``MultiplyByQuantizedMultiplier`` forms ``x * (1 << left_shift)`` in
    int32; C++ leaves the overflow undefined and every compiled TFLite kernel
    wraps (LiteRT's reference kernels included, checked in the tests). This is
    that wrap, defined for any ``x`` within int64: only the low
    ``32 - left`` bits of ``x`` matter.

    Parameters
    ----------
    x : int or array_like of int
        Signed, within int64.
    left : int or array_like of int
        0..31, broadcast against ``x``.

    Returns
    -------
    numpy.int64 or numpy.ndarray of int64
        In ``[-2**31, 2**31 - 1]``.
    """
    x64, l64 = _int64(x, "x"), _int64(left, "left")
    if l64.size and (int(l64.min()) < 0 or int(l64.max()) > -TFLITE_S_MIN):
        bad = int(l64.min()) if int(l64.min()) < 0 else int(l64.max())
        raise ValueError(f"left={bad} must be in [0, {-TFLITE_S_MIN}]")
    low = (x64 & ((np.int64(1) << (32 - l64)) - 1)) << l64     # 0 .. 2**32 - 1
    r = np.where(low >= 1 << 31, low - (1 << 32), low)
    return _scalar_or_array(r, x, left)


def _check_range(a, name, width):
    if a.size:
        lo, hi = int_range(width)
        amin, amax = int(a.min()), int(a.max())
        if amin < lo or amax > hi:
            bad = amin if amin < lo else amax
            raise ValueError(f"{name} has value {bad} outside the signed {width}-bit "
                             f"range [{lo}, {hi}]")


# --------------------------------------------------------------------------
# Requant
# --------------------------------------------------------------------------

def _int_or_ints(value, name):
    """Normalize a scalar-or-per-channel integer parameter to int or tuple of int."""
    if _is_int(value):
        return operator.index(value)
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer):
            raise TypeError(f"{name} must be an int or a 1-D sequence of ints, "
                            f"not an array of shape {value.shape} and dtype {value.dtype}")
        return tuple(int(v) for v in value)
    if isinstance(value, (tuple, list)):
        if not all(_is_int(v) for v in value):
            raise TypeError(f"{name}={value!r} must be an int or a 1-D sequence of ints")
        return tuple(operator.index(v) for v in value)
    raise TypeError(f"{name}={value!r} must be an int or a 1-D sequence of ints")


@dataclass(frozen=True)
class Requant:
    """Requantization parameters (per output channel or per tensor).

    ``tflite`` mode (gemmlowp / TFLite int8 rule, ``MultiplyByQuantizedMultiplier``)::

        x = acc                                   if S >= 0
        x = left_shift_wrap32(acc, -S)            if S < 0
        q = clamp(rounding_divide_by_pot(
                saturating_rounding_doubling_high_mul(x, M), max(S, 0))
                + out_zero_point, qmin, qmax)

    with ``M`` a Q31 int32, ``0 <= M <= 2**31 - 1`` (real multiplier ``M / 2**31``)
    and ``S`` in ``-31..31``: a right shift when ``S >= 0``, a left shift by
    ``L = -S`` applied to the accumulator *before* the high multiply when
    negative (real multiplier ``M / 2**31 * 2**L``, for effective scales
    ``>= 1``). **The sign is the opposite of TFLite's** ``shift`` argument
    (positive = left there): ``S = -tflite_shift``. The left shift is TFLite's
    int32 arithmetic: ``acc * 2**L`` keeps its low 32 bits (two's-complement
    wrap, :func:`left_shift_wrap32`), as LiteRT's kernels compute it. With
    ``S >= 0`` a wider accumulator (up to :data:`ACC_MAX_WIDTH` bits) enters
    the high multiply unwrapped.

    ``half_up`` mode (cheapest hardware)::

        q = clamp(round_shift_half_up(acc * M, S) + out_zero_point, qmin, qmax)

    with ``M`` unsigned, ``0 <= M < 2**HALF_UP_M_WIDTH`` (16 bits), ``S`` in
    ``0..HALF_UP_S_MAX`` (47); ``acc * M`` (48 x 16 bits) is exact in int64.

    Clamp bounds: ``qmin = act_min`` and ``qmax = act_max`` when given;
    otherwise the output range ``-2**(out_width-1) .. 2**(out_width-1) - 1``,
    with ``relu=True`` the shorthand for ``act_min=out_zero_point``. Giving both
    ``relu=True`` and ``act_min`` is an error (one lower bound, stated once).

    Parameters
    ----------
    mode : {'tflite', 'half_up'}
    multiplier : int or sequence of int
        One value, or one per output channel.
    shift : int or sequence of int
        One value, or one per output channel.
    out_zero_point : int
        Output zero point, within the output range.
    out_width : int
        Output width in bits, 2..32 (default 8).
    relu : bool
        Clamp at the zero point from below (``act_min=out_zero_point``).
    act_min, act_max : int, optional
        Clamp bounds (a fused activation's ``activation_min/max``), within the
        output range, ``act_min <= act_max``; None for the defaults above.
    """

    mode: str = "tflite"
    multiplier: object = 1 << 30
    shift: object = 0
    out_zero_point: int = 0
    out_width: int = 8
    relu: bool = False
    act_min: object = None
    act_max: object = None

    def __post_init__(self):
        if not isinstance(self.mode, str) or self.mode not in REQUANT_MODES:
            raise ValueError(f"mode={self.mode!r} must be one of "
                             + ", ".join(repr(m) for m in REQUANT_MODES))
        m = _int_or_ints(self.multiplier, "multiplier")
        s = _int_or_ints(self.shift, "shift")
        ms, ss = (m if isinstance(m, tuple) else (m,)), (s if isinstance(s, tuple) else (s,))
        if not ms:
            raise ValueError("multiplier=() must not be empty")
        if not ss:
            raise ValueError("shift=() must not be empty")
        if self.mode == "tflite":
            m_max, s_min, s_max, m_what = TFLITE_M_MAX, TFLITE_S_MIN, TFLITE_S_MAX, "Q31 int32"
        else:
            m_max, s_min, s_max = (1 << HALF_UP_M_WIDTH) - 1, 0, HALF_UP_S_MAX
            m_what = f"unsigned {HALF_UP_M_WIDTH}-bit"
        for v in ms:
            if not 0 <= v <= m_max:
                raise ValueError(f"multiplier={v} must be in [0, {m_max}] "
                                 f"({m_what}) for mode={self.mode!r}")
        for v in ss:
            if not s_min <= v <= s_max:
                raise ValueError(f"shift={v} must be in [{s_min}, {s_max}] "
                                 f"for mode={self.mode!r}")
        if isinstance(m, tuple) and isinstance(s, tuple) and len(m) != len(s):
            raise ValueError(f"multiplier has {len(m)} channels but shift has {len(s)}")
        out_width = _as_int(self.out_width, "out_width")
        if not 2 <= out_width <= 32:
            raise ValueError(f"out_width={out_width} must be in [2, 32]")
        zp = _as_int(self.out_zero_point, "out_zero_point")
        lo, hi = int_range(out_width)
        if not lo <= zp <= hi:
            raise ValueError(f"out_zero_point={zp} must be within the {out_width}-bit "
                             f"output range [{lo}, {hi}]")
        if not isinstance(self.relu, (bool, np.bool_)):
            raise TypeError(f"relu={self.relu!r} must be a bool")
        act_min = self._bound(self.act_min, "act_min", out_width)
        act_max = self._bound(self.act_max, "act_max", out_width)
        if self.relu and act_min is not None:
            raise ValueError(f"relu=True is shorthand for act_min=out_zero_point: give "
                             f"relu=True or act_min={act_min}, not both")
        low = zp if self.relu else act_min
        if low is not None and act_max is not None and low > act_max:
            what = f"out_zero_point={zp} (relu=True)" if self.relu else f"act_min={act_min}"
            raise ValueError(f"act_max={act_max} must be >= {what}")
        for name, value in (("multiplier", m), ("shift", s), ("out_width", out_width),
                            ("out_zero_point", zp), ("relu", bool(self.relu)),
                            ("act_min", act_min), ("act_max", act_max)):
            object.__setattr__(self, name, value)

    @staticmethod
    def _bound(value, name, out_width):
        if value is None:
            return None
        v = _as_int(value, name) if _is_int(value) else None
        if v is None:
            raise TypeError(f"{name}={value!r} must be an int or None")
        lo, hi = int_range(out_width)
        if not lo <= v <= hi:
            raise ValueError(f"{name}={v} must be within the {out_width}-bit "
                             f"output range [{lo}, {hi}]")
        return v

    @property
    def qmin(self):
        """Lower clamp: ``act_min``, else ``out_zero_point`` with ReLU, else the range's low end."""
        if self.act_min is not None:
            return self.act_min
        lo = int_range(self.out_width)[0]
        return max(lo, self.out_zero_point) if self.relu else lo

    @property
    def qmax(self):
        """Upper clamp: ``act_max``, else ``2**(out_width-1) - 1``."""
        return self.act_max if self.act_max is not None else int_range(self.out_width)[1]

    @property
    def left_shift(self):
        """Largest left shift ``max(-S, 0)`` over the channels (0 when every S >= 0)."""
        s = self.shift if isinstance(self.shift, tuple) else (self.shift,)
        return max(0, -min(s))

    @property
    def channels(self):
        """Number of per-channel values, or None when all parameters are per tensor."""
        for v in (self.multiplier, self.shift):
            if isinstance(v, tuple):
                return len(v)
        return None


def requantize(acc, requant, channel_axis=1):
    """Requantize accumulators to ``out_width``-bit outputs.

    Parameters
    ----------
    acc : array_like of int
        Accumulators (bias already added), signed, within
        :data:`ACC_MAX_WIDTH` (48) bits.
    requant : Requant
        Parameters; per-channel values apply along ``channel_axis``.
    channel_axis : int
        Axis of ``acc`` holding output channels (1 for ``(N, C, H, W)``,
        0 for unbatched ``(C, H, W)``).

    Returns
    -------
    numpy.ndarray of int64
        Same shape as ``acc``.

    Notes
    -----
    ``tflite`` mode with a negative shift (left shift) wraps ``acc * 2**L`` to
    int32 exactly as TFLite does; :func:`acc_bound_ok` with ``left_shift``
    proves when that cannot happen.
    """
    if not isinstance(requant, Requant):
        raise TypeError(f"requant must be a Requant, not {type(requant).__name__}")
    a = check_int_tensor(acc, "acc", ACC_MAX_WIDTH).astype(np.int64, copy=False)
    M = np.asarray(requant.multiplier, dtype=np.int64)
    S = np.asarray(requant.shift, dtype=np.int64)
    C = requant.channels
    if C is not None:
        if a.ndim == 0:
            raise ValueError("acc must have a channel axis for per-channel requantization")
        axis = channel_axis % a.ndim
        if a.shape[axis] != C:
            raise ValueError(f"requant has {C} channels but acc has {a.shape[axis]} "
                             f"along channel_axis={channel_axis}")
        bshape = [1] * a.ndim
        bshape[axis] = C
        M = M.reshape(bshape) if M.ndim else M
        S = S.reshape(bshape) if S.ndim else S
    if requant.mode == "tflite":
        if requant.left_shift:
            a = np.where(S < 0, left_shift_wrap32(a, np.maximum(-S, 0)), a)
        v = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(a, M), np.maximum(S, 0))
    else:
        v = round_shift_half_up(a * M, S)       # |a * M| < 2**63: exact
    v = np.asarray(v, dtype=np.int64) + requant.out_zero_point
    return np.clip(v, requant.qmin, requant.qmax)
