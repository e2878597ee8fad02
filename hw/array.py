"""The systolic array: ``rows x cols`` processing elements, two mappings.

Dense mapping (weight stationary). Each PE holds a weight of the current tile; row
``r`` receives lane ``r`` of one activation word per element, every PE of the row
multiplies it, and partial sums move down the columns register to register, so the
bottom row delivers one output pixel's ``cols`` column sums per element.

Depthwise mapping (output stationary). Column ``c`` is channel ``c``; row ``r``
accumulates output pixel ``x0 + r`` of a block of ``rows`` neighbouring pixels over
the kernel's taps, one tap per cycle: every PE of a column multiplies the tap's
weight of its channel with its own activation (lane ``c`` of row ``r``'s vector).
At a block's end each PE's sum moves into its capture register, from where the
accumulator reads it row by row while the next block computes.

Timing. Everything a row receives is delayed by ``r`` cycles inside the array (row
skew), so element or tap ``e`` presented at the inputs in cycle ``t`` is in row
``r``'s operand register in cycle ``t + 1 + r``; its product follows a cycle later
and its partial sum one more: the dense column sums of the element leave the bottom
row in cycle ``t + rows + 2`` (:data:`DENSE_LATENCY` ``= rows + 2``, counted from the
input cycle to the cycle the sum is visible). A depthwise block whose last tap was
presented in cycle ``t`` has row ``r``'s sum in its capture register from cycle
``t + 4 + r`` (:data:`CAPTURE_LATENCY` ``= 4``).

Weights. Each PE has a load-chain register (``shadow``) and the weight it computes
with (``active``). Dense: the loader shifts a tile's words down the chain, one per
cycle, row ``rows-1``'s word first; row ``r`` shifts when ``w_shift[r]`` is set (the
loader starts each row's shifting one cycle after the row above and stops all rows
together, so a new tile may follow the previous one into the chain while that one
is still being latched). An element presented with ``latch`` set makes every row
copy its chain register into ``active`` as the element enters the row's operand
register (row ``r`` at the end of cycle ``t + r``). Depthwise: every
row shifts and latches every cycle, so the tap weights presented at ``w_word`` in
cycle ``t`` are row ``r``'s ``active`` weight in cycle ``t + 2 + r``: present a tap's
weights one cycle before its activations.

No control signal reaches more than one row's PEs: each row registers its own copy.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig
from .dsp import use_ecp5_dsp, dsp_model, Ecp5Mult

__all__ = ["ProcessingElement", "SystolicArray", "DENSE_LATENCY", "CAPTURE_LATENCY",
           "row_control_layout"]

#: Cycles from an element at the array's inputs to its column sums at the bottom, minus ``rows``.
DENSE_LATENCY = 2
#: Cycles from a depthwise block's last tap at the inputs to row 0's capture register.
CAPTURE_LATENCY = 4


def row_control_layout():
    """Control travelling with an element (dense) or a tap (depthwise)."""
    return data.StructLayout({
        "valid": 1,      # an element / tap is present
        "latch": 1,      # dense: first element of a fold (copy the chain into active)
        "first": 1,      # depthwise: first tap of a block (restart the sum)
        "last": 1,       # depthwise: last tap of a block (capture the sum after it)
    })


class ProcessingElement(wiring.Component):
    """One multiply-accumulate cell.

    Ports
    -----
    a : operand, at the input of the PE's operand register (the last register of
        its row's skew); the operand register loads it every cycle.
    w_in -> shadow : weight load chain; ``shift`` loads ``w_in``; ``latch`` copies
        ``shadow`` into ``active`` (at the clock edge the operand register loads).
    psum_in : the partial sum from the PE above (dense).
    os, acc_en, first, cap : depthwise controls at the product stage: add the
        product to the own sum when ``acc_en`` (from zero when ``first``); copy the
        sum into ``capture`` when ``cap``.
    psum, capture : outputs.

    The operand register, ``active`` and the product register are the registers of
    an ECP5 ``MULT18X18D`` (input A, input B with its clock enable, output) when the
    design is elaborated for ECP5 synthesis (``platform.ecp5_dsp``): the same three
    registers with the same latency, but inside the DSP, so no fabric route lies on
    either side of the multiplier. Simulation uses the description below.
    """

    def __init__(self, data_width, psum_width):
        self._dw = data_width
        self._pw = psum_width
        super().__init__({
            "a": In(signed(data_width)),
            "w_in": In(signed(data_width)), "shift": In(1), "latch": In(1),
            "shadow": Out(signed(data_width)),
            "psum_in": In(signed(psum_width)),
            "os": In(1), "acc_en": In(1), "first": In(1), "cap": In(1),
            "psum": Out(signed(psum_width)), "capture": Out(signed(psum_width)),
        })

    def elaborate(self, platform):
        m = Module()
        prod = Signal(signed(2 * self._dw))
        with m.If(self.shift):
            m.d.sync += self.shadow.eq(self.w_in)
        if use_ecp5_dsp(platform):
            m.submodules.mult = Ecp5Mult(self.a, self.shadow, prod, a_reg=True, b_reg=True,
                                         b_en=self.latch, model=dsp_model(platform))
        else:
            a = Signal(signed(self._dw))            # the operand register
            active = Signal(signed(self._dw))       # the weight in use
            m.d.sync += a.eq(self.a)
            with m.If(self.latch):
                m.d.sync += active.eq(self.shadow)
            m.d.sync += prod.eq(a * active)
        # the PE's own copy of the (steady) mapping: the row's copy fans out to one PE
        os = Signal()
        m.d.sync += os.eq(self.os)
        base = Mux(os, Mux(self.first, 0, self.psum), self.psum_in)
        with m.If(~os | self.acc_en):
            m.d.sync += self.psum.eq(base + prod)
        with m.If(self.cap):
            m.d.sync += self.capture.eq(self.psum)
        return m


class SystolicArray(wiring.Component):
    """The PE grid with its row skew (see the module docstring).

    Inputs are at row 0's timing: ``dense_word`` (one lane per row) and
    ``dense_ctl``, ``dw_vec`` (one ``cols``-lane vector per row) and ``dw_ctl``
    (:func:`row_control_layout`; the mapping picks one pair),
    ``w_word``/``w_shift`` (the weight chain's top and each row's shift enable),
    ``depthwise`` (the mapping; steady during an invocation).
    Outputs: ``dense_sums`` (the bottom row's partial sums) and ``captures``
    (every PE's capture register, ``[row][col]``).
    """

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        R, C, dw, pw = cfg.rows, cfg.cols, cfg.data_width, cfg.psum_width
        super().__init__({
            "depthwise": In(1),
            "dense_word": In(data.ArrayLayout(signed(dw), R)),
            "dw_vec": In(data.ArrayLayout(data.ArrayLayout(signed(dw), C), R)),
            "dense_ctl": In(row_control_layout()),
            "dw_ctl": In(row_control_layout()),
            "w_word": In(data.ArrayLayout(signed(dw), C)),
            "w_shift": In(R),
            "dense_sums": Out(data.ArrayLayout(signed(pw), C)),
            "captures": Out(data.ArrayLayout(data.ArrayLayout(signed(pw), C), R)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, C, dw, pw = cfg.rows, cfg.cols, cfg.data_width, cfg.psum_width
        vec = data.ArrayLayout(signed(dw), C)
        pes = [[ProcessingElement(dw, pw) for _ in range(C)] for _ in range(R)]
        for r in range(R):
            for c in range(C):
                m.submodules[f"pe_{r}_{c}"] = pes[r][c]
        for r in range(R):
            # the row's copy of the mapping, its input vector and its controls, delayed
            # by r cycles (the vector's last register is each PE's operand register)
            os = Signal(name=f"os_{r}")
            m.d.sync += os.eq(self.depthwise)
            src = Signal(vec, name=f"rowin_{r}")
            for c in range(C):
                m.d.comb += src[c].eq(Mux(os, self.dw_vec[r][c], self.dense_word[r]))
            ctl = Signal(row_control_layout(), name=f"ctl_in_{r}")
            m.d.comb += ctl.eq(Mux(os, self.dw_ctl, self.dense_ctl))
            for i in range(r + 1):
                nctl = Signal(row_control_layout(), name=f"ctl{r}_d{i}")
                m.d.sync += nctl.eq(ctl)
                ctl_in, ctl = ctl, nctl
                if i < r:               # (the last register of the skew is in each PE)
                    nsrc = Signal(vec, name=f"row{r}_d{i}")
                    m.d.sync += nsrc.eq(src)
                    src = nsrc
            # product-stage controls (a cycle after the operand) and the capture,
            # a cycle after the last tap's sum
            ctl_p = Signal(row_control_layout(), name=f"ctl_p_{r}")
            cap = Signal(name=f"cap_{r}")
            m.d.sync += [ctl_p.eq(ctl), cap.eq(ctl_p.valid & ctl_p.last)]
            # the row's weight controls: dense shifts on its enable and latches as the
            # element enters the operand register (so the product of that element
            # already uses the new weight); depthwise shifts and latches every cycle
            shift = Signal(name=f"wshift_{r}")
            m.d.comb += shift.eq(os | self.w_shift[r])
            latch = Signal(name=f"wlatch_{r}")
            m.d.comb += latch.eq(os | (ctl_in.valid & ctl_in.latch))
            for c in range(C):
                pe = pes[r][c]
                m.d.comb += [
                    pe.a.eq(src[c]),
                    pe.w_in.eq(self.w_word[c] if r == 0 else pes[r - 1][c].shadow),
                    pe.shift.eq(shift), pe.latch.eq(latch),
                    pe.psum_in.eq(0 if r == 0 else pes[r - 1][c].psum),
                    pe.os.eq(os), pe.acc_en.eq(ctl_p.valid), pe.first.eq(ctl_p.first),
                    pe.cap.eq(cap),
                    self.captures[r][c].eq(pe.capture),
                ]
        for c in range(C):
            m.d.comb += self.dense_sums[c].eq(pes[R - 1][c].psum)
        return m
