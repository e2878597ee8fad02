"""Analytic cycle model of the accelerator: exact cycles and counters, no simulation.

:func:`estimate` plans a layer with the planner
(:func:`systolic_conv.planner.plan_layer`) and computes, for every hardware
invocation of the plan, the cycle count the RTL measures (descriptor handshake to
final result handshake, inclusive) and every performance counter, under the
conditions of DESIGN section 7: inputs always valid, the result stream always
ready. Nothing is fitted to RTL runs: every term below is read off
``hw/accel.py`` (with ``hw/array.py``, ``hw/requant.py`` and Amaranth's
``SyncFIFOBuffered``); the tests compare every counter of every invocation with
the RTL's and require equality.

Timing of one invocation (cycle 0 = descriptor handshake, all streams valid):

* **Setup.** Cycle 0 is the handshake (``S_IDLE``), cycles 1 and 2 the two
  descriptor-check states. From cycle 3 the state is ``S_RUN`` and the three
  payload streams are accepted, one beat per cycle each, concurrently. The
  sequencer waits in ``SQ_PARAMS`` until ``p_done`` (set the cycle after the last
  of ``cotiles`` parameter beats) and ``p_checked`` (one cycle later):
  ``cotiles + 2`` cycles, so the first pass enters ``SQ_PASS`` at ``cotiles + 5``.
* **Line buffer.** Activation beat ``k`` is accepted at cycle ``3 + k`` unless
  the writer is blocked: row ``r`` (``B = ceil(width / act_pixels) * cwords``
  beats of ``act_pixels`` neighbouring pixels) may be written
  only while ``r < lo + lb_rows``, where ``lo`` (the first row the current pass
  needs, ``max(y_pass, 0)``) is updated only in ``SQ_PASS``. A row blocked by a
  slot still in use therefore starts the cycle after the next pass enters
  ``SQ_PASS`` (or when the previous row is complete, if later); ``wr_iy``
  (complete rows) reaches ``r + 1`` ``B`` cycles after row ``r`` started.
* **Passes.** Pass ``p`` (``gcount = min(G, rows left)`` output rows) waits in
  ``SQ_PASS`` until ``wr_iy >= clip(y_pass + (G-1)*stride_h + (kh-1)*dil_h + 1,
  0, height)`` (note: ``G``, not ``gcount``): those cycles are ``stall_input``;
  the cycle the rows are there is ``setup``; issue may start the next cycle.
* **Word-major activations** (:func:`~.hw.config.word_major`: depthwise, one pass,
  every row resident): rows never wait; the first fold of output-channel tile
  ``t`` (input word ``t``) issues no earlier than ``3 + (t+1)*height*B/cwords``, the
  cycle after the word's last beat. Waiting cycles count as ``stall_weight`` while
  the tile is not latched, then ``stall_input``, then ``stall_output``.
* **Folds.** A pass issues ``n_tiles`` folds (one weight tile each); fold ``n``
  issues ``gcount * Q`` cycles, one per cycle: ``Q = W_out`` elements per output
  row in the dense mapping; in the depthwise mapping the window generator reads
  ``Q = (kw-1)*dil_w + (W_out-1)*stride_w + 1`` columns per row, of which
  ``W_out`` complete an element (``busy``) and the rest only fill the window
  register (``fill``). With dual reads (:func:`dual_read`) it reads two columns in
  a cycle whenever both are needed before the next element completes: element 0
  issues at ``((kw-1)*dil_w) // 2``, the others every ``ceil(stride_w/2)``
  cycles, ``Q = ((kw-1)*dil_w) // 2 + (W_out-1)*ceil(stride_w/2) + 1``.
* **Weights.** Weight beat ``k`` arrives at cycle ``3 + k``. The load of fold
  ``n`` (tile ``n mod n_tiles``) starts at
  ``s_n = max(s_{n-1} + R, 3 + (tile+1)*R, E_{n-2} + 1)``: the loader is busy
  ``R`` cycles per load, the tile's words must be in the weight memory, and fold
  ``n-2`` must have issued its last cycle ``E_{n-2}`` (its bank is reused). The
  load reads ``R`` words, latches two cycles later, and fold ``n`` may issue from
  ``s_n + R + 2``. ``SQ_ISSUE`` cycles waiting for it are ``stall_weight``.
* **Credits.** An element of the last fold of an output-channel tile reserves a
  result-FIFO slot when it issues and frees it at its result handshake ``Lr``
  cycles later (:func:`result_latency`). It may issue only while fewer than
  ``D = out_fifo_depth`` slots are reserved: at most ``D`` such issues in any
  ``Lr + 1`` consecutive cycles. Only ``Lr >= D`` can stall (``stall_output``):
  arrays with ``rows + cols`` close to the FIFO depth or larger.
* **Drain.** After the last issue (``SQ_DONE``) the final result handshake
  comes ``Lr`` cycles later: ``drain = Lr``, ``cycles = E_last + Lr + 1``.

The recurrences are evaluated per *fold*, never per cycle, with exact
fast-forward: within a run of identical folds the state is periodic with period
1 or 2 after a few folds (a max-plus recurrence whose circuits have length 1 or
2), detected and extrapolated; passes whose entry state, relative to their
entry cycle and first row, equals the previous pass's repeat exactly; invocations
with the same timing-relevant descriptor fields are computed once (cached). A
plan is estimated class by class, never invocation by invocation: its invocations
are the products image x channel part x row segment x column segment
(:class:`~.planner.TilePlan`), and parts and segments that agree in every field
the timing, traffic and PE slots depend on form one class, whose figures are
multiplied by its size (exact integers; the byte counts are multiples of 1/8).
The thousands of polyphase invocations of a large dilation fall into a handful of
classes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .hw.config import DEFAULT, HardwareConfig, word_major
from .figures import LayerFigures

__all__ = ["estimate", "estimate_plan", "Estimate", "Breakdown", "Suggestion",
           "InvocationTiming", "InvocationEstimate", "invocation_timing",
           "invocation_counters", "result_latency", "COUNTER_NAMES", "COMPONENTS",
           "measure_rtl", "clear_caches", "dual_read"]

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
                 "channels padded to words; depthwise: taps padded to folds)",
    "group_underfill": "zero weights of other groups in block-diagonal tiles",
    "setup": "descriptor checks, tile parameters, one bubble per pass",
    "stall_input": "passes waiting for their rows in the line buffer",
    "stall_weight": "folds waiting for their weight tile",
    "stall_output": "final folds waiting for result-FIFO credits",
    "fill": "depthwise window columns read without completing an element",
    "drain": "fill/drain: the last results' latency through array and requantizer",
}

_NEG = -(1 << 62)

#: Exact fast-forward over periodic folds and passes (False: evaluate every fold;
#: the same numbers, slower; the tests use it to check the fast-forward).
FAST_FORWARD = True


def clear_caches():
    """Forget every memoized per-layer result of the model and the planner.

    For timing cold estimates; what depends on the hardware configuration only
    (:func:`result_latency`, the beat sizes) stays cached.
    """
    from . import planner
    for f in (_counters_cached, _dense_folds, _slots, _elem_positions, planner._axis_segments,
              planner.word_ranges, planner._co_chunks_rel, planner._reduction_per):
        f.cache_clear()


@lru_cache(maxsize=None)
def result_latency(cfg: HardwareConfig) -> int:
    """Cycles from an element's issue to its result handshake (output always ready).

    ``RESULT_LATENCY(cfg)`` of ``hw/accel.py`` counts the pipeline from the issue
    cycle to the result's write into the result FIFO (line-buffer read, tap word
    register, ``R + C + 1`` array stages, accumulate, register, 7 requantizer stages);
    Amaranth's ``SyncFIFOBuffered`` then needs one more cycle: the written entry
    reaches the inner memory's read port, and ``r_rdy`` rises the cycle after.
    """
    from .hw.accel import RESULT_LATENCY
    return RESULT_LATENCY(cfg) + 1


class InvocationTiming(NamedTuple):
    """The descriptor fields of one invocation that determine its timing."""
    folds: tuple           # folds (weight tiles) of each output-channel tile
    height: int            # rows streamed
    width: int             # columns streamed
    cwords: int            # input words per pixel
    out_height: int
    pass_rows: int         # G
    stride_h: int
    span_h: int            # (kh - 1) * dil_h + 1
    pad_top: int
    row_issue: int         # issue cycles per output row in a fold (Q)
    row_elems: int         # elements per output row (W_out)
    elem_first: int        # issue offset of a row's first element
    elem_step: int         # issue cycles between a row's elements
    word_major: bool = False   # activations word by word (:func:`~.hw.config.word_major`)

    @property
    def n_tiles(self):
        return sum(self.folds)


def invocation_timing(spec, cfg: HardwareConfig, padding_mode="zeros") -> InvocationTiming:
    """The :class:`InvocationTiming` of a planner :class:`~.planner.TileSpec` of a layer
    with ``padding_mode``."""
    return _timing(cfg, spec.ci[1] - spec.ci[0], spec.co[1] - spec.co[0], spec.groups, spec.cog,
                   spec.co_phase, getattr(spec, "depthwise", False), spec.rows, spec.cols,
                   int(spec.pass_rows), padding_mode)


def dual_read(cfg, c, padding_mode):
    """Whether a depthwise invocation with column segment ``c`` may read two window
    columns per cycle: the hardware has dual reads and the horizontal border mapping
    keeps column parities apart (pad value, reflect, circular over an even width)."""
    mode = c.hw_pad_mode(padding_mode)
    return (cfg.dw_dual_read and
            (mode in ("zeros", "reflect") or (mode == "circular" and len(c.src) % 2 == 0)))


def _timing(cfg, cin, cout, groups, cog, co_phase, depthwise, r, c, pass_rows,
            padding_mode="zeros"):
    """The timing of an invocation from its channel fields and its two segments."""
    R = cfg.rows
    wo = len(c.out_idx)
    if depthwise:
        folds = (-(-(r.k * c.k) // R),) * -(-cin // R)
        first = (c.k - 1) * c.dil
        if dual_read(cfg, c, padding_mode):
            # two columns per cycle while both are needed, so the first + 1 columns
            # of element 0 take ceil((first+1)/2) cycles and each further element's
            # stride columns ceil(stride/2)
            first, step = first // 2, (c.stride + 1) // 2
            q = first + (wo - 1) * step + 1
        else:
            q, step = first + (wo - 1) * c.stride + 1, c.stride
    else:
        folds = _dense_folds(cin, cout, groups, R, cfg.cols, cog, co_phase, r.k * c.k)
        first, q, step = 0, wo, 1
    cwords = -(-cin // R)
    wmaj = word_major(cfg, depthwise, len(r.src), cwords, pass_rows, len(r.out_idx))
    return InvocationTiming(folds, len(r.src), len(c.src), cwords, len(r.out_idx),
                            pass_rows, r.stride, (r.k - 1) * r.dil + 1, r.pad_lo,
                            q, wo, first, step, wmaj)


@lru_cache(maxsize=4096)
def _dense_folds(cin, cout, groups, R, C, cog, co_phase, taps):
    from .planner import word_ranges
    return tuple(taps * int(n) for _, n in word_ranges(cin, cout, groups, R, C, cog=cog,
                                                        co_phase=co_phase))


# ----------------------------------------------------------------------------- credits

def _credit_fold(S0, pos, T, hist, Lr, D):
    """Issue one credit-checked (last) fold.

    The fold has ``T`` issue cycles; its elements sit at offsets ``pos``
    (ascending). Element ``e`` issues at ``t_e = max(t_{e-1} + pos_e - pos_{e-1},
    f_{e-D} + Lr + 1)``, ``t_0 >= S0 + pos_0``, where ``f`` is the sequence of
    credit-taking issue times (``hist``: its most recent ``<= D`` entries,
    ascending); cycles between elements never wait. Returns
    ``(first issue, last issue, new hist)``.
    """
    lim = Lr + 1
    h = len(hist)
    Te = len(pos)
    times = np.empty(Te, dtype=np.int64)
    base = S0                     # t_e = pos_e + base_e, base non-decreasing
    for b in range(0, Te, D):
        e = min(Te, b + D)
        p = pos[b:e]
        if b == 0:
            lb = np.full(e, _NEG, dtype=np.int64)
            lo = max(0, D - h)
            if lo < e:
                lb[lo:e] = hist[lo - (D - h):e - (D - h)] + lim
        else:
            lb = times[b - D:e - D] + lim
        c = np.maximum.accumulate(lb - p)
        np.maximum(c, base, out=c)
        times[b:e] = p + c
        base = int(c[-1])
    first = S0 if pos[0] > 0 else int(times[0])
    last = int(times[-1]) + (T - 1 - int(pos[-1]))
    if Te >= D:
        new = times[Te - D:].copy()
    else:
        new = np.concatenate([hist, times])[-D:]
    return first, last, new


@lru_cache(maxsize=4096)
def _elem_positions(g, q, wo, first, step):
    row = first + step * np.arange(wo, dtype=np.int64)
    pos = (q * np.arange(g, dtype=np.int64)[:, None] + row[None, :]).ravel()
    pos.setflags(write=False)
    return pos


# ----------------------------------------------------------------------------- folds

class _State:
    """Sequencer/loader state between folds (absolute cycle numbers)."""
    __slots__ = ("Ep", "Ep2", "sp", "n", "hist")

    def __init__(self):
        self.Ep = _NEG          # E_{n-1}: last issue cycle of the previous fold
        self.Ep2 = _NEG         # E_{n-2}
        self.sp = _NEG          # s_{n-1}: load start of the previous fold
        self.n = 0              # global index of the next fold
        self.hist = None        # recent credit-taking issue times (credit model only)


def _run_folds(st, count, T, lower, i0, pass0, R):
    """Issue ``count`` folds of ``T`` cycles that take no credits.

    ``lower``: earliest issue cycle of the first fold; ``i0``: in-pass index of
    the first fold (the weight-stream bound applies in pass 0 only: later passes
    reuse tiles loaded long before). Returns the ``stall_weight`` cycles.
    """
    Ep, Ep2, sp, n = st.Ep, st.Ep2, st.sp, st.n
    sw = 0
    j = 0
    hist = []
    while j < count:
        i = i0 + j
        s = sp + R
        if pass0:
            wa = 3 + (i + 1) * R
            if wa > s:
                s = wa
        if n >= 2 and Ep2 + 1 > s:
            s = Ep2 + 1
        if s < 3:
            s = 3
        wr = s + R + 2
        lo = lower if j == 0 else Ep + 1
        S = wr if wr > lo else lo
        d = S - lo
        sw += d
        Ep2, Ep, sp = Ep, S + T - 1, s
        n += 1
        hist.append((Ep, Ep2, sp, d))
        # Folds j-1 and j both came from the time-invariant map (n >= 2, same T, not
        # a pass opener): if the state moved by the same delta over two folds, it
        # repeats with that delta from here on.
        if FAST_FORWARD and j >= 2 and n >= 4:
            a, b = hist[-3], hist[-1]
            delta = b[0] - a[0]
            if b[1] - a[1] == delta and b[2] - a[2] == delta and (
                    not pass0 or delta == 2 * R or 3 + i * R <= a[2] + R):
                # (pass 0: the weight stream moves by R per fold; it is either in
                # lock-step, or slack for fold j-1 on and therefore forever)
                k = count - 1 - j
                half, odd = divmod(k, 2)
                m = hist[-2]
                if odd:
                    Ep, Ep2, sp = m[0] + (half + 1) * delta, b[0] + half * delta, \
                        m[2] + (half + 1) * delta
                else:
                    Ep, Ep2, sp = b[0] + half * delta, m[0] + half * delta, b[2] + half * delta
                sw += half * (m[3] + b[3]) + odd * m[3]
                n += k
                break
        j += 1
    st.Ep, st.Ep2, st.sp, st.n = Ep, Ep2, sp, n
    return sw


def _load_start(st, i, pass0, R):
    """Load start ``s_n`` of the next fold (see the module docstring)."""
    s = st.sp + R
    if pass0:
        s = max(s, 3 + (i + 1) * R)
    if st.n >= 2:
        s = max(s, st.Ep2 + 1)
    return max(s, 3)


def _credit_last_fold(st, T, pos, lower, i, pass0, R, Lr, D, act=_NEG):
    """Issue one credit-checked fold that may not issue before ``act`` (its word
    of word-major activations); returns ``(stall_weight, stall_input,
    stall_output)``: waiting cycles count as weight, then input, then output."""
    s = _load_start(st, i, pass0, R)
    wr = s + R + 2
    S0 = max(lower, wr, act)
    first, last, st.hist = _credit_fold(S0, pos, T, st.hist, Lr, D)
    sw = max(0, wr - lower)
    si = S0 - max(lower, wr)
    so = max(0, first - S0) + (last - first - (T - 1))
    st.Ep2, st.Ep, st.sp = st.Ep, last, s
    st.n += 1
    return sw, si, so


def _act_fold(st, T, lower, act, i, pass0, R):
    """Issue one fold (no credits) that may not issue before ``act``; returns
    ``(stall_weight, stall_input)``."""
    s = _load_start(st, i, pass0, R)
    wr = s + R + 2
    S = max(lower, wr, act)
    st.Ep2, st.Ep, st.sp = st.Ep, S + T - 1, s
    st.n += 1
    return max(0, wr - lower), S - max(lower, wr)


# ----------------------------------------------------------------------------- invocation

@lru_cache(maxsize=1 << 16)
def _counters_cached(t, R, Lr, lb_rows, D, P):
    return _counters(t, R, Lr, lb_rows, D, P)


def invocation_counters(t: InvocationTiming, cfg: HardwareConfig) -> dict:
    """Exact hardware counters (and ``cycles``) of one invocation."""
    args = (t, cfg.rows, result_latency(cfg), cfg.lb_rows, cfg.out_fifo_depth, cfg.act_pixels)
    if not FAST_FORWARD:
        return _counters(*args)
    return dict(_counters_cached(*args))


def _counters(t, R, Lr, lb_rows, D, P):
    credit = Lr >= D
    B = -(-t.width // P) * t.cwords     # beats per row
    H = t.height
    G = t.pass_rows
    sh = t.stride_h
    pspan = (G - 1) * sh + t.span_h
    step = G * sh
    folds = t.folds
    F = sum(folds)
    cot = len(folds)

    setup = 3 + cot + 2
    stall_in = stall_w = stall_o = busy = fill = 0
    enter = cot + 5

    # line-buffer writer: blocks of rows written back to back, [first row, start]
    U = min(lb_rows, H)
    blocks = [[0, 3]]
    nr, ns = U, 3 + U * B          # next row to write, earliest start of it

    st = _State()
    if credit:
        st.hist = np.empty(0, dtype=np.int64)
    y = -t.pad_top
    rows_left = t.out_height
    p = 0
    prev_key = None
    prev_inc = None
    prev_regular = False
    while rows_left > 0:
        g = G if G < rows_left else rows_left
        # a regular pass: full, all its rows inside the image, past the warm-up
        regular = g == G and y >= 0 and y + lb_rows <= H and p >= 1 and st.n >= 2
        if FAST_FORWARD and regular:
            key = _pass_key(st, blocks, nr, ns, y, enter, Lr, B)
            if prev_regular and key == prev_key[0]:
                # this pass and every following regular one repeat the previous pass
                k = 0
                yy, rl = y, rows_left
                while rl >= G and yy + lb_rows <= H:
                    k += 1
                    yy += step
                    rl -= G
                dt, inc = enter - prev_key[1], prev_inc
                setup += k * inc[0]
                stall_in += k * inc[1]
                stall_w += k * inc[2]
                stall_o += k * inc[3]
                busy += k * inc[4]
                fill += k * inc[5]
                sh_t, sh_r = k * dt, k * step
                enter += sh_t
                st.Ep += sh_t
                st.Ep2 += sh_t
                st.sp += sh_t
                if credit:
                    st.hist = st.hist + sh_t
                st.n += k * F
                for blk in blocks:
                    blk[0] += sh_r
                    blk[1] += sh_t
                nr += sh_r
                ns += sh_t
                y += sh_r
                rows_left -= k * G
                p += k
                prev_regular = False
                continue
            prev_key = (key, enter)
        c0 = (setup, stall_in, stall_w, stall_o, busy, fill)
        T = g * t.row_issue
        Te = g * t.row_elems
        # ---- line buffer: free the rows below y, then wait for this pass's rows
        if t.word_major:
            ready = enter       # one pass, every row resident; tiles wait for words below
        else:
            rel = y if y > 0 else 0
            newU = rel + lb_rows
            if newU > H:
                newU = H
            if newU > nr:
                start = ns if ns > enter + 1 else enter + 1
                blocks.append([nr, start])
                ns = start + (newU - nr) * B
                nr = newU
            need = y + pspan
            if need > H:
                need = H
            if need <= 0:
                rdy = _NEG
            else:
                row = need - 1
                bi = len(blocks) - 1
                while blocks[bi][0] > row:
                    bi -= 1
                rdy = blocks[bi][1] + (need - blocks[bi][0]) * B
            ready = rdy if rdy > enter else enter
            stall_in += ready - enter
            while len(blocks) > 1 and blocks[1][0] <= rel:
                blocks.pop(0)           # no later pass reads below rel
        setup += 1
        # ---- folds
        pass0 = p == 0
        lower = ready + 1
        if t.word_major:
            # tile ti waits for word ti, complete (words_in > ti) from 3 + (ti+1)*H*B/cwords
            a, b, o = _word_major_folds(st, t, g, T, lower, credit, R, Lr, D, B // t.cwords)
            stall_w += a
            stall_in += b
            stall_o += o
        elif not credit:
            stall_w += _run_folds(st, F, T, lower, 0, pass0, R)
        else:
            pos = _elem_positions(g, t.row_issue, t.row_elems, t.elem_first, t.elem_step)
            i = 0
            for ft in folds:
                if ft > 1:
                    stall_w += _run_folds(st, ft - 1, T, lower, i, pass0, R)
                    lower = st.Ep + 1
                    i += ft - 1
                a, _, b = _credit_last_fold(st, T, pos, lower, i, pass0, R, Lr, D)
                stall_w += a
                stall_o += b
                lower = st.Ep + 1
                i += 1
        busy += F * Te
        fill += F * (T - Te)
        prev_inc = (setup - c0[0], stall_in - c0[1], stall_w - c0[2], stall_o - c0[3],
                    busy - c0[4], fill - c0[5])
        prev_regular = regular
        enter = st.Ep + 1
        y += step
        rows_left -= g
        p += 1
    cycles = st.Ep + Lr + 1
    out = {"cycles": cycles, "busy": busy, "setup": setup, "stall_input": stall_in,
           "stall_weight": stall_w, "stall_output": stall_o, "fill": fill, "drain": Lr}
    assert busy + setup + stall_in + stall_w + stall_o + fill + Lr == cycles, out
    return out


def _word_major_folds(st, t, g, T, lower, credit, R, Lr, D, row_beats):
    """The folds of a word-major invocation's single pass (``g`` output rows):
    ``(stall_weight, stall_input, stall_output)``."""
    hw_ = t.height * row_beats
    sw = si = so = 0
    pos = _elem_positions(g, t.row_issue, t.row_elems, t.elem_first, t.elem_step) \
        if credit else None
    i = 0
    for ti, ft in enumerate(t.folds):
        act = 3 + (ti + 1) * hw_
        if credit and ft == 1:
            a, b, c = _credit_last_fold(st, T, pos, lower, i, True, R, Lr, D, act)
            so += c
        else:
            a, b = _act_fold(st, T, lower, act, i, True, R)
        sw += a
        si += b
        lower = st.Ep + 1
        i += 1
        rest = ft - 1 - (1 if credit and ft > 1 else 0)
        if rest > 0:
            sw += _run_folds(st, rest, T, lower, i, True, R)
            lower = st.Ep + 1
            i += rest
        if credit and ft > 1:
            a, _, c = _credit_last_fold(st, T, pos, lower, i, True, R, Lr, D)
            sw += a
            so += c
            lower = st.Ep + 1
            i += 1
    return sw, si, so


def _pass_key(st, blocks, nr, ns, y, enter, Lr, B):
    """A pass's entry state relative to its entry cycle and first row.

    Canonical: every later constraint is ``max(..., enter)`` or later, so rows
    complete by ``enter`` and a writer free before ``enter + 1`` are left out.
    """
    rel = y if y > 0 else 0
    bl = []
    for i, (first, start) in enumerate(blocks):
        end_row = blocks[i + 1][0] if i + 1 < len(blocks) else nr
        r0 = first + max(0, (enter - start) // B)       # first row completing after enter
        if r0 < rel:
            r0 = rel
        if r0 < end_row:
            bl.append((r0 - y, start + (r0 - first) * B - enter))
    hist = ()
    if st.hist is not None and len(st.hist):
        keep = st.hist[st.hist + Lr + 1 > enter]     # entries that can still bind
        hist = tuple((keep - enter).tolist())
    return (st.Ep - enter, st.Ep2 - enter, st.sp - enter, nr - y, max(ns - enter, 1),
            tuple(bl), hist)


# ----------------------------------------------------------------------------- per tile

@lru_cache(maxsize=None)
def _beat_bits(cfg):
    from .hw import layouts as L
    return L.descriptor_layout(cfg).size, L.param_beat_layout(cfg).size


@lru_cache(maxsize=4096)
def _slots(cfg, folds, cin, cout, groups, cog, co_phase, taps, depthwise):
    """PE-slots of the busy cycles per output pixel: (useful, edge_cols, edge_rows, group)."""
    R, C = cfg.rows, cfg.cols
    if depthwise:
        # every tile has the same folds: channels (real columns) x taps (real rows)
        nf = folds[0]
        creal = sum(min(C, cin - ti * C) for ti in range(len(folds)))
        treal = sum(min(R, taps - f * R) for f in range(nf))
        return creal * treal, (len(folds) * C - creal) * R * nf, creal * (nf * R - treal), 0
    useful = edge_c = edge_r = grp = 0
    from .planner import word_ranges
    cg = cin // groups
    ranges = word_ranges(cin, cout, groups, R, C, cog=cog, co_phase=co_phase)
    if len(set(ranges)) == 1:
        # every output-channel tile reduces over the same words (tiles cover cout)
        first, cnt = ranges[0]
        lanes = min(cin, (first + cnt) * R) - first * R
        return (cout * cg * taps, (len(ranges) * C - cout) * cnt * R * taps,
                cout * (cnt * R - lanes) * taps, cout * (lanes - cg) * taps)
    for ti, (first, cnt) in enumerate(ranges):
        creal = min(C, cout - ti * C)
        lanes = min(cin, (first + cnt) * R) - first * R
        useful += creal * cg * taps
        edge_c += (C - creal) * cnt * R * taps
        edge_r += creal * (cnt * R - lanes) * taps
        grp += creal * (lanes - cg) * taps
    return useful, edge_c, edge_r, grp


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
        return InvocationEstimate(i, t, cnt, self._plan.tile_macs(i), b)

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
    """The analytic model's figures for one layer (DESIGN section 7 definitions).

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
    return len(r.src), len(r.out_idx), r.stride, r.k, r.dil, r.pad_lo


