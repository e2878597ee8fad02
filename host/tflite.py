"""Run the convolutions of an int8 TFLite model on a backend, layer by layer against LiteRT.

:func:`offload_tflite` reads a ``.tflite`` model through LiteRT (``ai-edge-litert``,
the ``tflite`` extra) and runs it once with LiteRT's reference kernels
(``OpResolverType.BUILTIN_REF``, every tensor preserved). Every ``CONV_2D`` and
``DEPTHWISE_CONV_2D`` with int8 input, filter and output and int32 bias is then run
on the chosen backend (``golden`` or ``rtl``) on the exact int8 input tensor LiteRT
computed, with TFLite's own parameters, and its output is compared with LiteRT's
tensor. The other operators are LiteRT's. When every convolution equals LiteRT's,
a graph whose convolutions ran on the backend computes LiteRT's outputs exactly
(each operator sees the same inputs).

TFLite's parameters in the project's terms (``reference_integer_ops::ConvPerChannel``
and ``DepthwiseConvPerChannel``: ``acc = sum((x - zp_in) * w) + bias``, then
``MultiplyByQuantizedMultiplier``, ``+ zp_out``, clamp):

* weights ``(C_out, kh, kw, C_in)`` (depthwise ``(1, kh, kw, C_in * m)``) become
  ``(C_out, C_in / groups, kh, kw)``; depthwise is ``groups = C_in``, output
  channel ``c * m + j`` reading input channel ``c`` in both conventions;
* the input zero point is the pad value and its correction is folded into the
  bias: ``bias[co] - zp_in * sum(w[co])``. A padded tap holds ``zp_in`` and adds
  ``zp_in * w`` that the folded bias takes away again: 0, as TFLite skips it;
* per-channel multipliers and shifts from TFLite's ``QuantizeMultiplier`` of
  ``input_scale * filter_scale[c] / output_scale`` in double
  (:func:`~.quant.quantize_multiplier_tflite`), effective scales >= 1 giving
  negative (left) shifts;
* the clamp from the fused activation (``NONE``, ``RELU``, ``RELU6``,
  ``RELU_N1_TO_1``) as TFLite's ``CalculateActivationRangeQuantized`` computes it
  (``zp_out + round(f / scale)`` in float32);
* ``SAME`` padding: total ``max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0)``,
  ``top = total // 2``, the odd row / column at the bottom / right.

The backends match LiteRT's reference kernels (``BUILTIN_REF``) exactly. LiteRT's
default CPU kernels (``AUTO``: XNNPACK) and its optimized builtin kernels differ
from the reference kernels by +-1 on a small fraction of outputs
(bench/tflite_kernels.py measures it): the backends do not match those.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from dataclasses import dataclass, field

import numpy as np

from .contract import (BIAS_WIDTH, Requant, acc_bound_ok, check_int_tensor, conv_geometry,
                       default_acc_width, int_range, left_shift_wrap32, output_size,
                       requantize)
from .golden import pad_input
from .quant import quantize_multiplier_tflite

__all__ = ["offload_tflite", "TfliteConv", "TfliteLayer", "TfliteReport", "read_convs",
           "run_conv", "activation_range", "tflite_padding", "kernel_mismatch",
           "run_tflite", "main", "BACKENDS", "ACTIVATIONS"]

BACKENDS = ("golden", "rtl")
#: Fused activations of TFLite's schema (``ActivationFunctionType``) by value.
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_CONV_2D, _DEPTHWISE_CONV_2D = 3, 4         # BuiltinOperator values
_SAME = 0                                   # Padding.SAME (VALID is 1)
_INT8, _INT32 = np.int8, np.int32


def _litert():
    """LiteRT's interpreter module and the ``tflite`` schema package (the ``tflite`` extra)."""
    try:
        from ai_edge_litert import interpreter
        import tflite
    except ImportError as exc:
        raise ImportError(f"TFLite models need the 'tflite' extra: pip install "
                          f"'systolic-conv[tflite]' ({exc})") from exc
    return interpreter, tflite


