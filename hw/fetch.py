"""Dense element fetch: an element's activation word from the line buffer.

The sequencer's element token (registered at issue, cycle ``I``) addresses the line
buffer in cycle ``I + 1``; the word of ``act_pixels`` pixels arrives in ``I + 4``,
where the element's pixel is selected (or the pad value inserted for a padding
position) into a register: the array sees the element and its control in cycle
``I + FETCH_LATENCY``.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig
from .array import row_control_layout
from .linebuffer import addr_bits, READ_LATENCY

__all__ = ["ElementFetch", "element_layout", "FETCH_LATENCY"]

#: Cycles from an element's issue to the array's inputs.
FETCH_LATENCY = 2 + READ_LATENCY


def element_layout(cfg: HardwareConfig):
    """A dense element: where its word is and what the array does with it."""
    return data.StructLayout({
        "ctl": row_control_layout(),
        "addr": unsigned(addr_bits(cfg)),                 # line-buffer word
        "px": unsigned(max(1, (cfg.act_pixels - 1).bit_length())),   # pixel in the word
        "pad": unsigned(1),                               # a padding position
    })


class ElementFetch(wiring.Component):
    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        word = data.ArrayLayout(data.ArrayLayout(signed(cfg.data_width), cfg.rows),
                                cfg.act_pixels)
        super().__init__({
            "element": In(element_layout(cfg)),
            "pad_value": In(signed(cfg.data_width)),
            "rd_addr": Out(addr_bits(cfg)), "rd_data": In(word),
            "word": Out(data.ArrayLayout(signed(cfg.data_width), cfg.rows)),
            "ctl": Out(row_control_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.d.comb += self.rd_addr.eq(self.element.addr)
        # px, pad and the control wait for the read
        el = self.element
        for i in range(READ_LATENCY):
            nxt = Signal.like(el, name=f"el_d{i}")
            m.d.sync += nxt.eq(el)
            el = nxt
        pad_value = Signal.like(self.pad_value)
        m.d.sync += pad_value.eq(0 if "wrong_pad_value" in cfg.faults else self.pad_value)
        words = Array(self.rd_data[p] for p in range(cfg.act_pixels))
        for r in range(cfg.rows):
            m.d.sync += self.word[r].eq(Mux(el.pad, pad_value, words[el.px][r]))
        m.d.sync += self.ctl.eq(el.ctl)
        return m
