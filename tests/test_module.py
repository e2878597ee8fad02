"""systolic_conv.Conv2d: a torch.nn.Conv2d computed by the quantized integer path."""

import os
import subprocess
import sys

import numpy as np
import pytest

import torch
from torch import nn  # noqa: E402

import systolic_conv as sc  # noqa: E402
from systolic_conv.golden import conv2d_float  # noqa: E402

ARGS = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, padding_mode="replicate")


def test_top_level_exports_and_light_import():
    code = ("import sys, types, systolic_conv as sc; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert isinstance(sc.offload, types.FunctionType); "
            "assert sc.HardwareConfig().rows == 8 and callable(sc.estimate) and callable(sc.conv2d); "
            "assert 'torch' not in sys.modules; "
            "import torch; assert issubclass(sc.Conv2d, torch.nn.Conv2d)")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
    with pytest.raises(AttributeError, match="has no attribute 'Conv3d'"):
        sc.Conv3d


def test_import_and_command_line_leave_litert_and_the_farm_unloaded():
    heavy = ("torch", "ai_edge_litert", "tflite", "dask", "distributed", "sqlalchemy")
    code = ("import sys, types, systolic_conv as sc; "
            "assert isinstance(sc.offload_tflite, types.FunctionType); "
            "from systolic_conv.cli import build_parser; build_parser(); "
            f"loaded = [m for m in {heavy!r} if m in sys.modules]; "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


def test_state_dict_from_float_conv_and_forward_within_bound():
    torch.manual_seed(0)
    ref = nn.Conv2d(6, 4, (3, 2), **ARGS)
    m = sc.Conv2d(6, 4, (3, 2), **ARGS)
    assert isinstance(m.weight, nn.Parameter) and isinstance(m.bias, nn.Parameter)
    assert set(m.state_dict()) == {"weight", "bias"}
    m.load_state_dict(ref.state_dict())
    x = torch.randn(2, 6, 7, 5)
    y = m(x)
    assert y.dtype == torch.float32 and y.shape == ref(x).shape and not y.requires_grad
    # the oracle: the float64 convolution of the same weights (numpy, not the code under test)
    want = conv2d_float(x.double().numpy(), ref.weight.detach().double().numpy(),
                        ref.bias.detach().double().numpy(), **ARGS)
    rep = m.last_report
    err = np.abs(y.double().numpy() - want)
    assert np.all(err <= rep.bound + 1e-5), err.max()      # float32 output rounding
    assert 0 < rep.max_error and rep.sqnr_db > 30
    assert isinstance(m.last_stats, sc.GoldenStats) and m.last_stats.macs > 0
    # float64 in -> float64 out; unbatched input as in nn.Conv2d
    assert m(x.double()).dtype == torch.float64
    assert m(x[0]).shape == ref(x[0]).shape


def test_in_sequential_and_repr():
    torch.manual_seed(1)
    float_net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    net = nn.Sequential(sc.Conv2d(3, 8, 3, padding=1), nn.ReLU(), sc.Conv2d(8, 2, 1))
    net.load_state_dict(float_net.state_dict())
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        y, want = net(x), float_net(x)
    assert y.shape == (1, 2, 6, 6)
    assert torch.allclose(y, want, atol=0.05) and not torch.equal(y, want)
    assert "backend='golden', data_width=8" in repr(net[0])


def test_data_width_4_is_coarser_than_16():
    torch.manual_seed(2)
    x = torch.randn(1, 4, 6, 6)
    sq = {}
    for width in (4, 16):
        m = sc.Conv2d(4, 4, 3, data_width=width)
        torch.manual_seed(3)
        m.reset_parameters()
        m(x)
        sq[width] = m.last_report.sqnr_db
    assert sq[16] > sq[4] + 40


def test_attributes_and_arguments_are_checked():
    with pytest.raises(ValueError, match=r"^data_width=7 must be one of \(4, 8, 16\)$"):
        sc.Conv2d(2, 2, 3, data_width=7)
    with pytest.raises(ValueError, match=r"^backend='fpga' must be one of 'golden', 'rtl'$"):
        sc.Conv2d(2, 2, 3, backend="fpga")
    with pytest.raises(TypeError, match=r"^hw must be a HardwareConfig or None, not str$"):
        sc.Conv2d(2, 2, 3, hw="8x8")
    with pytest.raises(ValueError, match=r"^hw.data_width=16 differs from data_width=8$"):
        sc.Conv2d(2, 2, 3, hw=sc.HardwareConfig(data_width=16), data_width=8)
    m = sc.Conv2d(2, 2, 3, hw=sc.HardwareConfig(data_width=16))
    assert m.data_width == 16
    with pytest.raises(ValueError, match=r"^backend='cuda' must be one of"):
        m.backend = "cuda"
    with pytest.raises(ValueError, match=r"^hw.data_width=16 differs from data_width=8$"):
        m.data_width = 8
    m.hw = None
    m.data_width = 4
    assert m.data_width == 4 and m.backend == "golden"
    with pytest.raises(TypeError, match=r"^input must be a floating-point tensor, not torch.int64$"):
        m(torch.ones(1, 2, 5, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"^input must be a torch.Tensor, not ndarray$"):
        m(np.ones((1, 2, 5, 5)))
    with pytest.raises(ValueError, match="in_channels=2, but the input has in_channels=3"):
        m(torch.ones(1, 3, 5, 5))


@pytest.mark.rtl
def test_rtl_backend_equals_golden():
    torch.manual_seed(4)
    hw = sc.HardwareConfig(rows=4, cols=4, max_width=32, max_cwords=8)
    m = sc.Conv2d(6, 4, (3, 2), **ARGS, backend="rtl", hw=hw)
    x = torch.randn(2, 6, 7, 5)
    y = m(x)
    assert m.last_stats.cycles > 0 and m.last_stats.rows == 4
    m.backend = "golden"
    assert torch.equal(y, m(x))


def test_offload_refuses_a_model_already_on_the_accelerator_path():
    with pytest.raises(TypeError, match=r"^layer '0' is a systolic_conv.Conv2d, which already "
                                        r"runs on the accelerator path"):
        sc.offload(nn.Sequential(sc.Conv2d(2, 2, 3)), calibration=torch.randn(1, 2, 5, 5))
