"""HDF5 shot datasets: sharded, compressed, crash-safe, lazily readable.

A dataset is a directory of shard files (``shard-00000.h5`` ...) written by parallel writers,
plus an optional ``dataset.json`` manifest. Each shard holds

* ``inputs``       (N, H, W) float32, chunked per shot, compressed (model-input images);
* ``full_frames``  (N, S, F) int32, chunked per shot, compressed (optional detector frames);
* ``labels/<col>`` one 1-D dataset per column of the labels + geometry table;
* file attrs ``format="xrp-shots"``, ``format_version``, ``complete``, ``n_shots``, ``expected``,
  ``xrp_version`` and ``provenance`` (the caller's attrs as a JSON string).

A shard is written to ``<final>.partial`` and renamed to its final name only once every expected
shot is in and the file is closed and fsync'ed, so a file with a final name is always complete.
"""

from __future__ import annotations

import bisect
import json
import operator
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from xray_platform import __version__
from xray_platform.io.atomic import atomic_open
from xray_platform.io.optional import bitshuffle_lz4, hdf5plugin
from xray_platform.physics.qgrid import QGrid

SHARD_PATTERN = "shard-{index:05d}.h5"
MANIFEST_NAME = "dataset.json"
PARTIAL_SUFFIX = ".partial"
FORMAT = "xrp-shots"
FORMAT_VERSION = 1

_SHARD_RE = re.compile(r"shard-(\d+)\.h5")
_DTYPES: dict[str, Any] = {
    "bool": np.bool_,
    "int": np.int64,
    "float": np.float64,
    "str": h5py.string_dtype("utf-8"),
}
Compression = Literal["bitshuffle", "gzip", "lzf"] | None


@dataclass
class Shot:
    """One shot: model-input image, its labels/geometry row and optionally the full frame."""

    inputs: np.ndarray
    record: dict
    full_frame: np.ndarray | None = None


def shard_path(directory: str | Path, index: int) -> Path:
    """Final path of shard ``index`` in ``directory``."""
    return Path(directory) / SHARD_PATTERN.format(index=index)


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=_json_default)


def _kind(value: Any) -> str | None:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "str"
    return None


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _compression_kwargs(compression: Compression) -> dict[str, Any]:
    if compression is None or compression == "none":
        return {}
    if compression == "bitshuffle":
        return bitshuffle_lz4()
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": True}
    raise ValueError(f"unknown compression {compression!r}; use bitshuffle, gzip, lzf or None")


