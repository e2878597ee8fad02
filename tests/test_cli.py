"""The systolic-conv command line: user errors exit with status 2 and one line naming
the argument, before any work; every flag is documented; hardware flags come from
HardwareConfig's fields."""

import argparse
import dataclasses
import json
import subprocess
import sys

import pytest

from systolic_conv import HardwareConfig
from systolic_conv.hw.faults import FAULTS
from systolic_conv.cli import build_parser, main

LAYER = ["--in-channels", "8", "--out-channels", "8", "--height", "6", "--width", "6"]


def fail(argv, capsys):
    """Run main(argv); it must exit with status 2; return the last stderr line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("argv, line", [
    (["sweep", "--arrays", "0x8"], "systolic-conv sweep: error: argument --arrays: must be a "
                                   "list of ROWSxCOLS with positive sizes (e.g. 4x4,8x8), not '0x8'"),
    (["estimate", "--network", "seed", "--clock-mhz", "0"],
     "systolic-conv estimate: error: argument --clock-mhz: must be a positive number, not '0'"),
    (["estimate", "--network", "seed", "--clock-mhz", "-5"],
     "systolic-conv estimate: error: argument --clock-mhz: must be a positive number, not '-5'"),
    (["demo", "--batch", "0"],
     "systolic-conv demo: error: argument --batch: must be a positive integer, not '0'"),
    (["synth", "--freq", "-1"],
     "systolic-conv synth: error: argument --freq: must be a positive number, not '-1'"),
    (["synth", "--density", "0.1"],
     "systolic-conv synth: error: argument --density: must be a number in [0.3, 1.0], not '0.1'"),
    (["estimate", "--network", "seed", "--plot", "x.txt"],
     "systolic-conv estimate: error: argument --plot: 'x.txt' must end in .png, .svg, .pdf"),
    (["estimate", "--network", "seed", "--json", "/no/such/dir/e.json"],
     "systolic-conv estimate: error: argument --json: directory '/no/such/dir' of "
     "'/no/such/dir/e.json' does not exist"),
    (["estimate", "--network", "seed", "--rows", "0"],
     "systolic-conv estimate: error: argument --rows: rows must be a positive integer, not 0"),
    (["estimate", "--network", "seed", "--max-width", "48"],
     "systolic-conv estimate: error: argument --max-width: max_width must be a power of two, "
     "not 48"),
    (["estimate", "--network", "seed", "--data-width", "7"],
     "systolic-conv estimate: error: argument --data-width: invalid choice: 7 "
     "(choose from 4, 8, 16)"),
    (["estimate", *LAYER, "--groups", "3"],
     "systolic-conv estimate: error: argument --groups: groups=3 must divide in_channels=8"),
    (["estimate", "--in-channels", "8", "--height", "6", "--width", "6"],
     "systolic-conv estimate: error: argument --out-channels: required for a layer given by "
     "flags"),
    (["estimate", "--network", "seed", "--layers", "/no/file.json"],
     "systolic-conv estimate: error: argument --layers: no such file: '/no/file.json'"),
    (["estimate"], "systolic-conv estimate: error: give exactly one of: layer flags "
                   "(--in-channels ...), --layers FILE, --network NAME, --model FILE"),
    (["sweep", "--networks", "resnet18,vgg"],
     "systolic-conv sweep: error: argument --networks: 'vgg' is not a network; choose from "
     "resnet18, mobilenetv2, resnext50, seed (comma-separated)"),
    (["run", *LAYER, "--kernel-size", "7", "--backend", "golden"],
     "systolic-conv run: error: kernel (7, 7) with dilation=(1, 1) spans (7, 7), larger than "
     "the padded input (6, 6)"),
    (["run", *LAYER, "--stride", "0"],
     "systolic-conv run: error: argument --stride: must be a positive integer or a pair 'H,W', "
     "not '0'"),
    (["plan", *LAYER, "--padding", "full"],
     "systolic-conv plan: error: argument --padding: must be a non-negative integer, a pair "
     "'H,W', 'same' or 'valid', not 'full'"),
    (["sweep", "--networks", "seed", "--db", "/no/such/dir/r.sqlite"],
     "systolic-conv sweep: error: argument --db: directory '/no/such/dir' of "
     "'/no/such/dir/r.sqlite' does not exist"),
    (["synth", "--db", "r.sqlite", "--no-db"],
     "systolic-conv synth: error: argument --no-db: not allowed with --db"),
    (["regress", "--seeds", "0"],
     "systolic-conv regress: error: argument --seeds: must be a positive integer, not '0'"),
    (["regress", "--sim", "icarus", "--coverage"],
     "systolic-conv regress: error: argument --coverage: needs --sim verilator, not --sim "
     "icarus"),
    (["regress", "--seed", "3", "--seed", "4", "--seed", "3"],
     "systolic-conv regress: error: argument --seed: seed 3 given twice"),
    (["mutate", "--faults", "bias_dropped,nosuch"],
     "systolic-conv mutate: error: argument --faults: 'nosuch' is not a named fault; choose "
     f"from {', '.join(FAULTS)} (comma-separated), or 'none'"),
    (["mutate", "--mutants", "24", "--only", "yosys:m024"],
     "systolic-conv mutate: error: argument --only: 'yosys:m024': this run has 24 mutants "
     "(--mutants), m000 .. m023"),
    (["mutate", "--only", "m3"],
     "systolic-conv mutate: error: argument --only: 'm3' must be fault:NAME or yosys:mNNN"),
    (["report", "--limit", "0"],
     "systolic-conv report: error: argument --limit: must be a positive integer, not '0'"),
    (["report", "--db", "/no/such/results.sqlite"],
     "systolic-conv report: error: argument --db: '/no/such/results.sqlite': no results "
     "database there (run a regression first, or give --db)"),
    (["farm", "script", "--system", "slurm", "--walltime", "4h"],
     "systolic-conv farm: error: argument --walltime: must be HH:MM:SS, HH:MM or minutes, "
     "not '4h'"),
    (["farm", "up", "--system", "lsf", "--cores", "4", "--processes", "8"],
     "systolic-conv farm: error: argument --processes: 8 worker processes do not fit in "
     "--cores 4"),
])
def test_user_errors_exit_2_with_one_line(argv, line, capsys):
    assert fail(argv, capsys) == line


def test_layer_and_hw_files_are_checked(tmp_path, capsys):
    bad = tmp_path / "net.json"
    bad.write_text(json.dumps([{"C_in": 3, "H": 8, "W": 8, "C_out": 4, "kernel": 5}]))
    line = fail(["estimate", "--layers", str(bad)], capsys)
    assert line.startswith(f"systolic-conv estimate: error: {bad}: layer 0: unknown key "
                           f"'kernel' (did you mean 'kernel_size'?)")
    hwj = tmp_path / "hw.json"
    hwj.write_text(json.dumps({"rows": 4, "colums": 4}))
    line = fail(["estimate", "--network", "seed", "--hw-json", str(hwj)], capsys)
    assert line.startswith(f"systolic-conv estimate: error: argument --hw-json: '{hwj}': "
                           f"unknown key 'colums'; HardwareConfig fields: rows, cols,")
    hwj.write_text(json.dumps({"rows": 4, "cols": 4}))
    assert main(["plan", *LAYER, "--hw-json", str(hwj), "--cols", "2"]) == 0
    assert "on HardwareConfig(4x2 PEs" in capsys.readouterr().out


def test_work_failure_is_one_line_status_1_and_debug_shows_traceback(capsys, monkeypatch):
    import systolic_conv.planner as planner

    def boom(*a, **k):
        raise RuntimeError("planner exploded\nsecond line")
    monkeypatch.setattr(planner, "plan_layer", boom)
    assert main(["plan", *LAYER]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["systolic-conv plan: error: planner exploded ... "
                   "(RuntimeError; --debug shows the traceback)"]
    with pytest.raises(RuntimeError, match="planner exploded"):
        main(["plan", *LAYER, "--debug"])


def _options(parser):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in subs[0].choices.items():
        for action in sub._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                yield name, action


def test_every_flag_has_help_default_and_choices():
    parser = build_parser()
    finite = {"--padding-mode", "--network", "--requant", "--backend", "--device", "--speed",
              "--router", "--data-width", "--sim", "--system"}
    seen = set()
    for cmd, action in _options(parser):
        flag = action.option_strings[0]
        seen.add(flag)
        assert action.help and len(action.help) > 5, (cmd, flag)
        if flag in finite:
            assert action.choices, (cmd, flag)
        sub_help = parser._subparsers._group_actions[0].choices[cmd].format_help()
        if action.default not in (None, False) and "(default" not in action.help:
            assert f"(default: " in sub_help, (cmd, flag)
    assert finite <= seen


def test_hardware_flags_are_the_dataclass_fields():
    parser = build_parser()
    fields = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(HardwareConfig)}
    flags = {a.option_strings[0] for cmd, a in _options(parser) if cmd == "estimate"}
    assert fields <= flags
    sweep = {a.option_strings[0] for cmd, a in _options(parser) if cmd == "sweep"}
    assert fields - sweep == {"--rows", "--cols"}       # sweep sets them from --arrays


def test_version_and_help_exit_0():
    out = subprocess.run([sys.executable, "-m", "systolic_conv.cli", "--version"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("systolic-conv ")
    out = subprocess.run([sys.executable, "-m", "systolic_conv.cli", "sweep", "--arrays", "0x8"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("systolic-conv sweep: error: "
                                                          "argument --arrays")


def test_estimate_clock_default_is_the_measured_fmax_or_none(capsys, tmp_path):
    assert main(["estimate", *LAYER, "--rows", "4", "--cols", "4", "--no-suggest"]) == 0
    out = capsys.readouterr().out
    assert "74.3 MHz (measured routed Fmax of 4x4, ECP5-85k speed grade 6)" in out
    js = tmp_path / "e.json"
    assert main(["estimate", *LAYER, "--rows", "2", "--cols", "2", "--no-suggest", "--json",
                 str(js)]) == 0
    out = capsys.readouterr().out
    assert "no clock: 2x2 with these parameters has no measured routed Fmax; give --clock-mhz" \
        in out
    data = json.loads(js.read_text())
    assert data["clock_mhz"] is None and data["layers"][0]["latency_us"] is None
    assert main(["estimate", *LAYER, "--rows", "2", "--cols", "2", "--no-suggest",
                 "--clock-mhz", "50", "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert data["layers"][0]["latency_us"] == pytest.approx(data["layers"][0]["cycles"] / 50)


def test_a_file_that_is_not_a_model_is_a_user_error(tmp_path, capsys):
    bad = tmp_path / "m.pt"
    bad.write_text("not a model")
    line = fail(["estimate", "--model", str(bad), "--input-shape", "1,3,8,8"], capsys)
    assert line.startswith(f"systolic-conv estimate: error: argument --model: cannot run "
                           f"'{bad}' on an input of shape (1, 3, 8, 8): ")
    assert fail(["estimate", "--model", str(bad)], capsys) == \
        "systolic-conv estimate: error: argument --input-shape: required with --model (N,C,H,W)"
