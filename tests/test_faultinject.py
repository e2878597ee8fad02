"""Random fault injection (sim/faultinject.py): broken invocations anywhere in a
random layer, random stalls and back-pressure on every stream, reset pulses, and a
clean follow-up layer; the checks must also be able to fail."""

import copy

import numpy as np
import pytest

from systolic_conv.hw import layouts as L
from systolic_conv.sim.cocotb.layers import HW_CONFIGS, prepare, draw_layer, words_to_ints
from systolic_conv.sim.cocotb.scenarios import (CORRUPTIONS, EXACT, FIELD_KINDS, FIELD_LIMITS,
                                                RESIZE, apply_field_break, corrupt,
                                                field_break_values, field_ranges)
from systolic_conv.sim.faultinject import (SHARED, applicable_kinds, draw_fault_case,
                                           run_fault_case, run_cases)

SQUARE = HW_CONFIGS["square"]
N_CASES = 30


def test_draw_is_reproducible_and_legal():
    for s in range(20):
        a, b = draw_fault_case(s, SQUARE), draw_fault_case(s, SQUARE)
        assert a.describe() == b.describe() and a.hseed == b.hseed
        assert a.kind in applicable_kinds(a.run, a.inv)
        dw = bool(a.run.invs[a.inv].depthwise)
        assert a.kind.startswith("dw_") == dw or (dw and a.kind in SHARED)
        assert a.next_run.layer.name != a.run.layer.name
        if a.kind in RESIZE:
            n = len(getattr(a.run.invs[a.inv], f"{RESIZE[a.kind][0]}_words"))
            cap = 2 * SQUARE.max_cotiles if a.kind == "param_long" else 0
            assert 1 <= a.amount <= (n - 1 if a.kind.endswith("_short") else 2 * max(n, cap) + 20)


def test_corrupt_breaks_only_the_chosen_invocation():
    run = next(r for r in (prepare(draw_layer(s, SQUARE, budget=20000), SQUARE)
                           for s in range(100)) if r.n_inv >= 3
               and not any(i.depthwise for i in r.invs) and len(r.invs[1].act_words) > 5)
    clean = run.streams()
    for kind, amount, stream in (("act_short", 4, 3), ("weight_long", 7, 2), ("param_long", 30, 1)):
        streams, bad = corrupt(run, kind, inv=1, amount=amount)
        per = [len(getattr(i, f)) for i in run.invs
               for f in ("desc_words", "param_words", "weight_words", "act_words")[stream:stream + 1]]
        a, b = per[0], per[0] + per[1]
        delta = -amount if kind.endswith("short") else amount
        assert streams[stream][:a] == clean[stream][:a]                  # before: unchanged
        assert streams[stream][b + delta:] == clean[stream][b:]          # after: unchanged
        assert len(streams[stream]) == len(clean[stream]) + delta
        assert [s for i, s in enumerate(streams) if i != stream] == \
            [s for i, s in enumerate(clean) if i != stream]
        assert bad.expects[1].error == CORRUPTIONS[kind][1] and bad.expects[1].exact == (kind in EXACT)
        assert bad.expects[0].error == 0 == run.expects[1].error
    # the defaults are the fixed amounts of the scenario tests
    s1, _ = corrupt(run, "act_short")
    assert len(s1[3]) == len(clean[3]) - 3


@pytest.mark.rtl
def test_random_fault_cases_pass_on_the_fault_free_design():
    from systolic_conv.sim.harness import get_harness
    h = get_harness(SQUARE)
    seen = {"later_inv": 0, "lost": 0, "dw": 0, "long": 0, "status_stall": 0}
    for s in range(N_CASES):
        case = draw_fault_case(s, SQUARE)
        det = {}
        err = run_fault_case(case, h, details=det)
        assert err is None, f"seed {s}: {case.describe()}: {err}"
        seen["later_inv"] += case.inv > 0
        seen["lost"] += det["hr"].lost is not None
        seen["dw"] += case.kind.startswith("dw_")
        seen["long"] += case.kind.endswith("_long")
        seen["status_stall"] += case.status_stall > 0
    assert all(seen.values()), seen


