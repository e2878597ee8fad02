"""Waves and replay of a failing regression seed (sim/regress.py).

A cocotb chunk runs its seeds back-to-back in one simulator process, so a failing
seed's replay runs the chunk from its first seed up to it (``--from FIRST --seed S``);
after a run with failures the first failing seed is re-run that way in a waves build,
its FST printed and the failure checked to come back. The design under test carries a
named fault (hw/faults.py ``bias_dropped``: seed 0 passes, seeds 1 and 2 fail), built
for Icarus (seconds) rather than Verilator.
"""

import dataclasses
import json
import os
import shlex

import pytest

from systolic_conv.cli import main
from systolic_conv.sim import regress as R
from systolic_conv.sim.cocotb.layers import HW_CONFIGS
from systolic_conv.sim.toolchain import icarus_available
from test_cli import fail              # status 2 and the last stderr line

FAULTY = dataclasses.replace(HW_CONFIGS["small"], faults=("bias_dropped",))
BUDGET = 3000


def _first(err):
    return str(err).strip().splitlines()[0]


@pytest.mark.icarus
def test_failing_seed_gets_waves_and_an_exact_chunk_replay(tmp_path, capsys):
    if not icarus_available():
        pytest.fail("Icarus Verilog is not installed (make setup installs it)")
    s = R.regress([0, 1, 2], sim="icarus", hw=FAULTY, chunk=3, budget=BUDGET,
                  out=tmp_path / "r.json", db=False)
    cap = capsys.readouterr()
    said = cap.out + cap.err                 # progress lines (FAIL ...) may go to stderr
    assert s["passed"] == 1 and s["failed"] == [1, 2], s["failures"]
    f1 = s["failures"][0]
    # the replay names the chunk's first seed: seeds 0..1 in one simulator process
    assert f1["seed"] == 1 and " --from 0 --seed 1 " in f1["replay"], f1["replay"]
    assert f"--budget {BUDGET}" in f1["replay"] and "--sim icarus" in f1["replay"]
    assert "FAIL seed 1:" in said and "--from 0 --seed 1 --sim icarus" in said
    assert "exact: seeds 0..1 of the chunk in one simulator process" in said
    # the automatic waves re-run: only the first failing seed (waves_on_fail=1)
    [w] = s["waves_on_fail"]
    assert w["seed"] == 1 and w["seeds"] == [0, 1] and w["reproduced"], w
    assert w["waves"].endswith(".fst") and os.path.getsize(w["waves"]) > 0
    assert f"waves: {w['waves']}" in said and "NOT REPRODUCED" not in said
    assert json.loads((tmp_path / "r.json").read_text())["waves_on_fail"][0]["reproduced"]

    # the printed replay command, run as a user would: the same first error line
    argv = shlex.split(f1["replay"])
    assert argv[:2] == ["systolic-conv", "regress"]
    out2 = tmp_path / "replay.json"
    rc = main(argv[1:] + ["--no-db", "--quiet", "--waves-on-fail", "0", "--out", str(out2)])
    s2 = json.loads(out2.read_text())
    assert rc == 1 and s2["seeds"] == 2 and s2["passed"] == 1 and s2["failed"] == [1]
    assert _first(s2["failures"][0]["error"]) == _first(f1["error"])
    assert "waves_on_fail" not in s2                 # 0: off


