"""The Requantizer block (hw/requant.py) alone in amaranth.sim, against a Python reference.

The reference below is written from the requantizer's definition with Python integers
(gemmlowp's C semantics), independent of the hardware; it is itself checked against the
integer contract (``systolic_conv.contract``) wherever the contract defines the result
(tflite with a right shift, half_up). tflite's negative shift (a left shift of the
accumulator, wrapped to ``acc_width`` bits, before the high multiply) is the reference's
alone.
"""

import random

import pytest
from amaranth.sim import Simulator

from systolic_conv.contract import (
    round_shift_half_up, rounding_divide_by_pot, saturating_rounding_doubling_high_mul)
from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.layouts import RequantMode
from systolic_conv.hw.requant import Requantizer

SEED = 20250611
ZP_MIN, ZP_MAX = -2**16, 2**16 - 1
M_MAX = 2**31 - 1


# ---- reference: the definition with Python ints ---------------------------------------

def c_div(n, d):
    """C integer division (truncation toward zero), ``d > 0``."""
    q = abs(n) // d
    return q if n >= 0 else -q


def ref_srdhm(a, m):
    """gemmlowp's SaturatingRoundingDoublingHighMul on the exact product (``m >= 0``)."""
    ab = a * m
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return c_div(ab + nudge, 1 << 31)


def ref_rdbpot(x, e):
    """gemmlowp's RoundingDivideByPOT: divide by ``2**e``, ties away from zero."""
    mask = (1 << e) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if (x & mask) > threshold else 0)


def wrap(v, bits):
    """``v`` wrapped to ``bits`` bits, two's complement."""
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def ref_lane(mode, acc, m, s, zp, lo, hi, aw):
    if mode == RequantMode.NONE:
        return acc
    if mode == RequantMode.TFLITE:
        q = ref_rdbpot(ref_srdhm(acc, m), s) if s >= 0 else ref_srdhm(wrap(acc << -s, aw), m)
    else:
        p = acc * (m & 0xFFFF)
        q = p if s == 0 else (p + (1 << (s - 1))) >> s
    return min(max(q + zp, lo), hi)


def contract_lane(mode, acc, m, s, zp, lo, hi):
    """The contract's functions, where they define the result (else None)."""
    if mode == RequantMode.TFLITE and s >= 0:
        q = int(rounding_divide_by_pot(saturating_rounding_doubling_high_mul(acc, m), s))
    elif mode == RequantMode.HALF_UP:
        q = int(round_shift_half_up(acc * (m & 0xFFFF), s))
    else:
        return None
    return min(max(q + zp, lo), hi)


def test_reference_left_shift_examples():
    # 3 << 1 = 6; srdhm(6, 2**30) = 6 / 2 = 3
    assert ref_lane(RequantMode.TFLITE, 3, 2**30, -1, 0, ZP_MIN, ZP_MAX, 24) == 3
    # 2**22 << 2 = 2**24 wraps to 0 in 24 bits
    assert ref_lane(RequantMode.TFLITE, 2**22, M_MAX, -2, 0, ZP_MIN, ZP_MAX, 24) == 0
    # 2**21 << 2 = 2**23 wraps to -2**23; srdhm(-2**23, 2**30) = -2**22, clamped
    assert ref_lane(RequantMode.TFLITE, 2**21, 2**30, -2, 0, ZP_MIN, ZP_MAX, 24) == ZP_MIN
    assert ref_lane(RequantMode.TFLITE, 2**21, 2**14, -2, 0, ZP_MIN, ZP_MAX, 24) == -2**6
    # -1 << 31 in 32 bits is -2**31; srdhm(-2**31, 2**31-1) = -2**31 + 1 (clamped)
    assert ref_srdhm(wrap(-1 << 31, 32), M_MAX) == -2**31 + 1
    # srdhm ties: +-1.5 -> 2, -1 (gemmlowp)
    assert ref_srdhm(3, 2**30) == 2 and ref_srdhm(-3, 2**30) == -1


