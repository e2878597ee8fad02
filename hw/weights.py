"""Weights: the intake of ``i_weight`` into the weight memory, and the loader that
feeds the array's load chain from it.

:class:`WeightStore` writes beats in arrival order (``WEIGHT_SHORT`` /
``WEIGHT_LONG`` against the descriptor, saturating count) and reports
``words_in``, the words readable so far. The memory is split by column, each
column's part with its own registered address, so no address register fans out
to every block RAM; the write is registered too. A read presented on ``rd_addr``
in cycle ``s`` is on ``rd_data`` in cycle ``s + READ_LATENCY``.

:class:`WeightLoader`, dense mapping: tile ``n`` (tiles cycle through
``0..n_tiles-1`` once per pass) is read one word per cycle, row ``rows-1``'s word
first, and shifted down the array's chain, row ``r`` starting ``r`` cycles after
row 0 and all rows stopping together (``w_shift``). A load starts once its words
are in, the previous load is done and the previous tile has been taken by a fold
(``fold_start`` from the sequencer, :data:`LOAD_AFTER_FOLD` cycles earlier at the
least); ``tile_ready`` rises :data:`TILE_READY_AFTER` cycles after the load started
(a fold may then issue its first element, which latches the tile). Depthwise
mapping: every cycle's ``tap_addr`` from the sequencer is read and presented, and
the array shifts and latches every cycle.
"""

from amaranth import *
from amaranth.lib import wiring, stream, data, memory
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig, NO_RW_CHECK
from .control import layer_layout
from .layouts import weight_beat_layout, ErrorFlag

__all__ = ["WeightStore", "WeightLoader", "READ_LATENCY", "LOAD_AFTER_FOLD",
           "tile_ready_after"]

#: Cycles from a read address to its data (address copy, block RAM, data register).
READ_LATENCY = 3
#: A load starts no earlier than this many cycles after the fold that takes the
#: previous tile issued its first element (set by the fetch latency, see accel.py).
LOAD_AFTER_FOLD = 2


def tile_ready_after(cfg):
    """Cycles from a load's start to ``tile_ready``: the last word is in row 0's chain
    register when the next fold's first element latches it. With the load starting
    ``LOAD_AFTER_FOLD`` cycles after the previous fold's first element, folds may
    follow each other every ``max(rows, MIN_FOLD_PERIOD)`` cycles."""
    from .accumulator import MIN_FOLD_PERIOD
    return max(cfg.rows, MIN_FOLD_PERIOD) - LOAD_AFTER_FOLD


