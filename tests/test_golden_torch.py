"""The golden model against PyTorch (nn.Conv2d in float64) on integer data: zero mismatches.

``GOLDEN_TORCH_EXAMPLES`` (environment) sets the number of hypothesis examples
(default 1000); on a failure hypothesis prints the falsifying case and a
``@reproduce_failure`` blob that replays it.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import torch
import torch.nn.functional as F  # noqa: E402

from systolic_conv.contract import compute_padding, conv_geometry, int_range  # noqa: E402
from systolic_conv.golden import choose_arithmetic, conv2d_int, pad_input  # noqa: E402

MODES = ("zeros", "reflect", "replicate", "circular")
EXAMPLES = int(os.environ.get("GOLDEN_TORCH_EXAMPLES", "1000"))

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")


def torch_reference(x, w, b, stride, padding, dilation, groups, padding_mode):
    """nn.Conv2d (float64) with the given integer weights: PyTorch's own forward."""
    C_out, _, kh, kw = w.shape
    C_in = x.shape[-3]
    m = torch.nn.Conv2d(C_in, C_out, (kh, kw), stride=stride, padding=padding,
                        dilation=dilation, groups=groups, bias=b is not None,
                        padding_mode=padding_mode, dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w.astype(np.float64)))
        if b is not None:
            m.bias.copy_(torch.from_numpy(b.astype(np.float64)))
        y = m(torch.from_numpy(x.astype(np.float64))).numpy()
    assert np.array_equal(y, np.round(y)), "torch reference is not integral"
    return y.astype(np.int64)


def int_data(rng, shape, width, fill):
    """Integers of a signed width; 'extreme' uses only the two range ends."""
    lo, hi = int_range(width)
    if fill == "uniform":
        a = rng.integers(lo, hi, shape, endpoint=True)
    elif fill == "extreme":
        a = rng.choice(np.array([lo, hi]), shape)
    elif fill == "min":
        a = np.full(shape, lo)
    else:  # mixed: uniform with sprinkled extremes
        a = rng.integers(lo, hi, shape, endpoint=True)
        mask = rng.random(shape) < 0.3
        a[mask] = rng.choice(np.array([lo, hi]), int(mask.sum()))
    dtype = {4: np.int8, 8: np.int8, 16: np.int16}[width]
    return a.astype(dtype)


@st.composite
def conv_cases(draw):
    width = draw(st.sampled_from([4, 8, 16]))
    groups = draw(st.integers(1, 4))
    cg = draw(st.sampled_from([1, 1, 2, 3, 5]))             # 1: depthwise
    mult = draw(st.integers(1, 3))                          # depthwise multiplier K
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    mode = draw(st.sampled_from(MODES))
    pad_kind = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    if pad_kind == "same":
        stride = (1, 1)
    else:
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if pad_kind == "int":
        padding = draw(st.integers(0, 4))
    elif pad_kind == "pair":
        padding = (draw(st.integers(0, 4)), draw(st.integers(0, 4)))
    else:
        padding = pad_kind
    t, b_, l, r = compute_padding(padding, (kh, kw), (dh, dw), stride)
    # smallest input that the geometry (and the padding mode) admits
    need_h = max(1, dh * (kh - 1) + 1 - t - b_)
    need_w = max(1, dw * (kw - 1) + 1 - l - r)
    if mode == "reflect":
        need_h, need_w = max(need_h, t + 1, b_ + 1), max(need_w, l + 1, r + 1)
    if mode == "circular":
        need_h, need_w = max(need_h, t, b_), max(need_w, l, r)
    H = draw(st.integers(need_h, need_h + 7))
    W = draw(st.integers(need_w, need_w + 7))
    N = draw(st.sampled_from([0, 1, 1, 2, 3, None]))        # None: unbatched
    has_bias = draw(st.booleans())
    fill = draw(st.sampled_from(["uniform", "extreme", "mixed", "min"]))
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(width=width, groups=groups, C_in=groups * cg, C_out=groups * mult,
                kernel=(kh, kw), stride=stride, padding=padding, dilation=(dh, dw),
                mode=mode, H=H, W=W, N=N, bias=has_bias, fill=fill, seed=seed)


