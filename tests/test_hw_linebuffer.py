"""LineBuffer alone (amaranth.sim) against a Python model of its documented
addressing, release rule and counts.

Covers
------
- dense addressing ``{row % lb_rows, word, column group}`` with beats in (row,
  column group, word) order, and depthwise addressing ``{row % (lb_rows *
  max_cwords), column group}`` with rows word after word; every read through
  ``rd_addr_dense`` / ``rd_addr_dw`` (the other port driven with junk) returns the
  model's word ``READ_LATENCY`` cycles later, for every row the sequencer still
  needs (``lo <= row < rows_in``) from the very cycle ``rows_in`` counts it, and
  for any settled address;
- the release rule, cycle by cycle: ``i_act.ready`` is ``run & ~done & (past the
  end | abort | row - lo < capacity)`` with capacity ``lb_rows`` (dense) or
  ``lb_rows * max_cwords`` (depthwise), ``lo`` moving at random (sometimes ahead of
  ``rows_in``) so the intake really waits for slots;
- ``rows_in`` exactly: complete rows, counted the cycle after a row's last beat;
- ``ACT_SHORT`` / ``ACT_LONG`` on the beat that carries them, beats past the end
  taken and dropped (nothing overwritten), beats during ``abort`` taken and not
  written;
- 1x1, 2x2, 4x4 and 3x2 arrays with 2-row buffers, random idle cycles on ``i_act``,
  the ``layer`` input scrambled after ``start``.

"""

import pytest

from amaranth.lib import data
from amaranth import signed

from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.linebuffer import LineBuffer, READ_LATENCY, addr_bits
from systolic_conv.hw.layouts import act_beat_layout, ErrorFlag, pack, unpack

from blockbench import (seeded, simulate, Source, layer_value, scramble,
                        drains_after_rejected_descriptor)


class Image:
    """One invocation's activation stream and where each beat belongs.

    ``rows`` line-buffer rows (dense: image rows; depthwise: ``cwords * height``
    single-word rows), ``xw`` beats (column groups) per row and word, ``cw`` words
    per row (dense; 1 for depthwise). ``n_beats`` may differ from the expected
    total (short / long streams)."""

    def __init__(self, cfg, rng, *, depthwise, height, xw, cwords, n_beats=None,
                 abort_at=None, lo_rate=0.25, name=""):
        self.cfg, self.dw, self.height, self.xw, self.cwords = cfg, depthwise, height, xw, cwords
        self.total = height * xw * cwords
        self.abort_at, self.lo_rate, self.name = abort_at, lo_rate, name
        n = self.total if n_beats is None else n_beats
        h = 1 << (cfg.data_width - 1)
        self.beats = [[rng.randint(-h, h - 1) for _ in range(cfg.rows * cfg.act_pixels)]
                      for _ in range(n)]

    def place(self, b):
        """(line-buffer row, memory address) of expected beat ``b``."""
        cfg = self.cfg
        if self.dw:
            row, xg = divmod(b, self.xw)
            return row, (row % cfg.dw_ring_rows) * cfg.lb_words + xg
        row, rem = divmod(b, self.xw * self.cwords)
        xg, w = divmod(rem, self.cwords)
        return row, ((row % cfg.lb_rows) * cfg.max_cwords + w) * cfg.lb_words + xg

    def row_end(self, b):
        return (b + 1) % (self.xw * (1 if self.dw else self.cwords)) == 0

    @property
    def capacity(self):
        return self.cfg.dw_ring_rows if self.dw else self.cfg.lb_rows

    def layer(self):
        return layer_value(self.cfg, {"depthwise": int(self.dw), "cwords": self.cwords},
                           act_total=self.total, xw_m1=self.xw - 1, cw_m1=self.cwords - 1)


