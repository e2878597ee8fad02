"""ResultPacker and ResultQueue alone (amaranth.sim) against Python models of
their documented packing and queueing.

Covers
------
ResultPacker:
- lane width and vectors per beat by mode and ``out_bits`` (:func:`lane_width`,
  :func:`pack_factor`): one ``acc_width`` vector per beat without requantization,
  8-bit lanes (``out_bits <= 8``) or 16-bit lanes otherwise, the first vector in the
  low bits; 1, 2, 3, 4 and 6 vectors per beat on ``acc_width`` 24, 32, 36 and 48;
- a beat leaves the cycle after its last vector (full, or the final vector: a
  partial final beat), with its vector count and ``last`` on the final one only;
  ``o_valid`` never otherwise; vectors with random gaps, modes changing between
  invocations;
ResultQueue:
- beats leave in order with their data and ``last``; ``freed`` is the leaving
  beat's count (0 otherwise), ``final_hs`` the leaving of a ``last`` beat; a beat is
  offered two cycles after it is written (or the cycle after its predecessor
  leaves); ``empty`` when nothing is held; random back-pressure and a long stall
  with the queue full of one-vector beats, writes gated by vector credits as the
  sequencers do.

Known discrepancies (strict xfail)
----------------------------------
- ``acc_width`` < 16 with 8 < ``out_bits`` <= 16: the layouts' 16-bit lane does not
  fit (``pack_factor`` 0) while the packer sends ``acc_width`` lanes;
- ``out_fifo_depth`` below the pack factor (int16 data, depth 4): the whole
  accelerator deadlocks on a requantized layer.
"""

import pytest

from amaranth.lib import data
from amaranth import signed

from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.output import ResultPacker, ResultQueue, packed_beat_layout
from systolic_conv.hw.layouts import (RequantMode, lane_width, pack_factor, result_beat_layout,
                                      pack, unpack)

from blockbench import seeded, simulate, mask

NONE, TFLITE, HALF_UP = RequantMode.NONE, RequantMode.TFLITE, RequantMode.HALF_UP


def packed_bits(cfg, vectors, lw):
    """The documented beat: lane ``c`` (``acc_width`` bits) holds channel ``c`` of each
    vector, vector ``j`` in bits ``[j * lw, (j + 1) * lw)`` of the lane, each value cut
    to ``lw`` bits. Returns the bits and the mask of the bits that are defined."""
    aw = cfg.acc_width
    v = m = 0
    for j, vec in enumerate(vectors):
        for c, x in enumerate(vec):
            v |= (x & mask(lw)) << (c * aw + j * lw)
            m |= mask(lw) << (c * aw + j * lw)
    return v, m


def run_packer(cfg, segments, seed):
    """``segments``: (mode, out_bits, n_vectors); each ends with a final vector."""
    dut = ResultPacker(cfg)
    C, aw = cfg.cols, cfg.acc_width
    vl = data.ArrayLayout(signed(aw), C)
    bl = packed_beat_layout(cfg)
    with seeded(seed) as rng:
        # the schedule: {cycle: (segment, vector)} and the mode in force per cycle
        plan, modes, t = {}, {}, 0
        vectors = []
        for s, (mode, ob, n) in enumerate(segments):
            for c in range(t, t + 2):
                modes[c] = (mode, ob)           # set ahead of the segment's first vector
            t += 2
            vs = []
            for i in range(n):
                t += 0 if rng.random() < 0.6 else rng.randint(1, 3)
                vec = [rng.randint(-(1 << (aw - 1)), (1 << (aw - 1)) - 1) for _ in range(C)]
                if mode != NONE and rng.random() < 0.7:      # requantized values fit out_bits
                    vec = [rng.randint(-(1 << (ob - 1)), (1 << (ob - 1)) - 1) for _ in range(C)]
                vs.append(vec)
                plan[t] = (s, i)
                modes[t] = (mode, ob)
                t += 1
            modes[t] = (mode, ob)
            vectors.append(vs)
        end = t + 3
        # the model: beats and the cycle each leaves
        expect = {}
        for s, (mode, ob, n) in enumerate(segments):
            lw = lane_width(cfg, mode, ob)
            k = pack_factor(cfg, mode, ob)
            cycles = sorted(c for c, (ss, _i) in plan.items() if ss == s)
            for b0 in range(0, n, k):
                group = list(range(b0, min(n, b0 + k)))
                leave = cycles[group[-1]] + 1
                expect[leave] = (*packed_bits(cfg, [vectors[s][i] for i in group], lw),
                                 len(group), int(group[-1] == n - 1), s)
        seen = [0]
        last_mode = [segments[0][:2]]

        def step(ctx, t):
            if t > end:
                return True
            mode, ob = modes.get(t, last_mode[0])
            last_mode[0] = (mode, ob)
            ctx.set(dut.mode, mode)
            ctx.set(dut.out_bits, ob)
            p = plan.get(t)
            ctx.set(dut.i_valid, int(p is not None))
            n = segments[p[0]][2] if p else 0
            ctx.set(dut.i_final, int(p is not None and p[1] == n - 1) if p else rng.getrandbits(1))
            ctx.set(dut.i_data.as_value(), pack(vl, vectors[p[0]][p[1]] if p else
                                                [rng.randint(-5, 5) for _ in range(C)]))
            ov = ctx.get(dut.o_valid)
            want = expect.get(t)
            assert ov == int(want is not None), f"cycle {t}: o_valid {ov}, expected {want}"
            if want is not None:
                bits, used, count, last, s = want           # used: the defined bits
                got = unpack(bl, ctx.get(dut.o_beat.as_value()))
                assert got["count"] == count and got["beat"]["last"] == last, (
                    f"cycle {t} segment {segments[s]}: count {got['count']} last "
                    f"{got['beat']['last']}, expected {count} / {last}")
                assert got["beat"]["data"] & used == bits, (
                    f"cycle {t} segment {segments[s]}: beat {got['beat']['data']:#x}, expected "
                    f"{bits:#x} in the bits of {used:#x}")
                seen[0] += 1
            return False

        simulate(dut, step, end + 2)
        assert seen[0] == len(expect)


