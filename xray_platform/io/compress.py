"""Compressed detector files: gzip and bzip2, recognised by their magic bytes (not the name).

One place decompresses for every reader (CBF, HDF5, SMV, npy): :func:`read_all` for a whole
file, :func:`stream` for its start, :func:`head` for the cached first bytes readers sniff.
"""

from __future__ import annotations

import bz2
import os
import zlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from xray_platform.physics.limits import MAX_FILE_BYTES

GZIP = b"\x1f\x8b"
BZIP2 = b"BZh"
SNIFF = 4096  # decompressed bytes a reader looks at to recognise a file
SNIFF_MAX = 1 << 17  # the most any reader looks at (a .npy header)
CHUNK = 1 << 16


class CompressionError(ValueError):
    """Truncated or corrupt compressed data (the message says what, callers add the file)."""


class TooLarge(ValueError):
    """A file bigger than any detector frame xrp reads (physics/limits.py)."""


def decompressor(magic: bytes) -> Any:
    """A streaming decompressor for data starting with ``magic`` (None: not compressed)."""
    if magic[:2] == GZIP:
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if magic[:3] == BZIP2:
        return bz2.BZ2Decompressor()
    return None


def is_compressed(path: Path) -> bool:
    with open(path, "rb") as fh:
        return decompressor(fh.read(3)) is not None


def stream(path: Path, chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield the file's (decompressed) bytes in pieces; corrupt compressed data raises
    CompressionError. A truncated compressed file yields what it holds and then stops."""
    with open(path, "rb") as fh:
        first = fh.read(chunk)
        dec = decompressor(first)
        if dec is None:
            while first:
                yield first
                first = fh.read(chunk)
            return
        data = first
        while data:
            try:
                out = dec.decompress(data)
            except (OSError, EOFError, ValueError, zlib.error) as exc:
                raise CompressionError(f"corrupt compressed file ({exc})") from exc
            if out:
                yield out
            if dec.eof:
                return  # (trailing members/garbage are ignored here; read_all reads them)
            data = fh.read(chunk)


@lru_cache(maxsize=64)
def _head_cached(path: str, mtime_ns: int, size: int) -> bytes:
    buf = bytearray()
    try:
        for piece in stream(Path(path)):
            buf += piece
            if len(buf) >= SNIFF_MAX:
                break
    except CompressionError:
        pass  # a corrupt stream: sniff what we have
    return bytes(buf[:SNIFF_MAX])


def head(path: Path, n: int = SNIFF) -> bytes:
    """The first n (<= 128 KiB) decompressed bytes of a file, cached per path, mtime and size
    so that sniffing decompresses a file's start once."""
    if n > SNIFF_MAX:
        raise ValueError(f"head reads at most {SNIFF_MAX} bytes")
    try:
        st = path.stat()
    except OSError:
        return b""
    return _head_cached(str(path), st.st_mtime_ns, st.st_size)[:n]


def read_all(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The whole (decompressed) file, at most ``limit`` bytes: a file that decompresses to more
    raises TooLarge as soon as it passes the limit (a decompression bomb costs milliseconds and
    no memory beyond the limit); truncated or corrupt data raises CompressionError.
    Concatenated gzip members and bzip2 streams are all read."""
    with open(path, "rb") as fh:
        first = fh.read(CHUNK)
        if decompressor(first) is None:
            size = os.fstat(fh.fileno()).st_size
            if size > limit:
                raise TooLarge(f"file of {size / 2**20:.0f} MiB is above the limit of "
                               f"{limit / 2**20:.0f} MiB (the largest detector frame xrp reads)")
            return first + fh.read()
        return _decompress_bounded(fh, first, limit)


def _decompress_bounded(fh, data: bytes, limit: int) -> bytes:
    out = bytearray()
    dec = decompressor(data)
    while True:
        try:
            # max_length bounds each step's output, so the limit holds within one chunk
            out += dec.decompress(data, limit + 1 - len(out))
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            raise CompressionError(f"truncated or corrupt compressed file ({exc})") from exc
        if len(out) > limit:
            raise TooLarge(f"file decompresses to more than {limit / 2**20:.0f} MiB, the limit "
                           "(the largest detector frame xrp reads, with its headers)")
        if dec.eof:  # another gzip member / bzip2 stream may follow, or trailing garbage
            data = dec.unused_data or fh.read(CHUNK)
            dec = decompressor(data) if data else None
            if dec is None:
                return bytes(out)
            continue
        if isinstance(dec, bz2.BZ2Decompressor):
            data = b"" if not dec.needs_input else fh.read(CHUNK)  # b"": drain its buffer
            ended = dec.needs_input and not data
        else:
            data = dec.unconsumed_tail or fh.read(CHUNK)
            ended = not data
        if ended:
            raise CompressionError("truncated or corrupt compressed file (the compressed "
                                   "stream ends early)")
