"""Command line: ``systolic-conv <command>`` (also ``python -m systolic_conv.cli``).

Commands
--------
demo      offload the seed's three nn_conv2d layers to the RTL, check them
          against the golden model (and PyTorch when installed), print cycles
          and utilization
rtl       write the Verilog of a hardware configuration (``--check DIR``: fail
          when DIR is stale)
plan      print the tiling plan of a layer
run       run one layer on a backend and print its statistics
estimate  analytic cycles, utilization breakdown and traffic of a layer, a layer
          list, a built-in network or a PyTorch model (table, plot)
sweep     array sizes x networks: cycles, utilization, resources, Pareto plot
synth     FPGA synthesis and place-and-route (ECP5, yowasp): LUT/FF/DSP/BRAM, Fmax
regress   random RTL regression (python -m systolic_conv.sim.regress)
mutate    fault injection and yosys mutants (python -m systolic_conv.sim.mutate)
report    the results database: latest runs, failures, flaky seeds, coverage, trends
farm      Slurm/LSF clusters for --scheduler (dask-jobqueue): job script, start one
"""

import argparse
import importlib
import json
import pathlib
import sys
import time

import numpy as np

__all__ = ["main"]


def _hw_args(p):
    from .estimate_cli import add_hw_args
    add_hw_args(p)


def _hw_from(args):
    from .estimate_cli import hw_from_args
    return hw_from_args(args)


def _pair(s):
    v = [int(t) for t in str(s).split(",")]
    return v[0] if len(v) == 1 else tuple(v)


def _layer_args(p):
    g = p.add_argument_group("layer (torch.nn.Conv2d arguments)")
    g.add_argument("--n", type=int, default=1)
    g.add_argument("--in-channels", type=int, required=True)
    g.add_argument("--out-channels", type=int, required=True)
    g.add_argument("--height", type=int, required=True)
    g.add_argument("--width", type=int, required=True)
    g.add_argument("--kernel-size", type=_pair, default=3)
    g.add_argument("--stride", type=_pair, default=1)
    g.add_argument("--padding", default="0")
    g.add_argument("--dilation", type=_pair, default=1)
    g.add_argument("--groups", type=int, default=1)
    g.add_argument("--padding-mode", default="zeros")
    g.add_argument("--bias", action="store_true")


def _padding(s):
    return s if s in ("same", "valid") else _pair(s)


