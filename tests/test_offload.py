"""Offload of PyTorch models (systolic_conv.offload): BatchNorm folding, the
digits CNN on the golden and rtl backends, calibration (given or the first
batch) and its range warning, and
argument checks before any hardware call."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import torch
import sklearn  # noqa: F401  (the model extra)
from torch import nn  # noqa: E402

import systolic_conv  # noqa: E402
from systolic_conv.torch_offload import OffloadedConv2d, fold_batchnorm, offload  # noqa: E402
from systolic_conv.quant import quantized_conv2d  # noqa: E402


# --------------------------------------------------------------------------- import

def test_import_systolic_conv_does_not_import_torch():
    code = ("import sys, systolic_conv; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert callable(systolic_conv.offload) and callable(systolic_conv.fold_batchnorm)")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


def test_package_offload_is_the_function():
    """``systolic_conv.offload`` is a function whatever was imported before; the
    module is ``systolic_conv.torch_offload``."""
    import types
    import systolic_conv.torch_offload as mod
    assert isinstance(systolic_conv.offload, types.FunctionType)
    conv = nn.Conv2d(2, 3, 3)
    x = torch.randn(2, 2, 5, 5)
    om = systolic_conv.offload(conv, calibration=x)
    assert isinstance(om, mod.OffloadedModel)
    assert om(x).shape == (2, 3, 3, 3)


# --------------------------------------------------------------------------- BatchNorm folding

def _bn_model(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Sequential(nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3, bias=False),
                      nn.BatchNorm2d(6, affine=False)),
        nn.Conv2d(6, 4, 1), nn.BatchNorm2d(4, eps=1e-3))
    for bn in m.modules():      # non-trivial running statistics and affine parameters
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.2, 3)
            if bn.affine:
                bn.weight.data.uniform_(0.5, 2)
                bn.bias.data.uniform_(-1, 1)
    return m


def test_fold_batchnorm_equals_eval_model():
    m = _bn_model()
    m.train()
    ref_state = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(4, 3, 9, 7)
    folded = fold_batchnorm(m)
    # the user's model is untouched (modules, parameters, training flag)
    assert m.training and sum(isinstance(b, nn.BatchNorm2d) for b in m.modules()) == 3
    assert all(torch.equal(v, ref_state[k]) for k, v in m.state_dict().items())
    assert not any(isinstance(b, nn.BatchNorm2d) for b in folded.modules())
    assert sum(isinstance(b, nn.Identity) for b in folded.modules()) == 3
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(folded(x), m(x), rtol=1e-5, atol=1e-5)
    # the same weights as torch's own fusion helper
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    fused = fuse_conv_bn_eval(m[0], m[1])
    torch.testing.assert_close(folded[0].weight, fused.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(folded[0].bias, fused.bias, rtol=1e-6, atol=1e-7)
    assert folded[3][0].bias is not None   # a conv without bias gains one


def test_fold_batchnorm_explicit_pairs_and_errors():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 5, 3)
            self.bn = nn.BatchNorm2d(5)
            self.other = nn.BatchNorm2d(4)
            self.stat_free = nn.BatchNorm2d(5, track_running_stats=False)

        def forward(self, x):
            return self.bn(self.conv(x))

    net = Net()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(2, 2, 6, 6)
    assert fold_batchnorm(net).bn.__class__ is nn.BatchNorm2d        # nothing auto-detected
    folded = fold_batchnorm(net, pairs=[("conv", "bn")])
    assert isinstance(folded.bn, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    inplace = fold_batchnorm(net, pairs=[("conv", "bn")], inplace=True)
    assert inplace is net and isinstance(net.bn, nn.Identity)
    net = Net()
    with pytest.raises(ValueError, match="'other' has 4 features but 'conv' has 5 output"):
        fold_batchnorm(net, pairs=[("conv", "other")])
    with pytest.raises(ValueError, match="no running statistics"):
        fold_batchnorm(net, pairs=[("conv", "stat_free")])
    with pytest.raises(TypeError, match="'bn' is a BatchNorm2d, not an nn.Conv2d"):
        fold_batchnorm(net, pairs=[("bn", "bn")])
    with pytest.raises(ValueError, match="more than one pair"):
        fold_batchnorm(net, pairs=[("conv", "bn"), ("conv", "bn")])


# --------------------------------------------------------------------------- the digits CNN

@pytest.fixture(scope="module")
def digits():
    from systolic_conv.models import digits as D
    x_tr, y_tr, x_te, y_te = D.load_data()
    model = D.pretrained()
    return D, model, x_tr, y_tr, x_te, y_te


def test_digits_model_shape(digits):
    D, model, x_tr, y_tr, x_te, y_te = digits
    assert (len(y_tr), len(y_te)) == (1347, 450)
    assert x_te.shape[1:] == (1, 16, 16)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert any(m.groups == m.in_channels > 1 for m in convs.values())       # depthwise
    assert any(max(m.dilation) > 1 for m in convs.values())                 # dilated
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # folded
    assert isinstance(model.fc, nn.Linear)


def test_digits_golden_offload_accuracy(digits):
    D, model, x_tr, y_tr, x_te, y_te = digits
    float_acc = D.accuracy(model, x_te, y_te)
    assert float_acc >= 0.95
    om = offload(model, backend="golden", calibration=x_tr[:256])
    assert om.model is not model and all(type(m) is not OffloadedConv2d for m in model.modules())
    acc = D.accuracy(om, x_te, y_te)
    assert abs(acc - float_acc) <= 0.02, (acc, float_acc)
    stats = om.stats()
    assert [s.name for s in stats] == ["conv1", "dw", "pw", "dil", "down"]
    for s, (n, conv) in zip(stats, [(n, m) for n, m in model.named_modules()
                                    if isinstance(m, nn.Conv2d)]):
        assert s.images == 450 and s.calls == 1
        h = s.in_shape[1]
        ho = s.out_shape[1]
        assert s.macs == 450 * conv.out_channels * ho * ho * (
            conv.in_channels // conv.groups) * conv.kernel_size[0] * conv.kernel_size[1]
        assert h >= ho
        assert s.cycles is None and s.invocations is None and s.utilization is None
        assert 0 < s.max_abs_error < 1 and 25 < s.sqnr_db < 80
        assert s.clipped < 0.01 * s.elements
    text = om.report(file=open(os.devnull, "w"))
    for name in ("conv1", "dw", "pw", "dil", "down", "total", "SQNR", "cycles/img"):
        assert name in text


@pytest.mark.rtl
def test_digits_rtl_offload_bit_identical_to_golden(digits):
    D, model, x_tr, y_tr, x_te, y_te = digits
    x = x_te[:6]
    gold = offload(model, backend="golden", calibration=x_tr[:256])
    rtl = offload(model, backend="rtl", calibration=x_tr[:256])
    g = gold(x)
    r = rtl(x)
    assert torch.equal(g, r)                 # identical logits, bit for bit
    for name in gold.layers:
        assert np.array_equal(gold.layers[name].last_acc, rtl.layers[name].last_acc)
    hw = rtl.hw
    for sg, sr in zip(gold.stats(), rtl.stats()):
        assert sr.macs == sg.macs and sr.images == 6
        assert sr.invocations >= 6 and sr.rows == hw.rows and sr.cols == hw.cols
        assert sr.cycles >= sr.macs / (hw.rows * hw.cols)            # no more than R*C MAC/cycle
        assert 0 < sr.utilization <= 1
        assert sr.max_abs_error == sg.max_abs_error and sr.sqnr_db == sg.sqnr_db
    t = rtl.totals()
    assert t["cycles"] == pytest.approx(sum(s.cycles for s in rtl.stats()) / 6)
    assert 0 < t["utilization"] <= 1
    text = rtl.report(file=open(os.devnull, "w"))
    assert "8x8 array" in text and "%" in text
    rtl.reset_stats()
    assert all(s.calls == 0 and s.cycles is None for s in rtl.stats())


# --------------------------------------------------------------------------- exactness of one layer

@pytest.mark.parametrize("kw", [dict(padding=1, stride=(1, 2), groups=2, padding_mode="reflect"),
                                dict(padding="same", dilation=2, padding_mode="circular"),
                                dict(padding=2, dilation=(2, 1), bias=False)])
def test_single_layer_offload_equals_quantized_conv2d(kw):
    """Calibrated on its own input, an offloaded layer is quantized_conv2d exactly,
    and its recorded error equals that report's (within the analytic bound)."""
    bias = kw.pop("bias", True)
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, bias=bias, **kw).double()
    x = torch.randn(3, 4, 8, 9, dtype=torch.float64)
    om = offload(conv, calibration=x)
    y = om(x)
    ref, rep = quantized_conv2d(x.numpy(), conv.weight.detach().numpy(),
                                None if conv.bias is None else conv.bias.detach().numpy(),
                                stride=conv.stride, padding=conv.padding,
                                dilation=conv.dilation, groups=conv.groups,
                                padding_mode=conv.padding_mode)
    np.testing.assert_array_equal(y.numpy(), ref)
    assert rep.within_bound
    s = om.stats()[0]
    assert s.max_abs_error == pytest.approx(rep.max_error, rel=1e-9)
    assert s.sqnr_db == pytest.approx(rep.sqnr_db, rel=1e-9)
    assert s.clipped == 0
    # unbatched input: same values as the batched call
    np.testing.assert_array_equal(om(x[1]).numpy(), y[1].numpy())


