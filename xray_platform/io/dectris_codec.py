"""Pixel encodings of the DECTRIS stream interface (SIMPLON API, stream v1 ``dimage_d-1.0``
``encoding`` and stream v2 compression tags).

- ``"<"`` / ``">"``: raw little/big-endian pixels.
- ``"lz4<"``: one LZ4 *block* of the whole frame, no size prefix (lz4.block).
- ``"bs8-lz4<"``, ``"bs16-lz4<"``, ``"bs32-lz4<"`` (v2: ``"bslz4"``): bitshuffle + LZ4 exactly
  as the HDF5 bitshuffle filter stores a chunk: a 12-byte header (uint64 big-endian byte count,
  uint32 big-endian block size in bytes), then per block a uint32 big-endian compressed size and
  an LZ4 block. We decode it with the bitshuffle filter's own C code (hdf5plugin) by handing the
  blob to HDF5 as a raw chunk of an in-memory file: the reference implementation, compiled.
- ``"lz4-hdf5"`` (v2: ``"lz4"``): LZ4 in the HDF5 LZ4 filter's framing (DECTRIS compression tag
  document; HDFGroup's LZ4_HDF5_format.md): uint64 big-endian byte count, uint32 big-endian
  block size, then per block a uint32 big-endian compressed size and an LZ4 block, or the block
  as it is when that size equals the block's. Decoded here block by block with lz4's bounds-
  checked decompressor (the filter's C code uses LZ4_decompress_fast, which trusts its input);
  written with the filter itself (hdf5plugin), so tests check one against the other.

No Ray; errors are :class:`EncodingError` naming what is wrong.
"""

from __future__ import annotations

import re
import struct

import h5py
import numpy as np

from xray_platform.io.optional import bitshuffle_lz4, hdf5plugin

_BSLZ4 = re.compile(r"^bs(8|16|32)-lz4([<>])$")
LZ4_HDF5 = "lz4-hdf5"  # stream v2's "lz4": LZ4 blocks in the HDF5 LZ4 filter's framing
DTYPES = {"uint8", "uint16", "uint32", "int8", "int16", "int32", "float32"}


class EncodingError(ValueError):
    """Pixel data that cannot be decoded as its message header says."""


def dtype_of(type_name: str, encoding: str) -> np.dtype:
    """The numpy dtype of a ``dimage_d-1.0`` part's ``type`` with the encoding's byte order."""
    if type_name not in DTYPES:
        raise EncodingError(f"pixel type {type_name!r} is not one of {sorted(DTYPES)}")
    order = ">" if encoding.endswith(">") else "<"
    return np.dtype(type_name).newbyteorder(order)


