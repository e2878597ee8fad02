"""``Conv2d``: a ``torch.nn.Conv2d`` whose forward pass runs through the accelerator's
integer data path (quantize, integer conv on a backend, dequantize).

Imports torch; ``import systolic_conv`` does not (``systolic_conv.Conv2d`` loads
this module on first use).
"""

from __future__ import annotations

import torch
from torch import nn

from .api import check_backend, check_hw, conv2d
from .quant import quantized_conv2d

__all__ = ["Conv2d"]


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` computed by the accelerator's integer data path.

    The constructor, parameters (``weight``, ``bias``), initialisation and
    ``state_dict`` are ``nn.Conv2d``'s, so a trained float layer's state dict
    loads as it is and the module drops into ``nn.Sequential``. :meth:`forward`
    quantizes the input (symmetric, per tensor, scale from this input's
    ``max|x|``) and the weights (symmetric, per output channel) to
    ``data_width`` bits and the bias to int32, runs the integer convolution on
    ``backend`` and dequantizes. :attr:`last_report` holds the error of the
    call against the float64 layer and its analytic per-element bound;
    :attr:`last_stats` the backend's statistics (cycles on ``rtl``).

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, \
padding_mode, device, dtype
        As in ``torch.nn.Conv2d``.
    backend : {'golden', 'rtl'}
        Where the integer convolution runs (an attribute; may be changed later).
    hw : HardwareConfig, optional
        Accelerator configuration (an attribute; see :func:`systolic_conv.conv2d`).
    data_width : int, optional
        4, 8 or 16; default ``hw.data_width``, or 8.
    progress : {'auto', True, False} or callable
        Progress bar of ``rtl`` runs (see :mod:`systolic_conv.progress`).

    Attributes
    ----------
    last_report : QuantReport or None
        ``max_error``, ``max_bound``, ``sqnr_db``, scales, per-element ``error``
        and ``bound`` of the last call.
    last_stats : GoldenStats or RtlStats or None

    Notes
    -----
    The output has the input's dtype and device (the arithmetic is done on the
    CPU, in integers and float64). It is computed outside autograd: it carries
    no gradient (inference only).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device=None,
                 dtype=None, *, backend="golden", hw=None, data_width=None, progress="auto"):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=padding, dilation=dilation, groups=groups, bias=bias,
                         padding_mode=padding_mode, device=device, dtype=dtype)
        hw, data_width = check_hw(hw, data_width)
        self._hw, self._data_width = hw, data_width
        self.backend = backend
        self.progress = progress
        self.last_report = None
        self.last_stats = None

    # -- attributes validated on assignment ---------------------------------------------
    @property
    def backend(self):
        """``'golden'`` or ``'rtl'``."""
        return self._backend

    @backend.setter
    def backend(self, value):
        self._backend = check_backend(value)

    @property
    def hw(self):
        """The ``HardwareConfig`` (or None); its data width must equal :attr:`data_width`."""
        return self._hw

    @hw.setter
    def hw(self, value):
        self._hw = check_hw(value, self._data_width)[0]

    @property
    def data_width(self):
        """Operand width in bits (4, 8 or 16)."""
        return self._data_width

    @data_width.setter
    def data_width(self, value):
        self._data_width = check_hw(self._hw, value)[1]

    # -- computation --------------------------------------------------------------------
    def _geo(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.padding_mode)

    def forward(self, input):
        """Quantize, convolve on :attr:`backend`, dequantize (see the class docstring)."""
        if not torch.is_tensor(input):
            raise TypeError(f"input must be a torch.Tensor, not {type(input).__name__}")
        if not input.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, not {input.dtype}")
        x = input.detach().to("cpu", torch.float64).numpy()
        w = self.weight.detach().to("cpu", torch.float64).numpy()
        b = None if self.bias is None else self.bias.detach().to("cpu", torch.float64).numpy()
        stats = []

        def int_conv(xq, wq, bq, data_width, **geo):
            out, st = conv2d(xq, wq, bq, backend=self.backend, hw=self.hw, return_stats=True,
                             data_width=data_width, progress=self.progress, **geo)
            stats.append(st)
            return out

        y, report = quantized_conv2d(x, w, b, data_width=self.data_width, int_conv=int_conv,
                                     **self._geo())
        self.last_report = report
        self.last_stats = stats[0] if stats else None
        return torch.from_numpy(y).to(device=input.device, dtype=input.dtype)

    def extra_repr(self):
        hw = "" if self.hw is None else f", hw={self.hw.rows}x{self.hw.cols}"
        return (f"{super().extra_repr()}, backend={self.backend!r}, "
                f"data_width={self.data_width}{hw}")
