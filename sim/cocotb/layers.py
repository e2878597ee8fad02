"""Layer cases for the RTL regressions: random (from a seed) or named; stall
patterns; the layer -> plan -> invocations path; golden expectations.

Pure Python (numpy + the host library): the cocotb testbench, ``sim/regress.py``,
``sim/mutate.py`` and the tests all draw the *same* layer from the same seed, so a
failure anywhere replays with one seed.

Expectations are built per invocation from the golden model of the whole layer:
for each reduction part (input-channel sub-range x kernel-row chunk x kernel-column
chunk) of the plan, ``conv2d_int`` of the layer with the weights outside the part
zeroed (and the bias only in the first part) is exactly what the invocations of
that part compute; the hardware requantizes only when the plan has a single part
and at most 16 output bits (:func:`systolic_conv.driver.hardware_requantizes`).
Expectations are result vectors (one output pixel of ``cols`` channels) in stream
order; the scoreboard unpacks the packed result beats into them.
The assembled layer output is compared against the plain golden layer as well.
"""

from dataclasses import dataclass, field
import itertools
import json
import math
import random

import numpy as np

from ...hw.config import HardwareConfig, DEFAULT
from ...hw import layouts as L
from ...contract import conv_geometry, Requant, requantize
from ...golden import conv2d_int
from ...planner import plan_layer
from ...driver import _invocations, hardware_requantizes

__all__ = ["HW_CONFIGS", "hw_config", "StallSpec", "Layer", "LayerRun", "draw_layer",
           "named_layer", "NAMED_LAYERS", "prepare", "estimate_cycles", "words_to_ints",
           "vector_coords", "layer_tags"]

_SMALL_BUFFERS = dict(max_width=32, max_cwords=4, lb_rows=16, max_kernel=7, max_stride=4,
                      max_dilation=3, max_height=64, acc_depth=64, weight_depth=1024,
                      max_cotiles=8, out_fifo_depth=8)

#: Hardware configurations of the regressions: a small non-square array with small
#: buffers (fast builds and layers that cross every tile boundary quickly; max
#: dilation 3 so that dilation 4 exercises the polyphase decomposition), the same
#: buffers on a square array (which has the depthwise mapping, see
#: ``HardwareConfig.depthwise_mode``), and the default 8x8.
HW_CONFIGS = {
    "small": HardwareConfig(rows=4, cols=3, **_SMALL_BUFFERS),
    "square": HardwareConfig(rows=4, cols=4, **_SMALL_BUFFERS),
    "default": DEFAULT,
}


def hw_config(name_or_cfg):
    """``"small"`` / ``"default"`` / a JSON dict / a HardwareConfig -> HardwareConfig."""
    if isinstance(name_or_cfg, HardwareConfig):
        return name_or_cfg
    if isinstance(name_or_cfg, dict):
        return HardwareConfig(**name_or_cfg)
    if isinstance(name_or_cfg, str) and name_or_cfg.startswith("{"):
        return HardwareConfig(**json.loads(name_or_cfg))
    if name_or_cfg not in HW_CONFIGS:
        raise ValueError(f"hardware config {name_or_cfg!r} must be one of "
                         + ", ".join(HW_CONFIGS) + " (or a JSON dict)")
    return HW_CONFIGS[name_or_cfg]


# ----------------------------------------------------------------------------- stalls

@dataclass
class StallSpec:
    """Idle cycles on the four inputs and back-pressure on the result stream.

    Each entry is ``("p", probability)`` (seeded random) or ``("cycle", [bits])``
    (``itertools.cycle`` of enable bits: 1 = offer a beat / ready, 0 = idle /
    stall). Order of ``idle``: desc, param, weight, act.
    """
    kind: str = "none"
    idle: tuple = (("p", 0.0),) * 4
    stall: tuple = ("p", 0.0)

    def gate(self, which, rng):
        """An iterator of booleans for stream ``which`` (0..3 inputs, 4 = result sink):
        True = this cycle the source may offer / the sink is ready."""
        kind, arg = self.stall if which == 4 else self.idle[which]
        if kind == "cycle":
            return itertools.cycle([bool(b) for b in arg])
        p = float(arg)
        if p <= 0:
            return itertools.repeat(True)
        return (rng.random() >= p for _ in itertools.count())

    @property
    def harness_args(self):
        """``(idle, stall)`` probabilities for the compiled harness (patterns -> duty)."""
        def prob(e):
            kind, arg = e
            return (1 - sum(arg) / len(arg)) if kind == "cycle" else float(arg)
        return tuple(prob(e) for e in self.idle), prob(self.stall)

    def max_idle(self):
        return max(self.harness_args[0] + (self.harness_args[1],))

    def __str__(self):
        def f(e):
            return f"{e[1]:.2f}" if e[0] == "p" else "".join(str(b) for b in e[1])
        return (f"{self.kind}(idle desc {f(self.idle[0])} param {f(self.idle[1])} "
                f"weight {f(self.idle[2])} act {f(self.idle[3])}, stall {f(self.stall)})")


PATTERNS = ([1, 1, 1, 0], [1, 0], [0, 1, 1], [1, 1, 0, 0, 1], [1, 0, 0], [1, 1, 1, 1, 1, 1, 0])
BURSTS = ([1] * 8 + [0] * 5, [1] * 3 + [0] * 9, [1] * 16 + [0] * 2, [0] * 6 + [1] * 6)
STALL_KINDS = ("none", "light", "heavy", "cycle", "burst")


