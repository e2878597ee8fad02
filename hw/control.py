"""Run control: the descriptor, its checks, the layer configuration and the status.

States: ``IDLE`` (``i_desc`` ready) -> ``CHECK0..3`` -> ``RUN`` -> ``STATUS`` -> ``IDLE``,
with ``ABORT`` in place of ``RUN`` after a descriptor that fails a check or a fatal
stream error. The checks take four cycles, each a registered step: ``CHECK0``
takes the products of descriptor fields (one multiplier deep), ``CHECK1`` the
derived figures every block uses (:func:`layer_layout`), ``CHECK2`` compares them
with the elaborated limits, one registered verdict per condition (and takes the
activation beat total, the one product of a product), and ``CHECK3`` pulses ``start`` when
none failed: the other blocks take their own copy of the fields they use at its
end, and the layer runs from the next cycle (:data:`CHECK_CYCLES` after the
handshake).

``ABORT`` lets the intake blocks drain their streams up to ``last`` and waits for
the pipeline to empty (``drained``); ``STATUS`` offers one status beat (errors and
the performance counters) and returns to ``IDLE``. Nothing hangs on a bad layer
and the next descriptor starts from a clean state.
"""

from amaranth import *
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig
from .layouts import (descriptor_layout, status_layout, RequantMode, ErrorFlag, COUNTERS,
                      STATUS_COUNTER_WIDTH, ZP_WIDTH)

__all__ = ["Control", "layer_layout", "CHECK_CYCLES"]

#: Cycles between the descriptor handshake and ``start`` (the handshake cycle excluded).
CHECK_CYCLES = 4

_FATAL = (ErrorFlag.BAD_DESC | ErrorFlag.BAD_PARAM | ErrorFlag.ACT_SHORT |
          ErrorFlag.WEIGHT_SHORT | ErrorFlag.PARAM_SHORT)


def layer_layout(cfg: HardwareConfig):
    """The descriptor and the figures derived from it, as every block sees them."""
    hb, wb, kb = cfg.h_bits, cfg.w_bits, cfg.k_bits
    cb = cfg.y_bits + 1
    return data.StructLayout({
        "desc":      descriptor_layout(cfg),
        "taps":      unsigned(2 * kb),               # kh * kw
        "kh_m1":     unsigned(kb), "kw_m1": unsigned(kb),
        "cot_m1":    unsigned(cfg.cot_bits),
        "cw_m1":     unsigned(cfg.cw_bits),
        "ow_m1":     unsigned(wb),
        "xw_m1":     unsigned(wb),                   # beats per row and word, minus 1
        "pass_span": unsigned(cb),                   # dense: rows a pass needs
        "pass_step": unsigned(cb),                   # dense: G * stride_h
        "span_h":    unsigned(cb),                   # (kh - 1) * dil_h + 1
        "act_total": unsigned(hb + wb + cfg.cw_bits + 1),
        "w_total":   unsigned(cfg.tile_bits + (cfg.rows - 1).bit_length() + 2 * kb + 1),
        "nblk_m1":   unsigned(wb),                   # depthwise: blocks per output row - 1
        "last_rows": unsigned((cfg.rows).bit_length()),   # depthwise: pixels of the last block
    })


