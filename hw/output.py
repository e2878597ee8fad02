"""The result path's end: packing results into beats, and the result queue.

:class:`ResultPacker` collects result vectors (one output pixel's ``cols`` values,
``acc_width`` bits each) into ``o_result`` beats of ``cols * acc_width`` bits:
without requantization a beat is one vector; with it the values are cut to 8 bits
(``out_bits <= 8``) or 16 bits and a beat packs ``acc_width // lane_width`` vectors
(:func:`~.layouts.pack_factor`): lane ``c`` of the beat holds channel ``c`` of each
of them, the first in the low bits. A beat leaves when it is full or holds the
invocation's final vector; it carries its vector count for the credits. During an
abort (``flush``) a partly filled beat leaves as it is, so the credits of its
vectors come back and the queue drains (an aborted invocation's results are not
exact and have no final vector).

:class:`ResultQueue` is the result FIFO in front of ``o_result``. The sequencers
reserve a credit per result vector before issuing the work that produces it, so
the queue never overflows and back-pressure stalls the issue instead of losing
data; ``freed`` returns a beat's vectors as it leaves.
"""

from amaranth import *
from amaranth.lib import wiring, stream, data, fifo
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig
from .layouts import RequantMode, result_beat_layout

__all__ = ["ResultPacker", "ResultQueue", "packed_beat_layout"]


