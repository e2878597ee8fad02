"""The sequencer: the two mappings' loop nests and the result credits.

:class:`~.dense_seq.DenseSequencer` and :class:`~.dw_seq.DepthwiseSequencer` each
drive their own front end; this block picks the one the layer uses for what both
produce (the line-buffer release, the counters' category, ``done``) and keeps the
result credits: a credit is one result vector's room in the result queue, taken
before the work that produces it issues and given back as its beat leaves
(``freed``). The queue therefore never overflows and nothing after issue ever
stalls.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig
from .control import layer_layout
from .params import range_layout
from .fetch import element_layout
from .rowvector import read_layout
from .accumulator import tag_layout
from .counters import CATEGORIES
from .dense_seq import DenseSequencer
from .dw_seq import DepthwiseSequencer, dw_op_layout

__all__ = ["Sequencer"]


class Sequencer(wiring.Component):
    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        rbits = cfg.h_bits + cfg.cw_bits + 1
        abits = (cfg.weight_depth - 1).bit_length()
        super().__init__({
            "layer": In(layer_layout(cfg)), "start": In(1), "run": In(1), "abort": In(1),
            "params_ready": In(1),
            "range_addr": Out(cfg.cot_bits), "range_data": In(range_layout(cfg)),
            "rows_in": In(rbits), "lo": Out(rbits),
            "tile_ready": In(1), "fold_start": Out(1),
            "words_in": In(abits + 2), "tap_addr": Out(abits),
            "freed": In(range(cfg.acc_width // 8 + 1)),
            "element": Out(element_layout(cfg)), "dense_tag": Out(tag_layout(cfg)),
            "read": Out(read_layout(cfg)), "op": Out(dw_op_layout()),
            "dw_tag": Out(tag_layout(cfg)),
            "category": Out(len(CATEGORIES)), "done": Out(1), "idle_out": Out(1),
        })
        # the result credits reserved and free (visible to proofs and tests)
        self.reserved = Signal(range(cfg.out_fifo_depth + 1), name="reserved")
        self.free = Signal(range(cfg.out_fifo_depth + 1), name="free", init=cfg.out_fifo_depth)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.dense = dn = DenseSequencer(cfg)
        m.submodules.dw = dw = DepthwiseSequencer(cfg)
        self.loops = {"dense": dn, "dw": dw}         # for tests that watch one inside
        for s in (dn, dw):
            m.d.comb += [s.layer.eq(self.layer), s.start.eq(self.start), s.run.eq(self.run),
                         s.abort.eq(self.abort), s.params_ready.eq(self.params_ready),
                         s.rows_in.eq(self.rows_in)]
        m.d.comb += [
            self.range_addr.eq(dn.range_addr), dn.range_data.eq(self.range_data),
            dn.tile_ready.eq(self.tile_ready), self.fold_start.eq(dn.fold_start),
            dw.words_in.eq(self.words_in), self.tap_addr.eq(dw.tap_addr),
            self.element.eq(dn.element), self.dense_tag.eq(dn.tag),
            self.read.eq(dw.read), self.op.eq(dw.op), self.dw_tag.eq(dw.tag),
        ]
        dwm = Signal(attrs={"keep": 1})  # a copy per block: never merged into one register
        with m.If(self.start):
            m.d.sync += dwm.eq(self.layer.desc.depthwise)
        m.d.comb += [
            self.lo.eq(Mux(dwm, dw.lo, dn.lo)),
            self.category.eq(Mux(dwm, dw.category, dn.category)),
            self.done.eq(Mux(dwm, dw.done, dn.done)),
        ]
        # result credits, in vectors
        depth = cfg.out_fifo_depth
        reserved = self.reserved
        take = Signal(range(cfg.rows + 1))
        free = self.free                              # depth - reserved, kept beside it
        # the update adds what is freed first, then (a late select) what is taken: the
        # issue decision reaches the credit registers through one multiplexer
        take_en = Signal()
        free_nz = Signal(name="free_nz", init=1)     # free != 0, kept beside free
        # bit i: free >= i + 1 (for the depthwise block's credit check), kept beside free
        R = cfg.rows
        free_ge = Signal(R, name="free_ge", init=(1 << min(R, depth)) - 1)

        def ge(val):
            return free_ge.eq(Cat(*(val >= i + 1 for i in range(R))))
        m.d.comb += [
            dn.credit_ok.eq(free_nz),
            dw.credits_ge.eq(free_ge),
            take_en.eq(Mux(dwm, dw.reserve_en, dn.reserve)),
            take.eq(Mux(dwm, dw.reserve_rows, 1)),
        ]
        back = self.freed + dw.unreserve
        res_base = Signal.like(reserved)
        free_base = Signal.like(free)
        m.d.comb += [res_base.eq(reserved - back), free_base.eq(free + back)]
        with m.If(self.start):
            m.d.sync += [reserved.eq(0), free.eq(depth), free_nz.eq(1),
                         free_ge.eq((1 << min(R, depth)) - 1)]
        with m.Elif(take_en):
            if "credit_lost_on_take" in cfg.faults:     # the freed credits not added back
                m.d.sync += [reserved.eq(reserved + take), free.eq(free - take),
                             free_nz.eq(free != take), ge(free - take)]
            else:
                m.d.sync += [reserved.eq(res_base + take), free.eq(free_base - take),
                             free_nz.eq(free_base != take), ge(free_base - take)]
        with m.Else():
            m.d.sync += [reserved.eq(res_base), free.eq(free_base), free_nz.eq(free_base != 0),
                         ge(free_base)]
        m.d.comb += self.idle_out.eq(reserved == 0)
        return m
