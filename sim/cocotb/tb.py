"""cocotb testbench parts for the accelerator, and the environment that runs
layers on a DUT.

Parts (cocotb ``examples/matrix_multiplier`` style: driver, monitor, model,
checker):

* :class:`StreamSource` -- drives one input stream from a queue of packed beats
  (ints packed through the layouts by the host library), idling by a seeded
  gate (random probability or an ``itertools.cycle`` pattern); holds ``valid``
  and the payload until the beat is accepted, and puts junk on the payload while
  idle;
* :class:`StreamSink` -- the result and status monitors: ready by a gate
  (back-pressure), capture of accepted beats;
* :class:`~.checkers.StreamChecker` on all six streams and a
  :class:`~.checkers.FramingChecker` on the outputs;
* :class:`~.scoreboard.Scoreboard` -- in order, against the golden model;
* :class:`DesignMonitor` -- design-side coverage sampled from the DUT every cycle
  (control FSM state and transitions, result queue level, result credits,
  back-pressure, error flags in status beats): the ``dut`` part of a layer's
  coverage sample (:mod:`.coverage`);
* a cycle watchdog on every wait, naming the layer and the invocation/tile.

Timing: one coroutine steps the clock. Each cycle it drives at the falling edge
and samples at ``ReadOnly`` after it, where the values are the ones the next
rising edge sees, on Verilator and Icarus alike; a handshake at that edge
belongs to cycle ``self.cycle``. Per-cycle Python is what bounds cocotb's speed,
so the parts are methods called from this one loop instead of one coroutine
each (two triggers per cycle in total).
"""

import os
import random
from types import SimpleNamespace

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from ...hw import layouts as L
from .checkers import StreamChecker, FramingChecker, ProtocolError
from .scoreboard import Scoreboard, InvocationRecord
from .layers import StallSpec, estimate_cycles
from .coverage import FSM_ENCODING, FSM_TRANSITIONS, DUT_AXES

__all__ = ["StreamSource", "StreamSink", "ConvEnv", "WatchdogTimeout", "LayerResult",
           "DesignMonitor"]

INPUTS = ("i_desc", "i_param", "i_weight", "i_act")


class WatchdogTimeout(AssertionError):
    pass


def _bit(handle, cycle, what):
    """The value of a one-bit control signal; X/Z is a protocol error naming it."""
    v, ok = _val(handle)
    if not ok:
        raise ProtocolError(f"cycle {cycle}: {what} is X/Z")
    return bool(v)


def _val(handle):
    """(int value, resolvable) of a handle."""
    v = handle.value
    try:
        return int(v), True
    except ValueError:
        return 0, False


class StreamSource:
    """Driver of one input stream."""

    def __init__(self, dut, name, *, junk_seed=0):
        self.name = name
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.width = len(self.payload)
        self.queue = []
        self.pos = 0
        self.offering = False
        self.valid_now = False
        self.gate = iter(lambda: True, None)
        self.junk = random.Random(junk_seed)
        self.checker = StreamChecker(name, producer="testbench")
        self.accepted = 0

    def load(self, beats):
        self.queue.extend(beats)

    def left(self):
        return len(self.queue) - self.pos

    def flush(self):
        self.queue, self.pos, self.offering = [], 0, False
        self.checker.reset()

    def drive(self):
        """Falling edge: offer the next beat, keep offering, or idle."""
        if self.offering:
            return
        if self.pos < len(self.queue) and next(self.gate):
            self.payload.value = self.queue[self.pos]
            self.offering = True
            if not self.valid_now:
                self.valid.value = 1
                self.valid_now = True
        elif self.valid_now:
            self.valid.value = 0
            self.valid_now = False
            self.payload.value = self.junk.getrandbits(self.width)

    def sample(self, cycle):
        """ReadOnly: True when the offered beat is accepted at the coming edge."""
        if not self.offering:
            ready = _bit(self.ready, cycle, f"{self.name}.ready") if self.checker.pending \
                else False
            self.checker.sample(cycle, False, ready)
            return False
        ready = _bit(self.ready, cycle, f"{self.name}.ready")
        self.checker.sample(cycle, True, ready, self.queue[self.pos])
        if ready:
            self.offering = False
            self.pos += 1
            self.accepted += 1
            return True
        return False

    def idle(self, force=False):
        """Drop ``valid``; ``force``: drive it (and the payload) low even if this source
        never drove it (inputs are X/Z in Icarus until driven, from time 0)."""
        if self.valid_now or force:
            self.valid.value = 0
            self.valid_now = False
        if force:
            self.payload.value = 0
        self.offering = False