@settings(max_examples=EXAMPLES, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases())
def test_golden_matches_torch(case):
    note(f"case={case}")
    rng = np.random.default_rng(case["seed"])
    width = case["width"]
    shape = (case["C_in"], case["H"], case["W"])
    if case["N"] is not None:
        shape = (case["N"],) + shape
    x = int_data(rng, shape, width, case["fill"])
    w = int_data(rng, (case["C_out"], case["C_in"] // case["groups"]) + case["kernel"],
                 width, case["fill"])
    b = None
    if case["bias"]:
        b = rng.integers(-2**31, 2**31, case["C_out"], dtype=np.int64).astype(np.int32)
        b[:1] = rng.choice([-2**31, 2**31 - 1])
    args = (case["stride"], case["padding"], case["dilation"], case["groups"], case["mode"])
    ref = torch_reference(x, w, b, *args)
    got = conv2d_int(x, w, b, *args, data_width=width)
    assert got.dtype == np.int64 and got.shape == ref.shape
    assert np.array_equal(got, ref)
    # every exact arithmetic gives the same integers
    g = conv_geometry(x.shape, w.shape, None if b is None else b.shape, *args)
    xmax = max(-int(x.min()), int(x.max())) if x.size else 0
    wmax = max(-int(w.min()), int(w.max()))
    for method in ("float64", "int64", "float32"):
        if method == "float32":
            try:
                choose_arithmetic(g.reduction, xmax, wmax, g.kh * g.kw, "float32")
            except ValueError:
                continue
        assert np.array_equal(conv2d_int(x, w, b, *args, data_width=width, method=method), ref)


SEED_LAYERS = [
    dict(kernel=(3, 3), stride=2, padding=0, dilation=1),
    dict(kernel=(3, 5), stride=(2, 1), padding=(4, 2), dilation=1),
    dict(kernel=(3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1)),
]


@pytest.mark.parametrize("layer", SEED_LAYERS, ids=["square_s2", "k3x5_p4x2", "k3x5_p4x2_d3x1"])
def test_seed_examples_true_shapes(layer):
    """The seed's nn_conv2d(16, 33, ...) examples on a (20, 16, 50, 100) int8 input."""
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (20, 16, 50, 100), dtype=np.int8)
    w = rng.integers(-128, 128, (33, 16) + layer["kernel"], dtype=np.int8)
    b = rng.integers(-2**31, 2**31, 33, dtype=np.int64).astype(np.int32)
    args = (layer["stride"], layer["padding"], layer["dilation"], 1, "zeros")
    ref = torch_reference(x, w, b, *args)
    got = conv2d_int(x, w, b, *args)
    assert np.array_equal(got, ref)


@pytest.mark.parametrize("mode", MODES)
def test_seed_shapes_all_padding_modes(mode):
    rng = np.random.default_rng(8)
    x = rng.integers(-128, 128, (2, 16, 50, 100), dtype=np.int8)
    w = rng.integers(-128, 128, (33, 16, 3, 5), dtype=np.int8)
    args = ((2, 1), (4, 2), (3, 1), 1, mode)
    assert np.array_equal(conv2d_int(x, w, None, *args), torch_reference(x, w, None, *args))


# ---- int64 path ----

def ref_conv_loops(x, w, b, stride, padding, dilation, groups, mode, pad_value=0):
    """Slow, independent reference: explicit loops over Python ints."""
    N, C_in, H, W = x.shape
    C_out, Cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    t, bt, l, r = compute_padding(padding, (kh, kw), dilation, stride)
    Ho = (H + t + bt - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + l + r - dw * (kw - 1) - 1) // sw + 1

    def src(i, size):
        if 0 <= i < size:
            return i
        if mode == "zeros":
            return None
        if mode == "replicate":
            return min(max(i, 0), size - 1)
        if mode == "circular":
            return i % size
        return -i if i < 0 else 2 * (size - 1) - i          # reflect

    xl, wl = x.tolist(), w.tolist()
    out = np.zeros((N, C_out, Ho, Wo), dtype=object)
    Cog = C_out // groups
    for n in range(N):
        for co in range(C_out):
            g = co // Cog
            for oh in range(Ho):
                for ow in range(Wo):
                    acc = 0 if b is None else int(b[co])
                    for ci in range(Cg):
                        for i in range(kh):
                            hi = src(oh * sh + i * dh - t, H)
                            for j in range(kw):
                                wj = src(ow * sw + j * dw - l, W)
                                if hi is None or wj is None:
                                    v = pad_value
                                else:
                                    v = xl[n][g * Cg + ci][hi][wj]
                                acc += v * wl[co][ci][i][j]
                    out[n, co, oh, ow] = acc
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("groups,cg,mult", [(1, 3, 2), (2, 2, 2), (3, 1, 2)])
def test_tiny_cases_against_loops(mode, groups, cg, mult):
    rng = np.random.default_rng(100 + groups)
    x = rng.integers(-2**15, 2**15, (2, groups * cg, 5, 6), dtype=np.int64).astype(np.int16)
    w = rng.integers(-2**15, 2**15, (groups * mult, cg, 2, 3), dtype=np.int64).astype(np.int16)
    b = rng.integers(-2**31, 2**31, groups * mult, dtype=np.int64).astype(np.int32)
    args = ((1, 2), (2, 1), (2, 1), groups, mode)
    ref = ref_conv_loops(x, w, b, *args, pad_value=-7)
    for method in ("auto", "int64", "float64"):
        got = conv2d_int(x, w, b, *args, pad_value=-7, data_width=16, method=method)
        assert np.array_equal(got, ref.astype(np.int64)), method


