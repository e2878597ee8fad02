"""Design-space sweep: array sizes x networks with the analytic model (and synthesis).

Every other :class:`~.hw.config.HardwareConfig` field stays at the base
configuration's value. Cycles come from the cycle model (exact for the RTL);
FPGA resources and Fmax from :mod:`systolic_conv.synth` reports when an array
size has been synthesized (cached under ``build/synth``, or run with
``synth=True``). Every point is one unit of work on a Dask farm
(:mod:`systolic_conv.farm`): local cores by default, or an existing cluster.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import replace

from .synth import design_tag

__all__ = ["sweep", "run_point", "synth_item", "sweep_table", "pareto_plot", "pareto_front"]


def _config(base, rows, cols):
    return replace(base, rows=rows, cols=cols,
                   weight_depth=max(rows, base.weight_depth // rows * rows))


def run_point(point):
    """One point of a sweep, on this machine or a farm worker: the unit of work.

    Parameters
    ----------
    point : dict
        ``kind`` ``"estimate"`` (``base`` HardwareConfig, ``rows``, ``cols``,
        ``network``: the analytic model of a built-in network) or ``"synth"``
        (``base``, ``rows``, ``cols``, ``synth_dir``: Yosys + nextpnr of that array).

    Returns
    -------
    list of dict
        One dict: the estimate's figures (``rows``, ``cols``, ``network``, ``macs``,
        ``cycles``, ``utilization``, ...) or ``{"rows", "cols", "synth": report dict}``;
        with ``key`` and ``worker``.
    """
    from .farm import worker_id
    kind = point.get("kind")
    if kind == "estimate":
        res = _estimate(point["base"], point["rows"], point["cols"], point["network"])
        res["key"] = f"estimate:{point['rows']}x{point['cols']}:{point['network']}"
    elif kind == "synth":
        res = {"rows": point["rows"], "cols": point["cols"],
               "synth": _synth(point["base"], point["rows"], point["cols"],
                               point.get("synth_dir")),
               "key": f"synth:{point['rows']}x{point['cols']}"}
    else:
        raise ValueError(f"point['kind']={kind!r} must be 'estimate' or 'synth'")
    res["worker"] = worker_id()
    return [res]


def _estimate(base, rows, cols, net):
    import time
    from .networks import network, estimate_layers
    cfg = _config(base, rows, cols)
    t0 = time.perf_counter()
    ests = estimate_layers(network(net), cfg)
    secs = time.perf_counter() - t0
    macs = sum(e.macs for e in ests)
    cyc = sum(e.cycles for e in ests)
    total = ests[0].breakdown
    for e in ests[1:]:
        total = total + e.breakdown
    return {"rows": rows, "cols": cols, "network": net, "pes": rows * cols, "macs": macs,
            "cycles": cyc, "utilization": macs / (rows * cols * cyc),
            "breakdown_pct": total.percent, "model_seconds": secs}


def _synth(base, rows, cols, synth_dir):
    from .synth import synthesize
    cfg = _config(base, rows, cols)
    out = pathlib.Path(synth_dir) / design_tag(cfg) if synth_dir else None
    return synthesize(cfg, out_dir=out).to_dict()


def _cached_synth(cfg, synth_dir):
    from .sim.toolchain import build_root
    root = pathlib.Path(synth_dir) if synth_dir else build_root() / "synth"
    for p in (root / f"{design_tag(cfg)}-85k" / "summary.json",
              root / design_tag(cfg) / "summary.json"):
        if p.exists():
            return json.loads(p.read_text())
    return None


def sweep(arrays, networks, base=None, *, jobs=None, synth=False, synth_dir=None,
          progress=None, scheduler=None, run=None):
    """Estimate every network on every array size (and synthesize each size with
    ``synth``); returns a result dict (JSON-able).

    Every point is one unit of work (:func:`run_point`) on a farm: ``scheduler``
    (see :class:`systolic_conv.farm.Farm`; default a local cluster of ``jobs``
    processes). ``progress(done, total, what)`` is called as points finish; ``run``
    (a :class:`systolic_conv.results.Run`) records each point as it finishes.
    """
    from .farm import Farm
    from .hw.config import HardwareConfig
    base = base or HardwareConfig()
    points = [{"kind": "estimate", "base": base, "rows": r, "cols": c, "network": n}
              for r, c in arrays for n in networks]
    if synth:
        points += [{"kind": "synth", "base": base, "rows": r, "cols": c, "synth_dir": synth_dir}
                   for r, c in arrays if _cached_synth(_config(base, r, c), synth_dir) is None]
    results, synth_res, errors = [], {}, []
    with Farm(scheduler, jobs, quiet=progress is None) as farm:
        for done, (pt, res, err) in enumerate(farm.map(run_point, points, label="sweep"), 1):
            what = f"{pt['kind']} {pt['rows']}x{pt['cols']}" + \
                (f" {pt['network']}" if pt["kind"] == "estimate" else "")
            if err is not None:
                errors.append({"point": what, "error": err})
            elif pt["kind"] == "estimate":
                results.append(res[0])
            else:
                synth_res[(pt["rows"], pt["cols"])] = res[0]["synth"]
            if run is not None:
                run.add([_point_item(pt, res, err)])
            if progress:
                progress(done, len(points), what)
    if errors:
        raise RuntimeError(f"{len(errors)} sweep point(s) failed; first: {errors[0]['point']}: "
                           f"{errors[0]['error']}")
    arr = []
    for r, c in arrays:
        cfg = _config(base, r, c)
        rep = synth_res.get((r, c)) or _cached_synth(cfg, synth_dir)
        entry = {"rows": r, "cols": c, "pes": r * c, "config": cfg.to_dict(), "synth": None}
        if rep and rep.get("ok"):
            entry["synth"] = {k: rep[k] for k in ("lut4", "ff", "dsp", "bram", "fmax_mhz",
                                                  "device", "wrapper")}
        arr.append(entry)
    order = {(r, c): i for i, (r, c) in enumerate(arrays)}
    results.sort(key=lambda d: (order[(d["rows"], d["cols"])], networks.index(d["network"])))
    return {"base": base.to_dict(), "arrays": arr, "networks": list(networks),
            "results": results}


def _point_item(pt, res, err):
    """A sweep point as a results-database item."""
    if pt["kind"] == "estimate":
        key = f"estimate:{pt['rows']}x{pt['cols']}:{pt['network']}"
        metrics = None if err else {k: res[0][k] for k in ("macs", "cycles", "utilization",
                                                           "model_seconds")}
        return {"key": key, "outcome": "error" if err else "ok", "error": err,
                "metrics": metrics, "worker": None if err else res[0]["worker"],
                "seconds": None if err else res[0]["model_seconds"]}
    rep = None if err else res[0]["synth"]
    return synth_item(rep, f"synth:{pt['rows']}x{pt['cols']}", error=err,
                      worker=None if err else res[0]["worker"])


def synth_item(rep, key, error=None, worker=None):
    """A synthesis report dict (:meth:`SynthReport.to_dict`) as a results-database item:
    LUT4, FF, DSP, BRAM and Fmax in its metrics."""
    if rep is None:
        return {"key": key, "outcome": "error", "error": error, "worker": worker}
    m = {k: rep.get(k) for k in ("lut4", "ff", "dsp", "bram", "fmax_mhz", "device", "speed",
                                 "wrapper", "routed", "router", "density", "target_mhz")}
    m["rows"], m["cols"] = rep["cfg"]["rows"], rep["cfg"]["cols"]
    return {"key": key, "outcome": "ok" if rep.get("ok") else "error",
            "error": rep.get("error") or None, "metrics": m, "worker": worker,
            "seconds": (rep.get("synth_seconds") or 0) + (rep.get("pnr_seconds") or 0)}


def array_clock(arr, clock_mhz=None):
    """``(MHz or None, source)`` of one swept array: its synthesized Fmax when a report
    exists, else ``clock_mhz``, else the measured routed Fmax (:mod:`.clocks`)."""
    if arr.get("synth"):
        return arr["synth"]["fmax_mhz"], "synth"
    if clock_mhz is not None:
        return clock_mhz, "given"
    from .clocks import measured_fmax
    from .hw.config import HardwareConfig
    m = measured_fmax(HardwareConfig(**arr["config"]))
    return (m.fmax_mhz, "measured") if m else (None, None)


def _latency_ms(res, arr, clock_mhz):
    f, _src = array_clock(arr, clock_mhz)
    return (None if f is None else res["cycles"] / (f * 1e3)), f


def sweep_table(sw, clock_mhz=None):
    """The sweep as a table; times at each array's clock (:func:`array_clock`), '-' without."""
    arrays = {(a["rows"], a["cols"]): a for a in sw["arrays"]}
    nets = sw["networks"]
    hdr = (f"| {'array':>7} | {'PEs':>5} | {'LUT4':>7} | {'FF':>7} | {'DSP':>4} | {'BRAM':>4} | "
           f"{'MHz':>6} | " + " | ".join(f"{n + ' Mcyc':>17} | {'util':>6} | {'ms':>7}"
                                         for n in nets) + " |")
    lines = [hdr, "|" + "|".join("-" * len(c) for c in hdr.split("|")[1:-1]) + "|"]
    by = {(d["rows"], d["cols"], d["network"]): d for d in sw["results"]}
    missing = []
    for (r, c), a in arrays.items():
        s = a.get("synth")
        f, src = array_clock(a, clock_mhz)
        mhz = "-" if f is None else (f"{f:.1f}" if src == "synth" else f"({f:g})")
        if f is None:
            missing.append(f"{r}x{c}")
        res = (f"{s['lut4']:>7,} | {s['ff']:>7,} | {s['dsp']:>4} | {s['bram']:>4} | {mhz:>6}"
               if s else f"{'-':>7} | {'-':>7} | {'-':>4} | {'-':>4} | {mhz:>6}")
        cells = []
        for n in nets:
            d = by.get((r, c, n))
            ms, _f = _latency_ms(d, a, clock_mhz)
            ms_text = "-" if ms is None else f"{ms:.2f}"
            cells.append(f"{d['cycles'] / 1e6:>17.3f} | {d['utilization']:>6.1%} | {ms_text:>7}")
        lines.append(f"| {f'{r}x{c}':>7} | {r * c:>5} | {res} | " + " | ".join(cells) + " |")
    lines.append("(MHz: synthesized Fmax; in parentheses the clock given or the measured routed "
                 "Fmax of that configuration; resources from the LFSR/XOR-wrapped ECP5 flow)")
    if missing:
        lines.append(f"(no clock for {', '.join(missing)}: give --clock-mhz for their times)")
    return "\n".join(lines)


