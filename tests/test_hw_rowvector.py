"""RowVectorLoader alone (amaranth.sim) against a Python model of the documented
row-vector contract, with the line buffer's read port emulated at
``READ_LATENCY``.

Covers
------
- a group of ``taps`` taps (1..``dw_kernel``) reads its ``ceil((rows + taps - 1) /
  act_pixels)`` words into shadow slots ``0, 1, ...`` (a padding row's reads give
  the pad value in every lane); its first tap loads the vector, each further tap
  shifts it: tap ``j`` shows pixel ``j + r`` of the group's row vector to array row
  ``r``, ``OP_DELAY + 1`` cycles after the tap's decision, and the vector holds
  between taps;
- the documented overlap limits, taken tight at random: a group's reads begin as
  early as the cycle its predecessor's first tap is decided, and its first tap as
  early as the cycle after its last read (or after the predecessor's last tap);
  gaps elsewhere at random;
- ``rd_addr`` is the read token's address; ``ctl_out`` is the tap's control,
  aligned with ``dw_vec``;
- 1x1, 2x2 (2 pixels per word), 4x4 (1 and 4 pixels per word) arrays with 3x3
  and 5x5 depthwise kernels.
"""

import pytest

from amaranth.lib import data
from amaranth import signed

from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.rowvector import RowVectorLoader, read_layout, op_layout, OP_DELAY
from systolic_conv.hw.linebuffer import READ_LATENCY, addr_bits
from systolic_conv.hw.array import row_control_layout
from systolic_conv.hw.layouts import pack, unpack

from blockbench import seeded, simulate


def schedule(cfg, rng, n_groups):
    """Decision cycles of every group's reads and taps under the documented rules.
    Returns reads {cycle: (addr, slot, pad, group)}, taps {cycle: (group, j)} and
    the groups [(taps, [(addr, pad)])]."""
    R, P = cfg.rows, cfg.act_pixels
    depth = 1 << addr_bits(cfg)
    reads, taps, groups = {}, {}, []
    prev_first_tap, prev_last_tap = 0, -1
    for g in range(n_groups):
        n_taps = rng.randint(1, cfg.dw_kernel)
        n_words = -(-(R + n_taps - 1) // P)
        words = [(rng.randrange(depth), int(rng.random() < 0.2)) for _ in range(n_words)]
        groups.append((n_taps, words))
        tight = rng.random() < 0.5
        c = prev_first_tap + (0 if tight else rng.randint(0, 2))
        for slot, (addr, pad) in enumerate(words):
            reads[c] = (addr, slot, pad, g)
            c += 1 if tight or rng.random() < 0.7 else 2
        last_read = c - 1
        first = max(last_read + 1, prev_last_tap + 1)
        first += 0 if rng.random() < 0.5 else rng.randint(1, 2)
        c = first
        for j in range(n_taps):
            taps[c] = (g, j)
            prev_last_tap = c
            c += 1 if rng.random() < 0.8 else 2
        prev_first_tap = first
    return reads, taps, groups


CFGS = {
    "1x1 k3": HardwareConfig(rows=1, cols=1, act_pixels=1, max_width=8, max_cwords=2, lb_rows=2,
                             dw_kernel=3),
    "2x2 k3": HardwareConfig(rows=2, cols=2, act_pixels=2, max_width=8, max_cwords=2, lb_rows=2,
                             dw_kernel=3),
    "4x4 k5 p4": HardwareConfig(rows=4, cols=4, act_pixels=4, max_width=16, max_cwords=2,
                                lb_rows=2, dw_kernel=5),
    "4x4 k3 p1": HardwareConfig(rows=4, cols=4, act_pixels=1, max_width=8, max_cwords=2,
                                lb_rows=2, dw_kernel=3),
}


@pytest.mark.parametrize("name", sorted(CFGS))
def test_groups_load_and_shift_the_row_vector(name):
    cfg = CFGS[name]
    R, C, P = cfg.rows, cfg.cols, cfg.act_pixels
    dut = RowVectorLoader(cfg)
    vec = data.ArrayLayout(signed(cfg.data_width), C)
    word_in = data.ArrayLayout(vec, P)
    vec_out = data.ArrayLayout(vec, R)
    rl, ol, cl = read_layout(cfg), op_layout(), row_control_layout()
    depth = 1 << addr_bits(cfg)
    seed = 600 + sorted(CFGS).index(name)
    show = OP_DELAY + 1          # decision -> array; the token is at the port a cycle after
    with seeded(seed) as rng:
        h = 1 << (cfg.data_width - 1)
        pad_value = rng.randint(-h, h - 1)
        mem = [[[rng.randint(-h, h - 1) for _ in range(C)] for _ in range(P)]
               for _ in range(depth)]
        reads, taps, groups = schedule(cfg, rng, 24)
        end = max(taps) + show + 3
        # the model: each group's row vector, as pixels of C lanes
        vectors = []
        for n_taps, words in groups:
            v = []
            for addr, pad in words:
                v += [[pad_value] * C for _ in range(P)] if pad else mem[addr]
            vectors.append(v)
        want_vec = {}            # cycle -> expected dw_vec (held until the next tap)
        current = None
        for c in range(end + 1):
            d = c - show
            if d in taps:
                g, j = taps[d]
                current = [vectors[g][r + j] for r in range(R)]
            want_vec[c] = current
        ctls = {}
        pipe = {}
        checked = [0]

        def step(ctx, t):
            if t > end:
                return True
            d = t - 1                                   # the decision behind this token
            rd = reads.get(d)
            ctx.set(dut.read.as_value(), pack(rl, dict(
                valid=int(rd is not None), addr=rd[0] if rd else rng.randrange(depth),
                slot=rd[1] if rd else rng.randrange(cfg.dw_shadow_words), pad=rd[2] if rd else 1)))
            tp = taps.get(d)
            ctx.set(dut.op.as_value(), pack(ol, dict(load=int(tp is not None and tp[1] == 0),
                                                     shift=int(tp is not None and tp[1] > 0))))
            ctl = dict(valid=int(tp is not None), latch=rng.getrandbits(1),
                       first=rng.getrandbits(1), last=rng.getrandbits(1))
            ctx.set(dut.ctl.as_value(), pack(cl, ctl))
            ctls[d + show] = ctl
            ctx.set(dut.pad_value, pad_value)
            back = pipe.pop(t - READ_LATENCY, None)
            ctx.set(dut.rd_data.as_value(), pack(word_in, mem[back] if back is not None else
                                                 [[rng.randint(-h, h - 1) for _ in range(C)]
                                                  for _ in range(P)]))
            a = ctx.get(dut.rd_addr)
            if rd is not None:
                assert a == rd[0], f"cycle {t}: rd_addr {a}, expected {rd[0]}"
            pipe[t] = a
            if t in ctls:
                got = unpack(cl, ctx.get(dut.ctl_out.as_value()))
                assert got == ctls[t], f"cycle {t}: ctl_out {got}, expected {ctls[t]}"
            if want_vec.get(t) is not None:
                got = unpack(vec_out, ctx.get(dut.dw_vec.as_value()))
                assert got == want_vec[t], (f"cycle {t}: dw_vec {got}, expected {want_vec[t]} "
                                            f"(tap {taps.get(t - show)})")
                checked[0] += 1
            return False

        simulate(dut, step, end + 2)
        assert checked[0] > len(taps)
