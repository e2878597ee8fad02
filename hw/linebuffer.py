"""The line buffer: activation intake, row slots, and the read port.

One memory of ``lb_rows * max_cwords * (max_width / act_pixels)`` words of
``act_pixels`` pixels x ``rows`` channels, split by pixel into ``act_pixels``
banks, each with its own registered write and read addresses (no register fans out
to every block RAM). An ``i_act`` beat is one word.

Dense mapping: a row is an image row of every input word, written at
``{row % lb_rows, word, column group}`` in arrival order (row, column group, word).
Depthwise mapping: the image is streamed one channel word after the other, and a
row is one row of one word (global row ``word * height + y``), written at
``{row % (lb_rows * max_cwords), column group}``: the same memory as a ring of
single-word rows.

Flow control: row ``r`` may be written while ``r < lo + capacity`` (``lo`` is the
first row the sequencer still needs; ``capacity`` is ``lb_rows`` or the ring's
rows), so a slot is reused as soon as nothing needs it. ``rows_in`` counts
complete rows. Beats are counted against the descriptor (``ACT_SHORT`` /
``ACT_LONG``); a beat past the end is dropped, not written.

Reads: ``rd_addr_dense`` or ``rd_addr_dw`` (by the mapping) presented in cycle
``i`` gives ``rd_data`` (every pixel of the word) in cycle ``i + READ_LATENCY``; a row is readable from the cycle ``rows_in``
counts it.
"""

from amaranth import *
from amaranth.lib import wiring, stream, data, memory
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig, NO_RW_CHECK
from .control import layer_layout
from .layouts import act_beat_layout, ErrorFlag

__all__ = ["LineBuffer", "READ_LATENCY", "addr_bits"]

READ_LATENCY = 3


def addr_bits(cfg):
    return (cfg.lb_depth - 1).bit_length()


class LineBuffer(wiring.Component):
    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        word = data.ArrayLayout(data.ArrayLayout(signed(cfg.data_width), cfg.rows),
                                cfg.act_pixels)
        super().__init__({
            "i_act": In(stream.Signature(act_beat_layout(cfg))),
            "layer": In(layer_layout(cfg)), "begin": In(1), "start": In(1), "run": In(1),
            "abort": In(1), "err": Out(8), "done": Out(1),
            "lo": In(cfg.h_bits + cfg.cw_bits + 1),
            "rows_in": Out(cfg.h_bits + cfg.cw_bits + 1),
            "rd_addr_dense": In(addr_bits(cfg)), "rd_addr_dw": In(addr_bits(cfg)),
            "rd_data": Out(word),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        P, R = cfg.act_pixels, cfg.rows
        ab = addr_bits(cfg)
        xb = (cfg.lb_words - 1).bit_length()
        cb = (cfg.max_cwords - 1).bit_length()
        sb = (cfg.lb_rows - 1).bit_length()
        L, d = self.layer, self.layer.desc
        dwm = Signal(attrs={"keep": 1})  # a copy per block: never merged into one register
        total = Signal.like(L.act_total)
        xw_m1 = Signal.like(L.xw_m1)
        cw_m1 = Signal.like(L.cw_m1)
        short = 1 if "act_count_short" in cfg.faults else 0
        with m.If(self.start):
            m.d.sync += [dwm.eq(d.depthwise), total.eq(L.act_total - short), xw_m1.eq(L.xw_m1),
                         cw_m1.eq(L.cw_m1)]

        # -- intake ------------------------------------------------------------------
        count = Signal(len(total) + 1)
        over = Signal()                              # every expected beat is in
        row = Signal(len(self.rows_in))              # the row being written
        xw = Signal(max(1, xb + 1))
        cw = Signal(max(1, cb + 1))
        # row - capacity, kept beside row: room is one compare with lo
        row_less = Signal(signed(len(row) + 1))
        with m.If(self.start):
            m.d.sync += row_less.eq(Mux(self.begin, 0, row) -
                                    Mux(d.depthwise, cfg.dw_ring_rows, cfg.lb_rows))
        room = Signal()
        m.d.comb += room.eq(self.lo > row_less)
        m.d.comb += self.i_act.ready.eq(self.run & ~self.done & (over | self.abort | room))
        hs = self.i_act.valid & self.i_act.ready
        beat = self.i_act.payload
        # the write, registered before it reaches the banks: each bank has its own copy
        # of the enable and address (kept apart, so no register fans out to every bank)
        w_data = Signal.like(beat.data)
        dense_addr = Cat(xw[:xb], cw[:cb], row[:sb]) if ab else C(0, 0)
        ring_addr = Cat(xw[:xb], row[:sb + cb])
        m.d.sync += w_data.eq(beat.data)
        for p in range(P):
            w_en = Signal(name=f"w_en{p}", attrs={"keep": 1})
            w_addr = Signal(ab, name=f"w_addr{p}", attrs={"keep": 1})
            m.d.sync += [w_en.eq(hs & ~over & ~self.abort),
                         w_addr.eq(Mux(dwm, ring_addr, dense_addr))]
            mem = memory.Memory(shape=data.ArrayLayout(signed(cfg.data_width), R),
                                depth=cfg.lb_depth, init=[], attrs=NO_RW_CHECK)
            m.submodules[f"bank{p}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            ra = Signal(ab, name=f"rd_addr{p}", attrs={"keep": 1})
            q = Signal.like(rp.data, name=f"rd_q{p}")
            m.d.sync += [ra.eq(Mux(dwm, self.rd_addr_dw, self.rd_addr_dense)), q.eq(rp.data)]
            m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(w_data[p * R:(p + 1) * R]),
                         wp.en.eq(w_en), rp.addr.eq(ra), self.rd_data[p].eq(q)]

        last_xw = xw == xw_m1
        last_cw = cw == cw_m1
        with m.If(self.begin):
            m.d.sync += [count.eq(0), over.eq(0), row.eq(0), xw.eq(0), cw.eq(0),
                         self.done.eq(0), self.rows_in.eq(0)]
        with m.Elif(hs):
            m.d.sync += [count.eq(count + 1), over.eq(over | (count + 1 >= total))]
            with m.If(~over):
                # dense: word, then column group, then row; depthwise: column group, row
                row_end = Mux(dwm, last_xw, last_xw & last_cw)
                with m.If(dwm | last_cw):
                    m.d.sync += [cw.eq(0), xw.eq(Mux(last_xw, 0, xw + 1))]
                with m.Else():
                    m.d.sync += cw.eq(cw + 1)
                with m.If(row_end):
                    m.d.sync += [row.eq(row + 1), self.rows_in.eq(row + 1),
                                 row_less.eq(row_less + 1)]
            with m.If(beat.last):
                m.d.sync += self.done.eq(1)
            m.d.comb += self.err.eq(
                Mux(over, ErrorFlag.ACT_LONG, 0) |
                Mux(beat.last & (count + 1 < total), ErrorFlag.ACT_SHORT, 0))
        return m
