"""Random RTL regression on cocotb (Verilator or Icarus).

    python -m systolic_conv.sim.regress --seeds 500 --sim verilator --hw small
    make regress SEEDS=500 SIM=icarus HW=small          # the same through make
    make regress SEEDS=5000 SIM=harness HW=square        # the compiled harness, no cocotb
    make regress SEED=1234 SIM=verilator HW=small WAVES=1   # one seed, FST waves
    make regress SEED=1234 FROM=1225 SIM=verilator HW=small  # seeds 1225..1234, one chunk
    systolic-conv regress --seeds 100000 --sim verilator --scheduler tcp://head:8786

Each seed draws one random layer valid for the hardware (see
:func:`systolic_conv.sim.cocotb.layers.draw_layer`: kernels 1-7 incl. non-square,
stride 1-4, dilation 1-4 (decomposed into polyphase invocations beyond the
hardware's limit, and always for depthwise columns), every padding form and mode
(reflect / replicate / circular columns pre-padded by the host, zeros with a pad
value), dense / grouped / depthwise (with multiplier) layers -- on a square array
the depthwise mapping with its column phases --, batches, channels around the
array size, tflite / half_up requantization with clamp bounds and packed 8- or
16-bit results (or host requantization), full-range data and bias) with a random
stall pattern, plans it with the host planner as a user's layer is planned, streams
its invocations back-to-back through the cocotb
testbench and checks them against the golden model. Seeds run in chunks
(:func:`run_seeds`, one simulator process per chunk) on a Dask farm
(:mod:`systolic_conv.farm`): a local cluster of ``--jobs`` processes by default, or
the cluster at ``--scheduler``. Every failure prints its seed and a one-line replay
command that reproduces it exactly: on cocotb the seeds of a chunk run back-to-back in
one simulator process (no reset between passing layers), so the replay runs the chunk
from its first seed up to the failing one (``--from FIRST --seed S``); on the harness
every seed runs alone from reset, so the seed alone is exact. After the run, the first
``--waves-on-fail`` failing seeds are re-run that way in a waves build: the FST's path
is printed, and a failure that does not come back is reported loudly. The end prints
a summary table and the functional coverage (``--coverage`` adds Verilator line/toggle
coverage, merged from the chunks' work directories on this machine). Each run and each
seed is recorded in the results database (``--db``, :mod:`systolic_conv.results`);
``systolic-conv report`` reads it.
"""

import json
import os
import pathlib
import sys
import time

from .cocotb.layers import hw_config
from .cocotb.coverage import Coverage, verilator_coverage
from .cocotb.runner import SIMULATORS
from .toolchain import build_root, prune_builds

__all__ = ["main", "regress", "run_seeds"]


def _prefix(chunk, seed):
    """The seeds of ``chunk`` up to and including ``seed``, in order: what one cocotb
    simulator process ran before and with ``seed`` (no reset between passing layers)."""
    chunk = [int(x) for x in chunk] if chunk else []
    return chunk[:chunk.index(seed) + 1] if seed in chunk else [int(seed)]


def _seed_flags(prefix):
    """``(flags, make variables or None)`` that run ``prefix`` as one chunk, in order."""
    s = prefix[-1]
    if len(prefix) == 1:
        return f"--seed {s}", f"SEED={s}"
    if prefix == list(range(prefix[0], s + 1)):
        return f"--from {prefix[0]} --seed {s}", f"SEED={s} FROM={prefix[0]}"
    # not a range (seeds given one by one): every seed, and one chunk of them all
    return " ".join(f"--seed {x}" for x in prefix) + f" --chunk {len(prefix)}", None


def _hw_flag(hw):
    import shlex
    return shlex.quote(hw if isinstance(hw, str) else
                       json.dumps(hw_config(hw).to_dict(), separators=(",", ":")))


