"""Control alone (amaranth.sim) against a Python model of its documented run FSM.

Covers
------
- the FSM of the module docstring, cycle by cycle: ``i_desc.ready`` only in
  ``IDLE``, ``checking`` in the handshake and check cycles, ``start`` exactly
  :data:`CHECK_CYCLES` after the handshake, ``run`` in ``RUN``/``ABORT``,
  ``abort`` in ``ABORT``, ``RUN -> STATUS`` on ``work_done``, ``ABORT`` left only
  once ``drained`` is high and ``drain_cycles`` have passed, one status beat held
  under back-pressure, ``active``;
- every ``BAD_DESC`` condition alone (a table per mapping: a valid descriptor, then
  the same one with one field out of range or inconsistent), plus a depthwise
  descriptor on hardware without the depthwise mapping;
- the derived layer figures (:func:`layer_layout`) against Python formulas on
  random valid dense and depthwise layers on 1x1, 2x2, 4x4 and 3x2 arrays;
- ``err``: fatal bits abort the next cycle, the others are only recorded, bits
  outside ``RUN``/``ABORT`` (and during a rejected descriptor's ``ABORT``) are
  ignored; the status beat carries the error flags and the counters; the next
  descriptor starts with no error.

"""

import pytest

from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.control import Control, CHECK_CYCLES, layer_layout
from systolic_conv.hw.layouts import (descriptor_layout, status_layout, RequantMode, ErrorFlag,
                                      COUNTERS, STATUS_COUNTER_WIDTH, pack, unpack, field_offsets)

from blockbench import seeded, simulate, mask

FATAL = (ErrorFlag.BAD_DESC | ErrorFlag.BAD_PARAM | ErrorFlag.ACT_SHORT |
         ErrorFlag.WEIGHT_SHORT | ErrorFlag.PARAM_SHORT)
NONFATAL = ErrorFlag.ACT_LONG | ErrorFlag.WEIGHT_LONG | ErrorFlag.PARAM_LONG


# -- descriptors ------------------------------------------------------------------------

def _val(v):
    return v.value if isinstance(v, RequantMode) else int(v)


def pack_desc(cfg, d):
    """Pack a descriptor dict; ``requant`` may be any 2-bit value (3 is invalid)."""
    lay = descriptor_layout(cfg)
    rq = _val(d["requant"])
    raw = pack(lay, {**d, "requant": RequantMode.NONE})
    off, width, _ = field_offsets(lay)["requant"]
    return raw | (rq << off)


def fits(cfg, d):
    """Every field value is representable in its field (the table needs it)."""
    for name, (_off, width, signed) in field_offsets(descriptor_layout(cfg)).items():
        v = _val(d[name])
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, mask(width))
        if not lo <= v <= hi:
            return False
    return True


def requant_fields(rng):
    mode = rng.choice([RequantMode.NONE, RequantMode.TFLITE, RequantMode.HALF_UP])
    if mode == RequantMode.NONE:
        return dict(requant=mode, out_bits=rng.randint(0, 31), out_zp=rng.randint(-500, 500),
                    clamp_lo=rng.randint(-65536, 65535), clamp_hi=rng.randint(-65536, 65535))
    ob = rng.randint(2, 16)
    lo = rng.randint(-(1 << (ob - 1)), (1 << (ob - 1)) - 1)
    hi = rng.randint(lo, (1 << (ob - 1)) - 1)
    zp = rng.randint(-(1 << (ob - 1)), (1 << (ob - 1)) - 1)
    return dict(requant=mode, out_bits=ob, out_zp=zp, clamp_lo=lo, clamp_hi=hi)


