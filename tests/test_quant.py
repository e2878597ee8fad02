"""Float path (quantize -> integer conv -> dequantize) against PyTorch's float conv."""

import numpy as np
import pytest

import torch

from systolic_conv.golden import conv2d_int  # noqa: E402
from systolic_conv.quant import QuantReport, quantize_symmetric, quantized_conv2d  # noqa: E402

CASES = [
    dict(C_in=16, C_out=33, k=(3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1), groups=1,
         mode="zeros"),
    dict(C_in=8, C_out=8, k=(3, 3), stride=1, padding=1, dilation=1, groups=8, mode="zeros"),
    dict(C_in=6, C_out=12, k=(3, 3), stride=1, padding=1, dilation=1, groups=6, mode="reflect"),
    dict(C_in=8, C_out=6, k=(4, 2), stride=1, padding="same", dilation=(2, 3), groups=2,
         mode="replicate"),
    dict(C_in=4, C_out=5, k=(5, 5), stride=2, padding=2, dilation=1, groups=1, mode="circular"),
    dict(C_in=3, C_out=4, k=(2, 2), stride=1, padding="same", dilation=1, groups=1,
         mode="reflect"),
    dict(C_in=32, C_out=16, k=(1, 1), stride=1, padding=0, dilation=1, groups=1, mode="zeros"),
]


def torch_float_conv(x, w, b, case):
    m = torch.nn.Conv2d(case["C_in"], case["C_out"], case["k"], stride=case["stride"],
                        padding=case["padding"], dilation=case["dilation"],
                        groups=case["groups"], bias=b is not None, padding_mode=case["mode"],
                        dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
        if b is not None:
            m.bias.copy_(torch.from_numpy(b))
        return m(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['mode']}_g{c['groups']}_k{c['k']}")
@pytest.mark.parametrize("data_width", [4, 8, 16])
def test_error_within_analytic_bound(case, data_width):
    rng = np.random.default_rng(sum(case["k"]) + data_width)
    x = rng.standard_normal((2, case["C_in"], 11, 13))
    w = rng.standard_normal((case["C_out"], case["C_in"] // case["groups"]) + case["k"]) * 0.3
    b = rng.standard_normal(case["C_out"])
    kwargs = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                  groups=case["groups"], padding_mode=case["mode"])
    y_hat, rep = quantized_conv2d(x, w, b, data_width=data_width, **kwargs)
    y = torch_float_conv(x, w, b, case)
    assert y_hat.shape == y.shape
    err = np.abs(y_hat - y)
    slack = 1e-9 * (1 + np.abs(y))
    assert np.all(err <= rep.bound + slack), float((err - rep.bound).max())
    assert rep.within_bound
    # the report's reference is PyTorch's result to float64 accuracy
    assert np.allclose(rep.error, err, rtol=0, atol=1e-9)
    assert rep.max_error == pytest.approx(float(err.max()), abs=1e-9)
    sqnr = 10 * np.log10(np.sum(y**2) / np.sum((y_hat - y) ** 2))
    assert rep.sqnr_db == pytest.approx(sqnr, abs=1e-6)
    floor = {4: 5.0, 8: 25.0, 16: 70.0}[data_width]
    print(f"{case['mode']:9s} groups={case['groups']} k={case['k']} {data_width:2d}-bit: "
          f"SQNR {rep.sqnr_db:.1f} dB, max error {rep.max_error:.3g} <= {rep.max_bound:.3g}")
    assert rep.sqnr_db > floor
    # the bound is informative, not vacuous: within a modest factor of the worst error
    assert rep.max_bound < 50 * rep.max_error + 1e-12


def test_bound_counts_padding_correctly():
    """Zero-padded taps are exact (no dx/2 term); reflected taps are not."""
    x = np.full((1, 1, 4, 4), 0.3)
    w = np.full((1, 1, 3, 3), 0.5)
    _, rz = quantized_conv2d(x, w, padding=1, padding_mode="zeros")
    _, rr = quantized_conv2d(x, w, padding=1, padding_mode="reflect")
    sx, sw = rz.x_scale, float(rz.w_scale[0])
    # corner output: 4 in-image taps (zeros) versus 9 taps (reflect)
    corner_z = 4 * 0.5 * sx / 2 + 4 * 0.3 * sw / 2
    corner_r = 9 * 0.5 * sx / 2 + 9 * 0.3 * sw / 2
    assert rz.bound[0, 0, 0, 0] == pytest.approx(corner_z)
    assert rr.bound[0, 0, 0, 0] == pytest.approx(corner_r)
    assert rz.bound[0, 0, 1, 1] == pytest.approx(corner_r)


def test_int_conv_is_pluggable_and_unbatched():
    calls = []

    def int_conv(xq, wq, bq, **kwargs):
        calls.append(sorted(kwargs))
        return conv2d_int(xq, wq, bq, **kwargs)

    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 7, 7))
    w = rng.standard_normal((6, 2, 3, 3))
    y_hat, rep = quantized_conv2d(x, w, None, padding=1, groups=2, int_conv=int_conv)
    assert calls == [["data_width", "dilation", "groups", "padding", "padding_mode", "stride"]]
    assert y_hat.shape == (6, 7, 7) and isinstance(rep, QuantReport)
    assert rep.within_bound and "SQNR" in str(rep)


def test_quantize_symmetric():
    t = np.array([[-1.0, 0.5], [0.0, 0.0], [2.0, -4.0]])
    q, s = quantize_symmetric(t, 8)
    assert s == 4.0 / 127 and q.min() == -127 and q.max() <= 127
    q, s = quantize_symmetric(t, 8, axis=0)
    assert s.tolist() == [1 / 127, 1.0, 4 / 127] and q[1].tolist() == [0, 0]
    assert np.all(np.abs(q * s[:, None] - t) <= s[:, None] / 2 + 1e-15)
    with pytest.raises(ValueError, match="inf or nan"):
        quantize_symmetric(np.array([np.nan]))


def test_bias_overflow_is_an_error():
    x = np.full((1, 1, 3, 3), 1e-6)
    w = np.full((1, 1, 1, 1), 1e-6)
    with pytest.raises(ValueError, match=r"^bias does not fit int32 at scale"):
        quantized_conv2d(x, w, np.array([1e6]))
