"""ParamStore alone (amaranth.sim) against a Python model of its documented intake.

Covers
------
- the memories hold exactly the beats sent (lanes and word range, ``last = first +
  count - 1``), read back through ``range_*`` and ``lanes_*`` one cycle after the
  address, on 1x1, 2x2, 4x4 and 3x2 arrays, dense and depthwise, with random idle
  cycles on ``i_param`` and the ``layer`` input scrambled after ``start`` (the block
  keeps its own copy);
- ``i_param.ready`` is ``run`` until the ``last`` beat; ``ready`` rises
  :data:`READY_AFTER_LAST` cycles after the last beat, after any total error;
- the saturating beat count: 300 beats with ``max_cotiles = 4`` give ``PARAM_LONG``
  on every extra beat and overwrite nothing (neither the layer's tiles nor a
  previous layer's entry beyond ``cotiles``); ``PARAM_SHORT``;
- ``BAD_PARAM`` for each reason, on the beat that carries it (empty word range,
  range past ``cwords``, the dense tiles' total against ``n_tiles`` after the last
  beat, tflite shift outside -31..31, half_up shift outside 0..47 or multiplier
  >= 2**16), the limits themselves accepted, depthwise ranges and unrequantized
  lanes not checked, a bad beat past ``cotiles`` only ``PARAM_LONG``;
- ``abort``: beats are still taken (the stream drains) but not written.

"""

import pytest

from amaranth.lib import data

from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.params import ParamStore, range_layout
from systolic_conv.hw.layouts import (param_beat_layout, channel_params_layout, RequantMode,
                                      ErrorFlag, pack, unpack)

from blockbench import (seeded, simulate, Source, layer_value, scramble, mask,
                        drains_after_rejected_descriptor)

#: Cycles from the last beat's handshake to ``ready`` (``done``, the registered
#: total, the check): the figure the sequencer's setup wait is built on.
READY_AFTER_LAST = 3

NONE, TFLITE, HALF_UP = RequantMode.NONE, RequantMode.TFLITE, RequantMode.HALF_UP


def lane(rng, mode):
    """One lane's (bias, mult, shift), valid for ``mode``."""
    bias = rng.randint(-(1 << 31), (1 << 31) - 1)
    if mode == TFLITE:
        return bias, rng.randint(0, (1 << 31) - 1), rng.randint(-31, 31)
    if mode == HALF_UP:
        return bias, rng.randint(0, (1 << 16) - 1), rng.randint(0, 47)
    return bias, rng.randint(0, (1 << 31) - 1), rng.randint(-64, 63)


class Layer:
    """One invocation's parameters: descriptor fields the block uses and the beats
    (dicts: lanes [(bias, mult, shift)], first, count, last). ``abort_at``: raise
    ``abort`` from the cycle after that many beats were taken."""

    def __init__(self, cfg, rng, *, cotiles, cwords, kh=1, kw=1, depthwise=0, mode=TFLITE,
                 n_beats=None, n_tiles=None, abort_at=None, name=""):
        self.cotiles, self.cwords, self.kh, self.kw = cotiles, cwords, kh, kw
        self.depthwise, self.mode, self.abort_at, self.name = depthwise, mode, abort_at, name
        n_beats = cotiles if n_beats is None else n_beats
        self.beats = []
        for n in range(n_beats):
            if depthwise:
                first, count = 0, 1
            else:
                first = rng.randint(0, cwords - 1)
                count = rng.randint(1, cwords - first)
            self.beats.append(dict(lanes=[lane(rng, mode) for _ in range(cfg.cols)],
                                   first=first, count=count, last=int(n == n_beats - 1)))
        self.n_tiles = self.consistent_n_tiles() if n_tiles is None else n_tiles

    def consistent_n_tiles(self):
        """The tiles' total as the beats' word ranges imply it."""
        return sum(b["count"] for b in self.beats[:self.cotiles]) * self.kh * self.kw

    def desc(self):
        return dict(cotiles=self.cotiles, cwords=self.cwords, n_tiles=self.n_tiles,
                    depthwise=self.depthwise, requant=self.mode, kh=self.kh, kw=self.kw)