def reference_interpreter(model, preserve=True):
    """A LiteRT interpreter with the reference kernels (``BUILTIN_REF``), tensors allocated.

    Parameters
    ----------
    model : bytes
        The ``.tflite`` flatbuffer.
    preserve : bool
        Keep every intermediate tensor readable after ``invoke()``.
    """
    interpreter, _ = _litert()
    it = interpreter.Interpreter(
        model_content=bytes(model),
        experimental_op_resolver_type=interpreter.OpResolverType.BUILTIN_REF,
        experimental_preserve_all_tensors=preserve)
    it.allocate_tensors()
    return it


# --------------------------------------------------------------------------
# TFLite's parameter arithmetic
# --------------------------------------------------------------------------

def _round_away(v):
    """``std::round``: half away from zero (``v`` a float32 value held as a double: exact)."""
    return int(np.sign(v) * np.floor(abs(v) + 0.5))


def activation_range(activation, scale, zero_point, width=8):
    """Clamp bounds of a fused activation, as TFLite's ``CalculateActivationRangeQuantized``.

    ``quantize(f) = zero_point + round(f / scale)`` with the division in float32
    and round half away from zero; ``RELU``: ``[max(qmin, quantize(0)), qmax]``;
    ``RELU6``: ``[max(qmin, quantize(0)), min(qmax, quantize(6))]``;
    ``RELU_N1_TO_1``: ``[max(qmin, quantize(-1)), min(qmax, quantize(1))]``;
    ``NONE``: ``[qmin, qmax]``.

    Parameters
    ----------
    activation : str
        One of ``NONE``, ``RELU``, ``RELU6``, ``RELU_N1_TO_1``.
    scale : float
        Output scale (a float32 value).
    zero_point : int
        Output zero point.
    width : int
        Output width (8 for int8).

    Returns
    -------
    (int, int)
    """
    qmin, qmax = int_range(width)

    def quantize(f):
        return zero_point + _round_away(float(np.float32(f) / np.float32(scale)))

    if activation == "NONE":
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, quantize(0.0)), qmax
    if activation == "RELU6":
        return max(qmin, quantize(0.0)), min(qmax, quantize(6.0))
    if activation == "RELU_N1_TO_1":
        return max(qmin, quantize(-1.0)), min(qmax, quantize(1.0))
    raise ValueError(f"activation={activation!r} must be one of 'NONE', 'RELU', 'RELU6', "
                     f"'RELU_N1_TO_1'")


def tflite_padding(padding, in_size, kernel, stride, dilation):
    """TFLite's output size and ``(before, after)`` pads of one spatial axis.

    Parameters
    ----------
    padding : {'SAME', 'VALID'}
    in_size, kernel, stride, dilation : int

    Returns
    -------
    (int, int, int)
        ``(out_size, pad_before, pad_after)``; the odd pad of ``SAME`` is after.
    """
    eff = (kernel - 1) * dilation + 1
    if padding == "SAME":
        out = (in_size + stride - 1) // stride
    elif padding == "VALID":
        out = (in_size - eff + stride) // stride
    else:
        raise ValueError(f"padding={padding!r} must be 'SAME' or 'VALID'")
    total = max((out - 1) * stride + eff - in_size, 0)
    return out, total // 2, total - total // 2


# --------------------------------------------------------------------------
# Reading the model
# --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class TfliteConv:
    """One TFLite convolution in the project's terms (see the module docstring).

    Attributes
    ----------
    index : int
        Operator index in the (first) subgraph.
    op : str
        ``'CONV_2D'`` or ``'DEPTHWISE_CONV_2D'``.
    name : str
        Name of the output tensor.
    input, output : int
        Tensor indices.
    weight : numpy.ndarray of int64
        ``(C_out, C_in // groups, kh, kw)``.
    bias : numpy.ndarray of int64
        ``(C_out,)``, TFLite's bias with the input zero point's correction folded in.
    stride, dilation : tuple of int
    groups : int
    pads : tuple of int
        ``(top, bottom, left, right)``.
    pad_value : int
        The input zero point.
    requant : Requant
    activation : str
    input_shape, output_shape : tuple of int
        NHWC, as in the model.
    """

    index: int
    op: str
    name: str
    input: int
    output: int
    weight: np.ndarray = field(repr=False)
    bias: np.ndarray = field(repr=False)
    stride: tuple
    dilation: tuple
    groups: int
    pads: tuple
    pad_value: int
    requant: Requant = field(repr=False)
    activation: str
    input_shape: tuple
    output_shape: tuple

    @property
    def symmetric(self):
        """True when top == bottom and left == right (``conv2d``'s ``padding``)."""
        t, b, l, r = self.pads
        return t == b and l == r

    def geometry(self):
        """The :class:`~.contract.ConvGeometry` of this layer (NCHW), pads as given."""
        n, h, w, c = self.input_shape
        g = conv_geometry((n, c, h, w), self.weight.shape, self.bias.shape, self.stride, 0,
                          self.dilation, self.groups)
        t, b, l, r = self.pads
        return dataclasses.replace(
            g, pad=self.pads,
            H_out=output_size(h, t, b, self.dilation[0], g.kh, self.stride[0]),
            W_out=output_size(w, l, r, self.dilation[1], g.kw, self.stride[1]))


