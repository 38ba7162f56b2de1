"""The version of the hardware's description: a hash of this package's sources, which
everything generated from it (Verilog, netlists, synthesis reports) depends on."""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

__all__ = ["source_hash", "code_of"]

_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def code_of(source: str | bytes) -> str:
    """The code of a Python source, without its comments, docstrings and layout: its syntax
    tree, docstrings taken out, written without line numbers. Two sources with the same
    code describe the same hardware."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None) if isinstance(node, _DOCUMENTED) else None
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            del body[0]
            if not body:
                body.append(ast.Pass())
    return ast.dump(tree, include_attributes=False)


@functools.cache
def source_hash() -> str:
    """16 hex digits of a SHA-256 over the names and the code (:func:`code_of`) of
    ``hw/``'s Python sources: a change of a comment or a docstring keeps it, and with it
    every synthesis report of this hardware."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for f in sorted(here.glob("*.py")):
        h.update(f.name.encode())
        h.update(code_of(f.read_bytes()).encode())
    return h.hexdigest()[:16]
