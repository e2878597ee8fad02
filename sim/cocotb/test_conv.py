"""cocotb tests of the accelerator (run through :mod:`.runner`, on Verilator or Icarus).

Inputs from the environment (set by the runner):

``SC_HW``      the hardware configuration (JSON of ``HardwareConfig.to_dict()``);
``SC_JOB``     a JSON job file: ``{"layers": [{"seed": 7} | {"named": "..."}...],
               "budget": cycles, "stalls": true|false, "scenarios": [...]}``;
``SC_REPORT``  where to write the JSON report (one entry per layer / scenario).

Every test runs the protocol checkers on all six streams, the framing checker,
the scoreboard and the watchdog. After a failing layer the DUT is reset and the
next layer runs (a regression reports every failing seed, not just the first).
"""

import json
import os
import time
import traceback

import cocotb

from .layers import (hw_config, draw_layer, named_layer, prepare, layer_tags, StallSpec)
from .scenarios import (CORRUPTIONS, HW_BUGS, corrupt, default_scenarios, scenario_layers,
                        scenario_base, scenario_dw_layer)
from .tb import ConvEnv
from ...hw import layouts as L


def _job():
    cfg = hw_config(json.loads(os.environ["SC_HW"]))
    job = {}
    if os.environ.get("SC_JOB"):
        with open(os.environ["SC_JOB"]) as fh:
            job = json.load(fh)
    return cfg, job


class _Report:
    def __init__(self):
        self.path = os.environ.get("SC_REPORT")
        self.entries = []

    def add(self, **entry):
        self.entries.append(entry)
        self.write()

    def write(self):
        if self.path:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(self.entries, fh, indent=None, default=_json_default)
            os.replace(tmp, self.path)


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _layer_of(spec, cfg, budget):
    if "named" in spec:
        layer = named_layer(spec["named"])
        if "stall_seed" in spec:
            import numpy as np
            from .layers import draw_stalls
            layer.stalls = draw_stalls(np.random.default_rng(spec["stall_seed"]),
                                       spec.get("stall_kind"))
        return layer
    return draw_layer(int(spec["seed"]), cfg, budget=budget, stall_kind=spec.get("stall_kind"),
                      force=spec.get("force"))


def _merge_design(*samples):
    """The union of design-side coverage samples (None if none was sampled)."""
    got = [d for d in samples if d is not None]
    if not got:
        return None
    return {a: sorted(set().union(*(d.get(a, ()) for d in got))) for a in got[0]}


def _inv_summary(sb, res):
    out = []
    for k, c in enumerate(sb.counters):
        out.append({"measured": sb.cycles[k], "status": c})
    return out


@cocotb.test()
async def run_layers(dut):
    """The job's layers back-to-back (random seeds and named layers)."""
    cfg, job = _job()
    env = ConvEnv(dut, cfg)
    await env.start()
    report = _Report()
    budget = job.get("budget", 30000)
    use_stalls = job.get("stalls", True)
    failures = []
    for spec in job.get("layers", []):
        t0 = time.perf_counter()
        seed = spec.get("seed", spec.get("stall_seed", 0))
        label = spec.get("named", f"seed {seed}")
        try:
            layer = _layer_of(spec, cfg, budget)
            run = prepare(layer, cfg)
            tags = layer_tags(run)
        except Exception as exc:      # a generator bug is a failure of this seed
            failures.append(f"{label}: could not build the layer: {exc!r}")
            report.add(spec=spec, ok=False, error=failures[-1], traceback=traceback.format_exc())
            continue
        stalls = layer.stalls if use_stalls else StallSpec()
        dut._log.info(f"{label}: {layer}; {run.n_inv} invocations"
                      f"{'' if use_stalls else ' (no stalls)'}")
        res = await env.run_layer(run, seed=seed, stalls=stalls)
        wall = time.perf_counter() - t0
        if res.design is not None:          # design-side coverage sampled from the DUT
            tags = dict(tags, dut=res.design)
        entry = dict(spec=spec, name=layer.name, ok=res.ok, error=res.error,
                     cycles=res.cycles, sim_cycles=res.sim_cycles, wall=wall, tags=tags,
                     invocations=run.n_inv, stalls=str(stalls))
        if job.get("detail"):
            entry["inv"] = _inv_summary(res.scoreboard, res)
            entry["results_sha"] = res.scoreboard.raw_sha
        report.add(**entry)
        if not res.ok:
            failures.append(res.error)
            dut._log.error(res.error)
            await env.reset()
        else:
            dut._log.info(f"{label}: ok, {res.cycles} cycles in {res.sim_cycles} simulated, "
                          f"{wall:.2f} s ({res.sim_cycles / max(wall, 1e-9):.0f} cycles/s)")
    assert not failures, f"{len(failures)} layer(s) failed; first: {failures[0]}"


