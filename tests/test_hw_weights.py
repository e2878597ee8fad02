"""WeightStore and WeightLoader alone (amaranth.sim) against Python models of
their documented behaviour.

Covers
------
WeightStore:
- ``i_weight.ready`` is ``run`` until ``last``; ``WEIGHT_SHORT`` / ``WEIGHT_LONG``
  on the beat that carries them; beats past ``w_total`` (100 of them) and beats
  during ``abort`` are taken but not written;
- ``words_in`` counts a beat :data:`WORDS_IN_LATENCY` cycles after its handshake;
  every counted word reads back, in every column, ``READ_LATENCY`` cycles after its
  address (random reads every cycle while the stream is still arriving, and words
  of the previous layer);
- 1x1, 2x3, 4x4 arrays, random idle cycles on ``i_weight``.

WeightLoader (the store's read port emulated with ``READ_LATENCY``, the sequencer
by a model that takes each tile with a fold as soon as ``tile_ready`` allows, or
later at random):
- the tile sequence (``0..n_tiles-1`` once per pass) and the read addresses (row
  ``rows-1``'s word first, one per cycle);
- a load starts exactly when its words are in, the previous load is done and the
  previous tile was taken :data:`LOAD_AFTER_FOLD` cycles earlier or more (``words_in``
  growing slowly makes loads wait for words);
- ``w_shift``: row ``r`` shifts while words ``r..rows-1`` pass, ``READ_LATENCY``
  after the read; ``w_word`` is the read data;
- ``tile_ready`` from ``tile_ready_after(cfg)`` cycles after the load's start until
  the fold that takes it;
- end to end with the array's documented chain and latch timing: a fold's first
  element, ``FETCH_LATENCY`` after ``fold_start``, latches exactly the tile's words
  in every row, and folds can follow each other every ``max(rows, MIN_FOLD_PERIOD)``
  cycles;
- depthwise mode: ``rd_addr`` is ``tap_addr`` every cycle, no shifts, no tile.

"""

import pytest

from amaranth.lib import data
from amaranth import signed

from systolic_conv.hw.config import HardwareConfig
from systolic_conv.hw.weights import (WeightStore, WeightLoader, READ_LATENCY, LOAD_AFTER_FOLD,
                                      tile_ready_after)
from systolic_conv.hw.accumulator import MIN_FOLD_PERIOD
from systolic_conv.hw.fetch import FETCH_LATENCY
from systolic_conv.hw.layouts import weight_beat_layout, ErrorFlag, pack, unpack

from blockbench import (seeded, simulate, Source, layer_value, scramble,
                        drains_after_rejected_descriptor)

#: Cycles from a beat's handshake to ``words_in`` counting it (registered write,
#: then the count): the figure the sequencers' weight waits are built on.
WORDS_IN_LATENCY = 2


def word_layout(cfg):
    return data.ArrayLayout(signed(cfg.data_width), cfg.cols)


def rand_word(cfg, rng):
    h = 1 << (cfg.data_width - 1)
    return [rng.randint(-h, h - 1) for _ in range(cfg.cols)]


# -- WeightStore -----------------------------------------------------------------------

