"""Offload the ``nn.Conv2d`` layers of a PyTorch model to the accelerator path.

:func:`offload` returns an :class:`OffloadedModel`: a copy of the model (the
user's model is left alone unless ``inplace=True``) in which every
``nn.Conv2d`` is replaced by an :class:`OffloadedConv2d` wrapper. A wrapper
runs its layer as the accelerator would:

* the input is quantized symmetrically per tensor with a **static** scale
  ``sx = max|x_cal| / qmax`` (``qmax = 2**(data_width-1) - 1``) measured by the
  float model on the calibration batches (given to :func:`offload`, or else the
  first batch the model is called with); values beyond the calibrated range
  saturate to ``+-qmax``: they are counted as *clipped*, shown in the report,
  and the first clipping call of each layer issues a
  :class:`CalibrationRangeWarning`;
* the weights are quantized symmetrically per output channel
  (``sw[co] = max|w[co]| / qmax``), the bias to int32 at ``sx * sw[co]``;
* the integer convolution runs on the backend (``golden``: the numpy model,
  ``rtl``: the Verilated RTL, cycle-accurate) with zero padding value 0;
* the int64 accumulators are dequantized, ``y = acc * sx * sw[co]``.

Everything else (ReLU, pooling, linear layers, ...) stays in torch; fold
BatchNorm into the convolutions first with :func:`fold_batchnorm`. Each wrapper
also computes the float layer in float64 on the same input
(:func:`systolic_conv.golden.conv2d_float`, ``nn.Conv2d`` semantics; numpy,
so the measurement does not depend on torch's thread pool) and accumulates
the error of its output; :meth:`OffloadedModel.report` prints per-layer MACs,
cycles, utilization, invocations and error.

This module imports torch; ``import systolic_conv`` does not import it
(the functions ``systolic_conv.offload`` and ``systolic_conv.fold_batchnorm``
load this module on their first call).
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .api import check_backend, check_hw, conv2d
from .contract import BIAS_WIDTH, conv_geometry, int_range
from .golden import conv2d_float
from .progress import resolve_progress
from .quant import quantize_symmetric

__all__ = ["offload", "fold_batchnorm", "OffloadedModel", "OffloadedConv2d", "LayerStats",
           "CalibrationRangeWarning"]


class CalibrationRangeWarning(UserWarning):
    """Live inputs of an offloaded layer exceed its calibrated range and are clipped."""


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------

def _check_conv(name, m):
    """Reject ``nn.Conv2d`` instances the wrapper cannot reproduce exactly."""
    cls = type(m)
    from .module import Conv2d
    if isinstance(m, Conv2d):
        raise TypeError(f"layer {name!r} is a systolic_conv.Conv2d, which already runs on the "
                        f"accelerator path: offload models of plain nn.Conv2d layers")
    if cls.forward is not nn.Conv2d.forward or cls._conv_forward is not nn.Conv2d._conv_forward:
        raise TypeError(f"layer {name!r}: {cls.__name__} overrides nn.Conv2d's forward; "
                        f"only plain nn.Conv2d computations can be offloaded")
    if isinstance(m.weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"layer {name!r}: {cls.__name__} is not initialized (run the lazy "
                         f"module once before offloading)")
    if not m.weight.is_floating_point():
        raise TypeError(f"layer {name!r}: weight dtype {m.weight.dtype} is not floating point")
    if not bool(torch.isfinite(m.weight).all()) or (
            m.bias is not None and not bool(torch.isfinite(m.bias).all())):
        raise ValueError(f"layer {name!r}: weight or bias holds inf or nan")


def _conv_args(conv):
    return dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                groups=conv.groups, padding_mode=conv.padding_mode)


def _images(x):
    return int(x.shape[0]) if torch.is_tensor(x) and x.dim() == 4 else 1


def _batches(calibration):
    """The calibration input as a list of batches (tensor, or a sequence of tensors)."""
    if torch.is_tensor(calibration) or isinstance(calibration, np.ndarray):
        batches = [calibration]
    elif isinstance(calibration, (list, tuple)):
        batches = list(calibration)
    else:
        raise TypeError(f"calibration must be a tensor or a list of tensors, "
                        f"not {type(calibration).__name__}")
    out = []
    for b in batches:
        if isinstance(b, np.ndarray):
            b = torch.from_numpy(b)
        if not torch.is_tensor(b):
            raise TypeError(f"calibration batches must be tensors, not {type(b).__name__}")
        if b.numel() == 0:
            raise ValueError(f"calibration batch of shape {tuple(b.shape)} is empty")
        out.append(b)
    if not out:
        raise ValueError("calibration holds no batch")
    return out


# --------------------------------------------------------------------------
# Per-layer statistics
# --------------------------------------------------------------------------

@dataclass
class LayerStats:
    """Accumulated figures of one offloaded layer over all calls since the last reset.

    Attributes
    ----------
    name : str
        Qualified module name in the model.
    description : str
        ``C_in->C_out kKHxKW sSH,SW pPAD dDH,DW gG`` (plus the padding mode if not zeros).
    in_shape, out_shape : tuple
        ``(C, H, W)`` of the last call.
    calls, images : int
        Forward calls and images (batch elements) processed.
    macs : int
        Multiply-accumulates (padded taps count), summed.
    cycles, invocations : int or None
        Accelerator cycles and invocations, summed (``rtl`` backend; None for golden).
    rows, cols : int or None
        Array size (``rtl`` backend).
    seconds : float
        Wall time of the backend calls.
    clipped, elements : int
        Input values saturated by the static activation scale, of ``elements``.
    max_abs_error : float
        Largest ``|y_hat - y|`` against the float64 layer on the same input.
    noise, signal : float
        ``sum (y_hat - y)**2`` and ``sum y**2``.
    """

    name: str
    description: str
    in_shape: tuple = ()
    out_shape: tuple = ()
    calls: int = 0
    images: int = 0
    macs: int = 0
    cycles: int = None
    invocations: int = None
    rows: int = None
    cols: int = None
    seconds: float = 0.0
    clipped: int = 0
    elements: int = 0
    max_abs_error: float = 0.0
    noise: float = 0.0
    signal: float = 0.0
    errors_tracked: bool = field(default=True, repr=False)

    @property
    def utilization(self):
        """``macs / (rows * cols * cycles)``, or None without cycles."""
        if not self.cycles:
            return None
        return self.macs / (self.rows * self.cols * self.cycles)

    @property
    def sqnr_db(self):
        """``10 log10(signal / noise)`` (inf when exact, None when not tracked)."""
        if not self.errors_tracked or not self.calls:
            return None
        if self.noise == 0:
            return math.inf
        return 10 * math.log10(self.signal / self.noise) if self.signal > 0 else -math.inf

    def per_image(self, value):
        """``value / images`` (None when ``value`` is None or no image was processed)."""
        if value is None or not self.images:
            return None
        return value / self.images


# --------------------------------------------------------------------------
# The wrapper
# --------------------------------------------------------------------------

class OffloadedConv2d(nn.Module):
    """An ``nn.Conv2d`` running through the quantized integer path on a backend.

    Built by :func:`offload`; holds the float layer as ``self.conv`` (used for
    calibration, as the error reference and by :meth:`OffloadedModel.restore`).

    Attributes
    ----------
    x_scale : float
        Static activation step (after calibration).
    w_scale : numpy.ndarray
        Per-output-channel weight steps.
    weight_q, bias_q : numpy.ndarray
        int64 weights and int32-range bias.
    x_range : float or None
        ``max|x|`` over the calibration inputs: inputs beyond it are clipped.
    stats : LayerStats
    last_acc : numpy.ndarray or None
        int64 accumulators of the last call (before dequantization).
    """

    def __init__(self, conv, name, backend, hw, data_width, track_error, backend_options,
                 progress="auto"):
        super().__init__()
        self.conv = conv
        self.name = name
        self.backend = backend
        self.hw = hw
        self.data_width = data_width
        self.track_error = track_error
        self.backend_options = dict(backend_options)
        self.progress = progress
        self.calibrating = False
        self.cal_absmax = 0.0
        self.cal_calls = 0
        self.x_range = None
        self.x_scale = None
        self.w_scale = None
        self.weight_q = None
        self.bias_q = None
        self.last_acc = None
        self.reset_stats()

    def describe(self):
        """Short description of the layer's arguments."""
        c = self.conv
        kh, kw = c.kernel_size
        pad = c.padding if isinstance(c.padding, str) else ",".join(map(str, c.padding))
        text = (f"{c.in_channels}->{c.out_channels} k{kh}x{kw} s{c.stride[0]},{c.stride[1]} "
                f"p{pad} d{c.dilation[0]},{c.dilation[1]} g{c.groups}")
        return text if c.padding_mode == "zeros" else f"{text} {c.padding_mode}"

    def reset_stats(self):
        """Zero the accumulated :class:`LayerStats` (and re-arm the clipping warning)."""
        self.stats = LayerStats(name=self.name, description=self.describe(),
                                errors_tracked=self.track_error)
        self.warned = False

    def start_calibration(self):
        """Record ``max|x|`` of the following calls (run as the float layer)."""
        self.calibrating = True
        self.cal_absmax = 0.0
        self.cal_calls = 0

    def abandon_calibration(self):
        """Stop recording without changing the scales."""
        self.calibrating = False

    def finish_calibration(self):
        """Fix the activation scale from the calibration maximum; quantize weights and bias."""
        self.apply_calibration(self.calibration_result())

    def apply_calibration(self, result):
        """Install the scales and integer weights computed by :meth:`calibration_result`."""
        self.x_range, self.x_scale, self.w_scale, self.weight_q, self.bias_q = result
        self.calibrating = False
        self.warned = False

    def calibration_result(self):
        """``(x_range, x_scale, w_scale, weight_q, bias_q)`` from the recorded maximum."""
        if not self.cal_calls:
            raise ValueError(f"layer {self.name!r} was not reached by the calibration batch")
        if not math.isfinite(self.cal_absmax):
            raise ValueError(f"layer {self.name!r}: calibration input holds inf or nan")
        qmax = int_range(self.data_width)[1]
        sx = self.cal_absmax / qmax if self.cal_absmax > 0 else 1.0
        w = self.conv.weight.detach().to("cpu", torch.float64).numpy()
        wq, sw = quantize_symmetric(w, self.data_width, axis=0)
        bq = None
        if self.conv.bias is not None:
            b = self.conv.bias.detach().to("cpu", torch.float64).numpy()
            bq_f = np.rint(b / (sx * sw))
            lo, hi = int_range(BIAS_WIDTH)
            if bq_f.min() < lo or bq_f.max() > hi:
                raise ValueError(f"layer {self.name!r}: bias does not fit int32 at scale "
                                 f"x_scale*w_scale (max |bias/scale| = "
                                 f"{np.abs(b / (sx * sw)).max():.4g})")
            bq = bq_f.astype(np.int64)
        return self.cal_absmax, sx, sw, wq, bq

    def forward(self, x):
        """Calibration: record ``max|x|`` and run the float layer. Otherwise the
        quantized path on the backend (see the module docstring)."""
        if self.calibrating:
            with torch.no_grad():
                if x.numel():
                    v = float(x.detach().abs().max())
                    if math.isnan(v) or v > self.cal_absmax:     # a nan/inf sticks
                        self.cal_absmax = v
                self.cal_calls += 1
                return self.conv(x)
        if self.x_scale is None:
            raise RuntimeError(f"layer {self.name!r} is not calibrated: call the OffloadedModel "
                               f"(it calibrates on its first batch) or pass calibration= to "
                               f"offload()")
        return self._run(x)

    def _warn_clipped(self, clipped, total, xmax):
        if clipped and not self.warned:
            self.warned = True
            warnings.warn(CalibrationRangeWarning(
                f"layer {self.name!r}: {clipped} of {total} input values "
                f"({100 * clipped / total:.3g} %) exceed the calibrated range "
                f"+-{self.x_range:.4g} (max |x| = {xmax:.4g}) and were clipped; calibrate "
                f"on representative inputs (further clipping is counted in report())"),
                stacklevel=4)

    def _run(self, x):
        c = self.conv
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise TypeError(f"layer {self.name!r}: input must be a floating-point tensor, not "
                            f"{x.dtype if torch.is_tensor(x) else type(x).__name__}")
        args = _conv_args(c)
        try:       # validate the call before any quantization or hardware work
            geom = conv_geometry(tuple(x.shape), tuple(c.weight.shape),
                                 None if c.bias is None else tuple(c.bias.shape), **args)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {self.name!r}: {exc}") from None
        xd = x.detach().to("cpu", torch.float64).numpy()
        if not np.isfinite(xd).all():
            raise ValueError(f"layer {self.name!r}: input holds inf or nan")
        qmax = int_range(self.data_width)[1]
        q = np.rint(xd / self.x_scale)
        clipped = int(np.count_nonzero(np.abs(q) > qmax))
        xq = np.clip(q, -qmax, qmax).astype(np.int64)
        self._warn_clipped(clipped, xq.size, float(np.abs(xd).max()) if xd.size else 0.0)

        t0 = time.perf_counter()
        opts = dict(self.backend_options) if self.backend == "rtl" else {}
        callback, close = resolve_progress(self.progress if self.backend == "rtl" else False,
                                           f"layer {self.name}", unit="inv")
        try:
            acc, hstats = conv2d(xq, self.weight_q, self.bias_q, backend=self.backend,
                                 hw=self.hw, return_stats=True, data_width=self.data_width,
                                 progress=callback or False, **args, **opts)
        finally:
            close()
        seconds = time.perf_counter() - t0
        self.last_acc = acc
        y = acc.astype(np.float64) * (self.x_scale * self.w_scale).reshape(-1, 1, 1)

        s = self.stats
        s.in_shape, s.out_shape = tuple(x.shape[-3:]), tuple(y.shape[-3:])
        s.calls += 1
        s.images += geom.N
        s.macs += geom.macs
        s.seconds += seconds
        s.clipped += clipped
        s.elements += xq.size
        if self.backend == "rtl":
            s.cycles = (s.cycles or 0) + hstats.cycles
            s.invocations = (s.invocations or 0) + hstats.invocations
            s.rows, s.cols = hstats.rows, hstats.cols
        if self.track_error:
            ref = conv2d_float(xd, c.weight.detach().to("cpu", torch.float64).numpy(),
                               None if c.bias is None
                               else c.bias.detach().to("cpu", torch.float64).numpy(), **args)
            err = y - ref
            if err.size:
                s.max_abs_error = max(s.max_abs_error, float(np.abs(err).max()))
            s.noise += float(np.sum(err * err))
            s.signal += float(np.sum(ref * ref))
        return torch.from_numpy(y).to(device=x.device, dtype=x.dtype)

    def extra_repr(self):
        return f"{self.name!r}, backend={self.backend!r}, data_width={self.data_width}"


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------

