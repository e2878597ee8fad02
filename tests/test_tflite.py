"""int8 TFLite convolutions on the backends, layer by layer against LiteRT's reference kernels.

The oracle is LiteRT (``ai-edge-litert``) with ``OpResolverType.BUILTIN_REF``; the
models are the committed converter-built files in tests/data/tflite/ and
one-convolution models written here with chosen parameters (tfl_build.py).
"""

import pathlib
import re

import numpy as np
import pytest

from systolic_conv import Requant, conv2d
from systolic_conv.api import _rtl_requant_supported
from systolic_conv.contract import rounding_divide_by_pot, saturating_rounding_doubling_high_mul
from systolic_conv.tflite import (activation_range, main, offload_tflite, read_convs,
                                  reference_interpreter, run_conv, tflite_padding)

from tfl_build import conv_model

DATA = pathlib.Path(__file__).parent / "data" / "tflite"
MODELS = sorted(DATA.glob("*.tflite"))
SEED = 20251203


def _write(tmp_path, model, name="m.tflite"):
    p = tmp_path / name
    p.write_bytes(model)
    return p


def _check(report, seed):
    assert report.offloaded, f"seed {seed}: no convolution offloaded"
    for layer in report.layers:
        assert layer.equal, f"seed {seed}: {layer}"
    assert report.all_equal


# ---- committed converter-built models ----

def test_committed_models_present():
    names = {p.stem for p in MODELS}
    assert {"conv3x3_relu6", "conv_s2_oddpad", "depthwise_mult2_relu", "conv1x1",
            "scale_ge_1", "digits_int8"} <= names, names


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_committed_model_golden(path):
    for seed in (0, 1):
        report = offload_tflite(path, seed=seed)
        _check(report, seed)
        assert all(layer.wraps == 0 for layer in report.offloaded)


def test_committed_models_cover_the_cases():
    """The committed set exercises asymmetric pads, left shifts, RELU6, depthwise, per-channel."""
    seen = set()
    for path in MODELS:
        it = reference_interpreter(path.read_bytes())
        for conv in read_convs(path.read_bytes(), it):
            t, b, l, r = conv.pads
            seen.add(conv.op)
            seen.add(conv.activation)
            if t != b or l != r:
                seen.add("asymmetric")
            if conv.requant.left_shift:
                seen.add("left shift")
            if conv.requant.channels and len(set(conv.requant.multiplier)) > 1:
                seen.add("per-channel")
            if conv.weight.shape[2:] == (1, 1):
                seen.add("1x1")
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "RELU", "RELU6", "asymmetric", "left shift",
            "per-channel", "1x1"} <= seen, seen


def test_digits_model_layers():
    report = offload_tflite(DATA / "digits_int8.tflite", seed=3)
    _check(report, 3)
    ops = [layer.op for layer in report.offloaded]
    assert ops == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "CONV_2D", "CONV_2D"]
    # the converter writes the dilated conv as SPACE_TO_BATCH_ND -> CONV_2D (6x6 -> 4x4 per
    # batch of 4 phases) -> BATCH_TO_SPACE_ND, and PyTorch's padding=1 of the stride-2
    # conv as PAD -> VALID CONV_2D (10x10 -> 4x4); those operators run on LiteRT
    assert [layer.output_shape for layer in report.offloaded] == \
        [(1, 16, 16, 8), (1, 16, 16, 8), (1, 16, 16, 16), (4, 4, 4, 32), (1, 4, 4, 32)]


# ---- written models: every parameter chosen ----