@pytest.mark.rtl
def test_a_wrong_expectation_is_reported_failed():
    from systolic_conv.sim.harness import get_harness
    h = get_harness(SQUARE)
    # a fatal error kind: expect a different error flag than the hardware reports
    case = next(c for c in (draw_fault_case(s, SQUARE) for s in range(100))
                if c.kind not in EXACT and c.reset_at is None)
    case.error = L.ErrorFlag.ACT_LONG if case.error != L.ErrorFlag.ACT_LONG else L.ErrorFlag.BAD_DESC
    err = run_fault_case(case, h)
    assert err is not None and "status error" in err, err
    # an over-long stream: expect one more error bit than it carries (strict)
    case = next(c for c in (draw_fault_case(s, SQUARE) for s in range(100))
                if c.kind in EXACT and c.reset_at is None)
    case.error |= L.ErrorFlag.BAD_PARAM
    assert run_fault_case(case, h) is not None
    # the clean follow-up layer's expectation off by one value
    case = draw_fault_case(3, SQUARE)
    case.reset_at = None
    nxt = copy.copy(case.next_run)
    nxt.expects = list(nxt.expects)
    e = nxt.expects[-1] = copy.copy(nxt.expects[-1])
    e.values = e.values.copy()
    v, lane = np.argwhere(e.mask)[0]
    e.values[v, lane] += 1
    case.next_run = nxt
    err = run_fault_case(case, h)
    assert err is not None and "then:" in err and "expected" in err, err


def test_protocol_violations_are_failures():
    from systolic_conv.sim.harness import HarnessRun
    hr = HarnessRun(result_words=np.zeros((0, 1), np.uint32), status=[], marks=np.zeros((0, 3)),
                    sim_cycles=10, seconds=0.0, timeout=False,
                    protocol={"result": 2, "status": 0, "first_cycle": 7})
    assert "stream rule" in hr.protocol_failure() and "cycle 7" in hr.protocol_failure()
    assert HarnessRun(result_words=None, status=[], marks=None, sim_cycles=0, seconds=0.0,
                      timeout=False).protocol_failure() is None


@pytest.mark.rtl
def test_command_line_summary(capsys):
    n, fails, _ = run_cases([0, 1], "square")
    out = capsys.readouterr().out
    assert n == 2 and not fails and out.strip().endswith("fault injection: 2 cases, 0 failed")


#: every descriptor field with a limit of its own in Control._conditions (hw/control.py)
#: that a field-range break can reach, per mapping
LIMITED_FIELDS = {
    "dense": {"cotiles", "height", "width", "out_height", "out_width", "stride_h", "dil_h",
              "requant", "out_bits", "clamp_lo", "clamp_hi", "cwords", "n_tiles", "pass_rows",
              "kh", "kw", "stride_w", "dil_w"},
    "dw": {"cotiles", "height", "width", "out_height", "out_width", "stride_h", "dil_h",
           "requant", "out_bits", "clamp_lo", "clamp_hi", "cwords", "kh", "kw", "stride_w",
           "dil_w", "pad_left", "pad_right", "phase_words"},
}


def _fixed_limits(cfg, dw):
    """The limits of hw/control.py written out again from the HardwareConfig (fields
    whose bound does not depend on the other fields)."""
    lim = {"cotiles": (1, cfg.max_cotiles), "height": (1, cfg.max_height),
           "width": (1, cfg.max_width), "stride_h": (1, cfg.max_stride),
           "dil_h": (1, cfg.max_dilation), "requant": (0, 2),
           "out_bits": (2, min(16, cfg.acc_width)), "cwords": (1, cfg.max_cwords)}
    if dw:
        lim.update(kh=(1, cfg.dw_kernel), kw=(1, cfg.dw_kernel), stride_w=(1, cfg.dw_max_stride),
                   dil_w=(1, 1), pad_left=(0, 0), pad_right=(0, 0))
    else:
        lim.update(n_tiles=(1, cfg.weight_tiles), kh=(1, cfg.max_kernel), kw=(1, cfg.max_kernel),
                   stride_w=(1, cfg.max_stride), dil_w=(1, cfg.max_dilation))
    return lim