def draw_stalls(rng, kind=None):
    kind = kind or str(rng.choice(STALL_KINDS))
    if kind == "none":
        return StallSpec("none")
    if kind in ("light", "heavy"):
        lo, hi = (0.05, 0.2) if kind == "light" else (0.3, 0.6)
        idle = tuple(("p", round(float(rng.uniform(lo, hi)), 3)) for _ in range(4))
        return StallSpec(kind, idle, ("p", round(float(rng.uniform(lo, hi + 0.1)), 3)))
    pool = PATTERNS if kind == "cycle" else BURSTS
    pick = lambda: ("cycle", list(pool[int(rng.integers(len(pool)))]))
    return StallSpec(kind, tuple(pick() for _ in range(4)), pick())


# ----------------------------------------------------------------------------- layers

@dataclass
class Layer:
    """One conv layer case: integer tensors, nn.Conv2d arguments, requant, stalls."""
    name: str
    x: np.ndarray
    w: np.ndarray
    b: object
    conv: dict
    pad_value: int = 0
    requant: object = None
    stalls: StallSpec = field(default_factory=StallSpec)
    seed: object = None
    draw: dict = field(default_factory=dict)      # axis choices of a random draw

    def geometry(self):
        return conv_geometry(self.x.shape, self.w.shape,
                             None if self.b is None else self.b.shape, **self.conv)

    def golden(self):
        out = conv2d_int(self.x, self.w, self.b, pad_value=self.pad_value, data_width=16,
                         **self.conv)
        return out if self.requant is None else requantize(out, self.requant, channel_axis=1)

    def __str__(self):
        rq = "none" if self.requant is None else (
            f"{self.requant.mode}(out{self.requant.out_width} zp{self.requant.out_zero_point} "
            f"clamp[{self.requant.qmin},{self.requant.qmax}])")
        return (f"{self.name}: x{tuple(self.x.shape)} w{tuple(self.w.shape)} "
                f"{'bias' if self.b is not None else 'no bias'} {self.conv} "
                f"pad_value={self.pad_value} requant={rq} stalls={self.stalls}")