def test_static_scale_saturates():
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    om = offload(conv, calibration=torch.ones(1, 1, 2, 2))
    y = om(torch.full((1, 1, 2, 2), 3.0))
    torch.testing.assert_close(y, torch.ones(1, 1, 2, 2))     # clipped to the calibrated range
    assert om.stats()[0].clipped == 4 and om.stats()[0].max_abs_error == pytest.approx(2.0)
    assert list(om.layers) == ["Conv2d"] and type(om.restore()) is nn.Conv2d


# --------------------------------------------------------------------------- restore

def test_inplace_offload_and_restore():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(4, 3, 3, stride=2))
    model.train()
    convs = [model[0], model[2]]
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        ref = model(x)
    om = offload(model, calibration=x, inplace=True)
    assert isinstance(model[0], OffloadedConv2d) and not model.training
    y = om(x)
    assert not torch.equal(y, ref) and torch.allclose(y, ref, atol=0.05)
    back = om.restore()
    assert back is model and model.training and [model[0], model[2]] == convs
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    with pytest.raises(RuntimeError, match="restored"):
        om(x)


def test_shared_conv_is_one_layer():
    conv = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), conv)
    x = torch.randn(1, 3, 5, 5)
    om = offload(model, calibration=x)
    assert list(om.layers) == ["0"]
    assert isinstance(om.model[0], OffloadedConv2d) and om.model[0] is om.model[2]
    om(x)
    assert om.stats()[0].calls == 2


