"""Estimation commands: ``estimate``, ``sweep`` and ``synth``.

``python -m systolic_conv.estimate_cli <command> ...`` (to be wired into
``systolic-conv`` as subcommands of the same names).

estimate  cycles, utilization, traffic and the loss breakdown of a layer (torch
          flags), a layer list (JSON like bench/layers.json), a built-in network
          (--network resnet18|mobilenetv2|resnext50|seed) or a PyTorch model file;
          tables, JSON and a stacked utilization plot
sweep     array sizes x networks: cycles, utilization, PEs (and FPGA resources
          where synthesized), table and a Pareto plot; every point is a unit of work
          on a Dask farm (local cores, or --scheduler), recorded in the results
          database
synth     Yosys + nextpnr-ecp5 of a configuration: LUT4, FF, DSP, BRAM, Fmax and the
          critical path
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

__all__ = ["main", "layer_table", "breakdown_table", "plot_breakdown", "add_hw_args",
           "hw_from_args"]

# short column names of the breakdown components
SHORT = {"useful": "useful", "edge_cols": "edgeC", "edge_rows": "edgeR",
         "group_underfill": "group", "setup": "setup", "stall_input": "in",
         "stall_weight": "wgt", "stall_output": "out", "fill": "fill", "drain": "drain"}
COLORS = {"useful": "#2ca02c", "edge_cols": "#ff7f0e", "edge_rows": "#ffbb78",
          "group_underfill": "#d62728", "setup": "#7f7f7f", "stall_input": "#1f77b4",
          "stall_weight": "#9467bd", "stall_output": "#8c564b", "fill": "#e377c2",
          "drain": "#bcbd22"}


# ----------------------------------------------------------------------------- arguments

def add_hw_args(p):
    g = p.add_argument_group("hardware configuration (HardwareConfig fields)")
    g.add_argument("--rows", type=int, default=8)
    g.add_argument("--cols", type=int, default=8)
    g.add_argument("--data-width", type=int, default=8)
    g.add_argument("--acc-width", type=int, default=None)
    g.add_argument("--max-width", type=int, default=64)
    g.add_argument("--max-cwords", type=int, default=16)
    g.add_argument("--lb-rows", type=int, default=16)
    g.add_argument("--acc-depth", type=int, default=512)
    g.add_argument("--weight-depth", type=int, default=16384)
    g.add_argument("--max-cotiles", type=int, default=64)
    g.add_argument("--out-fifo-depth", type=int, default=64)
    g.add_argument("--hw-json", help="a HardwareConfig as JSON (rtl/config.json); "
                   "overrides the flags above")


def hw_from_args(args, **override):
    from .hw.config import HardwareConfig
    if getattr(args, "hw_json", None):
        d = json.loads(pathlib.Path(args.hw_json).read_text())
        d["faults"] = tuple(d.get("faults", ()))
        d.update(override)
        return HardwareConfig(**d)
    kw = dict(rows=args.rows, cols=args.cols, data_width=args.data_width,
              acc_width=args.acc_width, max_width=args.max_width, max_cwords=args.max_cwords,
              lb_rows=args.lb_rows, acc_depth=args.acc_depth, weight_depth=args.weight_depth,
              max_cotiles=args.max_cotiles, out_fifo_depth=args.out_fifo_depth)
    kw.update(override)
    return HardwareConfig(**kw)


def _pair(s):
    v = [int(t) for t in str(s).split(",")]
    return v[0] if len(v) == 1 else tuple(v)


def _padding(s):
    return s if s in ("same", "valid") else _pair(s)


def _layer_args(p):
    g = p.add_argument_group("one layer (torch.nn.Conv2d arguments)")
    g.add_argument("--n", type=int, default=1, help="batch")
    g.add_argument("--in-channels", type=int)
    g.add_argument("--out-channels", type=int)
    g.add_argument("--height", type=int)
    g.add_argument("--width", type=int)
    g.add_argument("--kernel-size", type=_pair, default=3)
    g.add_argument("--stride", type=_pair, default=1)
    g.add_argument("--padding", type=_padding, default=0)
    g.add_argument("--dilation", type=_pair, default=1)
    g.add_argument("--groups", type=int, default=1)
    g.add_argument("--padding-mode", default="zeros")
    g.add_argument("--bias", action="store_true")


class _Progress:
    """A one-line progress display on stderr (only on a terminal, or when forced)."""

    def __init__(self, label, force=False):
        self.label = label
        self.on = force or sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.shown = False

    def __call__(self, done, total, what=""):
        if not self.on:
            return
        el = time.perf_counter() - self.t0
        if el < 0.3 and done < total:
            return
        eta = el / done * (total - done) if done else 0
        sys.stderr.write(f"\r{self.label}: {done}/{total} {what[:40]:<40} "
                         f"{el:6.1f}s elapsed, ~{eta:5.1f}s left")
        sys.stderr.flush()
        self.shown = True

    def close(self):
        if self.shown:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


# ----------------------------------------------------------------------------- tables

def _fmt_bytes(b):
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= f:
            return f"{b / f:.1f}{unit}"
    return f"{b:.0f}B"


def layer_table(rows, clock_mhz):
    """``rows``: list of (layer label, Estimate). Returns the per-layer table text."""
    hdr = (f"| {'layer':<28} | {'shape':<30} | {'MACs':>13} | {'cycles':>12} | {'util':>6} | "
           f"{'act':>8} | {'weight':>8} | {'result':>8} | {'param':>7} | {'inv':>5} | "
           f"{'time us':>10} | {'GMAC/s':>7} |")
    out = [hdr, "|" + "|".join("-" * len(c) for c in hdr.split("|")[1:-1]) + "|"]
    tm = tc = 0
    tb = dict.fromkeys(("act", "weight", "result", "param", "desc"), 0.0)
    ninv = 0
    for label, shape, e in rows:
        tm += e.macs
        tc += e.cycles
        ninv += len(e.invocations)
        for k in tb:
            tb[k] += e.bytes[k]
        out.append(f"| {label[:28]:<28} | {shape[:30]:<30} | {e.macs:>13,} | {e.cycles:>12,} | "
                   f"{e.utilization:>6.1%} | {_fmt_bytes(e.bytes['act']):>8} | "
                   f"{_fmt_bytes(e.bytes['weight']):>8} | {_fmt_bytes(e.bytes['result']):>8} | "
                   f"{_fmt_bytes(e.bytes['param'] + e.bytes['desc']):>7} | "
                   f"{len(e.invocations):>5} | {e.latency_us(clock_mhz):>10,.1f} | "
                   f"{e.gmacs(clock_mhz):>7.2f} |")
    if len(rows) > 1:
        pes = rows[0][2].hw.pes
        util = tm / (pes * tc) if tc else 0
        out.append(f"| {'total':<28} | {str(len(rows)) + ' layers':<30} | {tm:>13,} | "
                   f"{tc:>12,} | {util:>6.1%} | {_fmt_bytes(tb['act']):>8} | "
                   f"{_fmt_bytes(tb['weight']):>8} | {_fmt_bytes(tb['result']):>8} | "
                   f"{_fmt_bytes(tb['param'] + tb['desc']):>7} | {ninv:>5} | "
                   f"{tc / clock_mhz:>10,.1f} | {tm / tc * clock_mhz / 1e3 if tc else 0:>7.2f} |")
    return "\n".join(out)


def breakdown_table(rows):
    """Per-layer loss breakdown (percent of the layer's cycles), plus the total."""
    from .cycle_model import COMPONENTS
    keys = list(COMPONENTS)
    hdr = f"| {'layer':<28} | " + " | ".join(f"{SHORT[k]:>6}" for k in keys) + " |"
    out = [hdr, "|" + "|".join("-" * len(c) for c in hdr.split("|")[1:-1]) + "|"]
    total = None
    for label, _shape, e in rows:
        b = e.breakdown
        total = b if total is None else total + b
        pct = b.percent
        out.append(f"| {label[:28]:<28} | " + " | ".join(f"{pct[k]:>5.1f}%" for k in keys) + " |")
    if total is not None and len(rows) > 1:
        pct = total.percent
        out.append(f"| {'total':<28} | " + " | ".join(f"{pct[k]:>5.1f}%" for k in keys) + " |")
    legend = "; ".join(f"{SHORT[k]} = {v}" for k, v in COMPONENTS.items())
    return "\n".join(out) + "\n(" + legend + ")"


def plot_breakdown(rows, path, title=""):
    """A stacked bar per layer: the share of its cycles by cause (useful at the bottom)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .cycle_model import COMPONENTS
    keys = list(COMPONENTS)
    n = len(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * n + 2.5), 4.8))
    bottom = [0.0] * n
    for k in keys:
        vals = [e.breakdown.percent[k] for _l, _s, e in rows]
        if not any(v > 0.05 for v in vals):
            continue
        ax.bar(range(n), vals, bottom=bottom, color=COLORS[k], label=SHORT[k] if k != "useful"
               else "useful (= utilization)", width=0.8)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(n))
    ax.set_xticklabels([l for l, _s, _e in rows], rotation=90, fontsize=7)
    ax.set_ylabel("% of the layer's cycles")
    ax.set_ylim(0, 100)
    ax.set_title(title or "utilization by loss cause")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- estimate

def _collect_layers(args):
    from .networks import LayerSpec, network, load_layers, layers_from_torch
    given = [bool(args.layers), bool(args.network), bool(args.model),
             args.in_channels is not None]
    if sum(given) != 1:
        raise SystemExit("give exactly one of: layer flags (--in-channels ...), --layers FILE, "
                         "--network NAME, --model FILE")
    if args.layers:
        return load_layers(args.layers), pathlib.Path(args.layers).name
    if args.network:
        return network(args.network), args.network
    if args.model:
        if not args.input_shape:
            raise SystemExit("--model needs --input-shape N,C,H,W")
        return layers_from_torch(args.model, _pair(args.input_shape)), \
            pathlib.Path(args.model).name
    for name in ("out_channels", "height", "width"):
        if getattr(args, name) is None:
            raise SystemExit(f"a layer needs --{name.replace('_', '-')}")
    layer = LayerSpec("layer", args.in_channels, args.height, args.width, args.out_channels,
                      args.kernel_size, args.stride, args.padding, args.dilation, args.groups,
                      args.bias, args.padding_mode, N=args.n)
    return [layer], "layer"


def cmd_estimate(args):
    from .networks import estimate_layers
    cfg = hw_from_args(args)
    layers, what = _collect_layers(args)
    prog = _Progress(f"estimating {what}", force=args.progress)
    t0 = time.perf_counter()
    try:
        ests = estimate_layers(layers, cfg, requant=args.requant, progress=prog)
    finally:
        prog.close()
    secs = time.perf_counter() - t0
    rows = [(l.name, str(l), e) for l, e in zip(layers, ests)]
    print(f"{what} on {cfg}")
    print(f"(cycles: descriptor handshake to final result, summed over invocations; "
          f"time and GMAC/s at {args.clock_mhz:g} MHz; analytic model, {secs * 1e3:.1f} ms)")
    print(layer_table(rows, args.clock_mhz))
    print()
    print("loss breakdown, % of each layer's cycles:")
    print(breakdown_table(rows))
    host = {}
    for e in ests:
        for k, v in e.host_work.items():
            host[k] = host.get(k, 0) + v
    if any(host.values()):
        print(f"host-side work beside the hardware: {host}")
    suggest = args.suggest if args.suggest is not None else len(rows) == 1
    if suggest:
        print()
        print("suggestions (model-evaluated alternative configurations):")
        seen = {}
        any_s = False
        for label, _s, e in rows:
            key = (e.geometry.input_shape, e.geometry.weight_shape, e.geometry.stride,
                   e.geometry.pad, e.geometry.dilation, e.geometry.groups)
            s = seen.get(key, False)
            if s is False:
                s = seen[key] = e.suggestion
            if s is not None:
                any_s = True
                print(f"  {label}: {s}")
        if not any_s:
            print("  none found that saves >= 3% of a layer's cycles")
    if args.plot:
        plot_breakdown(rows, args.plot, f"{what} on {cfg.rows}x{cfg.cols}: "
                       f"{sum(e.macs for e in ests) / (cfg.pes * sum(e.cycles for e in ests)):.1%}"
                       f" utilization")
        print(f"plot written to {args.plot}")
    if args.json:
        out = {"hw": cfg.to_dict(), "clock_mhz": args.clock_mhz, "layers": []}
        for l, e in zip(layers, ests):
            out["layers"].append({
                "layer": l.to_dict(), "macs": e.macs, "cycles": e.cycles,
                "utilization": e.utilization, "counters": e.counters, "bytes": e.bytes,
                "tensor_bytes": e.tensor_bytes, "invocations": len(e.invocations),
                "breakdown_cycles": e.breakdown.components, "host_work": e.host_work,
                "latency_us": e.latency_us(args.clock_mhz)})
        pathlib.Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"JSON written to {args.json}")
    return 0


# ----------------------------------------------------------------------------- sweep

def _parse_arrays(s):
    out = []
    for tok in s.split(","):
        r, _, c = tok.strip().lower().partition("x")
        out.append((int(r), int(c or r)))
    return out


def cmd_sweep(args):
    from .farm import db_arg
    from .results import open_run
    from .sweep import sweep, sweep_table, pareto_plot
    base = hw_from_args(args)
    arrays = _parse_arrays(args.arrays)
    nets = [n.strip() for n in args.networks.split(",") if n.strip()]
    prog = _Progress("sweep", force=args.progress)
    db = db_arg(args)
    with open_run(db, "sweep", name=f"sweep {args.arrays} x {args.networks}"
                  + (" + synth" if args.synth else ""), config=base.to_dict(),
                  simulator="model") as run:
        try:
            res = sweep(arrays, nets, base, jobs=args.jobs, synth=args.synth, progress=prog,
                        synth_dir=args.synth_dir, scheduler=args.scheduler, run=run)
        finally:
            prog.close()
        if run is not None:
            run.summary = {"arrays": args.arrays, "networks": nets, "synth": args.synth}
    print(sweep_table(res, args.clock_mhz))
    if args.plot:
        pareto_plot(res, args.plot, args.clock_mhz)
        print(f"Pareto plot written to {args.plot}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(res, indent=1))
        print(f"JSON written to {args.json}")
    if run is not None:
        print(f"run {run.id} recorded in {run.db.url}")
    return 0


# ----------------------------------------------------------------------------- synth

def cmd_synth(args):
    from .synth import synthesize, ceiling
    if args.ceiling:
        c = ceiling(device=args.device, speed=args.speed, package=args.package,
                    out_dir=args.out, seed=args.seed)
        print(c.summary())
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(c.to_dict(), indent=1))
            print(f"JSON written to {args.json}")
        return 0
    cfg = hw_from_args(args)
    from .farm import db_arg
    from .results import open_run
    from .sweep import synth_item
    from .synth import design_tag
    with open_run(db_arg(args), "synth", name=f"synth {cfg.rows}x{cfg.cols} ECP5-{args.device}",
                  config=cfg.to_dict(), simulator="yosys+nextpnr-ecp5") as run:
        rep = synthesize(cfg, device=args.device, package=args.package, wrapper=not args.ooc,
                         freq_mhz=args.freq, seed=args.seed, out_dir=args.out,
                         verbose=not args.quiet, timeout=args.timeout,
                         place_only=args.place_only, speed=args.speed, router=args.router,
                         density=args.density)
        if run is not None:
            run.add([synth_item(rep.to_dict(), f"synth:{design_tag(cfg)}-{args.device}"
                                f"-s{args.speed}{'' if rep.wrapper else '-ooc'}")])
    print(rep.summary())
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rep.to_dict(), indent=1))
        print(f"JSON written to {args.json}")
    return 0 if rep.ok else 1


# ----------------------------------------------------------------------------- main

def build_parser(prog="systolic-conv"):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    add_subcommands(sub)
    return p


def add_subcommands(sub):
    """Add ``estimate``, ``sweep`` and ``synth`` to an argparse subparsers object."""
    e = sub.add_parser("estimate", help="analytic cycles/utilization/traffic of layers")
    _layer_args(e)
    src = e.add_argument_group("layer sets")
    src.add_argument("--layers", help="JSON layer list (bench/layers.json format)")
    src.add_argument("--network", help="built-in network: resnet18, mobilenetv2, resnext50, "
                     "seed")
    src.add_argument("--model", help="a PyTorch model file (torch.save(model))")
    src.add_argument("--input-shape", help="N,C,H,W of the model's input (with --model)")
    add_hw_args(e)
    e.add_argument("--requant", choices=("tflite", "half_up"), default=None,
                   help="requantize in hardware (8-bit results)")
    e.add_argument("--clock-mhz", type=float, default=150.0)
    e.add_argument("--plot", help="write a per-layer stacked utilization plot (PNG/SVG/PDF)")
    e.add_argument("--json", help="write the per-layer figures as JSON")
    e.add_argument("--suggest", action=argparse.BooleanOptionalAction, default=None,
                   help="search alternative configurations per layer (default: for a "
                        "single layer)")
    e.add_argument("--progress", action="store_true", help="progress even when not a TTY")
    e.set_defaults(func=cmd_estimate, fn=cmd_estimate)

    s = sub.add_parser("sweep", help="array sizes x networks, table and Pareto plot")
    s.add_argument("--arrays", default="4x4,4x16,8x8,16x4,8x16,16x16,32x32")
    s.add_argument("--networks", default="resnet18,mobilenetv2,resnext50")
    add_hw_args(s)
    s.add_argument("--jobs", type=int, default=None,
                   help="worker processes of the local cluster (default: one per core)")
    s.add_argument("--synth", action="store_true",
                   help="also synthesize every array size (slow: minutes each)")
    s.add_argument("--synth-dir", default=None,
                   help="where synthesis reports are cached (default build/synth)")
    s.add_argument("--clock-mhz", type=float, default=150.0,
                   help="clock for sizes without a synthesized Fmax")
    s.add_argument("--plot", help="Pareto plot file")
    s.add_argument("--json")
    s.add_argument("--progress", action="store_true")
    from .farm import add_farm_args
    add_farm_args(s, quiet=False)
    s.set_defaults(func=cmd_sweep, fn=cmd_sweep)

    y = sub.add_parser("synth", help="FPGA synthesis + place and route (ECP5)")
    add_hw_args(y)
    y.add_argument("--device", default="85k", help="ECP5 device: 25k, 45k, 85k")
    y.add_argument("--package", default="CABGA381")
    y.add_argument("--speed", type=int, default=6, choices=(6, 7, 8),
                   help="speed grade (6 is the slowest and nextpnr's default)")
    y.add_argument("--ceiling", action="store_true",
                   help="measure the flow's ceiling instead: Fmax of a lone block-RAM read "
                        "and a lone DSP multiply, placed and routed on this device and grade")
    y.add_argument("--freq", type=float, default=150.0, help="target clock (MHz)")
    y.add_argument("--seed", type=int, default=1)
    y.add_argument("--ooc", action="store_true",
                   help="out-of-context (no I/O wrapper; optimistic)")
    y.add_argument("--out", default=None, help="work directory (default build/synth/<cfg>)")
    y.add_argument("--timeout", type=float, default=3600.0)
    y.add_argument("--place-only", action="store_true",
                   help="stop after placement: post-placement Fmax estimate, no critical path")
    y.add_argument("--router", default="router1", choices=("router1", "router2"),
                   help="nextpnr router (router2 is much faster on large arrays)")
    y.add_argument("--density", type=float, default=None,
                   help="placer's maximum placement density (nextpnr --placer-heap-beta, "
                        "default 0.9); lower spreads the logic for routability")
    y.add_argument("--json")
    y.add_argument("--quiet", action="store_true")
    add_farm_args(y, scheduler=False, quiet=False)
    y.set_defaults(func=cmd_synth, fn=cmd_synth)


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
