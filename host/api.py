"""Functional conv2d API with PyTorch's argument names and interchangeable backends."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .contract import (REQUANT_MODES, TFLITE_M_MAX, Requant, check_data_width, conv_geometry,
                       int_range, requantize)
from .golden import conv2d_int
from .progress import resolve_progress

__all__ = ["conv2d", "GoldenStats", "BACKENDS", "check_backend", "check_hw", "as_requant"]

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


def check_backend(backend):
    """Return ``backend`` if it is one of :data:`BACKENDS`, else raise ``ValueError``."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} must be one of "
                         + ", ".join(repr(b) for b in BACKENDS))
    return backend


def check_hw(hw, data_width=None):
    """Validate ``hw`` and ``data_width`` together; return ``(hw, data_width)``.

    Parameters
    ----------
    hw : HardwareConfig or None
    data_width : int or None
        4, 8 or 16; None takes ``hw.data_width`` (8 without ``hw``).

    Raises
    ------
    TypeError
        ``hw`` is not a ``HardwareConfig`` (or None), ``data_width`` not an int.
    ValueError
        ``data_width`` not in (4, 8, 16), or different from ``hw.data_width``.
    """
    from .hw.config import HardwareConfig
    if hw is not None and not isinstance(hw, HardwareConfig):
        raise TypeError(f"hw must be a HardwareConfig or None, not {type(hw).__name__}")
    if data_width is None:
        data_width = hw.data_width if hw is not None else 8
    data_width = check_data_width(data_width)
    if hw is not None and hw.data_width != data_width:
        raise ValueError(f"hw.data_width={hw.data_width} differs from data_width={data_width}")
    return hw, data_width


def as_requant(requant):
    """``requant`` as a :class:`Requant` (or None).

    Parameters
    ----------
    requant : Requant, str or None
        A :class:`Requant`, or a mode name (``'tflite'``, ``'half_up'``): that
        mode with a unit multiplier and 8-bit outputs, i.e. the accumulators
        saturated to ``[-128, 127]`` through that mode's arithmetic (``tflite``:
        ``M = 2**31 - 1, S = 0``, exact on every accumulator the clamp keeps;
        ``half_up``: ``M = 1, S = 0``). Pass a :class:`Requant` (or
        :func:`systolic_conv.make_requant`) to scale.

    Raises
    ------
    TypeError, ValueError
        Any other type, or an unknown mode name.
    """
    if requant is None or isinstance(requant, Requant):
        return requant
    if isinstance(requant, str):
        if requant == "tflite":
            return Requant(mode="tflite", multiplier=TFLITE_M_MAX, shift=0)
        if requant == "half_up":
            return Requant(mode="half_up", multiplier=1, shift=0)
        raise ValueError(f"requant={requant!r} must be a Requant or one of "
                         + ", ".join(repr(m) for m in REQUANT_MODES))
    raise TypeError(f"requant must be a Requant, a mode name or None, not "
                    f"{type(requant).__name__}")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", backend="golden", hw=None, requant=None,
           return_stats=False, pad_value=0, data_width=None, progress="auto",
           **backend_options):
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
        ``golden``: the numpy model; ``rtl``: the Verilated RTL (compiled batch
        harness; never falls back to golden).
    hw : HardwareConfig, optional
        Accelerator configuration, checked on both backends. ``rtl`` runs on it
        (default ``HardwareConfig(data_width=data_width)``). ``golden`` computes
        what that hardware returns, which is the same for every configuration
        of a data width (the planner splits what does not fit), so there ``hw``
        only fixes ``data_width``.
    requant : Requant or {'tflite', 'half_up'}, optional
        Requantize the accumulators to ``requant.out_width``-bit outputs; a mode
        name saturates them to 8 bits with a unit multiplier (:func:`as_requant`).
    return_stats : bool
        Also return statistics (``GoldenStats`` for golden, the driver's
        ``RtlStats`` for rtl: cycles, utilization, stalls, traffic).
    pad_value : int
        Value of zero-mode padding (the input zero point).
    data_width : int, optional
        Operand width in bits: 4, 8 or 16. Default ``hw.data_width``, or 8.
    progress : {'auto', True, False} or callable
        RTL runs: a progress bar over the hardware invocations on a terminal
        (see :mod:`systolic_conv.progress`); golden runs in one step and shows none.
    **backend_options
        Extra keyword arguments of the rtl driver (``seed``, ``idle``, ``stall``);
        rtl backend only.

    Returns
    -------
    numpy.ndarray of int64, or (array, stats) with ``return_stats``
        Accumulators, or requantized outputs when ``requant`` is given.
    """
    check_backend(backend)
    hw, data_width = check_hw(hw, data_width)
    requant = as_requant(requant)
    if backend == "golden":
        if backend_options:
            raise TypeError(f"backend='golden' takes no options "
                            f"{', '.join(sorted(backend_options))}")
        resolve_progress(progress, "")          # validates the argument
        return _golden(x, weight, bias, dict(stride=stride, padding=padding, dilation=dilation,
                                             groups=groups, padding_mode=padding_mode),
                       requant, return_stats, pad_value, data_width)

    try:
        from .driver import run_rtl
    except ImportError as exc:
        raise RuntimeError(f"backend='rtl' is unavailable: cannot import "
                           f"systolic_conv.driver.run_rtl ({exc})") from exc
    geometry = conv_geometry(np.shape(x), np.shape(weight),
                             None if bias is None else np.shape(bias),
                             stride, padding, dilation, groups, padding_mode)
    if hw is None:
        from .hw.config import HardwareConfig
        hw = HardwareConfig(data_width=data_width)
    ok, why = _rtl_requant_supported(requant, hw)
    if not ok:
        raise ValueError(why)
    callback, close = resolve_progress(progress, f"rtl {hw.rows}x{hw.cols}", unit="inv")
    try:
        out, stats = run_rtl(x, weight, bias, geometry, hw=hw, requant=requant,
                             pad_value=pad_value, progress=callback, **backend_options)
    finally:
        close()
    return (out, stats) if return_stats else out


def _golden(x, weight, bias, geo, requant, return_stats, pad_value, data_width):
    t0 = time.perf_counter()
    out = conv2d_int(x, weight, bias, **geo, pad_value=pad_value, data_width=data_width)
    if requant is not None:
        out = requantize(out, requant, channel_axis=1 if out.ndim == 4 else 0)
    if not return_stats:
        return out
    seconds = time.perf_counter() - t0
    geometry = conv_geometry(np.shape(x), np.shape(weight),
                             None if bias is None else np.shape(bias), **geo)
    return out, GoldenStats(macs=geometry.macs, seconds=seconds)


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
