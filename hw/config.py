"""The one configuration of a Tessera accelerator.

Everything reads this object: the hardware generator, the driver, the golden model and the
testbenches. The generator writes it (with its hash) beside the Verilog as ``config.json``;
the driver and the testbenches load it from there, never from a copy kept by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass

__all__ = ["TesseraError", "ConfigError", "ArrayConfig", "TesseraConfig", "PRESETS", "preset",
           "load_config", "load_config_file", "parse_json", "DATAFLOWS", "MAX_ROW_LEN",
           "CONFIG_FORMAT", "MAX_CONFIG_BYTES", "MAX_JSON_DEPTH"]

DATAFLOWS = ("ws", "os", "both")
#: Operand widths the systolic array builds (:class:`ArrayConfig`).
OPERAND_BITS = (4, 8, 16)
#: Operand width of the accelerator: its scratchpad rows, DMA and output path are int8.
ACCEL_OPERAND_BITS = 8
#: Widest accumulator of the accelerator: the output path reads the golden model's int32.
ACCEL_ACC_BITS = 32
BUS_BITS = (64, 128, 256, 512)
#: Longest row the Softmax and LayerNorm units normalise (their datapath widths follow it).
MAX_ROW_LEN = 4096
#: The version of the JSON form written by :meth:`TesseraConfig.to_json` (its ``format``).
CONFIG_FORMAT = 1
#: Largest configuration file read: a configuration is a few hundred bytes.
MAX_CONFIG_BYTES = 1 << 20
#: Deepest nesting of JSON objects and arrays read (a configuration is two levels deep).
MAX_JSON_DEPTH = 32


class TesseraError(Exception):
    """Base of the errors Tessera raises for bad input (a configuration, a file, a size,
    an argument): the message names the problem and what is allowed. The command line
    prints it without a traceback. Subclasses also derive from the matching built-in
    (``ValueError``, ``FileNotFoundError``, ...), so callers may catch either."""


class ConfigError(TesseraError, ValueError):
    """An invalid configuration: the message says what is wrong and what is allowed."""


def _json_depth_error(text: str, max_depth: int) -> str | None:
    """Where ``text`` nests JSON arrays or objects deeper than ``max_depth`` (brackets
    inside strings do not count), or None. A linear scan, so that a deeply nested file is
    refused before the parser recurses into it."""
    depth = 0
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return f"it nests arrays and objects more than {max_depth} deep (at character {i})"
        elif ch in "]}":
            depth -= 1
    return None


def parse_json(text, what: str = "configuration", max_depth: int = MAX_JSON_DEPTH,
               error: type[Exception] = ConfigError):
    """``text`` (str or UTF-8 bytes, with or without a byte-order mark) parsed as JSON, or
    ``error`` with a message that names ``what`` and the problem: not text, not UTF-8, not
    JSON, nested deeper than ``max_depth``, a key given twice in an object, a number too
    long to read.

    Raises
    ------
    ConfigError
        (or ``error``) as above.
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8-sig")      # a byte-order mark is allowed
        except UnicodeDecodeError as e:
            raise error(f"the {what} is not UTF-8 text (byte {e.start} is "
                        f"{text[e.start]:#04x}); a {what} is a JSON file") from None
    if not isinstance(text, str):
        raise error(f"a {what} is JSON text (str or bytes), not {type(text).__name__}")
    text = text.removeprefix("\ufeff")
    deep = _json_depth_error(text, max_depth)
    if deep:
        raise error(f"the {what} is not a usable JSON file: {deep}")

    def unique(pairs):
        out = dict(pairs)
        if len(out) < len(pairs):     # json keeps the last silently: which one was meant?
            seen = set()
            twice = sorted({k for k, _ in pairs if k in seen or seen.add(k)})
            raise error(f"the {what} gives {', '.join(repr(k[:40]) for k in twice[:10])} "
                        f"more than once")
        return out

    try:
        return json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as e:
        raise error(f"the {what} is not valid JSON: {e}") from None
    except error:
        raise
    except (ValueError, RecursionError) as e:    # e.g. an integer of thousands of digits
        raise error(f"the {what} is not a usable JSON file: {e}") from None


def _choices(values) -> str:
    return str(values[0]) if len(values) == 1 else \
        f"one of {', '.join(map(str, values))}"


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