def _set_child(model, qualname, module):
    parent_name, _, child = qualname.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


class OffloadedModel:
    """A PyTorch model whose ``nn.Conv2d`` layers run on the accelerator path.

    Made by :func:`offload`. Call it like the model (under ``torch.no_grad``).

    Attributes
    ----------
    model : torch.nn.Module
        The model holding the :class:`OffloadedConv2d` wrappers (the user's
        model itself when ``inplace=True``, else a deep copy); when the model
        is a bare ``nn.Conv2d``, the wrapper itself (layer name ``'Conv2d'``).
    layers : dict
        Qualified name -> :class:`OffloadedConv2d`, in model order.
    backend : str
    hw : HardwareConfig or None
    data_width : int
    calibrated_on : str or None
        What the activation scales were calibrated on (None until calibrated).
    """

    def __init__(self, model, layers, sites, backend, hw, data_width, inplace, was_training):
        self.model = model
        self.layers = layers
        self._sites = sites            # every (qualified name, wrapper) position, shared ones too
        self.backend = backend
        self.hw = hw
        self.data_width = data_width
        self.inplace = inplace
        self._was_training = was_training
        self._restored = False
        self.calibrated_on = None

    def _check_live(self):
        if self._restored:
            raise RuntimeError("this OffloadedModel was restored: its convolutions are float again")

    def calibrate(self, calibration):
        """(Re)calibrate every layer's activation scale on ``calibration``.

        Parameters
        ----------
        calibration : torch.Tensor or list of torch.Tensor
            Representative model inputs; the float model runs on each batch and
            each layer's scale is ``max|input| / qmax`` over all of them.

        Raises
        ------
        ValueError
            A layer the batches do not reach, inf or nan inputs, a bias that does
            not fit int32 at the new scale; the previous scales are then kept.
        """
        self._check_live()
        batches = _batches(calibration)
        self._calibrate([((b,), {}) for b in batches])
        self.calibrated_on = (f"{len(batches)} calibration batch{'es' if len(batches) > 1 else ''}"
                              f" ({sum(_images(b) for b in batches)} images)")

    def _calibrate(self, calls):
        wrappers = list(self.layers.values())
        for w in wrappers:
            w.start_calibration()
        try:
            with torch.no_grad():
                for args, kwargs in calls:
                    self.model(*args, **kwargs)
            results = [w.calibration_result() for w in wrappers]
        finally:
            for w in wrappers:
                w.abandon_calibration()
        for w, r in zip(wrappers, results):
            w.apply_calibration(r)

    def __call__(self, x, *args, **kwargs):
        """Run the model; its convolutions go through the backend.

        Without calibration (``offload(..., calibration=None)``), the first call
        calibrates on its own batch first (the float model runs on it once).
        """
        self._check_live()
        if self.calibrated_on is None:
            self._calibrate([((x,) + args, kwargs)])
            self.calibrated_on = f"the first batch ({_images(x)} images)"
        with torch.no_grad():
            return self.model(x, *args, **kwargs)

    def stats(self):
        """The :class:`LayerStats` of every offloaded layer, in model order."""
        return [w.stats for w in self.layers.values()]

    def reset_stats(self):
        """Zero every layer's statistics."""
        for w in self.layers.values():
            w.reset_stats()

    def totals(self):
        """Per-image totals over all layers (dict).

        ``macs``, ``cycles`` and ``invocations`` per image (sums over layers of
        each layer's per-image figure; cycles/invocations None for golden),
        ``utilization`` over all layers, ``seconds`` of backend calls, and the
        lowest layer SQNR.
        """
        st = [s for s in self.stats() if s.images]
        macs = sum(s.per_image(s.macs) for s in st)
        rtl = bool(st) and all(s.cycles is not None for s in st)
        cycles = sum(s.per_image(s.cycles) for s in st) if rtl else None
        inv = sum(s.per_image(s.invocations) for s in st) if rtl else None
        util = None
        if rtl and cycles:
            util = macs / (st[0].rows * st[0].cols * cycles)
        sq = [s.sqnr_db for s in st if s.sqnr_db is not None]
        return dict(macs=macs, cycles=cycles, invocations=inv, utilization=util,
                    seconds=sum(s.seconds for s in st), min_sqnr_db=min(sq) if sq else None,
                    images=max((s.images for s in st), default=0))

    def report(self, file=None):
        """Print (to ``file``, default stdout) and return the per-layer table.

        Columns: layer name, layer arguments, input -> output shape ``(C, H, W)``,
        MACs / image, cycles / image, utilization, invocations / image, max
        ``|error|`` and SQNR of the layer output vs the float64 layer on the same
        input, and the percentage of inputs clipped by the static scale; then
        the totals per image. Figures are accumulated since the last
        :meth:`reset_stats`.
        """
        def f(v, fmt):
            return "-" if v is None else format(v, fmt)

        hdr = ["layer", "conv", "in -> out", "MACs/img", "cycles/img", "util", "inv/img",
               "max|err|", "SQNR dB", "clip %"]
        rows = []
        for s in self.stats():
            shape = (f"{'x'.join(map(str, s.in_shape))} -> {'x'.join(map(str, s.out_shape))}"
                     if s.calls else "-")
            clip = 100 * s.clipped / s.elements if s.elements else None
            rows.append([s.name, s.description, shape, f(s.per_image(s.macs), ".0f"),
                         f(s.per_image(s.cycles), ".0f"), f(s.utilization, ".1%"),
                         f(s.per_image(s.invocations), ".2g"),
                         f(s.max_abs_error if s.errors_tracked and s.calls else None, ".3g"),
                         f(s.sqnr_db, ".1f"), f(clip, ".2f")])
        t = self.totals()
        rows.append(["total", "", "", f(t["macs"], ".0f"), f(t["cycles"], ".0f"),
                     f(t["utilization"], ".1%"), f(t["invocations"], ".2g"), "",
                     f(t["min_sqnr_db"], ".1f") if t["min_sqnr_db"] is not None else "-", ""])
        widths = [max(len(r[i]) for r in rows + [hdr]) for i in range(len(hdr))]
        left = {0, 1, 2}

        def line(r):
            return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths)))

        hw = self.hw
        arr = f", {hw.rows}x{hw.cols} array" if (self.backend == "rtl" and hw is not None) else ""
        cal = f", calibrated on {self.calibrated_on}" if self.calibrated_on else ", not calibrated"
        out = [f"offload: backend {self.backend}{arr}, {self.data_width}-bit, "
               f"{t['images']} images, {t['seconds']:.2f} s in backend calls{cal}",
               line(hdr), line(["-" * w for w in widths])]
        out += [line(r) for r in rows[:-1]]
        out += [line(["-" * w for w in widths]), line(rows[-1])]
        if t["min_sqnr_db"] is not None:
            out.append("(total SQNR column: the lowest layer SQNR)")
        out += self._clip_warnings()
        text = "\n".join(out)
        print(text, file=file if file is not None else sys.stdout)
        return text

    def _clip_warnings(self):
        clipped = [s for s in self.stats() if s.clipped]
        if not clipped:
            return []
        worst = max(clipped, key=lambda s: s.clipped / s.elements)
        return [f"WARNING: inputs beyond the calibrated range were clipped in {len(clipped)} "
                f"layer{'s' if len(clipped) > 1 else ''} (most: {worst.name!r}, "
                f"{100 * worst.clipped / worst.elements:.3g} % of its inputs); calibrate on "
                f"representative inputs (OffloadedModel.calibrate)"]

    def restore(self):
        """Put the float ``nn.Conv2d`` layers back; return the model.

        With ``inplace=True`` this is the user's model, as it was (training
        flag included); otherwise the copy, now a plain float model. The
        OffloadedModel cannot be called afterwards.
        """
        if not self._restored:
            for name, w in self._sites:
                if name:
                    _set_child(self.model, name, w.conv)
                else:
                    self.model = w.conv
            self.model.train(self._was_training)
            self._restored = True
        return self.model

    def __repr__(self):
        return (f"OffloadedModel(backend={self.backend!r}, data_width={self.data_width}, "
                f"layers={list(self.layers)})")


