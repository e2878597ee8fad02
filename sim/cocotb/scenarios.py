"""Error scenarios: invalid descriptors and truncated / over-long payload streams.

:func:`corrupt` takes a prepared layer and returns the four input streams with its
first invocation (or invocation ``inv``) broken in one named way, and a copy of the
run whose expectation of that invocation carries the error bits the status must
report. The hardware must
drain every stream up to its ``last`` beat, report the error, not hang, and run
the next layer exactly (the testbench checks all of that).
"""

import copy

from ...hw import layouts as L
from .layers import words_to_ints

__all__ = ["CORRUPTIONS", "EXACT", "HW_BUGS", "RESIZE", "FIELD_KINDS", "FIELD_LIMITS", "corrupt",
           "default_scenarios", "scenario_layers", "scenario_base", "scenario_dw_layer",
           "field_ranges", "field_break_values", "draw_field_break", "apply_field_break"]


#: name -> (what is broken, expected error bits). ``dw_*`` break a layer on the
#: depthwise mapping (square arrays only).
CORRUPTIONS = {
    "desc_kernel_zero": ("descriptor kh = 0", L.ErrorFlag.BAD_DESC),
    "desc_stride_zero": ("descriptor stride_w = 0", L.ErrorFlag.BAD_DESC),
    "desc_width_over": ("descriptor width > max_width", L.ErrorFlag.BAD_DESC),
    "desc_cotiles_zero": ("descriptor cotiles = 0", L.ErrorFlag.BAD_DESC),
    "desc_pass_span": ("descriptor pass_rows whose span exceeds the line buffer",
                       L.ErrorFlag.BAD_DESC),
    "desc_out_bits": ("descriptor requant with out_bits = 1", L.ErrorFlag.BAD_DESC),
    "desc_clamp_order": ("descriptor requant with clamp_lo > clamp_hi", L.ErrorFlag.BAD_DESC),
    "desc_clamp_range": ("descriptor requant with clamp_hi above the out_bits range",
                         L.ErrorFlag.BAD_DESC),
    "desc_requant_mode": ("descriptor requant mode 3 (undefined)", L.ErrorFlag.BAD_DESC),
    "desc_out_of_image": ("descriptor out_width reaching past the right pad",
                          L.ErrorFlag.BAD_DESC),
    "desc_depthwise": ("descriptor depthwise = 1 on a dense layer's fields (cwords != "
                       "cotiles, or no depthwise mapping)", L.ErrorFlag.BAD_DESC),
    "param_count_zero": ("tile parameter cw_count = 0", L.ErrorFlag.BAD_PARAM),
    "param_tiles_mismatch": ("descriptor n_tiles one more than the tiles' sum",
                             L.ErrorFlag.BAD_PARAM),
    "param_shift_range": ("tflite requant with a lane shift of 40", L.ErrorFlag.BAD_PARAM),
    "param_half_up_mult": ("half_up requant with a lane multiplier of 2**16",
                           L.ErrorFlag.BAD_PARAM),
    "param_short": ("parameter stream one beat short", L.ErrorFlag.PARAM_SHORT),
    "param_long": ("parameter stream one beat long", L.ErrorFlag.PARAM_LONG),
    "weight_short": ("weight stream two beats short", L.ErrorFlag.WEIGHT_SHORT),
    "weight_long": ("weight stream two beats long", L.ErrorFlag.WEIGHT_LONG),
    "act_short": ("activation stream three beats short", L.ErrorFlag.ACT_SHORT),
    "act_long": ("activation stream two beats long", L.ErrorFlag.ACT_LONG),
    "act_long_full_lb": ("activation stream two beats long while the final pass spans the "
                         "whole line buffer", L.ErrorFlag.ACT_LONG),
    "dw_phase_words": ("depthwise descriptor phase_words one more than width / "
                       "(stride_w * act_pixels)", L.ErrorFlag.BAD_DESC),
    "dw_pad_left": ("depthwise descriptor pad_left = 1 (rows come padded)",
                    L.ErrorFlag.BAD_DESC),
    "dw_act_short": ("depthwise activation stream three beats short", L.ErrorFlag.ACT_SHORT),
    "dw_act_long": ("depthwise activation stream two beats long", L.ErrorFlag.ACT_LONG),
    "dw_weight_short": ("depthwise weight stream one beat short", L.ErrorFlag.WEIGHT_SHORT),
    "dw_weight_long": ("depthwise weight stream two beats long", L.ErrorFlag.WEIGHT_LONG),
    "desc_field_range": ("dense descriptor: one field of FIELD_LIMITS just outside its legal "
                         "range (amount = (field, value))", L.ErrorFlag.BAD_DESC),
    "dw_desc_field_range": ("depthwise descriptor: one field of FIELD_LIMITS just outside its "
                            "legal range (amount = (field, value))", L.ErrorFlag.BAD_DESC),
}

