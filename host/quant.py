"""Float path: quantize, run the integer conv, dequantize, and bound the error.

Activations are quantized symmetrically per tensor, weights symmetrically per
output channel (``scale = max|.| / qmax``, ``qmax = 2**(data_width-1) - 1``,
round to nearest, no clipping ever happens), the bias to int32 at scale
``sx * sw[co]``. The integer conv is the golden model or any callable with
its signature (the RTL backend). The result is compared with a float64
reference and bounded per element by

    |y_hat - y| <= sum_k (|w_hat_k| * dx/2 + |x_k| * dw_co/2) + |b - b_hat|

where ``dx = sx`` and ``dw_co = sw[co]`` are the quantization steps. Taps that
fall on zero padding hold an exact 0 and contribute nothing; taps on
reflect / replicate / circular padding hold (quantized) copies of input
values and contribute like any input tap.

Also the multiplier helpers for requantization: :func:`quantize_multiplier`
(TFLite's ``QuantizeMultiplier`` restricted to a right shift),
:func:`quantize_multiplier_tflite` (TFLite's ``QuantizeMultiplier`` exactly, left
shifts included) and :func:`quantize_multiplier_half_up`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .contract import (BIAS_WIDTH, HALF_UP_M_WIDTH, HALF_UP_S_MAX, TFLITE_M_MAX,
                       TFLITE_S_MAX, TFLITE_S_MIN, Requant, check_data_width,
                       conv_geometry, int_range)
from .golden import conv2d_float, conv2d_int

__all__ = ["QuantReport", "quantize_symmetric", "quantized_conv2d",
           "quantize_multiplier", "quantize_multiplier_half_up", "quantize_multiplier_tflite",
           "make_requant"]


def quantize_symmetric(t, data_width=8, axis=None):
    """Symmetric quantization ``q = round(t / scale)``, ``scale = max|t| / qmax``.

    Parameters
    ----------
    t : array_like of float
    data_width : int
        Signed width of ``q``; ``qmax = 2**(data_width-1) - 1``.
    axis : int, optional
        Axis with one scale per index (per-channel quantization); None for
        one scale per tensor.

    Returns
    -------
    q : numpy.ndarray of int64
        Values in ``[-qmax, qmax]``.
    scale : float or numpy.ndarray of float64
        Quantization step(s); 1.0 where ``t`` is all zero.
    """
    t = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise ValueError("cannot quantize a tensor holding inf or nan")
    qmax = int_range(check_data_width(data_width))[1]
    if axis is None:
        amax = float(np.abs(t).max()) if t.size else 0.0
        scale = amax / qmax if amax > 0 else 1.0
        return np.rint(t / scale).astype(np.int64), scale
    axis = axis % t.ndim
    other = tuple(a for a in range(t.ndim) if a != axis)
    amax = np.abs(t).max(axis=other) if t.size else np.zeros(t.shape[axis])
    scale = np.where(amax > 0, amax / qmax, 1.0)
    shape = [1] * t.ndim
    shape[axis] = -1
    q = np.rint(t / scale.reshape(shape)).astype(np.int64)
    return q, scale


@dataclass(frozen=True, eq=False)
class QuantReport:
    """Error report of one quantized conv2d against the float64 reference.

    Attributes
    ----------
    x_scale : float
        Activation step ``dx``.
    w_scale : numpy.ndarray
        Weight steps ``dw[co]``.
    bias_scale : numpy.ndarray
        Bias steps ``dx * dw[co]``.
    bound : numpy.ndarray
        Per-element analytic error bound (shape of the output).
    error : numpy.ndarray
        ``|y_hat - y|`` against the float64 reference.
    max_error, max_bound : float
    sqnr_db : float
        ``10 log10(sum y**2 / sum (y_hat - y)**2)`` (inf when exact).
    data_width : int
    """

    x_scale: float
    w_scale: np.ndarray
    bias_scale: np.ndarray
    bound: np.ndarray = field(repr=False)
    error: np.ndarray = field(repr=False)
    max_error: float
    max_bound: float
    sqnr_db: float
    data_width: int

    @property
    def within_bound(self):
        """True when every element's error is within its bound (with float64 slack)."""
        slack = 1e-9 * (self.max_bound + 1.0)
        return bool(np.all(self.error <= self.bound + slack))

    def __str__(self):
        return (f"{self.data_width}-bit quantized conv2d: max error {self.max_error:.4g} "
                f"(bound {self.max_bound:.4g}), SQNR {self.sqnr_db:.1f} dB")