@dataclass(frozen=True)
class _Skipped:
    index: int
    op: str
    name: str
    reason: str


def _quant(details, idx):
    q = details[idx]["quantization_parameters"]
    return (np.asarray(q["scales"], dtype=np.float32), np.asarray(q["zero_points"], np.int64),
            int(q["quantized_dimension"]))


def _options(tfl, op, code):
    table = op.BuiltinOptions()
    opt = tfl.Conv2DOptions() if code == _CONV_2D else tfl.DepthwiseConv2DOptions()
    opt.Init(table.Bytes, table.Pos)
    return opt


def read_convs(model, interpreter):
    """The int8 convolutions of ``model``'s first subgraph, in execution order.

    Parameters
    ----------
    model : bytes
        The ``.tflite`` flatbuffer.
    interpreter : ai_edge_litert.interpreter.Interpreter
        An interpreter of ``model`` (tensors allocated): constant tensors and
        quantization parameters are read through it.

    Returns
    -------
    list
        :class:`TfliteConv` for each offloadable convolution, and a record with
        ``index``, ``op``, ``name`` and ``reason`` for each convolution that is not
        (float, int16 or otherwise outside the int8 scheme).
    """
    _, tfl = _litert()
    m = tfl.Model.GetRootAs(bytes(model), 0)
    if m.SubgraphsLength() < 1:
        raise ValueError("model has no subgraph")
    sg = m.Subgraphs(0)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    convs = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        oc = m.OperatorCodes(op.OpcodeIndex())
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        if code not in (_CONV_2D, _DEPTHWISE_CONV_2D):
            continue
        convs.append(_read_conv(tfl, i, op, code, details, interpreter))
    return convs