def run_linebuffer(cfg, images, seed, idle=0.3):
    dut = LineBuffer(cfg)
    blay = act_beat_layout(cfg)
    wlay = data.ArrayLayout(data.ArrayLayout(signed(cfg.data_width), cfg.rows), cfg.act_pixels)
    amax = 1 << addr_bits(cfg)
    writes = {}                 # address -> [(handshake cycle, word)]
    stats = []
    with seeded(seed) as rng:
        st = dict(k=-1, phase="next")
        pending = {}            # due cycle -> (address, expected word or None, why)

        def expected(addr, s, strict):
            """The word a read presented in cycle ``s`` returns: the latest write
            handshaken by ``s - 1``; None (unchecked) unless ``strict`` or settled."""
            hist = writes.get(addr, [])
            done = [w for h, w in hist if h <= s - 1]
            inflight = any(s - 2 <= h <= s + 1 for h, _w in hist)
            if not done or (inflight and not strict):
                return None
            return done[-1]

        def step(ctx, t):
            if st["phase"] == "next":
                st["k"] += 1
                if st["k"] >= len(images):
                    return True
                img = images[st["k"]]
                st.update(img=img, phase="start", done=False, wait=0, lo=0, b=0, over=False,
                          rows=0, rows_log=[], src=Source(dut.i_act, [
                              pack(blay, {"data": x, "last": int(i == len(img.beats) - 1)})
                              for i, x in enumerate(img.beats)], rng, idle))
                stats.append(dict(waited=0, blocked=0, taken=0))
            img, src = st["img"], st["src"]
            phase = st["phase"]
            start, run = phase == "start", phase == "run"
            abort = run and img.abort_at is not None and src.index >= img.abort_at
            # the sequencer's release: lo moves on a while after the buffer is full,
            # and now and then early (up to one row ahead of rows_in)
            rows_in_model = sum(1 for h in st["rows_log"] if h <= t - 1)
            full = rows_in_model >= st["lo"] + img.capacity
            if run and st["lo"] <= rows_in_model and (
                    (full and rng.random() < 0.15) or rng.random() < img.lo_rate):
                st["lo"] += 1
            lo = st["lo"]
            ctx.set(dut.start, int(start))
            if hasattr(dut, "begin"):
                ctx.set(dut.begin, int(start))
            ctx.set(dut.run, int(run))
            ctx.set(dut.abort, int(abort))
            ctx.set(dut.layer.as_value(), img.layer() if start else scramble(cfg, rng))
            ctx.set(dut.lo, lo)
            if run:
                src.drive(ctx)
            else:
                ctx.set(dut.i_act.valid, 0)
            # a read: mostly of a row the sequencer may read (the newest complete row
            # often), else anywhere
            strict = False
            if not start and rows_in_model > lo and rng.random() < 0.7:
                r = rows_in_model - 1 if rng.random() < 0.4 else rng.randrange(lo, rows_in_model)
                first = r * img.xw * (1 if img.dw else img.cwords)
                span = img.xw * (1 if img.dw else img.cwords)
                addr = img.place(first + rng.randrange(span))[1]
                strict = True
            else:
                addr = rng.randrange(amax)
            junk = rng.randrange(amax)
            ctx.set(dut.rd_addr_dw if img.dw else dut.rd_addr_dense, addr)
            ctx.set(dut.rd_addr_dense if img.dw else dut.rd_addr_dw, junk)
            if not start:
                want = expected(addr, t, strict)
                if want is not None:
                    pending[t + READ_LATENCY] = (addr, want, "needed row" if strict else "settled")
            # -- outputs
            if phase in ("run", "gap"):
                got = ctx.get(dut.rows_in)
                assert got == rows_in_model, (f"{img.name}: cycle {t}: rows_in {got}, "
                                              f"expected {rows_in_model}")
            if t in pending:
                a, want, why = pending.pop(t)
                got = [x for px in unpack(wlay, ctx.get(dut.rd_data.as_value())) for x in px]
                assert got == want, (f"{img.name}: cycle {t}: read of address {a} ({why}) "
                                     f"gave {got}, expected {want}")
            room = st["rows"] - lo < img.capacity
            want_ready = int(run and not st["done"] and (st["over"] or abort or room))
            got_ready = ctx.get(dut.i_act.ready)
            assert got_ready == want_ready, (
                f"{img.name}: cycle {t}: ready {got_ready}, expected {want_ready} (row "
                f"{st['rows']}, lo {lo}, capacity {img.capacity}, over {st['over']})")
            if run and not st["done"] and not want_ready:
                stats[-1]["blocked"] += 1                 # no room for the next row
                stats[-1]["waited"] += src.offered        # ... while a beat was offered
            err = ctx.get(dut.err)
            n = src.taken(ctx, t) if run else None
            if n is not None:
                want = 0
                if n >= img.total:
                    want |= ErrorFlag.ACT_LONG
                last = n == len(img.beats) - 1
                if last and n + 1 < img.total:
                    want |= ErrorFlag.ACT_SHORT
                assert err == want, (f"{img.name}: beat {n} cycle {t}: err "
                                     f"{ErrorFlag.describe(err)}, "
                                     f"expected {ErrorFlag.describe(want)}")
                if n < img.total:
                    row, a = img.place(n)
                    if not abort:
                        writes.setdefault(a, []).append((t, img.beats[n]))
                    if img.row_end(n):
                        st["rows"] += 1
                        st["rows_log"].append(t)
                    st["over"] = n + 1 >= img.total
                st["done"] = st["done"] or last
                stats[-1]["taken"] = src.index
            else:
                assert err == 0, f"{img.name}: cycle {t}: err {err} without a beat"
            if start:
                st["phase"] = "run"
            elif run:
                st["wait"] = st["wait"] + 1 if st["done"] else 0
                if st["wait"] > 6:
                    st["phase"] = "gap"
            elif phase == "gap":
                st["phase"] = "next"
            return False

        simulate(dut, step, 60000)
        assert len(stats) == len(images), "not every image ran"
    return stats