#: corruptions the hardware does not survive yet, name -> why (each a strict xfail in
#: tests/test_cocotb.py): left out of the default scenario lists until it is fixed.
#: Empty: the two found so far (an abort inside a depthwise block hung) are fixed and
#: kept as regressions in tests/test_cocotb.py
HW_BUGS: dict = {}


def default_scenarios(cfg):
    """The corruption kinds a scenario run uses on ``cfg``: every kind except
    :data:`HW_BUGS` (the ``dw_*`` kinds are skipped where there is no depthwise
    mapping)."""
    return [k for k in CORRUPTIONS if k not in HW_BUGS]


#: over-long streams are not fatal: the extra beats are drained and dropped, and the
#: invocation's results must still be exact
EXACT = {"param_long", "weight_long", "act_long", "act_long_full_lb", "dw_act_long",
         "dw_weight_long"}


def scenario_layers(cfg, seed=1):
    """A clean base layer (>= 2 output-channel tiles, >= 2 input words) and a
    different follow-up layer, for the error and reset scenarios."""
    import numpy as np
    from .layers import Layer
    rng = np.random.default_rng(seed)
    C = cfg.cols
    x = rng.integers(-128, 128, (1, cfg.rows + 1, 5, 7))
    w = rng.integers(-128, 128, (C + 1, cfg.rows + 1, 3, 3))
    b = rng.integers(-1000, 1000, C + 1)
    base = Layer("scenario_base", x, w, b, dict(stride=1, padding=1, dilation=1, groups=1,
                                                padding_mode="zeros"))
    x2 = rng.integers(-128, 128, (1, 3, 6, 9))
    w2 = rng.integers(-128, 128, (2, 3, 2, 3))
    nxt = Layer("scenario_next", x2, w2, None, dict(stride=(2, 1), padding=(0, 2), dilation=1,
                                                    groups=1, padding_mode="reflect"))
    return base, nxt


def scenario_base(cfg, kind, seed=1, extra_rows=3):
    """The layer a corruption ``kind`` is applied to (None: not possible on ``cfg``).

    ``act_long_full_lb``: a kernel whose row span is exactly ``lb_rows`` (one output
    row per pass, the pass reading every line-buffer slot), so that extra activation
    beats would land on a slot the final pass still reads if they were not dropped;
    the image has ``lb_rows + extra_rows`` rows, so the extra beats aim at line-buffer
    slot ``extra_rows`` (the mutation run tries every slot).
    """
    if kind.startswith("dw_"):
        return scenario_dw_layer(cfg, seed)
    if kind != "act_long_full_lb":
        return scenario_layers(cfg, seed)[0]
    import numpy as np
    from .layers import Layer
    for d in range(1, cfg.max_dilation + 1):
        for k in range(2, cfg.max_kernel + 1):
            if (k - 1) * d + 1 == cfg.lb_rows:
                rng = np.random.default_rng(seed)
                C = cfg.cols
                x = rng.integers(-128, 128, (1, 1, cfg.lb_rows + extra_rows, 5))
                w = rng.integers(-128, 128, (2 * C, 1, k, 2))
                return Layer("scenario_full_lb", x, w, None,
                             dict(stride=1, padding=0, dilation=(d, 1), groups=1,
                                  padding_mode="zeros"))
    return None


def scenario_dw_layer(cfg, seed=1):
    """A clean layer on the depthwise mapping (None without it): two channel words,
    stride 2 (two column phases), a zero-padded 3x3 kernel, requantized."""
    if not cfg.depthwise_mode:
        return None
    import numpy as np
    from ...contract import Requant
    from .layers import Layer
    rng = np.random.default_rng(seed)
    c = cfg.cols + 1
    x = rng.integers(-128, 128, (1, c, 7, 9))
    w = rng.integers(-128, 128, (c, 1, 3, 3))
    b = rng.integers(-5000, 5000, c)
    rq = Requant(mode="tflite", multiplier=1 << 30, shift=8, out_zero_point=-3)
    return Layer("scenario_dw", x, w, b, dict(stride=(1, 2), padding=1, dilation=1, groups=c,
                                              padding_mode="zeros"), requant=rq, pad_value=5)


