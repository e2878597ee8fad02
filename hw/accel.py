"""Top level: the conv2d accelerator.

Blocks (all in this module's :class:`Conv2dAccelerator`, the array and the
requantizer in their own components):

* descriptor check -- validates a layer descriptor against the elaborated limits;
* tile-parameter, weight and activation intake -- the three payload streams, with
  beat counting against the descriptor (``last`` framing) and error flags;
  activations come row -> column -> word, or word -> row -> column (descriptor
  ``word_major``: depthwise invocations with one pass whose rows all fit, where
  tile ``t`` issues as soon as word ``t`` is in);
* line buffer -- ``lb_rows`` banks (one per row slot) of ``max_width`` pixels of
  ``max_cwords`` words; rows are written in streaming order, a slot is reused as
  soon as no later pass needs its row, and all banks are read at the same
  (column, word) address each cycle. With two-pixel activation beats
  (``act_pixels``) each bank is two memories, even and odd columns: a beat writes
  both, and two neighbouring columns can be read in one cycle;
* the window generator / sequencer -- dense mapping: walks pass -> output-channel
  tile -> tap -> input word (one *fold*, one weight tile) -> output row in the pass
  -> output column, computes the input coordinate
  ``(oy*sh + ky*dh - pt, ox*sw + kx*dw - pl)`` with run-time stride, dilation and
  kernel size, inserts the pad value on the fly and maps reflect / replicate /
  circular columns at the left and right borders. Depthwise mapping (descriptor
  flag): a fold holds ``rows`` kernel taps (rows) of ``cols`` channels (columns);
  the sequencer reads one window column per cycle from every bank, shifts it into
  a ``dw_kernel x dw_window_cols`` window register, and issues an element each
  ``stride_w`` columns once the window is full. *Dual reads*: whenever the next
  two columns are both needed before the next element completes (window fill,
  strides above 1), it reads both in one cycle, one from each parity half, so an
  element always completes on the newest column (stride 2: one element per cycle).
  Allowed where the border mapping keeps the parities of the two columns apart
  (pad value, reflect, circular over an even width);
* :class:`~.array.SystolicArray` -- weight-stationary, double-buffered weights
  fed by the weight loader;
* accumulator buffer -- one pass worth of output pixels; the first fold of a tile
  starts from the bias, the last fold sends the sum to the requantizer;
* :class:`~.requant.Requantizer` and a result FIFO; issue is credit-controlled, so
  back-pressure on ``o_result`` stalls the sequencer instead of losing data;
* performance counters, reported on ``o_status`` after every invocation.

Timing used by the cycle model (``systolic_conv.cycle_model``): a fold of
``T = gcount*W_out`` elements issues one element per cycle (depthwise: one window
column per cycle, ``(W_out-1)*sw + (kw-1)*dw + 1`` per output row; with dual reads
``((kw-1)*dw) // 2 + (W_out-1)*ceil(sw/2) + 1``); the weight
tile of fold ``n`` starts loading when fold ``n-2`` has issued completely and when
its words are in the weight memory, takes ``rows`` cycles of reads, latches two
cycles after the last read, and fold ``n`` may issue from the cycle after its
latch. A pass starts when the rows it needs are in the line buffer. Results
leave ``rows + cols + 16`` cycles after issue.
"""

from amaranth import *
from amaranth.lib import wiring, stream, data, memory, fifo
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .config import HardwareConfig
from .layouts import (descriptor_layout, param_beat_layout, act_beat_layout,
                      weight_beat_layout, result_beat_layout, status_layout,
                      tile_params_layout, channel_params_layout, PadMode, RequantMode,
                      ErrorFlag, COUNTERS, STATUS_COUNTER_WIDTH, ZP_WIDTH)
from .array import SystolicArray
from .requant import Requantizer

__all__ = ["Conv2dAccelerator", "RESULT_LATENCY"]

# memories whose reads never use a word written in the same cycle: Yosys then maps
# each read straight onto the block RAM's port (no collision bypass after it), and a
# register placed after the read stays a register
NO_RW_CHECK = {"no_rw_check": 1}

# issue -> line-buffer data (1) -> its register (1) -> slot within a group of four (1) ->
# tap word register / depthwise window (1) -> array (R+C+1) -> accumulate (1) ->
# register (1) -> requantizer -> FIFO write.
RESULT_EXTRA = 4 + 1 + 1 + Requantizer.LATENCY


def RESULT_LATENCY(cfg):
    return cfg.array_latency + RESULT_EXTRA