def _geometry(args):
    from .contract import conv_geometry, normalize_pair
    kh, kw = normalize_pair(args.kernel_size, "kernel_size")
    return conv_geometry((args.n, args.in_channels, args.height, args.width),
                         (args.out_channels, args.in_channels // max(1, args.groups), kh, kw),
                         (args.out_channels,) if args.bias else None, stride=args.stride,
                         padding=_padding(args.padding), dilation=args.dilation,
                         groups=args.groups, padding_mode=args.padding_mode)


def cmd_rtl(args):
    from .hw.gen import generate_verilog, write_rtl, TOP_NAME
    cfg = _hw_from(args)
    if args.check:
        path = pathlib.Path(args.check) / f"{TOP_NAME}.v"
        want = generate_verilog(cfg)
        if not path.exists() or path.read_text() != want:
            print(f"{path} is stale: run `make rtl`", file=sys.stderr)
            return 1
        print(f"{path} is up to date ({len(want.splitlines())} lines)")
        return 0
    v = write_rtl(args.out, cfg)
    print(f"wrote {v} for {cfg}")
    return 0


def cmd_plan(args):
    from .planner import plan_layer
    print(plan_layer(_geometry(args), _hw_from(args)))
    return 0


def cmd_run(args):
    from . import conv2d
    geom = _geometry(args)
    rng = np.random.default_rng(args.seed)
    lim = 1 << (args.data_width - 1)
    x = rng.integers(-lim, lim, geom.input_shape)
    w = rng.integers(-lim, lim, geom.weight_shape)
    b = rng.integers(-1000, 1000, geom.C_out) if geom.has_bias else None
    kw = dict(stride=geom.stride, padding=_padding(args.padding), dilation=geom.dilation,
              groups=geom.groups, padding_mode=geom.padding_mode)
    out, st = conv2d(x, w, b, backend=args.backend, hw=_hw_from(args), return_stats=True, **kw)
    ref = conv2d(x, w, b, backend="golden", **kw)
    print(geom)
    print(st)
    print("bit-exact vs golden:", bool(np.array_equal(out, ref)))
    return 0 if np.array_equal(out, ref) else 1


# The seed's three examples (nn_conv2d reference page), at their true shapes.
SEED_LAYERS = [
    ("square_k3_s2", dict(out_channels=33, kernel_size=3, stride=2)),
    ("k3x5_s2x1_p4x2", dict(out_channels=33, kernel_size=(3, 5), stride=(2, 1), padding=(4, 2))),
    ("k3x5_s2x1_p4x2_d3x1", dict(out_channels=33, kernel_size=(3, 5), stride=(2, 1),
                                 padding=(4, 2), dilation=(3, 1))),
]


def cmd_demo(args):
    from .hw.config import HardwareConfig
    from .module import Conv2d
    cfg = HardwareConfig()
    try:
        import torch
    except ImportError:
        torch = None
    n = args.batch
    print(f"systolic-conv demo: the seed's nn_conv2d examples on {cfg}")
    print(f"input N={n} x 16 x 50 x 100 (int8), layers quantized from nn_conv2d's "
          f"initialisation; offloaded to the Verilated RTL, checked against the golden model"
          f"{' and PyTorch' if torch is not None else ' (PyTorch not installed)'}")
    rng = np.random.default_rng(args.seed)
    x = rng.integers(-128, 128, (n, 16, 50, 100))
    t_build = time.perf_counter()
    from .sim.harness import get_harness
    h = get_harness(cfg)
    print(f"RTL model ready ({h.build_seconds:.1f} s build or cache)")
    rows = []
    for name, kw in SEED_LAYERS:
        m = Conv2d(16, kw["out_channels"], kw["kernel_size"], stride=kw.get("stride", 1),
                   padding=kw.get("padding", 0), dilation=kw.get("dilation", 1), seed=args.seed)
        wq, bq = m.integer_weights()
        t0 = time.perf_counter()

        def progress(done, total, name=name):
            print(f"\r  {name}: {done}/{total} invocations", end="", flush=True)

        out, st = m.forward_int(x, backend="rtl", hw=cfg, return_stats=True, progress=progress)
        secs = time.perf_counter() - t0
        print()
        ref = m.forward_int(x, backend="golden")
        match = bool(np.array_equal(out, ref))
        tmatch = None
        if torch is not None:
            tw = torch.nn.functional.conv2d(
                torch.from_numpy(x.astype(np.float64)), torch.from_numpy(wq.astype(np.float64)),
                torch.from_numpy(bq.astype(np.float64)), stride=m.stride, padding=m.padding,
                dilation=m.dilation)
            tmatch = bool(np.array_equal(out, tw.numpy().astype(np.int64)))
        rows.append((name, tuple(out.shape), st.macs, st.cycles, st.utilization, match, tmatch,
                     st.sim_rate, secs))
    print()
    hdr = f"{'layer':<22} {'output shape':<18} {'MACs':>12} {'cycles':>11} {'util':>7} " \
          f"{'golden':>7} {'torch':>6} {'sim Mcyc/s':>10}"
    print(hdr)
    print("-" * len(hdr))
    for name, shape, macs, cyc, util, match, tmatch, rate, secs in rows:
        tm = "-" if tmatch is None else ("yes" if tmatch else "NO")
        print(f"{name:<22} {str(shape):<18} {macs:>12,} {cyc:>11,} {util:>7.1%} "
              f"{'yes' if match else 'NO':>7} {tm:>6} {rate / 1e6:>10.2f}")
    tot_m = sum(r[2] for r in rows)
    tot_c = sum(r[3] for r in rows)
    print(f"{'total':<22} {'':<18} {tot_m:>12,} {tot_c:>11,} "
          f"{tot_m / (cfg.pes * tot_c):>7.1%}")
    print(f"(cycles: descriptor handshake to final result, summed over invocations; "
          f"at a 100 MHz clock the three layers take {tot_c / 100e6 * 1e3:.1f} ms)")
    del t_build
    ok = all(r[5] and r[6] is not False for r in rows)
    print("ALL BIT-EXACT" if ok else "MISMATCH")
    return 0 if ok else 1


# commands whose own module parses the rest of the command line
FORWARD = {"regress": "systolic_conv.sim.regress", "mutate": "systolic_conv.sim.mutate"}


def cmd_report(args):
    from .report import main as report_main
    try:
        return report_main(args)
    except FileNotFoundError as exc:
        print(f"systolic-conv report: {exc}", file=sys.stderr)
        return 2


def _jobqueue_kwargs(args):
    return dict(cores=args.cores, memory=args.memory, walltime=args.walltime,
                queue=args.queue, account=args.account, venv=args.venv,
                processes=args.processes)


def cmd_farm(args):
    from .farm import jobqueue_cluster
    cluster = jobqueue_cluster(args.system, **_jobqueue_kwargs(args))
    try:
        if args.action == "script":
            print(cluster.job_script())
            return 0
        cluster.scale(jobs=args.jobs)
        print(f"{args.system} cluster: {args.jobs} batch jobs of {args.cores} cores requested; "
              f"scheduler at {cluster.scheduler_address}\n"
              f"submit with: systolic-conv regress ... --scheduler {cluster.scheduler_address}\n"
              "(Ctrl-C stops the scheduler and cancels the jobs)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.close()


def _add_farm_parser(sub):
    f = sub.add_parser("farm", help="Slurm/LSF worker clusters for --scheduler (dask-jobqueue)")
    f.add_argument("action", choices=("script", "up"),
                   help="script: print the batch job script; up: start the scheduler here, "
                        "submit --jobs batch jobs of workers, wait (Ctrl-C ends them)")
    f.add_argument("--system", required=True, choices=("slurm", "lsf"))
    f.add_argument("--jobs", type=int, default=1, help="batch jobs to submit (up)")
    f.add_argument("--cores", type=int, default=8, help="cores per batch job")
    f.add_argument("--processes", type=int, default=None,
                   help="worker processes per job (default: one per core)")
    f.add_argument("--memory", default="16GB", help="memory per batch job")
    f.add_argument("--walltime", default="04:00:00")
    f.add_argument("--queue", default=None, help="partition (Slurm) / queue (LSF)")
    f.add_argument("--account", default=None, help="account (Slurm) / project (LSF)")
    f.add_argument("--venv", default=None,
                   help="virtual environment the workers activate (default: this one)")
    f.set_defaults(fn=cmd_farm)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in FORWARD:
        try:
            return importlib.import_module(FORWARD[argv[0]]).main(argv[1:])
        except KeyboardInterrupt:
            print(f"systolic-conv {argv[0]}: interrupted (the run is recorded as interrupted)",
                  file=sys.stderr)
            return 130
    p = argparse.ArgumentParser(prog="systolic-conv", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, mod in FORWARD.items():      # listed in --help; main() forwards them
        sub.add_parser(name, help=f"see systolic-conv {name} --help ({mod})")

    rp = sub.add_parser("report", help="latest runs, failures, flaky seeds, coverage, trends "
                        "from the results database")
    rp.add_argument("--db", default=None, metavar="PATH|URL",
                    help="results database (default build/results.sqlite)")
    rp.add_argument("--html", default=None, metavar="DIR",
                    help="write a static page with plots (DIR/index.html)")
    rp.add_argument("--json", action="store_true", help="print the report's data as JSON")
    rp.add_argument("--limit", type=int, default=30, help="latest runs to list")
    rp.set_defaults(fn=cmd_report)
    _add_farm_parser(sub)

    d = sub.add_parser("demo", help="offload the seed's layers to the RTL and check them")
    d.add_argument("--batch", type=int, default=20)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(fn=cmd_demo)

    r = sub.add_parser("rtl", help="generate Verilog")
    _hw_args(r)
    r.add_argument("--out", default="rtl")
    r.add_argument("--check", default=None, metavar="DIR")
    r.set_defaults(fn=cmd_rtl)

    pl = sub.add_parser("plan", help="print the tiling plan of a layer")
    _hw_args(pl)
    _layer_args(pl)
    pl.set_defaults(fn=cmd_plan)

    ru = sub.add_parser("run", help="run one random-data layer on a backend")
    _hw_args(ru)
    _layer_args(ru)
    ru.add_argument("--backend", default="rtl")
    ru.add_argument("--seed", type=int, default=0)
    ru.set_defaults(fn=cmd_run)

    from .estimate_cli import add_subcommands
    add_subcommands(sub)

    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
