"""The hardware's stream formats: one accelerator invocation as beats, and back.

An :class:`Invocation` is one run of the hardware: one descriptor, the tile
parameters, the weight tiles, one image's activations, and the results it will
produce. :func:`build_invocation` lays an integer layer (already split by the
planner so that it fits the hardware) out in the order documented in
:mod:`systolic_conv.hw.layouts`; :func:`pack_beats` / :func:`unpack_beats` turn
arrays into the bit-exact beats through the same layouts the hardware decodes.
The host never computes any part of the convolution here: it only reorders the
tensors it streams.
"""

from dataclasses import dataclass, field

import numpy as np

from .hw.config import HardwareConfig, word_major
from .hw import layouts as L

__all__ = ["Invocation", "build_invocation", "pack_beats", "unpack_beats", "beats_to_words",
           "REQUANT_MODES", "PAD_MODES", "tile_word_ranges", "word_major"]

PAD_MODES = {"zeros": L.PadMode.ZEROS, "reflect": L.PadMode.REFLECT,
             "replicate": L.PadMode.REPLICATE, "circular": L.PadMode.CIRCULAR}
REQUANT_MODES = {None: L.RequantMode.NONE, "none": L.RequantMode.NONE,
                 "tflite": L.RequantMode.TFLITE, "half_up": L.RequantMode.HALF_UP}


# ----------------------------------------------------------------------------- bits

def _flat_fields(layout):
    return L.field_offsets(layout)


def pack_beats(layout, n, values):
    """Pack ``n`` beats of ``layout`` into an ``(n, words)`` uint32 array.

    ``values`` maps a field path (``"data"``, ``"last"``, ``"data.lanes"``...) to an
    integer array whose leading dimension is ``n``; array-layout fields take a
    second dimension (their elements in order), nested structs of arrays a
    trailing one. Fields that are not given are zero.
    """
    flat = _flat_fields(layout)
    size = layout.size
    nwords = (size + 31) // 32
    bits = np.zeros((n, nwords * 32), dtype=np.uint8)
    for path, arr in values.items():
        arr = np.asarray(arr, dtype=np.int64).reshape(n, -1)
        names = [k for k in flat if k == path or k.startswith(path + ".")]
        if len(names) != arr.shape[1]:
            raise ValueError(f"field {path!r} has {len(names)} elements, got {arr.shape[1]}")
        for i, name in enumerate(names):
            off, width, _signed = flat[name]
            v = arr[:, i]
            lo = -(1 << (width - 1)) if _signed else 0
            hi = (1 << (width - 1)) - 1 if _signed else (1 << width) - 1
            if v.size and (v.min() < lo or v.max() > hi):
                raise ValueError(f"field {name!r} value out of range {lo}..{hi}")
            u = v & ((1 << width) - 1) if width < 63 else v
            shifts = np.arange(width, dtype=np.int64)
            bits[:, off:off + width] = ((u[:, None] >> shifts) & 1).astype(np.uint8)
    packed = np.packbits(bits, axis=1, bitorder="little")
    return packed.view("<u4").reshape(n, nwords)


def unpack_beats(layout, words, path):
    """Unpack field ``path`` (all its elements) from ``(n, words)`` uint32 beats.

    Returns an ``(n, elements)`` int64 array, signed fields sign-extended.
    """
    words = np.ascontiguousarray(np.asarray(words, dtype=np.uint32))
    n = words.shape[0]
    flat = _flat_fields(layout)
    names = [k for k in flat if k == path or k.startswith(path + ".")]
    bits = np.unpackbits(words.view(np.uint8).reshape(n, -1), axis=1, bitorder="little")
    out = np.zeros((n, len(names)), dtype=np.int64)
    for i, name in enumerate(names):
        off, width, signed = flat[name]
        w = np.arange(width, dtype=np.int64)
        v = (bits[:, off:off + width].astype(np.int64) << w).sum(axis=1)
        if signed:
            v = np.where(v >> (width - 1), v - (1 << width), v)
        out[:, i] = v
    return out


def beats_to_words(layout):
    return (layout.size + 31) // 32


# ----------------------------------------------------------------------------- layout

