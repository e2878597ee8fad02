"""The ECP5 multiplier primitive, for synthesis.

When the design is elaborated for ECP5 synthesis (a platform with ``ecp5_dsp``
set, :class:`systolic_conv.synth.ECP5Synthesis`), the blocks whose multiplies sit
between registers put those registers inside the ``MULT18X18D``: its input
registers (A every cycle, B with a clock enable) and its output register. Same
function, same latency, but no fabric route between a register and the multiplier
(routes to and from the DSP columns are what limits the clock otherwise).
Simulation elaborates without a platform and uses each block's own description.
"""

from amaranth import *

__all__ = ["use_ecp5_dsp", "dsp_model", "Ecp5Mult"]

WIDTH = 18          # MULT18X18D operands: signed 18 bits


def use_ecp5_dsp(platform):
    return bool(getattr(platform, "ecp5_dsp", False))


def dsp_model(platform):
    """``ecp5_dsp == "model"``: the primitive replaced by a description of what its
    configuration does (registers, sign extension, the 36-bit product), so that the
    ECP5 form of a block can be simulated against its own description."""
    return getattr(platform, "ecp5_dsp", None) == "model"


class Ecp5Mult(Elaboratable):
    """``p`` = ``a * b`` through one MULT18X18D (signed 18 x 18; operands of at most
    18 bits, sign- or zero-extended by their shape). ``a_reg`` / ``b_reg``: the
    operand passes the DSP's input register (``b_en``: its clock enable);
    the product always leaves the output register."""

    def __init__(self, a, b, p, *, a_reg=False, b_reg=False, b_en=1, model=False):
        for name, v in (("a", a), ("b", b)):
            sh = Value.cast(v).shape()
            if sh.width + (0 if sh.signed else 1) > WIDTH:
                raise ValueError(f"{name} of {sh} does not fit a signed {WIDTH}-bit operand")
        self.a, self.b, self.p = a, b, p
        self.a_reg, self.b_reg, self.b_en = a_reg, b_reg, b_en
        self.model = model          # describe the configured primitive (see dsp_model)

    @staticmethod
    def _extend(v):
        v = Value.cast(v)
        fill = v[-1] if v.shape().signed else C(0, 1)
        return Cat(v, *([fill] * (WIDTH - len(v))))

    def elaborate(self, platform):
        m = Module()
        ax, bx = self._extend(self.a), self._extend(self.b)
        pp = Signal(2 * WIDTH)
        if self.model:
            qa, qb = Signal(WIDTH), Signal(WIDTH)
            if self.a_reg:
                m.d.sync += qa.eq(ax)
            else:
                m.d.comb += qa.eq(ax)
            if self.b_reg:
                with m.If(self.b_en):
                    m.d.sync += qb.eq(bx)
            else:
                m.d.comb += qb.eq(bx)
            m.d.sync += pp.eq(qa.as_signed() * qb.as_signed())
            m.d.comb += self.p.eq(pp[:len(self.p)])
            return m
        ports = {f"i_A{i}": ax[i] for i in range(WIDTH)}
        ports.update({f"i_B{i}": bx[i] for i in range(WIDTH)})
        ports.update({f"o_P{i}": pp[i] for i in range(2 * WIDTH)})
        m.submodules.dsp = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="CLK0" if self.a_reg else "NONE", p_REG_INPUTA_CE="CE0",
            p_REG_INPUTA_RST="RST0",
            p_REG_INPUTB_CLK="CLK0" if self.b_reg else "NONE", p_REG_INPUTB_CE="CE1",
            p_REG_INPUTB_RST="RST0",
            p_REG_PIPELINE_CLK="NONE", p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0",
            p_REG_OUTPUT_RST="RST0", p_GSR="DISABLED", p_RESETMODE="SYNC",
            i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
            i_CLK0=ClockSignal(), i_CLK1=0, i_CLK2=0, i_CLK3=0,
            i_CE0=1, i_CE1=self.b_en, i_CE2=1, i_CE3=1,
            i_RST0=0, i_RST1=0, i_RST2=0, i_RST3=0, **ports)
        m.d.comb += self.p.eq(pp[:len(self.p)])
        return m
