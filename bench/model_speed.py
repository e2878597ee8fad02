"""Speed of the analytic cycle model on whole networks, cold, against the RTL.

For each network: the wall time of estimating every layer
(:func:`systolic_conv.networks.estimate_layers`, as ``systolic-conv estimate`` does:
geometry, plan and model; repeated layers once) right after
:func:`systolic_conv.cycle_model.clear_caches`, median of ``--reps`` repetitions;
the total cycles; the time the compiled RTL harness takes for those cycles at
``--rtl-rate`` cycles/s; and the ratio RTL / model. Beside it, the ratio against
cocotb on Verilator at ``--cocotb-rate`` cycles/s (both rates as measured by
``bench/sim_speed.py``, ``bench/results_sim_speed.txt``).

    python bench/model_speed.py [--reps 15] [--rtl-rate 0.95e6] [--cocotb-rate 19.2e3]
                                [--networks resnet18,...]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent

LABELS = {"resnet18": "ResNet-18", "mobilenetv2": "MobileNetV2", "resnext50": "ResNeXt-50",
          "seed": "seed (3 layers, N=20)", "layers.json": "bench/layers.json"}


def layers_of(name):
    from systolic_conv.networks import network, load_layers
    if name == "layers.json":
        return load_layers(HERE / "layers.json")
    return network(name)


def cold_seconds(layers, hw, reps):
    """Median wall time of estimating every layer after clearing the caches, and the
    total cycles."""
    from systolic_conv import cycle_model as cm
    from systolic_conv.networks import estimate_layers
    times = []
    cycles = None
    for _ in range(reps):
        cm.clear_caches()
        t0 = time.perf_counter()
        ests = estimate_layers(layers, hw=hw)
        times.append(time.perf_counter() - t0)
        c = sum(e.cycles for e in ests)
        assert cycles in (None, c)
        cycles = c
    return statistics.median(times), cycles


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", default="resnet18,mobilenetv2,resnext50,seed,layers.json")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rtl-rate", type=float, default=0.95e6,
                    help="RTL simulation speed, cycles/s (compiled harness)")
    ap.add_argument("--cocotb-rate", type=float, default=19.2e3,
                    help="cocotb + Verilator speed, cycles/s")
    ap.add_argument("--json", default=None, help="write the rows to this file")
    args = ap.parse_args(argv)

    from systolic_conv.hw.config import HardwareConfig
    hw = HardwareConfig()
    # warm the imports and the per-configuration constants (not per-layer results)
    layers_of("seed")[0].estimate(hw=hw)

    rows = []
    print(f"cold model (clear_caches() before each of {args.reps} repetitions, median) vs "
          f"RTL on the compiled harness at {args.rtl_rate / 1e6:.2f} M cycles/s and on "
          f"cocotb+Verilator at {args.cocotb_rate / 1e3:.1f} k cycles/s, {hw.rows}x{hw.cols}")
    print(f"{'network':24s} {'layers':>6s} {'model ms':>9s} {'us/layer':>9s} "
          f"{'cycles':>12s} {'RTL s':>8s} {'RTL/model':>10s} {'cocotb/model':>13s}")
    for name in [n.strip() for n in args.networks.split(",") if n.strip()]:
        layers = layers_of(name)
        sec, cycles = cold_seconds(layers, hw, args.reps)
        rtl = cycles / args.rtl_rate
        cocotb = cycles / args.cocotb_rate
        rows.append(dict(network=name, layers=len(layers), model_s=sec, cycles=cycles,
                         rtl_s=rtl, ratio=rtl / sec, cocotb_s=cocotb, cocotb_ratio=cocotb / sec))
        print(f"{LABELS.get(name, name):24s} {len(layers):6d} {sec * 1e3:9.3f} "
              f"{sec / len(layers) * 1e6:9.1f} {cycles:12,d} {rtl:8.2f} {rtl / sec:10,.0f} "
              f"{cocotb / sec:13,.0f}",
              flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            dict(rtl_rate=args.rtl_rate, cocotb_rate=args.cocotb_rate, reps=args.reps,
                 rows=rows), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
