"""Random fault injection on the compiled harness: one broken invocation anywhere in
a random layer, random stalls and back-pressure, an optional reset pulse, and a clean
follow-up layer that must come out exact.

    python -m systolic_conv.sim.faultinject --seeds 200 --hw square
    python -m systolic_conv.sim.faultinject --seed 17 --hw square -v      # replay one
    python -m systolic_conv.sim.faultinject --seeds 40 --hw square --fault credit_lost_on_take
    make faults SEEDS=200 HW=square [SEED=17] [FAULT=name]

Each seed draws one case (:func:`draw_fault_case`): a random regression layer
(:func:`~.cocotb.layers.draw_layer`, a small budget), one of its invocations (any,
not only the first), a corruption kind of :data:`~.cocotb.scenarios.CORRUPTIONS` that
applies to that invocation (descriptor and parameter breaks, short and long
parameter / weight / activation streams; the ``dw_*`` kinds on depthwise
invocations, the others on dense ones) with a random size for the short and long
kinds; 15 % of the cases (:data:`FIELD_P`) instead set one descriptor field of
:data:`~.cocotb.scenarios.FIELD_LIMITS` just outside its legal range (``desc_field_range``,
``dw_desc_field_range``; the status must be exactly BAD_DESC), random idle cycles on the four inputs and back-pressure on the result and
the status streams, sometimes a reset pulse at a random cycle, and a different
random follow-up layer run right after it. :func:`run_fault_case` streams it all
through the harness in one run and checks (:func:`~.cocotb.fastpath.run_scenario_on_harness`):
the broken invocation's status carries the error bits (an over-long stream's
exactly them, and its results are exact), nothing hangs, the outputs keep the
stream rule, every other invocation of the layer and the whole follow-up layer are
exact; an invocation a reset interrupts is lost and skipped, everything else must
still be exact.
"""

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..hw import layouts as L
from .cocotb.layers import LayerRun, draw_layer, hw_config, prepare, estimate_cycles
from .cocotb.scenarios import (CORRUPTIONS, FIELD_KINDS, HW_BUGS, RESIZE, corrupt, _break_desc,
                               draw_field_break, field_break_values, field_ranges)

__all__ = ["FaultCase", "applicable_kinds", "draw_fault_case", "run_fault_case", "run_cases",
           "main"]

#: kinds the random cases leave out: ``act_long_full_lb`` is ``act_long`` on a layer
#: built for it (the random layers give act_long plenty of line-buffer fills)
SKIPPED = {"act_long_full_lb"}

#: kinds whose check the two mappings share (Control's common descriptor checks, the
#: parameter intake's beat count and lane checks): drawn on depthwise invocations too
SHARED = {"desc_kernel_zero", "desc_stride_zero", "desc_width_over", "desc_cotiles_zero",
          "desc_out_bits", "desc_clamp_order", "desc_clamp_range", "desc_requant_mode",
          "param_shift_range", "param_half_up_mult", "param_short", "param_long"}

#: the chance that a case also gets a reset pulse
RESET_P = 0.3

#: the chance that a case's break is a descriptor field set just outside its legal
#: range (:data:`~.cocotb.scenarios.FIELD_KINDS`, where one applies) instead of the
#: kind drawn uniformly from the others. Drawn from a side generator after the
#: uniform draw, so the other cases of every seed are the ones drawn before these
#: kinds existed
FIELD_P = 0.15


@dataclass
class FaultCase:
    """One random fault-injection case (everything :func:`run_fault_case` needs)."""
    seed: int
    cfg: object
    run: LayerRun                # the layer with the broken invocation, prepared
    inv: int                     # the broken invocation
    kind: str                    # a key of CORRUPTIONS
    amount: object               # beats removed / added (short / long kinds), (field,
                                 # value) (field-range kinds), else None
    error: int                   # the error bits its status must carry
    idle: tuple                  # desc, param, weight, act idle probabilities
    stall: float                 # result back-pressure probability
    status_stall: float          # status back-pressure probability
    reset_at: object             # cycle of a reset pulse, or None
    next_run: LayerRun           # the clean follow-up layer, prepared
    hseed: int                   # the harness's random seed (stalls)

    def describe(self):
        amt = f" by {self.amount}" if self.amount is not None else ""
        idle = "/".join(f"{p:.2f}" for p in self.idle)
        rst = f", reset at cycle {self.reset_at}" if self.reset_at is not None else ""
        return (f"layer {self.run.layer.name} ({self.run.n_inv} inv), invocation "
                f"{self.inv + 1}/{self.run.n_inv} {self.kind}{amt}, idle {idle}, stall "
                f"{self.stall:.2f}, status stall {self.status_stall:.2f}{rst}, then "
                f"{self.next_run.layer.name} ({self.next_run.n_inv} inv)")