def _illegal(cfg, d, dw, field):
    """Whether descriptor ``d`` breaks the limit aimed at by a break of ``field``, by
    the conditions of hw/control.py (written out independently of FIELD_LIMITS)."""
    rq = int(getattr(d["requant"], "value", d["requant"]))
    if field in ("out_bits", "clamp_lo", "clamp_hi") and rq == 0:
        return False                                  # checked on requantized layers only
    fixed = _fixed_limits(cfg, dw)
    if field in fixed:
        lo, hi = fixed[field]
        return not lo <= d[field] <= hi
    ob = d["out_bits"]
    if field in ("clamp_lo", "clamp_hi"):
        return (d["clamp_lo"] > d["clamp_hi"] or d["clamp_lo"] < -(1 << (ob - 1))
                or d["clamp_hi"] > (1 << (ob - 1)) - 1)
    if field == "out_height":
        last_iy = (d["out_height"] - 1) * d["stride_h"] + (d["kh"] - 1) * d["dil_h"] - d["pad_top"]
        return d["out_height"] == 0 or last_iy > d["height"] - 1 + d["pad_bottom"]
    if field == "out_width" and not dw:
        last_ix = (d["out_width"] - 1) * d["stride_w"] + (d["kw"] - 1) * d["dil_w"] - d["pad_left"]
        return d["out_width"] == 0 or last_ix > d["width"] - 1 + d["pad_right"]
    if field == "out_width":
        nblk = -(-d["out_width"] // cfg.rows)
        return d["out_width"] == 0 or (nblk - 1) * cfg.rows // cfg.act_pixels \
            + cfg.dw_shadow_words > d["phase_words"]
    if field == "pass_rows":
        span = (d["pass_rows"] - 1) * d["stride_h"] + (d["kh"] - 1) * d["dil_h"] + 1
        return d["pass_rows"] == 0 or span > cfg.lb_rows or \
            d["pass_rows"] * d["out_width"] > cfg.acc_depth
    if field == "phase_words":
        return d["width"] != d["stride_w"] * d["phase_words"] * cfg.act_pixels
    raise AssertionError(f"no limit written out for {field}")


@pytest.mark.parametrize("hw", ["square", "small"])
def test_field_range_breaks_cover_every_limit_and_leave_the_range(hw):
    cfg = HW_CONFIGS[hw]
    dense = {f for f, m, _ in FIELD_LIMITS if m in ("both", "dense")}
    dw = {f for f, m, _ in FIELD_LIMITS if m in ("both", "dw")}
    assert dense == LIMITED_FIELDS["dense"] and dw == LIMITED_FIELDS["dw"]
    offs = L.field_offsets(L.descriptor_layout(cfg))
    seen, n_field = set(), 0
    for s in range(250):
        case = draw_fault_case(s, cfg)
        if case.kind not in FIELD_KINDS:
            continue
        n_field += 1
        is_dw = FIELD_KINDS[case.kind]
        inv = case.run.invs[case.inv]
        assert bool(inv.depthwise) == is_dw and case.kind in applicable_kinds(case.run, case.inv)
        field, value = case.amount
        seen.add((is_dw, field))
        # the clean descriptor keeps its limits; the broken one breaks this field's
        assert not _illegal(cfg, inv.desc, is_dw, field)
        streams, bad = corrupt(case.run, case.kind, inv=case.inv, amount=case.amount)
        d = L.unpack(L.descriptor_layout(cfg), streams[0][case.inv])
        d = {k: int(getattr(v, "value", v)) for k, v in d.items()}
        assert d[field] == value                      # the field held the value (no wrap)
        assert _illegal(cfg, d, is_dw, field), (s, field, value)
        lo, hi, _ = field_ranges(cfg, inv.desc, is_dw)[field]
        assert not lo <= value <= hi
        _, width, signed = offs[field]
        assert (-(1 << (width - 1)) <= value < (1 << (width - 1))) if signed else \
            (0 <= value < (1 << width))
        assert bad.expects[case.inv].error == L.ErrorFlag.BAD_DESC
    assert 0.10 <= n_field / 250 <= 0.22, n_field
    assert len(seen) >= 12, seen
    # every field of the table, on descriptors of both mappings, can be broken
    runs = [prepare(draw_layer(s, cfg, budget=20000), cfg) for s in range(40)]
    for is_dw, fields in ((False, dense), (True, dw)):
        invs = [i for r in runs for i in r.invs if bool(i.depthwise) == is_dw]
        if is_dw and not cfg.depthwise_mode:
            assert not invs
            continue
        rng = np.random.default_rng(1)
        for f in fields:
            hit = False
            for inv in invs:
                for v in field_break_values(cfg, inv.desc, is_dw, f, rng):
                    d = dict(inv.desc)
                    apply_field_break(d, cfg, is_dw, f, v)
                    req = int(getattr(d["requant"], "value", d["requant"]))
                    dd = dict(d, requant=req)
                    assert _illegal(cfg, dd, is_dw, f), (f, v, inv.desc)
                    hit = True
            assert hit, f


def test_field_sweep_breaks_every_field_on_each_side():
    """The mutation suite's field sweep (sim/faultinject.py, field_sweep_cases): every
    field of FIELD_LIMITS on its mapping, below and above its range where the field
    can hold such a value, each broken descriptor illegal by the conditions written
    out above, on both layer families (ordinary, at the descriptor's limits)."""
    from systolic_conv.sim.faultinject import field_sweep, field_sweep_cases
    cfg = SQUARE
    sweep = field_sweep(cfg)
    assert {(k, f) for k, f, _ in sweep} == \
        {(k, f) for k, dw in FIELD_KINDS.items() for f, m, _ in FIELD_LIMITS
         if m in ("both", "dw" if dw else "dense")}
    cases = field_sweep_cases(cfg)
    got = set()
    for case in cases:
        is_dw = FIELD_KINDS[case.kind]
        inv = case.run.invs[case.inv]
        assert bool(inv.depthwise) == is_dw
        field, value = case.amount
        lo, hi, _ = field_ranges(cfg, inv.desc, is_dw)[field]
        assert value in (lo - 1, hi + 1)
        clean = {k: int(getattr(v, "value", v)) for k, v in inv.desc.items()}
        assert not _illegal(cfg, clean, is_dw, field)
        streams, bad = corrupt(case.run, case.kind, inv=case.inv, amount=case.amount)
        d = L.unpack(L.descriptor_layout(cfg), streams[0][case.inv])
        d = {k: int(getattr(v, "value", v)) for k, v in d.items()}
        assert d[field] == value and _illegal(cfg, d, is_dw, field), (case.seed, field, value)
        assert bad.expects[case.inv].error == L.ErrorFlag.BAD_DESC
        got.add((case.kind, field, int(value == hi + 1), bool(case.run.layer.draw.get("limits"))))
    # every field is broken on both families (on a side its width can hold), and most
    # (field, side) pairs of the sweep on both
    for k, f, _ in sweep:
        for fam in (False, True):
            assert (k, f, 0, fam) in got or (k, f, 1, fam) in got, (k, f, fam)
    assert len(got) >= 0.8 * 2 * len(sweep), (len(got), len(sweep))
    # the same seed draws the same case
    c = cases[7]
    side = int(c.amount[1] > field_ranges(cfg, c.run.invs[c.inv].desc,
                                          FIELD_KINDS[c.kind])[c.amount[0]][1])
    again = draw_fault_case(c.seed, cfg, field=(c.kind, c.amount[0], side),
                            force=dict(c.run.layer.draw.get("limits") and {"limits": True} or {},
                                       **({"groups": "depthwise"} if FIELD_KINDS[c.kind]
                                          else {})) or None)
    assert again.describe() == c.describe()
