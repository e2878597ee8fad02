"""RTL-measured utilization of the public layer set on a hardware configuration.

For every layer of ``bench/layers.json``: run it on the Verilated RTL (compiled
harness) with random int8 data, check it bit-exactly against the golden model,
and print MACs, cycles (descriptor handshake to final result, summed over the
plan's invocations), utilization = MACs / (rows*cols*cycles) and the stall
breakdown from the hardware counters. Layers above ``--max-macs`` are run with
their spatial size scaled down (channels, kernel, stride, dilation, groups and
padding stay true); the table says so. Batch is reduced to 1 above ``--max-macs``
too.

    python bench/utilization.py [--json out.json] [--max-macs 4e8] [--only NAME]
"""

import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def load_layers():
    return json.loads((HERE / "layers.json").read_text())["layers"]


def scaled(layer, max_macs):
    from systolic_conv.contract import conv_geometry
    L = dict(layer)

    def geom(L):
        kh, kw = L["kernel_size"]
        pad = L["padding"]
        return conv_geometry((L["N"], L["C_in"], L["H"], L["W"]),
                             (L["C_out"], L["C_in"] // L["groups"], kh, kw),
                             (L["C_out"],) if L["bias"] else None, stride=L["stride"],
                             padding=pad if isinstance(pad, str) else tuple(pad),
                             dilation=L["dilation"], groups=L["groups"],
                             padding_mode=L["padding_mode"])
    g = geom(L)
    note = ""
    if g.macs > max_macs and L["N"] > 1:
        L["N"] = 1
        g = geom(L)
        note = "N=1"
    if g.macs > max_macs:
        f = math.sqrt(max_macs / g.macs)
        kh, kw = L["kernel_size"]
        dh, dw = L["dilation"]
        min_h = dh * (kh - 1) + 1
        min_w = dw * (kw - 1) + 1
        L["H"] = max(min_h, int(L["H"] * f))
        L["W"] = max(min_w, int(L["W"] * f))
        g = geom(L)
        note = (note + " " if note else "") + f"spatial {L['H']}x{L['W']}"
    return L, g, note


def run_layer(L, g, hw, seed=0):
    from systolic_conv import conv2d
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, g.input_shape)
    w = rng.integers(-128, 128, g.weight_shape)
    b = rng.integers(-1000, 1000, g.C_out) if g.has_bias else None
    pad = L["padding"]
    args = dict(stride=g.stride, padding=pad if isinstance(pad, str) else tuple(pad),
                dilation=g.dilation, groups=g.groups, padding_mode=g.padding_mode)
    t0 = time.perf_counter()
    out, st = conv2d(x, w, b, backend="rtl", hw=hw, return_stats=True, **args)
    secs = time.perf_counter() - t0
    ref = conv2d(x, w, b, **args)
    return st, bool(np.array_equal(out, ref)), secs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--max-macs", type=float, default=4e8)
    ap.add_argument("--only", default=None)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--cols", type=int, default=8)
    args = ap.parse_args(argv)
    from systolic_conv.hw.config import HardwareConfig
    hw = HardwareConfig(rows=args.rows, cols=args.cols)
    from systolic_conv.sim.harness import get_harness
    get_harness(hw)
    rows = []
    hdr = (f"| {'net':<15} | {'layer':<22} | {'run as':<16} | {'MACs':>13} | {'cycles':>11} | "
           f"{'util':>6} | {'busy':>6} | {'setup':>5} | {'in':>5} | {'wgt':>5} | {'out':>5} | "
           f"{'fill':>5} | {'drain':>5} | exact |")
    print(f"RTL utilization on {hw}")
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for layer in load_layers():
        if args.only and args.only not in layer["name"]:
            continue
        L, g, note = scaled(layer, args.max_macs)
        st, ok, secs = run_layer(L, g, hw)
        c = st.counters
        tot = c["cycles"]
        pct = lambda k: f"{100 * c[k] / tot:5.1f}"
        print(f"| {layer['net']:<15} | {layer['name']:<22} | {note or 'true size':<16} | "
              f"{st.macs:>13,} | {st.cycles:>11,} | {st.utilization:>6.1%} | {pct('busy')} | "
              f"{pct('setup')} | {pct('stall_input')} | {pct('stall_weight')} | "
              f"{pct('stall_output')} | {pct('fill')} | {pct('drain')} | {'yes' if ok else 'NO':>5} |",
              flush=True)
        rows.append(dict(net=layer["net"], name=layer["name"], run_as=note or "true size",
                         macs=st.macs, cycles=st.cycles, utilization=st.utilization,
                         counters=c, exact=ok, sim_seconds=st.sim_seconds,
                         sim_rate=st.sim_rate, wall_seconds=secs,
                         traffic_ratio=st.traffic_ratio, invocations=st.invocations))
    tm = sum(r["macs"] for r in rows)
    tc = sum(r["cycles"] for r in rows)
    print(f"\noverall: {tm:,} MACs in {tc:,} cycles, utilization {tm / (hw.pes * tc):.1%}; "
          f"median simulation speed {np.median([r['sim_rate'] for r in rows]) / 1e6:.2f} M cycles/s")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(dict(hw=hw.to_dict(), layers=rows),
                                                      indent=1))
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.exit(main())
