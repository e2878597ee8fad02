"""Accumulator alone (amaranth.sim) against a Python model of its documented
read-modify-write, with the parameter store's lane read emulated (a registered
read, one cycle).

Covers
------
- dense: a tag's column sums are taken ``rows + DENSE_TAG_DELAY`` cycles after the
  tag (``dense_sums`` is random in every other cycle); the first fold of a tile
  adds them to the tile's bias, the others to the pixel's memory word; non-last
  folds write back, the last fold's sum leaves ``ACC_LATENCY`` cycles after the
  sums, with the tile's multipliers and shifts and ``final``; ``o_valid`` exactly
  then and never otherwise; a pixel revisited exactly ``MIN_FOLD_PERIOD`` cycles
  later (the documented minimum), folds of one pixel, tiles interleaved, gaps;
  single-fold tiles (first and last at once);
- depthwise: a drain tag's capture row is read ``DW_TAG_DELAY`` cycles after the tag
  (``captures`` random every cycle) and leaves with the bias ``ACC_LATENCY`` later;
- the tag port of the other mapping is driven with random valid tags and ignored;
- 1x1, 2x2, 4x4 and 3x2 arrays; sums at the limits of ``psum_width`` and biases
  at the limits of 32 bits (the accumulator wraps at ``acc_width``).
"""

import pytest

from amaranth.lib import data
from amaranth import signed, unsigned

from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.accumulator import (Accumulator, tag_layout, DENSE_TAG_DELAY, DW_TAG_DELAY,
                                          ACC_LATENCY, MIN_FOLD_PERIOD)
from systolic_conv.hw.layouts import channel_params_layout, MULT_WIDTH, SHIFT_WIDTH, pack, unpack

from blockbench import seeded, simulate, wrap


def dense_tags(cfg, rng, n_tiles):
    """A dense tag schedule {cycle: tag}: per tile, F folds over a pass of N pixels
    (issue order: fold, then pixel), pixels revisited MIN_FOLD_PERIOD cycles apart or
    more; gaps at random, one tight tile with no gaps."""
    sched = {}
    t = 2
    final_tile = n_tiles - 1
    for tile in range(n_tiles):
        F = rng.randint(1, 4)
        tight = tile == 1
        N = rng.randint(1, min(cfg.acc_depth, 6)) if not tight else MIN_FOLD_PERIOD
        pixels = rng.sample(range(cfg.acc_depth), N)
        cot = rng.randrange(cfg.max_cotiles)
        last_visit = {}
        for f in range(F):
            for i, px in enumerate(pixels):
                t = max(t, last_visit.get(px, -99) + MIN_FOLD_PERIOD)
                if not tight and rng.random() < 0.2:
                    t += rng.randint(1, 3)
                sched[t] = dict(valid=1, first=int(f == 0), last=int(f == F - 1),
                                final=int(tile == final_tile and f == F - 1 and i == N - 1),
                                addr=px, cotile=cot, row=rng.randrange(cfg.rows))
                last_visit[px] = t
                t += 1
        t += rng.randint(0, 3)
    return sched


def dw_tags(cfg, rng, n):
    sched = {}
    t = 2
    for k in range(n):
        t += 0 if rng.random() < 0.7 else rng.randint(1, 3)
        sched[t] = dict(valid=1, first=1, last=1, final=int(k == n - 1),
                        addr=rng.randrange(cfg.acc_depth), cotile=rng.randrange(cfg.max_cotiles),
                        row=rng.randrange(cfg.rows))
        t += 1
    return sched


