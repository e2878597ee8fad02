"""The regression farm on a real Dask cluster: a scheduler and two worker processes
started here on localhost (ports chosen free at run time), a regression submitted to it
with ``--scheduler``, one worker killed mid-run, and the database and report built from
what came back. Also: a unit that kills every worker it meets, and the Slurm/LSF job
scripts of dask-jobqueue (no batch system needed)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from systolic_conv.farm import Farm, jobqueue_cluster

SEEDS, CHUNK = 320, 8


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, log):
    return subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture
def cluster(tmp_path):
    """``dask scheduler`` + two ``dask worker`` processes (named wA, wB) on 127.0.0.1."""
    from distributed import Client
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    logs = open(tmp_path / "cluster.log", "w")
    procs = {"scheduler": _start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--no-dashboard"], logs)}
    try:
        for name in ("wA", "wB"):
            procs[name] = _start(["distributed.cli.dask_worker", addr, "--name", name,
                                  "--nthreads", "1", "--no-dashboard",
                                  "--host", "127.0.0.1"], logs)
        client = Client(addr, timeout=60)
        client.wait_for_workers(2, timeout=120)
        yield addr, client, procs
        client.close()
    finally:
        for p in procs.values():
            _kill(p, signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            _kill(p)                # the whole group, whatever SIGTERM left behind
        logs.close()


def _worker_pids(client):
    """{worker name: pid of its worker process}."""
    names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
    return {names[a]: pid for a, pid in client.run(os.getpid).items()}


def _processing(client, addr_of):
    return list(client.processing(workers=[addr_of]).get(addr_of, ()))


def _items(engine):
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(sa.text(
            "SELECT key, outcome, worker FROM items ORDER BY id"))]


@pytest.mark.rtl
def test_regression_on_a_cluster_survives_a_worker_loss(cluster, tmp_path):
    from systolic_conv.sim.cocotb.layers import HW_CONFIGS
    from systolic_conv.sim.harness import get_harness
    addr, client, procs = cluster
    get_harness(HW_CONFIGS["small"])           # build (or find) the model once, before the run
    pids = _worker_pids(client)
    host = socket.gethostname()
    by_name = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
    db = tmp_path / "results.sqlite"
    cmd = [sys.executable, "-m", "systolic_conv.cli", "regress", "--seeds", str(SEEDS),
           "--sim", "harness", "--hw", "small", "--chunk", str(CHUNK), "--scheduler", addr,
           "--db", str(db), "--quiet", "--out", str(tmp_path / "summary.json")]
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    engine = None
    lost = []
    try:
        t0 = time.time()
        # mid-run: wA has finished chunks (recorded) and holds more work
        while time.time() - t0 < 180 and run.poll() is None:
            if engine is None and db.exists():
                engine = sa.create_engine(f"sqlite:///{db}")
            done_by_a = engine is not None and any(
                r["worker"] == f"{host}:{pids['wA']}" for r in _safe_items(engine))
            if done_by_a and _processing(client, by_name["wA"]):
                os.killpg(procs["wA"].pid, signal.SIGSTOP)     # freeze: no more results
                time.sleep(0.5)                               # messages in flight land
                lost = _processing(client, by_name["wA"])
                if lost:
                    _kill(procs["wA"])
                    break
                os.killpg(procs["wA"].pid, signal.SIGCONT)
            time.sleep(0.05)
        assert lost, "the run ended before a worker could be killed mid-chunk"
        out, _ = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out
    # the chunks wA held when it died were run again, by wB
    lost_seeds = {s for k in lost for s in range(int(k.rsplit("-", 1)[1]) * CHUNK,
                                                 (int(k.rsplit("-", 1)[1]) + 1) * CHUNK)}
    items = _items(engine)
    keys = [r["key"] for r in items]
    assert len(keys) == SEEDS and set(keys) == {f"seed={s}" for s in range(SEEDS)}
    assert all(r["outcome"] == "pass" for r in items)
    worker = {r["key"]: r["worker"] for r in items}
    assert {worker[f"seed={s}"] for s in lost_seeds} == {f"{host}:{pids['wB']}"}
    assert f"{host}:{pids['wA']}" in set(worker.values())
    assert len(client.scheduler_info()["workers"]) == 1
    with engine.connect() as c:
        (kind, status, sim), = c.execute(sa.text("SELECT kind, status, simulator FROM runs"))
    assert (kind, status, sim) == ("regress", "finished", "harness")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] == SEEDS and summary["missing"] == [] and summary["workers"] == 2

    # the report, from the same database
    r = subprocess.run([sys.executable, "-m", "systolic_conv.cli", "report", "--db", str(db),
                        "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    (entry,) = rep["runs"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(__file__)).stdout.strip()
    assert {k: entry[k] for k in ("kind", "total", "passed", "failed")} == \
        {"kind": "regress", "total": SEEDS, "passed": SEEDS, "failed": 0}
    assert entry["commit"] == (head or None) and entry["started"]
    assert rep["failures"] == [] and rep["flaky"] == []
    (cov,) = rep["coverage"]
    assert cov["seeds"] == SEEDS and 0 < cov["hit"] <= cov["bins"]
    assert cov["hit"] + len(cov["open"]) == cov["bins"]
    html_dir = tmp_path / "html"
    r = subprocess.run([sys.executable, "-m", "systolic_conv.cli", "report", "--db", str(db),
                        "--html", str(html_dir)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    page = (html_dir / "index.html").read_text()
    assert "regress harness small" in page and f"{SEEDS}" in page
    for png in ("pass_rate.png", "coverage.png", "speed.png"):
        assert f'src="{png}"' in page
        assert (html_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _safe_items(engine):
    try:
        return _items(engine)
    except sa.exc.OperationalError:        # the file exists, the tables not yet
        return []


def _exit_on_2(items):
    if 2 in items:
        os._exit(3)                        # a crash that takes the worker process down
    return [i * 10 for i in items]


def test_a_unit_that_kills_its_workers_is_split_and_its_item_reported(tmp_path):
    import dask
    import distributed  # noqa: F401  -- its config defaults exist before they are overridden
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with Farm("local", workers=1, quiet=True) as farm:
            got = list(farm.map(_exit_on_2, [[1, 2, 3]],
                                split=lambda u: [[i] for i in u] if len(u) > 1 else None))
    ok = {tuple(u): r for u, r, e in got if e is None}
    bad = [(u, e) for u, r, e in got if e is not None]
    assert ok == {(1,): [10], (3,): [30]}
    assert [u for u, _ in bad] == [[2]] and "KilledWorker" in bad[0][1]


def test_inline_farm_reports_a_failing_unit():
    def fn(u):
        if u == "b":
            raise RuntimeError("broken unit")
        return [u]
    got = list(Farm("inline").map(fn, ["a", "b", "c"]))
    assert got == [("a", ["a"], None), ("b", None, "RuntimeError: broken unit"),
                   ("c", ["c"], None)]


def test_farm_argument_errors():
    with pytest.raises(ValueError, match=r"workers=0 must be a positive integer"):
        Farm(workers=0)
    with pytest.raises(TypeError, match=r"scheduler=8786 must be an address string or None"):
        Farm(scheduler=8786)


@pytest.mark.parametrize("system, expect", [
    ("slurm", ["#SBATCH -p sim", "#SBATCH -A hw", "#SBATCH --cpus-per-task=4",
               "#SBATCH --mem=8G", "#SBATCH -t 01:30:00"]),
    ("lsf", ["#BSUB -q sim", '#BSUB -P "hw"', "#BSUB -n 4", "#BSUB -W 01:30"]),
])
def test_jobqueue_job_scripts(system, expect, tmp_path):
    venv = tmp_path / "venv"
    cl = jobqueue_cluster(system, cores=4, memory="8GB", walltime="01:30:00", queue="sim",
                          account="hw", venv=venv,
                          scheduler_options={"host": "127.0.0.1", "dashboard_address": None})
    try:
        script = cl.job_script()
        addr = cl.scheduler_address
    finally:
        cl.close()
    lines = script.splitlines()
    for e in expect:
        assert e in lines, f"{e!r} not in the {system} job script:\n{script}"
    assert f"source {venv}/bin/activate" in lines
    (worker,) = [ln for ln in lines if "distributed.cli.dask_worker" in ln]
    assert worker.startswith(f"{venv}/bin/python -m distributed.cli.dask_worker {addr} ")
    assert " --nthreads 1 " in worker and " --nworkers 4 " in worker
    assert addr.startswith("tcp://127.0.0.1:")


def test_jobqueue_argument_errors():
    with pytest.raises(ValueError, match=r"system='pbs' must be one of slurm, lsf"):
        jobqueue_cluster("pbs")
    with pytest.raises(ValueError, match=r"walltime='4h' must be HH:MM:SS"):
        jobqueue_cluster("slurm", walltime="4h")


def test_farm_script_command_prints_the_job_script(tmp_path, capsys):
    from systolic_conv.cli import main
    venv = tmp_path / "venv"
    assert main(["farm", "script", "--system", "slurm", "--cores", "4", "--memory", "8GB",
                 "--walltime", "00:45:00", "--queue", "sim", "--venv", str(venv)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for e in ("#SBATCH -p sim", "#SBATCH --cpus-per-task=4", "#SBATCH -t 00:45:00",
              f"source {venv}/bin/activate"):
        assert e in lines, e