def decode(blob: bytes, encoding: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The frame ``shape`` (slow, fast) of ``dtype`` from its encoded bytes."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    nbytes = n * dtype.itemsize
    if encoding in ("<", ">", "raw", "none"):
        raw = bytes(blob)
    elif encoding in ("lz4<", "lz4>"):
        raw = _lz4(blob, nbytes)
    elif encoding == LZ4_HDF5:
        raw = _lz4_hdf5(blob, nbytes)
    elif _BSLZ4.match(encoding) or encoding == "bslz4":
        return _bslz4(blob, dtype, shape)
    else:
        raise EncodingError(f"encoding {encoding!r} is not one xrp decodes (raw '<', 'lz4<', "
                            f"'bs8/16/32-lz4<', v2 'bslz4' and {LZ4_HDF5!r})")
    if len(raw) != nbytes:
        raise EncodingError(f"{encoding!r} data holds {len(raw)} bytes, the header says "
                            f"{shape} of {dtype} ({nbytes} bytes)")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _lz4(blob: bytes, nbytes: int) -> bytes:
    import lz4.block

    try:
        return lz4.block.decompress(bytes(blob), uncompressed_size=nbytes)
    except lz4.block.LZ4BlockError as e:
        raise EncodingError(f"corrupt lz4 data ({e})") from None


def _lz4_hdf5(blob: bytes, nbytes: int) -> bytes:
    """The bytes of an HDF5-LZ4-framed blob, every size checked before it is used."""
    import lz4.block

    blob = memoryview(bytes(blob))
    if len(blob) < 12:
        raise EncodingError(f"lz4 (HDF5 framing) data of {len(blob)} bytes has no 12-byte "
                            "header")
    total, block = struct.unpack(">QI", blob[:12])
    if total != nbytes:
        raise EncodingError(f"lz4 (HDF5 framing) header says {total} bytes, the frame header "
                            f"{nbytes} bytes")
    if block <= 0 and total:
        raise EncodingError(f"lz4 (HDF5 framing) block size {block} makes no sense")
    out, pos, done = bytearray(), 12, 0
    while done < total:
        want = min(block, total - done)
        if pos + 4 > len(blob):
            raise EncodingError(f"lz4 (HDF5 framing) data truncated at byte {len(blob)} (of a "
                                f"frame of {total} bytes)")
        (c,) = struct.unpack_from(">I", blob, pos)
        pos += 4
        if pos + c > len(blob):
            raise EncodingError(f"lz4 (HDF5 framing) data truncated: a block of {c} bytes "
                                f"ends at byte {pos + c}, the message holds {len(blob)}")
        if c == want:  # stored as it is (did not compress)
            out += blob[pos:pos + c]
        else:
            try:
                out += lz4.block.decompress(blob[pos:pos + c], uncompressed_size=want)
            except lz4.block.LZ4BlockError as e:
                raise EncodingError(f"corrupt lz4 (HDF5 framing) data ({e})") from None
        pos += c
        done += want
    if pos != len(blob):
        raise EncodingError(f"lz4 (HDF5 framing) data holds {len(blob) - pos} bytes after "
                            "its blocks")
    return bytes(out)


def _bslz4(blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if len(blob) < 12:
        raise EncodingError(f"bitshuffle-lz4 data of {len(blob)} bytes has no 12-byte header")
    total, block = struct.unpack(">QI", bytes(blob[:12]))
    if total != nbytes:
        raise EncodingError(f"bitshuffle-lz4 header says {total} bytes, the frame header "
                            f"{shape} of {dtype} ({nbytes} bytes)")
    _check_blocks(blob, dtype.itemsize, total, block)
    with h5py.File(_memory_name(), "w", driver="core", backing_store=False) as f:
        ds = f.create_dataset("d", shape=shape, dtype=dtype, chunks=shape,
                              **bitshuffle_lz4())
        ds.id.write_direct_chunk((0,) * len(shape), bytes(blob))
        try:
            return ds[()]
        except (OSError, RuntimeError) as e:  # the filter refused the blob
            raise EncodingError(f"corrupt bitshuffle-lz4 data ({e})") from None


def _check_blocks(blob: bytes, elem: int, total: int, block: int) -> None:
    """Walk the block headers: the filter's C code trusts them and reads past a short buffer
    (a truncated message would crash the process), so every size must fit exactly."""
    bs = block // elem
    if block % elem or bs <= 0 or bs % 8 or block > 1 << 24:
        raise EncodingError(f"bitshuffle-lz4 block size {block} bytes makes no sense for "
                            f"{elem}-byte pixels")
    n = total // elem
    n_blocks = n // bs + (1 if (n % bs) // 8 else 0)  # the last block: a multiple of 8 pixels
    pos, size = 12, len(blob)
    for _ in range(n_blocks):
        if pos + 4 > size:
            raise EncodingError(f"bitshuffle-lz4 data truncated at byte {size} (of a frame "
                                f"of {total} bytes)")
        (c,) = struct.unpack_from(">I", blob, pos)
        pos += 4 + c
        if pos > size:
            raise EncodingError(f"bitshuffle-lz4 data truncated: a block of {c} bytes ends at "
                                f"byte {pos}, the message holds {size}")
    if size - pos != (n % 8) * elem:  # the last n % 8 pixels are stored as they are
        raise EncodingError(f"bitshuffle-lz4 data holds {size - pos} bytes after its blocks, "
                            f"expected {(n % 8) * elem}")


def encode(image: np.ndarray, encoding: str, block_bytes: int | None = None) -> bytes:
    """``image`` in one of the encodings :func:`decode` reads (for publishers and tests);
    ``block_bytes``: the LZ4 block size of ``"lz4-hdf5"`` (default: the filter's, 1 GiB)."""
    image = np.ascontiguousarray(image)
    if encoding in ("<", ">", "raw", "none"):
        return image.tobytes()
    if encoding in ("lz4<", "lz4>"):
        import lz4.block

        return lz4.block.compress(image.tobytes(), store_size=False)
    if encoding == LZ4_HDF5:
        nbytes = {"nbytes": block_bytes} if block_bytes else {}
        return _chunk(image, dict(hdf5plugin().LZ4(**nbytes)))
    if not (_BSLZ4.match(encoding) or encoding == "bslz4"):
        raise EncodingError(f"encoding {encoding!r} is not one xrp writes")
    return _chunk(image, bitshuffle_lz4())


def _chunk(image: np.ndarray, hdf5_filter: dict) -> bytes:
    """``image`` as one chunk the HDF5 filter writes (the filter's own C code)."""
    with h5py.File(_memory_name(), "w", driver="core", backing_store=False) as f:
        ds = f.create_dataset("d", data=image, chunks=image.shape, **hdf5_filter)
        _, chunk = ds.id.read_direct_chunk((0,) * image.ndim)
        return bytes(chunk)


_count = [0]


def _memory_name() -> str:
    """A fresh name for an in-memory HDF5 file (the core driver never touches the disk)."""
    _count[0] += 1
    return f"xrp-codec-{id(_count)}-{_count[0]}.h5"
