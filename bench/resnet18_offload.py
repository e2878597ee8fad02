"""ResNet-18 (all 20 conv layers, true channels) offloaded to the RTL and to golden.

Builds :func:`systolic_conv.models.resnet18.inference_model` (random weights from
``--seed``, BatchNorm statistics from a calibration pass over synthetic images,
folded -- no pretrained weights are available), calibrates the static
activation scales on ``--calib`` synthetic images, and runs a batch of
``--batch`` other synthetic images at ``--size`` x ``--size`` (the channels and
kernels are ResNet-18's; only the spatial size is scaled down from 224) through

* the float model (torch),
* ``offload(backend='golden')`` (the numpy integer model),
* ``offload(backend='rtl')`` (the Verilated 8x8 RTL, cycle-accurate).

It checks that every layer's int64 accumulators are bit-identical between rtl
and golden (same quantized weights and scales, same input) and that the final
logits are identical, and prints per layer: MACs, cycles, utilization (also
counting only the non-padding taps: at 1x1 spatial a 3x3 conv's padded taps
are 8 of 9), invocations, the layer's SQNR and max error against the float64
layer on the same input, clipped inputs, and the identity; then the totals,
the logits' SQNR against the float model, and the wall times.

    python bench/resnet18_offload.py [--size 32] [--batch 1] [--seed 0] [--calib 8]
                                     [--bn-images 32] [--clock-mhz MHZ] [--json out.json]
                                     [--quiet]

Exit status 0 when every layer and the logits are bit-identical, else 1.
"""

import argparse
import json
import math
import sys
import time

import numpy as np


