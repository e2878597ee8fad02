"""Build and run the cocotb testbench with ``cocotb_tools.runner`` on Verilator or
Icarus, on the same Verilog.

One build per (hardware config, simulator, waves, coverage), in
``build/cocotb-<sim>-<config name>-<hash of the Verilog and flags>``: the Verilog
is generated with :func:`systolic_conv.hw.gen.write_rtl` into the build
directory, so a changed generator means a new build, and every layer (a
run-time descriptor) reuses it. Builds hold the project's Verilator build lock
(one build at a time on the machine, Icarus included: it is cheap). Each run
gets its own ``test_dir`` (pytest-xdist workers never share one).
"""

import hashlib
import json
import os
import pathlib
import re
import shutil
import tempfile
import time
from dataclasses import dataclass

from ...hw.config import HardwareConfig
from ...hw.gen import generate_verilog, TOP_NAME
from ..toolchain import (announce_build, build_estimate_s, build_root, file_lock,
                         icarus_available, prune_builds, setup_verilator)

__all__ = ["SIMULATORS", "Build", "build", "run_job", "JobResult", "simulator_available",
           "waves_file"]

SIMULATORS = ("verilator", "icarus")
TEST_MODULE = "systolic_conv.sim.cocotb.test_conv"
_VERILATOR_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "--x-assign", "fast",
                   "--x-initial", "fast"]
_VERILOG_CACHE = {}


def simulator_available(sim):
    if sim == "icarus":
        return icarus_available()
    try:
        setup_verilator()
        return True
    except RuntimeError:
        return False


_KICK = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$",
                   re.M)


def icarus_verilog(text):
    """The Verilog for an Icarus build: each module's ``always @*`` blocks wait on a
    register Yosys' Verilog backend adds so that they are evaluated once at the start;
    Icarus 11 applies its declaration initializer (``= 0``) without an event, so a
    block whose inputs do not change during reset is never evaluated and its outputs
    stay X (the control FSM's ``i_desc.ready``: its state resets to its initial value).
    One nanosecond in, the register is set to 1: every such block runs once."""
    return _KICK.sub(lambda m: f"{m.group(1)}reg {m.group(2)} = 0;\n"
                               f"{m.group(1)}initial #1 {m.group(2)} = 1;", text)


def _verilog(cfg):
    if cfg not in _VERILOG_CACHE:
        _VERILOG_CACHE[cfg] = generate_verilog(cfg)
    return _VERILOG_CACHE[cfg]


@dataclass
class Build:
    cfg: HardwareConfig
    sim: str
    dir: pathlib.Path
    waves: bool
    coverage: bool
    seconds: float = 0.0


def build(cfg: HardwareConfig, sim="verilator", *, waves=False, coverage=False,
          verilog=None, quiet=True):
    """Build (or reuse) the simulation of ``cfg`` on ``sim``; return a :class:`Build`.

    ``verilog``: build this Verilog text instead of the generated one (mutants).
    """
    from cocotb_tools.runner import get_runner
    if sim not in SIMULATORS:
        raise ValueError(f"sim={sim!r} must be one of {', '.join(SIMULATORS)}")
    if sim == "verilator":
        setup_verilator()
    elif not icarus_available():
        raise RuntimeError("Icarus Verilog (iverilog, vvp) is not installed")
    text = verilog if verilog is not None else _verilog(cfg)
    if sim == "icarus":
        text = icarus_verilog(text)
    flags = f"waves={waves},coverage={coverage},args={_VERILATOR_ARGS}"
    key = hashlib.sha256((text + flags).encode()).hexdigest()[:12]
    name = f"cocotb-{sim}-{cfg.name()}-{key}" + ("-waves" if waves else "") + \
        ("-cov" if coverage else "")
    bdir = build_root() / name
    done = bdir / "build.done"
    t0 = time.perf_counter()
    with file_lock(build_root() / "verilator-build.lock"):
        if not done.exists():
            if sim == "verilator":
                announce_build(f"the cocotb model of {cfg.name()}"
                               + (" (waves)" if waves else "") + (" (coverage)" if coverage else ""),
                               build_estimate_s(cfg, "cocotb"))
            if bdir.exists():
                shutil.rmtree(bdir)
            bdir.mkdir(parents=True)
            vpath = bdir / f"{TOP_NAME}.v"
            vpath.write_text(text)
            (bdir / "config.json").write_text(json.dumps(cfg.to_dict(), sort_keys=True) + "\n")
            runner = get_runner(sim)
            kw = dict(sources=[vpath], hdl_toplevel=TOP_NAME, build_dir=bdir / "sim",
                      waves=waves, log_file=bdir / "build.log")
            if sim == "verilator":
                args = list(_VERILATOR_ARGS)
                if waves:
                    args += ["--trace-fst", "--trace-structs"]
                if coverage:
                    # line + toggle ('--coverage' as a whole trips an internal error of
                    # Verilator 5.048 on the accumulator memory write)
                    args += ["--coverage-line", "--coverage-toggle"]
                kw["build_args"] = args
            else:
                kw["timescale"] = ("1ns", "1ps")
            old = os.environ.get("MAKEFLAGS")
            # the wheel's verilated.mk needs the PCH include flag for split models
            os.environ["MAKEFLAGS"] = (old + " " if old else "") + "CFG_CXXFLAGS_PCH_I=-include"
            try:
                runner.build(**kw)
            except (SystemExit, Exception) as exc:
                log = (bdir / "build.log").read_text()[-4000:] if (bdir / "build.log").exists() \
                    else ""
                raise RuntimeError(f"{sim} build of {cfg.name()} failed: {exc!r}\n{log}") from None
            finally:
                if old is None:
                    os.environ.pop("MAKEFLAGS", None)
                else:
                    os.environ["MAKEFLAGS"] = old
            done.write_text("ok\n")
            prune_builds(f"cocotb-{sim}-{cfg.name()}-", keep=6)
    return Build(cfg, sim, bdir, waves, coverage, time.perf_counter() - t0)