def _read_conv(tfl, i, op, code, details, interpreter):
    name = "CONV_2D" if code == _CONV_2D else "DEPTHWISE_CONV_2D"
    ins = [op.Inputs(k) for k in range(op.InputsLength())]
    x_i, w_i = ins[0], ins[1]
    b_i = ins[2] if len(ins) > 2 else -1
    y_i = op.Outputs(0)
    out_name = details[y_i]["name"]
    types = (details[x_i]["dtype"], details[w_i]["dtype"], details[y_i]["dtype"])
    if types != (_INT8, _INT8, _INT8) or (b_i >= 0 and details[b_i]["dtype"] != _INT32):
        return _Skipped(i, name, out_name, "not int8 (input, filter, output) with int32 bias: "
                        + ", ".join(np.dtype(t).name for t in types))
    opt = _options(tfl, op, code)
    activation = ACTIVATIONS.get(opt.FusedActivationFunction(), "?")
    if activation not in ("NONE", "RELU", "RELU6", "RELU_N1_TO_1"):
        return _Skipped(i, name, out_name, f"fused activation {activation}")
    sx, zx, _ = _quant(details, x_i)
    sw, zw, _ = _quant(details, w_i)
    sy, zy, _ = _quant(details, y_i)
    if np.any(zw != 0):
        return _Skipped(i, name, out_name, "filter zero point is not 0")
    filt = interpreter.get_tensor(w_i).astype(np.int64)
    in_shape = tuple(int(v) for v in details[x_i]["shape"])
    out_shape = tuple(int(v) for v in details[y_i]["shape"])
    c_in = in_shape[3]
    if code == _CONV_2D:
        weight = filt.transpose(0, 3, 1, 2)                         # OHWI -> OIHW
        groups = c_in // weight.shape[1]
    else:
        weight = filt[0].transpose(2, 0, 1)[:, None]                # 1HW(C*m) -> (C*m)1HW
        groups = c_in
    c_out = weight.shape[0]
    kh, kw = weight.shape[2:]
    stride = (opt.StrideH(), opt.StrideW())
    dilation = (opt.DilationHFactor(), opt.DilationWFactor())
    padding = "SAME" if opt.Padding() == _SAME else "VALID"
    h_out, top, bottom = tflite_padding(padding, in_shape[1], kh, stride[0], dilation[0])
    w_out, left, right = tflite_padding(padding, in_shape[2], kw, stride[1], dilation[1])
    if (h_out, w_out, c_out) != out_shape[1:]:
        raise ValueError(f"operator {i} ({name} {out_name!r}): output shape {out_shape} "
                         f"does not match the computed {(h_out, w_out, c_out)}")
    bias = (interpreter.get_tensor(b_i).astype(np.int64) if b_i >= 0
            else np.zeros(c_out, np.int64))
    zp_in = int(zx[0])
    folded = bias - zp_in * weight.reshape(c_out, -1).sum(axis=1)
    lo, hi = int_range(BIAS_WIDTH)
    if folded.min() < lo or folded.max() > hi:
        raise ValueError(f"operator {i} ({name} {out_name!r}): the bias with the input "
                         f"zero point folded in leaves int32")
    requant = _requant(i, name, out_name, sx, sw, sy, int(zy[0]), c_out, activation)
    return TfliteConv(index=i, op=name, name=out_name, input=x_i, output=y_i, weight=weight,
                      bias=folded, stride=stride, dilation=dilation, groups=groups,
                      pads=(top, bottom, left, right), pad_value=zp_in, requant=requant,
                      activation=activation, input_shape=in_shape, output_shape=out_shape)


def _requant(i, name, out_name, sx, sw, sy, zy, c_out, activation):
    fs = np.broadcast_to(sw, (c_out,))
    # PopulateConvolutionQuantizationParams: (double(input_scale) * double(filter_scale))
    # / double(output_scale)
    real = [float(sx[0]) * float(f) / float(sy[0]) for f in fs]
    try:
        M, S = quantize_multiplier_tflite(real)
    except ValueError as exc:
        raise ValueError(f"operator {i} ({name} {out_name!r}): {exc}") from None
    act_min, act_max = activation_range(activation, float(sy[0]), zy)
    relu = activation in ("RELU", "RELU6") and act_min == zy
    return Requant(mode="tflite", multiplier=tuple(int(v) for v in M),
                   shift=tuple(int(v) for v in S), out_zero_point=zy, out_width=8, relu=relu,
                   act_min=None if relu or act_min == -128 else act_min,
                   act_max=None if act_max == 127 else act_max)


# --------------------------------------------------------------------------
# Running one convolution
# --------------------------------------------------------------------------

