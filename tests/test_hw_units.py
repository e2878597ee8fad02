"""Block tests in amaranth.sim (no compiler): systolic array, requantizer, and the
whole accelerator on a tiny configuration under random stalls."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.array import SystolicArray
from systolic_conv.hw.requant import Requantizer
from systolic_conv.hw.accel import Conv2dAccelerator
from systolic_conv.hw.layouts import RequantMode
from systolic_conv.contract import Requant, requantize
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


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 2), (4, 4)])
def test_systolic_array_double_buffered_matmul(rows, cols):
    """Load two weight tiles (second while the first computes) and stream vectors;
    the de-skewed sums equal the matrix products, rows + cols cycles later."""
    cfg = HardwareConfig(rows=rows, cols=cols)
    dut = SystolicArray(cfg)
    rng = np.random.default_rng(rows * 10 + cols)
    Wt = [rng.integers(-128, 128, (rows, cols)) for _ in range(2)]
    A = rng.integers(-128, 128, (12, rows))
    lat = cfg.array_latency
    got = {}

    async def bench(ctx):
        def load(k, bank):
            # word for row rows-1 first; latch `rows` cycles after the first word
            seq = [Wt[k][rows - 1 - i] for i in range(rows)]
            return seq, bank
        t = 0
        schedule = {}
        # tile 0 words at cycles 0..R-1, latch at R (bank 0)
        for i in range(rows):
            schedule.setdefault(i, {})["w"] = Wt[0][rows - 1 - i]
        schedule.setdefault(rows, {})["latch"] = 0
        # vectors with bank 0 from cycle R+1, six of them; tile 1 loads meanwhile
        start0 = rows + 1
        for v in range(6):
            schedule.setdefault(start0 + v, {})["act"] = (v, 0)
        s1 = start0
        for i in range(rows):
            schedule.setdefault(s1 + i, {})["w"] = Wt[1][rows - 1 - i]
        schedule.setdefault(s1 + rows, {})["latch"] = 1
        start1 = max(start0 + 6, s1 + rows + 1)
        for v in range(6, 12):
            schedule.setdefault(start1 + v - 6, {})["act"] = (v, 1)
        end = start1 + 6 + lat + 2
        issued = {}
        for t in range(end):
            ev = schedule.get(t, {})
            ctx.set(dut.w_word, [int(x) for x in ev.get("w", np.zeros(cols, int))])
            ctx.set(dut.w_latch, int("latch" in ev))
            ctx.set(dut.w_bank, ev.get("latch", 0))
            if "act" in ev:
                v, bank = ev["act"]
                ctx.set(dut.act, [int(x) for x in A[v]])
                ctx.set(dut.bank, bank)
                issued[t] = (v, bank)
            else:
                ctx.set(dut.act, [0] * rows)
                ctx.set(dut.bank, 0)
            if t - lat in issued:
                got[issued[t - lat]] = [ctx.get(dut.sums[c]) for c in range(cols)]
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for (v, bank), sums in got.items():
        assert sums == list(A[v] @ Wt[bank]), (v, bank)
    assert len(got) == 12


def _requant_vectors(cfg, mode, rng):
    aw = cfg.acc_width
    lo, hi = -(1 << (aw - 1)), (1 << (aw - 1)) - 1
    edge = [e for e in (0, 1, -1, 2, -2, 3, -3, lo, hi, lo + 1, hi - 1, 1 << 20, -(1 << 20))
            if lo <= e <= hi]
    accs = edge + list(rng.integers(lo, hi, 60)) + list(rng.integers(max(lo, -5000), min(hi, 5000), 60))
    if mode == "tflite":
        mults = [0, 1, (1 << 31) - 1, 1 << 30, (1 << 30) + 1] + list(rng.integers(0, 1 << 31, 20))
        shifts = [0, 1, 2, 30, 31] + list(rng.integers(0, 32, 20))
    else:
        mults = [0, 1, (1 << 16) - 1, 1 << 15] + list(rng.integers(0, 1 << 16, 20))
        shifts = [0, 1, 2, 47, 20] + list(rng.integers(0, 48, 20))
    return accs, mults, shifts


def _run_requantizer(dut, mode, zp, lo, hi, beats):
    """Drive ``beats`` (one list of ``(acc, mult, shift)`` per column each) through
    the requantizer in ``mode`` back to back; return its output beats."""
    cols = dut.cfg.cols
    got = []

    async def bench(ctx):
        ctx.set(dut.mode, mode)
        ctx.set(dut.zp, zp)
        ctx.set(dut.lo, lo)
        ctx.set(dut.hi, hi)
        for t in range(len(beats) + Requantizer.LATENCY + 1):
            if t < len(beats):
                b = beats[t]
                ctx.set(dut.i_valid, 1)
                ctx.set(dut.i_acc, [a for a, _, _ in b])
                ctx.set(dut.i_params, [{"bias": 0, "mult": m, "shift": s} for _, m, s in b])
            else:
                ctx.set(dut.i_valid, 0)
            if ctx.get(dut.o_valid):
                got.append([ctx.get(dut.o_data[c]) for c in range(cols)])
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("mode", ["tflite", "half_up"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("acc", [(8, None), (4, 12), (16, None)])
def test_requantizer_matches_contract(mode, relu, acc):
    data_width, acc_width = acc
    cfg = HardwareConfig(rows=1, cols=4, data_width=data_width, acc_width=acc_width)
    dut = Requantizer(cfg)
    rng = np.random.default_rng(1 if mode == "tflite" else 2)
    accs, mults, shifts = _requant_vectors(cfg, mode, rng)
    zp = -3 if not relu else 5
    out_width = 8
    rq_lo, rq_hi = -(1 << (out_width - 1)), (1 << (out_width - 1)) - 1
    cases = [(int(a), int(mults[i % len(mults)]), int(shifts[(i * 7) % len(shifts)]))
             for i, a in enumerate(accs)]
    # group into beats of `cols` lanes
    beats = [cases[i:i + cfg.cols] for i in range(0, len(cases) - cfg.cols + 1, cfg.cols)]
    got = _run_requantizer(dut, RequantMode.TFLITE if mode == "tflite" else RequantMode.HALF_UP,
                           zp, max(rq_lo, zp) if relu else rq_lo, rq_hi, beats)
    assert len(got) == len(beats)
    for b, g in zip(beats, got):
        acc = np.array([[a for a, _, _ in b]], dtype=np.int64)
        rq = Requant(mode=mode, multiplier=[m for _, m, _ in b], shift=[s for _, _, s in b],
                     out_zero_point=zp, out_width=out_width, relu=relu)
        want = requantize(acc, rq, channel_axis=1)[0]
        assert list(want) == g, (b, list(want), g)


@pytest.mark.parametrize("acc", [(8, None), (4, 12), (16, None)])
def test_requantizer_none_passes_accumulator(acc):
    """Mode NONE returns every accumulator unchanged, whatever the per-channel
    multiplier, shift, zero point and bounds say (they must be ignored)."""
    data_width, acc_width = acc
    cfg = HardwareConfig(rows=1, cols=4, data_width=data_width, acc_width=acc_width)
    dut = Requantizer(cfg)
    rng = np.random.default_rng(3)
    accs, _, _ = _requant_vectors(cfg, "half_up", rng)
    # random multiplier and shift fields beside each accumulator
    cases = [(int(a), int(rng.integers(0, 1 << 31)), int(rng.integers(0, 48))) for a in accs]
    beats = [cases[i:i + cfg.cols] for i in range(0, len(cases) - cfg.cols + 1, cfg.cols)]
    got = _run_requantizer(dut, RequantMode.NONE, 7, -5, 9, beats)
    assert got == [[a for a, _, _ in b] for b in beats]


SMALL = HardwareConfig(rows=2, cols=3, max_width=16, max_cwords=4, lb_rows=8, weight_depth=256,
                       max_cotiles=8, acc_depth=64)


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
    inv = build_invocation(SMALL, x, w, b, stride=case["s"], dilation=case["d"],
                           pads=case["pads"], pad_mode=case["mode"], pad_value=pv)
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
def test_window_generator_sliding_windows(case):
    """The window generator (dense and depthwise mappings) against numpy sliding
    windows: a one-hot weight per tap reads back exactly the windowed input."""
    cfg = HardwareConfig(rows=2, cols=2, max_width=16, max_cwords=2, lb_rows=16,
                         weight_depth=128, max_cotiles=4, acc_depth=128)
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
        inv = build_invocation(cfg, x, w, None, groups=c, stride=case["s"], dilation=case["d"],
                               pads=case["pads"], pad_mode=case["mode"], pad_value=-3,
                               depthwise=case["depthwise"])
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
