"""Host driver: runs a planned layer on the accelerator model.

The ``rtl`` backend streams every invocation of a :class:`~.planner.TilePlan`
through the compiled Verilator harness (:mod:`systolic_conv.sim.harness`) in one
call, reads back results, hardware counters and the cycles the bench measured,
and assembles the output. It never falls back to the golden model and does no
convolution work on the host: the host only gathers the rows/columns each
invocation streams, adds partial sums of split reductions (int64) and
requantizes those; both are reported as host-side work.
"""

from dataclasses import dataclass, field, replace
import time

import numpy as np

from .hw.config import HardwareConfig, DEFAULT
from .hw import layouts as L
from .contract import requantize, check_int_tensor
from .planner import plan_layer, TilePlan
from .streams import build_invocation
from .rewrite import fold_layer
from .figures import LayerFigures

__all__ = ["RtlStats", "run_rtl", "run_plan", "HardwareError"]


class HardwareError(RuntimeError):
    """The hardware reported an error status, or a stream did not complete."""


@dataclass
class RtlStats(LayerFigures):
    """Measured figures of one layer on the ``rtl`` backend (DESIGN section 7)."""
    cycles: int                 # sum over invocations: desc handshake .. final result
    macs: int
    rows: int
    cols: int
    invocations: int
    counters: dict              # hardware counters summed over invocations
    bytes: dict                 # bytes streamed per stream
    tensor_bytes: int           # input + weight + bias + output tensors' own bytes
    host_work: dict             # host-side work beside the hardware
    sim_cycles: int             # cycles simulated (incl. gaps between invocations)
    sim_seconds: float
    plan: TilePlan = field(repr=False, default=None)

    @property
    def pes(self):
        return self.rows * self.cols

    @property
    def sim_rate(self):
        """Simulated cycles per wall-clock second."""
        return self.sim_cycles / self.sim_seconds if self.sim_seconds else 0.0

    def __str__(self):
        c = self.counters
        return (f"{self.cycles} cycles, {self.macs} MACs, utilization {self.utilization:.1%} "
                f"on {self.rows}x{self.cols}; busy {c.get('busy', 0)}, setup {c.get('setup', 0)}, "
                f"stall in {c.get('stall_input', 0)} / weight {c.get('stall_weight', 0)} / "
                f"out {c.get('stall_output', 0)}, drain {c.get('drain', 0)}; "
                f"{self.invocations} invocations, traffic {self.bytes_total / 1e3:.1f} kB "
                f"({self.traffic_ratio:.2f}x tensors); host {self.host_work}")


def hardware_requantizes(plan, requant):
    """Whether the plan's invocations requantize in hardware: one reduction part and
    an output of at most 16 bits; otherwise the host requantizes the accumulators."""
    return requant is not None and plan.reduction_parts == 1 and requant.out_width <= 16


def _requant_slice(rq, lo, hi):
    """``rq`` for output channels ``lo:hi`` (per-channel values sliced)."""
    def part(v):
        return v if not isinstance(v, tuple) else v[lo:hi]
    return replace(rq, multiplier=part(rq.multiplier), shift=part(rq.shift))


def _invocations(plan, x, w, bias, pad_value, requant):
    cfg = plan.cfg
    hw_rq = hardware_requantizes(plan, requant)
    invs = []
    for spec in plan.tiles:
        r, c = spec.rows, spec.cols
        xs = x[spec.n, spec.ci[0]:spec.ci[1]]
        xs = xs[:, r.src][:, :, c.src]
        ws = w[spec.co[0]:spec.co[1], spec.ci_sub[0]:spec.ci_sub[1], r.k_lo:r.k_hi, c.k_lo:c.k_hi]
        bs = bias[spec.co[0]:spec.co[1]] if (bias is not None and spec.first) else None
        rq = _requant_slice(requant, spec.co[0], spec.co[1]) if hw_rq else None
        inv = build_invocation(
            cfg, xs, ws, bs, groups=spec.groups, cog=spec.cog, co_phase=spec.co_phase,
            stride=(r.stride, c.stride), dilation=(r.dil, c.dil),
            pads=(r.pad_lo, r.pad_hi, c.pad_lo, c.pad_hi),
            pad_value=pad_value, requant=rq, out_height=len(r.out_idx),
            out_width=len(c.out_idx), pass_rows=spec.pass_rows, depthwise=spec.depthwise)
        invs.append(inv)
    return invs


