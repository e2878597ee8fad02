"""SCALE-Sim beside the analytic cycle model, on the same layers and array size.

SCALE-Sim 3.0.0 (PyPI ``scalesim``) needs numpy < 2.4, so it lives in its own
virtual environment (``build/scalesim-venv``, created here on first use) and runs
in a subprocess. Its input has no padding, dilation, groups or batch, so each
layer is mapped (the table's ``mapped as`` column says how):

* padding: the padded input size (``H + top + bottom``, ``W + left + right``);
* dilation: the effective kernel ``(k-1)*d + 1`` (SCALE-Sim then counts the
  holes as MACs: its utilization is relative to those inflated MACs);
* groups: one group simulated as its own layer (``C_in/g -> C_out/g``) and the
  cycles multiplied by ``groups`` (identical per-group layers: SCALE-Sim's own
  ``DP`` naming does exactly this per channel, one layer each);
* asymmetric stride: SCALE-Sim takes one stride; the row stride is used (noted);
* batch: cycles times N.

Differences in what is counted (see the printed notes): SCALE-Sim's WS fold is
``2R + C + T - 2`` with the weights loaded *between* folds and no pipeline beyond
the array; our hardware double-buffers weights (loads hidden behind the previous
fold), but pays the line-buffer warm-up, one pass bubble per pass, the
parameter/descriptor setup and the requantizer/FIFO drain per invocation, and
splits work into passes and invocations (accumulator depth, line buffer, channel
tile).

    python bench/scalesim_compare.py [--rows 32 --cols 32] [--dataflows ws,os,is]
        [--max-macs 2e8] [--only NAME] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = ROOT / "build" / "scalesim-venv"

_RUNNER = r'''
import json, sys, os, contextlib, io
from scalesim.scale_sim import scalesim
cfg, topo, layout, out = sys.argv[1:5]
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    s = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo, layout=layout)
    s.run_scale(top_path=out)
rows = []
for root, _d, files in os.walk(out):
    if "COMPUTE_REPORT.csv" in files:
        lines = open(os.path.join(root, "COMPUTE_REPORT.csv")).read().strip().splitlines()[1:]
        for l in lines:
            f = [t.strip() for t in l.split(",") if t.strip()]
            rows.append({"layer": int(f[0]), "cycles_prefetch": float(f[1]), "cycles": float(f[2]),
                         "stall": float(f[3]), "util": float(f[4]), "mapping": float(f[5]),
                         "compute_util": float(f[6])})
print(json.dumps(rows))
'''

_CONFIG = """[general]
run_name = cmp

[architecture_presets]
ArrayHeight:    {rows}
ArrayWidth:     {cols}
IfmapSramSzkB:    {sram}
FilterSramSzkB:   {sram}
OfmapSramSzkB:    {sram}
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Dataflow : {df}
Bandwidth : 10
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def ensure_venv(verbose=True):
    """The SCALE-Sim virtual environment's python (created on first use)."""
    py = VENV / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import scalesim"],
                                        capture_output=True).returncode == 0
    if not ok:
        if verbose:
            print(f"creating {VENV} with scalesim and numpy<2.4 (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "scalesim==3.0.0", "numpy<2.4"],
                       check=True)
    return py


def scalesim_mapping(layer):
    """SCALE-Sim topology row(s) for a layer, the multiplier and a note.

    Returns ``(row dict, multiplier, note)``: SCALE-Sim's cycles times the
    multiplier are the layer's.
    """
    g = layer.geometry()
    kh, kw = g.kh, g.kw
    dh, dw = g.dilation
    t, b, l, r = g.pad
    notes = []
    H, W = g.H + t + b, g.W + l + r
    if t or b or l or r:
        notes.append(f"padded input {H}x{W}")
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if (ekh, ekw) != (kh, kw):
        notes.append(f"effective kernel {ekh}x{ekw}")
    sh, sw = g.stride
    if sh != sw:
        notes.append(f"stride {sh} both ways (was {sh}x{sw})")
    cin, cout, mult = g.C_in, g.C_out, 1
    if g.groups > 1:
        cin, cout = g.C_in // g.groups, g.C_out // g.groups
        mult *= g.groups
        notes.append(f"{g.groups} groups: one {cin}->{cout} layer x{g.groups}"
                     + (" (= DP naming)" if cin == 1 and cout == 1 else ""))
    if g.N > 1:
        mult *= g.N
        notes.append(f"x{g.N} batch")
    row = dict(H=H, W=W, kh=ekh, kw=ekw, C=cin, K=cout, stride=sh)
    return row, mult, "; ".join(notes) or "as is"


def scalesim_macs(row, g_out):
    """MACs SCALE-Sim counts for a row (effective kernel, stride sh both ways)."""
    ho = (row["H"] - row["kh"]) // row["stride"] + 1
    wo = (row["W"] - row["kw"]) // row["stride"] + 1
    return ho * wo * row["kh"] * row["kw"] * row["C"] * row["K"]


