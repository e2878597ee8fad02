"""PerfCounters alone (amaranth.sim) against a Python model of the documented
counting, and the status beat's counters at the top level.

Covers
------
- counting from the ``begin`` cycle (which counts as ``setup`` whatever
  ``category`` says) through the ``end`` cycle, or up to the first ``stop`` cycle
  (not counted) of a layer without ``end`` (``stop`` held high as
  ``o_status.valid`` is), so an offered status beat does not change; nothing
  counted between invocations whatever ``category``, ``end`` and ``stop`` do;
- each counted cycle adds one to ``cycles`` and to the category whose bit is set
  (a random one-hot ``category``); the categories sum to ``cycles``; every value
  checked every cycle; a new ``begin`` restarts every counter.

"""

import pytest

from amaranth.lib import data
from amaranth import unsigned

from systolic_conv.hw.counters import PerfCounters, CATEGORIES
from systolic_conv.hw.layouts import COUNTERS, STATUS_COUNTER_WIDTH, unpack

from blockbench import seeded, simulate


def invocations(rng, n):
    """A cycle plan: idle gaps (noise on every input), then begin, a run of
    random length, then end (or stop held a few cycles for an aborted layer)."""
    plan = []
    for k in range(n):
        plan += [("idle", None)] * rng.randint(0, 4)
        plan.append(("begin", None))
        plan += [("run", None)] * rng.randint(0, 30)
        if k % 3 == 2:
            plan += [("stop", None)] * rng.randint(1, 4)           # aborted: the status offered
        else:
            plan.append(("end", None))
            plan += [("after", None)] * rng.randint(0, 3)            # drain to the status
            plan += [("stop", None)] * rng.randint(1, 3)
    plan += [("idle", None)] * 3
    return plan


@pytest.mark.parametrize("seed", [1000, 1001])
def test_counters_follow_the_model(seed):
    dut = PerfCounters()
    vl = data.ArrayLayout(unsigned(STATUS_COUNTER_WIDTH), len(COUNTERS))
    ncat = len(CATEGORIES)
    with seeded(seed) as rng:
        plan = invocations(rng, 9)
        model = dict(counting=False, values=[0] * len(COUNTERS), sums_checked=0)

        def step(ctx, t):
            if t >= len(plan):
                return True
            kind, _ = plan[t]
            noise = kind in ("idle", "after")
            begin = int(kind == "begin")
            end = int(kind == "end" or (noise and rng.random() < 0.2))
            stop = int(kind == "stop" or (noise and rng.random() < 0.2))
            cat = 1 << rng.randrange(ncat)
            ctx.set(dut.begin, begin)
            ctx.set(dut.end, end)
            ctx.set(dut.stop, stop)
            ctx.set(dut.category, cat)
            got = unpack(vl, ctx.get(dut.values.as_value()))
            assert got == model["values"], (f"cycle {t} ({kind}): values "
                                            f"{dict(zip(COUNTERS, got))}, expected "
                                            f"{dict(zip(COUNTERS, model['values']))}")
            if not model["counting"] and t > 0 and model["values"][0]:
                assert sum(got[1:]) == got[0], f"cycle {t}: categories do not sum to cycles"
                model["sums_checked"] += 1
            # the model's next values
            v = model["values"]
            if begin:
                model["values"] = [1] + [int(c == "setup") for c in CATEGORIES]
                model["counting"] = True
            elif model["counting"] and stop:
                model["counting"] = False        # a stop cycle is not counted
            elif model["counting"]:
                model["values"] = [v[0] + 1] + [v[i + 1] + (cat >> i & 1) for i in range(ncat)]
                if end:
                    model["counting"] = False
            return False

        simulate(dut, step, len(plan) + 1)
        assert model["sums_checked"] > 5


def test_status_beat_of_an_aborted_layer_is_stable_under_back_pressure():
    """A descriptor with cotiles = 0 (BAD_DESC) on a small accelerator, one ``last``
    beat on each intake stream; o_status.ready held low for 4 cycles after valid
    rises; the payload must stay the same."""
    from systolic_conv.hw.config import HardwareConfig
    from systolic_conv.hw.accel import Conv2dAccelerator
    from systolic_conv.hw.layouts import descriptor_layout, status_layout, pack, RequantMode
    cfg = HardwareConfig(rows=2, cols=2, act_pixels=2, max_width=8, max_cwords=2, lb_rows=4,
                         max_kernel=3, max_height=8, acc_depth=16, weight_depth=16,
                         max_cotiles=2, out_fifo_depth=4, dw_kernel=3)
    dut = Conv2dAccelerator(cfg)
    desc = pack(descriptor_layout(cfg), dict(cotiles=0, cwords=1, n_tiles=1, height=1, width=1,
                                             out_height=1, out_width=1, pass_rows=1, kh=1, kw=1,
                                             stride_h=1, stride_w=1, dil_h=1, dil_w=1,
                                             requant=RequantMode.NONE))
    sl = status_layout(cfg)
    seen = []
    # ABORT drains each intake stream up to `last`: one framed beat on each
    streams = [dut.i_param, dut.i_weight, dut.i_act]
    sent = set()

    def step(ctx, t):
        ctx.set(dut.i_desc.valid, int(t == 0))
        ctx.set(dut.i_desc.payload.as_value(), desc)
        for s in streams:
            ctx.set(s.valid, int(id(s) not in sent))
            ctx.set(s.payload.as_value(), 1 << (len(s.payload.as_value()) - 1))   # last
        for s in streams:
            if ctx.get(s.valid) and ctx.get(s.ready):
                sent.add(id(s))
        valid = ctx.get(dut.o_status.valid)
        if valid:
            seen.append(unpack(sl, ctx.get(dut.o_status.payload.as_value())))
        ctx.set(dut.o_status.ready, int(len(seen) > 4))
        return len(seen) > 4 or t > 300

    simulate(dut, step, 400)
    assert len(seen) == 5, "no status beat"
    assert seen[0]["error"] & 1 and len(sent) == 3        # BAD_DESC
    assert all(s == seen[0] for s in seen), f"status payload changed while offered: {seen}"
