"""The digits CNN (systolic_conv.models.digits) offloaded to the accelerator.

Loads (or trains and caches, ~10 s) the float model with BatchNorm folded,
calibrates the activation scales statically on the first ``--calib`` training
images, and reports on the 450-image test split:

* float accuracy, golden-offload accuracy, rtl-offload accuracy (the Verilated
  8x8 RTL, cycle-accurate; ``--rtl-images`` limits it to the first N images),
* whether the rtl logits are bit-identical to the golden-offload logits,
* predictions that differ from the float model,
* the per-layer table of the rtl run (MACs, cycles, utilization, invocations,
  error vs the float layer on the same input) and the totals per image,
* wall time of each phase.

    python bench/digits_offload.py [--rtl-images N] [--calib 256] [--batch 150]
                                   [--clock-mhz MHZ] [--json out.json] [--retrain]
"""

import argparse
import json
import time

import numpy as np



def _latency(cycles, clock_mhz, scale, unit):
    """``cycles`` as a time at the clock given, else the default 8x8's (systolic_conv.clocks)."""
    from systolic_conv.clocks import resolve_clock
    from systolic_conv.hw.config import DEFAULT
    mhz, text = resolve_clock(DEFAULT, clock_mhz)
    return text if mhz is None else f"{cycles / mhz / scale:.2f} {unit} at {text}"

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rtl-images", type=int, default=None,
                    help="run the rtl backend on the first N test images (default: all)")
    ap.add_argument("--calib", type=int, default=256,
                    help="calibration images (the first of the training split)")
    ap.add_argument("--batch", type=int, default=150, help="images per backend call")
    ap.add_argument("--clock-mhz", type=float, default=None,
                    help="clock for the latency (cycles are measured, not the clock); default: "
                         "the configuration's measured routed Fmax (systolic_conv.clocks), "
                         "none for the 8x8")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--retrain", action="store_true", help="ignore the cached weights")
    args = ap.parse_args(argv)

    import torch
    import systolic_conv
    from systolic_conv.models import digits as D

    t_all = time.perf_counter()
    t0 = time.perf_counter()
    x_tr, y_tr, x_te, y_te = D.load_data()
    cached = D.cache_path().exists() and not args.retrain
    model = D.pretrained(retrain=args.retrain)
    t_model = time.perf_counter() - t0
    print(f"digits CNN: {len(y_tr)} train / {len(y_te)} test images, 16x16 "
          f"(weights {'from cache' if cached else 'trained'}: {D.cache_path()}, "
          f"{t_model:.1f} s)")

    def run(fn, x, bs):
        with torch.no_grad():
            return torch.cat([fn(x[i:i + bs]) for i in range(0, len(x), bs)])

    with torch.no_grad():
        f_logits = model(x_te)
    f_pred = f_logits.argmax(1)
    float_acc = float((f_pred == y_te).float().mean())
    cal = x_tr[:args.calib]

    t0 = time.perf_counter()
    gold = systolic_conv.offload(model, backend="golden", calibration=cal)
    g_logits = run(gold, x_te, args.batch)
    t_gold = time.perf_counter() - t0
    g_pred = g_logits.argmax(1)
    gold_acc = float((g_pred == y_te).float().mean())

    n = len(y_te) if args.rtl_images is None else min(args.rtl_images, len(y_te))
    from systolic_conv.hw.config import DEFAULT
    from systolic_conv.sim.harness import get_harness
    t0 = time.perf_counter()
    get_harness(DEFAULT)            # build or load the Verilated model once, timed apart
    t_harness = time.perf_counter() - t0
    t0 = time.perf_counter()
    rtl = systolic_conv.offload(model, backend="rtl", hw=DEFAULT, calibration=cal)
    r_logits = run(rtl, x_te[:n], args.batch)
    t_rtl = time.perf_counter() - t0
    r_pred = r_logits.argmax(1)
    rtl_acc = float((r_pred == y_te[:n]).float().mean())
    identical = bool(torch.equal(r_logits, g_logits[:n]))

    def acc_on(pred, k):
        return float((pred[:k] == y_te[:k]).float().mean())

    print()
    print(f"{'':28s}{'accuracy':>10s}  {'images':>6s}  {'differs from float':>18s}")
    print(f"{'float (torch)':28s}{float_acc:10.2%}  {len(y_te):6d}  {'':>18s}")
    print(f"{'golden offload (int8)':28s}{gold_acc:10.2%}  {len(y_te):6d}  "
          f"{int((g_pred != f_pred).sum()):18d}")
    print(f"{'rtl offload (int8, 8x8 RTL)':28s}{rtl_acc:10.2%}  {n:6d}  "
          f"{int((r_pred != f_pred[:n]).sum()):18d}")
    if n < len(y_te):
        print(f"  (float / golden on the same {n} images: {acc_on(f_pred, n):.2%} / "
              f"{acc_on(g_pred, n):.2%})")
    print(f"rtl logits bit-identical to golden-offload logits: {identical}")
    lmax = float((g_logits - f_logits).abs().max())
    print(f"max |logit error| vs float (golden offload): {lmax:.4f}")
    print()
    rtl.report()
    tot = rtl.totals()
    print(f"\ntotal per image: {tot['macs']:.0f} MACs, {tot['cycles']:.0f} cycles, "
          f"utilization {tot['utilization']:.1%}, {tot['invocations']:.0f} invocations, "
          + _latency(tot['cycles'], args.clock_mhz, 1.0, "us"))
    sim = sum(s.seconds for s in rtl.stats())
    print(f"time: model {t_model:.1f} s, golden offload {t_gold:.1f} s, "
          f"rtl harness build/load {t_harness:.1f} s, rtl offload {t_rtl:.1f} s ({sim:.1f} s in rtl conv calls, "
          f"{tot['cycles'] * n / max(sim, 1e-9) / 1e6:.2f} M cycles/s incl. host), "
          f"total {time.perf_counter() - t_all:.1f} s")

    if args.json:
        layers = [dict(name=s.name, conv=s.description, in_shape=s.in_shape,
                       out_shape=s.out_shape, macs_per_image=s.per_image(s.macs),
                       cycles_per_image=s.per_image(s.cycles), utilization=s.utilization,
                       invocations_per_image=s.per_image(s.invocations),
                       max_abs_error=s.max_abs_error, sqnr_db=s.sqnr_db,
                       clipped=s.clipped, elements=s.elements)
                  for s in rtl.stats()]
        out = dict(float_accuracy=float_acc, golden_accuracy=gold_acc, rtl_accuracy=rtl_acc,
                   rtl_images=n, test_images=len(y_te), rtl_identical_to_golden=identical,
                   calibration_images=len(cal), totals=tot, layers=layers,
                   seconds=dict(model=t_model, golden=t_gold, harness=t_harness, rtl=t_rtl),
                   hw=dict(rows=rtl.hw.rows, cols=rtl.hw.cols, data_width=rtl.hw.data_width))
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1, default=lambda v: v if np.isscalar(v) else str(v))
        print(f"wrote {args.json}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
