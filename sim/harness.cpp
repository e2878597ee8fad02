// Compiled batch harness for the systolic-conv accelerator (top module: the
// wrapper of sim/harness.py, systolic_conv with an internal power-on reset).
// (Verilator spells the double underscore of Amaranth port names "___05F".)
//
// Built as a shared library around the Verilated model (no per-cycle Python):
// the host hands over whole streams of packed beats (uint32 words per beat, packed
// through the hardware's own layouts) and gets back the result and status beats
// plus the cycle of every descriptor, final-result and status handshake.
//
// Every input stream can idle at random (seeded) between beats, the result and
// status sinks can apply random back-pressure; a producer keeps valid and its
// payload stable until the beat is accepted (the stream rules). The harness checks
// the same rule on the DUT's outputs o_result and o_status: a beat offered and not
// taken must be offered again, with the same payload, the next cycle (violations
// are counted in ScResult).
//
// An optional reset pulse (ScOptions::reset_at, reset_len cycles) goes to the
// wrapper's ext_rst input (or, on a top without it, to rst): the invocation in
// flight is lost (no status expected), and the harness drops what remains of its
// beats on every input stream (ScOptions::inv_ends) and goes on with the next one.

#include <cstdint>
#include <climits>
#include <cstring>
#include <memory>
#include <random>
#include <type_traits>
#include <utility>

#include "Vtop.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_fst_c.h"
#endif

namespace {

template <std::size_t N>
void set_port(VlWide<N>& p, const uint32_t* w) { for (std::size_t i = 0; i < N; ++i) p[i] = w[i]; }
inline void set_port(QData& p, const uint32_t* w) { p = (QData)w[0] | ((QData)w[1] << 32); }
inline void set_port(IData& p, const uint32_t* w) { p = w[0]; }
inline void set_port(SData& p, const uint32_t* w) { p = (SData)w[0]; }
inline void set_port(CData& p, const uint32_t* w) { p = (CData)w[0]; }

template <std::size_t N>
void get_port(const VlWide<N>& p, uint32_t* w) { for (std::size_t i = 0; i < N; ++i) w[i] = p[i]; }
inline void get_port(const QData& p, uint32_t* w) { w[0] = (uint32_t)p; w[1] = (uint32_t)(p >> 32); }
inline void get_port(const IData& p, uint32_t* w) { w[0] = p; }
inline void get_port(const SData& p, uint32_t* w) { w[0] = p; }
inline void get_port(const CData& p, uint32_t* w) { w[0] = p; }

template <typename T> struct Words { static constexpr int n = 1; };
template <std::size_t N> struct Words<VlWide<N>> { static constexpr int n = (int)N; };
template <> struct Words<QData> { static constexpr int n = 2; };

// One input stream driven from an array of beats.
struct Source {
    const uint32_t* beats = nullptr;
    uint64_t count = 0, next = 0;
    int words = 0;
    bool presenting = false;
    uint32_t idle_permille = 0;
    bool done() const { return next >= count; }
    // Decide, before the clock edge, whether a beat is offered this cycle.
    bool offer(std::mt19937_64& rng) {
        if (presenting) return true;
        if (done()) return false;
        if (idle_permille && (rng() % 1000) < idle_permille) return false;
        presenting = true;
        return true;
    }
    const uint32_t* current() const { return beats + next * words; }
    void accepted() { presenting = false; ++next; }
};

// The reset input the harness can pulse: the wrapper's ext_rst, else a bare
// systolic_conv's rst (a mutant build), else none (a pulse then does nothing).
template <typename T, typename = void> struct HasExtRst : std::false_type {};
template <typename T>
struct HasExtRst<T, std::void_t<decltype(std::declval<T&>().ext_rst)>> : std::true_type {};
template <typename T, typename = void> struct HasRst : std::false_type {};
template <typename T>
struct HasRst<T, std::void_t<decltype(std::declval<T&>().rst)>> : std::true_type {};
template <typename T> void drive_reset(T& top, bool v) {
    if constexpr (HasExtRst<T>::value) top.ext_rst = v;
    else if constexpr (HasRst<T>::value) top.rst = v;
    else (void)v;
}

// An output stream's obligation: a beat offered (valid) and not taken must be
// offered again next cycle with the same payload.
struct Hold {
    bool pending = false;
    uint32_t payload[64];
    int words = 0;
    uint64_t violations = 0;
    void check(bool valid, const uint32_t* now, uint64_t cycle, uint64_t& first) {
        if (!pending) return;
        if (!valid || std::memcmp(now, payload, sizeof(uint32_t) * words) != 0) {
            ++violations;
            if (cycle < first) first = cycle;
        }
        pending = false;
    }
    void arm(bool valid, bool ready, const uint32_t* now) {
        pending = valid && !ready;
        if (pending) std::memcpy(payload, now, sizeof(uint32_t) * words);
    }
};

#ifdef SC_MUTSEL
// A mutant bank (yosys `mutate -ctrl mutsel`): which mutation is active (0: none).
uint32_t g_mutsel = 0;
#endif

}  // namespace

