"""Planner properties (hypothesis): every output element is produced by exactly
one invocation per reduction part, the reduction parts of an output cover its
whole reduction exactly once, streamed rows/columns (halos, polyphase
subsequences, padding) are the ones the convolution reads, and every
invocation fits the hardware. Pure Python: no simulation.

Oracles independent of the planner: the padded-coordinate -> source-index map is
``numpy.pad`` applied to ``arange(n)`` (reflect / edge / wrap, -1 for zeros), and the
output reassembled from the planned tiles, each tile convolved (a plain tap loop in
this file) on exactly the rows, columns, channels and taps it streams, equals
``torch.nn.functional.conv2d`` on the whole ``F.pad``-ded input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st, HealthCheck

from systolic_conv.contract import conv_geometry
from systolic_conv.hw.config import HardwareConfig
from systolic_conv.planner import plan_layer

#: numpy.pad / torch F.pad mode of each padding_mode
NP_PAD = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
TORCH_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
             "circular": "circular"}


def ref_source_index(v, n, pad_lo, pad_hi, mode):
    """Source index of padded coordinates ``v`` of an axis of ``n`` with pads
    (``pad_lo``, ``pad_hi``), by ``numpy.pad`` of the indices; -1: a zeros pad."""
    idx = np.arange(n)
    if mode == "zeros":
        padded = np.pad(idx, (pad_lo, pad_hi), mode="constant", constant_values=-1)
    else:
        padded = np.pad(idx, (pad_lo, pad_hi), mode=NP_PAD[mode])
    return padded[np.asarray(v)]

SMALL = HardwareConfig(rows=2, cols=3, max_width=8, max_cwords=2, lb_rows=8, weight_depth=64,
                       max_cotiles=2, acc_depth=16, max_kernel=3, max_dilation=2, max_height=12)
SQUARE = HardwareConfig(rows=2, cols=2, max_width=16, max_cwords=4, lb_rows=8, weight_depth=256,
                        max_cotiles=8, acc_depth=64)


@st.composite
def layers(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(1, 7))
    cog = draw(st.integers(1, 4))
    if draw(st.booleans()):
        cg = cog = 1          # depthwise
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    H = draw(st.integers(dh * (kh - 1) + 1, dh * (kh - 1) + 20))
    W = draw(st.integers(dw * (kw - 1) + 1, dw * (kw - 1) + 30))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    ph = draw(st.integers(0, min(3, H - 1)))
    pw = draw(st.integers(0, min(3, W - 1)))
    n = draw(st.integers(0, 2))
    return conv_geometry((n, groups * cg, H, W), (groups * cog, cg, kh, kw), None,
                         stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups,
                         padding_mode=mode)


def _check(geom, cfg):
    plan = plan_layer(geom, cfg)
    cg = geom.C_in // geom.groups
    cog = geom.C_out // geom.groups
    # coverage: sum over invocations of (input channels x taps) reduced per output element
    red = np.zeros((geom.N, geom.C_out, geom.H_out, geom.W_out), dtype=np.int64)
    for t in plan.tiles:
        r, c = t.rows, t.cols
        # fits the hardware
        assert len(c.src) <= cfg.max_width and len(r.src) <= cfg.max_height
        assert r.k <= cfg.max_kernel and c.k <= cfg.max_kernel
        assert r.dil <= cfg.max_dilation and c.dil <= cfg.max_dilation
        assert (t.pass_rows - 1) * r.stride + (r.k - 1) * r.dil + 1 <= cfg.lb_rows
        assert t.pass_rows * len(c.out_idx) <= cfg.acc_depth
        assert t.cotiles <= cfg.max_cotiles and t.n_tiles <= cfg.weight_tiles
        assert t.ci[1] - t.ci[0] <= cfg.channel_tile
        # the streamed positions are the ones the convolution reads
        for seg, n_in, (lo, hi), k0, s, d in (
                (r, geom.H, geom.pad[:2], r.k_lo, geom.stride[0], geom.dilation[0]),
                (c, geom.W, geom.pad[2:], c.k_lo, geom.stride[1], geom.dilation[1])):
            for j, o in enumerate(seg.out_idx):
                for k in range(seg.k):
                    # hardware coordinate of (output j, tap k) in the streamed sequence
                    u = j * seg.stride + k * seg.dil - seg.pad_lo
                    v = o * s + (k0 + k) * d          # padded coordinate in the layer
                    want = ref_source_index(v, n_in, lo, hi, geom.padding_mode)
                    if 0 <= u < len(seg.src):
                        assert seg.src[u] == want, (seg, j, k)
                    else:
                        # a hardware pad position: only zeros mode pads in hardware (the
                        # other modes stream their mapped border positions, pads zero)
                        assert geom.padding_mode == "zeros" and want == -1, (seg, j, k)
        red[t.n, t.co[0]:t.co[1]][:, r.out_idx[:, None], c.out_idx[None, :]] += \
            (t.ci_sub[1] - t.ci_sub[0]) * r.k * c.k
    assert (red == cg * geom.kh * geom.kw).all(), "each output reduced exactly once"
    # reduction parts: first parts carry the bias exactly once per output
    firsts = np.zeros_like(red)
    for t in plan.tiles:
        if t.first:
            firsts[t.n, t.co[0]:t.co[1]][:, t.rows.out_idx[:, None], t.cols.out_idx[None, :]] += 1
    assert (firsts == 1).all()
    assert all(t.complete == (plan.reduction_parts == 1) for t in plan.tiles)
    del cog
    return plan


def _tile_conv(xs, wk, stride, dil, m, n):
    """A plain tap loop: ``xs`` (C, H, W) padded, ``wk`` (O, C, kh, kw) -> (O, m, n)."""
    (sr, sc), (dr, dc) = stride, dil
    out = np.zeros((wk.shape[0], m, n), dtype=np.int64)
    for i in range(wk.shape[2]):
        for j in range(wk.shape[3]):
            win = xs[:, i * dr:i * dr + (m - 1) * sr + 1:sr, j * dc:j * dc + (n - 1) * sc + 1:sc]
            assert win.shape[1:] == (m, n), "the streamed segment is too short"
            out += np.einsum("oc,cmn->omn", wk[:, :, i, j], win)
    return out


def _reassembled_equals_torch(geom, plan, seed):
    """Each tile convolved (a tap loop) on the rows/columns it streams (hardware zero
    pads added), its channel sub-range and its kernel taps, summed into the outputs it
    names (bias once, on first parts) == F.conv2d of the whole F.pad-ded input."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-8, 8, geom.input_shape)
    w = rng.integers(-8, 8, geom.weight_shape)
    b = rng.integers(-100, 100, geom.C_out)
    G = geom.groups
    cg, cog = geom.C_in // G, geom.C_out // G
    pt, pb, pl, pr = geom.pad
    xp = F.pad(torch.from_numpy(x.astype(np.float64)), (pl, pr, pt, pb),
               mode=TORCH_PAD[geom.padding_mode])
    ref = F.conv2d(xp, torch.from_numpy(w.astype(np.float64)),
                   torch.from_numpy(b.astype(np.float64)), stride=geom.stride,
                   dilation=geom.dilation, groups=G).numpy().astype(np.int64)
    got = np.zeros((geom.N, geom.C_out, geom.H_out, geom.W_out), dtype=np.int64)
    for t in plan.tiles:
        r, c = t.rows, t.cols
        a, bb = t.ci_sub
        m, n = len(r.out_idx), len(c.out_idx)
        for g in range(t.co[0] // cog, (t.co[1] - 1) // cog + 1):
            co0, co1 = max(t.co[0], g * cog), min(t.co[1], (g + 1) * cog)
            xs = x[t.n, g * cg + a:g * cg + bb][:, r.src][:, :, c.src]
            xs = np.pad(xs, ((0, 0), (r.pad_lo, r.pad_hi), (c.pad_lo, c.pad_hi)))
            o = _tile_conv(xs, w[co0:co1, a:bb, r.k_lo:r.k_hi, c.k_lo:c.k_hi],
                           (r.stride, c.stride), (r.dil, c.dil), m, n)
            if t.first:
                o += b[co0:co1, None, None]
            got[t.n, co0:co1][:, r.out_idx[:, None], c.out_idx[None, :]] += o
    assert np.array_equal(got, ref), (str(geom), f"data seed {seed}",
                                      np.argwhere(got != ref)[:5].tolist())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_plan_covers_outputs_once_small_hw(geom):
    _check(geom, SMALL)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers(), st.integers(0, 2**31 - 1))