def _replay(seed, sim, hw, waves=False, budget=30000, prefix=None):
    """The printed replay line of a failing ``seed``: ``prefix`` is the chunk's seeds up
    to it (cocotb; ignored on the harness, where every seed runs alone from reset)."""
    prefix = [seed] if sim == "harness" or not prefix else list(prefix)
    flags, make = _seed_flags(prefix)
    b = "" if budget == 30000 else f" --budget {budget}"
    py = f"python -m systolic_conv.sim.regress {flags} --sim {sim} --hw {_hw_flag(hw)}{b}"
    named = isinstance(hw, str) and not hw.startswith("{")
    if sim == "harness":
        why = "exact: every harness seed runs alone from reset, in a new model"
    elif len(prefix) > 1:
        why = (f"exact: seeds {prefix[0]}..{seed} of the chunk in one simulator process, "
               "in order, as in the regression")
    else:
        why = "exact: the first seed of its chunk, from reset"
    if make and named:
        return (f"make regress {make} SIM={sim} HW={hw}" + (" WAVES=1" if waves else "")
                + f"   # or: {py}   ({why})")
    return f"{py}" + (" --waves" if waves else "") + f"   # {why}"


def _replay_cmd(seed, sim, hw, budget=30000, prefix=None):
    """The command that replays ``seed`` exactly (recorded with it in the results
    database): on cocotb the chunk's seeds from its first up to ``seed``, ``prefix``."""
    prefix = [seed] if sim == "harness" or not prefix else list(prefix)
    flags, _ = _seed_flags(prefix)
    return (f"systolic-conv regress {flags} --sim {sim} --hw {_hw_flag(hw)}"
            + ("" if budget == 30000 else f" --budget {budget}"))


def _hw_name(hw):
    cfg = hw_config(hw)
    # a name of HW_CONFIGS as given; a config (or its JSON): its name (file-name safe)
    return hw if isinstance(hw, str) and not hw.startswith("{") else cfg.name()


def run_seeds(seeds, *, sim="verilator", hw="small", budget=30000, waves=False,
              coverage_rtl=False, tag=None):
    """Run one chunk of seeds in this process; return one result dict per seed.

    This is the unit of work of a regression, on the local machine or a farm worker:
    the simulation is built or reused from the content-keyed cache under
    :func:`~systolic_conv.sim.toolchain.build_root` (one build at a time per machine),
    then every seed's random layer is drawn, run and checked against the golden model.

    Parameters
    ----------
    seeds : list of int
    sim : {"verilator", "icarus", "harness"}
        cocotb on a simulator (one simulator process for the chunk), or the compiled
        Verilator harness in this process.
    hw : str, dict or HardwareConfig
    budget : int
        Estimated cycles per drawn layer.
    tag : str or None
        Names the chunk's work directory (cocotb): ``<build root>/regress-<tag>/``.

    Returns
    -------
    list of dict
        Per seed: ``seed``, ``ok``, ``error`` (None when ok), ``seconds``,
        ``sim_cycles``, ``tags`` (the functional-coverage sample, None when the layer
        could not be drawn), ``worker`` (``host:pid``) and, for cocotb, ``test_dir``
        and (``waves``) ``waves``, the chunk's FST file.
    """
    from ..farm import worker_id
    cfg = hw_config(hw)
    seeds = [int(s) for s in seeds]
    if sim == "harness":
        out = _harness_seeds(seeds, cfg, budget)
    elif sim in SIMULATORS:
        out = _cocotb_seeds(seeds, cfg, sim, budget, waves, coverage_rtl, tag)
    else:
        raise ValueError(f"sim={sim!r} must be one of {', '.join(SIMULATORS + ('harness',))}")
    me = worker_id()
    for r in out:
        r["worker"] = me
    return out


