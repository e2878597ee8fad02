"""The one definition of every payload the accelerator exchanges with its host.

The hardware decodes these layouts; the host driver, the compiled harness and the
cocotb testbench pack and unpack bits through the very same objects
(:func:`pack`, :func:`unpack`, :func:`field_offsets`). No bit offset is written
down anywhere else.

Streams (all ``amaranth.lib.stream`` with payload/valid/ready, ``last`` framing):

``i_desc``
    one :func:`descriptor_layout` beat per invocation.
``i_param``
    one :func:`param_beat_layout` beat per output-channel tile (``cotiles`` beats):
    per-lane bias/M/S and the range of input-channel words the tile reduces over
    (this is how ``groups`` reach the hardware).
``i_weight``
    ``n_tiles * rows`` beats of ``cols`` weights. Tile order: for each output-channel
    tile, for each tap ``(ky, kx)`` in raster order, for each input word of the tile's
    range; inside a tile, array row ``r`` (input channel ``r`` of the word) per beat.
``i_act``
    ``H * ceil(W / act_pixels) * cwords`` beats of ``act_pixels`` neighbouring pixels
    (columns ``x, x+1``; the second is absent after an odd width's last column) of
    ``rows`` channels each: rows in streaming order (for reflect/replicate/circular
    the host streams the vertically padded row order), pixel pairs left to right,
    input-channel words in order; with the descriptor's ``word_major`` flag word by
    word instead (word, row, pixel pair).
``o_result``
    for each pass of G output rows, for each output-channel tile, G x W_out beats of
    ``cols`` results (raster order inside the pass); ``last`` on the layer's final beat.
``o_status``
    one :func:`status_layout` beat per invocation, after its final result: error
    flags and the performance counters.
"""

from amaranth import unsigned, signed, Shape
from amaranth.lib import data, enum

from .config import HardwareConfig

__all__ = [
    "PadMode", "RequantMode", "ErrorFlag", "COUNTERS",
    "descriptor_layout", "channel_params_layout", "param_beat_layout",
    "act_beat_layout", "weight_beat_layout", "result_beat_layout", "status_layout",
    "pack", "unpack", "field_offsets",
]

STATUS_COUNTER_WIDTH = 32
BIAS_WIDTH = 32
MULT_WIDTH = 31      # M < 2**31 (tflite Q31, M >= 0); half_up uses the low 16 bits
SHIFT_WIDTH = 6      # tflite 0..31, half_up 0..47
ZP_WIDTH = 17        # output zero point, signed


class PadMode(enum.Enum, shape=2):
    """Horizontal padding applied by the window generator."""
    ZEROS = 0        # pad value (the input zero point; 0 for PyTorch's 'zeros')
    REFLECT = 1
    REPLICATE = 2
    CIRCULAR = 3


class RequantMode(enum.Enum, shape=2):
    NONE = 0         # raw accumulators out
    TFLITE = 1
    HALF_UP = 2


class ErrorFlag:
    """Bits of the status ``error`` field."""
    BAD_DESC = 1 << 0       # descriptor outside the elaborated limits
    BAD_PARAM = 1 << 1      # tile parameters inconsistent with the descriptor
    ACT_SHORT = 1 << 2      # activation stream ended (last) early
    ACT_LONG = 1 << 3       # activation stream continued past its expected end
    WEIGHT_SHORT = 1 << 4
    WEIGHT_LONG = 1 << 5
    PARAM_SHORT = 1 << 6
    PARAM_LONG = 1 << 7

    NAMES = {1 << 0: "BAD_DESC", 1 << 1: "BAD_PARAM", 1 << 2: "ACT_SHORT",
             1 << 3: "ACT_LONG", 1 << 4: "WEIGHT_SHORT", 1 << 5: "WEIGHT_LONG",
             1 << 6: "PARAM_SHORT", 1 << 7: "PARAM_LONG"}

    @classmethod
    def describe(cls, value):
        names = [n for b, n in cls.NAMES.items() if value & b]
        return "|".join(names) if names else "OK"


# Performance counters, in the order they appear in the status beat. Every cycle
# between the descriptor handshake and the final result handshake (inclusive)
# falls in exactly one of the others, so they sum to ``cycles``:
#   busy          an element (one activation vector) entered the array
#   setup         descriptor check, waiting for tile parameters, pass start bubble
#   stall_input   a pass waits for its rows in the line buffer
#   stall_weight  a fold waits for its weight tile
#   stall_output  a final fold waits for result FIFO credits
#   fill          depthwise window columns read without completing an element
#   drain         everything issued; waiting for the last result
COUNTERS = ("cycles", "busy", "setup", "stall_input", "stall_weight",
            "stall_output", "fill", "drain")


