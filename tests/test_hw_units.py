"""The whole accelerator in amaranth.sim (no compiler) on tiny configurations:
bit-exact under random stalls on every stream, and the front ends' windows read
back through one-hot weights; plus the configuration's own checks."""

import random

import numpy as np
import pytest

from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.accel import Conv2dAccelerator
from systolic_conv.golden import conv2d_int
from systolic_conv.streams import build_invocation
from systolic_conv.sim.amaranth_tb import run_invocation_amaranth


def test_config_rejects_bad_parameters():
    with pytest.raises(ValueError, match=r"^rows must be a positive integer, not -1$"):
        HardwareConfig(rows=-1)
    with pytest.raises(ValueError, match=r"^data_width must be 4, 8 or 16, not 12$"):
        HardwareConfig(data_width=12)
    with pytest.raises(ValueError, match=r"^max_width must be a power of two, not 48$"):
        HardwareConfig(max_width=48)
    with pytest.raises(ValueError, match=r"^unknown fault 'nope'"):
        HardwareConfig(faults=("nope",))
    assert HardwareConfig(data_width=16).acc_width == 48


SMALL = HardwareConfig(rows=2, cols=3, act_pixels=2, max_width=16, max_cwords=4, lb_rows=8,
                       weight_depth=256, max_cotiles=8, acc_depth=64)
SQUARE = HardwareConfig(rows=2, cols=2, act_pixels=2, max_width=32, max_cwords=2, lb_rows=8,
                        weight_depth=128, max_cotiles=4, acc_depth=128, dw_kernel=4)


def _prepad(x, pads, mode, pv):
    """Columns padded by the host for reflect / replicate / circular (the hardware
    pads zeros / the pad value itself): returns the streamed x and its pads."""
    from systolic_conv.golden import pad_input
    pt, pb, pl, pr = pads
    if mode == "zeros":
        return x, pads
    return pad_input(x[None], (0, 0, pl, pr), mode, value=pv)[0], (pt, pb, 0, 0)


@pytest.mark.parametrize("case", [
    dict(cin=3, cout=4, H=5, W=7, k=(3, 3), s=(1, 1), d=(1, 1), pads=(1, 1, 1, 1), mode="zeros"),
    dict(cin=2, cout=3, H=7, W=9, k=(2, 3), s=(2, 1), d=(1, 2), pads=(0, 1, 2, 0), mode="zeros",
         pad_value=-5),
    dict(cin=4, cout=2, H=6, W=8, k=(3, 2), s=(1, 2), d=(2, 1), pads=(0, 0, 1, 1), mode="reflect"),
    dict(cin=1, cout=3, H=4, W=6, k=(1, 3), s=(1, 1), d=(1, 1), pads=(0, 0, 2, 2), mode="circular"),
])
def test_accelerator_amaranth_sim_under_stalls(case):
    """The whole accelerator in amaranth.sim, random idle cycles on every input and
    back-pressure on the output; bit-exact and with consistent counters."""
    rng = np.random.default_rng(len(str(case)))
    x = rng.integers(-128, 128, (case["cin"], case["H"], case["W"]))
    w = rng.integers(-128, 128, (case["cout"], case["cin"]) + case["k"])
    b = rng.integers(-3000, 3000, case["cout"])
    pt, pb, pl, pr = case["pads"]
    pv = case.get("pad_value", 0)
    xs, pads = _prepad(x, case["pads"], case["mode"], pv)
    inv = build_invocation(SMALL, xs, w, b, stride=case["s"], dilation=case["d"],
                           pads=pads, pad_value=pv)
    seed = random.Random(str(case)).randrange(1 << 16)
    print("seed", seed)
    out, status, cycles = run_invocation_amaranth(Conv2dAccelerator(SMALL), inv, seed=seed,
                                                  idle=0.3, stall=0.3, max_cycles=20000)
    # reference: vertical pads are zeros (pad value), horizontal by mode
    from systolic_conv.golden import pad_input
    xp = pad_input(x[None], (0, 0, pl, pr), case["mode"], value=pv)
    xp = pad_input(xp, (pt, pb, 0, 0), "zeros", value=pv)
    ref = conv2d_int(xp, w, b, stride=case["s"], dilation=case["d"])[0]
    assert np.array_equal(out, ref)
    assert status["error"] == 0
    assert status["cycles"] == cycles
    from systolic_conv.hw.layouts import COUNTERS
    assert sum(status[k] for k in COUNTERS[1:]) == status["cycles"]
    assert status["busy"] == inv.desc["n_tiles"] * inv.out_height * inv.out_width


