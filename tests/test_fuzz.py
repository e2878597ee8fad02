"""Property-based test over nn.Conv2d's whole valid argument space, against PyTorch.

Kernels 1-16 per axis, strides 1-20, dilations 1-10, padding up to the kernel's
reach or 'same' / 'valid', every padding mode, groups with channel multipliers,
N = 0..3 and unbatched, 4-, 8- and 16-bit data, and inputs, weights and bias at
their extremes (the data range's minimum everywhere, int32 minimum / maximum
bias). The golden backend and the rtl backend (4x4 builds of each data width) must
equal PyTorch (float64 on integers, exact at these sizes), and ``estimate`` must
count the RTL's cycles.

Profiles: ``make test`` runs a fast one; ``make fuzz FUZZ_EXAMPLES=n FUZZ_SEED=s``
a long one (``FUZZ_MAX_REACH`` bounds a kernel axis's reach, ``(k - 1) * d + 1``,
to keep the tensors small).
"""

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, note, settings, seed
from hypothesis import strategies as st

import systolic_conv as sc
from systolic_conv.contract import conv_geometry, int_range
from systolic_conv.hw.config import HardwareConfig
from systolic_conv.sim.cocotb.layers import HW_CONFIGS

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
RTL_EXAMPLES = int(os.environ.get("FUZZ_RTL_EXAMPLES", "12"))
SEED = int(os.environ.get("FUZZ_SEED", "20261203"))
MAX_REACH = int(os.environ.get("FUZZ_MAX_REACH", "24"))
MODES = ("zeros", "reflect", "replicate", "circular")

# the 4x4 builds of the suite (tests/test_rtl_layers.py and the cocotb square array)
BUILDS = {w: HardwareConfig(rows=4, cols=4, data_width=w, max_width=32, max_cwords=8,
                            weight_depth=4096, acc_depth=256) for w in (4, 16)}
BUILDS[8] = HW_CONFIGS["square"]

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")


def _axis(draw):
    """kernel, dilation, stride of one axis, the reach bounded by MAX_REACH."""
    k = draw(st.integers(1, 16))
    dmax = max(1, min(10, (MAX_REACH - 1) // max(1, k - 1))) if k > 1 else 10
    assume(k <= MAX_REACH)
    d = draw(st.integers(1, dmax))
    s = draw(st.integers(1, 20))
    return k, d, s


@st.composite
def layers(draw):
    width = draw(st.sampled_from([4, 8, 16]))
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 3))
    mult = draw(st.integers(1, 2))
    (kh, dh, sh), (kw, dw, sw) = _axis(draw), _axis(draw)
    mode = draw(st.sampled_from(MODES))
    kind = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    reach_h, reach_w = dh * (kh - 1), dw * (kw - 1)
    if kind == "same":
        sh = sw = 1
        padding = "same"
    elif kind == "int":
        padding = draw(st.integers(0, min(reach_h, reach_w)))
    elif kind == "pair":
        padding = (draw(st.integers(0, reach_h)), draw(st.integers(0, reach_w)))
    else:
        padding = "valid"
    H = draw(st.integers(1, reach_h + 6))
    W = draw(st.integers(1, reach_w + 6))
    n = draw(st.sampled_from([None, 0, 1, 2, 3]))
    cin, cout = groups * cg, groups * mult
    xs = (cin, H, W) if n is None else (n, cin, H, W)
    ws = (cout, cg, kh, kw)
    kwargs = dict(stride=(sh, sw), padding=padding, dilation=(dh, dw), groups=groups,
                  padding_mode=mode)
    try:
        conv_geometry(xs, ws, (cout,), **kwargs)
    except ValueError:
        assume(False)
    fill = draw(st.sampled_from(["uniform", "min", "extreme"]))
    bias = draw(st.sampled_from(["none", "small", "int32_min", "int32_max", "mixed"]))
    return dict(width=width, xs=xs, ws=ws, kwargs=kwargs, fill=fill, bias=bias,
                data_seed=draw(st.integers(0, 2**31 - 1)))


def _data(case):
    rng = np.random.default_rng(case["data_seed"])
    lo, hi = int_range(case["width"])

    def fill(shape):
        if case["fill"] == "min":
            return np.full(shape, lo, dtype=np.int64)
        if case["fill"] == "extreme":
            return rng.choice(np.array([lo, hi]), shape).astype(np.int64)
        return rng.integers(lo, hi, shape, endpoint=True)

    x, w = fill(case["xs"]), fill(case["ws"])
    c = case["ws"][0]
    b = {"none": None, "small": rng.integers(-1000, 1000, c),
         "int32_min": np.full(c, -2**31), "int32_max": np.full(c, 2**31 - 1),
         "mixed": rng.choice(np.array([-2**31, 2**31 - 1, 0, -1]), c)}[case["bias"]]
    return x, w, b


def _torch(x, w, b, kwargs):
    mode = kwargs["padding_mode"]
    m = torch.nn.Conv2d(w.shape[1] * kwargs["groups"], w.shape[0], w.shape[2:],
                        stride=kwargs["stride"], padding=kwargs["padding"],
                        dilation=kwargs["dilation"], groups=kwargs["groups"],
                        bias=b is not None, padding_mode=mode, dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w.astype(np.float64)))
        if b is not None:
            m.bias.copy_(torch.from_numpy(b.astype(np.float64)))
        y = m(torch.from_numpy(x.astype(np.float64))).numpy()
    return y.astype(np.int64)


def _describe(case):
    note(f"input {case['xs']} weight {case['ws']} {case['kwargs']} int{case['width']} "
         f"fill={case['fill']} bias={case['bias']} data_seed={case['data_seed']}")


@seed(SEED)
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(layers())
def test_golden_equals_pytorch_everywhere(case):
    _describe(case)
    x, w, b = _data(case)
    out = sc.conv2d(x, w, b, data_width=case["width"], **case["kwargs"])
    assert np.array_equal(out, _torch(x, w, b, case["kwargs"]))


@pytest.mark.rtl
@seed(SEED + 1)
@settings(max_examples=RTL_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(layers())
def test_rtl_equals_pytorch_and_the_estimate_everywhere(case):
    _describe(case)
    x, w, b = _data(case)
    hw = BUILDS[case["width"]]
    out, stats = sc.conv2d(x, w, b, hw=hw, backend="rtl", return_stats=True,
                           **case["kwargs"])
    assert np.array_equal(out, _torch(x, w, b, case["kwargs"]))
    if x.size and w.size:
        e = sc.estimate(case["xs"], case["ws"], hw=hw, bias=b is not None,
                        x_absmax=int(np.abs(x).max()), w_absmax=int(np.abs(w).max()),
                        b_absmax=0 if b is None else int(np.abs(b).max()), **case["kwargs"])
        assert e.cycles == stats.cycles
