"""systolic-conv: a 2-D convolution accelerator and its bit-exact host library.

The import is light: numpy only (no torch, no amaranth).
"""

from .api import GoldenStats, conv2d
from .contract import (DATA_WIDTHS, ConvGeometry, Requant, compute_padding,
                       conv_geometry, default_acc_width, requantize)
from .golden import conv2d_float, conv2d_int, pad_input
from .quant import (QuantReport, make_requant, quantize_multiplier,
                    quantize_multiplier_half_up, quantize_symmetric, quantized_conv2d)

__all__ = [
    "conv2d", "GoldenStats", "conv2d_int", "conv2d_float", "pad_input",
    "Requant", "requantize", "conv_geometry", "ConvGeometry", "compute_padding",
    "default_acc_width", "DATA_WIDTHS",
    "quantized_conv2d", "QuantReport", "quantize_symmetric", "quantize_multiplier",
    "quantize_multiplier_half_up", "make_requant",
]


def offload(torch_model, backend="golden", hw=None, calibration=None, data_width=8, **kwargs):
    """Run a PyTorch model with its ``nn.Conv2d`` layers on the accelerator path.

    Imports torch (and :mod:`systolic_conv.offload`) on the first call; see
    :func:`systolic_conv.offload.offload` for the parameters.
    """
    from .offload import offload as _offload
    return _offload(torch_model, backend=backend, hw=hw, calibration=calibration,
                    data_width=data_width, **kwargs)


def fold_batchnorm(model, pairs=None, inplace=False):
    """Fold ``BatchNorm2d`` layers into the preceding ``nn.Conv2d`` layers.

    Imports torch on the first call; see :func:`systolic_conv.offload.fold_batchnorm`.
    """
    from .offload import fold_batchnorm as _fold
    return _fold(model, pairs=pairs, inplace=inplace)


__all__ += ["offload", "fold_batchnorm"]

# the analytic cycle model (numpy only; plans with the planner on first use)
from .cycle_model import Estimate, estimate  # noqa: E402

__all__ += ["estimate", "Estimate"]


def offload_tflite(path, backend="golden", hw=None, **kwargs):
    """Run an int8 TFLite model's convolutions on a backend, each checked against LiteRT.

    Imports :mod:`systolic_conv.tflite` (and LiteRT) on the first call; see
    :func:`systolic_conv.tflite.offload_tflite` for the parameters.
    """
    from .tflite import offload_tflite as _offload_tflite
    return _offload_tflite(path, backend=backend, hw=hw, **kwargs)


__all__ += ["offload_tflite"]
