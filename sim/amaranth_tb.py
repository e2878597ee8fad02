"""Drive the accelerator in ``amaranth.sim`` (no compiler): stream helpers and a
whole-invocation runner used by the unit tests.

``stream_put`` / ``stream_get`` follow the stream rules: a producer raises
``valid`` without waiting for ``ready``; optional seeded idle cycles on the
source and back-pressure on the sink.
"""

import random

import numpy as np
from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "words_to_int", "int_to_words", "run_invocation_amaranth"]


def words_to_int(row):
    v = 0
    for i, w in enumerate(row):
        v |= int(w) << (32 * i)
    return v


def int_to_words(v, n):
    return [(v >> (32 * i)) & 0xFFFFFFFF for i in range(n)]


async def stream_put(ctx, stream, payload, *, rng=None, idle=0.0):
    """Send one beat; with ``rng``, insert idle cycles with probability ``idle``."""
    while rng is not None and rng.random() < idle:
        await ctx.tick()
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload.as_value(), payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, rng=None, stall=0.0):
    """Receive one beat as an int; with ``rng``, hold ``ready`` low with probability ``stall``."""
    while True:
        ready = 0 if (rng is not None and rng.random() < stall) else 1
        ctx.set(stream.ready, ready)
        _clk, _rst, payload, valid = await ctx.tick().sample(stream.payload.as_value(), stream.valid)
        if ready and valid:
            ctx.set(stream.ready, 0)
            return int(payload)


def run_invocation_amaranth(dut, inv, *, seed=0, idle=0.0, stall=0.0, max_cycles=200000,
                            vcd=None):
    """Run one :class:`~systolic_conv.streams.Invocation` on ``dut`` in amaranth.sim.

    Returns ``(results (C_out, H_out, W_out), status dict, cycles seen by the bench)``.
    """
    from ..hw import layouts as L
    cfg = inv.cfg
    res_lay = L.result_beat_layout(cfg)
    st_lay = L.status_layout(cfg)
    nres = inv.n_results
    result_ints = []
    status = {}
    clock = {"cycle": 0, "desc": None, "final": None}

    sim = Simulator(dut)
    sim.add_clock(1e-8)

    def feeder(stream, words, salt):
        async def proc(ctx):
            rng = random.Random(seed * 1000 + salt)
            for row in words:
                await stream_put(ctx, stream, words_to_int(row), rng=rng, idle=idle)
        return proc

    async def desc_proc(ctx):
        ctx.set(dut.i_desc.valid, 1)
        ctx.set(dut.i_desc.payload.as_value(), words_to_int(inv.desc_words[0]))
        await ctx.tick().until(dut.i_desc.ready)
        clock["desc"] = clock["cycle"]
        ctx.set(dut.i_desc.valid, 0)

    async def counter(ctx):
        async for _ in ctx.tick():
            clock["cycle"] += 1
            if clock["cycle"] > max_cycles:
                raise TimeoutError(f"watchdog: no status after {max_cycles} cycles "
                                   f"({len(result_ints)}/{nres} results received)")

    async def sink(ctx):
        rng = random.Random(seed * 1000 + 7)
        for i in range(nres):
            v = await stream_get(ctx, dut.o_result, rng=rng, stall=stall)
            result_ints.append(v)
        clock["final"] = clock["cycle"]
        ctx.set(dut.o_status.ready, 1)
        (payload,) = await ctx.tick().sample(dut.o_status.payload.as_value()).until(dut.o_status.valid)
        status.update(L.unpack(st_lay, int(payload)))

    sim.add_process(counter)
    sim.add_testbench(desc_proc, background=True)
    sim.add_testbench(feeder(dut.i_param, inv.param_words, 1), background=True)
    sim.add_testbench(feeder(dut.i_weight, inv.weight_words, 2), background=True)
    sim.add_testbench(feeder(dut.i_act, inv.act_words, 3), background=True)
    sim.add_testbench(sink)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    nw = (res_lay.size + 31) // 32
    words = np.array([int_to_words(v, nw) for v in result_ints], dtype=np.uint32)
    out = inv.unpack_results(words)
    return out, status, clock["final"] - clock["desc"] + 1
