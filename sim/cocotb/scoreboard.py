"""In-order scoreboard: each invocation's result and status beats against the
golden expectations of :func:`~.layers.prepare`, with a readable first-mismatch
report (layer, invocation/tile, output index, expected vs got).

Pure Python: the cocotb testbench and the compiled-harness paths (mutation
testing, the identity test) share it.
"""

import hashlib

import numpy as np

from ...hw import layouts as L
from ...streams import unpack_beats

__all__ = ["Scoreboard", "ints_to_words", "InvocationRecord", "unpack_vectors"]


def ints_to_words(values, nwords):
    """Beat payloads (Python ints) -> (beats, nwords) uint32."""
    out = np.zeros((len(values), nwords), dtype=np.uint32)
    for i, v in enumerate(values):
        v = int(v)
        for k in range(nwords):
            out[i, k] = (v >> (32 * k)) & 0xFFFFFFFF
    return out


def unpack_vectors(cfg, desc, words, n_vectors):
    """Packed result beats -> ``(n_vectors, cols)`` result vectors in stream order, and
    for each vector its ``(beat, pixel slot)``.

    Read straight from the payload definition (:mod:`systolic_conv.hw.layouts`,
    ``o_result``): lane ``c`` (``acc_width`` bits) of a beat holds channel ``c`` of
    the beat's ``pack_factor`` pixels, pixel ``k`` in bits ``[k*w, (k+1)*w)``;
    slots after the invocation's final vector are not results.
    """
    aw, C = cfg.acc_width, cfg.cols
    w = L.lane_width(cfg, desc["requant"], desc["out_bits"])
    k = L.pack_factor(cfg, desc["requant"], desc["out_bits"])
    words = np.ascontiguousarray(np.asarray(words, dtype=np.uint32)).reshape(len(words), -1)
    bits = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")
    lanes = bits[:, :C * aw].reshape(len(words), C, aw)[:, :, :k * w]
    px = lanes.reshape(len(words), C, k, w).transpose(0, 2, 1, 3).astype(np.int64)
    v = (px << np.arange(w, dtype=np.int64)).sum(axis=3)
    v = np.where(v >> (w - 1), v - (1 << w), v).reshape(-1, C)[:n_vectors]
    where = np.stack(np.divmod(np.arange(len(v)), k), axis=1)
    return v, where


class InvocationRecord:
    """What a monitor saw of one invocation."""

    def __init__(self):
        self.results = []            # result payloads (ints)
        self.result_cycles = []
        self.status = None           # dict (error + counters)
        self.desc_cycle = None
        self.final_cycle = None      # handshake of the result beat carrying last
        self.status_cycle = None

    @property
    def measured_cycles(self):
        if self.desc_cycle is None or self.final_cycle is None:
            return None
        return self.final_cycle - self.desc_cycle + 1


_MODEL = []


def _cycle_model():
    """``(invocation_counters, invocation_timing)`` of the analytic cycle model, or None
    while :mod:`systolic_conv.cycle_model` does not import (it is being brought up to
    the second architecture); :data:`CYCLE_MODEL_ERROR` then says why."""
    global CYCLE_MODEL_ERROR
    if not _MODEL:
        try:
            from ...cycle_model import invocation_counters, invocation_timing
            _MODEL.append((invocation_counters, invocation_timing))
        except ImportError as exc:
            CYCLE_MODEL_ERROR = f"{type(exc).__name__}: {exc}"
            _MODEL.append(None)
    return _MODEL[0]


#: why the counters are not compared with the cycle model (None: they are)
CYCLE_MODEL_ERROR = None


