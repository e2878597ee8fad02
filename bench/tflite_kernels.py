"""LiteRT's default (XNNPACK) and optimized kernels against its reference kernels (BUILTIN_REF).

The backends of systolic-conv equal LiteRT's reference kernels bit for bit
(tests/test_tflite.py). This measures how often LiteRT's default kernels differ
from those: every one-convolution model in tests/data/tflite/ and 40 written
one-convolution models (random geometry and scales, tests/tfl_build.py) on
seeded random int8 inputs, counting output elements that differ and by how
much; and the digits CNN on its 450 test images (logits and predicted class).

Usage: python bench/tflite_kernels.py [--inputs 50] [--out bench/results_tflite_kernels.txt]
"""

import argparse
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from systolic_conv.tflite import kernel_mismatch, reference_interpreter  # noqa: E402
from tfl_build import conv_model  # noqa: E402


def _random_models(n, seed):
    for trial in range(n):
        r = np.random.default_rng(seed + trial)
        k = tuple(int(v) for v in r.integers(1, 6, 2))
        yield f"written{trial}", conv_model(
            seed + trial, depthwise=bool(r.integers(2)), multiplier=int(r.integers(1, 3)), k=k,
            stride=tuple(int(v) for v in r.integers(1, 3, 2)),
            padding=str(r.choice(["SAME", "VALID"])),
            act=str(r.choice(["NONE", "RELU", "RELU6"])), h=12, w=12,
            c_in=int(r.integers(4, 17)), c_out=int(r.integers(4, 17)),
            x_scale=float(2.0 ** r.uniform(-8, -2)), x_zp=int(r.integers(-128, 128)),
            y_scale=float(2.0 ** r.uniform(-4, 2)), y_zp=int(r.integers(-128, 128)))


def _inputs(model, rng):
    it = reference_interpreter(model, preserve=False)
    return [rng.integers(-128, 128, d["shape"]).astype(d["dtype"])
            for d in it.get_input_details()]


def measure(models, n_inputs, seed, resolver):
    """Sum ``kernel_mismatch`` over ``n_inputs`` random inputs per model."""
    rows = []
    for name, model in models:
        rng = np.random.default_rng(seed)
        diff = total = worst = 0
        for _ in range(n_inputs):
            d, t, m = kernel_mismatch(model, _inputs(model, rng), resolver)
            diff, total, worst = diff + d, total + t, max(worst, m)
        rows.append((name, diff, total, worst))
    return rows


def digits(path):
    """Logits and classes of the digits model on its test images, both kernel sets."""
    from systolic_conv.models.digits import load_data
    model = path.read_bytes()
    it = reference_interpreter(model, preserve=False)
    d = it.get_input_details()[0]
    scale, zp = d["quantization"]
    _, _, x_test, y_test = load_data()
    x = x_test.numpy().transpose(0, 2, 3, 1)
    xq = np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)
    diff = total = worst = cls_diff = 0
    correct = [0, 0]
    from ai_edge_litert import interpreter as I
    its = [I.Interpreter(model_content=model, experimental_op_resolver_type=k)
           for k in (I.OpResolverType.AUTO, I.OpResolverType.BUILTIN_REF)]
    for it in its:
        it.allocate_tensors()
    for img, label in zip(xq, y_test.numpy()):
        outs = []
        for it in its:
            it.set_tensor(it.get_input_details()[0]["index"], img[None])
            it.invoke()
            outs.append(it.get_tensor(it.get_output_details()[0]["index"]).astype(np.int64))
        delta = np.abs(outs[0] - outs[1])
        diff, total, worst = diff + np.count_nonzero(delta), total + delta.size, max(worst, delta.max())
        cls = [int(np.argmax(o)) for o in outs]
        cls_diff += cls[0] != cls[1]
        correct = [c + (k == label) for c, k in zip(correct, cls)]
    return diff, total, int(worst), cls_diff, correct, len(y_test)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=50, help="random inputs per model (default 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    data = ROOT / "tests" / "data" / "tflite"
    committed = [(p.stem, p.read_bytes()) for p in sorted(data.glob("*.tflite"))
                 if p.stem != "digits_int8"]
    models = committed + list(_random_models(40, 1000 + args.seed))
    lines = []
    for resolver, what in (("AUTO", "LiteRT default kernels (AUTO: XNNPACK)"),
                           ("BUILTIN_WITHOUT_DEFAULT_DELEGATES", "optimized builtin kernels")):
        rows = measure(models, args.inputs, args.seed, resolver)
        lines += [f"{what} vs BUILTIN_REF, {args.inputs} random int8 inputs per model "
                  f"(seed {args.seed})",
                  f"{'model':<22} {'differ':>8} {'outputs':>10} {'fraction':>9} {'max|d|':>6}"]
        for name, d, t, m in rows:
            if not name.startswith("written"):
                lines.append(f"{name:<22} {d:>8} {t:>10} {d / t:>9.4%} {m:>6}")
        w = [r for r in rows if r[0].startswith("written")]
        wd, wt, wm = sum(r[1] for r in w), sum(r[2] for r in w), max(r[3] for r in w)
        lines.append(f"{'40 written models':<22} {wd:>8} {wt:>10} {wd / wt:>9.4%} {wm:>6}")
        d, t, m = sum(r[1] for r in rows), sum(r[2] for r in rows), max(r[3] for r in rows)
        lines += [f"{'all':<22} {d:>8} {t:>10} {d / t:>9.4%} {m:>6}", ""]
    dd, dt, dm, cd, correct, n = digits(data / "digits_int8.tflite")
    lines.append(f"digits_int8 on its {n} test images: logits differ {dd} of {dt} "
                 f"({dd / dt:.2%}, max |d| {dm}), predicted class differs on {cd}; "
                 f"accuracy XNNPACK {correct[0] / n:.4f}, BUILTIN_REF {correct[1] / n:.4f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