def _stream_len(inv, stream):
    return len(getattr(inv, f"{stream}_words"))


def _desc_fits(cfg, desc, kind):
    """The broken descriptor's changed fields fit their widths (a value that wraps
    could make a legal descriptor)."""
    d = dict(desc)
    _break_desc(d, kind, cfg)
    offs = L.field_offsets(L.descriptor_layout(cfg))
    for name, v in d.items():
        if name not in offs or hasattr(v, "value") or v == desc.get(name):
            continue
        _, width, signed = offs[name]
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        if not lo <= int(v) <= hi:
            return False
    return True


def applicable_kinds(run, inv):
    """The corruption kinds that apply to invocation ``inv`` of ``run``: the ``dw_*``
    kinds and :data:`SHARED` on a depthwise invocation, the others on a dense one,
    where the broken field fits its width and a short stream keeps at least one
    beat."""
    cfg = run.cfg
    e = run.invs[inv]
    out = []
    for k in CORRUPTIONS:
        if k in HW_BUGS or k in SKIPPED:
            continue
        if k.startswith("dw_") != bool(e.depthwise) and not (e.depthwise and k in SHARED):
            continue
        if k in FIELD_KINDS:
            if draw_field_break(np.random.default_rng(0), cfg, e.desc, FIELD_KINDS[k]) is not None:
                out.append(k)
            continue
        if k in RESIZE and k.endswith("_short") and _stream_len(e, RESIZE[k][0]) < 2:
            continue
        if k == "desc_depthwise" and cfg.depthwise_mode and e.desc["cwords"] == e.desc["cotiles"]:
            continue                  # could be a legal depthwise descriptor
        if k == "dw_pad_left" and e.desc["pad_left"] != 0:
            continue
        if (k.startswith(("desc_", "dw_phase", "dw_pad")) or k == "param_tiles_mismatch") \
                and not _desc_fits(cfg, e.desc, k):
            continue
        out.append(k)
    return out


def _draw_amount(rng, kind, inv, cfg):
    if kind not in RESIZE:
        return None
    stream = RESIZE[kind][0]
    n = _stream_len(inv, stream)
    if kind.endswith("_short"):
        return int(rng.integers(1, n))                 # 1 .. n-1 beats short
    # 1 .. 2n+20 beats long; a parameter stream up to 4 * max_cotiles + 20 (its beat
    # counter has room for twice max_cotiles: a counter that wrapped instead of
    # saturating would come round to the first tiles again)
    cap = 2 * cfg.max_cotiles if stream == "param" else 0
    return int(rng.integers(1, 2 * max(n, cap) + 21))


def _stall_p(rng, p_zero, hi):
    return 0.0 if rng.random() < p_zero else round(float(rng.uniform(0.05, hi)), 3)


def _side_value(cfg, inv, kind, field, side):
    """The value just outside ``field``'s legal range on ``side`` (0: lo - 1, 1: hi + 1)
    for invocation ``inv`` broken by ``kind``, or None when the field cannot hold it."""
    dw = FIELD_KINDS[kind]
    ranges = field_ranges(cfg, inv.desc, dw)
    if field not in ranges:
        return None
    lo, hi, _ = ranges[field]
    want = lo - 1 if side == 0 else hi + 1
    return want if want in field_break_values(cfg, inv.desc, dw, field) else None


def _upper(cfg, inv, field):
    """The upper limit of ``field`` (``field[1]``) on invocation ``inv`` for the
    field-range kind ``field[0]`` (-1 where the kind does not apply)."""
    kind, name, _ = field
    if bool(inv.depthwise) != FIELD_KINDS[kind]:
        return -1
    return field_ranges(cfg, inv.desc, FIELD_KINDS[kind]).get(name, (0, -1, False))[1]