def random_dense(cfg, rng):
    """A random dense descriptor inside every documented limit."""
    while True:
        kh, kw = rng.randint(1, cfg.max_kernel), rng.randint(1, cfg.max_kernel)
        sh, sw = rng.randint(1, cfg.max_stride), rng.randint(1, cfg.max_stride)
        dh, dwl = rng.randint(1, cfg.max_dilation), rng.randint(1, cfg.max_dilation)
        height = rng.randint(1, min(cfg.max_height, 24))
        width = rng.randint(1, cfg.max_width)
        pt, pb = rng.randint(0, dh * (kh - 1)), rng.randint(0, dh * (kh - 1))
        pl, pr = rng.randint(0, dwl * (kw - 1)), rng.randint(0, dwl * (kw - 1))
        oh_max = (height + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow_max = (width + pl + pr - dwl * (kw - 1) - 1) // sw + 1
        if oh_max < 1 or ow_max < 1:
            continue
        oh, ow = rng.randint(1, oh_max), rng.randint(1, ow_max)
        span = (kh - 1) * dh + 1
        g_lb = (cfg.lb_rows - span) // sh + 1 if span <= cfg.lb_rows else 0
        g_max = min(oh, cfg.acc_depth // ow, g_lb)
        if g_max < 1:
            continue
        d = dict(depthwise=0, cwords=rng.randint(1, cfg.max_cwords),
                 cotiles=rng.randint(1, cfg.max_cotiles), n_tiles=rng.randint(1, cfg.weight_tiles),
                 height=height, width=width, out_height=oh, out_width=ow,
                 pass_rows=rng.randint(1, g_max), kh=kh, kw=kw, stride_h=sh, stride_w=sw,
                 dil_h=dh, dil_w=dwl, pad_top=pt, pad_bottom=pb, pad_left=pl, pad_right=pr,
                 phase_words=rng.randint(0, 3), pad_value=rng.randint(-128, 127),
                 **requant_fields(rng))
        return d


def random_depthwise(cfg, rng):
    """A random depthwise descriptor inside every documented limit: the host pads
    each row and splits it into ``stride_w`` phases of ``phase_words`` words, enough
    for every block's row-vector reads (``dw_shadow_words`` words from the block's
    first pixel)."""
    R, P = cfg.rows, cfg.act_pixels
    while True:
        kh, kw = rng.randint(1, cfg.dw_kernel), rng.randint(1, cfg.dw_kernel)
        sh, sw = rng.randint(1, cfg.max_stride), rng.randint(1, cfg.dw_max_stride)
        dh = rng.randint(1, cfg.max_dilation)
        if (kh - 1) * dh + 1 > cfg.dw_ring_rows:
            continue
        height = rng.randint(1, min(cfg.max_height, 24))
        pt, pb = rng.randint(0, dh * (kh - 1)), rng.randint(0, dh * (kh - 1))
        oh_max = (height + pt + pb - dh * (kh - 1) - 1) // sh + 1
        wpad = rng.randint(1, cfg.max_width)
        ow_max = (wpad - kw) // sw + 1
        if oh_max < 1 or ow_max < 1:
            continue
        oh, ow = rng.randint(1, oh_max), rng.randint(1, ow_max)
        nblk = -(-ow // R)
        pw = -(-max(-(-wpad // sw), (nblk - 1) * R + cfg.dw_shadow_words * P) // P)
        if sw * pw * P > cfg.max_width:
            continue
        cw = rng.randint(1, min(cfg.max_cwords, cfg.max_cotiles))
        if cw * kh * kw > cfg.weight_depth:
            continue
        return dict(depthwise=1, cwords=cw, cotiles=cw, n_tiles=0, height=height,
                    width=sw * pw * P, out_height=oh, out_width=ow, pass_rows=0, kh=kh, kw=kw,
                    stride_h=sh, stride_w=sw, dil_h=dh, dil_w=1, pad_top=pt, pad_bottom=pb,
                    pad_left=0, pad_right=0, phase_words=pw, pad_value=rng.randint(-128, 127),
                    **requant_fields(rng))


def derived(cfg, d):
    """The documented layer figures of a valid descriptor."""
    R, P = cfg.rows, cfg.act_pixels
    taps = d["kh"] * d["kw"]
    xw = d["stride_w"] * d["phase_words"] if d["depthwise"] else -(-d["width"] // P)
    out = dict(taps=taps, kh_m1=d["kh"] - 1, kw_m1=d["kw"] - 1, cot_m1=d["cotiles"] - 1,
               cw_m1=d["cwords"] - 1, ow_m1=d["out_width"] - 1, xw_m1=xw - 1,
               span_h=(d["kh"] - 1) * d["dil_h"] + 1,
               act_total=d["height"] * xw * d["cwords"],
               w_total=d["cotiles"] * taps if d["depthwise"] else d["n_tiles"] * R)
    if d["depthwise"]:
        nblk = -(-d["out_width"] // R)
        out.update(nblk_m1=nblk - 1, last_rows=d["out_width"] - (nblk - 1) * R)
    else:
        out.update(pass_span=(d["pass_rows"] - 1) * d["stride_h"] + (d["kh"] - 1) * d["dil_h"] + 1,
                   pass_step=d["pass_rows"] * d["stride_h"])
    return out


# -- the bench and the model -----------------------------------------------------------

class Plan:
    """What the bench does with one descriptor: ``bad`` (BAD_DESC expected),
    ``work`` (cycles in RUN before ``work_done``), ``errs`` {RUN cycle: bits}."""

    def __init__(self, desc, bad=False, work=3, errs=None, name=""):
        self.desc, self.bad, self.work, self.errs, self.name = desc, bad, work, errs or {}, name


def run_control(cfg, plans, seed, drain=4, idle=0.3, stall=0.4, noise=True, max_cycles=20000):
    """Drive ``plans`` through a Control and check every cycle against the model.
    Returns the per-descriptor records (start cycle, layer, status)."""
    dut = Control(cfg, drain_cycles=drain)
    lay_layer, lay_status = layer_layout(cfg), status_layout(cfg)
    cnt_w = STATUS_COUNTER_WIDTH
    recs = [dict(name=p.name, starts=[], status=None, layer_at_start=None) for p in plans]
    with seeded(seed) as rng:
        # the model's state: descriptor index, FSM state, cycles in it, error flags
        st = dict(i=0, offered=False, state="IDLE", k=0, in_state=0, error=0)

        def step(ctx, t):
            i = st["i"]
            if i >= len(plans):
                return True
            plan = plans[i]
            # -- inputs, chosen from the model's state (it is checked to be the DUT's)
            if not st["offered"] and st["state"] == "IDLE" and rng.random() >= idle:
                ctx.set(dut.i_desc.payload.as_value(), pack_desc(cfg, plan.desc))
                st["offered"] = True
            ctx.set(dut.i_desc.valid, int(st["offered"]))
            state = st["state"]
            err = 0
            if state == "RUN":
                err = plan.errs.get(st["in_state"], 0)
            elif noise and rng.random() < 0.3:
                err = rng.choice([FATAL, NONFATAL, 0xFF])       # ignored outside RUN/ABORT
            if state == "ABORT" and noise and rng.random() < 0.2:
                err = rng.choice([ErrorFlag.ACT_LONG, ErrorFlag.WEIGHT_SHORT])
            work_done = int(state == "RUN" and st["in_state"] >= plan.work or
                            (noise and state != "RUN" and rng.random() < 0.3))
            drained = int(rng.random() < (0.35 if noise else 1.0))
            counters = [rng.getrandbits(cnt_w) for _ in COUNTERS]
            sready = int(rng.random() >= stall)
            ctx.set(dut.err, err)
            ctx.set(dut.work_done, work_done)
            ctx.set(dut.drained, drained)
            ctx.set(dut.counters.as_value(), sum(v << (cnt_w * j) for j, v in enumerate(counters)))
            ctx.set(dut.o_status.ready, sready)
            # -- the model's outputs for this cycle
            valid = st["offered"]
            want = dict(ready=int(state == "IDLE"),
                        checking=int(state == "CHECK" or (state == "IDLE" and valid)),
                        start=int(state == "CHECK" and st["k"] == CHECK_CYCLES - 1
                                  and not plan.bad),
                        run=int(state in ("RUN", "ABORT")), abort=int(state == "ABORT"),
                        svalid=int(state == "STATUS"),
                        active=int(state != "IDLE" or valid), error=st["error"])
            got = dict(ready=ctx.get(dut.i_desc.ready), checking=ctx.get(dut.checking),
                       start=ctx.get(dut.start), run=ctx.get(dut.run), abort=ctx.get(dut.abort),
                       svalid=ctx.get(dut.o_status.valid), active=ctx.get(dut.active),
                       error=ctx.get(dut.error))
            assert got == want, (f"cycle {t}, descriptor {i} ({plan.name}), model state "
                                 f"{state}: got {got}, expected {want}")
            if want["start"]:
                recs[i]["starts"].append(t)
                lay = unpack(lay_layer, ctx.get(dut.layer.as_value()))
                recs[i]["layer_at_start"] = lay
            if state == "STATUS" and sready:
                payload = unpack(lay_status, ctx.get(dut.o_status.payload.as_value()))
                recs[i]["status"] = payload
                want_status = dict(error=st["error"], **dict(zip(COUNTERS, counters)))
                assert payload == want_status, (f"cycle {t}, descriptor {i} ({plan.name}): status "
                                                f"{payload}, expected {want_status}")
                recs[i]["layer_at_status"] = unpack(lay_layer, ctx.get(dut.layer.as_value()))
            # -- the model's next state
            nxt, run_now = state, state in ("RUN", "ABORT")
            if state == "IDLE" and valid:
                st.update(offered=False, error=0, k=0)
                nxt = "CHECK"
            elif state == "CHECK":
                if st["k"] == CHECK_CYCLES - 1:
                    if plan.bad:
                        st["error"] = ErrorFlag.BAD_DESC
                    nxt = "ABORT" if plan.bad else "RUN"
                else:
                    st["k"] += 1
            elif state == "RUN":
                if (st["error"] | err) & FATAL:
                    nxt = "ABORT"
                elif work_done:
                    nxt = "STATUS"
            elif state == "ABORT":
                if drained and st["in_state"] >= drain:
                    nxt = "STATUS"
            elif state == "STATUS" and sready:
                nxt = "IDLE"
                st["i"] += 1
            if run_now and not (plan.bad and state == "ABORT"):
                st["error"] |= err           # a rejected descriptor reports BAD_DESC only
            st["in_state"] = st["in_state"] + 1 if nxt == state else 0
            st["state"] = nxt
            return False

        n = simulate(dut, step, max_cycles)
        assert st["i"] == len(plans), (f"only {st['i']} of {len(plans)} descriptors done "
                                       f"in {n} cycles")
    return recs


# -- BAD_DESC, one condition at a time -------------------------------------------------

CFG = HardwareConfig(rows=2, cols=2, act_pixels=2, max_width=32, max_cwords=4, lb_rows=8,
                     max_kernel=5, max_stride=2, max_dilation=2, max_height=32, acc_depth=12,
                     weight_depth=64, max_cotiles=8, out_fifo_depth=8, dw_kernel=3,
                     dw_max_stride=2)

TFLITE8 = dict(requant=RequantMode.TFLITE, out_bits=8, out_zp=3, clamp_lo=-128, clamp_hi=127,
               pad_value=-5)

# height 6 x width 5 (3 beats of 2 pixels), 3x2 kernel, pads 1/1/1/0: the last
# output row and column read exactly the last padded input row and column.
DENSE = dict(depthwise=0, cwords=2, cotiles=2, n_tiles=24, height=6, width=5, out_height=6,
             out_width=5, pass_rows=2, kh=3, kw=2, stride_h=1, stride_w=1, dil_h=1, dil_w=1,
             pad_top=1, pad_bottom=1, pad_left=1, pad_right=0, phase_words=0, **TFLITE8)

# 2 words of 2 channels, 3x3, 5 rows padded 1/1; rows of 8 pixels (phase_words 4):
# 3 blocks of 2 output pixels, the last block's row vector ends on the last word.
DEPTHWISE = dict(depthwise=1, cwords=2, cotiles=2, n_tiles=0, height=5, width=8, out_height=5,
                 out_width=5, pass_rows=0, kh=3, kw=3, stride_h=1, stride_w=1, dil_h=1, dil_w=1,
                 pad_top=1, pad_bottom=1, pad_left=0, pad_right=0, phase_words=4, **TFLITE8)

# (name, fields that keep it valid, fields that make it bad)
COMMON_ROWS = [
    ("cotiles 0", {}, dict(cotiles=0)),
    ("height 0", {}, dict(height=0)),
    ("height > max_height", dict(height=32, pad_bottom=0), dict(height=33)),
    ("out_height 0", {}, dict(out_height=0)),
    ("out_width 0", {}, dict(out_width=0)),
    ("stride_h 0", {}, dict(stride_h=0)),
    ("stride_h > max_stride", dict(stride_h=2, out_height=2), dict(stride_h=3)),
    ("dil_h 0", {}, dict(dil_h=0)),
    ("dil_h > max_dilation", dict(dil_h=2, out_height=1), dict(dil_h=3)),
    ("last output row below the bottom padding", {}, dict(out_height=7)),
    ("last output row below the bottom padding (pad_top)", dict(pad_top=2, pad_bottom=0),
     dict(pad_top=0)),
    ("requant 3", {}, dict(requant=3)),
    ("out_bits 1", dict(out_bits=2, clamp_lo=-2, clamp_hi=1, out_zp=0), dict(out_bits=1)),
    ("out_bits 17", dict(out_bits=16), dict(out_bits=17)),
    ("clamp_lo > clamp_hi", dict(clamp_lo=5, clamp_hi=5), dict(clamp_hi=4)),
    ("clamp_lo below out_bits range", dict(out_bits=4, clamp_lo=-8, clamp_hi=7, out_zp=0),
     dict(clamp_lo=-9)),
    ("clamp_hi above out_bits range", dict(out_bits=4, clamp_lo=-8, clamp_hi=7, out_zp=0),
     dict(clamp_hi=8)),
    ("clamp_hi above 16-bit range", dict(out_bits=16, clamp_hi=32767), dict(clamp_hi=32768)),
    ("half_up clamps", dict(requant=RequantMode.HALF_UP), dict(clamp_lo=-129)),
    # without requantization the output fields are not used
    ("no requant, any out_bits and clamps", dict(requant=RequantMode.NONE, out_bits=0,
                                                  clamp_lo=9, clamp_hi=-9), dict(requant=3)),
]

DENSE_ROWS = COMMON_ROWS + [
    ("cotiles > max_cotiles", dict(cotiles=8), dict(cotiles=9)),
    ("width 0", {}, dict(width=0)),
    ("width > max_width", dict(width=32), dict(width=33)),
    ("cwords 0", {}, dict(cwords=0)),
    ("cwords > max_cwords", dict(cwords=4), dict(cwords=5)),
    ("n_tiles 0", {}, dict(n_tiles=0)),
    ("n_tiles > weight_depth / rows", dict(n_tiles=32), dict(n_tiles=33)),
    ("pass_rows 0", {}, dict(pass_rows=0)),
    ("kh 0", {}, dict(kh=0)),
    ("kh > max_kernel", dict(kh=5, pad_top=2, pad_bottom=2, out_height=6, pass_rows=1),
     dict(kh=6, pad_top=3)),
    ("kw 0", {}, dict(kw=0)),
    ("kw > max_kernel", dict(kw=5, pad_left=2, pad_right=2), dict(kw=6, pad_right=3)),
    ("stride_w 0", {}, dict(stride_w=0)),
    ("stride_w > max_stride", dict(stride_w=2, out_width=2), dict(stride_w=3)),
    ("dil_w 0", {}, dict(dil_w=0)),
    ("dil_w > max_dilation", dict(dil_w=2, out_width=3), dict(dil_w=3)),
    ("pass span > lb_rows", dict(pass_rows=1, stride_h=2, dil_h=2, kh=4, pad_top=3,
                                 pad_bottom=3, out_height=2),
     dict(pass_rows=2)),                    # span (2-1)*2 + 3*2 + 1 = 9 > 8
    ("pass_rows * out_width > acc_depth", dict(out_width=6, pad_right=1),   # 2 * 6 = 12
     dict(pass_rows=3)),
    ("last output column past the right padding", {}, dict(out_width=6)),
    ("last output column past the right padding (pad_left)", dict(pad_left=2),
     dict(pad_left=0)),
]

DEPTHWISE_ROWS = COMMON_ROWS + [
    ("cotiles != cwords", {}, dict(cotiles=1)),
    ("cwords > max_cwords", dict(cwords=4, cotiles=4), dict(cwords=5, cotiles=5)),
    ("cwords 0", {}, dict(cwords=0, cotiles=0)),
    ("kh 0", {}, dict(kh=0)),
    ("kh > dw_kernel", dict(out_height=4), dict(kh=4)),
    ("kw 0", {}, dict(kw=0)),
    ("kw > dw_kernel", {}, dict(kw=4)),
    ("stride_w 0", {}, dict(stride_w=0)),
    ("stride_w > dw_max_stride", dict(stride_w=2, width=16), dict(stride_w=3, width=24)),
    ("dil_w 0", {}, dict(dil_w=0)),
    ("dil_w 2", {}, dict(dil_w=2)),
    ("pad_left", {}, dict(pad_left=1)),
    ("pad_right", {}, dict(pad_right=1)),
    ("width != stride_w * phase_words * act_pixels", {}, dict(width=10)),
    ("width > max_width", dict(stride_w=2, phase_words=8, width=32),
     dict(phase_words=10, width=40)),
    ("phase_words short of the last block's row vector", {}, dict(phase_words=3, width=6)),
    ("phase_words short (more blocks)", dict(out_width=6), dict(out_width=7)),
]

# a ring of lb_rows * max_cwords = 4 rows: a 3-row kernel dilated by 2 spans 5
RING_CFG = HardwareConfig(rows=2, cols=2, act_pixels=2, max_width=32, max_cwords=2, lb_rows=2,
                          max_kernel=3, max_stride=2, max_dilation=2, max_height=32, acc_depth=16,
                          weight_depth=64, max_cotiles=4, out_fifo_depth=8, dw_kernel=3,
                          dw_max_stride=2)
RING_ROWS = [("span_h > lb_rows * max_cwords", dict(dil_h=2, kh=2, out_height=5),
              dict(kh=3, out_height=3))]


def _table(cfg, base, rows, seed):
    plans = []
    for name, fix, bad in rows:
        good_d, bad_d = {**base, **fix}, {**base, **fix, **bad}
        assert fits(cfg, good_d) and fits(cfg, bad_d), name
        plans.append(Plan(good_d, bad=False, name=f"{name}: fixed"))
        plans.append(Plan(bad_d, bad=True, name=f"{name}: bad"))
    recs = run_control(cfg, plans, seed)
    for p, r in zip(plans, recs):
        e = r["status"]["error"]
        assert (e & ErrorFlag.BAD_DESC if p.bad else e & FATAL == 0), (p.name, r["status"])
        assert len(r["starts"]) == (0 if p.bad else 1), p.name


@pytest.mark.parametrize("which", ["dense", "depthwise", "ring"])
def test_each_bad_descriptor_condition_alone(which):
    """One simulation per table; every row is a valid descriptor (start, RUN, STATUS
    with no error) followed by the same descriptor with one condition broken
    (BAD_DESC, ABORT, never start). The model raises on the first differing cycle."""
    cfg, base, rows = dict(dense=(CFG, DENSE, DENSE_ROWS),
                           depthwise=(CFG, DEPTHWISE, DEPTHWISE_ROWS),
                           ring=(RING_CFG, DEPTHWISE, RING_ROWS))[which]
    _table(cfg, base, rows, seed={"dense": 11, "depthwise": 12, "ring": 13}[which])


def test_depthwise_descriptor_needs_the_depthwise_mapping():
    """A 2x3 array has no depthwise mapping: a depthwise descriptor is BAD_DESC,
    a dense one of the same shape runs."""
    cfg = HardwareConfig(rows=2, cols=3, act_pixels=2, max_width=32, max_cwords=4, lb_rows=8,
                         max_kernel=5, max_stride=2, max_dilation=2, max_height=32,
                         acc_depth=12, weight_depth=64, max_cotiles=8, out_fifo_depth=8,
                         dw_kernel=3, dw_max_stride=2)
    assert not cfg.depthwise_mode
    plans = [Plan(DENSE, name="dense"), Plan(DEPTHWISE, bad=True, name="depthwise")]
    recs = run_control(cfg, plans, seed=14)
    assert [r["status"]["error"] & ErrorFlag.BAD_DESC for r in recs] == [0, ErrorFlag.BAD_DESC]


def test_depthwise_weights_must_fit_the_weight_memory():
    """2 words of 3x3 taps are 18 weight words: more than weight_depth = 8."""
    cfg = HardwareConfig(rows=2, cols=2, act_pixels=2, max_width=32, max_cwords=4, lb_rows=8,
                         max_kernel=5, max_stride=2, max_dilation=2, max_height=32,
                         acc_depth=12, weight_depth=8, max_cotiles=8, out_fifo_depth=8,
                         dw_kernel=3, dw_max_stride=2)
    fixed = {**DEPTHWISE, "kh": 2, "kw": 2, "out_height": 6}     # 2 * 4 = 8 words fit
    recs = run_control(cfg, [Plan(fixed, name="2x2 taps: 8 words")], seed=15)
    assert recs[0]["status"]["error"] == 0
    run_control(cfg, [Plan(DEPTHWISE, bad=True, name="3x3 taps: 18 words")], seed=15)


# -- derived figures, random valid layers ---------------------------------------------

LAYER_CFGS = {
    "1x1": HardwareConfig(rows=1, cols=1, act_pixels=1, max_width=8, max_cwords=2, lb_rows=4,
                          max_kernel=3, max_stride=2, max_dilation=2, max_height=16,
                          acc_depth=16, weight_depth=16, max_cotiles=4, out_fifo_depth=4,
                          dw_kernel=3, dw_max_stride=2),
    "2x2": HardwareConfig(rows=2, cols=2, act_pixels=2, max_width=16, max_cwords=4, lb_rows=8,
                          max_kernel=4, max_stride=3, max_dilation=3, max_height=32,
                          acc_depth=32, weight_depth=64, max_cotiles=4, out_fifo_depth=8,
                          dw_kernel=3, dw_max_stride=2),
    "4x4": HardwareConfig(rows=4, cols=4, act_pixels=4, max_width=32, max_cwords=2, lb_rows=4,
                          max_kernel=3, max_stride=2, max_dilation=2, max_height=16,
                          acc_depth=64, weight_depth=64, max_cotiles=4, out_fifo_depth=8,
                          dw_kernel=5, dw_max_stride=4),
    "3x2": HardwareConfig(rows=3, cols=2, act_pixels=1, max_width=16, max_cwords=2, lb_rows=4,
                          max_kernel=3, max_stride=2, max_dilation=2, max_height=16,
                          acc_depth=32, weight_depth=12, max_cotiles=4, out_fifo_depth=4),
}


@pytest.mark.parametrize("name", sorted(LAYER_CFGS))
def test_random_valid_layers_start_with_their_derived_figures(name):
    """Random valid layers (both mappings where the array has the depthwise one)
    start CHECK_CYCLES after their handshake with the layer figures of the Python
    formulas; the layer stays put until the status beat; counters and idle/stall
    noise as everywhere."""
    cfg = LAYER_CFGS[name]
    seed = 100 + sorted(LAYER_CFGS).index(name)
    with seeded(seed) as rng:
        descs = []
        for _ in range(14):
            dw = cfg.depthwise_mode and rng.random() < 0.5
            descs.append(random_depthwise(cfg, rng) if dw else random_dense(cfg, rng))
    plans = [Plan(d, work=seed % 3 + k % 4, name=f"layer {k}") for k, d in enumerate(descs)]
    recs = run_control(cfg, plans, seed)
    for k, (d, r) in enumerate(zip(descs, recs)):
        lay = r["layer_at_start"]
        assert lay is not None, f"layer {k} never started: {d}"
        sent = {n: _val(v) for n, v in d.items()}
        assert lay["desc"] == sent, (k, lay["desc"], sent)
        want = derived(cfg, d)
        got = {n: lay[n] for n in want}
        assert got == want, f"layer {k} {d}: figures {got}, expected {want}"
        assert r["layer_at_status"] == lay, f"layer {k}: layer changed before the status beat"


def test_check_cycles_is_the_start_delay():
    """The handshake cycle plus CHECK_CYCLES: start pulses in the fourth cycle after
    the handshake (the model checks it cycle by cycle; this pins the constant)."""
    assert CHECK_CYCLES == 4
    recs = run_control(CFG, [Plan(DENSE), Plan(DEPTHWISE)], seed=16, idle=0.0, noise=False)
    assert all(len(r["starts"]) == 1 for r in recs)


# -- errors from the other blocks, ABORT and the next descriptor ------------------------

@pytest.mark.parametrize("drain", [1, 6])
def test_errors_abort_or_are_recorded_and_the_next_layer_starts_clean(drain):
    """Every fatal flag aborts the layer the cycle after it is raised (even in the
    first RUN cycle); ABORT lasts until ``drained`` is high with ``drain_cycles``
    passed (drained toggles at random); non-fatal flags only show in the status;
    flags before RUN or in STATUS are ignored; each next descriptor starts with no
    error (its status is checked by the model)."""
    plans = []
    for bit in (ErrorFlag.BAD_PARAM, ErrorFlag.ACT_SHORT, ErrorFlag.WEIGHT_SHORT,
                ErrorFlag.PARAM_SHORT):
        plans.append(Plan(DENSE, work=9, errs={2: bit}, name=f"fatal {ErrorFlag.describe(bit)}"))
        plans.append(Plan(DEPTHWISE, work=2, name="clean"))
    plans.append(Plan(DENSE, work=9, errs={0: ErrorFlag.PARAM_SHORT | ErrorFlag.ACT_LONG},
                      name="fatal in the first RUN cycle"))
    for bit in (ErrorFlag.ACT_LONG, ErrorFlag.WEIGHT_LONG, ErrorFlag.PARAM_LONG):
        plans.append(Plan(DENSE, work=5, errs={1: bit, 4: bit}, name=f"non-fatal {bit}"))
    plans.append(Plan(DENSE, work=0, errs={0: ErrorFlag.WEIGHT_LONG},
                      name="non-fatal with work_done in the first RUN cycle"))
    plans.append(Plan({**DENSE, "cotiles": 0}, bad=True, name="bad, then clean"))
    plans.append(Plan(DENSE, work=1, name="clean"))
    recs = run_control(CFG, plans, seed=20 + drain, drain=drain)
    for p, r in zip(plans, recs):
        e = r["status"]["error"]
        if p.name.startswith("fatal"):
            assert e & list(p.errs.values())[0] & FATAL, (p.name, e)
        elif p.name.startswith("non-fatal"):
            assert e & FATAL == 0 and e & NONFATAL, (p.name, e)
        elif p.name == "clean":
            # a clean layer's status may only carry bits raised during its own run
            assert e & FATAL == 0, (p.name, e)
