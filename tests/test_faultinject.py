"""Random fault injection (sim/faultinject.py): broken invocations anywhere in a
random layer, random stalls and back-pressure on every stream, reset pulses, and a
clean follow-up layer; the checks must also be able to fail."""

import copy

import numpy as np
import pytest

from systolic_conv.hw import layouts as L
from systolic_conv.sim.cocotb.layers import HW_CONFIGS, prepare, draw_layer, words_to_ints
from systolic_conv.sim.cocotb.scenarios import CORRUPTIONS, EXACT, RESIZE, corrupt
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
