"""The sequencer alone (amaranth.sim): both loop nests against Python loop nests.

The descriptor goes through :class:`~systolic_conv.hw.control.Control` (which derives
the layer's figures) into :class:`~systolic_conv.hw.sequencer.Sequencer`; the bench
plays the rest of the accelerator: tile parameters ready after a delay, rows
arriving at random (never beyond the released slots), weight tiles (dense) and
weight words (depthwise) ready at random, result credits given back at random.
Every element (dense) or read, tap and drain tag (depthwise) the sequencer issues
is recorded and compared, in order, with a Python loop nest written from the
module docstrings: the stalls may change when something issues, never what. The
cycle categories are checked to be one per cycle.
"""

import random

import numpy as np
import pytest
from amaranth import Module, Elaboratable
from amaranth.sim import Simulator

from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.control import Control
from systolic_conv.hw.sequencer import Sequencer
from systolic_conv.hw.counters import CATEGORIES
from systolic_conv.streams import build_invocation, tile_word_ranges

CFG = HardwareConfig(rows=4, cols=4, act_pixels=2, max_width=32, max_cwords=4, lb_rows=8,
                     weight_depth=512, acc_depth=64, max_cotiles=8, out_fifo_depth=16,
                     max_height=64, dw_kernel=3, dw_max_stride=3)


class _Bench(Elaboratable):
    def __init__(self, cfg):
        self.ctl = Control(cfg)
        self.seq = Sequencer(cfg)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ctl, m.submodules.seq = self.ctl, self.seq
        c, s = self.ctl, self.seq
        m.d.comb += [s.layer.eq(c.layer), s.start.eq(c.start), s.run.eq(c.run),
                     s.abort.eq(c.abort), c.work_done.eq(s.done & s.idle_out)]
        return m


def _fields(cfg, addr):
    xb = (cfg.lb_words - 1).bit_length()
    cb = (cfg.max_cwords - 1).bit_length()
    return addr & ((1 << xb) - 1), (addr >> xb) & ((1 << cb) - 1), addr >> (xb + cb)


def dense_model(cfg, d, ranges):
    """Elements and tags of the dense loop nest, in issue order."""
    R, P = cfg.rows, cfg.act_pixels
    H, W, Ho, Wo, G = d["height"], d["width"], d["out_height"], d["out_width"], d["pass_rows"]
    els, tags = [], []
    for oy0 in range(0, Ho, G):
        gc = min(G, Ho - oy0)
        y_pass = oy0 * d["stride_h"] - d["pad_top"]
        for t in range(d["cotiles"]):
            first, cnt = ranges[t]
            for ky in range(d["kh"]):
                for kx in range(d["kw"]):
                    for j in range(cnt):
                        for g in range(gc):
                            for ox in range(Wo):
                                iy = y_pass + g * d["stride_h"] + ky * d["dil_h"]
                                ix = ox * d["stride_w"] + kx * d["dil_w"] - d["pad_left"]
                                pad = not (0 <= iy < H and 0 <= ix < W)
                                where = None if pad else (iy % cfg.lb_rows, first + j, ix)
                                els.append((where, int(pad), int(g == 0 and ox == 0)))
                                last = ky == d["kh"] - 1 and kx == d["kw"] - 1 and j == cnt - 1
                                final = (last and t == d["cotiles"] - 1 and oy0 + gc == Ho
                                         and g == gc - 1 and ox == Wo - 1)
                                tags.append((int(ky == 0 and kx == 0 and j == 0), int(last),
                                             int(final), g * Wo + ox, t))
    return els, tags


