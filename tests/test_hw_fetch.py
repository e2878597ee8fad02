"""ElementFetch alone (amaranth.sim) against a Python model of its documented
timing, with the line buffer's read port emulated at ``READ_LATENCY``.

Covers
------
- ``rd_addr`` is the element's address in the cycle the element token is at the
  port (issue + 1);
- the array's word and control ``FETCH_LATENCY`` after issue: the element's pixel
  ``px`` of the word read, or the pad value in every lane for a padding position,
  with the element's control unchanged; an element every cycle with random gaps
  (``valid`` low, other fields random), every pixel position;
- 1x1, 2x2, 4x4 and 3x2 arrays (1, 2, 4 pixels per word), two pad values.
"""

import pytest

from amaranth.lib import data
from amaranth import signed

from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.fetch import ElementFetch, element_layout, FETCH_LATENCY
from systolic_conv.hw.linebuffer import READ_LATENCY, addr_bits
from systolic_conv.hw.array import row_control_layout
from systolic_conv.hw.layouts import pack, unpack

from blockbench import seeded, simulate

CFGS = {
    "1x1": HardwareConfig(rows=1, cols=1, act_pixels=1, max_width=4, max_cwords=2, lb_rows=2),
    "2x2": HardwareConfig(rows=2, cols=2, act_pixels=2, max_width=8, max_cwords=2, lb_rows=2),
    "4x4": HardwareConfig(rows=4, cols=4, act_pixels=4, max_width=16, max_cwords=2, lb_rows=2),
    "3x2": HardwareConfig(rows=3, cols=2, act_pixels=4, max_width=8, max_cwords=1, lb_rows=4),
}


@pytest.mark.parametrize("name", sorted(CFGS))
@pytest.mark.parametrize("pad_value", [-128, 37])
def test_elements_reach_the_array(name, pad_value):
    cfg = CFGS[name]
    R, P = cfg.rows, cfg.act_pixels
    dut = ElementFetch(cfg)
    el_lay = element_layout(cfg)
    word_in = data.ArrayLayout(data.ArrayLayout(signed(cfg.data_width), R), P)
    word_out = data.ArrayLayout(signed(cfg.data_width), R)
    ctl_lay = row_control_layout()
    depth = 1 << addr_bits(cfg)
    seed = 500 + sorted(CFGS).index(name) * 2 + (pad_value > 0)
    lag = FETCH_LATENCY - 1          # from the token at the port (issue + 1) to the array
    with seeded(seed) as rng:
        h = 1 << (cfg.data_width - 1)
        mem = [[[rng.randint(-h, h - 1) for _ in range(R)] for _ in range(P)]
               for _ in range(depth)]
        addrs, expect = {}, {}
        n_valid = [0]

        def step(ctx, t):
            if t >= 300:
                return True
            el = dict(ctl=dict(valid=int(rng.random() < 0.7), latch=rng.getrandbits(1),
                               first=rng.getrandbits(1), last=rng.getrandbits(1)),
                      addr=rng.randrange(depth), px=rng.randrange(P), pad=int(rng.random() < 0.25))
            if t >= 300 - lag - 2:
                el["ctl"]["valid"] = 0
            ctx.set(dut.element.as_value(), pack(el_lay, el))
            ctx.set(dut.pad_value, pad_value)
            back = addrs.pop(t - READ_LATENCY, None)
            ctx.set(dut.rd_data.as_value(), pack(word_in, mem[back] if back is not None else
                                                 [[rng.randint(-h, h - 1) for _ in range(R)]
                                                  for _ in range(P)]))
            rd = ctx.get(dut.rd_addr)
            assert rd == el["addr"], f"cycle {t}: rd_addr {rd}, expected {el['addr']}"
            addrs[t] = rd
            want_word = [pad_value] * R if el["pad"] else mem[el["addr"]][el["px"]]
            expect[t + lag] = (el["ctl"], want_word, el)
            if t in expect:
                ctl, word, src = expect.pop(t)
                got_ctl = unpack(ctl_lay, ctx.get(dut.ctl.as_value()))
                assert got_ctl == ctl, f"cycle {t}: ctl {got_ctl}, expected {ctl} ({src})"
                if ctl["valid"]:
                    n_valid[0] += 1
                    got = unpack(word_out, ctx.get(dut.word.as_value()))
                    assert got == word, f"cycle {t}: word {got}, expected {word} for {src}"
            return False

        simulate(dut, step, 400)
        assert n_valid[0] > 150
