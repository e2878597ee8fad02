"""``Conv2d``: the nn_conv2d module, with its arguments and initialisation, whose
forward pass runs through the integer data path on a chosen backend."""

import math

import numpy as np

from .contract import conv_geometry, compute_padding, normalize_pair
from .quant import quantized_conv2d, quantize_symmetric

__all__ = ["Conv2d"]


class Conv2d:
    """A 2-D convolution layer with ``torch.nn.Conv2d``'s arguments.

    Weights ``(out_channels, in_channels // groups, kh, kw)`` and bias are drawn from
    ``U(-sqrt(k), sqrt(k))``, ``k = groups / (in_channels * kh * kw)``, as the
    reference page says. :meth:`forward` quantizes (symmetric per-tensor
    activations, per-output-channel weights, int32 bias), runs the integer conv on
    ``backend`` and dequantizes; :attr:`last_report` holds the error bound and SQNR.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", *, seed=None,
                 data_width=8):
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("groups", groups)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if in_channels % groups:
            raise ValueError(f"in_channels={in_channels} must be divisible by groups={groups}")
        if out_channels % groups:
            raise ValueError(f"out_channels={out_channels} must be divisible by groups={groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = normalize_pair(kernel_size, "kernel_size")
        self.stride = normalize_pair(stride, "stride")
        self.dilation = normalize_pair(dilation, "dilation")
        self.padding = padding if isinstance(padding, str) else normalize_pair(padding, "padding")
        self.padding_mode = padding_mode
        self.data_width = data_width
        # validate the whole configuration once, on an input large enough for any padding
        kh, kw = self.kernel_size
        pads = compute_padding(self.padding, self.kernel_size, self.dilation, self.stride)
        probe = (1, in_channels, self.dilation[0] * (kh - 1) + 2 + 2 * max(pads[:2]),
                 self.dilation[1] * (kw - 1) + 2 + 2 * max(pads[2:]))
        conv_geometry(probe, (out_channels, in_channels // groups, kh, kw),
                      (out_channels,) if bias else None, stride=self.stride,
                      padding=self.padding, dilation=self.dilation, groups=groups,
                      padding_mode=padding_mode)
        rng = np.random.default_rng(seed)
        bound = math.sqrt(groups / (in_channels * kh * kw))
        self.weight = rng.uniform(-bound, bound, (out_channels, in_channels // groups, kh, kw))
        self.bias = rng.uniform(-bound, bound, out_channels) if bias else None
        self.last_report = None
        self.last_stats = None

    def _geo(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.padding_mode)

    def integer_weights(self, x_scale=1.0):
        """Per-output-channel int weights and the int32 bias at scale ``x_scale * w_scale``."""
        wq, sw = quantize_symmetric(self.weight, self.data_width, axis=0)
        bq = None
        if self.bias is not None:
            bq = np.rint(self.bias / (x_scale * sw)).astype(np.int64)
        return wq, bq

    def forward_int(self, xq, backend="golden", hw=None, requant=None, return_stats=False,
                    progress=None, x_scale=1.0, **kw):
        """The integer conv of integer input ``xq`` with :meth:`integer_weights`."""
        from .api import conv2d
        wq, bq = self.integer_weights(x_scale)
        if backend == "rtl" and progress is not None:
            kw["progress"] = progress
        return conv2d(xq, wq, bq, backend=backend, hw=hw, requant=requant,
                      return_stats=return_stats, data_width=self.data_width, **self._geo(), **kw)

    def forward(self, x, backend="golden", hw=None):
        """Float forward through the quantized integer path on ``backend``."""
        from .api import conv2d
        stats = []

        def int_conv(xq, wq, bq, data_width, **geo):
            if backend == "golden":
                return conv2d(xq, wq, bq, data_width=data_width, **geo)
            out, st = conv2d(xq, wq, bq, backend=backend, hw=hw, return_stats=True,
                             data_width=data_width, **geo)
            stats.append(st)
            return out

        y, rep = quantized_conv2d(x, self.weight, self.bias, data_width=self.data_width,
                                  int_conv=int_conv, **self._geo())
        self.last_report = rep
        self.last_stats = stats[0] if stats else None
        return y

    __call__ = forward

    def __repr__(self):
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, "
                f"padding_mode={self.padding_mode!r})")
