"""A sweep's specification (``tessera sweep SPEC.yaml|SPEC.json``), read and checked.

A specification is a mapping::

    name: bert-sram                  # names the output folder (build/sweep-NAME)
    base: default                    # a preset, or a configuration JSON file
    axes:                            # TesseraConfig fields (and mem_latency), each a list
      spad_kib: [32, 64, 128, 256]
      acc_kib: [32, 64, 128, 256]
    constraints:                     # expressions over the axes and base fields
      - spad_kib + acc_kib <= 320
    workloads:
      - {kind: bert-layer, model: bert-base, seq: 512}
      - {kind: gemm, m: 128, k: 768, n: 768}
    backend: model                   # the runtime backend that evaluates every point
    recheck: pareto                  # points re-run on RTL: pareto, none, or a count
    baseline: {spad_kib: 256, acc_kib: 64}
    heatmap: [spad_kib, acc_kib]

Every error names the entry it is about (``axes.spad_kib[2]``, ``workloads[1].seq``,
...). :func:`expand` turns the axes into points: a combination the configuration refuses
is kept as an invalid point with the configuration's message (reported, not run); one that
breaks a constraint is left out and counted.
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
from dataclasses import dataclass, field
from pathlib import Path

from ...hw.config import (
    PRESETS,
    ConfigError,
    TesseraConfig,
    TesseraError,
    parse_json,
    preset,
)

__all__ = ["SpecError", "SweepSpec", "Workload", "Point", "load_spec", "parse_spec",
           "expand", "AXES", "WORKLOAD_KINDS", "MODELS", "RECHECK"]

#: The configuration fields a sweep may vary, and ``mem_latency`` (the main-memory
#: model's latency in cycles, a property of the system rather than of the accelerator);
#: ``array`` sets rows and cols together (the transformer lowerings need a square array).
AXES = ("array", "rows", "cols", "dataflow", "spad_kib", "spad_banks", "acc_kib",
        "acc_banks", "bus_bits", "max_reads", "max_writes", "load_queue_depth",
        "exec_queue_depth", "store_queue_depth", "max_row_len", "mem_latency")

#: Transformer shapes by name: hidden size, heads, FFN width, layers.
MODELS = {
    "bert-base": {"hidden": 768, "heads": 12, "ffn": 3072, "layers": 12},
    "minilm": {"hidden": 384, "heads": 12, "ffn": 1536, "layers": 6},
    "gpt2": {"hidden": 768, "heads": 12, "ffn": 3072, "layers": 12},
}

#: Workload kinds and the parameters each takes (``None``: required, else its default).
WORKLOAD_KINDS = {
    "gemm": {"m": None, "k": None, "n": None},
    "bert-layer": {"model": "bert-base", "seq": 128, "hidden": None, "heads": None,
                   "ffn": None},
    "encoder": {"model": "bert-base", "seq": 128, "layers": None, "hidden": None,
                "heads": None, "ffn": None},
    "gpt2-prefill": {"model": "gpt2", "seq": 128, "hidden": None, "heads": None,
                     "ffn": None},
    "gpt2-decode": {"model": "gpt2", "seq": 128, "hidden": None, "heads": None,
                    "ffn": None},
}
#: What ``recheck`` may say besides a count of points.
RECHECK = ("pareto", "none")
#: Backends a sweep evaluates points with (the runtime's; the model first).
SWEEP_BACKENDS = ("model", "verilator", "golden")
#: Most points a sweep expands to (a typo in an axis must not start a week of work).
MAX_POINTS = 100_000
#: Largest specification file read.
MAX_SPEC_BYTES = 1 << 20

_KEYS = ("name", "base", "axes", "constraints", "workloads", "backend", "recheck",
         "rtl_backend", "baseline", "heatmap", "clock_mhz", "clock_note", "output",
         "workers", "rtl_parallel", "seed")


class SpecError(TesseraError, ValueError):
    """A specification that cannot be swept: the message names the entry and what is
    allowed."""


@dataclass(frozen=True)
class Workload:
    """One workload of a sweep: its ``kind`` (:data:`WORKLOAD_KINDS`), its resolved
    parameters (shapes filled in from the model's), and its name in the table."""

    name: str
    kind: str
    params: tuple            # sorted (key, value) pairs

    @property
    def p(self) -> dict:
        return dict(self.params)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, **self.p}

    def describe(self) -> str:
        p = self.p
        if self.kind == "gemm":
            return f"{p['m']} x {p['k']} x {p['n']} product"
        shape = f"hidden {p['hidden']}, {p['heads']} heads, FFN {p['ffn']}"
        what = {"bert-layer": f"one encoder layer over {p['seq']} tokens",
                "encoder": f"{p['layers']}-layer encoder over {p['seq']} tokens",
                "gpt2-prefill": f"one GPT-2 block, prefill of {p['seq']} tokens",
                "gpt2-decode": f"one GPT-2 block, a decode step after {p['seq']} tokens"}
        return f"{p.get('model', '')} {what[self.kind]} ({shape})".strip()


