// The native simulation harness: the accelerator system (sim/accel_system.py: the
// accelerator on the Verilog main-memory model, built with TESSERA_NATIVE) compiled by
// Verilator with this file, and driven from the Python runtime (sim/native.py) over a
// line protocol on stdin / stdout. No Python runs per cycle: Python sends a handful of
// requests per run (register accesses, "run until the interrupt", row reads) and the
// clock loop is here.
//
// Main memory is a block shared with the Python process: a file descriptor it passes
// (memfd) mapped here with MAP_SHARED, read and written by the memory model through the
// DPI functions below. Loading inputs and reading results are plain numpy accesses on the
// Python side, with no copy through files.
//
// Usage: tessera_sim --mem-fd FD --mem-bytes N [--trace FILE.fst --trace-from C
//                    --trace-cycles K]
//
// Requests, one per line; each answer is one line (except "run": progress lines first):
//   reset N            hold reset for N cycles                     -> "ok"
//   mem LATENCY GAP    the memory model's latency (cycles; 0: its default) and idle
//                      cycles after each beat (0: full bandwidth)  -> "ok"
//   fault SEL VALUE    write the memory model's configuration register SEL (faults and
//                      random timing; see sim/hdl/tessera_axi_mem.v) -> "ok"
//   check              the protocol checkers' first violation since the reset
//                      -> "ok VIOLATION RULE CYCLE ADDR" (VIOLATION 0: none)
//   w ADDR VALUE       AXI4-Lite write (through the flopped host port) -> "ok RESP"
//   r ADDR             AXI4-Lite read                                -> "ok VALUE RESP"
//   run MAX EVERY A..  run until the interrupt or MAX cycles; every EVERY cycles print
//                      "progress CYCLES SECONDS V.." with the registers at A.. read
//                      -> "done CYCLES SECONDS" or "timeout CYCLES SECONDS"
//   rows ACC FIRST N   N scratchpad (ACC=0) or accumulator rows as hex, one line each,
//                      most significant digit first                 -> N lines, "ok"
//   cycles N           run N cycles with nothing asked (tests)       -> "ok"
//   quit
// Numbers are decimal, or hex with 0x. An answer starting with "error" means the request
// was not understood or not answered by the hardware. Cycle C of the trace window counts
// from the first cycle of the first "run".

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#include "Vsystem.h"
#include "svdpi.h"
#include "verilated.h"
#ifdef TESSERA_TRACE
#include "verilated_fst_c.h"
#endif

namespace {

FILE* g_out = stdout;       // the protocol's answers (the model's $display goes to stderr)
uint8_t* g_mem = nullptr;
uint64_t g_mem_bytes = 0;
int g_bus_bytes = 0;

[[noreturn]] void die(const char* what) {
    std::fprintf(g_out, "fatal %s\n", what);
    std::fflush(g_out);
    std::exit(3);
}

}  // namespace

// ---- DPI: the memory model's storage ---------------------------------------------------

extern "C" void tessera_mem_attach(long long words, int bytes) {
    if (!g_mem) die("the memory model started before main memory was mapped");
    if (static_cast<uint64_t>(words) * static_cast<uint64_t>(bytes) != g_mem_bytes) {
        char msg[200];
        std::snprintf(msg, sizeof msg,
                      "the memory model has %lld words of %d bytes, the shared block %" PRIu64
                      " bytes", words, bytes, g_mem_bytes);
        die(msg);
    }
}

extern "C" void tessera_mem_read(long long idx, svBitVecVal* data) {
    // svBitVecVal words are 32 bits, the low word first, and the host is little-endian,
    // so a word's bytes copy as they are (a bus narrower than 32 bits: the rest is zero).
    static_assert(sizeof(svBitVecVal) == 4, "svBitVecVal is 32 bits");
    if (g_bus_bytes < 4) data[0] = 0;
    std::memcpy(data, g_mem + static_cast<uint64_t>(idx) * g_bus_bytes, g_bus_bytes);
}

extern "C" void tessera_mem_write(long long idx, const svBitVecVal* data,
                                  const svBitVecVal* strb) {
    uint8_t* word = g_mem + static_cast<uint64_t>(idx) * g_bus_bytes;
    const uint8_t* src = reinterpret_cast<const uint8_t*>(data);
    for (int b = 0; b < g_bus_bytes; ++b)
        if ((strb[b >> 5] >> (b & 31)) & 1) word[b] = src[b];
}

// ---- the simulation ---------------------------------------------------------------------

namespace {

struct Sim {
    std::unique_ptr<VerilatedContext> ctx{new VerilatedContext};
    std::unique_ptr<Vsystem> top;
    uint64_t run_cycles = 0;          // cycles since the first "run" (the trace's clock)
    bool running = false;
#ifdef TESSERA_TRACE
    std::unique_ptr<VerilatedFstC> fst;
    std::string trace_file;
    uint64_t trace_from = 0, trace_cycles = 0;
#endif

    Sim() {
#ifdef TESSERA_TRACE
        ctx->traceEverOn(true);
#endif
        top.reset(new Vsystem{ctx.get()});
        top->clk = 0;
        top->rst = 0;
        top->eval();
    }