def test_replay_lines_and_commands():
    # a range prefix: --from; the chunk's first seed alone: no --from
    assert R._replay_cmd(7, "verilator", "small", 30000, [5, 6, 7]) == \
        "systolic-conv regress --from 5 --seed 7 --sim verilator --hw small"
    assert R._replay_cmd(5, "verilator", "small", 100, [5]) == \
        "systolic-conv regress --seed 5 --sim verilator --hw small --budget 100"
    # seeds given one by one: every seed of the prefix, as one chunk
    assert R._replay_cmd(9, "icarus", "small", 30000, [3, 9]) == \
        "systolic-conv regress --seed 3 --seed 9 --chunk 2 --sim icarus --hw small"
    line = R._replay(7, "verilator", "small", prefix=[5, 6, 7])
    assert line.startswith("make regress SEED=7 FROM=5 SIM=verilator HW=small   # or: "
                           "python -m systolic_conv.sim.regress --from 5 --seed 7 ")
    # the harness runs every seed alone from reset: the seed alone is exact, and says so
    assert R._replay_cmd(7, "harness", "small", 30000, [5, 6, 7]) == \
        "systolic-conv regress --seed 7 --sim harness --hw small"
    h = R._replay(7, "harness", "small", prefix=[5, 6, 7])
    assert "SEED=7 SIM=harness" in h and "FROM" not in h
    assert "exact: every harness seed runs alone from reset, in a new model" in h
    # a HardwareConfig: its JSON, quoted (no make form: HW=JSON does not survive make)
    cmd = R._replay_cmd(1, "icarus", FAULTY, 30000, [0, 1])
    hw = shlex.split(cmd)[shlex.split(cmd).index("--hw") + 1]
    assert json.loads(hw)["faults"] == ["bias_dropped"]
    assert R._replay(1, "icarus", FAULTY, prefix=[0, 1]).startswith("python -m ")
    assert R._prefix([4, 5, 6], 5) == [4, 5] and R._prefix(None, 5) == [5]


@pytest.mark.parametrize("argv, line", [
    (["--from", "5", "--seed", "4"],
     "argument --from: 5 is after --seed 4: FIRST must be <= S"),
    (["--from", "5"], "argument --from: needs --seed S: seeds FIRST..S run as one chunk"),
    (["--from", "1", "--seed", "4", "--seed", "6"],
     "argument --from: needs exactly one --seed S, not 2"),
    (["--from", "1", "--seed", "4", "--chunk", "2"],
     "argument --chunk: 2 would split --from 1 --seed 4, which runs as one chunk (leave it "
     "out)"),
    (["--from", "-1", "--seed", "4"],
     "argument --from: must be a non-negative integer, not '-1'"),
    (["--waves-on-fail", "-1"],
     "argument --waves-on-fail: must be a non-negative integer, not '-1'"),
])
def test_from_and_waves_on_fail_flags_are_checked(argv, line, capsys):
    got = fail(["regress", "--sim", "harness", "--no-db"] + argv, capsys)
    assert got == f"systolic-conv regress: error: {line}"


def test_from_runs_first_to_seed_as_one_chunk(monkeypatch):
    """``--from 3 --seed 6``: seeds 3..6, one chunk (host/farm_cli.py's regress)."""
    seen = {}

    def fake(seeds, **kw):
        seen.update(seeds=seeds, **kw)
        return {"failed": [], "crashed": [], "missing": []}

    monkeypatch.setattr(R, "regress", fake)
    assert main(["regress", "--sim", "harness", "--no-db", "--from", "3", "--seed", "6",
                 "--waves-on-fail", "2"]) == 0
    assert seen["seeds"] == [3, 4, 5, 6] and seen["chunk"] == 4
    assert seen["waves_on_fail"] == 2


@pytest.mark.rtl
def test_harness_failure_gets_trace_waves_and_a_single_seed_replay(tmp_path, capsys,
                                                                    monkeypatch):
    """On the harness every seed is a new model from reset: the replay is the seed
    alone, and its waves come from the trace build. The failure is injected into the
    scoreboard (in this process: one chunk runs inline) for seed 1."""
    from systolic_conv.sim.cocotb import fastpath
    real = fastpath.run_on_harness

    def failing(run, *, harness=None, seed=0, **kw):
        sb, hr = real(run, harness=harness, seed=seed, **kw)
        if seed == 1:
            sb.fail(f"injected: seed 1 ran {hr.sim_cycles} cycles")
        return sb, hr

    monkeypatch.setattr(fastpath, "run_on_harness", failing)
    s = R.regress([0, 1, 2], sim="harness", hw="small", chunk=3, budget=BUDGET,
                  out=tmp_path / "r.json", db=False)
    cap = capsys.readouterr()
    said = cap.out + cap.err
    assert s["failed"] == [1]
    assert s["failures"][0]["replay"] == \
        f"systolic-conv regress --seed 1 --sim harness --hw small --budget {BUDGET}"
    assert "exact: every harness seed runs alone from reset" in said
    [w] = s["waves_on_fail"]
    assert w["seeds"] == [1] and w["reproduced"], w
    assert w["waves"].endswith("seed-00000001.fst") and os.path.getsize(w["waves"]) > 0
    assert f"waves: {w['waves']}" in said