class _Spec:
    """Validation at construction and the JSON form, shared by the two configurations."""

    KIND = ""

    def __post_init__(self):
        # A value read from a file may be long: each message shows its start.
        errors = [e if len(e) <= 300 else e[:300] + "..." for e in self._errors()]
        if errors:
            raise ConfigError(f"invalid {self.KIND} configuration: " + "; ".join(errors))

    def _type_errors(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (not isinstance(value, int) or isinstance(value, bool)):
                yield f"{f.name} must be an integer, not {value!r}"

    def _array_errors(self, operand_bits=OPERAND_BITS, acc_max=64, why=""):
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if not 1 <= value <= 64:
                yield f"{name} must be between 1 and 64, not {value}"
        for name in ("input_bits", "weight_bits"):
            value = getattr(self, name)
            if value not in operand_bits:
                yield f"{name} must be {_choices(operand_bits)}{why}, not {value}"
        product_bits = self.input_bits + self.weight_bits
        if not product_bits <= self.acc_bits <= acc_max:
            yield (f"acc_bits must be between input_bits + weight_bits ({product_bits}) "
                   f"and {acc_max}{why}, not {self.acc_bits}")
        if self.dataflow not in DATAFLOWS:
            yield (f"dataflow must be one of {', '.join(map(repr, DATAFLOWS))}, "
                   f"not {self.dataflow!r}")

    @property
    def has_ws(self) -> bool:
        """The array can run weight-stationary tiles."""
        return self.dataflow in ("ws", "both")

    @property
    def has_os(self) -> bool:
        """The array can run output-stationary tiles."""
        return self.dataflow in ("os", "both")

    @property
    def macs_per_cycle(self) -> int:
        """Peak multiply-accumulates per cycle (rows x cols)."""
        return self.rows * self.cols

    @property
    def product_bits(self) -> int:
        return self.input_bits + self.weight_bits

    # Identity and serialisation ---------------------------------------------------------

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps({"format": CONFIG_FORMAT, "kind": self.KIND, "config": self.to_dict(),
                           "hash": self.hash}, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict):
        if not isinstance(data, dict):
            raise ConfigError(f"a configuration must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise ConfigError(f"unknown configuration field(s): "
                              f"{', '.join(u[:40] for u in unknown[:10])}{more}; "
                              f"allowed: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str):
        """Read a configuration written by :meth:`to_json` (or a bare field object).

        Raises
        ------
        ConfigError
            If the text is not JSON (or nested deeper than :data:`MAX_JSON_DEPTH`), is the
            other kind of configuration or a format version other than
            :data:`CONFIG_FORMAT`, has unknown fields, or carries a hash that does not
            match its fields (a file edited by hand after generation).
        """
        data = parse_json(text)
        if isinstance(data, dict) and "config" in data:
            _check_envelope(data, cls.KIND)
            cfg = cls.from_dict(data["config"])
            if "hash" in data and data["hash"] != cfg.hash:
                raise ConfigError(f"configuration hash {data['hash']} does not match its fields "
                                  f"(they hash to {cfg.hash}); was the file edited by hand?")
            return cfg
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path):
        """Read a configuration file (:meth:`from_json`'s forms).

        Raises
        ------
        ConfigError
            As :func:`load_config_file`, and if the file holds the other kind.
        """
        return _in_file(path, cls.from_json)

    @property
    def hash(self) -> str:
        """A stable 16-hex-digit identity of the configuration (independent of field order)."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ArrayConfig(_Spec):
    """The systolic array alone (:class:`~tessera.hw.matrix_unit.MatrixUnit`): the fields of
    :class:`TesseraConfig` it reads, with the operand widths the array builds (4, 8 or 16
    bits) and accumulators up to 64 bits. The accelerator around it takes int8 operands and
    at most 32-bit accumulators; :attr:`TesseraConfig.array` is its array.

    Raises
    ------
    ConfigError
        At construction, for any field or combination that is not allowed.
    """

    KIND = "array"

    rows: int = 16
    cols: int = 16
    input_bits: int = 8
    weight_bits: int = 8
    acc_bits: int = 32
    dataflow: str = "both"

    def _errors(self):
        type_errors = list(self._type_errors())
        if type_errors:
            yield from type_errors
            return
        yield from self._array_errors()

    @property
    def array(self) -> ArrayConfig:
        return self

    def describe(self) -> str:
        return (f"{self.rows}x{self.cols} {self.dataflow.upper()} array, "
                f"int{self.input_bits} x int{self.weight_bits} -> int{self.acc_bits}")


@dataclass(frozen=True)
class TesseraConfig(ArrayConfig):
    """The hardware's specification.

    Parameters
    ----------
    rows, cols : int
        Processing elements of the systolic array. In weight-stationary mode an input row
        has ``rows`` elements (the reduction dimension of one tile) and a result row has
        ``cols`` elements.
        ``cols`` is at least 2.
    input_bits, weight_bits : int
        Signed two's-complement width of activations and weights: 8 (the scratchpad, the
        DMA and the output path carry int8; :class:`ArrayConfig` builds the array alone with
        4- or 16-bit operands).
    acc_bits : int
        Signed width of the accumulation, 16 to 32. Sums wrap around at this width (two's
        complement), exactly as in the golden model.
    dataflow : str
        ``"ws"`` (weight-stationary), ``"os"`` (output-stationary) or ``"both"`` (chosen
        at run time).
    spad_kib, spad_banks : int
        Scratchpad capacity in KiB and its number of banks.
    acc_kib, acc_banks : int
        Accumulator capacity in KiB and its number of banks.
    bus_bits : int
        Data width of the AXI4 master: 64, 128, 256 or 512.
    addr_bits : int
        Main-memory address width of the AXI4 master: 32 to 64.
    max_reads, max_writes : int
        AXI read and write transactions in flight.
    load_queue_depth, exec_queue_depth, store_queue_depth : int
        Depth of the three command queues.
    max_row_len : int
        Longest row (in elements) the Softmax and LayerNorm units normalise: a power of two
        from ``cols`` to :data:`MAX_ROW_LEN`.
    output_lanes : int
        Lanes of the output path's units (requantization, GELU, Softmax, LayerNorm): 0 (the
        default) for one per column, or a divisor of ``cols`` from 2 up. With fewer lanes
        than columns each ``cols``-wide chunk passes in ``cols / output_lanes`` pieces: the
        units cost that much less and a row's passes take that many more cycles
        (:attr:`out_lanes`; ``docs/architecture.md``). Left out of :meth:`to_dict` (and so
        of the hash) when 0 or ``cols``.

    Raises
    ------
    ConfigError
        At construction, for any field or combination that is not allowed: a configuration
        that constructs is one every unit builds.
    """

    # The array's fields (rows, cols, input_bits, weight_bits, acc_bits, dataflow) come
    # first, from ArrayConfig; then the rest of the machine.
    spad_kib: int = 256
    spad_banks: int = 4
    acc_kib: int = 256
    acc_banks: int = 2
    bus_bits: int = 128
    addr_bits: int = 32
    max_reads: int = 16
    max_writes: int = 16
    load_queue_depth: int = 8
    exec_queue_depth: int = 8
    store_queue_depth: int = 2
    max_row_len: int = 4096
    output_lanes: int = 0

    KIND = "accelerator"

    def _errors(self):
        type_errors = list(self._type_errors())
        if type_errors:
            yield from type_errors
            return
        yield from self._array_errors((ACCEL_OPERAND_BITS,), ACCEL_ACC_BITS,
                                      " in the accelerator (ArrayConfig builds the array "
                                      "alone with other widths)")
        if self.cols == 1:
            yield (f"cols must be at least 2 (a LayerNorm table row keeps a chunk's prescale, "
                   f"multiplier and shift, in two lanes), not {self.cols}")
        if self.bus_bits not in BUS_BITS:
            yield f"bus_bits must be one of {', '.join(map(str, BUS_BITS))}, not {self.bus_bits}"
        if not 32 <= self.addr_bits <= 64:
            yield f"addr_bits must be between 32 and 64, not {self.addr_bits}"
        for name in ("spad_banks", "acc_banks"):
            value = getattr(self, name)
            if not (_is_pow2(value) and value <= 16):
                yield f"{name} must be a power of two from 1 to 16, not {value}"
        for name in ("spad_kib", "acc_kib"):
            value = getattr(self, name)
            if not (_is_pow2(value) and value <= 16384):
                yield f"{name} must be a power of two from 1 to 16384, not {value}"
        for name in ("max_reads", "max_writes"):
            value = getattr(self, name)
            if not (_is_pow2(value) and value <= 64):
                yield f"{name} must be a power of two from 1 to 64, not {value}"
        for name in ("load_queue_depth", "exec_queue_depth", "store_queue_depth"):
            value = getattr(self, name)
            if not 1 <= value <= 256:
                yield f"{name} must be between 1 and 256, not {value}"
        if not (_is_pow2(self.max_row_len) and self.cols <= self.max_row_len <= MAX_ROW_LEN):
            yield (f"max_row_len must be a power of two from cols ({self.cols}) to "
                   f"{MAX_ROW_LEN}, not {self.max_row_len}")
        if self.output_lanes and not (self.output_lanes >= 2 and self.cols > 0
                                      and self.cols % self.output_lanes == 0):
            yield (f"output_lanes must be 0 (one per column) or a divisor of cols "
                   f"({self.cols}) from 2 up, not {self.output_lanes}")
        # Memory shapes: each bank must hold at least one tile.
        for mem, kib, banks, row_bytes in (
            ("scratchpad", "spad_kib", "spad_banks", self.spad_row_bytes),
            ("accumulator", "acc_kib", "acc_banks", self.acc_row_bytes),
        ):
            total = getattr(self, kib) * 1024
            nbanks = getattr(self, banks)
            if row_bytes <= 0:            # cols or rows already reported
                continue
            rows_total = total // row_bytes
            if rows_total < nbanks * self.rows:
                yield (f"the {mem} ({getattr(self, kib)} KiB of {row_bytes}-byte rows) must hold "
                       f"at least {self.rows} rows in each of its {nbanks} banks; "
                       f"raise {kib} or lower {banks}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["output_lanes"] in (0, self.cols):
            # One lane per column, however it is said: configurations from before the field
            # hash as they did.
            del d["output_lanes"]
        return d

    # Derived values (each computed once: the lowering and the performance model read them
    # for every command) ------------------------------------------------------------------

    @functools.cached_property
    def out_lanes(self) -> int:
        """Lanes of the output path's units: ``output_lanes``, or ``cols`` when it is 0."""
        return self.output_lanes or self.cols

    @functools.cached_property
    def bus_bytes(self) -> int:
        """Bytes per beat on the AXI4 master: the DMA's peak bytes per cycle."""
        return self.bus_bits // 8

    @functools.cached_property
    def spad_row_bytes(self) -> int:
        """Bytes of one scratchpad row (wide enough for an input or a weight row)."""
        return math.ceil(max(self.rows * self.input_bits, self.cols * self.weight_bits) / 8)

    @functools.cached_property
    def acc_row_bytes(self) -> int:
        """Bytes of one accumulator row (``cols`` values of ``acc_bits``)."""
        return self.cols * self.acc_bits // 8

    @functools.cached_property
    def spad_rows(self) -> int:
        """Scratchpad rows: as many as fit, a whole number in each bank."""
        per_bank = self.spad_kib * 1024 // self.spad_row_bytes // self.spad_banks
        return per_bank * self.spad_banks

    @functools.cached_property
    def acc_rows(self) -> int:
        """Accumulator rows: as many as fit, a whole number in each bank."""
        per_bank = self.acc_kib * 1024 // self.acc_row_bytes // self.acc_banks
        return per_bank * self.acc_banks

    @property
    def array(self) -> ArrayConfig:
        """The systolic array of this accelerator."""
        return ArrayConfig(self.rows, self.cols, self.input_bits, self.weight_bits,
                           self.acc_bits, self.dataflow)

    @property
    def hash32(self) -> int:
        """The first 32 bits of :attr:`hash`, as the hardware's identity register holds it."""
        return int(self.hash[:8], 16)

    def describe(self) -> str:
        return (f"{self.rows}x{self.cols} {self.dataflow.upper()} array, "
                f"int{self.input_bits} x int{self.weight_bits} -> int{self.acc_bits}, "
                f"{self.spad_kib} KiB scratchpad / {self.acc_kib} KiB accumulator, "
                f"{self.bus_bits}-bit bus"
                + (f", {self.out_lanes} output lanes" if self.out_lanes < self.cols else ""))


