"""Requantizer: accumulators to output integers, one lane per array column.

The rules are the integer contract's (``systolic_conv.contract``):

* ``tflite``: ``q = rounding_divide_by_pot(srdhm(acc, M), S)`` with gemmlowp's
  saturating-rounding-doubling-high-multiply extended to the accumulator width
  (M is a Q31 integer, ``0 <= M < 2**31``, so no saturation case arises);
* ``half_up``: ``q = (acc*M + 2**(S-1)) >> S`` (``acc*M`` for ``S = 0``), M the low
  16 bits of the multiplier field;

then ``q + Z_out`` clamped to ``[lo, hi]`` (``lo`` already raised to ``Z_out`` when
ReLU is on). ``NONE`` passes the accumulator through: it runs the half_up
arithmetic with ``M = 1``, ``S = 0`` (exactly ``acc``) and skips the clamp. Nine
pipeline stages (:attr:`Requantizer.LATENCY`) in every mode, at most one carry
chain or one multiplier deep each: the inputs registered (multiplier and shift
chosen by mode), four partial products of ``acc*M`` (split at bit 17, one DSP
each), their middle sum, the product, the rounding add, tflite's high half, one
arithmetic right shift for both modes (tflite's rounding divide, half_up's
shift) with tflite's round-up bit, its increment, then zero point and clamp (the
clamp compares against ``lo - Z_out`` and ``hi - Z_out`` beside the add). Each
stage's registers load only with a valid beat (clock enable), so an idle
requantizer holds still. Mode, zero point and bounds come from the descriptor and
are steady long before a result arrives, so values derived from them are
registered.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig
from .layouts import RequantMode, ZP_WIDTH, MULT_WIDTH, SHIFT_WIDTH

__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    LATENCY = 9

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        C, aw = cfg.cols, cfg.acc_width
        super().__init__({
            "i_valid": In(1),
            "i_final": In(1),
            "i_acc": In(data.ArrayLayout(signed(aw), C)),
            "i_mult": In(data.ArrayLayout(unsigned(MULT_WIDTH), C)),
            "i_shift": In(data.ArrayLayout(signed(SHIFT_WIDTH), C)),
            "mode": In(RequantMode),
            "zp": In(signed(ZP_WIDTH)),
            "lo": In(signed(ZP_WIDTH)),
            "hi": In(signed(ZP_WIDTH)),
            "o_valid": Out(1),
            "o_final": Out(1),
            "o_data": Out(data.ArrayLayout(signed(aw), C)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        faults = cfg.faults
        aw = cfg.acc_width
        n = self.LATENCY

        # stage 0 registers the inputs (the multiplier already chosen by mode), so
        # the multipliers of stage 1 start from registers; stages 1..n-1 follow
        valid = [Signal(name=f"valid_s{i}") for i in range(n)]
        last = [Signal(name=f"last_s{i}") for i in range(n)]
        m.d.sync += [valid[0].eq(self.i_valid), last[0].eq(self.i_final)]
        for i in range(n - 1):
            m.d.sync += [valid[i + 1].eq(valid[i]), last[i + 1].eq(last[i])]
        m.d.comb += [self.o_valid.eq(valid[n - 1]), self.o_final.eq(last[n - 1])]

        mode = self.mode
        hup_in = mode == RequantMode.HALF_UP
        none_in = mode == RequantMode.NONE
        LO = min(17, aw - 1)         # the multiply is split at bit 17 on both sides
        # clamp bounds relative to the zero point
        zp = 0 if "zero_point_dropped" in cfg.faults else self.zp
        lo_zp = Signal(signed(ZP_WIDTH + 1))
        hi_zp = Signal(signed(ZP_WIDTH + 1))
        m.d.sync += [lo_zp.eq(self.lo - zp), hi_zp.eq(self.hi - zp)]

        for c in range(cfg.cols):
            # the mode decoded into registers for the stages after the first, a copy
            # per column (each steers ~3 x 64 bits of its column's stages 4-8; one
            # copy for all columns was a long route); "keep" holds the copies apart
            # through Yosys (see hw/accel.py)
            tfl = Signal(name=f"tfl_{c}", attrs={"keep": 1})
            none = Signal(name=f"none_{c}", attrs={"keep": 1})
            m.d.sync += [tfl.eq(mode == RequantMode.TFLITE), none.eq(none_in)]
            par_mult, par_shift = self.i_mult[c], self.i_shift[c].as_unsigned()[:6]
            acc = Signal(signed(aw), name=f"acc0_{c}")
            mult = Signal(31, name=f"mult0_{c}")
            shift = Signal(6, name=f"sh0_{c}")
            with m.If(self.i_valid):
                # NONE: acc * 1 >> 0 is the accumulator itself
                m.d.sync += [acc.eq(self.i_acc[c]), shift.eq(Mux(none_in, 0, par_shift)),
                             mult.eq(Mux(none_in, 1, Mux(hup_in, par_mult[:16], par_mult)))]
            # the shift travels beside the arithmetic; at stage 5 it becomes the one
            # shifter's amount (tflite's exponent has 5 bits, half_up's 6)
            shs = [shift] + [Signal(6, name=f"sh{i}_{c}") for i in range(1, 6)]
            for i in range(4):
                with m.If(valid[i]):
                    m.d.sync += shs[i + 1].eq(shs[i])
            with m.If(valid[4]):
                m.d.sync += shs[5].eq(Mux(tfl, shs[4][:5], shs[4]))

            # stage 1: four partial products of acc * M (one DSP each)
            a_lo, a_hi = acc.as_unsigned()[:LO], acc[LO:].as_signed()
            m_lo, m_hi = mult[:LO], mult[LO:31]
            pll = Signal(2 * LO, name=f"pll_{c}")
            plh = Signal(31, name=f"plh_{c}")
            phl = Signal(signed(aw + 1), name=f"phl_{c}")
            phh = Signal(signed(aw - 2 * LO + 32), name=f"phh_{c}")
            with m.If(valid[0]):
                m.d.sync += [pll.eq(a_lo * m_lo), plh.eq(a_lo * m_hi),
                             phl.eq(a_hi * m_lo), phh.eq(a_hi * m_hi)]
            # stage 2: the middle terms summed; low and high products side by side
            mid = Signal(signed(max(aw, 32) + 2), name=f"mid_{c}")
            lohi = Signal(signed(aw + 33), name=f"lohi_{c}")
            with m.If(valid[1]):
                m.d.sync += [mid.eq(plh + phl), lohi.eq(Cat(pll, phh).as_signed())]
            # stage 3: the product acc * M; half_up's rounding term 2**(S-1) beside it
            prod = Signal(signed(aw + 32), name=f"prod_{c}")
            rnd = Signal(48, name=f"rnd_{c}")
            with m.If(valid[2]):
                m.d.sync += prod.eq(lohi + (mid << LO))
                if "half_up_no_round" not in faults:
                    m.d.sync += rnd.eq(Mux(shs[2] == 0, 0,
                                           (C(1, 48) << (shs[2] - 1).as_unsigned()[:6])[:48]))
            # stage 4: the rounding add (tflite nudge, or half_up's 2**(S-1))
            nudge = Mux(prod >= 0, 1 << 30, 1 - (1 << 30))
            v = Signal(signed(max(aw + 33, 50)), name=f"v_{c}")   # room for 2**(S-1), S < 48
            with m.If(valid[3]):
                m.d.sync += v.eq(prod + Mux(tfl, nudge, rnd))
            # stage 5: tflite high half (truncating toward zero); half_up and NONE
            # keep the rounded product for the shift
            q5 = Signal.like(v, name=f"q5_{c}")
            with m.If(valid[4]):
                with m.If(tfl):
                    m.d.sync += q5.eq((v >> 31) + ((v < 0) & (v[:31] != 0)))
                with m.Else():
                    m.d.sync += q5.eq(v)
            # stage 6: the arithmetic right shift of both modes; tflite's rounding
            # divide by a power of two rounds up when the remainder exceeds mask/2
            # (+1 when negative); mask and thresholds are made from the exponent a
            # stage early
            mask = Signal(32, name=f"mask_{c}")
            half = Signal(33, name=f"half_{c}")
            half1 = Signal(33, name=f"half1_{c}")
            extra = 1 if "round_off_by_one" in faults else 0
            with m.If(valid[4]):
                m_next = ((C(1, 33) << shs[4][:5]) - 1)[:32]
                m.d.sync += [mask.eq(m_next), half.eq((m_next >> 1) + extra),
                             half1.eq((m_next >> 1) + 1 + extra)]
            q6s = Signal(signed(aw + 32), name=f"q6s_{c}")
            up6 = Signal(name=f"up6_{c}")
            rem = Signal(32, name=f"rem_{c}")
            m.d.comb += rem.eq(q5[:32] & mask)
            up = Mux(q5 < 0, rem > half1, rem > half)
            with m.If(valid[5]):
                m.d.sync += [q6s.eq(q5 >> shs[5]), up6.eq(tfl & up)]
            # stage 7: the rounding increment
            q6 = Signal(signed(aw + 32), name=f"q6_{c}")
            with m.If(valid[6]):
                m.d.sync += q6.eq(q6s + up6)
            # stage 8: zero point and clamp, compared before the add (q6 against
            # lo - Z_out and hi - Z_out); NONE passes the accumulator through
            q8 = Signal(signed(aw + 33), name=f"q8_{c}")
            m.d.comb += q8.eq(q6 + zp)
            res = Signal(signed(aw), name=f"res_{c}")
            with m.If(valid[7]):
                with m.If(none):
                    m.d.sync += res.eq(q6)
                with m.Elif(q6 < lo_zp):
                    m.d.sync += res.eq(self.lo)
                with m.Elif(q6 > hi_zp):
                    m.d.sync += res.eq(self.hi)
                with m.Else():
                    m.d.sync += res.eq(q8)
            m.d.comb += self.o_data[c].eq(res)
        return m
