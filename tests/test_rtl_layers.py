"""The default 8x8 accelerator on Verilator (compiled batch harness): named real
layers at reduced spatial size with their true channel counts, every padding
mode, both requantization modes, error handling; bit-exact against the golden
model, with the bench-measured cycles equal to the hardware counter."""

import numpy as np
import pytest

from systolic_conv import conv2d, Requant
from systolic_conv.contract import conv_geometry
from systolic_conv.hw.config import HardwareConfig, DEFAULT
from systolic_conv.hw import layouts as L
from systolic_conv.streams import build_invocation, pack_beats
from systolic_conv.sim.harness import get_harness

pytestmark = pytest.mark.rtl


def _layer(name, n, cin, h, w, cout, k, stride=1, padding=0, dilation=1, groups=1, bias=True,
           mode="zeros"):
    return pytest.param(dict(n=n, cin=cin, h=h, w=w, cout=cout, k=k, stride=stride,
                             padding=padding, dilation=dilation, groups=groups, bias=bias,
                             mode=mode), id=name)


LAYERS = [
    _layer("seed_square_k3_s2", 1, 16, 16, 16, 33, 3, stride=2),
    _layer("seed_k3x5_s2x1_p4x2", 1, 16, 16, 16, 33, (3, 5), stride=(2, 1), padding=(4, 2)),
    _layer("seed_k3x5_d3x1", 1, 16, 16, 16, 33, (3, 5), stride=(2, 1), padding=(4, 2),
           dilation=(3, 1)),
    _layer("resnet18_layer1_3x3", 1, 64, 16, 16, 64, 3, padding=1, bias=False),
    _layer("resnet18_conv1_7x7_s2", 1, 3, 16, 16, 64, 7, stride=2, padding=3, bias=False),
    _layer("resnet18_downsample_1x1_s2", 1, 64, 16, 16, 128, 1, stride=2, bias=False),
    _layer("mobilenetv2_dw_3x3", 1, 144, 16, 16, 144, 3, padding=1, groups=144, bias=False),
    _layer("mobilenetv2_dw_s2", 1, 96, 16, 16, 96, 3, stride=2, padding=1, groups=96),
    _layer("depthwise_multiplier_2", 2, 12, 9, 11, 24, 3, padding=1, groups=12),
    _layer("resnext_grouped_32", 1, 128, 16, 16, 128, 3, padding=1, groups=32, bias=False),
    _layer("aspp_dilated_6", 1, 64, 16, 16, 32, 3, padding=6, dilation=6, bias=False),
    _layer("aspp_polyphase_12", 1, 32, 16, 16, 16, 3, padding=12, dilation=12, bias=False),
    _layer("cyclegan_reflect_7x7", 1, 3, 16, 16, 64, 7, padding=3, mode="reflect"),
    _layer("resblock_reflect", 1, 64, 12, 12, 64, 3, padding=1, mode="reflect"),
    _layer("replicate_k5", 1, 32, 16, 16, 32, 5, padding=2, mode="replicate"),
    _layer("circular_k3", 1, 16, 16, 16, 16, 3, padding=1, mode="circular"),
    _layer("same_even_k4_d2", 1, 16, 16, 12, 24, 4, padding="same", dilation=2),
    _layer("wide_row_strips", 1, 8, 6, 150, 8, 3, padding=1, mode="reflect"),
    _layer("deep_reduction_split", 1, 300, 5, 5, 9, 3, padding=1),
]