class Scoreboard:
    """Checks the invocations of one :class:`~.layers.LayerRun`, in order."""

    def __init__(self, run, *, context="", max_report=1, model=False):
        self.run = run
        self.cfg = run.cfg
        self.context = context
        self.lay = L.result_beat_layout(self.cfg)
        self.nwords = (self.lay.size + 31) // 32
        self.next = 0
        self.failures = []
        self.results = [None] * run.n_inv
        self.cycles = []
        self.counters = []
        self.max_report = max_report
        self.raw_sha = [None] * run.n_inv      # hash of each invocation's raw result beats
        # with no stalls (DESIGN section 7 conditions) every counter must equal the
        # analytic cycle model's, an oracle independent of the RTL
        self.model = model

    def _where(self, k):
        e = self.run.expects[k]
        return (f"{self.context}layer {self.run.layer.name}, invocation {k + 1}/{self.run.n_inv} "
                f"[{e.spec}]")

    def fail(self, msg):
        self.failures.append(msg)

    @property
    def ok(self):
        return not self.failures

    def check(self, rec: InvocationRecord, *, check_cycles=True):
        """Check the next invocation's record; return the list of new failures."""
        k = self.next
        self.next += 1
        before = len(self.failures)
        if k >= self.run.n_inv:
            self.fail(f"{self.context}layer {self.run.layer.name}: unexpected invocation "
                      f"{k + 1} (plan has {self.run.n_inv})")
            return self.failures[before:]
        e = self.run.expects[k]
        at = self._where(k)
        st = rec.status
        if st is None:
            self.fail(f"{at}: no status beat")
            return self.failures[before:]
        if e.error:
            if (st["error"] & e.error) != e.error:
                self.fail(f"{at}: status error {L.ErrorFlag.describe(st['error'])}, "
                          f"expected {L.ErrorFlag.describe(e.error)}")
            if not e.exact:
                self.cycles.append(rec.measured_cycles)
                self.counters.append(dict(st))
                return self.failures[before:]
        elif st["error"]:
            self.fail(f"{at}: status error {L.ErrorFlag.describe(st['error'])} "
                      f"on a valid invocation")
        n = len(rec.results)
        self.raw_sha[k] = hashlib.sha256(repr([int(v) for v in rec.results]).encode()).hexdigest()[:16]
        if n != e.inv.n_results:
            self.fail(f"{at}: {n} result beats, expected {e.inv.n_results}")
        words = ints_to_words(rec.results, self.nwords)
        if n:
            last = unpack_beats(self.lay, words, "last")[:, 0]
            bad = np.flatnonzero(last != (np.arange(n) == e.inv.n_results - 1))
            if len(bad):
                self.fail(f"{at}: result 'last' wrong on beats {bad[:8].tolist()} "
                          f"(expected only on beat {e.inv.n_results - 1})")
        if n == e.inv.n_results and e.check_results:
            got, where = unpack_vectors(self.cfg, e.inv.desc, words, e.inv.n_vectors)
            diff = (got != e.values) & e.mask
            if diff.any():
                v, lane = np.argwhere(diff)[0]
                nn, co, oy, ox = (int(c[v, lane]) for c in e.coords)
                b, slot = where[v]
                self.fail(f"{at}: result beat {b} lane {lane} pixel {slot} = out[n={nn}, "
                          f"co={co}, oy={oy}, ox={ox}]: expected {int(e.values[v, lane])}, got "
                          f"{int(got[v, lane])} ({int(diff.sum())} of {int(e.mask.sum())} "
                          f"values differ)")
            self.results[k] = e.inv.scatter_results(got)
        # counters
        cats = sum(st[c] for c in L.COUNTERS[1:])
        if cats != st["cycles"]:
            self.fail(f"{at}: counters {', '.join(f'{c}={st[c]}' for c in L.COUNTERS)} "
                      f"do not sum to cycles")
        model = _cycle_model() if self.model and not e.error else None
        if model is not None:
            invocation_counters, invocation_timing = model
            rq = self.run.layer.requant if self.run.hw_requant else None
            want = invocation_counters(invocation_timing(e.spec, self.cfg, rq), self.cfg)
            diff = [f"{c} {st[c]} (model {want[c]})" for c in L.COUNTERS
                    if c in want and want[c] != st[c]]
            if diff:
                self.fail(f"{at}: counters differ from the cycle model: {', '.join(diff)}")
        m = rec.measured_cycles
        if check_cycles and m is not None and m != st["cycles"]:
            self.fail(f"{at}: testbench measured {m} cycles (desc to final result), "
                      f"hardware counted {st['cycles']}")
        self.cycles.append(m)
        self.counters.append(dict(st))
        return self.failures[before:]

    def finish(self):
        """After all invocations: the assembled layer output against the golden layer."""
        if self.next != self.run.n_inv:
            self.fail(f"{self.context}layer {self.run.layer.name}: {self.next} of "
                      f"{self.run.n_inv} invocations completed")
        if self.ok and all(e.error == 0 or e.exact for e in self.run.expects):
            out = self.run.assemble(self.results)
            gold = self.run.golden
            if out.shape != gold.shape or not np.array_equal(out, gold):
                idx = tuple(int(i) for i in np.argwhere(out != gold)[0])
                self.fail(f"{self.context}layer {self.run.layer.name}: assembled output "
                          f"out{list(idx)} = {int(out[idx])}, golden {int(gold[idx])}")
        return self.ok

    def first_failure(self):
        return self.failures[0] if self.failures else None
