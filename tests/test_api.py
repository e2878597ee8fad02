"""Functional conv2d API: golden backend, requantization, stats, rtl dispatch.

Oracles independent of the library: ``torch.nn.functional.conv2d`` on the same
integers in float64 (exact here: |sums| < 2**53), and the requantization rules of
DESIGN.md section 1 written out below with Python ints (round half up of
``acc * M / 2**31``, then round half away from zero of a division by ``2**S``;
``half_up``: round half up of ``acc * M / 2**S``)."""

import os
import subprocess
import sys
import types

import numpy as np
import pytest

import systolic_conv
from systolic_conv import GoldenStats, Requant, conv2d, conv2d_int, requantize

TORCH_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
             "circular": "circular"}


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (2, 4, 9, 8), dtype=np.int8)
    w = rng.integers(-128, 128, (6, 2, 3, 3), dtype=np.int8)
    b = rng.integers(-2**20, 2**20, 6).astype(np.int32)
    return x, w, b


def torch_conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """F.conv2d in float64 on the integers (int padding only), as int64."""
    import torch
    import torch.nn.functional as F
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    xt = F.pad(xt, (pw, pw, ph, ph), mode=TORCH_PAD[padding_mode])
    out = F.conv2d(xt, torch.from_numpy(np.asarray(w, dtype=np.float64)),
                   None if b is None else torch.from_numpy(np.asarray(b, dtype=np.float64)),
                   stride=stride, dilation=dilation, groups=groups).numpy()
    assert np.abs(out).max() < 2**53
    return out.astype(np.int64)


def ref_requant_tflite(acc, M, S, zp, lo, hi):
    """tflite requantization of one accumulator (Python ints), from its definition
    (S >= 0): the rounded high product, the rounded division, zero point, clamp."""
    h = (acc * M + 2**30) // 2**31                  # acc * M / 2**31, ties toward +inf
    mag = (2 * abs(h) + 2**S) // 2**(S + 1)         # |h| / 2**S, ties away from zero
    return min(max((mag if h >= 0 else -mag) + zp, lo), hi)


def test_golden_backend_is_conv2d_int():
    x, w, b = data()
    kw = dict(stride=(1, 2), padding=1, dilation=1, groups=2,
              padding_mode="reflect")
    got = conv2d(x, w, b, **kw)
    assert np.array_equal(got, torch_conv(x, w, b, **kw))
    assert np.array_equal(got, conv2d_int(x, w, b, **kw))     # the backend is conv2d_int


def test_requant_and_stats():
    x, w, b = data(1)
    rq = Requant(mode="tflite", multiplier=[2**30] * 6, shift=[8] * 6, out_zero_point=-3,
                 relu=True)
    out, stats = conv2d(x, w, b, padding=1, groups=2, requant=rq, return_stats=True)
    acc = torch_conv(x, w, b, padding=1, groups=2)
    want = np.vectorize(lambda a: ref_requant_tflite(int(a), 2**30, 8, -3, -3, 127),
                        otypes=[np.int64])(acc)
    assert np.array_equal(out, want)
    assert (want == -3).any() and (want == 127).any()       # ReLU at the zero point, and 127
    # per-channel multipliers and shifts that keep most outputs inside the range
    M, S = [2**30 + 977 * c for c in range(6)], [13, 14, 15, 13, 14, 15]
    rq2 = Requant(mode="tflite", multiplier=M, shift=S, out_zero_point=5)
    out2 = conv2d(x, w, b, padding=1, groups=2, requant=rq2)
    want2 = np.stack([np.vectorize(lambda a: ref_requant_tflite(int(a), M[c], S[c], 5, -128, 127),
                                   otypes=[np.int64])(acc[:, c]) for c in range(6)], axis=1)
    assert np.array_equal(out2, want2)
    assert ((want2 > -128) & (want2 < 127)).mean() > 0.5
    assert out.min() >= -3 and out.max() <= 127
    assert isinstance(stats, GoldenStats)
    assert stats.macs == 2 * 6 * 9 * 8 * 2 * 9 and stats.seconds > 0
    assert "MACs" in str(stats)
    # unbatched: channel axis 0
    u = conv2d(x[0], w, b, padding=1, groups=2, requant=rq)
    assert np.array_equal(u, out[0])


def test_backend_errors():
    x, w, b = data()
    with pytest.raises(ValueError, match=r"^backend='fpga' must be one of 'golden', 'rtl'$"):
        conv2d(x, w, backend="fpga")
    with pytest.raises(TypeError, match=r"^requant must be a Requant, a mode name or None, "
                                        r"not dict$"):
        conv2d(x, w, requant={})
    with pytest.raises(TypeError, match=r"^backend='golden' takes no options seed$"):
        conv2d(x, w, seed=3)
    with pytest.raises(ValueError, match=r"^groups=3 must divide in_channels=4$"):
        conv2d(x, w, groups=3, backend="rtl")


