"""The fast path: the Verilated accelerator as a shared library, driven by
``harness.cpp`` through ctypes, whole streams per call (no per-cycle Python).

One build per hardware configuration (and trace flag), cached under
``build/harness-<config key>``, guarded by a file lock so parallel workers share
it. A build is reused for every layer: layers are run-time descriptors.
"""

import ctypes
import hashlib
import json
import pathlib
import subprocess
import time
from dataclasses import dataclass, field

import numpy as np

from ..hw.config import HardwareConfig
from ..hw import layouts as L
from .toolchain import setup_verilator, build_root, file_lock, prune_builds, VERILATOR_MAKEFLAGS

__all__ = ["Harness", "get_harness", "HarnessRun"]

_HERE = pathlib.Path(__file__).resolve().parent


class _Options(ctypes.Structure):
    _fields_ = [("max_cycles", ctypes.c_uint64), ("seed", ctypes.c_uint64),
                ("idle_permille", ctypes.c_uint32 * 4), ("stall_permille", ctypes.c_uint32),
                ("result_last_bit", ctypes.c_uint32), ("trace_path", ctypes.c_char_p),
                # appended fields (the order of harness.cpp's ScOptions)
                ("status_stall_permille", ctypes.c_uint32), ("reset_len", ctypes.c_uint32),
                ("reset_at", ctypes.c_uint64), ("inv_ends", ctypes.POINTER(ctypes.c_uint64)),
                ("inv_results", ctypes.POINTER(ctypes.c_uint64))]


class _Result(ctypes.Structure):
    _fields_ = [("cycles", ctypes.c_uint64), ("n_result", ctypes.c_uint64),
                ("n_status", ctypes.c_uint64), ("timeout", ctypes.c_int32),
                # appended fields (the order of harness.cpp's ScResult)
                ("result_hold_violations", ctypes.c_uint64),
                ("status_hold_violations", ctypes.c_uint64),
                ("first_violation_cycle", ctypes.c_uint64), ("lost_inv", ctypes.c_int64),
                ("reset_fired", ctypes.c_int32)]

_NO_CYCLE = (1 << 64) - 1


@dataclass
class HarnessRun:
    """What one harness call returns."""
    result_words: np.ndarray     # (n_result, words)
    status: list                 # one dict per invocation (error + counters)
    marks: np.ndarray            # (n_invocations, 3): desc, final result, status cycles
    sim_cycles: int
    seconds: float
    timeout: bool
    #: result beats per invocation (attributed to the invocation whose descriptor was
    #: taken last), None from a harness library without the count
    inv_results: object = None
    #: the invocation a reset pulse interrupted (its ``status`` entry is None), or None
    lost: object = None
    reset_fired: bool = False
    #: stream-rule violations on the DUT's outputs: ``{"result": n, "status": n,
    #: "first_cycle": c}`` (a beat offered and not taken that changed or vanished)
    protocol: dict = field(default_factory=dict)

    def measured_cycles(self, i):
        """Cycles of invocation i as the bench sees them (desc to final result, inclusive)."""
        return int(self.marks[i, 1] - self.marks[i, 0] + 1)

    def protocol_failure(self):
        """A one-line failure when an output broke the stream rule, else None."""
        n_r, n_s = self.protocol.get("result", 0), self.protocol.get("status", 0)
        if not (n_r or n_s):
            return None
        return (f"harness: stream rule broken on the DUT's outputs ({n_r} o_result, {n_s} "
                f"o_status beats offered, not taken, then changed or withdrawn; first at "
                f"cycle {self.protocol.get('first_cycle')})")


RESET_CYCLES = 4
WRAPPER_TOP = "systolic_conv_harness"


def wrapper_verilog(cfg: HardwareConfig) -> str:
    """A top module around the unchanged ``systolic_conv`` for the harness build:
    the same ports without ``rst``, which a power-on counter holds high for the
    first :data:`RESET_CYCLES` clock edges. A reset that comes from a register
    rather than an input lets Verilator compute the design's next-state logic once
    per clock edge instead of again whenever an input changes. ``ext_rst`` (ORed
    in) is the harness's reset pulse (``Harness.run(reset_at=...)``); it is set
    only on the falling half of a cycle, like every other input."""
    from amaranth import Value
    from amaranth.lib.wiring import In
    from ..hw.accel import Conv2dAccelerator
    from ..hw.gen import TOP_NAME
    top = Conv2dAccelerator(cfg)
    top._MustUse__silence = True     # only its signature is used
    decls = ["  input clk", "  input ext_rst"]
    conns = ["    .clk(clk)", "    .rst(por != 0 || ext_rst)"]
    for path, flow, val in top.signature.flatten(top):
        name = "__".join(map(str, path))
        width = len(Value.cast(val))
        rng = f"[{width - 1}:0] " if width > 1 else ""
        decls.append(f"  {'input' if flow.flow == In else 'output'} wire {rng}{name}")
        conns.append(f"    .{name}({name})")
    return (f"module {WRAPPER_TOP} (\n" + ",\n".join(decls) + "\n);\n"
            f"  reg [2:0] por = 3'd{RESET_CYCLES};\n"
            f"  always @(posedge clk) if (por != 0) por <= por - 3'd1;\n"
            f"  {TOP_NAME} dut (\n" + ",\n".join(conns) + "\n  );\nendmodule\n")