def beat_bits(cfg, b):
    lanes = [dict(bias=x, mult=m, shift=s) for x, m, s in b["lanes"]]
    return pack(param_beat_layout(cfg), {"data": {"lanes": lanes, "cw_first": b["first"],
                                                  "cw_count": b["count"]}, "last": b["last"]})


def lane_ok(mode, mult, shift):
    if mode == TFLITE:
        return -31 <= shift <= 31
    if mode == HALF_UP:
        return 0 <= shift <= 47 and mult < (1 << 16)
    return True


def expected_err(layer, n, b):
    """The documented flags of beat ``n``'s handshake."""
    e = 0
    if n >= layer.cotiles:
        return ErrorFlag.PARAM_LONG
    rng_bad = not layer.depthwise and (b["count"] == 0 or b["first"] + b["count"] > layer.cwords)
    lanes_bad = not all(lane_ok(layer.mode, m, s) for _x, m, s in b["lanes"])
    if rng_bad or lanes_bad:
        e |= ErrorFlag.BAD_PARAM
    if b["last"] and n + 1 < layer.cotiles:
        e |= ErrorFlag.PARAM_SHORT
    return e


def run_params(cfg, layers, seed, idle=0.3, reads=24):
    """Run ``layers`` one after the other; check every cycle against the model and
    read the memories back after each. Returns per-layer records."""
    dut = ParamStore(cfg)
    lanes_lay = data.ArrayLayout(channel_params_layout(cfg), cfg.cols)
    rlay = range_layout(cfg)
    cwm = mask(cfg.cw_bits)
    mem = {}                                   # address -> (lanes, first, last)
    recs = []
    with seeded(seed) as rng:
        it = iter(layers)
        st = dict(layer=None, phase="next")

        def begin():
            lay = next(it, None)
            if lay is None:
                return False
            src = Source(dut.i_param, [beat_bits(cfg, b) for b in lay.beats], rng, idle)
            rec = dict(name=lay.name, errs=[], pulses=[], last_hs=None, ready_at=None,
                       taken=0)
            recs.append(rec)
            st.update(layer=lay, src=src, rec=rec, phase="start", done=False, wait=0,
                      nreads=0, issued=0, prev_read=None)
            return True

        def step(ctx, t):
            if st["phase"] == "next" and not begin():
                return True
            lay, src, rec = st["layer"], st["src"], st["rec"]
            phase = st["phase"]
            start = phase == "start"
            run = phase in ("run", "reads")
            abort = run and lay.abort_at is not None and src.index >= lay.abort_at
            ctx.set(dut.start, int(start))
            if hasattr(dut, "begin"):
                ctx.set(dut.begin, int(start))
            ctx.set(dut.run, int(run))
            ctx.set(dut.abort, int(abort))
            ctx.set(dut.layer.as_value(),
                    layer_value(cfg, lay.desc(), taps=lay.kh * lay.kw) if start
                    else scramble(cfg, rng))
            if run:
                src.drive(ctx)
            else:
                ctx.set(dut.i_param.valid, 0)
            # reads: every address once, then at random; checked the next cycle
            k = st["issued"]
            ra = k if k < cfg.max_cotiles else rng.randrange(cfg.max_cotiles)
            la = cfg.max_cotiles - 1 - k if k < cfg.max_cotiles else rng.randrange(cfg.max_cotiles)
            st["issued"] += phase == "reads"
            ctx.set(dut.range_addr, ra)
            ctx.set(dut.lanes_addr, la)
            # -- outputs
            want_ready = int(run and not st["done"])
            got_ready = ctx.get(dut.i_param.ready)
            assert got_ready == want_ready, (f"{lay.name}: cycle {t}: i_param.ready {got_ready}, "
                                             f"expected {want_ready}")
            err, ready = ctx.get(dut.err), ctx.get(dut.ready)
            n = src.taken(ctx, t) if run else None
            if n is not None:
                b = lay.beats[n]
                want = expected_err(lay, n, b)
                assert err == want, (f"{lay.name}: beat {n} taken in cycle {t}: err "
                                     f"{ErrorFlag.describe(err)}, "
                                     f"expected {ErrorFlag.describe(want)}")
                if n < lay.cotiles and not abort:
                    mem[n] = ([tuple(x) for x in b["lanes"]], b["first"],
                              (b["first"] + b["count"] - 1) & cwm)
                if b["last"]:
                    st["done"] = True
                    rec["last_hs"] = t
            elif err:
                rec["pulses"].append((t, err))
            if run:
                if ready and rec["ready_at"] is None:
                    rec["ready_at"] = t
                if rec["ready_at"] is not None:
                    assert ready, f"{lay.name}: ready fell in cycle {t}"
                if rec["last_hs"] is None or t <= rec["last_hs"]:
                    assert not ready, f"{lay.name}: ready in cycle {t} before the last beat"
            if phase == "reads" and st["prev_read"] is not None:
                pra, pla = st["prev_read"]
                got_r = unpack(rlay, ctx.get(dut.range_data.as_value()))
                got_l = unpack(lanes_lay, ctx.get(dut.lanes_data.as_value()))
                if pra in mem:
                    assert (got_r["first"], got_r["last"]) == mem[pra][1:], (
                        f"{lay.name}: range[{pra}] read {got_r}, expected {mem[pra][1:]}")
                if pla in mem:
                    got = [(x["bias"], x["mult"], x["shift"]) for x in got_l]
                    assert got == mem[pla][0], (f"{lay.name}: lanes[{pla}] read {got}, "
                                                f"expected {mem[pla][0]}")
                st["nreads"] += 1
            st["prev_read"] = (ra, la)
            # -- next phase
            if start:
                st["phase"] = "run"
            elif phase == "run":
                st["wait"] = st["wait"] + 1 if st["done"] else 0
                if st["wait"] > READY_AFTER_LAST + 2:
                    st["phase"] = "reads"
                    st["prev_read"] = None
            elif phase == "reads" and st["nreads"] >= reads:
                st["phase"] = "gap"
            elif phase == "gap":
                rec["taken"] = src.index
                st["phase"] = "next"
            return False

        simulate(dut, step, 100000)
        assert len(recs) == len(layers), "not every layer ran"
    return recs


