"""Write small int8 TFLite models directly as flatbuffers (no TensorFlow).

Test helper: every parameter of a convolution (scales, zero points, bias,
padding, stride, dilation, fused activation) is chosen by the test, so the
cases that a converter rarely produces (effective scales >= 1, an int32 wrap
of the left shift, per-channel scales spanning decades) are built on purpose.
LiteRT runs the result; it, not this writer, is the oracle.
"""

import flatbuffers
import numpy as np
import tflite as T

ACT = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3, "TANH": 4}
INT8, INT32 = T.TensorType.INT8, T.TensorType.INT32


class Graph:
    """Tensors and operators of one subgraph; ``build()`` returns the model bytes."""

    def __init__(self):
        self.tensors, self.buffers, self.ops, self.codes = [], [b""], [], []
        self.inputs, self.outputs = [], []

    def tensor(self, name, shape, ttype, scale=None, zero_point=None, qdim=0, data=None):
        buf = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).tobytes())
            buf = len(self.buffers) - 1
        self.tensors.append(dict(name=name, shape=list(shape), type=ttype, buffer=buf,
                                 scale=scale, zero_point=zero_point, qdim=qdim))
        return len(self.tensors) - 1

    def op(self, code, inputs, outputs, options=None):
        if code not in self.codes:
            self.codes.append(code)
        self.ops.append(dict(code=self.codes.index(code), builtin=code, inputs=inputs,
                             outputs=outputs, options=options))

    def conv(self, x, w_ohwi, bias, w_scales, out, stride=(1, 1), dilation=(1, 1),
             padding="SAME", act="NONE", depthwise=False, multiplier=1):
        """Add a CONV_2D (weights OHWI) or DEPTHWISE_CONV_2D (weights 1HW(C*m))."""
        w_scales = np.atleast_1d(np.asarray(w_scales, np.float32))
        sx = self.tensors[x]["scale"][0]
        w = self.tensor(f"w{len(self.ops)}", w_ohwi.shape, INT8, w_scales,
                        np.zeros(len(w_scales), np.int64), qdim=3 if depthwise else 0,
                        data=w_ohwi.astype(np.int8))
        b = self.tensor(f"b{len(self.ops)}", bias.shape, INT32,
                        (np.float32(sx) * w_scales).astype(np.float32),
                        np.zeros(len(w_scales), np.int64), data=bias.astype(np.int32))
        pad = T.Padding.SAME if padding == "SAME" else T.Padding.VALID
        opts = dict(kind="dw" if depthwise else "conv", padding=pad, stride=stride,
                    dilation=dilation, act=ACT[act], multiplier=multiplier)
        self.op(T.BuiltinOperator.DEPTHWISE_CONV_2D if depthwise else T.BuiltinOperator.CONV_2D,
                [x, w, b], [out], opts)

    def build(self):
        fb = flatbuffers.Builder(1024)
        buffers = [self._buffer(fb, data) for data in self.buffers]
        tensors = [self._tensor(fb, t) for t in self.tensors]
        ops = [self._op(fb, o) for o in self.ops]
        codes = []
        for c in self.codes:
            T.OperatorCodeStart(fb)
            T.OperatorCodeAddDeprecatedBuiltinCode(fb, min(c, 127))
            T.OperatorCodeAddBuiltinCode(fb, c)
            T.OperatorCodeAddVersion(fb, 1)
            codes.append(T.OperatorCodeEnd(fb))
        name = fb.CreateString("main")
        t_vec = self._vector(fb, T.SubGraphStartTensorsVector, tensors)
        i_vec = self._ints(fb, T.SubGraphStartInputsVector, self.inputs)
        o_vec = self._ints(fb, T.SubGraphStartOutputsVector, self.outputs)
        op_vec = self._vector(fb, T.SubGraphStartOperatorsVector, ops)
        T.SubGraphStart(fb)
        T.SubGraphAddTensors(fb, t_vec)
        T.SubGraphAddInputs(fb, i_vec)
        T.SubGraphAddOutputs(fb, o_vec)
        T.SubGraphAddOperators(fb, op_vec)
        T.SubGraphAddName(fb, name)
        sg = T.SubGraphEnd(fb)
        desc = fb.CreateString("systolic-conv test model")
        c_vec = self._vector(fb, T.ModelStartOperatorCodesVector, codes)
        s_vec = self._vector(fb, T.ModelStartSubgraphsVector, [sg])
        b_vec = self._vector(fb, T.ModelStartBuffersVector, buffers)
        T.ModelStart(fb)
        T.ModelAddVersion(fb, 3)
        T.ModelAddOperatorCodes(fb, c_vec)
        T.ModelAddSubgraphs(fb, s_vec)
        T.ModelAddDescription(fb, desc)
        T.ModelAddBuffers(fb, b_vec)
        fb.Finish(T.ModelEnd(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())

    @staticmethod
    def _vector(fb, start, offsets):
        start(fb, len(offsets))
        for off in reversed(offsets):
            fb.PrependUOffsetTRelative(off)
        return fb.EndVector()

    @staticmethod
    def _ints(fb, start, values, prepend="PrependInt32"):
        start(fb, len(values))
        for v in reversed(list(values)):
            getattr(fb, prepend)(int(v))
        return fb.EndVector()

    def _buffer(self, fb, data):
        vec = None
        if data:
            fb.StartVector(1, len(data), 16)
            fb.head = fb.head - len(data)
            fb.Bytes[fb.head:fb.head + len(data)] = data
            vec = fb.EndVector()
        T.BufferStart(fb)
        if vec is not None:
            T.BufferAddData(fb, vec)
        return T.BufferEnd(fb)

    def _tensor(self, fb, t):
        q = None
        if t["scale"] is not None:
            s_vec = self._floats(fb, T.QuantizationParametersStartScaleVector, t["scale"])
            z_vec = self._ints(fb, T.QuantizationParametersStartZeroPointVector,
                               t["zero_point"], "PrependInt64")
            T.QuantizationParametersStart(fb)
            T.QuantizationParametersAddScale(fb, s_vec)
            T.QuantizationParametersAddZeroPoint(fb, z_vec)
            T.QuantizationParametersAddQuantizedDimension(fb, t["qdim"])
            q = T.QuantizationParametersEnd(fb)
        name = fb.CreateString(t["name"])
        shape = self._ints(fb, T.TensorStartShapeVector, t["shape"])
        T.TensorStart(fb)
        T.TensorAddShape(fb, shape)
        T.TensorAddType(fb, t["type"])
        T.TensorAddBuffer(fb, t["buffer"])
        T.TensorAddName(fb, name)
        if q is not None:
            T.TensorAddQuantization(fb, q)
        return T.TensorEnd(fb)

    @staticmethod
    def _floats(fb, start, values):
        start(fb, len(values))
        for v in reversed(list(values)):
            fb.PrependFloat32(float(v))
        return fb.EndVector()

    def _op(self, fb, o):
        opts = o["options"]
        kind = None
        if opts is not None and opts["kind"] == "conv":
            T.Conv2DOptionsStart(fb)
            T.Conv2DOptionsAddPadding(fb, opts["padding"])
            T.Conv2DOptionsAddStrideH(fb, opts["stride"][0])
            T.Conv2DOptionsAddStrideW(fb, opts["stride"][1])
            T.Conv2DOptionsAddDilationHFactor(fb, opts["dilation"][0])
            T.Conv2DOptionsAddDilationWFactor(fb, opts["dilation"][1])
            T.Conv2DOptionsAddFusedActivationFunction(fb, opts["act"])
            kind, table = T.BuiltinOptions.Conv2DOptions, T.Conv2DOptionsEnd(fb)
        elif opts is not None:
            T.DepthwiseConv2DOptionsStart(fb)
            T.DepthwiseConv2DOptionsAddPadding(fb, opts["padding"])
            T.DepthwiseConv2DOptionsAddStrideH(fb, opts["stride"][0])
            T.DepthwiseConv2DOptionsAddStrideW(fb, opts["stride"][1])
            T.DepthwiseConv2DOptionsAddDilationHFactor(fb, opts["dilation"][0])
            T.DepthwiseConv2DOptionsAddDilationWFactor(fb, opts["dilation"][1])
            T.DepthwiseConv2DOptionsAddDepthMultiplier(fb, opts["multiplier"])
            T.DepthwiseConv2DOptionsAddFusedActivationFunction(fb, opts["act"])
            kind, table = T.BuiltinOptions.DepthwiseConv2DOptions, T.DepthwiseConv2DOptionsEnd(fb)
        i_vec = self._ints(fb, T.OperatorStartInputsVector, o["inputs"])
        o_vec = self._ints(fb, T.OperatorStartOutputsVector, o["outputs"])
        T.OperatorStart(fb)
        T.OperatorAddOpcodeIndex(fb, o["code"])
        T.OperatorAddInputs(fb, i_vec)
        T.OperatorAddOutputs(fb, o_vec)
        if kind is not None:
            T.OperatorAddBuiltinOptionsType(fb, kind)
            T.OperatorAddBuiltinOptions(fb, table)
        return T.OperatorEnd(fb)


def conv_model(seed, *, n=1, h=9, w=8, c_in=3, c_out=4, k=(3, 3), stride=(1, 1),
               dilation=(1, 1), padding="SAME", act="NONE", depthwise=False, multiplier=1,
               x_scale=0.05, x_zp=-3, y_scale=0.2, y_zp=5, w_scales=None, bias=None,
               w_range=127):
    """A one-convolution int8 model with seeded random weights; returns its bytes."""
    rng = np.random.default_rng(seed)
    g = Graph()
    x = g.tensor("x", (n, h, w, c_in), INT8, [x_scale], [x_zp])
    if depthwise:
        c_out = c_in * multiplier
    eff = [(k[i] - 1) * dilation[i] + 1 for i in range(2)]
    if padding == "SAME":
        ho, wo = -(-h // stride[0]), -(-w // stride[1])
    else:
        ho, wo = (h - eff[0]) // stride[0] + 1, (w - eff[1]) // stride[1] + 1
    y = g.tensor("y", (n, ho, wo, c_out), INT8, [y_scale], [y_zp])
    shape = (1, k[0], k[1], c_out) if depthwise else (c_out, k[0], k[1], c_in)
    wq = rng.integers(-w_range, w_range, shape, endpoint=True)
    if w_scales is None:
        w_scales = rng.uniform(0.002, 0.02, c_out)
    if bias is None:
        bias = rng.integers(-3000, 3000, c_out)
    g.conv(x, wq, np.asarray(bias), w_scales, y, stride, dilation, padding, act,
           depthwise, multiplier)
    g.inputs, g.outputs = [x], [y]
    return g.build()
