"""Simulation speed: simulated cycles per second of the three RTL paths, side by side.

    .venv/bin/python bench/sim_speed.py [--hw default] [--layer resnet18_3x3] [--runs 3]

* cocotb 2.1 testbench on Verilator (``sim/cocotb``, per-cycle Python),
* the same cocotb testbench on Icarus Verilog,
* the compiled Verilator batch harness (``sim/harness.py``, whole streams per call),

on one named layer (default: a ResNet-18 3x3 layer, 64 -> 64 channels at 8x8
spatial, on the default 8x8 array), inputs always valid and the output always
ready. Each path runs the layer ``--runs`` times; the table shows the medians
(cocotb: cycles of the layer over the wall time of the layer inside the
simulator, start-up excluded) and the ratios; ``setup s`` is the build, or generating
the Verilog and finding the cached build. Not a test: nothing fails on a time.
"""

import argparse
import statistics
import sys
import time

from systolic_conv.sim.cocotb.layers import hw_config, named_layer, prepare, NAMED_LAYERS
from systolic_conv.sim.cocotb.fastpath import run_on_harness
from systolic_conv.sim.cocotb import runner as R
from systolic_conv.sim.harness import get_harness


def cocotb_rates(cfg, sim, layer, runs):
    t0 = time.perf_counter()
    b = R.build(cfg, sim)
    build_s = time.perf_counter() - t0
    job = {"layers": [{"named": layer}] * runs, "stalls": False}
    res = R.run_job(b, "run_layers", job)
    if not res.ok:
        raise RuntimeError(f"{sim}: the layer failed: {res.failures()[:1]}")
    rates = [e["sim_cycles"] / e["wall"] for e in res.entries]
    return rates, res.entries[0]["sim_cycles"], build_s, res.seconds


def harness_rates(cfg, layer, runs):
    t0 = time.perf_counter()
    h = get_harness(cfg)
    build_s = time.perf_counter() - t0
    run = prepare(named_layer(layer), cfg)
    rates, cyc = [], 0
    for _ in range(runs):
        sb, hr = run_on_harness(run, harness=h, stalls=False)
        if not sb.ok:
            raise RuntimeError(f"harness: {sb.first_failure()}")
        rates.append(hr.sim_cycles / hr.seconds)
        cyc = hr.sim_cycles
    return rates, cyc, build_s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hw", default="default")
    ap.add_argument("--layer", default="resnet18_3x3", choices=list(NAMED_LAYERS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-icarus", action="store_true")
    ap.add_argument("--db", default=None, help="results database (default build/results.sqlite)")
    ap.add_argument("--no-db", action="store_true", help="record nothing")
    args = ap.parse_args(argv)
    cfg = hw_config(args.hw)
    print(f"layer {args.layer} on {cfg}; {args.runs} runs per path, medians")
    rows = []
    r, cyc, bs = harness_rates(cfg, args.layer, args.runs)
    rows.append(("compiled harness (Verilator, ctypes)", statistics.median(r), cyc, bs, r))
    r, cyc, bs, _ = cocotb_rates(cfg, "verilator", args.layer, args.runs)
    rows.append(("cocotb 2.1 + Verilator 5.048", statistics.median(r), cyc, bs, r))
    if not args.skip_icarus and R.simulator_available("icarus"):
        r, cyc, bs, _ = cocotb_rates(cfg, "icarus", args.layer, args.runs)
        rows.append(("cocotb 2.1 + Icarus 11", statistics.median(r), cyc, bs, r))
    elif not args.skip_icarus:
        print("!! Icarus Verilog not installed: its row is missing")
    base = rows[1][1]
    print(f"\n{'path':<38} {'cycles':>8} {'cycles/s':>12} {'vs cocotb+Verilator':>20} "
          f"{'setup s':>8}  runs (cycles/s)")
    for name, med, cyc, bs, r in rows:
        print(f"{name:<38} {cyc:>8} {med:>12,.0f} {med / base:>19.2f}x {bs:>8.1f}  "
              + ", ".join(f"{v:,.0f}" for v in r))
    if not args.no_db:
        from systolic_conv.results import record_run
        rid = record_run("bench", [{"key": name, "outcome": "ok", "metrics": {
            "cycles_per_s": med, "cycles": cyc, "setup_s": bs, "runs": r,
            "vs_cocotb_verilator": med / base}} for name, med, cyc, bs, r in rows],
            db=args.db, name=f"sim_speed {args.layer}", config=cfg.to_dict(),
            simulator="harness,verilator,icarus")
        print(f"(recorded as run {rid} in the results database)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