    void trace_dump() {
#ifdef TESSERA_TRACE
        if (trace_file.empty() || !running) return;
        if (run_cycles >= trace_from && run_cycles < trace_from + trace_cycles) {
            if (!fst) {
                fst.reset(new VerilatedFstC);
                top->trace(fst.get(), 99);
                fst->open(trace_file.c_str());
            }
            fst->dump(ctx->time());
        } else if (fst && run_cycles >= trace_from + trace_cycles) {
            fst->close();
            fst.reset();
            trace_file.clear();
        }
#endif
    }

    void cycle() {
        top->clk = 1;
        top->eval();
        ctx->timeInc(5);
        trace_dump();
        top->clk = 0;
        top->eval();
        ctx->timeInc(5);
        trace_dump();
        if (running) ++run_cycles;
    }

    void finish() {
#ifdef TESSERA_TRACE
        if (fst) fst->close();
#endif
        top->final();
    }

    // One AXI4-Lite access through the system's flopped host port: set the fields, toggle
    // host_req, wait for host_ack to toggle.
    bool access(bool write, uint32_t addr, uint32_t wdata, uint32_t* rdata, uint32_t* resp) {
        top->host_addr = addr;
        top->host_write = write;
        top->host_wdata = wdata;
        const uint8_t ack = top->host_ack;
        top->host_req = !top->host_req;
        for (int i = 0; i < 1000; ++i) {
            cycle();
            if (top->host_ack != ack) {
                if (rdata) *rdata = top->host_rdata;
                *resp = top->host_resp;
                return true;
            }
        }
        return false;
    }
};

template <std::size_t N>
void put_hex(std::string& out, const VlWide<N>& w, int bits) {
    char buf[16];
    const int words = (bits + 31) / 32;
    for (int i = words - 1; i >= 0; --i) {
        std::snprintf(buf, sizeof buf, "%08x", w[i]);
        out += buf;
    }
}

void put_hex(std::string& out, uint64_t v, int bits) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%0*" PRIx64, (bits + 3) / 4, v);
    out += buf;
}

uint64_t parse_number(const char* s) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(s, &end, 0);
    if (errno || end == s || *end) throw std::runtime_error(std::string("not a number: ") + s);
    return v;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
    // The answers keep the original standard output; what the model prints ($display)
    // goes to standard error instead, so that it cannot interleave with them.
    const int proto = dup(1);
    if (proto < 0 || dup2(2, 1) < 0 || !(g_out = fdopen(proto, "w"))) {
        std::fprintf(stderr, "tessera_sim: cannot set up its output\n");
        return 3;
    }
    long mem_fd = -1;
    uint64_t mem_bytes = 0;
    std::string trace_file;
    uint64_t trace_from = 0, trace_cycles = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) die(("missing value after " + a).c_str());
        const char* v = argv[++i];
        if (a == "--mem-fd") mem_fd = static_cast<long>(parse_number(v));
        else if (a == "--mem-bytes") mem_bytes = parse_number(v);
        else if (a == "--bus-bytes") g_bus_bytes = static_cast<int>(parse_number(v));
        else if (a == "--trace") trace_file = v;
        else if (a == "--trace-from") trace_from = parse_number(v);
        else if (a == "--trace-cycles") trace_cycles = parse_number(v);
        else die(("unknown option " + a).c_str());
    }
    if (mem_fd < 0 || !mem_bytes || g_bus_bytes <= 0)
        die("usage: tessera_sim --mem-fd FD --mem-bytes N --bus-bytes B [--trace FILE "
            "--trace-from C --trace-cycles K]");
    void* p = mmap(nullptr, mem_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, mem_fd, 0);
    if (p == MAP_FAILED) die((std::string("cannot map main memory: ") + strerror(errno)).c_str());
    g_mem = static_cast<uint8_t*>(p);
    g_mem_bytes = mem_bytes;
#ifndef TESSERA_TRACE
    if (!trace_file.empty()) die("this build has no tracing; build the trace variant");
#endif

    Sim sim;
#ifdef TESSERA_TRACE
    sim.trace_file = trace_file;
    sim.trace_from = trace_from;
    sim.trace_cycles = trace_cycles;
#else
    (void)trace_from;
    (void)trace_cycles;
