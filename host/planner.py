"""Tiling planner: any valid conv2d layer on any hardware configuration.

A plan is data: a list of :class:`TileSpec` (one hardware invocation each) that
together cover every output element exactly once per reduction part. Every
invocation is one image x one channel part x one row segment x one column
segment, and :class:`TilePlan` stores those factors (``tiles`` is built from them
on first access; the cycle model never needs it). The planner splits a layer along

* batch -- one invocation per image;
* groups -- whole groups per invocation, as many as the line buffer's channel tile
  holds (this is how depthwise layers are packed: many groups share the words of
  one pass, and each output-channel tile reduces only over its own groups' words);
* reduction -- input channels of a group beyond the channel tile, channels whose
  accumulator bound (DESIGN section 1) would not hold, and kernel rows/columns beyond the
  hardware limits become separate invocations whose partial sums the host adds in
  int64 (then the host adds the bias once and requantizes: "host-side work");
* output channels -- so that the tile parameters and weight tiles fit on chip;
* space -- output-column strips (input strips with their halo) when a row is wider
  than the line buffer, output-row bands when the image is taller than the
  descriptor allows;
* dilation beyond the hardware maximum -- polyphase decomposition: with
  ``e = gcd(s, d)``, output phase ``p`` of ``d/e`` phases reads an arithmetic
  subsequence of the input and becomes a dilation-1, stride-``s/e`` convolution.

Padding: ``zeros`` (and the pad value) is inserted on the fly by the window
generator. For reflect / replicate / circular, rows are streamed in padded order
(rows repeated, reflected or wrapped: vertical padding by streaming order) and the
window generator maps the left/right border columns when the strip is the whole
row; a column strip narrower than the row (or a polyphase column subsequence)
streams its mapped border columns instead, which the plan counts as host pre-pad
columns.
"""

from dataclasses import dataclass, field
from functools import lru_cache
from math import gcd
from typing import NamedTuple

import numpy as np

from .hw.config import HardwareConfig
from .contract import ConvGeometry, acc_bound_ok
from .streams import tile_word_ranges, choose_pass_rows

__all__ = ["AxisSegment", "ChannelPart", "TileSpec", "TilePlan", "plan_layer",
           "source_index", "word_ranges"]


def source_index(v, n, pad_lo, mode):
    """Map padded coordinates ``v`` to source indices (-1: a zeros-mode pad position)."""
    i = np.asarray(v, dtype=np.int64) - pad_lo
    if mode == "zeros":
        return np.where((i >= 0) & (i < n), i, -1)
    if mode == "reflect":
        i = np.where(i < 0, -i, i)
        return np.where(i >= n, 2 * (n - 1) - i, i)
    if mode == "replicate":
        return np.clip(i, 0, n - 1)
    if mode == "circular":
        return np.mod(i, n)
    raise ValueError(f"padding_mode={mode!r}")


@dataclass
class AxisSegment:
    """One spatial axis of an invocation.

    ``out_idx`` are the output coordinates it produces; ``src`` the source
    coordinates streamed (in order); the hardware then pads ``pad_lo``/``pad_hi``
    positions with the pad value and convolves taps ``k_lo:k_hi`` of the kernel with
    ``stride``/``dil``. For reflect / replicate / circular the streamed positions
    already include the mapped border positions (``prepad`` counts the columns
    among them: host pre-pad work) and the pads are zero.
    """
    out_idx: np.ndarray
    src: np.ndarray
    pad_lo: int
    pad_hi: int
    stride: int
    dil: int
    k_lo: int
    k_hi: int
    prepad: int = 0

    @property
    def k(self):
        return self.k_hi - self.k_lo