PACK_CFGS = {
    "int8 acc32 4 cols": HardwareConfig(rows=4, cols=4, act_pixels=4, max_width=16),
    "int8 acc36 3 cols": HardwareConfig(rows=2, cols=3, act_pixels=1, max_width=8, acc_width=36),
    "int4 acc24 1 col": HardwareConfig(rows=1, cols=1, data_width=4, act_pixels=1, max_width=8),
    "int16 acc48 2 cols": HardwareConfig(rows=2, cols=2, data_width=16, act_pixels=2, max_width=8),
}

SEGMENTS = [(NONE, 8, 3), (TFLITE, 8, 9), (TFLITE, 2, 1), (HALF_UP, 9, 5), (TFLITE, 16, 6),
            (NONE, 0, 1), (HALF_UP, 5, 8), (TFLITE, 8, 4), (TFLITE, 12, 1), (TFLITE, 7, 11)]


@pytest.mark.parametrize("name", sorted(PACK_CFGS))
def test_packer_beats(name):
    cfg = PACK_CFGS[name]
    factors = {pack_factor(cfg, m, ob) for m, ob, _n in SEGMENTS}
    assert len(factors) >= 2 and max(factors) >= 3, factors
    run_packer(cfg, SEGMENTS, 800 + sorted(PACK_CFGS).index(name))


def test_packer_factors_cover_one_two_four():
    """The 4-column int8 configuration packs 1 (raw), 2 (16-bit) and 4 (8-bit)."""
    cfg = PACK_CFGS["int8 acc32 4 cols"]
    modes = ((NONE, 8), (TFLITE, 12), (TFLITE, 8))
    assert [pack_factor(cfg, m, ob) for m, ob in modes] == [1, 2, 4]


def test_packer_lanes_agree_with_pack_factor_on_narrow_accumulators():
    cfg = HardwareConfig(rows=1, cols=1, data_width=4, acc_width=12, act_pixels=1, max_width=8)
    assert pack_factor(cfg, TFLITE, 12) >= 1, (
        f"pack_factor {pack_factor(cfg, TFLITE, 12)} for out_bits 12 on acc_width 12")
    run_packer(cfg, [(TFLITE, 12, 3)], 809)


# -- ResultQueue -----------------------------------------------------------------------

QUEUE_CFGS = {
    "depth 4, 1 col": HardwareConfig(rows=1, cols=1, act_pixels=1, max_width=8, out_fifo_depth=4),
    "depth 8, 4 cols": HardwareConfig(rows=4, cols=4, act_pixels=4, max_width=16,
                                      out_fifo_depth=8),
    "depth 8, 3 cols, int16": HardwareConfig(rows=2, cols=3, data_width=16, act_pixels=1,
                                             max_width=8, out_fifo_depth=8),
}


