"""The same layer cases and scoreboard on the compiled Verilator harness
(:mod:`systolic_conv.sim.harness`): ~100x faster than cocotb, used for mutation
testing, for measuring cycles and for the cocotb-vs-harness identity test."""

import numpy as np

from ..harness import get_harness
from .layers import words_to_ints
from .scoreboard import Scoreboard, InvocationRecord

__all__ = ["run_on_harness"]


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


def run_scenario_on_harness(bad, streams, nxt, *, harness=None, seed=0):
    """An error scenario on the harness: the broken invocation (``streams``, from
    :func:`~.scenarios.corrupt`, with ``bad.expects[0].error`` set) followed in the
    same run by the clean layer ``nxt``. Returns the first failure or None: the
    status must carry the error bits, every beat must be drained, the DUT must not
    hang and ``nxt`` must be exact."""
    from ...hw import layouts as L
    cfg = bad.cfg
    h = harness or get_harness(cfg)
    lays = [L.descriptor_layout(cfg), L.param_beat_layout(cfg), L.weight_beat_layout(cfg),
            L.act_beat_layout(cfg)]
    clean = nxt.streams()
    arrs = [_words(s + c, (lay.size + 31) // 32) for s, c, lay in zip(streams, clean, lays)]
    n_next = sum(i.n_results for i in nxt.invs)
    n_max = bad.invs[0].n_results + n_next
    hr = h.run(*arrs, n_results=n_max, seed=seed,
               max_cycles=200000 + 20 * sum(len(a) for a in arrs) + 50 * n_max)
    what = f"harness: scenario {bad.layer.name}"
    if hr.timeout or len(hr.status) != 1 + nxt.n_inv:
        return (f"{what}: hang ({len(hr.status)}/{1 + nxt.n_inv} status beats after "
                f"{hr.sim_cycles} cycles)")
    st = hr.status[0]
    want = bad.expects[0].error
    if (st["error"] & want) != want:
        return (f"{what}: status error {L.ErrorFlag.describe(st['error'])}, expected "
                f"{L.ErrorFlag.describe(want)}")
    n_bad = len(hr.result_words) - n_next
    if n_bad < 0:
        return f"{what}: only {len(hr.result_words)} result beats in all"
    if bad.expects[0].exact:       # over-long streams: drained, dropped, results exact
        sb0 = Scoreboard(bad, context=f"{what}: ")
        rec = InvocationRecord()
        rec.results = words_to_ints(hr.result_words[:n_bad]) if n_bad else []
        rec.status = st
        rec.desc_cycle = int(hr.marks[0, 0])
        fc = int(hr.marks[0, 1])
        rec.final_cycle = fc if fc >= 0 else None
        if sb0.check(rec):
            return sb0.first_failure()
    sb = Scoreboard(nxt, context=f"{what}, then: ", model=True)
    ints = words_to_ints(hr.result_words[n_bad:]) if n_next else []
    pos = 0
    for i in range(nxt.n_inv):
        rec = InvocationRecord()
        n = nxt.invs[i].n_results
        rec.results = ints[pos:pos + n]
        pos += n
        rec.status = hr.status[1 + i]
        rec.desc_cycle = int(hr.marks[1 + i, 0])
        fc = int(hr.marks[1 + i, 1])
        rec.final_cycle = fc if fc >= 0 else None
        if sb.check(rec):
            break
    if sb.ok:
        sb.finish()
    return sb.first_failure()