def _set_last(beats, layout, last):
    bit = L.field_offsets(layout)["last"][0]
    return [(b & ~(1 << bit)) | (int(v) << bit) for b, v in zip(beats, last)]


def _resize(beats, layout, n_new):
    """Truncate to (or extend by repeating the final beat to) ``n_new`` beats, with
    ``last`` on the new final beat only."""
    if n_new <= len(beats):
        out = list(beats[:n_new])
    else:
        out = list(beats) + [beats[-1]] * (n_new - len(beats))
    return _set_last(out, layout, [i == n_new - 1 for i in range(n_new)])


def _break_desc(d, kind, cfg):
    """Break descriptor fields ``d`` (a dict, changed in place) the ``kind`` way."""
    requant = {"requant": L.RequantMode.TFLITE, "out_bits": 8, "clamp_lo": -128,
               "clamp_hi": 127}
    change = {
        "desc_kernel_zero": {"kh": 0},
        "desc_stride_zero": {"stride_w": 0},
        "desc_width_over": {"width": cfg.max_width + 1},
        "desc_cotiles_zero": {"cotiles": 0},
        "desc_pass_span": {"pass_rows": cfg.lb_rows + 1},
        "desc_out_bits": dict(requant, out_bits=1, clamp_lo=-1, clamp_hi=0),
        "desc_clamp_order": dict(requant, clamp_lo=5, clamp_hi=-5),
        "desc_clamp_range": dict(requant, clamp_hi=128),
        "desc_requant_mode": {"requant": 3},
        "desc_out_of_image": {"out_width": d["out_width"] + d["width"] + 2},
        "desc_depthwise": {"depthwise": 1},
        "param_tiles_mismatch": {"n_tiles": d["n_tiles"] + 1},
        "dw_phase_words": {"phase_words": d["phase_words"] + 1},
        "dw_pad_left": {"pad_left": 1},
    }[kind]
    d.update(change)


#: the corruption kinds that set one descriptor field just outside its legal range
#: (:data:`FIELD_LIMITS`; ``corrupt(amount=(field, value))``), dense and depthwise
FIELD_KINDS = {"desc_field_range": False, "dw_desc_field_range": True}

#: The descriptor fields with a limit of their own in ``Control._conditions``
#: (hw/control.py), as (field, mapping, legal range); ``mapping`` is "both" (the common
#: checks), "dense" or "dw". :func:`field_ranges` turns them into numbers for one
#: descriptor. A derived bound ("derived") comes from a check on a product of fields
#: (the other fields of the descriptor held as they are). Left out: the pads of a
#: dense descriptor, pad_value and out_zp (no limit of their own), depthwise
#: (desc_depthwise), w_total > weight_depth and span_h > dw_ring_rows (on the
#: regression configurations no descriptor with every field in range reaches them),
#: p.xw == 0 (only through width / stride_w / phase_words = 0, which the table draws).
FIELD_LIMITS = (
    ("cotiles", "both", "1 .. max_cotiles"),
    ("height", "both", "1 .. max_height"),
    ("width", "both", "1 .. max_width"),
    ("out_height", "both", "1 .. derived: the last input row read <= height - 1 + pad_bottom"),
    ("stride_h", "both", "1 .. max_stride"),
    ("dil_h", "both", "1 .. max_dilation"),
    ("requant", "both", "0 .. 2 (mode 3 undefined)"),
    ("out_bits", "both", "2 .. min(16, acc_width) (requantized: a NONE descriptor gets tflite, "
                         "out_bits 8, clamp -128..127 first)"),
    ("clamp_lo", "both", "-2**(out_bits-1) .. clamp_hi (requantized, as out_bits)"),
    ("clamp_hi", "both", "clamp_lo .. 2**(out_bits-1) - 1 (requantized, as out_bits)"),
    ("out_width", "dense", "1 .. derived: the last input column read <= width - 1 + pad_right"),
    ("cwords", "dense", "1 .. max_cwords"),
    ("n_tiles", "dense", "1 .. weight_tiles"),
    ("pass_rows", "dense", "1 .. derived: pass span <= lb_rows and pass_rows * out_width "
                           "<= acc_depth"),
    ("kh", "dense", "1 .. max_kernel"),
    ("kw", "dense", "1 .. max_kernel"),
    ("stride_w", "dense", "1 .. max_stride"),
    ("dil_w", "dense", "1 .. max_dilation"),
    ("out_width", "dw", "1 .. derived: the last block's row-vector words <= phase_words"),
    ("cwords", "dw", "1 .. max_cwords (cotiles set alike where it fits: cwords == cotiles)"),
    ("kh", "dw", "1 .. dw_kernel"),
    ("kw", "dw", "1 .. dw_kernel"),
    ("stride_w", "dw", "1 .. dw_max_stride"),
    ("dil_w", "dw", "1 .. 1"),
    ("pad_left", "dw", "0 .. 0"),
    ("pad_right", "dw", "0 .. 0"),
    ("phase_words", "dw", "width / (stride_w * act_pixels) exactly"),
)

