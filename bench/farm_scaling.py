"""Farm scaling: regression seeds per minute on 1 and 2 local Dask workers, Dask's cost
per task against a direct call, the results database's write rate, and a projection
for a 100-machine farm built from those figures.

    .venv/bin/python bench/farm_scaling.py [--seeds 600] [--chunk 25] [--hw small]
        [--sim harness] [--machines 100] [--cores 32] [--db PATH] [--no-cold-build]

Every figure is measured here, in one run, side by side; the projection is
arithmetic on them, printed with its assumptions. Not a test: nothing fails on a time.
The run is recorded in the results database as a ``bench`` run.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

from systolic_conv.farm import Farm
from systolic_conv.results import ResultsDB, record_run
from systolic_conv.sim.regress import _ChunkFn, run_seeds


def _noop(x):
    return [x]


def _warm(sim, hw):
    """Load (or build) the model in a worker process."""
    run_seeds([0], sim=sim, hw=hw)
    return os.getpid()


def seeds_per_minute(workers, seeds, chunk, sim, hw):
    """Steady-state seeds/minute of ``workers`` local worker processes (cluster start and
    model loading excluded, reported apart)."""
    t0 = time.perf_counter()
    with Farm("local", workers=workers, quiet=True) as farm:
        farm.start()
        start_s = time.perf_counter() - t0
        farm.client.run(_warm, sim, hw)                 # every worker loads its model
        chunks = [seeds[i:i + chunk] for i in range(0, len(seeds), chunk)]
        fn = _ChunkFn(sim, hw, 30000, False, False, f"bench-{os.getpid()}")
        t1 = time.perf_counter()
        n = ok = 0
        for _u, res, err in farm.map(fn, chunks, label="bench"):
            if err:
                raise RuntimeError(f"a chunk failed: {err}")
            n += len(res)
            ok += sum(r["ok"] for r in res)
        wall = time.perf_counter() - t1
    return {"workers": workers, "seeds": n, "passed": ok, "wall_s": wall,
            "seeds_per_min": 60 * n / wall, "cluster_start_s": start_s}


def dask_overhead(n_tasks, sim, hw):
    """Per task: single-seed tasks through a 1-worker cluster against direct calls; and
    no-op tasks on 2 workers (what one client and scheduler sustain here, in tasks/s)."""
    seeds = list(range(1000, 1000 + n_tasks))
    run_seeds([0], sim=sim, hw=hw)                      # load the model here too
    t0 = time.perf_counter()
    for s in seeds:
        run_seeds([s], sim=sim, hw=hw)
    direct = time.perf_counter() - t0
    with Farm("local", workers=1, quiet=True) as farm:
        farm.start()
        farm.client.run(_warm, sim, hw)
        fn = _ChunkFn(sim, hw, 30000, False, False, f"bench-{os.getpid()}")
        t1 = time.perf_counter()
        for _ in farm.map(fn, [[s] for s in seeds], label="bench"):
            pass
        via = time.perf_counter() - t1
    with Farm("local", workers=2, quiet=True) as farm:
        farm.start()
        n = 4 * n_tasks
        t2 = time.perf_counter()
        for _ in farm.map(_noop, list(range(n)), label="noop"):
            pass
        noop = time.perf_counter() - t2
    return {"tasks": n_tasks, "direct_s_per_seed": direct / n_tasks,
            "dask_s_per_seed": via / n_tasks,
            "overhead_ms_per_task": 1e3 * (via - direct) / n_tasks,
            "noop_tasks_per_s": n / noop}


def cocotb_cost(sim, hw, n, cold):
    """Seconds per seed of the cocotb testbench (one chunk of ``n`` seeds, model built),
    and the cold build of its simulation when ``cold``."""
    from systolic_conv.sim.cocotb.layers import hw_config
    from systolic_conv.sim.cocotb.runner import build
    build(hw_config(hw), sim)
    t0 = time.perf_counter()
    res = run_seeds(list(range(2000, 2000 + n)), sim=sim, hw=hw, tag=f"bench-{os.getpid()}")
    per = (time.perf_counter() - t0) / n
    if not all(r["ok"] for r in res):
        raise RuntimeError(f"cocotb seeds failed: {[r['error'] for r in res if not r['ok']]}")
    build_s = None
    if cold:
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, SYSTOLIC_CONV_BUILD=tmp)
            code = ("from systolic_conv.sim.cocotb.runner import build; "
                    "from systolic_conv.sim.cocotb.layers import hw_config; "
                    f"build(hw_config({hw!r}), {sim!r})")
            t1 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            build_s = time.perf_counter() - t1
    return per, build_s


def cold_build_seconds(hw):
    """The compiled harness built from nothing (a fresh build directory)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, SYSTOLIC_CONV_BUILD=tmp)
        code = ("from systolic_conv.sim.harness import get_harness; "
                "from systolic_conv.sim.cocotb.layers import hw_config; "
                f"get_harness(hw_config({hw!r}))")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        return time.perf_counter() - t0