def _run(spec, hw=DEFAULT, requant=None, seed=0, **kw):
    rng = np.random.default_rng(seed)
    lim = 1 << (hw.data_width - 1)
    x = rng.integers(-lim, lim, (spec["n"], spec["cin"], spec["h"], spec["w"]))
    k = spec["k"] if isinstance(spec["k"], tuple) else (spec["k"], spec["k"])
    wt = rng.integers(-lim, lim, (spec["cout"], spec["cin"] // spec["groups"]) + k)
    b = rng.integers(-20000, 20000, spec["cout"]) if spec["bias"] else None
    args = dict(stride=spec["stride"], padding=spec["padding"], dilation=spec["dilation"],
                groups=spec["groups"], padding_mode=spec["mode"])
    out, st = conv2d(x, wt, b, backend="rtl", hw=hw, requant=requant, return_stats=True,
                     data_width=hw.data_width, **args, **kw)
    ref = conv2d(x, wt, b, requant=requant, data_width=hw.data_width, **args)
    return out, ref, st


@pytest.mark.parametrize("spec", LAYERS)
def test_named_layer_bit_exact(spec):
    out, ref, st = _run(spec)
    assert out.shape == ref.shape
    assert np.array_equal(out, ref)
    c = st.counters
    assert c["cycles"] == st.cycles
    assert sum(c[k] for k in L.COUNTERS[1:]) == c["cycles"]
    assert c["busy"] >= st.macs / (st.rows * st.cols)
    print(spec, st)


@pytest.mark.parametrize("mode", ["tflite", "half_up"])
def test_requantized_layer(mode):
    spec = dict(n=1, cin=24, h=10, w=12, cout=20, k=3, stride=1, padding=1, dilation=1,
                groups=1, bias=True, mode="zeros")
    rng = np.random.default_rng(7)
    if mode == "tflite":
        mult = rng.integers(1 << 29, (1 << 31) - 1, 20)
        shift = rng.integers(8, 14, 20)
    else:
        mult = rng.integers(1, 1 << 16, 20)
        shift = rng.integers(18, 26, 20)
    for relu in (False, True):
        rq = Requant(mode=mode, multiplier=mult, shift=shift, out_zero_point=-7, out_width=8,
                     relu=relu)
        out, ref, st = _run(spec, requant=rq, seed=3)
        assert np.array_equal(out, ref)
        assert out.min() >= (-7 if relu else -128) and out.max() <= 127
        # saturation actually exercised
        assert (out == 127).any() and (out == (-7 if relu else -128)).any()


def test_stalls_do_not_change_results():
    spec = dict(n=2, cin=20, h=9, w=13, cout=11, k=(3, 2), stride=(1, 2), padding=(2, 1),
                dilation=(2, 1), groups=1, bias=True, mode="replicate")
    out0, ref, st0 = _run(spec)
    out1, _, st1 = _run(spec, idle=(0.3, 0.5, 0.5, 0.5), stall=0.85, seed=0)
    assert np.array_equal(out0, ref) and np.array_equal(out1, ref)
    assert st1.cycles > st0.cycles
    assert st1.counters["stall_input"] > 0
    # a 1x1 layer produces a result per issued element: back-pressure must stall it
    spec = dict(n=1, cin=8, h=12, w=40, cout=16, k=1, stride=1, padding=0, dilation=1,
                groups=1, bias=True, mode="zeros")
    out2, ref2, st2 = _run(spec, stall=0.5, seed=4)
    assert np.array_equal(out2, ref2)
    assert st2.counters["stall_output"] > 0


@pytest.mark.parametrize("width", [4, 16])
def test_other_data_widths(width):
    hw = HardwareConfig(rows=4, cols=4, data_width=width, max_width=32, max_cwords=8,
                        weight_depth=4096, acc_depth=256)
    spec = dict(n=1, cin=10, h=8, w=9, cout=6, k=3, stride=1, padding=1, dilation=1, groups=2,
                bias=True, mode="zeros")
    out, ref, _ = _run(spec, hw=hw)
    assert np.array_equal(out, ref)


# ----------------------------------------------------------------------------- errors

def _one_invocation(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (10, 6, 7))
    w = rng.integers(-128, 128, (9, 10, 3, 3))
    b = rng.integers(-100, 100, 9)
    inv = build_invocation(DEFAULT, x, w, b, pads=(1, 1, 1, 1))
    ref = conv2d(x[None], w, b, padding=1)[0]
    return inv, ref


def _concat(invs, override=()):
    override = dict(override)
    names = ("desc_words", "param_words", "weight_words", "act_words")
    return [np.concatenate([override.get((i, n), getattr(inv, n)) for i, inv in enumerate(invs)])
            for n in names]


def _set_last(words, layout, index):
    """Return a copy of ``words[:index+1]`` with only the final beat marked last."""
    off = L.field_offsets(layout)["last"][0]
    w = words[:index + 1].copy()
    w[:, off // 32] &= ~np.uint32(1 << (off % 32))
    w[-1, off // 32] |= np.uint32(1 << (off % 32))
    return w


def test_bad_descriptor_is_drained_and_next_layer_exact():
    h = get_harness(DEFAULT)
    good, ref = _one_invocation()
    bad_desc = dict(good.desc)
    bad_desc["kh"] = 0                      # no such kernel
    dl = L.descriptor_layout(DEFAULT)
    bad_words = pack_beats(dl, 1, {k: [v.value if hasattr(v, "value") else v]
                                   for k, v in bad_desc.items()})
    streams = _concat([good, good], {(0, "desc_words"): bad_words})
    run = h.run(*streams, n_results=good.n_results)
    assert not run.timeout
    assert run.status[0]["error"] == L.ErrorFlag.BAD_DESC
    assert run.status[1]["error"] == 0
    assert np.array_equal(good.unpack_results(run.result_words), ref)


def test_truncated_activation_stream_sets_error_without_hanging():
    h = get_harness(DEFAULT)
    good, ref = _one_invocation(1)
    short = _set_last(good.act_words, L.act_beat_layout(DEFAULT), len(good.act_words) // 2)
    streams = _concat([good, good], {(0, "act_words"): short})
    run = h.run(*streams, n_results=2 * good.n_results)
    assert not run.timeout
    assert run.status[0]["error"] & L.ErrorFlag.ACT_SHORT
    assert run.status[1]["error"] == 0
    # the second layer's results are the last n_results beats and exact
    n0 = len(run.result_words) - good.n_results
    assert np.array_equal(good.unpack_results(run.result_words[n0:]), ref)


def test_overlong_weight_stream_sets_error_and_is_drained():
    h = get_harness(DEFAULT)
    good, ref = _one_invocation(2)
    extra = np.concatenate([good.weight_words, good.weight_words[:5]])
    extra = _set_last(extra, L.weight_beat_layout(DEFAULT), len(extra) - 1)
    streams = _concat([good, good], {(0, "weight_words"): extra})
    run = h.run(*streams, n_results=2 * good.n_results)
    assert not run.timeout
    assert run.status[0]["error"] == L.ErrorFlag.WEIGHT_LONG
    assert run.status[1]["error"] == 0
    # both layers computed (the over-long tail is ignored)
    first = good.unpack_results(run.result_words[:good.n_results])
    second = good.unpack_results(run.result_words[good.n_results:])
    assert np.array_equal(first, ref) and np.array_equal(second, ref)


def test_bad_input_rejected_before_hardware():
    x = np.zeros((1, 4, 5, 5), dtype=np.int64)
    w = np.zeros((4, 4, 3, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="groups"):
        conv2d(x, w, groups=3, backend="rtl")
    with pytest.raises((TypeError, ValueError), match="input"):
        conv2d(x.astype(np.float32), w, backend="rtl")
    with pytest.raises(ValueError, match="input"):
        conv2d(x + 300, w, backend="rtl")
