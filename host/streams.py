"""The hardware's stream formats: one accelerator invocation as beats, and back.

An :class:`Invocation` is one run of the hardware: one descriptor, the tile
parameters, the weights, one image's activations, and the results it will
produce. :func:`build_invocation` lays an integer layer (already split by the
planner so that it fits the hardware) out in the order documented in
:mod:`systolic_conv.hw.layouts`; :func:`pack_beats` / :func:`unpack_beats` turn
arrays into the bit-exact beats through the same layouts the hardware decodes.
The host never computes any part of the convolution here: it only reorders the
tensors it streams (and, for the depthwise mapping, pads each row's columns with
the pad value and splits it into column phases).
"""

from dataclasses import dataclass, field

import numpy as np

from .hw.config import HardwareConfig
from .hw import layouts as L

__all__ = ["Invocation", "build_invocation", "pack_beats", "unpack_beats", "beats_to_words",
           "REQUANT_MODES", "tile_word_ranges", "choose_pass_rows", "dw_phase_words"]

REQUANT_MODES = {None: L.RequantMode.NONE, "none": L.RequantMode.NONE,
                 "tflite": L.RequantMode.TFLITE, "half_up": L.RequantMode.HALF_UP}


# ----------------------------------------------------------------------------- bits

def pack_beats(layout, n, values):
    """Pack ``n`` beats of ``layout`` into an ``(n, words)`` uint32 array.

    ``values`` maps a field path (``"data"``, ``"last"``, ``"data.lanes"``...) to an
    integer array whose leading dimension is ``n``; array-layout fields take a
    second dimension (their elements in order), nested structs of arrays a
    trailing one. Fields that are not given are zero.
    """
    flat = L.field_offsets(layout)
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
    flat = L.field_offsets(layout)
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


def _unpack_lanes(beats_data_bits, n_lanes, width):
    """Split ``(n, bits)`` 0/1 arrays into ``(n, n_lanes)`` signed ``width``-bit values."""
    b = beats_data_bits[:, :n_lanes * width].reshape(-1, n_lanes, width).astype(np.int64)
    v = (b << np.arange(width, dtype=np.int64)).sum(axis=2)
    return np.where(v >> (width - 1), v - (1 << width), v)


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