def run_scalesim(rows, array, dataflow="ws", workdir=None, timeout=3600):
    """Run SCALE-Sim on topology rows (dicts from :func:`scalesim_mapping`)."""
    py = ensure_venv()
    R, C = array
    work = pathlib.Path(workdir or ROOT / "build" / "scalesim-runs" /
                        f"{dataflow}-{R}x{C}-{os.getpid()}-{time.time_ns()}")
    work.mkdir(parents=True, exist_ok=True)
    (work / "run.py").write_text(_RUNNER)
    (work / "cmp.cfg").write_text(_CONFIG.format(rows=R, cols=C, df=dataflow, sram=4096))
    topo = ["Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
            "Num Filter, Strides,"]
    lay = ["Layer name, " + ", ".join(f"f{i}" for i in range(20)) + ","]
    for i, r in enumerate(rows):
        topo.append(f"L{i}, {r['H']}, {r['W']}, {r['kh']}, {r['kw']}, {r['C']}, {r['K']}, "
                    f"{r['stride']},")
        lay.append(f"L{i}, " + ", ".join(["1"] * 6 + [str(k) for k in range(14)]) + ",")
    (work / "topo.csv").write_text("\n".join(topo) + "\n")
    (work / "layout.csv").write_text("\n".join(lay) + "\n")
    p = subprocess.run([str(py), "run.py", "cmp.cfg", "topo.csv", "layout.csv", "out"],
                       cwd=work, capture_output=True, text=True, timeout=timeout)
    if p.returncode:
        raise RuntimeError(f"scalesim failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res.sort(key=lambda d: d["layer"])
    return res


def ws_closed_form(row, array):
    """SCALE-Sim's WS cycles in closed form (TOOLCHAIN.md): folds x (2R + C + T - 2) - 1."""
    R, C = array
    ho = (row["H"] - row["kh"]) // row["stride"] + 1
    wo = (row["W"] - row["kw"]) // row["stride"] + 1
    T = ho * wo
    K = row["kh"] * row["kw"] * row["C"]
    folds = math.ceil(K / R) * math.ceil(row["K"] / C)
    return folds * (2 * R + C + T - 2) - 1


def load_bench_layers(max_macs, only=None, skip=()):
    sys.path.insert(0, str(ROOT))
    from systolic_conv.networks import load_layers
    layers = load_layers(HERE / "layers.json")
    out = []
    for l in layers:
        if only and only not in l.name:
            continue
        if any(k and k in l.name for k in skip):
            continue
        note = ""
        g = l.geometry()
        if g.macs > max_macs and l.N > 1:
            l.N = 1
            note = "N=1"
            g = l.geometry()
        if g.macs > max_macs:
            f = math.sqrt(max_macs / g.macs)
            kh, kw = l.kernel_size
            dh, dw = l.dilation
            l.H = max((kh - 1) * dh + 1, int(l.H * f))
            l.W = max((kw - 1) * dw + 1, int(l.W * f))
            note = (note + " " if note else "") + f"spatial {l.H}x{l.W}"
        # SCALE-Sim computes the holes of a dilated kernel: keep its MACs in budget too
        row, mult, _n = scalesim_mapping(l)
        cin0 = l.C_in
        while scalesim_macs(row, None) * mult > max_macs and l.groups == 1 and l.C_in > 8:
            l.C_in //= 2
            row, mult, _n = scalesim_mapping(l)
        if l.C_in != cin0:
            note = (note + " " if note else "") + f"C_in {l.C_in}"
        out.append((l, note))
    return out


def compare(layers, array, dataflows=("ws",), verbose=True):
    """Our model and SCALE-Sim on ``layers`` [(LayerSpec, note)]; list of result dicts."""
    from systolic_conv.hw.config import HardwareConfig
    R, C = array
    hw = HardwareConfig(rows=R, cols=C, weight_depth=max(R, 16384 // R * R))
    maps = [scalesim_mapping(l) for l, _n in layers]
    sims = {df: [] for df in dataflows}
    for (l, _n), m in zip(layers, maps):
        for df in dataflows:
            t0 = time.perf_counter()
            sims[df].append(run_scalesim([m[0]], array, df)[0])
            if verbose:
                print(f"  SCALE-Sim {df} {R}x{C} {l.net}.{l.name}: "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
    out = []
    for i, ((l, note), (row, mult, mnote)) in enumerate(zip(layers, maps)):
        t0 = time.perf_counter()
        e = l.estimate(hw)
        secs = time.perf_counter() - t0
        d = {"net": l.net, "name": l.name, "scaled": note, "mapped_as": mnote,
             "macs": e.macs, "ours_cycles": e.cycles, "ours_util": e.utilization,
             "ours_seconds": secs, "breakdown_pct": e.breakdown.percent,
             "scalesim_macs": scalesim_macs(row, None) * mult,
             "ws_closed_form": ws_closed_form(row, array) * mult + (mult - 1)}
        for df in dataflows:
            s = sims[df][i]
            d[f"{df}_cycles"] = int(s["cycles"]) * mult
            d[f"{df}_util"] = e.macs / (R * C * s["cycles"] * mult)
            d[f"{df}_reported_util"] = s["util"] / 100
        out.append(d)
    return out


def table(res, dataflows, array):
    R, C = array
    hdr = (f"| {'layer':<30} | {'mapped as (SCALE-Sim)':<44} | {'MACs':>12} | "
           f"{'ours cycles':>11} | {'util':>6} | " +
           " | ".join(f"{df.upper() + ' cycles':>11} | {'util':>6} | {'ours/' + df:>7}"
                      for df in dataflows) + " |")
    lines = [hdr, "|" + "|".join("-" * len(c) for c in hdr.split("|")[1:-1]) + "|"]
    for d in res:
        name = f"{d['net']}.{d['name']}" + (f" ({d['scaled']})" if d["scaled"] else "")
        cells = []
        for df in dataflows:
            cells.append(f"{d[df + '_cycles']:>11,} | {d[df + '_util']:>6.1%} | "
                         f"{d['ours_cycles'] / d[df + '_cycles']:>7.3f}")
        lines.append(f"| {name[:30]:<30} | {d['mapped_as'][:44]:<44} | {d['macs']:>12,} | "
                     f"{d['ours_cycles']:>11,} | {d['ours_util']:>6.1%} | " + " | ".join(cells) +
                     " |")
    tot = {k: sum(d[k] for d in res) for k in ["macs", "ours_cycles"] +
           [df + "_cycles" for df in dataflows]}
    cells = [f"{tot[df + '_cycles']:>11,} | {tot['macs'] / (R * C * tot[df + '_cycles']):>6.1%} "
             f"| {tot['ours_cycles'] / tot[df + '_cycles']:>7.3f}" for df in dataflows]
    lines.append(f"| {'total':<30} | {'':<44} | {tot['macs']:>12,} | {tot['ours_cycles']:>11,} | "
                 f"{tot['macs'] / (R * C * tot['ours_cycles']):>6.1%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


NOTES = """Why the cycle counts differ (ours / SCALE-Sim WS):
* weight loads: SCALE-Sim's WS fold costs 2R + C + T - 2 cycles, the weight fill
  (R cycles) and the array fill/drain (R + C) paid in every fold; our array
  double-buffers weights and overlaps fill/drain between folds, so a fold costs T
  cycles once running: ours is faster when T (= output pixels of a pass) is small
  relative to 2R + C, i.e. late, small-spatial layers;
* passes: our accumulator holds G output rows (G*W_out <= acc_depth) and the line
  buffer lb_rows input rows, so a layer runs as several passes, each re-streaming the
  weight tiles and paying a pass bubble and any line-buffer wait; SCALE-Sim has one
  fold over all T = H_out*W_out pixels (its SRAMs are assumed large enough);
* per invocation we pay the descriptor/parameter setup, the first weight tile load
  and the result latency through requantizer and FIFO (R + C + 9 cycles);
* groups/depthwise: SCALE-Sim runs each group as its own narrow layer (a column per
  output channel of the group: utilization ~ 1/cols for depthwise); our planner packs
  groups into one tile (block-diagonal) and the depthwise mapping puts taps on rows;
* dilation: SCALE-Sim sees the effective kernel and computes the holes; we skip them
  (its cycles are inflated by ((k-1)d+1)^2/k^2 for dilated layers);
* arrays with rows + cols + 9 >= out_fifo_depth (32x32 with the default 64-deep
  FIFO) show our result-credit stalls (stall_output), which SCALE-Sim does not model.
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--cols", type=int, default=32)
    ap.add_argument("--dataflows", default="ws")
    ap.add_argument("--max-macs", type=float, default=2e8)
    ap.add_argument("--only", default=None)
    ap.add_argument("--skip", default="", help="comma-separated layer names to leave out "
                    "(e.g. rate12,rate18: SCALE-Sim needs many minutes on their effective "
                    "kernels)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    array = (args.rows, args.cols)
    dfs = [d.strip() for d in args.dataflows.split(",") if d.strip()]
    layers = load_bench_layers(args.max_macs, args.only, args.skip.split(","))
    res = compare(layers, array, dfs)
    print(f"\nanalytic model (exact for our RTL) vs SCALE-Sim 3.0.0 on {array[0]}x{array[1]}; "
          f"utilization = layer MACs / (PEs * cycles) for both")
    print(table(res, dfs, array))
    if "ws" in dfs:
        agree = sum(d["ws_closed_form"] == d["ws_cycles"] for d in res)
        print(f"SCALE-Sim WS == closed form folds*(2R+C+T-2)-1 on {agree}/{len(res)} layers")
    print()
    print(NOTES)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"array": array, "results": res},
                                                      indent=1))
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
