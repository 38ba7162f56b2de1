"""The layers of docs/architecture.md hold: ``hw`` imports nothing of Tessera's but itself;
the golden model imports only ``hw``; ``sim`` imports ``hw`` and the golden model; the
runtime, lowering, models and command line sit on top, with no cycle among the layers."""

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"hw": "tessera.hw", "sw": "tessera.sw", "sim": "tessera.sim"}

#: What each layer may import (besides itself).
ALLOWED = {
    "hw": set(),
    "check": {"hw"},
    "golden": {"hw"},
    "perf": {"hw", "golden"},
    "sim": {"hw", "golden"},
    "runtime": {"hw", "golden", "sim", "check", "perf"},
    "lower": {"hw", "golden", "runtime", "check"},
    "models": {"hw", "golden", "check"},
    "sweep": {"hw", "golden", "sim", "runtime", "lower", "models", "check"},
    "cli": {"hw", "golden", "sim", "runtime", "lower", "models", "check", "perf", "sweep"},
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = PACKAGES[parts[0]]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[1] in ("hw", "sim"):
        return parts[1]
    if len(parts) > 2 and parts[2] in ("golden", "runtime", "lower", "models", "check",
                                          "perf", "sweep"):
        return parts[2]
    return "cli"      # sw's own modules: the command line, run, bench


def _imports(path: Path):
    """The Tessera modules ``path`` imports (relative imports resolved)."""
    module = _module(path).split(".")
    package = module if path.name == "__init__.py" else module[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("tessera."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("tessera."):
                yield target


def _edges() -> dict:
    edges = defaultdict(set)
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            source = _module(path)
            for target in _imports(path):
                if _layer(target) != _layer(source):
                    edges[(_layer(source), _layer(target))].add(f"{source} -> {target}")
    return edges


def test_every_import_goes_down_the_layers():
    bad = [f"{a} may not import {b}: {', '.join(sorted(why))}"
           for (a, b), why in _edges().items() if b not in ALLOWED[a]]
    assert not bad, "\n".join(bad)


def test_the_allowed_layers_have_no_cycle():
    seen, done = set(), set()

    def visit(layer, path):
        assert layer not in seen - done, f"cycle: {' -> '.join(path)}"
        if layer in done:
            return
        seen.add(layer)
        for nxt in ALLOWED[layer]:
            visit(nxt, path + [nxt])
        done.add(layer)

    for layer in ALLOWED:
        visit(layer, [layer])


def test_the_graph_is_read_from_real_imports():
    """The checker sees imports (a check that found none would pass vacuously)."""
    edges = _edges()
    assert "tessera.sim.accel_system -> tessera.hw.accelerator" in edges[("sim", "hw")]
    assert any("tessera.sw.golden" in e for e in edges[("sim", "golden")])
    assert ("runtime", "sim") in edges and ("cli", "runtime") in edges
