"""ResNet-18 (systolic_conv.models.resnet18) offloaded: the model's structure and
determinism, the whole network on golden (shapes, per-layer report), its stem,
layer1 and layer2 (9 convs, incl. a stride-2 block with its 1x1 downsample) on
the rtl backend bit-identical to the whole-model golden run, and (slow) all 20
conv layers on the rtl backend bit-identical to golden."""

import os
from collections import OrderedDict

import numpy as np
import pytest

import torch
from torch import nn  # noqa: E402

import systolic_conv  # noqa: E402
from systolic_conv.models import resnet18 as R  # noqa: E402

NAMES = ["conv1",
         "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2",
         "layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0",
         "layer2.1.conv1", "layer2.1.conv2",
         "layer3.0.conv1", "layer3.0.conv2", "layer3.0.downsample.0",
         "layer3.1.conv1", "layer3.1.conv2",
         "layer4.0.conv1", "layer4.0.conv2", "layer4.0.downsample.0",
         "layer4.1.conv1", "layer4.1.conv2"]


def _out(h, k, s, p):
    return (h + 2 * p - k) // s + 1


def _expected_shapes(size):
    """``name -> ((C, H, W) in, (C, H, W) out)`` for a square input of side ``size``."""
    shapes = {}
    h1 = _out(size, 7, 2, 3)
    shapes["conv1"] = ((3, size, size), (64, h1, h1))
    h, c = _out(h1, 3, 2, 1), 64
    for i, (co, st) in enumerate(R.STAGES, 1):
        for j in range(2):
            s = st if j == 0 else 1
            ho = _out(h, 3, s, 1)
            p = f"layer{i}.{j}"
            shapes[f"{p}.conv1"] = ((c, h, h), (co, ho, ho))
            shapes[f"{p}.conv2"] = ((co, ho, ho), (co, ho, ho))
            if j == 0 and (s != 1 or c != co):
                shapes[f"{p}.downsample.0"] = ((c, h, h), (co, ho, ho))
            c, h = co, ho
    return shapes


@pytest.fixture(scope="module")
def model16():
    return R.inference_model(16, seed=0, bn_images=8)


# --------------------------------------------------------------------------- the model

def test_structure_is_resnet18():
    m = R.build_model(seed=0)
    # torchvision's resnet18 parameter count, with BatchNorm
    assert sum(p.numel() for p in m.parameters()) == 11_689_512
    convs = {n: c for n, c in m.named_modules() if isinstance(c, nn.Conv2d)}
    assert list(convs) == NAMES == R.conv_layer_names(m)
    stem = convs["conv1"]
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride,
            stem.padding) == (3, 64, (7, 7), (2, 2), (3, 3))
    mp = m.maxpool
    assert (mp.kernel_size, mp.stride, mp.padding) == (3, 2, 1)
    for n, c in convs.items():
        if "downsample" in n:
            assert c.kernel_size == (1, 1) and c.stride == (2, 2) and c.padding == (0, 0)
        elif n != "conv1":
            assert c.kernel_size == (3, 3) and c.padding == (1, 1)
            assert c.stride == ((2, 2) if n.endswith(".0.conv1") and not
                                n.startswith("layer1") else (1, 1))
    assert [getattr(m, f"layer{i}")[1].conv2.out_channels for i in range(1, 5)] == \
        [64, 128, 256, 512]
    assert m.fc.in_features == 512 and m.fc.out_features == 1000


def test_build_is_deterministic_and_folding_exact():
    a = R.build_model(seed=3)
    b = R.build_model(seed=3)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.conv1.weight, R.build_model(seed=4).conv1.weight)
    x = R.synthetic_images(6, 16, seed=5)
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.float32
    assert torch.equal(x, R.synthetic_images(6, 16, seed=5))
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 0.05
    R.calibrate_batchnorm(a, R.synthetic_images(8, 16, seed=3 + 1))   # as inference_model
    assert not a.training and float(a.layer4[1].bn2.running_var.min()) > 0
    folded = R.inference_model(16, seed=3, bn_images=8)
    assert not any(isinstance(t, nn.BatchNorm2d) for t in folded.modules())
    assert all(c.bias is not None for c in folded.modules() if isinstance(c, nn.Conv2d))
    with torch.no_grad():
        ya, yf = a(x), folded(x)
    assert ya.shape == (6, 1000)
    torch.testing.assert_close(yf, ya, rtol=1e-4, atol=1e-4)
    g = R.inference_model(16, seed=3, bn_images=8)
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in folded.state_dict().items())


# --------------------------------------------------------------------------- golden, whole model

