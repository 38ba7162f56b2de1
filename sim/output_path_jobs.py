"""Jobs for the output path: commands with their rows, the beats that carry them, and the
results the golden model expects.

Both simulation tiers (:mod:`tessera.sim.output_path_amaranth`, :mod:`tessera.sim.output_path_rtl`)
and ``tessera bench nonlinear`` build their stimuli and their scoreboard here. The maths is
the golden model's (``tessera.sw.golden``); this module only chunks rows into beats and
packs them into the layouts of :mod:`tessera.hw.output_path`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..hw.config import TesseraConfig
from ..hw.output_path import (
    PASSES,
    OutputDigit,
    OutputOp,
    descriptor_layout,
    out_layout,
    param_layout,
    row_layout,
)
from ..sw.golden import gelu as ggelu
from ..sw.golden import layernorm as gln
from ..sw.golden import requant as grq
from ..sw.golden import softmax as gsm
from ..sw.golden.output import descriptor_digit, output_op
from .packing import field as layout_field
from .packing import pack_lanes, unpack_lanes

__all__ = ["OutputJob", "Beats", "Run", "beats", "expected", "random_job", "encode_rows",
           "encode_params", "decode_out", "intmath_edges", "ROW_KINDS", "INT32_MIN",
           "INT32_MAX"]

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


@dataclass
class OutputJob:
    """One output-path command: the operation, its input rows and its constants.

    Parameters
    ----------
    op : OutputOp
    x : ndarray of int32, shape (rows, L)
        The logical rows.
    m, e : int
        Requantization (REQUANT, RELU, GELU); LAYERNORM takes them from ``ln``.
    gelu, exp, ln
        The golden model's constants for GELU, SOFTMAX and LAYERNORM.
    patch : dict
        Fields written over the descriptor (to make an invalid one, for example); a command
        whose patched descriptor the unit must drop gets no chunks and no results.
    flip_last : int or None
        Index of a chunk (over all passes) whose ``last`` bit is sent inverted.
    digit : OutputDigit
        Every operation but SOFTMAX: the int8 result or a digit of the wide value.
    """

    op: OutputOp
    x: np.ndarray
    m: int = 1 << 30
    e: int = 31
    gelu: ggelu.GeluConstants | None = None
    exp: gsm.ExpConstants | None = None
    ln: gln.LayerNormConstants | None = None
    patch: dict = field(default_factory=dict)
    flip_last: int | None = None
    digit: OutputDigit = OutputDigit.INT8

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def length(self) -> int:
        return int(self.x.shape[1])

    @property
    def passes(self) -> int:
        return PASSES[self.op]

    def descriptor(self) -> dict:
        """The ``i_cmd`` fields (for ``descriptor_layout(config).const``)."""
        m, e = (self.ln.m, self.ln.e) if self.op == OutputOp.LAYERNORM else (self.m, self.e)
        d = {"op": self.op, "length": self.length, "rows": self.rows, "m": m, "e": e}
        if self.op == OutputOp.GELU:
            g = self.gelu
            d["consts"] = {"out": {"gelu": {"shift": g.shift, "q_b": g.q_b, "q_c": g.q_c,
                                            "poly_shift": g.poly_shift},
                                   "digit": self.digit}}
        elif self.op != OutputOp.SOFTMAX:
            d["consts"] = {"out": {"digit": self.digit}}
        else:
            x = self.exp
            d["consts"] = {"exp": {"shift": x.shift, "ln2_q": x.ln2_q, "q_b": x.q_b,
                                   "q_c": x.q_c, "out_shift": x.out_shift}}
        d.update(self.patch)
        return d

    def dropped(self, config: TesseraConfig) -> bool:
        """Whether the unit must drop this command's descriptor (bad op or length)."""
        d = self.descriptor()
        op = d["op"].value if isinstance(d["op"], OutputOp) else int(d["op"])
        digit = descriptor_digit(d)
        return op > OutputOp.LAYERNORM.value or not 1 <= d["length"] <= config.max_row_len \
            or (op != OutputOp.SOFTMAX.value and digit > OutputDigit.LOW.value)

    def descriptor_bits(self, config: TesseraConfig) -> int:
        d = self.descriptor()
        if not isinstance(d["op"], OutputOp):  # a raw op code outside the enumeration
            raw, d = int(d["op"]), dict(d, op=OutputOp.NONE)
            layout = descriptor_layout(config)
            bits = layout.const(d).as_bits()
            off, width = layout_field(layout, "op")
            return bits & ~(((1 << width) - 1) << off) | (raw << off)
        return descriptor_layout(config).const(d).as_bits()


