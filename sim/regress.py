"""Random RTL regression on cocotb (Verilator or Icarus).

    python -m systolic_conv.sim.regress --seeds 500 --sim verilator --hw small
    make regress SEEDS=500 SIM=icarus HW=small          # the same through make
    make regress SEEDS=5000 SIM=harness HW=square        # the compiled harness, no cocotb
    make regress SEED=1234 SIM=verilator HW=small WAVES=1   # replay one seed, FST waves

Each seed draws one random layer valid for the hardware (see
:func:`systolic_conv.sim.cocotb.layers.draw_layer`: kernels 1-7 incl. non-square,
stride 1-4, dilation 1-4, every padding form and mode, dense / grouped /
depthwise (with multiplier) layers, batches, channels around the array size,
both requant modes, full-range data) with a random stall pattern, plans it with
the host planner, streams its invocations back-to-back through the cocotb
testbench and checks them against the golden model. Seeds run in chunks, one
simulator process per chunk, ``--jobs`` at a time. Every failure prints its seed
and a one-line replay command; the end prints a summary table and the
functional coverage (``--coverage`` adds Verilator line/toggle coverage).
"""

import argparse
import concurrent.futures as cf
import json
import os
import pathlib
import sys
import time

from .cocotb.layers import hw_config, HW_CONFIGS
from .cocotb.coverage import Coverage, verilator_coverage
from .cocotb.runner import build, run_job, SIMULATORS, simulator_available
from .toolchain import build_root, prune_builds

__all__ = ["main", "regress"]


def _replay(seed, sim, hw, waves=False):
    return (f"make regress SEED={seed} SIM={sim} HW={hw}" + (" WAVES=1" if waves else "")
            + f"   # or: python -m systolic_conv.sim.regress --seed {seed} --sim {sim} --hw {hw}")