def run_plan(plan, x, w, bias=None, *, requant=None, pad_value=0, seed=0, idle=(0, 0, 0, 0),
             stall=0.0, harness=None, progress=None):
    """Run every invocation of ``plan`` on the RTL; return ``(out int64 (N,C,H,W), stats)``."""
    from .sim.harness import get_harness
    geom = plan.geometry
    cfg = plan.cfg
    h = harness or get_harness(cfg)
    out = np.zeros((geom.N, geom.C_out, geom.H_out, geom.W_out), dtype=np.int64)
    invs = _invocations(plan, x, w, bias, pad_value, requant)
    counters = {k: 0 for k in L.COUNTERS}
    byts = {"desc": 0.0, "param": 0.0, "weight": 0.0, "act": 0.0, "result": 0.0}
    cycles = 0
    sim_cycles = 0
    sim_seconds = 0.0
    # run in batches to bound memory
    batch, size = [], 0
    batches = []
    for inv in invs:
        batch.append(inv)
        size += inv.act_words.size + inv.weight_words.size + inv.n_results * 9
        if size > 2 ** 24:
            batches.append(batch)
            batch, size = [], 0
    if batch:
        batches.append(batch)
    done = 0
    k = 0
    for bi, batch in enumerate(batches):
        cat = lambda name: np.concatenate([getattr(i, name) for i in batch], axis=0)
        nres = sum(i.n_results for i in batch)
        run = h.run(cat("desc_words"), cat("param_words"), cat("weight_words"), cat("act_words"),
                    n_results=nres, seed=seed + bi, idle=idle, stall=stall)
        sim_cycles += run.sim_cycles
        sim_seconds += run.seconds
        if run.timeout or len(run.status) != len(batch):
            raise HardwareError(f"timeout: {len(run.status)}/{len(batch)} invocations finished, "
                                f"{len(run.result_words)}/{nres} results")
        pos = 0
        for i, inv in enumerate(batch):
            st = run.status[i]
            if st["error"]:
                raise HardwareError(f"invocation {k}: error status "
                                    f"{L.ErrorFlag.describe(st['error'])}")
            words = run.result_words[pos:pos + inv.n_results]
            pos += inv.n_results
            res = inv.unpack_results(words)
            spec = plan.tiles[k]
            out[spec.n, spec.co[0]:spec.co[1]][:, spec.rows.out_idx[:, None],
                                               spec.cols.out_idx[None, :]] += res
            meas = run.measured_cycles(i)
            if meas != st["cycles"]:
                raise HardwareError(f"invocation {k}: bench measured {meas} cycles, "
                                    f"hardware counted {st['cycles']}")
            cycles += meas
            for name in L.COUNTERS:
                counters[name] += st[name]
            for name, b in inv.bytes_moved().items():
                byts[name] += b
            k += 1
        done += len(batch)
        if progress:
            progress(done, len(invs))
    host = {"prepad_columns": plan.host_prepad_columns, "partial_sum_adds": 0,
            "host_requant": 0}
    if plan.reduction_parts > 1:
        host["partial_sum_adds"] = out.size * (plan.reduction_parts - 1)
    if requant is not None and not hardware_requantizes(plan, requant):
        out = requantize(out, requant, channel_axis=1)
        host["host_requant"] = out.size
    dwb = cfg.data_width / 8
    out_b = (requant.out_width / 8) if requant is not None else 4
    tensor_bytes = int(x.size * dwb + w.size * dwb + (0 if bias is None else bias.size * 4)
                       + out.size * out_b)
    stats = RtlStats(cycles=cycles, macs=geom.macs, rows=cfg.rows, cols=cfg.cols,
                     invocations=len(invs), counters=counters, bytes=byts,
                     tensor_bytes=tensor_bytes, host_work=host, sim_cycles=sim_cycles,
                     sim_seconds=sim_seconds, plan=plan)
    return out, stats


def run_rtl(x, weight, bias, geometry, *, hw=None, requant=None, pad_value=0, seed=0,
            idle=(0, 0, 0, 0), stall=0.0, progress=None):
    """Run one validated layer on the RTL model; see :func:`systolic_conv.conv2d`."""
    cfg = hw or DEFAULT
    if not isinstance(cfg, HardwareConfig):
        raise TypeError(f"hw={cfg!r} must be a HardwareConfig")
    x = np.asarray(x)
    batched = x.ndim == 4
    xb = x if batched else x[None]
    check_int_tensor(xb, "input", cfg.data_width)
    check_int_tensor(weight, "weight", cfg.data_width)
    if bias is not None:
        check_int_tensor(bias, "bias", 32)
    if not -(1 << (cfg.data_width - 1)) <= int(pad_value) < (1 << (cfg.data_width - 1)):
        raise ValueError(f"pad_value={pad_value} is outside the int{cfg.data_width} range")
    xb = xb.astype(np.int64)
    w = np.asarray(weight).astype(np.int64)
    b = None if bias is None else np.asarray(bias).astype(np.int64)
    xa = int(np.abs(xb).max()) if xb.size else 0
    wa = int(np.abs(w).max()) if w.size else 0
    ba = int(np.abs(b).max()) if b is not None and b.size else 0
    # kernel, stride or dilation beyond the descriptor's limits: folded into channels
    xb, w, geometry = fold_layer(xb, w, geometry, cfg, pad_value)
    try:
        plan = plan_layer(geometry, cfg, x_absmax=xa, w_absmax=wa, b_absmax=ba,
                          pad_value=pad_value)
    except ValueError:
        if not ba:
            raise
        # the bias alone breaks the accumulator bound: the hardware sums without it and
        # the host adds it (and requantizes) in int64
        plan = plan_layer(geometry, cfg, x_absmax=xa, w_absmax=wa, b_absmax=0,
                          pad_value=pad_value)
        out, stats = run_plan(plan, xb, w, None, requant=None, pad_value=pad_value,
                              seed=seed, idle=idle, stall=stall, progress=progress)
        out = out.astype(np.int64) + b.reshape(1, -1, 1, 1)
        stats.host_work["host_bias_adds"] = out.size
        if requant is not None:
            out = requantize(out, requant, channel_axis=1)
            stats.host_work["host_requant"] = out.size
        return (out if batched else out[0]), stats
    out, stats = run_plan(plan, xb, w, b, requant=requant, pad_value=pad_value, seed=seed,
                          idle=idle, stall=stall, progress=progress)
    return (out if batched else out[0]), stats
