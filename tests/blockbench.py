"""Shared pieces of the per-block amaranth.sim tests (tests/test_hw_*.py).

Every block test is a cycle-by-cycle bench: in each cycle the bench sets the
block's inputs, reads its outputs (the combinational view of that cycle) and
ticks. Streams are driven with random idle cycles between beats (a beat, once
offered, stays offered until it is taken) and drained with random back-pressure.
Randomness comes from one seed per test, printed and appended to any assertion
message; ``BLOCKTEST_SEED=n`` replaces every test's seed to explore others.
"""

import os
import random
from contextlib import contextmanager

from amaranth.sim import Simulator

__all__ = ["seeded", "simulate", "Source", "Sink", "wrap", "mask", "layer_value", "scramble",
           "drains_after_rejected_descriptor"]


@contextmanager
def seeded(seed):
    """Yield ``random.Random(seed)``; the seed is printed and added to failures."""
    seed = int(os.environ.get("BLOCKTEST_SEED", seed))
    print(f"seed={seed}")
    try:
        yield random.Random(seed)
    except AssertionError as exc:
        raise AssertionError(f"{exc} [seed={seed}]") from exc


def simulate(dut, step, cycles):
    """Call ``step(ctx, t)`` once per cycle for at most ``cycles`` cycles; ``step``
    sets the inputs, reads the outputs and returns True to stop. Returns the number
    of cycles run."""
    ran = {"n": 0}

    async def bench(ctx):
        for t in range(cycles):
            ran["n"] = t + 1
            if step(ctx, t):
                return
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return ran["n"]


def mask(width):
    return (1 << width) - 1


def wrap(value, width):
    """``value`` as a ``width``-bit two's-complement integer."""
    value &= mask(width)
    return value - (1 << width) if value >> (width - 1) else value


def layer_value(cfg, desc, **figures):
    """The ``layer`` port's value (:func:`~systolic_conv.hw.control.layer_layout`) for
    the descriptor fields in ``desc`` and the derived figures in ``figures`` (every
    field not named is zero)."""
    from systolic_conv.hw.control import layer_layout
    from systolic_conv.hw.layouts import pack
    return pack(layer_layout(cfg), {"desc": desc, **figures})


def scramble(cfg, rng):
    """A random ``layer`` value: blocks keep their own copy from ``start`` on, so the
    benches drive this between start pulses."""
    from systolic_conv.hw.control import layer_layout
    return rng.getrandbits(layer_layout(cfg).size)


class Source:
    """One stream producer: offers ``beats`` (ints of the whole payload) in order,
    each after a random number of idle cycles (probability ``idle`` per cycle), and
    holds it until the handshake. Call :meth:`drive` before reading outputs and
    :meth:`taken` after; ``handshakes`` lists ``(cycle, index)``."""

    def __init__(self, stream, beats, rng, idle=0.3):
        self.stream, self.beats, self.rng, self.idle = stream, list(beats), rng, idle
        self.index = 0
        self.offered = False
        self.handshakes = []

    @property
    def finished(self):
        return self.index >= len(self.beats)

    def drive(self, ctx):
        if not self.offered and not self.finished and self.rng.random() >= self.idle:
            ctx.set(self.stream.payload.as_value(), self.beats[self.index])
            self.offered = True
        ctx.set(self.stream.valid, int(self.offered))

    def taken(self, ctx, t):
        """The index of the beat taken in cycle ``t``, or None."""
        if self.offered and ctx.get(self.stream.ready):
            self.handshakes.append((t, self.index))
            self.index += 1
            self.offered = False
            return self.index - 1
        return None


class Sink:
    """One stream consumer with random back-pressure (``ready`` low with
    probability ``stall``). Call :meth:`drive` before reading outputs and
    :meth:`taken` after; ``beats`` lists ``(cycle, payload int)``."""

    def __init__(self, stream, rng, stall=0.3):
        self.stream, self.rng, self.stall = stream, rng, stall
        self.ready = 0
        self.beats = []

    def drive(self, ctx, enable=True):
        self.ready = int(enable and self.rng.random() >= self.stall)
        ctx.set(self.stream.ready, self.ready)

    def taken(self, ctx, t):
        if self.ready and ctx.get(self.stream.valid):
            payload = int(ctx.get(self.stream.payload.as_value()))
            self.beats.append((t, payload))
            return payload
        return None


def drains_after_rejected_descriptor(dut, stream, layer, beat):
    """An intake block after one completed layer, then a rejected descriptor (its
    handshake pulses ``begin``, then Control goes CHECK -> ABORT: ``run`` and ``abort``
    high, no ``start``): returns whether
    the block took a ``last`` beat offered during 12 ABORT cycles. Control's
    contract: ABORT lets the intake blocks drain their streams up to ``last``."""
    phases = (["start"] + ["run"] * 8 + ["idle"] * 4 + ["begin"] + ["idle"] * 3 +
              ["abort"] * 12)
    taken = {"first": False, "abort": False}

    def step(ctx, t):
        if t >= len(phases):
            return True
        ph = phases[t]
        ctx.set(dut.start, int(ph == "start"))
        ctx.set(dut.begin, int(ph in ("start", "begin")))
        ctx.set(dut.run, int(ph in ("run", "abort")))
        ctx.set(dut.abort, int(ph == "abort"))
        ctx.set(dut.layer.as_value(), layer)
        offer = (ph == "run" and not taken["first"]) or (ph == "abort" and not taken["abort"])
        ctx.set(stream.valid, int(offer))
        ctx.set(stream.payload.as_value(), beat)
        if offer and ctx.get(stream.ready):
            taken["first" if ph == "run" else "abort"] = True
        return False

    simulate(dut, step, len(phases) + 1)
    assert taken["first"], "the first layer's only beat was not taken"
    return taken["abort"]
