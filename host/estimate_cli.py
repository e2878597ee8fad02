"""Estimation commands of ``systolic-conv``: ``estimate``, ``sweep`` and ``synth``.

(Also ``python -m systolic_conv.estimate_cli <command> ...``, with the same flags.)

estimate  cycles, utilization, traffic and the loss breakdown of a layer (torch
          flags), a layer file (JSON like bench/layers.json), a built-in network
          or a PyTorch model file; tables, JSON and a stacked utilization plot
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
import sys
import time

from .cli_common import (HelpFormatter, UsageError, add_hw_args, common_parser,
                         existing_file, hw_from_args, int_pair, nonneg_int,
                         output_dir, output_file, padding_arg, positive_float, positive_int,
                         run_command, version_string)

__all__ = ["main", "build_parser", "add_subcommands", "layer_table", "breakdown_table",
           "plot_breakdown", "add_layer_args", "add_clock_arg", "layer_from_args",
           "PLOT_SUFFIXES", "LAYER_SIZES"]

# short column names of the breakdown components
SHORT = {"useful": "useful", "edge_cols": "edgeC", "edge_rows": "edgeR",
         "group_underfill": "group", "setup": "setup", "stall_input": "in",
         "stall_weight": "wgt", "stall_output": "out", "fill": "fill", "drain": "drain"}
COLORS = {"useful": "#2ca02c", "edge_cols": "#ff7f0e", "edge_rows": "#ffbb78",
          "group_underfill": "#d62728", "setup": "#7f7f7f", "stall_input": "#1f77b4",
          "stall_weight": "#9467bd", "stall_output": "#8c564b", "fill": "#e377c2",
          "drain": "#bcbd22"}
#: Plot formats (matplotlib backends available everywhere).
PLOT_SUFFIXES = (".png", ".svg", ".pdf")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
#: The layer flags without a default (destinations).
LAYER_SIZES = ("in_channels", "out_channels", "height", "width")


# ----------------------------------------------------------------------------- arguments

def add_layer_args(p, required=False):
    """``nn.Conv2d`` flags of one layer (with its input size).

    ``required``: True makes argparse require the sizes; a string (e.g. ``"without
    --tflite"``) only says so in their help, the command's prepare step checks them.
    """
    g = p.add_argument_group("one layer (torch.nn.Conv2d arguments and its input size)")
    g.add_argument("--n", type=positive_int, default=1, help="batch size N")
    note = "" if not required else " (required)" if required is True else \
        f" (required {required})"
    for name, what in (("in-channels", "input channels C_in"),
                       ("out-channels", "output channels C_out"),
                       ("height", "input height H"), ("width", "input width W")):
        g.add_argument(f"--{name}", type=positive_int, required=required is True, default=None,
                       help=what + note)
    g.add_argument("--kernel-size", type=int_pair, default=3, help="kernel size: K or KH,KW")
    g.add_argument("--stride", type=int_pair, default=1, help="stride: S or SH,SW")
    g.add_argument("--padding", type=padding_arg, default=0,
                   help="padding: P, PH,PW, 'same' or 'valid'")
    g.add_argument("--dilation", type=int_pair, default=1, help="dilation: D or DH,DW")
    g.add_argument("--groups", type=positive_int, default=1, help="groups")
    g.add_argument("--padding-mode", default="zeros", choices=PADDING_MODES,
                   help="padding mode")
    g.add_argument("--bias", action="store_true", help="the layer has a bias")


def layer_from_args(args, missing="required for a layer given by flags"):
    """A validated :class:`~.networks.LayerSpec` from the layer flags (``missing``: the
    message when a size flag is not given)."""
    from .networks import LayerSpec
    for name in LAYER_SIZES:
        if getattr(args, name) is None:
            raise UsageError(f"--{name.replace('_', '-')}", missing)
    layer = LayerSpec("layer", args.in_channels, args.height, args.width, args.out_channels,
                      args.kernel_size, args.stride, args.padding, args.dilation, args.groups,
                      args.bias, args.padding_mode, N=args.n)
    try:
        layer.geometry()        # nn.Conv2d's checks
    except (TypeError, ValueError) as exc:
        import re
        m = re.match(r"^(\w+)=", str(exc))
        flag = _LAYER_FLAGS.get(m.group(1)) if m else None
        raise UsageError(flag, str(exc)) from None
    return layer


# parameter names in the contract's messages -> the flag that sets them
_LAYER_FLAGS = {"in_channels": "--in-channels", "out_channels": "--out-channels",
                "groups": "--groups", "stride": "--stride", "padding": "--padding",
                "dilation": "--dilation", "kernel_size": "--kernel-size",
                "padding_mode": "--padding-mode"}


def _progress(args, desc, unit):
    from .progress import ProgressBar
    return ProgressBar(desc, unit=unit, force=getattr(args, "progress", False))


def _needs_matplotlib(args, flag="--plot"):
    if getattr(args, "plot", None):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError(flag, "needs matplotlib (pip install 'systolic-conv[model]')") \
                from None


# ----------------------------------------------------------------------------- tables

def _fmt_bytes(b):
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= f:
            return f"{b / f:.1f}{unit}"
    return f"{b:.0f}B"


def _time_cells(e_cycles, e_macs, clock_mhz):
    if clock_mhz is None:
        return f"{'-':>10} | {'-':>7}"
    gmacs = e_macs / e_cycles * clock_mhz / 1e3 if e_cycles else 0.0
    return f"{e_cycles / clock_mhz:>10,.1f} | {gmacs:>7.2f}"


def layer_table(rows, clock_mhz):
    """``rows``: list of (label, shape, Estimate); ``clock_mhz`` None leaves the
    time and GMAC/s columns empty. Returns the per-layer table text."""
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
                   f"{len(e.invocations):>5} | {_time_cells(e.cycles, e.macs, clock_mhz)} |")
    if len(rows) > 1:
        pes = rows[0][2].hw.pes
        util = tm / (pes * tc) if tc else 0
        out.append(f"| {'total':<28} | {str(len(rows)) + ' layers':<30} | {tm:>13,} | "
                   f"{tc:>12,} | {util:>6.1%} | {_fmt_bytes(tb['act']):>8} | "
                   f"{_fmt_bytes(tb['weight']):>8} | {_fmt_bytes(tb['result']):>8} | "
                   f"{_fmt_bytes(tb['param'] + tb['desc']):>7} | {ninv:>5} | "
                   f"{_time_cells(tc, tm, clock_mhz)} |")
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
    from .networks import network, load_layers, layers_from_torch
    given = {"--layers": args.layers is not None, "--network": args.network is not None,
             "--model": args.model is not None,
             "--in-channels": args.in_channels is not None}
    chosen = [k for k, v in given.items() if v]
    if len(chosen) != 1:
        raise UsageError(None, "give exactly one of: layer flags (--in-channels ...), "
                         "--layers FILE, --network NAME, --model FILE"
                         + (f" (got {', '.join(chosen)})" if chosen else ""))
    if args.input_shape is not None and not args.model:
        raise UsageError("--input-shape", "only with --model")
    if args.layers:
        return load_layers(args.layers), args.layers.name
    if args.network:
        return network(args.network), args.network
    if args.model:
        if args.input_shape is None:
            raise UsageError("--input-shape", "required with --model (N,C,H,W)")
        try:
            return layers_from_torch(str(args.model), args.input_shape), args.model.name
        except ImportError:
            raise UsageError("--model", "needs torch (pip install 'systolic-conv[test]')") \
                from None
        except Exception as exc:     # noqa: BLE001 -- not a model, or a model that fails
            raise UsageError("--model", f"cannot run {str(args.model)!r} on an input of "
                             f"shape {args.input_shape}: {_first_line(exc)}") from None
    return [layer_from_args(args)], "layer"


def _first_line(exc):
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _input_shape(text):
    parts = [int(t) for t in text.split(",")]
    if len(parts) != 4 or min(parts) < 1:
        raise ValueError
    return tuple(parts)


def prepare_estimate(args):
    from .clocks import resolve_clock
    _needs_matplotlib(args)
    cfg = hw_from_args(args)
    layers, what = _collect_layers(args)
    clock, clock_text = resolve_clock(cfg, args.clock_mhz)
    return cfg, layers, what, clock, clock_text


def run_estimate(args, prepared):
    from .networks import estimate_layers
    cfg, layers, what, clock, clock_text = prepared
    t0 = time.perf_counter()
    with _progress(args, f"estimating {what}", "layer") as prog:
        ests = estimate_layers(layers, cfg, requant=args.requant, progress=prog)
    secs = time.perf_counter() - t0
    rows = [(l.name, str(l), e) for l, e in zip(layers, ests)]
    print(f"{what} on {cfg}")
    print(f"(cycles: descriptor handshake to final result, summed over invocations; "
          f"analytic model, {secs * 1e3:.1f} ms; time and GMAC/s: {clock_text})")
    print(layer_table(rows, clock))
    print()
    print("loss breakdown, % of each layer's cycles:")
    print(breakdown_table(rows))
    _print_host_work(ests)
    suggest = args.suggest if args.suggest is not None else len(rows) == 1
    if suggest:
        _print_suggestions(rows)
    if args.plot:
        plot_breakdown(rows, args.plot, f"{what} on {cfg.rows}x{cfg.cols}: "
                       f"{sum(e.macs for e in ests) / (cfg.pes * sum(e.cycles for e in ests)):.1%}"
                       f" utilization")
        print(f"plot written to {args.plot}")
    if args.json:
        _write_json(args.json, _estimate_json(cfg, clock, layers, ests))
    return 0


def _print_host_work(ests):
    host = {}
    for e in ests:
        for k, v in e.host_work.items():
            host[k] = host.get(k, 0) + v
    if any(host.values()):
        print(f"host-side work beside the hardware: {host}")


def _print_suggestions(rows):
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


def _estimate_json(cfg, clock, layers, ests):
    out = {"hw": cfg.to_dict(), "clock_mhz": clock, "layers": []}
    for l, e in zip(layers, ests):
        out["layers"].append({
            "layer": l.to_dict(), "macs": e.macs, "cycles": e.cycles,
            "utilization": e.utilization, "counters": e.counters, "bytes": e.bytes,
            "tensor_bytes": e.tensor_bytes, "invocations": len(e.invocations),
            "breakdown_cycles": e.breakdown.components, "host_work": e.host_work,
            "latency_us": None if clock is None else e.latency_us(clock)})
    return out


def _write_json(path, data):
    path.write_text(json.dumps(data, indent=1))
    print(f"JSON written to {path}")


# ----------------------------------------------------------------------------- sweep

def _arrays(text):
    out = []
    for tok in text.split(","):
        r, _, c = tok.strip().lower().partition("x")
        try:
            rc = (int(r), int(c or r))
        except ValueError:
            rc = None
        if rc is None or min(rc) < 1:
            raise argparse.ArgumentTypeError(
                f"must be a list of ROWSxCOLS with positive sizes (e.g. 4x4,8x8), "
                f"not {tok.strip()!r}")
        out.append(rc)
    return out


def _networks(text):
    from .networks import NETWORKS
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in NETWORKS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"{bad[0] if bad else text!r} is not a network; choose from "
            f"{', '.join(NETWORKS)} (comma-separated)")
    return names


def prepare_sweep(args):
    from .clocks import check_clock
    from .farm import check_farm_args
    _needs_matplotlib(args)
    base = hw_from_args(args)
    for r, c in args.arrays:        # every configuration is valid before any work
        hw_from_args(args, rows=r, cols=c)
    return base, check_clock(args.clock_mhz), check_farm_args(args)


def run_sweep(args, prepared):
    from .results import open_run
    from .sweep import sweep, sweep_table, pareto_plot
    base, clock, db = prepared
    arrays = ",".join(f"{r}x{c}" for r, c in args.arrays)
    with open_run(db, "sweep", name=f"sweep {arrays} x {','.join(args.networks)}"
                  + (" + synth" if args.synth else ""), config=base.to_dict(),
                  simulator="model") as run:
        with _progress(args, "sweep", "point") as prog:
            res = sweep(args.arrays, args.networks, base, jobs=args.jobs, synth=args.synth,
                        progress=prog, synth_dir=args.synth_dir, scheduler=args.scheduler,
                        run=run)
        if run is not None:
            run.summary = {"arrays": arrays, "networks": args.networks, "synth": args.synth}
    print(sweep_table(res, clock))
    if args.plot:
        pareto_plot(res, args.plot, clock)
        print(f"Pareto plot written to {args.plot}")
    if args.json:
        _write_json(args.json, res)
    if run is not None:
        print(f"run {run.id} recorded in {run.db.url}")
    return 0


# ----------------------------------------------------------------------------- synth

def prepare_synth(args):
    from .farm import check_farm_args
    if args.ceiling:
        return None, False
    return hw_from_args(args), check_farm_args(args)


def run_synth(args, prepared):
    from .results import open_run
    from .sweep import synth_item
    from .synth import synthesize, ceiling, design_tag
    cfg, db = prepared
    if args.ceiling:
        c = ceiling(device=args.device, speed=args.speed, package=args.package,
                    out_dir=args.out, seed=args.seed)
        print(c.summary())
        if args.json:
            _write_json(args.json, c.to_dict())
        return 0
    with open_run(db, "synth", name=f"synth {cfg.rows}x{cfg.cols} ECP5-{args.device}",
                  config=cfg.to_dict(), simulator="yosys+nextpnr-ecp5") as run:
        rep = synthesize(cfg, device=args.device, package=args.package, wrapper=not args.ooc,
                         freq_mhz=args.freq, seed=args.seed, out_dir=args.out,
                         verbose=not args.quiet, timeout=args.timeout,
                         place_only=args.place_only, speed=args.speed, router=args.router,
                         density=args.density, block=args.block, widelut=not args.no_widelut)
        if run is not None:
            blk = "" if args.block == "accelerator" else f"-{args.block}"
            run.add([synth_item(rep.to_dict(), f"synth:{design_tag(cfg)}-{args.device}"
                                f"-s{args.speed}{'' if rep.wrapper else '-ooc'}{blk}")])
    print(rep.summary())
    if args.json:
        _write_json(args.json, rep.to_dict())
    return 0 if rep.ok else 1


# ----------------------------------------------------------------------------- parser

def _sub(sub, name, help, prepare, run, description=None):
    p = sub.add_parser(name, help=help, description=description or help,
                       formatter_class=HelpFormatter, parents=[common_parser()])
    p.set_defaults(prepare=prepare, run=run, subparser=p)
    return p


def add_clock_arg(p, what="times"):
    """``--clock-mhz``, documented with the clock rule of :mod:`.clocks`."""
    from .clocks import CLOCK_POLICY
    p.add_argument("--clock-mhz", type=positive_float, default=None,
                   help=f"clock for {what}: {CLOCK_POLICY}")


def add_subcommands(sub):
    """Add ``estimate``, ``sweep`` and ``synth`` to an argparse subparsers object."""
    from .networks import NETWORKS
    from .farm import add_farm_args
    from .synth import DEVICES, ROUTERS, SPEEDS
    from .hw.blocks import blocks as hw_blocks
    e = _sub(sub, "estimate", "analytic cycles, utilization and traffic of layers",
             prepare_estimate, run_estimate)
    add_layer_args(e)
    src = e.add_argument_group("layer sets (instead of the layer flags)")
    src.add_argument("--layers", type=existing_file, metavar="FILE",
                     help="JSON layer file (the format of bench/layers.json)")
    src.add_argument("--network", choices=tuple(NETWORKS), help="a built-in network")
    src.add_argument("--model", type=existing_file, metavar="FILE",
                     help="a PyTorch model file (torch.save(model))")
    src.add_argument("--input-shape", type=_input_shape_type, metavar="N,C,H,W",
                     help="input shape of --model")
    add_hw_args(e)
    e.add_argument("--requant", choices=("tflite", "half_up"), default=None,
                   help="requantize in hardware to 8-bit results (default: none, 32-bit "
                        "accumulators out)")
    add_clock_arg(e)
    e.add_argument("--plot", type=output_file(PLOT_SUFFIXES), metavar="FILE",
                   help="write a per-layer stacked utilization plot (" +
                        ", ".join(PLOT_SUFFIXES) + ")")
    e.add_argument("--json", type=output_file((".json",)), metavar="FILE",
                   help="write the per-layer figures as JSON")
    e.add_argument("--suggest", action=argparse.BooleanOptionalAction, default=None,
                   help="search alternative configurations per layer (default: for a "
                        "single layer)")
    e.add_argument("--progress", action="store_true",
                   help="progress bar even when stderr is not a terminal")

    s = _sub(sub, "sweep", "array sizes x networks: table and Pareto plot",
             prepare_sweep, run_sweep)
    s.add_argument("--arrays", type=_arrays, default="4x4,4x16,8x8,16x4,8x16,16x16,32x32",
                   help="array sizes, ROWSxCOLS,...")
    s.add_argument("--networks", type=_networks, default="resnet18,mobilenetv2,resnext50",
                   help="built-in networks, comma-separated, from: " + ", ".join(NETWORKS))
    add_hw_args(s, exclude=("rows", "cols"))
    s.add_argument("--jobs", type=positive_int, default=None,
                   help="worker processes of the local farm cluster (default: one per core)")
    s.add_argument("--synth", action="store_true",
                   help="also synthesize every array size (slow: minutes each)")
    s.add_argument("--synth-dir", type=output_dir, default=None, metavar="DIR",
                   help="where synthesis reports are cached (default: build/synth)")
    add_clock_arg(s, "times of sizes without a synthesized Fmax")
    s.add_argument("--plot", type=output_file(PLOT_SUFFIXES), metavar="FILE",
                   help="Pareto plot (" + ", ".join(PLOT_SUFFIXES) + ")")
    s.add_argument("--json", type=output_file((".json",)), metavar="FILE",
                   help="write the results as JSON")
    s.add_argument("--progress", action="store_true",
                   help="progress bar even when stderr is not a terminal")
    add_farm_args(s)

    y = _sub(sub, "synth", "FPGA synthesis + place and route (ECP5, yowasp)",
             prepare_synth, run_synth)
    add_hw_args(y)
    y.add_argument("--device", default="85k", choices=tuple(DEVICES), help="ECP5 device")
    y.add_argument("--package", default="CABGA381", help="ECP5 package")
    y.add_argument("--speed", type=int, default=6, choices=SPEEDS,
                   help="speed grade (6 is the slowest and nextpnr's default)")
    y.add_argument("--ceiling", action="store_true",
                   help="measure the flow's ceiling instead: Fmax of a lone block-RAM read "
                        "and a lone DSP multiply, placed and routed on this device and grade")
    y.add_argument("--freq", type=positive_float, default=150.0,
                   help="target clock for nextpnr (MHz)")
    y.add_argument("--seed", type=nonneg_int, default=1, help="placement seed")
    y.add_argument("--ooc", action="store_true",
                   help="out-of-context (no I/O wrapper; optimistic)")
    y.add_argument("--out", type=output_dir, default=None, metavar="DIR",
                   help="work directory (default: build/synth/<configuration>)")
    y.add_argument("--timeout", type=positive_float, default=3600.0,
                   help="seconds per tool run")
    y.add_argument("--place-only", action="store_true",
                   help="stop after placement: post-placement Fmax estimate, no critical path")
    y.add_argument("--no-widelut", action="store_true",
                   help="synth_ecp5 -nowidelut from the start (the flow falls back to it when "
                        "ABC9 aborts)")
    y.add_argument("--router", default="router1", choices=ROUTERS,
                   help="nextpnr router (router2 is much faster on large arrays)")
    y.add_argument("--density", type=_density, default=None,
                   help="placer's maximum placement density (nextpnr --placer-heap-beta; "
                        "its default 0.9); lower spreads the logic for routability")
    y.add_argument("--block", default="accelerator", choices=tuple(hw_blocks()),
                   metavar="BLOCK",
                   help="synthesize one block alone (between the LFSR/XOR wrapper's registers): "
                        + ", ".join(hw_blocks()))
    y.add_argument("--json", type=output_file((".json",)), metavar="FILE",
                   help="write the report as JSON")
    add_farm_args(y, scheduler=False)


def _density(text):
    try:
        v = float(text)
    except ValueError:
        v = None
    if v is None or not 0.3 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0.3, 1.0], not {text!r}")
    return v


def _input_shape_type(text):
    try:
        return _input_shape(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be four positive integers N,C,H,W, "
                                         f"not {text!r}") from None


def build_parser(prog="systolic-conv"):
    p = argparse.ArgumentParser(prog=prog, formatter_class=HelpFormatter,
                                description="estimate, sweep and synth (as in systolic-conv)")
    p.add_argument("--version", action="version", version=version_string())
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    add_subcommands(sub)
    return p


def main(argv=None):
    """Run ``estimate``, ``sweep`` or ``synth``; returns the exit status."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
