"""Requantizer: accumulators to output integers, one lane per array column.

Contract, per lane (``acc`` signed ``acc_width`` bits, ``M = i_mult``, ``s = i_shift``;
the rules of ``systolic_conv.contract``):

``NONE``
    ``o = acc``, no clamp.
``TFLITE`` (``0 <= M < 2**31``, ``-31 <= s <= 31``)
    ``s >= 0``: ``q = rounding_divide_by_pot(srdhm(acc, M), s)``;
    ``s < 0``: ``q = srdhm(wrap(acc * 2**-s), M)``, the accumulator shifted left by
    ``-s`` and wrapped to ``acc_width`` bits (two's complement) first. ``srdhm`` is
    gemmlowp's saturating rounding doubling high multiply on the full product
    ``(acc*M + nudge) / 2**31`` (no saturation case arises: ``M >= 0``).
``HALF_UP`` (``M < 2**16``, the low 16 bits of ``i_mult``; ``0 <= s <= 47``)
    ``q = (acc*M + 2**(s-1)) >> s`` (``acc*M`` for ``s = 0``).

then ``o = clamp(q + zp, lo, hi)`` (``lo <= hi``, all three 17-bit signed), in
``acc_width`` bits (below 17 bits, a result outside them wraps: keep the bounds inside).
Shifts outside those ranges never reach the requantizer; they give unspecified
results. ``mode``, ``zp``, ``lo`` and ``hi`` are sampled through registers: they must
be steady from two cycles before an invocation's first beat until its last result.

Every beat takes :attr:`Requantizer.LATENCY` = 12 cycles (``o_valid`` is ``i_valid``
delayed; ``o_final`` likewise); the stages advance every cycle (no stall, no enable),
and only the valid and final tags have a reset. Each stage is one DSP multiply, one
carry chain or a few LUT levels; every DSP operand is a register of its own (copies
marked ``keep``, see :func:`_copies`) and every DSP product is registered:

==  ==========================================================================
 0  inputs registered; the multiplier masked by mode (half_up: 16 bits; NONE: 1)
 1  tflite's left shift ``L = -s`` decoded to a one-hot ``2**(L % 16)`` and
    ``L >= 16``; the right shift ``r`` of ``X = 2*P`` (below)
 2  ``acc * 2**(L % 16)``: one DSP per 17-bit chunk of the accumulator
 3  the chunks ORed (they do not overlap) and wrapped to ``acc_width`` bits, or to
    ``acc_width - 16`` bits if ``L >= 16`` (the factor ``2**16`` then comes off ``r``)
 4  ``P = acc * M``: one DSP per pair of 17-bit chunks (4 for ``acc_width <= 34``)
 5  the partial products packed side by side into at most four terms, summed in
    pairs; tflite's nudge ``2**30`` (``s >= 1`` only) rides in a gap of a term
 6  the product ``P`` (``acc_width + 31`` bits)
 7  coarse shift: the 34-bit window ``X[16*(r//16):][:34]``; whether ``X`` is all
    sign above each possible window; tflite's sticky bits below a window at 48
 8  fine shift: the window times ``2**(15 - r%16)`` (two DSPs)
 9  ``z = X >> r``, 19 bits: an 18-bit quotient ``q`` and its rounding bit; the
    round-up decision; the overflow flags
10  three parallel chains with the round-up bit as carry-in: ``q + zp``,
    ``q + zp < lo``, ``q + zp <= hi``; each candidate (``q + zp``, ``lo``, ``hi``,
    the accumulator for NONE) registered gated by its select (a synchronous reset)
11  the candidates ORed: ``o_data``
==  ==========================================================================

The right shift ``r`` of ``X = 2*P``: tflite ``s >= 1``: ``31 + s``, so that ``z`` is
``srdhm(...) >> (s-1)`` and its last bit the rounding bit (half away from zero: a
negative tie, seen by a sticky OR of the bits below, is not rounded up); tflite
``s <= 0``: 31 (15 if ``L >= 16``), ``P >> 31`` rounded half up, which is ``srdhm``;
half_up: ``s``; NONE: 15, which puts ``P = acc`` in the window (accumulators wider than
33 bits are delayed beside instead). A quotient that does not fit 18 bits selects the
bound on its side: beyond 18 bits, no zero point can bring it inside a 17-bit clamp.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig
from .layouts import RequantMode, MULT_WIDTH, SHIFT_WIDTH, ZP_WIDTH
from .dsp import use_ecp5_dsp, dsp_model, Ecp5Mult

__all__ = ["Requantizer"]

CHUNK = 17              # operand bits per MULT18X18D (18-bit signed, 17-bit unsigned)
FINE = 16               # the fine shift: one DSP multiplies by 2**0 .. 2**15
WIN = 19                # the shifter's window: an 18-bit quotient and its rounding bit
YWIDTH = WIN + FINE - 1  # the coarse window: 34 bits, two DSP operands
NUDGE_BIT = 30          # tflite's rounding nudge 2**30 of the high multiply


def _chunks(width):
    """``[(offset, width), ...]`` of the 17-bit DSP operands of a ``width``-bit value."""
    return [(o, min(CHUNK, width - o)) for o in range(0, width, CHUNK)]


def _reg(m, value, name, shape=None, keep=False, reset=False):
    """A register loaded with ``value`` every cycle, without reset unless ``reset``
    (only the valid and final tags need one); ``keep``: a deliberate copy that
    synthesis must not merge with its twins (see :func:`_copies`)."""
    sig = Signal(shape if shape is not None else Value.cast(value).shape(), name=name,
                 attrs={"keep": 1} if keep else {}, reset_less=not reset)
    m.d.sync += sig.eq(value)
    return sig


def _copies(m, value, n, name, shape=None):
    """``n`` registered copies of ``value``, one per consumer (a DSP operand, a lane),
    so that each can sit next to its consumer. They carry ``keep``: the synthesis flow
    keeps flip-flops whose output has it (``setattr -set keep 1 a:keep %ci1:+$dff[Q]
    t:$dff %i`` before ``synth_ecp5``, as ``systolic_conv.synth`` does)."""
    if n == 1:
        return [_reg(m, value, name, shape)]
    return [_reg(m, value, f"{name}_{i}", shape, keep=True) for i in range(n)]


def _delay(m, value, n, name, reset=False):
    """``value`` delayed by ``n`` cycles."""
    for i in range(n):
        value = _reg(m, value, f"{name}_d{i}", reset=reset)
    return value


def _alleq_groups(bits):
    """Whether the bits of overlapping groups of four of ``bits`` are equal (one LUT4
    each): all of them are equal when all groups are."""
    groups = [C(1, 1)]
    for lo in range(0, len(bits) - 1, 3):
        g = bits[lo:min(lo + 4, len(bits))]
        groups.append((g == 0) | (g == (1 << len(g)) - 1))
    return Cat(*groups)


def _alleq(bits):
    """All bits of ``bits`` equal (true for fewer than two)."""
    return _alleq_groups(bits).all()


def _pack_terms(products, nudge):
    """Pack ``[(offset, value)]`` partial products and the nudge bit into as few
    non-overlapping concatenations as possible (a signed value ends its term)."""
    items = sorted(products + [(NUDGE_BIT, nudge)], key=lambda t: t[0])
    terms = []                  # [offset, end, [(offset, value)], closed]
    for off, val in items:
        width, signed_ = len(val), Value.cast(val).shape().signed
        for t in terms:
            if not t[3] and t[1] <= off:
                t[2].append((off, val))
                t[1], t[3] = off + width, signed_
                break
        else:
            terms.append([off, off + width, [(off, val)], signed_])
    out = []
    for off, _, parts, _ in terms:
        pieces, pos = [], off
        for o, v in parts:
            pieces += [C(0, o - pos), v] if o > pos else [v]
            pos = o + len(v)
        last_signed = Value.cast(parts[-1][1]).shape().signed
        cat = Cat(*pieces)
        out.append((off, cat.as_signed() if last_signed else cat))
    return out


class Requantizer(wiring.Component):
    """Accumulators to requantized integers, ``cols`` lanes (see the module docstring).

    Parameters
    ----------
    cfg : HardwareConfig
        ``cols`` lanes of ``acc_width`` bits.
    """

    LATENCY = 12

    def __init__(self, cfg: HardwareConfig):
        if not isinstance(cfg, HardwareConfig):
            self._MustUse__silence = True       # not elaborated: no "unused" warning
            raise TypeError(f"cfg must be a HardwareConfig, not {type(cfg).__name__}")
        self.cfg = cfg
        n, aw = cfg.cols, cfg.acc_width
        super().__init__({
            "i_valid": In(1),
            "i_final": In(1),
            "i_acc": In(data.ArrayLayout(signed(aw), n)),
            "i_mult": In(data.ArrayLayout(unsigned(MULT_WIDTH), n)),
            "i_shift": In(data.ArrayLayout(signed(SHIFT_WIDTH), n)),
            "mode": In(RequantMode),
            "zp": In(signed(ZP_WIDTH)),
            "lo": In(signed(ZP_WIDTH)),
            "hi": In(signed(ZP_WIDTH)),
            "o_valid": Out(1),
            "o_final": Out(1),
            "o_data": Out(data.ArrayLayout(signed(aw), n)),
        })

    def _mul(self, m, a, b, name):
        """A registered product ``a * b`` (one DSP): in ECP5 synthesis the register is
        the DSP's output register."""
        if not self._ecp5:
            return _reg(m, a * b, name)
        p = Signal(Value.cast(a * b).shape(), name=name)
        m.submodules[name + "_dsp"] = Ecp5Mult(a, b, p, model=self._model)
        return p

    def elaborate(self, platform):
        m = Module()
        self._ecp5 = use_ecp5_dsp(platform)
        self._model = dsp_model(platform)
        lat = self.LATENCY
        m.d.comb += [self.o_valid.eq(_delay(m, self.i_valid, lat, "valid", reset=True)),
                     self.o_final.eq(_delay(m, self.i_final, lat, "final", reset=True))]
        # clamp bounds relative to the zero point, computed once (the inputs are steady)
        self._zp = C(0, ZP_WIDTH) if "zero_point_dropped" in self.cfg.faults else self.zp
        c_lo = _reg(m, self._zp - self.lo, "zp_minus_lo", signed(ZP_WIDTH + 1))
        c_hi = _reg(m, self._zp - self.hi - 1, "zp_minus_hi_1", signed(ZP_WIDTH + 1))
        for c in range(self.cfg.cols):
            self._lane(m, c, c_lo, c_hi)
        return m

    def _lane(self, m, c, c_lo, c_hi):
        """One lane: its own registered copies of the steady inputs, then the stages."""
        p = f"l{c}_"
        mode = {k: _reg(m, self.mode == v, p + k, keep=True) for k, v in
                (("tfl", RequantMode.TFLITE), ("hup", RequantMode.HALF_UP),
                 ("none", RequantMode.NONE))}
        # operands of the lane's chains; the bounds only load stage 10's registers
        steady = {k: _reg(m, v, p + k, keep=True) for k, v in
                  (("zp", self._zp), ("c_lo", c_lo), ("c_hi", c_hi))}
        steady.update(lo=self.lo, hi=self.hi)
        # stage 0: inputs
        acc0 = _reg(m, self.i_acc[c], p + "acc0")
        mult = self.i_mult[c]
        mult0 = _reg(m, Mux(mode["none"], 1, Mux(mode["hup"], mult[:16], mult)), p + "mult0",
                     unsigned(MULT_WIDTH))
        sh0 = _reg(m, self.i_shift[c], p + "sh0")
        # stage 1
        dec = self._decode(m, p, sh0, mode)
        acc1 = _reg(m, acc0, p + "acc1")
        mult3 = _copies(m, _delay(m, mult0, 2, p + "mult"), len(_chunks(self.cfg.acc_width)),
                        p + "mult3")
        # stages 2-3
        acc3 = self._wrap(m, p, acc1, dec["onehot"], dec["l4"])
        # stages 4-6
        nudge = _delay(m, dec["tflpos"], 3, p + "nudge")
        prod = self._product(m, p, acc3, mult3, nudge)
        # stages 7-9
        r6 = _delay(m, dec["r"], 5, p + "r")
        tflpos8 = _delay(m, dec["tflpos"], 7, p + "tflpos")
        hup8 = _delay(m, mode["hup"], 8, p + "hup") if "half_up_no_round" in self.cfg.faults \
            else C(0, 1)
        z9 = self._shift(m, p, prod, r6, tflpos8, hup8)
        # stages 10-11 (NONE: the product is the accumulator, M = 1)
        acc9 = z9["acc"]
        if acc9 is None:
            acc9 = _delay(m, prod[:self.cfg.acc_width], 3, p + "accn")
        m.d.comb += self.o_data[c].eq(self._clamp(m, p, z9, acc9, mode["none"], steady))

    def _decode(self, m, p, sh0, mode):
        """Stage 1: tflite's left shift as ``2**(L % 16)`` and ``L >= 16``; the right
        shift of ``2*P``; whether tflite rounds twice (``s >= 1``)."""
        left = mode["tfl"] & sh0[-1]
        lsh = (-sh0)[:5]
        onehot = Cat(*[Mux(left, lsh[:4] == k, k == 0) for k in range(FINE)])
        onehot = _copies(m, onehot, len(_chunks(self.cfg.acc_width)), p + "onehot")
        tflpos = mode["tfl"] & ~sh0[-1] & (sh0 != 0)
        # NONE: r = 15 puts the accumulator (P = acc, M = 1) in the window's 33 bits
        # tflite, L >= 16: the product is 2**16 times too small, so 16 less
        r = Mux(mode["tfl"], Mux(tflpos, sh0[:6] + 31, Mux(left & lsh[4], 15, 31)),
                Mux(mode["hup"], sh0[:6], 15))
        return {"onehot": onehot, "l4": _reg(m, left & lsh[4], p + "l4"),
                "r": _reg(m, r, p + "r1", unsigned(6)),
                "tflpos": _reg(m, tflpos, p + "tflpos1")}

    def _wrap(self, m, p, acc1, onehot, l4):
        """Stages 2-3: ``acc * 2**L`` wrapped to ``acc_width`` bits (``L = 0`` unless
        tflite shifts left; ``L >= 16`` leaves out the factor ``2**16``), one registered
        copy per multiplier chunk of stage 4."""
        aw = self.cfg.acc_width
        parts = []
        for i, (off, w) in enumerate(_chunks(aw)):
            a = acc1[off:off + w]
            a = a.as_signed() if off + w == aw else a
            parts.append((off, self._mul(m, a, onehot[i], f"{p}wrap{i}")))
        l4_2 = _reg(m, l4, p + "l4_2")
        bits = []
        for i in range(aw):
            srcs = [v.as_unsigned()[i - off] for off, v in parts if 0 <= i - off < len(v)]
            bits.append(srcs[0] if len(srcs) == 1 else Cat(*srcs).any())
        g = Cat(*bits)
        # L >= 16: acc * 2**L wrapped is (acc * 2**(L-16) wrapped to acc_width - 16 bits)
        # times 2**16; the factor 2**16 is taken off the right shift instead
        short = g[:aw - 16].as_signed() if aw > 16 else C(0, 1)
        return _copies(m, Mux(l4_2, short, g.as_signed()), len(_chunks(MULT_WIDTH)),
                       p + "acc3", signed(aw))

    def _product(self, m, p, acc3, mult3, nudge):
        """Stages 4-6: ``acc * M (+ 2**30)``, partial products on DSPs, two adder levels."""
        aw = self.cfg.acc_width
        pw = aw + MULT_WIDTH
        prods = []
        for i, (ao, awid) in enumerate(_chunks(aw)):
            for j, (mo, mwid) in enumerate(_chunks(MULT_WIDTH)):
                a = acc3[j][ao:ao + awid]
                a = a.as_signed() if ao + awid == aw else a
                prods.append((ao + mo, self._mul(m, a, mult3[i][mo:mo + mwid], f"{p}pp{i}{j}")))
        terms = _pack_terms(prods, nudge)
        assert len(terms) <= 4, "more than two adder levels"
        sums = []
        for k in range(0, len(terms), 2):
            pair = terms[k:k + 2]
            total = sum((v << o) for o, v in pair)
            sums.append(_reg(m, total, f"{p}sum{k // 2}", signed(pw)))
        return _reg(m, sum(sums), p + "prod", signed(pw))

    def _shift(self, m, p, prod, r6, tflpos8, no_round):
        """Stages 7-9: ``z = (2*P) >> r`` in a 19-bit window; returns the 18-bit
        quotient, the round-up bit, its overflow flag and the sign of ``P``."""
        x = Cat(C(0, 1), prod).as_signed()
        xw = len(x)

        def xbits(lo, hi):
            return Cat(*[x[min(i, xw - 1)] for i in range(lo, hi)])
        a6, b6 = r6[4:6], r6[:4]
        # stage 7: coarse window; whether X is all sign above each window's top;
        # tflite's sticky bits below the window
        window = Array([xbits(16 * a, 16 * a + YWIDTH) for a in range(4)])
        y7 = _reg(m, window[a6], p + "y7", unsigned(YWIDTH))
        ok7 = []
        for a in range(4):
            lo = 16 * a + YWIDTH - 1
            ok7.append(_reg(m, _alleq(xbits(lo, min(lo + 17, xw))), f"{p}ok{a}_7")
                       if lo < xw - 1 else C(1, 1))
        stk7 = _reg(m, (a6 == 3) & xbits(32, 48).any(), p + "stk7")
        neg7 = _reg(m, x[-1], p + "neg7")
        a7 = _reg(m, a6, p + "a7")
        fine = _copies(m, Cat(*[b6 == FINE - 1 - k for k in range(FINE)]), 2, p + "fine7")
        # stage 8: fine shift, two DSPs; the overflow of the coarse window
        f0 = self._mul(m, y7[:CHUNK], fine[0], p + "f0")
        f1 = self._mul(m, y7[CHUNK:].as_signed(), fine[1], p + "f1")
        ok = [C(1, 1)] * 5
        for a in reversed(range(4)):
            ok[a] = ok7[a] & ok[a + 1]
        ovf8 = _reg(m, ~Array(ok[:4])[a7], p + "ovf8")
        stk8, neg8 = _reg(m, stk7, p + "stk8"), _reg(m, neg7, p + "neg8")
        # stage 9: the window z = F[15:34] of F = f0 | f1 << 17 (they do not overlap)
        f0u, f1u = f0.as_unsigned(), f1.as_unsigned()

        def fbit(i):
            srcs = [f0u[i]] if i < len(f0u) else []
            srcs += [f1u[i - CHUNK]] if 0 <= i - CHUNK < len(f1u) else []
            return srcs[0] if len(srcs) == 1 else srcs[0] | srcs[1]
        z = Cat(*[fbit(i) for i in range(FINE - 1, FINE - 1 + WIN)])
        tie = ~(f0u[:FINE - 1].any() | stk8)
        fault_tie = int("round_off_by_one" in self.cfg.faults)   # ties round down
        # NONE: F[1:34] is the accumulator when it fits (else it is delayed beside)
        aw = self.cfg.acc_width
        lo = 1 if aw < YWIDTH else FINE
        f9 = _reg(m, Cat(*[fbit(i) for i in range(lo, FINE - 1 + WIN)]), p + "f9")
        return {"q": f9[FINE - lo:].as_signed(), "acc": f9[:aw] if lo == 1 else None,
                "up": _reg(m, z[0] & ~no_round & ~(tflpos8 & (neg8 | fault_tie) & tie), p + "up9"),
                "ovf_coarse": _reg(m, ovf8, p + "ovf9"),
                "fine_ok": _reg(m, _alleq_groups(f1u[FINE:]), p + "fine_ok9"),
                "neg": _reg(m, neg8, p + "neg9")}

    def _clamp(self, m, p, z, acc9, none, st):
        """Stages 10-11: ``clamp(q + zp, lo, hi)`` with ``q = z.q + z.up``, or the
        bound on ``P``'s side when ``q`` overflowed; ``NONE`` passes the accumulator.
        Stage 10 registers each candidate gated by its select (a synchronous reset of
        the register, no logic); stage 11 ORs them."""
        q, up = z["q"], z["up"]
        below = (q + st["c_lo"] + up)[-1]           # q + zp < lo
        in_hi = (q + st["c_hi"] + up)[-1]           # q + zp <= hi
        ovf = z["ovf_coarse"] | ~z["fine_ok"].all()
        sel_lo = ~none & Mux(ovf, z["neg"], below)
        sel_hi = ~none & Mux(ovf, ~z["neg"], ~in_hi)
        sel_v = ~none & ~sel_lo & ~sel_hi
        cands = [_reg(m, Mux(sel_v, q + st["zp"] + up, 0), p + "v10", signed(ZP_WIDTH)),
                 _reg(m, Mux(sel_lo, st["lo"], 0), p + "lo10", signed(ZP_WIDTH)),
                 _reg(m, Mux(sel_hi, st["hi"], 0), p + "hi10", signed(ZP_WIDTH)),
                 _reg(m, Mux(none, acc9, 0), p + "acc10", signed(self.cfg.acc_width))]
        res = cands[0] | cands[1] | cands[2] | cands[3]
        return _reg(m, res, p + "res", signed(self.cfg.acc_width))