def draw_fault_case(seed, cfg, *, budget=20000, field=None, force=None):
    """The random fault case of ``seed`` on ``cfg`` (reproducible from the seed alone).
    ``field=(kind, name, side)``: the case breaks descriptor field ``name`` just outside
    its range on ``side`` (0 below, 1 above: on the invocation where the upper limit is
    highest) with the field-range ``kind``, on the first random layer where that
    applies (None when none of 50 does);
    ``force``: axis choices of the broken layer (:func:`~.cocotb.layers.draw_layer`)."""
    cfg = hw_config(cfg)
    rng = np.random.default_rng([int(seed), 0xFA17])
    for _ in range(50):
        s_a = int(rng.integers(0, 2 ** 31))
        try:
            run = prepare(draw_layer(s_a, cfg, budget=budget, name=f"fi{seed}a-seed{s_a}",
                                     force=force), cfg)
        except (ValueError, RuntimeError):
            if force is None:
                raise
            # a forced draw that fits no budget, or that the host cannot stream (a
            # depthwise layer with a wide column padding: the planner's column strips
            # can still be too wide for the line buffer), the next one
            continue
        inv = int(rng.integers(run.n_inv))
        if field is not None and field[2] == 1:
            # above the range: the invocation where the field's upper limit is highest
            inv = max(range(run.n_inv), key=lambda i: (_upper(cfg, run.invs[i], field), -i))
        field_kinds = [k for k in applicable_kinds(run, inv) if k in FIELD_KINDS]
        kinds = [k for k in applicable_kinds(run, inv) if k not in FIELD_KINDS]
        if field is not None:
            if field[0] in field_kinds and kinds and \
                    _side_value(cfg, run.invs[inv], *field) is not None:
                break
        elif run.n_inv >= 1 and kinds:
            break
    else:
        if field is not None:
            return None
        raise RuntimeError(f"seed {seed}: no layer with an applicable corruption")
    kind = str(rng.choice(kinds))
    amount = _draw_amount(rng, kind, run.invs[inv], cfg)
    side = np.random.default_rng([int(seed), 0xFA17, 0xF1E1D])
    if field is not None:
        kind = field[0]
        amount = (field[1], _side_value(cfg, run.invs[inv], *field))
    elif field_kinds and side.random() < FIELD_P:
        kind = field_kinds[0]
        amount = draw_field_break(side, cfg, run.invs[inv].desc, FIELD_KINDS[kind])
    idle = tuple(_stall_p(rng, 0.3, 0.7) for _ in range(4))
    stall = _stall_p(rng, 0.25, 0.7)
    status_stall = _stall_p(rng, 0.25, 0.9)
    reset_at = None
    if rng.random() < RESET_P:
        # in the broken layer, mostly: the estimate is an upper bound (the layer's end
        # was at a median 0.28 of it, 95th percentile 0.82, on 150 square cases), so
        # some pulses land between invocations or in the follow-up layer
        slow = 1.0 / max(0.2, 1.0 - max(idle + (stall,)))
        est = max(50, int(estimate_cycles(run.plan, cfg) * slow * 0.35))
        reset_at = int(rng.integers(0, est))
    while True:
        s_b = int(rng.integers(0, 2 ** 31))
        if s_b != s_a:
            nxt = draw_layer(s_b, cfg, budget=budget // 2, name=f"fi{seed}b-seed{s_b}")
            if nxt.x.shape != run.layer.x.shape or nxt.w.shape != run.layer.w.shape \
                    or nxt.conv != run.layer.conv:
                break
    return FaultCase(seed=int(seed), cfg=cfg, run=run, inv=inv, kind=kind, amount=amount,
                     error=int(CORRUPTIONS[kind][1]), idle=idle, stall=stall,
                     status_stall=status_stall, reset_at=reset_at, next_run=prepare(nxt, cfg),
                     hseed=int(rng.integers(0, 2 ** 32)))


#: the first seed of :func:`field_sweep_cases`
FIELD_SWEEP_SEED = 1_000_000


def field_sweep(cfg):
    """``(kind, field, side)`` of every descriptor field of
    :data:`~.cocotb.scenarios.FIELD_LIMITS` on its mapping, each side of its range."""
    from .cocotb.scenarios import FIELD_LIMITS
    return [(kind, f, side) for kind, dw in FIELD_KINDS.items()
            for f, m, _ in FIELD_LIMITS if m in ("both", "dw" if dw else "dense")
            for side in (0, 1)
            if not (dw and not cfg.depthwise_mode)]


def field_sweep_cases(cfg, families=(None, {"limits": True})):
    """Fault cases that break every descriptor field just outside each side of its
    range (:func:`field_sweep`), once on a random layer of each family of
    ``families`` (``force`` of :func:`~.cocotb.layers.draw_layer`: an ordinary random
    layer, one at the descriptor's limits); the layer of a depthwise field is a random
    depthwise one. Seeds from :data:`FIELD_SWEEP_SEED`, two per (field, side); a side
    that no layer of 50 can take is left out."""
    cfg = hw_config(cfg)
    out = []
    for i, (kind, f, side) in enumerate(field_sweep(cfg)):
        for j, fam in enumerate(families):
            force = dict(fam or {})
            if FIELD_KINDS[kind]:
                force["groups"] = "depthwise"
            case = draw_fault_case(FIELD_SWEEP_SEED + len(families) * i + j, cfg,
                                   field=(kind, f, side), force=force or None)
            if case is not None:
                out.append(case)
    return out


def max_cycles(case, streams):
    """The cycles after which a case counts as hung: three times the layers' estimates
    (upper bounds already, see :func:`draw_fault_case`) and four cycles a beat, slowed
    by the stalls, plus the reset and a margin."""
    cfg = case.cfg
    slow = 1.0 / max(0.2, 1.0 - max(case.idle + (case.stall, case.status_stall)))
    est = estimate_cycles(case.run.plan, cfg) + estimate_cycles(case.next_run.plan, cfg)
    beats = sum(len(s) for s in streams) + sum(len(s) for s in case.next_run.streams())
    return int(slow * (3 * est + 4 * beats)) + 20000 + (case.reset_at or 0)


def run_fault_case(case, harness=None, *, details=None):
    """Run one case on ``harness`` (default: the fault-free harness of its config);
    return None when every check passes, else a one-line failure."""
    from .cocotb.fastpath import run_scenario_on_harness
    from .harness import get_harness
    h = harness or get_harness(case.cfg)
    try:
        streams, bad = corrupt(case.run, case.kind, inv=case.inv, amount=case.amount)
        bad.expects[case.inv].error = case.error
        det = {} if details is None else details
        err = run_scenario_on_harness(bad, streams, case.next_run, harness=h, seed=case.hseed,
                                      idle=case.idle, stall=case.stall,
                                      status_stall=case.status_stall, reset_at=case.reset_at,
                                      strict_error=True, details=det,
                                      max_cycles=max_cycles(case, streams))
        hr = det.get("hr")
        if err is None and case.kind in FIELD_KINDS and hr is not None and hr.lost != case.inv:
            # a rejected descriptor reports exactly BAD_DESC (the streams it drains
            # are not checked against it)
            got = int(hr.status[case.inv]["error"])
            if got != case.error:
                err = (f"layer {case.run.layer.name}, invocation {case.inv + 1}/"
                       f"{case.run.n_inv}: {case.kind} {case.amount}: status error "
                       f"{L.ErrorFlag.describe(got)}, expected exactly "
                       f"{L.ErrorFlag.describe(case.error)}")
    except Exception as exc:          # e.g. unpacking a garbage stream
        err = f"{type(exc).__name__}: {exc}"
    return None if err is None else " ".join(str(err).split())


def _replay(seed, hw, fault=None):
    return (f"python -m systolic_conv.sim.faultinject --seed {seed} --hw {hw}"
            + (f" --fault {fault}" if fault else ""))


def run_cases(seeds, hw, *, harness=None, fault=None, verbose=False, say=print,
              budget=20000):
    """Draw and run the cases of ``seeds``; print one line per failure (with its
    replay command) and the summary line; return ``(n_cases, failures, seconds)``
    with ``failures`` a list of ``(seed, message)``."""
    cfg = hw_config(hw)
    if harness is None:
        if fault:
            from .mutate import _mutant_harness
            harness, _ = _mutant_harness(cfg, {"kind": "fault", "name": fault})
        else:
            from .harness import get_harness
            harness = get_harness(cfg)
    t0 = time.perf_counter()
    fails = []
    for s in seeds:
        try:
            case = draw_fault_case(s, cfg, budget=budget)
        except Exception as exc:
            err, case = f"drawing the case failed: {type(exc).__name__}: {exc}", None
        else:
            err = run_fault_case(case, harness)
        if verbose and case is not None:
            say(f"seed {s}: {case.describe()}: {'ok' if err is None else 'FAILED'}")
        if err is not None:
            fails.append((s, err))
            say(f"FAIL seed {s}: {err[:400]}   # replay: {_replay(s, hw, fault)}")
    secs = time.perf_counter() - t0
    say(f"fault injection: {len(seeds)} cases, {len(fails)} failed"
        + (f" ({len(seeds) / secs:.1f} cases/s)" if verbose and secs > 0 else ""))
    return len(seeds), fails, secs


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m systolic_conv.sim.faultinject",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=50, help="cases: seeds FIRST .. FIRST+N-1")
    ap.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    ap.add_argument("--seed", type=int, default=None, help="run this one seed (a replay)")
    ap.add_argument("--hw", default="square", help="hardware config: small, square, default")
    ap.add_argument("--fault", default=None,
                    help="run on the design with this named fault (hw/faults.py)")
    ap.add_argument("--budget", type=int, default=20000, help="estimated cycles per layer")
    ap.add_argument("-v", "--verbose", action="store_true", help="describe every case")
    a = ap.parse_args(argv)
    seeds = [a.seed] if a.seed is not None else list(range(a.first, a.first + a.seeds))
    _, fails, _ = run_cases(seeds, a.hw, fault=a.fault, verbose=a.verbose or a.seed is not None,
                            budget=a.budget,
                            say=lambda *x: print(*x, flush=True))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
