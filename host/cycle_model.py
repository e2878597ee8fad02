"""Analytic cycle model of the accelerator: exact cycles and counters, no simulation.

:func:`estimate` plans a layer with the planner
(:func:`systolic_conv.planner.plan_layer`) and computes, for every hardware
invocation of the plan, the cycle count the RTL measures (descriptor handshake to
final result handshake, inclusive) and every performance counter, under the
design conditions: inputs always valid, the result stream always ready. Nothing is
fitted: every term is read off the RTL (``hw/``) and every latency comes from the
hardware modules' own constants (:func:`constants`); the tests compare every
counter of every invocation with the Verilated RTL and require equality.

Timing of one invocation (cycle 0 = descriptor handshake; ``st`` = the first
``RUN`` cycle, ``CHECK_CYCLES + 1``):

* **Setup.** ``run`` rises in cycle ``st``; tile-parameter, weight and activation
  beats are accepted one per cycle each from then on. ``params_ready`` rises
  ``cotiles + 2`` cycles later (``done``, then the registered total check). Weight
  word ``n`` is readable (``words_in > n``) from ``st + 2 + n``.
* **Line buffer.** Activation beat ``k`` (row ``k // B``) is accepted one cycle
  after beat ``k - 1`` at the earliest, and only in a cycle whose ``lo`` (the first
  row the sequencer still needs) leaves room: ``row < lo + capacity``. A row is
  readable (``rows_in`` counts it) the cycle after its last beat. ``lo`` only
  changes at events of the sequencer, so the intake is a short list of runs of
  consecutive beats (:class:`_Intake`).
* **Dense mapping** (:func:`_dense`). Per pass: ``PASS`` (``stall_input`` while
  its rows are missing, then one ``setup`` cycle), then one element per cycle
  through ``n_tiles`` folds of ``T = g * W_out`` elements. The loader starts load
  ``n`` at ``s_n = max(s_{n-1} + R, I_{n-1} + LOAD_AFTER_FOLD, st + 1 + (tile+1)*R)``
  (``I``: a fold's first element) and ``tile_ready`` follows
  ``tile_ready_after(cfg)`` cycles later. Since ``tile_ready_after +
  LOAD_AFTER_FOLD >= R`` the first term never binds, and folds follow each other
  every ``P_f = max(T, tile_ready_after + LOAD_AFTER_FOLD)`` cycles: a pass is
  evaluated in closed form. Elements of a tile's last fold take a result credit:
  element ``e`` of them may issue only once the beat holding element
  ``e - D`` (``D = out_fifo_depth``) has left, which needs, with ``f`` vectors per
  beat, ``I_{m(e)} + L + 1 <= I_e``, ``m(e) = ((e - D) // f + 1) * f - 1``
  (``L`` = :func:`result_latency`). That can bind only when ``L + f > D``;
  then those folds are evaluated element by element.
* **Depthwise mapping** (:func:`_dw`). Groups (word, output row, block of ``R``
  pixels, kernel row, column phase) in order: the read cursor issues a group's
  ``ceil((R + taps - 1) / act_pixels)`` reads in consecutive cycles from the cycle
  the previous group's first tap is decided (and its input row is in); the tap
  cursor decides one tap per cycle, a group's first once its reads are done, the
  previous group's taps are done and its gates hold: a block's first group needs
  credits for the block's pixels, a word's first group its tap weights (seen a
  cycle after they arrive: a registered compare), a block's last group ends ``R`` cycles or more after the previous block. Results drain
  ``2 + DW_TAG_DELAY`` cycles after a block's last tap, one pixel per cycle.
  Credits can bind only when ``D < L_dw + 2R + f - 2``.
* **Drain.** From the last element / tap to the final result handshake.

Speed: a dense pass costs O(1) (O(tiles) with binding credits), a depthwise group
O(1); on top, exact fast-forward (:data:`FAST_FORWARD`) over periodic dense passes
and depthwise output rows and channel words: at each boundary the state that can
influence the future (relative to the boundary's cycle and row: loader, intake
runs, credit history, block spacing) is a key; when a key repeats while the
upcoming work is identical, whole periods are skipped by shifting the state. A
plan is estimated class by class (invocations that agree in every field the timing
depends on are computed once and multiplied).
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .hw.config import DEFAULT, HardwareConfig
from .figures import LayerFigures

__all__ = ["estimate", "estimate_plan", "Estimate", "Breakdown", "Suggestion",
           "InvocationTiming", "InvocationEstimate", "invocation_timing", "descriptor_timing",
           "invocation_counters", "result_latency", "constants", "Constants", "COUNTER_NAMES",
           "COMPONENTS", "measure_rtl", "clear_caches", "pack_of"]

#: The hardware counters the model predicts (``hw.layouts.COUNTERS``).
COUNTER_NAMES = ("cycles", "busy", "setup", "stall_input", "stall_weight",
                 "stall_output", "fill", "drain")

#: Components of the utilization breakdown, in cycles; they sum to ``cycles``.
#: The first four split the ``busy`` cycles by what the R x C PEs did.
COMPONENTS = {
    "useful": "MACs / (rows * cols): the PEs' useful work",
    "edge_cols": "array-edge waste, columns: output channels (depthwise: channels) "
                 "not a multiple of cols",
    "edge_rows": "array-edge waste, rows: reduction not a multiple of rows (input "
                 "channels padded to words; depthwise: output pixels not a multiple of rows)",
    "group_underfill": "zero weights of other groups in block-diagonal tiles",
    "setup": "descriptor checks, tile parameters, one cycle per dense pass",
    "stall_input": "waiting for rows in the line buffer",
    "stall_weight": "waiting for a weight tile (dense) or a word's tap weights (depthwise)",
    "stall_output": "waiting for result-queue credits",
    "fill": "depthwise: row-vector reads and block spacing not hidden behind taps",
    "drain": "the last results' latency through array, accumulator and requantizer",
}

_NEG = -(1 << 62)

#: Exact fast-forward over periodic passes, output rows and channel words, and the
#: closed form of dense passes (False: evaluate every fold and every group; the
#: same numbers, slower; the tests use it to check the fast paths).
FAST_FORWARD = True

#: Periods skipped by the fast-forward so far, by kind (for tests and benchmarks).
SKIPS = {"pass": 0, "row": 0, "word": 0}


def clear_caches():
    """Forget every memoized per-layer result of the model and the planner.

    For timing cold estimates; what depends on the hardware configuration only
    (:func:`constants`, the beat sizes) stays cached.
    """
    from . import planner
    for f in (_counters_cached, _dense_folds, _phase_words, planner._axis_segments,
              planner.word_ranges, planner._co_chunks_rel, planner._reduction_per,
              planner._dw_max_out):
        f.cache_clear()


# ----------------------------------------------------------------------------- constants

class Constants(NamedTuple):
    """What the model needs of a hardware configuration, read off ``hw/``."""
    rows: int
    act_pixels: int
    fifo: int              # out_fifo_depth: result credits, in vectors
    lb_rows: int           # dense line-buffer capacity, rows
    ring_rows: int         # depthwise line-buffer capacity, rows of one word
    start: int             # first RUN cycle (every intake block accepts from here)
    param_wait: int        # cycles from the last parameter beat's cycle + 1 to params_ready
    word_lag: int          # weight word n is readable from start + word_lag + n
    load_after_fold: int   # LOAD_AFTER_FOLD
    tile_ready: int        # tile_ready_after(cfg)
    latency: int           # dense: issue -> result handshake
    dw_latency: int        # depthwise: a block's last tap -> its pixel 0's handshake


@lru_cache(maxsize=None)
def constants(cfg: HardwareConfig) -> Constants:
    """The model's view of ``cfg``; every latency imported from the hardware modules.

    Structural counts that are not named constants in ``hw/`` are derived here from
    the registers they count (see the comments).
    """
    from .hw.accel import result_latency as hw_latency
    from .hw.control import CHECK_CYCLES
    from .hw.weights import LOAD_AFTER_FOLD, tile_ready_after
    from .hw.accumulator import DW_TAG_DELAY
    from .hw.fetch import FETCH_LATENCY
    from .hw.array import DENSE_LATENCY
    lat = hw_latency(cfg)
    tra = tile_ready_after(cfg)
    if tra + LOAD_AFTER_FOLD < cfg.rows:
        # the closed forms below rely on the loader's R-cycle read never binding
        raise NotImplementedError(f"tile_ready_after + LOAD_AFTER_FOLD < rows={cfg.rows}")
    # the tail common to both mappings: accumulator output -> requantizer -> packer -> queue
    tail = lat - (FETCH_LATENCY + cfg.rows + DENSE_LATENCY)
    return Constants(
        rows=cfg.rows, act_pixels=cfg.act_pixels, fifo=cfg.out_fifo_depth,
        lb_rows=cfg.lb_rows, ring_rows=cfg.dw_ring_rows,
        # cycle 0 is the handshake (IDLE), then CHECK_CYCLES check states
        start=CHECK_CYCLES + 1,
        # ParamStore: `done` registered after the last beat, `done_d` one cycle
        # later, `checked` (= ready) one more: ready in cycle start + cotiles + 2
        param_wait=2,
        # WeightStore: the write is registered (w_en), then `words_in` is
        # registered from it: beat k (cycle start + k) readable from start + k + 2
        word_lag=1,
        load_after_fold=LOAD_AFTER_FOLD, tile_ready=tra, latency=lat,
        # dw_seq: `drain` is loaded the cycle after a block's last tap and the tag
        # register the cycle after that; the accumulator reads the capture
        # DW_TAG_DELAY cycles after the tag; then the same tail as a dense result
        dw_latency=2 + DW_TAG_DELAY + tail)


def result_latency(cfg: HardwareConfig) -> int:
    """Cycles from a dense element's issue to its result handshake (output always ready):
    :func:`systolic_conv.hw.accel.result_latency`."""
    return constants(cfg).latency


def pack_of(cfg: HardwareConfig, requant=None, out_bits=8) -> int:
    """Result vectors per beat: ``requant`` a mode name, a :class:`~.contract.Requant`
    or None (then ``out_bits`` is ignored; a Requant gives its own ``out_width``)."""
    from .hw.layouts import pack_factor, RequantMode
    if requant is None:
        return 1
    if not isinstance(requant, str):
        out_bits = int(requant.out_width)
        requant = requant.mode
    if requant not in ("tflite", "half_up"):
        raise ValueError(f"requant={requant!r} must be 'tflite', 'half_up', a Requant or None")
    mode = RequantMode.TFLITE if requant == "tflite" else RequantMode.HALF_UP
    return pack_factor(cfg, mode, out_bits)


# ----------------------------------------------------------------------------- timing

class InvocationTiming(NamedTuple):
    """The descriptor fields of one invocation that determine its timing.

    Fields a mapping does not use are zero (more invocations share a timing).
    """
    depthwise: bool
    folds: tuple           # dense: folds (weight tiles) of each output-channel tile
    cotiles: int           # output-channel tiles (depthwise: channel words)
    height: int            # rows streamed (per word, depthwise)
    row_beats: int         # activation beats per streamed row
    out_height: int
    out_width: int
    pass_rows: int         # dense: G
    stride_h: int
    kh: int
    dil_h: int
    pad_top: int
    kw: int                # depthwise
    stride_w: int          # depthwise
    pack: int              # result vectors per beat

    @property
    def n_tiles(self):
        """Dense weight tiles per pass (the descriptor's ``n_tiles``)."""
        return sum(self.folds)

    @property
    def span_h(self):
        return (self.kh - 1) * self.dil_h + 1


def invocation_timing(spec, cfg: HardwareConfig, requant=None) -> InvocationTiming:
    """The :class:`InvocationTiming` of a planner :class:`~.planner.TileSpec`.

    ``requant`` (None, a mode name or a :class:`~.contract.Requant`) sets the result
    packing when the hardware requantizes (the only reduction part and at most 16
    output bits), as :func:`~.driver.run_plan` does.
    """
    bits = _requant_bits(requant)
    pack = pack_of(cfg, requant, bits) if (bits is not None and spec.complete
                                            and bits <= 16) else 1
    return _timing(cfg, spec.ci[1] - spec.ci[0], spec.co[1] - spec.co[0], spec.groups,
                   spec.cog, spec.co_phase, spec.depthwise, spec.rows, spec.cols,
                   int(spec.pass_rows), pack)


def descriptor_timing(desc, cw_counts, cfg: HardwareConfig) -> InvocationTiming:
    """The :class:`InvocationTiming` of a descriptor (a dict of
    :func:`~.hw.layouts.descriptor_layout` fields, e.g. ``Invocation.desc``) and the
    tile parameters' word counts ``cw_counts`` (one per output-channel tile)."""
    from .hw.layouts import pack_factor
    pack = pack_factor(cfg, desc["requant"], desc["out_bits"])
    P = cfg.act_pixels
    if desc["depthwise"]:
        return InvocationTiming(True, (), desc["cotiles"], desc["height"],
                                desc["stride_w"] * desc["phase_words"], desc["out_height"],
                                desc["out_width"], 0, desc["stride_h"], desc["kh"], desc["dil_h"],
                                desc["pad_top"], desc["kw"], desc["stride_w"], pack)
    taps = desc["kh"] * desc["kw"]
    return InvocationTiming(False, tuple(taps * int(n) for n in cw_counts), desc["cotiles"],
                            desc["height"], -(-desc["width"] // P) * desc["cwords"],
                            desc["out_height"], desc["out_width"], desc["pass_rows"],
                            desc["stride_h"], desc["kh"], desc["dil_h"], desc["pad_top"], 0, 0,
                            pack)


def _timing(cfg, cin, cout, groups, cog, co_phase, depthwise, r, c, pass_rows, pack):
    """The timing of an invocation from its channel fields and its two segments."""
    R, P = cfg.rows, cfg.act_pixels
    cwords = -(-cin // R)
    if depthwise:
        pw = _phase_words(cfg, len(c.out_idx), c.pad_lo + len(c.src) + c.pad_hi, c.stride)
        return InvocationTiming(True, (), cwords, len(r.src), c.stride * pw, len(r.out_idx),
                                len(c.out_idx), 0, r.stride, r.k, r.dil, r.pad_lo, c.k,
                                c.stride, pack)
    folds = _dense_folds(cin, cout, groups, R, cfg.cols, cog, co_phase, r.k * c.k)
    return InvocationTiming(False, folds, len(folds), len(r.src), -(-len(c.src) // P) * cwords,
                            len(r.out_idx), len(c.out_idx), pass_rows, r.stride, r.k, r.dil,
                            r.pad_lo, 0, 0, pack)


@lru_cache(maxsize=4096)
def _dense_folds(cin, cout, groups, R, C, cog, co_phase, taps):
    from .planner import word_ranges
    return tuple(taps * int(n) for _, n in word_ranges(cin, cout, groups, R, C, cog=cog,
                                                        co_phase=co_phase))


@lru_cache(maxsize=4096)
def _phase_words(cfg, out_width, padded_width, stride):
    from .streams import dw_phase_words
    return dw_phase_words(cfg, out_width, padded_width, stride)


def invocation_counters(t: InvocationTiming, cfg: HardwareConfig) -> dict:
    """Exact hardware counters (and ``cycles``) of one invocation."""
    k = constants(cfg)
    if not FAST_FORWARD:
        return _counters(t, k, False)
    return dict(_counters_cached(t, k))


@lru_cache(maxsize=1 << 16)
def _counters_cached(t, k):
    return _counters(t, k, True)


def _counters(t, k, fast):
    out = (_dw if t.depthwise else _dense)(t, k, fast)
    assert sum(out[n] for n in COUNTER_NAMES[1:]) == out["cycles"], (t, out)
    return out


# ----------------------------------------------------------------------------- intake

class _Intake:
    """The line buffer's intake: when each activation row becomes readable.

    Beat ``k`` belongs to row ``k // beats``; it is accepted one cycle after beat
    ``k - 1`` at the earliest, and only in a cycle in which its row is below
    ``lo + cap``. ``lo`` changes at sequencer events (:meth:`release`, in cycle
    order), so the accepted beats form runs of consecutive cycles: run ``i`` starts
    with beat ``rk[i]`` in cycle ``rt[i]``; ``nb`` beats are scheduled, the last
    accepted in cycle ``ns - 1``.
    """

    __slots__ = ("cap", "beats", "limit", "rk", "rt", "nb", "ns")

    def __init__(self, cap, rows, beats, t0, lo):
        self.cap, self.beats, self.limit = cap, beats, rows * beats
        self.rk, self.rt = [], []
        self.nb, self.ns = 0, t0
        self.release(lo, t0)

    def release(self, lo, x):
        """From cycle ``x`` on, ``lo`` is the first row the sequencer needs."""
        nb = min((lo + self.cap) * self.beats, self.limit)
        if nb > self.nb:
            ns = self.ns
            if x > ns or not self.rk:
                ns = max(x, ns)
                self.rk.append(self.nb)
                self.rt.append(ns)
            self.ns = ns + nb - self.nb
            self.nb = nb
        elif nb < self.nb and x < self.ns:
            # lo went down: beats not yet accepted whose row is outside wait again
            k = self.rk[-1] + x - self.rt[-1]
            keep = k if k > nb else nb
            if keep < self.nb:
                self.ns = self.rt[-1] + keep - self.rk[-1]
                self.nb = keep

    def release_all(self, events):
        """:meth:`release` for each ``(lo, x)`` of ``events`` (in cycle order)."""
        cap, beats, limit = self.cap, self.beats, self.limit
        rk, rt = self.rk, self.rt
        nb, ns = self.nb, self.ns
        for lo, x in events:
            new = (lo + cap) * beats
            if new > limit:
                new = limit
            if new > nb:
                if x > ns:
                    rk.append(nb)
                    rt.append(x)
                    ns = x
                ns += new - nb
                nb = new
            elif new < nb and x < ns:
                self.nb, self.ns = nb, ns
                self.release(lo, x)
                nb, ns = self.nb, self.ns
        self.nb, self.ns = nb, ns

    def ready(self, row):
        """First cycle in which ``rows_in > row``."""
        k = (row + 1) * self.beats - 1
        i = bisect.bisect_right(self.rk, k) - 1
        return self.rt[i] + k - self.rk[i] + 1

    def key(self, x0, r0):
        """The schedule of rows ``>= r0`` as seen from cycle ``x0`` (readiness before
        ``x0`` is the same as in ``x0``), relative to both."""
        k0 = r0 * self.beats
        rk, rt = self.rk, self.rt
        n = len(rk)
        parts = []
        for i in range(max(0, bisect.bisect_right(rk, k0) - 1), n):
            a = rk[i] if rk[i] > k0 else k0
            end = rk[i + 1] if i + 1 < n else self.nb
            ta = rt[i] + a - rk[i]
            if a >= end or ta + end - a <= x0:
                continue
            if ta < x0:
                a += x0 - ta
                ta = x0
            parts.append((a - k0, ta - x0))
        full = self.nb == self.limit
        return (tuple(parts), None if full else self.nb - k0,
                self.ns - x0 if self.ns > x0 else 0)

    def shift(self, dt, drows):
        """Advance the schedule by ``drows`` rows and ``dt`` cycles (a period)."""
        db = drows * self.beats
        full = self.nb == self.limit
        self.rk = [k + db for k in self.rk]
        self.rt = [t + dt for t in self.rt]
        if full:
            self.ns = self.rt[-1] + self.limit - self.rk[-1]
        else:
            self.nb += db
            self.ns += dt
            assert self.nb <= self.limit

    def prune(self, r0):
        """Forget runs that end before row ``r0`` (never asked for again)."""
        i = bisect.bisect_right(self.rk, r0 * self.beats) - 1
        if i > 0:
            del self.rk[:i]
            del self.rt[:i]


# ----------------------------------------------------------------------------- dense

def _dense(t, k, fast):
    """Counters of a dense invocation (see the module docstring)."""
    return _DenseRun(t, k, fast).run()


class _DenseRun:
    """One dense invocation, pass by pass, with fast-forward over periodic passes.

    At a pass's first ``PASS`` cycle the key is what can still influence the
    future, relative to that cycle and to the pass's first row: the previous fold's
    first element (the loader's next start), the intake's runs and the recent
    credit-taking elements (when credits can bind).
    """

    def __init__(self, t, k, fast):
        self.t, self.k, self.fast = t, k, fast
        G, sh = t.pass_rows, t.stride_h
        self.pspan = (G - 1) * sh + t.span_h
        self.step = G * sh
        self.F = sum(t.folds)
        self.enter = k.start + len(t.folds) + k.param_wait + 1     # the first PASS cycle
        # setup, stall_input, stall_weight, stall_output, busy
        self.c = [self.enter, 0, 0, 0, 0]
        self.cr = _Credits(k.fifo, t.pack, k.latency) if k.latency + t.pack > k.fifo else None
        self.intake = _Intake(k.lb_rows, t.height, t.row_beats, k.start, 0)
        # a tile of one or two elements in some pass (its last element may wait for the
        # next tile's word range): every pass fold by fold
        last_rows = (t.out_height - 1) % G + 1 if t.out_height else G
        self.small_tiles = min(t.folds) * min(G, last_rows) * t.out_width < 3
        self.y, self.left, self.p = -t.pad_top, t.out_height, 0
        self.I = self.s = self.e = None     # the last fold's first element, load start; last element

    def run(self):
        k = self.k
        seen = {}
        while self.left > 0:
            if self.fast and self._skip(seen):
                continue
            self._pass()
        return {"cycles": self.e + k.latency + 1, "busy": self.c[4], "setup": self.c[0],
                "stall_input": self.c[1], "stall_weight": self.c[2], "stall_output": self.c[3],
                "fill": 0, "drain": k.latency}

    def _pass(self):
        t, k, c, intake = self.t, self.k, self.c, self.intake
        y, enter = self.y, self.enter
        g = min(t.pass_rows, self.left)
        # the pass waits in PASS for its rows (lo = its first row from this cycle on)
        intake.release(max(y, 0), enter)
        need = min(y + self.pspan, t.height)
        ready = enter if need <= 0 else max(enter, intake.ready(need - 1))
        c[1] += ready - enter
        c[0] += 1
        T = g * t.out_width
        if self.fast and self.cr is None and not self.small_tiles:
            self.I, self.e = _dense_pass(c, ready + 1, self.I, self.F, T, k)
        else:
            self.I, self.s, self.e = _dense_folds_exact(c, ready + 1, self.I, self.s, t.folds,
                                                        T, k, self.cr, enter)
        c[4] += self.F * T
        self.enter = self.e + 1
        intake.prune(max(y, 0))
        self.y += self.step
        self.left -= g
        self.p += 1

    def _sig(self, j):
        """The regime of the pass ``j`` passes from now: equal for passes whose
        evaluation is the same up to a shift of rows and cycles (full, inside the
        image, the intake releasing ``lb_rows`` ahead (1) or done releasing (2)); None
        for a pass that is not."""
        t = self.t
        p, y, left = self.p + j, self.y + j * self.step, self.left - j * t.pass_rows
        if p < 1 or left < t.pass_rows or y < 0 or y + self.pspan > t.height:
            return None
        if y + self.k.lb_rows <= t.height:
            return 1
        if self.intake.nb == self.intake.limit:
            return 2
        return None

    def _skip(self, seen):
        """Skip whole periods of passes once the key repeats; True if it did."""
        sig = self._sig(0)
        if sig is None:
            seen.clear()
            return False
        enter, cr = self.enter, self.cr
        key = (sig, self.I - enter, self.intake.key(enter, self.y),
               cr.key(enter) if cr else None)
        hit = seen.get(key)
        if hit is None:
            seen[key] = (self.p, enter, list(self.c), cr.count if cr else 0)
            return False
        q, enter_q, cq, count_q = hit
        per = self.p - q
        n = 0
        while self._sig((n + 1) * per - 1) == sig:
            n += 1
        if n == 0:
            return False
        dt = n * (enter - enter_q)
        for i in range(5):
            self.c[i] += n * (self.c[i] - cq[i])
        self.enter += dt
        self.e = self.enter - 1
        self.I += dt
        if self.s is not None:
            self.s += dt
        self.intake.shift(dt, n * per * self.step)
        if cr:
            cr.shift(dt, n * (cr.count - count_q))
        self.y += n * per * self.step
        self.left -= n * per * self.t.pass_rows
        self.p += n * per
        SKIPS["pass"] += n
        seen.clear()
        return True


def _dense_pass(c, lower, I_prev, F, T, k):
    """All ``F`` folds of a pass without binding credits, in closed form. Returns
    (first element of the last fold, last element)."""
    s = k.start + k.word_lag + k.rows       # the first tile's words (first pass only)
    if I_prev is not None and I_prev + k.load_after_fold > s:
        s = I_prev + k.load_after_fold
    I0 = s + k.tile_ready
    if lower > I0:
        I0 = lower
    Pf = k.tile_ready + k.load_after_fold
    if T > Pf:
        Pf = T
    c[2] += I0 - lower + (F - 1) * (Pf - T)
    last = I0 + (F - 1) * Pf
    return last, last + T - 1


def _dense_folds_exact(c, lower, I_prev, s_prev, folds, T, k, cr, enter):
    """A pass's folds one by one (credit folds element by element when credits can
    bind). A tile's last element issues no earlier than two cycles after the tile
    began (the next tile's word range: ``enter``, the pass's first PASS cycle, for its
    first tile; the cycle after the previous tile's last element otherwise), which
    binds on tiles of one or two elements only. Returns (first element of the last
    fold, its load start, last element)."""
    R, LAF, tra = k.rows, k.load_after_fold, k.tile_ready
    i = 0
    e = None
    began = enter
    for nf in folds:
        for fi in range(nf):
            s = k.start + k.word_lag + (i + 1) * R
            if I_prev is not None:
                s = max(s, s_prev + R, I_prev + LAF)
            tr = s + tra
            last_min = began + 2 if fi == nf - 1 else None
            if fi == nf - 1 and cr is not None:
                I, e, so, sw = cr.fold(max(lower, tr), T, last_min)
                c[2] += max(0, tr - lower) + sw
                c[3] += so
            else:
                I = max(lower, tr)
                c[2] += I - lower
                e = I + T - 1
                if last_min is not None and e < last_min:
                    c[2] += last_min - e
                    e = last_min
            s_prev, I_prev = s, I
            lower = e + 1
            i += 1
        began = e + 1
    return I_prev, s_prev, e


class _Credits:
    """Result credits of the dense mapping, element by element: the issue cycles of
    the credit-taking elements (the recent ones) and their count."""

    __slots__ = ("D", "f", "lat", "times", "count")

    def __init__(self, D, f, lat):
        self.D, self.f, self.lat = D, f, lat
        self.times = []          # issue cycles of elements count - len(times) .. count - 1
        self.count = 0

    def fold(self, x, T, last_min=None):
        """Issue ``T`` credit-taking elements from cycle ``x`` on, the last one no
        earlier than ``last_min``; returns (first issue, last issue, cycles waited for
        credits, cycles waited for ``last_min``)."""
        D, f, lat = self.D, self.f, self.lat
        times = self.times
        base = self.count - len(times)
        e = self.count
        first = None
        waited = waited_w = 0
        prev = x - 1
        for i in range(T):
            t = t0 = prev + 1
            if e >= D:
                b = times[((e - D) // f + 1) * f - 1 - base] + lat + 1
                if b > t:
                    t = b
            if last_min is not None and i == T - 1 and last_min > t0:
                waited_w += last_min - t0
                t = max(t, last_min)
            waited += t - t0
            if first is None:
                first = t
            times.append(t)
            prev = t
            e += 1
        self.count = e
        keep = D + f
        if len(times) > 4 * keep:
            del times[:len(times) - keep]
        return first, prev, waited - waited_w, waited_w

    def key(self, x0):
        """The credit state as seen from cycle ``x0``: the phase of the next element in
        its beat and the recent issue cycles that can still bind, relative."""
        lo = -(self.lat + 1)
        n = self.D + self.f
        return (self.count % self.f,
                tuple(max(t - x0, lo) for t in self.times[-n:]))

    def shift(self, dt, dcount):
        self.times = [t + dt for t in self.times[-(self.D + self.f):]]
        self.count += dcount


# ----------------------------------------------------------------------------- depthwise

def _dw(t, k, fast):
    """Counters of a depthwise invocation (see the module docstring)."""
    return _DwRun(t, k, fast).run()


class _DwRun:
    """One depthwise invocation, group by group, with fast-forward over periodic
    output rows and channel words.

    At a row or word boundary (cycle ``x0``: the previous group's first tap) the key
    is what can still influence the future, relative to ``x0``: the previous block's
    last tap, the recent credits (when they can bind) and either the intake's runs
    or, when every row the rest of the word reads is already scheduled to be ready
    before any group could read it (:meth:`_free`), nothing of the intake at all.
    In the second case skipped rows and words replay their row releases
    (``lo`` events) into the intake, so it stays exact for later words.
    """

    def __init__(self, t, k, fast):
        self.t, self.k, self.fast = t, k, fast
        R, P = k.rows, k.act_pixels
        self.nph = nph = min(t.stride_w, t.kw)
        taps_p = [-(-(t.kw - p) // t.stride_w) for p in range(nph)]
        reads_p = [-(-(R + tp - 1) // P) for tp in taps_p]
        # the groups of one block: (kernel row, reads, taps, first of block, last of block)
        self.pattern = [(ky, reads_p[p], taps_p[p], ky == 0 and p == 0,
                         ky == t.kh - 1 and p == nph - 1)
                        for ky in range(t.kh) for p in range(nph)]
        self.nblk = -(-t.out_width // R)
        self.last_rows = t.out_width - (self.nblk - 1) * R
        self.taps = t.kh * t.kw
        # no output row takes fewer cycles: a group's first tap comes its reads and the
        # previous group's taps after the previous group's first, and a block's last
        # tap rows cycles or more after the previous block's
        per_block = sum(max(n, self.pattern[g - 1][2])
                        for g, (_ky, n, _tp, _f, _l) in enumerate(self.pattern))
        self.row_min = self.nblk * max(per_block, R)
        self.pready = k.start + t.cotiles + k.param_wait
        self.total = t.cotiles * t.height
        self.vtot = t.cotiles * t.out_height * t.out_width
        self.credit = k.fifo < k.dw_latency + 2 * R + t.pack - 2
        # state
        self.intake = _Intake(k.ring_rows, self.total, t.row_beats, k.start,
                              max(-t.pad_top, 0))
        self.c = [0] * 6     # setup, stall_input, stall_weight, stall_output, busy, fill
        self.S = None        # the previous group's first tap
        self.tp = 0          # its taps
        self.E = _NEG        # the previous block's last tap
        self.V = 0           # result vectors of the blocks so far
        self.blocks = []     # recent blocks: (first vector, pixels, last tap)
        self.rel = []        # the current word's row releases: (lo, cycle)
        self.rel_x = {}      # release cycle of each evaluated row of the current word
        self.free_w = None   # the current word reads no row late from here on
        self.words = {}      # per word of the current regular stretch: (x0, counters, rel)

    # ---------------------------------------------------------------- the nest
    def run(self):
        t, k = self.t, self.k
        wseen = {}
        w = 0
        while w < t.cotiles:
            if self.fast and self._word_ff(w, wseen):
                w = self._skip_to
                continue
            self.rel, self.rel_x, self.free_w = [], {}, None
            self.free_retry, self.free_gap = 0, 1
            self.words[w] = self._snapshot()
            rseen = {}
            oy = 0
            while oy < t.out_height:
                if self.fast and self._row_ff(w, oy, rseen):
                    oy = self._skip_to
                    continue
                self._row(w, oy)
                oy += 1
            w += 1
        E = self.E
        F = E + k.dw_latency + self.last_rows - 1
        c = self.c
        return {"cycles": F + 1, "busy": c[4], "setup": c[0], "stall_input": c[1],
                "stall_weight": c[2], "stall_output": c[3], "fill": c[5], "drain": F - E}

    def _row(self, w, oy):
        """Every group of output row ``oy`` of word ``w``."""
        t, k = self.t, self.k
        R, H, dh = k.rows, t.height, t.dil_h
        y_row = oy * t.stride_h - t.pad_top
        gbase = w * H
        intake = self.intake
        rowt = [intake.ready(gbase + iy) if 0 <= iy < H else _NEG
                for iy in range(y_row, y_row + t.kh * dh, dh)]
        c = self.c
        S, tp_prev, E = self.S, self.tp, self.E
        pready = self.pready
        nblk = self.nblk
        for b in range(nblk):
            rows_b = self.last_rows if b == nblk - 1 else R
            for ky, n, tp, firstg, lastg in self.pattern:
                if S is None:                       # the invocation's first group
                    bg, a = k.start, 0
                else:
                    bg, a = S, S + tp_prev
                rt = rowt[ky]
                RS = bg if bg > rt else rt
                L = RS + n - 1
                Sn = L + 1 if L + 1 > a else a
                if Sn < pready:
                    Sn = pready
                cred = wt = _NEG
                if firstg:
                    if self.credit:
                        cred = self._credit_ok(rows_b)
                        if cred > Sn:
                            Sn = cred
                    if b == 0 and oy == 0:
                        wt = k.start + k.word_lag + (w + 1) * self.taps + 1
                        if wt > Sn:
                            Sn = wt
                if lastg:
                    sp = E + R - tp + 1
                    if sp > Sn:
                        Sn = sp
                if Sn > a:
                    self._idle(a, Sn, RS, L, cred, wt)
                c[4] += tp
                S, tp_prev = Sn, tp
                if lastg:
                    E = Sn + tp - 1
                    if self.credit:
                        self.blocks.append((self.V, rows_b, E))
                        if len(self.blocks) > 2 * k.fifo + 16:
                            del self.blocks[:k.fifo]
                    self.V += rows_b
        self.S, self.tp, self.E = S, tp_prev, E
        # the read cursor moved on after the row's last read: lo follows from L + 1
        self.rel_x[oy] = L + 1
        self._release(w, oy, L + 1)

    def _lo_after(self, w, oy):
        """``lo`` once the read cursor has left row ``oy`` of word ``w`` (the intake
        takes every row once everything is read)."""
        t = self.t
        if oy < t.out_height - 1:
            return w * t.height + max((oy + 1) * t.stride_h - t.pad_top, 0)
        if w < t.cotiles - 1:
            return (w + 1) * t.height + max(-t.pad_top, 0)
        return self.total

    def _release(self, w, oy, x):
        """The read cursor leaves row ``oy`` of word ``w`` in cycle ``x`` (recorded for
        replays)."""
        lo = self._lo_after(w, oy)
        self.rel.append((lo, x))
        self.intake.release(lo, x)
        self.intake.prune(lo)

    def _idle(self, a, S, RS, L, cred, wt):
        """Categories of the cycles ``[a, S)`` without a tap (dw_seq's priority)."""
        c = self.c
        x = a
        if x < self.pready:
            y = S if S < self.pready else self.pready
            c[0] += y - x
            x = y
        for i, end in ((1, RS), (5, L + 1), (3, cred), (2, wt)):
            if end > x:
                y = S if S < end else end
                c[i] += y - x
                x = y
        c[5] += S - x

    def _credit_ok(self, rows_b):
        """First cycle a block of ``rows_b`` pixels has its credits."""
        k = self.k
        need = self.V + rows_b - k.fifo
        if need <= 0:
            return _NEG
        f = self.t.pack
        j = min(((need - 1) // f + 1) * f - 1, self.vtot - 1)
        blocks = self.blocks
        for i in range(len(blocks) - 1, -1, -1):
            v0, rb, Eb = blocks[i]
            if v0 <= j < v0 + rb:
                return Eb + k.dw_latency + (j - v0) + 1
        raise RuntimeError(f"result credits deadlock: out_fifo_depth={k.fifo} cannot hold "
                           f"{rows_b} pixels beside a partly packed beat")

    # ---------------------------------------------------------------- fast-forward
    def _key(self, x0):
        """The state (intake aside) as seen from cycle ``x0``, relative to it."""
        k = self.k
        cred = None
        if self.credit:
            lim = -(k.dw_latency + k.rows + 1)
            cred = (self.V % self.t.pack,
                    tuple((v0 - self.V, rb, max(Eb - x0, lim))
                          for v0, rb, Eb in self.blocks if v0 + rb + k.fifo + self.t.pack
                          > self.V))
        return (self.E - x0 if self.E > x0 - k.rows else None, cred)

    def _shift(self, dt, dv):
        self.S += dt
        self.E += dt
        if self.credit:
            keep = [b for b in self.blocks if b[0] + b[1] + self.k.fifo + self.t.pack > self.V]
            self.blocks = [(v0 + dv, rb, Eb + dt) for v0, rb, Eb in keep]
        self.V += dv

    def _need(self, w, oy):
        """The last input row output row ``oy`` of word ``w`` reads (None: none)."""
        t = self.t
        y = oy * t.stride_h - t.pad_top
        last = y + (t.kh - 1) * t.dil_h
        if last < 0 or y > t.height - 1:
            return None
        return w * t.height + min(last, t.height - 1)

    def _free(self, w, oy, x0):
        """Whether no group of rows ``oy..`` of word ``w`` can wait for its input row: each
        is scheduled and ready before row ``oy + j`` could begin (``x0 + j * row_min``,
        ``x0`` the cycle the first group of row ``oy`` may begin its reads)."""
        t, intake = self.t, self.intake
        Ho, B = t.out_height, intake.beats
        last = next((r for r in (self._need(w, o) for o in range(Ho - 1, oy - 1, -1))
                     if r is not None), None)
        if last is None:
            return True
        if (last + 1) * B > intake.nb:
            return False
        if intake.ready(last) <= x0:
            return True                 # the whole rest of the word is in already
        # ready(need(o)) - bound(o) is piecewise linear in o: check the ends of the pieces
        sh = t.stride_h
        c0 = w * t.height - t.pad_top + (t.kh - 1) * t.dil_h      # need(o) = c0 + o*sh
        cand = {oy, Ho - 1}
        clip = -(-(w * t.height + t.height - 1 - c0) // sh)     # need(o) clipped from here
        first = -(-(w * t.height - c0) // sh)                  # the first row reading a row
        cand.update((clip - 1, clip, first - 1, first))
        rk = intake.rk
        for i in range(len(rk)):
            ra = (rk[i] + 1 + B - 1) // B - 1          # first row whose last beat is in run i
            o = -(-(ra - c0) // sh)
            cand.update((o - 1, o))
        for o in cand:
            if oy <= o < Ho:
                r = self._need(w, o)
                if r is not None and intake.ready(r) > x0 + (o - oy) * self.row_min:
                    return False
        return True

    def _row_geo(self, oy):
        """Whether output row ``oy`` reads only real rows and is neither the first nor
        the last of its word (no weight gate, its release moves ``lo`` by the stride)."""
        t = self.t
        y = oy * t.stride_h - t.pad_top
        return (1 <= oy <= t.out_height - 2 and y >= 0
                and y + (t.kh - 1) * t.dil_h < t.height)

    def _row_sig(self, w, oy):
        """The intake's regime at row ``oy`` (when it is not free): the releases move
        its limit by the stride (1), or it holds every row already (2); None if
        neither or the row is not regular."""
        t, k = self.t, self.k
        if not self._row_geo(oy):
            return None
        y = oy * t.stride_h - t.pad_top
        if w * t.height + y + t.stride_h + k.ring_rows <= self.total:
            return 1
        if self.intake.nb == self.intake.limit:
            return 2
        return None

    def _row_ff(self, w, oy, seen):
        """Fast-forward over periodic regular output rows; True if rows were skipped
        (``_skip_to`` is the next row to evaluate)."""
        t = self.t
        if not self._row_geo(oy):
            seen.clear()
            return False
        x0 = self.S
        if self.free_w != w and oy >= self.free_retry:
            if self._free(w, oy, x0):
                self.free_w = w
            else:                       # try again later, less and less often
                self.free_gap *= 2
                self.free_retry = oy + self.free_gap
        if self.free_w == w:
            sig, key = 0, ("free", self._key(x0))
        else:
            sig = self._row_sig(w, oy)
            if sig is None:
                seen.clear()
                return False
            key = (sig, self._key(x0),
                   self.intake.key(x0, w * t.height + oy * t.stride_h - t.pad_top))
        hit = seen.get(key)
        if hit is None:
            seen[key] = (oy, x0, list(self.c), self.V)
            return False
        q, xq, cq, vq = hit
        per, d1 = oy - q, x0 - xq
        # rows oy .. oy + n*per - 1 are skipped: all regular, in the same regime
        t_, k = self.t, self.k
        last = min(t_.out_height - 2,
                   (t_.height - (t_.kh - 1) * t_.dil_h - 1 + t_.pad_top) // t_.stride_h)
        if sig == 1:
            last = min(last, (self.total - k.ring_rows - t_.stride_h - w * t_.height
                              + t_.pad_top) // t_.stride_h)
        n = (last - oy + 1) // per
        if n <= 0:
            return False
        for i in range(6):
            self.c[i] += n * (self.c[i] - cq[i])
        # the skipped rows' releases, periodic
        # (skipped rows are followed by a row of the same word that reads real rows)
        base, sh, rel_x = w * t_.height - t_.pad_top, t_.stride_h, self.rel_x
        events = [(base + (oy + j + 1) * sh, rel_x[q + j % per] + (j // per + 1) * d1)
                  for j in range(n * per)]
        self.rel.extend(events)
        if sig:
            self.intake.shift(n * d1, n * per * t.stride_h)
        else:
            self.intake.release_all(events)
            self.intake.prune(events[-1][0])
        self._shift(n * d1, n * (self.V - vq))
        seen.clear()
        self._skip_to = oy + n * per
        SKIPS["row"] += n
        return True

    def _word_sig(self, w):
        """The intake's regime over word ``w`` when it is not free (like
        :meth:`_row_sig`); None for the first and last words."""
        t, k = self.t, self.k
        H = t.height
        if not 1 <= w <= t.cotiles - 2 or self.S is None:
            return None
        top = max(0, (t.out_height - 1) * t.stride_h - t.pad_top, H + max(-t.pad_top, 0))
        if w * H + top + k.ring_rows <= self.total:
            return 1
        if self.intake.nb == self.intake.limit and w * H + max(-t.pad_top, 0) + k.ring_rows \
                >= self.total:
            return 2
        return None

    def _word_ff(self, w, seen):
        """Fast-forward over periodic channel words (like :meth:`_row_ff`)."""
        t, k = self.t, self.k
        H = t.height
        if not 1 <= w <= t.cotiles - 2 or self.S is None:
            seen.clear()
            return False
        x0 = self.S
        wt = k.start + k.word_lag + (w + 1) * self.taps + 1
        state = (self._key(x0), wt - x0 if wt > x0 else 0)
        free = self._free(w, 0, x0)
        if free:
            sig, key = 0, ("free", state)
        else:
            sig = self._word_sig(w)
            if sig is None:
                seen.clear()
                return False
            key = (sig, state, self.intake.key(x0, w * H + max(-t.pad_top, 0)))
        hit = seen.get(key)
        if hit is None:
            seen[key] = w
            return False
        q = hit
        per = w - q
        if sig == 0:
            w2 = self._replay_words(w, q, per)
        else:
            n = 0
            while self._word_sig(w + (n + 1) * per - 1) == sig:
                n += 1
            if n == 0:
                return False
            xq, cq = self.words[q][0], self.words[q][1]
            for i in range(6):
                self.c[i] += n * (self.c[i] - cq[i])
            self.intake.shift(n * (x0 - xq), n * per * H)
            self._shift(n * (x0 - xq), n * per * t.out_height * t.out_width)
            w2 = w + n * per
        if w2 == w:
            return False
        seen.clear()
        self.words = {}
        self._skip_to = w2
        SKIPS["word"] += w2 - w
        return True

    def _snapshot(self):
        """The state at a word's start, for :meth:`_replay_words` (``rel`` fills up as
        the word is evaluated)."""
        return (self.S, list(self.c), self.rel, self.V, self.E, list(self.blocks))

    def _replay_words(self, w, q, per):
        """Words ``w, w+1, ...`` as the free words ``q .. w-1`` repeated, one at a time
        while each is free: word ``w2`` ends in the state word ``ref`` ended in, shifted
        by the cycles and vectors between their starts, and replays ``ref``'s row
        releases into the intake. Returns the next word to evaluate."""
        t = self.t
        H = t.height
        log = dict(self.words)
        log[w] = self._snapshot()
        w2 = w
        while w2 <= t.cotiles - 2:
            if w2 > w and not self._free(w2, 0, self.S):
                break
            ref = q + (w2 - w) % per
            x_ref, c_ref, rel, v_ref = log[ref][:4]
            x_nxt, c_nxt, _rel, v_nxt, e_nxt, b_nxt = log[ref + 1]
            dt, dv = self.S - x_ref, self.V - v_ref
            for i in range(6):
                self.c[i] += c_nxt[i] - c_ref[i]
            dr = (w2 - ref) * H
            self.intake.release_all([(lo + dr, x + dt) for lo, x in rel])
            self.intake.prune((w2 + 1) * H)
            self.S, self.E, self.V = x_nxt + dt, e_nxt + dt, v_nxt + dv
            self.blocks = [(v0 + dv, rb, Eb + dt) for v0, rb, Eb in b_nxt]
            w2 += 1
        return w2


# ----------------------------------------------------------------------------- per tile

@lru_cache(maxsize=None)
def _beat_bits(cfg):
    from .hw import layouts as L
    return (L.descriptor_layout(cfg).size, L.param_beat_layout(cfg).size,
            L.result_beat_layout(cfg).size - 1)


def _traffic(cfg, t):
    """Bytes per stream of one invocation (as :meth:`~.streams.Invocation.bytes_moved`)."""
    R, C, dw, P = cfg.rows, cfg.cols, cfg.data_width, cfg.act_pixels
    desc_bits, param_bits, result_bits = _beat_bits(cfg)
    vectors = t.out_height * t.out_width * t.cotiles
    if t.depthwise:
        wbeats = t.cotiles * t.kh * t.kw
        abeats = t.cotiles * t.height * t.row_beats
    else:
        wbeats = t.n_tiles * R
        abeats = t.height * t.row_beats
    return {"desc": desc_bits / 8, "param": t.cotiles * param_bits / 8,
            "weight": wbeats * C * dw / 8, "act": abeats * R * P * dw / 8,
            "result": -(-vectors // t.pack) * result_bits / 8}


def _slots(cfg, t, cin, cout, groups, cog, co_phase, taps):
    """PE-slots of the busy cycles: (useful, edge_cols, edge_rows, group)."""
    R, C = cfg.rows, cfg.cols
    pix = t.out_height * t.out_width
    if t.depthwise:
        # output stationary: a tap occupies rows (pixels of a block) x cols (channels)
        px = t.out_height * -(-t.out_width // R) * R
        return (cin * pix * taps, (t.cotiles * C - cin) * px * taps,
                cin * (px - pix) * taps, 0)
    from .planner import word_ranges
    cg = cin // groups
    useful = edge_c = edge_r = grp = 0
    for ti, (first, cnt) in enumerate(word_ranges(cin, cout, groups, R, C, cog=cog,
                                                  co_phase=co_phase)):
        creal = min(C, cout - ti * C)
        lanes = min(cin, (first + cnt) * R) - first * R
        useful += creal * cg * taps
        edge_c += (C - creal) * cnt * R * taps
        edge_r += creal * (cnt * R - lanes) * taps
        grp += creal * (lanes - cg) * taps
    return useful * pix, edge_c * pix, edge_r * pix, grp * pix


class InvocationEstimate(NamedTuple):
    """One invocation of a plan: its timing fields, counters and traffic."""
    index: int
    timing: InvocationTiming
    counters: dict
    macs: int
    bytes: dict

    @property
    def cycles(self):
        return self.counters["cycles"]


class _Invocations:
    """The per-invocation estimates of a plan, built on access (plans can be long).

    ``which(p, r, c)`` is the index into ``infos`` of the invocations of channel
    part ``p`` on row segment ``r`` and column segment ``c`` (any image).
    """

    def __init__(self, plan, which, infos):
        self._plan, self._which, self._infos = plan, which, infos

    def __len__(self):
        return self._plan.invocations

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("invocation index out of range")
        _n, p, r, c = self._plan.index(i)
        t, cnt, b, _sl = self._infos[self._which(p, r, c)]
        return InvocationEstimate(i, t, dict(cnt), self._plan.tile_macs(i), dict(b))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        return f"<{len(self)} invocations, {len(self._infos)} distinct>"


# ----------------------------------------------------------------------------- results

@dataclass
class Suggestion:
    """A hardware configuration the model found faster for a layer."""
    text: str
    hw: HardwareConfig
    cycles: int
    speedup: float

    def __str__(self):
        return self.text


@dataclass
class Breakdown:
    """Where the ``rows * cols * cycles`` PE-cycles of a layer went, in cycles.

    ``components`` (see :data:`COMPONENTS`) sum to ``total``; ``percent`` are
    their shares of it.
    """
    total: int
    components: dict

    @property
    def percent(self):
        t = self.total or 1
        return {k: 100.0 * v / t for k, v in self.components.items()}

    @property
    def losses(self):
        """Components other than ``useful``, largest first."""
        return sorted(((k, v) for k, v in self.components.items() if k != "useful"),
                      key=lambda kv: -kv[1])

    def __add__(self, other):
        comps = {k: self.components.get(k, 0) + other.components.get(k, 0)
                 for k in COMPONENTS}
        return Breakdown(self.total + other.total, comps)

    def __str__(self):
        parts = [f"{k} {v:,.0f} ({p:.1f}%)" for (k, v), p in
                 zip(self.components.items(), self.percent.values()) if v]
        return f"{self.total:,} cycles: " + ", ".join(parts)


@dataclass
class Estimate(LayerFigures):
    """The analytic model's figures for one layer.

    ``cycles`` is the sum over the plan's invocations of descriptor handshake to
    final result handshake; ``counters`` the hardware counters summed the same
    way; ``bytes`` the bytes streamed per stream (``desc``, ``param``, ``weight``,
    ``act``, ``result``); ``host_work`` what the host does beside the hardware.
    """
    geometry: object
    hw: HardwareConfig
    cycles: int
    macs: int
    counters: dict
    bytes: dict
    tensor_bytes: int
    host_work: dict
    invocations: list = field(repr=False)
    breakdown: Breakdown = field(repr=False)
    plan: object = field(repr=False, default=None)
    model_seconds: float = 0.0
    name: str = ""
    _suggestion: object = field(repr=False, default=False)

    @property
    def pes(self):
        return self.hw.pes

    @property
    def suggestion(self):
        """A faster configuration for this layer, or None (computed on first use)."""
        if self._suggestion is False:
            self._suggestion = suggest(self)
        return self._suggestion

    def __str__(self):
        c = self.counters
        return (f"{self.name + ': ' if self.name else ''}{self.cycles:,} cycles, "
                f"{self.macs:,} MACs, utilization {self.utilization:.1%} on "
                f"{self.hw.rows}x{self.hw.cols}; busy {c['busy']:,}, setup {c['setup']:,}, "
                f"stall in {c['stall_input']:,} / weight {c['stall_weight']:,} / "
                f"out {c['stall_output']:,}, fill {c['fill']:,}, drain {c['drain']:,}; "
                f"{len(self.invocations)} invocations, traffic "
                f"{self.bytes_total / 1e3:,.1f} kB ({self.traffic_ratio:.2f}x tensors)")


def _part_key(p):
    return p.ci[1] - p.ci[0], p.co[1] - p.co[0], p.groups, p.cog, p.co_phase


def _row_key(r):
    return len(r.src), len(r.out_idx), r.stride, r.k, r.dil, r.pad_lo, r.pad_hi


def _col_key(c):
    return len(c.src), len(c.out_idx), c.stride, c.k, c.dil, c.pad_lo, c.pad_hi


def _classes(items, key):
    """Group ``items`` by ``key``: (class of each item, a representative and the
    number of items of each class)."""
    if len(items) == 1:
        return (0,), items, (1,)
    index, of, reps, num = {}, [], [], []
    for it in items:
        kk = key(it)
        j = index.get(kk)
        if j is None:
            j = index[kk] = len(reps)
            reps.append(it)
            num.append(0)
        num[j] += 1
        of.append(j)
    return of, reps, num


def _requant_bits(requant):
    if requant is None:
        return None
    if isinstance(requant, str):
        if requant not in ("tflite", "half_up"):
            raise ValueError(f"requant={requant!r} must be 'tflite', 'half_up', "
                             f"a Requant or None")
        return 8
    return int(requant.out_width)


def estimate_plan(plan, *, requant=None, name=""):
    """Estimate an existing :class:`~.planner.TilePlan` (e.g. ``RtlStats.plan``).

    ``requant``: None, a :class:`~.contract.Requant` or a mode name (8-bit
    outputs). When the hardware requantizes (one reduction part, at most 16 output
    bits) results are packed, which changes the result traffic and the credits.
    """
    t0 = time.perf_counter()
    cfg = plan.cfg
    geom = plan.geometry
    R, C, dw = cfg.rows, cfg.cols, cfg.data_width
    out_bits = _requant_bits(requant)
    hw_rq = out_bits is not None and plan.reduction_parts == 1 and out_bits <= 16
    pack = pack_of(cfg, requant, out_bits) if hw_rq else 1
    k = constants(cfg)
    tot = dict.fromkeys(COUNTER_NAMES, 0)
    byts = {"desc": 0.0, "param": 0.0, "weight": 0.0, "act": 0.0, "result": 0.0}
    slots = [0, 0, 0, 0]
    # Invocations whose segments and channel parts agree in every field the timing,
    # traffic and slots depend on are estimated once: one per class of each.
    p_of, parts, p_num = _classes(plan.parts, _part_key)
    r_of, rows, r_num = _classes(plan.rows, _row_key)
    c_of, cols, c_num = _classes(plan.cols, _col_key)
    infos = []
    for part, pn in zip(parts, p_num):
        cin, cout = part.ci[1] - part.ci[0], part.co[1] - part.co[0]
        for r, rn in zip(rows, r_num):
            for c, cn in zip(cols, c_num):
                t = _timing(cfg, cin, cout, part.groups, part.cog, part.co_phase,
                            plan.depthwise(r, c), r, c, plan.pass_rows(r, c, cin), pack)
                cnt = _counters_cached(t, k) if FAST_FORWARD else _counters(t, k, False)
                b = _traffic(cfg, t)
                sl = _slots(cfg, t, cin, cout, part.groups, part.cog, part.co_phase, r.k * c.k)
                infos.append((t, cnt, b, sl))
                # totals: each distinct invocation times its multiplicity
                m = plan.batch * pn * rn * cn
                for kk in COUNTER_NAMES:
                    tot[kk] += m * cnt[kk]
                for kk in byts:
                    byts[kk] += m * b[kk]
                for i in range(4):
                    slots[i] += m * sl[i]
    nr, nc = len(rows), len(cols)
    invs = _Invocations(plan, lambda p, r, c: (p_of[p] * nr + r_of[r]) * nc + c_of[c], infos)
    pes = R * C
    comps = {"useful": slots[0] / pes, "edge_cols": slots[1] / pes,
             "edge_rows": slots[2] / pes, "group_underfill": slots[3] / pes}
    for kk in ("setup", "stall_input", "stall_weight", "stall_output", "fill", "drain"):
        comps[kk] = float(tot[kk])
    out_elems = geom.N * geom.C_out * geom.H_out * geom.W_out
    host = {"prepad_columns": plan.host_prepad_columns, "partial_sum_adds": 0,
            "host_requant": 0}
    if plan.reduction_parts > 1:
        host["partial_sum_adds"] = out_elems * (plan.reduction_parts - 1)
    if out_bits is not None and not hw_rq:
        host["host_requant"] = out_elems
    in_elems = geom.N * geom.C_in * geom.H * geom.W
    w_elems = geom.C_out * (geom.C_in // geom.groups) * geom.kh * geom.kw
    tensor_bytes = int(in_elems * dw / 8 + w_elems * dw / 8 + (geom.C_out * 4 if geom.has_bias
                                                               else 0)
                       + out_elems * ((out_bits / 8) if out_bits is not None else 4))
    return Estimate(geometry=geom, hw=cfg, cycles=tot["cycles"], macs=geom.macs,
                    counters=tot, bytes=byts, tensor_bytes=tensor_bytes, host_work=host,
                    invocations=invs, breakdown=Breakdown(tot["cycles"], comps), plan=plan,
                    model_seconds=time.perf_counter() - t0, name=name)


def estimate(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
             padding_mode="zeros", hw=None, requant=None, bias=False, *, x_absmax=None,
             w_absmax=None, b_absmax=0, pad_value=0, name=""):
    """Cycles, utilization, traffic and their breakdown of one conv2d layer.

    Parameters
    ----------
    input_shape, weight_shape : sequence of int
        ``(N, C_in, H, W)`` (or ``(C_in, H, W)``) and ``(C_out, C_in/groups, kh, kw)``.
    stride, padding, dilation, groups, padding_mode
        As in ``torch.nn.Conv2d``.
    hw : HardwareConfig, optional
        The accelerator instance (default: ``HardwareConfig()``).
    requant : Requant, str or None
        Requantize in hardware: results are packed (traffic and credits follow).
    bias : bool
        Whether the layer has a bias.
    x_absmax, w_absmax, b_absmax, pad_value
        Data bounds for the planner's accumulator proof (default: the full
        ``data_width`` range for x and w, no bias bound); a tighter bound can
        avoid reduction splits, exactly as :func:`~.driver.run_rtl` does with the
        actual data.

    Returns
    -------
    Estimate
    """
    from .contract import conv_geometry
    from .planner import plan_layer
    from .rewrite import fold_geometry
    t0 = time.perf_counter()
    cfg = hw if hw is not None else DEFAULT
    if not isinstance(cfg, HardwareConfig):
        raise TypeError(f"hw={hw!r} must be a HardwareConfig")
    _requant_bits(requant)
    geom = conv_geometry(input_shape, weight_shape, (weight_shape[0],) if bias else None,
                         stride, padding, dilation, groups, padding_mode)
    geom = fold_geometry(geom, cfg)     # axes beyond the descriptor's limits (as run_rtl)
    try:
        plan = plan_layer(geom, cfg, x_absmax=x_absmax, w_absmax=w_absmax,
                          b_absmax=b_absmax, pad_value=pad_value)
    except ValueError:
        if not b_absmax:
            raise
        # the bias alone breaks the accumulator bound: added on the host (as run_rtl)
        plan = plan_layer(geom, cfg, x_absmax=x_absmax, w_absmax=w_absmax, b_absmax=0,
                          pad_value=pad_value)
        requant = None
    est = estimate_plan(plan, requant=requant, name=name)
    est.model_seconds = time.perf_counter() - t0
    return est


# ----------------------------------------------------------------------------- suggestions

def _pow2_at_least(n):
    return 1 << max(0, int(n - 1).bit_length())


def _candidates(est):
    """Configurations that attack the largest losses of ``est``."""
    cfg = est.hw
    pct = est.breakdown.percent
    out = []
    R, C = cfg.rows, cfg.cols
    if pct["edge_cols"] + pct["edge_rows"] + pct["group_underfill"] > 3:
        pes = R * C
        for r in range(1, pes + 1):
            if pes % r or r == R:
                continue
            c = pes // r
            cw = _pow2_at_least(max(1, cfg.channel_tile // r))
            wd = max(2 * r, (cfg.weight_depth * C // c) // r * r)
            try:
                out.append((f"rows={r}, cols={c} (same {pes} PEs)",
                            replace(cfg, rows=r, cols=c, max_cwords=cw, weight_depth=wd)))
            except ValueError:
                pass
    if pct["stall_input"] > 2:
        out.append((f"lb_rows={2 * cfg.lb_rows} (line buffer x2)",
                    replace(cfg, lb_rows=2 * cfg.lb_rows)))
    if pct["stall_weight"] + pct["stall_input"] + pct["setup"] > 2:
        out.append((f"acc_depth={2 * cfg.acc_depth} (longer folds, fewer passes)",
                    replace(cfg, acc_depth=2 * cfg.acc_depth)))
    if pct["stall_output"] > 0.5:
        k = constants(cfg)
        d = _pow2_at_least(max(k.latency, k.dw_latency + 2 * R) + cfg.acc_width // 8)
        out.append((f"out_fifo_depth={d} (result credits never bind)",
                    replace(cfg, out_fifo_depth=d)))
    if est.geometry.W_out > cfg.max_width and pct["useful"] < 90:
        out.append((f"max_width={_pow2_at_least(est.geometry.W)} (no column strips)",
                    replace(cfg, max_width=_pow2_at_least(est.geometry.W))))
    return out


def suggest(est, min_gain=0.03):
    """The best of a few alternative configurations for ``est``'s layer, if faster.

    Candidates target the largest losses (array shape for edge waste and group
    underfill, line-buffer rows for input stalls, accumulator depth for weight and
    pass overheads, FIFO depth for credit stalls); each is evaluated with the
    model and the best is returned when it saves at least ``min_gain``.
    """
    from .planner import plan_layer
    best = None
    g = est.geometry
    for text, cfg in _candidates(est):
        try:
            plan = plan_layer(g, cfg)
            e = estimate_plan(plan)
        except (ValueError, NotImplementedError, RuntimeError):
            continue
        if best is None or e.cycles < best[2]:
            best = (text, cfg, e.cycles, e.utilization)
    if best is None or best[2] > est.cycles * (1 - min_gain):
        return None
    text, cfg, cyc, util = best
    sp = est.cycles / cyc
    return Suggestion(f"{text}: {sp:.2f}x fewer cycles ({est.utilization:.1%} -> {util:.1%} "
                      f"utilization)", cfg, cyc, sp)


# ----------------------------------------------------------------------------- RTL side

def measure_rtl(plan, x, w, bias=None, *, requant=None, pad_value=0, seed=0):
    """Run ``plan`` on the Verilator harness; return per-invocation counters.

    Inputs always valid, output always ready (the design conditions). Returns
    ``(list of counter dicts, harness seconds, wall seconds)``; ``cycles`` is
    checked against the bench's own handshake marks.
    """
    from .driver import _invocations, HardwareError
    from .sim.harness import get_harness
    from .hw.layouts import COUNTERS
    t0 = time.perf_counter()
    h = get_harness(plan.cfg)
    invs = _invocations(plan, np.asarray(x, dtype=np.int64), np.asarray(w, dtype=np.int64),
                        None if bias is None else np.asarray(bias, dtype=np.int64),
                        pad_value, requant)
    out = []
    sim_s = 0.0
    for lo in range(0, len(invs), 64):
        batch = invs[lo:lo + 64]
        cat = lambda name: np.concatenate([getattr(i, name) for i in batch], axis=0)  # noqa
        run = h.run(cat("desc_words"), cat("param_words"), cat("weight_words"),
                    cat("act_words"), n_results=sum(i.n_results for i in batch), seed=seed)
        sim_s += run.seconds
        if run.timeout or len(run.status) != len(batch):
            raise HardwareError("harness timeout")
        for i, st in enumerate(run.status):
            if st["error"]:
                raise HardwareError(f"invocation {lo + i}: error {st['error']}")
            meas = run.measured_cycles(i)
            if meas != st["cycles"]:
                raise HardwareError(f"invocation {lo + i}: bench {meas} != counter "
                                    f"{st['cycles']}")
            out.append({kk: int(st.get(kk, 0)) for kk in COUNTERS})
    return out, sim_s, time.perf_counter() - t0
