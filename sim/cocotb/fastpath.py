"""The same layer cases and scoreboard on the compiled Verilator harness
(:mod:`systolic_conv.sim.harness`): ~100x faster than cocotb, used for mutation
testing, for measuring cycles and for the cocotb-vs-harness identity test."""

import numpy as np

from ..harness import get_harness
from .layers import words_to_ints
from .scoreboard import Scoreboard, InvocationRecord

__all__ = ["run_on_harness", "run_scenario_on_harness", "inv_ends"]


def run_on_harness(run, *, harness=None, seed=0, stalls=True, max_cycles=None):
    """Stream every invocation of ``run`` (a :class:`~.layers.LayerRun`) back-to-back
    through the harness and check it; return ``(scoreboard, harness_run)``.

    ``stalls``: apply the layer's stall spec (patterns as their duty cycle).
    """
    h = harness or get_harness(run.cfg)
    cat = lambda f: np.concatenate([getattr(i, f) for i in run.invs], axis=0)
    idle, stall = run.layer.stalls.harness_args if stalls else ((0, 0, 0, 0), 0.0)
    n_res = sum(i.n_results for i in run.invs)
    hr = h.run(cat("desc_words"), cat("param_words"), cat("weight_words"), cat("act_words"),
               n_results=n_res, seed=seed, idle=idle, stall=stall, max_cycles=max_cycles)
    sb = Scoreboard(run, context="harness: ",
                    model=not stalls or run.layer.stalls.kind == "none")
    if hr.protocol_failure():          # first: it is often what a hang comes from
        sb.fail(f"{hr.protocol_failure()}, layer {run.layer.name}")
    if hr.timeout:
        sb.fail(f"harness: layer {run.layer.name}: timeout after {hr.sim_cycles} cycles, "
                f"{len(hr.status)}/{run.n_inv} invocations finished, "
                f"{len(hr.result_words)}/{n_res} result beats")
    pos = 0
    ints = words_to_ints(hr.result_words) if len(hr.result_words) else []
    for i, st in enumerate(hr.status):
        e = run.expects[i] if i < run.n_inv else None
        n = e.inv.n_results if e is not None else 0
        # attribute beats up to the invocation's final beat (its last-marked one)
        rec = InvocationRecord()
        rec.results = ints[pos:pos + n]
        pos += n
        rec.status = st
        rec.desc_cycle = int(hr.marks[i, 0]) if i < len(hr.marks) else None
        fc = int(hr.marks[i, 1]) if i < len(hr.marks) else -1
        rec.final_cycle = fc if fc >= 0 else None
        sb.check(rec)
        if not sb.ok:
            break
    if sb.ok:
        sb.finish()
    return sb, hr


def _words(ints, nwords):
    from .scoreboard import ints_to_words
    return ints_to_words(ints, nwords)


def inv_ends(streams, layouts):
    """``(invocations, 4)``: where each invocation's beats end (exclusive) in the
    desc, param, weight and act streams (lists of beat ints), read from the framing:
    one descriptor beat per invocation, and each payload stream's ``last`` beats
    (a short or long stream keeps its ``last`` on its new final beat). None when a
    stream's framing does not give one end per descriptor."""
    n = len(streams[0])
    out = np.zeros((n, 4), dtype=np.uint64)
    out[:, 0] = np.arange(1, n + 1)
    for s in (1, 2, 3):
        bit = _last_bit(layouts[s])
        ends = [i + 1 for i, v in enumerate(streams[s]) if (int(v) >> bit) & 1]
        if len(ends) != n:
            return None
        out[:, s] = ends
    return out


def _last_bit(lay):
    from ...hw import layouts as L
    return L.field_offsets(lay)["last"][0]


def _record(hr, ints, starts, j):
    """The InvocationRecord of invocation ``j`` of a harness run (results sliced by the
    harness's per-invocation counts)."""
    rec = InvocationRecord()
    n = int(hr.inv_results[j])
    rec.results = ints[starts[j]:starts[j] + n]
    rec.status = hr.status[j] if j < len(hr.status) else None
    rec.desc_cycle = int(hr.marks[j, 0]) if hr.marks[j, 0] >= 0 else None
    fc = int(hr.marks[j, 1])
    rec.final_cycle = fc if fc >= 0 else None
    return rec


