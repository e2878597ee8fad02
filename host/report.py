"""The farm report: what failed, since which commit, and is coverage closing.

``systolic-conv report [--db PATH] [--html DIR] [--json]`` reads the results
database (:mod:`systolic_conv.results`) and shows

* the latest runs (kind, commit, start, items passed / failed, status);
* regression failures grouped by error signature, with the commit each signature
  first appeared in, how many seeds hit it, and a seed to replay;
* flaky seeds: one seed that both passed and failed on the same code (same commit
  and same uncommitted diff), same hardware and simulator;
* functional coverage merged over every regression run of a hardware
  configuration, with the bins still open, and the closure curve (bins hit
  against seeds run);
* mutation score over time, and Fmax / LUT4 (synthesis) and simulation speed
  (regressions and benchmarks) over commits.

:func:`report_data` returns all of it as one JSON-able dict; :func:`report_text`
and :func:`write_html` (static page, matplotlib PNGs) present it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import json
import pathlib
from collections import defaultdict

from .results import GOOD_OUTCOMES, open_db

__all__ = ["report_data", "report_text", "write_html", "open_existing_db"]

FAIL_OUTCOMES = ("fail", "error")


def _iso(t):
    return None if t is None else _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S")


def _commit_label(run):
    c = (run.get("git_commit") or "")[:8] or "?"
    return c + ("+" if run.get("dirty") else "")


def _loads(s, default=None):
    return default if s is None else json.loads(s)


def report_data(db=None, limit=30):
    """Everything the report shows, as a JSON-able dict (see the module docstring).

    Parameters
    ----------
    db : path, URL, ResultsDB or None
        The results database (None: the default one).
    limit : int
        How many of the latest runs to list (the trends use every run).
    """
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit={limit!r} must be a positive integer")
    rdb = open_existing_db(db)
    runs = rdb.run_rows()                       # newest first
    counts = rdb.outcome_counts()
    by_id = {r["id"]: r for r in runs}
    return {
        "db": rdb.url,
        "generated": _iso(_dt.datetime.now(_dt.timezone.utc).timestamp()),
        "runs": [_run_entry(r, counts.get(r["id"], {})) for r in runs[:limit]],
        "failures": _failures(rdb, by_id),
        "flaky": _flaky(rdb, by_id),
        "coverage": _coverage(rdb, runs),
        "mutation": _mutation(runs, counts),
        "synth": _synth(rdb, by_id),
        "speed": _speed(rdb, runs),
    }


def open_existing_db(db):
    """Open ``db`` for reading; a SQLite file that does not exist is an error, not a new
    empty database."""
    from .results import ResultsDB, _as_url, default_url
    if isinstance(db, ResultsDB):
        return db
    url = _as_url(db) if db is not None else default_url()
    if url.startswith("sqlite:///") and not pathlib.Path(url[len("sqlite:///"):]).exists():
        raise FileNotFoundError(f"db={str(db if db is not None else url)!r}: no results "
                                "database there (run a regression first, or give --db)")
    return open_db(url)


def _run_entry(r, c):
    total = sum(c.values())
    passed = sum(v for k, v in c.items() if k in GOOD_OUTCOMES)
    return {"id": r["id"], "kind": r["kind"], "name": r["name"], "commit": r["git_commit"],
            "dirty": r["dirty"], "code_version": r["code_version"], "started": _iso(r["started"]),
            "ended": _iso(r["ended"]), "status": r["status"], "simulator": r["simulator"],
            "total": total, "passed": passed, "failed": total - passed,
            "seconds": None if r["ended"] is None else r["ended"] - r["started"],
            "host": r["host"]}


def _chrono(by_id):
    """run id -> (started, id), for ordering items by when their run started."""
    return {i: (r["started"], i) for i, r in by_id.items()}


def _failures(rdb, by_id):
    it = rdb.items
    rows = rdb.item_rows(columns=["run_id", "key", "outcome", "signature", "error", "replay"],
                         where=it.c.outcome.in_(FAIL_OUTCOMES))
    order = _chrono(by_id)
    groups = defaultdict(list)
    for row in rows:
        run = by_id.get(row["run_id"])
        if run is None or run["kind"] != "regress":
            continue
        groups[row["signature"] or "(no message)"].append(row)
    out = []
    for sig, rs in groups.items():
        rs.sort(key=lambda r: order[r["run_id"]])
        first, last = by_id[rs[0]["run_id"]], by_id[rs[-1]["run_id"]]
        out.append({"signature": sig, "count": len(rs), "seeds": len({r["key"] for r in rs}),
                    "runs": len({r["run_id"] for r in rs}),
                    "first_commit": first["git_commit"], "first_dirty": first["dirty"],
                    "first_seen": _iso(first["started"]), "first_run": first["id"],
                    "last_commit": last["git_commit"], "last_seen": _iso(last["started"]),
                    "key": rs[-1]["key"], "replay": rs[-1]["replay"],
                    "error": (rs[-1]["error"] or "")[:500]})
    out.sort(key=lambda g: (-g["count"], g["signature"]))
    return out


def _flaky(rdb, by_id):
    rows = rdb.item_rows(columns=["run_id", "key", "outcome", "replay"])
    groups = defaultdict(lambda: {"pass": 0, "fail": 0, "runs": set()})
    for row in rows:
        run = by_id.get(row["run_id"])
        if run is None or run["kind"] != "regress" or not run["code_version"]:
            continue
        k = (run["code_version"], run["config"], run["simulator"], row["key"])
        g = groups[k]
        g["pass" if row["outcome"] in GOOD_OUTCOMES else "fail"] += 1
        g["runs"].add(row["run_id"])
        g["replay"] = row["replay"]
    out = []
    for (cv, _cfg, sim, key), g in groups.items():
        if g["pass"] and g["fail"]:
            out.append({"key": key, "code_version": cv, "simulator": sim, "passes": g["pass"],
                        "fails": g["fail"], "runs": sorted(g["runs"]), "replay": g["replay"]})
    out.sort(key=lambda f: (f["code_version"], f["key"]))
    return out


def _coverage(rdb, runs):
    """Per coverage model (hardware config + bins): merged bins and the closure curve."""
    groups = {}
    for r in sorted(runs, key=lambda r: (r["started"], r["id"])):
        if r["kind"] != "regress" or not r.get("coverage_model"):
            continue
        model = _loads(r["coverage_model"])
        cfg = _loads(r["config"], {})
        gkey = hashlib.sha256((r["coverage_model"] + (r["config"] or "")).encode()).hexdigest()
        g = groups.setdefault(gkey, {"config": cfg, "bins": model, "runs": [], "hit": set(),
                                     "curve": [], "seeds": 0})
        g["runs"].append(r["id"])
        allb = set(model)
        for row in rdb.item_rows(r["id"], columns=["coverage", "outcome"]):
            if row["outcome"] not in GOOD_OUTCOMES:     # failing seeds cover nothing
                continue
            g["seeds"] += 1
            if row["coverage"]:
                g["hit"].update(b for b in _loads(row["coverage"]) if b in allb)
            g["curve"].append((g["seeds"], len(g["hit"])))
    out = []
    for g in groups.values():
        curve = g["curve"]
        step = max(1, len(curve) // 200)
        pts = curve[::step] + ([curve[-1]] if curve and (len(curve) - 1) % step else [])
        open_bins = [b for b in g["bins"] if b not in g["hit"]]
        cfg = g["config"]
        out.append({"hw": f"{cfg.get('rows', '?')}x{cfg.get('cols', '?')}", "config": cfg,
                    "runs": g["runs"], "seeds": g["seeds"], "bins": len(g["bins"]),
                    "hit": len(g["bins"]) - len(open_bins),
                    "closure": (len(g["bins"]) - len(open_bins)) / len(g["bins"])
                    if g["bins"] else 1.0,
                    "open": open_bins, "curve": [list(p) for p in pts]})
    return out


def _mutation(runs, counts):
    out = []
    for r in sorted(runs, key=lambda r: (r["started"], r["id"])):
        if r["kind"] != "mutate":
            continue
        c = counts.get(r["id"], {})
        killed, survived = c.get("killed", 0), c.get("survived", 0)
        s = _loads(r["summary"], {}) or {}
        out.append({"run": r["id"], "started": _iso(r["started"]), "commit": r["git_commit"],
                    "dirty": r["dirty"], "status": r["status"], "killed": killed,
                    "survived": survived,
                    "unbuilt": c.get("error", 0) + c.get("invalid", 0),
                    "equivalent": c.get("equivalent", 0),
                    "score": killed / (killed + survived) if killed + survived else None,
                    "named_killed": s.get("named_killed"), "named": s.get("named")})
    return out


def _synth(rdb, by_id):
    out = []
    for row in rdb.item_rows(columns=["run_id", "key", "outcome", "metrics"]):
        run = by_id.get(row["run_id"])
        if run is None or run["kind"] not in ("synth", "sweep") or not row["key"].startswith(
                "synth:") or row["outcome"] != "ok":
            continue
        m = _loads(row["metrics"], {})
        out.append({"run": run["id"], "started": _iso(run["started"]), "_t": run["started"],
                    "commit": run["git_commit"], "dirty": run["dirty"], "key": row["key"],
                    "array": f"{m.get('rows')}x{m.get('cols')}", "lut4": m.get("lut4"),
                    "ff": m.get("ff"), "fmax_mhz": m.get("fmax_mhz"), "device": m.get("device"),
                    "routed": m.get("routed")})
    out.sort(key=lambda d: d.pop("_t"))
    return out


def _speed(rdb, runs):
    out = []
    for r in sorted(runs, key=lambda r: (r["started"], r["id"])):
        if r["status"] != "finished":
            continue
        if r["kind"] == "regress":
            s = _loads(r["summary"], {}) or {}
            if not s.get("wall_seconds"):
                continue
            out.append({"run": r["id"], "kind": "regress", "started": _iso(r["started"]),
                        "commit": r["git_commit"], "dirty": r["dirty"], "name": r["name"],
                        "simulator": r["simulator"], "seeds": s.get("seeds"),
                        "workers": s.get("workers"),
                        "seeds_per_minute": s.get("seeds_per_minute"),
                        "cycles_per_second": s.get("cycles_per_second")})
        elif r["kind"] == "bench":
            for row in rdb.item_rows(r["id"], columns=["key", "metrics"]):
                out.append({"run": r["id"], "kind": "bench", "started": _iso(r["started"]),
                            "commit": r["git_commit"], "dirty": r["dirty"], "name": r["name"],
                            "key": row["key"], "metrics": _loads(row["metrics"], {})})
    return out


# ----------------------------------------------------------------------------- text

def _table(headers, rows):
    w = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
         for i, h in enumerate(headers)]
    line = "  ".join(f"{h:<{w[i]}}" for i, h in enumerate(headers))
    out = [line, "  ".join("-" * x for x in w)]
    out += ["  ".join(f"{str(c):<{w[i]}}" for i, c in enumerate(r)) for r in rows]
    return "\n".join(out)


def report_text(data):
    """The report as plain text (what ``systolic-conv report`` prints)."""
    s = [f"results database {data['db']} (report of {data['generated']} UTC)", "",
         "latest runs:"]
    s.append(_table(["id", "kind", "name", "commit", "started (UTC)", "status", "total",
                     "passed", "failed"],
                    [[r["id"], r["kind"], (r["name"] or "")[:40], _commit_label(
                        {"git_commit": r["commit"], "dirty": r["dirty"]}), r["started"],
                      r["status"], r["total"], r["passed"], r["failed"]] for r in data["runs"]]))
    s += ["", f"regression failures by signature ({len(data['failures'])}):"]
    for f in data["failures"][:30]:
        s.append(f"  {f['count']:>5} x  {f['signature'][:110]}")
        s.append(f"         first in {(f['first_commit'] or '?')[:12]}"
                 f"{'+' if f['first_dirty'] else ''} ({f['first_seen']}), last "
                 f"{(f['last_commit'] or '?')[:12]} ({f['last_seen']}); {f['seeds']} seeds; "
                 f"replay: {f['replay']}")
    s += ["", f"flaky seeds (passed and failed on the same code) ({len(data['flaky'])}):"]
    for f in data["flaky"][:30]:
        s.append(f"  {f['key']} on {f['code_version']} ({f['simulator']}): {f['passes']} pass, "
                 f"{f['fails']} fail; replay: {f['replay']}")
    s += ["", "functional coverage merged over regression runs:"]
    for c in data["coverage"]:
        s.append(f"  {c['hw']}: {c['hit']}/{c['bins']} bins ({c['closure']:.1%}) over "
                 f"{c['seeds']} seeds in {len(c['runs'])} runs; open ({len(c['open'])}): "
                 f"{', '.join(c['open'][:12])}{' ...' if len(c['open']) > 12 else ''}")
    s += ["", "mutation score over time:"]
    for m in data["mutation"]:
        sc = "-" if m["score"] is None else f"{m['score']:.1%}"
        s.append(f"  run {m['run']} {m['started']} {(m['commit'] or '?')[:12]}: {m['killed']} "
                 f"killed, {m['survived']} survived, {m['equivalent']} equivalent, "
                 f"{m['unbuilt']} invalid: {sc}")
    s += ["", "synthesis over commits:"]
    for d in data["synth"]:
        s.append(f"  {d['started']} {(d['commit'] or '?')[:12]} {d['array']:<6} LUT4 "
                 f"{d['lut4']} FF {d['ff']} Fmax {d['fmax_mhz']} MHz ({d['device']})")
    s += ["", "simulation speed over commits:"]
    for d in data["speed"]:
        if d["kind"] == "regress":
            s.append(f"  {d['started']} {(d['commit'] or '?')[:12]} {d['name']}: {d['seeds']} "
                     f"seeds, {d['seeds_per_minute'] or 0:.0f} seeds/min, "
                     f"{(d['cycles_per_second'] or 0) / 1e3:.1f} k cycles/s, "
                     f"{d['workers']} workers")
        else:
            s.append(f"  {d['started']} {(d['commit'] or '?')[:12]} bench {d['name']} "
                     f"{d['key']}: {json.dumps(d['metrics'])[:120]}")
    return "\n".join(s)


# ----------------------------------------------------------------------------- HTML

def _plots(data, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = {}

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made[name] = True

    runs = sorted((r for r in data["runs"] if r["kind"] == "regress" and r["total"]),
                  key=lambda r: (r["started"], r["id"]))
    if runs:
        per = {}
        for r in runs:
            lab = _commit_label({"git_commit": r["commit"], "dirty": r["dirty"]})
            p = per.setdefault(lab, [0, 0])
            p[0] += r["passed"]
            p[1] += r["total"]
        fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(per) + 2), 3.4))
        labs = list(per)
        ax.bar(range(len(labs)), [100 * p / t for p, t in per.values()], color="#2ca02c",
               width=0.6)
        ax.set_xlim(-0.7, max(len(labs), 3) - 0.3)
        for i, (p, t) in enumerate(per.values()):
            ax.annotate(f"{p}/{t}", (i, 100 * p / t), ha="center", fontsize=7,
                        xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(labs)))
        ax.set_xticklabels(labs, rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, 105)
        ax.set_ylabel("seeds passed (%)")
        ax.set_title("regression pass rate per commit (+: uncommitted changes)", fontsize=9)
        save(fig, "pass_rate.png")
    if data["coverage"]:
        fig, ax = plt.subplots(figsize=(6, 3.4))
        for c in data["coverage"]:
            xs = [p[0] for p in c["curve"]]
            ax.plot(xs, [100 * p[1] / c["bins"] for p in c["curve"]], label=f"{c['hw']}")
        ax.set_xlabel("seeds run (all regression runs, in order)")
        ax.set_ylabel("coverage bins hit (%)")
        ax.set_ylim(0, 101)
        ax.legend(fontsize=7)
        ax.set_title("functional coverage closure")
        save(fig, "coverage.png")
    mut = [m for m in data["mutation"] if m["score"] is not None]
    if mut:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(range(len(mut)), [100 * m["score"] for m in mut], "o-")
        ax.set_xticks(range(len(mut)))
        ax.set_xticklabels([f"{(m['commit'] or '?')[:8]}\n{m['started'][5:16]}" for m in mut],
                           fontsize=6)
        ax.set_ylabel("mutants killed (%)")
        ax.set_ylim(0, 105)
        ax.set_title("mutation score over time")
        save(fig, "mutation.png")
    if data["synth"]:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
        by = defaultdict(list)
        for d in data["synth"]:
            by[d["array"]].append(d)
        for arr, ds in by.items():
            xs = range(len(ds))
            a1.plot(xs, [d["fmax_mhz"] for d in ds], "o-", label=arr)
            a2.plot(xs, [d["lut4"] for d in ds], "s-", label=arr)
        a1.set_ylabel("Fmax (MHz)")
        a2.set_ylabel("LUT4")
        for a in (a1, a2):
            a.set_xlabel("synthesis runs, in order")
            a.legend(fontsize=7)
        fig.suptitle("Fmax and area over commits")
        save(fig, "synth.png")
    sp = [d for d in data["speed"] if d["kind"] == "regress" and d["seeds_per_minute"]]
    if sp:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for sim in sorted({d["simulator"] for d in sp}):
            ds = [(i, d) for i, d in enumerate(sp) if d["simulator"] == sim]
            ax.plot([i for i, _ in ds], [d["seeds_per_minute"] for _, d in ds], "o-", label=sim)
        ax.set_yscale("log")
        ax.set_xticks(range(len(sp)))
        ax.set_xticklabels([(d["commit"] or "?")[:8] for d in sp], rotation=45, fontsize=6)
        ax.set_ylabel("seeds per minute")
        ax.legend(fontsize=7)
        ax.set_title("regression speed per run")
        save(fig, "speed.png")
    return made


def write_html(data, out_dir):
    """Write ``index.html`` and its PNG plots into ``out_dir``; return the page's path."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made = _plots(data, out)
    e = html.escape

    def table(headers, rows):
        return ("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in headers) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>"
                          for r in rows) + "</table>")

    def img(name, alt):
        return f'<img src="{name}" alt="{e(alt)}">' if made.get(name) else \
            f"<p><i>no data yet for: {e(alt)}</i></p>"

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>systolic-conv farm report"
        "</title><style>body{font-family:sans-serif;margin:1.5em;max-width:80em}"
        "table{border-collapse:collapse;font-size:85%}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:left}th{background:#eee}code{font-size:85%}"
        "img{max-width:100%;margin:.5em 0}</style></head><body>",
        f"<h1>systolic-conv farm report</h1><p>{e(data['db'])}, generated "
        f"{e(data['generated'])} UTC</p>",
        "<h2>Latest runs</h2>",
        table(["id", "kind", "name", "commit", "started (UTC)", "status", "total", "passed",
               "failed"],
              [[r["id"], r["kind"], r["name"], _commit_label(
                  {"git_commit": r["commit"], "dirty": r["dirty"]}), r["started"], r["status"],
                r["total"], r["passed"], r["failed"]] for r in data["runs"]]),
        img("pass_rate.png", "pass rate per commit"),
        "<h2>Failures by signature</h2>",
        table(["count", "seeds", "signature", "first commit", "first seen", "last seen",
               "replay"],
              [[f["count"], f["seeds"], f["signature"], (f["first_commit"] or "?")[:12]
                + ("+" if f["first_dirty"] else ""), f["first_seen"], f["last_seen"],
                f["replay"]] for f in data["failures"]]) if data["failures"] else
        "<p>none</p>",
        "<h2>Flaky seeds</h2>",
        table(["seed", "code", "simulator", "passes", "fails", "replay"],
              [[f["key"], f["code_version"], f["simulator"], f["passes"], f["fails"],
                f["replay"]] for f in data["flaky"]]) if data["flaky"] else "<p>none</p>",
        "<h2>Coverage</h2>",
        table(["hardware", "runs", "seeds", "bins hit", "closure", "still open"],
              [[c["hw"], len(c["runs"]), c["seeds"], f"{c['hit']}/{c['bins']}",
                f"{c['closure']:.1%}", ", ".join(c["open"][:40])
                + (" ..." if len(c["open"]) > 40 else "")] for c in data["coverage"]]),
        img("coverage.png", "coverage closure against seeds"),
        "<h2>Mutation score</h2>",
        table(["run", "started", "commit", "killed", "survived", "equivalent", "invalid",
               "score"],
              [[m["run"], m["started"], (m["commit"] or "?")[:12], m["killed"], m["survived"],
                m["equivalent"], m["unbuilt"], "-" if m["score"] is None else f"{m['score']:.1%}"]
               for m in data["mutation"]]),
        img("mutation.png", "mutation score over time"),
        "<h2>Fmax and area</h2>",
        table(["started", "commit", "array", "LUT4", "FF", "Fmax MHz", "device"],
              [[d["started"], (d["commit"] or "?")[:12], d["array"], d["lut4"], d["ff"],
                d["fmax_mhz"], d["device"]] for d in data["synth"]]),
        img("synth.png", "Fmax and LUT4 over commits"),
        "<h2>Simulation speed</h2>",
        table(["started", "commit", "run", "seeds", "seeds/min", "k cycles/s", "workers"],
              [[d["started"], (d["commit"] or "?")[:12], d["name"], d["seeds"],
                f"{d['seeds_per_minute'] or 0:.0f}", f"{(d['cycles_per_second'] or 0) / 1e3:.1f}",
                d["workers"]] for d in data["speed"] if d["kind"] == "regress"]),
        img("speed.png", "seeds per minute per run"),
        "</body></html>",
    ]
    page = out / "index.html"
    page.write_text("\n".join(parts))
    return page