def _col_key(c):
    return len(c.src), len(c.out_idx), c.stride, c.k, c.dil, c.hw_mode


def _classes(items, key):
    """Group ``items`` by ``key``: (class of each item, a representative and the
    number of items of each class)."""
    if len(items) == 1:
        return (0,), items, (1,)
    index, of, reps, num = {}, [], [], []
    for it in items:
        k = key(it)
        j = index.get(k)
        if j is None:
            j = index[k] = len(reps)
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
    outputs); it changes only the result traffic, not the timing.
    """
    t0 = time.perf_counter()
    cfg = plan.cfg
    geom = plan.geometry
    R, C, dw = cfg.rows, cfg.cols, cfg.data_width
    P = cfg.act_pixels
    out_bits = _requant_bits(requant)
    desc_bits, param_bits = _beat_bits(cfg)
    Lr = result_latency(cfg)
    counters = _counters_cached if FAST_FORWARD else _counters
    bits = out_bits if (out_bits is not None and plan.reduction_parts == 1) else cfg.acc_width
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
                depthwise = plan.depthwise(r, c)
                t = _timing(cfg, cin, cout, part.groups, part.cog, part.co_phase, depthwise,
                            r, c, plan.pass_rows(r, c, cin), plan.geometry.padding_mode)
                cnt = counters(t, R, Lr, cfg.lb_rows, cfg.out_fifo_depth, P)
                cot = len(t.folds)
                pix = len(r.out_idx) * len(c.out_idx)
                b = {"desc": desc_bits / 8, "param": cot * param_bits / 8,
                     "weight": t.n_tiles * R * C * dw / 8,
                     "act": t.height * -(-t.width // P) * t.cwords * P * R * dw / 8,
                     "result": pix * cot * C * bits / 8}
                sl = tuple(v * pix for v in _slots(cfg, t.folds, cin, cout, part.groups, part.cog,
                                                   part.co_phase, r.k * c.k, depthwise))
                infos.append((t, cnt, b, sl))
                # totals: each distinct invocation times its multiplicity
                m = plan.batch * pn * rn * cn
                for k in COUNTER_NAMES:
                    tot[k] += m * cnt[k]
                for k in byts:
                    byts[k] += m * b[k]
                for i in range(4):
                    slots[i] += m * sl[i]
    nr, nc = len(rows), len(cols)
    invs = _Invocations(plan, lambda p, r, c: (p_of[p] * nr + r_of[r]) * nc + c_of[c], infos)
    pes = R * C
    comps = {"useful": slots[0] / pes, "edge_cols": slots[1] / pes,
             "edge_rows": slots[2] / pes, "group_underfill": slots[3] / pes}
    for k in ("setup", "stall_input", "stall_weight", "stall_output", "fill", "drain"):
        comps[k] = float(tot[k])
    out_elems = geom.N * geom.C_out * geom.H_out * geom.W_out
    host = {"prepad_columns": plan.host_prepad_columns, "partial_sum_adds": 0,
            "host_requant": 0}
    if plan.reduction_parts > 1:
        host["partial_sum_adds"] = out_elems * (plan.reduction_parts - 1)
        if out_bits is not None:
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
        Requantize in hardware (only the result traffic depends on it).
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
    t0 = time.perf_counter()
    cfg = hw if hw is not None else DEFAULT
    if not isinstance(cfg, HardwareConfig):
        raise TypeError(f"hw={hw!r} must be a HardwareConfig")
    _requant_bits(requant)
    geom = conv_geometry(input_shape, weight_shape, (weight_shape[0],) if bias else None,
                         stride, padding, dilation, groups, padding_mode)
    plan = plan_layer(geom, cfg, x_absmax=x_absmax, w_absmax=w_absmax, b_absmax=b_absmax,
                      pad_value=pad_value)
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
            wd = max(r, (cfg.weight_depth * C // c) // r * r)
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
        d = _pow2_at_least(result_latency(cfg) + 1)
        out.append((f"out_fifo_depth={d} (> result latency {result_latency(cfg)})",
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
        except ValueError:
            continue
        e = estimate_plan(plan)
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

    Inputs always valid, output always ready (DESIGN section 7). Returns
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
            out.append({k: int(st.get(k, 0)) for k in COUNTERS})
    return out, sim_s, time.perf_counter() - t0