def check_total(lay, rec):
    """The dense total check over the beats taken: one BAD_PARAM pulse after the
    last beat, before ready."""
    taken = lay.beats[:min(rec["taken"], lay.cotiles)]
    mismatch = (not lay.depthwise and
                sum(b["count"] for b in taken) * lay.kh * lay.kw != lay.n_tiles)
    assert rec["ready_at"] == rec["last_hs"] + READY_AFTER_LAST, (lay.name, rec)
    pulses = rec["pulses"]
    if mismatch:
        assert [e for _t, e in pulses] == [ErrorFlag.BAD_PARAM], (lay.name, pulses)
        assert rec["last_hs"] < pulses[0][0] < rec["ready_at"], (lay.name, rec)
    else:
        assert pulses == [], (lay.name, pulses)


CFGS = {
    "1x1": HardwareConfig(rows=1, cols=1, act_pixels=1, max_width=8, max_cwords=4,
                          max_cotiles=4, weight_depth=64, out_fifo_depth=4),
    "2x2": HardwareConfig(rows=2, cols=2, act_pixels=2, max_width=8, max_cwords=8,
                          max_cotiles=8, weight_depth=256, out_fifo_depth=4),
    "4x4": HardwareConfig(rows=4, cols=4, act_pixels=4, max_width=16, max_cwords=2,
                          max_cotiles=4, weight_depth=64, out_fifo_depth=8),
    "3x2": HardwareConfig(rows=3, cols=2, act_pixels=1, max_width=8, max_cwords=4,
                          max_cotiles=2, weight_depth=96, out_fifo_depth=4),
}