class WeightStore(wiring.Component):
    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        abits = (cfg.weight_depth - 1).bit_length()
        super().__init__({
            "i_weight": In(stream.Signature(weight_beat_layout(cfg))),
            "layer": In(layer_layout(cfg)), "begin": In(1), "start": In(1), "run": In(1),
            "abort": In(1), "err": Out(8), "done": Out(1),
            "words_in": Out(abits + 2),
            "rd_addr": In(abits),
            "rd_data": Out(data.ArrayLayout(signed(cfg.data_width), cfg.cols)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        abits = len(self.rd_addr)
        total = Signal.like(self.layer.w_total)
        with m.If(self.start):
            m.d.sync += total.eq(self.layer.w_total)
        count = Signal(len(total) + 1)
        m.d.comb += self.i_weight.ready.eq(self.run & ~self.done)
        hs = self.i_weight.valid & self.i_weight.ready
        inside = count < total
        # the write, registered before it reaches the memories: each column's memory
        # has its own copy of the enable and address (kept apart from the others, so
        # no register fans out to every block RAM); ``w_en``/``w_addr`` is column 0's
        w_data = Signal.like(self.i_weight.payload.data)
        m.d.sync += w_data.eq(self.i_weight.payload.data)
        w_en = w_addr = None
        for c in range(cfg.cols):
            c_en = Signal(name=f"w_en{c}", attrs={"keep": 1})
            c_addr = Signal(abits, name=f"w_addr{c}", attrs={"keep": 1})
            m.d.sync += [c_en.eq(hs & inside & ~self.abort), c_addr.eq(count[:abits])]
            if c == 0:
                w_en, w_addr = c_en, c_addr
            mem = memory.Memory(shape=signed(cfg.data_width), depth=cfg.weight_depth, init=[],
                                attrs=NO_RW_CHECK)
            m.submodules[f"wmem{c}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            a = Signal(abits, name=f"rd_addr{c}", attrs={"keep": 1})
            q = Signal(signed(cfg.data_width), name=f"rd_q{c}")
            m.d.sync += [a.eq(self.rd_addr), q.eq(rp.data)]
            m.d.comb += [wp.addr.eq(c_addr), wp.data.eq(w_data[c]), wp.en.eq(c_en),
                         rp.addr.eq(a), self.rd_data[c].eq(q)]
        with m.If(self.begin):
            m.d.sync += [count.eq(0), self.done.eq(0), self.words_in.eq(0)]
        with m.Else():
            with m.If(hs):
                with m.If(~count.all()):
                    m.d.sync += count.eq(count + 1)
                with m.If(self.i_weight.payload.last):
                    m.d.sync += self.done.eq(1)
                m.d.comb += self.err.eq(
                    Mux(~inside, ErrorFlag.WEIGHT_LONG, 0) |
                    Mux(self.i_weight.payload.last & (count + 1 < total), ErrorFlag.WEIGHT_SHORT, 0))
            # a word is readable once its registered write has landed
            m.d.sync += self.words_in.eq(Mux(w_en, w_addr + 1, self.words_in))
        return m


class WeightLoader(wiring.Component):
    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        abits = (cfg.weight_depth - 1).bit_length()
        super().__init__({
            "layer": In(layer_layout(cfg)), "start": In(1), "run": In(1),
            "words_in": In(abits + 2),
            "rd_addr": Out(abits), "rd_data": In(data.ArrayLayout(signed(cfg.data_width), cfg.cols)),
            "fold_start": In(1), "tile_ready": Out(1),
            "tap_addr": In(abits),
            "w_word": Out(data.ArrayLayout(signed(cfg.data_width), cfg.cols)),
            "w_shift": Out(cfg.rows),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R = cfg.rows
        abits = len(self.rd_addr)
        d = self.layer.desc
        n_tiles = Signal.like(d.n_tiles)
        dwm = Signal(attrs={"keep": 1})  # a copy per block: never merged into one register
        with m.If(self.start):
            m.d.sync += [n_tiles.eq(d.n_tiles), dwm.eq(d.depthwise)]
        tile = Signal(len(n_tiles))            # the tile the next load reads
        base = Signal(abits + 1)               # its first word
        k = Signal(range(R))                   # the word of the load being read
        busy = Signal()                        # words 1..R-1 of a load are being read
        pending = Signal()                     # a load started; its tile not yet taken
        hold = Signal(range(LOAD_AFTER_FOLD))       # cycles until a load may start
        ready_cnt = Signal(range(tile_ready_after(cfg) + 1))
        need = Signal(abits + 2)               # base + R, kept beside base
        last_tile = Signal()                   # tile == n_tiles - 1, kept beside tile
        go = Signal()
        m.d.comb += go.eq(self.run & ~dwm & ~busy & ~pending & (hold == 0) &
                          (self.words_in >= need))
        # read addresses: row R-1's word first
        with m.If(dwm):
            m.d.comb += self.rd_addr.eq(self.tap_addr)
        with m.Else():
            if "swapped_weight_rows" in cfg.faults:
                m.d.comb += self.rd_addr.eq(base + k)
            else:
                m.d.comb += self.rd_addr.eq(base + (R - 1) - k)
        with m.If(self.start):
            m.d.sync += [tile.eq(0), base.eq(0), k.eq(0), busy.eq(0), pending.eq(0),
                         hold.eq(0), self.tile_ready.eq(0), ready_cnt.eq(0), need.eq(R),
                         last_tile.eq(d.n_tiles == 1)]
        with m.Else():
            with m.If(go | busy):
                with m.If(k == R - 1):
                    m.d.sync += [k.eq(0), busy.eq(0), tile.eq(Mux(last_tile, 0, tile + 1)),
                                 base.eq(Mux(last_tile, 0, base + R)),
                                 need.eq(Mux(last_tile, R, need + R)),
                                 last_tile.eq(Mux(last_tile, n_tiles == 1, tile + 2 == n_tiles))]
                with m.Else():
                    m.d.sync += [k.eq(k + 1), busy.eq(1)]
            # tile_ready rises tile_ready_after cycles after go
            tra = tile_ready_after(cfg)
            if "tile_ready_early" in cfg.faults:
                tra = max(1, tra - 2)
            with m.If(go):
                m.d.sync += [pending.eq(1), ready_cnt.eq(tra - 1)]
                if tra == 1:
                    m.d.sync += self.tile_ready.eq(1)
            with m.Elif(ready_cnt != 0):
                m.d.sync += ready_cnt.eq(ready_cnt - 1)
                with m.If(ready_cnt == 1):
                    m.d.sync += self.tile_ready.eq(1)
            # a load may start LOAD_AFTER_FOLD cycles after the fold taking the tile
            with m.If(self.fold_start):
                m.d.sync += [self.tile_ready.eq(0), pending.eq(0),
                             hold.eq(LOAD_AFTER_FOLD - 1)]
            with m.Elif(hold != 0):
                m.d.sync += hold.eq(hold - 1)
        # the shift enables, aligned with the words at the array (READ_LATENCY later):
        # row r shifts while words r .. R-1 of a load pass (word k is row R-1-k's)
        shift_now = Signal(R)
        reading = (go | busy) & ~dwm
        for r in range(R):
            m.d.comb += shift_now[r].eq(reading & (k >= r) if r else reading)
        pipe = shift_now
        for i in range(READ_LATENCY):
            nxt = Signal(R, name=f"wshift_d{i}")
            m.d.sync += nxt.eq(pipe)
            pipe = nxt
        m.d.comb += [self.w_shift.eq(pipe), self.w_word.eq(self.rd_data)]
        return m
