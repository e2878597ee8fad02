"""Depthwise front end: the row vector every array row takes its activations from.

A depthwise block is ``rows`` neighbouring output pixels; a group of its taps (one
kernel row and one column phase) needs ``rows + taps - 1`` neighbouring pixels of
one (phase of an) input row, the *row vector*. The sequencer reads them from the
line buffer, one word of ``act_pixels`` pixels per read, into the shadow register
(a padding row's words are the pad value instead); a group's first tap copies the
shadow into the vector register ``E`` (*load*) and each further tap shifts ``E``
by one pixel (*shift*), so array row ``r`` always takes ``E[r]``: no multiplexer
between the pixels and the rows.

Timing (cycles counted from the sequencer's decision): a read decided in cycle
``i`` writes its shadow word at the end of cycle ``i + 4``; a tap decided in cycle
``s`` loads or shifts ``E`` at the end of cycle ``s + 4`` (:data:`OP_DELAY`), so the
array sees it in ``s + 5``, a cycle after the tap's weights. Hence a group's
reads may begin in the cycle its predecessor's first tap is decided, and its first
tap may be decided in the cycle after its last read.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig
from .linebuffer import addr_bits, READ_LATENCY
from .array import row_control_layout

__all__ = ["RowVectorLoader", "read_layout", "op_layout", "OP_DELAY"]

#: Cycles from a tap's decision to its load / shift of the vector register.
OP_DELAY = 1 + READ_LATENCY


def read_layout(cfg: HardwareConfig):
    return data.StructLayout({
        "valid": 1,
        "addr": unsigned(addr_bits(cfg)),
        "slot": unsigned(max(1, (cfg.dw_shadow_words - 1).bit_length())),
        "pad": 1,
    })


def op_layout():
    return data.StructLayout({"load": 1, "shift": 1})


class RowVectorLoader(wiring.Component):
    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        dw, R, P = cfg.data_width, cfg.rows, cfg.act_pixels
        vec = data.ArrayLayout(signed(dw), R)
        super().__init__({
            "read": In(read_layout(cfg)),           # the sequencer's registered read token
            "op": In(op_layout()),                  # the sequencer's registered tap op
            "ctl": In(row_control_layout()),        # and the tap's array control
            "pad_value": In(signed(dw)),
            "rd_addr": Out(addr_bits(cfg)),
            "rd_data": In(data.ArrayLayout(vec, P)),
            "dw_vec": Out(data.ArrayLayout(vec, R)),
            "ctl_out": Out(row_control_layout()),   # the control, with dw_vec
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        dw, R, P = cfg.data_width, cfg.rows, cfg.act_pixels
        vec = data.ArrayLayout(signed(dw), R)
        m.d.comb += self.rd_addr.eq(self.read.addr)
        rd = self.read
        for i in range(READ_LATENCY):
            nxt = Signal.like(rd, name=f"rd_d{i}")
            m.d.sync += nxt.eq(rd)
            rd = nxt
        op = self.op
        for i in range(READ_LATENCY):
            nxt = Signal.like(op, name=f"op_d{i}")
            m.d.sync += nxt.eq(op)
            op = nxt
        ctl = self.ctl
        for i in range(READ_LATENCY + 1):
            nxt = Signal.like(ctl, name=f"ctl_d{i}")
            m.d.sync += nxt.eq(ctl)
            ctl = nxt
        m.d.comb += self.ctl_out.eq(ctl)
        pad = Signal(vec)
        for c in range(R):
            m.d.sync += pad[c].eq(self.pad_value)
        shadow = [Signal(vec, name=f"shadow{i}") for i in range(cfg.dw_shadow_words * P)]
        for w in range(cfg.dw_shadow_words):
            with m.If(rd.valid & (rd.slot == w)):
                for p in range(P):
                    m.d.sync += shadow[w * P + p].eq(Mux(rd.pad, pad, self.rd_data[p]))
        n = cfg.dw_vector
        e = [Signal(vec, name=f"vec{i}") for i in range(n)]
        for i in range(n):
            with m.If(op.load):
                m.d.sync += e[i].eq(shadow[i])
            with m.Elif(op.shift if "dw_shift_skipped" not in cfg.faults else 0):
                m.d.sync += e[i].eq(e[i + 1] if i + 1 < n else e[i])
        for r in range(R):
            m.d.comb += self.dw_vec[r].eq(e[r])
        return m