def run_store(cfg, layers, seed, idle=0.3):
    """``layers``: dicts total, words (list of words), abort_at (beats taken before
    ``abort`` rises) and extra (beats past ``last``-free end). Checks every cycle."""
    dut = WeightStore(cfg)
    wl = word_layout(cfg)
    blay = weight_beat_layout(cfg)
    mem = {}
    recs = []
    with seeded(seed) as rng:
        st = dict(k=-1, phase="next")
        pipe = []                                  # (cycle due, address)
        hs_log = []                                # cycles of written beats (this layer)

        def step(ctx, t):
            if st["phase"] == "next":
                st["k"] += 1
                if st["k"] >= len(layers):
                    return True
                lay = layers[st["k"]]
                beats = [pack(blay, {"data": w, "last": int(i == len(lay["words"]) - 1)})
                         for i, w in enumerate(lay["words"])]
                st.update(src=Source(dut.i_weight, beats, rng, idle), phase="start", done=False,
                          wait=0)
                hs_log.clear()
                recs.append(dict(errs={}, taken=0))
            lay, src, rec = layers[st["k"]], st["src"], recs[-1]
            phase = st["phase"]
            start, run = phase == "start", phase in ("run", "tail")
            abort = run and lay.get("abort_at") is not None and src.index >= lay["abort_at"]
            ctx.set(dut.start, int(start))
            if hasattr(dut, "begin"):
                ctx.set(dut.begin, int(start))
            ctx.set(dut.run, int(run))
            ctx.set(dut.abort, int(abort))
            ctx.set(dut.layer.as_value(), layer_value(cfg, {}, w_total=lay["total"]) if start
                    else scramble(cfg, rng))
            if run:
                src.drive(ctx)
            else:
                ctx.set(dut.i_weight.valid, 0)
            # words counted now: the written beats handshaken WORDS_IN_LATENCY or more ago
            counted = sum(1 for h in hs_log if h <= t - WORDS_IN_LATENCY)
            if start or phase == "next":
                counted = None
            if counted is not None and counted > 0 and rng.random() < 0.7:
                addr = rng.randrange(counted)             # a word of this layer
            elif mem and rng.random() < 0.5:
                addr = rng.choice(list(mem))              # maybe a previous layer's
            else:
                addr = rng.randrange(cfg.weight_depth)
            ctx.set(dut.rd_addr, addr)
            # -- outputs
            want_ready = int(run and not st["done"])
            assert ctx.get(dut.i_weight.ready) == want_ready, (f"layer {st['k']} cycle {t}: "
                                                              f"ready, expected {want_ready}")
            if counted is not None and not start:
                got = ctx.get(dut.words_in)
                assert got == counted, (f"layer {st['k']} cycle {t}: words_in {got}, "
                                        f"expected {counted}")
            while pipe and pipe[0][0] == t:
                _due, a, want = pipe.pop(0)
                got = unpack(wl, ctx.get(dut.rd_data.as_value()))
                if want is not None:
                    assert got == want, (f"layer {st['k']} cycle {t}: word {a} read {got}, "
                                         f"expected {want}")
            # the word a read presented now returns: what is in memory now (a word
            # counted by words_in is in; anything else is only checked if settled)
            settled = counted is not None and addr < counted
            pipe.append((t + READ_LATENCY, addr,
                         mem.get(addr) if (settled or (addr in mem and addr >= lay["total"]))
                         else None))
            err = ctx.get(dut.err)
            n = src.taken(ctx, t) if run else None
            if n is not None:
                want = 0
                if n >= lay["total"]:
                    want |= ErrorFlag.WEIGHT_LONG
                last = n == len(lay["words"]) - 1
                if last and n + 1 < lay["total"]:
                    want |= ErrorFlag.WEIGHT_SHORT
                assert err == want, (f"layer {st['k']} beat {n} cycle {t}: err "
                                     f"{ErrorFlag.describe(err)}, "
                                     f"expected {ErrorFlag.describe(want)}")
                if n < lay["total"] and not abort:
                    mem[n] = lay["words"][n]
                    hs_log.append(t)
                if last:
                    st["done"] = True
                rec["taken"] = src.index
            else:
                assert err == 0, f"layer {st['k']} cycle {t}: err {err} without a beat"
            if start:
                st["phase"] = "run"
            elif phase == "run":
                st["wait"] = st["wait"] + 1 if st["done"] else 0
                if st["wait"] > READ_LATENCY + 4:
                    st["phase"] = "gap"
            elif phase == "gap":
                st["phase"] = "next"
            return False

        simulate(dut, step, 100000)
        assert len(recs) == len(layers)
    return recs


STORE_CFGS = {
    "1x1": HardwareConfig(rows=1, cols=1, act_pixels=1, max_width=8, weight_depth=16),
    "2x3": HardwareConfig(rows=2, cols=3, act_pixels=1, max_width=8, weight_depth=32),
    "4x4": HardwareConfig(rows=4, cols=4, act_pixels=4, max_width=16, weight_depth=64),
}