@cocotb.test()
async def error_scenarios(dut):
    """Invalid descriptors, truncated and over-long streams: each reports its error
    bits, drains its streams, does not hang, and the next layer is exact."""
    cfg, job = _job()
    env = ConvEnv(dut, cfg)
    await env.start()
    report = _Report()
    base, nxt = scenario_layers(cfg, job.get("seed", 1))
    run_a, run_b = prepare(base, cfg), prepare(nxt, cfg)
    kinds = job.get("scenarios") or list(CORRUPTIONS)
    run_kinds = set(job.get("scenarios") or default_scenarios(cfg))
    failures = []
    res = await env.run_layer(run_a, label="clean ")
    if not res.ok:
        failures.append(res.error)
    for i, kind in enumerate(kinds):
        base_k = scenario_base(cfg, kind, job.get("seed", 1))
        if base_k is None or kind not in run_kinds:
            if base_k is None:
                why = ("not possible on this configuration: "
                       + ("no depthwise mapping" if kind.startswith("dw_") else
                          f"no kernel row span equals lb_rows={cfg.lb_rows}"))
            else:
                why = f"known hardware bug: {HW_BUGS[kind]}"
            # a skipped scenario ran nothing: recorded as neither passed nor failed
            report.add(scenario=kind, what=CORRUPTIONS[kind][0], ok=None, error=None,
                       status=None, skipped=why)
            continue
        streams, bad = corrupt(run_a if base_k.name == base.name else prepare(base_k, cfg), kind)
        r1 = await env.run_layer(bad, streams=streams, seed=i, label=f"{kind}: ")
        r2 = await env.run_layer(run_b, seed=i, label=f"after {kind}: ")
        ok = r1.ok and r2.ok
        err = r1.error or r2.error
        st = r1.scoreboard.counters[0] if r1.scoreboard.counters else None
        report.add(scenario=kind, what=CORRUPTIONS[kind][0], ok=ok, error=err, status=st,
                   dut=_merge_design(r1.design, r2.design))
        dut._log.info(f"{kind}: {'ok' if ok else 'FAIL'} "
                      f"({CORRUPTIONS[kind][0]}; status "
                      f"{L.ErrorFlag.describe(st['error']) if st else None})")
        if not ok:
            failures.append(err)
            await env.reset()
    assert not failures, f"{len(failures)} scenario(s) failed; first: {failures[0]}"


@cocotb.test()
async def reset_mid_layer(dut):
    """Reset in the middle of a layer (params, compute, result drain under
    back-pressure, a stream that stops without ``last``), then a clean exact layer.
    ``job["base"] == "dw"``: the layer reset is on the depthwise mapping."""
    cfg, job = _job()
    env = ConvEnv(dut, cfg)
    await env.start()
    report = _Report()
    base, nxt = scenario_layers(cfg, job.get("seed", 1))
    if job.get("base") == "dw":           # reset a layer on the depthwise mapping
        base = scenario_dw_layer(cfg, job.get("seed", 1))
        assert base is not None, f"{cfg} has no depthwise mapping"
    run_a, run_b = prepare(base, cfg), prepare(nxt, cfg)
    heavy = StallSpec("heavy", (("p", 0.0),) * 4, ("p", 0.9))
    clean = await env.run_layer(run_a)
    full = max(clean.sim_cycles, 20)
    failures = [] if clean.ok else [clean.error]
    points = job.get("reset_points", [2, 5, full // 4, full // 2, (3 * full) // 4])
    cases = [(p, None) for p in points] + [(full // 2, heavy)]
    for p, stalls in cases:
        r0 = await env.run_layer(run_a, stop_after=p, stalls=stalls, seed=p)
        active = int(env.dut.active.value)
        await env.reset()
        r1 = await env.run_layer(run_b, seed=p)
        ok = r1.ok and (r0.ok or r0.error is None)
        report.add(scenario=f"reset after {p} cycles{' (back-pressure)' if stalls else ''}",
                   ok=ok, error=r1.error, active_at_reset=active)
        if not ok:
            failures.append(r1.error)
            await env.reset()
    # a stream that stops without 'last': the watchdog fires, reset recovers
    streams = run_a.streams()
    streams[3] = streams[3][:-1]
    r = await env.run_layer(run_a, streams=streams, label="stream without last: ")
    fired = (not r.ok) and "watchdog" in (r.error or "")
    await env.reset()
    r1 = await env.run_layer(run_b)
    report.add(scenario="act stream stops before last -> watchdog -> reset", ok=fired and r1.ok,
               error=None if fired else f"watchdog did not fire: {r.error}")
    if not (fired and r1.ok):
        failures.append(r1.error or f"watchdog did not fire ({r.error})")
    assert not failures, f"{len(failures)} reset case(s) failed; first: {failures[0]}"