def test_plan_reassembles_torch_conv_small_hw(geom, seed):
    _reassembled_equals_torch(geom, _check(geom, SMALL), seed)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers(), st.integers(0, 2**31 - 1))
def test_plan_reassembles_torch_conv_square_hw(geom, seed):
    _reassembled_equals_torch(geom, _check(geom, SQUARE), seed)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_plan_covers_outputs_once_square_hw(geom):
    _check(geom, SQUARE)


def test_polyphase_used_beyond_max_dilation():
    geom = conv_geometry((1, 4, 30, 30), (4, 4, 3, 3), None, padding=12, dilation=12)
    plan = plan_layer(geom, HardwareConfig())
    assert all(t.rows.dil == 1 and t.cols.dil == 1 for t in plan.tiles)
    assert len({tuple(t.rows.out_idx[:2]) for t in plan.tiles}) > 1
    _check(geom, HardwareConfig())
    _reassembled_equals_torch(geom, plan, 0)


def test_reassembly_oracle_catches_a_wrong_tile():
    """The reassembly is not vacuous: a plan with one tile's rows shifted by one source
    row, or one tile's tap range cut, no longer reproduces F.conv2d."""
    import dataclasses
    import pytest
    geom = conv_geometry((1, 3, 9, 10), (4, 3, 3, 3), None, padding=1, padding_mode="reflect")
    plan = _check(geom, SMALL)
    _reassembled_equals_torch(geom, plan, 1)
    t = plan.tiles[len(plan.tiles) // 2]
    t.rows = dataclasses.replace(t.rows, src=np.minimum(np.asarray(t.rows.src) + 1, geom.H - 1))
    with pytest.raises(AssertionError, match="data seed 1"):
        _reassembled_equals_torch(geom, plan, 1)
    plan = plan_layer(geom, SMALL)
    t = plan.tiles[0]
    t.cols = dataclasses.replace(t.cols, k_hi=t.cols.k_hi - 1)
    with pytest.raises(AssertionError, match="data seed 1"):
        _reassembled_equals_torch(geom, plan, 1)


def test_depthwise_mapping_chosen():
    geom = conv_geometry((1, 32, 20, 20), (32, 1, 3, 3), None, padding=1, groups=32)
    assert all(t.depthwise for t in plan_layer(geom, HardwareConfig()).tiles)
    rect = HardwareConfig(rows=4, cols=8)
    assert not any(t.depthwise for t in plan_layer(geom, rect).tiles)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.integers(0, 12), st.integers(1, 30), st.integers(1, 5),
       st.integers(1, 4), st.integers(1, 12), st.integers(0, 4), st.integers(1, 5),
       st.booleans())
