"""The differential check: run one program on two backends (the RTL and the golden model)
and, when their results differ, name the first command whose effect differs.

Both runs start from the same main memory. If the final main memory, scratchpad or
accumulator differ, prefixes of the program are run on both (a binary search): the first
command ``i`` such that the prefix ending with ``i`` leaves different state is reported,
with what differs (which memory, the first rows or bytes).

A prefix leaves out the commands that could not run without a command after it: a wait
whose token would come from outside the prefix (tokens pair up in order on each channel:
the k-th wait for a token from a queue takes the k-th token that queue signals) and
everything behind it in its queue. So every prefix runs to its end, with the same
ordering guarantees as the whole program; a FINISH closes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hw.isa import Command, Opcode, Queue, decode
from . import RunResult, Runtime

__all__ = ["Difference", "differential_check", "prefix_program"]

_CHAIN = (Queue.LOAD, Queue.EXECUTE, Queue.STORE)


@dataclass
class Difference:
    """Where two backends part ways (``index`` None: they agree)."""

    index: int | None
    command: str = ""
    what: str = ""
    runs: int = 0

    @property
    def agree(self) -> bool:
        return self.index is None

    def describe(self) -> str:
        if self.agree:
            return f"the backends agree ({self.runs} runs)"
        return (f"first difference at command {self.index} ({self.command}): {self.what} "
                f"({self.runs} runs)")


def prefix_program(program: list[Command], n: int) -> list[Command]:
    """The first ``n`` commands less those that could not run without a command after
    them (a wait whose token comes from outside, and everything behind it in its queue),
    and a FINISH."""
    cmds = [c for c in program[:n] if c.opcode != Opcode.FINISH]
    keep = [True] * len(cmds)
    while True:
        # The k-th token a queue signals to a neighbour, in that queue's order.
        producers: dict[tuple, list[int]] = {}
        for i, cmd in enumerate(cmds):
            if keep[i] and cmd.queue in _CHAIN:
                j = _CHAIN.index(cmd.queue)
                for side, d in (("prev", -1), ("next", 1)):
                    if getattr(cmd, f"signal_{side}"):
                        producers.setdefault((cmd.queue, _CHAIN[j + d]), []).append(i)
        waits: dict[tuple, int] = {}
        blocked: set = set()
        changed = False
        for i, cmd in enumerate(cmds):
            q = cmd.queue
            if not keep[i] or q not in _CHAIN:
                continue
            if q in blocked:
                keep[i], changed = False, True
                continue
            j = _CHAIN.index(q)
            for side, d in (("prev", -1), ("next", 1)):
                if getattr(cmd, f"wait_{side}"):
                    key = (_CHAIN[j + d], q)
                    k = waits.get(key, 0)
                    waits[key] = k + 1
                    if k >= len(producers.get(key, [])):
                        keep[i], changed = False, True
                        blocked.add(q)
        if not changed:
            break
    return [c for c, k in zip(cmds, keep, strict=True) if k] + [Command(Opcode.FINISH, {})]


def _state(rt: Runtime, image: np.ndarray, program) -> tuple[RunResult, np.ndarray]:
    rt.image[:] = image
    result = rt.run(program, onchip=True)
    return result, rt.image.copy()


def _compare(ra, ma, rb, mb) -> str:
    if ra.error != rb.error:
        return f"one stops with {ra.error.name}, the other with {rb.error.name}"
    diff = np.nonzero(ma != mb)[0]
    if diff.size:
        return (f"main memory differs in {diff.size} bytes, first at offset {diff[0]:#x} "
                f"({int(ma[diff[0]])} against {int(mb[diff[0]])})")
    for name in ("spad", "acc"):
        a, b = getattr(ra, name), getattr(rb, name)
        if a is None or b is None:
            continue
        rows = np.nonzero((a != b).any(axis=1))[0]
        if rows.size:
            return (f"{'scratchpad' if name == 'spad' else 'accumulator'} rows differ "
                    f"({rows.size}, first row {rows[0]}: {a[rows[0]].tolist()} against "
                    f"{b[rows[0]].tolist()})")
    return ""


def differential_check(rt_a: Runtime, rt_b: Runtime, program) -> Difference:
    """Compare ``program`` on two runtimes whose main memory holds the same image.

    Parameters
    ----------
    rt_a, rt_b : Runtime
        Typically the RTL backend and the golden one, with equal images.
    program : list of Command or command words
    """
    cfg = rt_a.config
    cmds = [decode(cfg, c) if isinstance(c, int) else c for c in program]
    if not np.array_equal(rt_a.image, rt_b.image):
        raise ValueError("the two runtimes must start from the same main memory")
    image = rt_a.image.copy()
    runs = 0

    def differs(n: int) -> str:
        nonlocal runs
        prog = cmds if n == len(cmds) else prefix_program(cmds, n)
        ra, ma = _state(rt_a, image, prog)
        rb, mb = _state(rt_b, image, prog)
        runs += 2
        # The command buffer itself sits past the data; it is the same on both.
        return _compare(ra, ma, rb, mb)

    what = differs(len(cmds))
    if not what:
        return Difference(None, runs=runs)
    lo, hi, hi_what = 0, len(cmds), what   # prefix lo agrees, prefix hi differs
    while hi - lo > 1:
        mid = (lo + hi) // 2
        w = differs(mid)
        if w:
            hi, hi_what = mid, w
        else:
            lo = mid
    index = hi - 1
    cmd = cmds[index]
    args = ", ".join(f"{k}={v}" for k, v in cmd.args.items())
    return Difference(index, f"{cmd.opcode.name} {args}".strip(), hi_what, runs)