def _harness_seeds(seeds, cfg, budget, harness=None):
    from .cocotb.layers import draw_layer, prepare, layer_tags
    from .cocotb.fastpath import run_on_harness
    from .harness import get_harness
    h = harness if harness is not None else get_harness(cfg)
    out = []
    for s in seeds:
        t0 = time.perf_counter()
        tags, cycles = None, 0
        try:
            run = prepare(draw_layer(s, cfg, budget=budget), cfg)
            tags = layer_tags(run)
            sb, hr = run_on_harness(run, harness=h, seed=s)
            cycles = hr.sim_cycles
            err = sb.first_failure()
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
        out.append({"seed": s, "ok": not err, "error": err or None, "tags": tags,
                    "sim_cycles": cycles, "seconds": time.perf_counter() - t0})
    return out


def _cocotb_seeds(seeds, cfg, sim, budget, waves, coverage_rtl, tag):
    from .cocotb.runner import build, run_job, waves_file
    t0 = time.perf_counter()
    b = build(cfg, sim, waves=waves, coverage=coverage_rtl)
    test_dir = build_root() / f"regress-{tag or f'{sim}-{cfg.name()}-{os.getpid()}'}" / \
        f"chunk-{seeds[0]:08d}-{len(seeds)}"
    job = {"layers": [{"seed": s} for s in seeds], "budget": budget}
    try:
        res = run_job(b, "run_layers", job, test_dir=test_dir, waves=waves)
    except Exception as exc:            # the simulator itself failed: every seed errs
        el = (time.perf_counter() - t0) / len(seeds)
        fst = waves_file(b, test_dir) if waves else None
        extra = {"waves": str(fst)} if fst is not None and fst.exists() else {}
        return [{"seed": s, "ok": False, "error": f"simulator run crashed: {exc!r}"[:2000],
                 "crashed": True, "tags": None, "sim_cycles": 0, "seconds": el,
                 "test_dir": str(test_dir), **extra} for s in seeds]
    by_seed = {e["spec"]["seed"]: e for e in res.entries if "spec" in e}
    fst = waves_file(b, test_dir) if waves else None
    extra = {"waves": str(fst)} if fst is not None and fst.exists() else {}
    out = []
    for s in seeds:
        e = by_seed.get(s)
        if e is None:                   # the run died before reaching this seed
            out.append({"seed": s, "ok": False, "tags": None, "sim_cycles": 0, "seconds": 0.0,
                        "error": "simulation ended before this seed "
                                 f"(see {res.test_dir / 'sim.log'})",
                        "test_dir": str(test_dir), **extra})
            continue
        out.append({"seed": s, "ok": bool(e.get("ok")), "error": e.get("error") or None,
                    "tags": e.get("tags"), "sim_cycles": e.get("sim_cycles") or 0,
                    "seconds": e.get("wall") or 0.0, "test_dir": str(test_dir), **extra})
    return out