# --------------------------------------------------------------------------- bad input

def _no_hardware(monkeypatch):
    import systolic_conv.driver as drv

    def boom(*a, **k):
        raise AssertionError("hardware was called")
    monkeypatch.setattr(drv, "run_rtl", boom)


def test_bad_arguments_rejected_before_hardware(monkeypatch):
    _no_hardware(monkeypatch)
    from systolic_conv.hw.config import HardwareConfig
    conv = nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 6, 6)
    with pytest.raises(ValueError, match=r"backend='fpga' must be one of 'golden', 'rtl'"):
        offload(conv, backend="fpga", calibration=x)
    with pytest.raises(ValueError, match=r"data_width=12 must be one of \(4, 8, 16\)"):
        offload(conv, calibration=x, data_width=12)
    with pytest.raises(TypeError, match=r"^hw must be a HardwareConfig or None, not dict$"):
        offload(conv, hw={"rows": 4}, calibration=x)
    with pytest.raises(ValueError, match="hw.data_width=8 differs from data_width=4"):
        offload(conv, backend="rtl", hw=HardwareConfig(), calibration=x, data_width=4)
    with pytest.raises(TypeError, match="takes no options seed"):
        offload(conv, calibration=x, seed=1)
    with pytest.raises(ValueError, match="no nn.Conv2d layer"):
        offload(nn.Linear(3, 3), calibration=torch.randn(2, 3))
    with pytest.raises(ValueError, match="empty"):
        offload(conv, calibration=x[:0])

    class MyConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2
    with pytest.raises(TypeError, match="MyConv overrides nn.Conv2d's forward"):
        offload(nn.Sequential(MyConv(3, 3, 1)), calibration=x)
    with pytest.raises(ValueError, match="not initialized"):
        offload(nn.LazyConv2d(4, 3), calibration=x)

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.a(x) if x.shape[0] > 1 else self.b(x)
    with pytest.raises(ValueError, match="layer 'b' was not reached by the calibration"):
        offload(Branchy(), calibration=x)
    with pytest.raises(ValueError, match="'a': calibration input holds inf or nan"):
        offload(Branchy(), calibration=torch.full((2, 3, 4, 4), math.nan))

    om = offload(conv, backend="rtl", calibration=x)
    with pytest.raises(ValueError, match=r"layer 'Conv2d': weight shape \(4, 3, 3, 3\) with groups=1 "
                                         r"expects in_channels=3, but the input has in_channels=5"):
        om(torch.randn(1, 5, 6, 6))
    with pytest.raises(ValueError, match="kernel .* larger than the padded input"):
        om(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="input holds inf or nan"):
        om(torch.full((1, 3, 6, 6), math.inf))
    with pytest.raises(TypeError, match="floating-point tensor"):
        om(torch.ones(1, 3, 6, 6, dtype=torch.int32))
    with pytest.raises(ValueError, match="already offloaded"):
        offload(om.model, calibration=x)


