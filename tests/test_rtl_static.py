"""The committed rtl/ matches the generator, and Verilator lint passes with only
the documented, targeted waivers below."""

import pathlib
import subprocess

import pytest

from systolic_conv.hw.config import DEFAULT
from systolic_conv.hw.gen import generate_verilog, TOP_NAME
from systolic_conv.sim.toolchain import setup_verilator

RTL = pathlib.Path(__file__).resolve().parent.parent / "rtl" / f"{TOP_NAME}.v"

# Waivers, each for a pattern of Amaranth's generated Verilog, not of our design:
LINT_WAIVERS = {
    "PROCASSINIT": "registers get their reset value in the declaration and are assigned in always blocks",
    "UNUSEDSIGNAL": "intermediate wires of which only some bits are used (slices of arithmetic results)",
    "WIDTHEXPAND": "operands are extended explicitly by Amaranth's width rules",
    "WIDTHTRUNC": "results are truncated explicitly by Amaranth's width rules",
    "CASEINCOMPLETE": "case statements follow a default assignment instead of a default branch",
    "DECLFILENAME": "one file holds every module of the design",
    "ALWNEVER": "an always @* block assigning a constant (tied-off signal)",
    "CMPCONST": "range checks of descriptor fields whose width equals the limit (always false)",
}


def test_committed_rtl_is_fresh():
    assert RTL.exists(), "rtl/ is missing: run `make rtl`"
    assert RTL.read_text() == generate_verilog(DEFAULT), "rtl/ is stale: run `make rtl`"


def test_faults_are_off_in_committed_rtl():
    assert '"faults": []' in RTL.read_text().splitlines()[1]


@pytest.mark.rtl
def test_verilator_lint_wall_with_targeted_waivers():
    exe = setup_verilator()
    cmd = [exe, "--lint-only", "-Wall", str(RTL), "--top-module", TOP_NAME]
    cmd += [f"-Wno-{w}" for w in LINT_WAIVERS]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "%Warning" not in run.stderr, run.stderr[-3000:]