def _chunks(seeds, chunk, sim, workers):
    if chunk is None:
        per = 4 if sim == "harness" else 2           # units per worker, for balance
        cap = 200 if sim == "harness" else 25
        chunk = max(1, min(cap, -(-len(seeds) // max(1, workers * per))))
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r} must be a positive integer")
    return [seeds[i:i + chunk] for i in range(0, len(seeds), chunk)]


def regress(seeds, *, sim="verilator", hw="small", jobs=None, chunk=None, waves=False,
            coverage_rtl=False, budget=30000, out=None, quiet=False, scheduler=None,
            db=None, progress=True, waves_on_fail=1):
    """Run ``seeds`` on a farm; return the summary dict (also written to ``out``).

    Parameters
    ----------
    seeds : list of int
    sim, hw, budget, waves, coverage_rtl :
        As :func:`run_seeds`.
    jobs : int or None
        Worker processes of a local cluster (default: one per core).
    chunk : int or None
        Seeds per unit of work (default: about four units per worker on the harness,
        two on cocotb, at most 200 / 25 seeds).
    scheduler : str or None
        Where the chunks run: see :class:`systolic_conv.farm.Farm`.
    db : path, URL, ResultsDB, None or False
        Record the run and every seed in this results database (None or False: not
        recorded; the command line records into the default database).
    quiet : bool
        Print nothing.
    progress : bool
        Show the progress (a bar on a terminal, lines otherwise) and each failure
        as it comes.
    waves_on_fail : int
        After the run, re-run the first this many failing seeds with waves, in this
        process (0: none): on cocotb the seeds of the failing seed's chunk from its
        first up to it, in one simulator process (what the replay command runs), on
        the harness the seed alone in its trace build. Each prints ``waves: <FST>`` and
        the replay command, and is checked to fail with the same first error line (a
        failure that does not come back is reported loudly). The summary's
        ``waves_on_fail`` lists them: ``seed``, ``seeds`` (what was re-run), ``waves``,
        ``reproduced``, ``error`` (the re-run's), ``replay``.

    Every entry of the summary's ``failures`` has ``replay``: the command that
    reproduces it exactly (also recorded in the results database).
    """
    from ..farm import Farm, Progress
    from ..results import open_run
    cfg = hw_config(hw)
    hw_name = _hw_name(hw)
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds: every seed must appear once (duplicates given)")
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    tag = f"{sim}-{hw_name}-{os.getpid()}"
    if sim != "harness":
        prune_builds(f"regress-{sim}-{hw_name}-", keep=2)    # earlier runs' work directories
    cov = Coverage.for_config(cfg, design=sim != "harness")   # the harness samples no DUT bins
    t0 = time.perf_counter()
    st = {"results": {}, "crashed": [], "sim_cycles": 0, "recorded": 0, "workers": set(),
          "chunk_of": {}}
    with Farm(scheduler, jobs, quiet=quiet) as farm:
        if farm.remote:
            farm.start()                 # connect first: sizes the chunks
        chunks = _chunks(seeds, chunk, sim, farm.n_workers)
        farm.start(len(chunks))          # a cluster that cannot start records no run
        with open_run(db if db is not None else False, "regress",
                      name=f"regress {sim} {hw_name}", config=cfg.to_dict(), simulator=sim,
                      coverage_model=cov.bin_names()) as run:
            say(f"== regress: {len(seeds)} seeds on {sim}, hardware {hw_name} = {cfg}; "
                f"{len(chunks)} chunks")
            prog = Progress(len(seeds), f"regress {sim} {hw_name}",
                            quiet=quiet or not progress,
                            every=None if sim != "harness" else max(1, len(seeds) // 20))
            try:
                for part, res, err in farm.map(
                        _ChunkFn(sim, hw if isinstance(hw, str) else cfg, budget, waves,
                                 coverage_rtl, tag), chunks,
                        split=lambda p: [[s] for s in p] if len(p) > 1 else None,
                        label="regress"):
                    _take(part, res, err, st, cov, run, prog, sim, hw, budget)
            finally:
                prog.close()
            summary = _summary(seeds, st, cov, sim, hw_name, cfg, time.perf_counter() - t0)
            for f in summary["failures"]:
                f["replay"] = _replay_cmd(f["seed"], sim, hw, budget,
                                          _prefix(st["chunk_of"].get(f["seed"]), f["seed"]))
            if run is not None:
                run.summary = {k: v for k, v in summary.items() if k != "failures"}
                summary["run_id"] = run.id
                summary["db"] = run.db.url
    _print_summary(summary, st, cov, say, sim, hw, budget)
    if coverage_rtl:
        dats = sorted({pathlib.Path(r["test_dir"]) / "coverage.dat"
                       for r in st["results"].values() if r.get("test_dir")})
        rtl_sum, text = verilator_coverage(dats, out_dir=build_root() / f"regress-{tag}"
                                           / "coverage")
        summary["rtl_coverage"] = rtl_sum
        say("")
        say(text)
    if waves:
        for f in sorted({r["waves"] for r in st["results"].values() if r.get("waves")}):
            say(f"waves: {f}")
    if summary["failed"] and waves_on_fail:
        summary["waves_on_fail"] = _waves_on_fail(summary["failed"][:waves_on_fail], st, sim,
                                                  hw, budget, tag, say)
    out = pathlib.Path(out) if out else build_root() / f"regress-{sim}-{hw_name}.json"
    # the functional-coverage report of this run, text and HTML, beside the summary
    stem = out.with_suffix("")
    stem.with_name(stem.name + "-coverage.txt").write_text(cov.report() + "\n")
    stem.with_name(stem.name + "-coverage.html").write_text(cov.html())
    summary["coverage_goal"] = coverage_goal_verdict(cov, len(seeds))
    if summary["coverage_goal"]["enforced"] and not summary["coverage_goal"]["met"]:
        say(f"\ncoverage goal NOT met at {len(seeds)} seeds (closure count "
            f"{CLOSURE_SEEDS}): {len(summary['coverage_goal']['open'])} bins open, e.g. "
            + ", ".join(summary["coverage_goal"]["open"][:10]))
    out.write_text(json.dumps(summary, indent=1, default=str))
    say(f"\nsummary written to {out}" + (f"; run {summary['run_id']} recorded in {summary['db']}"
                                          if "run_id" in summary else ""))
    return summary


#: the seed count at and above which ``make regress`` must close functional coverage
#: (every axis 100 %, every cross >= 95 %): below it a run reports coverage only
CLOSURE_SEEDS = 400


def coverage_goal_verdict(cov, n_seeds, enforce=None):
    """``{"enforced", "met", "open"}``: whether the goals are enforced for a run of
    ``n_seeds`` (at or above :data:`CLOSURE_SEEDS`, or ``enforce``), met, and the bins
    still open (axis bins and cross bins below their goal)."""
    from .cocotb.coverage import AXIS_GOAL, CROSS_GOAL
    open_bins = []
    for a in cov.axes:
        c, unhit = cov.axis_coverage(a)
        if c < AXIS_GOAL:
            open_bins += [f"{a}={b}" for b in unhit]
    for x in cov.crosses:
        c, unhit = cov.cross_coverage(x)
        if c < CROSS_GOAL:
            open_bins += [f"{x[0]}*{x[1]}={u}/{v}" for u, v in unhit]
    enforced = (n_seeds >= CLOSURE_SEEDS) if enforce is None else enforce
    return {"enforced": bool(enforced), "met": not open_bins, "open": open_bins}


class _ChunkFn:
    """``run_seeds`` with the run's fixed arguments (picklable for Dask)."""

    def __init__(self, sim, hw, budget, waves, coverage_rtl, tag):
        self.kw = dict(sim=sim, hw=hw, budget=budget, waves=waves, coverage_rtl=coverage_rtl,
                       tag=tag)

    def __call__(self, seeds):
        return run_seeds(seeds, **self.kw)


def _take(part, res, err, st, cov, run, prog, sim, hw, budget):
    """Account one finished chunk: coverage, failures, the database, the progress."""
    part = [int(s) for s in part]
    chunk_of = st.setdefault("chunk_of", {})
    for s in part:                    # the seeds one simulator process ran, in order
        chunk_of.setdefault(s, part)
    if err is not None:               # the chunk raised, or was lost with its workers
        st["crashed"].append(err)
        prog.write(f"!! a chunk of {len(part)} seeds failed to run: {err}"[:2000])
        res = [{"seed": s, "ok": False, "error": f"chunk failed to run: {err}", "crashed": True,
                "tags": None, "sim_cycles": 0, "seconds": 0.0} for s in part]
    items, n_pass, n_fail = [], 0, 0
    for r in res:
        s = r["seed"]
        if s in st["results"]:        # a chunk's result arrives once; never count twice
            continue
        st["results"][s] = r
        if r.get("worker"):
            st["workers"].add(r["worker"])
        if r.get("crashed") and err is None:
            st["crashed"].append(r["error"])
        bins = cov.bins_hit(r["tags"]) if r.get("tags") else None
        if r.get("tags") and r["ok"]:      # a failing seed covers nothing
            cov.sample(r["tags"])
        st["sim_cycles"] += r.get("sim_cycles") or 0
        prefix = _prefix(chunk_of.get(s), s)
        if r["ok"]:
            n_pass += 1
        else:
            n_fail += 1
            # the replay line last, whole: a long error is cut, never the command
            prog.write(f"FAIL seed {s}: {str(r['error'])[:2500]}\n     replay: "
                       f"{_replay(s, sim, hw, budget=budget, prefix=prefix)}")
        items.append({"key": f"seed={s}", "outcome": "pass" if r["ok"] else
                      ("error" if r.get("crashed") else "fail"),
                      "replay": _replay_cmd(s, sim, hw, budget, prefix),
                      "seconds": r.get("seconds"), "coverage": bins, "error": r.get("error"),
                      "metrics": {"sim_cycles": r.get("sim_cycles") or 0},
                      "worker": r.get("worker")})
    if run is not None and items:
        st["recorded"] += run.add(items)
    prog.update(len(items), n_pass, n_fail, f"  {st['sim_cycles'] / 1e6:7.2f} M cycles")


def _first_line(r):
    """A result's first error line, with its own work directory blanked out (a re-run
    works elsewhere); None when it passed."""
    if r.get("ok"):
        return None
    line = (str(r.get("error") or "").strip().splitlines() or [""])[0]
    if r.get("test_dir"):
        line = line.replace(str(r["test_dir"]), "<test_dir>")
    return line


class _Traced:
    """A harness whose every run writes its FST waves to ``path``."""

    def __init__(self, h, path):
        self._h, self._path = h, str(path)

    def __getattr__(self, name):
        return getattr(self._h, name)

    def run(self, *a, **kw):
        return self._h.run(*a, trace_path=self._path, **kw)


def _harness_waves(seed, hw, budget, out_dir):
    """Run ``seed`` alone on the harness's trace build, writing ``out_dir``/seed-S.fst;
    return ``(result, FST path)``."""
    from .harness import get_harness
    cfg = hw_config(hw)
    h = get_harness(cfg, trace=True)
    if not h.lib.sc_has_trace():
        raise RuntimeError(f"the harness trace build {h.path} has no trace support")
    out_dir.mkdir(parents=True, exist_ok=True)
    fst = out_dir / f"seed-{seed:08d}.fst"
    if fst.exists():
        fst.unlink()
    r = _harness_seeds([seed], cfg, budget, harness=_Traced(h, fst))[0]
    return r, (str(fst) if fst.exists() else None)


def _waves_on_fail(failed, st, sim, hw, budget, tag, say):
    """Re-run each failing seed of ``failed`` with waves (see :func:`regress`,
    ``waves_on_fail``); return one dict per seed."""
    out = []
    for s in failed:
        r0 = st["results"][s]
        prefix = [s] if sim == "harness" else _prefix(st.get("chunk_of", {}).get(s), s)
        what = (f"seeds {prefix[0]}..{s} (its chunk up to it) in one simulator process"
                if len(prefix) > 1 else f"seed {s}")
        say(f"\n== waves: re-running {what} with waves on {sim}")
        entry = {"seed": s, "seeds": prefix, "waves": None, "reproduced": False,
                 "error": None, "replay": _replay_cmd(s, sim, hw, budget, prefix)}
        try:
            if sim == "harness":
                r1, entry["waves"] = _harness_waves(s, hw, budget,
                                                    build_root() / f"regress-{tag}-waves")
            else:
                r1 = run_seeds(prefix, sim=sim, hw=hw, budget=budget, waves=True,
                               tag=f"{tag}-waves")[-1]
                entry["waves"] = r1.get("waves")
        except Exception as exc:        # noqa: BLE001 -- reported, the run's verdict stands
            entry["error"] = f"the waves re-run did not run: {type(exc).__name__}: {exc}"
            say(f"!! waves: seed {s}: {entry['error']}"[:2000])
            out.append(entry)
            continue
        want, got = _first_line(r0), _first_line(r1)
        entry["error"] = r1.get("error")
        entry["reproduced"] = got is not None and got == want
        if entry["waves"] and os.path.getsize(entry["waves"]) > 0:
            say(f"waves: {entry['waves']}")
        else:
            say(f"!! waves: seed {s}: the re-run wrote no FST ({entry['waves'] or 'no file'})")
        say(f"replay: {_replay(s, sim, hw, budget=budget, prefix=prefix)}")
        if entry["reproduced"]:
            say(f"seed {s}: the failure reproduced (same first error line)")
        else:
            bar = "!" * 78
            say(f"{bar}\n!! NOT REPRODUCED: seed {s} failed in the regression with\n!!   "
                f"{want}\n!! but re-running {what} with waves "
                + ("passed." if got is None else f"failed differently:\n!!   {got}")
                + "\n!! The failure depends on more than its replay runs (simulator state, "
                "the machine, a waves build behaving differently): a finding to report.\n"
                + bar)
        out.append(entry)
    return out


def _summary(seeds, st, cov, sim, hw_name, cfg, wall):
    res = st["results"]
    failures = [{"seed": s, "error": res[s]["error"]} for s in seeds
                if s in res and not res[s]["ok"]]
    return {
        "sim": sim, "hw": hw_name, "config": cfg.to_dict(), "seeds": len(seeds),
        "passed": sum(1 for s in seeds if res.get(s, {}).get("ok")),
        "failed": sorted(f["seed"] for f in failures),
        "missing": sorted(set(seeds) - set(res)), "crashed": st["crashed"],
        "sim_cycles": st["sim_cycles"], "wall_seconds": wall,
        "cycles_per_second": st["sim_cycles"] / wall if wall else 0,
        "seeds_per_minute": 60 * len(res) / wall if wall else 0,
        "workers": len(st["workers"]), "coverage": cov.summary(), "failures": failures[:50],
    }


def _print_summary(summary, st, cov, say, sim, hw, budget):
    hw_name = _hw_name(hw)
    say("")
    say(f"{'sim':<10} {'hw':<8} {'seeds':>6} {'passed':>7} {'failed':>7} {'M cycles':>9} "
        f"{'wall s':>8} {'k cyc/s':>8} {'workers':>7}")
    say(f"{sim:<10} {hw_name:<8} {summary['seeds']:>6} {summary['passed']:>7} "
        f"{len(summary['failed']):>7} {summary['sim_cycles'] / 1e6:>9.2f} "
        f"{summary['wall_seconds']:>8.1f} {summary['cycles_per_second'] / 1e3:>8.1f} "
        f"{summary['workers']:>7}")
    if summary["failures"]:
        say("\nfailing seeds (the command shown replays one exactly):")
        for f in summary["failures"][:20]:
            pre = _prefix(st.get("chunk_of", {}).get(f["seed"]), f["seed"])
            say(f"  seed {f['seed']}: {str(f['error'])[:300]}\n    "
                f"{_replay(f['seed'], sim, hw, budget=budget, prefix=pre)}")
    say("")
    say(cov.report())
    from .cocotb import scoreboard
    if scoreboard._cycle_model() is None:
        say(f"\nnote: the counters of stall-free layers were not compared with the cycle "
            f"model ({scoreboard.CYCLE_MODEL_ERROR})")


def main(argv=None):
    """``python -m systolic_conv.sim.regress``: the flags of ``systolic-conv regress``
    (:mod:`systolic_conv.farm_cli`); returns the exit status."""
    from ..cli_common import run_command
    from ..farm_cli import standalone_parser
    return run_command(standalone_parser("regress", "python -m systolic_conv.sim.regress"),
                       argv)


if __name__ == "__main__":
    sys.exit(main())
