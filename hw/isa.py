"""The command set: the one definition of the accelerator's command format.

The hardware's decoder, the driver's encoder and the disassembler all use the layouts here;
``docs/isa.md`` is generated from them (``tessera isa``). A command is one fixed-width word
(:func:`command_bits`, a multiple of 64): a header and the arguments of its opcode, which
reuse the layouts of the unit that carries it out (a LOAD's arguments are the DMA's load
command, a STORE's the store unit's command), so no field is described twice.

Queues and dependency tokens (after TVM's VTA). The dispatcher routes each command to the
queue of its opcode; the three queues run concurrently. Each command may, before it runs,
wait for a token from its previous or next queue in the chain LOAD -> EXECUTE -> STORE, and
after it finishes, signal a token to either neighbour. The driver uses them to let loads of
the next tile overlap the compute of this one (double buffering) and stores overlap both.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

from amaranth.hdl import Shape
from amaranth.lib import data, enum

from .config import TesseraConfig
from .dma import ROWS_BITS
from .dma import command_layout as dma_load_layout
from .output_path import OutputDigit, OutputOp
from .store_unit import store_command_layout

__all__ = ["Opcode", "ErrorCode", "Queue", "QUEUE_OF", "header_layout", "args_layouts",
           "COMPUTE_RUN_DOC", "run_count_shape", "command_layout_for", "command_bits",
           "Command", "check_tokens", "encode", "decode", "disassemble", "isa_markdown"]


class Opcode(enum.Enum, shape=4):
    """What a command does."""

    CONFIG = 0    # execute queue: the matrix unit's dataflow for the commands that follow
    LOAD = 1      # load queue: a DMA load (main memory to scratchpad or accumulator)
    STORE = 2     # store queue: accumulator rows through the output path, to main memory
    #               or back into the scratchpad
    PRELOAD = 3   # execute queue: a weight tile (``rows`` scratchpad rows) into the array
    COMPUTE = 4   # execute queue: stream rows through the array into the accumulator (with
    #               ``count``: a run of weight tiles, see :data:`COMPUTE_RUN_DOC`)
    FENCE = 5     # dispatcher: wait until every queue is idle
    FINISH = 6    # dispatcher: wait until every queue is idle, then report completion
    NOP = 7       # the queue in its argument: nothing but its tokens (a token relay, e.g.
    #               to let a load wait until a store has freed accumulator rows)


class ErrorCode(enum.Enum, shape=4):
    """Why the accelerator stopped (the status register's error field). The first five are
    the DMA's own codes (:class:`~tessera.hw.dma.DmaError`), with the same numbers."""

    NONE = 0
    SLVERR = 1          # a subordinate error response to a load or store
    DECERR = 2          # a decode error response (no memory there)
    WINDOW = 3          # a load or store outside the main-memory window
    LOCAL = 4           # scratchpad or accumulator rows out of range
    SHAPE = 5           # a load or store of an impossible shape
    ILLEGAL_OPCODE = 8  # a command word with an opcode that does not exist
    ILLEGAL_TOKEN = 9   # a token to a queue that does not exist
    ILLEGAL_FIELD = 10  # a field the machine cannot honour (dataflow, no weights, ...)
    DEADLOCK = 11       # every queue waits for a token that can never come
    FETCH = 12          # the command buffer could not be read (bus error or window)
    TIMEOUT = 13        # the host's cycle limit passed first (set by the runtime, never by
    #                     the hardware: a hang that is not a detected deadlock)


class Queue(enum.Enum, shape=2):
    LOAD = 0
    EXECUTE = 1
    STORE = 2
    DISPATCH = 3


QUEUE_OF = {
    Opcode.CONFIG: Queue.EXECUTE, Opcode.LOAD: Queue.LOAD, Opcode.STORE: Queue.STORE,
    Opcode.PRELOAD: Queue.EXECUTE, Opcode.COMPUTE: Queue.EXECUTE,
    Opcode.FENCE: Queue.DISPATCH, Opcode.FINISH: Queue.DISPATCH, Opcode.NOP: None,
}

#: The neighbours of each queue in the token chain LOAD -> EXECUTE -> STORE.
_PREV = {Queue.LOAD: None, Queue.EXECUTE: Queue.LOAD, Queue.STORE: Queue.EXECUTE}
_NEXT = {Queue.LOAD: Queue.EXECUTE, Queue.EXECUTE: Queue.STORE, Queue.STORE: None}
_TOKENS = ("wait_prev", "wait_next", "signal_prev", "signal_next")


#: What a COMPUTE's ``count`` and ``a_stride`` mean (also in ``docs/isa.md``).
COMPUTE_RUN_DOC = """\
A weight-stationary COMPUTE with `count` = 0 streams `rows` activation rows from `a_addr`
through the weight tile of the last PRELOAD into `acc_addr ..`, replacing the rows or, with
`accumulate`, adding to them.

With `count` = n >= 1 it is a *run* of n weight tiles (a dot product along K, after
Gemmini's LOOP_WS): for i = 0 .. n-1, the weight tile is the `R` scratchpad rows at
`b_addr + i * R` (`R` = the array's rows) and `rows` activation rows are streamed from
`a_addr + i * a_stride`, all into the same accumulator rows `acc_addr ..`; tile 0 replaces
or adds by `accumulate`, every later tile adds. It is the same as n pairs PRELOAD
`b_addr + i * R`, COMPUTE `a_addr + i * a_stride` (accumulating after the first), in one
command, with no PRELOAD needed before it; the weights of the last PRELOAD stay in force
for later COMPUTEs with `count` = 0. A run completes once its last result row is written.

Illegal: `count` != 0 in the output-stationary dataflow, or a `count` beyond the tiles the
scratchpad holds (`spad_rows // R`, and at most `65535 // R`; the field is wider)
(ILLEGAL_FIELD); weights `b_addr .. b_addr + n * R - 1` or activations up to
`a_addr + (n - 1) * a_stride + rows - 1` outside the scratchpad (LOCAL). `a_stride` is
unused when `count` <= 1; a COMPUTE of 0 rows does nothing, whatever its `count`.
"""


def run_count_shape(config: TesseraConfig) -> range:
    """``count`` of a COMPUTE: up to as many weight tiles as the scratchpad holds (and a
    run's weight rows, read as one block, stay a row count of ``ROWS_BITS``)."""
    return range(min(config.spad_rows, (1 << ROWS_BITS) - 1) // config.rows + 1)


@functools.cache
def header_layout() -> data.StructLayout:
    return data.StructLayout({"opcode": Opcode, **{name: 1 for name in _TOKENS}})


@functools.cache
def args_layouts(config: TesseraConfig) -> dict[Opcode, data.StructLayout | None]:
    """The arguments of each opcode (None: it has none)."""
    spad, acc = range(config.spad_rows), range(config.acc_rows)
    return {
        Opcode.CONFIG: data.StructLayout({"os": 1}),
        Opcode.LOAD: dma_load_layout(config),
        Opcode.STORE: store_command_layout(config),
        Opcode.PRELOAD: data.StructLayout({"spad_addr": spad}),
        Opcode.COMPUTE: data.StructLayout({
            "a_addr": spad,         # WS: activation rows; OS: columns of A, one per step
            "b_addr": spad,         # OS: rows of B, one per step; WS run: the first weights
            "rows": ROWS_BITS,      # WS: rows streamed; OS: reduction steps
            "acc_addr": acc,        # first accumulator row of the results
            "accumulate": 1,        # add the results to the rows instead of replacing them
            "shift": 1,             # the results times 2**DIGIT_SHIFT (a wide activation's
            #                         high digits, hw/requant.py)
            "count": run_count_shape(config),  # WS: weight tiles in a run (0: the preloaded)
            "a_stride": spad,       # WS run: scratchpad rows from one tile's activations on
        }),
        Opcode.FENCE: None,
        Opcode.FINISH: None,
        Opcode.NOP: data.StructLayout({"queue": Queue}),
    }


@functools.cache
def _args_union(config: TesseraConfig) -> data.UnionLayout:
    return data.UnionLayout({op.name.lower(): layout
                             for op, layout in args_layouts(config).items() if layout})


@functools.cache
def command_bits(config: TesseraConfig) -> int:
    """Width of a command word: the header and the widest arguments, rounded up to a whole
    number of bus beats (and of 64 bits), so the command fetcher assembles whole words."""
    used = header_layout().size + _args_union(config).size
    unit = max(64, config.bus_bits)
    return -(-used // unit) * unit


@functools.cache
def command_layout_for(config: TesseraConfig) -> data.StructLayout:
    """The layout of a whole command word."""
    header, args = header_layout(), _args_union(config)
    pad = command_bits(config) - header.size - args.size
    fields = {"header": header, "args": args}
    if pad:
        fields["reserved"] = pad
    return data.StructLayout(fields)


@dataclass(frozen=True)
class Command:
    """A decoded command: its opcode, dependency tokens and arguments."""

    opcode: Opcode
    args: dict
    wait_prev: bool = False
    wait_next: bool = False
    signal_prev: bool = False
    signal_next: bool = False

    @property
    def queue(self) -> Queue:
        """The queue that runs it (a NOP: the queue its argument names)."""
        if self.opcode == Opcode.NOP:
            return Queue(self.args.get("queue", Queue.DISPATCH))
        return QUEUE_OF[self.opcode]


def check_tokens(cmd: Command) -> None:
    """Raise ValueError if ``cmd`` waits for or signals a queue that does not exist."""
    if cmd.opcode == Opcode.NOP and cmd.queue == Queue.DISPATCH:
        raise ValueError("a NOP runs in the LOAD, EXECUTE or STORE queue, not DISPATCH")
    q = cmd.queue
    for name in _TOKENS:
        if not getattr(cmd, name):
            continue
        if q == Queue.DISPATCH:
            raise ValueError(f"{cmd.opcode.name} runs in the dispatcher, which has no "
                             f"neighbour queues: {name} is not allowed")
        neighbour = _PREV[q] if name.endswith("prev") else _NEXT[q]
        if neighbour is None:
            side = "previous" if name.endswith("prev") else "next"
            raise ValueError(f"{cmd.opcode.name} runs in the {q.name} queue, which has no "
                             f"{side} queue: {name} is not allowed")


@dataclass(frozen=True)
class _Field:
    """A leaf field of a command word: where it is and what it may hold."""

    offset: int
    width: int
    lo: int
    hi: int
    enum: type | None


@functools.cache
def _tree(config: TesseraConfig, opcode: Opcode):
    """The argument fields of ``opcode`` as nested dicts of :class:`_Field` (union
    alternatives side by side), with offsets in the whole command word; cached, so encoding
    and decoding do not rebuild layouts."""
    layout = args_layouts(config)[opcode]
    if layout is None:
        return None
    base = command_layout_for(config)["args"].offset

    def walk(layout, off):
        out = {}
        for name, field in layout:
            shape = field.shape
            if isinstance(shape, data.StructLayout | data.UnionLayout):
                out[name] = walk(shape, off + field.offset)
                continue
            s = Shape.cast(shape)
            lo = -(1 << (s.width - 1)) if s.signed else 0
            hi = (1 << (s.width - 1)) - 1 if s.signed else (1 << s.width) - 1
            if isinstance(shape, range):
                lo, hi = shape.start, shape.stop - 1
            is_enum = isinstance(shape, type) and issubclass(shape, enum.Enum)
            out[name] = _Field(off + field.offset, s.width, lo, hi, shape if is_enum else None)
        return out

    return walk(layout, base)


def encode(config: TesseraConfig, cmd: Command) -> int:
    """The command word of ``cmd`` (arguments not given are 0).

    Raises
    ------
    ValueError
        On a token to a queue that does not exist, arguments that do not match the opcode,
        or a value that does not fit its field.
    """
    # The packer takes the commands whose every value is an int in its field's range, an
    # enum or a dict of them (a program's usual commands: 2.5 times faster); anything else,
    # and every error, goes the checked way, which gives the same word or says what is wrong.
    tables = _last_tables
    if tables[0] is not config:
        tables = _tables(config)
    header, fields = tables[1][cmd.opcode.value]
    tokens = (cmd.wait_prev, cmd.wait_next, cmd.signal_prev, cmd.signal_next)
    queue = cmd.args.get("queue") if cmd.opcode is Opcode.NOP else None
    token_bits = 0
    if queue is not None or any(tokens):
        # A NOP's queue decides which tokens it may take (and must not be DISPATCH).
        token_bits = _token_bits(config, cmd.opcode, queue, *tokens) \
            if type(queue) in (Queue, int, type(None)) else None
    if token_bits is not None and not (cmd.opcode is Opcode.NOP and queue is None):
        word = _pack(fields, cmd.args) if fields is not None else (None if cmd.args else 0)
        if word is not None:
            return header | token_bits | word
    return _encode_checked(config, cmd)


def _tables(config: TesseraConfig) -> tuple:
    """``(config, its _packer, its _unpacker)``, kept for the next call: a cache lookup
    hashes the whole configuration, a third of an encode's time."""
    global _last_tables
    _last_tables = (config, _packer(config), _unpacker(config))
    return _last_tables


_last_tables = (None, None, None)


@functools.cache
def _packer(config: TesseraConfig) -> tuple:
    """Per opcode value: its header word and its fields as :func:`_pack` reads them (from
    :func:`_tree`: name -> ``(offset, lo, hi, mask)`` or the nested fields)."""
    def flat(tree):
        return {name: flat(f) if isinstance(f, dict) else
                (f.offset, f.lo, f.hi, (1 << f.width) - 1) for name, f in tree.items()}

    hbase = command_layout_for(config)["header"].offset
    at = hbase + header_layout()["opcode"].offset
    return tuple((op.value << at, None if _tree(config, op) is None else
                  flat(_tree(config, op))) for op in Opcode)


@functools.cache
def _token_bits(config: TesseraConfig, opcode: Opcode, queue, *tokens) -> int | None:
    """The header bits of the tokens, None if :func:`check_tokens` refuses them."""
    try:
        check_tokens(Command(opcode, {} if queue is None else {"queue": queue},
                             *map(bool, tokens)))
    except ValueError:
        return None
    hbase = command_layout_for(config)["header"].offset
    h = header_layout()
    return sum(1 << (hbase + h[t].offset) for t, on in zip(_TOKENS, tokens, strict=True)
               if on)


def _pack(fields: dict, args: dict) -> int | None:
    """The argument bits of ``args``; None for anything :func:`_encode_args` would have to
    convert or refuse."""
    word = 0
    for name, value in args.items():
        field = fields.get(name)
        if field is None:
            return None
        if type(field) is dict:
            bits = _pack(field, value) if type(value) is dict else None
            if bits is None:
                return None
            word |= bits
            continue
        if type(value) is not int:
            if not isinstance(value, enum.Enum) or type(value.value) is not int:
                return None
            value = value.value
        offset, lo, hi, mask = field
        if not lo <= value <= hi:
            return None
        word |= (value & mask) << offset
    return word


def _encode_checked(config: TesseraConfig, cmd: Command) -> int:
    """:func:`encode`, checking every token, argument and value."""
    check_tokens(cmd)
    tree = _tree(config, cmd.opcode)
    if tree is None and cmd.args:
        raise ValueError(f"{cmd.opcode.name} takes no arguments, not {sorted(cmd.args)}")
    h = header_layout()
    hbase = command_layout_for(config)["header"].offset
    word = cmd.opcode.value << (hbase + h["opcode"].offset)
    for t in _TOKENS:
        word |= int(bool(getattr(cmd, t))) << (hbase + h[t].offset)
    if tree is not None:
        word |= _encode_args(tree, cmd.args, cmd.opcode.name, top=True)
    return word


def _encode_args(tree: dict, args: dict, where: str, top: bool = False) -> int:
    unknown = set(args) - set(tree)
    if unknown:
        what = "argument(s)" if top else "field(s)"
        raise ValueError(f"{where} has no {what} {', '.join(sorted(unknown))}; "
                         f"its {'arguments' if top else 'fields'}: {', '.join(tree)}")
    word = 0
    for name, value in args.items():
        field = tree[name]
        if isinstance(field, dict):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {name} must be a dict of its fields")
            word |= _encode_args(field, value, f"{where}.{name}")
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        value = int(value)
        if not field.lo <= value <= field.hi:
            raise ValueError(f"{where}: {name} must be between {field.lo} and {field.hi}, "
                             f"not {value}")
        word |= (value & ((1 << field.width) - 1)) << field.offset
    return word


def decode(config: TesseraConfig, word: int) -> Command:
    """The command in a word.

    Raises
    ------
    ValueError
        On an opcode that does not exist.
    """
    bits = command_bits(config)
    try:
        if isinstance(word, bool):
            raise TypeError
        word = operator.index(word)
    except TypeError:
        raise ValueError(f"a command word is an integer of {bits} bits, not "
                         f"{type(word).__name__}") from None
    if not 0 <= word < 1 << bits:
        what = "negative" if word < 0 else f"{word.bit_length()} bits"
        raise ValueError(f"a command word is a non-negative integer of {bits} bits, not "
                         f"{what}")
    tables = _last_tables
    if tables[0] is not config:
        tables = _tables(config)
    opcode_at, opcode_mask, token_at, opcodes = tables[2]
    raw = (word >> opcode_at) & opcode_mask
    if raw not in opcodes:
        raise ValueError(f"illegal opcode {raw} in command word {word:#x}")
    opcode, fields = opcodes[raw]
    args = {}
    if fields is not None:
        args = _unpack(fields, word)
        if opcode is Opcode.STORE:
            _select_constants(args["desc"])
    wait_prev, wait_next, signal_prev, signal_next = token_at
    return Command(opcode, args, bool(word >> wait_prev & 1), bool(word >> wait_next & 1),
                   bool(word >> signal_prev & 1), bool(word >> signal_next & 1))


@functools.cache
def _unpacker(config: TesseraConfig) -> tuple:
    """What :func:`decode` reads, from :func:`_tree`: the opcode's offset and mask, the
    tokens' offsets (in :data:`_TOKENS` order), and per opcode value its opcode and fields
    (name -> ``(offset, mask, sign bit or 0, enum members by value or None)`` or the
    nested fields)."""
    def flat(tree):
        return {name: flat(f) if isinstance(f, dict) else
                (f.offset, (1 << f.width) - 1, 1 << (f.width - 1) if f.lo < 0 else 0,
                 None if f.enum is None else {m.value: m for m in f.enum})
                for name, f in tree.items()}

    h = header_layout()
    hbase = command_layout_for(config)["header"].offset
    opcodes = {op.value: (op, None if _tree(config, op) is None else flat(_tree(config, op)))
               for op in Opcode}
    return (hbase + h["opcode"].offset, (1 << h["opcode"].width) - 1,
            tuple(hbase + h[t].offset for t in _TOKENS), opcodes)


def _unpack(fields: dict, word: int) -> dict:
    out = {}
    for name, field in fields.items():
        if type(field) is dict:
            out[name] = _unpack(field, word)
            continue
        offset, mask, sign, members = field
        value = (word >> offset) & mask
        if value & sign:
            value -= mask + 1
        if members is not None:
            # A value no member has stays a number (the machine reports it, not decode).
            value = members.get(value, value)
        out[name] = value
    return out


def _select_constants(desc: dict) -> None:
    """Keep the alternative of the descriptor's constants union that its operation reads."""
    consts = desc.pop("consts")
    if desc["op"] == OutputOp.SOFTMAX:
        desc["consts"] = {"exp": consts["exp"]}
        return
    out = consts["out"]
    kept = {"gelu": out["gelu"]} if desc["op"] == OutputOp.GELU else {}
    if out["digit"] != OutputDigit.INT8:
        kept["digit"] = out["digit"]
    if kept:
        desc["consts"] = {"out": kept}


@functools.cache
def used_bits(config: TesseraConfig, opcode: Opcode) -> int:
    """The mask of the bits a command word of ``opcode`` is read by: its header and its own
    arguments. The others (the arguments union's bits past them, the padding to a whole
    word) are reserved: the hardware and the golden model ignore them."""
    hbase = command_layout_for(config)["header"].offset
    mask = ((1 << header_layout().size) - 1) << hbase

    def walk(tree):
        nonlocal mask
        for field in tree.values():
            if isinstance(field, dict):
                walk(field)
            else:
                mask |= ((1 << field.width) - 1) << field.offset

    tree = _tree(config, opcode)
    if tree is not None:
        walk(tree)
    return mask


def disassemble(config: TesseraConfig, words) -> list[str]:
    """One line of text per command word (reserved bits that are set are named: the
    machine ignores them)."""
    lines = []
    for i, word in enumerate(words):
        try:
            cmd = decode(config, word)
        except ValueError as e:
            lines.append(f"{i:5d}  <{e}>")
            continue
        tokens = " ".join(t for t in _TOKENS if getattr(cmd, t))
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in cmd.args.items())
        reserved = word & ~used_bits(config, cmd.opcode)
        lines.append(f"{i:5d}  {cmd.queue.name:8} {cmd.opcode.name:8} {args}"
                     + (f"  [{tokens}]" if tokens else "")
                     + (f"  <reserved bits {reserved:#x} set: ignored>" if reserved else ""))
    return lines


def _fmt(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, enum.Enum):
        return value.name
    return hex(value) if value > 4096 else str(value)


def isa_markdown(config: TesseraConfig) -> str:
    """``docs/isa.md``: the command format, generated from the layouts."""
    out = ["# Command set", "",
           "Generated from `hw/isa.py` by `tessera isa` for the default configuration; do not "
           "edit.", "", f"A command is one {command_bits(config)}-bit word, little-endian "
           "(bit 0 is the least significant bit of the first byte).", "",
           "## Header", "", "| bits | field | meaning |", "|---|---|---|"]
    meanings = {"opcode": "the operation", "wait_prev": "wait for a token from the previous queue",
                "wait_next": "wait for a token from the next queue",
                "signal_prev": "after finishing, signal the previous queue",
                "signal_next": "after finishing, signal the next queue"}
    h = header_layout()
    for name, field in h:
        out.append(f"| {field.offset}..{field.offset + field.width - 1} | `{name}` | "
                   f"{meanings[name]} |")
    args_at = command_layout_for(config)["args"].offset
    out += ["", "## Opcodes", "", "| code | opcode | queue |", "|---|---|---|"]
    for op in Opcode:
        queue = QUEUE_OF[op].name if QUEUE_OF[op] else "its `queue` argument"
        out.append(f"| {op.value} | `{op.name}` | {queue} |")
    out += ["", f"## Arguments (from bit {args_at})"]
    for op, layout in args_layouts(config).items():
        out += ["", f"### {op.name}", ""]
        if layout is None:
            out.append("No arguments.")
            continue
        out += ["| bits | field | width |", "|---|---|---|"]
        out += _field_rows(layout, args_at, "")
        if op == Opcode.COMPUTE:
            out += ["", COMPUTE_RUN_DOC.rstrip("\n")]
    return "\n".join(out) + "\n"


def _field_rows(layout, base: int, prefix: str) -> list[str]:
    rows = []
    for name, field in layout:
        start = base + field.offset
        if isinstance(field.shape, data.StructLayout | data.UnionLayout):
            rows += _field_rows(field.shape, start, f"{prefix}{name}.")
        else:
            rows.append(f"| {start}..{start + field.width - 1} | `{prefix}{name}` | "
                        f"{field.width} |")
    return rows