def pareto_front(points):
    """Indices of the points (cost, latency) not dominated by another point."""
    idx = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in idx:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_plot(sw, path, clock_mhz=None):
    """Latency vs cost per network (cost: LUT4 when every size is synthesized, else PEs).

    Latency needs a clock for every array (:func:`array_clock`); without one the
    plot shows cycles instead."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    arrays = {(a["rows"], a["cols"]): a for a in sw["arrays"]}
    use_luts = all(a.get("synth") for a in arrays.values())
    timed = all(array_clock(a, clock_mhz)[0] is not None for a in arrays.values())
    nets = sw["networks"]
    fig, axes = plt.subplots(1, len(nets), figsize=(4.2 * len(nets), 3.8), squeeze=False)
    for ax, n in zip(axes[0], nets):
        pts, labels = [], []
        for d in sw["results"]:
            if d["network"] != n:
                continue
            a = arrays[(d["rows"], d["cols"])]
            ms, _f = _latency_ms(d, a, clock_mhz)
            cost = a["synth"]["lut4"] if use_luts else d["pes"]
            pts.append((cost, ms if timed else d["cycles"]))
            labels.append(f"{d['rows']}x{d['cols']}\n{d['utilization']:.0%}")
        front = set(pareto_front(pts))
        for i, ((x, y), lab) in enumerate(zip(pts, labels)):
            ax.scatter([x], [y], color="#d62728" if i in front else "#7f7f7f", zorder=3)
            ax.annotate(lab, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        fp = sorted(pts[i] for i in front)
        ax.plot([p[0] for p in fp], [p[1] for p in fp], color="#d62728", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("LUT4 (ECP5)" if use_luts else "PEs (rows x cols)")
        ax.set_ylabel("latency (ms, at each array's clock)" if timed else "cycles")
        ax.set_title(n)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Pareto front (red): {'latency' if timed else 'cycles'} vs cost, "
                 f"labels = array, utilization", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