@dataclass
class Point:
    """One configuration of the sweep: the axes' values, the configuration they make (or
    why it is refused), and the memory latency."""

    index: int
    axes: dict
    config: TesseraConfig | None
    mem_latency: int
    error: str | None = None

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.axes.items())


@dataclass
class SweepSpec:
    """A checked specification (see the module docstring)."""

    name: str
    base: TesseraConfig
    axes: dict
    constraints: list
    workloads: list
    backend: str = "model"
    recheck: str | int = "pareto"
    rtl_backend: str = "verilator"
    baseline: dict | None = None
    heatmap: tuple | None = None
    clock_mhz: float | None = None
    clock_note: str = ""
    output: Path | None = None
    workers: int | None = None
    rtl_parallel: int = 1
    seed: int = 1
    source: str = "<spec>"
    _compiled: list = field(default_factory=list, repr=False)


def load_spec(path) -> SweepSpec:
    """Read and check a specification file (YAML, or JSON by its ``.json`` suffix).

    Raises
    ------
    SpecError
        If the file cannot be read or parsed, or any entry is wrong (the message names it).
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"sweep specification {str(p)!r} is not a file")
    raw = p.read_bytes()
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"sweep specification {str(p)!r} is larger than "
                        f"{MAX_SPEC_BYTES >> 10} KiB")
    if p.suffix.lower() == ".json":
        data = parse_json(raw, f"sweep specification {str(p)!r}", error=SpecError)
    else:
        import yaml

        try:
            data = yaml.safe_load(raw.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise SpecError(f"sweep specification {str(p)!r} is not UTF-8 text") from None
        except yaml.YAMLError as e:
            raise SpecError(f"sweep specification {str(p)!r} is not valid YAML: "
                            f"{str(e)[:400]}") from None
    return parse_spec(data, str(p), base_dir=p.parent)


def _int(value, where: str, lo: int = 1, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or \
            (hi is not None and value > hi):
        rng = f"from {lo}" + (f" to {hi}" if hi is not None else "")
        raise SpecError(f"{where} must be a whole number {rng}, not {value!r}")
    return value


def parse_spec(data, source: str = "<spec>", base_dir: Path | None = None) -> SweepSpec:
    """A :class:`SweepSpec` from the parsed mapping ``data``.

    Raises
    ------
    SpecError
        Naming the entry that is wrong.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a sweep specification is a mapping (name, base, axes, "
                        f"workloads, ...), not {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in _KEYS)
    if unknown:
        raise SpecError(f"{source}: unknown entr{'ies' if len(unknown) > 1 else 'y'} "
                        f"{', '.join(unknown)}; a specification has {', '.join(_KEYS)}")
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_."
                                                        for c in name):
        raise SpecError(f"{source}: name must be letters, digits, '-', '_' or '.', "
                        f"not {name!r}")
    base = _base(data.get("base", "default"), source, base_dir)
    axes = _axes(data.get("axes", {}), source)
    spec = SweepSpec(name=name, base=base, axes=axes, constraints=[], workloads=[],
                     source=source)
    names = set(AXES) | {f.name for f in _config_fields()}
    for i, text in enumerate(_list(data.get("constraints", []), f"{source}: constraints")):
        spec._compiled.append(_constraint(text, f"{source}: constraints[{i}]", names))
        spec.constraints.append(text)
    workloads = _list(data.get("workloads"), f"{source}: workloads")
    if not workloads:
        raise SpecError(f"{source}: workloads must list at least one workload (kinds: "
                        f"{', '.join(WORKLOAD_KINDS)})")
    for i, w in enumerate(workloads):
        spec.workloads += _workloads(w, f"{source}: workloads[{i}]", base_dir)
    seen = set()
    for w in spec.workloads:
        if w.name in seen:
            raise SpecError(f"{source}: two workloads are named {w.name!r}; give one a name")
        seen.add(w.name)
    spec.backend = data.get("backend", "model")
    if spec.backend not in SWEEP_BACKENDS:
        raise SpecError(f"{source}: backend must be one of {', '.join(SWEEP_BACKENDS)}, not "
                        f"{spec.backend!r}")
    spec.rtl_backend = data.get("rtl_backend", "verilator")
    if spec.rtl_backend not in ("verilator", "icarus"):
        raise SpecError(f"{source}: rtl_backend must be verilator or icarus, not "
                        f"{spec.rtl_backend!r}")
    recheck = data.get("recheck", "pareto")
    if isinstance(recheck, int) and not isinstance(recheck, bool):
        spec.recheck = _int(recheck, f"{source}: recheck", 0)
    elif recheck in RECHECK:
        spec.recheck = recheck
    else:
        raise SpecError(f"{source}: recheck must be pareto, none or a number of points, not "
                        f"{recheck!r}")
    if "baseline" in data:
        b = data["baseline"]
        if not isinstance(b, dict) or not b:
            raise SpecError(f"{source}: baseline must map axes to values, e.g. "
                            f"{{spad_kib: 256, acc_kib: 64}}, not {b!r}")
        for k in b:
            if k not in axes:
                raise SpecError(f"{source}: baseline.{k} is not one of the sweep's axes "
                                f"({', '.join(axes) or 'none'})")
            if b[k] not in axes[k]:
                raise SpecError(f"{source}: baseline.{k} = {b[k]!r} is not among the axis's "
                                f"values {axes[k]}")
        spec.baseline = dict(b)
    if "heatmap" in data:
        h = data["heatmap"]
        if not (isinstance(h, list) and len(h) == 2 and all(a in axes for a in h)
                and h[0] != h[1]):
            raise SpecError(f"{source}: heatmap must name two different axes of the sweep "
                            f"({', '.join(axes) or 'none'}), not {h!r}")
        spec.heatmap = tuple(h)
    if "clock_mhz" in data:
        c = data["clock_mhz"]
        if not isinstance(c, int | float) or isinstance(c, bool) or not 0 < c < 10_000 \
                or not math.isfinite(c):
            raise SpecError(f"{source}: clock_mhz must be a positive number of MHz, not {c!r}")
        spec.clock_mhz = float(c)
    note = data.get("clock_note", "")
    if not isinstance(note, str):
        raise SpecError(f"{source}: clock_note must be text, not {note!r}")
    spec.clock_note = note
    if "output" in data:
        if not isinstance(data["output"], str):
            raise SpecError(f"{source}: output must be a folder name, not {data['output']!r}")
        spec.output = Path(data["output"])
    if "workers" in data:
        spec.workers = _int(data["workers"], f"{source}: workers", 1, 256)
    spec.rtl_parallel = _int(data.get("rtl_parallel", 1), f"{source}: rtl_parallel", 1, 256)
    spec.seed = _int(data.get("seed", 1), f"{source}: seed", 0)
    return spec