def test_pad_value_against_torch():
    """pad_value (the input zero point) pads like F.pad(value=...) then convolves."""
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (2, 4, 9, 7), dtype=np.int8)
    w = rng.integers(-128, 128, (6, 2, 3, 2), dtype=np.int8)
    pads = compute_padding("same", (3, 2), (2, 3), 1)
    xt = F.pad(torch.from_numpy(x.astype(np.float64)), (pads[2], pads[3], pads[0], pads[1]),
               value=-128.0)
    ref = F.conv2d(xt, torch.from_numpy(w.astype(np.float64)), dilation=(2, 3), groups=2)
    got = conv2d_int(x, w, padding="same", dilation=(2, 3), groups=2, pad_value=-128)
    assert np.array_equal(got, ref.numpy().astype(np.int64))


def test_int64_path_when_float64_is_not_exact():
    """16-bit data with K > 2**23: auto picks int64, and float64 would be wrong."""
    K = 2**23 + 69
    rng = np.random.default_rng(11)
    x = np.full((1, K, 1, 1), -2**15, dtype=np.int16)
    w = np.full((1, K, 1, 1), -2**15, dtype=np.int16)
    x[0, :64, 0, 0] = rng.integers(-2**15, 2**15, 64)
    if int(x[0, :64, 0, 0].astype(np.int64).sum()) % 2 == 0:    # make the sum odd
        x[0, 0, 0, 0] += 1 if x[0, 0, 0, 0] < 2**15 - 1 else -1
    w[0, :64, 0, 0] = 1
    exact = int(np.dot(x.reshape(-1).astype(np.int64), w.reshape(-1).astype(np.int64)))
    assert exact > 2**53 and exact % 2 == 1          # not representable in float64
    assert int(np.dot(x.reshape(-1).astype(np.float64), w.reshape(-1).astype(np.float64))) != exact
    assert choose_arithmetic(K, 2**15, 2**15)[0] == "int64"
    got = conv2d_int(x, w, data_width=16)
    assert got.shape == (1, 1, 1, 1) and int(got[0, 0, 0, 0]) == exact
    with pytest.raises(ValueError, match=r"^method='float64' is not exact for reduction "
                                         r"length 8388677 with max\|x\|=32768, "
                                         r"max\|w\|=32768$"):
        conv2d_int(x, w, data_width=16, method="float64")
    # torch's CPU int64 conv (exact integer arithmetic) agrees
    ref = F.conv2d(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(w.astype(np.int64)))
    assert int(ref.item()) == exact


def test_int64_matches_float_paths_on_layers():
    """Forced int64 equals the float paths (exact here) on a grouped, padded layer."""
    rng = np.random.default_rng(12)
    x = rng.integers(-2**15, 2**15, (2, 8, 12, 11), dtype=np.int64).astype(np.int16)
    w = rng.integers(-2**15, 2**15, (12, 4, 3, 3), dtype=np.int64).astype(np.int16)
    b = rng.integers(-2**31, 2**31, 12, dtype=np.int64).astype(np.int32)
    for mode in MODES:
        args = (1, 1, (1, 2), 2, mode)
        a = conv2d_int(x, w, b, *args, data_width=16, method="int64")
        assert np.array_equal(a, conv2d_int(x, w, b, *args, data_width=16, method="float64"))
        assert np.array_equal(a, torch_reference(x, w, b, *args))