def run_acc(cfg, depthwise, seed):
    dut = Accumulator(cfg)
    R, C, pw, aw = cfg.rows, cfg.cols, cfg.psum_width, cfg.acc_width
    tl = tag_layout(cfg)
    lanes_lay = data.ArrayLayout(channel_params_layout(cfg), C)
    sums_lay = data.ArrayLayout(signed(pw), C)
    caps_lay = data.ArrayLayout(sums_lay, R)
    acc_lay = data.ArrayLayout(signed(aw), C)
    mult_lay = data.ArrayLayout(unsigned(MULT_WIDTH), C)
    shift_lay = data.ArrayLayout(signed(SHIFT_WIDTH), C)
    lo, hi = -(1 << (pw - 1)), (1 << (pw - 1)) - 1
    with seeded(seed) as rng:
        def psum():
            return rng.choice([lo, hi, rng.randint(lo, hi), rng.randint(-300, 300)])
        def bias():
            return rng.choice([-(1 << 31), (1 << 31) - 1, rng.randint(-(1 << 20), 1 << 20)])
        params = [[dict(bias=bias(), mult=rng.randrange(1 << MULT_WIDTH),
                        shift=rng.randint(-64, 63)) for _ in range(C)]
                  for _ in range(cfg.max_cotiles)]
        sched = dw_tags(cfg, rng, 40) if depthwise else dense_tags(cfg, rng, 6)
        arrive = DW_TAG_DELAY if depthwise else R + DENSE_TAG_DELAY
        end = max(sched) + arrive + ACC_LATENCY + 3
        mem = {}
        values = {}                 # arrival cycle -> the value the tag takes
        expect = {}                 # output cycle -> (acc, mult, shift, final)
        lanes_prev = [0]
        warm = 3                    # `depthwise` is registered: set it ahead of the tags

        def step(ctx, t):
            if t > end + warm:
                return True
            c = t - warm
            ctx.set(dut.depthwise, int(depthwise))
            mine = sched.get(c)
            junk = dict(valid=1, first=rng.getrandbits(1), last=rng.getrandbits(1),
                        final=rng.getrandbits(1), addr=rng.randrange(cfg.acc_depth),
                        cotile=rng.randrange(cfg.max_cotiles), row=rng.randrange(R))
            mine_bits = pack(tl, mine) if mine else 0
            junk_bits = pack(tl, junk) if c >= 0 else 0
            ctx.set(dut.dw_tag.as_value(), mine_bits if depthwise else junk_bits)
            ctx.set(dut.dense_tag.as_value(), junk_bits if depthwise else mine_bits)
            sums = [psum() for _ in range(C)]
            caps = [[psum() for _ in range(C)] for _ in range(R)]
            ctx.set(dut.dense_sums.as_value(), pack(sums_lay, sums))
            ctx.set(dut.captures.as_value(), pack(caps_lay, caps))
            ctx.set(dut.lanes_data.as_value(), pack(lanes_lay, params[lanes_prev[0]]))
            lanes_prev[0] = ctx.get(dut.lanes_addr)
            # the model: the tag arriving now takes this cycle's value
            tag = sched.get(c - arrive)
            if tag is not None:
                v = caps[tag["row"]] if depthwise else sums
                p = params[tag["cotile"]]
                base = [x["bias"] for x in p] if tag["first"] else mem[tag["addr"]]
                total = [wrap(b + x, aw) for b, x in zip(base, v)]
                if tag["last"]:
                    expect[c + ACC_LATENCY] = (total, [x["mult"] for x in p],
                                               [x["shift"] for x in p], tag["final"])
                else:
                    mem[tag["addr"]] = total
            ov = ctx.get(dut.o_valid)
            want = expect.pop(c, None)
            assert ov == int(want is not None), (f"cycle {c}: o_valid {ov}, "
                                                 f"expected {int(want is not None)}")
            if want is not None:
                got = (unpack(acc_lay, ctx.get(dut.o_acc.as_value())),
                       unpack(mult_lay, ctx.get(dut.o_mult.as_value())),
                       unpack(shift_lay, ctx.get(dut.o_shift.as_value())), ctx.get(dut.o_final))
                assert got == want, f"cycle {c}: output {got}, expected {want}"
                values[c] = got
            return False

        simulate(dut, step, end + warm + 2)
        assert not expect, f"outputs never seen: {sorted(expect)}"
        return len(values), sum(1 for x in sched.values() if x["last"])


CFGS = {
    "1x1": HardwareConfig(rows=1, cols=1, act_pixels=1, max_width=8, acc_depth=8, max_cotiles=4,
                          out_fifo_depth=4),
    "2x2": HardwareConfig(rows=2, cols=2, act_pixels=2, max_width=8, acc_depth=8, max_cotiles=4,
                          out_fifo_depth=4),
    "4x4": HardwareConfig(rows=4, cols=4, act_pixels=4, max_width=16, acc_depth=16,
                          max_cotiles=2, out_fifo_depth=8),
    "3x2": HardwareConfig(rows=3, cols=2, act_pixels=1, max_width=8, acc_depth=8, max_cotiles=4,
                          out_fifo_depth=4),
}


@pytest.mark.parametrize("name", sorted(CFGS))
def test_dense_folds_accumulate(name):
    seen, want = run_acc(CFGS[name], False, 700 + sorted(CFGS).index(name))
    assert seen == want and seen > 0


@pytest.mark.parametrize("name", [n for n in sorted(CFGS) if CFGS[n].depthwise_mode])
def test_depthwise_drains_take_their_row(name):
    seen, want = run_acc(CFGS[name], True, 710 + sorted(CFGS).index(name))
    assert seen == want == 40