@pytest.mark.parametrize("case", [
    dict(c=3, H=6, W=9, k=(3, 3), s=(1, 1), pads=(1, 1, 1, 1), mode="zeros"),
    dict(c=4, H=9, W=11, k=(3, 2), s=(2, 2), pads=(1, 0, 1, 1), mode="replicate", pad_value=7),
    dict(c=2, H=5, W=7, k=(2, 4), s=(1, 3), pads=(0, 1, 2, 1), mode="circular"),
])
def test_accelerator_depthwise_amaranth_sim_under_stalls(case):
    """The depthwise mapping end to end in amaranth.sim under random stalls."""
    rng = np.random.default_rng(len(str(case)) + 7)
    c = case["c"]
    x = rng.integers(-128, 128, (c, case["H"], case["W"]))
    w = rng.integers(-128, 128, (c, 1) + case["k"])
    b = rng.integers(-3000, 3000, c)
    pv = case.get("pad_value", 0)
    from systolic_conv.golden import pad_input
    pt, pb, pl, pr = case["pads"]
    xp = pad_input(pad_input(x[None], (0, 0, pl, pr), case["mode"], value=pv), (pt, pb, 0, 0),
                   "zeros", value=pv)
    ref = conv2d_int(xp, w, b, stride=case["s"], groups=c)[0]
    xs, pads = _prepad(x, case["pads"], case["mode"], pv)
    inv = build_invocation(SQUARE, xs, w, b, groups=c, stride=case["s"], pads=pads,
                           pad_value=pv, depthwise=True)
    seed = random.Random(str(case)).randrange(1 << 16)
    print("seed", seed)
    out, status, cycles = run_invocation_amaranth(Conv2dAccelerator(SQUARE), inv, seed=seed,
                                                  idle=0.3, stall=0.3, max_cycles=40000)
    assert np.array_equal(out, ref)
    assert status["error"] == 0 and status["cycles"] == cycles
    from systolic_conv.hw.layouts import COUNTERS
    assert sum(status[k] for k in COUNTERS[1:]) == status["cycles"]
    nblk = -(-inv.out_width // SQUARE.rows)
    assert status["busy"] == inv.desc["cotiles"] * inv.out_height * nblk * case["k"][0] * \
        case["k"][1]


def _window_cases():
    rng = random.Random(20261126)
    cases = []
    while len(cases) < 8:
        kh, kw = rng.randint(1, 4), rng.randint(1, 4)
        dh, dw = rng.randint(1, 3), rng.randint(1, 2)
        sh, sw = rng.randint(1, 3), rng.randint(1, 3)
        H = rng.randint(dh * (kh - 1) + 1, dh * (kh - 1) + 6)
        W = rng.randint(dw * (kw - 1) + 1, dw * (kw - 1) + 8)
        mode = rng.choice(["zeros", "reflect", "replicate", "circular"])
        lim = W - 1 if mode == "reflect" else W
        pl, pr = rng.randint(0, min(2, lim)), rng.randint(0, min(2, lim))
        pt, pb = rng.randint(0, 2), rng.randint(0, 2)
        if (H + pt + pb - dh * (kh - 1) - 1) < 0 or (W + pl + pr - dw * (kw - 1) - 1) < 0:
            continue
        cases.append(dict(k=(kh, kw), d=(dh, dw), s=(sh, sw), H=H, W=W, mode=mode,
                          pads=(pt, pb, pl, pr), depthwise=rng.random() < 0.4))
    return cases


@pytest.mark.parametrize("case", _window_cases(), ids=lambda c: str(c))
def test_front_ends_read_sliding_windows(case):
    """The dense element fetch and the depthwise row vectors against numpy sliding
    windows: a one-hot weight per tap reads back exactly the windowed input."""
    cfg = HardwareConfig(rows=2, cols=2, act_pixels=2, max_width=32, max_cwords=2, lb_rows=16,
                         weight_depth=128, max_cotiles=4, acc_depth=128, dw_kernel=4)
    kh, kw = case["k"]
    taps = kh * kw
    rng = np.random.default_rng(taps)
    c = 2
    x = rng.integers(-128, 128, (c, case["H"], case["W"]))
    pt, pb, pl, pr = case["pads"]
    from systolic_conv.golden import pad_input
    xp = pad_input(x[None], (0, 0, pl, pr), case["mode"], value=-3)
    xp = pad_input(xp, (pt, pb, 0, 0), "zeros", value=-3)[0]
    win = np.lib.stride_tricks.sliding_window_view(
        xp, ((kh - 1) * case["d"][0] + 1, (kw - 1) * case["d"][1] + 1), axis=(1, 2))
    win = win[:, ::case["s"][0], ::case["s"][1], ::case["d"][0], ::case["d"][1]]
    # pick one tap per run (the first and the last), one-hot depthwise weights
    for tap in sorted({0, taps - 1}):
        w = np.zeros((c, 1, kh, kw), dtype=np.int64)
        w[:, 0, tap // kw, tap % kw] = 1
        xs, pads = _prepad(x, case["pads"], case["mode"], -3)
        dwise = case["depthwise"] and case["d"][1] == 1
        inv = build_invocation(cfg, xs, w, None, groups=c, stride=case["s"], dilation=case["d"],
                               pads=pads, pad_value=-3, depthwise=dwise)
        out, status, _ = run_invocation_amaranth(Conv2dAccelerator(cfg), inv, seed=tap,
                                                 idle=0.2, stall=0.2, max_cycles=20000)
        assert status["error"] == 0
        assert np.array_equal(out, win[..., tap // kw, tap % kw]), (tap, case)


def test_prune_builds_keeps_newest_and_recent(tmp_path):
    import os
    import time
    from systolic_conv.sim.toolchain import prune_builds
    now = time.time()
    for i, age in enumerate([7200, 5000, 4000, 100]):       # seconds since last touched
        d = tmp_path / f"harness-r2c2-{i}"
        d.mkdir()
        (d / "lib.so").write_text("x")
        os.utime(d, (now - age, now - age))
    (tmp_path / "harness-r4c4-0").mkdir()                    # another configuration
    os.utime(tmp_path / "harness-r4c4-0", (now - 9999, now - 9999))
    gone = prune_builds("harness-r2c2-", keep=2, root=tmp_path)
    # newest two stay (ages 100, 4000); of the rest only those older than an hour go
    assert sorted(d.name for d in gone) == ["harness-r2c2-0", "harness-r2c2-1"]
    assert sorted(d.name for d in tmp_path.iterdir()) == ["harness-r2c2-2", "harness-r2c2-3",
                                                          "harness-r4c4-0"]
    assert prune_builds("harness-r2c2-", keep=0, root=tmp_path, min_age_s=3600) == \
        [tmp_path / "harness-r2c2-2"]
