"""Functional coverage closure is enforced: a regression whose goals are unmet fails
when they are enforced (``--coverage-goal``, or at the closure seed count), names the
open bins, writes the text and HTML reports, and failing seeds cover nothing."""

import json

import pytest

from systolic_conv.cli import main
from systolic_conv.sim import regress as R
from systolic_conv.sim.cocotb.coverage import Coverage
from systolic_conv.sim.cocotb.layers import HW_CONFIGS


class _Quiet:
    """A progress bar that shows nothing."""

    def write(self, *_):
        pass

    def update(self, *_):
        pass


@pytest.mark.rtl
def test_unmet_goal_fails_only_when_enforced(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["regress", "--seeds", "2", "--sim", "harness", "--hw", "small", "--jobs", "1",
            "--no-db", "--quiet", "--out", str(out)]
    assert main(args + ["--coverage-goal"]) == 1
    said = capsys.readouterr().out
    assert "functional coverage goal not met" in said
    s = json.loads(out.read_text())
    assert s["passed"] == 2 and s["coverage_goal"]["open"]
    assert not s["coverage_goal"]["met"] and not s["coverage_goal"]["enforced"]
    txt = (tmp_path / "r-coverage.txt").read_text()
    html = (tmp_path / "r-coverage.html").read_text()
    assert "below goal" in txt and "<table>" in html and "class='miss'" in html
    assert main(args + ["--no-coverage-goal"]) == 0
    assert main(args) == 0                      # 2 seeds: below the closure count


def test_closure_count_enforces_and_failing_seeds_do_not_cover():
    cov = Coverage.for_config(HW_CONFIGS["small"])
    v = R.coverage_goal_verdict(cov, R.CLOSURE_SEEDS)
    assert v["enforced"] and not v["met"] and v["open"]
    assert not R.coverage_goal_verdict(cov, R.CLOSURE_SEEDS - 1)["enforced"]
    # _take: a failing seed's tags are not sampled
    st = {"results": {}, "workers": set(), "crashed": [], "sim_cycles": 0, "recorded": 0}

    tags = {"groups": "grouped"}
    R._take([1], [{"seed": 1, "ok": False, "error": "x", "tags": tags, "sim_cycles": 5,
                   "seconds": 0.1}], None, st, cov, None, _Quiet(), "harness",
            HW_CONFIGS["small"], 30000)
    assert cov.samples == 0
    R._take([2], [{"seed": 2, "ok": True, "error": None, "tags": tags, "sim_cycles": 5,
                   "seconds": 0.1}], None, st, cov, None, _Quiet(), "harness",
            HW_CONFIGS["small"], 30000)
    assert cov.samples == 1


# ----------------------------------------------------------------------------- design side

from systolic_conv.sim.cocotb import coverage as C      # noqa: E402


def _all_goal_dut(cov):
    return {a: cov.goal_bins(a) for a in cov.design_axes}


def test_design_model_bins_and_exclusions_are_consistent():
    assert sorted(C.FSM_ENCODING) == sorted(C.FSM_STATES)
    for t in C.FSM_TRANSITIONS:
        a, b = t.split(">")
        assert a in C.FSM_STATES and b in C.FSM_STATES and a != b
    # every state is entered and left by some legal transition
    assert {t.split(">")[1] for t in C.FSM_TRANSITIONS} == set(C.FSM_STATES)
    assert {t.split(">")[0] for t in C.FSM_TRANSITIONS} == set(C.FSM_STATES)
    for cfg in HW_CONFIGS.values():
        axes, excluded = C.design_model(cfg)
        for a, bins in excluded.items():
            assert set(bins) <= set(axes[a]), a
            assert all(isinstance(w, str) and len(w) > 20 for w in bins.values())
    assert "full" not in C.design_model(HW_CONFIGS["small"])[1].get("dut_queue", {})
    assert "full" in C.design_model(HW_CONFIGS["default"])[1]["dut_queue"]


def test_design_bins_bookkeeping_and_goal():
    cov = Coverage.for_config(HW_CONFIGS["small"])
    names = cov.bin_names()
    assert "dut_state=RUN" in names and "dut_backpressure=o_result@RUN" in names
    assert "dut_queue=full" in names and "dut_credits=exhausted" in names
    # excluded bins are not in the model the results database records
    assert "dut_state=ABORT" not in names and "dut_backpressure=o_result@IDLE" not in names
    assert not any(n.startswith("dut_error=") for n in names)
    # stimulus-only samples (the compiled harness): the design group has no goal
    stim = {"groups": "grouped"}
    cov.sample(stim)
    assert cov.design_samples == 0 and not any(a.startswith("dut_") for a in cov.axes)
    assert "not sampled by this run" in cov.report()
    assert not any(b.startswith("dut_") for b in R.coverage_goal_verdict(cov, 1)["open"])
    # a sample from the DUT: the design goal applies, excluded bins stay out of it
    dut = {"dut_state": ["IDLE", "RUN", "ABORT"], "dut_transition": ["RUN>ABORT"],
           "dut_error": ["BAD_DESC"], "dut_backpressure": ["o_result@RUN", "o_result@IDLE"]}
    cov.sample(dict(stim, dut=dut))
    assert cov.design_samples == 1 and "dut_state" in cov.axes
    frac, unhit = cov.axis_coverage("dut_state")
    assert frac == pytest.approx(2 / 7) and "ABORT" not in unhit and "CHECK0" in unhit
    assert cov.hits["dut_state"]["ABORT"] == 1          # counted, reported, not in the goal
    assert cov.axis_coverage("dut_error") == (1.0, [])  # every flag needs an error scenario
    hit = cov.bins_hit(dict(stim, dut=dut))
    assert "dut_state=RUN" in hit and "dut_backpressure=o_result@RUN" in hit
    assert "dut_state=ABORT" not in hit and "dut_error=BAD_DESC" not in hit
    v = R.coverage_goal_verdict(cov, R.CLOSURE_SEEDS)
    assert "dut_state=CHECK0" in v["open"] and "dut_queue=full" in v["open"]
    assert "dut_state=ABORT" not in v["open"] and "dut_state=RUN" not in v["open"]
    text, html = cov.report(), cov.html()
    assert "design-side coverage sampled from the DUT over 1 layers" in text
    assert "dut_state=ABORT (1 hits)" in text and "needs an error scenario" in text
    assert "o_result@IDLE (1 hits)" in text and "unreachable" in text
    assert "Design-side bins excluded from the goal" in html and "dut_queue" in html
    # every reachable design bin hit: the design group meets its goal
    cov.sample(dict(stim, dut=_all_goal_dut(cov)))
    v = R.coverage_goal_verdict(cov, R.CLOSURE_SEEDS)
    assert not any(b.startswith("dut_") for b in v["open"])
    assert all(cov.axis_coverage(a)[0] == 1.0 for a in cov.design_axes)
    assert cov.summary()["design_samples"] == 2


def test_failing_seeds_cover_no_design_bins():
    cov = Coverage.for_config(HW_CONFIGS["small"])
    st = {"results": {}, "workers": set(), "crashed": [], "sim_cycles": 0, "recorded": 0}

    tags = {"groups": "grouped", "dut": _all_goal_dut(cov)}
    R._take([1], [{"seed": 1, "ok": False, "error": "x", "tags": tags, "sim_cycles": 5,
                   "seconds": 0.1}], None, st, cov, None, _Quiet(), "verilator",
            HW_CONFIGS["small"], 30000)
    assert cov.samples == 0 and cov.design_samples == 0
    assert not any(cov.hits[a] for a in cov.design_axes)
    R._take([2], [{"seed": 2, "ok": True, "error": None, "tags": tags, "sim_cycles": 5,
                   "seconds": 0.1}], None, st, cov, None, _Quiet(), "verilator",
            HW_CONFIGS["small"], 30000)
    assert cov.design_samples == 1 and cov.axis_coverage("dut_state")[0] == 1.0


def test_stimulus_only_model_without_design_axes():
    cov = Coverage.for_config(HW_CONFIGS["small"], design=False)
    assert not cov.design_axes and not any(n.startswith("dut_") for n in cov.bin_names())
    cov.sample({"groups": "dense", "dut": {"dut_state": ["RUN"]}})
    assert cov.design_samples == 0 and "design-side" not in cov.report()
