"""Performance counters: cycles of one invocation, by category.

Counting starts with the descriptor handshake (``begin``: that cycle counts as
``setup``) and ends with the final result handshake (``end``, counted) or when the
status beat is offered without one (``stop``, an aborted layer; not counted, so
the beat does not change while it waits). Each counted cycle
increments ``cycles`` and the counter of the one category set in ``category``
(:data:`~.layouts.COUNTERS` after ``cycles``); the categories are the other
blocks' business, and the tests check that they sum to ``cycles``.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .layouts import COUNTERS, STATUS_COUNTER_WIDTH

__all__ = ["PerfCounters", "CATEGORIES"]

#: The categories, in the order of the ``category`` bits.
CATEGORIES = COUNTERS[1:]


class PerfCounters(wiring.Component):
    begin: In(1)
    end: In(1)
    stop: In(1)
    category: In(len(CATEGORIES))
    values: Out(data.ArrayLayout(unsigned(STATUS_COUNTER_WIDTH), len(COUNTERS)))

    def elaborate(self, platform):
        m = Module()
        counting = Signal()
        with m.If(self.begin):
            m.d.sync += counting.eq(1)
        with m.Elif(self.end | self.stop):
            m.d.sync += counting.eq(0)
        now = self.begin | (counting & ~self.stop)      # the status beat stays as offered
        with m.If(now):
            m.d.sync += self.values[0].eq(Mux(self.begin, 1, self.values[0] + 1))
        for i in range(len(CATEGORIES)):
            v = self.values[i + 1]
            with m.If(self.begin):
                m.d.sync += v.eq(1 if CATEGORIES[i] == "setup" else 0)
            with m.Elif(counting & ~self.stop & self.category[i]):
                m.d.sync += v.eq(v + 1)
        return m
