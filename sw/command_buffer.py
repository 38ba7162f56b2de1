"""Command buffers as files: a 32-byte header that says which configuration the words are
for, then the words.

A command word's fields depend on the configuration (the widths of addresses, counts and
scratchpad rows), so words read with another configuration than the one that encoded them
decode to wrong fields without any sign of it. The header carries the configuration's
hash; :func:`open_command_buffer` refuses a mismatch and says which configuration the file
is for.

Header (all little-endian):

======  =====  ===============================================================
offset  bytes  field
======  =====  ===============================================================
0       8      magic ``TESSERA\\x1a``
8       2      format version (:data:`FORMAT_VERSION`, 1)
10      2      header size in bytes (32)
12      4      bytes per command word (``command_bits(config) // 8``)
16      8      the configuration's hash (its 16 hex digits as one integer)
24      8      number of command words that follow
======  =====  ===============================================================

The words follow, each ``bytes per command word`` little-endian bytes, as the accelerator
fetches them from main memory. A file without the header (a raw dump of the words) is read
only when the caller names the configuration; it is then taken on trust.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..hw.config import PRESETS, TesseraConfig
from ..hw.isa import Command, command_bits, encode
from .check import InputError, input_file, output_file

__all__ = ["MAGIC", "FORMAT_VERSION", "HEADER_BYTES", "CommandBufferError", "CommandBufferFile",
           "write_command_buffer", "open_command_buffer", "preset_of_hash"]

MAGIC = b"TESSERA\x1a"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sHHIQQ")
HEADER_BYTES = _HEADER.size
#: Words read from the file at a time (a buffer is streamed, never read whole).
_CHUNK_WORDS = 4096


class CommandBufferError(InputError):
    """A command-buffer file that cannot be read as asked: not one, damaged, or for
    another configuration."""


def preset_of_hash(config_hash: str) -> str | None:
    """The name of the preset whose hash is ``config_hash``, or None."""
    return next((name for name, c in PRESETS.items() if c.hash == config_hash), None)


def _check_config(config) -> None:
    if not isinstance(config, TesseraConfig):
        raise InputError(f"config must be a TesseraConfig (preset(NAME) or "
                         f"TesseraConfig.from_file(PATH)), not {type(config).__name__}")


def _name(config: TesseraConfig) -> str:
    name = preset_of_hash(config.hash)
    return f"{config.hash} (preset {name})" if name else config.hash


def write_command_buffer(path, config: TesseraConfig, program) -> Path:
    """Write ``program`` (``Command`` objects or command words) to ``path`` with the
    header.

    Raises
    ------
    InputError
        If ``path`` cannot be written.
    ValueError
        If a command does not encode, or a word is wider than a command word.
    """
    _check_config(config)
    p = output_file(path, "command buffer")
    size = command_bits(config) // 8
    words = [encode(config, c) if isinstance(c, Command) else int(c) for c in program]
    for i, w in enumerate(words):
        if not 0 <= w < 1 << (8 * size):
            raise ValueError(f"word {i} ({w:#x}) is not a {8 * size}-bit command word")
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, HEADER_BYTES, size, int(config.hash, 16),
                          len(words))
    try:
        with open(p, "wb") as f:
            f.write(header)
            for w in words:
                f.write(w.to_bytes(size, "little"))
    except OSError as e:
        raise InputError(f"cannot write command buffer {str(p)!r}: {e.strerror or e}") from None
    return p


@dataclass(frozen=True)
class CommandBufferFile:
    """An opened command buffer: its configuration and where its words are.

    Members
    -------
    path : Path
    config : TesseraConfig
        The configuration the words are read with.
    count : int
        Number of command words.
    has_header : bool
        False for a raw dump read with a configuration the caller named.
    """

    path: Path
    config: TesseraConfig
    count: int
    has_header: bool
    offset: int

    def words(self) -> Iterator[int]:
        """The command words, read a chunk at a time."""
        size = command_bits(self.config) // 8
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            left = self.count
            while left:
                n = min(left, _CHUNK_WORDS)
                raw = f.read(n * size)
                if len(raw) != n * size:
                    raise CommandBufferError(f"{self.path} ended early (changed while read?)")
                for i in range(n):
                    yield int.from_bytes(raw[i * size:(i + 1) * size], "little")
                left -= n


def open_command_buffer(path, config: TesseraConfig | None = None) -> CommandBufferFile:
    """Open a command-buffer file and check it against ``config``.

    With a header, the configuration is ``config`` if given (its hash must be the
    header's), else the preset with the header's hash. Without one (a raw dump of words),
    ``config`` must be given.

    Raises
    ------
    CommandBufferError
        If the file does not exist or cannot be read; its header is damaged, of an unknown
        format version, or for another configuration than ``config``; it is for a
        configuration that is not a preset and none was given; it has no header and no
        configuration was given; or its size is not a whole number of command words.
    """
    if config is not None:
        _check_config(config)
    p = Path(path)
    try:
        input_file(p, "command buffer")
    except InputError as e:
        raise CommandBufferError(str(e)) from None
    size_on_disk = p.stat().st_size
    try:
        with open(p, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as e:
        raise CommandBufferError(f"cannot read command buffer {str(p)!r}: "
                                 f"{e.strerror or e}") from None
    if not head.startswith(MAGIC):
        if config is None:
            raise CommandBufferError(
                f"{p} has no Tessera command-buffer header (it does not start with "
                f"{MAGIC!r}), so it does not say which configuration its words are for; if it "
                f"is a raw dump of command words, name the configuration that wrote it "
                f"(--preset NAME or --config FILE)")
        return _checked(p, config, size_on_disk, 0, None, has_header=False)
    if len(head) < HEADER_BYTES:
        raise CommandBufferError(f"{p} is {len(head)} bytes long: its header is cut short "
                                 f"(a header is {HEADER_BYTES} bytes)")
    _, version, header_bytes, word_bytes, chash, count = _HEADER.unpack(head)
    if version != FORMAT_VERSION:
        raise CommandBufferError(f"{p} is a command buffer of format version {version}; this "
                                 f"Tessera reads version {FORMAT_VERSION}")
    if header_bytes != HEADER_BYTES:
        raise CommandBufferError(f"{p}: the header says it is {header_bytes} bytes long, not "
                                 f"{HEADER_BYTES}: a damaged file")
    file_hash = f"{chash:016x}"
    if config is None:
        name = preset_of_hash(file_hash)
        if name is None:
            raise CommandBufferError(
                f"{p} is for configuration {file_hash}, which is not a preset "
                f"({', '.join(PRESETS)}): give its configuration (--config FILE, the "
                f"config.json written beside its Verilog)")
        config = PRESETS[name]
    elif config.hash != file_hash:
        name = preset_of_hash(file_hash)
        raise CommandBufferError(
            f"{p} was written for configuration {file_hash}"
            f"{f' (preset {name})' if name else ''}, not {_name(config)}: its words would "
            f"decode to wrong fields; use the configuration that wrote it"
            f"{f' (--preset {name})' if name else ''}, or leave out --preset and --config "
            f"if it is a preset")
    return _checked(p, config, size_on_disk, HEADER_BYTES, (word_bytes, count),
                    has_header=True)


def _checked(p: Path, config: TesseraConfig, size_on_disk: int, offset: int, header,
             has_header: bool) -> CommandBufferFile:
    size = command_bits(config) // 8
    body = size_on_disk - offset
    if header is not None:
        word_bytes, count = header
        if word_bytes != size:
            raise CommandBufferError(f"{p}: the header says {word_bytes}-byte command words; "
                                     f"configuration {config.hash} has {size}-byte words: "
                                     f"a damaged file")
        if count * size != body:
            raise CommandBufferError(f"{p}: the header says {count} command words "
                                     f"({count * size} bytes) but {body} bytes follow it: a "
                                     f"truncated or damaged file")
    elif body % size:
        raise CommandBufferError(f"{p} holds {body} bytes, not a whole number of {size}-byte "
                                 f"commands (configuration {_name(config)})")
    return CommandBufferFile(p, config, body // size, has_header, offset)
