"""Which cell drives each net bit of a flattened Yosys JSON module, and which cells read it.

Shared by the DSP register packing (:mod:`tessera.sw.dsp_pack`), which edits the netlist and
keeps the index in step, and the path ranking (:mod:`tessera.sw.paths`), which walks it.
Constant bits (Yosys writes them as the strings ``"0"``, ``"1"``, ``"x"``) are left out.
"""

from __future__ import annotations

from collections import defaultdict

__all__ = ["NetIndex"]


class NetIndex:
    """``driver[bit]``: the ``(cell, port)`` that drives a net bit; ``loads[bit]``: the
    ``(cell, port)`` pairs that read it. With ``ports``, the module's own ports count too,
    as ``("$port", name)``: an input drives its bits, an output reads them."""

    def __init__(self, module: dict, ports: bool = False):
        self.driver: dict = {}
        self.loads: dict = defaultdict(list)
        for name, c in module["cells"].items():
            for port, bits in c["connections"].items():
                out = c["port_directions"].get(port) == "output"
                for b in bits:
                    if isinstance(b, str):
                        continue
                    if out:
                        self.driver[b] = (name, port)
                    else:
                        self.loads[b].append((name, port))
        if ports:
            for pname, p in module.get("ports", {}).items():
                for b in p["bits"]:
                    if isinstance(b, str):
                        continue
                    if p["direction"] == "input":
                        self.driver[b] = ("$port", pname)
                    else:
                        self.loads[b].append(("$port", pname))

    def drop_load(self, bit, cell: str, port: str):
        if not isinstance(bit, str):
            self.loads[bit].remove((cell, port))

    def drop_cell(self, cell: dict, name: str):
        """Forget ``cell``'s inputs as loads (it is being removed)."""
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) != "output":
                for b in bits:
                    self.drop_load(b, name, port)
