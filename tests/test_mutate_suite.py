"""The mutation suite's stimulus (sim/mutate.py): the tflite left-shift sweep reaches
every requantizer lane with every left shift, the layers at the descriptor's limits
reach them, and the layers added later come after the earlier ones (a mutant killed
by an earlier layer stays killed)."""

import numpy as np

from systolic_conv.driver import hardware_requantizes
from systolic_conv.sim.cocotb.layers import (HW_CONFIGS, LEFT_SHIFTS, draw_layer, prepare,
                                            words_to_ints)
from systolic_conv.sim.mutate import (LIMIT_LAYERS, REQUANT_LAYERS, fault_layers,
                                      lshift_layers, suite_layers)

SQUARE = HW_CONFIGS["square"]


def test_lshift_sweep_reaches_every_lane_with_every_left_shift():
    cfg = SQUARE
    layers = lshift_layers(cfg)
    assert len(layers) == LEFT_SHIFTS
    seen = {c: set() for c in range(cfg.cols)}
    for layer in layers:
        rq = layer.requant
        run = prepare(layer, cfg)
        assert rq.mode == "tflite" and run.hw_requant
        assert hardware_requantizes(run.plan, rq)
        assert isinstance(rq.shift, (list, tuple)) and len(rq.shift) == layer.w.shape[0]
        assert all(-31 <= s <= -1 for s in rq.shift)
        assert all(0 <= m < 1 << 31 for m in rq.multiplier)
        # an invocation's channels co0, co0 + 1, ... go to lanes 0, 1, ..., cols - 1, 0, ....
        for spec in run.plan.tiles:
            for co in range(spec.co[0], spec.co[1]):
                seen[(co - spec.co[0]) % cfg.cols].add(-rq.shift[co])
        assert np.any(run.golden != run.golden.flat[0])      # not one saturated value
    assert all(s == set(range(1, 32)) for s in seen.values()), seen


def test_limit_layers_reach_the_descriptor_limits():
    cfg = SQUARE
    layers = [draw_layer(400000 + i, cfg, budget=20000, force={"limits": True})
              for i in range(LIMIT_LAYERS)]
    assert [l.name for l in layers] == [draw_layer(400000 + i, cfg, budget=20000,
                                                   force={"limits": True}).name
                                        for i in range(LIMIT_LAYERS)]
    descs = [i.desc for l in layers for i in prepare(l, cfg).invs]
    pads = max(max(d["pad_top"], d["pad_bottom"], d["pad_left"], d["pad_right"])
               for d in descs)
    assert pads >= 16
    assert any(d["width"] == cfg.max_width for d in descs)
    assert any(d["stride_h"] == cfg.max_stride for d in descs)
    assert any(d["kh"] == cfg.max_kernel for d in descs)
    assert any(d["cotiles"] == cfg.max_cotiles for d in descs)
    assert any(d["cwords"] == cfg.max_cwords for d in descs)


def test_suite_keeps_the_earlier_layers_first():
    cfg = SQUARE
    layers = suite_layers(cfg, 3, n_requant=4, n_lshift=2, n_limits=2)
    names = [l.name for l in layers]
    assert names[:3] == ["seed0", "seed1", "seed2"]
    assert names[3:7] == [f"seed{100000 + i}" for i in range(4)]
    assert names[7:9] == [l.name for l in fault_layers(cfg)]
    assert len(layers) == 13 and REQUANT_LAYERS == 128


def test_limit_layers_fill_the_requant_only_fields_of_unrequantized_descriptors():
    """A descriptor without requantization may carry anything in the fields only
    requantization reads: the layers at the limits put random values there (the host
    writes 0 / 8), and nothing else of the descriptor changes."""
    import dataclasses
    from systolic_conv.hw import layouts as L
    from systolic_conv.sim.cocotb.layers import REQUANT_ONLY
    cfg = SQUARE
    dl = L.descriptor_layout(cfg)
    changed = 0
    for i in range(LIMIT_LAYERS):
        layer = draw_layer(400000 + i, cfg, budget=20000, force={"limits": True})
        plain = prepare(dataclasses.replace(layer, draw=dict(layer.draw, dont_care=False)), cfg)
        run = prepare(layer, cfg)
        for a, b in zip(plain.invs, run.invs):
            unpacked = L.unpack(dl, words_to_ints(b.desc_words)[0])
            assert {k: int(getattr(v, "value", v)) for k, v in unpacked.items()} == \
                {k: int(getattr(v, "value", v)) for k, v in b.desc.items()}
            rq = int(getattr(a.desc["requant"], "value", a.desc["requant"]))
            same = {k for k in a.desc if a.desc[k] == b.desc[k]}
            if rq:
                assert same == set(a.desc)
            else:
                assert set(a.desc) - same <= set(REQUANT_ONLY)
                changed += len(set(a.desc) - same) > 0
    assert changed >= 3, changed