def test_bias_that_does_not_fit_int32_is_rejected():
    conv = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1e-6)
        conv.bias.fill_(1e6)
    with pytest.raises(ValueError, match="bias does not fit int32"):
        offload(conv, calibration=torch.full((1, 1, 2, 2), 1e-3))


# --------------------------------------------------------------------------- calibration

def test_without_calibration_the_first_batch_calibrates():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))
    x = torch.randn(3, 2, 6, 6)
    lazy = offload(model)
    assert lazy.calibrated_on is None
    with pytest.raises(RuntimeError, match="layer '0' is not calibrated"):
        lazy.model(x)                         # the wrappers alone do not calibrate
    y = lazy(x)
    assert lazy.calibrated_on == "the first batch (3 images)"
    eager = offload(model, calibration=x)
    assert torch.equal(y, eager(x))           # same scales as calibrating on that batch
    assert [w.x_scale for w in lazy.layers.values()] == [w.x_scale for w in eager.layers.values()]
    assert "calibrated on the first batch (3 images)" in lazy.report(file=open(os.devnull, "w"))


def test_inputs_beyond_calibration_warn_once_and_show_in_report():
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    om = offload(conv, calibration=torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4))
    live = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    live[0, 0, 0, :2] = 1000.0                # 2 of 16 values beyond +-1
    with pytest.warns(sc_warning(), match=r"layer 'Conv2d': 2 of 16 input values \(12.5 %\) "
                                          r"exceed the calibrated range \+-1 \(max \|x\| = 1000\)"):
        om(live)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # the second clipping call does not warn again
        om(live)
    text = om.report(file=open(os.devnull, "w"))
    assert om.stats()[0].clipped == 4 and om.stats()[0].elements == 32
    assert ("WARNING: inputs beyond the calibrated range were clipped in 1 layer (most: "
            "'Conv2d', 12.5 % of its inputs)") in text
    om.reset_stats()
    with pytest.warns(sc_warning()):
        om(live)


def sc_warning():
    from systolic_conv.torch_offload import CalibrationRangeWarning
    return CalibrationRangeWarning


def test_failed_recalibration_keeps_the_scales():
    conv = nn.Conv2d(2, 2, 3)
    x = torch.randn(1, 2, 5, 5)
    om = offload(conv, calibration=x)
    before = om.layers["Conv2d"].x_scale
    with pytest.raises(ValueError, match="calibration input holds inf or nan"):
        om.calibrate(torch.full((1, 2, 5, 5), math.inf))
    assert om.layers["Conv2d"].x_scale == before and om(x).shape == (1, 2, 3, 3)