@dataclass
class Beats:
    """The stream beats of a list of jobs, as arrays."""

    cmd: list[int]            #: descriptor words
    row_data: np.ndarray      #: (n, cols) int64 lanes of every i_row chunk
    row_last: np.ndarray      #: (n,) bool
    gamma: np.ndarray         #: (p, cols) int64 lanes of every i_param beat
    beta: np.ndarray          #: (p, cols)
    out_data: np.ndarray      #: (k, cols) int64: the expected o_row bytes, as int8
    out_last: np.ndarray      #: (k,) bool
    out_where: list           #: (command, op name, row, chunk) of each expected chunk
    pass_starts: list[list[int]]  #: per job, the i_row chunk index that starts each pass


@dataclass
class Run:
    """What a run returned, and what the golden model expects."""

    data: np.ndarray        #: (n, cols) o_row bytes as int8
    last: np.ndarray        #: (n,) o_row last bits
    want_data: np.ndarray
    want_last: np.ndarray
    row_cycles: np.ndarray  #: cycle of each i_row handshake
    out_cycles: np.ndarray  #: cycle of each o_row handshake
    pass_starts: list[list[int]]
    error: bool             #: the unit's error flag at the end
    idle: bool              #: the unit's idle flag at the end
    cycles: int             #: simulated cycles
    out_where: list         #: (command, op name, row, chunk) of each expected chunk
    error_after_clear: bool = False  #: ``error`` after one cycle of ``error_clear``
    wall_s: float = 0.0     #: wall-clock time of the simulation (RTL runs)

    def check(self) -> None:
        """Raise AssertionError unless the results equal the golden model's bit for bit; the
        message names the first command, row and chunk where they diverge."""
        n = min(len(self.data), len(self.want_data))
        bad = np.flatnonzero((self.data[:n] != self.want_data[:n]).any(axis=1)
                             | (self.last[:n] != self.want_last[:n]))
        if bad.size:
            i = int(bad[0])
            cmd, op, row, chunk = self.out_where[i]
            raise AssertionError(
                f"{bad.size} result chunks differ from the golden model; the first is chunk "
                f"{chunk} of row {row} of command {cmd} ({op}): got "
                f"{self.data[i].tolist()} last={int(self.last[i])}, expected "
                f"{self.want_data[i].tolist()} last={int(self.want_last[i])}")
        assert len(self.data) == len(self.want_data), \
            f"{len(self.data)} result chunks, expected {len(self.want_data)}"


