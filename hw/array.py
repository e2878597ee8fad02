"""Weight-stationary systolic array: ``rows x cols`` processing elements.

Dataflow (documented timing, used by the cycle model):

* Activations enter on the left, one vector of ``rows`` values per cycle; row ``r``
  is delayed by ``r`` cycles (input skew) and each PE passes its activation to its
  right neighbour through a register. The weight bank to use travels with it.
* Each PE registers its operands (the activation and the weight of the bank it
  travels with), multiplies into a product register (the DSP's input and pipeline
  registers) and adds the product to the partial sum from the PE above; partial
  sums move down the columns register to register.
* The bottom row's sums are de-skewed (column ``c`` delayed by ``cols-1-c``), so
  the sums of one activation vector leave together ``rows + cols + 1`` cycles after it
  entered (:attr:`HardwareConfig.array_latency`).
* Depthwise mode (``dw_mode``): row ``r`` receives a whole word of ``cols``
  activations (``dw_act[r]``, one per column: channel ``c`` for column ``c``) and
  PE ``(r, c)`` multiplies lane ``c``, delayed by ``r + c`` cycles so that it meets
  the same weight-bank and partial-sum timing as the shared activation of the
  dense mode. Rows then hold kernel taps and columns channels: every PE does a
  useful MAC for a depthwise layer, where the dense mapping could use only one
  row per column.
* Weights are double-buffered: each PE holds two banks and a load-chain register.
  The loader presents one word of ``cols`` weights per cycle (row ``rows-1`` first);
  the words shift down the columns through the chain registers, column ``c`` skewed
  by ``c`` cycles. ``w_latch`` presented ``rows`` cycles after the first word copies
  every chain register of a column into bank ``w_bank`` at once (column ``c``
  ``c`` cycles later). The current tile computes from the other bank meanwhile.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig

__all__ = ["ProcessingElement", "SystolicArray"]


class ProcessingElement(wiring.Component):
    """One multiply-accumulate cell with two weight banks.

    Ports
    -----
    a_in, bank_in -> a_out, bank_out : activation and its weight bank, registered.
    psum_in -> psum_out : partial sum, ``psum_out = psum_in + a*w`` an operand and
        a product register later.
    w_in -> w_out : weight load chain, registered.
    w_latch, w_bank : copy the chain register into bank ``w_bank``.
    """

    def __init__(self, data_width, acc_width):
        self._dw = data_width
        self._aw = acc_width
        super().__init__({
            "a_in": In(signed(data_width)), "bank_in": In(1),
            "a_out": Out(signed(data_width)), "bank_out": Out(1),
            "psum_in": In(signed(acc_width)), "psum_out": Out(signed(acc_width)),
            "w_in": In(signed(data_width)), "w_out": Out(signed(data_width)),
            "w_latch": In(1), "w_bank": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        w0 = Signal(signed(self._dw))
        w1 = Signal(signed(self._dw))
        a_reg = Signal(signed(self._dw))    # multiplier operand registers (DSP inputs)
        w_reg = Signal(signed(self._dw))
        prod = Signal(signed(2 * self._dw))

        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.bank_out.eq(self.bank_in),
            self.w_out.eq(self.w_in),
            a_reg.eq(self.a_in),
            w_reg.eq(Mux(self.bank_in, w1, w0)),
            prod.eq(a_reg * w_reg),
            self.psum_out.eq(self.psum_in + prod),
        ]
        with m.If(self.w_latch):
            with m.If(self.w_bank):
                m.d.sync += w1.eq(self.w_out)
            with m.Else():
                m.d.sync += w0.eq(self.w_out)
        return m


class SystolicArray(wiring.Component):
    """A ``rows x cols`` grid of :class:`ProcessingElement` with skew/de-skew."""

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        R, C, dw, aw = cfg.rows, cfg.cols, cfg.data_width, cfg.acc_width
        super().__init__({
            "act": In(data.ArrayLayout(signed(dw), R)),
            "bank": In(1),
            "dw_mode": In(1),
            "dw_act": In(data.ArrayLayout(data.ArrayLayout(signed(dw), C), R)),
            "w_word": In(data.ArrayLayout(signed(dw), C)),
            "w_latch": In(1),
            "w_bank": In(1),
            "sums": Out(data.ArrayLayout(signed(aw), C)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols

        def delayed(sig, n, name):
            for i in range(n):
                nxt = Signal.like(sig, name=f"{name}_d{i + 1}")
                m.d.sync += nxt.eq(sig)
                sig = nxt
            return sig

        pe = [[None] * C for _ in range(R)]
        for r in range(R):
            for c in range(C):
                pe[r][c] = ProcessingElement(cfg.data_width, cfg.acc_width)
                m.submodules[f"pe_{r}_{c}"] = pe[r][c]

        # Row inputs, skewed by row index; in depthwise mode each PE takes its own
        # lane of the row's word, skewed by row + column.
        for r in range(R):
            m.d.comb += pe[r][0].bank_in.eq(delayed(self.bank, r, f"bank{r}"))
            shared = delayed(self.act[r], r, f"act{r}")
            # one delay line of whole words per row, lane c tapped at stage r + c
            # (synthesis drops the bits of a stage no lane taps)
            dw_line = [self.dw_act[r]]
            for i in range(r + C - 1):
                nxt = Signal.like(self.dw_act[r], name=f"dwact{r}_d{i + 1}")
                m.d.sync += nxt.eq(dw_line[-1])
                dw_line.append(nxt)
            for c in range(C):
                own = dw_line[r + c][c]
                chain = shared if c == 0 else pe[r][c - 1].a_out
                m.d.comb += pe[r][c].a_in.eq(Mux(self.dw_mode, own, chain))
                if c:
                    m.d.comb += pe[r][c].bank_in.eq(pe[r][c - 1].bank_out)

        # Column weight chains and latch strobes, skewed by column index.
        for c in range(C):
            w = delayed(self.w_word[c], c, f"w{c}")
            latch = delayed(self.w_latch, c, f"latch{c}")
            wbank = delayed(self.w_bank, c, f"wbank{c}")
            m.d.comb += [pe[0][c].w_in.eq(w), pe[0][c].psum_in.eq(0)]
            for r in range(1, R):
                m.d.comb += [
                    pe[r][c].w_in.eq(pe[r - 1][c].w_out),
                    pe[r][c].psum_in.eq(pe[r - 1][c].psum_out),
                ]
            for r in range(R):
                m.d.comb += [pe[r][c].w_latch.eq(latch), pe[r][c].w_bank.eq(wbank)]
            # De-skew: column c leaves cols-1-c cycles later.
            m.d.comb += self.sums[c].eq(delayed(pe[R - 1][c].psum_out, C - 1 - c, f"sum{c}"))
        return m
