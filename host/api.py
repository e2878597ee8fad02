"""Functional conv2d API with PyTorch's argument names and interchangeable backends."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .contract import Requant, conv_geometry, int_range, requantize
from .golden import conv2d_int

__all__ = ["conv2d", "GoldenStats", "BACKENDS"]

#: Backends of :func:`conv2d`.
BACKENDS = ("golden", "rtl")


@dataclass(frozen=True)
class GoldenStats:
    """Statistics of a golden-backend call: MACs of the layer and wall time."""

    macs: int
    seconds: float

    def __str__(self):
        rate = self.macs / self.seconds / 1e9 if self.seconds > 0 else float("inf")
        return f"golden: {self.macs} MACs in {self.seconds * 1e3:.3f} ms ({rate:.2f} GMAC/s)"


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", backend="golden", hw=None, requant=None,
           return_stats=False, pad_value=0, data_width=8, **backend_options):
    """Integer 2-D convolution (``nn.Conv2d`` semantics) on a chosen backend.

    Parameters
    ----------
    x : numpy.ndarray of int
        ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``, signed ``data_width`` bits.
    weight : numpy.ndarray of int
        ``(C_out, C_in // groups, kh, kw)``, signed ``data_width`` bits.
    bias : numpy.ndarray of int, optional
        ``(C_out,)``, int32 range; added to the accumulators.
    stride, padding, dilation, groups, padding_mode
        As in ``torch.nn.functional.conv2d`` / ``nn.Conv2d``.
    backend : {'golden', 'rtl'}
        ``golden``: the numpy model; ``rtl``: the Verilator model through
        ``systolic_conv.driver.run_rtl`` (never falls back to golden).
    hw : object, optional
        Hardware configuration for the ``rtl`` backend.
    requant : Requant, optional
        Requantize the accumulators to ``requant.out_width``-bit outputs.
    return_stats : bool
        Also return statistics (``GoldenStats`` for golden, the driver's
        stats for rtl).
    pad_value : int
        Value of zero-mode padding (the input zero point).
    data_width : int
        Operand width in bits (golden backend; the rtl backend uses ``hw``'s).
    **backend_options
        Extra keyword arguments of ``run_rtl`` (e.g. ``seed``, ``progress``);
        rtl backend only.

    Returns
    -------
    numpy.ndarray of int64, or (array, stats) with ``return_stats``
        Accumulators, or requantized outputs when ``requant`` is given.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} must be one of "
                         + ", ".join(repr(b) for b in BACKENDS))
    if requant is not None and not isinstance(requant, Requant):
        raise TypeError(f"requant must be a Requant or None, not {type(requant).__name__}")
    if backend == "golden":
        if backend_options:
            raise TypeError(f"backend='golden' takes no options "
                            f"{', '.join(sorted(backend_options))}")
        t0 = time.perf_counter()
        out = conv2d_int(x, weight, bias, stride, padding, dilation, groups,
                         padding_mode, pad_value=pad_value, data_width=data_width)
        if requant is not None:
            out = requantize(out, requant, channel_axis=1 if out.ndim == 4 else 0)
        if not return_stats:
            return out
        seconds = time.perf_counter() - t0
        geometry = conv_geometry(np.shape(x), np.shape(weight),
                                 None if bias is None else np.shape(bias),
                                 stride, padding, dilation, groups, padding_mode)
        return out, GoldenStats(macs=geometry.macs, seconds=seconds)

    ok, why = _rtl_requant_supported(requant, hw)
    if not ok:
        raise ValueError(why)
    try:
        from .driver import run_rtl
    except ImportError as exc:
        raise RuntimeError(f"backend='rtl' is unavailable: cannot import "
                           f"systolic_conv.driver.run_rtl ({exc})") from exc
    geometry = conv_geometry(np.shape(x), np.shape(weight),
                             None if bias is None else np.shape(bias),
                             stride, padding, dilation, groups, padding_mode)
    if hw is None and data_width != 8:
        # the default accelerator at the requested operand width
        from .hw.config import HardwareConfig
        hw = HardwareConfig(data_width=data_width)
    out, stats = run_rtl(x, weight, bias, geometry, hw=hw, requant=requant,
                         pad_value=pad_value, **backend_options)
    return (out, stats) if return_stats else out


# --------------------------------------------------------------------------
# rtl backend: requantizer features the hardware has (TEMPORARY GATE).
# Left shifts (tflite shift < 0) and clamp bounds other than the output range /
# ReLU come with the hardware redesign; until a HardwareConfig says it has them
# (attributes ``requant_left_shift`` and ``requant_bounds``), the rtl backend
# refuses such a Requant instead of computing something else. The golden
# backend supports every Requant.
# --------------------------------------------------------------------------

def _rtl_requant_supported(requant, hw):
    """Whether the rtl backend of ``hw`` applies ``requant`` exactly.

    Parameters
    ----------
    requant : Requant or None
    hw : HardwareConfig or None
        None is the default configuration.

    Returns
    -------
    (bool, str)
        ``(True, "")``, or ``(False, message)`` where the message names the
        argument the hardware cannot apply.
    """
    if requant is None:
        return True, ""
    if hw is None:
        from .hw.config import DEFAULT as hw
    if requant.mode == "tflite" and requant.left_shift and \
            not getattr(hw, "requant_left_shift", False):
        return False, (f"requant shift={requant.shift!r}: a negative shift (left shift, "
                       f"effective scale >= 1) is not supported by the rtl backend's "
                       f"requantizer yet; use backend='golden'")
    lo, hi = int_range(requant.out_width)
    hw_min = max(lo, requant.out_zero_point) if requant.relu else lo
    if (requant.qmin, requant.qmax) != (hw_min, hi) and not getattr(hw, "requant_bounds", False):
        return False, (f"requant act_min={requant.act_min!r}, act_max={requant.act_max!r}: "
                       f"clamp bounds other than the output range (or relu=True) are not "
                       f"supported by the rtl backend's requantizer yet; use backend='golden'")
    return True, ""
