// tessera_axi_mem: an AXI4 main-memory model in plain Verilog, for simulation only.
//
// It keeps Python off the per-cycle path of long simulations: the testbench loads and
// dumps the contents through files ($readmemh / $writememh) and the bus is served here.
//
// Behaviour
//   * INCR bursts of full-width beats (AxSIZE and AxBURST are not decoded: the master
//     always uses full-size INCR beats; a mismatch is reported once per direction).
//     An unaligned start address is aligned down to the bus word.
//   * Up to MAX_BURSTS read bursts and MAX_BURSTS write bursts in flight (from the
//     address handshake to the last R beat / the B handshake); responses in order.
//   * The latency L is the input cfg_latency, or the parameter LATENCY while that input
//     is 0; the gap G is the input cfg_gap (0: full bandwidth). Both may change between
//     runs without a rebuild (they are read when a burst is queued / a beat moves).
//   * A read burst whose AR handshake is in cycle t has its first beat valid in cycle
//     t + L (t + 2 when L is 1), then one beat every G + 1 cycles while RREADY is high.
//     The latency is pipelined: back-to-back bursts stream at that rate.
//     The data is read when the beat is produced (L after the AR handshake).
//   * W beats are taken one every G + 1 cycles whenever the address of a burst is known
//     (WREADY is high while a write burst's AW has been accepted, its data is not
//     complete and G cycles have passed since the last beat).
//     Beats are written with their byte strobes when taken; the burst's B response is
//     valid L cycles after its last beat (pipelined too). WLAST is not used to
//     end a burst (AWLEN is); a WLAST in the wrong place is reported once.
//   * A beat outside [BASE, BASE + WORDS * DATA_BITS/8) answers DECERR: a read beat
//     returns zeros with RRESP = DECERR, a write beat is dropped and its burst's BRESP
//     is DECERR.
//   * The memory starts at zero. rst (synchronous, active high) empties the queues; it
//     does not clear the memory.
//
// Faults and random timing (the configuration port; all off until written)
//   * cfg_we writes cfg_data to the configuration register cfg_sel (kept over rst):
//       0 SEED    reloads the generator (xorshift64, a linear feedback generator; the seed
//                 is multiplied by an odd constant, 0 stands for that constant); rst
//                 reloads it from the last seed too.
//       1 JITTER  J: each burst's latency (a read's from its AR handshake to its first
//                 beat, a write's from its last beat to its response) is L + u, u drawn
//                 uniformly from 0 .. J. Responses stay in order, so a burst's response
//                 also waits for the ones before it.
//       2 STALLS  five probabilities n/256 (n = 0: never), one a byte: [7:0] ARREADY low,
//                 [15:8] no R beat produced (RVALID low), [23:16] AWREADY low, [31:24]
//                 WREADY low, [39:32] no B response produced (BVALID low), each decided
//                 anew every cycle. A valid already up stays up until its handshake.
//       3 INJECT  test only, protocol violations for the checker to catch: 1 every read
//                 burst's last beat without RLAST; 2 one write response with no write
//                 outstanding (at the first AR handshake).
//       4 + 3i, 5 + 3i, 6 + 3i  error range i (0 .. ERR_RANGES-1): first byte address,
//                 end (exclusive), kind ([1:0]: 2 SLVERR, 3 DECERR, else off; bit 2:
//                 reads; bit 3: writes). A beat whose bytes overlap the range answers
//                 with that response (the lowest matching range wins): a read beat
//                 returns zeros, a write beat is dropped and its burst's BRESP is the
//                 first error of the burst. Outside memory, DECERR as above.
//   * The generator steps only in cycles with something on the bus (a valid, or a burst
//     in flight), so that a run's faults depend on the seed and the accelerator alone,
//     not on how many idle cycles a testbench spends on register accesses before START.
//
// Back door (no per-word work in the testbench)
//   * bd_load rising (sampled at clk): $readmemh("tessera_mem_in.hex", mem); the file is
//     in the simulator's working directory, one bus word per line (hex, most significant
//     digit first), optional @<word index> directives. Words the file does not mention
//     keep their contents.
//   * bd_dump rising (sampled at clk):
//     $writememh("tessera_mem_out.hex", mem, bd_dump_first, bd_dump_last), word indices.
//   sim/memimage.py writes and reads these files from numpy byte images.
//
// Native storage (define TESSERA_NATIVE; Verilator with sim/native/harness.cpp)
//   * The words live in the harness's memory (a block shared with the Python process),
//     read and written through the DPI functions below: the back door is that shared
//     block, so bd_load and bd_dump do nothing and no array is declared here. Reads and
//     writes keep the same order within a cycle as the array (a beat read in the cycle a
//     beat is written returns the old word).

