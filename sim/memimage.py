"""Byte images of main memory to and from the hex files of ``$readmemh`` / ``$writememh``.

The Verilog memory model (``sim/hdl/tessera_axi_mem.v``) loads and dumps its contents
through these files, so that a testbench moves tens of megabytes without touching a word
from Python. A file holds one bus word per line, in hex with the most significant digit
first; byte 0 of a word is bits 7:0 (little-endian, as on the AXI bus). ``@<hex>``
directives give the word index of what follows; ``//`` and ``/* */`` are comments (Icarus
writes one every 16 words).

Everything here is numpy over whole arrays (or chunks of a few MiB), never a loop over
bytes or words.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

__all__ = ["LOAD_FILE", "DUMP_FILE", "encode", "decode", "write_hex", "read_hex",
           "backdoor_load", "backdoor_dump"]

LOAD_FILE = "tessera_mem_in.hex"    # read by the model on a rising edge of bd_load
DUMP_FILE = "tessera_mem_out.hex"   # written by the model on a rising edge of bd_dump

_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# The two ASCII hex digits of every byte value, as one little-endian uint16 each, so that
# indexing with a byte array gives the text directly.
_BYTE_HEX = (_DIGITS[np.arange(256) >> 4].astype(np.uint16)
             | (_DIGITS[np.arange(256) & 15].astype(np.uint16) << 8)).astype("<u2")

_XZ, _SPACE, _BAD = 16, 32, 255
_NIBBLE = np.full(256, _BAD, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
    _NIBBLE[bytes([_c]).upper()[0]] = _i
for _c in b"xXzZ?":
    _NIBBLE[_c] = _XZ
for _c in b" \t\r\n\f\v":
    _NIBBLE[_c] = _SPACE

_CHUNK_WORDS = 1 << 18              # words encoded per chunk by write_hex
_CHUNK_CHARS = 16 << 20             # characters decoded per chunk by decode
_ADDRESS = re.compile(rb"@([0-9a-fA-F]+)")
_LINE_COMMENT = re.compile(rb"//[^\n]*")
_BLOCK_COMMENT = re.compile(rb"/\*.*?\*/", re.DOTALL)


def _bus_bytes(bus_bits: int) -> int:
    if not isinstance(bus_bits, int) or bus_bits < 8 or bus_bits & (bus_bits - 1):
        raise ValueError(f"bus_bits must be a power of two of at least 8, not {bus_bits!r}")
    return bus_bits // 8


def _as_bytes(image) -> np.ndarray:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return np.frombuffer(image, dtype=np.uint8)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"the image must be a uint8 array (or bytes), not {image.dtype}")
    return image.reshape(-1)


def _encode_words(image: np.ndarray, lanes: int) -> bytes:
    """The text of ``image`` (a whole number of words), one word per line."""
    words = image.reshape(-1, lanes)
    text = np.empty((len(words), lanes + 1), dtype="<u2")    # 2 characters per element
    text[:, :lanes] = _BYTE_HEX[words[:, ::-1]]
    text[:, lanes] = ord("\n")    # the newline, and one character of padding ...
    out = text.view(np.uint8).reshape(len(words), 2 * lanes + 2)[:, :2 * lanes + 1]
    return out.tobytes()          # ... dropped here


def encode(image, bus_bits: int, word_offset: int = 0) -> bytes:
    """The hex text of ``image`` placed at word ``word_offset`` (``@`` directive first).

    Parameters
    ----------
    image : numpy.ndarray of uint8, or bytes
        Bytes from the start of word ``word_offset``; a partial last word is padded with
        zeros.
    bus_bits : int
        The bus width (the model's ``DATA_BITS``).
    word_offset : int
        Word index (from the model's ``BASE``) of the first byte of ``image``.
    """
    lanes = _bus_bytes(bus_bits)
    if word_offset < 0:
        raise ValueError(f"word_offset must not be negative, not {word_offset}")
    image = _as_bytes(image)
    pad = -len(image) % lanes
    if pad:
        image = np.concatenate([image, np.zeros(pad, dtype=np.uint8)])
    return f"@{word_offset:x}\n".encode() + _encode_words(image, lanes)


def write_hex(path, image, bus_bits: int, word_offset: int = 0) -> int:
    """Write :func:`encode`'s text to ``path`` in chunks (bounded memory); returns the
    number of words written."""
    lanes = _bus_bytes(bus_bits)
    if word_offset < 0:
        raise ValueError(f"word_offset must not be negative, not {word_offset}")
    image = _as_bytes(image)
    full = len(image) // lanes * lanes
    step = _CHUNK_WORDS * lanes
    tmp = Path(f"{path}.tmp")
    with open(tmp, "wb") as f:
        f.write(f"@{word_offset:x}\n".encode())
        for at in range(0, full, step):
            f.write(_encode_words(image[at:min(at + step, full)], lanes))
        if full < len(image):
            tail = np.zeros(lanes, dtype=np.uint8)
            tail[:len(image) - full] = image[full:]
            f.write(_encode_words(tail, lanes))
    tmp.replace(path)    # the simulator never sees a half-written file
    return -(-len(image) // lanes)


def _decode_words(text, lanes: int) -> np.ndarray:
    """The words of ``text`` (hex numbers separated by white space) as an (n, lanes)
    array of bytes, least significant first."""
    chars = np.frombuffer(text, dtype=np.uint8)
    nib = _NIBBLE[chars]
    if (nib == _BAD).any():
        at = int(np.flatnonzero(nib == _BAD)[0])
        raise ValueError(f"not a hex digit: {bytes(text[at:at + 1])!r} in "
                         f"{bytes(text[max(0, at - 20):at + 20])!r}")
    digit = nib < _SPACE
    if not digit.any():
        return np.zeros((0, lanes), dtype=np.uint8)
    edge = np.diff(digit.view(np.int8), prepend=0, append=0)
    starts, ends = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    lengths = ends - starts
    width = 2 * lanes
    if (lengths > width).any():
        at = int(starts[np.argmax(lengths > width)])
        raise ValueError(f"a word of more than {width} hex digits: "
                         f"{bytes(text[at:at + width + 8])!r}...")
    digits = nib[digit]
    if (digits == _XZ).any():
        raise ValueError("the file holds unknown (x or z) digits: the memory was written "
                         "with undefined data")
    if (lengths == width).all():
        padded = digits.reshape(-1, width)
    else:
        # Shorter numbers stand for their value: right-align them.
        padded = np.zeros((len(lengths), width), dtype=np.uint8)
        token = np.repeat(np.arange(len(lengths)), lengths)
        first = np.repeat(np.cumsum(lengths) - lengths, lengths)
        column = np.arange(len(digits)) - first + (width - lengths)[token]
        padded[token, column] = digits
    big_endian = (padded[:, 0::2] << 4) | padded[:, 1::2]
    return big_endian[:, ::-1]


def _chunks(text: bytes, begin: int, end: int):
    """Views of ``text[begin:end]`` of about ``_CHUNK_CHARS``, cut at line ends (no copy)."""
    view = memoryview(text)
    while begin < end:
        cut = text.find(b"\n", min(begin + _CHUNK_CHARS, end), end)
        cut = end if cut < 0 else cut + 1
        yield view[begin:cut]
        begin = cut


def decode(text: bytes, bus_bits: int, first_word: int = 0,
           words: int | None = None) -> np.ndarray:
    """The bytes of words ``first_word`` .. ``first_word + words - 1`` described by
    ``text`` (hex file contents), as a uint8 array.

    Numbers before any ``@`` directive start at ``first_word`` (as in a dump made with
    ``$writememh(file, mem, first_word, last)``). Words the text does not mention are zero.
    With ``words=None`` the result ends at the last word the text mentions.

    Raises
    ------
    ValueError
        When the text holds something other than hex numbers, comments and directives, a
        number wider than the bus, or unknown (x/z) digits.
    """
    lanes = _bus_bytes(bus_bits)
    if b"/*" in text:
        text = _BLOCK_COMMENT.sub(b" ", text)
    if b"//" in text:
        text = _LINE_COMMENT.sub(b"", text)
    if b"_" in text:
        text = text.replace(b"_", b"")
    # (first word, begin, end) of the text before each @ directive and after the last.
    segments, start, begin = [], first_word, 0
    for m in _ADDRESS.finditer(text) if b"@" in text else ():
        segments.append((start, begin, m.start()))
        start, begin = int(m.group(1), 16), m.end()
    segments.append((start, begin, len(text)))
    pieces = []
    for start, begin, end in segments:
        for chunk in _chunks(text, begin, end):
            block = _decode_words(chunk, lanes)
            if len(block):
                pieces.append((start, block))
                start += len(block)
    if words is None:
        words = max((s + len(b) for s, b in pieces), default=first_word) - first_word
    out = np.zeros((max(words, 0), lanes), dtype=np.uint8)
    for start, block in pieces:
        lo, hi = max(start, first_word), min(start + len(block), first_word + words)
        if lo < hi:
            out[lo - first_word:hi - first_word] = block[lo - start:hi - start]
    return out.reshape(-1)


def read_hex(path, bus_bits: int, first_word: int = 0, words: int | None = None) -> np.ndarray:
    """:func:`decode` of the file at ``path``."""
    return decode(Path(path).read_bytes(), bus_bits, first_word, words)


async def backdoor_load(clk, bd_load, image, bus_bits: int, word_offset: int = 0) -> int:
    """Load ``image`` at word ``word_offset`` of the model through its back door (cocotb):
    write :data:`LOAD_FILE` in the simulator's working directory and pulse ``bd_load``
    for one cycle of ``clk``. Returns the number of words loaded; the memory holds them
    after the rising edge that this coroutine waits for."""
    from cocotb.triggers import FallingEdge, RisingEdge

    n = write_hex(os.path.join(os.getcwd(), LOAD_FILE), image, bus_bits, word_offset)
    bd_load.value = 1
    await RisingEdge(clk)
    await FallingEdge(clk)
    bd_load.value = 0
    await RisingEdge(clk)    # bd_load is seen low again, ready for the next load
    return n


async def backdoor_dump(clk, bd_dump, bd_first, bd_last, first_word: int, words: int,
                        bus_bits: int) -> np.ndarray:
    """The bytes of ``words`` words from word ``first_word`` of the model, through its back
    door (cocotb): pulse ``bd_dump`` with the range on ``bd_first`` / ``bd_last``, then
    read :data:`DUMP_FILE`."""
    from cocotb.triggers import FallingEdge, RisingEdge

    if words < 1:
        raise ValueError(f"words must be at least 1, not {words}")
    bd_first.value = first_word
    bd_last.value = first_word + words - 1
    bd_dump.value = 1
    await RisingEdge(clk)
    await FallingEdge(clk)
    bd_dump.value = 0
    await RisingEdge(clk)
    return read_hex(os.path.join(os.getcwd(), DUMP_FILE), bus_bits, first_word, words)
