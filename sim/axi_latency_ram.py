"""An AXI4 memory model with a fixed latency and pipelined bursts, for the benchmarks.

cocotbext-axi's ``AxiRam`` serves one burst at a time as soon as it arrives, which
measures neither latency hiding nor bursts in flight. This model accepts an address every
cycle, starts returning a read burst (or acknowledges a write burst) ``latency`` cycles
after its address (or last beat), and streams beats back to back, as a DRAM controller
behind a long interconnect would. Addresses in ``decerr`` answer DECERR.
"""

from __future__ import annotations

from collections import deque

__all__ = ["LatencyAxiRam"]


class LatencyAxiRam:
    """Main memory of ``size`` bytes at ``base`` behind the AXI4 port ``<prefix>_*``.

    Step it with :meth:`drive` (after a falling edge) and :meth:`sample` (in the read-only
    phase), together with the other models of the testbench.
    """

    def __init__(self, dut, prefix: str, base: int, size: int, latency: int,
                 decerr: tuple[int, int] | None = None):
        self.sig = {name: getattr(dut, f"{prefix}_{name}") for name in (
            "araddr", "arlen", "arvalid", "arready", "rdata", "rresp", "rlast", "rvalid",
            "rready", "awaddr", "awlen", "awvalid", "awready", "wdata", "wstrb", "wlast",
            "wvalid", "wready", "bresp", "bvalid", "bready")}
        self.base, self.size, self.latency = base, size, latency
        self.mem = bytearray(size)
        self.lanes = len(self.sig["rdata"]) // 8
        self.decerr = decerr
        self.reads: deque = deque()    # [ready_cycle, addr, beats_left]
        self.writes: deque = deque()   # [addr, beats_left]
        self.bresps: deque = deque()   # [ready_cycle, resp]
        self.cycle = 0
        self.r_beat = None
        self.b_resp = None
        self.done = False              # it never finishes by itself

    def _bad(self, addr: int) -> bool:
        return self.decerr is not None and self.decerr[0] <= addr < self.decerr[1]

    def drive(self) -> None:
        s = self.sig
        s["arready"].value = 1
        s["awready"].value = 1
        s["wready"].value = 1
        self.r_beat = None
        if self.reads and self.reads[0][0] <= self.cycle:
            _, addr, left = self.reads[0]
            self.r_beat = addr
            off = addr - self.base
            bad = self._bad(addr) or not 0 <= off < self.size
            data = bytes(self.lanes) if bad else bytes(self.mem[off:off + self.lanes])
            s["rdata"].value = int.from_bytes(data, "little")
            s["rresp"].value = 0b11 if bad else 0
            s["rlast"].value = int(left == 1)
        s["rvalid"].value = int(self.r_beat is not None)
        self.b_resp = None
        if self.bresps and self.bresps[0][0] <= self.cycle:
            self.b_resp = self.bresps[0][1]
            s["bresp"].value = self.b_resp
        s["bvalid"].value = int(self.b_resp is not None)

    def sample(self, cycle: int) -> None:
        s = self.sig
        if int(s["arvalid"].value):
            addr = int(s["araddr"].value) // self.lanes * self.lanes
            self.reads.append([self.cycle + self.latency, addr, int(s["arlen"].value) + 1])
        if self.r_beat is not None and int(s["rready"].value):
            head = self.reads[0]
            head[1] += self.lanes
            head[2] -= 1
            if head[2] == 0:
                self.reads.popleft()
        if int(s["awvalid"].value):
            addr = int(s["awaddr"].value) // self.lanes * self.lanes
            self.writes.append([addr, int(s["awlen"].value) + 1, 0])
        if int(s["wvalid"].value):
            burst = self.writes[0]   # the design sends W beats only after their AW
            addr, strb = burst[0], int(s["wstrb"].value)
            data = int(s["wdata"].value).to_bytes(self.lanes, "little")
            for i in range(self.lanes):
                if strb >> i & 1:
                    if self._bad(addr + i) or not 0 <= addr + i - self.base < self.size:
                        burst[2] = 0b11
                    else:
                        self.mem[addr + i - self.base] = data[i]
            burst[0] += self.lanes
            burst[1] -= 1
            if burst[1] == 0:
                assert int(s["wlast"].value), "WLAST missing on the last beat of a burst"
                self.bresps.append([self.cycle + self.latency, burst[2]])
                self.writes.popleft()
        if self.b_resp is not None and int(s["bready"].value):
            self.bresps.popleft()
        self.cycle += 1
