"""The dense mapping's sequencer: the loop nest that issues elements.

    for each pass (G output rows, the last one possibly fewer):
        wait until the pass's input rows are in the line buffer
        for each output-channel tile t:
            for each fold (ky, kx, input word w of t's range):   # one weight tile
                for each output row g of the pass, each output column ox:
                    issue one element: the word at (y, x) =
                    (y_pass + g*stride_h + ky*dil_h, ox*stride_w + kx*dil_w - pad_left)

One element per cycle. A fold's first element waits for its weight tile
(``tile_ready``) and latches it as it passes (``fold_start`` tells the loader);
an element of a tile's last fold reserves a result credit (``credit_ok``). Each
element carries its line-buffer address, pixel and padding flag (``element``) and
its accumulator tag (``tag``: first / last fold, accumulator address, tile). The
pass's first row is released to the line buffer (``lo``) while the pass waits;
once everything is issued every row is released.

``category`` names what each cycle is, for the performance counters.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import HardwareConfig
from .control import layer_layout
from .params import range_layout
from .fetch import element_layout
from .accumulator import tag_layout
from .counters import CATEGORIES

__all__ = ["DenseSequencer"]


def _cat(name):
    return 1 << CATEGORIES.index(name)


class DenseSequencer(wiring.Component):
    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        super().__init__({
            "layer": In(layer_layout(cfg)), "start": In(1), "run": In(1), "abort": In(1),
            "params_ready": In(1),
            "range_addr": Out(cfg.cot_bits), "range_data": In(range_layout(cfg)),
            "rows_in": In(cfg.h_bits + cfg.cw_bits + 1),
            "lo": Out(cfg.h_bits + cfg.cw_bits + 1),
            "tile_ready": In(1), "fold_start": Out(1),
            "credit_ok": In(1), "reserve": Out(1),
            "element": Out(element_layout(cfg)), "tag": Out(tag_layout(cfg)),
            "category": Out(len(CATEGORIES)), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        faults = cfg.faults
        P = cfg.act_pixels
        lgP = P.bit_length() - 1
        sb = (cfg.lb_rows - 1).bit_length()
        cb = (cfg.max_cwords - 1).bit_length()
        xb = (cfg.lb_words - 1).bit_length()
        L = self.layer
        d = L.desc
        yw, xw_ = cfg.y_bits + 2, cfg.x_bits + 2   # signed coordinate widths

        # the layer's fields, a copy taken at start
        k = {n: Signal.like(getattr(d, n), name=f"k_{n}") for n in
             ("height", "width", "out_height", "pass_rows", "stride_h", "stride_w", "dil_h",
              "dil_w", "pad_top", "pad_left", "cotiles")}
        kd = {n: Signal.like(getattr(L, n), name=f"k_{n}") for n in
              ("kh_m1", "kw_m1", "cot_m1", "ow_m1", "pass_span", "pass_step")}
        with m.If(self.start):
            m.d.sync += [s.eq(getattr(d, n)) for n, s in k.items()]
            m.d.sync += [s.eq(getattr(L, n)) for n, s in kd.items()]
        step_h = k["stride_h"]
        if "stride_h_off_by_one" in faults:
            step_h = Mux(k["stride_h"] > 1, k["stride_h"] + 1, k["stride_h"])
        step_w_dil = 1 if "dilation_w_ignored" in faults else k["dil_w"]

        t = Signal(cfg.cot_bits)
        cur = Signal(range_layout(cfg))
        nxt = Signal(range_layout(cfg))
        ky, kx = Signal(cfg.k_bits), Signal(cfg.k_bits)
        cw = Signal(cfg.cw_bits)
        g = Signal(cfg.h_bits)
        ox = Signal(cfg.w_bits)
        gcount = Signal(cfg.h_bits + 1)
        rows_left = Signal(cfg.h_bits + 1)
        y_pass, y_end, y_tap, iy = (Signal(signed(yw), name=n) for n in
                                    ("y_pass", "y_end", "y_tap", "iy"))
        x_tap, ix = Signal(signed(xw_), name="x_tap"), Signal(signed(xw_), name="ix")
        acc_addr = Signal(cfg.acc_addr_bits)
        first_el = Signal()

        # the loop nest's "last" flags, registers kept beside their counters (set with
        # them from the counter's next value), so that an element's issue decision is
        # an AND of flags
        last_ox, last_g, last_cw, last_kx, last_ky, last_t, last_pass, pass_nx_last = (
            Signal(name=n) for n in ("l_ox", "l_g", "l_cw", "l_kx", "l_ky", "l_t", "l_pass",
                                     "l_pass_nx"))
        gcount_m1 = Signal(cfg.h_bits + 1)           # gcount - 1, kept beside it
        # the next pass's rows left and rows, registered from the current pass's (steady
        # from its PASS cycle on; a pass ends in ISSUE, a cycle later or more)
        left_nx, gc_nx, gc_nx_m1 = (Signal(cfg.h_bits + 1, name=n) for n in
                                    ("left_nx", "gc_nx", "gc_nx_m1"))
        left_now = rows_left - gcount
        few = k["pass_rows"] < left_now
        m.d.sync += [left_nx.eq(left_now), gc_nx.eq(Mux(few, k["pass_rows"], left_now)),
                     gc_nx_m1.eq(Mux(few, k["pass_rows"] - 1, left_now - 1)),
                     pass_nx_last.eq(~few)]
        # and the loop's combined ends, registers kept beside the flags (set from the
        # flags' next values, :meth:`_flags`): ``fe`` a fold's last element, ``lf`` a
        # tile's last fold, ``te`` a tile's last element, ``pe`` a pass's last element
        fe, lf, te, pe = (Signal(name=n) for n in ("c_fe", "c_lf", "c_te", "c_pe"))
        flags = {"ox": last_ox, "g": last_g, "cw": last_cw, "kx": last_kx, "ky": last_ky,
                 "t": last_t}
        first_cw = cw == cur.first
        if "cw_first_ignored" in faults:
            first_cw = cw == 0
        first_fold = (ky == 0) & (kx == 0) & first_cw

        # the next tile's word range: a registered read of the range memory, in ``nxt``
        # two cycles after the tile began (``tile_age``); a tile's last element waits for
        # it (only a tile of one or two elements ever does)
        m.d.comb += self.range_addr.eq(Mux(last_t, 0, t + 1))
        m.d.sync += nxt.eq(self.range_data)
        tile_age = Signal(range(3))
        nxt_ok = (tile_age == 2) | ~te

        issue = Signal()
        ok = (~first_el | self.tile_ready) & (~lf | self.credit_ok) & nxt_ok
        rows_ready = (self.rows_in >= y_end) | (self.rows_in >= k["height"]) | (y_end <= 0)
        # ``lo``, the first row the sequencer still needs, leaves a register kept beside
        # the pass (0 before the layer's first pass, the pass's first row from its PASS
        # cycle on, every row once everything is issued)
        early = 1 if "row_release_early" in faults else 0
        lo = Signal.like(self.lo, name="lo_r")
        m.d.comb += self.lo.eq(lo)
        self._rel = lambda y: lo.eq(Mux(y < 0, 0, y) + early)
        # (before the FSM: PARAMS' reset of tile_age takes precedence)
        with m.If(issue & te):
            m.d.sync += tile_age.eq(0)
        with m.Elif(tile_age != 2):
            m.d.sync += tile_age.eq(tile_age + 1)
        cat = Signal(len(CATEGORIES))
        with m.FSM(name="dseq"):
            with m.State("IDLE"):
                m.d.comb += cat.eq(_cat("setup"))
                with m.If(self.start & ~d.depthwise):
                    m.next = "PARAMS"
            with m.State("PARAMS"):
                m.d.comb += cat.eq(_cat("setup"))
                m.d.sync += [t.eq(0), cur.eq(self.range_data), cw.eq(self.range_data.first),
                             tile_age.eq(0),
                             ky.eq(0), kx.eq(0), g.eq(0), ox.eq(0), acc_addr.eq(0),
                             first_el.eq(1), rows_left.eq(k["out_height"]),
                             gcount.eq(Mux(k["pass_rows"] < k["out_height"], k["pass_rows"],
                                           k["out_height"])),
                             gcount_m1.eq(Mux(k["pass_rows"] < k["out_height"], k["pass_rows"],
                                              k["out_height"]) - 1),
                             last_pass.eq(k["out_height"] <= k["pass_rows"]),
                             y_pass.eq(-k["pad_top"]), y_tap.eq(-k["pad_top"]),
                             iy.eq(-k["pad_top"]), y_end.eq(kd["pass_span"] - k["pad_top"]),
                             x_tap.eq(-k["pad_left"]), ix.eq(-k["pad_left"])]
                self._flags(m, locals(), ox=kd["ow_m1"] == 0,
                            g=(k["pass_rows"] == 1) | (k["out_height"] == 1),
                            cw=self.range_data.first == self.range_data.last,
                            kx=kd["kw_m1"] == 0, ky=kd["kh_m1"] == 0, t=kd["cot_m1"] == 0)
                m.d.comb += self.range_addr.eq(0)
                with m.If(self.params_ready):
                    m.d.sync += lo.eq(early)             # the first pass's first row is 0
                    m.next = "PASS"
                with m.If(self.abort):
                    m.d.sync += lo.eq(-1)
                    m.next = "DONE"
            with m.State("PASS"):
                m.d.comb += cat.eq(Mux(rows_ready, _cat("setup"), _cat("stall_input")))
                with m.If(rows_ready):
                    m.next = "ISSUE"
                with m.If(self.abort):
                    m.d.sync += lo.eq(-1)
                    m.next = "DONE"
            with m.State("ISSUE"):
                m.d.comb += issue.eq(ok)
                m.d.comb += cat.eq(Mux(ok, _cat("busy"),
                                       Mux((first_el & ~self.tile_ready) | ~nxt_ok,
                                           _cat("stall_weight"), _cat("stall_output"))))
                with m.If(issue):
                    self._advance(m, locals())
                with m.If(self.abort):
                    m.d.sync += lo.eq(-1)
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [self.done.eq(1), cat.eq(_cat("drain"))]
                with m.If(~self.run):
                    m.d.sync += lo.eq(0)
                    m.next = "IDLE"
        m.d.comb += self.category.eq(cat)

        self._outputs(m, locals())
        m.d.comb += [self.fold_start.eq(issue & first_el), self.reserve.eq(issue & lf)]
        return m

    def _outputs(self, m, v):
        """The element and its tag, registered."""
        cfg, k = self.cfg, v["k"]
        lgP, xb, cb, sb = v["lgP"], v["xb"], v["cb"], v["sb"]
        ix, iy, issue = v["ix"], v["iy"], v["issue"]
        drop = (v["ox"] == 3) if "dropped_valid" in cfg.faults else C(0, 1)
        in_y = (iy >= 0) & (iy < k["height"])
        in_x = (ix >= 0) & (ix < k["width"])
        ux = ix.as_unsigned()
        m.d.sync += [
            self.element.ctl.valid.eq(issue & ~drop), self.element.ctl.latch.eq(v["first_el"]),
            self.element.ctl.first.eq(0), self.element.ctl.last.eq(0),
            self.element.addr.eq(Cat(ux[lgP:lgP + xb], v["cw"][:cb], iy.as_unsigned()[:sb])),
            self.element.px.eq(ux[:lgP] if lgP else 0),
            self.element.pad.eq(~(in_y & in_x)),
            self.tag.valid.eq(issue & ~drop), self.tag.first.eq(v["first_fold"]),
            self.tag.last.eq(v["lf"]),
            self.tag.final.eq(v["pe"] & v["last_pass"]),
            self.tag.addr.eq(v["acc_addr"]), self.tag.cotile.eq(v["t"]), self.tag.row.eq(0),
        ]

    @staticmethod
    def _flags(m, v, **new):
        """Set the loop's last-of flags named in ``new`` and the combined ends from
        the flags' values after this cycle."""
        F = v["flags"]
        val = {n: new.get(n, F[n]) for n in F}
        fe = val["ox"] & val["g"]
        lf = val["cw"] & val["kx"] & val["ky"]
        m.d.sync += [F[n].eq(e) for n, e in new.items()]
        m.d.sync += [v["fe"].eq(fe), v["lf"].eq(lf), v["te"].eq(fe & lf),
                     v["pe"].eq(fe & lf & val["t"])]

    def _advance(self, m, v):
        """Next element: column, row of the pass, fold (word, kx, ky), tile, pass. The
        branches are chosen by the combined ends (registers), so a register's enable
        is the issue decision and one flag."""
        cfg = self.cfg
        g, ox, iy, ix, acc_addr = v["g"], v["ox"], v["iy"], v["ix"], v["acc_addr"]
        k, kd = v["k"], v["kd"]
        cw, kx, ky, t, cur, nxt = v["cw"], v["kx"], v["ky"], v["t"], v["cur"], v["nxt"]
        x_tap, y_tap, y_pass = v["x_tap"], v["y_tap"], v["y_pass"]
        flags = self._flags
        ox0 = kd["ow_m1"] == 0
        g0 = v["gcount_m1"] == 0
        m.d.sync += v["first_el"].eq(0)

        def fold_common():
            m.d.sync += [ox.eq(0), g.eq(0), acc_addr.eq(0), v["first_el"].eq(1)]

        def tile_common():
            m.d.sync += [cw.eq(nxt.first), cur.eq(nxt), kx.eq(0), ky.eq(0),
                         x_tap.eq(-k["pad_left"]), ix.eq(-k["pad_left"])]
            return dict(cw=nxt.first == nxt.last, kx=kd["kw_m1"] == 0, ky=kd["kh_m1"] == 0)

        with m.If(v["pe"]):                   # the pass's last element
            fold_common()
            new = tile_common()
            step = kd["pass_step"]
            y_nx = Signal.like(y_pass, name="y_pass_nx")
            m.d.comb += y_nx.eq(y_pass + step)
            m.d.sync += [t.eq(0), v["rows_left"].eq(v["left_nx"]), y_pass.eq(y_nx),
                         v["y_end"].eq(v["y_end"] + step), y_tap.eq(y_nx),
                         iy.eq(y_nx), v["gcount"].eq(v["gc_nx"]),
                         v["gcount_m1"].eq(v["gc_nx_m1"]),
                         v["last_pass"].eq(v["pass_nx_last"])]
            flags(m, v, ox=ox0, g=v["gc_nx_m1"] == 0, t=kd["cot_m1"] == 0, **new)
            with m.If(v["last_pass"]):
                m.d.sync += v["lo"].eq(-1)
                m.next = "DONE"
            with m.Else():
                m.d.sync += self._rel(y_nx)
                m.next = "PASS"
        with m.Elif(v["te"]):                 # a tile's last element
            fold_common()
            new = tile_common()
            m.d.sync += [y_tap.eq(y_pass), iy.eq(y_pass), t.eq(t + 1)]
            flags(m, v, ox=ox0, g=g0, t=t + 1 == kd["cot_m1"], **new)
        with m.Elif(v["fe"]):                 # a fold's last element
            fold_common()
            with m.If(~v["last_cw"]):
                m.d.sync += [cw.eq(cw + 1), ix.eq(x_tap), iy.eq(y_tap)]
                flags(m, v, ox=ox0, g=g0, cw=cw + 1 == cur.last)
            with m.Elif(~v["last_kx"]):
                m.d.sync += [cw.eq(cur.first), kx.eq(kx + 1), x_tap.eq(x_tap + v["step_w_dil"]),
                             ix.eq(x_tap + v["step_w_dil"]), iy.eq(y_tap)]
                flags(m, v, ox=ox0, g=g0, cw=cur.first == cur.last, kx=kx + 1 == kd["kw_m1"])
            with m.Else():
                m.d.sync += [cw.eq(cur.first), kx.eq(0), ky.eq(ky + 1), x_tap.eq(-k["pad_left"]),
                             ix.eq(-k["pad_left"]), y_tap.eq(y_tap + k["dil_h"]),
                             iy.eq(y_tap + k["dil_h"])]
                flags(m, v, ox=ox0, g=g0, cw=cur.first == cur.last, kx=kd["kw_m1"] == 0,
                      ky=ky + 1 == kd["kh_m1"])
        with m.Elif(~v["last_ox"]):
            m.d.sync += [ox.eq(ox + 1), ix.eq(ix + k["stride_w"]), acc_addr.eq(acc_addr + 1)]
            flags(m, v, ox=ox + 1 == kd["ow_m1"])
        with m.Else():
            m.d.sync += [ox.eq(0), g.eq(g + 1), iy.eq(iy + v["step_h"]), ix.eq(x_tap),
                         acc_addr.eq(acc_addr + 1)]
            flags(m, v, ox=ox0, g=g + 1 == v["gcount_m1"])