def _db_writer(path, n_items, batch, tag, q):
    rdb = ResultsDB(path)
    run = rdb.start_run("bench", name=f"db write rate {tag}")
    t0 = time.perf_counter()
    for i in range(0, n_items, batch):
        run.add([{"key": f"seed={j}", "outcome": "pass", "seconds": 0.01, "worker": tag,
                  "coverage": [f"axis{k}=v" for k in range(40)],
                  "replay": f"systolic-conv regress --seed {j}"}
                 for j in range(i, min(n_items, i + batch))])
    q.put(time.perf_counter() - t0)
    run.finish()


def db_write_rate(n_items=4000, batch=25, writers=(1, 4)):
    """Items per second into a fresh SQLite file (WAL), ``batch`` items per transaction
    (one chunk's results), with 1 and 4 writer processes at once."""
    import multiprocessing as mp
    out = {}
    ctx = mp.get_context("spawn")
    for w in writers:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "r.sqlite")
            ResultsDB(path).close()
            q = ctx.Queue()
            procs = [ctx.Process(target=_db_writer, args=(path, n_items, batch, f"w{k}", q))
                     for k in range(w)]
            t0 = time.perf_counter()
            for p in procs:
                p.start()
            secs = [q.get(timeout=600) for _ in procs]
            for p in procs:
                p.join()
            wall = time.perf_counter() - t0
            out[w] = {"writers": w, "items": n_items * w, "items_per_s": n_items * w / max(secs),
                      "tx_per_s": n_items * w / batch / max(secs), "wall_s": wall}
    return out