_DEFAULT = TesseraConfig()

PRESETS: dict[str, TesseraConfig] = {
    # Small enough for Icarus: the RTL tests run on it.
    "tiny": dataclasses.replace(_DEFAULT, rows=4, cols=4, spad_kib=16, spad_banks=2,
                                acc_kib=8, acc_banks=2, bus_bits=64, max_reads=4,
                                max_writes=4, max_row_len=256),
    # Gemmini's 16x16 array, 256 KiB scratchpad and 128-bit bus (see shared REFERENCES),
    # with a 256 KiB accumulator: the survey's transformer sizing, and what LayerNorm over
    # a 768-wide row needs to keep tiles tall (32 rows instead of 8 with 64 KiB; a
    # BERT-base layer goes from 0.40 to 0.70 MAC utilization).
    # An 8x8 array with small memories: the FPGA-sized accelerator (an ECP5-85F). Weight-
    # stationary only, the dataflow every lowering uses: the output-stationary one costs
    # about 10,800 LUT4 and 1,000 carry cells more on this array. Four output lanes: the
    # output path's units at half the columns take 60% of the 85F's LUT4 sites instead of
    # 74% and 121 DSPs instead of 153, for about 1% more cycles on a BERT-style layer
    # (docs/physical.md).
    "small": dataclasses.replace(_DEFAULT, rows=8, cols=8, dataflow="ws", spad_kib=32,
                                 spad_banks=2, acc_kib=32, acc_banks=2, bus_bits=64,
                                 max_reads=4, max_writes=4, max_row_len=1024,
                                 output_lanes=4),
    "default": _DEFAULT,
    "large": dataclasses.replace(_DEFAULT, rows=32, cols=32, spad_kib=512, acc_kib=256,
                                 bus_bits=256),
}


