"""Requantizer: accumulators to output integers, one lane per array column.

The rules are the integer contract's (``systolic_conv.contract``):

* ``tflite``: ``q = rounding_divide_by_pot(srdhm(acc, M), S)`` with gemmlowp's
  saturating-rounding-doubling-high-multiply extended to the accumulator width
  (M is a Q31 integer, ``0 <= M < 2**31``, so no saturation case arises);
* ``half_up``: ``q = (acc*M + 2**(S-1)) >> S`` (``acc*M`` for ``S = 0``), M the low
  16 bits of the multiplier field;

then ``q + Z_out`` clamped to ``[lo, hi]`` (``lo`` already raised to ``Z_out`` when
ReLU is on). ``NONE`` passes the accumulator through. Four pipeline stages
(:attr:`Requantizer.LATENCY`) in every mode; each stage's data registers load only
with a valid beat (clock enable), so an idle requantizer holds still.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig
from .layouts import channel_params_layout, RequantMode, ZP_WIDTH

__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    LATENCY = 4

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        C, aw = cfg.cols, cfg.acc_width
        super().__init__({
            "i_valid": In(1),
            "i_last": In(1),
            "i_acc": In(data.ArrayLayout(signed(aw), C)),
            "i_params": In(data.ArrayLayout(channel_params_layout(cfg), C)),
            "mode": In(RequantMode),
            "zp": In(signed(ZP_WIDTH)),
            "lo": In(signed(ZP_WIDTH)),
            "hi": In(signed(ZP_WIDTH)),
            "o_valid": Out(1),
            "o_last": Out(1),
            "o_data": Out(data.ArrayLayout(signed(aw), C)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        faults = cfg.faults
        aw = cfg.acc_width

        valid = [self.i_valid] + [Signal(name=f"valid_s{i}") for i in range(1, 5)]
        last = [self.i_last] + [Signal(name=f"last_s{i}") for i in range(1, 5)]
        for i in range(4):
            m.d.sync += [valid[i + 1].eq(valid[i]), last[i + 1].eq(last[i])]
        m.d.comb += [self.o_valid.eq(valid[4]), self.o_last.eq(last[4])]

        mode = self.mode
        for c in range(cfg.cols):
            acc = self.i_acc[c]
            par = self.i_params[c]
            # stage 1: the product (DSP), keeping the accumulator and shift along
            acc1 = Signal(signed(aw), name=f"acc1_{c}")
            prod1 = Signal(signed(aw + 32), name=f"prod1_{c}")
            sh1 = Signal(6, name=f"sh1_{c}")
            with m.If(valid[0]):
                with m.If(mode == RequantMode.HALF_UP):
                    m.d.sync += prod1.eq(acc * par.mult[:16])
                with m.Else():
                    m.d.sync += prod1.eq(acc * par.mult)
                m.d.sync += [acc1.eq(acc), sh1.eq(par.shift)]

            # stage 2: tflite high-multiply (truncating toward zero) / half_up shift
            q2 = Signal(signed(aw + 32), name=f"q2_{c}")
            sh2 = Signal(6, name=f"sh2_{c}")
            acc2 = Signal(signed(aw), name=f"acc2_{c}")
            nudge = Mux(prod1 >= 0, 1 << 30, 1 - (1 << 30))
            v = Signal(signed(aw + 33), name=f"v_{c}")
            m.d.comb += v.eq(prod1 + nudge)
            hm = Signal(signed(aw + 2), name=f"hm_{c}")
            m.d.comb += hm.eq((v >> 31) + ((v < 0) & (v[:31] != 0)))
            if "half_up_no_round" in faults:
                rnd = C(0, 1)
            else:
                rnd = Mux(sh1 == 0, 0, (C(1, 48) << (sh1 - 1).as_unsigned()[:6])[:48])
            hu = Signal(signed(aw + 33), name=f"hu_{c}")
            m.d.comb += hu.eq((prod1 + rnd) >> sh1)
            with m.If(valid[1]):
                with m.Switch(mode):
                    with m.Case(RequantMode.TFLITE):
                        m.d.sync += q2.eq(hm)
                    with m.Case(RequantMode.HALF_UP):
                        m.d.sync += q2.eq(hu)
                    with m.Default():
                        m.d.sync += q2.eq(acc1)
                m.d.sync += [sh2.eq(sh1), acc2.eq(acc1)]

            # stage 3: tflite rounding divide by a power of two
            q3 = Signal(signed(aw + 32), name=f"q3_{c}")
            mask = Signal(32, name=f"mask_{c}")
            m.d.comb += mask.eq((C(1, 33) << sh2[:5]) - 1)
            rem = Signal(32, name=f"rem_{c}")
            m.d.comb += rem.eq(q2[:32] & mask)
            thr = Signal(33, name=f"thr_{c}")
            extra = 1 if "round_off_by_one" in faults else 0
            m.d.comb += thr.eq((mask >> 1) + (q2 < 0) + extra)
            with m.If(valid[2]):
                with m.If(mode == RequantMode.TFLITE):
                    m.d.sync += q3.eq((q2 >> sh2[:5]) + (rem > thr))
                with m.Else():
                    m.d.sync += q3.eq(q2)

            # stage 4: zero point and clamp (NONE passes the accumulator through)
            zp = 0 if "zero_point_dropped" in faults else self.zp
            q4 = Signal(signed(aw + 33), name=f"q4_{c}")
            m.d.comb += q4.eq(q3 + zp)
            res = Signal(signed(aw), name=f"res_{c}")
            with m.If(valid[3]):
                with m.If(mode == RequantMode.NONE):
                    m.d.sync += res.eq(q3)
                with m.Elif(q4 < self.lo):
                    m.d.sync += res.eq(self.lo)
                with m.Elif(q4 > self.hi):
                    m.d.sync += res.eq(self.hi)
                with m.Else():
                    m.d.sync += res.eq(q4)
            m.d.comb += self.o_data[c].eq(res)
        return m