#endif
    const int row_bits = static_cast<int>(sizeof(sim.top->dbg_data) * 8);
    std::fprintf(g_out, "ready %d\n", row_bits);
    std::fflush(g_out);

    char line[4096];
    while (std::fgets(line, sizeof line, stdin)) {
        std::vector<const char*> f;
        for (char* t = std::strtok(line, " \t\r\n"); t; t = std::strtok(nullptr, " \t\r\n"))
            f.push_back(t);
        if (f.empty()) continue;
        const std::string op = f[0];
        try {
            if (op == "quit") {
                break;
            } else if (op == "reset" && f.size() == 2) {
                const uint64_t n = parse_number(f[1]);
                // The ports' request toggles back to their reset state with the system's
                // "seen" copies, or a request would be seen again once reset ends (the
                // last access repeated: a second START after a reset mid-run).
                sim.top->host_req = 0;
                sim.top->dbg_req = 0;
                sim.top->rst = 1;
                for (uint64_t i = 0; i < n; ++i) sim.cycle();
                sim.top->rst = 0;
                sim.cycle();
                std::fprintf(g_out, "ok\n");
            } else if (op == "mem" && f.size() == 3) {
                sim.top->mem_latency = static_cast<uint32_t>(parse_number(f[1]));
                sim.top->mem_gap = static_cast<uint32_t>(parse_number(f[2]));
                sim.cycle();
                std::fprintf(g_out, "ok\n");
            } else if (op == "fault" && f.size() == 3) {
                sim.top->mem_cfg_sel = static_cast<uint32_t>(parse_number(f[1]));
                sim.top->mem_cfg_data = parse_number(f[2]);
                sim.top->mem_cfg_we = 1;
                sim.cycle();
                sim.top->mem_cfg_we = 0;
                sim.cycle();
                sim.cycle();
                std::fprintf(g_out, "ok\n");
            } else if (op == "check" && f.size() == 1) {
                std::fprintf(g_out, "ok %u %u %u %" PRIu64 "\n",
                             static_cast<unsigned>(sim.top->chk_violation),
                             static_cast<unsigned>(sim.top->chk_rule),
                             static_cast<unsigned>(sim.top->chk_cycle),
                             static_cast<uint64_t>(sim.top->chk_addr));
            } else if (op == "cycles" && f.size() == 2) {
                const uint64_t n = parse_number(f[1]);
                for (uint64_t i = 0; i < n; ++i) sim.cycle();
                std::fprintf(g_out, "ok\n");
            } else if ((op == "w" && f.size() == 3) || (op == "r" && f.size() == 2)) {
                const bool write = op == "w";
                uint32_t rdata = 0, resp = 0;
                const uint32_t addr = static_cast<uint32_t>(parse_number(f[1]));
                const uint32_t wdata = write ? static_cast<uint32_t>(parse_number(f[2])) : 0;
                if (!sim.access(write, addr, wdata, &rdata, &resp))
                    std::fprintf(g_out, "error register access at 0x%x not answered\n", addr);
                else if (write)
                    std::fprintf(g_out, "ok %u\n", resp);
                else
                    std::fprintf(g_out, "ok %u %u\n", rdata, resp);
            } else if (op == "run" && f.size() >= 3) {
                const uint64_t max = parse_number(f[1]);
                const uint64_t every = parse_number(f[2]);
                std::vector<uint32_t> regs;
                for (std::size_t i = 3; i < f.size(); ++i)
                    regs.push_back(static_cast<uint32_t>(parse_number(f[i])));
                const auto t0 = std::chrono::steady_clock::now();
                sim.running = true;
                const uint64_t start = sim.run_cycles;
                uint64_t n = 0, next = every ? every : UINT64_MAX;
                bool irq = sim.top->irq;
                while (!irq && n < max) {
                    sim.cycle();
                    n = sim.run_cycles - start;
                    irq = sim.top->irq;
                    if (n >= next && !irq) {
                        next += every;
                        std::fprintf(g_out, "progress %" PRIu64 " %.3f", n, seconds_since(t0));
                        for (uint32_t a : regs) {
                            uint32_t v = 0, resp = 0;
                            sim.access(false, a, 0, &v, &resp);
                            std::fprintf(g_out, " %u", v);
                        }
                        n = sim.run_cycles - start;   // the reads took cycles too
                        std::fprintf(g_out, "\n");
                        std::fflush(g_out);
                        irq = sim.top->irq;
                    }
                }
                std::fprintf(g_out, "%s %" PRIu64 " %.6f\n", irq ? "done" : "timeout", n,
                            seconds_since(t0));
            } else if (op == "rows" && f.size() == 4) {
                const bool acc = parse_number(f[1]) != 0;
                const uint64_t first = parse_number(f[2]), count = parse_number(f[3]);
                std::string out;
                bool ok = true;
                for (uint64_t r = first; r < first + count && ok; ++r) {
                    sim.top->dbg_acc = acc;
                    sim.top->dbg_addr = static_cast<uint32_t>(r);
                    const uint8_t ack = sim.top->dbg_ack;
                    sim.top->dbg_req = !sim.top->dbg_req;
                    int i = 0;
                    for (; i < 100 && sim.top->dbg_ack == ack; ++i) sim.cycle();
                    if (sim.top->dbg_ack == ack) {
                        ok = false;
                        break;
                    }
                    out.clear();
                    put_hex(out, sim.top->dbg_data, row_bits);
                    std::fprintf(g_out, "%s\n", out.c_str());
                }
                if (ok)
                    std::fprintf(g_out, "ok\n");
                else
                    std::fprintf(g_out, "error debug read not answered\n");
            } else {
                std::fprintf(g_out, "error unknown request: %s\n", op.c_str());
            }
        } catch (const std::exception& e) {
            std::fprintf(g_out, "error %s\n", e.what());
        }
        std::fflush(g_out);
    }
    sim.finish();
    return 0;
}
