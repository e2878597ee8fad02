"""The ECP5 form of the blocks that use the DSP primitive (``hw/dsp.py``) against
their own description: the primitive replaced by a description of its configured
registers and 36-bit signed product, random stimulus, every output equal every
cycle."""

import random

import pytest
from amaranth import Elaboratable, Module
from amaranth.sim import Simulator

from systolic_conv.hw.array import ProcessingElement
from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.dsp import Ecp5Mult
from systolic_conv.hw.layouts import RequantMode
from systolic_conv.hw.requant import Requantizer
from systolic_conv.synth import wrapper_verilog


class _ModelPlatform:
    ecp5_dsp = "model"


class _Pair(Elaboratable):
    """Two instances of one block, the second elaborated for the ECP5 form."""

    def __init__(self, make):
        self.ref, self.dsp = make(), make()

    def elaborate(self, platform):
        m = Module()
        m.submodules.ref = self.ref
        m.submodules.dsp = _WithPlatform(self.dsp, _ModelPlatform())
        return m


class _WithPlatform(Elaboratable):
    def __init__(self, inner, platform):
        self.inner, self.platform = inner, platform

    def elaborate(self, platform):
        return self.inner.elaborate(self.platform)


def _run(pair, inputs, outputs, draw, cycles, seed):
    rng = random.Random(seed)
    mism = []

    async def bench(ctx):
        for cyc in range(cycles):
            for name in inputs:
                v = draw(rng, name)
                ctx.set(getattr(pair.ref, name), v)
                ctx.set(getattr(pair.dsp, name), v)
            await ctx.tick()
            for name in outputs:
                a = ctx.get(getattr(pair.ref, name))
                b = ctx.get(getattr(pair.dsp, name))
                if a != b:
                    mism.append((cyc, name, a, b))
    sim = Simulator(pair)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return mism


@pytest.mark.parametrize("seed", [1, 2])
def test_pe_ecp5_form_equals_description(seed):
    pair = _Pair(lambda: ProcessingElement(8, 24))

    def draw(rng, name):
        if name in ("a", "w_in", "psum_in"):
            bits = 24 if name == "psum_in" else 8
            return rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1))
        return rng.random() < 0.5
    mism = _run(pair, ["a", "w_in", "shift", "latch", "psum_in", "os", "acc_en", "first",
                       "cap"], ["psum", "capture", "shadow"], draw, 400, seed)
    assert not mism, mism[:5]


def test_requantizer_ecp5_form_equals_description():
    cfg = HardwareConfig(rows=4, cols=2)
    pair = _Pair(lambda: Requantizer(cfg))
    modes = [RequantMode.TFLITE, RequantMode.HALF_UP, RequantMode.NONE]

    def draw(rng, name):
        if name == "i_acc":
            return [rng.randrange(-(1 << 31), 1 << 31) for _ in range(cfg.cols)]
        if name == "i_mult":
            return [rng.randrange(0, 1 << 31) for _ in range(cfg.cols)]
        if name == "i_shift":
            return [rng.randrange(-31, 48) for _ in range(cfg.cols)]
        if name in ("i_valid", "i_final"):
            return rng.random() < 0.7
        return 0
    state = {"mode": modes[0]}

    # the steady inputs change rarely (their contract: steady during an invocation)
    def draw_all(rng, name):
        if name == "mode":
            if rng.random() < 0.02:
                state["mode"] = rng.choice(modes)
            return state["mode"]
        if name == "zp":
            return 3
        if name == "lo":
            return -128
        if name == "hi":
            return 127
        return draw(rng, name)
    mism = _run(pair, ["i_valid", "i_final", "i_acc", "i_mult", "i_shift", "mode", "zp", "lo",
                       "hi"], ["o_valid", "o_data"], draw_all, 600, 7)
    assert not mism, mism[:5]


def test_ecp5_form_in_synthesis_verilog():
    """The synthesis netlist of the array and the requantizer has the primitive with
    the registers described (A, B with its enable, output), one per multiply."""
    cfg = HardwareConfig(rows=4, cols=4)
    v = wrapper_verilog(cfg, wrapper=False, block="array")
    assert v.count("MULT18X18D") == cfg.rows * cfg.cols
    assert '.REG_INPUTB_CLK("CLK0")' in v and '.REG_OUTPUT_CLK("CLK0")' in v
    v = wrapper_verilog(cfg, wrapper=False, block="requantizer")
    assert v.count("MULT18X18D") == 8 * cfg.cols


def test_operand_wider_than_the_dsp_is_refused():
    from amaranth import Signal, signed
    with pytest.raises(ValueError, match="does not fit"):
        Ecp5Mult(Signal(signed(19)), Signal(8), Signal(27))