def test_float32_chunked_reduction():
    """int8 with K = 2304 > 1023: float32 in channel chunks summed in float64, exact."""
    rng = np.random.default_rng(13)
    x = np.full((1, 256, 6, 6), -128, dtype=np.int8)
    w = np.full((4, 256, 3, 3), -128, dtype=np.int8)
    x[0, :, :3] = rng.integers(-128, 128, (256, 3, 6))
    arith, chunk = choose_arithmetic(256 * 9, 128, 128, 9)
    assert arith == "float32" and 1 <= chunk < 256
    ref = torch_reference(x, w, None, 1, 1, 1, 1, "zeros")
    assert np.array_equal(conv2d_int(x, w, padding=1), ref)
    assert int(np.abs(ref).max()) > 2**24


def test_choose_arithmetic_bounds():
    assert choose_arithmetic(1023, 128, 128) == ("float32", 1023)
    assert choose_arithmetic(1024, 128, 128)[0] == "float32"          # chunked
    assert choose_arithmetic(1024, 128, 128, 1)[1] == 1023
    assert choose_arithmetic(9, 2**15, 2**15, 9) == ("float64", 1)
    assert choose_arithmetic(2**23 - 1, 2**15, 2**15) == ("float64", 2**23 - 1)
    assert choose_arithmetic(2**23, 2**15, 2**15) == ("int64", 2**23)
    assert choose_arithmetic(10, 0, 5) == ("float32", 10)
    with pytest.raises(ValueError, match=r"^method='float32' is not exact"):
        choose_arithmetic(9, 2**15, 2**15, 9, "float32")
    with pytest.raises(ValueError, match=r"^method='fast' must be one of 'auto', "):
        choose_arithmetic(9, 1, 1, 1, "fast")


def test_golden_input_checks():
    x = np.zeros((1, 2, 4, 4), np.int8)
    w = np.zeros((2, 2, 3, 3), np.int8)
    with pytest.raises(TypeError, match=r"^x must have an integer dtype, not float64$"):
        conv2d_int(x.astype(float), w)
    with pytest.raises(ValueError, match=r"^weight has value 8 outside the signed 4-bit "
                                         r"range \[-8, 7\]$"):
        conv2d_int(x, w + 8, data_width=4)
    with pytest.raises(ValueError, match=r"^bias has value 2147483648 outside the signed "
                                         r"32-bit range"):
        conv2d_int(x, w, np.array([0, 2**31]))
    with pytest.raises(ValueError, match=r"^pad_value=200 outside the signed 8-bit range "
                                         r"\[-128, 127\]$"):
        conv2d_int(x, w, pad_value=200)
    for width in (7, 17):
        with pytest.raises(ValueError, match=rf"^data_width={width} must be one of \(4, 8, 16\)$"):
            conv2d_int(x, w, data_width=width)
    with pytest.raises(ValueError, match=r"^method='fast' must be one of"):
        conv2d_int(x, w, method="fast")


def test_empty_batch_and_unbatched():
    w = np.ones((3, 2, 3, 3), np.int8)
    out = conv2d_int(np.zeros((0, 2, 5, 5), np.int8), w, padding=1)
    assert out.shape == (0, 3, 5, 5) and out.dtype == np.int64
    x = np.arange(50, dtype=np.int8).reshape(2, 5, 5)
    u = conv2d_int(x, w, np.array([1, 2, 3]), padding=1, padding_mode="circular")
    assert u.shape == (3, 5, 5)
    assert np.array_equal(u, conv2d_int(x[None], w, np.array([1, 2, 3]), padding=1,
                                         padding_mode="circular")[0])


@pytest.mark.parametrize("mode", MODES)
def test_pad_input_matches_f_pad(mode):
    rng = np.random.default_rng(3)
    x = rng.integers(-100, 100, (2, 3, 5, 6))
    for pads in [(1, 2, 3, 0), (4, 4, 5, 5), (0, 0, 0, 0), (2, 0, 0, 1)]:
        if mode == "reflect":
            pads = tuple(min(p, 4) for p in pads)
        tmode = "constant" if mode == "zeros" else mode
        kw = dict(value=7.0) if mode == "zeros" else {}
        ref = F.pad(torch.from_numpy(x.astype(np.float64)), (pads[2], pads[3], pads[0], pads[1]),
                    mode=tmode, **kw).numpy()
        got = pad_input(x, pads, mode, value=7)
        assert np.array_equal(got, ref.astype(np.int64))
    with pytest.raises(ValueError, match=r"^padding_mode='reflect' needs padding < input "
                                         r"size, but pads \(5, 0\) on H=5$"):
        pad_input(x, (5, 0, 0, 0), "reflect")