class Control(wiring.Component):
    """See the module docstring.

    Ports
    -----
    i_desc, o_status : streams.
    layer : the current layer (valid from ``start`` to the next descriptor).
    begin : the descriptor handshake (the intake blocks start counting afresh).
    start : one-cycle pulse in the last check cycle, just before ``RUN``.
    starts : ``start_copies`` copies of ``start``, each its own register (one per
        block that takes it, so no register fans out to every block's registers).
    run : ``RUN`` or ``ABORT`` (the intake blocks accept beats).
    abort : ``ABORT``.
    checking : a descriptor is being checked (handshake cycle and ``CHECK*``).
    err : error bits raised by the other blocks (ORed in while running).
    work_done : every result of the layer has left (``RUN`` -> ``STATUS``).
    drained : streams drained and no result outstanding (``ABORT`` -> ``STATUS``
        after ``drain_cycles`` at least, so the pipeline is empty).
    counters : the performance counters, read into the status beat.
    error : the accumulated error flags.
    """

    def __init__(self, cfg: HardwareConfig, drain_cycles=32, start_copies=1):
        self.cfg = cfg
        self.drain_cycles = drain_cycles
        self.start_copies = start_copies
        super().__init__({
            "i_desc": In(stream.Signature(descriptor_layout(cfg))),
            "o_status": Out(stream.Signature(status_layout(cfg))),
            "layer": Out(layer_layout(cfg)),
            "begin": Out(1), "start": Out(1), "starts": Out(start_copies),
            "run": Out(1), "abort": Out(1), "checking": Out(1),
            "active": Out(1),
            "err": In(8), "work_done": In(1), "drained": In(1),
            "counters": In(data.ArrayLayout(unsigned(STATUS_COUNTER_WIDTH), len(COUNTERS))),
            "error": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        L = self.layer
        d = L.desc
        products = self._products(m)
        # ABORT lasts at least as long as an issued element takes to leave the pipeline
        timer = Signal(range(self.drain_cycles + 1))
        with m.If(~self.abort):
            m.d.sync += timer.eq(self.drain_cycles)
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        derive = Signal()
        with m.If(derive):
            self._derive(m)
        verdicts = Cat(*self._conditions())
        conds = Signal(len(verdicts))             # CHECK2's verdicts, registered
        rejected = Signal()                       # the descriptor failed its checks
        # start, registered: set at the end of CHECK2 when no verdict failed, so it is
        # the pulse of CHECK3 straight from flip-flops; one copy per block it reaches
        starts = [Signal(name=f"start{i}", attrs={"keep": 1})
                  for i in range(self.start_copies + 1)]
        m.d.sync += [s.eq(0) for s in starts]
        m.d.comb += [self.start.eq(starts[0]), self.starts.eq(Cat(*starts[1:]))]
        with m.FSM(name="ctl"):
            with m.State("IDLE"):
                m.d.comb += [self.i_desc.ready.eq(1), self.checking.eq(self.i_desc.valid),
                             self.begin.eq(self.i_desc.valid)]
                with m.If(self.i_desc.valid):
                    m.d.sync += [d.eq(self.i_desc.payload), self.error.eq(0), rejected.eq(0)]
                    m.next = "CHECK0"
            with m.State("CHECK0"):
                m.d.comb += [self.checking.eq(1), products.eq(1)]
                m.next = "CHECK1"
            with m.State("CHECK1"):
                m.d.comb += [self.checking.eq(1), derive.eq(1)]
                m.next = "CHECK2"
            with m.State("CHECK2"):
                m.d.comb += self.checking.eq(1)
                m.d.sync += [conds.eq(verdicts), L.act_total.eq(self._p["hx"] * d.cwords)]
                m.d.sync += [s.eq(~verdicts.any()) for s in starts]
                m.next = "CHECK3"
            with m.State("CHECK3"):
                m.d.comb += self.checking.eq(1)
                with m.If(conds.any()):
                    m.d.sync += [self.error.eq(ErrorFlag.BAD_DESC), rejected.eq(1)]
                    m.next = "ABORT"
                with m.Else():
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.run.eq(1)
                with m.If((self.error | self.err) & _FATAL):
                    m.next = "ABORT"
                with m.Elif(self.work_done):
                    m.next = "STATUS"
            with m.State("ABORT"):
                m.d.comb += [self.run.eq(1), self.abort.eq(1)]
                with m.If(self.drained & (timer == 0)):
                    m.next = "STATUS"
            with m.State("STATUS"):
                m.d.comb += self.o_status.valid.eq(1)
                with m.If(self.o_status.ready):
                    m.next = "IDLE"
            m.d.comb += self.active.eq(~self.i_desc.ready | self.i_desc.valid)
        # a rejected layer reports BAD_DESC only: the intake blocks drain its streams
        # against the previous layer's counts
        with m.If(self.run & ~rejected):
            m.d.sync += self.error.eq(self.error | self.err)
        st = self.o_status.payload
        m.d.comb += st.error.eq(self.error)
        for i, name in enumerate(COUNTERS):
            m.d.comb += getattr(st, name).eq(self.counters[i])
        return m

    # -- CHECK0: products of descriptor fields, each registered ----------------------
    def _products(self, m):
        cfg, L, d = self.cfg, self.layer, self.layer.desc
        take = Signal()
        self._p = p = {
            "ph": Signal(cfg.y_bits),              # (pass_rows - 1) * stride_h
            "kh": Signal(cfg.y_bits),              # (kh - 1) * dil_h
            "ow": Signal(cfg.x_bits),              # (out_width - 1) * stride_w
            "kw": Signal(cfg.x_bits),              # (kw - 1) * dil_w
            "oh": Signal(cfg.y_bits),              # (out_height - 1) * stride_h
            "gs": Signal(L.pass_step.shape()),     # pass_rows * stride_h
            "acc": Signal(cfg.h_bits + cfg.w_bits),            # pass_rows * out_width
            "taps": Signal(L.taps.shape()),
            "xw": Signal(L.xw_m1.shape().width + 1),           # beats per row
            "hx": Signal(cfg.h_bits + cfg.w_bits),             # height * beats per row (CHECK1)
            "ct": Signal(2 * cfg.cot_bits),                    # cotiles * ... (dw weights)
            "sw": Signal.like(d.stride_w * d.phase_words),     # (the dw width check)
        }
        P = cfg.act_pixels
        lgP = P.bit_length() - 1
        xw = Mux(d.depthwise, d.stride_w * d.phase_words, (d.width + (P - 1)) >> lgP)
        with m.If(take):
            m.d.sync += [
                p["ph"].eq((d.pass_rows - 1) * d.stride_h), p["kh"].eq((d.kh - 1) * d.dil_h),
                p["ow"].eq((d.out_width - 1) * d.stride_w), p["kw"].eq((d.kw - 1) * d.dil_w),
                p["oh"].eq((d.out_height - 1) * d.stride_h), p["gs"].eq(d.pass_rows * d.stride_h),
                p["acc"].eq(d.pass_rows * d.out_width), p["taps"].eq(d.kh * d.kw),
                p["xw"].eq(xw), p["sw"].eq(d.stride_w * d.phase_words),
            ]
        return take

    # -- CHECK1: derived figures ------------------------------------------------------
    def _derive(self, m):
        cfg, L, d, p = self.cfg, self.layer, self.layer.desc, self._p
        R, P = cfg.rows, cfg.act_pixels
        lgR, lgP = (R - 1).bit_length(), P.bit_length() - 1
        # depthwise blocks per output row, ceil(out_width / rows) (rows is a power of
        # two where the depthwise mapping exists), and the last block's pixels
        nblk = Signal(cfg.w_bits + 1)
        m.d.comb += nblk.eq((d.out_width + (R - 1)) >> lgR)
        m.d.sync += [
            L.taps.eq(p["taps"]), L.kh_m1.eq(d.kh - 1), L.kw_m1.eq(d.kw - 1),
            L.cot_m1.eq(d.cotiles - 1), L.cw_m1.eq(d.cwords - 1), L.ow_m1.eq(d.out_width - 1),
            L.pass_span.eq(p["ph"] + p["kh"] + 1), L.pass_step.eq(p["gs"]),
            L.span_h.eq(p["kh"] + 1),
            p["hx"].eq(d.height * p["xw"]), L.xw_m1.eq(p["xw"] - 1),
            L.w_total.eq(Mux(d.depthwise, d.cotiles * p["taps"], d.n_tiles * R)),
            L.nblk_m1.eq(nblk - 1),
            L.last_rows.eq(d.out_width - ((nblk - 1) << lgR)),
        ]
        # the last input column / row any output reads (padded coordinates), and the
        # words a depthwise phase must hold: every block's row-vector reads
        self._last_ix = Signal(signed(cfg.x_bits + 2))
        self._last_iy = Signal(signed(cfg.y_bits + 2))
        self._blk_words = Signal(cfg.w_bits + 2)
        # the output range of out_bits, for the clamp-bound checks
        self._qlo = Signal(signed(ZP_WIDTH + 1))
        self._qhi = Signal(signed(ZP_WIDTH + 1))
        half = (C(1, ZP_WIDTH + 1) << (d.out_bits - 1)[:5])
        m.d.sync += [self._qlo.eq(-half), self._qhi.eq(half - 1)]
        # the last padded input column / row (limits of the two above), so that CHECK2
        # only compares registers
        self._lim_x = Signal.like(d.width - 1 + d.pad_right)
        self._lim_y = Signal.like(d.height - 1 + d.pad_bottom)
        self._dw_width = Signal.like(p["sw"] << (cfg.act_pixels.bit_length() - 1))
        m.d.sync += [self._lim_x.eq(d.width - 1 + d.pad_right),
                     self._lim_y.eq(d.height - 1 + d.pad_bottom),
                     self._dw_width.eq(p["sw"] << (cfg.act_pixels.bit_length() - 1))]
        m.d.sync += [
            self._last_ix.eq(p["ow"] + p["kw"] - d.pad_left),
            self._last_iy.eq(p["oh"] + p["kh"] - d.pad_top),
            self._blk_words.eq(((nblk - 1) << max(0, lgR - lgP)) + cfg.dw_shadow_words),
        ]

    # -- CHECK2: limits, one verdict per condition ------------------------------------
    def _conditions(self):
        cfg = self.cfg
        L, d, p = self.layer, self.layer.desc, self._p

        def out_of(v, hi):
            return (v == 0) | (v > hi)

        ob = d.out_bits
        rq = d.requant != RequantMode.NONE
        common = [
            out_of(d.cotiles, cfg.max_cotiles), out_of(d.height, cfg.max_height),
            out_of(d.width, cfg.max_width), d.out_height == 0, d.out_width == 0,
            out_of(d.stride_h, cfg.max_stride), out_of(d.dil_h, cfg.max_dilation),
            self._last_iy > self._lim_y,
            d.requant.as_value() == 3,
            rq & ((ob < 2) | (ob > min(16, cfg.acc_width)) |
                  (0 if "clamp_order_unchecked" in cfg.faults else d.clamp_lo > d.clamp_hi) |
                  (d.clamp_lo < self._qlo) | (d.clamp_hi > self._qhi)),
            p["xw"] == 0,
            L.w_total > cfg.weight_depth,
        ]
        dense = [
            out_of(d.cwords, cfg.max_cwords), out_of(d.n_tiles, cfg.weight_tiles),
            d.pass_rows == 0,
            out_of(d.kh, cfg.max_kernel), out_of(d.kw, cfg.max_kernel),
            out_of(d.stride_w, cfg.max_stride), out_of(d.dil_w, cfg.max_dilation),
            L.pass_span > cfg.lb_rows, p["acc"] > cfg.acc_depth,
            self._last_ix > self._lim_x,
        ]
        dw = [
            C(int(not cfg.depthwise_mode), 1),
            d.cwords != d.cotiles, out_of(d.cwords, cfg.max_cwords),
            out_of(d.kh, cfg.dw_kernel), out_of(d.kw, cfg.dw_kernel),
            out_of(d.stride_w, cfg.dw_max_stride), d.dil_w != 1,
            d.pad_left != 0, d.pad_right != 0,
            d.width != self._dw_width,
            d.width > cfg.max_width, self._blk_words > d.phase_words,
            L.span_h > cfg.dw_ring_rows,
        ]
        return common + [Mux(d.depthwise, 0, c) for c in dense] + \
            [Mux(d.depthwise, c, 0) for c in dw]
