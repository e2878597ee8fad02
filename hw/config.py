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

__all__ = ["HardwareConfig", "DEFAULT", "word_major"]


def _is_pow2(n):
    return isinstance(n, int) and n >= 1 and (n & (n - 1)) == 0


def _bits(n):
    """Bits needed to represent the unsigned value ``n``."""
    return max(1, int(n).bit_length())


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
    max_width : int
        Longest image row (pixels) the line buffer holds; power of two.
    max_cwords : int
        Input-channel words (of ``rows`` channels) per pixel the line buffer
        holds; power of two. The channel tile is ``rows * max_cwords``.
    lb_rows : int
        Line-buffer row slots; power of two. A pass needs
        ``(G-1)*stride_h + (kh-1)*dil_h + 1`` of them.
    max_kernel : int
        Largest kernel height/width.
    max_stride : int
        Largest stride.
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
        Result FIFO depth; power of two.
    dw_kernel : int
        Largest kernel height/width of the depthwise mode (taps on rows, channels
        on columns; needs ``rows == cols``). Larger depthwise kernels use the dense
        mapping.
    dw_dilation : int
        Largest horizontal dilation of the depthwise mode.
    faults : tuple of str
        Named faults injected for mutation testing; empty for real hardware.
    """

    rows: int = 8
    cols: int = 8
    data_width: int = 8
    acc_width: int = None
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
    dw_dilation: int = 2
    faults: tuple = field(default=())

    def __post_init__(self):
        def positive(name):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")

        for name in ("rows", "cols", "max_width", "max_cwords", "lb_rows", "max_kernel",
                     "max_stride", "max_dilation", "max_height", "acc_depth",
                     "weight_depth", "max_cotiles", "out_fifo_depth", "dw_kernel",
                     "dw_dilation"):
            positive(name)
        if self.data_width not in (4, 8, 16):
            raise ValueError(f"data_width must be 4, 8 or 16, not {self.data_width!r}")
        if self.acc_width is None:
            object.__setattr__(self, "acc_width", 2 * self.data_width + 16)
        if not isinstance(self.acc_width, int) or not (2 * self.data_width + 4 <= self.acc_width <= 64):
            raise ValueError(f"acc_width must be an integer from {2 * self.data_width + 4} to 64, "
                             f"not {self.acc_width!r}")
        for name in ("max_width", "max_cwords", "lb_rows", "out_fifo_depth"):
            if not _is_pow2(getattr(self, name)):
                raise ValueError(f"{name} must be a power of two, not {getattr(self, name)!r}")
        if self.weight_depth < self.rows:
            raise ValueError(f"weight_depth must hold one tile of rows={self.rows} words, "
                             f"not {self.weight_depth!r}")
        if self.out_fifo_depth < 4:
            raise ValueError(f"out_fifo_depth must be at least 4, not {self.out_fifo_depth!r}")
        if self.lb_rows < 2:
            raise ValueError(f"lb_rows must be at least 2, not {self.lb_rows!r}")
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
        """Whether the depthwise mapping exists (it needs square arrays)."""
        return self.rows == self.cols

    @property
    def act_pixels(self):
        """Pixels per activation beat: 2 (neighbouring columns of one word, written
        at once into the even and odd halves of the line buffer) when
        ``max_width >= 2``, else 1."""
        return 2 if self.max_width >= 2 else 1

    @property
    def dw_dual_read(self):
        """Whether the depthwise window generator reads two neighbouring columns per
        cycle (one from each parity half of the line buffer) when both are needed
        before the next element (window fill, strides above 1)."""
        return self.depthwise_mode and self.act_pixels == 2

    @property
    def dw_window_cols(self):
        """Columns of the depthwise window register."""
        return (self.dw_kernel - 1) * self.dw_dilation + 1

    @property
    def channel_tile(self):
        """Input channels the line buffer holds per pixel."""
        return self.rows * self.max_cwords

    @property
    def weight_tiles(self):
        """R x C weight tiles the weight memory holds."""
        return self.weight_depth // self.rows

    @property
    def array_latency(self):
        """Cycles from an activation vector entering the array to its de-skewed sums."""
        return self.rows + self.cols + 1

    @property
    def lb_depth(self):
        return self.lb_rows * self.max_width * self.max_cwords

    # widths of descriptor fields
    @property
    def w_bits(self):
        return _bits(self.max_width)

    @property
    def h_bits(self):
        return _bits(self.max_height)

    @property
    def k_bits(self):
        return _bits(self.max_kernel)

    @property
    def s_bits(self):
        return _bits(self.max_stride)

    @property
    def d_bits(self):
        return _bits(self.max_dilation)

    @property
    def cw_bits(self):
        return _bits(self.max_cwords)

    @property
    def fold_bits(self):
        """Width of a tile's fold count: input words (dense) or tap groups (depthwise)."""
        return _bits(max(self.max_cwords, -(-self.dw_kernel ** 2 // self.rows)))

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


def word_major(cfg, depthwise, height, cwords, pass_rows, out_height):
    """Whether an invocation streams its activations word-major (word -> row ->
    column) instead of raster order with the words of a pixel together.

    Depthwise invocations whose rows all stay in the line buffer (one pass, at most
    ``lb_rows`` rows) and that have several words: output-channel tile ``t`` reads
    only word ``t``, so it may start as soon as that word is in instead of waiting
    for the whole image (small images, where the wait is a large share).
    """
    return bool(depthwise) and cwords >= 2 and height <= cfg.lb_rows and \
        pass_rows >= out_height