def tile_word_ranges(c_in, c_out, groups, rows, cols, *, cog=None, co_phase=0):
    """For each output-channel tile: (first input word, word count) it reduces over.

    ``c_in`` input channels hold ``groups`` groups of ``c_in // groups`` channels;
    output channel ``co`` belongs to group ``(co_phase + co) // cog`` (``cog``
    defaults to ``c_out // groups``; ``co_phase`` > 0 when the invocation starts
    inside its first group).
    """
    cg = c_in // groups
    cog = c_out // groups if cog is None else cog
    ranges = []
    for t in range((c_out + cols - 1) // cols):
        co_lo, co_hi = t * cols, min(c_out, (t + 1) * cols) - 1
        g_lo, g_hi = (co_phase + co_lo) // cog, (co_phase + co_hi) // cog
        ci_lo, ci_hi = g_lo * cg, (g_hi + 1) * cg           # [ci_lo, ci_hi)
        w_lo, w_hi = ci_lo // rows, (ci_hi + rows - 1) // rows
        ranges.append((w_lo, w_hi - w_lo))
    return ranges


@dataclass
class Invocation:
    """One hardware invocation, as beats (uint32 words per beat) and metadata."""
    cfg: HardwareConfig
    desc: dict
    desc_words: np.ndarray
    param_words: np.ndarray
    weight_words: np.ndarray
    act_words: np.ndarray
    out_channels: int
    out_height: int
    out_width: int
    pass_rows: int
    macs: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def n_results(self):
        return self.out_height * self.out_width * self.desc["cotiles"]

    def beats(self):
        return {"desc": len(self.desc_words), "param": len(self.param_words),
                "weight": len(self.weight_words), "act": len(self.act_words),
                "result": self.n_results}

    def bytes_moved(self):
        cfg = self.cfg
        b = {"desc": L.descriptor_layout(cfg).size / 8 * len(self.desc_words),
             "param": L.param_beat_layout(cfg).size / 8 * len(self.param_words),
             "weight": len(self.weight_words) * cfg.cols * cfg.data_width / 8,
             "act": len(self.act_words) * cfg.rows * cfg.act_pixels * cfg.data_width / 8}
        out_bits = cfg.acc_width if self.desc["requant"] == L.RequantMode.NONE else \
            self.desc["out_bits"]
        b["result"] = self.n_results * cfg.cols * out_bits / 8
        return b

    def unpack_results(self, words):
        """Result beats -> (C_out, H_out, W_out) int64, checking ``last`` framing."""
        cfg = self.cfg
        lay = L.result_beat_layout(cfg)
        words = np.asarray(words, dtype=np.uint32).reshape(-1, beats_to_words(lay))
        if len(words) != self.n_results:
            raise RuntimeError(f"expected {self.n_results} result beats, got {len(words)}")
        vals = unpack_beats(lay, words, "data")
        last = unpack_beats(lay, words, "last")[:, 0]
        expect_last = np.zeros(len(words), dtype=np.int64)
        expect_last[-1] = 1
        if not np.array_equal(last, expect_last):
            raise RuntimeError("result stream 'last' framing is wrong "
                               f"(set on beats {np.flatnonzero(last).tolist()})")
        return self.scatter_results(vals)

    def scatter_results(self, vals):
        """(n_results, cols) in stream order -> (C_out, H_out, W_out)."""
        cfg = self.cfg
        C = cfg.cols
        T = self.desc["cotiles"]
        Ho, Wo, G = self.out_height, self.out_width, self.pass_rows
        out = np.zeros((T * C, Ho, Wo), dtype=np.int64)
        pos = 0
        for oy0 in range(0, Ho, G):
            gc = min(G, Ho - oy0)
            n = gc * Wo
            for t in range(T):
                blk = vals[pos:pos + n].reshape(gc, Wo, C)
                out[t * C:(t + 1) * C, oy0:oy0 + gc, :] = blk.transpose(2, 0, 1)
                pos += n
        return out[:self.out_channels]


def choose_pass_rows(cfg, out_height, out_width, stride_h, span_h):
    """G, the output rows per pass.

    The accumulator holds ``G * W_out`` pixels. A pass needs ``(G-1)*s + span_h``
    line-buffer rows; the next pass's ``G*s`` new rows can stream in meanwhile only if
    both fit in ``lb_rows``, so G is the largest value with
    ``(G-1)*s + span_h + G*s <= lb_rows`` (or, when even G = 1 cannot overlap, the
    largest G the line buffer holds at all).
    """
    g_acc = cfg.acc_depth // out_width
    g_overlap = (cfg.lb_rows - span_h + stride_h) // (2 * stride_h)
    g_lb = g_overlap if g_overlap >= 1 else (cfg.lb_rows - span_h) // stride_h + 1
    return max(1, min(out_height, g_acc, g_lb))


def build_invocation(cfg, x, w, bias, *, groups=1, cog=None, co_phase=0,
                     stride=(1, 1), dilation=(1, 1),
                     pads=(0, 0, 0, 0), pad_mode="zeros", pad_value=0, requant=None,
                     out_height=None, out_width=None, pass_rows=None, depthwise=False):
    """Lay one image of a layer out as hardware beats.

    Parameters
    ----------
    x : (C_in, H, W) int array, rows already in streaming order (for reflect,
        replicate and circular, the vertically padded order; then ``pads`` has zero
        top/bottom).
    w : (C_out, C_in/groups, kh, kw) int array.
    groups, cog, co_phase : ``x`` holds ``groups`` groups; output channel ``co``
        belongs to group ``(co_phase + co) // cog`` of them.
    bias : (C_out,) int array or None.
    pads : (top, bottom, left, right).
    requant : None or an object with ``mode``, ``multiplier``, ``shift``,
        ``out_zero_point``, ``out_width``, ``relu`` (see ``contract.Requant``).
    depthwise : use the depthwise mapping (``groups == C_in == C_out``, square
        array): output-channel tile ``t`` is input word ``t``, its folds hold ``rows``
        kernel taps each (raster order), column ``c`` is channel ``t*cols + c``.
    """
    R, C = cfg.rows, cfg.cols
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    c_in, H, W = x.shape
    c_out, cg, kh, kw = w.shape
    sh, sw = stride
    dh, dwl = dilation
    pt, pb, pl, pr = pads
    if out_height is None:
        out_height = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    if out_width is None:
        out_width = (W + pl + pr - dwl * (kw - 1) - 1) // sw + 1
    cwords = -(-c_in // R)
    span_h = dh * (kh - 1) + 1
    if pass_rows is None:
        pass_rows = choose_pass_rows(cfg, out_height, out_width, sh, span_h)
    if depthwise:
        if not (groups == c_in == c_out and cg == 1 and R == C):
            raise ValueError("the depthwise mapping needs groups == C_in == C_out and a "
                             "square array")
        cotiles = cwords
        taps = kh * kw
        folds = -(-taps // R)
        ranges = [(t, folds) for t in range(cotiles)]
        n_tiles = cotiles * folds
        # tile (t, f): row r = tap f*R + r, column c = channel t*C + c
        wt = np.zeros((cotiles * C, folds * R), dtype=np.int64)
        wt[:c_out, :taps] = w.reshape(c_out, taps)
        weight_rows = wt.reshape(cotiles, C, folds, R).transpose(0, 2, 3, 1).reshape(-1, C)
    else:
        cotiles = -(-c_out // C)
        cog = c_out // groups if cog is None else cog
        ranges = tile_word_ranges(c_in, c_out, groups, R, C, cog=cog, co_phase=co_phase)
        n_tiles = sum(kh * kw * cnt for _, cnt in ranges)
        # dense, group-masked weights: wd[co, ci, ky, kx]
        ci_pad = cwords * R
        wd = np.zeros((cotiles * C, ci_pad, kh, kw), dtype=np.int64)
        co_idx = np.arange(c_out)
        grp = (co_phase + co_idx) // cog
        ci_idx = grp[:, None] * cg + np.arange(cg)[None, :]          # (c_out, cg)
        wd[co_idx[:, None], ci_idx] = w
        # weight tiles in order: tile t, ky, kx, word j; rows r = channel in word
        tiles = []
        for t, (first, cnt) in enumerate(ranges):
            blk = wd[t * C:(t + 1) * C, first * R:(first + cnt) * R]     # (C, cnt*R, kh, kw)
            blk = blk.reshape(C, cnt, R, kh, kw).transpose(3, 4, 1, 2, 0)  # (kh, kw, cnt, R, C)
            tiles.append(blk.reshape(-1, C))
        weight_rows = np.concatenate(tiles, axis=0)                      # (n_tiles*R, C)
    assert weight_rows.shape[0] == n_tiles * R

    # params
    bias_full = np.zeros(cotiles * C, dtype=np.int64)
    if bias is not None:
        bias_full[:c_out] = np.asarray(bias, dtype=np.int64)
    mult = np.zeros(cotiles * C, dtype=np.int64)
    shift = np.zeros(cotiles * C, dtype=np.int64)
    rq_mode = L.RequantMode.NONE
    zp, out_bits, relu = 0, 8, 0
    if requant is not None:
        rq_mode = REQUANT_MODES[requant.mode]
        mult[:c_out] = np.broadcast_to(np.asarray(requant.multiplier, dtype=np.int64), (c_out,))
        shift[:c_out] = np.broadcast_to(np.asarray(requant.shift, dtype=np.int64), (c_out,))
        zp, out_bits, relu = int(requant.out_zero_point), int(requant.out_width), int(requant.relu)

    # activations: beats of P neighbouring pixels (ix = P*k .. P*k+P-1) of one word
    # of R channels, (iy, k, cw) or word-major (cw, iy, k); an odd width's last beat
    # of a row has a zero pixel after the row
    P = cfg.act_pixels
    ci_pad = cwords * R
    Wp = -(-W // P) * P
    xp = np.zeros((ci_pad, H, Wp), dtype=np.int64)
    xp[:c_in, :, :W] = x
    wmaj = word_major(cfg, depthwise, H, cwords, pass_rows, out_height)
    order = (0, 2, 3, 4, 1) if wmaj else (2, 3, 0, 4, 1)
    act = xp.reshape(cwords, R, H, Wp // P, P).transpose(*order).reshape(-1, P * R)

    desc = {
        "cwords": cwords, "cotiles": cotiles, "n_tiles": n_tiles,
        "height": H, "width": W, "out_height": out_height, "out_width": out_width,
        "pass_rows": pass_rows, "kh": kh, "kw": kw, "stride_h": sh, "stride_w": sw,
        "dil_h": dh, "dil_w": dwl, "pad_top": pt, "pad_bottom": pb, "pad_left": pl,
        "pad_right": pr, "pad_mode": PAD_MODES[pad_mode], "pad_value": int(pad_value),
        "requant": rq_mode, "relu": relu, "out_zp": zp, "out_bits": out_bits,
        "depthwise": int(bool(depthwise)), "word_major": int(wmaj),
    }
    dl = L.descriptor_layout(cfg)
    desc_words = pack_beats(dl, 1, {k: [v.value if hasattr(v, "value") else v]
                                    for k, v in desc.items()})

    pl_ = L.param_beat_layout(cfg)
    lanes = np.stack([bias_full, mult, shift], axis=1).reshape(cotiles, C * 3)
    plast = np.zeros(cotiles, dtype=np.int64)
    plast[-1] = 1
    param_words = pack_beats(pl_, cotiles, {
        "data.lanes": lanes,
        "data.cw_first": [r[0] for r in ranges],
        "data.cw_count": [r[1] for r in ranges],
        "last": plast,
    })
    wl = L.weight_beat_layout(cfg)
    wlast = np.zeros(len(weight_rows), dtype=np.int64)
    wlast[-1] = 1
    weight_words = pack_beats(wl, len(weight_rows), {"data": weight_rows, "last": wlast})
    al = L.act_beat_layout(cfg)
    alast = np.zeros(len(act), dtype=np.int64)
    alast[-1] = 1
    act_words = pack_beats(al, len(act), {"data": act, "last": alast})

    macs = c_out * out_height * out_width * cg * kh * kw
    return Invocation(cfg=cfg, desc=desc, desc_words=desc_words, param_words=param_words,
                      weight_words=weight_words, act_words=act_words,
                      out_channels=c_out, out_height=out_height, out_width=out_width,
                      pass_rows=pass_rows, macs=macs)
