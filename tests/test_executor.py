"""The golden executor: command streams on the model of the machine, queues and tokens."""

import numpy as np
import pytest

from tessera.hw.config import preset
from tessera.hw.isa import Command, Opcode, encode
from tessera.hw.output_path import OutputOp
from tessera.sw.golden import matmul as gmm
from tessera.sw.golden import requant as grq
from tessera.sw.golden import softmax as gsm
from tessera.sw.golden.executor import ExecutionError, Machine

CFG = preset("tiny")
R, C = CFG.rows, CFG.cols
BASE = 0x1000


def matmul_program(M, K, N, a_at, b_at, c_at, m, e):
    """A WS tiled product with double-buffered scratchpad regions and tokens: loads of the
    next K tile overlap the compute of this one, and the store waits for the last compute.
    (A test-sized lowering; the driver's own lowering is future work.)"""
    prog = []
    a_region, b_region = (0, 64), (128, 136)
    kt = -(-K // R)
    for n0 in range(0, N, C):
        cols = min(C, N - n0)
        for k in range(kt):
            k0 = k * R
            buf = k % 2
            kk = min(R, K - k0)
            first_use = n0 == 0 and k < 2
            # B tile rows (k0.., cols n0..); A column slice (all M rows, k0..).
            prog.append(Command(Opcode.LOAD, dict(
                dram_addr=b_at + k0 * N + n0, stride=N, rows=kk, row_bytes=cols,
                local_addr=b_region[buf], to_acc=0, accumulate=0, scale=1),
                wait_next=not first_use))
            # A short last K tile leaves stale B rows past kk; the A load pads its rows with
            # zeros past kk bytes, so those weights multiply zeros.
            prog.append(Command(Opcode.LOAD, dict(
                dram_addr=a_at + k0, stride=K, rows=M, row_bytes=kk,
                local_addr=a_region[buf], to_acc=0, accumulate=0, scale=1),
                signal_next=True))
            prog.append(Command(Opcode.PRELOAD, dict(spad_addr=b_region[buf]), wait_prev=True))
            last = k == kt - 1
            prog.append(Command(Opcode.COMPUTE, dict(
                a_addr=a_region[buf], b_addr=0, rows=M, acc_addr=0, accumulate=int(k > 0)),
                signal_prev=True, signal_next=last))
        prog.append(Command(Opcode.STORE, dict(
            desc=dict(op=OutputOp.REQUANT, length=cols, rows=M, m=m, e=e),
            acc_addr=0, to_spad=0, spad_addr=0, dram_addr=c_at + n0, stride=N),
            wait_prev=True))
    # Tokens signalled to LOAD by the last two computes are never taken: harmless.
    prog.append(Command(Opcode.FINISH, {}))
    return prog


@pytest.mark.parametrize("shape", [(5, 8, 4), (7, 10, 6), (3, 3, 9)])
def test_tiled_matmul_program(shape):
    M, K, N = shape
    rng = np.random.default_rng(M * K * N)
    a = rng.integers(-128, 128, (M, K))
    b = rng.integers(-128, 128, (K, N))
    m, e = grq.dyadic_multiplier(1 / 300)
    mach = Machine(CFG, mem_size=8192, mem_base=BASE)
    a_at, b_at, c_at = BASE, BASE + 1024, BASE + 4096
    mach.mem[a_at - BASE:a_at - BASE + M * K] = (a.ravel() & 0xFF).astype(np.uint8)
    mach.mem[b_at - BASE:b_at - BASE + K * N] = (b.ravel() & 0xFF).astype(np.uint8)
    prog = matmul_program(M, K, N, a_at, b_at, c_at, m, e)
    mach.run([encode(CFG, cmd) for cmd in prog])  # through the encoder and decoder
    want = grq.requantize(gmm.matmul(a, b, CFG).astype(np.int32), m, e, 8)
    got = mach.mem[c_at - BASE:c_at - BASE + M * N].view(np.int8).reshape(M, N)
    assert (got == want).all()
    assert mach.macs == -(-N // C) * -(-K // R) * M * R * C


def test_deadlock_names_the_stuck_commands():
    prog = [Command(Opcode.PRELOAD, {"spad_addr": 0}, wait_prev=True),
            Command(Opcode.STORE, dict(desc=dict(op=OutputOp.NONE, length=1, rows=1, m=0, e=0),
                                       acc_addr=0, to_spad=1, spad_addr=0, dram_addr=0,
                                       stride=0), wait_prev=True)]
    with pytest.raises(ExecutionError, match=r"deadlock: no queue can run; EXECUTE: command 0 "
                                             r"\(PRELOAD\) waits for a token from LOAD; STORE: "
                                             r"command 1 \(STORE\) waits for a token from"):
        Machine(CFG, 4096).run(prog)


def test_a_later_signal_unblocks_an_earlier_wait():
    # The LOAD waits for EXECUTE, which signals after it in program order: no deadlock.
    prog = [Command(Opcode.LOAD, dict(dram_addr=0, stride=4, rows=1, row_bytes=4, local_addr=0,
                                      to_acc=0, accumulate=0, scale=1), wait_next=True),
            Command(Opcode.CONFIG, {"os": 0}, signal_prev=True)]
    Machine(CFG, 4096).run(prog)


@pytest.mark.parametrize("cmd, message", [
    (Command(Opcode.LOAD, dict(dram_addr=4090, stride=8, rows=2, row_bytes=4, local_addr=0,
                               to_acc=0, accumulate=0, scale=1)),
     r"command 0 \(LOAD\): the DMA refuses it \(WINDOW\)"),
    (Command(Opcode.COMPUTE, dict(a_addr=0, b_addr=0, rows=2, acc_addr=0, accumulate=0)),
     r"command 0 \(COMPUTE\): no weights were preloaded"),
    (Command(Opcode.PRELOAD, dict(spad_addr=CFG.spad_rows - 1)),
     r"command 0 \(PRELOAD\): weight rows 4095..4098 are outside the 4096 rows"),
])
def test_illegal_commands_name_the_command(cmd, message):
    with pytest.raises(ExecutionError, match=message):
        Machine(CFG, 4096).run([cmd])


def _run_operands(rng, count, rows, a_at, a_stride, b_at):
    """Random activations and weights of a run in a fresh machine's scratchpad."""
    mach = Machine(CFG, 4096)
    a = rng.integers(-128, 128, (count, rows, R))
    w = rng.integers(-128, 128, (count, R, C))
    for i in range(count):
        mach.spad[a_at + i * a_stride:a_at + i * a_stride + rows, :R] = a[i]
        mach.spad[b_at + i * R:b_at + (i + 1) * R, :C] = w[i]
    return mach, a, w


@pytest.mark.parametrize("accumulate", [0, 1])
def test_compute_run_equals_preload_compute_pairs(accumulate):
    rng = np.random.default_rng(11)
    count, rows, a_at, a_stride, b_at, acc_at = 5, 3, 40, 7, 300, 9
    mach, a, w = _run_operands(rng, count, rows, a_at, a_stride, b_at)
    start = rng.integers(-1000, 1000, (rows, C))
    mach.acc[acc_at:acc_at + rows] = start
    pairs = Machine(CFG, 4096)
    pairs.spad[:], pairs.acc[:] = mach.spad, mach.acc
    # The run leaves the preloaded weights alone: a later plain COMPUTE still uses them.
    mach.spad[1000:1000 + R, :C] = pairs.spad[1000:1000 + R, :C] = np.eye(R, C)
    after = Command(Opcode.COMPUTE, dict(a_addr=a_at, b_addr=0, rows=rows, acc_addr=100,
                                         accumulate=0))
    mach.run([encode(CFG, cmd) for cmd in [
        Command(Opcode.PRELOAD, dict(spad_addr=1000)),
        Command(Opcode.COMPUTE, dict(a_addr=a_at, b_addr=b_at, rows=rows, acc_addr=acc_at,
                                     accumulate=accumulate, count=count, a_stride=a_stride)),
        after]])
    prog = []
    for i in range(count):
        prog += [Command(Opcode.PRELOAD, dict(spad_addr=b_at + i * R)),
                 Command(Opcode.COMPUTE, dict(a_addr=a_at + i * a_stride, b_addr=0, rows=rows,
                                              acc_addr=acc_at, accumulate=int(accumulate or i)))]
    pairs.run(prog + [Command(Opcode.PRELOAD, dict(spad_addr=1000)), after])
    assert (mach.acc == pairs.acc).all()
    want = sum(a[i] @ w[i] for i in range(count)) + (start if accumulate else 0)
    assert (mach.acc[acc_at:acc_at + rows] == want).all()
    assert (mach.acc[100:100 + rows] == a[0]).all()
    assert mach.macs == (count + 1) * rows * R * C


def test_compute_run_needs_no_preload_and_one_tile_is_count_one():
    rng = np.random.default_rng(12)
    mach, a, w = _run_operands(rng, 1, 2, 8, 0, 64)
    mach.run([Command(Opcode.COMPUTE, dict(a_addr=8, b_addr=64, rows=2, acc_addr=0,
                                           accumulate=0, count=1))])
    assert (mach.acc[:2] == a[0] @ w[0]).all()


@pytest.mark.parametrize("cmds, code, message", [
    # A run is weight-stationary only.
    ([Command(Opcode.CONFIG, {"os": 1}),
      Command(Opcode.COMPUTE, dict(a_addr=0, b_addr=0, rows=4, acc_addr=0, count=2))],
     "ILLEGAL_FIELD", r"command 1 \(COMPUTE\): a run of 2 weight tiles \(count\) is "
                      r"weight-stationary"),
    # The last weight tile ends past the scratchpad.
    ([Command(Opcode.COMPUTE, dict(a_addr=0, b_addr=CFG.spad_rows - 3 * R, rows=1, acc_addr=0,
                                   count=4))],
     "LOCAL", r"command 0 \(COMPUTE\): weight rows 4084..4099 are outside the 4096 rows"),
    # The last tile's activations end past the scratchpad.
    ([Command(Opcode.COMPUTE, dict(a_addr=4000, b_addr=0, rows=2, acc_addr=0, count=3,
                                   a_stride=48))],
     "LOCAL", r"command 0 \(COMPUTE\): activation rows 4096..4097 are outside"),
])
def test_illegal_compute_runs(cmds, code, message):
    with pytest.raises(ExecutionError, match=message) as e:
        Machine(CFG, 4096).run([encode(CFG, cmd) for cmd in cmds])
    assert e.value.code.name == code


def test_a_run_longer_than_the_scratchpad_holds_is_refused():
    """The count field is wider than its range: a driver that writes the word by hand
    gets ILLEGAL_FIELD."""
    from tessera.hw.isa import _tree

    most = CFG.spad_rows // R
    word = encode(CFG, Command(Opcode.COMPUTE, dict(rows=1)))
    word |= (most + 1) << _tree(CFG, Opcode.COMPUTE)["count"].offset
    with pytest.raises(ExecutionError, match=rf"command 0 \(COMPUTE\): a run of {most + 1} "
                                             rf"weight tiles \(count\); at most {most}") as e:
        Machine(CFG, 4096).run([word])
    assert e.value.code.name == "ILLEGAL_FIELD"


def test_compute_run_count_must_fit_its_field():
    too_many = CFG.spad_rows // R + 1
    with pytest.raises(ValueError, match=rf"COMPUTE: count must be between 0 and "
                                         rf"{too_many - 1}, not {too_many}"):
        encode(CFG, Command(Opcode.COMPUTE, dict(a_addr=0, b_addr=0, rows=1, acc_addr=0,
                                                 count=too_many)))


def test_softmax_store_back_to_the_scratchpad_and_os_compute():
    mach = Machine(CFG, 4096)
    rng = np.random.default_rng(3)
    x = rng.integers(-5000, 5000, (2, 6))
    chunks = 2
    padded = np.zeros((2, chunks * C), np.int64)
    padded[:, :6] = x
    mach.acc[10:14] = padded.reshape(-1, C)
    consts = gsm.exp_constants(2.0 ** -8)
    exp = {k: getattr(consts, k) for k in ("shift", "ln2_q", "q_b", "q_c", "out_shift")}
    mach.run([Command(Opcode.STORE, dict(
        desc=dict(op=OutputOp.SOFTMAX, length=6, rows=2, m=0, e=0, consts={"exp": exp}),
        acc_addr=10, to_spad=1, spad_addr=20, dram_addr=0, stride=0))])
    got = mach.spad[20:24, :C].reshape(2, -1)[:, :6] & 0xFF
    assert (got == gsm.i_softmax(x.astype(np.int32), consts)).all()

    a, b = rng.integers(-128, 128, (R, 7)), rng.integers(-128, 128, (7, C))
    mach.spad[100:107, :R] = a.T
    mach.spad[200:207, :C] = b
    mach.run([Command(Opcode.CONFIG, {"os": 1}),
              Command(Opcode.COMPUTE, dict(a_addr=100, b_addr=200, rows=7, acc_addr=0,
                                           accumulate=0))])
    assert (mach.acc[:R] == gmm.matmul(a, b, CFG)).all()