def _source_key(cfg: HardwareConfig, trace: bool):
    """Name a build by what it is built from, without elaborating the design: the
    generator's sources, the Amaranth version, the configuration, the harness and
    the flags (elaborating an 8x8 takes seconds; this takes milliseconds)."""
    import amaranth
    h = hashlib.sha256()
    hw_dir = pathlib.Path(__file__).resolve().parent.parent / "hw"
    for f in sorted(hw_dir.glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    h.update((_HERE / "harness.cpp").read_bytes())
    h.update((_HERE / "harness.py").read_bytes())      # the wrapper
    h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    h.update(f"{amaranth.__version__} trace={trace}".encode())
    return h.hexdigest()[:12]


def _build(cfg: HardwareConfig, trace: bool, verbose=False):
    from ..hw.gen import generate_verilog
    verilator = setup_verilator()
    key = _source_key(cfg, trace)
    bdir = build_root() / f"harness-{cfg.name()}-{key}"
    lib = bdir / "libscharness.so"
    if lib.exists():
        return lib
    with file_lock(build_root() / "verilator-build.lock"):
        if lib.exists():
            return lib
        verilog = generate_verilog(cfg)
        bdir.mkdir(parents=True, exist_ok=True)
        vpath = bdir / "systolic_conv.v"
        vpath.write_text(verilog + "\n" + wrapper_verilog(cfg))
        obj = bdir / "obj"
        cmd = [verilator, "--cc", str(vpath), "--top-module", WRAPPER_TOP, "--prefix", "Vtop",
               "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O3", "--x-assign", "fast",
               "--x-initial", "fast", "--noassert", "--Mdir", str(obj), "--build", "-j", "2",
               # the per-cycle code at -O3 for this machine's CPU (the build is cached
               # per machine), the construction code at -O1 to build quickly
               "-CFLAGS", "-fPIC -march=native", "-MAKEFLAGS", "OPT_FAST=-O3",
               "-MAKEFLAGS", "OPT_SLOW=-O1", "-MAKEFLAGS", "OPT_GLOBAL=-O2", *VERILATOR_MAKEFLAGS]
        if trace:
            cmd += ["--trace-fst", "--trace-structs"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"verilator failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}")
        import os
        root = pathlib.Path(os.environ["VERILATOR_ROOT"])
        inc = root / "include"
        libs = [str(obj / "Vtop__ALL.a"), str(obj / "libverilated.a")]
        cmd = ["g++", "-shared", "-fPIC", "-O3", "-march=native", "-std=c++17", f"-I{inc}", f"-I{inc / 'vltstd'}",
               f"-I{obj}", f"-DVM_TRACE={1 if trace else 0}", str(_HERE / "harness.cpp"),
               *libs, "-o", str(lib) + ".tmp", "-lpthread"]
        if trace:
            cmd += ["-lz"]
            lz = subprocess.run(["sh", "-c", "ldconfig -p | grep -q liblz4"], capture_output=True)
            if lz.returncode == 0:
                cmd += ["-llz4"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"harness link failed:\n{run.stderr[-4000:]}")
        pathlib.Path(str(lib) + ".tmp").rename(lib)
        prune_builds(f"harness-{cfg.name()}-", keep=2)
        return lib


class Harness:
    """A loaded harness library for one hardware configuration."""

    def __init__(self, cfg: HardwareConfig, trace=False):
        self.cfg = cfg
        self.trace = trace
        t0 = time.perf_counter()
        self.path = _build(cfg, trace)
        self.build_seconds = time.perf_counter() - t0
        self.lib = ctypes.CDLL(str(self.path))
        self.lib.sc_run.restype = ctypes.c_int
        self.lib.sc_port_words.restype = ctypes.c_int
        self.layouts = [L.descriptor_layout(cfg), L.param_beat_layout(cfg),
                        L.weight_beat_layout(cfg), L.act_beat_layout(cfg),
                        L.result_beat_layout(cfg), L.status_layout(cfg)]
        for i, lay in enumerate(self.layouts):
            want = (lay.size + 31) // 32
            got = self.lib.sc_port_words(i)
            if got != want:
                raise RuntimeError(f"harness port {i} has {got} words, layout needs {want}")
        self.result_last_bit = L.field_offsets(self.layouts[4])["last"][0]

    def run(self, desc, param, weight, act, *, n_results, seed=0, idle=(0, 0, 0, 0), stall=0.0,
            max_cycles=None, trace_path=None, status_stall=0.0, reset_at=None, reset_len=3,
            inv_ends=None):
        """Stream whole invocations through the model.

        ``desc``/``param``/``weight``/``act`` are ``(beats, words)`` uint32 arrays (the
        concatenation of the invocations' streams); ``idle`` the per-stream idle
        probabilities, ``stall`` the result back-pressure probability,
        ``status_stall`` the status back-pressure probability (0: ready always).

        ``reset_at``: pulse the reset for ``reset_len`` cycles at that cycle; the
        invocation in flight is lost (``HarnessRun.lost``) and the rest of its beats
        are dropped: ``inv_ends`` (``(invocations, 4)``: the end, exclusive, of each
        invocation's beats in the desc, param, weight and act streams) says where the
        next invocation's beats begin.
        """
        arrs = [np.ascontiguousarray(a, dtype=np.uint32) for a in (desc, param, weight, act)]
        n_inv = len(arrs[0])
        rw = (self.layouts[4].size + 31) // 32
        sw = (self.layouts[5].size + 31) // 32
        result = np.zeros((max(1, n_results), rw), dtype=np.uint32)
        status = np.zeros((max(1, n_inv), sw), dtype=np.uint32)
        marks = np.full((max(1, n_inv), 3), -1, dtype=np.int64)
        if max_cycles is None:
            total = sum(len(a) for a in arrs) + n_results
            max_cycles = 1000 + 50 * total + 10 ** 7
        if trace_path and not self.trace:
            raise ValueError("trace_path needs a Harness(cfg, trace=True) build")
        inv_res = np.zeros(max(1, n_inv), dtype=np.uint64)
        u64p = ctypes.POINTER(ctypes.c_uint64)
        ends = None
        if inv_ends is not None:
            ends = np.ascontiguousarray(inv_ends, dtype=np.uint64).reshape(-1, 4)
            if len(ends) != n_inv:
                raise ValueError(f"inv_ends has {len(ends)} rows for {n_inv} invocations")
        opt = _Options(max_cycles=int(max_cycles), seed=int(seed),
                       idle_permille=(ctypes.c_uint32 * 4)(*[int(round(p * 1000)) for p in idle]),
                       stall_permille=int(round(stall * 1000)),
                       result_last_bit=self.result_last_bit,
                       trace_path=str(trace_path).encode() if trace_path else None,
                       status_stall_permille=int(round(status_stall * 1000)),
                       reset_len=int(reset_len),
                       reset_at=_NO_CYCLE if reset_at is None else int(reset_at),
                       inv_ends=ends.ctypes.data_as(u64p) if ends is not None else None,
                       inv_results=inv_res.ctypes.data_as(u64p))
        res = _Result()
        ptr = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32))
        t0 = time.perf_counter()
        self.lib.sc_run(ptr(arrs[0]), ctypes.c_uint64(len(arrs[0])),
                        ptr(arrs[1]), ctypes.c_uint64(len(arrs[1])),
                        ptr(arrs[2]), ctypes.c_uint64(len(arrs[2])),
                        ptr(arrs[3]), ctypes.c_uint64(len(arrs[3])),
                        ptr(result), ctypes.c_uint64(n_results),
                        ptr(status), ctypes.c_uint64(n_inv),
                        marks.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64)),
                        ctypes.byref(opt), ctypes.byref(res))
        secs = time.perf_counter() - t0
        st_lay = self.layouts[5]
        lost = int(res.lost_inv) if res.lost_inv >= 0 else None
        statuses = []
        for i in range(int(res.n_status) + (lost is not None)):
            if i == lost:
                statuses.append(None)
                continue
            raw = 0
            for k, wv in enumerate(status[i]):
                raw |= int(wv) << (32 * k)
            statuses.append(L.unpack(st_lay, raw))
        proto = {"result": int(res.result_hold_violations),
                 "status": int(res.status_hold_violations),
                 "first_cycle": (None if res.first_violation_cycle == _NO_CYCLE
                                 else int(res.first_violation_cycle))}
        return HarnessRun(result_words=result[:int(res.n_result)], status=statuses,
                          marks=marks[:n_inv], sim_cycles=int(res.cycles), seconds=secs,
                          timeout=bool(res.timeout), inv_results=inv_res[:n_inv].astype(np.int64),
                          lost=lost, reset_fired=bool(res.reset_fired), protocol=proto)


_CACHE = {}


def get_harness(cfg: HardwareConfig, trace=False) -> Harness:
    """The (cached, per process) harness for ``cfg``."""
    k = (cfg, trace)
    if k not in _CACHE:
        _CACHE[k] = Harness(cfg, trace)
    return _CACHE[k]