def regress(seeds, *, sim="verilator", hw="small", jobs=2, chunk=None, waves=False,
            coverage_rtl=False, budget=30000, out=None, quiet=False):
    """Run ``seeds``; return the summary dict (also written to ``out``)."""
    cfg = hw_config(hw)
    hw_name = hw if isinstance(hw, str) else cfg.name()
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    if sim == "harness":
        return _regress_harness(seeds, cfg, hw_name, budget, out, say)
    t0 = time.perf_counter()
    b = build(cfg, sim, waves=waves, coverage=coverage_rtl)
    say(f"== regress: {len(seeds)} seeds on {sim}, hardware {hw_name} = {cfg}; "
        f"build {b.dir.name} ({b.seconds:.1f} s)")
    seeds = list(seeds)
    if chunk is None:
        chunk = max(1, min(25, -(-len(seeds) // max(1, jobs * 2))))
    chunks = [seeds[i:i + chunk] for i in range(0, len(seeds), chunk)]
    root = build_root() / f"regress-{sim}-{hw_name}-{os.getpid()}"
    prune_builds(f"regress-{sim}-{hw_name}-", keep=2)    # earlier runs' work directories
    cov = Coverage.for_config(cfg)
    entries, failures, crashed = [], [], []
    done = 0
    sim_cycles = 0

    def work(i, part):
        job = {"layers": [{"seed": s} for s in part], "budget": budget}
        return part, run_job(b, "run_layers", job, test_dir=root / f"chunk{i:04d}", waves=waves)

    with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        futs = [ex.submit(work, i, part) for i, part in enumerate(chunks)]
        for fut in cf.as_completed(futs):
            try:
                part, res = fut.result()
            except Exception as exc:           # the simulator itself failed
                crashed.append(repr(exc))
                say(f"!! a simulator run crashed: {exc!r}"[:2000])
                continue
            seen = {e["spec"]["seed"] for e in res.entries if "spec" in e}
            for s in part:
                if s not in seen:      # the run died before reaching this seed
                    failures.append({"seed": s, "error": "simulation ended before this seed "
                                     f"(see {res.test_dir / 'sim.log'})"})
            for e in res.entries:
                entries.append(e)
                if e.get("tags"):
                    cov.sample(e["tags"])
                sim_cycles += e.get("sim_cycles") or 0
                if not e.get("ok"):
                    s = e["spec"]["seed"]
                    failures.append({"seed": s, "error": e.get("error")})
                    say(f"FAIL seed {s}: {e.get('error')}\n     replay: {_replay(s, sim, hw_name)}")
            done += len(part)
            el = time.perf_counter() - t0
            rate = sim_cycles / el if el else 0
            eta = el / done * (len(seeds) - done)
            say(f"[{done:>5}/{len(seeds)}] pass {done - len(failures):>5} fail {len(failures):>3}"
                f"  {sim_cycles / 1e6:7.2f} M cycles  {rate / 1e3:6.1f} k cycles/s  "
                f"elapsed {el:6.0f} s  eta {eta:5.0f} s")
    wall = time.perf_counter() - t0
    by_seed = {e["spec"]["seed"]: e for e in entries if "spec" in e}
    summary = {
        "sim": sim, "hw": hw_name, "config": cfg.to_dict(), "seeds": len(seeds),
        "passed": sum(1 for s in seeds if by_seed.get(s, {}).get("ok")),
        "failed": sorted({f["seed"] for f in failures}), "crashed": crashed,
        "sim_cycles": sim_cycles, "wall_seconds": wall,
        "cycles_per_second": sim_cycles / wall if wall else 0,
        "coverage": cov.summary(), "failures": failures[:50],
    }
    # summary table
    say("")
    say(f"{'sim':<10} {'hw':<8} {'seeds':>6} {'passed':>7} {'failed':>7} {'M cycles':>9} "
        f"{'wall s':>8} {'k cyc/s':>8}")
    say(f"{sim:<10} {hw_name:<8} {len(seeds):>6} {summary['passed']:>7} "
        f"{len(summary['failed']):>7} {sim_cycles / 1e6:>9.2f} {wall:>8.1f} "
        f"{summary['cycles_per_second'] / 1e3:>8.1f}")
    if failures:
        say("\nfailing seeds (replay one with the command shown):")
        for f in failures[:20]:
            say(f"  seed {f['seed']}: {str(f['error'])[:300]}\n    {_replay(f['seed'], sim, hw_name)}")
    say("")
    say(cov.report())
    if coverage_rtl:
        dats = sorted(root.glob("chunk*/coverage.dat"))
        rtl_sum, text = verilator_coverage(dats, out_dir=root / "coverage")
        summary["rtl_coverage"] = rtl_sum
        say("")
        say(text)
    if waves:
        for f in sorted(root.glob("chunk*/*.fst")) + sorted(b.dir.glob("sim/*.fst")):
            say(f"waves: {f}")
    out = pathlib.Path(out) if out else build_root() / f"regress-{sim}-{hw_name}.json"
    out.write_text(json.dumps(summary, indent=1, default=str))
    say(f"\nsummary written to {out}")
    return summary


def _regress_harness(seeds, cfg, hw_name, budget, out, say):
    """The same seeds on the compiled harness, in process (no cocotb): a fast bulk check."""
    from .cocotb.layers import draw_layer, prepare, layer_tags
    from .cocotb.fastpath import run_on_harness
    from .harness import get_harness
    t0 = time.perf_counter()
    h = get_harness(cfg)
    say(f"== regress: {len(seeds)} seeds on the compiled harness, hardware {hw_name} = {cfg}")
    cov = Coverage.for_config(cfg)
    failures, sim_cycles, passed = [], 0, 0
    for i, s in enumerate(seeds):
        try:
            run = prepare(draw_layer(s, cfg, budget=budget), cfg)
            cov.sample(layer_tags(run))
            sb, hr = run_on_harness(run, harness=h, seed=s)
            sim_cycles += hr.sim_cycles
            err = sb.first_failure()
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
        if err:
            failures.append({"seed": s, "error": err})
            say(f"FAIL seed {s}: {err}\n     replay: {_replay(s, 'harness', hw_name)}")
        else:
            passed += 1
        if (i + 1) % 100 == 0 or i + 1 == len(seeds):
            say(f"[{i + 1:>5}/{len(seeds)}] pass {passed:>5} fail {len(failures):>3}  "
                f"{sim_cycles / 1e6:7.2f} M cycles  elapsed {time.perf_counter() - t0:6.0f} s")
    wall = time.perf_counter() - t0
    summary = {"sim": "harness", "hw": hw_name, "config": cfg.to_dict(), "seeds": len(seeds),
               "passed": passed, "failed": [f["seed"] for f in failures], "crashed": [],
               "sim_cycles": sim_cycles, "wall_seconds": wall,
               "coverage": cov.summary(), "failures": failures[:50]}
    say(f"\n{'sim':<10} {'hw':<8} {'seeds':>6} {'passed':>7} {'failed':>7} {'M cycles':>9} "
        f"{'wall s':>8}")
    say(f"{'harness':<10} {hw_name:<8} {len(seeds):>6} {passed:>7} {len(failures):>7} "
        f"{sim_cycles / 1e6:>9.2f} {wall:>8.1f}\n")
    say(cov.report())
    out = pathlib.Path(out) if out else build_root() / f"regress-harness-{hw_name}.json"
    out.write_text(json.dumps(summary, indent=1, default=str))
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m systolic_conv.sim.regress",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=50, help="number of random seeds")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, action="append",
                    help="run just this seed (replay; may repeat)")
    ap.add_argument("--sim", default="verilator", choices=SIMULATORS + ("harness",),
                    help="cocotb on verilator/icarus, or the compiled harness (fast bulk check)")
    ap.add_argument("--hw", default="small",
                    help=f"hardware config: {', '.join(HW_CONFIGS)} or a JSON dict")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=None, help="seeds per simulator run")
    ap.add_argument("--budget", type=int, default=30000, help="estimated cycles per layer")
    ap.add_argument("--waves", action="store_true", default=os.environ.get("WAVES") == "1",
                    help="dump FST waves (also WAVES=1)")
    ap.add_argument("--coverage", action="store_true",
                    help="Verilator --coverage build; report line/toggle coverage")
    ap.add_argument("--out", default=None, help="summary JSON path")
    args = ap.parse_args(argv)
    if args.sim != "harness" and not simulator_available(args.sim):
        print(f"!! {args.sim} is not available on this machine", file=sys.stderr)
        return 2
    seeds = args.seed if args.seed else list(range(args.first_seed, args.first_seed + args.seeds))
    if args.coverage and args.sim != "verilator":
        ap.error("--coverage needs --sim verilator")
    s = regress(seeds, sim=args.sim, hw=args.hw, jobs=args.jobs, chunk=args.chunk,
                waves=args.waves, coverage_rtl=args.coverage, budget=args.budget, out=args.out)
    return 1 if (s["failed"] or s["crashed"]) else 0


if __name__ == "__main__":
    sys.exit(main())