def test_reference_matches_contract():
    rng = random.Random(SEED)
    for _ in range(3000):
        aw = rng.choice((24, 32, 48))
        acc = rng.randint(-2**(aw - 1), 2**(aw - 1) - 1) >> rng.randint(0, aw - 1)
        m = rng.choice((0, M_MAX, 2**30, rng.randint(0, M_MAX)))
        mode = rng.choice((RequantMode.TFLITE, RequantMode.HALF_UP))
        s = rng.randint(0, 31 if mode == RequantMode.TFLITE else 47)
        args = (mode, acc, m, s, rng.randint(-9, 9), ZP_MIN, ZP_MAX)
        assert ref_lane(*args, aw) == contract_lane(*args), (SEED, args)


# ---- vectors ------------------------------------------------------------------------

def _lane_vector(rng, mode, aw):
    """(acc, M, shift) for one lane: extremes, ties, moderate results or anything."""
    amax = 2**(aw - 1)
    half_up = mode == RequantMode.HALF_UP
    lo_s, hi_s = (0, 47) if half_up else (-31, 31)
    m_max = 0xFFFF if half_up else M_MAX
    kind = rng.random()
    s = rng.choice((lo_s, hi_s, 0, 1, 2 if half_up else -1, rng.randint(lo_s, hi_s)))
    m = rng.choice((0, m_max, 1, rng.randint(0, m_max)) + (() if half_up else (2**30,)))
    if kind < 0.25:                               # extremes
        acc = rng.choice((-amax, amax - 1, -amax + 1, 0, -1, 1))
    elif kind < 0.5:                              # small values: ties, left shifts
        acc = rng.randint(-40, 40)
        m = rng.choice((m, 1 << 15, 3 << 14) if half_up else (m, 2**30, 2**29, 3 << 28))
    elif kind < 0.85:                             # a result within the clamp range
        m = rng.randint(1, m_max)
        scale = max(s, 0) + (0 if half_up else 31)
        bound = min(amax - 1, (1 << (scale + rng.randint(0, 17))) // m)
        acc = rng.randint(-bound, bound)
    else:
        acc = rng.randint(-amax, amax - 1)
    if half_up and rng.random() < 0.1:            # half_up reads the low 16 bits of M
        m |= rng.randint(1, 2**15 - 1) << 16
    return acc, m, s


BOUNDS = ((0, ZP_MIN, ZP_MAX), (ZP_MIN, ZP_MIN, ZP_MAX), (ZP_MAX, ZP_MIN, ZP_MAX),
          (5, -128, 127), (-3, -3, 100), (7, 7, 7), (-100, -2**15, -50))


def _invocations(rng, cfg, beats):
    """Each mode with a few (zp, lo, hi) settings; beats of per-lane vectors."""
    out = []
    for mode in (RequantMode.TFLITE, RequantMode.HALF_UP, RequantMode.NONE):
        for zp, lo, hi in rng.sample(BOUNDS, 2):
            vecs = [[_lane_vector(rng, mode, cfg.acc_width) for _ in range(cfg.cols)]
                    for _ in range(beats)]
            out.append((mode, zp, lo, hi, vecs))
    return out


# ---- the simulation -----------------------------------------------------------------

def run_requantizer(cfg, invocations, rng):
    """Stream each invocation through the DUT with random bubbles; return, per
    invocation, the beats sent (cycle, final, vectors) and received (cycle, final, data)."""
    dut = Requantizer(cfg)
    log = []

    async def bench(ctx):
        cycle = 0
        for mode, zp, lo, hi, vecs in invocations:
            sent, got = [], []
            log.append((sent, got))
            ctx.set(dut.mode, mode)
            ctx.set(dut.zp, zp)
            ctx.set(dut.lo, lo)
            ctx.set(dut.hi, hi)
            # two idle cycles while the steady inputs' registers settle, bubbles
            # between beats, then the pipeline drains
            schedule = [None, None]
            for i, vec in enumerate(vecs):
                schedule += [None] * (rng.random() < 0.3) * rng.randint(1, 3)
                schedule.append((int(i == len(vecs) - 1 or rng.random() < 0.2), vec))
            schedule += [None] * (Requantizer.LATENCY + 1)
            for item in schedule:
                ctx.set(dut.i_valid, item is not None)
                if item is None:
                    ctx.set(dut.i_final, rng.random() < 0.5)   # ignored without valid
                else:
                    final, vec = item
                    ctx.set(dut.i_final, final)
                    ctx.set(dut.i_acc, [a for a, _, _ in vec])
                    ctx.set(dut.i_mult, [m for _, m, _ in vec])
                    ctx.set(dut.i_shift, [s for _, _, s in vec])
                    sent.append((cycle, final, vec))
                await ctx.tick()
                cycle += 1
                if ctx.get(dut.o_valid):
                    got.append((cycle, ctx.get(dut.o_final),
                                [ctx.get(dut.o_data[c]) for c in range(cfg.cols)]))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return log


def _check(cfg, invocations, log, seed):
    """Every output beat against the reference (wrapped to ``acc_width`` bits, which
    matters below 17 bits) and the contract, at ``LATENCY`` with its final tag."""
    aw = cfg.acc_width
    for (mode, zp, lo, hi, _), (sent, got) in zip(invocations, log):
        assert len(got) == len(sent), (seed, mode, len(sent), len(got))
        for (t_in, final, vec), (t_out, o_final, data) in zip(sent, got):
            ctx = (f"seed={seed} {mode.name} zp={zp} lo={lo} hi={hi} beat at {t_in}: "
                   f"(acc, M, s) per lane {vec}")
            assert t_out - t_in == Requantizer.LATENCY, ctx
            assert o_final == final, ctx
            want = [ref_lane(mode, a, m, s, zp, lo, hi, aw) for a, m, s in vec]
            assert data == [wrap(w, aw) for w in want], ctx
            for (a, m, s), w in zip(vec, want):
                c = contract_lane(mode, a, m, s, zp, lo, hi) if aw <= 48 else None
                assert c is None or c == w, ctx


@pytest.mark.parametrize("cols", [1, 3])
@pytest.mark.parametrize("data_width", [4, 8, 16])
def test_requantizer_matches_reference(data_width, cols):
    seed = SEED + 10 * data_width + cols
    rng = random.Random(seed)
    cfg = HardwareConfig(rows=cols, cols=cols, data_width=data_width)
    assert cfg.acc_width == {4: 24, 8: 32, 16: 48}[data_width]
    invocations = _invocations(rng, cfg, beats=60 if cols == 1 else 30)
    _check(cfg, invocations, run_requantizer(cfg, invocations, rng), seed)


@pytest.mark.parametrize("data_width, acc_width", [(4, 12), (8, 35), (16, 64)])
def test_requantizer_other_widths(data_width, acc_width):
    """An accumulator narrower than the 17-bit result (it wraps), chunk boundaries of
    the DSP operands (35 = 2 * 17 + 1 bits), the widest accumulator."""
    seed = SEED + acc_width
    rng = random.Random(seed)
    cfg = HardwareConfig(rows=2, cols=2, data_width=data_width, acc_width=acc_width)
    invocations = _invocations(rng, cfg, beats=12)
    _check(cfg, invocations, run_requantizer(cfg, invocations, rng), seed)


def test_requantizer_corners():
    """Every extreme combination at once: accumulators at both ends, M at 0 and
    ``2**31 - 1``, shifts at their ends, the widest and the tightest bounds."""
    seed = SEED + 1
    rng = random.Random(seed)
    cfg = HardwareConfig(rows=3, cols=3, data_width=8)
    amax = 2**(cfg.acc_width - 1)
    accs = (-amax, amax - 1, -amax + 1, -1, 0, 1)
    invocations = []
    for mode, shifts, mults in ((RequantMode.TFLITE, (-31, -1, 0, 1, 31), (0, 1, 2**30, M_MAX)),
                                (RequantMode.HALF_UP, (0, 1, 46, 47), (0, 1, 0xFFFF))):
        combos = [(a, m, s) for a in accs for m in mults for s in shifts]
        rng.shuffle(combos)
        vecs = [combos[i:i + 3] for i in range(0, len(combos) - 2, 3)]
        for zp, lo, hi in ((0, ZP_MIN, ZP_MAX), (ZP_MAX, ZP_MIN, ZP_MAX), (ZP_MIN, 0, 0)):
            invocations.append((mode, zp, lo, hi, vecs))
    _check(cfg, invocations, run_requantizer(cfg, invocations, rng), seed)


def test_requantizer_rejects_bad_config():
    with pytest.raises(TypeError, match="cfg must be a HardwareConfig, not dict"):
        Requantizer({"cols": 8})