`default_nettype none
// Widths are mixed on purpose (word addresses against 65-bit limits, counts against
// integer parameters) and the low address bits are ignored: keep -Wall quiet about it.
/* verilator lint_off WIDTHEXPAND */
/* verilator lint_off UNUSEDSIGNAL */
/* verilator lint_off UNSIGNED */

module tessera_axi_mem #(
    parameter integer ADDR_BITS  = 32,
    parameter integer DATA_BITS  = 64,     // 8 .. 1024, a power of two
    parameter integer ID_BITS    = 4,      // as hw/axi.py's Axi4Signature default
    parameter [63:0]  BASE       = 64'd0,  // byte address of word 0, aligned to the bus
    parameter integer WORDS      = 65536,  // depth in bus words
    parameter integer LATENCY    = 100,    // cycles, at least 1
    parameter integer MAX_BURSTS = 32,     // bursts in flight per direction, at least 1
    parameter integer ERR_RANGES = 4       // error ranges of the configuration port
) (
    input  wire                   clk,
    input  wire                   rst,
    input  wire [15:0]            cfg_latency,   // cycles; 0: the LATENCY parameter
    input  wire [7:0]             cfg_gap,       // idle cycles after each R or W beat
    input  wire                   cfg_we,        // the configuration port (see above)
    input  wire [4:0]             cfg_sel,
    input  wire [63:0]            cfg_data,

    input  wire [ID_BITS-1:0]     s_axi__awid,
    input  wire [ADDR_BITS-1:0]   s_axi__awaddr,
    input  wire [7:0]             s_axi__awlen,
    input  wire [2:0]             s_axi__awsize,
    input  wire [1:0]             s_axi__awburst,
    input  wire                   s_axi__awvalid,
    output wire                   s_axi__awready,

    input  wire [DATA_BITS-1:0]   s_axi__wdata,
    input  wire [DATA_BITS/8-1:0] s_axi__wstrb,
    input  wire                   s_axi__wlast,
    input  wire                   s_axi__wvalid,
    output wire                   s_axi__wready,

    output reg  [ID_BITS-1:0]     s_axi__bid,
    output reg  [1:0]             s_axi__bresp,
    output reg                    s_axi__bvalid,
    input  wire                   s_axi__bready,

    input  wire [ID_BITS-1:0]     s_axi__arid,
    input  wire [ADDR_BITS-1:0]   s_axi__araddr,
    input  wire [7:0]             s_axi__arlen,
    input  wire [2:0]             s_axi__arsize,
    input  wire [1:0]             s_axi__arburst,
    input  wire                   s_axi__arvalid,
    output wire                   s_axi__arready,

    output reg  [ID_BITS-1:0]     s_axi__rid,
    output reg  [DATA_BITS-1:0]   s_axi__rdata,
    output reg  [1:0]             s_axi__rresp,
    output reg                    s_axi__rlast,
    output reg                    s_axi__rvalid,
    input  wire                   s_axi__rready,

    input  wire                   bd_load,
    input  wire                   bd_dump,
    input  wire [31:0]            bd_dump_first,
    input  wire [31:0]            bd_dump_last
);

    localparam integer BYTES    = DATA_BITS / 8;
    localparam integer SHIFT    = $clog2(BYTES);
    // Word addresses carry one bit more than the bus, so that a burst running past the
    // top of the address space stays out of range instead of wrapping to address 0.
    localparam integer WA_BITS  = ADDR_BITS - SHIFT + 1;
    localparam integer IDX_BITS = (WORDS > 1) ? $clog2(WORDS) : 1;
    localparam integer Q_BITS   = (MAX_BURSTS > 1) ? $clog2(MAX_BURSTS) : 1;
    localparam integer N_BITS   = $clog2(MAX_BURSTS + 1);
    localparam [64:0]  BASE_W   = {1'b0, BASE} >> SHIFT;
    localparam [64:0]  LIMIT_W  = BASE_W + WORDS;
    localparam [1:0]   OKAY     = 2'b00;
    localparam [1:0]   DECERR   = 2'b11;
    localparam [63:0]  GOLDEN   = 64'h9E3779B97F4A7C15;   // odd: seed * GOLDEN is a bijection
    localparam [1:0]   INCR     = 2'b01;

    initial begin
        if (DATA_BITS < 8 || DATA_BITS > 1024 || (8 << SHIFT) != DATA_BITS) begin
            $display("tessera_axi_mem: DATA_BITS must be a power of two from 8 to 1024, not %0d",
                     DATA_BITS);
            $finish;
        end
        if (WORDS < 1 || LATENCY < 1 || MAX_BURSTS < 1) begin
            $display("tessera_axi_mem: WORDS, LATENCY and MAX_BURSTS must be at least 1, not %0d, %0d, %0d",
                     WORDS, LATENCY, MAX_BURSTS);
            $finish;
        end
        if (BASE % BYTES != 0) begin
            $display("tessera_axi_mem: BASE (0x%0h) must be a multiple of the bus width in bytes (%0d)",
                     BASE, BYTES);
            $finish;
        end
    end

`ifdef TESSERA_NATIVE
    import "DPI-C" function void tessera_mem_attach(input longint words, input int bytes);
    import "DPI-C" function void tessera_mem_read(input longint idx,
                                                  output bit [DATA_BITS-1:0] data);
    import "DPI-C" function void tessera_mem_write(input longint idx,
                                                   input bit [DATA_BITS-1:0] data,
                                                   input bit [DATA_BITS/8-1:0] strb);
    reg [DATA_BITS-1:0] r_word;
    initial tessera_mem_attach(WORDS, BYTES);