CASES = {
    "same_relu6": dict(act="RELU6"),
    "s2_odd_pad": dict(stride=(2, 2), h=10, w=12, k=(3, 3)),
    "s2_odd_pad_5x5": dict(stride=(2, 3), h=11, w=13, k=(5, 4)),
    "dw_mult3_relu": dict(depthwise=True, multiplier=3, act="RELU", c_in=4),
    "dw_s2_dil2": dict(depthwise=True, stride=(2, 2), dilation=(2, 2), h=12, w=11),
    "pointwise": dict(k=(1, 1), c_in=7, c_out=5),
    "valid_dilated": dict(padding="VALID", dilation=(2, 1), h=12),
    "relu_n1_to_1": dict(act="RELU_N1_TO_1", y_scale=0.01),
    "scale_ge_1": dict(y_scale=0.0004, w_scales=[0.02, 0.004, 0.05, 0.0009]),
    "batch3_zp_extremes": dict(n=3, x_zp=-128, y_zp=127, act="RELU"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_written_model_golden(tmp_path, name):
    seed = SEED + sorted(CASES).index(name)
    path = _write(tmp_path, conv_model(seed, **CASES[name]))
    report = offload_tflite(path, seed=seed)
    _check(report, seed)


def test_written_models_random(tmp_path):
    """Random geometry, scales (effective about 2**-19 .. 2**8), zero points and activations."""
    for trial in range(12):
        seed = SEED + 100 + trial
        r = np.random.default_rng(seed)
        dw = bool(r.integers(2))
        k = tuple(int(v) for v in r.integers(1, 6, 2))
        kw = dict(depthwise=dw, multiplier=int(r.integers(1, 3)), k=k,
                  stride=tuple(int(v) for v in r.integers(1, 4, 2)),
                  dilation=tuple(int(v) for v in r.integers(1, 3, 2)),
                  padding=str(r.choice(["SAME", "VALID"])),
                  act=str(r.choice(["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])),
                  h=int(r.integers(9, 15)), w=int(r.integers(9, 15)),
                  c_in=int(r.integers(1, 6)), c_out=int(r.integers(1, 6)),
                  x_scale=float(2.0 ** r.uniform(-8, 0)), x_zp=int(r.integers(-128, 128)),
                  y_scale=float(2.0 ** r.uniform(-14, 2)), y_zp=int(r.integers(-128, 128)))
        path = _write(tmp_path, conv_model(seed, **kw), f"r{trial}.tflite")
        report = offload_tflite(path, seed=seed)
        _check(report, f"{seed} {kw}")


def test_left_shift_wrap_matches_litert(tmp_path):
    """A bias of 2**26 and an effective scale of ~2**7: acc * 2**L leaves int32.

    LiteRT's reference kernel wraps in int32; the contract's rule reproduces it,
    and an exact (unwrapped) left shift would not.
    """
    bias = np.array([2**26, -2**26, 2**25 + 12345, 0])
    path = _write(tmp_path, conv_model(SEED, y_scale=1e-5, bias=bias))
    report = offload_tflite(path, seed=SEED)
    _check(report, SEED)
    layer = report.layers[0]
    assert layer.left_shift >= 6 and layer.wraps > 0 and layer.wrap_free is False
    # the same outputs without the wrap differ from LiteRT's
    it = reference_interpreter(path.read_bytes())
    it.set_tensor(it.get_input_details()[0]["index"], report.inputs[0])
    it.invoke()
    conv = read_convs(path.read_bytes(), it)[0]
    _, _, acc = run_conv(conv, it.get_tensor(conv.input), return_acc=True)
    rq = conv.requant
    M = np.asarray(rq.multiplier).reshape(1, -1, 1, 1)
    L = -np.asarray(rq.shift).reshape(1, -1, 1, 1)
    unwrapped = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(acc << L, M), 0)
    unwrapped = np.clip(unwrapped + rq.out_zero_point, rq.qmin, rq.qmax).transpose(0, 2, 3, 1)
    want = it.get_tensor(conv.output)
    differ = np.count_nonzero(unwrapped != want)
    assert 0 < differ <= layer.wraps, (differ, layer.wraps)     # a wrap may still saturate


def test_parameters_read_back(tmp_path):
    """read_convs turns TFLite's options into the contract's terms (hand-derived values)."""
    path = _write(tmp_path, conv_model(5, stride=(2, 2), h=10, w=12, act="RELU6",
                                       x_scale=0.5, x_zp=-3, y_scale=0.25, y_zp=5,
                                       w_scales=[0.5, 1.0, 0.25, 2.0 ** -40]))
    model = path.read_bytes()
    it = reference_interpreter(model)
    (conv,) = read_convs(model, it)
    # SAME, 10x12, k3, s2: out 5x6, totals 1 and 1 -> pads (0, 1, 0, 1)
    assert conv.pads == (0, 1, 0, 1) and conv.stride == (2, 2) and conv.groups == 1
    # effective scales 0.5*0.5/0.25 = 1 (TFLite shift +1), 2, 0.5, 2**-40 (flushed)
    assert conv.requant.multiplier == (2**30, 2**30, 2**30, 0)
    assert conv.requant.shift == (-1, -2, 0, 0)
    # RELU6: [max(-128, 5 + 0), min(127, 5 + round(6 / 0.25))] = [5, 29]
    assert (conv.requant.qmin, conv.requant.qmax) == (5, 29) and conv.requant.relu
    wq = it.get_tensor(2).astype(np.int64)              # tensors: x, y, filter, bias
    assert np.array_equal(conv.weight, wq.transpose(0, 3, 1, 2))
    tfl_bias = it.get_tensor(3).astype(np.int64)
    assert np.array_equal(conv.bias, tfl_bias + 3 * wq.reshape(4, -1).sum(axis=1))
    assert conv.pad_value == -3


def test_activation_range_hand_worked():
    assert activation_range("NONE", 0.1, 3) == (-128, 127)
    assert activation_range("RELU", 0.1, -20) == (-20, 127)
    assert activation_range("RELU6", 0.1, -20) == (-20, 40)         # -20 + 60
    assert activation_range("RELU6", 0.01, -20) == (-20, 127)       # 600 saturates
    assert activation_range("RELU_N1_TO_1", 0.25, 0) == (-4, 4)
    assert activation_range("RELU_N1_TO_1", 0.004, 0) == (-128, 127)
    # float32 division then round half away from zero: 6 / 0.8 = 7.5 -> 8
    assert activation_range("RELU6", 0.8, 0) == (0, 8)
    with pytest.raises(ValueError, match=r"^activation='TANH' must be one of"):
        activation_range("TANH", 0.1, 0)


def test_tflite_padding_hand_worked():
    assert tflite_padding("SAME", 10, 3, 2, 1) == (5, 0, 1)
    assert tflite_padding("SAME", 11, 3, 2, 1) == (6, 1, 1)
    assert tflite_padding("SAME", 8, 3, 1, 1) == (8, 1, 1)
    assert tflite_padding("SAME", 8, 4, 1, 1) == (8, 1, 2)
    assert tflite_padding("SAME", 7, 3, 3, 2) == (3, 2, 2)          # eff 5: 2*3 + 5 - 7 = 4
    assert tflite_padding("VALID", 12, 3, 1, 2) == (8, 0, 0)
    with pytest.raises(ValueError, match=r"^padding='FULL' must be 'SAME' or 'VALID'$"):
        tflite_padding("FULL", 8, 3, 1, 1)


# ---- errors ----

def test_offload_tflite_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^backend='cpu' must be one of 'golden', 'rtl'$"):
        offload_tflite(DATA / "conv1x1.tflite", backend="cpu")
    with pytest.raises(FileNotFoundError, match=r"^path='nope.tflite' is not a file$"):
        offload_tflite("nope.tflite")
    with pytest.raises(TypeError, match=r"^backend='golden' takes no hw or backend options$"):
        offload_tflite(DATA / "conv1x1.tflite", hw=object())
    with pytest.raises(ValueError, match=r"^inputs has 2 arrays but the model has 1 inputs$"):
        offload_tflite(DATA / "conv1x1.tflite", inputs=[np.zeros(1), np.zeros(1)])
    with pytest.raises(ValueError, match=r"^inputs\[0\] has shape \(3,\), the model expects"):
        offload_tflite(DATA / "conv1x1.tflite", inputs=[np.zeros(3)])


def test_rtl_refuses_what_the_hardware_lacks():
    x = np.zeros((1, 2, 4, 4), np.int64)
    w = np.ones((3, 2, 3, 3), np.int64)
    msg = ("requant shift=-2: a negative shift (left shift, effective scale >= 1) is not "
           "supported by the rtl backend's requantizer yet; use backend='golden'")
    ok, why = _rtl_requant_supported(Requant(shift=-2), None)
    if not ok:
        assert why == msg
        with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
            conv2d(x, w, backend="rtl", requant=Requant(shift=-2))
    msg = ("requant act_min=None, act_max=100: clamp bounds other than the output range "
           "(or relu=True) are not supported by the rtl backend's requantizer yet; "
           "use backend='golden'")
    ok, why = _rtl_requant_supported(Requant(act_max=100), None)
    if not ok:
        assert why == msg
        with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
            conv2d(x, w, backend="rtl", requant=Requant(act_max=100))
    # what the requantizer has always done is supported
    for rq in (None, Requant(shift=3), Requant(relu=True, out_zero_point=-4),
               Requant(act_min=-128, act_max=127), Requant(mode="half_up", multiplier=3)):
        assert _rtl_requant_supported(rq, None) == (True, "")

    class Capable:                      # a configuration that declares both features
        requant_left_shift = requant_bounds = True

    assert _rtl_requant_supported(Requant(shift=-2, act_min=-4, act_max=9), Capable()) == \
        (True, "")


def test_kernel_mismatch_counts():
    """LiteRT against itself through the helper: same kernels, no difference; sizes add up."""
    from systolic_conv.tflite import kernel_mismatch
    x = [np.random.default_rng(SEED).integers(-128, 128, (1, 8, 8, 6)).astype(np.int8)]
    d, t, m = kernel_mismatch(DATA / "conv1x1.tflite", x, "AUTO")
    assert t == 8 * 8 * 5 and 0 <= d <= t and m <= 1
    with pytest.raises(ValueError, match=r"^resolver='REF' must be one of 'AUTO', 'BUILTIN', "
                                         r"'BUILTIN_WITHOUT_DEFAULT_DELEGATES'$"):
        kernel_mismatch(DATA / "conv1x1.tflite", x, "REF")


def test_main(tmp_path, capsys):
    import systolic_conv
    report = systolic_conv.offload_tflite(DATA / "conv1x1.tflite", seed=4)
    assert report.all_equal and report.cycles is None and len(report.layers) == 1
    assert main(["--tflite", str(DATA / "conv1x1.tflite"), "--backend", "golden"]) == 0
    out = capsys.readouterr().out
    assert "CONV_2D" in out and out.rstrip().endswith("all equal")
    with pytest.raises(SystemExit) as exc:
        main(["--tflite", str(tmp_path / "missing.tflite")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"systolic-conv run: error: argument --tflite: no such file: "
        f"'{tmp_path / 'missing.tflite'}'")


def test_run_command_with_tflite(tmp_path, capsys):
    from systolic_conv.cli import main as cli_main
    path = DATA / "conv3x3_relu6.tflite"
    assert cli_main(["run", "--tflite", str(path), "--backend", "golden", "--seed", "3"]) == 0
    out = capsys.readouterr().out.rstrip().splitlines()
    assert out[0].startswith(f"{path}: 1 of 1 convolutions on backend='golden'")
    assert out[-1] == "all equal"
    not_a_model = _write(tmp_path, b"\x00" * 64, "zeros.tflite")
    cases = [
        (["run", "--tflite", str(not_a_model)],
         f"argument --tflite: '{not_a_model}' is not a TFLite model (no TFL3 file identifier)"),
        (["run", "--tflite", str(path), "--in-channels", "8"],
         "argument --in-channels: not allowed with --tflite (the model gives its layers)"),
        (["run", "--tflite", str(path), "--stride", "2"],
         "argument --stride: not allowed with --tflite (the model gives its layers)"),
        (["run", "--tflite", str(path), "--requant", "tflite"],
         "argument --requant: not allowed with --tflite (the model gives its layers)"),
        (["run", "--tflite", str(path), "--data-width", "16"],
         "argument --data-width: an int8 TFLite model needs 8, not 16"),
        (["run", "--in-channels", "8", "--height", "6", "--width", "6"],
         "argument --out-channels: required unless --tflite MODEL is given"),
    ]
    left = DATA / "scale_ge_1.tflite"
    if not _rtl_ready(left)[0]:          # the rtl backend is refused before any work
        cases.append((["run", "--tflite", str(left)],
                      f"argument --backend: operator 0 (CONV_2D 'StatefulPartitionedCall_1:0') "
                      f"of '{left}': {_rtl_ready(left)[1].split(': ', 1)[1]}"))
    broken = _write(tmp_path, b"\x00" * 4 + b"TFL3" + b"\x00" * 8, "broken.tflite")
    cases.append((["run", "--tflite", str(broken)], f"argument --tflite: '{broken}': "))
    for argv, msg in cases:
        with pytest.raises(SystemExit) as exc:
            cli_main(argv)
        assert exc.value.code == 2, argv
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line == f"systolic-conv run: error: {msg}" or \
            (msg.endswith(": ") and line.startswith(f"systolic-conv run: error: {msg}")), line


# ---- rtl backend: each model runs once the default hardware applies all its requantizers ----

def _rtl_ready(path):
    """(True, '') when the default hardware supports every convolution's Requant of ``path``."""
    model = path.read_bytes()
    for conv in read_convs(model, reference_interpreter(model)):
        ok, why = _rtl_requant_supported(conv.requant, None)
        if not ok:
            return False, f"{conv.op} {conv.name!r}: {why}"
    return True, ""


def _rtl_cases():
    for path in MODELS:
        ok, why = _rtl_ready(path)
        yield pytest.param(path, id=path.stem, marks=pytest.mark.skipif(
            not ok, reason=f"the default hardware lacks it: {why}"))


@pytest.mark.rtl
@pytest.mark.parametrize("path", list(_rtl_cases()))
def test_committed_model_rtl(path):
    report = offload_tflite(path, backend="rtl", seed=0)
    _check(report, 0)
    assert all(layer.cycles > 0 for layer in report.offloaded)


def test_rtl_gate_names_the_layer(tmp_path):
    """offload_tflite on rtl refuses a layer the hardware cannot requantize, naming it."""
    path = DATA / "scale_ge_1.tflite"
    ok, why = _rtl_ready(path)
    if ok:
        pytest.skip("the default hardware has left shifts")
    with pytest.raises(ValueError, match=r"^operator 0 \(CONV_2D 'StatefulPartitionedCall_1:0'\)"
                                         r": requant shift=\(-2, -3, -2, -3\): a negative shift"):
        offload_tflite(path, backend="rtl")


def test_not_offloaded_layer_is_listed(tmp_path):
    """A convolution outside the scheme (fused TANH) is reported, not run, and not 'equal'."""
    path = _write(tmp_path, conv_model(SEED, act="TANH"))
    report = offload_tflite(path, seed=SEED)
    (layer,) = report.layers
    assert layer.equal is None and layer.reason == "fused activation TANH"
    assert not report.offloaded and not report.all_equal
    assert "not offloaded: fused activation TANH" in str(report)
