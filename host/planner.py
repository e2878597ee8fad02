"""Tiling planner: any valid conv2d layer on any hardware configuration.

A plan is data: a list of :class:`TileSpec` (one hardware invocation each) that
together cover every output element exactly once per reduction part. The planner
splits a layer along

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
from math import gcd

import numpy as np

from .hw.config import HardwareConfig
from .contract import ConvGeometry, acc_bound_ok
from .streams import tile_word_ranges, choose_pass_rows

__all__ = ["AxisSegment", "TileSpec", "TilePlan", "plan_layer", "source_index"]


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
    positions (value or mode) and convolves taps ``k_lo:k_hi`` of the kernel with
    ``stride``/``dil``. ``hw_mode`` says the window generator applies the padding
    mode (else zeros/pad value, or nothing when pads are 0). ``prepad`` counts
    streamed positions that are mapped border positions (host pre-pad work).
    """
    out_idx: np.ndarray
    src: np.ndarray
    pad_lo: int
    pad_hi: int
    stride: int
    dil: int
    k_lo: int
    k_hi: int
    hw_mode: bool
    prepad: int = 0

    @property
    def k(self):
        return self.k_hi - self.k_lo


def _axis_segments(n_in, pad_lo, pad_hi, k, s, d, mode, n_out, *, max_dil, max_k,
                   max_span, max_stream, max_out, is_col):
    """Split one axis into segments the hardware can run (see module docstring)."""
    segs = []
    # polyphase: sequences u[j] = base + step*j, conv with (hw_s, hw_d)
    if d <= max_dil:
        phases = [(np.arange(n_out), 0, 1, s, d)]     # (outputs, base offset, step, hw_s, hw_d)
    else:
        e = gcd(s, d)
        sp, dp = s // e, d // e
        phases = []
        for p in range(dp):
            outs = np.arange(p, n_out, dp)
            if len(outs):
                phases.append((outs, None, d, sp, 1))
    # kernel chunks: taps per chunk limited by max_k and by the span limit
    for outs_all, _base, step, hs, hd in phases:
        kc = max(1, min(max_k, (max_span - 1) // hd + 1))
        for k_lo in range(0, k, kc):
            k_hi = min(k, k_lo + kc)
            kk = k_hi - k_lo
            # chunk outputs so the streamed length and accumulator fit
            need = lambda m: (m - 1) * hs + (kk - 1) * hd + 1
            per = max_out
            while per > 1 and need(per) > max_stream + (0 if mode != "zeros" else 0):
                per -= 1
            # zeros mode streams only the valid part; allow longer chunks then
            pos = 0
            while pos < len(outs_all):
                outs = outs_all[pos:]
                m = min(len(outs), max_out)
                while True:
                    seg = _make_segment(outs[:m], n_in, pad_lo, k_lo, kk, s, d, hs, hd, step,
                                        mode, is_col, n_out)
                    if len(seg.src) <= max_stream or m == 1:
                        break
                    m = max(1, min(m - 1, m * max_stream // max(1, len(seg.src))))
                if len(seg.src) > max_stream:
                    raise ValueError(f"one output needs {len(seg.src)} streamed positions, "
                                     f"more than the hardware's {max_stream}")
                segs.append(seg)
                pos += m
    return segs


def _make_segment(outs, n_in, pad_lo, k_lo, kk, s, d, hs, hd, step, mode, is_col, n_out):
    o0 = int(outs[0])
    m = len(outs)
    if hd == d:   # no polyphase: contiguous padded coordinates
        v0 = o0 * s + k_lo * d
        v = v0 + np.arange((m - 1) * hs + (kk - 1) * hd + 1)
    else:         # polyphase phase: v = o*s + (k_lo + j)*d for the phase's first o
        v0 = o0 * s + k_lo * d
        v = v0 + d * np.arange((m - 1) * hs + (kk - 1) * hd + 1)
    src = source_index(v, n_in, pad_lo, mode)
    if mode == "zeros":
        valid = np.flatnonzero(src >= 0)
        if len(valid) == 0:
            # every tap is padding: stream one real position and pad around it
            return AxisSegment(np.asarray(outs), np.array([0]), len(v), 0, hs, hd, k_lo,
                               k_lo + kk, False)
        lo, hi = int(valid[0]), int(valid[-1])
        return AxisSegment(np.asarray(outs), src[lo:hi + 1], lo, len(v) - 1 - hi, hs, hd,
                           k_lo, k_lo + kk, False)
    # non-zero modes
    full = (hd == d and is_col and v[0] == 0 and v[-1] == n_in + 2 * pad_lo - 1 - 0)
    inside = (v - pad_lo >= 0) & (v - pad_lo < n_in)
    if is_col and hd == d:
        lo = int(np.argmax(inside)) if inside.any() else 0
        hi = len(v) - 1 - int(np.argmax(inside[::-1])) if inside.any() else -1
        # the window generator can map the border only if the streamed strip is the
        # whole row (its border columns are the image's)
        if inside.any() and src[lo] == 0 and src[hi] == n_in - 1 and \
                _hw_maps_ok(mode, lo, len(v) - 1 - hi, n_in):
            return AxisSegment(np.asarray(outs), src[lo:hi + 1], lo, len(v) - 1 - hi, hs, hd,
                               k_lo, k_lo + kk, True)
    del full
    prepad = int((~inside).sum())
    return AxisSegment(np.asarray(outs), src, 0, 0, hs, hd, k_lo, k_lo + kk, False,
                       prepad=prepad if is_col else 0)


def _hw_maps_ok(mode, plo, phi, n):
    if mode == "reflect":
        return plo < n and phi < n
    if mode == "circular":
        return plo <= n and phi <= n
    return True


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
                f"l{c.pad_lo} r{c.pad_hi}{' hwmode' if c.hw_mode else ''} G{self.pass_rows} "
                f"tiles {self.n_tiles} {'first' if self.first else ''}"
                f"{' complete' if self.complete else ''} {self.macs} MACs")


@dataclass
class TilePlan:
    geometry: ConvGeometry
    cfg: HardwareConfig
    tiles: list = field(default_factory=list)
    reduction_parts: int = 1
    host_prepad_columns: int = 0

    @property
    def macs(self):
        return self.geometry.macs

    @property
    def invocations(self):
        return len(self.tiles)

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
        for i, t in enumerate(self.tiles[:40]):
            lines.append(f"  [{i}] {t}")
        if len(self.tiles) > 40:
            lines.append(f"  ... {len(self.tiles) - 40} more")
        return "\n".join(lines)


def plan_layer(geom: ConvGeometry, cfg: HardwareConfig, *, x_absmax=None, w_absmax=None,
               b_absmax=0, pad_value=0):
    """Plan ``geom`` on ``cfg``.

    ``x_absmax``/``w_absmax``/``b_absmax`` bound the data (default: the full range of
    ``cfg.data_width``, the pad value included); the reduction per invocation is
    split until the accumulator bound holds for every invocation.
    """
    R, C = cfg.rows, cfg.cols
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

    # -- spatial segments
    max_out_cols = min(cfg.acc_depth, cfg.max_width)
    rows = _axis_segments(geom.H, pt, pb, kh, sh, dh, mode, geom.H_out,
                          max_dil=cfg.max_dilation, max_k=cfg.max_kernel, max_span=cfg.lb_rows,
                          max_stream=cfg.max_height, max_out=cfg.max_height, is_col=False)
    cols = _axis_segments(geom.W, pl, pr, kw, sw, dwl, mode, geom.W_out,
                          max_dil=cfg.max_dilation, max_k=cfg.max_kernel,
                          max_span=cfg.max_width, max_stream=cfg.max_width,
                          max_out=max_out_cols, is_col=True)

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
    # the depthwise mapping: one input channel per group, multiplier 1, square array
    dw = G == geom.C_in == geom.C_out and cfg.depthwise_mode
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
    parts = len(sub_splits) * kparts

    plan = TilePlan(geometry=geom, cfg=cfg, reduction_parts=parts)
    for n in range(geom.N):
        for (g0, g1, (a, b)) in chunks:
            for co_lo, co_hi in _co_chunks(g0, g1, cg, cog, b - a, cfg, rows, cols):
                ga, gb = co_lo // cog, (co_hi - 1) // cog + 1
                for r in rows:
                    for c in cols:
                        first = a == 0 and r.k_lo == 0 and c.k_lo == 0
                        spec = TileSpec(n=n, ci=(ga * cg + a, (gb - 1) * cg + b), co=(co_lo, co_hi),
                                        groups=gb - ga, ci_sub=(a, b), rows=r, cols=c,
                                        first=first, complete=(parts == 1),
                                        co_phase=co_lo - ga * cog, cog=cog,
                                        depthwise=dw and c.k <= cfg.dw_kernel and
                                        r.k <= cfg.dw_kernel and c.dil <= cfg.dw_dilation)
                        _finish_spec(spec, geom, cfg)
                        plan.tiles.append(spec)
                        plan.host_prepad_columns += c.prepad
    return plan


def _split_channels(cg, kh, kw, xa, wa, ba, cfg):
    return _refine(0, cg, kh, kw, xa, wa, ba, cfg)


def _refine(a, b, kh, kw, xa, wa, ba, cfg):
    k = min(kh, cfg.max_kernel) * min(kw, cfg.max_kernel)
    per = b - a
    while per > 1 and not acc_bound_ok(per * k, xa, wa, ba, cfg.acc_width):
        per = per // 2
    if not acc_bound_ok(per * k, xa, wa, ba, cfg.acc_width):
        raise ValueError(f"acc_width={cfg.acc_width} cannot hold even a single input channel's "
                         f"{k} taps at |x|<={xa}, |w|<={wa}, |b|<={ba}")
    return [(i, min(b, i + per)) for i in range(a, b, per)]


def _co_chunks(g0, g1, cg, cog, csub, cfg, rows, cols):
    """Split the output channels of groups [g0, g1) so cotiles and weight tiles fit."""
    C = cfg.cols
    khm = max(r.k for r in rows)
    kwm = max(c.k for c in cols)
    co0, n_co = g0 * cog, (g1 - g0) * cog
    ranges = tile_word_ranges((g1 - g0) * csub, n_co, g1 - g0, cfg.rows, C, cog=cog)
    chunks = []
    start, tiles, count = 0, 0, 0
    for t, (_f, cnt) in enumerate(ranges):
        need = khm * kwm * cnt
        if need > cfg.weight_tiles:
            raise ValueError(f"one output-channel tile needs {need} weight tiles, more than "
                             f"weight_depth/rows={cfg.weight_tiles}")
        if count == cfg.max_cotiles or tiles + need > cfg.weight_tiles:
            chunks.append((co0 + start * C, co0 + t * C))
            start, tiles, count = t, 0, 0
        tiles += need
        count += 1
    chunks.append((co0 + start * C, co0 + n_co))
    return chunks


def _finish_spec(spec, geom, cfg):
    r, c = spec.rows, spec.cols
    ho, wo = len(r.out_idx), len(c.out_idx)
    span_h = (r.k - 1) * r.dil + 1
    spec.pass_rows = choose_pass_rows(cfg, ho, wo, r.stride, span_h)
    cin_loc = spec.ci[1] - spec.ci[0]
    cout_loc = spec.co[1] - spec.co[0]
    if spec.depthwise:
        spec.cotiles = -(-cin_loc // cfg.rows)
        spec.n_tiles = spec.cotiles * -(-(r.k * c.k) // cfg.rows)
    else:
        ranges = tile_word_ranges(cin_loc, cout_loc, spec.groups, cfg.rows, cfg.cols,
                                  cog=spec.cog, co_phase=spec.co_phase)
        spec.cotiles = len(ranges)
        spec.n_tiles = sum(r.k * c.k * cnt for _, cnt in ranges)
    spec.macs = cout_loc * ho * wo * (spec.ci_sub[1] - spec.ci_sub[0]) * r.k * c.k