def offload(torch_model, backend="golden", hw=None, calibration=None, data_width=None, *,
            inplace=False, track_error=True, progress="auto", **backend_options):
    """Run ``torch_model`` with each ``nn.Conv2d`` on the accelerator path.

    Parameters
    ----------
    torch_model : torch.nn.Module
        Inference model; fold BatchNorm first (:func:`fold_batchnorm`). It is
        put in eval mode.
    backend : {'golden', 'rtl'}
        Integer convolution backend (see :func:`systolic_conv.conv2d`).
    hw : HardwareConfig, optional
        Accelerator configuration, checked on both backends (``rtl`` runs on
        it); default ``HardwareConfig(data_width=data_width)``.
    calibration : torch.Tensor or list of torch.Tensor, optional
        Representative model inputs. The float model runs on them once; each
        layer's activation scale is ``max|input| / qmax`` over all batches.
        Default: the first batch the returned model is called with (the float
        model runs on it, then the quantized one). Later inputs beyond the
        calibrated range are clipped: a :class:`CalibrationRangeWarning` says
        so once per layer and :meth:`OffloadedModel.report` counts them.
    data_width : int, optional
        Signed width of activations and weights: 4, 8 or 16; default
        ``hw.data_width``, or 8.
    inplace : bool
        Replace the layers in ``torch_model`` itself (undo with
        :meth:`OffloadedModel.restore`) instead of in a deep copy.
    track_error : bool
        Also run each float layer (float64) to measure the error.
    progress : {'auto', True, False} or callable
        ``rtl``: a progress bar per layer call on a terminal
        (see :mod:`systolic_conv.progress`).
    **backend_options
        Passed to ``conv2d`` on the ``rtl`` backend (``seed``, ``idle``, ``stall``).

    Returns
    -------
    OffloadedModel

    Raises
    ------
    ValueError, TypeError
        Bad arguments, a model without ``nn.Conv2d``, a conv subclass with its
        own forward, a layer the calibration did not reach, a bias that does not
        fit int32 -- all before any backend call.
    """
    if not isinstance(torch_model, nn.Module):
        raise TypeError(f"torch_model must be a torch.nn.Module, not {type(torch_model).__name__}")
    check_backend(backend)
    hw, data_width = check_hw(hw, data_width)
    if hw is None and backend == "rtl":
        from .hw.config import HardwareConfig
        hw = HardwareConfig(data_width=data_width)
    if backend == "golden" and backend_options:
        raise TypeError(f"backend='golden' takes no options {', '.join(sorted(backend_options))}")
    resolve_progress(progress, "")              # validates the argument
    batches = None if calibration is None else _batches(calibration)
    for name, m in torch_model.named_modules():
        if isinstance(m, OffloadedConv2d):
            raise ValueError(f"layer {name!r} is already offloaded")

    was_training = torch_model.training
    model = torch_model if inplace else copy.deepcopy(torch_model)
    sites = [(n, m) for n, m in model.named_modules(remove_duplicate=False)
             if isinstance(m, nn.Conv2d)]
    if not sites:
        raise ValueError("the model has no nn.Conv2d layer to offload")
    for n, m in sites:
        _check_conv(n, m)

    wrappers = {}            # id(conv) -> wrapper (a conv used at several places shares one)
    layers = {}
    wrapped_sites = []
    for n, m in sites:
        if id(m) not in wrappers:
            label = n or type(m).__name__          # the model may be a bare Conv2d
            wrappers[id(m)] = layers[label] = OffloadedConv2d(
                m, label, backend, hw, data_width, track_error, backend_options, progress)
        wrapped_sites.append((n, wrappers[id(m)]))
    for n, w in wrapped_sites:
        if n:
            _set_child(model, n, w)
        else:
            model = w
    result = OffloadedModel(model, layers, wrapped_sites, backend, hw, data_width, inplace,
                            was_training)
    model.eval()
    if batches is not None:
        try:
            result.calibrate(batches)
        except BaseException:
            result.restore()
            raise
    return result