def _fsync_path(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:  # some platforms cannot open directories; best effort
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


class ShotWriter:
    """Writes one shard. Use as a context manager.

    Rows go to ``<path>.partial``; the file is renamed (after flush, close and fsync) to ``path``
    only when the writer is closed without an exception and exactly ``expected`` shots were
    appended. Otherwise the ``.partial`` is deleted. An existing ``.partial`` is overwritten.

    Record columns and their kinds (bool, int, float, str) are fixed by the first record; ints
    are accepted in float columns, nothing else is coerced. Vectors must be passed as JSON strings.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        input_shape: tuple[int, int],
        expected: int,
        attrs: dict,
        full_frame_shape: tuple[int, int] | None = None,
        compression: Compression = "bitshuffle",
    ) -> None:
        self.path = Path(path)
        if self.path.name.endswith(PARTIAL_SUFFIX):
            raise ValueError(f"{self.path}: give the final shard name, not a {PARTIAL_SUFFIX} name")
        if int(expected) < 1:
            raise ValueError(f"expected must be >= 1, got {expected}")
        self.expected = int(expected)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.full_frame_shape = (
            None if full_frame_shape is None else tuple(int(s) for s in full_frame_shape)
        )
        if len(self.input_shape) != 2 or (
            self.full_frame_shape is not None and len(self.full_frame_shape) != 2
        ):
            raise ValueError("input_shape and full_frame_shape must be 2-D (rows, cols)")
        provenance = dict(attrs)
        provenance.setdefault("xrp_version", __version__)
        provenance_json = _dumps(provenance)  # fail early on non-serialisable attrs
        comp = _compression_kwargs(compression)

        self.partial_path = _partial_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._n = 0
        self._closed = False
        self._columns: dict[str, str] | None = None
        self._label_ds: dict[str, h5py.Dataset] = {}
        self._file = h5py.File(self.partial_path, "w")
        try:
            f = self._file
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["complete"] = False
            f.attrs["n_shots"] = 0
            f.attrs["expected"] = self.expected
            f.attrs["xrp_version"] = __version__
            f.attrs["provenance"] = provenance_json
            self._inputs = f.create_dataset(
                "inputs",
                shape=(self.expected, *self.input_shape),
                dtype=np.float32,
                chunks=(1, *self.input_shape),
                **comp,
            )
            self._full = None
            if self.full_frame_shape is not None:
                self._full = f.create_dataset(
                    "full_frames",
                    shape=(self.expected, *self.full_frame_shape),
                    dtype=np.int32,
                    chunks=(1, *self.full_frame_shape),
                    **comp,
                )
            self._labels = f.create_group("labels", track_order=True)
        except BaseException:
            self._abort()
            raise

    def __len__(self) -> int:
        return self._n

    # -- validation ------------------------------------------------------------------------
    def _check_record(self, record: Mapping[str, Any]) -> dict[str, str]:
        if not isinstance(record, Mapping):
            raise ValueError(f"record must be a dict, got {type(record).__name__}")
        kinds: dict[str, str] = {}
        for key, value in record.items():
            if not isinstance(key, str) or not key or "/" in key or key == ".":
                raise ValueError(f"invalid column name {key!r}")
            kind = _kind(value)
            if kind is None:
                raise ValueError(
                    f"column {key!r}: unsupported type {type(value).__name__} "
                    "(use bool, int, float or str; pass vectors as JSON strings)"
                )
            if kind == "int" and not -(2**63) <= int(value) < 2**63:
                raise ValueError(f"column {key!r}: int {value} does not fit in int64")
            kinds[key] = kind
        if self._columns is None:
            return kinds
        missing = [k for k in self._columns if k not in kinds]
        if missing:
            raise ValueError(f"record is missing column(s) {missing}")
        extra = [k for k in kinds if k not in self._columns]
        if extra:
            raise ValueError(f"record has unknown column(s) {extra}")
        for key, kind in kinds.items():
            want = self._columns[key]
            if kind != want and not (want == "float" and kind == "int"):
                raise ValueError(f"column {key!r}: expected {want}, got {kind} ({record[key]!r})")
        return kinds

    def _check_image(
        self, image: Any, shape: tuple[int, ...], dtype: type, name: str
    ) -> np.ndarray:
        arr = np.asarray(image)
        if arr.shape != shape:
            raise ValueError(f"{name}: shape {arr.shape} != {shape}")
        if dtype is np.float32:
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise ValueError(f"{name}: numeric dtype required, got {arr.dtype}")
        else:
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{name}: integer dtype required, got {arr.dtype}")
            info = np.iinfo(np.int32)
            if arr.dtype.itemsize > 4 or arr.dtype == np.uint32:
                if arr.size and (arr.min() < info.min or arr.max() > info.max):
                    raise ValueError(f"{name}: values do not fit in int32")
        return np.ascontiguousarray(arr, dtype=dtype)

    # -- writing ---------------------------------------------------------------------------
    def append(
        self,
        inputs: np.ndarray,
        record: dict[str, float | int | bool | str],
        full_frame: np.ndarray | None = None,
    ) -> None:
        """Append one shot. Everything is validated before anything is written."""
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        if self._n >= self.expected:
            raise ValueError(f"{self.path}: already holds the {self.expected} expected shots")
        x = self._check_image(inputs, self.input_shape, np.float32, "inputs")
        ff = None
        if self._full is not None:
            if full_frame is None:
                raise ValueError("full_frame is required: writer was given full_frame_shape")
            ff = self._check_image(full_frame, self.full_frame_shape, np.int32, "full_frame")
        elif full_frame is not None:
            raise ValueError("full_frame given but writer has no full_frame_shape")
        kinds = self._check_record(record)
        if self._columns is None:
            for key, kind in kinds.items():
                self._label_ds[key] = self._labels.create_dataset(
                    key, shape=(self.expected,), dtype=_DTYPES[kind]
                )
            self._labels.attrs["columns"] = json.dumps(list(kinds.items()))
            self._columns = kinds

        i = self._n
        self._inputs[i] = x
        if ff is not None:
            self._full[i] = ff
        for key, kind in self._columns.items():
            value = record[key]
            self._label_ds[key][i] = str(value) if kind == "str" else value
        self._n += 1

    def close(self) -> None:
        """Finalise: mark complete, close, fsync and rename. Raises if the count is short."""
        if self._closed:
            return
        if self._n != self.expected:
            n = self._n
            self._abort()
            raise ValueError(
                f"{self.path}: only {n} of {self.expected} expected shots appended; "
                "shard not finalised (partial removed)"
            )
        try:
            self._file.attrs["n_shots"] = self._n
            self._file.attrs["complete"] = True
            self._file.flush()
            self._file.close()
            _fsync_path(self.partial_path)
            os.replace(self.partial_path, self.path)
            _fsync_path(self.path.parent, directory=True)
        except BaseException:
            self._abort()
            raise
        self._closed = True

    def _abort(self) -> None:
        self._closed = True
        try:
            self._file.close()
        except Exception:  # noqa: BLE001 - best effort while already failing
            pass
        self.partial_path.unlink(missing_ok=True)

    def __enter__(self) -> ShotWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._abort()
            return
        self.close()


class ShotFile:
    """One finished shard, read lazily (only the requested shot's rows are read)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.name.endswith(PARTIAL_SUFFIX):
            raise ValueError(
                f"{self.path} is an unfinished shard ({PARTIAL_SUFFIX}): its writer did not "
                "finish; remove it with clean_partials() and rewrite the shard"
            )
        if not self.path.exists():
            raise FileNotFoundError(f"no such shard file: {self.path}")
        hdf5plugin()  # the bitshuffle/LZ4 filter the writer uses by default
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as e:
            raise ValueError(f"{self.path} is not a readable HDF5 file ({e})") from e
        try:
            self._open()
        except BaseException:
            self._file.close()
            raise
        self._table: dict[str, np.ndarray] | None = None
        self._attrs: dict | None = None

    def _open(self) -> None:
        f = self._file
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != FORMAT or "inputs" not in f or "labels" not in f:
            raise ValueError(f"{self.path} is not an xrp shot shard (format attr {fmt!r})")
        version = int(f.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise ValueError(f"{self.path}: unsupported format_version {version}")
        if not bool(f.attrs.get("complete", False)):
            raise ValueError(f"{self.path} is incomplete (attr 'complete' is not True)")
        n = int(f.attrs["n_shots"])
        self._inputs = f["inputs"]
        self._full = f["full_frames"] if "full_frames" in f else None
        labels = f["labels"]
        self.columns: dict[str, str] = dict(json.loads(labels.attrs.get("columns", "[]")))
        self._label_ds = {k: labels[k] for k in self.columns}
        lengths = {"inputs": self._inputs.shape[0]}
        if "expected" in f.attrs:
            lengths["expected"] = int(f.attrs["expected"])
        if self._full is not None:
            lengths["full_frames"] = self._full.shape[0]
        lengths.update({f"labels/{k}": ds.shape[0] for k, ds in self._label_ds.items()})
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise ValueError(f"{self.path} is inconsistent: n_shots={n} but {bad}")
        self._n = n
        self._readers = {
            k: (ds.asstr() if self.columns[k] == "str" else ds) for k, ds in self._label_ds.items()
        }

    @property
    def input_shape(self) -> tuple[int, int]:
        return tuple(self._inputs.shape[1:])

    @property
    def full_frame_shape(self) -> tuple[int, int] | None:
        return None if self._full is None else tuple(self._full.shape[1:])

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> Shot:
        i = operator.index(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"shot index out of range for {self._n} shots")
        if self._table is not None:
            record = {k: _py(self._table[k][i]) for k in self.columns}
        else:
            record = {}
            for k, reader in self._readers.items():
                record[k] = _py(reader[i])
        full = None if self._full is None else self._full[i]
        return Shot(inputs=self._inputs[i], record=record, full_frame=full)

    @property
    def table(self) -> dict[str, np.ndarray]:
        """Whole labels table, one array per column (strings as object arrays). Cached."""
        if self._table is None:
            self._table = {k: reader[()] for k, reader in self._readers.items()}
        return self._table

    @property
    def grid(self) -> QGrid:
        """The reciprocal-space grid the inputs are on (the manifest's; a lone shard: its
        input size on the default d_min)."""
        size = int(self._shard(0).input_shape[0])
        grid = self.attrs.get("grid") if self.path.is_dir() else None
        if isinstance(grid, dict) and "d_min_A" in grid:
            return QGrid(int(grid.get("size", size)), float(grid["d_min_A"]))
        return QGrid(size)

    @property
    def attrs(self) -> dict:
        """Provenance dict (JSON-decoded)."""
        if self._attrs is None:
            raw = self._file.attrs.get("provenance", "{}")
            self._attrs = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        return self._attrs

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ShotFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])


def _shard_files(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for p in directory.iterdir():
        m = _SHARD_RE.fullmatch(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


class ShotDataset:
    """A directory of shards (or a single shard file), concatenated in shard-index order.

    Only final shard names (``shard-NNNNN.h5``) are used; ``*.partial`` files are ignored. Files
    are opened lazily and kept open per process; pickling drops the handles.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no such shot dataset: {self.path}")
        if self.path.is_dir():
            self.shard_paths = [p for _, p in _shard_files(self.path)]
            if not self.shard_paths:
                raise ValueError(
                    f"{self.path} holds no complete shard ({SHARD_PATTERN.format(index=0)} ...)"
                )
        else:
            self.shard_paths = [self.path]
        lengths: list[int] = []
        schema = None
        for p in self.shard_paths:
            with ShotFile(p) as f:
                lengths.append(len(f))
                this = (f.input_shape, f.columns)
            if schema is None:
                schema = this
            elif this != schema:
                raise ValueError(f"{p}: schema {this} differs from {self.shard_paths[0]}: {schema}")
        self._lengths = lengths
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(int).tolist()
        self._reset()

    def _reset(self) -> None:
        self._files: dict[int, ShotFile] = {}
        self._pid = os.getpid()
        self._table: dict[str, np.ndarray] | None = None

    def _shard(self, s: int) -> ShotFile:
        if self._pid != os.getpid():  # forked: never reuse the parent's HDF5 handles
            self._files = {}
            self._pid = os.getpid()
        f = self._files.get(s)
        if f is None:
            f = self._files[s] = ShotFile(self.shard_paths[s])
        return f

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, i: int) -> Shot:
        i = operator.index(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"shot index out of range for {n} shots")
        s = bisect.bisect_right(self._starts, i) - 1
        return self._shard(s)[i - self._starts[s]]

    @property
    def table(self) -> dict[str, np.ndarray]:
        """Labels tables of all shards concatenated. Cached."""
        if self._table is None:
            parts = [self._shard(s).table for s in range(len(self.shard_paths))]
            self._table = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return self._table

    @property
    def grid(self) -> QGrid:
        """The reciprocal-space grid the inputs are on (the manifest's; a lone shard: its
        input size on the default d_min)."""
        size = int(self._shard(0).input_shape[0])
        grid = self.attrs.get("grid") if self.path.is_dir() else None
        if isinstance(grid, dict) and "d_min_A" in grid:
            return QGrid(int(grid.get("size", size)), float(grid["d_min_A"]))
        return QGrid(size)

    @property
    def attrs(self) -> dict:
        """The manifest if the dataset directory has one, else the first shard's provenance."""
        if self.path.is_dir() and (self.path / MANIFEST_NAME).exists():
            return read_manifest(self.path)
        return self._shard(0).attrs

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in self._files.values():
                f.close()
        self._files = {}

    def __enter__(self) -> ShotDataset:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_files", "_pid", "_table"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()


def write_manifest(directory: Path, info: dict) -> None:
    """Write ``dataset.json`` atomically (temp file, fsync, os.replace)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(info, indent=2, sort_keys=True, default=_json_default) + "\n"
    with atomic_open(directory / MANIFEST_NAME) as fh:
        fh.write(text)
    _fsync_path(directory, directory=True)


def read_manifest(directory: Path) -> dict:
    """Read ``dataset.json`` from a dataset directory."""
    with open(Path(directory) / MANIFEST_NAME, encoding="utf-8") as fh:
        return json.load(fh)


def completed_shards(directory: Path, expected: int | Mapping[int, int] | None = None) -> set[int]:
    """Indices of shards whose final file opens, is complete and self-consistent.

    ``expected`` (one count, or a map index -> count) additionally requires that many shots.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return set()
    done = set()
    for index, p in _shard_files(directory):
        try:
            with ShotFile(p) as f:
                n = len(f)
        except (OSError, ValueError):
            continue
        want = expected.get(index) if isinstance(expected, Mapping) else expected
        if want is None or n == want:
            done.add(index)
    return done


def clean_partials(directory: Path) -> list[Path]:
    """Delete leftover ``*.partial`` files (call only when no writer is running); return them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = sorted(p for p in directory.glob("*" + PARTIAL_SUFFIX) if p.is_file())
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