def waves_file(b: Build, test_dir) -> pathlib.Path:
    """Where a waves run of build ``b`` in ``test_dir`` writes its FST: Verilator's
    cocotb main writes ``dump.fst`` in the run's directory; Icarus is told the path
    (``+dumpfile_path``; its default is the shared build directory)."""
    name = "dump.fst" if b.sim == "verilator" else f"{TOP_NAME}.fst"
    return pathlib.Path(test_dir) / name


@dataclass
class JobResult:
    """What one simulator run returned."""
    entries: list            # report entries written by the cocotb test
    tests: dict              # cocotb test name -> passed (from the results XML)
    test_dir: pathlib.Path
    seconds: float
    log: str

    @property
    def ok(self):
        return bool(self.tests) and all(self.tests.values())

    def failures(self):
        return [e for e in self.entries if not e.get("ok")]


def run_job(b: Build, testcase, job: dict, *, test_dir=None, waves=False, timeout=None,
            quiet=True):
    """Run cocotb test(s) ``testcase`` of :mod:`.test_conv` with ``job`` on build ``b``."""
    from cocotb_tools.runner import get_runner, get_results
    if test_dir is None:
        test_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"{testcase}-", dir=build_root()))
    test_dir = pathlib.Path(test_dir)
    test_dir.mkdir(parents=True, exist_ok=True)
    jpath = test_dir / "job.json"
    jpath.write_text(json.dumps(job))
    rpath = test_dir / "report.json"
    if rpath.exists():
        rpath.unlink()
    runner = get_runner(b.sim)
    env = {"SC_HW": json.dumps(b.cfg.to_dict()), "SC_JOB": str(jpath), "SC_REPORT": str(rpath),
           "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "INFO")}
    xml = test_dir / "results.xml"
    log = test_dir / "sim.log"
    kw = dict(test_module=TEST_MODULE, hdl_toplevel=TOP_NAME, hdl_toplevel_lang="verilog",
              testcase=testcase, build_dir=b.dir / "sim", test_dir=test_dir,
              results_xml=str(xml), extra_env=env, waves=waves, log_file=log)
    if b.sim == "icarus":
        kw["timescale"] = ("1ns", "1ps")
        if waves:          # each run its own FST, not the build directory's one
            kw["plusargs"] = [f"+dumpfile_path={waves_file(b, test_dir)}"]
    t0 = time.perf_counter()
    try:
        runner.test(**kw)
    except (SystemExit, Exception) as exc:     # a failing test under pytest raises
        if not xml.exists():
            raise RuntimeError(f"{b.sim} simulation did not run: {exc!r}\n"
                               f"{log.read_text()[-3000:] if log.exists() else ''}") from None
    secs = time.perf_counter() - t0
    tests = {}
    if xml.exists():
        import xml.etree.ElementTree as ET
        for tc in ET.parse(xml).getroot().iter("testcase"):
            failed = any(ch.tag in ("failure", "error") for ch in tc)
            tests[tc.get("name")] = not failed
    entries = json.loads(rpath.read_text()) if rpath.exists() else []
    return JobResult(entries, tests, test_dir, secs,
                     log.read_text() if log.exists() else "")
