"""The digits CNN as an int8 TFLite model, its convolutions on both backends against LiteRT.

tests/data/tflite/digits_int8.tflite (bench/make_tflite_models.py) on the digits
test images, quantized with the model's input scale and zero point: every
CONV_2D / DEPTHWISE_CONV_2D on the golden and the rtl backend, compared with
LiteRT's reference kernels layer by layer; LiteRT's predicted classes give the
int8 model's accuracy.

Usage: python bench/digits_tflite.py [--images 450] [--rtl-images 450]
"""

import argparse
import pathlib
import sys
import time

import numpy as np

from systolic_conv.models.digits import load_data
from systolic_conv.tflite import offload_tflite, reference_interpreter

MODEL = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "tflite" / "digits_int8.tflite"


def quantized_images(n):
    """The first ``n`` test images as the model's int8 input, and their labels."""
    it = reference_interpreter(MODEL.read_bytes(), preserve=False)
    scale, zp = it.get_input_details()[0]["quantization"]
    _, _, x_test, y_test = load_data()
    x = x_test[:n].numpy().transpose(0, 2, 3, 1)
    return np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8), y_test[:n].numpy()


def run(backend, images, labels):
    equal = correct = 0
    cycles = []
    t0 = time.perf_counter()
    for img, label in zip(images, labels):
        report = offload_tflite(MODEL, backend=backend, inputs=[img[None]])
        equal += report.all_equal
        correct += int(np.argmax(report.outputs[0])) == label
        if backend == "rtl":
            cycles.append(report.cycles)
    seconds = time.perf_counter() - t0
    return equal, correct, cycles, seconds, report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=450)
    ap.add_argument("--rtl-images", type=int, default=450)
    args = ap.parse_args(argv)
    for backend, n in (("golden", args.images), ("rtl", args.rtl_images)):
        images, labels = quantized_images(n)
        equal, correct, cycles, seconds, last = run(backend, images, labels)
        extra = f", {cycles[0]} cycles per image" if cycles else ""
        print(f"{backend}: {equal}/{n} images with every convolution equal to LiteRT "
              f"BUILTIN_REF{extra}; int8 model accuracy {correct / n:.4f}; {seconds:.1f} s")
    print(last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
