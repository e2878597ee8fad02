"""Static timing of a routed design from nextpnr's SDF: every failing path, not one.

nextpnr reports only the worst path of each clock. :func:`analyse` reads the SDF it
writes (``--sdf``: every cell's delay arcs, every routed connection's delay and every
flip-flop's setup time) and computes the arrival time at every register input, so a
report can list all endpoints below the target, grouped by the register they end
at and the register their worst path starts from. Cell and net names are those
of the synthesized netlist; a register's name is its signal's (``dut.seq.dw.rd_t``)
with the technology suffix removed.

Model: one clock, every register clocked by it; a path starts at a sequential
cell's clock-to-output arc and ends at an input with a setup check; combinational
cells propagate through their ``IOPATH`` arcs; the slow corner (the third value
of each triple) throughout, as nextpnr's own analysis does.
"""

import re
from collections import defaultdict, deque
from dataclasses import dataclass, field

__all__ = ["analyse", "register_name", "TimingSummary"]

_TRIPLE = r"\((-?[\d.]*):(-?[\d.]*):(-?[\d.]*)\)"
_INTERCONNECT = re.compile(r"\(INTERCONNECT\s+(\S+)\s+(\S+)\s+" + _TRIPLE)
_IOPATH = re.compile(r"\(IOPATH\s+(\S+)\s+(\S+)\s+" + _TRIPLE)
_SETUP = re.compile(r"\(SETUPHOLD\s+\((?:posedge|negedge)\s+(\S+)\)\s+\((?:posedge|negedge)\s+"
                    r"(\S+)\)\s+" + _TRIPLE)
_INSTANCE = re.compile(r"\(INSTANCE\s*([^()]*)\)")
_CLOCK_PINS = {"CLK", "CLKA", "CLKB", "CLKW", "CLK0", "CLK1", "CLK2", "CLK3", "WCK"}
_SUFFIX = re.compile(r"(_(TRELLIS_FF|TRELLIS_RAMW|DP16KD|MULT18X18D|ALU54B|DPR16X4C?|LUT4|PFUMX|"
                     r"L6MUX21|CCU2C)(_.*)?|\$.*)$")


def _unescape(name):
    return name.replace("\\", "")


def _split_pin(text):
    text = _unescape(text)
    cell, _, port = text.rpartition("/")
    return cell, port


def _ns(triple):
    v = triple[2] or triple[1] or triple[0]
    return float(v) / 1000.0 if v else 0.0


def register_name(cell):
    """The signal a sequential cell holds: ``dut.dense.y_end_TRELLIS_FF_Q_14`` ->
    ``dut.dense.y_end``."""
    return _SUFFIX.sub("", cell) or cell


@dataclass
class Endpoint:
    register: str           # the register the path ends at (its signal)
    slack_ns: float         # the worst over its bits
    start: str              # the register the worst path starts from
    levels: int             # cells on the worst path, its start and end registers included
    bits: int = 1           # failing register bits (nets into it) grouped here


@dataclass
class TimingSummary:
    period_ns: float
    worst_slack_ns: float = 0.0
    failing_endpoints: int = 0          # register input pins below the target
    endpoints: int = 0
    worst: list = field(default_factory=list)        # Endpoint, worst first, one per register
    by_block: dict = field(default_factory=dict)     # "start block -> end block": (count, worst)

    def lines(self, n=25):
        out = [f"{self.failing_endpoints} of {self.endpoints} register inputs below "
               f"{1000 / self.period_ns:.1f} MHz (worst slack {self.worst_slack_ns:.2f} ns)"]
        if self.by_block:
            out.append("failing inputs by block (start -> end): worst slack, count")
            for k, (cnt, ws) in sorted(self.by_block.items(), key=lambda kv: kv[1][1]):
                out.append(f"  {k:40s} {ws:7.2f} ns  {cnt}")
        if self.worst:
            out.append(f"worst registers (of {len(self.worst)} failing):")
            for e in self.worst[:n]:
                out.append(f"  {e.slack_ns:7.2f} ns  {e.register}  <- {e.start}  "
                           f"({e.levels} cells, {e.bits} bits)")
        return out


def _block(reg, depth):
    parts = reg.split(".")
    if parts and parts[0] == "dut":
        parts = parts[1:]
    return ".".join(parts[:depth]) if len(parts) > depth else "(top)"