def real_macs(conv, in_shape, images):
    """MACs over the taps that fall inside the input (padding taps excluded).

    Parameters
    ----------
    conv : torch.nn.Conv2d
    in_shape : tuple
        ``(C, H, W)`` of the layer input.
    images : int
        Batch elements.

    Returns
    -------
    int
    """
    from systolic_conv.contract import conv_geometry
    g = conv_geometry((images,) + tuple(in_shape), tuple(conv.weight.shape), None,
                      conv.stride, conv.padding, conv.dilation, conv.groups, conv.padding_mode)
    if g.padding_mode != "zeros":           # the padded values are real data
        return g.macs

    def taps(size, out, k, s, d, before):
        pos = (np.arange(out)[:, None] * s - before + np.arange(k)[None, :] * d)
        return int(np.count_nonzero((pos >= 0) & (pos < size)))

    t, _, left, _ = g.pad
    th = taps(g.H, g.H_out, g.kh, g.stride[0], g.dilation[0], t)
    tw = taps(g.W, g.W_out, g.kw, g.stride[1], g.dilation[1], left)
    return g.N * g.C_out * (g.C_in // g.groups) * th * tw


def sqnr_db(ref, test):
    """``10 log10(sum ref**2 / sum (test - ref)**2)`` (inf when equal)."""
    ref = np.asarray(ref, np.float64)
    noise = float(np.sum((np.asarray(test, np.float64) - ref) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(ref * ref)) / noise)


def _progress(om, label, quiet):
    """Forward hooks printing each layer's completion to stderr."""
    if quiet:
        return []
    t = [time.perf_counter()]

    def hook(mod, args, out):
        now = time.perf_counter()
        print(f"  [{label}] {mod.name:22s} {now - t[0]:7.2f} s", file=sys.stderr, flush=True)
        t[0] = now

    def pre(mod, args):
        t[0] = time.perf_counter()

    hs = []
    for w in om.layers.values():
        hs += [w.register_forward_pre_hook(pre), w.register_forward_hook(hook)]
    return hs



def _latency(cycles, clock_mhz, scale, unit):
    """``cycles`` as a time at the clock given, else the default 8x8's (systolic_conv.clocks)."""
    from systolic_conv.clocks import resolve_clock
    from systolic_conv.hw.config import DEFAULT
    mhz, text = resolve_clock(DEFAULT, clock_mhz)
    return text if mhz is None else f"{cycles / mhz / scale:.2f} {unit} at {text}"

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=32, help="input height and width (224: ImageNet)")
    ap.add_argument("--batch", type=int, default=1, help="images run through the model")
    ap.add_argument("--seed", type=int, default=0,
                    help="weights; synthetic images use seed+1 (BatchNorm), seed+100 "
                         "(activation calibration), seed+200 (the run)")
    ap.add_argument("--calib", type=int, default=8, help="activation calibration images")
    ap.add_argument("--bn-images", type=int, default=32, help="BatchNorm calibration images")
    ap.add_argument("--clock-mhz", type=float, default=None,
                    help="clock for the latency figure (cycles are measured, not the clock); "
                         "default: the configuration's measured routed Fmax "
                         "(systolic_conv.clocks), none for the 8x8")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--quiet", action="store_true", help="no per-layer progress on stderr")
    args = ap.parse_args(argv)

    import torch
    import systolic_conv
    from systolic_conv.hw.config import DEFAULT
    from systolic_conv.models import resnet18 as R
    from systolic_conv.sim.harness import get_harness

    t_all = time.perf_counter()
    t0 = time.perf_counter()
    model = R.inference_model(args.size, seed=args.seed, bn_images=args.bn_images)
    t_model = time.perf_counter() - t0
    cal = R.synthetic_images(args.calib, args.size, seed=args.seed + 100)
    x = R.synthetic_images(args.batch, args.size, seed=args.seed + 200)
    names = R.conv_layer_names(model)
    scale = ("ImageNet size" if args.size == 224 else
             f"spatial {'scaled down' if args.size < 224 else 'scaled up'} from 224")
    print(f"ResNet-18: input {args.batch}x3x{args.size}x{args.size} ({scale}; channels true), "
          f"{len(names)} conv layers, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    print(f"  random weights (seed {args.seed}), BatchNorm statistics from {args.bn_images} "
          f"synthetic images, folded ({t_model:.1f} s); activation scales from {args.calib} "
          f"synthetic images; int8, per-channel weights, int32 bias")

    with torch.no_grad():
        f_logits = model(x)

    t0 = time.perf_counter()
    gold = systolic_conv.offload(model, backend="golden", calibration=cal)
    hooks = _progress(gold, "golden", args.quiet)
    g_logits = gold(x)
    t_gold = time.perf_counter() - t0
    for h in hooks:
        h.remove()

    t0 = time.perf_counter()
    get_harness(DEFAULT)          # build or load the Verilated model once, timed apart
    t_harness = time.perf_counter() - t0
    t0 = time.perf_counter()
    rtl = systolic_conv.offload(model, backend="rtl", hw=DEFAULT, calibration=cal)
    hooks = _progress(rtl, "rtl", args.quiet)
    r_logits = rtl(x)
    t_rtl = time.perf_counter() - t0
    for h in hooks:
        h.remove()

    assert list(rtl.layers) == names == list(gold.layers), (list(rtl.layers), names)
    hw = rtl.hw
    rows = []
    for n in names:
        lg, lr = gold.layers[n], rtl.layers[n]
        sg, sr = lg.stats, lr.stats
        same_quant = (lg.x_scale == lr.x_scale and np.array_equal(lg.weight_q, lr.weight_q)
                      and np.array_equal(lg.bias_q, lr.bias_q))
        identical = bool(same_quant and lg.last_acc.shape == lr.last_acc.shape
                         and np.array_equal(lg.last_acc, lr.last_acc))
        rm = real_macs(lr.conv, sr.in_shape, sr.images)
        rows.append(dict(
            name=n, conv=sr.description, in_shape=sr.in_shape, out_shape=sr.out_shape,
            macs_per_image=sr.per_image(sr.macs), real_macs_per_image=rm / sr.images,
            cycles_per_image=sr.per_image(sr.cycles), utilization=sr.utilization,
            real_utilization=rm / (hw.rows * hw.cols * sr.cycles),
            invocations_per_image=sr.per_image(sr.invocations),
            sqnr_db=sr.sqnr_db, max_abs_error=sr.max_abs_error,
            clipped_pct=100 * sr.clipped / sr.elements,
            golden_seconds=sg.seconds, rtl_seconds=sr.seconds,
            acc_identical=identical, golden_sqnr_db=sg.sqnr_db))

    logits_identical = bool(torch.equal(g_logits, r_logits))
    layers_identical = all(r["acc_identical"] for r in rows)
    tot = rtl.totals()
    real_total = sum(r["real_macs_per_image"] for r in rows)
    logit_sqnr = sqnr_db(f_logits.numpy(), r_logits.numpy())
    top1 = float((f_logits.argmax(1) == r_logits.argmax(1)).float().mean())

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    hdr = ["layer", "conv", "in -> out", "MACs/img", "cycles/img", "util", "util real",
           "inv/img", "SQNR dB", "max|err|", "clip %", "rtl==golden"]
    table = []
    for r in rows:
        shape = f"{'x'.join(map(str, r['in_shape']))} -> {'x'.join(map(str, r['out_shape']))}"
        table.append([r["name"], r["conv"], shape, f(r["macs_per_image"], ".0f"),
                      f(r["cycles_per_image"], ".0f"), f(r["utilization"], ".1%"),
                      f(r["real_utilization"], ".1%"), f(r["invocations_per_image"], ".0f"),
                      f(r["sqnr_db"], ".1f"), f(r["max_abs_error"], ".3g"),
                      f(r["clipped_pct"], ".2f"), "yes" if r["acc_identical"] else "NO"])
    total = ["total", f"{len(rows)} convs", "", f(tot["macs"], ".0f"), f(tot["cycles"], ".0f"),
             f(tot["utilization"], ".1%"),
             f(real_total / (hw.rows * hw.cols * tot["cycles"]), ".1%"),
             f(tot["invocations"], ".0f"), f(tot["min_sqnr_db"], ".1f"), "", "",
             "yes" if layers_identical else "NO"]
    widths = [max(len(r[i]) for r in table + [hdr, total]) for i in range(len(hdr))]

    def line(r):
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths)))

    print()
    print(f"rtl backend: {hw.rows}x{hw.cols} array, {hw.data_width}-bit; per image; SQNR / "
          f"max|err| of the layer output vs the float64 layer on the same input")
    print(line(hdr))
    print(line(["-" * w for w in widths]))
    for r in table:
        print(line(r))
    print(line(["-" * w for w in widths]))
    print(line(total))
    print("(util: MACs incl. padding taps / (rows*cols*cycles); util real: taps inside the "
          "input only; total SQNR: the lowest layer)")
    print()
    n_id = sum(r["acc_identical"] for r in rows)
    print(f"bit-identity rtl vs golden: {n_id}/{len(rows)} layers' int64 accumulators, "
          f"logits {'identical' if logits_identical else 'DIFFERENT'}")
    print(f"logits vs float model: SQNR {logit_sqnr:.1f} dB, max |error| "
          f"{float((r_logits - f_logits).abs().max()):.4f}, top-1 agreement {top1:.0%} "
          f"({args.batch} images)")
    print(f"total per image: {tot['macs'] / 1e6:.2f} M MACs ({real_total / 1e6:.2f} M on real "
          f"taps), {tot['cycles']:.0f} cycles, utilization {tot['utilization']:.1%}, "
          f"{tot['invocations']:.0f} invocations, "
          + _latency(tot['cycles'], args.clock_mhz, 1e3, "ms"))
    sim = sum(s.seconds for s in rtl.stats())
    t_total = time.perf_counter() - t_all
    print(f"wall time: model {t_model:.1f} s, golden offload {t_gold:.1f} s, rtl harness "
          f"build/load {t_harness:.1f} s, rtl offload {t_rtl:.1f} s ({sim:.1f} s in rtl conv "
          f"calls, {tot['cycles'] * args.batch / max(sim, 1e-9) / 1e6:.2f} M cycles/s incl. "
          f"host), total {t_total:.1f} s")

    if args.json:
        out = dict(size=args.size, batch=args.batch, seed=args.seed, calib_images=args.calib,
                   bn_images=args.bn_images, layers=rows,
                   totals=dict(tot, real_macs=real_total),
                   layers_identical=layers_identical, logits_identical=logits_identical,
                   logit_sqnr_db=logit_sqnr, top1_agreement=top1,
                   seconds=dict(model=t_model, golden=t_gold, harness=t_harness, rtl=t_rtl,
                                rtl_calls=sim, total=t_total),
                   hw=dict(rows=hw.rows, cols=hw.cols, data_width=hw.data_width))
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1,
                      default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
        print(f"wrote {args.json}")
    return 0 if layers_identical and logits_identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
