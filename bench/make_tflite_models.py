"""Build the committed int8 TFLite test models with TensorFlow's converter.

Two steps, two environments (``make tflite-models`` runs both):

``export OUT.npz``
    In the project's environment: the trained digits CNN
    (:mod:`systolic_conv.models.digits`, BatchNorm folded) as float arrays,
    with 200 training images for calibration and the 450 test images.
``convert DIGITS.npz OUTDIR``
    In an environment with ``tensorflow-cpu`` only (no project import): Keras
    models, post-training full-integer quantization (int8 activations and
    weights, per-channel weight scales, int8 model input and output) with a
    seeded representative data set, written as ``OUTDIR/<name>.tflite``.

Models: ``conv3x3_relu6`` (SAME, fused ReLU6), ``conv_s2_oddpad`` (stride 2 SAME
on 10x12: one extra row at the bottom and column at the right),
``depthwise_mult2_relu`` (depth multiplier 2, fused ReLU), ``conv1x1``,
``scale_ge_1`` (a 1x1 conv whose calibrated output range is far below its input
range: effective scales >= 1, TFLite's positive shift) and ``digits_int8``
(the digits CNN; PyTorch's stride-2 ``padding=1`` is a ZeroPadding2D before a
VALID convolution, which the converter turns into a PAD operator).
"""

import pathlib
import sys

import numpy as np

SEED = 0
CALIBRATION = 100


def export(out):
    """Write the digits CNN's folded float parameters and data to ``out`` (.npz)."""
    from systolic_conv.models.digits import load_data, pretrained
    model = pretrained(fold=True)
    arrays = {}
    for name in ("conv1", "dw", "pw", "dil", "down", "fc"):
        layer = getattr(model, name)
        arrays[f"{name}.weight"] = layer.weight.detach().numpy().astype(np.float32)
        bias = layer.bias
        arrays[f"{name}.bias"] = (np.zeros(layer.weight.shape[0], np.float32) if bias is None
                                  else bias.detach().numpy().astype(np.float32))
    x_train, _, x_test, y_test = load_data()
    arrays["calibration"] = x_train[:200].numpy()
    arrays["x_test"] = x_test.numpy()
    arrays["y_test"] = y_test.numpy()
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    print(f"wrote {out}")


def _convert(tf, model, samples):
    def representative():
        for s in samples:
            yield [s[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def _small_models(tf):
    L = tf.keras.layers
    rng = np.random.default_rng(SEED)

    def seq(shape, *layers):
        return tf.keras.Sequential([tf.keras.Input(shape)] + list(layers))

    def normal(shape):
        return rng.normal(0, 1, (CALIBRATION,) + shape).astype(np.float32)

    models = {
        "conv3x3_relu6": (seq((12, 12, 3), L.Conv2D(8, 3, padding="same",
                                                    activation=tf.nn.relu6)), normal((12, 12, 3))),
        "conv_s2_oddpad": (seq((10, 12, 4), L.Conv2D(6, 3, strides=2, padding="same")),
                           normal((10, 12, 4))),
        "depthwise_mult2_relu": (seq((9, 9, 4), L.DepthwiseConv2D(3, depth_multiplier=2,
                                                                  padding="same",
                                                                  activation="relu")),
                                 normal((9, 9, 4))),
        "conv1x1": (seq((8, 8, 6), L.Conv2D(5, 1)), normal((8, 8, 6))),
    }
    # effective scale >= 1: channel 1 sets the input scale (range +-1) but has no
    # weight; channel 0 carries the signal at 1/1000 of that range, so the output
    # range is ~1000x smaller than input_scale * filter_scale * 255
    ge1 = seq((8, 8, 2), L.Conv2D(4, 1))
    w = np.zeros((1, 1, 2, 4), np.float32)
    w[0, 0, 0] = rng.uniform(0.3, 1.0, 4) * rng.choice([-1, 1], 4)
    ge1.layers[-1].set_weights([w, rng.uniform(-1e-4, 1e-4, 4).astype(np.float32)])
    cal = np.stack([rng.uniform(-1e-3, 1e-3, (CALIBRATION, 8, 8)),
                    rng.uniform(-1, 1, (CALIBRATION, 8, 8))], axis=-1).astype(np.float32)
    models["scale_ge_1"] = (ge1, cal)
    return models


def _digits(tf, z):
    L = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input((16, 16, 1)),
        L.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw"),
        L.Conv2D(16, 1, activation="relu", name="pw"),
        L.MaxPool2D(2, name="pool"),
        L.Conv2D(32, 3, padding="same", dilation_rate=2, activation="relu", name="dil"),
        L.ZeroPadding2D(1, name="pad"),
        L.Conv2D(32, 3, strides=2, padding="valid", activation="relu", name="down"),
        L.GlobalAveragePooling2D(name="gap"),
        L.Dense(10, name="fc"),
    ])
    for name in ("conv1", "pw", "dil", "down"):
        w = z[f"{name}.weight"].transpose(2, 3, 1, 0)           # OIHW -> HWIO
        model.get_layer(name).set_weights([w, z[f"{name}.bias"]])
    model.get_layer("dw").set_weights([z["dw.weight"].transpose(2, 3, 0, 1), z["dw.bias"]])
    model.get_layer("fc").set_weights([z["fc.weight"].T, z["fc.bias"]])
    x_test = z["x_test"].transpose(0, 2, 3, 1)
    acc = float(np.mean(np.argmax(model.predict(x_test, verbose=0), 1) == z["y_test"]))
    print(f"digits (Keras float): test accuracy {acc:.4f}")
    return model, z["calibration"].transpose(0, 2, 3, 1)


def convert(digits_npz, outdir):
    """Convert every model to ``outdir/<name>.tflite``."""
    import tensorflow as tf
    tf.keras.utils.set_random_seed(SEED)
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    models = _small_models(tf)
    with np.load(digits_npz) as z:
        models["digits_int8"] = _digits(tf, z)
    for name, (model, samples) in models.items():
        data = _convert(tf, model, samples)
        (outdir / f"{name}.tflite").write_bytes(data)
        print(f"wrote {outdir / name}.tflite ({len(data)} bytes)")


def main(argv):
    if len(argv) == 2 and argv[0] == "export":
        export(argv[1])
    elif len(argv) == 3 and argv[0] == "convert":
        convert(argv[1], argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