def test_golden_offload_shapes_and_report(model16):
    x = R.synthetic_images(2, 16, seed=200)
    om = systolic_conv.offload(model16, backend="golden",
                               calibration=R.synthetic_images(4, 16, seed=100))
    y = om(x)
    with torch.no_grad():
        ref = model16(x)
    assert y.shape == ref.shape == (2, 1000)
    err = (y - ref).double()
    assert float((ref.double() ** 2).sum() / (err ** 2).sum()) > 10      # > 10 dB end to end
    stats = om.stats()
    assert [s.name for s in stats] == NAMES
    shapes = _expected_shapes(16)
    for s in stats:
        conv = model16.get_submodule(s.name)
        assert (s.in_shape, s.out_shape) == shapes[s.name], s.name
        assert s.calls == 1 and s.images == 2
        co, ho, wo = s.out_shape
        assert s.macs == 2 * co * ho * wo * conv.in_channels * conv.kernel_size[0] ** 2
        assert s.cycles is None and s.invocations is None and s.utilization is None
        # int8, static scales; at 16x16 layer3/4 see 1x1 inputs, so their scales come
        # from few values and some inputs clip
        floor = 25 if s.name in NAMES[:10] else 12
        assert floor < s.sqnr_db < 60 and 0 < s.max_abs_error < 3, (s.name, s.sqnr_db)
        assert om.layers[s.name].last_acc.shape == (2,) + s.out_shape
    t = om.totals()
    assert t["macs"] == sum(s.macs for s in stats) / 2 and t["cycles"] is None
    text = om.report(file=open(os.devnull, "w"))
    lines = text.splitlines()
    clipped = [st for st in stats if st.clipped]
    assert clipped              # live inputs beyond the calibration batch's range (see above)
    assert len(lines) == 3 + 20 + 2 + 1 + 1
    assert lines[-1].startswith(f"WARNING: inputs beyond the calibrated range were clipped in "
                                f"{len(clipped)} layer")
    for n in NAMES + ["total", "3->64 k7x7 s2,2 p3,3", "256->512 k1x1 s2,2 p0,0"]:
        assert n in text


# --------------------------------------------------------------------------- rtl, the first 9 layers

@pytest.mark.rtl
def test_stem_layer1_layer2_bit_identical_on_rtl(model16):
    """The prefix up to layer2 on rtl reproduces, bit for bit, the accumulators
    those layers produce inside the whole-model golden run."""
    x = R.synthetic_images(1, 16, seed=200)
    cal = R.synthetic_images(4, 16, seed=100)
    gold = systolic_conv.offload(model16, backend="golden", calibration=cal)
    gold(x)
    m = model16
    keep = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2"]
    prefix = nn.Sequential(OrderedDict((k, getattr(m, k)) for k in keep))   # same names
    rtl = systolic_conv.offload(prefix, backend="rtl", calibration=cal)
    rtl(x)
    assert list(rtl.layers) == NAMES[:10]
    hw = rtl.hw
    for n, lr in rtl.layers.items():
        lg = gold.layers[n]
        assert lr.x_scale == lg.x_scale and np.array_equal(lr.weight_q, lg.weight_q)
        assert np.array_equal(lr.last_acc, lg.last_acc), n
        s = lr.stats
        assert s.cycles >= s.macs / (hw.rows * hw.cols) and 0 < s.utilization <= 1
        assert s.invocations >= 1 and s.sqnr_db == lg.stats.sqnr_db


# --------------------------------------------------------------------------- rtl, all 20 layers

@pytest.mark.slow
@pytest.mark.rtl
def test_whole_resnet18_bit_identical_on_rtl():
    size = 32
    model = R.inference_model(size, seed=0)
    x = R.synthetic_images(1, size, seed=200)
    cal = R.synthetic_images(8, size, seed=100)
    gold = systolic_conv.offload(model, backend="golden", calibration=cal)
    rtl = systolic_conv.offload(model, backend="rtl", calibration=cal)
    g, r = gold(x), rtl(x)
    assert list(rtl.layers) == NAMES
    for n in NAMES:
        lg, lr = gold.layers[n], rtl.layers[n]
        assert lr.x_scale == lg.x_scale and np.array_equal(lr.weight_q, lg.weight_q)
        assert np.array_equal(lr.last_acc, lg.last_acc), n
    assert torch.equal(g, r)
    hw = rtl.hw
    shapes = _expected_shapes(size)
    for s in rtl.stats():
        assert (s.in_shape, s.out_shape) == shapes[s.name]
        assert s.cycles >= s.macs / (hw.rows * hw.cols) and 0 < s.utilization <= 1
    t = rtl.totals()
    assert t["cycles"] == sum(s.cycles for s in rtl.stats())
    assert 0 < t["utilization"] <= 1