@pytest.mark.parametrize("name", sorted(CFGS))
def test_memories_hold_what_was_sent(name):
    """Several layers of random valid beats (every mode, both mappings where there
    is one), read back in random order; a later layer with fewer tiles leaves the
    earlier layer's higher entries alone."""
    cfg = CFGS[name]
    seed = 200 + sorted(CFGS).index(name)
    with seeded(seed) as rng:
        layers = []
        for k in range(5):
            dw = cfg.depthwise_mode and k % 2 == 1
            cw = rng.randint(1, cfg.max_cwords)
            cot = cw if dw else rng.randint(1, cfg.max_cotiles)
            layers.append(Layer(cfg, rng, cotiles=min(cot, cfg.max_cotiles), cwords=cw,
                                kh=rng.randint(1, 3), kw=rng.randint(1, 3), depthwise=int(dw),
                                mode=[NONE, TFLITE, HALF_UP][k % 3], name=f"layer {k}"))
    recs = run_params(cfg, layers, seed)
    for lay, rec in zip(layers, recs):
        assert rec["taken"] == len(lay.beats)
        check_total(lay, rec)


def test_beat_count_saturates_past_cotiles():
    """300 beats for 3 tiles with max_cotiles = 4 (a 4-bit count would wrap 18
    times): beats 3..299 are PARAM_LONG, tiles 0..2 keep the first three beats and
    entry 3 keeps the previous layer's tile 3."""
    cfg = CFGS["1x1"]
    with seeded(210) as rng:
        first = Layer(cfg, rng, cotiles=4, cwords=4, name="4 tiles")
        long = Layer(cfg, rng, cotiles=3, cwords=4, n_beats=300, name="300 beats")
    recs = run_params(cfg, [first, long], seed=210, idle=0.05, reads=40)
    assert recs[1]["taken"] == 300
    check_total(long, recs[1])


def test_param_short_ends_the_stream():
    """``last`` on beat 1 of 4: PARAM_SHORT with it, nothing taken after it, ready
    rises (the control aborts on the error); the total check counts what came."""
    cfg = CFGS["2x2"]
    with seeded(211) as rng:
        short = Layer(cfg, rng, cotiles=4, cwords=3, n_beats=2, name="2 of 4")
        short.beats.append(dict(short.beats[0], last=1))      # offered, never taken
        full = Layer(cfg, rng, cotiles=2, cwords=3, name="then a full layer")
    recs = run_params(cfg, [short, full], seed=211)
    assert recs[0]["taken"] == 2
    check_total(short, recs[0])
    check_total(full, recs[1])


def _with(cfg, rng, mode, n_bad, edit, depthwise=0, cotiles=3, cwords=3, name=""):
    lay = Layer(cfg, rng, cotiles=cotiles, cwords=cwords, kh=2, kw=1, depthwise=depthwise,
                mode=mode, name=name)
    edit(lay.beats[n_bad], rng.randrange(cfg.cols))
    lay.n_tiles = lay.consistent_n_tiles()            # only the edited beat is wrong
    return lay


def _set_lane(mult=None, shift=None):
    def edit(b, c):
        x, m, s = b["lanes"][c]
        b["lanes"][c] = (x, m if mult is None else mult, s if shift is None else shift)
    return edit


def _set_range(first, count):
    def edit(b, _c):
        b["first"], b["count"] = first, count
    return edit