# --------------------------------------------------------------------------
# BatchNorm folding
# --------------------------------------------------------------------------

def _sequential_pairs(model):
    pairs = []
    for pname, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        items = list(mod.named_children())
        for (na, a), (nb, b) in zip(items, items[1:]):
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                pre = f"{pname}." if pname else ""
                pairs.append((pre + na, pre + nb))
    return pairs


def fold_batchnorm(model, pairs=None, inplace=False):
    """Fold ``BatchNorm2d`` layers into the ``nn.Conv2d`` layers that feed them.

    For a conv ``y = w * x + b`` followed by BatchNorm with running statistics
    ``mean``, ``var``, ``eps`` and affine ``gamma``, ``beta`` (1 and 0 when not
    affine), the folded conv has ``w' = w * s[co]`` and
    ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``
    (computed in float64); the BatchNorm is replaced by ``nn.Identity``. The
    folded model equals ``model.eval()`` (BatchNorm on running statistics) up
    to float rounding; it does not reproduce training-mode BatchNorm.

    Parameters
    ----------
    model : torch.nn.Module
    pairs : list of (str, str), optional
        Qualified names ``(conv, batchnorm)`` to fold, for models whose conv ->
        BN data flow is not a ``nn.Sequential``. Default: every ``nn.Conv2d``
        immediately followed by a ``nn.BatchNorm2d`` inside any ``nn.Sequential``.
        The caller guarantees that the conv output feeds only that BatchNorm.
    inplace : bool
        Modify ``model`` instead of a deep copy.

    Returns
    -------
    torch.nn.Module
        The folded model (``model`` itself when ``inplace``).

    Raises
    ------
    TypeError, ValueError
        A name that is not a Conv2d / BatchNorm2d, mismatched channel counts,
        BatchNorm without running statistics, a conv used by another pair.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    out = model if inplace else copy.deepcopy(model)
    todo = _sequential_pairs(out) if pairs is None else [tuple(p) for p in pairs]
    seen = set()
    resolved = []
    for cname, bname in todo:
        conv, bn = out.get_submodule(cname), out.get_submodule(bname)
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"{cname!r} is a {type(conv).__name__}, not an nn.Conv2d")
        if not isinstance(bn, nn.BatchNorm2d):
            raise TypeError(f"{bname!r} is a {type(bn).__name__}, not an nn.BatchNorm2d")
        if bn.num_features != conv.out_channels:
            raise ValueError(f"{bname!r} has {bn.num_features} features but {cname!r} has "
                             f"{conv.out_channels} output channels")
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(f"{bname!r} has no running statistics (track_running_stats=False): "
                             f"it cannot be folded")
        if cname in seen or bname in seen:
            raise ValueError(f"{cname!r} / {bname!r} appear in more than one pair")
        seen.update((cname, bname))
        resolved.append((cname, conv, bname, bn))
    with torch.no_grad():
        for cname, conv, bname, bn in resolved:
            dt = conv.weight.dtype
            w = conv.weight.detach().double()
            b = (conv.bias.detach().double() if conv.bias is not None
                 else torch.zeros(conv.out_channels, dtype=torch.float64,
                                  device=w.device))
            gamma = bn.weight.detach().double() if bn.weight is not None else 1.0
            beta = bn.bias.detach().double() if bn.bias is not None else 0.0
            s = gamma / torch.sqrt(bn.running_var.detach().double() + bn.eps)
            conv.weight = nn.Parameter((w * s.reshape(-1, 1, 1, 1)).to(dt),
                                       requires_grad=conv.weight.requires_grad)
            conv.bias = nn.Parameter(((b - bn.running_mean.detach().double()) * s + beta).to(dt))
            _set_child(out, bname, nn.Identity())
    return out
