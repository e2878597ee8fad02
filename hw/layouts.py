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
    (this is how ``groups`` reach the hardware; the depthwise mapping ignores it).
``i_weight``
    beats of ``cols`` weights. Dense mapping: ``n_tiles * rows`` beats; tile order:
    for each output-channel tile, for each tap ``(ky, kx)`` in raster order, for
    each input word of the tile's range; inside a tile, array row ``r`` (input
    channel ``r`` of the word) per beat. Depthwise mapping: ``cotiles * kh * kw``
    beats, for each channel word its taps in the order the hardware uses them:
    kernel row ``ky``, then column phase ``p`` (``kx % stride_w``), then ``kx``.
``i_act``
    beats of ``act_pixels`` neighbouring pixels (lanes ``[p*rows, (p+1)*rows)``
    are pixel ``x + p``) of ``rows`` channels. Dense mapping:
    ``height * ceil(width / act_pixels) * cwords`` beats, rows in streaming order
    (for reflect / replicate / circular the host streams the vertically padded
    row order and pre-pads the columns), pixel groups left to right, input words
    in order. Depthwise mapping: channel word by channel word, rows in order, each
    row as ``stride_w`` column phases of ``phase_words`` beats (phase ``p`` holds
    the host-padded row's columns ``p, p + stride_w, ...``).
``o_result``
    result beats of ``cols`` lanes of ``acc_width`` bits. Without requantization a
    beat is one output pixel (lane ``c`` is channel ``c``); with it, values are 8
    bits (``out_bits <= 8``) or 16 bits wide and a beat packs
    ``acc_width // width`` pixels: lane ``c`` holds channel ``c`` of each, pixel
    ``k`` in bits ``[k*width, (k+1)*width)`` (:func:`pack_factor`).
    Pixel order: dense, for each pass of G output rows, for each output-channel
    tile, raster order inside the pass; depthwise, for each channel word, raster
    order. ``last`` marks the invocation's final beat.
``o_status``
    one :func:`status_layout` beat per invocation, after its final result: error
    flags and the performance counters.
"""

from amaranth import unsigned, signed, Shape
from amaranth.lib import data, enum

from .config import HardwareConfig

__all__ = [
    "RequantMode", "ErrorFlag", "COUNTERS", "BIAS_WIDTH", "MULT_WIDTH", "SHIFT_WIDTH",
    "ZP_WIDTH", "STATUS_COUNTER_WIDTH",
    "descriptor_layout", "channel_params_layout", "tile_params_layout", "param_beat_layout",
    "act_beat_layout", "weight_beat_layout", "result_beat_layout", "status_layout",
    "lane_width", "pack_factor", "pack", "unpack", "field_offsets",
]

STATUS_COUNTER_WIDTH = 32
BIAS_WIDTH = 32
MULT_WIDTH = 31      # tflite: Q31, 0 <= M < 2**31; half_up: M < 2**16
SHIFT_WIDTH = 7      # signed; tflite 0..31, half_up 0..47
ZP_WIDTH = 17        # output zero point and clamp bounds, signed


class RequantMode(enum.Enum, shape=2):
    NONE = 0         # raw accumulators out
    TFLITE = 1
    HALF_UP = 2


class ErrorFlag:
    """Bits of the status ``error`` field."""
    BAD_DESC = 1 << 0       # descriptor outside the elaborated limits or inconsistent
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
#   busy          the array computed: a dense element or a depthwise tap entered it
#   setup         descriptor check, waiting for tile parameters, pass start bubble
#   stall_input   waiting for rows in the line buffer
#   stall_weight  waiting for a weight tile (dense) or a word's tap weights (depthwise)
#   stall_output  waiting for result-queue credits
#   fill          depthwise: waiting for a row vector's line-buffer reads
#   drain         everything issued; waiting for the last result
COUNTERS = ("cycles", "busy", "setup", "stall_input", "stall_weight",
            "stall_output", "fill", "drain")


def descriptor_layout(cfg: HardwareConfig):
    return data.StructLayout({
        "depthwise":   unsigned(1),                 # the depthwise mapping
        "cwords":      unsigned(cfg.cw_bits),       # input-channel words per pixel
        "cotiles":     unsigned(cfg.cot_bits),      # output-channel tiles (depthwise: words)
        "n_tiles":     unsigned(cfg.tile_bits),     # dense: weight tiles (sum of taps*words)
        "height":      unsigned(cfg.h_bits),        # rows streamed
        "width":       unsigned(cfg.w_bits),        # pixels per streamed row
        "out_height":  unsigned(cfg.h_bits),
        "out_width":   unsigned(cfg.w_bits),
        "pass_rows":   unsigned(cfg.h_bits),        # dense: G, output rows per pass
        "kh":          unsigned(cfg.k_bits),
        "kw":          unsigned(cfg.k_bits),
        "stride_h":    unsigned(cfg.s_bits),
        "stride_w":    unsigned(cfg.s_bits),
        "dil_h":       unsigned(cfg.d_bits),
        "dil_w":       unsigned(cfg.d_bits),
        "pad_top":     unsigned(cfg.pad_bits),
        "pad_bottom":  unsigned(cfg.pad_bits),
        "pad_left":    unsigned(cfg.pad_bits),      # dense only (depthwise rows come padded)
        "pad_right":   unsigned(cfg.pad_bits),
        "phase_words": unsigned(cfg.w_bits),        # depthwise: words per column phase
        "pad_value":   signed(cfg.data_width),
        "requant":     RequantMode,
        "out_zp":      signed(ZP_WIDTH),
        "out_bits":    unsigned(5),                 # requantized output width, 2..16
        "clamp_lo":    signed(ZP_WIDTH),            # requantized results clamped to
        "clamp_hi":    signed(ZP_WIDTH),            # [clamp_lo, clamp_hi]
    })


def channel_params_layout(cfg: HardwareConfig):
    return data.StructLayout({
        "bias":  signed(BIAS_WIDTH),
        "mult":  unsigned(MULT_WIDTH),
        "shift": signed(SHIFT_WIDTH),
    })


def tile_params_layout(cfg: HardwareConfig):
    return data.StructLayout({
        "lanes":    data.ArrayLayout(channel_params_layout(cfg), cfg.cols),
        "cw_first": unsigned(cfg.cw_bits),
        "cw_count": unsigned(cfg.cw_bits),
    })


def _framed(payload):
    return data.StructLayout({"data": payload, "last": unsigned(1)})


def param_beat_layout(cfg):
    return _framed(tile_params_layout(cfg))


def act_beat_layout(cfg):
    # act_pixels neighbouring pixels of one word of rows channels:
    # lanes [p*rows, (p+1)*rows) are pixel x+p
    return _framed(data.ArrayLayout(signed(cfg.data_width), cfg.rows * cfg.act_pixels))


def weight_beat_layout(cfg):
    return _framed(data.ArrayLayout(signed(cfg.data_width), cfg.cols))


def result_beat_layout(cfg):
    return _framed(unsigned(cfg.cols * cfg.acc_width))


def status_layout(cfg):
    fields = {"error": unsigned(8)}
    for name in COUNTERS:
        fields[name] = unsigned(STATUS_COUNTER_WIDTH)
    return data.StructLayout(fields)


def lane_width(cfg, requant, out_bits):
    """Bits per packed result value: 8 (``out_bits <= 8``) or 16 with requantization
    where a beat then holds two or more of them; ``acc_width`` otherwise."""
    if requant == RequantMode.NONE or requant == 0:
        return cfg.acc_width
    w = 8 if out_bits <= 8 else 16
    return w if cfg.acc_width >= 2 * w else cfg.acc_width


def pack_factor(cfg, requant, out_bits):
    """Output pixels per result beat."""
    return cfg.acc_width // lane_width(cfg, requant, out_bits)


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
