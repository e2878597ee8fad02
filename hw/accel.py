"""The accelerator's top level: its blocks, wired. Nothing else happens here.

::

  i_desc ──► Control ── layer, start, run, abort ──► every block (each keeps a copy)
  i_param ─► ParamStore ─ word ranges ─► Sequencer ◄─ rows_in ─ LineBuffer ◄─ i_act
                        └─ lane params ─► Accumulator           │ read port
  i_weight ► WeightStore ─► WeightLoader ──────────────┐        ▼
             Sequencer ─ dense elements ─► ElementFetch ─► SystolicArray
                       └ depthwise reads/taps ─► RowVectorLoader ─┘  │ sums / captures
             Sequencer ─ tags ─► Accumulator ◄───────────────────────┘
             Accumulator ─► Requantizer ─► ResultPacker ─► ResultQueue ─► o_result
             Sequencer ◄─ freed credits ─┘     PerfCounters ─► Control ─► o_status

Timing from an element's issue (cycle ``I``) to its result, output always ready:
fetch (:data:`~.fetch.FETCH_LATENCY`), array (``rows`` + :data:`~.array.DENSE_LATENCY`),
accumulator (:data:`~.accumulator.ACC_LATENCY`), requantizer
(:attr:`~.requant.Requantizer.LATENCY`), packer (1), queue (2, Amaranth's buffered
FIFO): :func:`result_latency`.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.lib import stream

from .config import HardwareConfig
from .layouts import (descriptor_layout, param_beat_layout, act_beat_layout,
                      weight_beat_layout, result_beat_layout, status_layout)
from .control import Control
from .params import ParamStore
from .weights import WeightStore, WeightLoader
from .linebuffer import LineBuffer
from .sequencer import Sequencer
from .fetch import ElementFetch, FETCH_LATENCY
from .rowvector import RowVectorLoader
from .array import SystolicArray, DENSE_LATENCY
from .accumulator import Accumulator, ACC_LATENCY
from .requant import Requantizer
from .output import ResultPacker, ResultQueue
from .counters import PerfCounters

__all__ = ["Conv2dAccelerator", "result_latency"]


def result_latency(cfg: HardwareConfig):
    """Cycles from a dense element's issue to its result's handshake (output ready)."""
    return (FETCH_LATENCY + cfg.rows + DENSE_LATENCY + ACC_LATENCY + Requantizer.LATENCY
            + 1 + 2)


class Conv2dAccelerator(wiring.Component):
    """The accelerator; see :mod:`.layouts` for its streams."""

    def __init__(self, cfg: HardwareConfig = HardwareConfig()):
        self.cfg = cfg
        super().__init__({
            "i_desc": In(stream.Signature(descriptor_layout(cfg))),
            "i_param": In(stream.Signature(param_beat_layout(cfg))),
            "i_weight": In(stream.Signature(weight_beat_layout(cfg))),
            "i_act": In(stream.Signature(act_beat_layout(cfg))),
            "o_result": Out(stream.Signature(result_beat_layout(cfg))),
            "o_status": Out(stream.Signature(status_layout(cfg))),
            "active": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        b = dict(ctl=Control(cfg, drain_cycles=result_latency(cfg) + 8, start_copies=5),
                 par=ParamStore(cfg),
                 wst=WeightStore(cfg), wld=WeightLoader(cfg), lb=LineBuffer(cfg),
                 seq=Sequencer(cfg), fetch=ElementFetch(cfg), rv=RowVectorLoader(cfg),
                 arr=SystolicArray(cfg), acc=Accumulator(cfg), rq=Requantizer(cfg),
                 pk=ResultPacker(cfg), q=ResultQueue(cfg), cnt=PerfCounters())
        self.blocks = b                  # for tests that watch a block inside
        for name, blk in b.items():
            m.submodules[name] = blk
        ctl, par, wst, wld, lb, seq = (b[n] for n in ("ctl", "par", "wst", "wld", "lb", "seq"))
        fetch, rv, arr, acc, rq, pk, q, cnt = (b[n] for n in
                                               ("fetch", "rv", "arr", "acc", "rq", "pk", "q", "cnt"))
        layer, desc = ctl.layer, ctl.layer.desc
        # streams
        connect(m, flipped(self.i_desc), ctl.i_desc)
        connect(m, flipped(self.o_status), ctl.o_status)
        connect(m, flipped(self.i_param), par.i_param)
        connect(m, flipped(self.i_weight), wst.i_weight)
        connect(m, flipped(self.i_act), lb.i_act)
        connect(m, flipped(self.o_result), q.o_result)
        # run control
        for i, blk in enumerate((par, wst, lb, seq)):
            m.d.comb += [blk.layer.eq(layer), blk.start.eq(ctl.starts[i]), blk.run.eq(ctl.run),
                         blk.abort.eq(ctl.abort)]
        for blk in (par, wst, lb):
            m.d.comb += blk.begin.eq(ctl.begin)
        m.d.comb += [wld.layer.eq(layer), wld.start.eq(ctl.starts[4]), wld.run.eq(ctl.run),
                     ctl.err.eq(par.err | wst.err | lb.err),
                     ctl.work_done.eq(seq.done & seq.idle_out & par.done & wst.done & lb.done),
                     ctl.drained.eq(seq.idle_out & par.done & wst.done & lb.done),
                     ctl.counters.eq(cnt.values), self.active.eq(ctl.active)]
        # parameters, rows and weights to the sequencer
        m.d.comb += [seq.params_ready.eq(par.ready), par.range_addr.eq(seq.range_addr),
                     seq.range_data.eq(par.range_data), seq.rows_in.eq(lb.rows_in),
                     lb.lo.eq(seq.lo), seq.words_in.eq(wst.words_in),
                     wld.words_in.eq(wst.words_in), wst.rd_addr.eq(wld.rd_addr),
                     wld.rd_data.eq(wst.rd_data), wld.fold_start.eq(seq.fold_start),
                     seq.tile_ready.eq(wld.tile_ready), wld.tap_addr.eq(seq.tap_addr)]
        # front ends
        m.d.comb += [fetch.element.eq(seq.element), fetch.pad_value.eq(desc.pad_value),
                     lb.rd_addr_dense.eq(fetch.rd_addr), fetch.rd_data.eq(lb.rd_data),
                     rv.read.eq(seq.read), rv.op.eq(seq.op.op), rv.ctl.eq(seq.op.ctl),
                     rv.pad_value.eq(desc.pad_value), lb.rd_addr_dw.eq(rv.rd_addr),
                     rv.rd_data.eq(lb.rd_data)]
        # the array
        m.d.comb += [arr.depthwise.eq(desc.depthwise), arr.dense_word.eq(fetch.word),
                     arr.dense_ctl.eq(fetch.ctl), arr.dw_vec.eq(rv.dw_vec),
                     arr.dw_ctl.eq(rv.ctl_out), arr.w_word.eq(wld.w_word),
                     arr.w_shift.eq(wld.w_shift)]
        # accumulator, requantizer, packer, queue
        m.d.comb += [acc.depthwise.eq(desc.depthwise), acc.dense_tag.eq(seq.dense_tag),
                     acc.dw_tag.eq(seq.dw_tag), acc.dense_sums.eq(arr.dense_sums),
                     acc.captures.eq(arr.captures), par.lanes_addr.eq(acc.lanes_addr),
                     acc.lanes_data.eq(par.lanes_data),
                     rq.i_valid.eq(acc.o_valid), rq.i_final.eq(acc.o_final),
                     rq.i_acc.eq(acc.o_acc), rq.i_mult.eq(acc.o_mult), rq.i_shift.eq(acc.o_shift),
                     rq.mode.eq(desc.requant), rq.zp.eq(desc.out_zp),
                     rq.lo.eq(desc.clamp_lo), rq.hi.eq(desc.clamp_hi),
                     pk.i_valid.eq(rq.o_valid), pk.i_final.eq(rq.o_final),
                     pk.i_data.eq(rq.o_data), pk.flush.eq(ctl.abort), pk.mode.eq(desc.requant),
                     pk.out_bits.eq(desc.out_bits),
                     q.i_valid.eq(pk.o_valid), q.i_beat.eq(pk.o_beat), seq.freed.eq(q.freed)]
        # performance counters
        m.d.comb += [cnt.begin.eq(self.i_desc.valid & self.i_desc.ready),
                     cnt.end.eq(q.final_hs), cnt.stop.eq(ctl.o_status.valid),
                     cnt.category.eq(seq.category)]
        return m
