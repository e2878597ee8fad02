"""Layers beyond the hardware's descriptor limits, rewritten exactly on the host.

The descriptor holds a kernel size, stride and dilation per axis up to the
configuration's limits (``max_kernel``, ``max_stride``, ``max_dilation``). A layer
beyond them on an axis (a 16x16 patch embedding with stride 16, a 3x3 kernel with
stride 5 on a ``max_stride = 4`` build, a dilation of 12) is rewritten before
planning by *folding that kernel axis into the channels*:

    x'[n, c*kh + ky, oy, :] = xpad[n, c, oy*stride_h + ky*dil_h, :]
    w'[o, c*kh + ky, 0, :]  = w[o, c, ky, :]

a convolution with kernel 1, stride 1 and dilation 1 on that axis (the same for
columns). Every output is the same sum of the same products, so the result is
bit-exact and the accumulator bound is unchanged (the same number of terms per
output). The padding (any mode) is applied on the host first. Groups keep their
channels together (channel ``c`` of group ``g`` becomes channels ``c*kh ..
c*kh + kh - 1`` of the same group); a depthwise layer becomes a grouped one.

The input the hardware reads grows by ``kh / stride_h`` on a folded row axis (less
than 1 when the stride exceeds the kernel) and likewise on columns.
"""

from __future__ import annotations

import numpy as np

from .contract import conv_geometry
from .golden import pad_input

__all__ = ["folds_needed", "fold_geometry", "fold_layer"]


def folds_needed(geometry, cfg):
    """``(rows, cols)``: whether the row / column kernel axis of ``geometry`` is beyond
    the descriptor limits of ``cfg`` and must be folded into the channels."""
    sh, sw = geometry.stride
    dh, dw = geometry.dilation
    rows = geometry.kh > cfg.max_kernel or sh > cfg.max_stride or dh > cfg.max_dilation
    cols = geometry.kw > cfg.max_kernel or sw > cfg.max_stride or dw > cfg.max_dilation
    return rows, cols


def _folded_args(geometry, rows, cols):
    g = geometry
    C, H, W = g.C_in, g.H + g.pad[0] + g.pad[1], g.W + g.pad[2] + g.pad[3]
    kh, kw = g.kh, g.kw
    (sh, sw), (dh, dw) = g.stride, g.dilation
    if rows:
        C, H, kh, sh, dh = C * kh, g.H_out, 1, 1, 1
    if cols:
        C, W, kw, sw, dw = C * kw, g.W_out, 1, 1, 1
    input_shape = (g.N, C, H, W) if g.batched else (C, H, W)
    weight_shape = (g.C_out, C // g.groups, kh, kw)
    return input_shape, weight_shape, (sh, sw), (dh, dw)


def fold_geometry(geometry, cfg):
    """The geometry the hardware runs for ``geometry`` (itself when no axis is beyond
    the limits of ``cfg``): padding applied, folded axes with kernel, stride and
    dilation 1. Same output shape and MACs."""
    rows, cols = folds_needed(geometry, cfg)
    if not (rows or cols):
        return geometry
    xs, ws, stride, dilation = _folded_args(geometry, rows, cols)
    out = conv_geometry(xs, ws, (geometry.C_out,) if geometry.has_bias else None,
                        stride, 0, dilation, geometry.groups, "zeros")
    assert (out.H_out, out.W_out, out.macs) == (geometry.H_out, geometry.W_out, geometry.macs)
    return out


def fold_layer(x, w, geometry, cfg, pad_value=0):
    """``(x', w', geometry')``: the layer the hardware runs for ``x`` (batched,
    ``(N, C, H, W)``) and ``w``; ``(x, w, geometry)`` unchanged when no axis is beyond
    the limits of ``cfg``."""
    rows, cols = folds_needed(geometry, cfg)
    if not (rows or cols):
        return x, w, geometry
    g = geometry
    xp = pad_input(np.asarray(x), g.pad, g.padding_mode, pad_value)
    w = np.asarray(w)
    O = w.shape[0]
    if rows:
        sh, dh = g.stride[0], g.dilation[0]
        idx = np.arange(g.H_out)[:, None] * sh + np.arange(g.kh)[None, :] * dh
        n, c, _, wd = xp.shape
        xp = xp[:, :, idx, :].transpose(0, 1, 3, 2, 4).reshape(n, c * g.kh, g.H_out, wd)
        w = w.reshape(O, -1, 1, w.shape[3])
    if cols:
        sw, dw = g.stride[1], g.dilation[1]
        kw = w.shape[3]
        idx = np.arange(g.W_out)[:, None] * sw + np.arange(kw)[None, :] * dw
        n, c, h, _ = xp.shape
        xp = xp[:, :, :, idx].transpose(0, 1, 4, 2, 3).reshape(n, c * kw, h, g.W_out)
        kh = w.shape[2]
        w = w.transpose(0, 1, 3, 2).reshape(O, -1, kh, 1)
    return np.ascontiguousarray(xp), np.ascontiguousarray(w), fold_geometry(g, cfg)