def descriptor_layout(cfg: HardwareConfig):
    return data.StructLayout({
        "cwords":     unsigned(cfg.cw_bits),        # input-channel words per pixel
        "cotiles":    unsigned(cfg.cot_bits),       # output-channel tiles
        "n_tiles":    unsigned(cfg.tile_bits),      # weight tiles per pass (sum of taps*words)
        "height":     unsigned(cfg.h_bits),         # rows streamed
        "width":      unsigned(cfg.w_bits),
        "out_height": unsigned(cfg.h_bits),
        "out_width":  unsigned(cfg.w_bits),
        "pass_rows":  unsigned(cfg.h_bits),         # G: output rows per pass
        "kh":         unsigned(cfg.k_bits),
        "kw":         unsigned(cfg.k_bits),
        "stride_h":   unsigned(cfg.s_bits),
        "stride_w":   unsigned(cfg.s_bits),
        "dil_h":      unsigned(cfg.d_bits),
        "dil_w":      unsigned(cfg.d_bits),
        "pad_top":    unsigned(cfg.pad_bits),
        "pad_bottom": unsigned(cfg.pad_bits),
        "pad_left":   unsigned(cfg.pad_bits),
        "pad_right":  unsigned(cfg.pad_bits),
        "pad_mode":   PadMode,
        "pad_value":  signed(cfg.data_width),
        "requant":    RequantMode,
        "relu":       unsigned(1),
        "out_zp":     signed(ZP_WIDTH),
        "out_bits":   unsigned(5),                  # requantized output width, 2..16
        "depthwise":  unsigned(1),                  # taps on rows, channels on columns
        "word_major": unsigned(1),                  # activations word by word (depthwise)
    })


def channel_params_layout(cfg: HardwareConfig):
    return data.StructLayout({
        "bias":  signed(BIAS_WIDTH),
        "mult":  unsigned(MULT_WIDTH),
        "shift": unsigned(SHIFT_WIDTH),
    })


def tile_params_layout(cfg: HardwareConfig):
    return data.StructLayout({
        "lanes":    data.ArrayLayout(channel_params_layout(cfg), cfg.cols),
        "cw_first": unsigned(cfg.cw_bits),
        "cw_count": unsigned(cfg.fold_bits),     # words (dense) or tap folds (depthwise)
    })


def _framed(payload):
    return data.StructLayout({"data": payload, "last": unsigned(1)})


def param_beat_layout(cfg):
    return _framed(tile_params_layout(cfg))


def act_beat_layout(cfg):
    # act_pixels neighbouring pixels (columns x, x+1) of one word of rows channels:
    # lanes [p*rows, (p+1)*rows) are pixel x+p
    return _framed(data.ArrayLayout(signed(cfg.data_width), cfg.rows * cfg.act_pixels))


def weight_beat_layout(cfg):
    return _framed(data.ArrayLayout(signed(cfg.data_width), cfg.cols))


def result_beat_layout(cfg):
    return _framed(data.ArrayLayout(signed(cfg.acc_width), cfg.cols))


def status_layout(cfg):
    fields = {"error": unsigned(8)}
    for name in COUNTERS:
        fields[name] = unsigned(STATUS_COUNTER_WIDTH)
    return data.StructLayout(fields)


# -- packing helpers shared by host, harness and testbench ----------------------------

def _size(shape):
    if isinstance(shape, data.Layout):
        return shape.size
    return Shape.cast(shape).width


def _const_value(v):
    if isinstance(v, enum.Enum):
        return v.value
    return v


def pack(layout, values):
    """Pack a (nested) dict of plain ints into an int, through ``layout``."""
    return int(layout.const(_plain(layout, values)).as_value().value) & ((1 << layout.size) - 1)


def _plain(layout, values):
    if isinstance(layout, data.StructLayout):
        return {k: _plain(layout[k].shape, v) for k, v in values.items()}
    if isinstance(layout, data.ArrayLayout):
        return [_plain(layout.elem_shape, v) for v in values]
    return _const_value(values)


def unpack(layout, raw):
    """Unpack an int into nested dicts/lists of ints (signed fields sign-extended)."""
    raw = int(raw)
    if isinstance(layout, data.StructLayout):
        out = {}
        for name, fld in layout:
            out[name] = unpack(fld.shape, (raw >> fld.offset) & ((1 << fld.width) - 1))
        return out
    if isinstance(layout, data.ArrayLayout):
        w = _size(layout.elem_shape)
        return [unpack(layout.elem_shape, (raw >> (i * w)) & ((1 << w) - 1))
                for i in range(layout.length)]
    shape = Shape.cast(layout)
    if shape.signed and raw >> (shape.width - 1):
        raw -= 1 << shape.width
    return raw


def field_offsets(layout, prefix=""):
    """Flatten a layout into ``{dotted_name: (offset, width, signed)}``.

    Array elements are named ``name.0``, ``name.1``...; used to pack whole streams
    with numpy and to hand offsets to the compiled harness.
    """
    out = {}

    def walk(lay, base, name):
        if isinstance(lay, data.StructLayout):
            for n, fld in lay:
                walk(fld.shape, base + fld.offset, f"{name}.{n}" if name else n)
        elif isinstance(lay, data.ArrayLayout):
            w = _size(lay.elem_shape)
            for i in range(lay.length):
                walk(lay.elem_shape, base + i * w, f"{name}.{i}" if name else str(i))
        else:
            shape = Shape.cast(lay)
            out[name] = (base, shape.width, bool(shape.signed))

    walk(layout, 0, prefix)
    return out