class Conv2dAccelerator(wiring.Component):
    """The accelerator; see the module docstring and :mod:`.layouts` for the streams."""

    def __init__(self, cfg: HardwareConfig = HardwareConfig()):
        self.cfg = cfg
        super().__init__({
            "i_desc": In(stream.Signature(descriptor_layout(cfg))),
            "i_param": In(stream.Signature(param_beat_layout(cfg))),
            "i_weight": In(stream.Signature(weight_beat_layout(cfg))),
            "i_act": In(stream.Signature(act_beat_layout(cfg))),
            "o_result": Out(stream.Signature(result_beat_layout(cfg))),
            "o_status": Out(stream.Signature(status_layout(cfg))),
            "active": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        faults = cfg.faults
        R, Cc = cfg.rows, cfg.cols
        dw, aw = cfg.data_width, cfg.acc_width

        lb_slot_bits = ceil_log2(cfg.lb_rows)
        lb_x_bits = ceil_log2(cfg.max_width)
        lb_cw_bits = ceil_log2(cfg.max_cwords)
        cb = max(cfg.h_bits, cfg.w_bits) + cfg.pad_bits + cfg.s_bits + cfg.d_bits + 4  # coordinates

        desc = Signal(descriptor_layout(cfg))
        error = Signal(8)

        # ------------------------------------------------------------------ state
        S_IDLE, S_CHECK1, S_CHECK2, S_RUN, S_ABORT, S_STATUS = range(6)
        abort_wait_done = Signal()
        state = Signal(range(6))
        m.d.comb += self.active.eq(state != S_IDLE)

        # ------------------------------------------------------------------ memories
        # line buffer: one bank per row slot, all banks read at the same (column, word)
        # addresses; with two-pixel activation beats each bank is two memories by
        # column parity (a beat writes both; dual reads take a column from each)
        P = cfg.act_pixels
        split = P == 2
        lb_xh_bits = lb_x_bits - (P - 1)   # column address bits inside a half
        bank_w, bank_r = [], []       # [slot][parity]
        for b in range(cfg.lb_rows):
            ws, rs = [], []
            for h in range(P):
                mem = memory.Memory(shape=data.ArrayLayout(signed(dw), R),
                                    depth=(cfg.max_width // P) * cfg.max_cwords, init=[],
                                    attrs=NO_RW_CHECK)
                m.submodules[f"lb{b}" + ("eo"[h] if split else "")] = mem
                ws.append(mem.write_port())
                rs.append(mem.read_port())
            bank_w.append(ws)
            bank_r.append(rs)
        m.submodules.wmem = wmem = memory.Memory(
            shape=data.ArrayLayout(signed(dw), Cc), depth=cfg.weight_depth, init=[],
            attrs=NO_RW_CHECK)
        wm_w = wmem.write_port()
        wm_r = wmem.read_port()
        m.submodules.pmem = pmem = memory.Memory(
            shape=data.ArrayLayout(channel_params_layout(cfg), Cc), depth=cfg.max_cotiles, init=[],
            attrs=NO_RW_CHECK)
        pm_w = pmem.write_port()
        pm_r = pmem.read_port()
        cw_shape = data.StructLayout({"first": unsigned(cfg.cw_bits), "last": unsigned(cfg.fold_bits)})
        m.submodules.cwmem = cwmem = memory.Memory(shape=cw_shape, depth=cfg.max_cotiles, init=[])
        cw_w = cwmem.write_port()
        cw_r = cwmem.read_port(domain="comb")
        cw_r1 = cwmem.read_port(domain="comb")    # tile t+1 (prefetch)
        cw_r2 = cwmem.read_port(domain="comb")    # tile t+2 (prefetch)
        m.submodules.accmem = accmem = memory.Memory(
            shape=data.ArrayLayout(signed(aw), Cc), depth=cfg.acc_depth, init=[],
            attrs=NO_RW_CHECK)
        acc_w = accmem.write_port()
        acc_r = accmem.read_port()

        m.submodules.array = array = SystolicArray(cfg)
        m.submodules.requant = rq = Requantizer(cfg)
        res_layout = result_beat_layout(cfg)
        m.submodules.ofifo = ofifo = fifo.SyncFIFOBuffered(width=res_layout.size,
                                                           depth=cfg.out_fifo_depth)

        # ------------------------------------------------------------------ derived
        taps = Signal(2 * cfg.k_bits)
        pass_span = Signal(cb)           # rows a pass needs
        pass_step = Signal(cb)           # G * stride_h
        acc_need = Signal(cfg.h_bits + cfg.w_bits)
        last_ix = Signal(signed(cb))
        last_iy = Signal(signed(cb))
        x_bound = Signal(signed(cb + 1))     # width - 1 + pad_right
        y_bound = Signal(signed(cb + 1))     # height - 1 + pad_bottom
        bad_desc = Signal()                  # a check on the descriptor's fields alone failed
        act_total = Signal(cfg.h_bits + cfg.w_bits + cfg.cw_bits)
        w_total = Signal(cfg.tile_bits + ceil_log2(R) + 1)
        qlo = Signal(signed(ZP_WIDTH))
        ow_m1 = Signal(cfg.w_bits)       # out_width - 1, kw - 1, kh - 1, cotiles - 1
        ow_m2 = Signal(cfg.w_bits)       # out_width - 2 (modulo 2**w_bits)
        kw_m1 = Signal(cfg.k_bits)
        kh_m1 = Signal(cfg.k_bits)
        cot_m1 = Signal(cfg.cot_bits)
        qhi = Signal(signed(ZP_WIDTH))
        # products of descriptor fields, registered with the descriptor
        mul_ph = Signal(cb)              # (pass_rows - 1) * stride_h
        mul_kh = Signal(cb)              # (kh - 1) * dil_h
        mul_ow = Signal(cb)              # (out_width - 1) * stride_w
        mul_kw = Signal(cb)              # (kw - 1) * dil_w
        mul_oh = Signal(cb)              # (out_height - 1) * stride_h
        mul_hw = Signal(cfg.h_bits + cfg.w_bits)   # height * beats per row per word

        # ------------------------------------------------------------------ intake state
        p_count = Signal(cfg.cot_bits + 1)
        p_done = Signal()
        tiles_sum = Signal(cfg.tile_bits + 2 * cfg.k_bits + cfg.cw_bits + 1)
        w_count = Signal(len(w_total) + 1)
        w_done = Signal()
        a_count = Signal(len(act_total) + 1)
        a_done = Signal()
        wr_cw = Signal(cfg.cw_bits)
        wr_ix = Signal(cfg.w_bits)
        wr_iy = Signal(cfg.h_bits + 1)   # rows completely received (word-major: of the word)
        words_in = Signal(cfg.cw_bits + 1)   # word-major: words completely received
        WI_HOLD, WI_ZERO, WI_INC = range(3)
        wi_case = Signal(range(3))           # how words_in changes
        lo = Signal(cfg.h_bits + 1)      # first row still needed
        # the write row and the first row needed are set by choosing one of their few
        # next values (lo_case, wr_case); the values, and "a row slot is free" for
        # every pair of them, are formed below from registers
        LO_HOLD, LO_ZERO, LO_ALL, LO_RELEASE = range(4)
        WR_HOLD, WR_ZERO, WR_INC = range(3)
        lo_case = Signal(2)
        wr_case = Signal(2)
        m.d.comb += [lo_case.eq(LO_HOLD), wr_case.eq(WR_HOLD)]
        a_overflow = Signal()            # a_count >= act_total, kept as a register
        params_ok = Signal()

        run_or_abort = (state == S_RUN) | (state == S_ABORT)
        aborting = state == S_ABORT

        # ------------------------------------------------------------------ descriptor
        m.d.comb += self.i_desc.ready.eq(state == S_IDLE)

        # ------------------------------------------------------------------ counters
        counters = {name: Signal(STATUS_COUNTER_WIDTH, name=f"cnt_{name}") for name in COUNTERS}
        counting = Signal()

        # ------------------------------------------------------------------ sequencer regs
        SQ_PARAMS, SQ_PASS, SQ_ISSUE, SQ_DONE = range(4)
        sq = Signal(range(4))
        t = Signal(cfg.cot_bits)
        ky = Signal(cfg.k_bits)
        kx = Signal(cfg.k_bits)
        j = Signal(cfg.fold_bits)
        g = Signal(cfg.h_bits)
        ox = Signal(cfg.w_bits)
        gcount = Signal(cfg.h_bits)
        rows_left = Signal(cfg.h_bits + 1)
        y_pass = Signal(signed(cb))
        y_tap = Signal(signed(cb))
        iy = Signal(signed(cb))
        x_tap = Signal(signed(cb))
        ix = Signal(signed(cb))
        ixb = Signal(signed(cb))         # ix + 1, kept as its own register (dual reads)
        acc_addr = Signal(cfg.acc_addr_bits + 1)
        fold_bank = Signal()             # weight bank of the current fold (folds alternate)
        fold_end = Signal()              # the last element of a fold issues this cycle
        w_ahead = Signal(range(4))       # tiles latched into the array, fold not yet done
        reserved = Signal(ceil_log2(cfg.out_fifo_depth) + 2)

        # loader regs
        ld_tile = Signal(cfg.tile_bits + 1)
        ld_ahead = Signal(range(4))      # loads started whose fold is not yet done
        ld_bank = Signal()               # bank the next load fills
        ld_k = Signal(range(R + 1))
        ld_busy = Signal()
        latch1 = Signal()
        latch2 = Signal()
        latch_bank1 = Signal()
        latch_bank2 = Signal()

        # the current tile's word range comes from a register, not from the memory
        # read: it is read while the sequencer waits before a pass, and on a tile
        # advance it is taken from the prefetched tile t+1 (or t+2 when the tile also
        # advanced the cycle before), each read a cycle ahead from a stable t
        cur = Signal(cw_shape)
        cw_p1 = Signal(cw_shape)
        cw_p2 = Signal(cw_shape)
        t_adv = Signal()                 # t changes at this clock edge
        t_adv_prev = Signal()
        t1 = Signal.like(t)
        t2 = Signal.like(t)
        m.d.comb += [
            t1.eq(Mux(t + 1 >= desc.cotiles, t + 1 - desc.cotiles, t + 1)),
            t2.eq(Mux(desc.cotiles == 1, 0,
                      Mux(t + 2 >= desc.cotiles, t + 2 - desc.cotiles, t + 2))),
            cw_r.addr.eq(t), cw_r1.addr.eq(t1), cw_r2.addr.eq(t2),
        ]
        m.d.sync += [cw_p1.eq(cw_r1.data), cw_p2.eq(cw_r2.data), t_adv_prev.eq(t_adv)]
        # Registers that change by a named case (case 0 holds): the sequencer sets the
        # case, the register takes that case's value, and a flag on a pair of such
        # registers (pair_flag) is pred(next a, next b): an AND-OR over every pair of
        # cases of compares made from registers (not a case statement: Yosys would
        # share the compares of a multiplexer's inputs into one compare behind wide
        # operand multiplexers), or, given `hold`, the flag itself when both hold
        def set_by_case(reg, case, vals):
            with m.Switch(case):
                for c, v in vals.items():
                    with m.Case(c):
                        m.d.sync += reg.eq(v)

        def pair_flag(a_case, a_vals, b_case, b_vals, pred, hold=None):
            return Cat(*[(a_case == ac) & (b_case == bc) &
                         (hold if hold is not None and ac == 0 and bc == 0 else pred(av, bv))
                         for ac, av in a_vals.items()
                         for bc, bv in b_vals.items()]).any()

        # where cur's next value comes from (the flags on cur below select with it)
        CUR_HOLD, CUR_P1, CUR_P2, CUR_READ = range(4)
        cur_src = Signal(range(4))
        cur_vals = {CUR_P1: cw_p1, CUR_P2: cw_p2, CUR_READ: cw_r.data}
        with m.If(t_adv):
            m.d.comb += cur_src.eq(Mux(t_adv_prev, CUR_P2, CUR_P1))
        with m.Elif(~((state == S_RUN) & (sq == SQ_ISSUE))):
            m.d.comb += cur_src.eq(CUR_READ)
        set_by_case(cur, cur_src, cur_vals)

        def first_of(v):                 # a word range's first word (cur.first's meaning)
            return C(0, 1) if "cw_first_ignored" in faults else v.first
        cw_first = first_of(cur)

        step_h = desc.stride_h
        if "stride_h_off_by_one" in faults:
            step_h = Mux(desc.stride_h > 1, desc.stride_h + 1, desc.stride_h)
        step_dw = 1 if "dilation_w_ignored" in faults else desc.dil_w

        dwm = desc.depthwise
        # depthwise: gap = columns to read after this cycle's first one until the column
        # that completes the next element; with dual reads (dw_dual) two columns are
        # read whenever both are needed (gap >= 1), so an element always completes
        # on the newest column read
        gap = Signal(cfg.k_bits + cfg.d_bits + cfg.s_bits + 2)
        dw_first_rc = Signal.like(gap)   # (kw-1)*dil_w
        dw_dual = Signal()               # dual reads allowed for this layer
        # gap == 0 and gap == 1 as registers beside gap (see the loop-end flags below)
        gap_z = Signal()
        gap_1 = Signal()
        dual_now = Signal()
        m.d.comb += dual_now.eq(dw_dual & ~gap_z)
        # depthwise: the tap (ky, kx) of every array row in the current fold, and the
        # per-layer constants that advance them by R taps (R = q*kw + rm) or reset them
        tap_bits = cfg.k_bits + 1
        dw_ky = [Signal(tap_bits, name=f"dw_ky{r}") for r in range(R)]
        dw_kx = [Signal(tap_bits, name=f"dw_kx{r}") for r in range(R)]
        dw_ky_init = [Signal(tap_bits, name=f"dw_ky_init{r}") for r in range(R)]
        dw_kx_init = [Signal(tap_bits, name=f"dw_kx_init{r}") for r in range(R)]
        dw_q = Signal(tap_bits)
        dw_rm = Signal(tap_bits)

        is_elem = Signal()
        m.d.comb += is_elem.eq(~dwm | gap_z | (dw_dual & gap_1))
        # loop ends compare with registered "count - 1" values (no adder on the way)
        # ox == ow_m1 is a register (at_last_ox) set beside every update of ox, from
        # compares of registers: ox + 1 == ow_m1 is ox == ow_m2, and ox = 0 is last
        # when ow_m1 == 0
        at_last_ox = Signal()
        last_ox = is_elem & at_last_ox
        # g == gcount - 1 and j == cur.last are registers too (at_last_g, at_last_j): the
        # sequencer names how g, j and gap change (g_case, j_case, gap_case) and each
        # flag's next value is selected among compares of registers, so issue and the
        # enables after it start from flip-flops
        G_HOLD, G_ZERO, G_INC = range(3)
        J_HOLD, J_ZERO, J_INC = range(3)
        GAP_HOLD, GAP_FIRST, GAP_STRIDE, GAP_STEP = range(4)
        g_case = Signal(range(3))
        j_case = Signal(range(3))
        gap_case = Signal(range(4))
        at_last_g = Signal()
        at_last_j = Signal()
        last_g = at_last_g
        last_j = at_last_j
        # kx == kw_m1 and ky == kh_m1 as flags set beside every update of kx and ky
        at_last_kx = Signal()
        at_last_ky = Signal()
        last_kx = dwm | at_last_kx
        last_ky = dwm | at_last_ky
        last_t = t == cot_m1
        first_fold = (ky == 0) & (kx == 0) & (j == 0)
        last_fold = last_ky & last_kx & last_j
        last_pass = rows_left == gcount
        final_elem = last_fold & last_t & last_pass & last_g & last_ox

        w_ready = w_ahead != 0
        credit_ok = ~(last_fold & is_elem) | (reserved < cfg.out_fifo_depth)
        # word-major activations: a tile issues once its word is in (words_in > cw_first,
        # kept as a register: act_in)
        act_in = Signal()
        act_ok = ~desc.word_major | act_in
        issue = Signal()
        m.d.comb += issue.eq((state == S_RUN) & (sq == SQ_ISSUE) & w_ready & credit_ok & act_ok)

        # ------------------------------------------------------------------ window generator
        # horizontal border mapping (of the dense tap column, or the depthwise read column)
        width_s = Signal(signed(cb))
        height_s = Signal(signed(cb))
        m.d.comb += [width_s.eq(desc.width), height_s.eq(desc.height)]
        mode = desc.pad_mode
        # descriptor-derived constants as registers (the descriptor only changes while
        # idle), so the mapping below is one carry chain deep
        width_m1 = Signal(signed(cb))
        width2_m2 = Signal(signed(cb + 1))
        xb_init = Signal(signed(cb))     # ixb's value where ix = -pad_left
        xb_step = Signal(signed(cb))     # ixb - x_tap after a kx step
        m.d.sync += [width_m1.eq(width_s - 1), width2_m2.eq(2 * width_s - 2),
                     xb_init.eq(1 - desc.pad_left), xb_step.eq(step_dw + 1)]

        def border(col, name):
            """The mapped column of ``col`` and whether it is a pad-value column."""
            col_m = Signal(signed(cb), name=f"{name}_m")
            pad = Signal(name=f"pad_{name}")
            if "reflect_as_replicate" in faults:
                reflect_lo, reflect_hi = 0, width_m1
            else:
                reflect_lo, reflect_hi = -col, width2_m2 - col
            with m.If(col < 0):
                with m.Switch(mode):
                    with m.Case(PadMode.REFLECT):
                        m.d.comb += col_m.eq(reflect_lo)
                    with m.Case(PadMode.REPLICATE):
                        m.d.comb += col_m.eq(0)
                    with m.Case(PadMode.CIRCULAR):
                        m.d.comb += col_m.eq(col + width_s)
                    with m.Default():
                        m.d.comb += [col_m.eq(0), pad.eq(1)]
            with m.Elif(col >= width_s):
                with m.Switch(mode):
                    with m.Case(PadMode.REFLECT):
                        m.d.comb += col_m.eq(reflect_hi)
                    with m.Case(PadMode.REPLICATE):
                        m.d.comb += col_m.eq(width_m1)
                    with m.Case(PadMode.CIRCULAR):
                        m.d.comb += col_m.eq(col - width_s)
                    with m.Default():
                        m.d.comb += [col_m.eq(0), pad.eq(1)]
            with m.Else():
                m.d.comb += col_m.eq(col)
            return col_m, pad

        ix_m, pad_x = border(ix, "ix")
        pad_y = (iy < 0) | (iy >= height_s)
        cw_sel = Signal(cfg.cw_bits)
        m.d.comb += cw_sel.eq(cw_first + Mux(dwm, 0, j))
        par_a = Signal()             # parity half that serves column ix
        # the read address is registered (stage 1) before it fans out to every bank
        rd_addr = [Signal(lb_cw_bits + lb_xh_bits, name=f"rd_addr{'eo'[h]}") for h in range(P)]
        if split:
            # dual reads (depthwise): columns ix and ix+1 in one cycle, one from each
            # parity half; allowed (dw_dual) only where the border mapping keeps
            # parities apart; a pad-value column yields its half to the other.
            ixb_m, pad_xb = border(ixb, "ixb")
            m.d.comb += par_a.eq(Mux(pad_x, ~ixb_m[0], ix_m[0]))
            x_even = Mux(dual_now & par_a, ixb_m, ix_m)
            x_odd = Mux(dual_now & ~par_a, ixb_m, ix_m)
            m.d.sync += [rd_addr[0].eq(Cat(cw_sel[:lb_cw_bits], x_even[1:lb_x_bits])),
                         rd_addr[1].eq(Cat(cw_sel[:lb_cw_bits], x_odd[1:lb_x_bits]))]
        else:
            pad_xb = C(1, 1)
            m.d.sync += rd_addr[0].eq(Cat(cw_sel[:lb_cw_bits], ix_m[:lb_x_bits]))
        for b in range(cfg.lb_rows):
            for h in range(P):
                m.d.comb += [bank_r[b][h].addr.eq(rd_addr[h]), bank_r[b][h].en.eq(1)]

        # sideband of an issued element (or of a depthwise window read)
        sb_layout = data.StructLayout({
            "valid": 1, "shift": 1, "dual": 1, "first": 1, "last_fold": 1, "final": 1, "bank": 1,
            "pad": 1, "slot": max(1, lb_slot_bits), "addr": cfg.acc_addr_bits + 1,
            "tile": cfg.cot_bits,
        })
        sb0 = Signal(sb_layout)
        drop = (ox == 3) if "dropped_valid" in faults else C(0, 1)
        m.d.comb += [
            sb0.valid.eq(issue & is_elem & ~drop),
            sb0.shift.eq(issue & dwm),
            sb0.dual.eq(dual_now),
            sb0.first.eq(first_fold),
            sb0.last_fold.eq(last_fold),
            sb0.final.eq(final_elem),
            sb0.bank.eq(fold_bank),
            sb0.pad.eq(pad_x | pad_y),
            sb0.slot.eq(iy[:lb_slot_bits] if lb_slot_bits else 0),
            sb0.addr.eq(acc_addr),
            sb0.tile.eq(t),
        ]
        # The read pipeline. Stage 1: the read address, registered before it fans out
        # to every bank. Stage 2: line-buffer data; each word picks its slot within a
        # group of four slots and its parity half. Stage 3: it picks the group and the
        # pad value. Stage 4: into the array.
        def delay(sig, n, name):
            """``sig`` and its copies delayed by 1..n cycles."""
            out = [sig]
            for i in range(1, n + 1):
                d = Signal.like(sig, name=f"{name}{i}")
                m.d.sync += d.eq(out[-1])
                out.append(d)
            return out

        sb = delay(sb0, 4, "sb")
        pad_value = 0 if "wrong_pad_value" in faults else desc.pad_value
        pad_word = Signal(data.ArrayLayout(signed(dw), R))
        for r in range(R):
            m.d.comb += pad_word[r].eq(pad_value)
        word_shape = data.ArrayLayout(signed(dw), R)
        lb_q = [[bank_r[b][h].data for h in range(P)] for b in range(cfg.lb_rows)]  # stage 2
        GS = 4                                        # slots per first-level group
        ngroups = -(-cfg.lb_rows // GS)
        lo_bits = min(2, lb_slot_bits)
        par_a2 = delay(par_a, 2, "par_a")[2]          # stage 2: the half of column ix

        def read_words(slot, pads, name):
            """Column ix's word (and, given a second pad flag, column ix+1's) of the
            slot given at stage 1, the pad flags at stage 1 too; stage-3 values."""
            slot2 = delay(slot, 1, f"{name}_slot")[1]
            lo_sel = slot2[:lo_bits] if lo_bits else C(0, 1)
            hi_sel = delay(slot2, 1, f"{name}_slot2_")[1][lo_bits:] \
                if lb_slot_bits > lo_bits else C(0, 1)
            outs = []
            for col, pad_c in zip("ab", pads):
                grp = []
                for gi in range(ngroups):
                    members = list(range(gi * GS, min((gi + 1) * GS, cfg.lb_rows)))
                    even = Array([lb_q[b][0] for b in members])
                    odd = Array([lb_q[b][-1] for b in members])
                    # column a is in the odd half when par_a is set, column b opposite
                    take_odd = par_a2 if col == "a" else ~par_a2
                    v = Mux(take_odd, odd[lo_sel], even[lo_sel]) if split else even[lo_sel]
                    g3 = Signal(word_shape, name=f"{name}_{col}_g{gi}")
                    m.d.sync += g3.eq(v)
                    grp.append(g3)
                pad3 = delay(pad_c, 2, f"{name}_pad_{col}")[2]
                outs.append(Mux(pad3, pad_word, Array(grp)[hi_sel]))
            return outs

        # dense: the tap's word, registered into stage 4
        act4 = Signal(word_shape)
        slot1_d = Signal(max(1, lb_slot_bits), name="slot1_dense")
        pad1_d = Signal(name="pad1_dense")
        m.d.comb += [slot1_d.eq(sb[1].slot), pad1_d.eq(sb[1].pad)]
        (dense_word,) = read_words(slot1_d, [pad1_d], "rd")
        m.d.sync += act4.eq(dense_word)
        # depthwise: one word per kernel row shifts into the window register
        K = cfg.dw_kernel
        ncol = cfg.dw_window_cols
        wreg = [[Signal(R * dw, name=f"win{ky}_{c}") for c in range(ncol)] for ky in range(K)]
        pad_x1 = Signal()
        pad_xb1 = Signal()
        m.d.sync += [pad_x1.eq(pad_x), pad_xb1.eq(pad_xb)]
        for wky in range(K):
            # the kernel row's offset wky * dil_h is a register (the descriptor only
            # changes while idle), so no multiplier lies before the pad compare
            dy = Signal(cfg.k_bits + cfg.d_bits + 1, name=f"dy_ky{wky}")
            m.d.sync += dy.eq(wky * desc.dil_h)
            iy_ky = Signal(signed(cb + 4), name=f"iy_ky{wky}")
            m.d.comb += iy_ky.eq(iy + dy)
            slot1 = Signal(max(1, lb_slot_bits), name=f"slot1_ky{wky}")
            padr1 = Signal(name=f"padr1_ky{wky}")
            m.d.sync += [slot1.eq(iy_ky[:lb_slot_bits] if lb_slot_bits else 0),
                         padr1.eq((iy_ky < 0) | (iy_ky >= height_s))]
            pad_a1 = Signal(name=f"pad_a1_ky{wky}")
            pad_b1 = Signal(name=f"pad_b1_ky{wky}")
            m.d.comb += [pad_a1.eq(padr1 | pad_x1), pad_b1.eq(padr1 | pad_xb1)]
            words = read_words(slot1, [pad_a1, pad_b1][:P], f"dw{wky}")
            # the row's shift enables, registered from stage 2 in a copy per kernel row
            # (each drives R * dw * window columns flip-flops); "keep" stops Yosys from
            # merging the copies back into one (the synthesis flow turns it into a
            # keep on their flip-flops)
            shift1 = Signal(name=f"win_shift1_{wky}", attrs={"keep": 1})
            shift2 = Signal(name=f"win_shift2_{wky}", attrs={"keep": 1})
            m.d.sync += [shift1.eq(sb[2].shift & ~sb[2].dual),
                         shift2.eq(sb[2].shift & sb[2].dual)]
            with m.If(shift1):
                m.d.sync += wreg[wky][0].eq(words[0])
                for c in range(1, ncol):
                    m.d.sync += wreg[wky][c].eq(wreg[wky][c - 1])
            if split:
                with m.If(shift2):
                    # two columns per shift: ix+1 is the newest
                    m.d.sync += [wreg[wky][0].eq(words[1]), wreg[wky][1].eq(words[0])]
                    for c in range(2, ncol):
                        m.d.sync += wreg[wky][c].eq(wreg[wky][c - 2])
        # stage 4: into the array
        m.d.comb += [array.act.eq(act4), array.bank.eq(sb[4].bank), array.dw_mode.eq(dwm)]
        for r in range(R):
            # the row's tap follows its element: stages 1-3 copy the sequencer's tap,
            # stage 4 holds the tap row and the window column it reads, in a copy per
            # lane the row uses (each copy selects its lane's dw bits of every window
            # register; one copy fanned out to all of them; "keep" as for the shifts)
            ky3 = delay(dw_ky[r], 3, f"dw_ky{r}_s")[3]
            kx3 = delay(dw_kx[r], 3, f"dw_kx{r}_s")[3]
            back = Signal(signed(cfg.k_bits + 2), name=f"dwback{r}")
            m.d.comb += back.eq(kw_m1 - kx3)
            lane_word = {}
            for lane in sorted({min(c, R - 1) for c in range(Cc)}):
                ky4 = Signal.like(ky3, name=f"dw_ky{r}_s4_l{lane}", attrs={"keep": 1})
                col = Signal(range(ncol + 1), name=f"dwcol{r}_l{lane}", attrs={"keep": 1})
                m.d.sync += ky4.eq(ky3)
                # times dil_w (at most dw_dilation): a case per value, no multiplier
                with m.Switch(desc.dil_w):
                    for dv in range(1, cfg.dw_dilation + 1):
                        with m.Case(dv):
                            m.d.sync += col.eq(back.as_unsigned()[:cfg.k_bits + 1] * dv)
                win = Array([Array([w[lane * dw:(lane + 1) * dw] for w in row]) for row in wreg])
                sel = Signal(dw, name=f"dwsel{r}_l{lane}")
                m.d.comb += sel.eq(win[ky4][col])
                lane_word[lane] = sel
            for c in range(Cc):
                m.d.comb += array.dw_act[r][c].eq(lane_word[min(c, R - 1)].as_signed())

        # sideband to the accumulate stage, cycle A = issue + 4 + array_latency
        sb_pipe = sb[1:]
        for i in range(cfg.array_latency):
            nxt = Signal(sb_layout, name=f"sb_p{i + 5}")
            m.d.sync += nxt.eq(sb_pipe[-1])
            sb_pipe.append(nxt)
        sb_rd = sb_pipe[-3]     # cycle A-2
        sb_pre = sb_pipe[-2]    # cycle A-1
        sb_acc = sb_pipe[-1]    # cycle A
        # the accumulator and the tile's parameters are read at A-2 and registered, so
        # no block-RAM output feeds the adder; the read misses the writes made at A-2
        # and A-1 (a pixel's next fold can follow within two cycles), which are
        # forwarded, the newer first: addresses compared when the write is made,
        # sums registered
        m.d.comb += [
            acc_r.addr.eq(sb_rd.addr), acc_r.en.eq(1),
            pm_r.addr.eq(sb_rd.tile), pm_r.en.eq(1),
        ]
        acc_q = Signal(data.ArrayLayout(signed(aw), Cc))
        pm_q = Signal(data.ArrayLayout(channel_params_layout(cfg), Cc))
        sums = Signal(data.ArrayLayout(signed(aw), Cc))
        fwd_sums = Signal(data.ArrayLayout(signed(aw), Cc))      # the write of A-1
        fwd_sums2 = Signal(data.ArrayLayout(signed(aw), Cc))     # the write of A-2
        fwd_hit = Signal()
        fwd_hit2_pre = Signal()
        fwd_hit2 = Signal()
        writes = sb_acc.valid & ~sb_acc.last_fold
        m.d.sync += [
            acc_q.eq(acc_r.data), pm_q.eq(pm_r.data),
            fwd_sums.eq(sums), fwd_sums2.eq(fwd_sums),
            fwd_hit.eq(writes & (sb_acc.addr == sb_pre.addr)),
            fwd_hit2_pre.eq(writes & (sb_acc.addr == sb_rd.addr)), fwd_hit2.eq(fwd_hit2_pre),
        ]
        for c in range(Cc):
            bias = 0 if "bias_dropped" in faults else pm_q[c].bias
            hit2 = 0 if "acc_forward_dropped" in faults else fwd_hit2
            prev = Mux(fwd_hit, fwd_sums[c], Mux(hit2, fwd_sums2[c], acc_q[c]))
            total = Mux(sb_acc.first, bias, prev) + array.sums[c]
            if "acc_bit_cut" in faults:
                m.d.comb += sums[c].eq(total[:aw - 1].as_signed())
            else:
                m.d.comb += sums[c].eq(total)
        m.d.comb += [
            acc_w.addr.eq(sb_acc.addr),
            acc_w.data.eq(sums),
            acc_w.en.eq(sb_acc.valid & ~sb_acc.last_fold),
        ]
        # register stage before the requantizer
        rq_valid = Signal()
        rq_last = Signal()
        rq_acc = Signal(data.ArrayLayout(signed(aw), Cc))
        rq_par = Signal(data.ArrayLayout(channel_params_layout(cfg), Cc))
        m.d.sync += [
            rq_valid.eq(sb_acc.valid & sb_acc.last_fold),
            rq_last.eq(sb_acc.final),
            rq_acc.eq(sums),
            rq_par.eq(pm_q),
        ]
        relu_on = 0 if "relu_ignored" in faults else desc.relu
        m.d.comb += [
            rq.i_valid.eq(rq_valid), rq.i_last.eq(rq_last),
            rq.i_acc.eq(rq_acc), rq.i_params.eq(rq_par),
            rq.mode.eq(desc.requant), rq.zp.eq(desc.out_zp),
            rq.lo.eq(Mux(relu_on & (desc.out_zp > qlo), desc.out_zp, qlo)),
            rq.hi.eq(qhi),
        ]
        res_in = Signal(res_layout)
        m.d.comb += [
            res_in.data.eq(rq.o_data),
            res_in.last.eq(0 if "skipped_last" in faults else rq.o_last),
            ofifo.w_data.eq(res_in.as_value()),
            ofifo.w_en.eq(rq.o_valid),
        ]
        res_out = Signal(res_layout)
        m.d.comb += [
            res_out.eq(ofifo.r_data),
            self.o_result.payload.eq(res_out),
            self.o_result.valid.eq(ofifo.r_rdy),
            ofifo.r_en.eq(self.o_result.ready),
        ]
        out_hs = self.o_result.valid & self.o_result.ready
        final_hs = out_hs & res_out.last if "skipped_last" not in faults else \
            out_hs & (reserved == 1) & (sq == SQ_DONE)
        takes_credit = issue & is_elem & last_fold
        with m.If(takes_credit & ~out_hs):
            m.d.sync += reserved.eq(reserved + 1)
        with m.Elif(~takes_credit & out_hs):
            m.d.sync += reserved.eq(reserved - 1)

        # ------------------------------------------------------------------ weight loader
        ld_word_end = Signal(len(w_count) + 1)
        m.d.comb += ld_word_end.eq((ld_tile + 1) * R)
        ld_start = Signal()
        m.d.comb += ld_start.eq(
            (state == S_RUN) & (sq != SQ_DONE) & ~ld_busy &
            (w_count >= ld_word_end) & (ld_ahead <= 1))
        # the weight words and the latch reach the array two cycles late, as the
        # activations do (their read pipeline has two stages more than the loader's
        # timing is stated for), so every load-to-use margin stays as documented: the
        # read address is registered before it fans out to the weight memory's block
        # RAMs, and the data once more
        wm_addr = Signal.like(wm_r.addr, name="wm_addr")
        m.d.sync += wm_r.addr.eq(wm_addr)
        w_word_q = delay(wm_r.data, 1, "w_word")[1]
        m.d.comb += [
            wm_r.en.eq(1),
            array.w_word.eq(w_word_q),
            array.w_latch.eq(delay(latch2, 2, "w_latch")[2]),
            array.w_bank.eq(delay(latch_bank2, 2, "w_bank")[2]),
        ]
        cur_ld_tile = Signal.like(ld_tile)   # tile being read
        m.d.sync += [latch1.eq(0), latch2.eq(latch1), latch_bank2.eq(latch_bank1)]
        # small difference counters instead of wide load/fold counts: a load may start
        # while at most one started load's fold is not done; a fold may issue once its
        # tile is latched
        with m.If(state == S_CHECK2):
            m.d.sync += [w_ahead.eq(0), ld_ahead.eq(0), fold_bank.eq(0), ld_bank.eq(0)]
        with m.Else():
            m.d.sync += [w_ahead.eq(w_ahead + latch2 - fold_end),
                         ld_ahead.eq(ld_ahead + ld_start - fold_end)]
            with m.If(fold_end):
                m.d.sync += fold_bank.eq(~fold_bank)
            with m.If(ld_start):
                m.d.sync += ld_bank.eq(~ld_bank)

        # ------------------------------------------------------------------ main FSM
        with m.Switch(state):
            with m.Case(S_IDLE):
                with m.If(self.i_desc.valid):
                    m.d.sync += [desc.eq(self.i_desc.payload), state.eq(S_CHECK1), error.eq(0)]
                    # the descriptor's products, taken with it (no multiplier feeds
                    # another within a cycle); CHECK1 combines them
                    dn = self.i_desc.payload
                    m.d.sync += [
                        mul_ph.eq((dn.pass_rows - 1) * dn.stride_h),
                        mul_kh.eq((dn.kh - 1) * dn.dil_h),
                        mul_ow.eq((dn.out_width - 1) * dn.stride_w),
                        mul_kw.eq((dn.kw - 1) * dn.dil_w),
                        mul_oh.eq((dn.out_height - 1) * dn.stride_h),
                        mul_hw.eq(dn.height * ((dn.width + (P - 1)) >> (P - 1))),
                    ]
            with m.Case(S_CHECK1):
                d = desc
                # dual reads where the border mapping keeps column parities apart
                dual_ok = Signal()
                m.d.comb += [
                    dual_ok.eq(C(int(cfg.dw_dual_read), 1) & d.depthwise &
                               ((d.pad_mode == PadMode.ZEROS) | (d.pad_mode == PadMode.REFLECT) |
                                ((d.pad_mode == PadMode.CIRCULAR) & ~d.width[0]))),
                ]
                # depthwise tap constants: R = dw_q * kw + dw_rm, row r starts at
                # (r // kw, r % kw) (a table per kernel width, no divider)
                with m.Switch(d.kw):
                    for kw_c in range(1, cfg.max_kernel + 1):
                        with m.Case(kw_c):
                            m.d.sync += [dw_q.eq(R // kw_c), dw_rm.eq(R % kw_c)]
                            for r in range(R):
                                m.d.sync += [dw_ky_init[r].eq((r // kw_c) % (1 << tap_bits)),
                                             dw_kx_init[r].eq(r % kw_c)]
                m.d.sync += [
                    taps.eq(d.kh * d.kw),
                    pass_span.eq(mul_ph + mul_kh + 1),
                    ow_m1.eq(d.out_width - 1), ow_m2.eq(d.out_width - 2),
                    kw_m1.eq(d.kw - 1), kh_m1.eq(d.kh - 1),
                    cot_m1.eq(d.cotiles - 1),
                    pass_step.eq(d.pass_rows * d.stride_h),
                    acc_need.eq(d.pass_rows * d.out_width),
                    last_ix.eq(mul_ow + mul_kw - d.pad_left),
                    last_iy.eq(mul_oh + mul_kh - d.pad_top),
                    act_total.eq(mul_hw * d.cwords - (1 if "act_count_short" in faults else 0)),
                    w_total.eq(d.n_tiles * R),
                    dw_first_rc.eq(mul_kw),
                    dw_dual.eq(dual_ok),
                    qlo.eq(-(C(1, 17) << (d.out_bits - 1).as_unsigned()[:5])),
                    qhi.eq((C(1, 17) << (d.out_bits - 1).as_unsigned()[:5]) - 1),
                    x_bound.eq(width_s - 1 + d.pad_right),
                    y_bound.eq(height_s - 1 + d.pad_bottom),
                    state.eq(S_CHECK2),
                ]
                desc_conds = [
                    (d.cwords == 0) | (d.cwords > cfg.max_cwords),
                    (d.cotiles == 0) | (d.cotiles > cfg.max_cotiles),
                    (d.n_tiles == 0) | (d.n_tiles > cfg.weight_tiles),
                    (d.height == 0) | (d.height > cfg.max_height),
                    (d.width == 0) | (d.width > cfg.max_width),
                    (d.out_height == 0) | (d.out_width == 0) | (d.pass_rows == 0),
                    (d.kh == 0) | (d.kh > cfg.max_kernel) | (d.kw == 0) | (d.kw > cfg.max_kernel),
                    (d.stride_h == 0) | (d.stride_h > cfg.max_stride),
                    (d.stride_w == 0) | (d.stride_w > cfg.max_stride),
                    (d.dil_h == 0) | (d.dil_h > cfg.max_dilation),
                    (d.dil_w == 0) | (d.dil_w > cfg.max_dilation),
                    (d.pad_mode == PadMode.REFLECT) & ((d.pad_left >= d.width) | (d.pad_right >= d.width)),
                    (d.pad_mode == PadMode.CIRCULAR) & ((d.pad_left > d.width) | (d.pad_right > d.width)),
                    d.requant.as_value() == 3,
                    (d.requant != RequantMode.NONE) & ((d.out_bits < 2) | (d.out_bits > 16)),
                    d.depthwise & ((not cfg.depthwise_mode) | (d.kh > cfg.dw_kernel) |
                                   (d.kw > cfg.dw_kernel) | (d.dil_w > cfg.dw_dilation)),
                    # word-major order: depthwise, one pass, every row resident
                    d.word_major & (~d.depthwise | (d.height > cfg.lb_rows) |
                                    (d.pass_rows < d.out_height)),
                ]
                m.d.sync += bad_desc.eq(Cat(*desc_conds).any())
            with m.Case(S_CHECK2):
                # the checks that need CHECK1's figures; the descriptor's own fields
                # were checked in CHECK1 (no check is more than a compare deep)
                bad = Signal()
                conds = [
                    bad_desc,
                    pass_span > cfg.lb_rows,
                    acc_need > cfg.acc_depth,
                    last_ix > x_bound,
                    last_iy > y_bound,
                ]
                m.d.comb += bad.eq(Cat(*conds).any())
                with m.If(bad):
                    m.d.sync += [state.eq(S_ABORT), error.eq(error | ErrorFlag.BAD_DESC)]
                with m.Else():
                    m.d.sync += state.eq(S_RUN)
            with m.Case(S_RUN):
                # completion
                with m.If((sq == SQ_DONE) & (reserved == 0) & p_done & w_done & a_done):
                    m.d.sync += state.eq(S_STATUS)
            with m.Case(S_ABORT):
                with m.If((reserved == 0) & p_done & w_done & a_done & abort_wait_done):
                    m.d.sync += state.eq(S_STATUS)
            with m.Case(S_STATUS):
                with m.If(self.o_status.ready):
                    m.d.sync += state.eq(S_IDLE)

        # abort drain timer: let in-flight elements leave the array
        abort_timer = Signal(range(RESULT_LATENCY(cfg) + 4))
        with m.If(state != S_ABORT):
            m.d.sync += abort_timer.eq(RESULT_LATENCY(cfg) + 3)
        with m.Elif(abort_timer != 0):
            m.d.sync += abort_timer.eq(abort_timer - 1)
        m.d.comb += abort_wait_done.eq(abort_timer == 0)

        # errors that abort a running layer
        fatal = Signal()
        m.d.comb += fatal.eq((error & (ErrorFlag.BAD_PARAM | ErrorFlag.ACT_SHORT |
                                       ErrorFlag.WEIGHT_SHORT | ErrorFlag.PARAM_SHORT)) != 0)
        with m.If((state == S_RUN) & fatal):
            m.d.sync += state.eq(S_ABORT)

        # ------------------------------------------------------------------ param intake
        pbeat = self.i_param.payload
        m.d.comb += self.i_param.ready.eq(run_or_abort & ~p_done)
        p_hs = self.i_param.valid & self.i_param.ready
        m.d.comb += [
            pm_w.addr.eq(p_count), pm_w.data.eq(pbeat.data.lanes),
            pm_w.en.eq(p_hs & (p_count < desc.cotiles) & ~aborting),
            cw_w.addr.eq(p_count),
            cw_w.data.first.eq(pbeat.data.cw_first), cw_w.data.last.eq(pbeat.data.cw_count - 1),
            cw_w.en.eq(p_hs & (p_count < desc.cotiles) & ~aborting),
        ]
        err_hi = Signal(7)     # error bits 1..7 raised this cycle; BAD_DESC comes from the check
        err_set = Cat(C(0, 1), err_hi)
        with m.If(p_hs):
            m.d.sync += p_count.eq(p_count + 1)
            with m.If(p_count < desc.cotiles):
                # dense: cw_count input words x taps tiles; depthwise: cw_count folds of
                # R taps over the single word cw_first
                m.d.sync += tiles_sum.eq(tiles_sum + Mux(desc.depthwise, pbeat.data.cw_count,
                                                         taps * pbeat.data.cw_count))
                bad_range = Mux(desc.depthwise,
                                (pbeat.data.cw_first >= desc.cwords) |
                                (pbeat.data.cw_count * R < taps),
                                pbeat.data.cw_first + pbeat.data.cw_count > desc.cwords)
                with m.If((pbeat.data.cw_count == 0) | bad_range):
                    m.d.comb += err_hi[0].eq(1)       # BAD_PARAM
            with m.If(pbeat.last):
                m.d.sync += p_done.eq(1)
                with m.If(p_count + 1 < desc.cotiles):
                    m.d.comb += err_hi[5].eq(1)       # PARAM_SHORT
            with m.If(p_count + 1 > desc.cotiles):
                m.d.comb += err_hi[6].eq(1)           # PARAM_LONG
        # the tile count check, once all parameters are in
        p_checked = Signal()
        with m.If(p_done & ~p_checked & (state == S_RUN)):
            m.d.sync += p_checked.eq(1)
            with m.If(tiles_sum != desc.n_tiles):
                m.d.comb += err_hi[0].eq(1)
        m.d.comb += params_ok.eq(p_done & p_checked & ~fatal)

        # ------------------------------------------------------------------ weight intake
        wbeat = self.i_weight.payload
        m.d.comb += self.i_weight.ready.eq(run_or_abort & ~w_done)
        w_hs = self.i_weight.valid & self.i_weight.ready
        m.d.comb += [
            wm_w.addr.eq(w_count), wm_w.data.eq(wbeat.data),
            wm_w.en.eq(w_hs & (w_count < w_total) & ~aborting),
        ]
        with m.If(w_hs):
            with m.If(w_count < w_total):
                m.d.sync += w_count.eq(w_count + 1)
            with m.Else():
                m.d.comb += err_hi[4].eq(1)           # WEIGHT_LONG
            with m.If(wbeat.last):
                m.d.sync += w_done.eq(1)
                with m.If(w_count + 1 < w_total):
                    m.d.comb += err_hi[3].eq(1)       # WEIGHT_SHORT

        # ------------------------------------------------------------------ activation intake
        abeat = self.i_act.payload
        # "a row slot is free" (wr_iy < lo + lb_rows): a register, computed below from
        # the next values of both rows, so no compare lies between them and ``ready``
        row_free = Signal()
        m.d.comb += self.i_act.ready.eq(run_or_abort & ~a_done & (aborting | a_overflow | row_free))
        a_hs = self.i_act.valid & self.i_act.ready
        wr_slot = wr_iy[:lb_slot_bits] if lb_slot_bits else C(0, 1)
        # a beat holds pixels wr_ix (even) and wr_ix + 1 (odd half; absent at the end
        # of an odd-width row)
        row_end = Signal()
        m.d.comb += row_end.eq(wr_ix + P >= desc.width)
        # the write is registered (address, data and each bank's enable) before it fans
        # out to the banks, so it lands a cycle after the handshake; a read of that row
        # or word is addressed no earlier (wr_iy / words_in count at the handshake, and
        # the read address is registered), so it always follows the write
        wr_addr_q = Signal(lb_cw_bits + lb_xh_bits, name="lb_wr_addr")
        wr_data_q = Signal(P * R * dw, name="lb_wr_data")
        m.d.sync += [wr_addr_q.eq(Cat(wr_cw[:lb_cw_bits], wr_ix[lb_x_bits - lb_xh_bits:lb_x_bits])),
                     wr_data_q.eq(abeat.data.as_value()[:P * R * dw])]
        for b in range(cfg.lb_rows):
            for h in range(P):
                here = C(1, 1) if h == 0 else ~row_end | ~desc.width[0]
                wen_q = Signal(name=f"lb_wen{b}{'eo'[h]}")
                m.d.sync += wen_q.eq(a_hs & ~a_overflow & ~aborting & (wr_slot == b) & here)
                m.d.comb += [
                    bank_w[b][h].addr.eq(wr_addr_q),
                    bank_w[b][h].data.eq(wr_data_q[h * R * dw:(h + 1) * R * dw]),
                    bank_w[b][h].en.eq(wen_q),
                ]
        with m.If(a_hs):
            m.d.sync += [a_count.eq(a_count + 1), a_overflow.eq(a_overflow | (a_count + 1 >= act_total))]
            with m.If(a_overflow):
                m.d.comb += err_hi[2].eq(1)           # ACT_LONG
            with m.Elif(desc.word_major):
                # word -> row -> column (pairs)
                with m.If(row_end):
                    m.d.sync += wr_ix.eq(0)
                    with m.If(wr_iy == desc.height - 1):
                        m.d.comb += wr_case.eq(WR_ZERO)
                        m.d.sync += wr_cw.eq(wr_cw + 1)
                        m.d.comb += wi_case.eq(WI_INC)
                    with m.Else():
                        m.d.comb += wr_case.eq(WR_INC)
                with m.Else():
                    m.d.sync += wr_ix.eq(wr_ix + P)
            with m.Else():
                # row -> column (pairs) -> word
                with m.If(wr_cw == desc.cwords - 1):
                    m.d.sync += wr_cw.eq(0)
                    with m.If(row_end):
                        m.d.sync += wr_ix.eq(0)
                        m.d.comb += wr_case.eq(WR_INC)
                    with m.Else():
                        m.d.sync += wr_ix.eq(wr_ix + P)
                with m.Else():
                    m.d.sync += wr_cw.eq(wr_cw + 1)
            with m.If(abeat.last):
                m.d.sync += a_done.eq(1)
                with m.If(a_count + 1 < act_total):
                    m.d.comb += err_hi[1].eq(1)       # ACT_SHORT

        with m.If(err_set != 0):
            m.d.sync += error.eq(error | err_set)

        # ------------------------------------------------------------------ sequencer
        # a pass may start once the rows up to y_end = y_pass + pass_span (clipped to
        # the image) are in; y_end is kept as a register beside y_pass
        y_end = Signal(signed(cb + 1))
        rows_ready = Signal()
        m.d.comb += rows_ready.eq(desc.word_major | (y_end <= 0) | (wr_iy >= desc.height) |
                                  (wr_iy >= y_end))
        release = Mux(y_pass < 0, 0, y_pass)
        if "row_release_early" in faults:
            release = release + 1
        # lo's and wr_iy's next values (the release row taken at lo's width); row_free's
        # compare is made for every pair of them from registers, and the cases only
        # select one (no carry chain after the sequencer's conditions)
        lo_vals = {LO_HOLD: lo, LO_ZERO: C(0), LO_ALL: C(cfg.max_height + 1),
                   LO_RELEASE: release.as_unsigned()[:len(lo)]}
        wr_vals = {WR_HOLD: wr_iy, WR_ZERO: C(0), WR_INC: wr_iy + 1}
        set_by_case(lo, lo_case, lo_vals)
        set_by_case(wr_iy, wr_case, wr_vals)
        m.d.sync += row_free.eq(pair_flag(lo_case, lo_vals, wr_case, wr_vals,
                                          lambda lv, wv: wv < lv + cfg.lb_rows))

        # g, j and gap with their flags (at_last_g: g's next value against gcount - 1
        # now, so a new gcount shows a cycle later; a pass waits >= 1 cycle in SQ_PASS)
        g_vals = {G_HOLD: g, G_ZERO: C(0, len(g)), G_INC: (g + 1)[:len(g)]}
        gcount_m1_next = (gcount - 1)[:len(g)]
        with m.Switch(g_case):
            for gc, gv in g_vals.items():
                with m.Case(gc):
                    m.d.sync += [g.eq(gv), at_last_g.eq(gv == gcount_m1_next)]
        cur_all = {CUR_HOLD: cur, **cur_vals}
        # j == cur.last
        j_vals = {J_HOLD: j, J_ZERO: C(0, len(j)), J_INC: (j + 1)[:len(j)]}
        set_by_case(j, j_case, j_vals)
        m.d.sync += at_last_j.eq(pair_flag(j_case, j_vals, cur_src, cur_all,
                                           lambda jv, cv: jv == cv.last, hold=at_last_j))
        # words_in > cur.first (word-major: the current tile's word is in)
        wi_zero = C(0, len(words_in))
        wi_vals = {WI_HOLD: words_in, WI_ZERO: wi_zero, WI_INC: (words_in + 1)[:len(words_in)]}
        set_by_case(words_in, wi_case, wi_vals)
        m.d.sync += act_in.eq(pair_flag(wi_case, wi_vals, cur_src, cur_all,
                                        lambda wv, cv: C(0, 1) if wv is wi_zero
                                        else wv > first_of(cv), hold=act_in))
        # gap steps by 1 + dual_now while an element is not complete (gap >= 1 + dual_now)
        gap_vals = {GAP_FIRST: dw_first_rc, GAP_STRIDE: desc.stride_w - 1}
        with m.Switch(gap_case):
            for gc, gv in gap_vals.items():
                with m.Case(gc):
                    m.d.sync += [gap.eq(gv), gap_z.eq(gv == 0), gap_1.eq(gv == 1)]
            with m.Case(GAP_STEP):
                m.d.sync += [gap.eq(gap - 1 - dual_now),
                             gap_z.eq(Mux(dual_now, gap == 2, gap_1)),
                             gap_1.eq(Mux(dual_now, gap == 3, gap == 2))]

        with m.If(state == S_CHECK2):
            m.d.sync += [
                sq.eq(SQ_PARAMS),
                t.eq(0), ky.eq(0), kx.eq(0), ox.eq(0),
                at_last_kx.eq(kw_m1 == 0), at_last_ky.eq(kh_m1 == 0),
                at_last_ox.eq(ow_m1 == 0),
                rows_left.eq(desc.out_height),
                y_pass.eq(-desc.pad_top), y_tap.eq(-desc.pad_top), iy.eq(-desc.pad_top),
                y_end.eq(pass_span - desc.pad_top),
                x_tap.eq(-desc.pad_left), ix.eq(-desc.pad_left), ixb.eq(xb_init),
                acc_addr.eq(0), reserved.eq(0),
                *[dw_ky[r].eq(dw_ky_init[r]) for r in range(R)],
                *[dw_kx[r].eq(dw_kx_init[r]) for r in range(R)],
                ld_tile.eq(0), ld_k.eq(0), ld_busy.eq(0),
                latch1.eq(0), latch2.eq(0),
                p_count.eq(0), p_done.eq(0), p_checked.eq(0), tiles_sum.eq(0),
                w_count.eq(0), w_done.eq(0),
                a_count.eq(0), a_done.eq(0), wr_cw.eq(0), wr_ix.eq(0),
                a_overflow.eq(act_total == 0),
            ]
            m.d.comb += [wr_case.eq(WR_ZERO), lo_case.eq(LO_ZERO), j_case.eq(J_ZERO),
                         wi_case.eq(WI_ZERO),
                         g_case.eq(G_ZERO), gap_case.eq(GAP_FIRST)]
        with m.Elif(state == S_ABORT):
            m.d.sync += sq.eq(SQ_DONE)
            m.d.comb += lo_case.eq(LO_ALL)
        with m.Elif(state == S_RUN):
            with m.Switch(sq):
                with m.Case(SQ_PARAMS):
                    with m.If(params_ok):
                        m.d.sync += [
                            sq.eq(SQ_PASS),
                            gcount.eq(Mux(desc.pass_rows < desc.out_height,
                                          desc.pass_rows, desc.out_height)),
                        ]
                with m.Case(SQ_DONE):
                    m.d.comb += lo_case.eq(LO_ALL)
                with m.Case(SQ_PASS):
                    m.d.comb += lo_case.eq(LO_RELEASE)
                    with m.If(rows_ready):
                        m.d.sync += sq.eq(SQ_ISSUE)
                with m.Case(SQ_ISSUE):
                    with m.If(issue):
                        with m.If(~last_ox & dwm):
                            # depthwise: the next window column; an element completes
                            # every stride_w columns once the window is full
                            m.d.sync += [ix.eq(ix + 1 + dual_now), ixb.eq(ixb + 1 + dual_now)]
                            m.d.comb += gap_case.eq(GAP_STEP)
                            with m.If(is_elem):
                                # either way the next element is stride_w - 1 columns on
                                m.d.sync += [ox.eq(ox + 1), at_last_ox.eq(ox == ow_m2),
                                             acc_addr.eq(acc_addr + 1)]
                                m.d.comb += gap_case.eq(GAP_STRIDE)
                        with m.Elif(~last_ox):
                            m.d.sync += [ox.eq(ox + 1), at_last_ox.eq(ox == ow_m2),
                                         ix.eq(ix + desc.stride_w),
                                         ixb.eq(ixb + desc.stride_w),
                                         acc_addr.eq(acc_addr + 1)]
                        with m.Elif(~last_g):
                            m.d.sync += [ox.eq(0), at_last_ox.eq(ow_m1 == 0),
                                         iy.eq(iy + step_h),
                                         ix.eq(x_tap), ixb.eq(x_tap + 1),
                                         acc_addr.eq(acc_addr + 1)]
                            m.d.comb += [g_case.eq(G_INC), gap_case.eq(GAP_FIRST)]
                        with m.Else():
                            m.d.comb += [fold_end.eq(1), g_case.eq(G_ZERO),
                                         gap_case.eq(GAP_FIRST),
                                         j_case.eq(Mux(last_j, J_ZERO, J_INC))]
                            m.d.sync += [ox.eq(0), at_last_ox.eq(ow_m1 == 0), acc_addr.eq(0)]
                            with m.If(~last_j):
                                m.d.sync += [iy.eq(y_tap), ix.eq(x_tap), ixb.eq(x_tap + 1)]
                                # the next depthwise fold: every row's tap R taps on
                                for r in range(R):
                                    kx_n = Signal(tap_bits + 1, name=f"dw_kx{r}_n")
                                    m.d.comb += kx_n.eq(dw_kx[r] + dw_rm)
                                    with m.If(kx_n >= desc.kw):
                                        m.d.sync += [dw_kx[r].eq(kx_n - desc.kw),
                                                     dw_ky[r].eq(dw_ky[r] + dw_q + 1)]
                                    with m.Else():
                                        m.d.sync += [dw_kx[r].eq(kx_n),
                                                     dw_ky[r].eq(dw_ky[r] + dw_q)]
                            with m.Else():
                                m.d.sync += [*[dw_ky[r].eq(dw_ky_init[r]) for r in range(R)],
                                             *[dw_kx[r].eq(dw_kx_init[r]) for r in range(R)]]
                            with m.If(last_j & ~last_kx):
                                m.d.sync += [kx.eq(kx + 1), at_last_kx.eq(kx + 1 == kw_m1),
                                             x_tap.eq(x_tap + step_dw),
                                             ix.eq(x_tap + step_dw), ixb.eq(x_tap + xb_step),
                                             iy.eq(y_tap)]
                            with m.Elif(last_j & ~last_ky):
                                m.d.sync += [kx.eq(0), ky.eq(ky + 1),
                                             at_last_kx.eq(kw_m1 == 0),
                                             at_last_ky.eq(ky + 1 == kh_m1),
                                             x_tap.eq(-desc.pad_left), ix.eq(-desc.pad_left),
                                             ixb.eq(xb_init),
                                             y_tap.eq(y_tap + desc.dil_h),
                                             iy.eq(y_tap + desc.dil_h)]
                            with m.Elif(last_j):
                                m.d.sync += [kx.eq(0), ky.eq(0),
                                             at_last_kx.eq(kw_m1 == 0),
                                             at_last_ky.eq(kh_m1 == 0),
                                             x_tap.eq(-desc.pad_left), ix.eq(-desc.pad_left),
                                             ixb.eq(xb_init),
                                             y_tap.eq(y_pass), iy.eq(y_pass)]
                                m.d.comb += t_adv.eq(1)
                                with m.If(~last_t):
                                    m.d.sync += t.eq(t + 1)
                                with m.Else():
                                    m.d.sync += [t.eq(0), rows_left.eq(rows_left - gcount),
                                                 y_pass.eq(y_pass + pass_step),
                                                 y_end.eq(y_end + pass_step),
                                                 y_tap.eq(y_pass + pass_step),
                                                 iy.eq(y_pass + pass_step)]
                                    with m.If(last_pass):
                                        # (every row is released from the next cycle
                                        # on, once this last element has read)
                                        m.d.sync += sq.eq(SQ_DONE)
                                    with m.Else():
                                        nxt_left = rows_left - gcount
                                        m.d.sync += [
                                            sq.eq(SQ_PASS),
                                            gcount.eq(Mux(desc.pass_rows < nxt_left,
                                                          desc.pass_rows, nxt_left)),
                                        ]

        # ------------------------------------------------------------------ loader sequencing
        # A load reads the tile's words in R consecutive cycles (row R-1 first): the
        # start cycle addresses word 0, busy cycles words 1..R-1; the latch strobe
        # reaches the array two cycles after the last word is addressed.
        def row_of(k):
            return k if "swapped_weight_rows" in faults else (R - 1 - k)

        with m.If(state == S_CHECK2):
            pass     # the loader is reset above
        with m.Elif(ld_start):
            m.d.comb += wm_addr.eq(ld_tile * R + row_of(0))
            m.d.sync += [cur_ld_tile.eq(ld_tile),
                         ld_tile.eq(Mux(ld_tile + 1 == desc.n_tiles, 0, ld_tile + 1)),
                         latch_bank1.eq(ld_bank)]
            if R > 1:
                m.d.sync += [ld_busy.eq(1), ld_k.eq(1)]
            else:
                m.d.sync += latch1.eq(1)
        with m.Elif(ld_busy):
            m.d.comb += wm_addr.eq(cur_ld_tile * R + row_of(ld_k))
            with m.If(ld_k == R - 1):
                m.d.sync += [ld_busy.eq(0), latch1.eq(1)]
            with m.Else():
                m.d.sync += ld_k.eq(ld_k + 1)

        # ------------------------------------------------------------------ counters
        with m.If((state == S_IDLE) & self.i_desc.valid):
            m.d.sync += counting.eq(1)
            for name, sig in counters.items():
                m.d.sync += sig.eq(0)
        # each cycle falls in exactly one category; each counter's enable is its own
        # condition (a one-hot set, no encoded category and compare after issue)
        early = ((state == S_IDLE) | (state == S_CHECK1) | (state == S_CHECK2) |
                 ((state == S_RUN) & (sq == SQ_PARAMS)))
        in_pass = (state == S_RUN) & (sq == SQ_PASS)   # rows, or the bubble between passes
        in_issue = (state == S_RUN) & (sq == SQ_ISSUE)
        cat_on = {
            "setup": early | (in_pass & rows_ready),
            "busy": issue & is_elem,
            "fill": issue & ~is_elem,
            "stall_weight": in_issue & ~w_ready,
            "stall_input": (in_pass & ~rows_ready) | (in_issue & w_ready & ~act_ok),
            "stall_output": in_issue & w_ready & act_ok & ~credit_ok,
            "drain": ~(early | in_pass | in_issue),
        }
        count_now = Signal()
        m.d.comb += count_now.eq(((state == S_IDLE) & self.i_desc.valid) |
                                 ((state != S_IDLE) & counting))
        with m.If(count_now):
            m.d.sync += counters["cycles"].eq(
                Mux((state == S_IDLE), 1, counters["cycles"] + 1))
            for name, sig in counters.items():
                if name == "cycles":
                    continue
                with m.If(cat_on[name]):
                    m.d.sync += sig.eq(Mux(state == S_IDLE, 1, sig + 1))
        with m.If(final_hs | (state == S_STATUS)):
            m.d.sync += counting.eq(0)

        # ------------------------------------------------------------------ status
        st = self.o_status.payload
        m.d.comb += [self.o_status.valid.eq(state == S_STATUS), st.error.eq(error)]
        for name, sig in counters.items():
            m.d.comb += getattr(st, name).eq(sig)
        return m