def _config_fields():
    import dataclasses

    return dataclasses.fields(TesseraConfig)


def _list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(f"{where} must be a list, not {type(value).__name__}")
    return value


def _base(value, source: str, base_dir: Path | None) -> TesseraConfig:
    if isinstance(value, dict):
        try:
            return TesseraConfig.from_dict(value)
        except ConfigError as e:
            raise SpecError(f"{source}: base: {e}") from None
    if not isinstance(value, str):
        raise SpecError(f"{source}: base must be a preset ({', '.join(PRESETS)}), a "
                        f"configuration JSON file or a mapping of fields, not {value!r}")
    if value in PRESETS:
        return preset(value)
    path = Path(value)
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = base_dir / path
    if path.suffix == ".json" or path.exists():
        try:
            return TesseraConfig.from_file(path)
        except ConfigError as e:
            raise SpecError(f"{source}: base: {e}") from None
    raise SpecError(f"{source}: base {value!r} is neither a preset ({', '.join(PRESETS)}) "
                    f"nor a configuration file")


def _axes(value, source: str) -> dict:
    if not isinstance(value, dict):
        raise SpecError(f"{source}: axes must map configuration fields to lists of values, "
                        f"not {type(value).__name__}")
    out = {}
    for name, values in value.items():
        where = f"{source}: axes.{name}"
        if name not in AXES:
            raise SpecError(f"{where}: unknown axis; the axes are {', '.join(AXES)}")
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise SpecError(f"{where} lists no values")
        for j, v in enumerate(values):
            if name == "dataflow":
                if not isinstance(v, str):
                    raise SpecError(f"{where}[{j}] must be 'ws', 'os' or 'both', not {v!r}")
            else:
                _int(v, f"{where}[{j}]")
        if len(set(values)) != len(values):
            raise SpecError(f"{where} lists a value twice: {values}")
        out[name] = list(values)
    if "array" in out and ("rows" in out or "cols" in out):
        raise SpecError(f"{source}: axes.array sets rows and cols together; give array, or "
                        f"rows and cols, not both")
    total = math.prod(len(v) for v in out.values())
    if total > MAX_POINTS:
        raise SpecError(f"{source}: the axes make {total:,} points; at most {MAX_POINTS:,}")
    return out


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_CMPOPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
           ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne}