@pytest.mark.parametrize("name", sorted(STORE_CFGS))
def test_store_words_in_and_reads(name):
    """Three layers: a full memory, a shorter one (the first layer's higher words
    stay), and one that fills part of it; reads at random every cycle."""
    cfg = STORE_CFGS[name]
    seed = 300 + sorted(STORE_CFGS).index(name)
    with seeded(seed) as rng:
        D = cfg.weight_depth
        layers = [dict(total=t, words=[rand_word(cfg, rng) for _ in range(t)])
                  for t in (D, D // 2 + 1, 3)]
    recs = run_store(cfg, layers, seed)
    assert [r["taken"] for r in recs] == [len(x["words"]) for x in layers]


def test_store_short_long_and_abort():
    """WEIGHT_SHORT on an early ``last``; 100 beats past ``w_total`` are
    WEIGHT_LONG and overwrite nothing; beats taken during ``abort`` are not
    written (words_in stops)."""
    cfg = STORE_CFGS["2x3"]
    with seeded(310) as rng:
        full = dict(total=20, words=[rand_word(cfg, rng) for _ in range(20)])
        short = dict(total=12, words=[rand_word(cfg, rng) for _ in range(5)])
        long = dict(total=6, words=[rand_word(cfg, rng) for _ in range(106)])
        aborted = dict(total=10, words=[rand_word(cfg, rng) for _ in range(10)], abort_at=4)
        check = dict(total=2, words=[rand_word(cfg, rng) for _ in range(2)])
    recs = run_store(cfg, [full, short, long, aborted, check], 310, idle=0.1)
    assert [r["taken"] for r in recs] == [20, 5, 106, 10, 2]


# -- WeightLoader ----------------------------------------------------------------------

class LoaderModel:
    """The documented loader: load ``n`` (tile ``n mod n_tiles``) starts in the first
    cycle with its words in, the previous load done (``rows`` cycles) and the previous
    tile taken ``LOAD_AFTER_FOLD`` cycles earlier or more."""

    def __init__(self, cfg, n_tiles, t_start):
        self.R, self.n_tiles = cfg.rows, n_tiles
        self.tra = tile_ready_after(cfg)
        self.loads = []            # [start cycle, tile, fold cycle or None]
        self.earliest = t_start + 1

    def base(self, n):
        return (n % self.n_tiles) * self.R

    def step(self, t, words_in):
        """Whether load ``len(self.loads)`` starts in cycle ``t``."""
        if self.loads and self.loads[-1][2] is None:
            return False                            # the previous tile not yet taken
        n = len(self.loads)
        if t >= self.earliest and words_in >= self.base(n) + self.R:
            self.loads.append([t, n % self.n_tiles, None])
            return True
        return False

    def fold(self, t):
        load = self.loads[-1]
        load[2] = t
        self.earliest = max(load[0] + self.R, t + LOAD_AFTER_FOLD)

    def rd_addr(self, t):
        for g, tile, _f in self.loads[-2:]:
            if g <= t < g + self.R:
                return tile * self.R + self.R - 1 - (t - g)
        return None

    def shift(self, t):
        for g, _tile, _f in self.loads[-3:]:
            k = t - READ_LATENCY - g
            if 0 <= k < self.R:
                return (1 << (k + 1)) - 1
        return 0

    def tile_ready(self, t):
        return int(any(g + self.tra <= t and (f is None or f >= t) for g, _n, f in self.loads[-2:]))


def run_loader(cfg, layers, seed, chain=True):
    """``layers``: dicts n_tiles, passes, words_at (cycle offsets from the start
    at which words_in grows by one), gap (max extra cycles before a fold takes a
    ready tile), depthwise. Checks every cycle; returns each layer's fold cycles."""
    dut = WeightLoader(cfg)
    R = cfg.rows
    wl = word_layout(cfg)
    recs = []
    with seeded(seed) as rng:
        st = dict(k=-1, phase="next")

        def begin(t):
            st["k"] += 1
            if st["k"] >= len(layers):
                return False
            lay = layers[st["k"]]
            mem = [rand_word(cfg, rng) for _ in range(max(1, lay.get("n_tiles", 1)) * R)]
            st.update(lay=lay, mem=mem, phase="start", t0=t,
                      model=LoaderModel(cfg, lay.get("n_tiles", 1), t),
                      reads={}, chain=[[0] * cfg.cols for _ in range(R)], latches=[],
                      folds=[], next_fold_ok=0, delay=0)
            recs.append(st["folds"])
            return True

        def step(ctx, t):
            if st["phase"] == "next" and not begin(t):
                return True
            lay, mem, model = st["lay"], st["mem"], st["model"]
            start = st["phase"] == "start"
            run = st["phase"] == "run"
            dwm = lay.get("depthwise", 0)
            words_in = sum(1 for c in lay.get("words_at", []) if st["t0"] + c <= t) if not dwm \
                else len(mem)
            ctx.set(dut.start, int(start))
            if hasattr(dut, "begin"):
                ctx.set(dut.begin, int(start))
            ctx.set(dut.run, int(run))
            ctx.set(dut.layer.as_value(),
                    layer_value(cfg, {"n_tiles": lay.get("n_tiles", 0), "depthwise": dwm})
                    if start else scramble(cfg, rng))
            ctx.set(dut.words_in, words_in)
            tap = rng.randrange(len(mem))
            ctx.set(dut.tap_addr, tap)
            # the store's read port: the word of the address presented READ_LATENCY ago,
            # junk if it was not counted in words_in then
            back = st["reads"].pop(t - READ_LATENCY, None)
            word = back if back is not None else rand_word(cfg, rng)
            ctx.set(dut.rd_data.as_value(), pack(wl, word))
            # -- the sequencer: take a ready tile after a random delay
            ready = ctx.get(dut.tile_ready)
            fold = 0
            if run and not dwm:
                assert ready == model.tile_ready(t), (f"layer {st['k']} cycle {t}: tile_ready "
                                                      f"{ready}, expected {model.tile_ready(t)}")
                more = len(st["folds"]) < lay["n_tiles"] * lay["passes"]
                if ready and more and t >= st["next_fold_ok"]:
                    if st["delay"] == 0:
                        fold = 1
                        st["delay"] = rng.randint(0, lay.get("gap", 0))
                    else:
                        st["delay"] -= 1
            ctx.set(dut.fold_start, fold)
            rd_addr, w_shift = ctx.get(dut.rd_addr), ctx.get(dut.w_shift)
            w_word = unpack(wl, ctx.get(dut.w_word.as_value()))
            assert w_word == word, f"cycle {t}: w_word is not rd_data"
            if dwm and run:
                assert rd_addr == tap and w_shift == 0 and not ready, (
                    f"layer {st['k']} cycle {t}: depthwise rd_addr {rd_addr} (tap {tap}), "
                    f"w_shift {w_shift}, tile_ready {ready}")
            elif run and not dwm:
                model.step(t, words_in)
                want_addr = model.rd_addr(t)
                if want_addr is not None:
                    assert rd_addr == want_addr, (
                        f"layer {st['k']} cycle {t}: rd_addr {rd_addr}, expected {want_addr} "
                        f"(loads {model.loads[-2:]})")
                assert w_shift == model.shift(t), (f"layer {st['k']} cycle {t}: w_shift "
                                                   f"{w_shift:b}, expected {model.shift(t):b}")
                if fold:
                    model.fold(t)
                    st["folds"].append(t)
                    n_tile = model.loads[-1][1]
                    st["next_fold_ok"] = t + 1
                    for r in range(R):
                        st["latches"].append((t + FETCH_LATENCY + r, r, mem[n_tile * R + r]))
            if not dwm and rd_addr < words_in:
                st["reads"][t] = mem[rd_addr]
            # the array's chain: latch (old value) and shift at the end of the cycle
            if chain:
                for due, r, want in [x for x in st["latches"] if x[0] == t]:
                    assert st["chain"][r] == want, (f"layer {st['k']} cycle {t}: row {r} latches "
                                                    f"{st['chain'][r]}, tile word {want}")
                st["latches"] = [x for x in st["latches"] if x[0] > t]
                ch = st["chain"]
                st["chain"] = [(w_word if r == 0 else ch[r - 1]) if w_shift >> r & 1 else ch[r]
                               for r in range(R)]
            # -- phases
            if start:
                st["phase"] = "run"
            elif run:
                if dwm:
                    finished = t - st["t0"] > 20
                else:
                    want_folds = lay["n_tiles"] * lay["passes"]
                    finished = len(st["folds"]) >= want_folds and not st["latches"]
                if finished:
                    st["phase"] = "gap"
            elif st["phase"] == "gap":
                st["phase"] = "next"
            return False

        simulate(dut, step, 50000)
        assert len(recs) == len(layers), "not every layer finished its folds"
    return recs


LOADER_CFGS = {
    "1x1": HardwareConfig(rows=1, cols=1, act_pixels=1, max_width=8, weight_depth=16),
    "2x2": HardwareConfig(rows=2, cols=2, act_pixels=2, max_width=8, weight_depth=32),
    "4x4": HardwareConfig(rows=4, cols=4, act_pixels=4, max_width=16, weight_depth=64),
    "5x3": HardwareConfig(rows=5, cols=3, act_pixels=1, max_width=8, weight_depth=40),
}


@pytest.mark.parametrize("name", sorted(LOADER_CFGS))
def test_loader_tiles_waits_and_chain(name):
    """Three layers: words arriving slowly (loads wait for them) with the sequencer
    taking tiles late at random; all words in from the start; one tile per pass.
    The model checks tile_ready, rd_addr and w_shift every cycle and the chain
    model every row's latched tile."""
    cfg = LOADER_CFGS[name]
    seed = 320 + sorted(LOADER_CFGS).index(name)
    R = cfg.rows
    with seeded(seed) as rng:
        n1 = cfg.weight_tiles
        slow = sorted(rng.sample(range(1, 6 * n1 * R), n1 * R))
        layers = [dict(n_tiles=n1, passes=2, words_at=slow, gap=3),
                  dict(n_tiles=3, passes=3, words_at=[0] * (3 * R), gap=2),
                  dict(n_tiles=1, passes=4, words_at=[0] * R, gap=1),
                  dict(depthwise=1, n_tiles=2)]
    run_loader(cfg, layers, seed)


@pytest.mark.parametrize("name", sorted(LOADER_CFGS))
def test_loader_fold_period(name):
    """All words in, tiles taken the cycle tile_ready rises: folds follow each
    other every max(rows, MIN_FOLD_PERIOD) cycles, the first tile_ready_after(cfg)
    cycles after the first load (the cycle after start)."""
    cfg = LOADER_CFGS[name]
    R = cfg.rows
    n = 3
    folds = run_loader(cfg, [dict(n_tiles=n, passes=3, words_at=[0] * (n * R), gap=0)],
                       seed=330)[0]
    period = max(R, MIN_FOLD_PERIOD)
    assert [b - a for a, b in zip(folds, folds[1:])] == [period] * (len(folds) - 1), folds
    assert tile_ready_after(cfg) == max(R, MIN_FOLD_PERIOD) - LOAD_AFTER_FOLD



def test_store_abort_after_a_rejected_descriptor_drains():
    cfg = STORE_CFGS["2x3"]
    dut = WeightStore(cfg)
    beat = pack(weight_beat_layout(cfg), {"data": [1] * cfg.cols, "last": 1})
    assert drains_after_rejected_descriptor(dut, dut.i_weight, layer_value(cfg, {}, w_total=1),
                                            beat), "i_weight not drained during ABORT"