def test_zeros_segment_closed_form(n_in, pad_lo, o0, m, s, d, k_lo, kk, poly):
    """A zeros-mode segment (closed form) == the valid run of its padded positions."""
    from systolic_conv.planner import _make_segment
    hs, hd = (s, 1) if poly else (s, d)
    outs = np.arange(o0, o0 + m)
    seg = _make_segment(outs, n_in, pad_lo, k_lo, kk, s, d, hs, hd, "zeros", True)
    length = (m - 1) * hs + (kk - 1) * hd + 1
    v = o0 * s + k_lo * d + (1 if hd == d else d) * np.arange(length)
    i = v - pad_lo                      # the zeros-mode map, written out: -1 off the image
    src = np.where((i >= 0) & (i < n_in), i, -1)
    valid = np.flatnonzero(src >= 0)
    if len(valid):
        want = (src[valid[0]:valid[-1] + 1].tolist(), int(valid[0]), length - 1 - int(valid[-1]))
    else:
        want = ([0], length, 0)
    assert (seg.src.tolist(), seg.pad_lo, seg.pad_hi) == want
    assert seg.src.dtype == np.int64 and seg.out_idx is outs and seg.prepad == 0
    assert (seg.stride, seg.dil, seg.k_lo, seg.k_hi) == (hs, hd, k_lo, k_lo + kk)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(1, 9), st.integers(1, 9),
       st.integers(1, 4), st.integers(1, 3), st.integers(1, 4), st.integers(1, 3),
       st.integers(4, 400), st.integers(1, 6))