def _constraint(text, where: str, names: set):
    """A constraint's expression compiled to a function of a value dict: arithmetic
    (``+ - * / // %``), comparisons (chains too), ``and``, ``or``, ``not``, numbers,
    strings, and the names of axes and configuration fields. Nothing else is evaluated."""
    if not isinstance(text, str):
        raise SpecError(f"{where} must be an expression as text, e.g. 'spad_kib + acc_kib "
                        f"<= 320', not {text!r}")
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as e:
        raise SpecError(f"{where}: {text!r} is not an expression ({e.msg})") from None

    def build(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str) \
                and not isinstance(node.value, bool):
            return lambda v, c=node.value: c
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise SpecError(f"{where}: {node.id!r} is not an axis or configuration field")
            return lambda v, n=node.id: v[n]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            a, b, op = build(node.left), build(node.right), _BINOPS[type(node.op)]
            return lambda v: op(a(v), b(v))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            a = build(node.operand)
            return lambda v: -a(v)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            a = build(node.operand)
            return lambda v: not a(v)
        if isinstance(node, ast.BoolOp):
            parts = [build(x) for x in node.values]
            if isinstance(node.op, ast.And):
                return lambda v: all(p(v) for p in parts)
            return lambda v: any(p(v) for p in parts)
        if isinstance(node, ast.Compare) and all(type(o) in _CMPOPS for o in node.ops):
            terms = [build(node.left)] + [build(x) for x in node.comparators]
            ops = [_CMPOPS[type(o)] for o in node.ops]
            return lambda v: all(op(terms[i](v), terms[i + 1](v))
                                 for i, op in enumerate(ops))
        raise SpecError(f"{where}: {text!r} uses {type(node).__name__}; a constraint is "
                        f"arithmetic and comparisons over the axes")

    return build(tree)


def _workloads(entry, where: str, base_dir: Path | None) -> list[Workload]:
    """One ``workloads`` entry, its list-valued ``seq`` expanded."""
    if not isinstance(entry, dict):
        raise SpecError(f"{where} must be a mapping such as {{kind: gemm, m: 128, k: 768, "
                        f"n: 768}}, not {entry!r}")
    entry = dict(entry)
    folder = entry.pop("folder", None)
    kind = entry.pop("kind", None)
    name = entry.pop("name", None)
    if folder is not None:
        kind, shape = _folder_shape(folder, kind, where, base_dir)
        for k, v in shape.items():
            entry.setdefault(k, v)
        folder_path = Path(str(folder))
        entry.setdefault("model", folder_path.name if folder_path.name != "model"
                         else folder_path.resolve().parent.name)
    if kind not in WORKLOAD_KINDS:
        raise SpecError(f"{where}.kind must be one of {', '.join(WORKLOAD_KINDS)} (or give "
                        f"a model folder as folder), not {kind!r}")
    allowed = WORKLOAD_KINDS[kind]
    unknown = sorted(str(k) for k in entry if k not in allowed)
    if unknown:
        raise SpecError(f"{where}: {kind} takes {', '.join(allowed)}, not "
                        f"{', '.join(unknown)}")
    seqs = entry.get("seq", allowed.get("seq"))
    if isinstance(seqs, list) and "seq" in allowed:
        if not seqs:
            raise SpecError(f"{where}.seq lists no lengths")
        out = []
        for j, s in enumerate(seqs):
            _int(s, f"{where}.seq[{j}]")
            out += _workloads({**entry, "kind": kind, "seq": s,
                               **({"name": f"{name}-s{s}"} if name else {})}, where, base_dir)
        return out
    params = {}
    if kind == "gemm":
        for k in ("m", "k", "n"):
            if k not in entry:
                raise SpecError(f"{where}: gemm needs m, k and n")
            params[k] = _int(entry[k], f"{where}.{k}", 1, 1 << 16)
        auto = f"gemm-{params['m']}x{params['k']}x{params['n']}"
    else:
        model = entry.get("model", allowed["model"])
        shape = MODELS.get(model)
        given = {k: entry[k] for k in ("hidden", "heads", "ffn", "layers") if k in entry}
        if shape is None and not {"hidden", "heads", "ffn"} <= set(given):
            raise SpecError(f"{where}.model must be one of {', '.join(MODELS)} (or give "
                            f"hidden, heads and ffn), not {model!r}")
        shape = {**(shape or {}), **given}
        for k in ("hidden", "heads", "ffn") + (("layers",) if kind == "encoder" else ()):
            if k not in shape:
                raise SpecError(f"{where}: {kind} needs {k} (or a known model)")
            params[k] = _int(shape[k], f"{where}.{k}", 1, 1 << 16 if k != "layers" else 96)
        if params["hidden"] % params["heads"]:
            raise SpecError(f"{where}: hidden ({params['hidden']}) must be a multiple of heads "
                            f"({params['heads']})")
        params["seq"] = _int(entry.get("seq", allowed["seq"]), f"{where}.seq", 1, 1 << 16)
        params["model"] = str(model)
        auto = f"{model}-{kind}-s{params['seq']}"
    if name is not None and not (isinstance(name, str) and name):
        raise SpecError(f"{where}.name must be text, not {name!r}")
    return [Workload(name or auto, kind, tuple(sorted(params.items())))]


