"""The depthwise mapping's sequencer: row-vector reads and taps.

    for each channel word t (a tile of ``cols`` channels):
        for each output row oy, each block b of ``rows`` output pixels:
            for each kernel row ky, each column phase p (kx % stride_w) with taps:
                a group: read its row vector (input row oy*stride_h + ky*dil_h -
                pad_top, phase p, pixels from b*rows on), then one tap per cycle for
                kx = p, p + stride_w, ... < kw (the vector shifting by one pixel)

Two cursors walk the same groups. The *read cursor* issues one line-buffer read
per cycle (``n_p = ceil((rows + taps_p - 1) / act_pixels)`` reads per group; a
padding row's are marked ``pad``); a group's reads may begin once the shadow
register is free, i.e. in the cycle the previous group's first tap is decided,
and wait while their input row is not yet in the line buffer. The *tap cursor*
decides one tap per cycle: a group's first tap (loading the vector) once its reads
are all issued and the previous group's taps are done; a block's first tap once
its result credits are reserved, a block's last group so that its last tap comes
``rows`` cycles or more after the previous block's (a block's results drain one per
cycle), and a word's first tap once the word's tap weights are in the weight memory
(seen a cycle after ``words_in`` shows them: a registered compare). After a block's last tap the drain
tags follow, one per valid output pixel, in the next cycles.

Tap weights are read in the order the taps use them: word ``t``'s taps are weight
words ``t*kh*kw .. (t+1)*kh*kw - 1`` (the host lays them out in this order).
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig
from .control import layer_layout
from .rowvector import read_layout, op_layout
from .array import row_control_layout
from .accumulator import tag_layout
from .counters import CATEGORIES

__all__ = ["DepthwiseSequencer", "dw_op_layout"]


def _cat(name):
    return 1 << CATEGORIES.index(name)


def dw_op_layout():
    from amaranth.lib import data
    return data.StructLayout({"op": op_layout(), "ctl": row_control_layout()})


class DepthwiseSequencer(wiring.Component):
    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        abits = (cfg.weight_depth - 1).bit_length()
        rbits = cfg.h_bits + cfg.cw_bits + 1
        super().__init__({
            "layer": In(layer_layout(cfg)), "start": In(1), "run": In(1), "abort": In(1),
            "params_ready": In(1),
            "rows_in": In(rbits), "lo": Out(rbits),
            "words_in": In(abits + 2),
            # free result credits as flags: bit i is ``free >= i + 1`` (kept beside the
            # count by the Sequencer, so the credit check is a flag select)
            "credits_ge": In(cfg.rows), "reserve": Out(range(cfg.rows + 1)),
            "reserve_en": Out(1), "reserve_rows": Out(range(cfg.rows + 1)),
            "unreserve": Out(range(cfg.rows + 1)),
            "read": Out(read_layout(cfg)), "op": Out(dw_op_layout()),
            "tap_addr": Out(abits), "tag": Out(tag_layout(cfg)),
            "category": Out(len(CATEGORIES)), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, P = cfg.rows, cfg.act_pixels
        L, d = self.layer, self.layer.desc
        # the layer's fields, taken at start
        k = {n: Signal.like(getattr(d, n), name=f"k_{n}") for n in
             ("height", "out_height", "stride_h", "stride_w", "dil_h", "pad_top", "kw",
              "phase_words", "cotiles")}
        kd = {n: Signal.like(getattr(L, n), name=f"k_{n}") for n in
              ("taps", "kh_m1", "cot_m1", "nblk_m1", "last_rows")}
        go = Signal()
        with m.If(self.start):
            m.d.sync += [s.eq(getattr(d, n)) for n, s in k.items()]
            m.d.sync += [s.eq(getattr(L, n)) for n, s in kd.items()]
            m.d.sync += go.eq(d.depthwise)
        with m.Elif(~self.run | self.abort):
            m.d.sync += go.eq(0)
        # taps and reads of each column phase, a table of the (steady) kernel width and
        # stride: taps_p = ceil((kw - p) / stride_w), reads_p = ceil((rows + taps_p - 1) / P)
        S = cfg.dw_max_stride
        reads = [Signal(range(cfg.dw_shadow_words + 1), name=f"reads_p{p}") for p in range(S)]
        taps_p = [Signal(range(cfg.dw_kernel + 1), name=f"taps_p{p}") for p in range(S)]
        nph_m1 = Signal(range(S))
        # max(rows - taps_p, 0) per phase, and that of the tap cursor's group in
        # space_need (a block's last group waits while since_end <= space_need)
        space_p = [Signal(range(R + 1), name=f"space_p{p}") for p in range(S)]
        self.space_need = space_need = Signal(range(R + 1), name="tp_space_need")
        # flags of the cursors' first group, from the descriptor at start (the registered
        # copies above are valid a cycle later): one phase; the first tap the group's
        # last (stride_w >= kw); one read per group (rows + taps_0 - 1 <= P, taps_0 =
        # ceil(kw / stride_w), i.e. kw <= (P - rows + 1) * stride_w)
        one_read = P - R + 1
        self.init = {"lp": (d.stride_w == 1) | (d.kw == 1), "ltg": d.stride_w >= d.kw,
                     "lw": (d.kw <= one_read * d.stride_w) if one_read >= 1 else C(0, 1)}
        with m.If(self.start):
            with m.Switch(Cat(d.kw, d.stride_w)):
                for kw in range(1, cfg.dw_kernel + 1):
                    for sw in range(1, S + 1):
                        with m.Case(kw | (sw << len(d.kw))):
                            m.d.sync += nph_m1.eq(min(sw, kw) - 1)
                            for p in range(S):
                                taps = max(0, -(-(kw - p) // sw))
                                m.d.sync += [reads[p].eq(-(-(R + max(taps, 1) - 1) // P)),
                                             taps_p[p].eq(taps), space_p[p].eq(max(R - taps, 0))]
                                if p == 0:
                                    m.d.sync += space_need.eq(max(R - taps, 0))

        self._reads = reads
        rd = self._read_cursor(m, k, kd, reads, nph_m1, go)
        self.space_p = space_p
        self.cursors = {"read": rd,
                        "tap": self._tap_cursor(m, k, kd, rd, nph_m1, taps_p, go)}
        # lo when the cursor starts or stops (after the cursors: these take precedence)
        early = 1 if "row_release_early" in cfg.faults else 0
        with m.If(self.start):
            m.d.sync += self._lo.eq(Mux(d.depthwise, early, -1))
        with m.Elif(~self.run | self.abort):
            m.d.sync += self._lo.eq(-1)
        return m

    # ------------------------------------------------------------------ reads
    def _read_cursor(self, m, k, kd, reads, nph_m1, go):
        cfg = self.cfg
        R, P = cfg.rows, cfg.act_pixels
        lgP = P.bit_length() - 1
        xb = (cfg.lb_words - 1).bit_length()
        rb = (cfg.dw_ring_rows - 1).bit_length()
        cwid = cfg.y_bits + 2
        v = {}
        v["t"] = t = Signal(cfg.cot_bits, name="rd_t")
        v["oy"] = oy = Signal(cfg.h_bits, name="rd_oy")
        v["b"] = b = Signal(cfg.w_bits, name="rd_b")
        v["ky"] = ky = Signal(cfg.k_bits, name="rd_ky")
        v["p"] = p = Signal(range(cfg.dw_max_stride), name="rd_p")
        v["w"] = w = Signal(range(cfg.dw_shadow_words + 1), name="rd_w")
        y_row = Signal(signed(cwid), name="rd_yrow")      # oy*sh - pt
        iy = Signal(signed(cwid), name="rd_iy")           # y_row + ky*dh
        gr_base = Signal(len(self.rows_in), name="rd_grbase")   # t * height
        grb_nx = Signal(len(self.rows_in), name="rd_grb_nx")    # (t + 1) * height
        # the loop's last-of flags (phase, kernel row, block, output row, word), kept
        # beside their counters
        for n in ("lp", "lky", "lb", "loy", "lt"):
            v[n] = Signal(name=f"rd_{n}")
        x_ph = Signal(cfg.w_bits + 2, name="rd_xph")      # p * phase_words
        x_blk = Signal(cfg.w_bits + 2, name="rd_xblk")    # b * rows / P
        v["reading"] = reading = Signal(name="rd_active")
        v["sh_ready"] = sh_ready = Signal(name="sh_ready")     # a group is in the shadow
        v["all_read"] = all_read = Signal(name="rd_all")
        v["start_now"] = start_now = Signal(name="start_now")  # set by the tap cursor
        # the row's padding flag, kept beside iy (set with it, :attr:`_iy`)
        pad = Signal(name="rd_pad")

        def set_iy(y, height=k["height"]):
            val = Signal.like(iy, name="rd_iy_nx")
            m.d.comb += val.eq(y)
            return [iy.eq(val), pad.eq((val < 0) | (val >= height))]
        self._iy = set_iy
        # gr_base + iy (the line-buffer row), kept beside them: no adder before the compare
        gr = Signal(len(self.rows_in), name="rd_gr")
        self._gr = lambda base, y: gr.eq(base + (y + C(0, signed(cwid)))[:cwid])
        row_in = pad | (self.rows_in > gr)
        n_p = Array(reads)[p]
        # the group's last read, kept beside w
        v["lw"] = last_w = Signal(name="rd_lw")
        begin_ok = go & ~all_read & (~sh_ready | start_now)
        issue = Signal(name="rd_issue")
        m.d.comb += issue.eq((reading | begin_ok) & row_in)
        v["blocked"] = (reading | begin_ok) & ~row_in
        v["issue"] = issue
        # the first row the read cursor still needs, gr_base + max(y_row, 0), kept beside
        # them (lo leaves a register)
        release = Signal(len(self.rows_in), name="rd_release")
        early = 1 if "row_release_early" in self.cfg.faults else 0
        # ``lo`` (``release``, or every row when the cursor is not reading) leaves a
        # register kept beside them
        lo = self._lo = Signal.like(self.lo, name="rd_lo")
        m.d.comb += self.lo.eq(lo)

        def set_release(base, y):
            val = Signal.like(release, name="rd_release_nx")
            m.d.comb += val.eq(base + Mux(y < 0, 0, y).as_unsigned() + early)
            return [release.eq(val), lo.eq(val)]
        self._release = set_release
        m.d.sync += [
            self.read.valid.eq(issue), self.read.pad.eq(pad), self.read.slot.eq(w),
            self.read.addr.eq(Cat((x_ph + x_blk + w)[:xb], gr[:rb])),
        ]
        with m.If(self.start):
            d = self.layer.desc
            m.d.sync += [t.eq(0), oy.eq(0), b.eq(0), ky.eq(0), p.eq(0), w.eq(0), x_ph.eq(0),
                         x_blk.eq(0), gr_base.eq(0), grb_nx.eq(d.height), reading.eq(0),
                         sh_ready.eq(0),
                         v["lp"].eq((d.stride_w == 1) | (d.kw == 1)),
                         v["lky"].eq(self.layer.kh_m1 == 0), v["lb"].eq(self.layer.nblk_m1 == 0),
                         v["loy"].eq(d.out_height == 1), v["lt"].eq(self.layer.cot_m1 == 0),
                         all_read.eq(0), y_row.eq(-self.layer.desc.pad_top),
                         *set_iy(-self.layer.desc.pad_top, d.height), last_w.eq(self.init["lw"]),
                         self._gr(0, -self.layer.desc.pad_top), release.eq(early)]
        with m.Else():
            with m.If(start_now):
                m.d.sync += sh_ready.eq(0)
            with m.If(issue):
                with m.If(~last_w):
                    m.d.sync += [w.eq(w + 1), reading.eq(1), last_w.eq(w + 2 == n_p)]
                with m.Else():
                    m.d.sync += [w.eq(0), reading.eq(0), sh_ready.eq(1)]
                    self._next_group(m, k, kd, v, nph_m1, y_row, iy, gr_base, grb_nx, x_ph,
                                     x_blk)
        return v

    def _next_group(self, m, k, kd, v, nph_m1, y_row, iy, gr_base, grb_nx, x_ph, x_blk):
        R, P = self.cfg.rows, self.cfg.act_pixels
        t, oy, b, ky, p = v["t"], v["oy"], v["b"], v["ky"], v["p"]
        lp, lky, lb, loy, lt = v["lp"], v["lky"], v["lb"], v["loy"], v["lt"]
        with m.If(~lp):
            step = 0 if "dw_phase_ignored" in self.cfg.faults else k["phase_words"]
            m.d.sync += [p.eq(p + 1), x_ph.eq(x_ph + step), lp.eq(p + 1 == nph_m1),
                         v["lw"].eq(Array(self._reads)[p + 1] == 1)]
        gr = self._gr
        set_iy = self._iy
        lw0 = v["lw"].eq(self._reads[0] == 1)
        with m.Elif(~lky):
            m.d.sync += [p.eq(0), x_ph.eq(0), ky.eq(ky + 1), *set_iy(iy + k["dil_h"]), lw0,
                         gr(gr_base, iy + k["dil_h"]), lp.eq(nph_m1 == 0),
                         lky.eq(ky + 1 == kd["kh_m1"])]
        with m.Else():
            m.d.sync += [p.eq(0), x_ph.eq(0), ky.eq(0), *set_iy(y_row), gr(gr_base, y_row), lw0,
                         lp.eq(nph_m1 == 0), lky.eq(kd["kh_m1"] == 0)]
            with m.If(~lb):
                m.d.sync += [b.eq(b + 1), x_blk.eq(x_blk + R // P), lb.eq(b + 1 == kd["nblk_m1"])]
            with m.Else():
                m.d.sync += [b.eq(0), x_blk.eq(0), lb.eq(kd["nblk_m1"] == 0)]
                with m.If(~loy):
                    m.d.sync += [oy.eq(oy + 1), y_row.eq(y_row + k["stride_h"]),
                                 *set_iy(y_row + k["stride_h"]),
                                 gr(gr_base, y_row + k["stride_h"]),
                                 *self._release(gr_base, y_row + k["stride_h"]),
                                 loy.eq(oy + 2 == k["out_height"])]
                with m.Else():
                    m.d.sync += [oy.eq(0), y_row.eq(-k["pad_top"]), *set_iy(-k["pad_top"]),
                                 gr(gr_base, -k["pad_top"]), loy.eq(k["out_height"] == 1),
                                 *self._release(gr_base, -k["pad_top"])]
                    with m.If(~lt):
                        m.d.sync += [t.eq(t + 1), gr_base.eq(grb_nx),
                                     grb_nx.eq(grb_nx + k["height"]),
                                     gr(grb_nx, -k["pad_top"]), lt.eq(t + 1 == kd["cot_m1"]),
                                     *self._release(grb_nx, -k["pad_top"])]
                    with m.Else():
                        m.d.sync += [v["all_read"].eq(1), self._lo.eq(-1)]

    # ------------------------------------------------------------------ taps
    def _tap_cursor(self, m, k, kd, rd, nph_m1, taps_p, go):
        cfg = self.cfg
        R = cfg.rows
        t = Signal(cfg.cot_bits, name="tp_t")
        oy = Signal(cfg.h_bits, name="tp_oy")
        b = Signal(cfg.w_bits, name="tp_b")
        ky = Signal(cfg.k_bits, name="tp_ky")
        p = Signal(range(cfg.dw_max_stride), name="tp_p")
        kx = Signal(cfg.k_bits + 2, name="tp_kx")
        j = Signal(len(kd["taps"]), name="tp_j")          # tap of the block
        wbase = Signal(len(self.tap_addr) + 1, name="tp_wbase")     # t * taps
        active = Signal(name="tp_active")
        all_done = Signal(name="tp_done")
        since_end = Signal(range(R + 1), name="tp_since_end")   # cycles since a block ended
        drain = Signal(range(R + 1), name="tp_drain")       # drain tags left
        drain_row = Signal(range(R), name="tp_drain_row")
        drain_t = Signal.like(t)
        drain_final = Signal()
        space_need = self.space_need
        # the loop's position flags, registers kept beside the counters (set with them
        # from the counters' next values), so that the tap decision is an AND of flags:
        # the group's last tap, the group's phase / kernel row the last, the block's
        # first group, the word's first group, the last output row, the last word
        f = {n: Signal(name=f"tp_f_{n}") for n in ("ltg", "lp", "lky", "fb", "fw", "lrow",
                                                  "lword")}
        last_tap_grp = f["ltg"]
        last_grp_blk = f["lp"] & f["lky"]
        first_of_block = f["fb"]
        first_of_word = f["fw"]
        last_row = f["lrow"]
        last_word = f["lword"]
        # whether the block is its row's last, and its output pixels, kept beside b
        last_blk_row = Signal(name="tp_lastb")
        block_rows = Signal(range(R + 1), name="tp_brows")
        # the words the word's taps need and the next word's, kept beside wbase, and
        # whether they are in the weight memory, registered (a cycle after ``words_in``
        # shows them: the compare is off the decision path)
        need_w = Signal(len(self.words_in), name="tp_need_w")
        need_nx = Signal(len(self.words_in), name="tp_need_nx")
        w_ok = Signal(name="tp_w_ok")
        weights_ok = ~first_of_word | w_ok
        credit_ok = ~first_of_block | (block_rows == 0) | \
            Array(self.credits_ge)[(block_rows - 1)[:max(1, (R - 1).bit_length())]]
        # a block's drain takes `rows` cycles: its last tap comes `rows` cycles or more
        # after the previous block's (the last group waits when it would be earlier)
        space_ok = ~last_grp_blk | (since_end > space_need)
        start_now = rd["start_now"]
        m.d.comb += start_now.eq(go & ~self.abort & self.params_ready & ~all_done & ~active &
                                 rd["sh_ready"] & weights_ok & credit_ok & space_ok)
        tap = Signal(name="tp_tap")
        m.d.comb += tap.eq((start_now | active) & ~self.abort)
        ends_block = tap & last_tap_grp & last_grp_blk
        m.d.comb += [self.reserve_en.eq(start_now & first_of_block),
                     self.reserve_rows.eq(block_rows),
                     self.reserve.eq(Mux(self.reserve_en, block_rows, 0))]
        # an abort ends the taps where they are: the open block's credits, reserved at its
        # first tap, are given back (its results never come)
        open_rows = Signal(range(R + 1), name="tp_open")
        with m.If(self.abort | ends_block | self.start):
            m.d.sync += open_rows.eq(0)
        with m.Elif(start_now & first_of_block):
            m.d.sync += open_rows.eq(block_rows)
        m.d.comb += self.unreserve.eq(Mux(self.abort, open_rows, 0))
        m.d.sync += [
            self.op.op.load.eq(start_now), self.op.op.shift.eq(active),
            self.op.ctl.valid.eq(tap), self.op.ctl.latch.eq(0),
            self.op.ctl.first.eq(start_now & first_of_block), self.op.ctl.last.eq(ends_block),
            self.tap_addr.eq(wbase + j),
        ]
        with m.If(self.start):
            m.d.sync += [t.eq(0), oy.eq(0), b.eq(0), ky.eq(0), p.eq(0), kx.eq(0), j.eq(0),
                         wbase.eq(0), need_w.eq(self.layer.taps),
                         need_nx.eq(self.layer.taps << 1), w_ok.eq(0), active.eq(0),
                         all_done.eq(0), since_end.eq(R), drain.eq(0),
                         last_blk_row.eq(self.layer.nblk_m1 == 0),
                         block_rows.eq(Mux(self.layer.nblk_m1 == 0, self.layer.last_rows, R)),
                         f["ltg"].eq(self.init["ltg"]), f["lp"].eq(self.init["lp"]),
                         f["lky"].eq(self.layer.kh_m1 == 0), f["fb"].eq(1), f["fw"].eq(1),
                         f["lrow"].eq(self.layer.desc.out_height == 1),
                         f["lword"].eq(self.layer.cot_m1 == 0)]
        with m.Else():
            m.d.sync += w_ok.eq(self.words_in >= need_w)
            with m.If(ends_block):
                m.d.sync += since_end.eq(1)
            with m.Elif(since_end != R):
                m.d.sync += since_end.eq(since_end + 1)
            with m.If(self.abort):
                m.d.sync += active.eq(0)
            with m.If(tap):
                m.d.sync += j.eq(Mux(ends_block, 0, j + 1))
                with m.If(~last_tap_grp):
                    m.d.sync += [kx.eq(kx + k["stride_w"]), active.eq(1),
                                 f["ltg"].eq(kx + k["stride_w"] + k["stride_w"] >= k["kw"])]
                with m.Else():
                    m.d.sync += active.eq(0)
                    self._tap_next_group(m, k, kd, locals())
        # the drain tags: one per valid pixel of the block just finished
        with m.If(ends_block):
            m.d.sync += [drain.eq(block_rows), drain_row.eq(0), drain_t.eq(t),
                         drain_final.eq(last_blk_row & last_row & last_word)]
        with m.Elif(drain != 0):
            m.d.sync += [drain.eq(drain - 1), drain_row.eq(drain_row + 1)]
        m.d.sync += [
            self.tag.valid.eq(drain != 0), self.tag.first.eq(1), self.tag.last.eq(1),
            self.tag.final.eq(drain_final & (drain == 1)), self.tag.addr.eq(0),
            self.tag.cotile.eq(drain_t), self.tag.row.eq(drain_row),
        ]
        m.d.comb += self.done.eq(all_done & (drain == 0))
        # what each cycle is
        cat = Signal(len(CATEGORIES))
        with m.If(~go | ~self.params_ready):
            m.d.comb += cat.eq(_cat("setup"))
        with m.Elif(tap):
            m.d.comb += cat.eq(_cat("busy"))
        with m.Elif(all_done):
            m.d.comb += cat.eq(_cat("drain"))
        with m.Elif(rd["sh_ready"] & ~credit_ok):
            m.d.comb += cat.eq(_cat("stall_output"))
        with m.Elif(rd["sh_ready"] & ~weights_ok):
            m.d.comb += cat.eq(_cat("stall_weight"))
        with m.Elif(~rd["sh_ready"] & rd["blocked"]):
            m.d.comb += cat.eq(_cat("stall_input"))
        with m.Else():
            m.d.comb += cat.eq(_cat("fill"))
        m.d.comb += self.category.eq(cat)
        return {"t": t, "oy": oy, "b": b, "ky": ky, "p": p, "kx": kx, "j": j, "active": active}

    def _tap_next_group(self, m, k, kd, v):
        t, oy, b, ky, p, kx = v["t"], v["oy"], v["b"], v["ky"], v["p"], v["kx"]
        f = v["f"]
        sn, sp = v["space_need"], self.space_p
        ltg0 = k["stride_w"] >= k["kw"]          # a group's last tap is its first
        with m.If(~f["lp"]):
            m.d.sync += [p.eq(p + 1), kx.eq(p + 1), sn.eq(Array(sp)[p + 1]),
                         f["lp"].eq(p + 1 == v["nph_m1"]),
                         f["ltg"].eq(p + 1 + k["stride_w"] >= k["kw"]),
                         f["fb"].eq(0), f["fw"].eq(0)]
        with m.Elif(~f["lky"]):
            m.d.sync += [p.eq(0), kx.eq(0), ky.eq(ky + 1), sn.eq(sp[0]),
                         f["lp"].eq(v["nph_m1"] == 0), f["lky"].eq(ky + 1 == kd["kh_m1"]),
                         f["ltg"].eq(ltg0), f["fb"].eq(0), f["fw"].eq(0)]
        with m.Else():
            m.d.sync += [p.eq(0), kx.eq(0), ky.eq(0), sn.eq(sp[0]),
                         f["lp"].eq(v["nph_m1"] == 0), f["lky"].eq(kd["kh_m1"] == 0),
                         f["ltg"].eq(ltg0), f["fb"].eq(1), f["fw"].eq(0)]
            lastb, brows, R = v["last_blk_row"], v["block_rows"], self.cfg.rows
            with m.If(~lastb):
                nl = b + 1 == kd["nblk_m1"]
                m.d.sync += [b.eq(b + 1), lastb.eq(nl), brows.eq(Mux(nl, kd["last_rows"], R))]
            with m.Else():
                nl = kd["nblk_m1"] == 0
                m.d.sync += [b.eq(0), lastb.eq(nl), brows.eq(Mux(nl, kd["last_rows"], R))]
                with m.If(~f["lrow"]):
                    m.d.sync += [oy.eq(oy + 1), f["lrow"].eq(oy + 2 == k["out_height"])]
                with m.Else():
                    m.d.sync += [oy.eq(0), f["fw"].eq(1), f["lrow"].eq(k["out_height"] == 1)]
                    with m.If(~f["lword"]):
                        m.d.sync += [t.eq(t + 1), v["wbase"].eq(v["wbase"] + kd["taps"]),
                                     v["need_w"].eq(v["need_nx"]),
                                     v["need_nx"].eq(v["need_nx"] + kd["taps"]),
                                     v["w_ok"].eq(self.words_in >= v["need_nx"]),
                                     f["lword"].eq(t + 1 == kd["cot_m1"])]
                    with m.Else():
                        m.d.sync += v["all_done"].eq(1)