def analyse(sdf_text, freq_mhz, *, block_depth=1):
    """A :class:`TimingSummary` of the SDF ``sdf_text`` against ``freq_mhz``."""
    period = 1000.0 / freq_mhz
    edges = defaultdict(list)          # node -> [(node, delay)]
    starts = {}                        # node -> clock-to-output delay
    setups = {}                        # node -> setup time
    cell = None
    for line in sdf_text.splitlines():
        if "(INTERCONNECT" in line:
            for mm in _INTERCONNECT.finditer(line):
                a, b = mm.group(1), mm.group(2)
                edges[_split_pin(a)].append((_split_pin(b), _ns(mm.groups()[2:5])))
            continue
        if "(INSTANCE" in line:
            mm = _INSTANCE.search(line)
            cell = _unescape(mm.group(1).strip()) if mm else None
        if "(IOPATH" in line and cell is not None:
            for mm in _IOPATH.finditer(line):
                src, dst = mm.group(1), mm.group(2)
                d = _ns(mm.groups()[2:5])
                if src in _CLOCK_PINS:
                    node = (cell, dst)
                    starts[node] = max(starts.get(node, 0.0), d)
                else:
                    edges[(cell, src)].append(((cell, dst), d))
        if "(SETUPHOLD" in line and cell is not None:
            for mm in _SETUP.finditer(line):
                if mm.group(2) in _CLOCK_PINS:
                    node = (cell, mm.group(1))
                    setups[node] = max(setups.get(node, 0.0), _ns(mm.groups()[2:5]))
    # arrival times in topological order (Kahn) from the start nodes
    indeg = defaultdict(int)
    for u, outs in edges.items():
        for v, _ in outs:
            indeg[v] += 1
    arrival, pred, depth = {}, {}, {}
    for node, d in starts.items():
        arrival[node], pred[node], depth[node] = d, None, 1
    queue = deque(n for n in set(edges) | set(starts) if indeg[n] == 0)
    while queue:
        u = queue.popleft()
        au = arrival.get(u)
        for v, d in edges.get(u, ()):
            if au is not None:
                t = au + d
                if t > arrival.get(v, -1.0):
                    arrival[v], pred[v] = t, u
                    depth[v] = depth.get(u, 0) + (1 if v[0] != u[0] else 0)
            indeg[v] -= 1
            if indeg[v] == 0:
                queue.append(v)
    summary = TimingSummary(period_ns=period, endpoints=len(setups))
    worst_by_reg = {}
    by_block = {}
    for node, su in setups.items():
        if node not in arrival:
            continue
        slack = period - (arrival[node] + su)
        if slack >= 0:
            continue
        summary.failing_endpoints += 1
        # the start of the worst path
        u = node
        while pred.get(u) is not None:
            u = pred[u]
        reg, start = register_name(node[0]), register_name(u[0])
        e = worst_by_reg.get(reg)
        if e is None:
            worst_by_reg[reg] = Endpoint(reg, slack, start, depth.get(node, 0))
        else:
            e.bits += 1
            if slack < e.slack_ns:
                e.slack_ns, e.start, e.levels = slack, start, depth.get(node, 0)
        key = f"{_block(start, block_depth)} -> {_block(reg, block_depth)}"
        cnt, ws = by_block.get(key, (0, 0.0))
        by_block[key] = (cnt + 1, min(ws, slack))
    summary.worst = sorted(worst_by_reg.values(), key=lambda e: e.slack_ns)
    summary._paths = {}
    for e in summary.worst[:200]:
        # the worst path into the register, start to end: (cell, port, arrival ns)
        node = min((n for n in setups if register_name(n[0]) == e.register and n in arrival),
                   key=lambda n: period - arrival[n] - setups[n])
        path = []
        while node is not None:
            path.append((node[0], node[1], arrival[node]))
            node = pred.get(node)
        summary._paths[e.register] = path[::-1]
    summary.worst_slack_ns = summary.worst[0].slack_ns if summary.worst else 0.0
    summary.by_block = by_block
    return summary


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description="Failing register inputs of a routed design's SDF.")
    p.add_argument("sdf")
    p.add_argument("--freq", type=float, default=100.0)
    p.add_argument("--depth", type=int, default=1, help="block name depth for grouping")
    p.add_argument("-n", type=int, default=30)
    p.add_argument("--path", action="append", default=[],
                   help="print the worst path into this register (repeatable)")
    a = p.parse_args(argv)
    with open(a.sdf) as f:
        s = analyse(f.read(), a.freq, block_depth=a.depth)
    print("\n".join(s.lines(a.n)))
    for reg in a.path:
        print(f"worst path into {reg}:")
        for cell, port, t in s._paths.get(reg, []):
            print(f"  {t:6.2f}  {cell}.{port}")


if __name__ == "__main__":
    main()
