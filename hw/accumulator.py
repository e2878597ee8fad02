"""The accumulator: column sums to finished accumulators, with the bias.

Dense mapping: one accumulator memory word (``cols`` accumulators) per output pixel
of a pass. An element's column sums arrive ``rows + 6`` cycles after its tag (the
sequencer's registered token, :data:`DENSE_TAG_DELAY`); the first fold of a tile
adds them to the bias, the others to the memory word, which is read two cycles
earlier and registered. The last fold sends the sum on to the requantizer instead
of writing it back. A pixel's next fold reads its word at least
:data:`MIN_FOLD_PERIOD` cycles after the previous one (the weight loader never
starts folds closer than that), so a read never misses a write.

Depthwise mapping: every drained value is a finished sum (all taps were summed in
its PE); the drain tag names the array row whose capture register holds it, and
the value arrives :data:`DW_TAG_DELAY` cycles after the tag; it gets the bias and
goes on.

Every block-RAM read and the capture multiplexer are registered before the adder;
the adder's output is the register that writes the memory and feeds the
requantizer (``ACC_LATENCY`` cycles after the value's arrival).
"""

from amaranth import *
from amaranth.lib import wiring, data, memory
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig, NO_RW_CHECK
from .layouts import channel_params_layout, MULT_WIDTH, SHIFT_WIDTH

__all__ = ["Accumulator", "tag_layout", "DENSE_TAG_DELAY", "DW_TAG_DELAY", "ACC_LATENCY",
           "MIN_FOLD_PERIOD"]

#: Cycles from a dense element's tag to its column sums at the array's bottom.
DENSE_TAG_DELAY = 6      # + rows
#: Cycles from a depthwise drain tag to the capture register it names.
DW_TAG_DELAY = 7
#: Cycles from a value's arrival to the requantizer's input.
ACC_LATENCY = 2
#: Fewest cycles between two folds' visits of one pixel.
MIN_FOLD_PERIOD = 4


def tag_layout(cfg: HardwareConfig):
    return data.StructLayout({
        "valid": 1,
        "first": 1,          # start from the bias
        "last": 1,           # finished: to the requantizer (else back to memory)
        "final": 1,          # the invocation's final result
        "addr": unsigned(cfg.acc_addr_bits),
        "cotile": unsigned(cfg.cot_bits),
        "row": unsigned(max(1, (cfg.rows - 1).bit_length())),   # depthwise: array row
    })


class Accumulator(wiring.Component):
    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        C, R, pw, aw = cfg.cols, cfg.rows, cfg.psum_width, cfg.acc_width
        super().__init__({
            "depthwise": In(1),
            "dense_tag": In(tag_layout(cfg)), "dw_tag": In(tag_layout(cfg)),
            "dense_sums": In(data.ArrayLayout(signed(pw), C)),
            "captures": In(data.ArrayLayout(data.ArrayLayout(signed(pw), C), R)),
            "lanes_addr": Out(cfg.cot_bits),
            "lanes_data": In(data.ArrayLayout(channel_params_layout(cfg), C)),
            "o_valid": Out(1), "o_final": Out(1),
            "o_acc": Out(data.ArrayLayout(signed(aw), C)),
            "o_mult": Out(data.ArrayLayout(unsigned(MULT_WIDTH), C)),
            "o_shift": Out(data.ArrayLayout(signed(SHIFT_WIDTH), C)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        C, R, pw, aw = cfg.cols, cfg.rows, cfg.psum_width, cfg.acc_width
        faults = cfg.faults
        dwm = Signal()
        m.d.sync += dwm.eq(self.depthwise)
        # tags delayed to the arrival cycle A - 1 (reads), A (value) and A + 1 (add)
        def delayed(tag, n, name):
            for i in range(n):
                nxt = Signal(tag_layout(cfg), name=f"{name}{i}")
                m.d.sync += nxt.eq(tag)
                tag = nxt
            return tag
        t_rd = Signal(tag_layout(cfg))
        m.d.comb += t_rd.eq(Mux(dwm, delayed(self.dw_tag, DW_TAG_DELAY - 1, "dwtag"),
                                delayed(self.dense_tag, R + DENSE_TAG_DELAY - 1, "dtag")))
        t_a = delayed(t_rd, 1, "tag_a")
        t_b = delayed(t_a, 1, "tag_b")

        m.submodules.mem = mem = memory.Memory(shape=data.ArrayLayout(signed(aw), C),
                                               depth=cfg.acc_depth, init=[],
                                               attrs=NO_RW_CHECK)
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [rp.addr.eq(t_rd.addr), self.lanes_addr.eq(t_rd.cotile)]
        # A: register the memory word, the lane parameters and the arriving value
        prev = Signal(data.ArrayLayout(signed(aw), C))
        par = Signal(data.ArrayLayout(channel_params_layout(cfg), C))
        val = Signal(data.ArrayLayout(signed(pw), C))
        caps = Array(self.captures[r] for r in range(R))
        row = t_a.row + 1 if "dw_drain_row_off" in faults else t_a.row
        m.d.sync += [prev.eq(rp.data), par.eq(self.lanes_data),
                     val.eq(Mux(dwm, caps[row[:len(t_a.row)]], self.dense_sums))]
        # A + 1: the sum, which is the write register and the requantizer's input
        total = Signal(data.ArrayLayout(signed(aw), C))
        for c in range(C):
            bias = 0 if "bias_dropped" in faults else par[c].bias
            s = Mux(t_b.first, bias, prev[c]) + val[c]
            m.d.sync += total[c].eq(s[:aw - 1].as_signed() if "acc_bit_cut" in faults else s)
        w_en, w_addr = Signal(), Signal.like(t_b.addr)
        m.d.sync += [w_en.eq(t_b.valid & ~t_b.last), w_addr.eq(t_b.addr),
                     self.o_valid.eq(t_b.valid & t_b.last), self.o_final.eq(t_b.final)]
        for c in range(C):
            m.d.sync += [self.o_mult[c].eq(par[c].mult), self.o_shift[c].eq(par[c].shift)]
        m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(total), wp.en.eq(w_en),
                     self.o_acc.eq(total)]
        return m