def choose_pass_rows(cfg, out_height, out_width, stride_h, span_h):
    """G, the output rows per pass of the dense mapping.

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


def dw_phase_words(cfg, out_width, padded_width, stride):
    """Line-buffer words per column phase of a depthwise row: every phase holds its
    columns of the padded row, and every block's row-vector reads stay inside it."""
    P = cfg.act_pixels
    nblk = -(-out_width // cfg.rows)
    need = max(-(-padded_width // stride), (nblk - 1) * cfg.rows + cfg.dw_shadow_words * P)
    return -(-need // P)


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
    depthwise: bool = False
    macs: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def n_vectors(self):
        """Result vectors (output pixels x ``cols`` channels) the invocation produces."""
        return self.out_height * self.out_width * self.desc["cotiles"]

    @property
    def pack(self):
        """Output pixels per result beat."""
        return L.pack_factor(self.cfg, self.desc["requant"], self.desc["out_bits"])

    @property
    def n_results(self):
        """Result beats."""
        if self.pack == 1:
            return self.n_vectors
        return self._n_beats()

    def _n_beats(self):
        # a beat leaves when full or at the invocation's final vector
        return -(-self.n_vectors // self.pack)

    def beats(self):
        return {"desc": len(self.desc_words), "param": len(self.param_words),
                "weight": len(self.weight_words), "act": len(self.act_words),
                "result": self.n_results}

    def bytes_moved(self):
        cfg = self.cfg
        lay = L.result_beat_layout(cfg)
        return {"desc": L.descriptor_layout(cfg).size / 8 * len(self.desc_words),
                "param": L.param_beat_layout(cfg).size / 8 * len(self.param_words),
                "weight": len(self.weight_words) * cfg.cols * cfg.data_width / 8,
                "act": len(self.act_words) * cfg.rows * cfg.act_pixels * cfg.data_width / 8,
                "result": self.n_results * (lay.size - 1) / 8}

    def unpack_results(self, words):
        """Result beats -> (C_out, H_out, W_out) int64, checking ``last`` framing."""
        cfg = self.cfg
        lay = L.result_beat_layout(cfg)
        words = np.asarray(words, dtype=np.uint32).reshape(-1, beats_to_words(lay))
        if len(words) != self.n_results:
            raise RuntimeError(f"expected {self.n_results} result beats, got {len(words)}")
        last = unpack_beats(lay, words, "last")[:, 0]
        expect_last = np.zeros(len(words), dtype=np.int64)
        expect_last[-1] = 1
        if not np.array_equal(last, expect_last):
            raise RuntimeError("result stream 'last' framing is wrong "
                               f"(set on beats {np.flatnonzero(last).tolist()})")
        width = L.lane_width(cfg, self.desc["requant"], self.desc["out_bits"])
        bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8).reshape(len(words), -1),
                             axis=1, bitorder="little")
        # lane c of a beat holds channel c of its pixels, pixel k in bits [k*width, ...)
        lanes = bits[:, :cfg.cols * cfg.acc_width].reshape(len(words), cfg.cols, cfg.acc_width)
        sub = lanes[:, :, :self.pack * width].reshape(len(words), cfg.cols, self.pack, width)
        sub = sub.transpose(0, 2, 1, 3).reshape(-1, cfg.cols * width)
        vals = _unpack_lanes(sub, cfg.cols, width)[:self.n_vectors]
        return self.scatter_results(vals)

    def scatter_results(self, vals):
        """(n_vectors, cols) in stream order -> (C_out, H_out, W_out)."""
        cfg = self.cfg
        C = cfg.cols
        T = self.desc["cotiles"]
        Ho, Wo, G = self.out_height, self.out_width, self.pass_rows
        if self.depthwise:
            out = vals.reshape(T, Ho, Wo, C).transpose(0, 3, 1, 2).reshape(T * C, Ho, Wo)
            return out[:self.out_channels]
        out = np.zeros((T * C, Ho, Wo), dtype=np.int64)
        pos = 0
        for oy0 in range(0, Ho, G):
            gc = min(G, Ho - oy0)
            n = gc * Wo
            blk = vals[pos:pos + T * n].reshape(T, gc, Wo, C)
            out[:, oy0:oy0 + gc, :] = blk.transpose(0, 3, 1, 2).reshape(T * C, gc, Wo)
            pos += T * n
        return out[:self.out_channels]


def _requant_fields(requant, c_out, C, cotiles):
    bias_full = np.zeros(cotiles * C, dtype=np.int64)
    mult = np.zeros(cotiles * C, dtype=np.int64)
    shift = np.zeros(cotiles * C, dtype=np.int64)
    f = {"requant": L.RequantMode.NONE, "out_zp": 0, "out_bits": 8, "clamp_lo": 0,
         "clamp_hi": 0}
    if requant is not None:
        mult[:c_out] = np.broadcast_to(np.asarray(requant.multiplier, dtype=np.int64), (c_out,))
        shift[:c_out] = np.broadcast_to(np.asarray(requant.shift, dtype=np.int64), (c_out,))
        f = {"requant": REQUANT_MODES[requant.mode], "out_zp": int(requant.out_zero_point),
             "out_bits": int(requant.out_width), "clamp_lo": int(requant.qmin),
             "clamp_hi": int(requant.qmax)}
    return bias_full, mult, shift, f


def _framed(layout, n, values):
    last = np.zeros(n, dtype=np.int64)
    if n:
        last[-1] = 1
    return pack_beats(layout, n, {**values, "last": last})


def build_invocation(cfg, x, w, bias, *, groups=1, cog=None, co_phase=0,
                     stride=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), pad_value=0,
                     requant=None, out_height=None, out_width=None, pass_rows=None,
                     depthwise=False):
    """Lay one image of a layer out as hardware beats.

    Parameters
    ----------
    x : (C_in, H, W) int array, rows already in streaming order and columns already
        padded for reflect / replicate / circular (then ``pads`` is zero).
    w : (C_out, C_in/groups, kh, kw) int array.
    groups, cog, co_phase : ``x`` holds ``groups`` groups; output channel ``co``
        belongs to group ``(co_phase + co) // cog`` of them.
    bias : (C_out,) int array or None.
    pads : (top, bottom, left, right) zero (pad-value) padding.
    requant : None or a ``contract.Requant`` (``out_width`` at most 16).
    depthwise : use the depthwise mapping (``groups == C_in == C_out``, square
        array, dilation 1 horizontally).
    """
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
    common = dict(height=H, out_height=out_height, out_width=out_width, kh=kh, kw=kw,
                  stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dwl, pad_top=pt, pad_bottom=pb,
                  pad_value=int(pad_value))
    if depthwise:
        if not (groups == c_in == c_out and cg == 1 and cfg.depthwise_mode and dwl == 1):
            raise ValueError("the depthwise mapping needs groups == C_in == C_out, horizontal "
                             "dilation 1 and a hardware with the depthwise mapping")
        parts = _depthwise_parts(cfg, x, w, sw, pl, pr, out_width, pad_value)
        pass_rows = out_height
    else:
        if pass_rows is None:
            pass_rows = choose_pass_rows(cfg, out_height, out_width, sh, dh * (kh - 1) + 1)
        parts = _dense_parts(cfg, x, w, groups, cog, co_phase, pl, pr, pass_rows)
    desc, weight_rows, act, ranges = parts
    desc.update(common)
    cotiles = desc["cotiles"]
    C = cfg.cols
    bias_full, mult, shift, rq = _requant_fields(requant, c_out, C, cotiles)
    if bias is not None:
        bias_full[:c_out] = np.asarray(bias, dtype=np.int64)
    desc.update(rq)
    dl = L.descriptor_layout(cfg)
    desc_words = pack_beats(dl, 1, {k: [v.value if hasattr(v, "value") else v]
                                    for k, v in desc.items()})
    lanes = np.stack([bias_full, mult, shift], axis=1).reshape(cotiles, C * 3)
    param_words = _framed(L.param_beat_layout(cfg), cotiles, {
        "data.lanes": lanes, "data.cw_first": [r[0] for r in ranges],
        "data.cw_count": [r[1] for r in ranges]})
    weight_words = _framed(L.weight_beat_layout(cfg), len(weight_rows), {"data": weight_rows})
    act_words = _framed(L.act_beat_layout(cfg), len(act), {"data": act})
    macs = c_out * out_height * out_width * cg * kh * kw
    return Invocation(cfg=cfg, desc=desc, desc_words=desc_words, param_words=param_words,
                      weight_words=weight_words, act_words=act_words,
                      out_channels=c_out, out_height=out_height, out_width=out_width,
                      pass_rows=pass_rows, depthwise=bool(depthwise), macs=macs)


def _dense_parts(cfg, x, w, groups, cog, co_phase, pl, pr, pass_rows):
    R, C, P = cfg.rows, cfg.cols, cfg.act_pixels
    c_in, H, W = x.shape
    c_out, cg, kh, kw = w.shape
    cwords = -(-c_in // R)
    cotiles = -(-c_out // C)
    cog = c_out // groups if cog is None else cog
    ranges = tile_word_ranges(c_in, c_out, groups, R, C, cog=cog, co_phase=co_phase)
    n_tiles = sum(kh * kw * cnt for _, cnt in ranges)
    # dense, group-masked weights wd[co, ci, ky, kx]; tiles: tile t, ky, kx, word, row
    wd = np.zeros((cotiles * C, cwords * R, kh, kw), dtype=np.int64)
    co_idx = np.arange(c_out)
    grp = (co_phase + co_idx) // cog
    ci_idx = grp[:, None] * cg + np.arange(cg)[None, :]
    wd[co_idx[:, None], ci_idx] = w
    tiles = []
    for t, (first, cnt) in enumerate(ranges):
        blk = wd[t * C:(t + 1) * C, first * R:(first + cnt) * R]
        tiles.append(blk.reshape(C, cnt, R, kh, kw).transpose(3, 4, 1, 2, 0).reshape(-1, C))
    weight_rows = np.concatenate(tiles, axis=0)
    # activations: beats of P pixels of one word; row -> pixel group -> word
    Wp = -(-W // P) * P
    xp = np.zeros((cwords * R, H, Wp), dtype=np.int64)
    xp[:c_in, :, :W] = x
    act = xp.reshape(cwords, R, H, Wp // P, P).transpose(2, 3, 0, 4, 1).reshape(-1, P * R)
    desc = {"depthwise": 0, "cwords": cwords, "cotiles": cotiles, "n_tiles": n_tiles,
            "width": W, "pass_rows": pass_rows, "pad_left": pl, "pad_right": pr,
            "phase_words": 0}
    return desc, weight_rows, act, ranges


def _depthwise_parts(cfg, x, w, sw, pl, pr, out_width, pad_value):
    R, C, P = cfg.rows, cfg.cols, cfg.act_pixels
    c_in, H, W = x.shape
    kh, kw = w.shape[2:]
    cwords = -(-c_in // R)
    # each row padded with the pad value, then split into stride_w column phases
    Wpad = pl + W + pr
    pw = dw_phase_words(cfg, out_width, Wpad, sw)
    if sw * pw * P > cfg.max_width:
        raise ValueError(f"a depthwise row of {Wpad} padded columns in {sw} phases needs "
                         f"{sw * pw * P} pixels of line buffer, more than max_width="
                         f"{cfg.max_width} (the planner cuts such layers into column strips)")
    xc = np.full((cwords * R, H, Wpad), int(pad_value), dtype=np.int64)
    xc[c_in:] = 0
    xc[:c_in, :, pl:pl + W] = x
    ph = np.full((cwords * R, H, sw, pw * P), int(pad_value), dtype=np.int64)
    for p in range(sw):
        cols = xc[:, :, p::sw]
        ph[:, :, p, :cols.shape[2]] = cols
    act = ph.reshape(cwords, R, H, sw * pw, P).transpose(0, 2, 3, 4, 1).reshape(-1, P * R)
    # tap weights per word: kernel row, column phase, kx
    order = [(ky, kx) for ky in range(kh) for p in range(min(sw, kw)) for kx in range(p, kw, sw)]
    wt = np.zeros((cwords * C, kh, kw), dtype=np.int64)
    wt[:c_in] = w[:, 0]
    weight_rows = np.stack([wt[:, ky, kx] for ky, kx in order], axis=1)     # (ch, taps)
    weight_rows = weight_rows.reshape(cwords, C, len(order)).transpose(0, 2, 1).reshape(-1, C)
    desc = {"depthwise": 1, "cwords": cwords, "cotiles": cwords, "n_tiles": 0,
            "width": sw * pw * P, "pass_rows": 0, "pad_left": 0, "pad_right": 0,
            "phase_words": pw}
    return desc, weight_rows, act, [(0, 1)] * cwords
