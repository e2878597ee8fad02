"""The systolic array alone (amaranth.sim) against matrix / dot-product models."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.array import SystolicArray, DENSE_LATENCY, CAPTURE_LATENCY


def _run(dut, schedule, end, probes):
    """Drive ``schedule`` {cycle: {port: value}} (ports default to 0 each cycle) and
    sample ``probes`` {name: fn(ctx)} at every cycle; returns {cycle: {name: value}}."""
    seen = {}

    async def bench(ctx):
        for t in range(end):
            ev = schedule.get(t, {})
            cfg = dut.cfg
            ctx.set(dut.depthwise, ev.get("depthwise", schedule.get("depthwise", 0)))
            ctx.set(dut.dense_word, [int(x) for x in ev.get("dense", [0] * cfg.rows)])
            ctx.set(dut.dw_vec, [[int(x) for x in row] for row in
                                 ev.get("dw", np.zeros((cfg.rows, cfg.cols), int))])
            ctl = ev.get("ctl", {"valid": 0, "latch": 0, "first": 0, "last": 0})
            ctx.set(dut.dense_ctl, ctl)
            ctx.set(dut.dw_ctl, ctl)
            ctx.set(dut.w_word, [int(x) for x in ev.get("w", [0] * cfg.cols)])
            ctx.set(dut.w_shift, ev.get("shift", 0))
            seen[t] = {k: f(ctx) for k, f in probes.items()}
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return seen


def _load(schedule, t0, tile, R):
    """A tile load starting at t0: word for row R-1 first; row r shifts in [t0+r, t0+R-1]."""
    for k in range(R):
        schedule.setdefault(t0 + k, {})["w"] = tile[R - 1 - k]
    for t in range(t0, t0 + R):
        mask = sum(1 << r for r in range(R) if t0 + r <= t)
        schedule.setdefault(t, {})["shift"] = mask


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 2), (4, 4)])
def test_dense_tiles_follow_each_other_without_gaps(rows, cols):
    """Tile 1 loads while tile 0's elements compute (its load starts with tile 0's
    first element); folds follow back to back; sums leave rows + 2 cycles later."""
    cfg = HardwareConfig(rows=rows, cols=cols, act_pixels=1, max_width=16)
    dut = SystolicArray(cfg)
    rng = np.random.default_rng(rows * 10 + cols)
    tiles = [rng.integers(-128, 128, (rows, cols)) for _ in range(3)]
    n_el = max(rows, 3)
    A = rng.integers(-128, 128, (3 * n_el, rows))
    sched = {}
    _load(sched, 0, tiles[0], rows)
    start = rows                       # fold 0 may start once its words are in
    issue = {}
    for f in range(3):
        t_f = start + f * n_el
        if f + 1 < 3:
            _load(sched, t_f, tiles[f + 1], rows)    # next load starts with this fold
        for e in range(n_el):
            t = t_f + e
            sched.setdefault(t, {})["dense"] = A[f * n_el + e]
            sched[t]["ctl"] = {"valid": 1, "latch": int(e == 0), "first": 0, "last": 0}
            issue[t] = (f, f * n_el + e)
    end = max(issue) + rows + DENSE_LATENCY + 2
    seen = _run(dut, sched, end, {"sums": lambda ctx: list(ctx.get(dut.dense_sums))})
    for t, (f, e) in issue.items():
        want = A[e] @ tiles[f]
        got = np.array(seen[t + rows + DENSE_LATENCY]["sums"])
        assert (got == want).all(), (t, f, e, got, want)


@pytest.mark.parametrize("rows,cols,taps", [(2, 2, 4), (4, 4, 9), (4, 4, 4)])
def test_depthwise_blocks_capture_dot_products(rows, cols, taps):
    """Blocks of ``taps`` taps back to back: PE (r, c) sums its own lane's products
    with its column's tap weights; the sum is captured CAPTURE_LATENCY + r cycles
    after the block's last tap and stays until the next block's capture."""
    cfg = HardwareConfig(rows=rows, cols=cols, act_pixels=1, max_width=16)
    dut = SystolicArray(cfg)
    rng = np.random.default_rng(taps)
    nb = 3
    X = rng.integers(-128, 128, (nb, taps, rows, cols))
    W = rng.integers(-128, 128, (nb, taps, cols))
    sched = {"depthwise": 1}
    t0 = 2
    last_t = {}
    for b in range(nb):
        for j in range(taps):
            t = t0 + b * taps + j + (3 if b == 2 else 0)     # a gap before block 2
            sched.setdefault(t, {})["dw"] = X[b, j]
            sched[t]["ctl"] = {"valid": 1, "latch": 0, "first": int(j == 0),
                               "last": int(j == taps - 1)}
            sched.setdefault(t - 1, {})["w"] = W[b, j]
            last_t[b] = t
    end = last_t[nb - 1] + CAPTURE_LATENCY + rows + 2
    seen = _run(dut, sched, end, {"cap": lambda ctx: np.array(ctx.get(dut.captures))})
    for b in range(nb):
        want = (X[b] * W[b][:, None, :]).sum(axis=0)             # (rows, cols)
        for r in range(rows):
            got = seen[last_t[b] + CAPTURE_LATENCY + r]["cap"][r]
            assert (got == want[r]).all(), (b, r, got, want[r])