def projection(per_seed_s, eff, build_s, task_rate, db_rate, *, machines, cores, seeds):
    """A farm of ``machines`` x ``cores`` workers running ``seeds`` seeds of a path that
    costs ``per_seed_s`` core-seconds a seed here, at per-core efficiency ``eff``. The
    chunk is the smallest that keeps the scheduler under half the task rate one client
    and scheduler sustained here (``task_rate``) and the database under half its
    transaction rate."""
    workers = machines * cores
    seeds_per_s = workers * eff / per_seed_s
    chunk = 1
    while (seeds_per_s / chunk > task_rate / 2 or
           seeds_per_s / chunk > db_rate["tx_per_s"] / 2) and chunk < 10_000:
        chunk *= 2
    work_s = seeds / machines * per_seed_s / eff / cores      # each machine's compute
    return {"workers": workers, "seeds_per_min": 60 * seeds_per_s,
            "wall_min": (seeds / seeds_per_s + (build_s or 0)) / 60, "chunk": chunk,
            "tasks_per_s": seeds_per_s / chunk, "db_items_per_s": seeds_per_s,
            "db_tx_per_s": seeds_per_s / chunk,
            "build_share": None if build_s is None else build_s / (build_s + work_s)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=600, help="seeds per scaling measurement")
    ap.add_argument("--chunk", type=int, default=25)
    ap.add_argument("--hw", default="small")
    ap.add_argument("--sim", default="harness", choices=("harness", "verilator", "icarus"))
    ap.add_argument("--tasks", type=int, default=200, help="tasks for the overhead figure")
    ap.add_argument("--machines", type=int, default=100)
    ap.add_argument("--cores", type=int, default=32, help="cores per farm machine")
    ap.add_argument("--farm-seeds", type=int, default=100_000,
                    help="a night's regression on the projected farm")
    ap.add_argument("--cocotb-seeds", type=int, default=6,
                    help="seeds to time the cocotb path with (0: skip)")
    ap.add_argument("--no-cold-build", action="store_true")
    ap.add_argument("--db", default=None, help="results database to record into")
    args = ap.parse_args(argv)
    print(f"farm scaling: {args.sim} on hw {args.hw}, {os.cpu_count()} cores here, load "
          f"average {os.getloadavg()[0]:.2f} (the machine is shared: figures are noisy)",
          flush=True)
    seeds = list(range(args.seeds))
    one = seeds_per_minute(1, seeds, args.chunk, args.sim, args.hw)
    two = seeds_per_minute(2, seeds, args.chunk, args.sim, args.hw)
    ratio = two["seeds_per_min"] / one["seeds_per_min"]
    print(f"\n{'workers':>7} {'seeds':>6} {'passed':>6} {'wall s':>7} {'seeds/min':>10} "
          f"{'cluster start s':>15}")
    for r in (one, two):
        print(f"{r['workers']:>7} {r['seeds']:>6} {r['passed']:>6} {r['wall_s']:>7.2f} "
              f"{r['seeds_per_min']:>10.0f} {r['cluster_start_s']:>15.2f}")
    print(f"2 workers / 1 worker: {ratio:.2f}x (ideal 2.00x on 2 free cores)")
    ov = dask_overhead(args.tasks, args.sim, args.hw)
    print(f"\nDask per task ({ov['tasks']} single-seed tasks, 1 worker): direct call "
          f"{1e3 * ov['direct_s_per_seed']:.1f} ms/seed, through Dask "
          f"{1e3 * ov['dask_s_per_seed']:.1f} ms/seed: overhead {ov['overhead_ms_per_task']:.1f} "
          f"ms/task; no-op tasks on 2 workers: {ov['noop_tasks_per_s']:,.0f} tasks/s")
    build_s = None if args.no_cold_build else cold_build_seconds(args.hw)
    if build_s is not None:
        print(f"\ncold build of the compiled harness for {args.hw}: {build_s:.1f} s")
    coco = None
    if args.cocotb_seeds:
        per_c, build_c = cocotb_cost("verilator", args.hw, args.cocotb_seeds,
                                     not args.no_cold_build)
        coco = (per_c, build_c)
        print(f"cocotb on Verilator, {args.hw}: {per_c:.2f} s per seed ({args.cocotb_seeds} "
              "seeds in one simulator run)" + ("" if build_c is None else
                                                 f"; cold build {build_c:.1f} s"))
    db = db_write_rate()
    print("\nresults database (SQLite, WAL, 25 items per transaction):")
    for w, d in db.items():
        print(f"  {w} writer(s): {d['items_per_s']:,.0f} items/s, {d['tx_per_s']:,.0f} "
              f"transactions/s")
    eff = min(1.0, ratio / 2)
    paths = [("harness", 60 / one["seeds_per_min"], build_s)]
    if coco:
        paths.append(("cocotb+verilator", coco[0], coco[1]))
    print(f"\nprojection: {args.machines} machines x {args.cores} cores = "
          f"{args.machines * args.cores} workers, {args.farm_seeds:,} seeds, per-core "
          f"efficiency {eff:.0%} (the 2-worker ratio measured here)")
    print(f"  {'path':<17} {'core-ms/seed':>12} {'seeds/min':>11} {'wall min':>9} "
          f"{'build share':>11} {'chunk':>6} {'tasks/s':>8} {'DB items/s':>10}")
    proj = {}
    for name, per_seed, b in paths:
        p = projection(per_seed, eff, b, ov["noop_tasks_per_s"], db[1], machines=args.machines,
                       cores=args.cores, seeds=args.farm_seeds)
        proj[name] = dict(p, per_seed_ms=1e3 * per_seed)
        share = "-" if p["build_share"] is None else f"{p['build_share']:.0%}"
        print(f"  {name:<17} {1e3 * per_seed:>12.1f} {p['seeds_per_min']:>11,.0f} "
              f"{p['wall_min']:>9.1f} {share:>11} {p['chunk']:>6} {p['tasks_per_s']:>8,.0f} "
              f"{p['db_items_per_s']:>10,.0f}")
    print(f"  (chunk: the smallest keeping tasks/s under half of {ov['noop_tasks_per_s']:,.0f} "
          f"and transactions/s under half of {db[1]['tx_per_s']:,.0f}, the rates measured "
          "here; build share: one build per machine against its share of the seeds)")
    p = proj
    items = [{"key": f"seeds_per_min_{r['workers']}w", "outcome": "ok",
              "metrics": {"seeds_per_min": r["seeds_per_min"], "workers": r["workers"]}}
             for r in (one, two)]
    items += [{"key": "scaling_2w_over_1w", "outcome": "ok", "metrics": {"ratio": ratio}},
              {"key": "dask_overhead", "outcome": "ok", "metrics": ov},
              {"key": "db_write_rate", "outcome": "ok",
               "metrics": {str(w): d["items_per_s"] for w, d in db.items()}}]
    if build_s is not None:
        items.append({"key": "cold_build", "outcome": "ok", "metrics": {"seconds": build_s}})
    rid = record_run("bench", items, db=args.db, name="farm_scaling", simulator=args.sim,
                     summary={"projection": p})
    print(f"\nrecorded as run {rid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