@lru_cache(maxsize=1024)
def _axis_segments(n_in, pad_lo, pad_hi, k, s, d, mode, n_out, *, max_dil, max_k,
                   max_span, max_stream, max_out, is_col, fits=None):
    """Split one axis into segments the hardware can run (see module docstring).
    ``fits(segment)``: a further limit on a segment (fewer outputs until it holds).

    A pure function of its arguments: the segments (read-only arrays) are cached
    and shared by every plan with the same axis.
    """
    segs = []
    # polyphase: output phase p reads positions o*s + j*d, a conv with (hw_s, hw_d)
    if d <= max_dil:
        phases = [(np.arange(n_out), s, d)]     # (outputs, hw_s, hw_d)
    else:
        e = gcd(s, d)
        phases = [(np.arange(p, n_out, d // e), s // e, 1) for p in range(min(d // e, n_out))]
    # kernel chunks: taps per chunk limited by max_k and by the span limit
    for outs_all, hs, hd in phases:
        kc = max(1, min(max_k, (max_span - 1) // hd + 1))
        for k_lo in range(0, k, kc):
            kk = min(k, k_lo + kc) - k_lo
            # chunk outputs so the streamed length and accumulator fit (zeros mode
            # streams only the valid part, so longer chunks may fit then)
            pos = 0
            while pos < len(outs_all):
                outs = outs_all[pos:]
                m = min(len(outs), max_out)
                while True:
                    seg = _make_segment(outs[:m], n_in, pad_lo, k_lo, kk, s, d, hs, hd, mode,
                                        is_col)
                    if m == 1 or (len(seg.src) <= max_stream and (fits is None or fits(seg))):
                        break
                    if len(seg.src) <= max_stream:
                        m -= 1
                        continue
                    m = max(1, min(m - 1, m * max_stream // max(1, len(seg.src))))
                if len(seg.src) > max_stream:
                    raise ValueError(f"one output needs {len(seg.src)} streamed positions, "
                                     f"more than the hardware's {max_stream}")
                seg.out_idx.setflags(write=False)
                seg.src.setflags(write=False)
                segs.append(seg)
                pos += m
    return tuple(segs)


def _make_segment(outs, n_in, pad_lo, k_lo, kk, s, d, hs, hd, mode, is_col):
    # padded positions v0 + step * i, i < length (polyphase: every d-th position)
    length = (len(outs) - 1) * hs + (kk - 1) * hd + 1
    step = 1 if hd == d else d
    v0 = int(outs[0]) * s + k_lo * d
    if mode == "zeros":
        # the real positions are one run, source indices a + step * i for lo <= i <= hi
        a = v0 - pad_lo
        lo = max(0, -(a // step))
        hi = min(length - 1, (n_in - 1 - a) // step)
        if lo > hi:
            # every tap is padding: stream one real position and pad around it
            return AxisSegment(outs, np.array([0]), length, 0, hs, hd, k_lo, k_lo + kk)
        src = np.arange(a + step * lo, a + step * hi + 1, step)
        return AxisSegment(outs, src, lo, length - 1 - hi, hs, hd, k_lo, k_lo + kk)
    # non-zero modes: the host streams the mapped positions (rows in padded order,
    # border columns pre-padded); the hardware sees an unpadded axis
    v = v0 + step * np.arange(length)
    src = source_index(v, n_in, pad_lo, mode)
    inside = (v - pad_lo >= 0) & (v - pad_lo < n_in)
    prepad = int((~inside).sum())
    return AxisSegment(outs, src, 0, 0, hs, hd, k_lo, k_lo + kk,
                       prepad=prepad if is_col else 0)


@dataclass
class TileSpec:
    """One hardware invocation of a plan."""
    n: int                      # image
    ci: tuple                   # input channels [lo, hi)
    co: tuple                   # output channels [lo, hi)
    groups: int                 # groups inside the invocation
    ci_sub: tuple               # channels of each group taken [lo, hi) (reduction split)
    rows: AxisSegment
    cols: AxisSegment
    first: bool                 # first reduction part of its outputs (carries the bias)
    complete: bool              # the only reduction part (hardware may requantize)
    depthwise: bool = False     # the depthwise mapping (taps on rows, channels on columns)
    co_phase: int = 0           # offset of co[0] inside its group
    cog: int = 1                # output channels per group
    pass_rows: int = 1
    cotiles: int = 0
    n_tiles: int = 0
    macs: int = 0

    @property
    def out_shape(self):
        return (self.co[1] - self.co[0], len(self.rows.out_idx), len(self.cols.out_idx))

    def __str__(self):
        r, c = self.rows, self.cols
        return (f"img {self.n} ci[{self.ci[0]}:{self.ci[1]}] co[{self.co[0]}:{self.co[1]}] "
                f"g{self.groups} out {len(r.out_idx)}x{len(c.out_idx)} "
                f"in {len(r.src)}x{len(c.src)} k[{r.k_lo}:{r.k_hi},{c.k_lo}:{c.k_hi}] "
                f"s{r.stride}x{c.stride} d{r.dil}x{c.dil} pad t{r.pad_lo} b{r.pad_hi} "
                f"l{c.pad_lo} r{c.pad_hi} G{self.pass_rows} "
                f"tiles {self.n_tiles} {'first' if self.first else ''}"
                f"{' complete' if self.complete else ''} {self.macs} MACs")


class ChannelPart(NamedTuple):
    """The channels of one output-channel chunk and reduction part of a plan.

    The fields are those of every :class:`TileSpec` of the part (one per image,
    row segment and column segment).
    """
    ci: tuple                   # input channels [lo, hi)
    co: tuple                   # output channels [lo, hi)
    groups: int                 # groups inside the invocation
    ci_sub: tuple               # channels of each group taken [lo, hi)
    co_phase: int               # offset of co[0] inside its group
    cog: int                    # output channels per group


@dataclass
class TilePlan:
    """A layer's invocations, stored factorized.

    Every invocation is one image x one channel part x one row segment x one
    column segment; ``tiles`` lists their :class:`TileSpec` (built on first
    access) in that nesting order: invocation ``i`` is
    ``((n * len(parts) + p) * len(rows) + r) * len(cols) + c``.
    """
    geometry: ConvGeometry
    cfg: HardwareConfig
    reduction_parts: int = 1
    host_prepad_columns: int = 0
    batch: int = 0
    rows: tuple = field(default=(), repr=False)     # AxisSegment
    cols: tuple = field(default=(), repr=False)     # AxisSegment
    parts: tuple = field(default=(), repr=False)    # ChannelPart
    dw: bool = False            # depthwise layer on a square array (per tile: if it fits)
    _tiles: list = field(default=None, init=False, repr=False, compare=False)

    @property
    def macs(self):
        return self.geometry.macs

    @property
    def invocations(self):
        return self.batch * len(self.parts) * len(self.rows) * len(self.cols)

    @property
    def tiles(self):
        if self._tiles is None:
            self._tiles = [self._spec(n, p, r, c) for n in range(self.batch)
                           for p in self.parts for r in self.rows for c in self.cols]
        return self._tiles

    def index(self, i):
        """``(image, part, row segment, column segment)`` indices of invocation ``i``."""
        i, c = divmod(i, len(self.cols))
        i, r = divmod(i, len(self.rows))
        n, p = divmod(i, len(self.parts))
        return n, p, r, c

    def tile(self, i):
        """The :class:`TileSpec` of invocation ``i`` (without building the others)."""
        if self._tiles is not None:
            return self._tiles[i]
        n, p, r, c = self.index(i)
        return self._spec(n, self.parts[p], self.rows[r], self.cols[c])

    def tile_macs(self, i):
        """``tile(i).macs`` (without building the tile)."""
        _n, p, r, c = self.index(i)
        return _macs(self.parts[p], self.rows[r], self.cols[c])

    def depthwise(self, r, c):
        """Whether invocations on row segment ``r`` and column segment ``c`` use the
        depthwise mapping (every segment of a depthwise plan is cut for it)."""
        return self.dw

    def pass_rows(self, r, c, cin=0):
        """G of the invocations on row segment ``r`` and column segment ``c`` with
        ``cin`` input channels."""
        return _pass_rows(self.cfg, r, c, self.depthwise(r, c), -(-cin // self.cfg.rows))

    def _spec(self, n, part, r, c):
        spec = TileSpec(n=n, ci=part.ci, co=part.co, groups=part.groups, ci_sub=part.ci_sub,
                        rows=r, cols=c, first=part.ci_sub[0] == 0 and r.k_lo == 0 and c.k_lo == 0,
                        complete=(self.reduction_parts == 1), co_phase=part.co_phase,
                        cog=part.cog, depthwise=self.depthwise(r, c))
        _finish_spec(spec, self.geometry, self.cfg)
        return spec

    def summary(self):
        kinds = []
        g = self.geometry
        if self.reduction_parts > 1:
            kinds.append(f"reduction split x{self.reduction_parts}")
        if g.groups > 1:
            kinds.append(f"groups={g.groups}")
        return (f"TilePlan: {g}\n  on {self.cfg}\n  {self.invocations} invocations"
                f"{' (' + ', '.join(kinds) + ')' if kinds else ''}, "
                f"host pre-pad columns {self.host_prepad_columns}")

    def __str__(self):
        lines = [self.summary()]
        for i in range(min(40, self.invocations)):
            lines.append(f"  [{i}] {self.tile(i)}")
        if self.invocations > 40:
            lines.append(f"  ... {self.invocations - 40} more")
        return "\n".join(lines)


def plan_layer(geom: ConvGeometry, cfg: HardwareConfig, *, x_absmax=None, w_absmax=None,
               b_absmax=0, pad_value=0):
    """Plan ``geom`` on ``cfg``.

    ``x_absmax``/``w_absmax``/``b_absmax`` bound the data (default: the full range of
    ``cfg.data_width``, the pad value included); the reduction per invocation is
    split until the accumulator bound holds for every invocation.
    """
    full = 1 << (cfg.data_width - 1)
    xa = full if x_absmax is None else max(int(x_absmax), abs(int(pad_value)))
    wa = full if w_absmax is None else int(w_absmax)
    G = geom.groups
    cg, cog = geom.C_in // G, geom.C_out // G
    kh, kw = geom.kh, geom.kw
    sh, sw = geom.stride
    dh, dwl = geom.dilation
    pt, pb, pl, pr = geom.pad
    mode = geom.padding_mode

    # the depthwise mapping: one input channel per group, multiplier 1, a hardware that
    # has it, and a stride its column phases cover (dilation is decomposed)
    dw = (G == geom.C_in == geom.C_out and cfg.depthwise_mode
          and sw // gcd(sw, dwl) <= cfg.dw_max_stride)
    # -- spatial segments
    if dw:
        rows = _axis_segments(geom.H, pt, pb, kh, sh, dh, mode, geom.H_out,
                              max_dil=cfg.max_dilation, max_k=cfg.dw_kernel,
                              max_span=cfg.dw_ring_rows, max_stream=cfg.max_height,
                              max_out=cfg.max_height, is_col=False)
        hs = sw // gcd(sw, dwl) if dwl > 1 else sw
        cols = _axis_segments(geom.W, pl, pr, kw, sw, dwl, mode, geom.W_out,
                              max_dil=1, max_k=cfg.dw_kernel, max_span=cfg.max_width,
                              max_stream=cfg.max_width,
                              max_out=_dw_max_out(cfg, hs, min(kw, cfg.dw_kernel)), is_col=True,
                              fits=lambda seg, hs=hs: _dw_row_fits(cfg, seg, hs))
    else:
        rows = _axis_segments(geom.H, pt, pb, kh, sh, dh, mode, geom.H_out,
                              max_dil=cfg.max_dilation, max_k=cfg.max_kernel,
                              max_span=cfg.lb_rows, max_stream=cfg.max_height,
                              max_out=cfg.max_height, is_col=False)
        cols = _axis_segments(geom.W, pl, pr, kw, sw, dwl, mode, geom.W_out,
                              max_dil=cfg.max_dilation, max_k=cfg.max_kernel,
                              max_span=cfg.max_width, max_stream=cfg.max_width,
                              max_out=min(cfg.acc_depth, cfg.max_width), is_col=True)

    # -- channel chunks: (ci range, co range, groups, ci_sub) per reduction part
    tile = cfg.channel_tile
    if cg <= tile:
        # accumulator bound for a whole group reduction inside one invocation
        per_group_k = cg * min(kh, cfg.max_kernel) * min(kw, cfg.max_kernel)
        sub_splits = [(0, cg)]
        if not acc_bound_ok(per_group_k, xa, wa, b_absmax, cfg.acc_width):
            sub_splits = _split_channels(cg, kh, kw, xa, wa, b_absmax, cfg)
    else:
        sub_splits = [(a, min(cg, a + tile)) for a in range(0, cg, tile)]
        sub_splits = [p for a, b in sub_splits
                      for p in _refine(a, b, kh, kw, xa, wa, b_absmax, cfg)]
    # chunks of whole groups (or one group and a channel sub-range of it)
    chunks = []     # (g0, g1, (a, b))
    if len(sub_splits) == 1:
        per = max(1, tile // cg) if cg <= tile else 1
        for g0 in range(0, G, per):
            chunks.append((g0, min(G, g0 + per), (0, cg)))
    else:
        for g in range(G):
            for ab in sub_splits:
                chunks.append((g, g + 1, ab))
    kparts = len({(r.k_lo, r.k_hi) for r in rows}) * len({(c.k_lo, c.k_hi) for c in cols})
    parts = []
    if geom.N:
        khm = max(r.k for r in rows)
        kwm = max(c.k for c in cols)
        for (g0, g1, (a, b)) in chunks:
            for co_lo, co_hi in _co_chunks(g0, g1, cog, b - a, cfg, khm, kwm):
                ga, gb = co_lo // cog, (co_hi - 1) // cog + 1
                parts.append(ChannelPart((ga * cg + a, (gb - 1) * cg + b), (co_lo, co_hi),
                                         gb - ga, (a, b), co_lo - ga * cog, cog))
    prepad = geom.N * len(parts) * len(rows) * sum(c.prepad for c in cols)
    return TilePlan(geometry=geom, cfg=cfg, reduction_parts=len(sub_splits) * kparts,
                    host_prepad_columns=prepad, batch=geom.N, rows=rows, cols=cols,
                    parts=tuple(parts), dw=dw)


def _split_channels(cg, kh, kw, xa, wa, ba, cfg):
    return _refine(0, cg, kh, kw, xa, wa, ba, cfg)


def _refine(a, b, kh, kw, xa, wa, ba, cfg):
    per = _reduction_per(b - a, min(kh, cfg.max_kernel) * min(kw, cfg.max_kernel), xa, wa, ba,
                         cfg.acc_width)
    return [(i, min(b, i + per)) for i in range(a, b, per)]


@lru_cache(maxsize=1024)
def _reduction_per(n, k, xa, wa, ba, acc_width):
    """Channels per reduction part of ``n`` channels of ``k`` taps: ``n`` halved until
    the accumulator bound holds."""
    per = n
    while per > 1 and not acc_bound_ok(per * k, xa, wa, ba, acc_width):
        per = per // 2
    if not acc_bound_ok(per * k, xa, wa, ba, acc_width):
        raise ValueError(f"acc_width={acc_width} cannot hold even a single input channel's "
                         f"{k} taps at |x|<={xa}, |w|<={wa}, |b|<={ba}")
    return per


@lru_cache(maxsize=1 << 14)
def word_ranges(c_in, c_out, groups, rows, cols, cog=None, co_phase=0):
    """:func:`~.streams.tile_word_ranges` as a tuple, cached.

    An invocation inside one group reduces every output-channel tile over all
    its input words.
    """
    if groups == 1 and co_phase + c_out <= (c_out if cog is None else cog):
        return ((0, -(-c_in // rows)),) * -(-c_out // cols)
    return tuple(tile_word_ranges(c_in, c_out, groups, rows, cols, cog=cog, co_phase=co_phase))


def _co_chunks(g0, g1, cog, csub, cfg, khm, kwm):
    """Split the output channels of groups [g0, g1) so cotiles and weight tiles fit
    (``khm`` x ``kwm``: the largest kernel chunk of the plan)."""
    co0 = g0 * cog
    return [(co0 + lo, co0 + hi) for lo, hi in _co_chunks_rel(g1 - g0, cog, csub, cfg, khm, kwm)]


@lru_cache(maxsize=1024)
def _co_chunks_rel(ng, cog, csub, cfg, khm, kwm):
    C = cfg.cols
    n_co = ng * cog
    ranges = word_ranges(ng * csub, n_co, ng, cfg.rows, C, cog=cog)
    counts = {cnt for _f, cnt in ranges}
    if max(counts) * khm * kwm > cfg.weight_tiles:
        need = next(khm * kwm * cnt for _f, cnt in ranges if khm * kwm * cnt > cfg.weight_tiles)
        raise ValueError(f"one output-channel tile needs {need} weight tiles, more than "
                         f"weight_depth/rows={cfg.weight_tiles}")
    if len(counts) == 1:
        # equal tiles: chunks of as many as both limits allow
        per = min(cfg.max_cotiles, cfg.weight_tiles // (counts.pop() * khm * kwm))
        starts = range(0, len(ranges), per)
        return tuple((t * C, t * C + per * C) for t in starts[:-1]) + ((starts[-1] * C, n_co),)
    chunks = []
    start, tiles, count = 0, 0, 0
    for t, (_f, cnt) in enumerate(ranges):
        need = khm * kwm * cnt
        if count == cfg.max_cotiles or tiles + need > cfg.weight_tiles:
            chunks.append((start * C, t * C))
            start, tiles, count = t, 0, 0
        tiles += need
        count += 1
    chunks.append((start * C, n_co))
    return tuple(chunks)


def _finish_spec(spec, geom, cfg):
    r, c = spec.rows, spec.cols
    cin_loc = spec.ci[1] - spec.ci[0]
    spec.pass_rows = _pass_rows(cfg, r, c, spec.depthwise, -(-cin_loc // cfg.rows))
    cout_loc = spec.co[1] - spec.co[0]
    if spec.depthwise:
        spec.cotiles = -(-cin_loc // cfg.rows)
        spec.n_tiles = 0
    else:
        ranges = word_ranges(cin_loc, cout_loc, spec.groups, cfg.rows, cfg.cols,
                             cog=spec.cog, co_phase=spec.co_phase)
        spec.cotiles = len(ranges)
        spec.n_tiles = r.k * c.k * sum(cnt for _, cnt in ranges)
    spec.macs = _macs(spec, r, c)


def _pass_rows(cfg, r, c, depthwise=False, cwords=1):
    ho, wo = len(r.out_idx), len(c.out_idx)
    if depthwise:
        return ho          # the depthwise mapping streams every row of a word in one go
    return choose_pass_rows(cfg, ho, wo, r.stride, (r.k - 1) * r.dil + 1)


@lru_cache(maxsize=256)
def _dw_max_out(cfg, stride, k):
    """Most output columns of a depthwise column strip: its padded row, split into
    ``stride`` column phases of :func:`~.streams.dw_phase_words` words, fits the line
    buffer's row."""
    from .streams import dw_phase_words
    best = 1
    for m in range(1, cfg.max_width + 1):
        wpad = (m - 1) * stride + k
        if stride * dw_phase_words(cfg, m, wpad, stride) * cfg.act_pixels <= cfg.max_width:
            best = m
    return best


def _dw_row_fits(cfg, seg, stride):
    """A depthwise column strip's padded row (its streamed columns and padding; a
    strip whose taps are all padding streams one real column beside them) fits the
    line buffer's row."""
    from .streams import dw_phase_words
    wpad = seg.pad_lo + len(seg.src) + seg.pad_hi
    return (stride * dw_phase_words(cfg, len(seg.out_idx), wpad, stride) * cfg.act_pixels
            <= cfg.max_width)


def _macs(part, r, c):
    """MACs of an invocation (``part``: a :class:`ChannelPart` or :class:`TileSpec`)."""
    return ((part.co[1] - part.co[0]) * len(r.out_idx) * len(c.out_idx)
            * (part.ci_sub[1] - part.ci_sub[0]) * r.k * c.k)
