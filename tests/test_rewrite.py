"""Layers beyond the descriptor's limits (kernel, stride, dilation per axis) and a
bias that alone breaks the accumulator bound: the host rewrites them exactly.

Oracles: PyTorch on integer data (float64, exact at these sizes) and the golden
model on the *original* layer; the rewrite is never its own oracle. On the RTL the
estimate's cycles equal the hardware's.
"""

import numpy as np
import pytest
import torch

import systolic_conv as sc
from systolic_conv.contract import conv_geometry
from systolic_conv.golden import conv2d_int
from systolic_conv.rewrite import fold_geometry, fold_layer, folds_needed
from systolic_conv.sim.cocotb.layers import HW_CONFIGS

SQUARE = HW_CONFIGS["square"]       # max_kernel 7, max_stride 4, max_dilation 3


def _torch(x, w, b, kw):
    mode = kw.get("padding_mode", "zeros")
    args = {k: v for k, v in kw.items() if k != "padding_mode"}
    xt = torch.tensor(x, dtype=torch.float64)
    wt = torch.tensor(w, dtype=torch.float64)
    bt = None if b is None else torch.tensor(b, dtype=torch.float64)
    conv = torch.nn.Conv2d(x.shape[-3], w.shape[0], w.shape[2:], bias=b is not None,
                           padding_mode=mode, dtype=torch.float64, **args)
    with torch.no_grad():
        conv.weight.copy_(wt)
        if bt is not None:
            conv.bias.copy_(bt)
        return conv(xt).numpy().astype(np.int64)


# (input shape, weight shape, conv arguments): rows, columns or both beyond the limits
CASES = [
    ((2, 3, 9, 9), (4, 3, 3, 3), dict(stride=5, padding=1)),                  # stride > max
    ((1, 2, 4, 4), (3, 2, 2, 2), dict(stride=6)),                             # stride > input
    ((1, 2, 16, 16), (3, 2, 4, 4), dict(stride=8)),                           # > the field
    ((1, 3, 32, 32), (5, 3, 16, 16), dict(stride=16)),                        # patch embedding
    ((1, 4, 11, 13), (4, 1, 3, 3), dict(stride=(5, 1), padding=1, groups=4)),   # depthwise
    ((1, 4, 12, 10), (6, 2, 8, 3), dict(padding=(4, 1), groups=2,
                                        padding_mode="reflect")),             # kernel 8 rows
    ((1, 2, 14, 9), (3, 2, 2, 3), dict(dilation=(5, 1), stride=(1, 2), padding=2,
                                       padding_mode="circular")),             # dilation 5
    ((3, 9, 10), (2, 3, 3, 9), dict(stride=(2, 9), padding=(1, 4),
                                    padding_mode="replicate")),               # unbatched
    ((0, 2, 8, 8), (2, 2, 3, 3), dict(stride=5, padding=1)),                  # N = 0
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_fold_is_exact_on_the_golden_model(case):
    xs, ws, kw = case
    rng = np.random.default_rng(len(xs) + sum(ws))
    x = rng.integers(-128, 128, xs)
    w = rng.integers(-128, 128, ws)
    b = rng.integers(-1000, 1000, ws[0])
    geo = conv_geometry(xs, ws, (ws[0],), **kw)
    assert any(folds_needed(geo, SQUARE))
    xb = x if x.ndim == 4 else x[None]
    x2, w2, geo2 = fold_layer(xb, w, geo, SQUARE, pad_value=0)
    assert not any(folds_needed(geo2, SQUARE))
    assert (geo2.H_out, geo2.W_out, geo2.macs) == (geo.H_out, geo.W_out, geo.macs)
    assert fold_geometry(geo, SQUARE) == geo2
    got = conv2d_int(x2, w2, b, stride=geo2.stride, padding=0, dilation=geo2.dilation,
                     groups=geo2.groups)
    want = _torch(xb, w, b, kw)
    assert np.array_equal(got, want)


def test_fold_leaves_layers_within_the_limits_alone():
    geo = conv_geometry((1, 3, 8, 8), (4, 3, 3, 3), None, stride=4, dilation=3, padding=1)
    assert folds_needed(geo, SQUARE) == (False, False)
    assert fold_geometry(geo, SQUARE) is geo


def test_fold_zero_padding_uses_the_pad_value():
    x = np.full((1, 1, 3, 3), 5)
    w = np.ones((1, 1, 3, 3), dtype=np.int64)
    geo = conv_geometry(x.shape, w.shape, None, stride=5, padding=1)
    x2, w2, geo2 = fold_layer(x, w, geo, SQUARE, pad_value=-7)
    out = conv2d_int(x2, w2, None, stride=geo2.stride, dilation=geo2.dilation)
    assert np.array_equal(out, conv2d_int(x, w, None, stride=5, padding=1, pad_value=-7))


@pytest.mark.rtl
@pytest.mark.parametrize("case", CASES[:5] + CASES[6:8], ids=[str(i) for i in (0, 1, 2, 3, 4, 6, 7)])
def test_rtl_runs_layers_beyond_the_descriptor_limits(case):
    """Each such layer on the RTL of a small build: bit-exact against PyTorch, and the
    estimate's cycles equal the hardware's."""
    xs, ws, kw = case
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.integers(-128, 128, xs)
    w = rng.integers(-128, 128, ws)
    b = rng.integers(-1000, 1000, ws[0])
    out, st = sc.conv2d(x, w, b, hw=SQUARE, backend="rtl", return_stats=True, **kw)
    xb = x if x.ndim == 4 else x[None]
    want = _torch(xb, w, b, kw)
    assert np.array_equal(out if x.ndim == 4 else out[None], want)
    e = sc.estimate(xs, ws, hw=SQUARE, bias=True, x_absmax=int(np.abs(x).max()),
                    w_absmax=int(np.abs(w).max()), b_absmax=int(np.abs(b).max()), **kw)
    assert e.cycles == st.cycles


@pytest.mark.rtl
@pytest.mark.parametrize("groups", [1, 4])
def test_rtl_bias_at_the_int32_limits(groups):
    """A bias of -2**31 and 2**31 - 1 with full-range int8 data: the bias alone breaks
    the accumulator bound, so the host adds it (int64); exact, cycles as estimated."""
    rng = np.random.default_rng(groups)
    x = rng.integers(-128, 128, (1, 4, 6, 7))
    x[0, 0, 0, 0] = -128
    w = rng.integers(-128, 128, (4, 4 // groups, 3, 3))
    w[0, 0, 0, 0] = -128
    b = np.array([-2**31, 2**31 - 1, -2**31 + 5, 7])
    out, st = sc.conv2d(x, w, b, groups=groups, padding=1, hw=SQUARE, backend="rtl",
                        return_stats=True)
    assert np.array_equal(out, _torch(x, w, b, dict(groups=groups, padding=1)))
    assert st.host_work["host_bias_adds"] == out.size
    e = sc.estimate(x.shape, w.shape, groups=groups, padding=1, hw=SQUARE, bias=True,
                    x_absmax=128, w_absmax=128, b_absmax=2**31)
    assert e.cycles == st.cycles
