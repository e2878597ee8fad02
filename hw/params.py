"""Tile parameters: intake of ``i_param`` and the two memories it fills.

One beat per output-channel tile (``cotiles`` beats): each lane's bias, multiplier
and shift, and the tile's input-word range (dense mapping). The intake counts beats
against the descriptor (``PARAM_SHORT`` / ``PARAM_LONG``; the count saturates, so a
stream of any length cannot wrap it onto earlier tiles) and checks every beat:
a word range outside ``cwords`` or empty, the dense tiles' total against
``n_tiles``, and each lane's shift (and half_up's multiplier) against its
requantization mode (``BAD_PARAM``). ``ready`` rises once every beat is in and
checked.

Reads: ``range_*`` (the sequencer: a tile's word range) and ``lanes_*`` (the
accumulator: a tile's lane parameters), each a registered read, one cycle.
"""

from amaranth import *
from amaranth.lib import wiring, stream, data, memory
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig
from .control import layer_layout
from .layouts import param_beat_layout, channel_params_layout, RequantMode, ErrorFlag

__all__ = ["ParamStore", "range_layout"]


def range_layout(cfg):
    return data.StructLayout({"first": unsigned(cfg.cw_bits), "last": unsigned(cfg.cw_bits)})


class ParamStore(wiring.Component):
    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        super().__init__({
            "i_param": In(stream.Signature(param_beat_layout(cfg))),
            "layer": In(layer_layout(cfg)), "begin": In(1), "start": In(1), "run": In(1),
            "abort": In(1), "err": Out(8), "ready": Out(1), "done": Out(1),
            "range_addr": In(cfg.cot_bits), "range_data": Out(range_layout(cfg)),
            "lanes_addr": In(cfg.cot_bits),
            "lanes_data": Out(data.ArrayLayout(channel_params_layout(cfg), cfg.cols)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        C = cfg.cols
        lanes_shape = data.ArrayLayout(channel_params_layout(cfg), C)
        m.submodules.lanes = lanes = memory.Memory(shape=lanes_shape, depth=cfg.max_cotiles,
                                                   init=[])
        m.submodules.ranges = ranges = memory.Memory(shape=range_layout(cfg),
                                                     depth=cfg.max_cotiles, init=[])
        lw, lr = lanes.write_port(), lanes.read_port()
        rw, rr = ranges.write_port(), ranges.read_port()
        m.d.comb += [lr.addr.eq(self.lanes_addr), self.lanes_data.eq(lr.data),
                     rr.addr.eq(self.range_addr), self.range_data.eq(rr.data)]

        # the fields used here, registered at start
        d = self.layer.desc
        cotiles = Signal.like(d.cotiles)
        cwords = Signal.like(d.cwords)
        taps = Signal.like(self.layer.taps)
        n_tiles = Signal.like(d.n_tiles)
        dwm = Signal(attrs={"keep": 1})  # a copy per block: never merged into one register
        mode = Signal(RequantMode)
        with m.If(self.start):
            m.d.sync += [cotiles.eq(d.cotiles), cwords.eq(d.cwords), taps.eq(self.layer.taps),
                         n_tiles.eq(d.n_tiles), dwm.eq(d.depthwise), mode.eq(d.requant)]

        count = Signal(cfg.cot_bits + 1)         # beats taken, saturating
        words = Signal(cfg.cot_bits + cfg.cw_bits + 1)   # sum of the tiles' word counts
        checked = Signal()
        m.d.comb += self.i_param.ready.eq(self.run & ~self.done)
        hs = self.i_param.valid & self.i_param.ready
        beat = self.i_param.payload
        inside = count < cotiles
        m.d.comb += [
            lw.addr.eq(count), lw.data.eq(beat.data.lanes),
            rw.addr.eq(count), rw.data.first.eq(beat.data.cw_first),
            rw.data.last.eq(beat.data.cw_first + beat.data.cw_count - 1),
            lw.en.eq(hs & inside & ~self.abort), rw.en.eq(hs & inside & ~self.abort),
        ]
        bad = Signal()
        m.d.comb += bad.eq(self._beat_bad(beat.data, cwords, dwm, mode))
        with m.If(self.begin):
            m.d.sync += [count.eq(0), words.eq(0), self.done.eq(0), checked.eq(0)]
        with m.Elif(hs):
            with m.If(~count.all() | ("param_count_wraps" in cfg.faults)):
                m.d.sync += count.eq(count + 1)
            with m.If(inside):
                m.d.sync += words.eq(words + beat.data.cw_count)
            with m.If(beat.last):
                m.d.sync += self.done.eq(1)
        with m.If(hs):
            m.d.comb += [
                self.err.eq(Mux(inside & bad, ErrorFlag.BAD_PARAM, 0) |
                            Mux(~inside, ErrorFlag.PARAM_LONG, 0) |
                            Mux(beat.last & (count + 1 < cotiles), ErrorFlag.PARAM_SHORT, 0)),
            ]
        # once every beat is in: the dense tiles' total against n_tiles
        total = Signal(len(words) + len(taps))
        done_d = Signal()                        # total is registered: check a cycle late
        m.d.sync += [total.eq(words * taps), done_d.eq(self.done & ~self.begin)]
        with m.If(done_d & ~checked & self.run):
            m.d.sync += checked.eq(1)
            with m.If(~dwm & (total != n_tiles)):
                m.d.comb += self.err.eq(ErrorFlag.BAD_PARAM)
        m.d.comb += self.ready.eq(checked)
        return m

    def _beat_bad(self, beat, cwords, dwm, mode):
        cfg = self.cfg
        rng = (beat.cw_count == 0) | (beat.cw_first + beat.cw_count > cwords)
        lanes = []
        for c in range(cfg.cols):
            p = beat.lanes[c]
            tfl = (p.shift < -31) | (p.shift > 31)
            hup = (p.shift < 0) | (p.shift > 47) | (p.mult >= (1 << 16))
            lanes.append(Mux(mode == RequantMode.TFLITE, tfl,
                             Mux(mode == RequantMode.HALF_UP, hup, 0)))
        return (~dwm & rng) | Cat(*lanes).any()
