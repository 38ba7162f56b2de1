"""The UART (hw/uart.py) in Amaranth's simulator against the bit-level line model
(sim/uart_model.py), cycle by cycle: frames as the model draws them, back to back and with
idle gaps, with and without backpressure; a bad stop bit is reported and not taken as
data; a glitch is ignored; an overrun is reported; a receiver a few per cent off the
sender's rate still reads every bit."""

import random

import pytest
from amaranth.sim import Simulator

from tessera.hw.uart import FRAME_BITS, UartRx, UartTx, uart_divisor
from tessera.sim.amaranth_streams import never, random_pauses, send
from tessera.sim.uart_model import LineReceiver, frame_levels, line_levels


def test_divisor_is_checked():
    with pytest.raises(ValueError, match="at least 4, not 3"):
        UartRx(3)
    with pytest.raises(ValueError, match="not 8.0"):
        UartTx(8.0)
    assert uart_divisor(20e6, 115200) == 174
    assert uart_divisor(20e6, 1e6) == 20
    with pytest.raises(ValueError, match="at least 4 clock cycles per bit"):
        uart_divisor(1e6, 500e3)
    with pytest.raises(ValueError, match="more than 2%"):
        uart_divisor(9e6, 2e6)        # 4.5 cycles per bit: 4 or 5, both >10% off


def _run(dut, *benches):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for b in benches:
        sim.add_testbench(b)
    sim.run()


def _idle_runs(rng, longest):
    """A pause generator: before half of the beats, an idle run of up to ``longest``
    cycles (longer than a frame, so that the line shows it)."""
    left = [0]

    def pause() -> bool:
        if left[0] == 0 and rng.random() < 0.5:
            left[0] = rng.randrange(1, longest)
            return True
        left[0] = max(left[0] - 1, 0)
        return left[0] > 0

    return pause


@pytest.mark.parametrize("divisor", [4, 7, 16])
@pytest.mark.parametrize("idle", [False, True])
def test_transmitter_draws_the_models_frames(divisor, idle):
    rng = random.Random(divisor)
    data = [0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80] + [rng.randrange(256) for _ in range(10)]
    dut = UartTx(divisor)
    line: list[int] = []
    cycles = len(data) * FRAME_BITS * divisor * (3 if idle else 1) + 50
    pause = _idle_runs(random.Random(divisor), 2 * FRAME_BITS * divisor) if idle else never

    async def source(ctx):
        await send(ctx, dut.i_data, data, pause)

    async def probe(ctx):
        for _ in range(cycles):
            line.append(ctx.get(dut.tx))
            await ctx.tick()

    _run(dut, source, probe)
    # Every frame is exactly the model's; between frames the line is idle.
    i, frames, starts = 0, [], []
    while i < len(line):
        if line[i]:
            i += 1
            continue
        frame = line[i:i + FRAME_BITS * divisor]
        k = len(frames)
        assert frame == frame_levels(data[k], divisor), f"frame {k} differs from the model"
        starts.append(i)
        frames.append(data[k])
        i += FRAME_BITS * divisor
    assert frames == data
    spacing = {b - a for a, b in zip(starts, starts[1:], strict=False)}
    if not idle:
        assert spacing == {FRAME_BITS * divisor}      # back to back, no extra stop cycle
    else:
        assert max(spacing) > FRAME_BITS * divisor    # the source's idle cycles show
    rx = LineReceiver(divisor)
    for level in line:
        rx.step(level)
    assert rx.bytes == data and rx.errors == []


def _receive(divisor, line, pause=never):
    """Feed ``line`` (one level per cycle) to a receiver; the bytes it delivers, the
    cycles of its framing-error and overrun pulses."""
    dut = UartRx(divisor)
    got, framing, overrun = [], [], []
    tail = 4 * FRAME_BITS * divisor

    async def drive(ctx):
        for level in line + [1] * tail:
            ctx.set(dut.rx, level)
            await ctx.tick()

    async def sink(ctx):
        for cycle in range(len(line) + tail):
            ready = not pause()
            ctx.set(dut.o_data.ready, int(ready))
            _, _, valid, payload, fe, ov = await ctx.tick().sample(
                dut.o_data.valid, dut.o_data.payload, dut.framing_error, dut.overrun)
            if valid and ready:
                got.append(payload)
            if fe:
                framing.append(cycle)
            if ov:
                overrun.append(cycle)

    _run(dut, drive, sink)
    return got, framing, overrun


@pytest.mark.parametrize("divisor", [4, 8, 13])
@pytest.mark.parametrize("backpressure", [False, True])
def test_receiver_reads_back_to_back_bytes_and_reports_a_bad_stop_bit(divisor, backpressure):
    rng = random.Random(divisor + 100)
    frames = [(b, 1, 0) for b in (0x00, 0xFF, 0x55, 0xAA)]           # back to back
    frames += [(rng.randrange(256), 1, rng.choice([0, 0, 1, 5])) for _ in range(12)]
    # A bad stop bit in the middle, and a break (zeros to the end of a frame) at the end;
    # after each the line idles for a bit (a start bit right after a bad stop bit cannot
    # be told from it).
    frames[7:8] = [(0x3C, 0, 3), (frames[7][0], 1, divisor)]
    frames += [(0x00, 0, 2), (0x42, 1, divisor)]
    line = line_levels(frames, divisor)
    pause = random_pauses(0.4, divisor) if backpressure else never
    got, framing, overrun = _receive(divisor, line, pause)
    want = [b for b, stop, _ in frames if stop]
    assert got == want                            # neither bad frame taken as data
    assert len(framing) == 2 and overrun == []
    # The model reads the same line the same way.
    model = LineReceiver(divisor)
    for level in line:
        model.step(level)
    assert model.bytes == want and model.errors == [7, len(want) - 1]


def test_receiver_ignores_a_glitch_and_tolerates_a_slower_sender():
    divisor = 32
    line = [1] * 10 + [0] + [1] * 30             # one cycle low: not a start bit
    slow = [level for byte in (0x96, 0x0F, 0xF0)
            for level in frame_levels(byte, divisor + 1)]        # a 3% slower sender
    got, framing, overrun = _receive(divisor, line + slow)
    assert got == [0x96, 0x0F, 0xF0] and framing == [] and overrun == []


def test_receiver_reports_an_overrun_and_keeps_the_first_byte():
    divisor = 5
    line = line_levels([(0x11, 1, 2), (0x22, 1, 0), (0x33, 1, 0)], divisor)
    hold = [True] * (len(line) - divisor)       # nothing taken until the third stop bit

    def pause():
        return hold.pop() if hold else False

    got, framing, overrun = _receive(divisor, line, pause)
    assert got == [0x11, 0x33]                   # 0x22 came while 0x11 was held
    assert len(overrun) == 1 and framing == []