def test_rtl_dispatch(monkeypatch):
    """backend='rtl' hands the validated geometry to driver.run_rtl (stubbed: no simulator)."""
    calls = {}

    def run_rtl(x, weight, bias, geometry, *, hw=None, requant=None, pad_value=0, seed=0,
                progress=None):
        calls.update(geometry=geometry, hw=hw, requant=requant, pad_value=pad_value, seed=seed,
                     progress=progress)
        return np.zeros(geometry.output_shape, np.int64), {"cycles": 42}

    monkeypatch.setitem(sys.modules, "systolic_conv.driver",
                        types.SimpleNamespace(run_rtl=run_rtl))
    x, w, b = data()
    cfg = systolic_conv.HardwareConfig(rows=4, cols=4)
    out, stats = conv2d(x, w, b, padding=(1, 2), groups=2, backend="rtl", hw=cfg,
                        pad_value=-1, return_stats=True, seed=7)
    assert stats == {"cycles": 42} and out.shape == (2, 6, 9, 10)
    assert calls["geometry"].pad == (1, 1, 2, 2) and calls["hw"] is cfg
    assert calls["pad_value"] == -1 and calls["seed"] == 7
    assert calls["progress"] is None            # not a terminal: no bar
    seen = []
    conv2d(x, w, b, groups=2, backend="rtl", progress=lambda d, t: seen.append((d, t)))
    assert calls["progress"] is not None and calls["hw"] == systolic_conv.HardwareConfig()


def test_rtl_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "systolic_conv.driver", None)
    x, w, _ = data()
    with pytest.raises(RuntimeError, match=r"^backend='rtl' is unavailable"):
        conv2d(x, w, backend="rtl")


def test_import_is_light():
    code = ("import sys, systolic_conv; "
            "assert 'torch' not in sys.modules, 'torch'; "
            "assert 'amaranth' not in sys.modules, 'amaranth'")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    for name in ("conv2d", "conv2d_int", "Requant", "requantize", "conv_geometry",
                 "compute_padding", "quantized_conv2d", "quantize_multiplier"):
        assert hasattr(systolic_conv, name)


def test_requant_mode_names_saturate_to_int8():
    """A mode name is that mode with a unit multiplier: the oracle is np.clip."""
    rng = np.random.default_rng(11)
    acc = np.concatenate([rng.integers(-2**47, 2**47, 2000), rng.integers(-300, 300, 2000),
                          [-2**47, 2**47 - 1, -2**30, 2**30, -129, -128, 127, 128, 0]])
    for mode in ("tflite", "half_up"):
        rq = systolic_conv.api.as_requant(mode)
        assert rq.mode == mode and rq.out_width == 8
        assert np.array_equal(requantize(acc, rq, channel_axis=0), np.clip(acc, -128, 127))
    x, w, b = data(2)
    out = conv2d(x, w, b, groups=2, requant="tflite")
    assert np.array_equal(out, np.clip(torch_conv(x, w, b, groups=2), -128, 127))
    assert (out == -128).any() and (out == 127).any()
    with pytest.raises(ValueError, match=r"^requant='round' must be a Requant or one of "
                                         r"'tflite', 'half_up'$"):
        conv2d(x, w, requant="round")


def test_hw_and_data_width_checked_on_golden():
    x, w, b = data()
    with pytest.raises(TypeError, match=r"^hw must be a HardwareConfig or None, not str$"):
        conv2d(x, w, hw="8x8")
    with pytest.raises(ValueError, match=r"^data_width=7 must be one of \(4, 8, 16\)$"):
        conv2d(x, w, data_width=7)
    with pytest.raises(TypeError, match=r"^data_width='8' must be an int, not str$"):
        conv2d(x, w, data_width="8")
    with pytest.raises(ValueError, match=r"^hw.data_width=16 differs from data_width=8$"):
        conv2d(x, w, hw=systolic_conv.HardwareConfig(data_width=16), data_width=8)
    # a valid hw fixes the data width: 16-bit operands pass with a 16-bit hw only
    x16 = x.astype(np.int64) * 200
    with pytest.raises(ValueError, match="outside the signed 8-bit range"):
        conv2d(x16, w, groups=2)
    got = conv2d(x16, w, groups=2, hw=systolic_conv.HardwareConfig(rows=2, cols=2, data_width=16))
    assert np.array_equal(got, torch_conv(x16, w, groups=2))
    with pytest.raises(TypeError, match=r"^progress=3 must be 'auto', True, False, None or a "
                                        r"callable"):
        conv2d(x, w, progress=3)