def packed_beat_layout(cfg: HardwareConfig):
    """A beat on its way to the queue: the result beat and its vector count."""
    return data.StructLayout({"beat": result_beat_layout(cfg),
                              "count": unsigned((cfg.acc_width // 8).bit_length())})


class ResultPacker(wiring.Component):
    """Ports: ``i_valid``/``i_final``/``i_data`` (a vector per cycle at most),
    ``mode``/``out_bits`` (steady), ``o_valid``/``o_beat`` (a packed beat).

    Packing is along the pixels inside each channel's lane: beat lane ``c``
    (``acc_width`` bits) holds channel ``c`` of the beat's pixels, pixel ``k`` in
    bits ``[k*w, (k+1)*w)`` (``w`` the lane width in use), so a lane's bytes are
    written from a vector's low byte(s) and no wide multiplexer is needed."""

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        super().__init__({
            "i_valid": In(1), "i_final": In(1), "flush": In(1),
            "i_data": In(data.ArrayLayout(signed(cfg.acc_width), cfg.cols)),
            "mode": In(RequantMode), "out_bits": In(5),
            "o_valid": Out(1), "o_beat": Out(packed_beat_layout(cfg)),
        })
        # vectors of the beat being filled (visible to proofs and tests)
        self.count = Signal(range(cfg.acc_width // 8 + 1), name="count")

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        C, aw = cfg.cols, cfg.acc_width
        nbytes = aw // 8
        # the lane width in use, registered from the (steady) mode: 8, 16 or aw bits
        m8, m16 = Signal(), Signal()          # (a width packs only if two values fit a lane)
        m.d.sync += [m8.eq((self.mode != RequantMode.NONE) & (self.out_bits <= 8) & (aw >= 16)),
                     m16.eq((self.mode != RequantMode.NONE) & (self.out_bits > 8) & (aw >= 32))]
        cap16 = aw // 16
        count = self.count
        full = Signal()
        m.d.comb += full.eq(~(m8 | m16) | (m8 & (count == nbytes - 1)) |
                            (m16 & (count == cap16 - 1)))
        lanes = [Signal(aw, name=f"lane{c}") for c in range(C)]
        # each 8-bit piece of every lane: pixel g (8-bit values), half g % 2 of pixel
        # g // 2 (16-bit values) or piece g of the one pixel (full lanes; the last
        # piece holds what is left of acc_width)
        for g in range(-(-aw // 8)):
            hi = min(aw, 8 * g + 8)
            packed = g < nbytes
            en = self.i_valid & (~(m8 | m16) |
                                 ((m8 & (count == g)) if packed else 0) |
                                 ((m16 & (count == g // 2)) if packed and g // 2 < cap16 else 0))
            with m.If(en):
                for c in range(C):
                    v = Value.cast(self.i_data[c])
                    src = v[8 * g:hi]
                    if packed:
                        src = Mux(m8, v[:8], Mux(m16, v[8 * (g % 2):8 * (g % 2) + 8], src))
                    m.d.sync += lanes[c][8 * g:hi].eq(src)
        final = Signal()
        emit = Signal()
        flush = Signal()
        m.d.comb += [emit.eq(self.i_valid & (full | self.i_final)),
                     flush.eq(self.flush & ~self.i_valid & (count != 0))]
        m.d.sync += self.o_valid.eq(emit | flush)
        with m.If(self.i_valid):
            m.d.sync += count.eq(Mux(emit, 0, count + 1))
        # the beat is complete the cycle after its last vector's write
        with m.If(emit):
            m.d.sync += [self.o_beat.count.eq(count + 1), final.eq(self.i_final)]
        with m.If(flush):
            m.d.sync += [self.o_beat.count.eq(count), final.eq(0), count.eq(0)]
        m.d.comb += [self.o_beat.beat.data.eq(Cat(*lanes)),
                     self.o_beat.beat.last.eq(0 if "skipped_last" in cfg.faults else final)]
        return m


class ResultQueue(wiring.Component):
    """Ports: ``i_valid``/``i_beat`` (never when full: credits), ``o_result``,
    ``freed`` (vectors whose beat left this cycle), ``final_hs`` (the beat with
    ``last`` left), ``empty``."""

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        lay = packed_beat_layout(cfg)
        super().__init__({
            "i_valid": In(1), "i_beat": In(lay),
            "o_result": Out(stream.Signature(result_beat_layout(cfg))),
            "freed": Out(lay["count"].shape), "final_hs": Out(1), "empty": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lay = packed_beat_layout(cfg)
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=lay.size, depth=cfg.out_fifo_depth)
        head = Signal(lay)
        m.d.comb += [
            q.w_data.eq(self.i_beat.as_value()), q.w_en.eq(self.i_valid),
            head.eq(q.r_data),
            self.o_result.payload.eq(head.beat), self.o_result.valid.eq(q.r_rdy),
            q.r_en.eq(1 if "result_ready_ignored" in cfg.faults else self.o_result.ready),
        ]
        hs = self.o_result.valid & self.o_result.ready
        # each beat's vector count and last flag also in a small register FIFO beside the
        # block RAM, in the same order: the credits returned and the final handshake
        # come from flip-flops, not from the block RAM's output
        depth = cfg.out_fifo_depth
        cw = len(self.freed)
        side = [Signal(cw + 1, name=f"side{i}") for i in range(depth)]
        wp = Signal(range(depth), name="side_wp")
        rp = Signal(range(depth), name="side_rp")
        with m.If(self.i_valid):
            m.d.sync += [Array(side)[wp].eq(Cat(self.i_beat.count, self.i_beat.beat.last)),
                         wp.eq(Mux(wp == depth - 1, 0, wp + 1))]
        with m.If(hs):
            m.d.sync += rp.eq(Mux(rp == depth - 1, 0, rp + 1))
        # the head entry side[rp] itself in a register, kept beside rp (with this
        # cycle's write bypassed in), so that the credits returned are a register
        # gated by the handshake
        after = [Mux(self.i_valid & (wp == i), Cat(self.i_beat.count, self.i_beat.beat.last),
                     side[i]) for i in range(depth)]
        rp1 = Signal(range(depth), name="side_rp1", init=1 % depth)   # rp + 1, beside rp
        with m.If(hs):
            m.d.sync += rp1.eq(Mux(rp1 == depth - 1, 0, rp1 + 1))
        head_side = Signal(cw + 1, name="side_head")
        m.d.sync += head_side.eq(Mux(hs, Array(after)[rp1], Array(after)[rp]))
        m.d.comb += [self.freed.eq(Mux(hs, head_side[:cw], 0)),
                     self.final_hs.eq(hs & head_side[cw]),
                     self.empty.eq(q.level == 0)]
        return m
