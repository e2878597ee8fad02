"""The one hardware configuration of a systolic-conv accelerator instance.

Everything that is fixed when the Verilog is generated lives here: the array
size, the data and accumulator widths, and the sizes of the on-chip buffers.
Everything a layer chooses (kernel, stride, dilation, padding, channel counts,
image size, requantization) is a run-time descriptor field instead
(see :mod:`systolic_conv.hw.layouts`), so one Verilator build serves many layers.

The same object generates the Verilog, parameterizes the testbenches and tells
the host library what it is driving.
"""

from dataclasses import dataclass, field, asdict
import hashlib
import json

__all__ = ["HardwareConfig", "DEFAULT", "NO_RW_CHECK"]

#: Attributes of a memory whose reads never use a word written in the same cycle:
#: Yosys then maps each read straight onto the block RAM's port (no collision
#: bypass after it), so the register after the read stays a register.
NO_RW_CHECK = {"no_rw_check": 1}


def _is_pow2(n):
    return isinstance(n, int) and n >= 1 and (n & (n - 1)) == 0


def _bits(n):
    """Bits needed to represent the unsigned value ``n``."""
    return max(1, int(n).bit_length())


def _log2(n):
    return (int(n) - 1).bit_length()


@dataclass(frozen=True)
class HardwareConfig:
    """Elaboration-time parameters of the accelerator.

    Parameters
    ----------
    rows : int
        Array rows R: reduction lanes, i.e. input channels per activation word.
    cols : int
        Array columns C: output channels computed per pass.
    data_width : int
        Signed width of activations and weights (4, 8 or 16).
    acc_width : int or None
        Accumulator width; default ``2*data_width + 16``.
    act_pixels : int
        Neighbouring pixels per activation beat and per line-buffer word (1, 2
        or 4); a power of two no larger than ``max_width``.
    max_width : int
        Longest image row (pixels) the line buffer holds; power of two.
    max_cwords : int
        Input-channel words (of ``rows`` channels) per pixel the line buffer
        holds; power of two. The channel tile is ``rows * max_cwords``.
    lb_rows : int
        Line-buffer row slots of the dense mapping; power of two. A pass needs
        ``(G-1)*stride_h + (kh-1)*dil_h + 1`` of them. The depthwise mapping
        streams one word at a time and uses the same memory as a ring of
        ``lb_rows * max_cwords`` rows.
    max_kernel : int
        Largest kernel height/width of the dense mapping.
    max_stride : int
        Largest stride (larger ones are decomposed by the planner).
    max_dilation : int
        Largest dilation (larger ones are decomposed by the planner).
    max_height : int
        Most rows streamed in one invocation.
    acc_depth : int
        Output pixels held by the accumulator buffer (one pass: G rows x W_out).
    weight_depth : int
        Weight memory words (a word is one array row of ``cols`` weights).
    max_cotiles : int
        Most output-channel tiles (of ``cols`` channels) in one invocation.
    out_fifo_depth : int
        Result queue depth in beats; power of two.
    dw_kernel : int
        Largest kernel height/width of the depthwise mapping (channels on
        columns, output pixels on rows, taps in time; needs ``rows == cols``).
    dw_max_stride : int
        Largest horizontal stride of the depthwise mapping (the host streams
        each row as ``stride`` column phases).
    faults : tuple of str
        Named faults injected for mutation testing; empty for real hardware.
    """

    rows: int = 8
    cols: int = 8
    data_width: int = 8
    acc_width: int = None
    act_pixels: int = 4
    max_width: int = 64
    max_cwords: int = 16
    lb_rows: int = 16
    max_kernel: int = 7
    max_stride: int = 4
    max_dilation: int = 8
    max_height: int = 1024
    acc_depth: int = 512
    weight_depth: int = 16384
    max_cotiles: int = 64
    out_fifo_depth: int = 64
    dw_kernel: int = 5
    dw_max_stride: int = 4
    faults: tuple = field(default=())

    def __post_init__(self):
        def positive(name):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")

        for name in ("rows", "cols", "act_pixels", "max_width", "max_cwords", "lb_rows",
                     "max_kernel", "max_stride", "max_dilation", "max_height", "acc_depth",
                     "weight_depth", "max_cotiles", "out_fifo_depth", "dw_kernel",
                     "dw_max_stride"):
            positive(name)
        if self.data_width not in (4, 8, 16):
            raise ValueError(f"data_width must be 4, 8 or 16, not {self.data_width!r}")
        if self.acc_width is None:
            object.__setattr__(self, "acc_width", 2 * self.data_width + 16)
        if not isinstance(self.acc_width, int) or not (2 * self.data_width + 4 <= self.acc_width <= 64):
            raise ValueError(f"acc_width must be an integer from {2 * self.data_width + 4} to 64, "
                             f"not {self.acc_width!r}")
        for name in ("act_pixels", "max_width", "max_cwords", "lb_rows", "out_fifo_depth"):
            if not _is_pow2(getattr(self, name)):
                raise ValueError(f"{name} must be a power of two, not {getattr(self, name)!r}")
        if self.act_pixels > 4 or self.act_pixels > self.max_width:
            raise ValueError(f"act_pixels must be 1, 2 or 4 and at most max_width={self.max_width}, "
                             f"not {self.act_pixels!r}")
        if self.weight_depth < self.rows * 2:
            raise ValueError(f"weight_depth must hold two tiles of rows={self.rows} words, "
                             f"not {self.weight_depth!r}")
        if self.out_fifo_depth < 4:
            raise ValueError(f"out_fifo_depth must be at least 4, not {self.out_fifo_depth!r}")
        if self.lb_rows < 2:
            raise ValueError(f"lb_rows must be at least 2, not {self.lb_rows!r}")
        if self.out_fifo_depth < self.acc_width // 8:
            raise ValueError(f"out_fifo_depth must hold a beat of packed results, at least "
                             f"{self.acc_width // 8}, not {self.out_fifo_depth!r}")
        if self.depthwise_mode and self.out_fifo_depth < 2 * self.rows:
            raise ValueError(f"out_fifo_depth must be at least 2*rows={2 * self.rows} "
                             f"(a depthwise block's results), not {self.out_fifo_depth!r}")
        from .faults import FAULTS
        object.__setattr__(self, "faults", tuple(self.faults))
        for f in self.faults:
            if f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}; known faults: {', '.join(sorted(FAULTS))}")

    # -- derived figures -------------------------------------------------------------
    @property
    def pes(self):
        return self.rows * self.cols

    @property
    def depthwise_mode(self):
        """Whether the depthwise mapping exists: channels on columns (``rows == cols``),
        blocks of ``rows`` pixels aligned to line-buffer words (``rows`` a power of two
        and a multiple of ``act_pixels``)."""
        return (self.rows == self.cols and _is_pow2(self.rows)
                and self.rows % self.act_pixels == 0)

    @property
    def channel_tile(self):
        """Input channels the line buffer holds per pixel."""
        return self.rows * self.max_cwords

    @property
    def weight_tiles(self):
        """R x C weight tiles the weight memory holds."""
        return self.weight_depth // self.rows

    @property
    def psum_width(self):
        """Width of a partial sum inside the array: a column sum of ``rows``
        products (dense) or ``dw_kernel**2`` products of one PE (depthwise)."""
        n = max(self.rows, self.dw_kernel ** 2 if self.depthwise_mode else 1)
        return 2 * self.data_width - 1 + _log2(n) + 1

    @property
    def lb_words(self):
        """Line-buffer words per row of one channel word (``max_width / act_pixels``)."""
        return self.max_width // self.act_pixels

    @property
    def lb_depth(self):
        return self.lb_rows * self.max_cwords * self.lb_words

    @property
    def dw_ring_rows(self):
        """Rows of one channel word the line buffer holds in the depthwise mapping."""
        return self.lb_rows * self.max_cwords

    @property
    def dw_vector(self):
        """Entries of the depthwise row-vector register: the ``rows`` pixels of a
        block plus the taps of one kernel-row phase group beyond the first."""
        return self.rows + self.dw_kernel - 1

    @property
    def dw_shadow_words(self):
        """Line-buffer words a depthwise row vector is read from."""
        return -(-self.dw_vector // self.act_pixels)

    # widths of descriptor fields
    @property
    def w_bits(self):
        return _bits(self.max_width)

    @property
    def h_bits(self):
        return _bits(self.max_height)

    @property
    def k_bits(self):
        return _bits(max(self.max_kernel, self.dw_kernel))

    @property
    def s_bits(self):
        return _bits(max(self.max_stride, self.dw_max_stride))

    @property
    def d_bits(self):
        return _bits(self.max_dilation)

    @property
    def y_bits(self):
        """Width of a vertical extent (rows a pass spans, the last input row read)."""
        return _bits(self.max_height * self.max_stride + self.max_kernel * self.max_dilation)

    @property
    def x_bits(self):
        """Width of a horizontal extent (the last input column read)."""
        return _bits(self.max_width * max(self.max_stride, self.dw_max_stride)
                     + self.max_kernel * self.max_dilation)

    @property
    def cw_bits(self):
        return _bits(self.max_cwords)

    @property
    def cot_bits(self):
        return _bits(self.max_cotiles)

    @property
    def pad_bits(self):
        # padding can reach dil*(k-1) on one side ('same' and larger explicit pads
        # are limited by the output-size check)
        return _bits(self.max_dilation * (self.max_kernel - 1) + self.max_width)

    @property
    def tile_bits(self):
        return _bits(self.weight_tiles)

    @property
    def acc_addr_bits(self):
        return _bits(self.acc_depth)

    def to_dict(self):
        d = asdict(self)
        d["faults"] = list(self.faults)
        return d

    def key(self):
        """A short hash naming this configuration (build directories, caches)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def name(self):
        s = f"r{self.rows}c{self.cols}d{self.data_width}a{self.acc_width}"
        if self.faults:
            s += "-" + "-".join(self.faults)
        return s

    def __str__(self):
        return (f"HardwareConfig({self.rows}x{self.cols} PEs, int{self.data_width} data, "
                f"int{self.acc_width} acc, line buffer {self.lb_rows} rows x {self.max_width} px x "
                f"{self.channel_tile} ch, weights {self.weight_depth} words, acc {self.acc_depth} px)")


DEFAULT = HardwareConfig()