class StreamSink:
    """Monitor of one output stream with back-pressure."""

    def __init__(self, dut, name):
        self.name = name
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.ready_now = None
        self.gate = iter(lambda: True, None)
        self.checker = StreamChecker(name, producer="DUT")
        self.enabled = True
        self.valid_seen = False         # valid at the last sample (the design monitor)

    def drive(self):
        r = bool(next(self.gate)) if self.enabled else False
        if r != self.ready_now:
            self.ready.value = int(r)
            self.ready_now = r

    def sample(self, cycle):
        """ReadOnly: the accepted payload (int), or None."""
        valid = self.valid_seen = _bit(self.valid, cycle, f"{self.name}.valid")
        if not valid and not self.checker.pending:
            return None
        if valid:
            p, ok = _val(self.payload)
        else:
            p, ok = None, True
        self.checker.sample(cycle, valid, self.ready_now, p, ok)
        return p if (valid and self.ready_now) else None


class DesignMonitor:
    """Design-side coverage sampled from the DUT (see :mod:`.coverage`, ``dut_*`` axes).

    Sampled once per cycle in :meth:`ConvEnv.step` at ``ReadOnly`` (the values the
    coming rising edge sees): three internal signals are read -- the control FSM's
    state register (``<ctl instance>.ctl_state``; Amaranth names the instance ``ctl``,
    or ``ctl$<n>`` when a top-level signal already has that name), the result FIFO's
    level (``q.fifo.level``) and the free result credits (``seq.free``); back-pressure
    comes from what the stream drivers and monitors already sampled and the error
    flags from the status beats taken. Hierarchy names are found by the same path
    on Verilator (``--public-flat-rw``) and Icarus. A DUT without them (other
    Verilog) leaves the monitor disabled: its layers carry no ``dut`` sample; so does
    ``SC_DUT_COVERAGE=0`` in the environment.

    Cost: on Verilator (two-state) the three reads go through the simulator handle's
    integer read (``_handle.get_signal_val_long``, about 20 times cheaper than
    ``int(handle.value)``); on Icarus through ``handle.value`` (X/Z detected).

    Design assertions, since the monitor relies on them (a :class:`ProtocolError`
    otherwise): the state encoding (:data:`~.coverage.FSM_ENCODING`) agrees with the
    FSM's outputs -- ``o_status.valid`` exactly in ``STATUS`` (every cycle), and, read
    when the state changes, ``i_desc.ready`` exactly in ``IDLE``, ``ctl.run`` exactly
    in ``RUN`` and ``ABORT``, ``ctl.abort`` exactly in ``ABORT`` --, and every change of
    state is one of :data:`~.coverage.FSM_TRANSITIONS` (which pins the ``CHECK*`` chain).
    """

    STATUS = FSM_ENCODING.index("STATUS")
    #: state -> (i_desc.ready, run, abort)
    OUTPUTS = {i: (n == "IDLE", n in ("RUN", "ABORT"), n == "ABORT")
               for i, n in enumerate(FSM_ENCODING)}

    def __init__(self, dut, cfg, log=None):
        self.enabled = False
        self.why = None
        self.depth = cfg.out_fifo_depth
        self.prev = None
        E = FSM_ENCODING
        self._rbp = [f"o_result@{s}" for s in E]
        self._legal = set(FSM_TRANSITIONS)
        self._trans = {(a, b): f"{E[a]}>{E[b]}" for a in range(len(E)) for b in range(len(E))}
        self.begin()
        if os.environ.get("SC_DUT_COVERAGE", "1") == "0":      # off (speed comparisons)
            self.why = "design-side coverage off (SC_DUT_COVERAGE=0)"
            return
        try:
            ctl = self._find_ctl(dut)
            handles = (ctl.ctl_state, dut.q.fifo.level, dut.seq.free)
            self.h_outputs = (dut.i_desc__ready, ctl.run, ctl.abort)
            self._rd_state, self._rd_level, self._rd_free = (_reader(h) for h in handles)
            for h in (*handles, *self.h_outputs):
                _val(h)
        except Exception as exc:          # other Verilog: no design-side coverage
            self.why = f"design-side coverage disabled: {exc!r}"
            if log is not None:
                log.warning(self.why)
            return
        self.enabled = True

    @staticmethod
    def _find_ctl(dut):
        """The control block's instance: ``ctl``, else ``ctl$<n>`` (escaped names,
        spelled with a backslash and a trailing blank on Verilator, bare on Icarus)."""
        import re
        try:
            h = dut["ctl"]
            h.ctl_state
            return h
        except (AttributeError, KeyError, IndexError, TypeError):
            pass
        for child in dut:
            if re.fullmatch(r"\\?ctl\$\d+ ?", child._name):
                try:
                    child.ctl_state
                    return child
                except (AttributeError, KeyError, IndexError, TypeError):
                    continue
        raise AttributeError("no control instance (ctl or ctl$<n>) with ctl_state")

    def begin(self):
        """Start a layer's sample (the FSM's current state carries over)."""
        self.hits = {a: set() for a in DUT_AXES}
        self._states = self.hits["dut_state"]
        self._transitions = self.hits["dut_transition"]
        self._queue = self.hits["dut_queue"]
        self._credits = self.hits["dut_credits"]
        self._bp = self.hits["dut_backpressure"]
        if self.prev is not None:
            self._states.add(FSM_ENCODING[self.prev])

    def resync(self):
        """After a reset: the next state seen starts afresh (a reset is no transition)."""
        self.prev = None

    def _change(self, cycle, st):
        """The state changed (or is the first after a reset): record and check it."""
        if not 0 <= st < len(FSM_ENCODING):
            raise ProtocolError(f"cycle {cycle}: control FSM state is X/Z or out of range "
                                f"({st})")
        self._states.add(FSM_ENCODING[st])
        if self.prev is not None:
            t = self._trans[(self.prev, st)]
            if t not in self._legal:
                raise ProtocolError(f"cycle {cycle}: control FSM went "
                                    f"{t.replace('>', ' -> ')}, not a legal transition")
            self._transitions.add(t)
        seen = tuple(bool(_val(x)[0]) for x in self.h_outputs)
        if seen != self.OUTPUTS[st]:
            raise ProtocolError(
                f"cycle {cycle}: (i_desc.ready, run, abort) = {tuple(map(int, seen))} in "
                f"control FSM state {FSM_ENCODING[st]} (ctl_state={st}): the monitor's "
                f"state encoding is wrong")
        self.prev = st

    def sample(self, cycle, sources, result, status):
        """ReadOnly, after the drivers and monitors sampled this cycle."""
        st = self._rd_state()
        if st != self.prev:
            self._change(cycle, st)
        if status.valid_seen != (st == self.STATUS):
            raise ProtocolError(f"cycle {cycle}: o_status.valid={int(status.valid_seen)} in "
                                f"control FSM state {FSM_ENCODING[st]} (ctl_state={st}): the "
                                f"monitor's state encoding is wrong")
        level = self._rd_level()
        if level == 0:
            self._queue.add("empty")
        elif level >= self.depth:
            self._queue.add("full")
        if self._rd_free() == 0:
            self._credits.add("exhausted")
        if result.valid_seen and not result.ready_now:
            self._bp.add(self._rbp[st])
        if status.valid_seen and not status.ready_now:
            self._bp.add("o_status@STATUS")
        for s in sources:
            if s.offering:                # after sample(): offered and not taken
                self._bp.add(s.name)

    def status_beat(self, error):
        """A status beat was taken with ``error`` (the flag bits)."""
        for bit, name in L.ErrorFlag.NAMES.items():
            if error & bit:
                self.hits["dut_error"].add(name)

    def snapshot(self):
        """The layer's sample: axis -> sorted bins hit (None when disabled)."""
        if not self.enabled:
            return None
        return {a: sorted(v) for a, v in self.hits.items()}