CFGS = {
    "1x1": HardwareConfig(rows=1, cols=1, act_pixels=1, max_width=4, max_cwords=2, lb_rows=2),
    "2x2": HardwareConfig(rows=2, cols=2, act_pixels=2, max_width=8, max_cwords=2, lb_rows=2),
    "4x4": HardwareConfig(rows=4, cols=4, act_pixels=4, max_width=16, max_cwords=2, lb_rows=2),
    "3x2": HardwareConfig(rows=3, cols=2, act_pixels=1, max_width=4, max_cwords=2, lb_rows=4),
}


@pytest.mark.parametrize("name", sorted(CFGS))
def test_rows_addressing_and_release(name):
    """Dense images (all words, odd widths), a depthwise image where the array has
    the mapping, then a dense one again: every read of a needed row returns its
    word, ready follows the release rule every cycle, and the buffer filled up (beats
    were held back for want of a free slot) in two images at least."""
    cfg = CFGS[name]
    seed = 400 + sorted(CFGS).index(name)
    with seeded(seed) as rng:
        W = cfg.lb_words
        imgs = [Image(cfg, rng, depthwise=False, height=2 * cfg.lb_rows + 3, xw=W,
                      cwords=cfg.max_cwords,
                      lo_rate=0.02, name="dense, full rows"),
                Image(cfg, rng, depthwise=False, height=2 * cfg.lb_rows + 2,
                      xw=max(1, W - 1), cwords=1,
                      lo_rate=0.02, name="dense, one word")]
        if cfg.depthwise_mode:
            imgs.append(Image(cfg, rng, depthwise=True, height=5, xw=W, cwords=2, lo_rate=0.02,
                              name="depthwise"))
        imgs.append(Image(cfg, rng, depthwise=False, height=2 * cfg.lb_rows + 1, xw=W,
                          cwords=2, lo_rate=0.02,
                          name="dense again"))
    stats = run_linebuffer(cfg, imgs, seed)
    for img, s in zip(imgs, stats):
        assert s["taken"] == img.total, img.name
    assert sum(s["blocked"] > 0 for s in stats) >= 2, "the buffer was rarely full"
    assert sum(s["waited"] for s in stats) > 0, "the release rule never held a beat back"


def test_short_long_past_the_end_and_abort():
    """ACT_SHORT on an early ``last`` (the partial row never counts); 2 rows of
    beats past the end are ACT_LONG and dropped (the buffer's rows stay readable
    and unchanged); after ``abort`` beats drain regardless of room and are not
    written."""
    cfg = CFGS["2x2"]
    with seeded(410) as rng:
        imgs = [Image(cfg, rng, depthwise=False, height=4, xw=4, cwords=2, n_beats=13,
                      name="short"),
                Image(cfg, rng, depthwise=False, height=3, xw=4, cwords=2, n_beats=24 + 16,
                      lo_rate=0.05, name="long"),
                Image(cfg, rng, depthwise=True, height=4, xw=4, cwords=2, n_beats=32 + 6,
                      name="depthwise long"),
                Image(cfg, rng, depthwise=False, height=6, xw=4, cwords=2, abort_at=9,
                      lo_rate=0.0, name="aborted"),
                Image(cfg, rng, depthwise=False, height=2, xw=4, cwords=1, name="after")]
    stats = run_linebuffer(cfg, imgs, 410, idle=0.15)
    assert [s["taken"] for s in stats] == [len(i.beats) for i in imgs]



def test_abort_after_a_rejected_descriptor_drains():
    cfg = CFGS["2x2"]
    dut = LineBuffer(cfg)
    beat = pack(act_beat_layout(cfg), {"data": [1] * (cfg.rows * cfg.act_pixels), "last": 1})
    layer = layer_value(cfg, {"cwords": 1}, act_total=1, xw_m1=0, cw_m1=0)
    assert drains_after_rejected_descriptor(dut, dut.i_act, layer, beat), \
        "i_act not drained during ABORT"