`else
    reg [DATA_BITS-1:0] mem [0:WORDS-1];

    integer init_i;
    initial begin
        for (init_i = 0; init_i < WORDS; init_i = init_i + 1)
            mem[init_i] = {DATA_BITS{1'b0}};
    end
`endif

    // A free-running cycle count; a queued response is due once (cycle - due) >= 0,
    // compared as a wrapping difference.
    reg [31:0] cycle;
    wire [31:0] latency = (cfg_latency != 16'd0) ? {16'd0, cfg_latency} : LATENCY;
    reg [7:0] r_hold, w_hold;       // cycles left of the gap after an R / W beat

    // ---- faults and random timing -------------------------------------------------------
    reg [63:0] seed, rng;
    reg [15:0] jitter;
    reg [39:0] stalls;
    reg [1:0]  inject;
    reg [63:0] err_lo   [0:ERR_RANGES-1];
    reg [63:0] err_hi   [0:ERR_RANGES-1];
    reg [3:0]  err_kind [0:ERR_RANGES-1];

    function [63:0] xorshift64;
        input [63:0] x;
        reg [63:0] y;
        begin
            y = x ^ (x << 13);
            y = y ^ (y >> 7);
            xorshift64 = y ^ (y << 17);
        end
    endfunction

    function [63:0] seeded;
        input [63:0] s;
        seeded = (s == 64'd0) ? GOLDEN : s * GOLDEN;
    endfunction

    // Two draws a cycle: rng for the stalls, rng_b for the latencies.
    wire [63:0] rng_b = xorshift64(rng);
    wire st_ar = rng[7:0]   < stalls[7:0];
    wire st_r  = rng[15:8]  < stalls[15:8];
    wire st_aw = rng[23:16] < stalls[23:16];
    wire st_w  = rng[31:24] < stalls[31:24];
    wire st_b  = rng[39:32] < stalls[39:32];

    function [31:0] jittered;      // latency - 1 + u, u uniform in 0 .. jitter
        input [31:0] draw;
        jittered = (latency - 1) + ((jitter == 16'd0) ? 32'd0 : draw % ({16'd0, jitter} + 1));
    endfunction

    // ---- read side --------------------------------------------------------------------
    reg [ID_BITS-1:0] arq_id  [0:MAX_BURSTS-1];
    reg [WA_BITS-1:0] arq_wa  [0:MAX_BURSTS-1];
    reg [7:0]         arq_len [0:MAX_BURSTS-1];
    reg [31:0]        arq_due [0:MAX_BURSTS-1];
    reg [Q_BITS-1:0]  arq_wr, arq_rd;
    reg [N_BITS-1:0]  arq_count;     // bursts queued, not all beats produced
    reg [N_BITS-1:0]  rd_inflight;   // bursts from AR handshake to last R handshake
    reg [7:0]         r_beat;

    assign s_axi__arready = rd_inflight < MAX_BURSTS && !st_ar;
    wire ar_fire = s_axi__arvalid && s_axi__arready;
    wire r_fire  = s_axi__rvalid && s_axi__rready;

    wire [31:0]        r_wait = cycle - arq_due[arq_rd];
    wire               r_due  = arq_count != 0 && !r_wait[31];
    wire               r_load = r_due && r_hold == 8'd0 && (!s_axi__rvalid || s_axi__rready)
                                && !st_r;
    wire [WA_BITS-1:0] r_wa   = arq_wa[arq_rd] + r_beat;
    wire               r_ok   = r_wa >= BASE_W && r_wa < LIMIT_W;
    wire [WA_BITS-1:0] r_off  = r_wa - BASE_W[WA_BITS-1:0];
    wire [IDX_BITS-1:0] r_idx = r_off[IDX_BITS-1:0];
    wire               r_end  = r_beat == arq_len[arq_rd];

    // ---- write side -------------------------------------------------------------------
    reg [ID_BITS-1:0] awq_id  [0:MAX_BURSTS-1];
    reg [WA_BITS-1:0] awq_wa  [0:MAX_BURSTS-1];
    reg [7:0]         awq_len [0:MAX_BURSTS-1];
    reg [Q_BITS-1:0]  awq_wr, awq_rd;
    reg [N_BITS-1:0]  awq_count;     // bursts whose data is not complete
    reg [N_BITS-1:0]  wr_inflight;   // bursts from AW handshake to B handshake
    reg [7:0]         w_beat;
    reg  [1:0]        w_err;         // the first error response of the current burst

    reg [ID_BITS-1:0] bq_id   [0:MAX_BURSTS-1];
    reg [1:0]         bq_resp [0:MAX_BURSTS-1];
    reg [31:0]        bq_due  [0:MAX_BURSTS-1];
    reg [Q_BITS-1:0]  bq_wr, bq_rd;
    reg [N_BITS-1:0]  bq_count;

    assign s_axi__awready = wr_inflight < MAX_BURSTS && !st_aw;
    assign s_axi__wready  = awq_count != 0 && w_hold == 8'd0 && !st_w;
    wire aw_fire = s_axi__awvalid && s_axi__awready;
    wire w_fire  = s_axi__wvalid && s_axi__wready;
    wire b_fire  = s_axi__bvalid && s_axi__bready;

    wire [WA_BITS-1:0] w_wa   = awq_wa[awq_rd] + w_beat;
    wire               w_ok   = w_wa >= BASE_W && w_wa < LIMIT_W;
    wire [WA_BITS-1:0] w_off  = w_wa - BASE_W[WA_BITS-1:0];
    wire [IDX_BITS-1:0] w_idx = w_off[IDX_BITS-1:0];
    wire               w_end  = w_beat == awq_len[awq_rd];

    wire [31:0]        b_wait = cycle - bq_due[bq_rd];
    wire               b_due  = bq_count != 0 && !b_wait[31];
    wire               b_load = b_due && (!s_axi__bvalid || s_axi__bready) && !st_b;
    reg                b_spurious;    // INJECT 2: the response on the bus answers nothing
    reg                injected;
    wire               b_inject = inject == 2'd2 && !injected && ar_fire && !s_axi__bvalid
                                  && bq_count == 0 && wr_inflight == 0;
    wire               active = s_axi__arvalid || s_axi__awvalid || s_axi__wvalid
                                || rd_inflight != 0 || wr_inflight != 0;

    // Error ranges and random draws cost nothing per cycle while none is set (the
    // default): the beats check the ranges only when one is on, the generator steps only
    // when something random is asked for.
    wire [ERR_RANGES-1:0] range_on;
    genvar e;
    generate
        for (e = 0; e < ERR_RANGES; e = e + 1) begin : ranges
            assign range_on[e] = err_kind[e][1];      // SLVERR or DECERR
        end
    endgenerate
    wire ranges_on = |range_on;
    wire random_on = jitter != 16'd0 || stalls != 40'd0;

    // The response of the lowest error range whose bytes a beat (word address wa) overlaps,
    // OKAY if none (byte addresses carry two spare bits).
    function [1:0] range_resp;
        input [WA_BITS-1:0] wa;
        input               write;
        reg   [65:0]        first;
        integer             i;
        begin
            range_resp = OKAY;
            first = {1'b0, wa, {SHIFT{1'b0}}};
            for (i = ERR_RANGES - 1; i >= 0; i = i - 1)
                if (range_on[i] && err_kind[i][2 + write] && first + BYTES > {2'b0, err_lo[i]}
                        && first < {2'b0, err_hi[i]})
                    range_resp = err_kind[i][1:0];
        end
    endfunction

    // A beat's response: DECERR outside the memory, else its error range's.
    function [1:0] beat_resp;
        input               ok;
        input [WA_BITS-1:0] wa;
        input               write;
        beat_resp = !ok ? DECERR : ranges_on ? range_resp(wa, write) : OKAY;
    endfunction
    integer kc, ki;

    wire [DATA_BITS-1:0] w_mask;
    genvar g;
    generate
        for (g = 0; g < BYTES; g = g + 1) begin : strobe
            assign w_mask[8*g +: 8] = {8{s_axi__wstrb[g]}};
        end
    endgenerate

    function [Q_BITS-1:0] q_next;
        input [Q_BITS-1:0] p;
        q_next = (p == MAX_BURSTS - 1) ? {Q_BITS{1'b0}} : p + 1'b1;
    endfunction

    reg bd_load_q, bd_dump_q;
    reg warned_ar, warned_aw, warned_wlast;

    // Idle without a reset too (the queues' contents need none).
    initial begin
        cycle = 32'd0;
        r_hold = 8'd0; w_hold = 8'd0;
        arq_wr = 0; arq_rd = 0; arq_count = 0; rd_inflight = 0; r_beat = 8'd0;
        awq_wr = 0; awq_rd = 0; awq_count = 0; wr_inflight = 0; w_beat = 8'd0; w_err = OKAY;
        bq_wr = 0; bq_rd = 0; bq_count = 0;
        s_axi__rvalid = 1'b0; s_axi__rlast = 1'b0; s_axi__rid = {ID_BITS{1'b0}};
        s_axi__rresp = OKAY; s_axi__rdata = {DATA_BITS{1'b0}};
        s_axi__bvalid = 1'b0; s_axi__bid = {ID_BITS{1'b0}}; s_axi__bresp = OKAY;
        bd_load_q = 1'b0;
        bd_dump_q = 1'b0;
        warned_ar = 1'b0;
        warned_aw = 1'b0;
        warned_wlast = 1'b0;
        seed = 64'd0; rng = GOLDEN; jitter = 16'd0; stalls = 40'd0; inject = 2'd0;
        b_spurious = 1'b0; injected = 1'b0;
        for (ki = 0; ki < ERR_RANGES; ki = ki + 1) begin
            err_lo[ki] = 64'd0; err_hi[ki] = 64'd0; err_kind[ki] = 4'd0;
        end
    end

    // One block writes the memory (bus and back door), so that no simulator sees two
    // drivers of it.
    always @(posedge clk) begin
        cycle <= cycle + 1'b1;

        // The configuration port, kept over rst; the generator reloads at rst.
        if (cfg_we) begin
            if (cfg_sel == 5'd0) seed <= cfg_data;
            if (cfg_sel == 5'd1) jitter <= cfg_data[15:0];
            if (cfg_sel == 5'd2) stalls <= cfg_data[39:0];
            if (cfg_sel == 5'd3) inject <= cfg_data[1:0];
            for (kc = 0; kc < ERR_RANGES; kc = kc + 1) begin
                if (cfg_sel == 4 + 3 * kc) err_lo[kc] <= cfg_data;
                if (cfg_sel == 5 + 3 * kc) err_hi[kc] <= cfg_data;
                if (cfg_sel == 6 + 3 * kc) err_kind[kc] <= cfg_data[3:0];
            end
        end
        if (rst || (cfg_we && cfg_sel == 5'd0))
            rng <= seeded(rst ? seed : cfg_data);
        else if (active && random_on)
            rng <= xorshift64(rng_b);

        bd_load_q <= bd_load;
        bd_dump_q <= bd_dump;
`ifndef TESSERA_NATIVE
        if (bd_load && !bd_load_q)
            $readmemh("tessera_mem_in.hex", mem);
        if (bd_dump && !bd_dump_q)
            $writememh("tessera_mem_out.hex", mem, bd_dump_first, bd_dump_last);
`endif

        if (rst) begin
            r_hold <= 8'd0;
            w_hold <= 8'd0;
            arq_wr <= 0;
            arq_rd <= 0;
            arq_count <= 0;
            rd_inflight <= 0;
            r_beat <= 8'd0;
            s_axi__rvalid <= 1'b0;
            s_axi__rlast <= 1'b0;
            s_axi__rid <= {ID_BITS{1'b0}};
            s_axi__rresp <= OKAY;
            s_axi__rdata <= {DATA_BITS{1'b0}};
            awq_wr <= 0;
            awq_rd <= 0;
            awq_count <= 0;
            wr_inflight <= 0;
            w_beat <= 8'd0;
            w_err <= OKAY;
            bq_wr <= 0;
            bq_rd <= 0;
            bq_count <= 0;
            s_axi__bvalid <= 1'b0;
            s_axi__bid <= {ID_BITS{1'b0}};
            s_axi__bresp <= OKAY;
            b_spurious <= 1'b0;
            injected <= 1'b0;
        end else begin
            // -- AR --
            if (ar_fire) begin
                arq_id[arq_wr]  <= s_axi__arid;
                arq_wa[arq_wr]  <= {1'b0, s_axi__araddr[ADDR_BITS-1:SHIFT]};
                arq_len[arq_wr] <= s_axi__arlen;
                arq_due[arq_wr] <= cycle + jittered(rng_b[31:0]);
                arq_wr <= q_next(arq_wr);
                if (!warned_ar && (s_axi__arburst != INCR || s_axi__arsize != SHIFT)) begin
                    $display("tessera_axi_mem: warning: AR with ARBURST=%0d ARSIZE=%0d served as INCR of full-width beats (reported once)",
                             s_axi__arburst, s_axi__arsize);
                    warned_ar <= 1'b1;
                end
            end
            arq_count <= arq_count + ar_fire - (r_load && r_end);
            rd_inflight <= rd_inflight + ar_fire - (r_fire && s_axi__rlast);

            // -- R --
            if (r_load)
                r_hold <= cfg_gap;
            else if (r_hold != 8'd0)
                r_hold <= r_hold - 8'd1;
            if (r_load) begin
                s_axi__rvalid <= 1'b1;
                s_axi__rid    <= arq_id[arq_rd];
`ifdef TESSERA_NATIVE
                if (beat_resp(r_ok, r_wa, 1'b0) == OKAY)
                    tessera_mem_read(r_off, r_word);
                s_axi__rdata  <= (beat_resp(r_ok, r_wa, 1'b0) == OKAY) ? r_word
                                                                       : {DATA_BITS{1'b0}};
`else
                s_axi__rdata  <= (beat_resp(r_ok, r_wa, 1'b0) == OKAY) ? mem[r_idx]
                                                                       : {DATA_BITS{1'b0}};
`endif
                s_axi__rresp  <= beat_resp(r_ok, r_wa, 1'b0);
                s_axi__rlast  <= r_end && inject != 2'd1;
                if (r_end) begin
                    r_beat <= 8'd0;
                    arq_rd <= q_next(arq_rd);
                end else begin
                    r_beat <= r_beat + 1'b1;
                end
            end else if (s_axi__rready) begin
                s_axi__rvalid <= 1'b0;
            end

            // -- AW --
            if (aw_fire) begin
                awq_id[awq_wr]  <= s_axi__awid;
                awq_wa[awq_wr]  <= {1'b0, s_axi__awaddr[ADDR_BITS-1:SHIFT]};
                awq_len[awq_wr] <= s_axi__awlen;
                awq_wr <= q_next(awq_wr);
                if (!warned_aw && (s_axi__awburst != INCR || s_axi__awsize != SHIFT)) begin
                    $display("tessera_axi_mem: warning: AW with AWBURST=%0d AWSIZE=%0d served as INCR of full-width beats (reported once)",
                             s_axi__awburst, s_axi__awsize);
                    warned_aw <= 1'b1;
                end
            end
            awq_count <= awq_count + aw_fire - (w_fire && w_end);
            wr_inflight <= wr_inflight + aw_fire - (b_fire && !b_spurious);

            // -- W --
            if (w_fire)
                w_hold <= cfg_gap;
            else if (w_hold != 8'd0)
                w_hold <= w_hold - 8'd1;
            if (w_fire) begin
`ifdef TESSERA_NATIVE
                if (beat_resp(w_ok, w_wa, 1'b1) == OKAY)
                    tessera_mem_write(w_off, s_axi__wdata, s_axi__wstrb);
`else
                if (beat_resp(w_ok, w_wa, 1'b1) == OKAY)
                    mem[w_idx] <= (mem[w_idx] & ~w_mask) | (s_axi__wdata & w_mask);
`endif
                if (!warned_wlast && s_axi__wlast != w_end) begin
                    $display("tessera_axi_mem: warning: WLAST=%0d on beat %0d of a %0d-beat burst (AWLEN ends bursts; reported once)",
                             s_axi__wlast, w_beat, awq_len[awq_rd] + 1);
                    warned_wlast <= 1'b1;
                end
                if (w_end) begin
                    bq_id[bq_wr]   <= awq_id[awq_rd];
                    bq_resp[bq_wr] <= (w_err != OKAY) ? w_err : beat_resp(w_ok, w_wa, 1'b1);
                    bq_due[bq_wr]  <= cycle + jittered(rng_b[63:32]);
                    bq_wr <= q_next(bq_wr);
                    awq_rd <= q_next(awq_rd);
                    w_beat <= 8'd0;
                    w_err <= OKAY;
                end else begin
                    w_beat <= w_beat + 1'b1;
                    w_err <= (w_err != OKAY) ? w_err : beat_resp(w_ok, w_wa, 1'b1);
                end
            end
            bq_count <= bq_count + (w_fire && w_end) - b_load;

            // -- B --
            if (b_load) begin
                s_axi__bvalid <= 1'b1;
                s_axi__bid    <= bq_id[bq_rd];
                s_axi__bresp  <= bq_resp[bq_rd];
                bq_rd <= q_next(bq_rd);
                b_spurious <= 1'b0;
            end else if (b_inject) begin
                s_axi__bvalid <= 1'b1;
                s_axi__bid    <= {ID_BITS{1'b0}};
                s_axi__bresp  <= OKAY;
                b_spurious <= 1'b1;
                injected <= 1'b1;
            end else if (s_axi__bready) begin
                s_axi__bvalid <= 1'b0;
                b_spurious <= 1'b0;
            end
        end
    end

endmodule

/* verilator lint_on UNSIGNED */
/* verilator lint_on UNUSEDSIGNAL */
/* verilator lint_on WIDTHEXPAND */

`default_nettype wire