def quantized_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                     padding_mode="zeros", data_width=8, int_conv=None):
    """Float conv2d through the integer data path, with an error report.

    Parameters
    ----------
    x, weight, bias : array_like of float
        As for ``torch.nn.functional.conv2d``.
    stride, padding, dilation, groups, padding_mode
        As in ``nn.Conv2d``.
    data_width : int
        Signed width of the quantized activations and weights.
    int_conv : callable, optional
        ``int_conv(xq, wq, bq, stride=, padding=, dilation=, groups=,
        padding_mode=, data_width=)`` returning the int64 accumulators
        (bias included); default :func:`.golden.conv2d_int`.

    Returns
    -------
    y_hat : numpy.ndarray of float64
        Dequantized output.
    report : QuantReport
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    bias = None if bias is None else np.asarray(bias, dtype=np.float64)
    data_width = check_data_width(data_width)
    geo = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
               padding_mode=padding_mode)
    g = conv_geometry(x.shape, weight.shape, None if bias is None else bias.shape, **geo)

    xq, sx = quantize_symmetric(x, data_width)
    wq, sw = quantize_symmetric(weight, data_width, axis=0)
    sb = sx * sw
    bq = None
    if bias is not None:
        bq_f = np.rint(bias / sb)
        lo, hi = int_range(BIAS_WIDTH)
        if bq_f.size and (bq_f.min() < lo or bq_f.max() > hi):
            raise ValueError(f"bias does not fit int32 at scale x_scale*w_scale: "
                             f"max |bias/scale| = {np.abs(bias / sb).max():.4g}")
        bq = bq_f.astype(np.int64)
    conv = conv2d_int if int_conv is None else int_conv
    acc = np.asarray(conv(xq, wq, bq, data_width=data_width, **geo))
    cshape = (-1, 1, 1) if not g.batched else (1, -1, 1, 1)
    y_hat = acc.astype(np.float64) * sb.reshape(cshape)

    # reference and analytic bound, in float64
    y = conv2d_float(x, weight, bias, **geo)
    w_hat = wq * sw.reshape(-1, 1, 1, 1)
    ones_x = np.ones((1, g.C_in, g.H, g.W) if g.batched else (g.C_in, g.H, g.W))
    if g.padding_mode == "zeros":
        # padded taps are an exact 0: only in-image taps carry the x error
        term_x = conv2d_float(ones_x, np.abs(w_hat), **geo) * (sx / 2)
    else:
        term_x = np.abs(w_hat).sum(axis=(1, 2, 3)).reshape(cshape) * (sx / 2)
    ones_w = np.ones((g.groups, g.C_in // g.groups, g.kh, g.kw))
    absx_sum = conv2d_float(np.abs(x), ones_w, **geo)          # (N, groups, H_out, W_out)
    absx_sum = np.repeat(absx_sum, g.C_out // g.groups, axis=-3)
    term_w = absx_sum * (sw / 2).reshape(cshape)
    bound = term_x + term_w
    if bias is not None:
        bound = bound + np.abs(bias - bq * sb).reshape(cshape)
    bound = np.broadcast_to(bound, y.shape)
    err = np.abs(y_hat - y)
    noise = float(np.sum(err ** 2))
    signal = float(np.sum(y ** 2))
    sqnr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    report = QuantReport(x_scale=sx, w_scale=sw, bias_scale=sb, bound=bound, error=err,
                         max_error=float(err.max()) if err.size else 0.0,
                         max_bound=float(bound.max()) if bound.size else 0.0,
                         sqnr_db=sqnr, data_width=data_width)
    return y_hat, report


def quantize_multiplier(real_multiplier):
    """Q31 multiplier and right shift for the ``tflite`` requantizer.

    Like TFLite's ``QuantizeMultiplier`` restricted to a right shift:
    ``real ~= M * 2**-31 * 2**-S`` with ``M`` in ``[2**30, 2**31 - 1]`` and
    ``S`` in ``0..31``. Supported reals: ``0 <= real < 1``. Full 31-bit
    precision for ``real >= 2**-32``; smaller reals use ``S = 31`` and a smaller
    ``M`` (down to 0); a real that rounds up to 1.0 gives ``M = 2**31 - 1``,
    ``S = 0``.

    Parameters
    ----------
    real_multiplier : float or array_like of float
        E.g. ``x_scale * w_scale[co] / y_scale``.

    Returns
    -------
    (M, S)
        Python ints, or int64 arrays for array input.

    Raises
    ------
    ValueError
        For a negative, non-finite or ``>= 1`` real multiplier.
    """
    r = np.asarray(real_multiplier, dtype=np.float64)
    flat = r.reshape(-1)
    bad = flat[~np.isfinite(flat) | (flat < 0) | (flat >= 1)]
    if bad.size:
        raise ValueError(f"real_multiplier={float(bad[0])!r} must be in [0, 1): the tflite "
                         f"requantizer has a right shift only (S in 0..{TFLITE_S_MAX})")
    q, e = np.frexp(r)                          # r = q * 2**e, 0.5 <= q < 1
    S = -e.astype(np.int64)
    M = np.floor(q * 2.0**31 + 0.5)             # round half away from zero, as TFLite
    carry = M == 2.0**31                        # q rounded up to 1.0
    M = np.where(carry, 2.0**30, M)
    S = np.where(carry, S - 1, S)
    tiny = S > TFLITE_S_MAX                     # keep S = 31, denormalize M
    M = np.where(tiny, np.floor(r * 2.0**(31 + TFLITE_S_MAX) + 0.5), M)
    S = np.where(tiny, TFLITE_S_MAX, S)
    top = S < 0                                 # rounds to 1.0: nearest representable
    M = np.where(top, TFLITE_M_MAX, M).astype(np.int64)
    S = np.where(top, 0, S).astype(np.int64)
    if r.ndim == 0:
        return int(M), int(S)
    return M, S


def quantize_multiplier_tflite(real_multiplier):
    """TFLite's ``QuantizeMultiplier``, bit for bit, in the contract's shift convention.

    ``q, e = frexp(real)``; ``M = round(q * 2**31)`` (half away from zero); a
    carry to ``2**31`` halves ``M`` and increments ``e``; ``e < -31`` flushes
    to ``M = 0, e = 0``; ``real = 0`` gives ``(0, 0)``. TFLite's shift is ``e``
    (positive = left shift); the returned ``S = -e`` is the :class:`Requant`
    shift (negative = left shift). This is how TFLite derives a conv layer's
    per-channel multipliers from ``input_scale * filter_scale[c] / output_scale``
    (computed in double).

    Parameters
    ----------
    real_multiplier : float or array_like of float
        Non-negative, finite, below ``2**31`` (a left shift of at most 31).

    Returns
    -------
    (M, S)
        Python ints, or int64 arrays for array input.
    """
    r = np.asarray(real_multiplier, dtype=np.float64)
    flat = r.reshape(-1)
    bad = flat[~np.isfinite(flat) | (flat < 0) | (flat >= 2.0**-TFLITE_S_MIN)]
    if bad.size:
        raise ValueError(f"real_multiplier={float(bad[0])!r} must be in [0, 2**{-TFLITE_S_MIN}) "
                         f"(a left shift of at most {-TFLITE_S_MIN})")
    q, e = np.frexp(r)
    M = np.floor(q * 2.0**31 + 0.5)             # q >= 0: floor(x + 0.5) is std::round
    carry = M == 2.0**31
    M = np.where(carry, 2.0**30, M)
    e = np.where(carry, e + 1, e)
    flush = e < -TFLITE_S_MAX
    M = np.where(flush, 0, M).astype(np.int64)
    S = np.where(flush, 0, -e).astype(np.int64)
    if r.ndim == 0:
        return int(M), int(S)
    return M, S


def quantize_multiplier_half_up(real_multiplier):
    """Unsigned multiplier and right shift for the ``half_up`` requantizer.

    ``real ~= M * 2**-S`` with ``M < 2**HALF_UP_M_WIDTH`` (16 bits) as large as
    possible and ``S`` in ``0..HALF_UP_S_MAX`` (47). Supported reals:
    ``0 <= real < 2**16 - 0.5``; precision is 16 bits for ``real >= 2**-32``.

    Returns
    -------
    (M, S)
        Python ints, or int64 arrays for array input.
    """
    r = np.asarray(real_multiplier, dtype=np.float64)
    flat = r.reshape(-1)
    m_max = (1 << HALF_UP_M_WIDTH) - 1
    bad = flat[~np.isfinite(flat) | (flat < 0) | (flat >= m_max + 0.5)]
    if bad.size:
        raise ValueError(f"real_multiplier={float(bad[0])!r} must be in [0, {m_max + 0.5})")
    _, e = np.frexp(r)                          # 2**(e-1) <= r < 2**e
    S = np.clip(HALF_UP_M_WIDTH - e.astype(np.int64), 0, HALF_UP_S_MAX)
    M = np.floor(r * np.exp2(S) + 0.5)
    over = M > m_max                            # rounding carried into bit 16
    S = np.where(over, S - 1, S)
    M = np.where(over, np.floor(r * np.exp2(S) + 0.5), M).astype(np.int64)
    S = np.where(M == 0, 0, S).astype(np.int64)
    if r.ndim == 0:
        return int(M), int(S)
    return M, S


def make_requant(real_multiplier, out_zero_point=0, mode="tflite", out_width=8, relu=False,
                 act_min=None, act_max=None):
    """Build a :class:`.contract.Requant` from real multipliers (scalar or per channel).

    ``tflite`` mode uses :func:`quantize_multiplier` (reals below 1, right
    shifts only); for TFLite's own parameters, left shifts included, use
    :func:`quantize_multiplier_tflite`. ``relu``, ``act_min`` and ``act_max``
    are :class:`.contract.Requant`'s clamp arguments.
    """
    if mode == "tflite":
        M, S = quantize_multiplier(real_multiplier)
    elif mode == "half_up":
        M, S = quantize_multiplier_half_up(real_multiplier)
    else:
        raise ValueError(f"mode={mode!r} must be one of 'tflite', 'half_up'")
    if np.ndim(M):
        M, S = tuple(int(v) for v in M), tuple(int(v) for v in S)
    return Requant(mode=mode, multiplier=M, shift=S, out_zero_point=out_zero_point,
                   out_width=out_width, relu=relu, act_min=act_min, act_max=act_max)
