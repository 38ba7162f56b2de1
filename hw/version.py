"""The version of the hardware's description: a hash of this package's sources, which
everything generated from it (Verilog, netlists, synthesis reports) depends on."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__all__ = ["source_hash"]


@functools.cache
def source_hash() -> str:
    """16 hex digits of a SHA-256 over the names and bytes of ``hw/``'s Python sources."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for f in sorted(here.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]
