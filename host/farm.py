"""Running work on a Dask cluster: regressions, mutants, sweep points, synthesis.

The farm knows nothing about hardware. A command hands it one plain, picklable
function that runs one unit of work (a chunk of seeds, a mutant, a sweep point)
and returns a list of per-item result dicts, and the list of units; the farm runs
them and yields each unit's results as soon as it finishes.

Where the work runs (``scheduler``):

* ``None`` / ``"local"``: a :class:`distributed.LocalCluster` of ``workers``
  processes (default: one per core), one thread each, started and stopped here.
  With a single unit of work, ``None`` runs it in this process instead (replaying
  one seed needs no cluster).
* ``"inline"``: every unit in this process, one after the other (no Dask).
* ``"tcp://host:port"`` (or any Dask address): an existing cluster, e.g.
  ``dask scheduler`` and ``dask worker`` processes on other machines, or a
  Slurm/LSF cluster (:func:`jobqueue_cluster`).

A worker that dies while running a unit loses nothing: the scheduler resubmits
the unit to another worker (Dask's ``allowed-failures``, 3 by default), and each
unit's results reach the caller once. A unit that kills every worker it meets
(:class:`distributed.KilledWorker`) is split into its items when it has several
(``split``), and those run one at a time (so a crashing item takes no neighbour
down with it): only the item at fault is lost, and it comes back as an ``error``
result rather than silently missing. The caller records items by key
with duplicates ignored (:meth:`systolic_conv.results.Run.add`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time

__all__ = ["Farm", "Progress", "worker_id", "jobqueue_cluster", "JOBQUEUE_SYSTEMS",
           "add_farm_args", "check_farm_args", "require_module", "db_arg", "check_walltime"]


def add_farm_args(ap, scheduler=True):
    """``--scheduler`` (when ``scheduler``), ``--db`` and ``--no-db`` on an argparse parser.

    :func:`check_farm_args` checks them in a command's prepare step."""
    g = ap.add_argument_group("farm and results database")
    if scheduler:
        g.add_argument("--scheduler", metavar="ADDRESS",
                       default=os.environ.get("SYSTOLIC_CONV_SCHEDULER") or None,
                       help="Dask scheduler to submit to (tcp://host:port; also "
                            "$SYSTOLIC_CONV_SCHEDULER); 'local': a local cluster, one worker "
                            "per core; 'inline': this process only (default: local, or "
                            "inline for a single unit of work)")
    g.add_argument("--db", metavar="PATH|URL", default=None,
                   help="results database: a SQLite file or an SQLAlchemy URL (default: "
                        "build/results.sqlite, or $SYSTOLIC_CONV_DB)")
    g.add_argument("--no-db", action="store_true", help="record nothing in the database")
    return g


def check_farm_args(args):
    """Check the farm flags before any work; return the ``db`` argument of the run
    (False with ``--no-db``). Raises :class:`~.cli_common.UsageError` naming the flag:
    a missing package of the ``farm`` extra, ``--db`` with ``--no-db``, a database
    file whose directory does not exist, a URL SQLAlchemy cannot read."""
    from .cli_common import UsageError
    scheduler = getattr(args, "scheduler", None)
    if scheduler is not None and not scheduler.strip():
        raise UsageError("--scheduler", "must be an address, 'local' or 'inline', not ''")
    if scheduler != "inline" and hasattr(args, "scheduler"):
        require_module("distributed", "--scheduler")
    if args.no_db:
        if args.db:
            raise UsageError("--no-db", "not allowed with --db")
        return False
    require_module("sqlalchemy", "--db")
    db = db_arg(args)
    if "://" in str(args.db or ""):
        import sqlalchemy
        try:
            sqlalchemy.engine.make_url(args.db)
        except Exception as exc:             # noqa: BLE001 -- SQLAlchemy says what is wrong
            raise UsageError("--db", f"{args.db!r} is not a database URL ({exc})") from None
    elif args.db:
        import pathlib
        p = pathlib.Path(args.db)
        if p.is_dir():
            raise UsageError("--db", f"{args.db!r} is a directory")
        if not p.parent.is_dir():
            raise UsageError("--db", f"directory {str(p.parent)!r} of {args.db!r} does not "
                             "exist")
    return db


def require_module(module, flag):
    """:class:`~.cli_common.UsageError` naming ``flag`` when ``module`` is not installed
    (a package of the ``farm`` extra)."""
    import importlib.util
    if importlib.util.find_spec(module) is None:
        from .cli_common import UsageError
        raise UsageError(flag, f"needs {module} (pip install 'systolic-conv[farm]')")


def db_arg(args):
    """The ``db`` argument of a farm command from its parsed ``--db``/``--no-db``."""
    if getattr(args, "no_db", False):
        return False
    if args.db:
        return args.db
    from .results import default_url
    return default_url()


