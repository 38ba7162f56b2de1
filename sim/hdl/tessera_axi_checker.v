// tessera_axi_checker: an AXI4 protocol checker, for simulation only. It watches a
// manager-subordinate pair (in the simulated system: the accelerator's memory master and
// the memory model) and latches the first violation of the rules below: which rule, in
// which cycle (counted from the end of rst) and at which address (the request's; for W,
// R and B beats, the address of their burst). sim/axi_checker.py reads the rule names
// and descriptions from the RULE_ lines here: keep one rule a line, with its comment.
//
// What it assumes (true of the simulated system): the subordinate answers in request
// order (one ID; responses with other IDs are not reordered), and accepts a burst's W
// beats only after its AW handshake.

`default_nettype none
/* verilator lint_off WIDTHEXPAND */
/* verilator lint_off UNUSEDSIGNAL */

module tessera_axi_checker #(
    parameter integer ADDR_BITS = 32,
    parameter integer DATA_BITS = 64,
    parameter integer ID_BITS   = 4,
    parameter integer DEPTH     = 64      // bursts followed per direction (a power of two)
) (
    input  wire                   clk,
    input  wire                   rst,

    input  wire [ID_BITS-1:0]     awid,
    input  wire [ADDR_BITS-1:0]   awaddr,
    input  wire [7:0]             awlen,
    input  wire [2:0]             awsize,
    input  wire [1:0]             awburst,
    input  wire                   awvalid,
    input  wire                   awready,
    input  wire [DATA_BITS-1:0]   wdata,
    input  wire [DATA_BITS/8-1:0] wstrb,
    input  wire                   wlast,
    input  wire                   wvalid,
    input  wire                   wready,
    input  wire [ID_BITS-1:0]     bid,
    input  wire [1:0]             bresp,
    input  wire                   bvalid,
    input  wire                   bready,
    input  wire [ID_BITS-1:0]     arid,
    input  wire [ADDR_BITS-1:0]   araddr,
    input  wire [7:0]             arlen,
    input  wire [2:0]             arsize,
    input  wire [1:0]             arburst,
    input  wire                   arvalid,
    input  wire                   arready,
    input  wire [ID_BITS-1:0]     rid,
    input  wire [DATA_BITS-1:0]   rdata,
    input  wire [1:0]             rresp,
    input  wire                   rlast,
    input  wire                   rvalid,
    input  wire                   rready,

    output reg                    violation,
    output reg  [7:0]             rule,
    output reg  [31:0]            at_cycle,
    output reg  [63:0]            at_addr
);

    localparam [7:0] RULE_AR_STABLE   = 8'd1;   // ARVALID fell, or the AR payload changed, before ARREADY
    localparam [7:0] RULE_AW_STABLE   = 8'd2;   // AWVALID fell, or the AW payload changed, before AWREADY
    localparam [7:0] RULE_W_STABLE    = 8'd3;   // WVALID fell, or WSTRB, WLAST or a strobed byte of WDATA changed, before WREADY
    localparam [7:0] RULE_AR_4K       = 8'd4;   // a read burst crosses a 4 KiB boundary
    localparam [7:0] RULE_AW_4K       = 8'd5;   // a write burst crosses a 4 KiB boundary
    localparam [7:0] RULE_AR_FORM     = 8'd6;   // ARSIZE wider than the bus, or the reserved ARBURST
    localparam [7:0] RULE_AW_FORM     = 8'd7;   // AWSIZE wider than the bus, or the reserved AWBURST
    localparam [7:0] RULE_W_LAST      = 8'd8;   // WLAST not exactly on the last beat of its burst
    localparam [7:0] RULE_W_EARLY     = 8'd9;   // a W beat accepted before its burst's AW handshake
    localparam [7:0] RULE_R_UNASKED   = 8'd10;  // RVALID with no read burst outstanding
    localparam [7:0] RULE_R_STABLE    = 8'd11;  // RVALID fell, or the R payload changed, before RREADY
    localparam [7:0] RULE_R_LAST      = 8'd12;  // RLAST not exactly on the last beat of its burst
    localparam [7:0] RULE_R_ID        = 8'd13;  // RID is not the ID of the oldest outstanding read burst
    localparam [7:0] RULE_B_UNASKED   = 8'd14;  // BVALID with no write burst whose data is complete
    localparam [7:0] RULE_B_STABLE    = 8'd15;  // BVALID fell, or BID or BRESP changed, before BREADY
    localparam [7:0] RULE_B_ID        = 8'd16;  // BID is not the ID of the oldest unanswered write burst
    /* verilator lint_off UNUSEDPARAM */   // (Verilator has no X: its check is left out)
    localparam [7:0] RULE_X_VALID     = 8'd17;  // a VALID or READY signal is X or Z (Icarus only)
    /* verilator lint_on UNUSEDPARAM */
    localparam [7:0] RULE_OVERFLOW    = 8'd18;  // more bursts outstanding than the checker follows

    localparam integer BYTES  = DATA_BITS / 8;
    localparam integer SHIFT  = $clog2(BYTES);
    localparam integer P_BITS = $clog2(DEPTH);

    // Requests accepted, oldest first: reads (ar_*) and writes (aw_*), each a ring.
    reg [ID_BITS-1:0]   ar_id   [0:DEPTH-1];
    reg [ADDR_BITS-1:0] ar_addr [0:DEPTH-1];
    reg [7:0]           ar_len  [0:DEPTH-1];
    reg [P_BITS:0]      ar_wr, ar_rd;        // one bit more than an index: full vs empty
    reg [7:0]           r_beat;
    reg [ID_BITS-1:0]   aw_id   [0:DEPTH-1];
    reg [ADDR_BITS-1:0] aw_addr [0:DEPTH-1];
    reg [7:0]           aw_len  [0:DEPTH-1];
    reg [P_BITS:0]      aw_wr, aw_data, aw_resp;   // pushed; data complete; answered
    reg [7:0]           w_beat;

    wire ar_fire = arvalid && arready;
    wire aw_fire = awvalid && awready;
    wire w_fire  = wvalid && wready;
    wire r_fire  = rvalid && rready;
    wire b_fire  = bvalid && bready;

    wire [P_BITS-1:0] ar_head = ar_rd[P_BITS-1:0];
    wire [P_BITS-1:0] w_head  = aw_data[P_BITS-1:0];
    wire [P_BITS-1:0] b_head  = aw_resp[P_BITS-1:0];
    wire reads_out  = ar_wr != ar_rd;
    wire writes_open = aw_wr != aw_data;    // address accepted, data not complete
    wire writes_done = aw_data != aw_resp;  // data complete, not answered

    // Last cycle's handshake waits and payloads.
    reg ar_wait, aw_wait, w_wait, r_wait, b_wait;
    reg [ID_BITS+ADDR_BITS+12:0]      ar_prev, aw_prev;
    reg [DATA_BITS+DATA_BITS/8:0]     w_prev;
    reg [ID_BITS+DATA_BITS+2:0]       r_prev;
    reg [ID_BITS+1:0]                 b_prev;
    wire [ID_BITS+ADDR_BITS+12:0] ar_now = {arid, araddr, arlen, arsize, arburst};
    wire [ID_BITS+ADDR_BITS+12:0] aw_now = {awid, awaddr, awlen, awsize, awburst};
    wire [DATA_BITS+DATA_BITS/8:0] w_now = {wdata, wstrb, wlast};
    // WDATA is held stable on the bytes the waiting beat's strobes cover: the others carry
    // nothing (the DMA's write buffer fills them while a beat waits).
    wire [DATA_BITS/8-1:0] w_prev_strb = w_prev[DATA_BITS/8:1];
    wire [DATA_BITS-1:0]   w_prev_data = w_prev[DATA_BITS+DATA_BITS/8:DATA_BITS/8+1];
    wire [DATA_BITS-1:0]   w_mask;
    genvar g;
    generate
        for (g = 0; g < DATA_BITS / 8; g = g + 1) begin : strobes
            assign w_mask[8*g +: 8] = {8{w_prev_strb[g]}};
        end
    endgenerate
    wire w_changed = {wstrb, wlast} != w_prev[DATA_BITS/8:0]
                     || (wdata & w_mask) != (w_prev_data & w_mask);
    wire [ID_BITS+DATA_BITS+2:0]  r_now  = {rid, rdata, rresp, rlast};
    wire [ID_BITS+1:0]            b_now  = {bid, bresp};

    // A burst's bytes: (len + 1) << size; crossing when its start offset in the 4 KiB page
    // plus that passes 4096 (INCR bursts; FIXED and WRAP stay inside by construction).
    wire [23:0] ar_end = {12'd0, araddr[11:0]} + ({16'd0, arlen} + 24'd1 << arsize);
    wire [23:0] aw_end = {12'd0, awaddr[11:0]} + ({16'd0, awlen} + 24'd1 << awsize);

    reg [31:0] cycle;

    // The first violation: latched once. The rules are checked only in cycles with a
    // handshake signal up or one waiting, so that an idle bus costs nothing.
    task report;
        input [7:0]  which;
        input [63:0] addr;
        begin
            violation <= 1'b1;
            rule <= which;
            at_cycle <= cycle;
            at_addr <= addr;
        end
    endtask

    wire busy = arvalid || awvalid || wvalid || rvalid || bvalid
                || ar_wait || aw_wait || w_wait || r_wait || b_wait;

    initial begin
        violation = 1'b0; rule = 8'd0; at_cycle = 32'd0; at_addr = 64'd0;
        cycle = 32'd0;
        ar_wr = 0; ar_rd = 0; r_beat = 8'd0; aw_wr = 0; aw_data = 0; aw_resp = 0;
        w_beat = 8'd0;
        ar_wait = 1'b0; aw_wait = 1'b0; w_wait = 1'b0; r_wait = 1'b0; b_wait = 1'b0;
    end

    always @(posedge clk) begin
        if (rst) begin
            violation <= 1'b0; rule <= 8'd0; at_cycle <= 32'd0; at_addr <= 64'd0;
            cycle <= 32'd0;
            ar_wr <= 0; ar_rd <= 0; r_beat <= 8'd0;
            aw_wr <= 0; aw_data <= 0; aw_resp <= 0; w_beat <= 8'd0;
            ar_wait <= 1'b0; aw_wait <= 1'b0; w_wait <= 1'b0; r_wait <= 1'b0; b_wait <= 1'b0;
        end else begin
            cycle <= cycle + 1'b1;
`ifndef VERILATOR
            if (!violation && (arvalid ^ arready ^ awvalid ^ awready ^ wvalid ^ wready
                               ^ rvalid ^ rready ^ bvalid ^ bready) === 1'bx)
                report(RULE_X_VALID, 64'd0);
            else
`endif
            if (!violation && busy) begin
                if (ar_wait && (!arvalid || ar_now != ar_prev))
                    report(RULE_AR_STABLE, ar_prev[ADDR_BITS+12:13]);
                else if (aw_wait && (!awvalid || aw_now != aw_prev))
                    report(RULE_AW_STABLE, aw_prev[ADDR_BITS+12:13]);
                else if (w_wait && (!wvalid || w_changed))
                    report(RULE_W_STABLE, aw_addr[w_head]);
                else if (arvalid && (arsize > SHIFT || arburst == 2'b11))
                    report(RULE_AR_FORM, araddr);
                else if (awvalid && (awsize > SHIFT || awburst == 2'b11))
                    report(RULE_AW_FORM, awaddr);
                else if (arvalid && arburst == 2'b01 && ar_end > 24'd4096)
                    report(RULE_AR_4K, araddr);
                else if (awvalid && awburst == 2'b01 && aw_end > 24'd4096)
                    report(RULE_AW_4K, awaddr);
                else if (w_fire && !writes_open)
                    report(RULE_W_EARLY, 64'd0);
                else if (w_fire && wlast != (w_beat == aw_len[w_head]))
                    report(RULE_W_LAST, aw_addr[w_head]);
                else if (rvalid && !reads_out)
                    report(RULE_R_UNASKED, 64'd0);
                else if (r_wait && (!rvalid || r_now != r_prev))
                    report(RULE_R_STABLE, ar_addr[ar_head]);
                else if (r_fire && rlast != (r_beat == ar_len[ar_head]))
                    report(RULE_R_LAST, ar_addr[ar_head]);
                else if (r_fire && rid != ar_id[ar_head])
                    report(RULE_R_ID, ar_addr[ar_head]);
                else if (bvalid && !writes_done)
                    report(RULE_B_UNASKED, 64'd0);
                else if (b_wait && (!bvalid || b_now != b_prev))
                    report(RULE_B_STABLE, aw_addr[b_head]);
                else if (b_fire && bid != aw_id[b_head])
                    report(RULE_B_ID, aw_addr[b_head]);
                else if ((ar_fire && ar_wr - ar_rd == DEPTH)
                         || (aw_fire && aw_wr - aw_resp == DEPTH))
                    report(RULE_OVERFLOW, 64'd0);
            end
            ar_wait <= arvalid && !arready;
            aw_wait <= awvalid && !awready;
            w_wait  <= wvalid && !wready;
            r_wait  <= rvalid && !rready;
            b_wait  <= bvalid && !bready;
            // (A payload is compared only after a cycle of waiting: kept only then.)
            if (arvalid && !arready) ar_prev <= ar_now;
            if (awvalid && !awready) aw_prev <= aw_now;
            if (wvalid && !wready)   w_prev  <= w_now;
            if (rvalid && !rready)   r_prev  <= r_now;
            if (bvalid && !bready)   b_prev  <= b_now;
            if (ar_fire && ar_wr - ar_rd != DEPTH) begin
                ar_id[ar_wr[P_BITS-1:0]]   <= arid;
                ar_addr[ar_wr[P_BITS-1:0]] <= araddr;
                ar_len[ar_wr[P_BITS-1:0]]  <= arlen;
                ar_wr <= ar_wr + 1'b1;
            end
            // Bursts advance by their own length, whatever RLAST and WLAST say, so that
            // one wrong beat does not misalign the rest (only the first is reported).
            if (r_fire && reads_out) begin
                if (r_beat == ar_len[ar_head]) begin
                    r_beat <= 8'd0;
                    ar_rd <= ar_rd + 1'b1;
                end else begin
                    r_beat <= r_beat + 1'b1;
                end
            end
            if (aw_fire && aw_wr - aw_resp != DEPTH) begin
                aw_id[aw_wr[P_BITS-1:0]]   <= awid;
                aw_addr[aw_wr[P_BITS-1:0]] <= awaddr;
                aw_len[aw_wr[P_BITS-1:0]]  <= awlen;
                aw_wr <= aw_wr + 1'b1;
            end
            if (w_fire && writes_open) begin
                if (w_beat == aw_len[w_head]) begin
                    w_beat <= 8'd0;
                    aw_data <= aw_data + 1'b1;
                end else begin
                    w_beat <= w_beat + 1'b1;
                end
            end
            if (b_fire && writes_done)
                aw_resp <= aw_resp + 1'b1;
        end
    end

endmodule

/* verilator lint_on UNUSEDSIGNAL */
/* verilator lint_on WIDTHEXPAND */

`default_nettype wire