def test_word_ranges_and_co_chunks(ng, csub, cog, R, C, khm, kwm, cpart, wtiles, max_cot):
    """The cached word ranges and output-channel chunks == their step-by-step forms."""
    import pytest
    from systolic_conv.planner import word_ranges, _co_chunks_rel
    from systolic_conv.streams import tile_word_ranges
    for args in ((ng * csub, ng * cog, ng, R, C), (csub, cog, 1, R, C), (csub, cpart, 1, R, C)):
        for phase in range(cog):
            assert word_ranges(*args, cog=cog, co_phase=phase) == \
                tuple(tile_word_ranges(*args, cog=cog, co_phase=phase))
        assert word_ranges(*args) == tuple(tile_word_ranges(*args))
    cfg = HardwareConfig(rows=R, cols=C, weight_depth=wtiles * R, max_cotiles=max_cot)
    # the chunking loop, one output-channel tile at a time
    ranges = tile_word_ranges(ng * csub, ng * cog, ng, R, C, cog=cog)
    want, start, tiles, count = [], 0, 0, 0
    for t, (_f, cnt) in enumerate(ranges):
        need = khm * kwm * cnt
        if need > cfg.weight_tiles:
            want = f"{need} weight tiles"
            break
        if count == cfg.max_cotiles or tiles + need > cfg.weight_tiles:
            want.append((start * C, t * C))
            start, tiles, count = t, 0, 0
        tiles += need
        count += 1
    else:
        want.append((start * C, ng * cog))
    if isinstance(want, str):
        with pytest.raises(ValueError, match=want):
            _co_chunks_rel(ng, cog, csub, cfg, khm, kwm)
    else:
        assert _co_chunks_rel(ng, cog, csub, cfg, khm, kwm) == tuple(want)


@pytest.mark.parametrize("pad_w", [39, 20, 33])
def test_depthwise_strips_of_padding_only_fit_the_line_buffer(pad_w):
    """A depthwise column strip whose taps are all padding streams one real column
    beside them; the planner sizes such strips so their rows still fit max_width
    (a 1x5 kernel and 6 columns with 20..39 columns of padding on each side), and
    every invocation's streams build."""
    from systolic_conv.driver import _invocations
    from systolic_conv.sim.cocotb.layers import hw_config
    cfg = hw_config("square")          # 4x4, max_width 32: the configuration that met it
    geom = conv_geometry((1, 6, 1, 6), (6, 1, 1, 5), None, stride=(3, 1), padding=(1, pad_w),
                         dilation=(4, 1), groups=6)
    plan = plan_layer(geom, cfg)
    assert any(t.depthwise for t in plan.tiles)
    rng = np.random.default_rng(pad_w)
    x = rng.integers(-128, 128, (1, 6, 1, 6))
    w = rng.integers(-128, 128, (6, 1, 1, 5))
    invs = _invocations(plan, x, w, None, 0, None)
    assert invs and all(inv.desc["width"] <= cfg.max_width for inv in invs)
    _reassembled_equals_torch(geom, _check(geom, cfg), pad_w)
