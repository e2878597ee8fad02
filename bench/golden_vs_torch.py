"""Benchmark: golden model (conv2d_int) versus PyTorch float64 conv2d on the public layer set.

For every layer of ``bench/layers.json``: random int8 data of the true shapes,
the median wall time of ``systolic_conv.golden.conv2d_int`` and of
``torch.nn.functional.conv2d`` in float64 on the same data (non-``zeros``
padding modes: ``F.pad`` + conv, as ``nn.Conv2d`` does, counted in torch's
time), their ratio, the golden model's peak traced memory, and a bit-exact
comparison of the two results. Each side is timed in blocks of back-to-back
calls, the blocks of the two sides alternating. Not a test: it prints, it does
not assert.

Usage::

    python bench/golden_vs_torch.py [--json FILE] [--layers NAME ...] [--min-time S]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from systolic_conv.contract import conv_geometry
from systolic_conv.golden import conv2d_int, release_workspace

LAYERS = Path(__file__).with_name("layers.json")


def make_layer(layer, rng):
    kh, kw = layer["kernel_size"]
    x = rng.integers(-128, 128, (layer["N"], layer["C_in"], layer["H"], layer["W"]),
                     dtype=np.int8)
    w = rng.integers(-128, 128, (layer["C_out"], layer["C_in"] // layer["groups"], kh, kw),
                     dtype=np.int8)
    b = (rng.integers(-2**31, 2**31, layer["C_out"], dtype=np.int64).astype(np.int32)
         if layer["bias"] else None)
    padding = layer["padding"] if isinstance(layer["padding"], str) else tuple(layer["padding"])
    args = dict(stride=tuple(layer["stride"]), padding=padding,
                dilation=tuple(layer["dilation"]), groups=layer["groups"],
                padding_mode=layer["padding_mode"])
    return x, w, b, args


def torch_runner(x, w, b, args):
    """PyTorch's nn.Conv2d forward in float64, as a closure over prepared tensors."""
    xt = torch.from_numpy(x.astype(np.float64))
    wt = torch.from_numpy(w.astype(np.float64))
    bt = None if b is None else torch.from_numpy(b.astype(np.float64))
    g = conv_geometry(x.shape, w.shape, None if b is None else b.shape, **args)
    stride, dilation, groups = args["stride"], args["dilation"], args["groups"]
    if args["padding_mode"] == "zeros":
        padding = args["padding"]

        def run():
            with torch.no_grad():
                return F.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    else:
        t, bo, l, r = g.pad
        mode = args["padding_mode"]

        def run():
            with torch.no_grad():
                return F.conv2d(F.pad(xt, (l, r, t, bo), mode=mode), wt, bt, stride, 0,
                                dilation, groups)
    return run


def time_pair(f_ours, f_ref, min_time, min_reps=3, max_reps=200, rounds=2):
    """Per-call seconds of both functions.

    Each side runs in blocks of back-to-back calls (its steady state: warm
    allocator, warm BLAS threads), one warm-up call per block, the blocks of
    the two sides alternating ``rounds`` times so that slow drifts of the
    machine hit both alike.
    """
    t0 = time.perf_counter()
    f_ours()
    once = max(time.perf_counter() - t0, 1e-6)
    per_block = int(min(max_reps, max(min_reps, min_time / rounds / once)))
    times = ([], [])
    for _ in range(rounds):
        for f, out in ((f_ours, times[0]), (f_ref, times[1])):
            f()                                        # warm-up after the switch
            for _ in range(per_block):
                t0 = time.perf_counter()
                f()
                out.append(time.perf_counter() - t0)
    return times


def peak_memory(f):
    """Peak traced bytes of one call (numpy allocations, workspace included)."""
    release_workspace()
    tracemalloc.start()
    try:
        f()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--layers", nargs="*", help="only layers whose name contains one of these")
    ap.add_argument("--min-time", type=float, default=0.5,
                    help="seconds of measurement per side and layer (default 0.5)")
    ap.add_argument("--seed", type=int, default=0)
    opts = ap.parse_args(argv)

    layers = json.loads(LAYERS.read_text())["layers"]
    if opts.layers:
        layers = [L for L in layers if any(s in L["name"] for s in opts.layers)]
    rng = np.random.default_rng(opts.seed)
    env = dict(python=platform.python_version(), numpy=np.__version__,
               torch=torch.__version__, cpus=os.cpu_count(),
               torch_threads=torch.get_num_threads(), machine=platform.machine(),
               OPENBLAS_CORETYPE=os.environ.get("OPENBLAS_CORETYPE"))
    print("# golden conv2d_int vs torch float64 conv2d")
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    print()
    print("| net | layer | MACs | torch ms | golden ms | ratio | reps | peak MB | exact |")
    print("|---|---|---:|---:|---:|---:|---:|---:|:-:|")
    rows = []
    for layer in layers:
        x, w, b, args = make_layer(layer, rng)
        g = conv_geometry(x.shape, w.shape, None if b is None else b.shape, **args)
        ref_run = torch_runner(x, w, b, args)

        def ours():
            return conv2d_int(x, w, b, **args)

        exact = bool(np.array_equal(ours(), ref_run().numpy().astype(np.int64)))
        t_ours, t_ref = time_pair(ours, ref_run, opts.min_time)
        peak = peak_memory(ours)
        m_ours, m_ref = float(np.median(t_ours)), float(np.median(t_ref))
        row = dict(net=layer["net"], name=layer["name"], macs=g.macs, torch_s=m_ref,
                   golden_s=m_ours, ratio=m_ours / m_ref, reps=len(t_ours),
                   torch_min_s=min(t_ref), golden_min_s=min(t_ours),
                   golden_peak_bytes=peak, exact=exact)
        rows.append(row)
        print(f"| {row['net']} | {row['name']} | {g.macs / 1e6:.1f} M | {m_ref * 1e3:.2f} | "
              f"{m_ours * 1e3:.2f} | {row['ratio']:.2f} | {row['reps']} | "
              f"{peak / 2**20:.1f} | {'yes' if exact else '**NO**'} |", flush=True)
    geo = math.exp(sum(math.log(r["ratio"]) for r in rows) / len(rows))
    overall = sum(r["golden_s"] for r in rows) / sum(r["torch_s"] for r in rows)
    n_exact = sum(r["exact"] for r in rows)
    print()
    print(f"geometric-mean ratio golden/torch: {geo:.3f}")
    print(f"overall ratio (sum of medians):    {overall:.3f} "
          f"(golden {sum(r['golden_s'] for r in rows) * 1e3:.1f} ms, "
          f"torch {sum(r['torch_s'] for r in rows) * 1e3:.1f} ms)")
    print(f"worst layer ratio:                 {max(r['ratio'] for r in rows):.3f}")
    overall_min = (sum(r["golden_min_s"] for r in rows) / sum(r["torch_min_s"] for r in rows))
    print(f"overall ratio of best times:       {overall_min:.3f} (less sensitive to a busy machine)")
    print(f"bit-exact: {n_exact}/{len(rows)} layers")
    if opts.json:
        Path(opts.json).write_text(json.dumps(dict(env=env, layers=rows, geomean_ratio=geo,
                                                   overall_ratio=overall,
                                                   overall_ratio_best=overall_min,
                                                   exact_layers=n_exact), indent=1))
    return 0 if n_exact == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
