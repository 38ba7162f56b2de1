// tessera_axil_checker: an AXI4-Lite protocol checker, for simulation only. It watches a
// manager-subordinate pair (in the simulated system: the harness's register-access
// manager and the accelerator's register port) and latches the first violation of the
// rules below: which rule, in which cycle (counted from the end of rst) and at which
// register address. sim/axi_checker.py reads the rule names and descriptions from the
// RULE_ lines here: keep one rule a line, with its comment. Its rules are numbered after
// tessera_axi_checker's, so that one number names a rule of either.

`default_nettype none
/* verilator lint_off WIDTHEXPAND */
/* verilator lint_off UNUSEDSIGNAL */

module tessera_axil_checker #(
    parameter integer ADDR_BITS = 12,
    parameter integer DATA_BITS = 32
) (
    input  wire                   clk,
    input  wire                   rst,

    input  wire [ADDR_BITS-1:0]   awaddr,
    input  wire [2:0]             awprot,
    input  wire                   awvalid,
    input  wire                   awready,
    input  wire [DATA_BITS-1:0]   wdata,
    input  wire [DATA_BITS/8-1:0] wstrb,
    input  wire                   wvalid,
    input  wire                   wready,
    input  wire [1:0]             bresp,
    input  wire                   bvalid,
    input  wire                   bready,
    input  wire [ADDR_BITS-1:0]   araddr,
    input  wire [2:0]             arprot,
    input  wire                   arvalid,
    input  wire                   arready,
    input  wire [DATA_BITS-1:0]   rdata,
    input  wire [1:0]             rresp,
    input  wire                   rvalid,
    input  wire                   rready,

    output reg                    violation,
    output reg  [7:0]             rule,
    output reg  [31:0]            at_cycle,
    output reg  [63:0]            at_addr
);

    localparam [7:0] RULE_LITE_AR_STABLE = 8'd33;  // AXI4-Lite: ARVALID fell, or ARADDR or ARPROT changed, before ARREADY
    localparam [7:0] RULE_LITE_AW_STABLE = 8'd34;  // AXI4-Lite: AWVALID fell, or AWADDR or AWPROT changed, before AWREADY
    localparam [7:0] RULE_LITE_W_STABLE  = 8'd35;  // AXI4-Lite: WVALID fell, or WSTRB or a strobed byte of WDATA changed, before WREADY
    localparam [7:0] RULE_LITE_R_UNASKED = 8'd36;  // AXI4-Lite: RVALID with no read outstanding
    localparam [7:0] RULE_LITE_R_STABLE  = 8'd37;  // AXI4-Lite: RVALID fell, or RDATA or RRESP changed, before RREADY
    localparam [7:0] RULE_LITE_B_UNASKED = 8'd38;  // AXI4-Lite: BVALID before both the AW and the W handshake of a write
    localparam [7:0] RULE_LITE_B_STABLE  = 8'd39;  // AXI4-Lite: BVALID fell, or BRESP changed, before BREADY
    /* verilator lint_off UNUSEDPARAM */   // (Verilator has no X: its check is left out)
    localparam [7:0] RULE_LITE_X_VALID   = 8'd40;  // AXI4-Lite: a VALID or READY signal is X or Z (Icarus only)
    /* verilator lint_on UNUSEDPARAM */

    wire ar_fire = arvalid && arready;
    wire aw_fire = awvalid && awready;
    wire w_fire  = wvalid && wready;
    wire r_fire  = rvalid && rready;
    wire b_fire  = bvalid && bready;

    // Handshakes not yet answered (a manager may have several in flight).
    reg [7:0] reads, addrs, datas;
    reg [ADDR_BITS-1:0] last_ar, last_aw;

    reg ar_wait, aw_wait, w_wait, r_wait, b_wait;
    reg [ADDR_BITS+2:0]         ar_prev, aw_prev;
    reg [DATA_BITS+DATA_BITS/8-1:0] w_prev;
    reg [DATA_BITS+1:0]         r_prev;
    reg [1:0]                   b_prev;
    wire [ADDR_BITS+2:0]        ar_now = {araddr, arprot};
    wire [ADDR_BITS+2:0]        aw_now = {awaddr, awprot};
    wire [DATA_BITS+DATA_BITS/8-1:0] w_now = {wdata, wstrb};
    // WDATA is held stable on the bytes the waiting write's strobes cover.
    wire [DATA_BITS/8-1:0] w_prev_strb = w_prev[DATA_BITS/8-1:0];
    wire [DATA_BITS-1:0]   w_prev_data = w_prev[DATA_BITS+DATA_BITS/8-1:DATA_BITS/8];
    wire [DATA_BITS-1:0]   w_mask;
    genvar g;
    generate
        for (g = 0; g < DATA_BITS / 8; g = g + 1) begin : strobes
            assign w_mask[8*g +: 8] = {8{w_prev_strb[g]}};
        end
    endgenerate
    wire w_changed = wstrb != w_prev_strb || (wdata & w_mask) != (w_prev_data & w_mask);
    wire [DATA_BITS+1:0]        r_now  = {rdata, rresp};

    reg [31:0] cycle;

    // The first violation: latched once, the rules checked only in cycles with a
    // handshake signal up or one waiting.
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
        cycle = 32'd0; reads = 8'd0; addrs = 8'd0; datas = 8'd0;
        ar_wait = 1'b0; aw_wait = 1'b0; w_wait = 1'b0; r_wait = 1'b0; b_wait = 1'b0;
    end

    always @(posedge clk) begin
        if (rst) begin
            violation <= 1'b0; rule <= 8'd0; at_cycle <= 32'd0; at_addr <= 64'd0;
            cycle <= 32'd0; reads <= 8'd0; addrs <= 8'd0; datas <= 8'd0;
            ar_wait <= 1'b0; aw_wait <= 1'b0; w_wait <= 1'b0; r_wait <= 1'b0; b_wait <= 1'b0;
        end else begin
            cycle <= cycle + 1'b1;
`ifndef VERILATOR
            if (!violation && (arvalid ^ arready ^ awvalid ^ awready ^ wvalid ^ wready
                               ^ rvalid ^ rready ^ bvalid ^ bready) === 1'bx)
                report(RULE_LITE_X_VALID, 64'd0);
            else
`endif
            if (!violation && busy) begin
                if (ar_wait && (!arvalid || ar_now != ar_prev))
                    report(RULE_LITE_AR_STABLE, ar_prev[ADDR_BITS+2:3]);
                else if (aw_wait && (!awvalid || aw_now != aw_prev))
                    report(RULE_LITE_AW_STABLE, aw_prev[ADDR_BITS+2:3]);
                else if (w_wait && (!wvalid || w_changed))
                    report(RULE_LITE_W_STABLE, last_aw);
                else if (rvalid && reads == 8'd0)
                    report(RULE_LITE_R_UNASKED, 64'd0);
                else if (r_wait && (!rvalid || r_now != r_prev))
                    report(RULE_LITE_R_STABLE, last_ar);
                else if (bvalid && (addrs == 8'd0 || datas == 8'd0))
                    report(RULE_LITE_B_UNASKED, 64'd0);
                else if (b_wait && (!bvalid || bresp != b_prev))
                    report(RULE_LITE_B_STABLE, last_aw);
            end
            ar_wait <= arvalid && !arready;
            aw_wait <= awvalid && !awready;
            w_wait  <= wvalid && !wready;
            r_wait  <= rvalid && !rready;
            b_wait  <= bvalid && !bready;
            if (arvalid && !arready) ar_prev <= ar_now;
            if (awvalid && !awready) aw_prev <= aw_now;
            if (wvalid && !wready)   w_prev  <= w_now;
            if (rvalid && !rready)   r_prev  <= r_now;
            if (bvalid && !bready)   b_prev  <= bresp;
            if (ar_fire) last_ar <= araddr;
            if (aw_fire) last_aw <= awaddr;
            reads <= reads + ar_fire - (r_fire && reads != 8'd0);
            addrs <= addrs + aw_fire - (b_fire && addrs != 8'd0);
            datas <= datas + w_fire - (b_fire && datas != 8'd0);
        end
    end

endmodule

/* verilator lint_on UNUSEDSIGNAL */
/* verilator lint_on WIDTHEXPAND */

`default_nettype wire
