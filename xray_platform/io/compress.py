"""Compressed detector files: gzip and bzip2, recognised by their magic bytes (not the name).

One place decompresses for every reader (CBF, HDF5, SMV, npy): :func:`read_all` for a whole
file, :func:`stream` for its start, :func:`head` for the cached first bytes readers sniff.
"""

from __future__ import annotations

import bz2
import zlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

GZIP = b"\x1f\x8b"
BZIP2 = b"BZh"
SNIFF = 4096  # decompressed bytes a reader looks at to recognise a file
SNIFF_MAX = 1 << 17  # the most any reader looks at (a .npy header)
CHUNK = 1 << 16


class CompressionError(ValueError):
    """Truncated or corrupt compressed data (the message says what, callers add the file)."""


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


def read_all(path: Path) -> bytes:
    """The whole (decompressed) file; truncated or corrupt compressed data raises
    CompressionError. Concatenated gzip members are all read."""
    data = path.read_bytes()
    dec = decompressor(data)
    if dec is None:
        return data
    try:
        if data[:2] == GZIP:
            import gzip

            return gzip.decompress(data)
        return bz2.decompress(data)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise CompressionError(f"truncated or corrupt compressed file ({exc})") from exc