def _chunks(config: TesseraConfig, x: np.ndarray, rng) -> np.ndarray:
    """Rows of ``x`` as (rows, chunks, cols) lanes; lanes beyond the row hold garbage."""
    C = config.cols
    rows, L = x.shape
    n = -(-L // C)
    lo, hi = -(1 << (config.acc_bits - 1)), (1 << (config.acc_bits - 1))
    out = rng.integers(lo, hi, (rows, n * C)).astype(np.int64)
    # Garbage includes the extremes, which would corrupt a statistic that saw them.
    out[:, L:] = rng.choice([lo, hi - 1, 0, 12345], (rows, n * C - L))
    out[:, :L] = x
    return out.reshape(rows, n, C)


def _golden(job: OutputJob) -> np.ndarray:
    """The golden model's result rows as int8 bit patterns (int64)."""
    digit = {} if job.op == OutputOp.SOFTMAX else {"digit": job.digit}
    return output_op(job.op, job.x, job.m, job.e, gelu=job.gelu, exp=job.exp, ln=job.ln,
                     **digit)


def expected(config: TesseraConfig, job: OutputJob) -> tuple[np.ndarray, np.ndarray]:
    """The ``o_row`` chunks (bytes as int8, lanes beyond the row 0) and ``last`` bits."""
    C = config.cols
    if job.dropped(config) or job.rows == 0:
        return np.zeros((0, C), np.int64), np.zeros(0, bool)
    y = _golden(job)
    n = -(-job.length // C)
    padded = np.zeros((job.rows, n * C), np.int64)
    padded[:, :job.length] = y
    last = np.tile(np.arange(n) == n - 1, job.rows)
    return padded.reshape(-1, C), last


def beats(config: TesseraConfig, jobs: list[OutputJob], seed: int = 0) -> Beats:
    """Every stream's beats for ``jobs`` run back to back, and the expected results."""
    rng = np.random.default_rng(seed)
    C = config.cols
    cmd, rdata, rlast, gam, bet, odata, olast, starts = [], [], [], [], [], [], [], []
    where = []
    count = 0
    for index, job in enumerate(jobs):
        cmd.append(job.descriptor_bits(config))
        job_starts = []
        if not job.dropped(config) and job.rows:
            ch = _chunks(config, job.x, rng)
            n = ch.shape[1]
            last = np.arange(n) == n - 1
            job_rows, job_last = [], []
            for r in range(job.rows):
                for _ in range(job.passes):
                    job_starts.append(count + len(job_rows))
                    job_rows.extend(ch[r])
                    job_last.extend(last)
            job_last = np.array(job_last)
            if job.flip_last is not None:
                job_last[job.flip_last] = ~job_last[job.flip_last]
            rdata.extend(job_rows)
            rlast.extend(job_last)
            count += len(job_rows)
            if job.op == OutputOp.LAYERNORM:
                g = np.zeros(n * C, np.int64)
                b = np.zeros(n * C, np.int64)
                g[:job.length] = job.ln.gamma_q
                b[:job.length] = job.ln.beta_q
                # Lanes beyond the row: garbage, as for the data.
                g[job.length:] = rng.integers(-(1 << 15), 1 << 15, n * C - job.length)
                b[job.length:] = rng.integers(-(1 << 45), 1 << 45, n * C - job.length)
                for _ in range(job.rows):
                    gam.extend(g.reshape(n, C))
                    bet.extend(b.reshape(n, C))
        starts.append(job_starts)
        d, last = expected(config, job)
        odata.extend(d)
        olast.extend(last)
        per_row = -(-job.length // C)
        where.extend((index, job.op.name, i // per_row, i % per_row) for i in range(len(d)))
    z = np.zeros((0, C), np.int64)
    return Beats(cmd=cmd,
                 row_data=np.array(rdata, np.int64).reshape(-1, C) if rdata else z,
                 row_last=np.array(rlast, bool),
                 gamma=np.array(gam, np.int64).reshape(-1, C) if gam else z,
                 beta=np.array(bet, np.int64).reshape(-1, C) if bet else z,
                 out_data=np.array(odata, np.int64).reshape(-1, C) if odata else z,
                 out_last=np.array(olast, bool),
                 out_where=where,
                 pass_starts=starts)


def encode_rows(config: TesseraConfig, data: np.ndarray, last: np.ndarray) -> list[int]:
    """``i_row`` payload words."""
    layout = row_layout(config)
    d_off, _ = layout_field(layout, "data")
    l_off, _ = layout_field(layout, "last")
    words = pack_lanes(data, layout["data"].shape) if len(data) else []
    return [(w << d_off) | (int(b) << l_off) for w, b in zip(words, last, strict=True)]


def encode_params(config: TesseraConfig, gamma: np.ndarray, beta: np.ndarray) -> list[int]:
    """``i_param`` payload words."""
    layout = param_layout(config)
    g_off, _ = layout_field(layout, "gamma")
    b_off, _ = layout_field(layout, "beta")
    if not len(gamma):
        return []
    gw = pack_lanes(gamma, layout["gamma"].shape)
    bw = pack_lanes(beta, layout["beta"].shape)
    return [(g << g_off) | (b << b_off) for g, b in zip(gw, bw, strict=True)]


def decode_out(config: TesseraConfig, words: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``o_row`` payload words as (bytes as int8, last bits)."""
    layout = out_layout(config)
    d_off, d_width = layout_field(layout, "data")
    l_off, _ = layout_field(layout, "last")
    if not words:
        return np.zeros((0, config.cols), np.int64), np.zeros(0, bool)
    mask = (1 << d_width) - 1
    data = unpack_lanes([(w >> d_off) & mask for w in words], layout["data"].shape)
    last = np.array([(w >> l_off) & 1 for w in words], bool)
    return data, last


# --- Random and edge jobs ---------------------------------------------------------------

ROW_KINDS = ("random", "extremes", "equal", "one_hot", "small")


def _rows(rng, kind: str, rows: int, length: int, config: TesseraConfig) -> np.ndarray:
    lo, hi = -(1 << (config.acc_bits - 1)), (1 << (config.acc_bits - 1)) - 1
    if kind == "random":
        # Magnitudes from tiny to full range, so every shift amount is exercised.
        bits = rng.integers(1, config.acc_bits, (rows, 1))
        x = rng.integers(-(1 << 62), 1 << 62, (rows, length)) >> (63 - bits)
    elif kind == "extremes":
        x = rng.choice([lo, hi, lo + 1, hi - 1, 0, -1, 1], (rows, length))
    elif kind == "equal":
        x = np.repeat(rng.choice([lo, hi, 0, -7, 1000]), rows * length).reshape(rows, length)
    elif kind == "one_hot":
        x = np.full((rows, length), rng.choice([lo, 0, -100]))
        x[np.arange(rows), rng.integers(0, length, rows)] = rng.choice([hi, 5000, 1])
    elif kind == "small":
        x = rng.integers(-3, 4, (rows, length))
    else:
        raise ValueError(f"kind must be one of {', '.join(ROW_KINDS)}, not {kind!r}")
    return np.clip(x, lo, hi).astype(np.int32)


def random_job(config: TesseraConfig, op: OutputOp, rows: int, length: int, rng,
               kind: str = "random", digit: OutputDigit = OutputDigit.INT8) -> OutputJob:
    """A job of ``rows`` rows of ``length`` elements of the given kind, with constants drawn
    the way the driver makes them (from random scales, through the golden model's
    driver-side functions); ``digit`` for every operation but SOFTMAX."""
    job = _random_job(config, OutputOp(op), rows, length, rng, kind)
    if job.op != OutputOp.SOFTMAX:
        job.digit = OutputDigit(digit)
    return job


def _random_job(config: TesseraConfig, op: OutputOp, rows: int, length: int, rng,
                kind: str) -> OutputJob:
    x = _rows(rng, kind, rows, length, config)
    scale = 2.0 ** rng.uniform(-24, -4)
    m, e = grq.dyadic_multiplier(2.0 ** rng.uniform(-30, 2))
    if op == OutputOp.GELU:
        g = ggelu.gelu_constants(scale)
        # Requantize GELU's int32 output so that typical values span int8.
        m, e = grq.dyadic_multiplier(g.out_scale / (scale * 2.0 ** rng.uniform(0, 12)))
        return OutputJob(op, x, m=m, e=e, gelu=g)
    if op == OutputOp.SOFTMAX:
        # e drops bits of the probability codes, rounding: mostly 0 (8-bit codes) or 1
        # (7-bit, for P x V); sometimes more, up to past the last bit (9, 63).
        return OutputJob(op, x, e=int(rng.choice([0, 1, 0, 1, 2, 7, 8, 9, 63])),
                         exp=gsm.exp_constants(2.0 ** rng.uniform(-24, -2)))
    if op == OutputOp.LAYERNORM:
        gamma = rng.normal(1.0, 0.3, length)
        beta = rng.normal(0.0, 0.5, length)
        ln = gln.layernorm_constants(gamma, beta, float(2.0 ** rng.uniform(-6, -3)))
        return OutputJob(op, x, ln=ln)
    return OutputJob(op, x, m=m, e=e)


def intmath_edges(bits: int) -> list[int]:
    """Edge operands below ``2**bits`` for the square root and the reciprocals: 0, 1, 2, 3,
    every ``2**k - 1``, ``2**k`` and ``2**k + 1``, the largest value, and the inputs that need
    the most Newton passes in the golden model (just above a power of two)."""
    values = {0, 1, 2, 3, (1 << bits) - 1}
    for k in range(1, bits):
        values.update({(1 << k) - 1, 1 << k, (1 << k) + 1})
    values.update({4224, 16785408, (1 << 30) + (1 << 16), 1125899973951488})
    return sorted(v for v in values if v < 1 << bits)