_REQUANT_CTX = {"requant": L.RequantMode.TFLITE, "out_bits": 8, "clamp_lo": -128,
                "clamp_hi": 127}


def _field_bounds(cfg, name):
    """The values descriptor field ``name`` can hold (its width in descriptor_layout)."""
    _, width, signed = L.field_offsets(L.descriptor_layout(cfg))[name]
    return (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)


def _field_context(d, field, depthwise):
    """The other fields a break of ``field`` sets first (the check it aims at applies
    only with them), as a dict."""
    mode = d["requant"]
    raw = mode.value if hasattr(mode, "value") else int(mode)
    if field in ("out_bits", "clamp_lo", "clamp_hi") and raw == 0:
        return dict(_REQUANT_CTX)
    return {}


def field_ranges(cfg, desc, depthwise):
    """``{field: (lo, hi, far)}``: the legal range of every :data:`FIELD_LIMITS` field
    of ``desc`` on its mapping (the field's context of :func:`_field_context` applied),
    and whether a random value further out is safe (a derived bound: no, a product
    could wrap)."""
    mapping = "dw" if depthwise else "dense"
    out = {}
    R, P = cfg.rows, cfg.act_pixels
    for field, m, _ in FIELD_LIMITS:
        if m not in ("both", mapping):
            continue
        d = dict(desc, **_field_context(desc, field, depthwise))
        far = True
        ob = int(d["out_bits"])       # any value without requantization (see _field_context)
        qlo, qhi = (-(1 << (ob - 1)), (1 << (ob - 1)) - 1) if ob >= 1 else (0, -1)
        if field == "cotiles":
            lo, hi = 1, cfg.max_cotiles
        elif field == "height":
            lo, hi = 1, cfg.max_height
        elif field == "width":
            lo, hi = 1, cfg.max_width
        elif field == "stride_h":
            lo, hi = 1, cfg.max_stride
        elif field == "dil_h":
            lo, hi = 1, cfg.max_dilation
        elif field == "requant":
            lo, hi = 0, 2
        elif field == "out_bits":
            lo, hi = 2, min(16, cfg.acc_width)
        elif field == "clamp_lo":
            lo, hi = qlo, int(d["clamp_hi"])
        elif field == "clamp_hi":
            lo, hi = int(d["clamp_lo"]), qhi
        elif field == "out_height":
            # (out_height-1)*stride_h + (kh-1)*dil_h - pad_top <= height - 1 + pad_bottom
            room = d["height"] - 1 + d["pad_bottom"] + d["pad_top"] - (d["kh"] - 1) * d["dil_h"]
            lo, hi, far = 1, room // d["stride_h"] + 1, False
        elif field == "out_width" and not depthwise:
            room = d["width"] - 1 + d["pad_right"] + d["pad_left"] - (d["kw"] - 1) * d["dil_w"]
            lo, hi, far = 1, room // d["stride_w"] + 1, False
        elif field == "out_width":
            # ((ceil(out_width / R) - 1) << (lgR - lgP)) + dw_shadow_words <= phase_words
            sh = max(0, (R - 1).bit_length() - (P.bit_length() - 1))
            nblk = ((d["phase_words"] - cfg.dw_shadow_words) >> sh) + 1
            lo, hi, far = 1, nblk * R, False
        elif field == "cwords":
            lo, hi = 1, cfg.max_cwords
        elif field == "n_tiles":
            lo, hi = 1, cfg.weight_tiles
        elif field == "pass_rows":
            span = (d["kh"] - 1) * d["dil_h"] + 1
            lo, far = 1, False
            hi = min((cfg.lb_rows - span) // d["stride_h"] + 1, cfg.acc_depth // d["out_width"])
        elif field in ("kh", "kw"):
            lo, hi = 1, (cfg.dw_kernel if depthwise else cfg.max_kernel)
        elif field == "stride_w":
            lo, hi = 1, (cfg.dw_max_stride if depthwise else cfg.max_stride)
        elif field == "dil_w":
            lo, hi = 1, (1 if depthwise else cfg.max_dilation)
        elif field in ("pad_left", "pad_right"):
            lo, hi = 0, 0
        elif field == "phase_words":
            v = d["width"] // (d["stride_w"] * P)
            lo, hi = v, v
        else:                                       # pragma: no cover
            raise AssertionError(field)
        out[field] = (int(lo), int(hi), far)
    return out


def field_break_values(cfg, desc, depthwise, field, rng=None):
    """The values just outside ``field``'s legal range that the field can hold: lo - 1
    and hi + 1, and with ``rng`` (where a value further out is safe) one random value
    beyond each."""
    lo, hi, far = field_ranges(cfg, desc, depthwise)[field]
    fmin, fmax = _field_bounds(cfg, field)
    out = [v for v in (lo - 1, hi + 1) if fmin <= v <= fmax]
    if rng is not None and far:
        if hi + 2 <= fmax:
            out.append(int(rng.integers(hi + 2, fmax + 1)))
        if fmin <= lo - 2:
            out.append(int(rng.integers(fmin, lo - 1)))
    return out


def draw_field_break(rng, cfg, desc, depthwise, far_p=0.2):
    """``(field, value)``: a :data:`FIELD_LIMITS` field of ``desc``'s mapping, drawn
    uniformly among those that can hold a value outside their range, and such a
    value: lo - 1 or hi + 1, or (``far_p`` of the time, where safe) a random one
    further out. None when no field can be broken."""
    fields = [f for f in field_ranges(cfg, desc, depthwise)
              if field_break_values(cfg, desc, depthwise, f)]
    if not fields:
        return None
    field = fields[int(rng.integers(len(fields)))]
    near = field_break_values(cfg, desc, depthwise, field)
    farv = field_break_values(cfg, desc, depthwise, field, rng)[len(near):]
    if farv and rng.random() < far_p:
        return field, farv[int(rng.integers(len(farv)))]
    return field, near[int(rng.integers(len(near)))]


def apply_field_break(d, cfg, depthwise, field, value):
    """Set descriptor fields ``d`` (a dict, changed in place): ``field`` to ``value``,
    after its context (:func:`_field_context`); on a depthwise descriptor a cwords
    break sets cotiles alike where cotiles can hold it (cwords == cotiles stays true,
    so only cwords's own limit is broken)."""
    d.update(_field_context(d, field, depthwise))
    if depthwise and field == "cwords":
        fmin, fmax = _field_bounds(cfg, "cotiles")
        if fmin <= value <= fmax:
            d["cotiles"] = value
    d[field] = value


def _pack_desc(dl, d):
    """Pack descriptor fields; a requant mode the enum lacks (3) goes in as raw bits."""
    mode = d["requant"]
    raw = mode.value if hasattr(mode, "value") else int(mode)
    if raw in {m.value for m in L.RequantMode}:
        return L.pack(dl, d)
    off, width, _ = L.field_offsets(dl)["requant"]
    word = L.pack(dl, dict(d, requant=L.RequantMode.NONE))
    return word | ((raw & ((1 << width) - 1)) << off)


def _break_params(param, d, pl, kind):
    """Break the first tile's parameters (and set the descriptor's requant mode the
    check applies to); return the new beats and descriptor fields."""
    p0 = L.unpack(pl, param[0])
    d = dict(d)
    if kind == "param_count_zero":
        p0["data"]["cw_count"] = 0
    elif kind == "param_shift_range":
        d.update(requant=L.RequantMode.TFLITE, out_bits=8, clamp_lo=-128, clamp_hi=127)
        p0["data"]["lanes"][0]["shift"] = 40
    elif kind == "param_half_up_mult":
        d.update(requant=L.RequantMode.HALF_UP, out_bits=8, clamp_lo=-128, clamp_hi=127)
        p0["data"]["lanes"][0]["mult"] = 1 << 16
    else:
        raise ValueError(f"not a parameter corruption: {kind!r}")
    return [L.pack(pl, p0)] + param[1:], d


#: the beats a short / long kind removes / adds by default (``corrupt(amount=None)``):
#: (stream, default amount); dw_weight_short removes 1
RESIZE = {
    "param_short": ("param", 1), "param_long": ("param", 1),
    "weight_short": ("weight", 2), "weight_long": ("weight", 2),
    "dw_weight_short": ("weight", 1), "dw_weight_long": ("weight", 2),
    "act_short": ("act", 3), "dw_act_short": ("act", 3),
    "act_long": ("act", 2), "act_long_full_lb": ("act", 2), "dw_act_long": ("act", 2),
}


def corrupt(run, kind, *, inv=0, amount=None):
    """``(streams, run_copy)``: the run's streams with invocation ``inv`` broken by
    ``kind`` (the other invocations unchanged, in order), and a copy of the run whose
    expectation ``inv`` carries the error bits.

    ``amount``: for the short / long kinds (:data:`RESIZE`), the beats removed from
    (at least one beat is kept) or added to (repeating the final beat) the stream;
    default the kind's fixed amount."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; known: {', '.join(CORRUPTIONS)}")
    if not 0 <= inv < run.n_inv:
        raise ValueError(f"inv={inv} is not an invocation of the run (it has {run.n_inv})")
    if amount is not None and kind not in FIELD_KINDS and (kind not in RESIZE or int(amount) < 1):
        raise ValueError(f"amount={amount!r}: only the short / long kinds take an amount >= 1"
                         " (and the field-range kinds a (field, value))")
    cfg = run.cfg
    k_inv = inv
    inv = run.invs[k_inv]
    dl, pl, wl, al = (L.descriptor_layout(cfg), L.param_beat_layout(cfg),
                      L.weight_beat_layout(cfg), L.act_beat_layout(cfg))
    d = dict(inv.desc)
    desc = words_to_ints(inv.desc_words)
    param = words_to_ints(inv.param_words)
    weight = words_to_ints(inv.weight_words)
    act = words_to_ints(inv.act_words)
    n = RESIZE[kind][1] if kind in RESIZE and amount is None else (
        int(amount) if amount is not None and kind in RESIZE else None)
    if kind in FIELD_KINDS:
        dw = FIELD_KINDS[kind]
        if bool(inv.depthwise) != dw:
            raise ValueError(f"{kind} breaks a {'depthwise' if dw else 'dense'} invocation")
        if amount is None:                 # a fixed default break
            import numpy as np
            amount = draw_field_break(np.random.default_rng(0), cfg, d, dw)
        field, value = amount
        apply_field_break(d, cfg, dw, field, int(value))
        desc = [_pack_desc(dl, d)]
    elif kind.startswith(("desc_", "dw_phase", "dw_pad")) or kind == "param_tiles_mismatch":
        _break_desc(d, kind, cfg)
        desc = [_pack_desc(dl, d)]
    elif kind.startswith("param_") and kind not in ("param_short", "param_long"):
        param, d = _break_params(param, d, pl, kind)
        desc = [L.pack(dl, d)]
    elif kind == "param_short":
        if len(param) < 2:
            raise ValueError("param_short needs a layer with at least 2 output-channel tiles")
        param = _resize(param, pl, max(1, len(param) - n))
    elif kind == "param_long":
        param = _resize(param, pl, len(param) + n)
    elif kind in ("weight_short", "dw_weight_short"):
        weight = _resize(weight, wl, max(1, len(weight) - n))
    elif kind in ("weight_long", "dw_weight_long"):
        weight = _resize(weight, wl, len(weight) + n)
    elif kind in ("act_short", "dw_act_short"):
        act = _resize(act, al, max(1, len(act) - n))
    elif kind in ("act_long", "act_long_full_lb", "dw_act_long"):
        act = _resize(act, al, len(act) + n)
    broken = [desc, param, weight, act]
    fields = ("desc_words", "param_words", "weight_words", "act_words")
    streams = []
    for s, f in enumerate(fields):       # the other invocations unchanged
        before = sum((words_to_ints(getattr(i, f)) for i in run.invs[:k_inv]), [])
        after = sum((words_to_ints(getattr(i, f)) for i in run.invs[k_inv + 1:]), [])
        streams.append(before + broken[s] + after)
    bad = copy.copy(run)
    bad.expects = list(run.expects)
    bad.expects[k_inv] = copy.copy(run.expects[k_inv])
    bad.expects[k_inv].error = CORRUPTIONS[kind][1]
    bad.expects[k_inv].exact = kind in EXACT
    return streams, bad