extern "C" {

// Select the active mutant of a mutant-bank build; -1 when this build is not one.
int sc_set_mutsel(uint32_t which) {
#ifdef SC_MUTSEL
    g_mutsel = which;
    return 0;
#else
    (void)which;
    return -1;
#endif
}

struct ScOptions {
    uint64_t max_cycles;
    uint64_t seed;
    uint32_t idle_permille[4];   // desc, param, weight, act
    uint32_t stall_permille;     // result sink back-pressure
    uint32_t result_last_bit;    // bit offset of 'last' in a result beat
    const char* trace_path;      // FST file, or null (needs a trace build)
    // -- added fields (keep sim/harness.py _Options in step; only append) --
    uint32_t status_stall_permille;  // status sink back-pressure (0: ready always 1)
    uint32_t reset_len;          // cycles of the reset pulse (0: 3)
    uint64_t reset_at;           // cycle of the reset pulse (UINT64_MAX: none)
    const uint64_t* inv_ends;    // per invocation, the end (exclusive) of its beats
                                 // in each stream [n_desc][4], or null
    uint64_t* inv_results;       // out: result beats per invocation [n_desc], or null
};

struct ScResult {
    uint64_t cycles;            // cycles simulated
    uint64_t n_result;
    uint64_t n_status;
    int32_t timeout;            // 1 when max_cycles ran out
    // -- added fields (keep sim/harness.py _Result in step; only append) --
    uint64_t result_hold_violations;  // o_result beats offered, not taken, then changed
    uint64_t status_hold_violations;  // the same on o_status
    uint64_t first_violation_cycle;   // UINT64_MAX: none
    int64_t lost_inv;           // the invocation a reset interrupted (-1: none)
    int32_t reset_fired;        // 1 when the reset pulse was applied
};

int sc_port_words(int which) {
    switch (which) {
        case 0: return Words<std::remove_cv_t<std::remove_reference_t<decltype(std::declval<Vtop&>().i_desc___05Fpayload)>>>::n;
        case 1: return Words<std::remove_cv_t<std::remove_reference_t<decltype(std::declval<Vtop&>().i_param___05Fpayload)>>>::n;
        case 2: return Words<std::remove_cv_t<std::remove_reference_t<decltype(std::declval<Vtop&>().i_weight___05Fpayload)>>>::n;
        case 3: return Words<std::remove_cv_t<std::remove_reference_t<decltype(std::declval<Vtop&>().i_act___05Fpayload)>>>::n;
        case 4: return Words<std::remove_cv_t<std::remove_reference_t<decltype(std::declval<Vtop&>().o_result___05Fpayload)>>>::n;
        case 5: return Words<std::remove_cv_t<std::remove_reference_t<decltype(std::declval<Vtop&>().o_status___05Fpayload)>>>::n;
    }
    return -1;
}

int sc_has_trace() {
#if VM_TRACE
    return 1;
#else
    return 0;
#endif
}

// Run invocations until n_desc status beats came back or max_cycles ran out.
// marks: per invocation [desc handshake cycle, final result handshake cycle,
// status handshake cycle] (cycle numbers count rising edges after reset).
int sc_run(const uint32_t* desc, uint64_t n_desc,
           const uint32_t* param, uint64_t n_param,
           const uint32_t* weight, uint64_t n_weight,
           const uint32_t* act, uint64_t n_act,
           uint32_t* result, uint64_t max_result,
           uint32_t* status, uint64_t max_status,
           uint64_t* marks,
           const ScOptions* opt, ScResult* out) {
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->randReset(0);
    auto top = std::make_unique<Vtop>(ctx.get(), "top");
#if VM_TRACE
    std::unique_ptr<VerilatedFstC> tfp;
    if (opt->trace_path) {
        ctx->traceEverOn(true);
        tfp = std::make_unique<VerilatedFstC>();
        top->trace(tfp.get(), 99);
        tfp->open(opt->trace_path);
    }
#endif
    uint64_t time = 0;
    auto dump = [&]() {
#if VM_TRACE
        if (tfp) tfp->dump(time);
#endif
        ++time;
    };

    std::mt19937_64 rng(opt->seed);
    Source src[4];
    const uint32_t* arrays[4] = {desc, param, weight, act};
    uint64_t counts[4] = {n_desc, n_param, n_weight, n_act};
    for (int i = 0; i < 4; ++i) {
        src[i].beats = arrays[i];
        src[i].count = counts[i];
        src[i].words = sc_port_words(i);
        src[i].idle_permille = opt->idle_permille[i];
    }
    const int rw = sc_port_words(4), sw = sc_port_words(5);
    uint32_t rbuf[64], sbuf[64];

    // reset: the wrapper's power-on counter holds rst for the first 4 edges
    top->clk = 0;
#ifdef SC_MUTSEL
    top->mutsel = g_mutsel;
#endif
    top->i_desc___05Fvalid = top->i_param___05Fvalid = top->i_weight___05Fvalid = top->i_act___05Fvalid = 0;
    top->o_result___05Fready = 0;
    top->o_status___05Fready = 0;
    for (int i = 0; i < 4; ++i) {
        top->clk = 0; top->eval(); dump();
        top->clk = 1; top->eval(); dump();
    }

    uint64_t cycle = 0, n_res = 0, n_st = 0, desc_seen = 0;
    uint64_t st_idx = 0;          // the invocation the next status beat belongs to
    out->timeout = 0;
    out->result_hold_violations = out->status_hold_violations = 0;
    out->first_violation_cycle = UINT64_MAX;
    out->lost_inv = -1;
    out->reset_fired = 0;
    if (opt->inv_results)
        for (uint64_t i = 0; i < n_desc; ++i) opt->inv_results[i] = 0;
    Hold hold_r, hold_s;
    hold_r.words = rw;
    hold_s.words = sw;
    const uint32_t rlen = opt->reset_len ? opt->reset_len : 3;
    while (st_idx < n_desc) {
        if (cycle >= opt->max_cycles) { out->timeout = 1; break; }
        if (!out->reset_fired && cycle >= opt->reset_at) {
            // the reset pulse: nothing offered, nothing taken, for rlen edges
            out->reset_fired = 1;
            top->i_desc___05Fvalid = top->i_param___05Fvalid = top->i_weight___05Fvalid = top->i_act___05Fvalid = 0;
            top->o_result___05Fready = 0;
            top->o_status___05Fready = 0;
            for (uint32_t k = 0; k < rlen; ++k) {
                top->clk = 0;
                drive_reset(*top, true);
                top->eval(); dump();
                top->clk = 1; top->eval(); dump();
                ++cycle;
            }
            drive_reset(*top, false);
            hold_r.pending = hold_s.pending = false;
            for (int i = 0; i < 4; ++i) src[i].presenting = false;
            if (desc_seen > st_idx) {      // an invocation was in flight: it is lost
                uint64_t lost = st_idx;
                out->lost_inv = (int64_t)lost;
                ++st_idx;
                if (opt->inv_ends)
                    for (int i = 0; i < 4; ++i) {
                        uint64_t e = opt->inv_ends[lost * 4 + i];
                        if (src[i].next < e) src[i].next = e;
                    }
            }
            continue;
        }
        top->clk = 0;
        // drive the sources
        bool v0 = src[0].offer(rng), v1 = src[1].offer(rng), v2 = src[2].offer(rng), v3 = src[3].offer(rng);
        top->i_desc___05Fvalid = v0;
        if (v0) set_port(top->i_desc___05Fpayload, src[0].current());
        top->i_param___05Fvalid = v1;
        if (v1) set_port(top->i_param___05Fpayload, src[1].current());
        top->i_weight___05Fvalid = v2;
        if (v2) set_port(top->i_weight___05Fpayload, src[2].current());
        top->i_act___05Fvalid = v3;
        if (v3) set_port(top->i_act___05Fpayload, src[3].current());
        bool rdy = !(opt->stall_permille && (rng() % 1000) < opt->stall_permille);
        top->o_result___05Fready = rdy && n_res < max_result;
        bool srdy = !(opt->status_stall_permille && (rng() % 1000) < opt->status_stall_permille);
        top->o_status___05Fready = srdy;
        top->eval();
        dump();
        // the output stream rule: what was offered and not taken last cycle is offered again
        get_port(top->o_result___05Fpayload, rbuf);
        get_port(top->o_status___05Fpayload, sbuf);
        hold_r.check(top->o_result___05Fvalid, rbuf, cycle, out->first_violation_cycle);
        hold_s.check(top->o_status___05Fvalid, sbuf, cycle, out->first_violation_cycle);
        hold_r.arm(top->o_result___05Fvalid, top->o_result___05Fready, rbuf);
        hold_s.arm(top->o_status___05Fvalid, top->o_status___05Fready, sbuf);
        // handshakes happen at this rising edge
        bool h0 = v0 && top->i_desc___05Fready, h1 = v1 && top->i_param___05Fready;
        bool h2 = v2 && top->i_weight___05Fready, h3 = v3 && top->i_act___05Fready;
        bool hr = top->o_result___05Fvalid && top->o_result___05Fready;
        bool hs = top->o_status___05Fvalid && top->o_status___05Fready;
        if (hr) {
            std::memcpy(result + n_res * rw, rbuf, sizeof(uint32_t) * rw);
            ++n_res;
            uint64_t inv = desc_seen ? desc_seen - 1 : 0;
            if (opt->inv_results && inv < n_desc) ++opt->inv_results[inv];
            uint32_t b = opt->result_last_bit;
            if ((rbuf[b / 32] >> (b % 32)) & 1) {
                marks[inv * 3 + 1] = cycle;
            }
        }
        if (hs) {
            if (st_idx < max_status) std::memcpy(status + st_idx * sw, sbuf, sizeof(uint32_t) * sw);
            marks[st_idx * 3 + 2] = cycle;
            ++n_st;
            ++st_idx;
        }
        if (h0) { marks[desc_seen * 3 + 0] = cycle; ++desc_seen; src[0].accepted(); }
        if (h1) src[1].accepted();
        if (h2) src[2].accepted();
        if (h3) src[3].accepted();
        top->clk = 1;
        top->eval();
        dump();
        ++cycle;
    }
    out->result_hold_violations = hold_r.violations;
    out->status_hold_violations = hold_s.violations;
    top->final();
#if VM_TRACE
    if (tfp) tfp->close();
#endif
    out->cycles = cycle;
    out->n_result = n_res;
    out->n_status = n_st;
    return out->timeout ? 1 : 0;
}

}  // extern "C"