@pytest.mark.parametrize("name", sorted(QUEUE_CFGS))
def test_queue_order_credits_and_flags(name):
    cfg = QUEUE_CFGS[name]
    D = cfg.out_fifo_depth
    kmax = cfg.acc_width // 8
    dut = ResultQueue(cfg)
    bl = packed_beat_layout(cfg)
    rl = result_beat_layout(cfg)
    n_beats = 120
    with seeded(900 + sorted(QUEUE_CFGS).index(name)) as rng:
        beats = []
        for i in range(n_beats):
            beats.append(dict(beat=dict(data=rng.getrandbits(rl["data"].width),
                                        last=int(i % 23 == 22 or i == n_beats - 1)),
                              count=rng.randint(1, min(kmax, D)) if i >= 30 else 1))
        st = dict(w=0, r=0, reserved=0, written=[], left=[])

        def step(ctx, t):
            if st["r"] >= n_beats:
                return True
            # writer: a beat only with credits for its vectors (as the sequencers do)
            w = st["w"]
            stall_phase = 10 <= t < 40                   # the consumer stalls: fill up
            write = (w < n_beats and st["reserved"] + beats[w]["count"] <= D
                     and rng.random() < 0.8)
            ctx.set(dut.i_valid, int(write))
            ctx.set(dut.i_beat.as_value(), pack(bl, beats[w] if write else beats[0]))
            ready = int(not stall_phase and rng.random() < 0.6)
            ctx.set(dut.o_result.ready, ready)
            # the model: the head and when it is offered
            r = st["r"]
            head_at = None
            if r < len(st["written"]):
                head_at = max(st["written"][r] + 2, (st["left"][-1] + 1) if st["left"] else 0)
            valid = int(head_at is not None and t >= head_at)
            got_valid = ctx.get(dut.o_result.valid)
            assert got_valid == valid, (f"cycle {t}: valid {got_valid}, expected {valid} (head "
                                        f"{r} written {st['written'][r:r + 1]})")
            held = len(st["written"]) - r
            assert ctx.get(dut.empty) == int(held == 0), f"cycle {t}: empty with {held} held"
            hs = valid and ready
            freed, fin = ctx.get(dut.freed), ctx.get(dut.final_hs)
            if hs:
                got = unpack(rl, ctx.get(dut.o_result.payload.as_value()))
                assert got == beats[r]["beat"], f"beat {r}: {got}, expected {beats[r]['beat']}"
                assert freed == beats[r]["count"] and fin == beats[r]["beat"]["last"], (
                    f"beat {r}: freed {freed} final_hs {fin}")
                st["reserved"] -= beats[r]["count"]
                st["left"].append(t)
                st["r"] += 1
            else:
                assert freed == 0 and fin == 0, f"cycle {t}: freed {freed} final_hs {fin} idle"
            if write:
                st["written"].append(t)
                st["reserved"] += beats[w]["count"]
                st["w"] += 1
            st["max_held"] = max(st.get("max_held", 0), held)
            return False

        simulate(dut, step, 3000)
        assert st["r"] == n_beats
        assert st["max_held"] == D, f"the queue never filled ({st['max_held']} of {D})"


def test_queue_shallower_than_a_packed_beat_is_refused():
    """A queue that cannot hold one packed beat would deadlock the credits (the packer
    releases a beat only when full): the configuration is refused by name."""
    with pytest.raises(ValueError, match=r"^out_fifo_depth must hold a beat of packed "
                                         r"results, at least 6, not 4$"):
        HardwareConfig(rows=2, cols=2, data_width=16, act_pixels=2, max_width=16,
                       out_fifo_depth=4)


def test_shallowest_queue_with_packed_beats_does_not_deadlock():
    """The whole accelerator (a 2x2 dense 3x3 layer, 16 output pixels, tflite to 8 bits)
    with the shallowest queue allowed (8 beats; 6 int8 values per 48-bit lane) finishes."""
    import numpy as np
    from systolic_conv.hw.accel import Conv2dAccelerator
    from systolic_conv.contract import Requant
    from systolic_conv.streams import build_invocation
    from systolic_conv.sim.amaranth_tb import run_invocation_amaranth
    cfg = HardwareConfig(rows=2, cols=2, data_width=16, act_pixels=2, max_width=16,
                         max_cwords=2, lb_rows=8, max_kernel=3, max_height=16, acc_depth=64,
                         weight_depth=64, max_cotiles=4, out_fifo_depth=8, dw_kernel=3)
    assert pack_factor(cfg, TFLITE, 8) == 6
    rng = np.random.default_rng(0)
    x, w = rng.integers(-8, 8, (2, 6, 6)), rng.integers(-8, 8, (2, 2, 3, 3))
    inv = build_invocation(cfg, x, w, None, requant=Requant(mode="tflite", multiplier=1 << 30,
                                                             shift=4, out_width=8))
    _out, status, _cycles = run_invocation_amaranth(Conv2dAccelerator(cfg), inv, max_cycles=3000)
    assert status["error"] == 0