def _reader(handle):
    """A function returning ``handle``'s value as an int: on Verilator (two-state) the
    simulator handle's integer read; else ``handle.value``, -1 when X/Z."""
    fast = getattr(getattr(handle, "_handle", None), "get_signal_val_long", None)
    if fast is not None and "verilator" in str(getattr(cocotb, "SIM_NAME", "")).lower():
        return fast

    def read():
        v, ok = _val(handle)
        return v if ok else -1
    return read


class LayerResult:
    """Outcome of one layer on the DUT."""

    def __init__(self, run, sb, cycles, sim_cycles, error=None, design=None):
        self.run = run
        self.design = design            # the design-side coverage sample (or None)
        self.scoreboard = sb
        self.cycles = cycles            # sum of measured invocation cycles
        self.sim_cycles = sim_cycles    # cycles simulated for the layer
        self.error = error              # first failure (str) or None

    @property
    def ok(self):
        return self.error is None


class ConvEnv:
    """The environment: clock, reset, sources, sinks, checkers, scoreboard, watchdog."""

    def __init__(self, dut, cfg, *, log=None):
        self.dut = dut
        self.cfg = cfg
        self.log = log or dut._log
        self.sources = [StreamSource(dut, n, junk_seed=i) for i, n in enumerate(INPUTS)]
        self.result = StreamSink(dut, "o_result")
        self.status = StreamSink(dut, "o_status")
        self.framing = FramingChecker()
        self.status_lay = L.status_layout(cfg)
        self.last_bit = L.field_offsets(L.result_beat_layout(cfg))["last"][0]
        self.cycle = 0
        self.clock = None
        self.trace = []           # handshake marks of the current layer
        self._at_falling = False
        self.monitor = DesignMonitor(dut, cfg, log=self.log)

    # -- clock and reset ------------------------------------------------------------
    async def start(self, reset_cycles=4):
        """Drive valid/ready low from time 0 (Icarus leaves undriven inputs X/Z),
        start the clock, reset."""
        for s in self.sources:
            s.idle(force=True)
        for sink in (self.result, self.status):
            sink.ready.value = 0
            sink.ready_now = False
        self.clock = Clock(self.dut.clk, 10, unit="ns")
        self.clock.start()
        await self.reset(reset_cycles)

    async def reset(self, cycles=4):
        """Synchronous reset like the compiled harness: valid/ready low, ``cycles``
        rising edges with ``rst`` high; queues and checkers flushed."""
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 1
        for s in self.sources:
            s.flush()
            s.idle(force=True)
        self.result.ready.value = 0
        self.result.ready_now = False
        self.status.ready.value = 0
        self.status.ready_now = False
        self.result.checker.reset()
        self.status.checker.reset()
        self.framing.reset()
        self.monitor.resync()
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0
        self._at_falling = True

    def set_stalls(self, stalls: StallSpec, seed):
        rng = random.Random(seed)
        for i, s in enumerate(self.sources):
            s.gate = stalls.gate(i, rng)
        self.result.gate = stalls.gate(4, rng)
        # the status sink shares the result sink's back-pressure kind
        self.status.gate = stalls.gate(4, random.Random(seed + 1))

    # -- one cycle ------------------------------------------------------------------
    async def step(self):
        """Drive at the falling edge, sample at ReadOnly; return the handshakes."""
        if not self._at_falling:
            await FallingEdge(self.dut.clk)
        self._at_falling = False
        for s in self.sources:
            s.drive()
        self.result.drive()
        self.status.drive()
        await ReadOnly()
        c = self.cycle
        hs = [s.sample(c) for s in self.sources]
        res = self.result.sample(c)
        st = self.status.sample(c)
        if self.monitor.enabled:
            self.monitor.sample(c, self.sources, self.result, self.status)
        self.cycle += 1
        return hs, res, st

    # -- layers ---------------------------------------------------------------------
    def watchdog_limit(self, run, k, stalls):
        """Cycles an invocation may take before the watchdog fires."""
        one = SimpleNamespace(tiles=[run.expects[k].spec])
        slow = 1.0 / max(0.1, 1.0 - stalls.max_idle())
        beats = sum(len(getattr(run.invs[k], f)) for f in
                    ("desc_words", "param_words", "weight_words", "act_words"))
        return int(4000 + 4 * estimate_cycles(one, self.cfg, stalls) + 4 * slow * (beats + run.invs[k].n_results))

    async def run_layer(self, run, *, seed=0, stalls=None, streams=None, label="",
                        stop_after=None):
        """Run every invocation of ``run`` back-to-back and check it.

        ``streams``: the four input streams (lists of packed ints) to send instead of
        the run's own (error scenarios); the run's ``expects`` say what must come back.
        ``stop_after``: leave after that many cycles (to reset in the middle of a layer).
        Returns a :class:`LayerResult`; never raises on a DUT failure (the caller
        resets the DUT), only on testbench bugs.
        """
        stalls = stalls or run.layer.stalls
        self.set_stalls(stalls, seed)
        streams = streams or run.streams()
        for s, beats in zip(self.sources, streams):
            s.load(beats)
        ctx = f"{label}seed {seed}: " if label else ""
        sb = Scoreboard(run, context=ctx, model=stalls.kind == "none")
        n_inv = run.n_inv
        self.monitor.begin()
        rec = InvocationRecord()
        k = 0
        start = self.cycle
        limit = self.watchdog_limit(run, 0, stalls)
        t_wait = self.cycle
        total = 0
        error = None
        try:
            while k < n_inv:
                if stop_after is not None and self.cycle - start >= stop_after:
                    break
                hs, res, st = await self.step()
                c = self.cycle - 1
                if hs[0]:
                    rec.desc_cycle = c
                elif rec.desc_cycle is None and (hs[1] or hs[2] or hs[3]):
                    raise ProtocolError(f"cycle {c}: the DUT accepted a payload beat before "
                                        f"the invocation's descriptor")
                if res is not None:
                    rec.results.append(res)
                    rec.result_cycles.append(c)
                    last = (res >> self.last_bit) & 1
                    e = run.expects[k]
                    exp_last = None if (e.error and not e.exact) else \
                        (len(rec.results) == e.inv.n_results)
                    self.framing.result(c, last, exp_last)
                    if last:
                        rec.final_cycle = c
                if st is not None:
                    e = run.expects[k]
                    self.framing.status(c, rec.final_cycle is not None, e.error == 0 or e.exact)
                    rec.status = L.unpack(self.status_lay, st)
                    rec.status_cycle = c
                    self.monitor.status_beat(int(rec.status["error"]))
                    fails = sb.check(rec)
                    if rec.measured_cycles is not None:
                        total += rec.measured_cycles
                    if fails:
                        error = fails[0]
                        break
                    k += 1
                    rec = InvocationRecord()
                    t_wait = self.cycle
                    if k < n_inv:
                        limit = self.watchdog_limit(run, k, stalls)
                if self.cycle - t_wait > limit:
                    e = run.expects[k]
                    left = [f"{s.name} {s.left()} beats left" for s in self.sources]
                    raise WatchdogTimeout(
                        f"{ctx}watchdog: layer {run.layer.name}, invocation {k + 1}/{n_inv} "
                        f"[{e.spec}]: no status after {limit} cycles (desc handshake at "
                        f"{rec.desc_cycle}, {len(rec.results)}/{e.inv.n_results} result beats; "
                        f"{', '.join(left)}; DUT active={int(self.dut.active.value)})")
        except (ProtocolError, WatchdogTimeout) as exc:
            error = f"{ctx}layer {run.layer.name}, invocation {k + 1}/{n_inv}: {exc}" \
                if isinstance(exc, ProtocolError) else str(exc)
        if error is None and stop_after is not None and k < n_inv:
            pass
        elif error is None:
            # every beat the testbench queued must have been taken (drained)
            left = [(s.name, len(s.queue) - s.pos) for s in self.sources if len(s.queue) > s.pos]
            if left:
                error = f"{ctx}layer {run.layer.name}: input beats not consumed: {left}"
            elif not sb.finish():
                error = sb.first_failure()
        for s in self.sources:
            s.flush()
        return LayerResult(run, sb, total, self.cycle - start, error,
                           design=self.monitor.snapshot())

    async def idle_cycles(self, n):
        for s in self.sources:
            s.gate = iter(lambda: True, None)
        for _ in range(n):
            await self.step()