def _data(rng, shape, width, full):
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if full:
        a = rng.integers(lo, hi + 1, shape)
        flat = a.reshape(-1)
        if flat.size >= 2:       # both extremes present
            idx = rng.choice(flat.size, size=min(flat.size, 2 + flat.size // 16), replace=False)
            flat[idx] = rng.choice([lo, hi], size=len(idx))
            flat[idx[0]], flat[idx[1]] = lo, hi
        return a
    return rng.integers(-8, 8, shape)


KERNEL_SHAPES = ("1x1", "1xN", "Nx1", "square", "nonsquare")
GROUP_KINDS = ("dense", "grouped", "depthwise", "depthwise_mult")
PAD_FORMS = ("int", "pair", "valid", "same")
PAD_MODES = ("zeros", "reflect", "replicate", "circular")
REQUANT_KINDS = ("none", "tflite", "half_up")
CLAMP_KINDS = ("range", "relu", "bounds")
OUT_WIDTHS = (4, 8, 8, 12, 16, 16, 24)
CIN_BINS = ("lt_rows", "eq_rows", "multi_word", "split")
COUT_BINS = ("lt_cols", "eq_cols", "multi_tile")


def _kernel(rng, shape, kmax):
    big = lambda: int(rng.integers(2, kmax + 1))
    if shape == "1x1":
        return 1, 1
    if shape == "1xN":
        return 1, big()
    if shape == "Nx1":
        return big(), 1
    if shape == "square":
        k = big()
        return k, k
    kh, kw = big(), big()
    while kh == kw:
        kw = big()
    return kh, kw


def draw_layer(seed, cfg: HardwareConfig, *, budget=30000, name=None, stall_kind=None,
               force=None):
    """The random layer of ``seed``, valid for ``cfg``, estimated at <= ``budget`` cycles.

    Every axis is drawn uniformly from its coverage bins: kernel rows/cols 1..7
    (within ``max_kernel``), stride 1..4, dilation 1..4 (beyond ``max_dilation``
    the planner goes polyphase; a depthwise layer's horizontal dilation is always
    decomposed), dense / grouped / depthwise / depthwise-with-multiplier groups,
    padding form (int, pair, valid, same) and mode (zeros with or without a pad
    value, reflect / replicate / circular: host pre-pad), requantization (none,
    tflite, half_up; output widths 4..16 requantized in hardware and packed, 24 on
    the host), clamp bounds (output range, ReLU, random ``act_min``/``act_max``),
    full-range or small data and bias, batches, channels around the array size,
    stall pattern. Sizes are then drawn until the layer is legal, plans on ``cfg``
    and is estimated within the budget. ``force`` overrides axis choices (keys of
    :attr:`Layer.draw`, e.g. ``{"groups": "depthwise"}``).

    On hardware with the depthwise mapping, half of the depthwise layers get a
    kernel within ``dw_kernel`` (no kernel chunks).
    """
    rng = np.random.default_rng(seed)
    R, C = cfg.rows, cfg.cols
    CT = cfg.channel_tile
    kmax = min(7, cfg.max_kernel)
    shape = str(rng.choice(KERNEL_SHAPES))
    kh, kw = _kernel(rng, shape, kmax)
    d = {
        "kernel_shape": shape, "kh": kh, "kw": kw,
        "sh": int(rng.integers(1, 5)), "sw": int(rng.integers(1, 5)),
        "dh": int(rng.integers(1, 5)), "dw": int(rng.integers(1, 5)),
        "groups": str(rng.choice(GROUP_KINDS)), "pad_form": str(rng.choice(PAD_FORMS)),
        "pad_mode": str(rng.choice(PAD_MODES)), "requant": str(rng.choice(REQUANT_KINDS)),
        "full": bool(rng.random() < 0.5), "cin": str(rng.choice(CIN_BINS)),
        "cout": str(rng.choice(COUT_BINS)), "batch": int(rng.choice([1, 1, 2, 3])),
        "clamp": str(rng.choice(CLAMP_KINDS)), "bias": bool(rng.random() < 0.8),
        "full_bias": bool(rng.random() < 0.4), "out_width": int(rng.choice(OUT_WIDTHS)),
        "pad_value": bool(rng.random() < 0.4), "wide": bool(rng.random() < 0.1),
        "tall": bool(rng.random() < 0.1),
    }
    dw_fit = bool(rng.random() < 0.5)
    d.update(force or {})
    if d.get("limits"):
        d.update(_limit_axes(np.random.default_rng([seed, 0x1A17]), cfg, kmax))
    if "kernel_shape" in (force or {}) and not {"kh", "kw"} & set(force):
        d["kh"], d["kw"] = _kernel(rng, d["kernel_shape"], kmax)
    if d["groups"] == "depthwise" and cfg.depthwise_mode and dw_fit:
        kd = min(cfg.dw_kernel, kmax)
        d["kh"], d["kw"] = min(d["kh"], kd), min(d["kw"], kd)
    if d["pad_form"] == "same":
        d["sh"] = d["sw"] = 1
    stalls = draw_stalls(rng, stall_kind)
    dwid = cfg.data_width
    # requantization edge cases come from a second generator of the same seed, so the
    # layers the main one draws stay what they were
    xrng = np.random.default_rng([seed, 0x7271])
    for attempt in range(240):
        shrink = min(4, attempt // 40)  # give up on costly options step by step
        if attempt == 160:              # last resort (~0.2% of seeds): 'same' padding with
            d = dict(d, dh=1, dw=1, relaxed=True)   # large dilated kernels is too costly
            if d["cin"] == "split":
                d["cin"] = "multi_word"
        layer = _draw_sizes(rng, d, cfg, R, C, CT, dwid, stalls, shrink, xrng)
        if layer is None:
            continue
        try:
            geom = layer.geometry()
            plan = _plan(layer, cfg)
        except ValueError:
            continue
        if estimate_cycles(plan, cfg, stalls) <= budget:
            layer.name = name or f"seed{seed}"
            layer.seed = seed
            layer.draw = d
            return layer
    raise RuntimeError(f"seed {seed}: no layer within {budget} cycles for {d}")


def _plan(layer, cfg):
    """The plan the driver makes of ``layer`` (data bounds from its tensors)."""
    x, w = layer.x, layer.w
    b = layer.b
    return plan_layer(layer.geometry(), cfg, x_absmax=int(np.abs(x).max(initial=0)),
                      w_absmax=int(np.abs(w).max(initial=0)),
                      b_absmax=int(np.abs(b).max(initial=0)) if b is not None else 0,
                      pad_value=layer.pad_value)


def _channels(rng, d, R, C, CT, small):
    """(groups, input channels per group, output channels per group)."""
    if d["groups"] == "dense" and not small and (d.get("cin_n") or d.get("cout_n")):
        g, cin, cout = _channels(rng, dict(d, cin_n=None, cout_n=None), R, C, CT, small)
        return 1, d.get("cin_n") or cin, d.get("cout_n") or cout
    if d["groups"] == "dense":
        cin = {"lt_rows": lambda: int(rng.integers(1, R)) if R > 1 else 1,
               "eq_rows": lambda: R,
               "multi_word": lambda: int(rng.integers(R + 1, CT + 1)) if CT > R else R,
               "split": lambda: int(rng.integers(CT + 1, CT + 5))}[d["cin"]]()
        cout = {"lt_cols": lambda: int(rng.integers(1, C)) if C > 1 else 1,
                "eq_cols": lambda: C,
                "multi_tile": lambda: int(rng.integers(C + 1, 3 * C + 1))}[d["cout"]]()
        return 1, cin, cout
    if d["groups"] == "grouped":
        return (int(rng.integers(2, 5)), int(rng.integers(1, 5 if not small else 3)),
                int(rng.integers(1, 4)))
    if d["groups"] == "depthwise":
        return int(rng.integers(2, 13 if not small else 5)), 1, 1
    return int(rng.integers(2, 9 if not small else 4)), 1, int(rng.integers(2, 4))


def _pads(rng, form, span_h, span_w):
    """(padding argument, (top, bottom, left, right))."""
    if form == "int":
        p = int(rng.integers(0, 4))
        return p, (p, p, p, p)
    if form == "pair":
        ph, pw = int(rng.integers(0, 4)), int(rng.integers(0, 4))
        return (ph, pw), (ph, ph, pw, pw)
    if form == "valid":
        return "valid", (0, 0, 0, 0)
    th, tw = span_h - 1, span_w - 1
    return "same", (th // 2, th - th // 2, tw // 2, tw - tw // 2)


def _limit_axes(lrng, cfg, kmax):
    """Axis overrides of a layer at the descriptor's documented limits
    (``force={"limits": True}``, drawn from a generator of its own): each of kernel,
    stride, dilation at its maximum, a width or height beyond the maximum (the host
    tiles it, so tiles come at the maximum), and, in half the layers, zeros padding of
    16 .. 2**pad_bits - 1 rows (or columns) on both sides of one axis (the pads have no
    limit of their own; the other axis keeps a small one), a dense layer's output
    channels at ``max_cotiles`` tiles and its input channels at a whole channel tile
    (each in about a third of the layers, until the draw shrinks); descriptors without
    requantization carry random values in the fields only requantization reads
    (:data:`REQUANT_ONLY`, see :func:`prepare`)."""
    out = {"pad_mode": "zeros", "dont_care": True}
    if lrng.random() < 0.5:
        out["kh"] = kmax
    if lrng.random() < 0.5:
        out["kw"] = kmax
    for k in ("sh", "sw"):
        if lrng.random() < 0.5:
            out[k] = cfg.max_stride
    for k in ("dh", "dw"):
        if lrng.random() < 0.3:
            out[k] = cfg.max_dilation
    out["wide"] = bool(lrng.random() < 0.5)
    out["tall"] = bool(lrng.random() < 0.3)
    if lrng.random() < 0.5:
        out["pad_form"] = "pair"
        out["pad_big"] = (int(lrng.integers(16, min(40, (1 << cfg.pad_bits) - 1) + 1)),
                          int(lrng.integers(2)))
    # a dense layer's channels at the limits of one invocation: max_cotiles output
    # tiles, a whole channel tile (max_cwords input words)
    if lrng.random() < 0.3:
        out["cout_n"] = cfg.max_cotiles * cfg.cols
    if lrng.random() < 0.3:
        out["cin_n"] = cfg.channel_tile
    return out


def _draw_sizes(rng, d, cfg, R, C, CT, dwid, stalls, shrink, xrng=None):
    kh, kw, sh, sw, dh, dw_ = d["kh"], d["kw"], d["sh"], d["sw"], d["dh"], d["dw"]
    small = shrink >= 2
    g, cg, cog = _channels(rng, d, R, C, CT, small)
    cin, cout = g * cg, g * cog
    mode = d["pad_mode"]
    span_h, span_w = dh * (kh - 1) + 1, dw_ * (kw - 1) + 1
    padding, (pt, pb, pl, pr) = _pads(rng, d["pad_form"], span_h, span_w)
    if d.get("pad_big") and shrink < 3:       # zeros padding at its field's range
        big, side = d["pad_big"]
        padding = (big, pl) if side == 0 else (pt, big)
        (pt, pb, pl, pr) = (padding[0],) * 2 + (padding[1],) * 2
    need_h = max(1, span_h - pt - pb)
    need_w = max(1, span_w - pl - pr)
    if mode == "reflect":
        need_h, need_w = max(need_h, pt + 1, pb + 1), max(need_w, pl + 1, pr + 1)
    elif mode == "circular":
        need_h, need_w = max(need_h, pt, pb), max(need_w, pl, pr)
    extra = 3 if small else 8
    H = need_h + int(rng.integers(0, extra + 1))
    W = need_w + int(rng.integers(0, extra + 1))
    if d["tall"] and shrink < 1:
        H = max(H, cfg.max_height + int(rng.integers(1, 8)))
    if d["wide"] and shrink < 1:
        W = max(W, cfg.max_width + int(rng.integers(1, 8)))
    N = d["batch"] if shrink < 3 else 1
    full = d["full"]
    x = _data(rng, (N, cin, H, W), dwid, full)
    w = _data(rng, (cout, cg, kh, kw), dwid, full)
    b = None
    if d["bias"]:
        # full range: up to a quarter of the accumulator's range (the products keep
        # the rest; the planner splits reductions that could still wrap)
        bmax = (1 << (cfg.acc_width - 2)) if d.get("full_bias") else \
            min((1 << 12), 1 << (cfg.acc_width - 6))
        b = _data(rng, (cout,), cfg.acc_width - 1, True) if d.get("full_bias") else \
            rng.integers(-bmax, bmax, cout)
        if d.get("full_bias"):
            b = np.clip(b, -bmax, bmax - 1)
    pad_value = 0
    if mode == "zeros" and d["pad_value"]:
        lo, hi = -(1 << (dwid - 1)), (1 << (dwid - 1)) - 1
        pad_value = int(rng.choice([lo, hi, int(rng.integers(lo, hi + 1))]))
    conv = dict(stride=(sh, sw), padding=padding, dilation=(dh, dw_), groups=g,
                padding_mode=mode)
    rq = _draw_requant(rng, d, cout, cg * kh * kw, full, dwid, xrng)
    return Layer(name="", x=x, w=w, b=b, conv=conv, pad_value=pad_value, requant=rq,
                 stalls=stalls)


def _draw_requant(rng, d, cout, k, full, dwid, xrng=None):
    mode = d["requant"]
    if mode == "none":
        return None
    out_width = int(d.get("out_width", 8))
    amp = (1 << (dwid - 1)) if full else 8
    typ = max(1.0, math.sqrt(k) * amp * amp / 3)     # typical |acc|
    per_channel = rng.random() < 0.6
    n = cout if per_channel else 1
    lo, hi = -(1 << (out_width - 1)), (1 << (out_width - 1)) - 1
    zp = int(rng.integers(lo // 2, hi // 2 + 1))
    if mode == "tflite":
        M = rng.integers(1 << 30, 1 << 31, n)
        base = math.log2(typ) - (out_width - 1)
        S = np.clip(np.round(base + rng.integers(-3, 3, n)), 0, 31).astype(np.int64)
    else:
        M = rng.integers(1, 1 << 16, n)
        base = np.log2(typ * M.astype(float)) - (out_width - 1)
        S = np.clip(np.round(base + rng.integers(-3, 3, n)), 0, 47).astype(np.int64)
    # edge cases in about a third of the layers; always with force={"requant_edges": True}
    if xrng is not None and (d.get("requant_edges") or xrng.random() < 0.35):
        M, S = _requant_edges(xrng, mode, n, typ, out_width)
    if xrng is not None and mode == "tflite" and d.get("lshift_sweep") is not None:
        per_channel, n = True, cout
        M, S = _lshift_sweep(xrng, int(d["lshift_sweep"]), n, typ, out_width)
    mult = [int(v) for v in M] if per_channel else int(M[0])
    shift = [int(v) for v in S] if per_channel else int(S[0])
    clamp = d.get("clamp", "range")
    bounds = {}
    if clamp == "bounds":
        a, b = sorted(int(v) for v in rng.integers(lo, hi + 1, 2))
        bounds = {"act_min": a, "act_max": b}
    return Requant(mode=mode, multiplier=mult, shift=shift, out_zero_point=zp,
                   out_width=out_width, relu=clamp == "relu", **bounds)


def _requant_edges(xrng, mode, n, typ, out_width):
    """Multipliers and shifts over the contract's whole range (the main draw keeps
    to TFLite's normalized multipliers and right shifts): tflite left shifts
    (``S < 0``, the accumulator wraps to 32 bits first), any Q31 multiplier including
    0 and 2**31 - 1, shifts at both ends; half_up's whole 16-bit multiplier and
    0..47 shift range. Half the lanes are scaled into the output range, the others
    are free (mostly saturating)."""
    if mode == "tflite":
        S = xrng.integers(-31, 32, n)
        M = xrng.choice([0, 1, (1 << 31) - 1, 1 << 30], n)
        free = xrng.random(n) < 0.5
        M = np.where(free, xrng.integers(0, 1 << 31, n), M)
        # scaled lanes: M / 2**31 * 2**-S ~ 2**(out_width - 1) / typ, with S anywhere in
        # the window where M keeps >= 10 significant bits (left shifts when typ is small)
        want = (out_width - 1) - math.log2(typ)
        scaled = xrng.random(n) < 0.5
        lo_s, hi_s = max(-31, int(math.floor(-21 - want))), min(31, int(math.ceil(-want)))
        Ss = xrng.integers(lo_s, max(lo_s, hi_s) + 1, n).astype(np.int64)
        Ms = np.clip(np.round(2.0 ** (31 + want + Ss) * xrng.uniform(0.5, 1.0, n)),
                     0, (1 << 31) - 1).astype(np.int64)
        S = np.where(scaled, Ss, S)
        M = np.where(scaled, Ms, M)
    else:
        S = xrng.integers(0, 48, n)
        M = np.where(xrng.random(n) < 0.3, xrng.choice([0, 1, (1 << 16) - 1], n),
                     xrng.integers(0, 1 << 16, n))
    return M.astype(np.int64), S.astype(np.int64)


#: tflite left shifts L = -s of the contract (1 .. 31)
LEFT_SHIFTS = 31


def _lshift_sweep(xrng, k, n, typ, out_width):
    """Per-channel tflite left shifts for sweep step ``k`` (``force={"lshift_sweep": k}``):
    output channel c gets ``L = 1 + (k + c) % 31``, so over the steps k = 0 .. 30 every
    channel position (every requantizer lane of a tile) takes every left shift once.
    The multipliers are random but scaled to the shifted accumulator, wrapped to 32 bits
    (``M / 2**31 * min(typ * 2**L, 2**31) ~ 2**(out_width - 1)``), so that most
    results stay inside the output range rather than all saturating."""
    L = 1 + (k + np.arange(n)) % LEFT_SHIFTS
    mag = np.minimum(np.log2(max(typ, 1.0)) + L, 31.0)
    M = np.clip(np.round(2.0 ** (31 + (out_width - 1) - mag) * xrng.uniform(0.25, 1.0, n)),
                0, (1 << 31) - 1)
    return M.astype(np.int64), (-L).astype(np.int64)


# ----------------------------------------------------------------------------- named layers

def _rand(seed, shape, lo=-128, hi=128):
    return np.random.default_rng(seed).integers(lo, hi, shape)


def named_layer(name, cfg=None):
    """A fixed layer by name (see :data:`NAMED_LAYERS`)."""
    if name not in NAMED_LAYERS:
        raise ValueError(f"unknown layer {name!r}; known: {', '.join(NAMED_LAYERS)}")
    layer = NAMED_LAYERS[name]()
    layer.name = name
    return layer


def _resnet3x3():
    # a ResNet-18 3x3 layer at 8x8 spatial, 64 -> 64 channels (tflite requant)
    x = _rand(1, (1, 64, 8, 8))
    w = _rand(2, (64, 64, 3, 3))
    b = _rand(3, (64,), -2 ** 16, 2 ** 16)
    rq = Requant(mode="tflite", multiplier=[int(v) for v in _rand(4, (64,), 2 ** 30, 2 ** 31 - 1)],
                 shift=10, out_zero_point=-5)
    return Layer("resnet18_3x3", x, w, b, dict(stride=1, padding=1, dilation=1, groups=1,
                                                padding_mode="zeros"), requant=rq)


def _mobilenet_dw():
    x = _rand(5, (1, 32, 9, 9))
    w = _rand(6, (32, 1, 3, 3))
    b = _rand(7, (32,), -2 ** 12, 2 ** 12)
    rq = Requant(mode="half_up", multiplier=300, shift=12, out_zero_point=3, relu=True)
    return Layer("mobilenet_dw3x3_s2", x, w, b, dict(stride=2, padding=1, dilation=1,
                                                      groups=32, padding_mode="zeros"),
                 requant=rq, pad_value=-3)


def _stem7x7():
    x = _rand(8, (1, 3, 16, 16))
    w = _rand(9, (16, 3, 7, 7))
    return Layer("stem7x7_s2_reflect", x, w, None, dict(stride=2, padding=3, dilation=1,
                                                         groups=1, padding_mode="reflect"))


def _dilated():
    x = _rand(10, (2, 12, 12, 11))
    w = _rand(11, (9, 4, 3, 2))
    b = _rand(12, (9,), -999, 999)
    return Layer("dilated_grouped_circular", x, w, b,
                 dict(stride=(1, 2), padding=(2, 1), dilation=(2, 3), groups=3,
                      padding_mode="circular"))


def _pointwise():
    x = _rand(13, (1, 20, 5, 7))
    w = _rand(14, (11, 20, 1, 1))
    return Layer("pointwise_1x1", x, w, None, dict(stride=1, padding=0, dilation=1, groups=1,
                                                   padding_mode="zeros"))


def _replicate_same():
    x = _rand(15, (1, 5, 7, 9))
    w = _rand(16, (4, 5, 5, 3))
    b = _rand(17, (4,), -10 ** 5, 10 ** 5)
    return Layer("replicate_same_5x3", x, w, b, dict(stride=1, padding="same", dilation=1,
                                                     groups=1, padding_mode="replicate"))


def _requant12_bounds():
    # 12-bit outputs (two per 32-bit lane) clamped to act_min/act_max, per-channel tflite
    x = _rand(18, (2, 6, 7, 8))
    w = _rand(19, (5, 6, 3, 3))
    b = _rand(20, (5,), -10 ** 5, 10 ** 5)
    rq = Requant(mode="tflite", multiplier=[int(v) for v in _rand(21, (5,), 2 ** 30, 2 ** 31 - 1)],
                 shift=[7, 8, 9, 8, 7], out_zero_point=40, out_width=12, act_min=-1500,
                 act_max=1800)
    return Layer("requant12_bounds", x, w, b, dict(stride=(1, 2), padding=1, dilation=1,
                                                    groups=1, padding_mode="zeros"), requant=rq)


NAMED_LAYERS = {
    "requant12_bounds": _requant12_bounds,
    "resnet18_3x3": _resnet3x3,
    "mobilenet_dw3x3_s2": _mobilenet_dw,
    "stem7x7_s2_reflect": _stem7x7,
    "dilated_grouped_circular": _dilated,
    "pointwise_1x1": _pointwise,
    "replicate_same_5x3": _replicate_same,
}


# ----------------------------------------------------------------------------- planning

def estimate_cycles(plan, cfg, stalls=None):
    """A rough upper estimate of the cycles a plan takes (to bound random layers)."""
    slow = 1.0
    if stalls is not None:
        slow = 1.0 / max(0.2, 1.0 - stalls.max_idle())
    return int(sum(_estimate_tile(s, cfg, slow) for s in plan.tiles))


def _estimate_tile(s, cfg, slow):
    R, C, P = cfg.rows, cfg.cols, cfg.act_pixels
    ho, wo = len(s.rows.out_idx), len(s.cols.out_idx)
    cw = -(-(s.ci[1] - s.ci[0]) // R)
    if s.depthwise:
        sw = s.cols.stride
        kh, kw = s.rows.k, s.cols.k
        wpad = len(s.cols.src) + s.cols.pad_lo + s.cols.pad_hi
        act = len(s.rows.src) * cw * sw * -(-(-(-wpad // sw) + R + kw) // P)
        groups = kh * min(sw, kw)
        per_group = -(-(R + -(-kw // sw) - 1) // P) + -(-kw // sw) + 2
        comp = cw * ho * -(-wo // R) * max(R + 2, groups * per_group) + cw * (kh * kw + R + 20)
        return max(act, comp) * slow + 60
    G = s.pass_rows
    passes = -(-ho // G)
    act = len(s.rows.src) * -(-len(s.cols.src) // P) * cw
    comp = 0
    for p in range(passes):
        gc = min(G, ho - p * G)
        comp += s.n_tiles * max(gc * wo, R + 3) + R + C + 16
    return max(act, comp) * slow + R * s.n_tiles * 0.3 + 30


def words_to_ints(words):
    """(beats, k) uint32 -> list of Python ints (beat payload, little-endian words)."""
    a = np.ascontiguousarray(np.asarray(words, dtype="<u4"))
    return [int.from_bytes(r.tobytes(), "little") for r in a]


def vector_coords(inv):
    """(co, oy, ox) of every (result vector, lane) of an invocation, invocation-local,
    in the order the hardware emits them (:mod:`systolic_conv.hw.layouts`, ``o_result``):
    dense, for each pass of G output rows, each output-channel tile, raster order inside
    the pass; depthwise, for each channel word, raster order."""
    C = inv.cfg.cols
    T = inv.desc["cotiles"]
    Ho, Wo = inv.out_height, inv.out_width
    lanes = np.arange(C)[None, :]
    if inv.depthwise:
        t, yy, xx = (a.reshape(-1, 1) for a in
                     np.meshgrid(np.arange(T), np.arange(Ho), np.arange(Wo), indexing="ij"))
        return t * C + lanes, np.broadcast_to(yy, (len(t), C)), np.broadcast_to(xx, (len(t), C))
    co, oy, ox = [], [], []
    G = inv.pass_rows
    for oy0 in range(0, Ho, G):
        gc = min(G, Ho - oy0)
        t, yy, xx = (a.reshape(-1, 1) for a in
                     np.meshgrid(np.arange(T), np.arange(gc), np.arange(Wo), indexing="ij"))
        co.append(t * C + lanes)
        oy.append(np.broadcast_to(oy0 + yy, (len(t), C)))
        ox.append(np.broadcast_to(xx, (len(t), C)))
    return np.concatenate(co), np.concatenate(oy), np.concatenate(ox)


@dataclass
class Expect:
    """What one invocation must produce: its result vectors (one output pixel of
    ``cols`` channels each, in stream order) before they are packed into beats."""
    index: int
    spec: object                 # TileSpec
    inv: object                  # Invocation
    values: np.ndarray           # (n_vectors, cols) expected values (0 on unused lanes)
    mask: np.ndarray             # (n_vectors, cols) lanes that are checked
    coords: tuple                # layer coordinates (n, co, oy, ox), each (n_vectors, cols)
    error: int = 0               # error bits the status must carry (0: clean)
    check_results: bool = True
    exact: bool = False          # with ``error``: the results must still be exact


@dataclass
class LayerRun:
    """A layer prepared for the hardware: plan, invocations, expectations."""
    layer: Layer
    cfg: HardwareConfig
    plan: object
    invs: list
    expects: list
    golden: np.ndarray
    hw_requant: bool = False     # the hardware requantizes (else the host does)

    @property
    def n_inv(self):
        return len(self.invs)

    def streams(self):
        """Concatenated beats (lists of ints) of the four input streams."""
        return [sum((words_to_ints(getattr(i, f)) for i in self.invs), [])
                for f in ("desc_words", "param_words", "weight_words", "act_words")]

    def assemble(self, results):
        """Per-invocation result tensors (C, Ho, Wo) -> the layer output, like the driver."""
        g = self.layer.geometry()
        out = np.zeros((g.N, g.C_out, g.H_out, g.W_out), dtype=np.int64)
        for spec, res in zip(self.plan.tiles, results):
            out[spec.n, spec.co[0]:spec.co[1]][:, spec.rows.out_idx[:, None],
                                               spec.cols.out_idx[None, :]] += res
        if self.layer.requant is not None and not self.hw_requant:
            out = requantize(out, self.layer.requant, channel_axis=1)
        return out


#: descriptor fields that only requantization reads (hw/layouts.py): a descriptor
#: without requantization (mode NONE) may carry anything in them
REQUANT_ONLY = ("out_zp", "out_bits", "clamp_lo", "clamp_hi")


def _dont_care(invs, cfg, rng):
    """``invs`` with random values in the :data:`REQUANT_ONLY` fields of every
    descriptor without requantization (the host writes zeros and 8 there; the
    hardware must ignore them)."""
    import dataclasses
    from ...streams import pack_beats
    dl = L.descriptor_layout(cfg)
    offs = L.field_offsets(dl)
    out = []
    for inv in invs:
        mode = inv.desc["requant"]
        if int(getattr(mode, "value", mode)) == 0:
            d = dict(inv.desc)
            for f in REQUANT_ONLY:
                _, width, signed = offs[f]
                lo, hi = (-(1 << (width - 1)), 1 << (width - 1)) if signed else (0, 1 << width)
                d[f] = int(rng.integers(lo, hi))
            words = pack_beats(dl, 1, {k: [v.value if hasattr(v, "value") else v]
                                       for k, v in d.items()})
            inv = dataclasses.replace(inv, desc=d, desc_words=words)
        out.append(inv)
    return out


def prepare(layer: Layer, cfg: HardwareConfig) -> LayerRun:
    """Plan ``layer`` on ``cfg`` and build its invocations and expectations.

    The expectations come from the golden model, never from the invocations' beats:
    for each reduction part (input-channel sub-range x kernel-row chunk x
    kernel-column chunk) ``conv2d_int`` of the layer with the weights outside the
    part zeroed (the bias only in the first part); requantized when the hardware
    requantizes (one part, at most 16 output bits).
    """
    x = layer.x.astype(np.int64)
    w = layer.w.astype(np.int64)
    b = None if layer.b is None else np.asarray(layer.b).astype(np.int64)
    plan = _plan(layer, cfg)
    invs = _invocations(plan, x, w, b, layer.pad_value, layer.requant)
    if layer.draw.get("dont_care"):
        invs = _dont_care(invs, cfg, np.random.default_rng([int(layer.seed or 0), 0xDC0]))
    hw_rq = hardware_requantizes(plan, layer.requant)
    golden = layer.golden()
    raw = None
    parts = {}
    expects = []
    for k, (spec, inv) in enumerate(zip(plan.tiles, invs)):
        key = (spec.ci_sub, (spec.rows.k_lo, spec.rows.k_hi), (spec.cols.k_lo, spec.cols.k_hi))
        if key not in parts:
            if plan.reduction_parts == 1:
                if hw_rq or layer.requant is None:
                    parts[key] = golden
                else:
                    raw = raw if raw is not None else conv2d_int(
                        x, w, b, pad_value=layer.pad_value, data_width=16, **layer.conv)
                    parts[key] = raw
            else:
                wm = np.zeros_like(w)
                a, bb = spec.ci_sub
                sl = (slice(None), slice(a, bb), slice(spec.rows.k_lo, spec.rows.k_hi),
                      slice(spec.cols.k_lo, spec.cols.k_hi))
                wm[sl] = w[sl]
                parts[key] = conv2d_int(x, wm, b if spec.first else None,
                                        pad_value=layer.pad_value, data_width=16,
                                        **layer.conv)
        ref = parts[key]
        co, oy, ox = vector_coords(inv)
        mask = co < inv.out_channels
        gco = spec.co[0] + np.where(mask, co, 0)
        goy = spec.rows.out_idx[oy]
        gox = spec.cols.out_idx[ox]
        values = np.where(mask, ref[spec.n, gco, goy, gox], 0)
        expects.append(Expect(k, spec, inv, values, mask,
                              (np.full_like(co, spec.n), gco, goy, gox)))
    return LayerRun(layer, cfg, plan, invs, expects, golden, hw_rq)


# ----------------------------------------------------------------------------- coverage tags

def _kernel_shape(kh, kw):
    if kh == kw == 1:
        return "1x1"
    if kh == 1:
        return "1xN"
    if kw == 1:
        return "Nx1"
    return "square" if kh == kw else "nonsquare"


def _group_kind(g):
    G, cin, cout = g.groups, g.C_in, g.C_out
    if G == 1:
        return "dense"
    if G == cin:
        return "depthwise" if cout == cin else "depthwise_mult"
    return "grouped"


def _clamp_kind(rq):
    if rq is None:
        return None
    if rq.act_min is not None or rq.act_max is not None:
        return "bounds"
    return "relu" if rq.relu else "range"


def _saturation(run):
    rq = run.layer.requant
    if rq is None:
        return None
    gold = run.golden
    hi, lo = (gold == rq.qmax).any(), (gold == rq.qmin).any()
    return "both" if hi and lo else "hi" if hi else "lo" if lo else "none"


def _pack_kind(run):
    """Result lane width of the invocations: ``8``/``16`` (packed) or ``acc``."""
    from ...hw.layouts import lane_width
    inv = run.invs[0]
    w = lane_width(run.cfg, inv.desc["requant"], inv.desc["out_bits"])
    return str(w) if w < run.cfg.acc_width else "acc"


def layer_tags(run: LayerRun):
    """The coverage sample of a prepared layer: axis name -> bin (None: not applicable)."""
    layer, plan, cfg = run.layer, run.plan, run.cfg
    g = layer.geometry()
    p = layer.conv["padding"]
    form = p if isinstance(p, str) else ("pair" if isinstance(p, tuple) else "int")
    R, C = cfg.rows, cfg.cols
    cg = g.C_in // g.groups
    rq = layer.requant
    tiles = plan.tiles
    dws = [t for t in tiles if t.depthwise]
    passes = max(-(-len(t.rows.out_idx) // t.pass_rows) for t in tiles)
    kparts = len({(t.rows.k_lo, t.rows.k_hi, t.cols.k_lo, t.cols.k_hi) for t in tiles})
    full = layer.draw.get("full") if layer.draw else None
    full_bias = layer.draw.get("full_bias") if layer.draw and g.has_bias else None
    return {
        "kernel_shape": _kernel_shape(g.kh, g.kw), "kh": g.kh, "kw": g.kw,
        "stride_h": g.stride[0], "stride_w": g.stride[1],
        "dilation_h": g.dilation[0], "dilation_w": g.dilation[1],
        "groups": _group_kind(g), "padding_form": form, "padding_mode": g.padding_mode,
        "pad_value": (None if g.padding_mode != "zeros" or not any(g.pad) else
                      ("zero" if layer.pad_value == 0 else "nonzero")),
        "host_prepad": plan.host_prepad_columns > 0,
        "requant": "none" if rq is None else rq.mode,
        "requant_where": None if rq is None else ("hw" if run.hw_requant else "host"),
        "pack": _pack_kind(run),
        "clamp": _clamp_kind(rq),
        "saturation": _saturation(run),
        "data_range": None if full is None else ("full" if full else "small"),
        "bias": "none" if not g.has_bias else
                ("full" if full_bias else "small" if full_bias is not None else "given"),
        "stalls": layer.stalls.kind,
        "batch": "1" if g.N == 1 else "many",
        "cin_tile": ("lt_rows" if cg < R else "eq_rows" if cg == R else
                     "multi_word" if cg <= cfg.channel_tile else "split"),
        "cout_tile": "lt_cols" if g.C_out < C else "eq_cols" if g.C_out == C else "multi_tile",
        "passes": "single" if passes == 1 else "multi",
        "reduction_split": ("none" if plan.reduction_parts == 1 else
                            "kernel" if kparts > 1 else "channel"),
        "polyphase": any(t.rows.dil != g.dilation[0] or t.cols.dil != g.dilation[1]
                         for t in tiles),
        "col_strips": "one" if len({(t.cols.out_idx[0], len(t.cols.out_idx))
                                    for t in tiles}) == 1 else "many",
        "row_bands": "one" if len({(t.rows.out_idx[0], len(t.rows.out_idx))
                                   for t in tiles}) == 1 else "many",
        "invocations": "1" if len(tiles) == 1 else "many",
        "mapping": "depthwise" if dws else "dense",
        "dw_phases": max(t.cols.stride for t in dws) if dws else None,
        "dw_kernel_chunks": (len({(t.rows.k_lo, t.cols.k_lo) for t in dws}) > 1) if dws else None,
    }