def test_bad_param_for_each_reason():
    """One layer per reason, the offending value on a random lane of beat 1 (or its
    range): BAD_PARAM with that beat's handshake, exactly when the model says so."""
    cfg = CFGS["2x2"]
    cases = [
        # (name, mode, depthwise, edit)
        ("empty range", TFLITE, 0, _set_range(1, 0)),
        ("range past cwords", TFLITE, 0, _set_range(2, 2)),
        ("range ending on cwords", TFLITE, 0, _set_range(1, 2)),
        ("depthwise ignores ranges", TFLITE, 1, _set_range(2, 0)),
        ("tflite shift -32", TFLITE, 0, _set_lane(shift=-32)),
        ("tflite shift 32", TFLITE, 0, _set_lane(shift=32)),
        ("tflite shift -31", TFLITE, 0, _set_lane(shift=-31)),
        ("tflite shift 31", TFLITE, 0, _set_lane(shift=31)),
        ("tflite multiplier 2**31 - 1", TFLITE, 0, _set_lane(mult=(1 << 31) - 1)),
        ("half_up shift -1", HALF_UP, 0, _set_lane(shift=-1)),
        ("half_up shift 48", HALF_UP, 0, _set_lane(shift=48)),
        ("half_up shift 63", HALF_UP, 0, _set_lane(shift=63)),
        ("half_up shift 0", HALF_UP, 0, _set_lane(shift=0)),
        ("half_up shift 47", HALF_UP, 0, _set_lane(shift=47)),
        ("half_up multiplier 2**16", HALF_UP, 0, _set_lane(mult=1 << 16)),
        ("half_up multiplier 2**16 - 1", HALF_UP, 0, _set_lane(mult=(1 << 16) - 1)),
        ("half_up multiplier 2**31 - 1", HALF_UP, 0, _set_lane(mult=(1 << 31) - 1)),
        ("no requantization: any shift", NONE, 0, _set_lane(shift=-64, mult=(1 << 31) - 1)),
        ("depthwise tflite shift 40", TFLITE, 1, _set_lane(shift=40)),
    ]
    with seeded(212) as rng:
        layers = [_with(cfg, rng, mode, 1, edit, depthwise=dw, cotiles=2 if dw else 3,
                        cwords=2 if dw else 3, name=name) for name, mode, dw, edit in cases]
        # the dense total: consistent ranges, n_tiles one too many / too few
        for delta in (1, -1):
            lay = Layer(cfg, rng, cotiles=3, cwords=3, kh=2, kw=2, name=f"n_tiles {delta:+d}")
            lay.n_tiles += delta
            layers.append(lay)
        dw = Layer(cfg, rng, cotiles=2, cwords=2, kh=3, kw=3, depthwise=1, n_tiles=5,
                   name="depthwise: no total check")
        layers.append(dw)
        # a bad lane on a beat past cotiles is only PARAM_LONG
        over = Layer(cfg, rng, cotiles=2, cwords=3, n_beats=3, name="bad beat past cotiles")
        _set_lane(shift=60)(over.beats[2], 1)
        layers.append(over)
    recs = run_params(cfg, layers, seed=212, reads=4)
    for lay, rec in zip(layers, recs):
        check_total(lay, rec)
    # the model decided each beat's flags; make sure the table exercised both outcomes
    flagged = [lay.name for lay in layers
               if any(expected_err(lay, n, b) & ErrorFlag.BAD_PARAM
                      for n, b in enumerate(lay.beats))]
    assert set(flagged) == {"empty range", "range past cwords", "tflite shift -32",
                            "tflite shift 32", "half_up shift -1", "half_up shift 48",
                            "half_up shift 63", "half_up multiplier 2**16",
                            "half_up multiplier 2**31 - 1",
                            "depthwise tflite shift 40"}, flagged


def test_abort_drains_without_writing():
    """With ``abort`` raised after the first beat the rest are still taken up to
    ``last`` but not written: entries 1.. keep the previous layer's beats."""
    cfg = CFGS["4x4"]
    with seeded(213) as rng:
        before = Layer(cfg, rng, cotiles=4, cwords=2, name="4 tiles")
        aborted = Layer(cfg, rng, cotiles=4, cwords=2, n_beats=6, abort_at=1, name="aborted")
    recs = run_params(cfg, [before, aborted], seed=213)
    assert recs[1]["taken"] == 6



def test_abort_after_a_rejected_descriptor_drains():
    cfg = CFGS["2x2"]
    dut = ParamStore(cfg)
    beat = beat_bits(cfg, dict(lanes=[(0, 0, 0)] * cfg.cols, first=0, count=1, last=1))
    layer = layer_value(cfg, dict(cotiles=1, cwords=1, n_tiles=1, requant=NONE), taps=1)
    assert drains_after_rejected_descriptor(dut, dut.i_param, layer, beat), \
        "i_param not drained during ABORT"