def run_conv(conv, x, backend="golden", hw=None, return_acc=False, **backend_options):
    """Run one :class:`TfliteConv` on a backend.

    Parameters
    ----------
    conv : TfliteConv
    x : numpy.ndarray of int
        The layer's input, NHWC (as LiteRT holds it).
    backend : {'golden', 'rtl'}
    hw : HardwareConfig, optional
        rtl backend only.
    return_acc : bool
        Golden backend: also return the int32 accumulators (NCHW).
    **backend_options
        Passed to ``run_rtl`` (rtl backend).

    Returns
    -------
    (numpy.ndarray, stats) or (numpy.ndarray, stats, acc)
        The int8 output, NHWC; the backend's statistics (``RtlStats`` for rtl,
        None for golden).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} must be one of 'golden', 'rtl'")
    xc = np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)).astype(np.int64)
    if backend == "golden":
        if hw is not None or backend_options:
            raise TypeError("backend='golden' takes no hw or backend options")
        from .golden import conv2d_int
        xp = pad_input(xc, conv.pads, "zeros", conv.pad_value)
        acc = conv2d_int(xp, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)
        out, stats = requantize(acc, conv.requant), None
    else:
        from .api import _rtl_requant_supported
        ok, why = _rtl_requant_supported(conv.requant, hw)
        if not ok:
            raise ValueError(f"operator {conv.index} ({conv.op} {conv.name!r}): {why}")
        from .driver import run_rtl
        check_int_tensor(xc, "x", 8)
        out, stats = run_rtl(xc, conv.weight, conv.bias, conv.geometry(), hw=hw,
                             requant=conv.requant, pad_value=conv.pad_value, **backend_options)
        acc = None
    out = out.transpose(0, 2, 3, 1)
    return (out, stats, acc) if return_acc else (out, stats)


def _wraps(acc, requant):
    """Accumulators whose left shift leaves int32 (TFLite's wrap happens)."""
    S = np.asarray(requant.shift, dtype=np.int64)
    L = np.broadcast_to(np.maximum(-S, 0), (acc.shape[1],)).reshape(1, -1, 1, 1)
    L = np.broadcast_to(L, acc.shape)
    return int(np.count_nonzero((L > 0) & (left_shift_wrap32(acc, L) != acc << L)))


def _wrap_free(conv, x):
    """Proof from the operands' bounds that no left shift of this layer can wrap."""
    if not conv.requant.left_shift:
        return True
    xa = max(int(np.abs(x).max()), abs(conv.pad_value) if any(conv.pads) else 0)
    k = conv.weight[0].size
    return acc_bound_ok(k, xa, int(np.abs(conv.weight).max()), int(np.abs(conv.bias).max()),
                        default_acc_width(8), left_shift=conv.requant.left_shift)


# --------------------------------------------------------------------------
# The whole model
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class TfliteLayer:
    """One convolution of the model against LiteRT's reference result.

    ``equal`` is None (and ``reason`` says why) for a convolution that was not
    offloaded. ``cycles`` is the rtl backend's measured count (None on golden);
    ``wraps`` counts outputs whose ``acc * 2**L`` left int32 (golden only);
    ``wrap_free`` is the proof from the operands' bounds that none can.
    """

    index: int
    op: str
    name: str
    input_shape: tuple = ()
    output_shape: tuple = ()
    kernel: tuple = ()
    stride: tuple = ()
    pads: tuple = ()
    activation: str = ""
    left_shift: int = 0
    macs: int = 0
    cycles: int = None
    equal: bool = None
    mismatches: int = 0
    max_abs_diff: int = 0
    wraps: int = None
    wrap_free: bool = None
    reason: str = ""

    def row(self):
        """One line of :class:`TfliteReport`'s table."""
        if self.equal is None:
            return (f"{self.index:>3} {self.op:<17} {self.name[:28]:<28} "
                    f"not offloaded: {self.reason}")
        t, b, l, r = self.pads
        shape = "x".join(map(str, self.input_shape[1:])) + " -> " + \
            "x".join(map(str, self.output_shape[1:]))
        cyc = "-" if self.cycles is None else str(self.cycles)
        eq = "yes" if self.equal else f"NO ({self.mismatches}, max {self.max_abs_diff})"
        return (f"{self.index:>3} {self.op:<17} {self.name[:28]:<28} {shape:<22} "
                f"k{self.kernel[0]}x{self.kernel[1]} s{self.stride[0]}x{self.stride[1]} "
                f"p{t}{b}{l}{r} {self.activation:<12} {self.left_shift or '':>4} "
                f"{cyc:>9} {eq}")


@dataclass(frozen=True, eq=False)
class TfliteReport:
    """Result of :func:`offload_tflite`.

    Attributes
    ----------
    path : str
    backend : str
    layers : list of TfliteLayer
    inputs : list of numpy.ndarray
        The model inputs used.
    outputs : list of numpy.ndarray
        LiteRT's (reference kernels) model outputs.
    """

    path: str
    backend: str
    layers: list
    inputs: list = field(repr=False)
    outputs: list = field(repr=False)

    @property
    def offloaded(self):
        """Layers that ran on the backend."""
        return [layer for layer in self.layers if layer.equal is not None]

    @property
    def all_equal(self):
        """True when at least one layer ran and every offloaded layer equals LiteRT's."""
        return bool(self.offloaded) and all(layer.equal for layer in self.offloaded)

    @property
    def cycles(self):
        """Total rtl cycles of the offloaded layers (None on golden)."""
        if self.backend != "rtl":
            return None
        return sum(layer.cycles for layer in self.offloaded)

    def __str__(self):
        head = (f"{self.path}: {len(self.offloaded)} of {len(self.layers)} convolutions on "
                f"backend={self.backend!r}, compared with LiteRT BUILTIN_REF")
        cols = (f"{'op':>3} {'type':<17} {'output tensor':<28} {'shape (HxWxC)':<22} "
                f"kernel/stride/pads(tblr) {'activation':<7} {'left':>4} {'cycles':>9} equal")
        lines = [head, cols] + [layer.row() for layer in self.layers]
        verdict = "all equal" if self.all_equal else "NOT all equal"
        total = "" if self.cycles is None else f", {self.cycles} cycles"
        return "\n".join(lines + [f"{verdict}{total}"])


def _model_inputs(interpreter, inputs, seed):
    dets = interpreter.get_input_details()
    if inputs is not None:
        arrs = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
        if len(arrs) != len(dets):
            raise ValueError(f"inputs has {len(arrs)} arrays but the model has {len(dets)} inputs")
        out = []
        for k, (a, d) in enumerate(zip(arrs, dets)):
            a = np.asarray(a)
            if tuple(a.shape) != tuple(d["shape"]):
                raise ValueError(f"inputs[{k}] has shape {a.shape}, the model expects "
                                 f"{tuple(d['shape'])}")
            out.append(a.astype(d["dtype"]))
        return out
    rng = np.random.default_rng(seed)
    out = []
    for d in dets:
        if np.issubdtype(d["dtype"], np.integer):
            info = np.iinfo(d["dtype"])
            out.append(rng.integers(info.min, info.max, d["shape"], endpoint=True)
                       .astype(d["dtype"]))
        else:
            out.append(rng.uniform(-1.0, 1.0, d["shape"]).astype(d["dtype"]))
    return out


def offload_tflite(path, backend="golden", hw=None, inputs=None, seed=0, progress=None,
                   **backend_options):
    """Run an int8 TFLite model's convolutions on a backend, each checked against LiteRT.

    Parameters
    ----------
    path : str or path-like
        A ``.tflite`` file.
    backend : {'golden', 'rtl'}
        Where the ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` layers run.
    hw : HardwareConfig, optional
        The accelerator of the rtl backend (default configuration when None).
    inputs : sequence or dict of numpy.ndarray, optional
        The model's inputs, in the order of LiteRT's ``get_input_details()``;
        default: seeded uniform random values (full int range, or [-1, 1] for
        float inputs).
    seed : int
        Seed of the default inputs.
    progress : callable, optional
        ``progress(done, total)`` after each convolution.
    **backend_options
        Passed to ``run_rtl`` (rtl backend).

    Returns
    -------
    TfliteReport
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} must be one of 'golden', 'rtl'")
    if backend == "golden" and (hw is not None or backend_options):
        raise TypeError("backend='golden' takes no hw or backend options")
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"path={str(path)!r} is not a file")
    model = p.read_bytes()
    it = reference_interpreter(model)
    xs = _model_inputs(it, inputs, seed)
    for d, a in zip(it.get_input_details(), xs):
        it.set_tensor(d["index"], a)
    it.invoke()
    convs = read_convs(model, it)
    layers = []
    for k, conv in enumerate(convs):
        layers.append(_run_layer(it, conv, backend, hw, backend_options))
        if progress:
            progress(k + 1, len(convs))
    outputs = [it.get_tensor(d["index"]) for d in it.get_output_details()]
    return TfliteReport(path=str(path), backend=backend, layers=layers, inputs=xs,
                        outputs=outputs)


def _run_layer(it, conv, backend, hw, backend_options):
    if not isinstance(conv, TfliteConv):
        return TfliteLayer(index=conv.index, op=conv.op, name=conv.name, reason=conv.reason)
    x = it.get_tensor(conv.input)
    want = it.get_tensor(conv.output).astype(np.int64)
    if backend == "golden":
        got, stats, acc = run_conv(conv, x, "golden", return_acc=True)
        wraps = _wraps(acc, conv.requant)
    else:
        got, stats = run_conv(conv, x, "rtl", hw, **backend_options)
        wraps = None
    diff = np.abs(got - want)
    return TfliteLayer(
        index=conv.index, op=conv.op, name=conv.name, input_shape=conv.input_shape,
        output_shape=conv.output_shape, kernel=conv.weight.shape[2:], stride=conv.stride,
        pads=conv.pads, activation=conv.activation, left_shift=conv.requant.left_shift,
        macs=conv.geometry().macs, cycles=None if stats is None else int(stats.cycles),
        equal=bool(np.array_equal(got, want)), mismatches=int(np.count_nonzero(diff)),
        max_abs_diff=int(diff.max()) if diff.size else 0, wraps=wraps,
        wrap_free=_wrap_free(conv, x))


# --------------------------------------------------------------------------
# LiteRT's default kernels against its reference kernels
# --------------------------------------------------------------------------

def kernel_mismatch(model, inputs, resolver="AUTO"):
    """Compare another LiteRT kernel set with its reference kernels on the model outputs.

    Parameters
    ----------
    model : bytes or path-like
        A ``.tflite`` model.
    inputs : sequence of numpy.ndarray
        One batch of model inputs.
    resolver : {'AUTO', 'BUILTIN', 'BUILTIN_WITHOUT_DEFAULT_DELEGATES'}
        ``OpResolverType`` of the kernels compared with ``BUILTIN_REF``: ``AUTO``
        (LiteRT's default, XNNPACK on CPU) or the optimized builtin kernels.

    Returns
    -------
    (int, int, int)
        ``(outputs differing, outputs compared, max |difference|)`` over all model outputs.
    """
    interpreter, _ = _litert()
    kinds = ("AUTO", "BUILTIN", "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    if resolver not in kinds:
        raise ValueError(f"resolver={resolver!r} must be one of "
                         + ", ".join(repr(k) for k in kinds))
    if not isinstance(model, (bytes, bytearray)):
        model = pathlib.Path(model).read_bytes()
    res = []
    for kind in (getattr(interpreter.OpResolverType, resolver),
                 interpreter.OpResolverType.BUILTIN_REF):
        it = interpreter.Interpreter(model_content=bytes(model), experimental_op_resolver_type=kind)
        it.allocate_tensors()
        for d, a in zip(it.get_input_details(), inputs):
            it.set_tensor(d["index"], np.asarray(a, dtype=d["dtype"]))
        it.invoke()
        res.append([it.get_tensor(d["index"]).astype(np.int64) for d in it.get_output_details()])
    diff = np.concatenate([np.abs(a - b).ravel() for a, b in zip(*res)])
    return int(np.count_nonzero(diff)), int(diff.size), int(diff.max()) if diff.size else 0


# --------------------------------------------------------------------------
# Command line: systolic-conv run --tflite MODEL (python -m systolic_conv.tflite --tflite MODEL)
# --------------------------------------------------------------------------

def run_tflite(args, hw=None):
    """``systolic-conv run --tflite MODEL``: run the model (``args.tflite``,
    ``args.backend``, ``args.seed``) with a progress bar over its convolutions on a
    terminal; print the report.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by ``systolic-conv run`` (its prepare step has checked the file).
    hw : HardwareConfig or None
        The rtl backend's accelerator (None: the default; golden takes none).

    Returns
    -------
    int
        0 when every offloaded convolution equals LiteRT's, 1 otherwise.
    """
    from .progress import ProgressBar
    with ProgressBar(f"tflite {args.backend}", unit="conv") as bar:
        report = offload_tflite(args.tflite, backend=args.backend, hw=hw, seed=args.seed,
                                progress=bar if bar.enabled else None)
    print(report)
    return 0 if report.all_equal else 1


def main(argv=None):
    """``python -m systolic_conv.tflite ARGS`` is ``systolic-conv run ARGS`` (give
    ``--tflite MODEL``); returns the exit status."""
    from .cli import main as cli_main
    return cli_main(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