def preset(name: str) -> TesseraConfig:
    """The named preset configuration.

    Raises
    ------
    ConfigError
        If there is no preset of that name.
    """
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown preset {name!r}; the presets are: "
                          f"{', '.join(PRESETS)}") from None


_ENVELOPE = ("format", "kind", "config", "hash")
_KINDS = {"accelerator": "TesseraConfig", "array": "ArrayConfig"}


def _check_envelope(data: dict, kind: str) -> None:
    """The fields around ``config`` in :meth:`to_json`'s form: known names, a format
    version this code reads, and the expected kind."""
    unknown = sorted(set(data) - set(_ENVELOPE))
    if unknown:
        raise ConfigError(f"unknown field(s) beside \"config\": {', '.join(unknown)}; a "
                          f"configuration file holds {', '.join(_ENVELOPE)} (or only the "
                          f"configuration's own fields)")
    fmt = data.get("format", CONFIG_FORMAT)
    if fmt != CONFIG_FORMAT or isinstance(fmt, bool):
        raise ConfigError(f"configuration format {fmt!r} is not one this Tessera reads: it "
                          f"reads format {CONFIG_FORMAT} (written by a newer or older "
                          f"version? regenerate it with `tessera config --json`)")
    found = data.get("kind", TesseraConfig.KIND)
    if not isinstance(found, str) or found not in _KINDS:
        raise ConfigError(f"unknown configuration kind {found!r}; the kinds are: "
                          f"{', '.join(map(repr, _KINDS))}")
    if found != kind:
        raise ConfigError(f"this is an {found} configuration, not an {kind} one (read it "
                          f"with {_KINDS[found]}, or load_config for either)")


