"""Golden model: bit-exact integer conv2d in numpy (the oracle for every other layer).

Semantics are PyTorch's ``nn.Conv2d`` on integers (see :mod:`.contract`).
The arithmetic is exact by construction: the products are summed in the
narrowest arithmetic that a bound computed from the actual operands proves
exact (``max|x|`` includes the pad value when zero padding is used), and
otherwise in int64:

* ``float32`` BLAS when every partial sum is below ``2**24``
  (``K_chunk * max|x| * max|w| < 2**24``; a longer reduction is split into
  channel chunks that each satisfy it, summed in float64);
* ``float64`` BLAS when ``K * max|x| * max|w| < 2**53``;
* ``int64`` (numpy integer matmul) otherwise.

Integers below ``2**24`` (float32) or ``2**53`` (float64) in magnitude are
represented exactly, and so is every partial sum of such products, whatever
the summation order or FMA use of the BLAS. The bias is added in int64
after the conversion, so it does not enter the float bound.

Strategies (chosen from the geometry; no Python loop over pixels, channels
or groups): dense and grouped layers copy a strided im2col view
``(groups, C_in/groups * kh * kw, N * H_out * W_out)`` per batch block and do
one batched matrix product with the groups as batch axis (a 1x1 kernel at
stride 1 uses the padded input itself); layers with one input channel per
group (depthwise, any multiplier) accumulate the ``kh * kw`` taps
elementwise over all channels and pixels at once. The only Python loops are
over batch blocks, float32 reduction chunks and kernel taps.

Scratch buffers are kept per thread between calls (see
:func:`release_workspace`). This module never imports torch.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .contract import (BIAS_WIDTH, DATA_WIDTHS, PADDING_MODES, _as_int, _int_tensor_extremes,
                       check_data_width, conv_geometry, int_range)

__all__ = ["conv2d_int", "conv2d_float", "pad_input", "choose_arithmetic", "release_workspace",
           "GOLDEN_DATA_WIDTHS", "METHODS"]

#: Operand widths the golden model accepts: the hardware's (:data:`.contract.DATA_WIDTHS`).
GOLDEN_DATA_WIDTHS = DATA_WIDTHS
#: Values of ``conv2d_int(method=...)``.
METHODS = ("auto", "float32", "float64", "int64")

_EXACT_BELOW = {"float32": 1 << 24, "float64": 1 << 53}
# Elements of one im2col block (balances BLAS efficiency, cache reuse and memory).
_BLOCK_ELEMS = 1 << 21
# Smallest reduction chunk worth a float32 GEMM (otherwise float64 is used).
_MIN_F32_CHUNK = 128
# Scratch buffers up to this many bytes are kept between calls (per thread):
# fresh pages cost a page fault each, which dominates small layers. When the
# kept buffers would exceed the total, the workspace is emptied first.
_WORKSPACE_MAX_BYTES = 1 << 26
_WORKSPACE_MAX_TOTAL = 3 << 26

_workspace = threading.local()


def _scratch(name, shape, dtype):
    """A scratch array of ``shape`` from the per-thread workspace (contents undefined)."""
    dtype = np.dtype(dtype)
    n = math.prod(shape) if isinstance(shape, tuple) else int(shape)
    if n * dtype.itemsize > _WORKSPACE_MAX_BYTES:
        return np.empty(shape, dtype)
    bufs = getattr(_workspace, "bufs", None)
    if bufs is None:
        bufs = _workspace.bufs = {}
    buf = bufs.get((name, dtype))
    if buf is None or buf.size < n:
        bufs.pop((name, dtype), None)
        if sum(b.nbytes for b in bufs.values()) + n * dtype.itemsize > _WORKSPACE_MAX_TOTAL:
            bufs.clear()
        buf = bufs[(name, dtype)] = np.empty(n, dtype)
    return buf[:n].reshape(shape)


def release_workspace():
    """Free the scratch buffers the golden model keeps for this thread."""
    _workspace.bufs = {}


def _source_index(idx, size, mode):
    """Map padded coordinates (relative to the input's origin) to input indices."""
    if mode == "reflect":
        idx = np.abs(idx)
        return np.where(idx >= size, 2 * (size - 1) - idx, idx)
    if mode == "replicate":
        return np.clip(idx, 0, size - 1)
    return idx % size                                       # circular


def pad_input(x, pads, mode="zeros", value=0, dtype=None, out=None):
    """Pad the last two axes of ``x`` like ``torch.nn.functional.pad``.

    The single padding implementation of the project (golden model and host).

    Parameters
    ----------
    x : numpy.ndarray
        Array of shape ``(..., H, W)``.
    pads : tuple of int
        ``(top, bottom, left, right)``, non-negative.
    mode : {'zeros', 'reflect', 'replicate', 'circular'}
        ``zeros`` fills with ``value``; ``reflect`` mirrors without repeating
        the edge (pad < size); ``replicate`` repeats the edge; ``circular``
        wraps around (pad <= size). Corners follow from padding W then H,
        as PyTorch does.
    value : int or float
        Fill value for ``zeros`` mode (the input zero point).
    dtype : numpy dtype, optional
        Dtype of the result (default: ``x.dtype``); the conversion is done in
        the same pass.
    out : numpy.ndarray, optional
        Array of the result's shape to write into (its dtype wins over ``dtype``).

    Returns
    -------
    numpy.ndarray
        Shape ``(..., H + top + bottom, W + left + right)``.
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions, not shape {x.shape}")
    if mode not in PADDING_MODES:
        raise ValueError(f"padding_mode={mode!r} must be one of "
                         + ", ".join(repr(m) for m in PADDING_MODES))
    if len(pads) != 4:
        raise ValueError(f"pads={pads!r} must be (top, bottom, left, right)")
    t, b, l, r = (_as_int(p, "pads") for p in pads)
    if min(t, b, l, r) < 0:
        raise ValueError(f"pads={tuple(pads)} must be non-negative")
    H, W = x.shape[-2:]
    for lo, hi, size, dim in ((t, b, H, "H"), (l, r, W, "W")):
        if mode == "reflect" and (lo >= size or hi >= size):
            raise ValueError(f"padding_mode='reflect' needs padding < input size, "
                             f"but pads {(lo, hi)} on {dim}={size}")
        if mode == "circular" and (lo > size or hi > size):
            raise ValueError(f"padding_mode='circular' needs padding <= input size, "
                             f"but pads {(lo, hi)} on {dim}={size}")
        if mode == "replicate" and size == 0 and (lo or hi):
            raise ValueError(f"padding_mode='replicate' needs a non-empty input, "
                             f"but {dim}={size}")
    shape = x.shape[:-2] + (H + t + b, W + l + r)
    if out is None:
        out = np.empty(shape, dtype=dtype or x.dtype)
    elif out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    out[..., t:t + H, l:l + W] = x
    if mode == "zeros":
        if t:
            out[..., :t, :] = value
        if b:
            out[..., t + H:, :] = value
        if l:
            out[..., t:t + H, :l] = value
        if r:
            out[..., t:t + H, l + W:] = value
        return out
    if l or r:
        cols = _source_index(np.r_[np.arange(-l, 0), np.arange(W, W + r)], W, mode) + l
        out[..., t:t + H, np.r_[np.arange(l), np.arange(l + W, l + W + r)]] = \
            out[..., t:t + H, cols]
    if t or b:
        rows = _source_index(np.r_[np.arange(-t, 0), np.arange(H, H + b)], H, mode) + t
        out[..., np.r_[np.arange(t), np.arange(t + H, t + H + b)], :] = out[..., rows, :]
    return out


def choose_arithmetic(k, x_absmax, w_absmax, kernel_taps=1, method="auto"):
    """Pick an exact arithmetic for a reduction of length ``k``.

    Parameters
    ----------
    k : int
        Reduction length per group, ``(C_in // groups) * kh * kw``.
    x_absmax, w_absmax : int
        Largest magnitudes of the (padded) input and of the weights.
    kernel_taps : int
        ``kh * kw``; float32 reductions are split at channel boundaries, in
        chunks of a multiple of ``kernel_taps``.
    method : {'auto', 'float32', 'float64', 'int64'}
        Force an arithmetic (ValueError if it cannot be proven exact).

    Returns
    -------
    (str, int)
        The arithmetic and the number of input channels per reduction chunk
        (``k // kernel_taps`` when the reduction is not split).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of " + ", ".join(map(repr, METHODS)))
    prod = int(x_absmax) * int(w_absmax)
    channels = k // kernel_taps
    if prod == 0:
        return ("float32" if method == "auto" else method), channels
    # float32: the largest channel chunk whose partial sums stay below 2**24.
    f32_channels = ((_EXACT_BELOW["float32"] - 1) // prod) // kernel_taps
    f32_channels = min(f32_channels, channels)
    f64_ok = k * prod < _EXACT_BELOW["float64"]     # also: chunk sums in float64 are exact
    f32_ok = f32_channels >= 1 and (f32_channels == channels or
                                   (f64_ok and f32_channels * kernel_taps >= _MIN_F32_CHUNK))
    i64_ok = k * prod < 1 << 62          # bias (< 2**31) added on top stays < 2**63
    if method == "auto":
        if f32_ok:
            return "float32", f32_channels
        if f64_ok:
            return "float64", channels
        method = "int64"
    if method == "float32" and f32_channels >= 1 and (f32_channels == channels or f64_ok):
        return "float32", f32_channels
    if method == "float64" and f64_ok:
        return "float64", channels
    if method == "int64" and i64_ok:
        return "int64", channels
    raise ValueError(f"method={method!r} is not exact for reduction length {k} with "
                     f"max|x|={x_absmax}, max|w|={w_absmax}")


def conv2d_int(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
               padding_mode="zeros", pad_value=0, data_width=8, method="auto"):
    """Bit-exact integer 2-D convolution with ``nn.Conv2d`` semantics.

    Parameters
    ----------
    x : numpy.ndarray of int
        ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``; signed
        ``data_width``-bit values.
    weight : numpy.ndarray of int
        ``(C_out, C_in // groups, kh, kw)``; signed ``data_width``-bit values.
    bias : numpy.ndarray of int, optional
        ``(C_out,)``, int32 range.
    stride, padding, dilation, groups, padding_mode
        As in ``nn.Conv2d`` (``padding`` may be ``'valid'`` or ``'same'``).
    pad_value : int
        Value of the padded positions in ``'zeros'`` mode (the input zero
        point; 0 is PyTorch's behaviour). Unused by the other modes, which pad
        like ``F.pad`` and then convolve without padding.
    data_width : int
        Signed width of ``x``, ``weight`` and ``pad_value`` (2..16).
    method : {'auto', 'float32', 'float64', 'int64'}
        Arithmetic; ``'auto'`` picks the fastest one proven exact (see the
        module docstring). Forcing one that is not proven exact raises.

    Returns
    -------
    numpy.ndarray of int64
        ``(N, C_out, H_out, W_out)``, or ``(C_out, H_out, W_out)`` for an
        unbatched input.
    """
    data_width = check_data_width(data_width)
    x, x_min, x_max = _int_tensor_extremes(x, "x", data_width)
    weight, w_min, w_max = _int_tensor_extremes(weight, "weight", data_width)
    if bias is not None:
        bias = _int_tensor_extremes(bias, "bias", BIAS_WIDTH)[0]
    pad_value = _as_int(pad_value, "pad_value")
    lo, hi = int_range(data_width)
    if not lo <= pad_value <= hi:
        raise ValueError(f"pad_value={pad_value} outside the signed {data_width}-bit "
                         f"range [{lo}, {hi}]")
    g = conv_geometry(x.shape, weight.shape, None if bias is None else bias.shape,
                      stride, padding, dilation, groups, padding_mode)
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of " + ", ".join(map(repr, METHODS)))

    out = np.empty((g.N, g.C_out, g.H_out, g.W_out), dtype=np.int64)
    if g.N == 0:
        return out
    x4 = x if g.batched else x[None]
    x_absmax = max(-x_min, x_max)
    if g.padding_mode == "zeros" and any(g.pad):
        x_absmax = max(x_absmax, abs(pad_value))
    w_absmax = max(-w_min, w_max)
    arith, chunk_channels = choose_arithmetic(g.reduction, x_absmax, w_absmax,
                                              g.kh * g.kw, method)
    dtype = np.dtype(arith)
    xp = pad_input(x4, g.pad, g.padding_mode, pad_value,
                   out=_scratch("xp", (g.N, g.C_in) + g.padded_size, dtype))
    bias64 = None if bias is None else bias.astype(np.int64)
    res_absmax = g.reduction * x_absmax * w_absmax
    if g.C_in == g.groups:
        _conv_taps(xp, weight, g, dtype, bias64, out, res_absmax)
    else:
        _conv_im2col(xp, weight, g, dtype, chunk_channels, bias64, out, res_absmax)
    return out if g.batched else out[0]


def conv2d_float(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                 padding_mode="zeros", pad_value=0.0):
    """Float64 2-D convolution with the same semantics as :func:`conv2d_int`.

    Ordinary float64 arithmetic (not bit-exact): the reference of the float
    path (:mod:`.quant`) and of its error bounds. Same arguments as
    :func:`conv2d_int`, on real-valued arrays.

    Returns
    -------
    numpy.ndarray of float64
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float64)
    g = conv_geometry(x.shape, weight.shape, None if bias is None else bias.shape,
                      stride, padding, dilation, groups, padding_mode)
    out = np.empty((g.N, g.C_out, g.H_out, g.W_out), dtype=np.float64)
    if g.N:
        x4 = x if g.batched else x[None]
        xp = pad_input(x4, g.pad, g.padding_mode, pad_value,
                       out=_scratch("xp", (g.N, g.C_in) + g.padded_size, np.float64))
        if g.C_in == g.groups:
            _conv_taps(xp, weight, g, np.float64, bias, out, None)
        else:
            _conv_im2col(xp, weight, g, np.float64, g.C_in // g.groups, bias, out, None)
    return out if g.batched else out[0]


def _finish(res, bias, out, res_absmax):
    """``out = res + bias`` in int64 (``res``: exact integers, ``|res| <= res_absmax``)."""
    if out.dtype.kind == "i" and res.dtype.kind == "f" and res_absmax < 1 << 31:
        # float -> int32 -> int64 is about twice as fast as a direct float -> int64 cast
        tmp = _scratch("int32", res.shape, np.int32)
        np.copyto(tmp, res, casting="unsafe")
        np.copyto(out, tmp)
    else:
        np.copyto(out, res, casting="unsafe")
    if bias is not None:
        np.add(out, bias[None, :, None, None], out=out)


def _conv_im2col(xp, weight, g, dtype, chunk_channels, bias, out, res_absmax):
    """Dense / grouped conv: strided im2col per block, one batched GEMM per block."""
    G, Cg, Cog = g.groups, g.C_in // g.groups, g.C_out // g.groups
    kh, kw, Ho, Wo = g.kh, g.kw, g.H_out, g.W_out
    (sh, sw), (dh, dw) = g.stride, g.dilation
    P1 = Ho * Wo
    cb = max(1, min(chunk_channels, Cg))
    chunks = [(c0, min(cb, Cg - c0)) for c0 in range(0, Cg, cb)]
    # A 1x1 kernel at stride 1 needs no im2col: the padded image is the matrix.
    pointwise = kh == kw == 1 and g.stride == (1, 1)
    # batch block: im2col of one block holds about _BLOCK_ELEMS elements
    nb = 1 if pointwise else max(1, min(g.N, _BLOCK_ELEMS // max(1, G * cb * kh * kw * P1)))
    w5 = weight.reshape(G, Cog, Cg, kh * kw)
    wchunks = [np.ascontiguousarray(w5[:, :, c0:c0 + cc].reshape(G, Cog, cc * kh * kw),
                                    dtype=dtype) for c0, cc in chunks]
    cols_buf = None if pointwise else _scratch("cols", G * cb * kh * kw * nb * P1, dtype)
    res_buf = _scratch("res", G * Cog * nb * P1, dtype)
    acc_dtype = np.int64 if dtype == np.int64 else np.float64
    acc_buf = _scratch("acc", G * Cog * nb * P1, acc_dtype) if len(chunks) > 1 else None
    sN, sC, sH, sW = xp.strides
    for n0 in range(0, g.N, nb):
        nn = min(nb, g.N - n0)
        P = nn * P1
        acc = None
        for (c0, cc), wc in zip(chunks, wchunks):
            if pointwise:
                cols = xp[n0].reshape(G, Cg, P)[:, c0:c0 + cc]
            else:
                base = xp[n0:n0 + nn, c0:]
                view = as_strided(base, shape=(G, cc, kh, kw, nn, Ho, Wo),
                                  strides=(Cg * sC, sC, dh * sH, dw * sW, sN, sh * sH, sw * sW),
                                  writeable=False)
                cols = cols_buf[:G * cc * kh * kw * P].reshape(G, cc, kh, kw, nn, Ho, Wo)
                np.copyto(cols, view)
                cols = cols.reshape(G, cc * kh * kw, P)
            res = res_buf[:G * Cog * P].reshape(G, Cog, P)
            np.matmul(wc, cols, out=res)
            if len(chunks) == 1:
                acc = res
            elif acc is None:
                acc = acc_buf[:G * Cog * P].reshape(G, Cog, P)
                np.copyto(acc, res)
            else:
                np.add(acc, res, out=acc)
        _finish(acc.reshape(g.C_out, nn, Ho, Wo).transpose(1, 0, 2, 3), bias,
                out[n0:n0 + nn], res_absmax)


def _conv_taps(xp, weight, g, dtype, bias, out, res_absmax):
    """One input channel per group (depthwise, any multiplier): elementwise tap accumulation."""
    G, M = g.groups, g.C_out // g.groups
    kh, kw, Ho, Wo = g.kh, g.kw, g.H_out, g.W_out
    (sh, sw), (dh, dw) = g.stride, g.dilation
    wq = weight.reshape(G, M, kh, kw).astype(dtype)
    nb = max(1, min(g.N, _BLOCK_ELEMS // max(1, G * M * Ho * Wo)))
    acc_buf = _scratch("res", nb * G * M * Ho * Wo, dtype)
    tmp_buf = _scratch("tmp", nb * G * M * Ho * Wo, dtype)
    for n0 in range(0, g.N, nb):
        nn = min(nb, g.N - n0)
        acc = acc_buf[:nn * G * M * Ho * Wo].reshape(nn, G, M, Ho, Wo)
        tmp = tmp_buf[:acc.size].reshape(acc.shape)
        for i in range(kh):
            for j in range(kw):
                xv = xp[n0:n0 + nn, :, i * dh:i * dh + (Ho - 1) * sh + 1:sh,
                        j * dw:j * dw + (Wo - 1) * sw + 1:sw][:, :, None]
                wv = wq[None, :, :, i, j, None, None]
                if i == 0 and j == 0:
                    np.multiply(xv, wv, out=acc)
                else:
                    np.multiply(xv, wv, out=tmp)
                    np.add(acc, tmp, out=acc)
        _finish(acc.reshape(nn, g.C_out, Ho, Wo), bias, out[n0:n0 + nn], res_absmax)