def run_scenario_on_harness(bad, streams, nxt, *, harness=None, seed=0, idle=(0, 0, 0, 0),
                            stall=0.0, status_stall=0.0, reset_at=None, reset_len=3,
                            max_cycles=None, strict_error=False, details=None):
    """An error scenario on the harness: the layer ``bad`` with one broken invocation
    (``streams``, ``bad`` from :func:`~.scenarios.corrupt`: the broken invocation's
    expectation carries the error bits, any invocation of the layer) followed in the
    same run by the clean layer ``nxt``. Returns the first failure or None: the
    status must carry the error bits (``strict_error``: for an over-long stream,
    exactly them), every beat must be drained, the DUT must not hang, the outputs
    must keep the stream rule, the invocations before and after the broken one must
    be exact (an over-long stream's too), and ``nxt`` must be exact.

    ``idle``/``stall``/``status_stall``: random idle cycles on the inputs and
    back-pressure on the results and the status (as :meth:`Harness.run`).
    ``reset_at``: a reset pulse at that cycle; the invocation it interrupts is lost
    (not checked; the harness drops the rest of its beats) and every other one must
    still be exact. ``details``: a dict filled with what happened (the harness run,
    the lost invocation)."""
    from ...hw import layouts as L
    cfg = bad.cfg
    h = harness or get_harness(cfg)
    lays = [L.descriptor_layout(cfg), L.param_beat_layout(cfg), L.weight_beat_layout(cfg),
            L.act_beat_layout(cfg)]
    clean = nxt.streams()
    joined = [s + c for s, c in zip(streams, clean)]
    arrs = [_words(s, (lay.size + 31) // 32) for s, lay in zip(joined, lays)]
    n_next = sum(i.n_results for i in nxt.invs)
    n_max = sum(i.n_results for i in bad.invs) + n_next
    n_all = bad.n_inv + nxt.n_inv
    if max_cycles is None:
        slow = 1.0 / max(0.2, 1.0 - max(list(idle) + [stall, status_stall]))
        max_cycles = int((200000 + 20 * sum(len(a) for a in arrs) + 50 * n_max) * slow)
    ends = inv_ends(joined, lays) if reset_at is not None else None
    if reset_at is not None and ends is None:
        raise ValueError("a reset scenario needs streams framed by their last beats")
    hr = h.run(*arrs, n_results=n_max + 64, seed=seed, idle=idle, stall=stall,
               status_stall=status_stall, reset_at=reset_at, reset_len=reset_len,
               inv_ends=ends, max_cycles=max_cycles)
    if details is not None:
        details.update(hr=hr, lost=hr.lost)
    what = f"harness: scenario {bad.layer.name}"
    if hr.protocol_failure():          # first: it is often what a hang comes from
        return f"{what}: {hr.protocol_failure()}"
    if hr.timeout or len(hr.status) != n_all:
        return (f"{what}: hang ({len(hr.status)}/{n_all} status beats after "
                f"{hr.sim_cycles} cycles)")
    ints = words_to_ints(hr.result_words) if len(hr.result_words) else []
    starts = np.concatenate([[0], np.cumsum(hr.inv_results)]).astype(int)
    for run, base, ctx in ((bad, 0, f"{what}: "), (nxt, bad.n_inv, f"{what}, then: ")):
        clean_run = all(e.error == 0 for e in run.expects)
        sb = Scoreboard(run, context=ctx,
                        model=clean_run and not any(idle) and not stall and not status_stall
                        and reset_at is None)
        lost = False
        for j in range(run.n_inv):
            if hr.lost == base + j:
                lost = True
                continue
            sb.next = j
            rec = _record(hr, ints, starts, base + j)
            e = run.expects[j]
            if strict_error and e.error and e.exact and rec.status["error"] != e.error:
                return (f"{ctx}layer {run.layer.name}, invocation {j + 1}/{run.n_inv}: status "
                        f"error {L.ErrorFlag.describe(rec.status['error'])}, expected exactly "
                        f"{L.ErrorFlag.describe(e.error)}")
            if sb.check(rec):
                return sb.first_failure()
        if not lost:
            sb.finish()
        if not sb.ok:
            return sb.first_failure()
    return None
