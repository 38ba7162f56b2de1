"""The Verilog AXI4 memory model (``sim/hdl/tessera_axi_mem.v``) on both simulators:
random bursts with strobes against a reference copy, DECERR outside the memory, the back
door ($readmemh / $writememh) and full-bandwidth streaming behind a pipelined latency.
Also the hex-image helpers of ``sim/memimage.py`` (no simulator)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from tessera.sim import memimage
from tessera.sim.runner import TIMESCALE, SimulationFailed, build_root
from tessera.sim.toolchain import require

HDL = Path(__file__).resolve().parents[1] / "sim" / "hdl" / "tessera_axi_mem.v"
TOP = "tessera_axi_mem"
# A small memory with its first word above address 0 (to reach below it), few bursts in
# flight (to meet the limit), and a latency long enough to need several of them.
PARAMS = dict(DATA_BITS=64, BASE=0x1000, WORDS=2048, LATENCY=20, MAX_BURSTS=4)


def _build(sim: str) -> Path:
    """Build the model for ``sim`` under ``<build root>/axi_mem-<sim>`` (cached while the
    source and the parameters are unchanged)."""
    from cocotb_tools.runner import get_runner

    require(sim)
    directory = build_root() / f"axi_mem-{sim}"
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(HDL.read_bytes() + json.dumps(PARAMS).encode()).hexdigest()
    stamp = directory / "built.sha256"
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == digest):
            args = ["-g2005"] if sim == "icarus" else ["-Wno-fatal", "-O3"]
            log = directory / "build.log"
            try:
                get_runner(sim).build(sources=[HDL], hdl_toplevel=TOP, build_dir=directory,
                                      build_args=args, parameters=PARAMS,
                                      timescale=TIMESCALE, always=True, log_file=log)
            except (SystemExit, RuntimeError) as e:
                raise SimulationFailed(f"building {HDL.name} for {sim} failed ({e}); "
                                       f"log: {log}") from None
            stamp.write_text(digest)
    return directory


def _run(sim: str, test_dir: Path) -> list[str]:
    """Run every cocotb test of ``sim/tb_axi_mem.py``; returns their names."""
    from cocotb_tools.runner import get_runner

    directory = _build(sim)
    results, log = test_dir / "results.xml", test_dir / "sim.log"
    env = {"PYTHONPATH": os.pathsep.join(sys.path),
           "TESSERA_AXI_MEM": json.dumps({
               "data_bits": PARAMS["DATA_BITS"], "base": PARAMS["BASE"],
               "words": PARAMS["WORDS"], "latency": PARAMS["LATENCY"],
               "max_bursts": PARAMS["MAX_BURSTS"]})}
    try:
        get_runner(sim).test(test_module="tessera.sim.tb_axi_mem", hdl_toplevel=TOP,
                             hdl_toplevel_lang="verilog", build_dir=directory,
                             test_dir=test_dir, extra_env=env, results_xml=str(results),
                             timescale=TIMESCALE, log_file=log)
    except (SystemExit, RuntimeError):
        pass    # under pytest the runner exits on a failed test: say which one below
    if not results.exists():
        raise SimulationFailed(f"{sim} wrote no results; log: {log}")
    cases = ET.parse(results).getroot().findall(".//testcase")
    failed = [c.get("name") for c in cases
              if c.find("failure") is not None or c.find("error") is not None]
    if failed or not cases:
        raise SimulationFailed(f"{sim}: failed: {', '.join(failed) or 'no test ran'}; "
                               f"log: {log}")
    return [c.get("name") for c in cases]


@pytest.mark.rtl
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_axi_mem_model(sim, tmp_path):
    names = _run(sim, tmp_path)
    assert sorted(names) == ["axi_mem_backdoor", "axi_mem_edges", "axi_mem_faults",
                             "axi_mem_random", "axi_mem_random_pauses",
                             "axi_mem_reset_midway", "axi_mem_streaming"]


# ---- sim/memimage.py -------------------------------------------------------------------

@pytest.mark.parametrize("bus_bits", [8, 64, 128, 512])
def test_image_round_trip(bus_bits, tmp_path):
    lanes = bus_bits // 8
    size = 37 * lanes + (lanes + 1) // 2    # a partial last word where words are wider
    image = np.random.default_rng(bus_bits).integers(0, 256, size, dtype=np.uint8)
    path = tmp_path / "m.hex"
    assert memimage.write_hex(path, image, bus_bits, word_offset=5) == 38
    lines = path.read_bytes().split(b"\n")
    assert lines[0] == b"@5" and len(lines[1]) == 2 * lanes
    assert int(lines[1], 16) == int.from_bytes(image[:lanes].tobytes(), "little")
    back = memimage.read_hex(path, bus_bits, first_word=5)
    assert np.array_equal(back[:len(image)], image) and not back[len(image):].any()
    assert memimage.encode(image, bus_bits, 5) == path.read_bytes()
    # A window that starts before the image and ends inside it.
    part = memimage.read_hex(path, bus_bits, first_word=3, words=4)
    assert not part[:2 * lanes].any() and np.array_equal(part[2 * lanes:], image[:2 * lanes])


def test_decode_simulator_dumps():
    # As Icarus writes it (a comment every 16 words), with no @ directive: from first_word.
    text = b"// 0x00000000\n" + b"".join(b"%016x\n" % (i * 3) for i in range(20))
    text = text.replace(b"%016x\n" % 48, b"%016x\n// 0x00000010\n" % 48)
    words = memimage.decode(text, 64, first_word=100).view("<u8")
    assert list(words) == [i * 3 for i in range(20)]
    # $readmemh syntax: @ directives, short numbers, block comments, underscores.
    words = memimage.decode(b"@2 dead_beef /* x */ 1\n@6\n12 // c\n", 64).view("<u8")
    assert list(words) == [0, 0, 0xDEADBEEF, 1, 0, 0, 0x12]


@pytest.mark.parametrize("text, message", [
    (b"0123 xxxx\n", "unknown"),
    (b"0123 g\n", "not a hex digit"),
    (b"11223344556677889\n", "more than 16 hex digits"),
], ids=["x-digits", "not-hex", "too-wide"])
def test_decode_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        memimage.decode(text, 64)


def test_image_arguments_are_checked():
    with pytest.raises(ValueError, match="bus_bits must be a power of two"):
        memimage.encode(np.zeros(8, np.uint8), 48)
    with pytest.raises(TypeError, match="uint8"):
        memimage.encode(np.zeros(8, np.int32), 64)
    with pytest.raises(ValueError, match="word_offset must not be negative"):
        memimage.encode(np.zeros(8, np.uint8), 64, -1)
