"""Functional coverage closure is enforced: a regression whose goals are unmet fails
when they are enforced (``--coverage-goal``, or at the closure seed count), names the
open bins, writes the text and HTML reports, and failing seeds cover nothing."""

import json

import pytest

from systolic_conv.cli import main
from systolic_conv.sim import regress as R
from systolic_conv.sim.cocotb.coverage import Coverage
from systolic_conv.sim.cocotb.layers import HW_CONFIGS


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

    class P:
        def write(self, *_):
            pass

        def update(self, *_):
            pass

    tags = {"groups": "grouped"}
    R._take([1], [{"seed": 1, "ok": False, "error": "x", "tags": tags, "sim_cycles": 5,
                   "seconds": 0.1}], None, st, cov, None, P(), "harness",
            HW_CONFIGS["small"], 30000)
    assert cov.samples == 0
    R._take([2], [{"seed": 2, "ok": True, "error": None, "tags": tags, "sim_cycles": 5,
                   "seconds": 0.1}], None, st, cov, None, P(), "harness",
            HW_CONFIGS["small"], 30000)
    assert cov.samples == 1
