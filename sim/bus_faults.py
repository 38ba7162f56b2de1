"""Bus faults and random timing of the simulated main memory (``sim/hdl/tessera_axi_mem.v``),
as one value that a runtime, a test or the fuzzer passes around.

>>> faults = BusFaults(seed=7, latency=(20, 300), stall_r=0.3, stall_w=0.3,
...                    errors=(ErrorRange(0x8000_1000, 0x8000_1040, "slverr"),))
>>> rt = Runtime(config, "verilator", faults=faults)       # or rt.faults = faults

Everything is set per run through the memory model's configuration port (no rebuild),
drawn from a generator seeded with ``seed``: the same seed, program and configuration
give the same run, cycle for cycle, on the native and the cocotb path alike. The default
(``BusFaults()``) changes nothing: no stall, no jitter, no error range.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields

__all__ = ["BusFaults", "ErrorRange", "ERROR_RANGES", "STALL_CHANNELS"]

#: Error ranges the memory model holds (its ERR_RANGES parameter).
ERROR_RANGES = 4
#: The five channels, in the order of the memory model's STALLS register bytes.
STALL_CHANNELS = ("ar", "r", "aw", "w", "b")
_RESP = {"slverr": 2, "decerr": 3}
# The memory model's configuration registers (see its header).
_SEED, _JITTER, _STALLS, _INJECT, _RANGE0 = 0, 1, 2, 3, 4
_INJECTIONS = {None: 0, "rlast": 1, "spurious_b": 2}


def _whole(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a whole number from {lo} to {hi}, not {value!r}")
    return value


@dataclass(frozen=True)
class ErrorRange:
    """Bus addresses ``start`` .. ``end - 1`` answer ``resp`` (``"slverr"`` or
    ``"decerr"``) to reads and / or writes. A beat whose bytes overlap the range answers
    with the error: a read beat returns zeros, a write beat is not written and its burst's
    response is the error."""

    start: int
    end: int
    resp: str = "slverr"
    reads: bool = True
    writes: bool = True

    def __post_init__(self):
        _whole("an error range's start", self.start, 0, (1 << 64) - 1)
        _whole("an error range's end", self.end, 0, (1 << 64) - 1)
        if self.end <= self.start:
            raise ValueError(f"an error range must end after it starts, not {self.start:#x} "
                             f".. {self.end:#x}")
        if self.resp not in _RESP:
            raise ValueError(f"an error range's resp must be 'slverr' or 'decerr', not "
                             f"{self.resp!r}")
        if not (self.reads or self.writes):
            raise ValueError("an error range must apply to reads, writes or both")


@dataclass(frozen=True)
class BusFaults:
    """What the simulated main memory does besides answering correctly.

    Parameters
    ----------
    seed : int
        The generator's seed (any 64-bit number).
    latency : (int, int), optional
        Each burst's latency in cycles, drawn uniformly from ``lo .. hi`` (a read's from its
        address to its first beat, a write's from its last beat to its response).
        Responses stay in order: a burst's response also waits for those before it. It
        replaces the runtime's fixed ``mem_latency``.
    stall_ar, stall_r, stall_aw, stall_w, stall_b : float
        Probability, decided anew every cycle, that ARREADY / AWREADY / WREADY is low, or
        that no R beat / B response is produced (RVALID / BVALID low), from 0 (never) to
        below 1, applied as ``n / 256`` with ``n = round(256 p)`` (at least 1 if p > 0).
    errors : tuple of ErrorRange
        At most :data:`ERROR_RANGES` address ranges answering SLVERR or DECERR (the first
        matching range wins).
    inject : str, optional
        Test only: make the memory model break the AXI4 protocol, for the checker to
        catch: ``"rlast"`` (no RLAST on any read burst's last beat) or ``"spurious_b"``
        (one write response with no write outstanding).
    """

    seed: int = 1
    latency: tuple[int, int] | None = None
    stall_ar: float = 0.0
    stall_r: float = 0.0
    stall_aw: float = 0.0
    stall_w: float = 0.0
    stall_b: float = 0.0
    errors: tuple[ErrorRange, ...] = field(default=())
    inject: str | None = None

    def __post_init__(self):
        _whole("seed", self.seed, 0, (1 << 64) - 1)
        if self.latency is not None:
            if not (isinstance(self.latency, tuple | list) and len(self.latency) == 2):
                raise ValueError(f"latency must be a range (lo, hi) of cycles, not "
                                 f"{self.latency!r}")
            lo = _whole("the latency range's low end", self.latency[0], 1, 65535)
            _whole("the latency range's high end", self.latency[1], lo, lo + 65535)
            object.__setattr__(self, "latency", tuple(self.latency))
        for ch in STALL_CHANNELS:
            p = getattr(self, f"stall_{ch}")
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
                raise ValueError(f"stall_{ch} must be a probability from 0 to below 1, "
                                 f"not {p!r}")
        errors = tuple(self.errors)
        if len(errors) > ERROR_RANGES or not all(isinstance(e, ErrorRange) for e in errors):
            raise ValueError(f"errors must be at most {ERROR_RANGES} ErrorRange values, not "
                             f"{self.errors!r}")
        object.__setattr__(self, "errors", errors)
        if self.inject not in _INJECTIONS:
            raise ValueError(f"inject must be one of "
                             f"{', '.join(repr(k) for k in _INJECTIONS)}, not {self.inject!r}")

    @classmethod
    def timing(cls, seed: int, latency: tuple[int, int] | None = None,
               stall: float = 0.0) -> BusFaults:
        """Random timing alone: a latency range and one stall probability for all five
        channels."""
        return cls(seed=seed, latency=latency,
                   **{f"stall_{ch}": stall for ch in STALL_CHANNELS})

    @classmethod
    def random(cls, seed: int, max_latency: int = 300, max_stall: float = 0.6) -> BusFaults:
        """Random timing drawn from ``seed`` alone (for fuzzers): a latency range inside
        ``1 .. max_latency`` and each channel's stall probability below ``max_stall``; no
        error range. The same seed gives the same value, and seeds the memory model too."""
        _whole("max_latency", max_latency, 1, 65535)
        if not 0 <= max_stall < 1:
            raise ValueError(f"max_stall must be a probability from 0 to below 1, not "
                             f"{max_stall!r}")
        draw = random.Random(seed)
        lo = draw.randint(1, max_latency)
        hi = draw.randint(lo, max_latency)
        return cls(seed=seed, latency=(lo, hi),
                   **{f"stall_{ch}": round(draw.uniform(0, max_stall), 3)
                      for ch in STALL_CHANNELS})

    @property
    def active(self) -> bool:
        """Whether it changes anything (the default does not)."""
        return self != BusFaults(seed=self.seed)

    def stall_levels(self) -> dict[str, int]:
        """Each channel's stall probability as the memory model takes it (``n / 256``)."""
        out = {}
        for ch in STALL_CHANNELS:
            p = getattr(self, f"stall_{ch}")
            out[ch] = 0 if p == 0 else min(255, max(1, round(p * 256)))
        return out

    def base_latency(self, default: int) -> int:
        """The latency the memory model's fixed-latency input takes: the range's low end,
        or ``default``."""
        return self.latency[0] if self.latency else default

    def registers(self) -> list[tuple[int, int]]:
        """The memory model's configuration writes, ``(register, value)``, that set this
        up (the seed last: writing it restarts the generator). Every register is written,
        so that a model configured before is set back."""
        levels = self.stall_levels()
        stalls = sum(levels[ch] << 8 * i for i, ch in enumerate(STALL_CHANNELS))
        writes = [(_JITTER, self.latency[1] - self.latency[0] if self.latency else 0),
                  (_STALLS, stalls), (_INJECT, _INJECTIONS[self.inject])]
        for i in range(ERROR_RANGES):
            if i < len(self.errors):
                e = self.errors[i]
                kind = _RESP[e.resp] | int(e.reads) << 2 | int(e.writes) << 3
                writes += [(_RANGE0 + 3 * i, e.start), (_RANGE0 + 3 * i + 1, e.end),
                           (_RANGE0 + 3 * i + 2, kind)]
            else:
                writes.append((_RANGE0 + 3 * i + 2, 0))
        return writes + [(_SEED, self.seed)]

    def describe(self) -> dict:
        """What is set, for reports (JSON-ready; the defaults left out)."""
        out = {"seed": self.seed}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = value
        if self.errors:
            out["errors"] = [{"start": e.start, "end": e.end, "resp": e.resp,
                              "reads": e.reads, "writes": e.writes} for e in self.errors]
        if self.latency:
            out["latency"] = list(self.latency)
        return out