def worker_id():
    """``host:pid`` of the process running this code (recorded with each item)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _code_version():
    from .results import git_info
    return git_info()["code_version"]


class Farm:
    """Where units of work run (see the module docstring).

    Parameters
    ----------
    scheduler : str or None
        None, ``"local"``, ``"inline"`` or a Dask scheduler address.
    workers : int or None
        Processes of a local cluster (default: ``os.cpu_count()``).
    quiet : bool
        Say nothing about the cluster.

    Use as a context manager; :meth:`map` runs the units.
    """

    def __init__(self, scheduler=None, workers=None, quiet=False):
        if scheduler is not None and not isinstance(scheduler, str):
            raise TypeError(f"scheduler={scheduler!r} must be an address string or None")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers={workers!r} must be a positive integer")
        self.scheduler = scheduler
        self.workers = workers or os.cpu_count() or 1
        self.quiet = quiet
        self.client = None
        self.cluster = None
        self.mode = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _say(self, msg):
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    @property
    def remote(self):
        """True when the work goes to an existing scheduler."""
        return self.scheduler not in (None, "local", "inline")

    def start(self, n_units=2):
        """Connect or start the cluster (``map`` does it on first use); with the
        default scheduler, ``n_units <= 1`` means inline."""
        if self.mode is not None:
            return
        s = self.scheduler
        if s == "inline" or (s is None and n_units <= 1):
            self.mode = "inline"
            return
        from distributed import Client
        if s in (None, "local"):
            from distributed import LocalCluster
            self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                        processes=True, dashboard_address=None,
                                        silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
            self.mode = "local"
            self._say(f"farm: local Dask cluster, {self.workers} worker processes")
        else:
            self.client = Client(s, timeout=60)
            self.mode = "remote"
            n = len(self.client.scheduler_info().get("workers", {}))
            self._say(f"farm: Dask scheduler {s}, {n} workers connected")
            self._check_code()

    def _check_code(self):
        """Warn when workers run other code than this checkout (results would mix)."""
        from .results import git_info
        mine = git_info()["code_version"]
        try:
            theirs = self.client.run(_code_version)
        except Exception as exc:             # a worker that cannot say: warn, go on
            self._say(f"farm: could not ask the workers for their code version: {exc}")
            return
        odd = sorted({v for v in theirs.values() if v != mine}, key=str)
        if odd:
            self._say(f"farm: WARNING: {sum(v != mine for v in theirs.values())} of "
                      f"{len(theirs)} workers run code {', '.join(map(str, odd))}, "
                      f"not this checkout's {mine}")

    @property
    def n_workers(self):
        """Worker processes the work is spread over (1 inline)."""
        if self.client is None:
            return 1 if self.mode == "inline" else self.workers
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def close(self):
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()
        self.client = self.cluster = None

    def map(self, fn, units, *, split=None, label="work"):
        """Run ``fn(unit)`` for every unit; yield ``(unit, results, error)`` as each finishes.

        ``results`` is what ``fn`` returned (None on error); ``error`` the exception
        text when the unit raised or was lost with every worker it met. ``split(unit)``
        may return the unit's single-item sub-units: a lost unit with several items is
        then run again item by item. Interrupting (KeyboardInterrupt) cancels what is
        still queued.
        """
        units = list(units)
        self.start(len(units))
        if self.mode == "inline":
            yield from self._map_inline(fn, units)
            return
        yield from self._map_dask(fn, units, split, label)

    @staticmethod
    def _map_inline(fn, units):
        for u in units:
            try:
                res = fn(u)
            except Exception as exc:          # reported as the unit's error
                yield u, None, f"{type(exc).__name__}: {exc}"
                continue
            yield u, res, None

    def _map_dask(self, fn, units, split, label):
        from collections import deque
        from distributed import as_completed
        from distributed.client import FutureCancelledError
        tag = f"{label}-{os.getpid()}-{time.time_ns()}"
        by_key, done = {}, set()
        n_sub = [0]
        isolate = deque()          # items of lost units, run one at a time

        def submit(u):
            f = self.client.submit(fn, u, key=f"{tag}-{n_sub[0]}", pure=False)
            n_sub[0] += 1
            by_key[f.key] = u
            return f

        futs = [submit(u) for u in units]
        ac = as_completed(futs)
        alone = None               # key of the isolated item running now
        try:
            for fut in ac:
                key = fut.key
                if key in done:                  # a unit's result arrives once only
                    continue
                done.add(key)
                u = by_key.pop(key)
                if key == alone:
                    alone = None
                try:
                    res, err = fut.result(), None
                except FutureCancelledError:
                    continue
                except Exception as exc:
                    res, err = None, f"{type(exc).__name__}: {exc}"
                    lost = type(exc).__name__ == "KilledWorker"
                    subs = split(u) if (lost and split) else None
                    if subs and len(subs) > 1:
                        self._say(f"farm: a {label} unit was lost with every worker that ran "
                                  f"it; running its {len(subs)} items one at a time")
                        isolate.extend(subs)
                        err = None
                if alone is None and isolate:
                    nxt = submit(isolate.popleft())
                    alone = nxt.key
                    ac.add(nxt)
                fut.release()             # the worker may drop the result now
                if res is not None or err is not None:
                    yield u, res, err
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.cancel(list(ac.futures) if hasattr(ac, "futures") else futs)
            raise


class Progress:
    """Pass/fail progress of a farm run on stderr: a tqdm bar on a terminal, one line
    per update otherwise (every ``every`` items), nothing when ``quiet``."""

    def __init__(self, total, label, *, quiet=False, unit="seed", every=None,
                 words=("pass", "fail")):
        from .progress import is_quiet
        quiet = quiet or is_quiet()          # --quiet / SYSTOLIC_CONV_QUIET=1
        self.total, self.label, self.quiet = total, label, quiet
        self.words = words
        self.done = self.passed = self.failed = 0
        self.t0 = time.perf_counter()
        self.every = every
        self._last_line = 0
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=label, unit=unit, file=sys.stderr,
                            dynamic_ncols=True, leave=True)

    def update(self, n, passed, failed, extra=""):
        self.done += n
        self.passed += passed
        self.failed += failed
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.words[0]} {self.passed} {self.words[1]} "
                                     f"{self.failed}{extra}",
                                     refresh=False)
            self.bar.update(n)
            return
        if self.every and self.done - self._last_line < self.every and self.done < self.total:
            return
        self._last_line = self.done
        el = time.perf_counter() - self.t0
        eta = el / self.done * (self.total - self.done) if self.done else 0
        print(f"[{self.done:>5}/{self.total}] {self.words[0]} {self.passed:>5} "
              f"{self.words[1]} {self.failed:>3}"
              f"{extra}  elapsed {el:6.0f} s  eta {eta:5.0f} s", file=sys.stderr, flush=True)

    def write(self, msg):
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ----------------------------------------------------------------------------- jobqueue

JOBQUEUE_SYSTEMS = ("slurm", "lsf")


def check_walltime(walltime):
    """``walltime`` as a string when it is HH:MM:SS, HH:MM or minutes; else ValueError."""
    parts = str(walltime).split(":")
    if not (1 <= len(parts) <= 3 and all(p.isdigit() for p in parts)):
        raise ValueError(f"walltime={walltime!r} must be HH:MM:SS (or HH:MM, or minutes)")
    return str(walltime)


def jobqueue_cluster(system, *, cores=8, memory="16GB", walltime="04:00:00", queue=None,
                     account=None, venv=None, processes=None, **kw):
    """A dask-jobqueue cluster whose batch jobs run this project's workers.

    Each job runs ``processes`` single-threaded worker processes (default one per
    core: the simulators are single-threaded) with the project's virtual
    environment activated. Scale it with ``cluster.scale(jobs=N)``; its
    ``scheduler_address`` is what ``--scheduler`` takes; ``cluster.job_script()``
    shows the batch script it submits.

    Parameters
    ----------
    system : {"slurm", "lsf"}
    cores, memory, walltime, queue, account :
        Per-job resources, as the batch system takes them.
    venv : path or None
        The virtual environment the workers run in (default: this interpreter's).
    **kw :
        Passed on to ``SLURMCluster`` / ``LSFCluster``.
    """
    if system not in JOBQUEUE_SYSTEMS:
        raise ValueError(f"system={system!r} must be one of {', '.join(JOBQUEUE_SYSTEMS)}")
    if not isinstance(cores, int) or cores < 1:
        raise ValueError(f"cores={cores!r} must be a positive integer")
    parts = check_walltime(walltime).split(":")
    if system == "lsf" and len(parts) == 3:       # bsub -W takes [hours:]minutes
        walltime = f"{parts[0]}:{parts[1]}"
    import dask_jobqueue
    venv = os.path.abspath(venv) if venv else sys.prefix
    prologue = list(kw.pop("job_script_prologue", [])) + [f"source {venv}/bin/activate"]
    opts = dict(cores=cores, processes=processes or cores, memory=memory, walltime=walltime,
                queue=queue, python=f"{venv}/bin/python", job_script_prologue=prologue,
                scheduler_options=kw.pop("scheduler_options", {"dashboard_address": None}))
    if account:
        opts["account" if system == "slurm" else "project"] = account
    opts.update(kw)
    cls = dask_jobqueue.SLURMCluster if system == "slurm" else dask_jobqueue.LSFCluster
    return cls(**opts)