def _read_config_file(path) -> str:
    """The text of a configuration file, checked: a regular file, at most
    :data:`MAX_CONFIG_BYTES`, readable, UTF-8."""
    from pathlib import Path

    if not isinstance(path, str | os.PathLike):
        raise ConfigError(f"a configuration file is named by a path (str or Path), not "
                          f"{type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"configuration file {str(path)!r} does not exist")
    if not path.is_file():
        raise ConfigError(f"configuration file {str(path)!r} is not a regular file (a "
                          f"folder or a device?); give a JSON file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {str(path)!r}: "
                          f"{e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"configuration file {str(path)!r} is larger than "
                          f"{MAX_CONFIG_BYTES // 1024} KiB; a configuration is a small JSON "
                          f"file (`tessera config --json` writes one)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"configuration file {str(path)!r} is not UTF-8 text (byte "
                          f"{e.start} is {raw[e.start]:#04x}); a configuration is a JSON "
                          f"file") from None


def load_config(text: str) -> ArrayConfig | TesseraConfig:
    """The configuration written by ``to_json`` of either kind (an accelerator's when the
    text does not say).

    Raises
    ------
    ConfigError
        As :meth:`TesseraConfig.from_json`.
    """
    data = parse_json(text)
    kind = data.get("kind") if isinstance(data, dict) else None
    return (ArrayConfig if kind == ArrayConfig.KIND else TesseraConfig).from_json(text)


def load_config_file(path) -> ArrayConfig | TesseraConfig:
    """:func:`load_config` of a file.

    Raises
    ------
    ConfigError
        If the file does not exist, is not a regular file, cannot be read, is larger than
        :data:`MAX_CONFIG_BYTES`, or as :func:`load_config`.
    """
    return _in_file(path, load_config)


def _in_file(path, read):
    """``read`` of the text of a configuration file; its errors name the file."""
    text = _read_config_file(path)
    try:
        return read(text)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