def dw_model(cfg, d):
    """Reads, taps and drain tags of the depthwise loop nest, in issue order."""
    R, P = cfg.rows, cfg.act_pixels
    H, Ho, Wo, kh, kw, sw = d["height"], d["out_height"], d["out_width"], d["kh"], d["kw"], \
        d["stride_w"]
    nblk = -(-Wo // R)
    reads, ops, taps_addr, drains = [], [], [], []
    ring = cfg.dw_ring_rows
    for t in range(d["cotiles"]):
        for oy in range(Ho):
            for b in range(nblk):
                groups = [(ky, p) for ky in range(kh) for p in range(min(sw, kw))]
                j = 0
                for gi, (ky, p) in enumerate(groups):
                    ntaps = -(-(kw - p) // sw)
                    iy = oy * d["stride_h"] + ky * d["dil_h"] - d["pad_top"]
                    pad = not 0 <= iy < H
                    for w in range(-(-(R + ntaps - 1) // P)):
                        x = p * d["phase_words"] + b * (R // P) + w
                        reads.append((None if pad else ((t * H + iy) % ring, x), w, int(pad)))
                    for q in range(ntaps):
                        ops.append((int(q == 0), int(q > 0), int(gi == 0 and q == 0),
                                    int(gi == len(groups) - 1 and q == ntaps - 1)))
                        taps_addr.append(t * kh * kw + j)
                        j += 1
                rows = R if b < nblk - 1 else Wo - (nblk - 1) * R
                for r in range(rows):
                    final = (t == d["cotiles"] - 1 and oy == Ho - 1 and b == nblk - 1
                             and r == rows - 1)
                    drains.append((r, t, int(final)))
    return reads, ops, taps_addr, drains


def _simulate(cfg, inv, seed, ranges=()):
    bench = _Bench(cfg)
    seq, ctl = bench.seq, bench.ctl
    rng = random.Random(seed)
    d = inv.desc
    out = {"el": [], "tag": [], "read": [], "op": [], "tap": [], "drain": [], "cats": []}

    async def tb(ctx):
        ctx.set(ctl.i_desc.payload.as_value(),
                int.from_bytes(inv.desc_words[0].tobytes(), "little"))
        ctx.set(ctl.i_desc.valid, 1)
        await ctx.tick().until(ctl.i_desc.ready)
        ctx.set(ctl.i_desc.valid, 0)
        total_rows = d["height"] * (d["cotiles"] if d["depthwise"] else 1)
        cap = cfg.dw_ring_rows if d["depthwise"] else cfg.lb_rows
        rows = words = held = params = 0
        addr_q = 0                  # the range memory is a registered read
        for _ in range(100000):
            first, cnt = ranges[addr_q] if addr_q < len(ranges) else (0, 1)
            ctx.set(seq.range_data, {"first": first, "last": first + cnt - 1})
            addr_q = ctx.get(seq.range_addr)
            params += 1
            ctx.set(seq.params_ready, int(params > 6))
            if rows < total_rows and rng.random() < 0.35 and rows - ctx.get(seq.lo) < cap:
                rows += 1
            ctx.set(seq.rows_in, rows)
            words += rng.random() < 0.5
            ctx.set(seq.words_in, words)
            ctx.set(seq.tile_ready, int(rng.random() < 0.5))
            give = int(held > 0 and rng.random() < 0.5)
            ctx.set(seq.freed, give)
            held -= give
            _c, _r, el, tag, rd, op, tap, dt, cat, done = await ctx.tick().sample(
                seq.element, seq.dense_tag, seq.read, seq.op, seq.tap_addr, seq.dw_tag,
                seq.category, seq.done)
            out["cats"].append(int(cat))
            if el.ctl.valid:
                xw, cw, slot = _fields(cfg, int(el.addr))
                where = None if el.pad else (slot, cw, xw * cfg.act_pixels + int(el.px))
                out["el"].append((where, int(el.pad), int(el.ctl.latch)))
            if tag.valid:
                out["tag"].append((int(tag.first), int(tag.last), int(tag.final),
                                   int(tag.addr), int(tag.cotile)))
                held += int(tag.last)
            if rd.valid:
                xw, cw, slot = _fields(cfg, int(rd.addr))
                ring_row = (slot << (cfg.max_cwords - 1).bit_length()) | cw
                out["read"].append((None if rd.pad else (ring_row, xw), int(rd.slot), int(rd.pad)))
            if op.ctl.valid:
                out["op"].append((int(op.op.load), int(op.op.shift), int(op.ctl.first),
                                  int(op.ctl.last)))
                out["tap"].append(int(tap))
            if dt.valid:
                out["drain"].append((int(dt.row), int(dt.cotile), int(dt.final)))
                held += 1
            if done and held == 0:
                return
        raise AssertionError(f"seed {seed}: the sequencer never finished")

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return out


def _layer(rng, depthwise):
    R = CFG.rows
    if depthwise:
        c = int(rng.integers(1, 3 * R))
        cin = cout = groups = c
    else:
        cin = int(rng.integers(1, 3 * R))
        groups = int(rng.choice([g for g in range(1, cin + 1) if cin % g == 0]))
        cout = groups * int(rng.integers(1, 3))
    kh, kw = (int(v) for v in rng.integers(1, CFG.dw_kernel + 1, 2))
    sh, sw = (int(v) for v in rng.integers(1, 4, 2))
    dh = int(rng.integers(1, 3))
    dwl = 1 if depthwise else int(rng.integers(1, 3))
    H = int(rng.integers((kh - 1) * dh + 1, 10))
    W = int(rng.integers((kw - 1) * dwl + 1, 12))
    pads = tuple(int(v) for v in rng.integers(0, 2, 4))
    x = np.zeros((cin, H, W), dtype=np.int64)
    w = np.zeros((cout, cin // groups, kh, kw), dtype=np.int64)
    inv = build_invocation(CFG, x, w, None, groups=groups, stride=(sh, sw), dilation=(dh, dwl),
                           pads=pads, depthwise=depthwise)
    ranges = tile_word_ranges(cin, cout, groups, CFG.rows, CFG.cols)
    return inv, ranges


@pytest.mark.parametrize("seed", range(6))
def test_dense_loop_nest(seed):
    rng = np.random.default_rng(seed)
    inv, ranges = _layer(rng, depthwise=False)
    got = _simulate(CFG, inv, seed, ranges)
    els, tags = dense_model(CFG, inv.desc, ranges)
    assert got["el"] == els, f"seed {seed}: elements differ"
    assert got["tag"] == tags, f"seed {seed}: tags differ"
    assert all(c and not c & (c - 1) for c in got["cats"]), f"seed {seed}: categories"


@pytest.mark.parametrize("seed", range(6))
def test_depthwise_loop_nest(seed):
    rng = np.random.default_rng(100 + seed)
    inv, _ = _layer(rng, depthwise=True)
    got = _simulate(CFG, inv, seed)
    reads, ops, taps, drains = dw_model(CFG, inv.desc)
    assert got["read"] == reads, f"seed {seed}: reads differ"
    assert got["op"] == ops, f"seed {seed}: taps differ"
    assert got["tap"] == taps, f"seed {seed}: tap weight addresses differ"
    assert got["drain"] == drains, f"seed {seed}: drain tags differ"
    assert all(c and not c & (c - 1) for c in got["cats"]), f"seed {seed}: categories"
    assert CATEGORIES.index("busy") >= 0