def _folder_shape(folder, kind, where: str, base_dir: Path | None) -> tuple[str, dict]:
    """A model folder's kind of workload and shape (random weights of that shape are
    run: cycles do not depend on the weights' values)."""
    from ..models.gpt2_folder import read_gpt2_config
    from ..models.minilm import read_model_config

    path = Path(str(folder))
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = base_dir / path
    if not path.is_dir():
        raise SpecError(f"{where}.folder {str(folder)!r} is not a folder")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise SpecError(f"{where}.folder {str(path)!r} has no config.json")
    data = parse_json(config_file.read_bytes(), f"model configuration {config_file}",
                      error=SpecError)
    try:
        if isinstance(data, dict) and "n_embd" in data:
            c = read_gpt2_config(path)
            ffn = c.get("n_inner") or 4 * c["n_embd"]
            if kind not in (None, "gpt2-prefill", "gpt2-decode"):
                raise SpecError(f"{where}: {path} is a GPT-2 folder: its kinds are "
                                f"gpt2-prefill and gpt2-decode, not {kind}")
            return kind or "gpt2-prefill", {"hidden": c["n_embd"], "heads": c["n_head"],
                                            "ffn": ffn}
        c = read_model_config(path)
    except TesseraError as e:
        if isinstance(e, SpecError):
            raise
        raise SpecError(f"{where}.folder: {e}") from None
    if kind not in (None, "encoder", "bert-layer"):
        raise SpecError(f"{where}: {path} is a BERT-style folder: its kinds are encoder and "
                        f"bert-layer, not {kind}")
    shape = {"hidden": c["hidden_size"], "heads": c["num_attention_heads"],
             "ffn": c["intermediate_size"]}
    if (kind or "encoder") == "encoder":
        shape["layers"] = c["num_hidden_layers"]
    return kind or "encoder", shape


def expand(spec: SweepSpec) -> tuple[list[Point], int]:
    """The sweep's points (the axes' product, in order) and how many the constraints
    left out. A combination the configuration refuses is a point with ``error`` set."""
    names = list(spec.axes)
    points, excluded = [], 0
    base = spec.base.to_dict()
    for values in itertools.product(*(spec.axes[n] for n in names)):
        axes = dict(zip(names, values, strict=True))
        fields = {k: v for k, v in axes.items() if k not in ("array", "mem_latency")}
        if "array" in axes:
            fields["rows"] = fields["cols"] = axes["array"]
        latency = axes.get("mem_latency", 100)
        scope = {**base, **fields, **axes, "mem_latency": latency}
        try:
            keep = all(c(scope) for c in spec._compiled)
        except (TypeError, ZeroDivisionError) as e:
            raise SpecError(f"{spec.source}: constraints cannot be evaluated at {axes}: "
                            f"{e}") from None
        if not keep:
            excluded += 1
            continue
        i = len(points)
        if not 1 <= latency < 1 << 16:
            points.append(Point(i, axes, None, latency,
                                f"mem_latency must be from 1 to 65535 cycles, not {latency}"))
            continue
        try:
            config = spec.base.replace(**fields)
        except ConfigError as e:
            points.append(Point(i, axes, None, latency, str(e)))
            continue
        points.append(Point(i, axes, config, latency))
    return points, excluded
