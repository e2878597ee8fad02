"""systolic-conv: a 2-D convolution accelerator and its bit-exact host library.

The import is light: numpy only. ``Conv2d``, ``offload`` and ``fold_batchnorm``
import torch on first use, ``offload_tflite`` LiteRT; the hardware generator and the simulators are
imported only by the code that needs them.

Public API
----------
conv2d          integer ``nn.functional.conv2d`` on a backend (``golden`` or ``rtl``)
Conv2d          ``torch.nn.Conv2d`` computed by the quantized integer path
offload         a PyTorch model with its ``nn.Conv2d`` layers on a backend
offload_tflite  an int8 TFLite model's convolutions on a backend, checked against LiteRT
estimate        cycles, utilization and traffic of a layer (analytic, exact)
HardwareConfig  the accelerator's elaboration parameters
Requant         requantization parameters (``tflite`` / ``half_up``)
"""

from .api import GoldenStats, conv2d
from .contract import (DATA_WIDTHS, ConvGeometry, Requant, compute_padding,
                       conv_geometry, default_acc_width, requantize)
from .golden import conv2d_float, conv2d_int, pad_input
from .hw.config import HardwareConfig
from .quant import (QuantReport, make_requant, quantize_multiplier,
                    quantize_multiplier_half_up, quantize_symmetric, quantized_conv2d)

__all__ = [
    "conv2d", "Conv2d", "offload", "offload_tflite", "fold_batchnorm", "estimate", "Estimate",
    "HardwareConfig",
    "GoldenStats", "conv2d_int", "conv2d_float", "pad_input",
    "Requant", "requantize", "conv_geometry", "ConvGeometry", "compute_padding",
    "default_acc_width", "DATA_WIDTHS",
    "quantized_conv2d", "QuantReport", "quantize_symmetric", "quantize_multiplier",
    "quantize_multiplier_half_up", "make_requant", "__version__",
]


def _version():
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("systolic-conv")
    except (ImportError, PackageNotFoundError):
        return "0+unknown"


__version__ = _version()


def offload(torch_model, backend="golden", hw=None, calibration=None, data_width=None,
            **kwargs):
    """Run a PyTorch model with its ``nn.Conv2d`` layers on the accelerator path.

    Returns an ``OffloadedModel``; without ``calibration`` it calibrates on the
    first batch it is called with. Imports torch on the first call; the
    parameters are those of :func:`systolic_conv.torch_offload.offload`.
    """
    from .torch_offload import offload as _offload
    return _offload(torch_model, backend=backend, hw=hw, calibration=calibration,
                    data_width=data_width, **kwargs)


def fold_batchnorm(model, pairs=None, inplace=False):
    """Fold ``BatchNorm2d`` layers into the preceding ``nn.Conv2d`` layers.

    Imports torch on the first call; see
    :func:`systolic_conv.torch_offload.fold_batchnorm`.
    """
    from .torch_offload import fold_batchnorm as _fold
    return _fold(model, pairs=pairs, inplace=inplace)


def offload_tflite(path, backend="golden", hw=None, **kwargs):
    """Run an int8 TFLite model's convolutions on a backend, each checked against LiteRT.

    Imports :mod:`systolic_conv.tflite` (and LiteRT) on the first call; see
    :func:`systolic_conv.tflite.offload_tflite` for the parameters.
    """
    from .tflite import offload_tflite as _offload_tflite
    return _offload_tflite(path, backend=backend, hw=hw, **kwargs)


def __getattr__(name):
    # ``Conv2d`` is a torch.nn.Module: torch is imported when it is first asked for;
    # the analytic cycle model (numpy only) is imported on first use
    if name == "Conv2d":
        from .module import Conv2d
        return Conv2d
    if name in ("estimate", "Estimate"):
        from . import cycle_model
        return getattr(cycle_model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
