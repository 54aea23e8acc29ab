"""Keep an HDF5 file's links inside a folder: an upload is data, never a pointer to a server file.

An HDF5 file can make its reader open other files: external links, virtual data set (VDS)
sources and external raw storage. HDF5 resolves a relative name against the file's folder and
then the working directory, and an absolute one, if absent, by its bare name the same way
(H5Lcreate_external), so a file that links anywhere must be refused before any reader touches
it. ``check_links`` walks every link of the file (without following one) and of every file it
reaches, and refuses, with a message that names neither the target nor whether it exists:
- a target outside ``root`` (after resolving symlinks: ``../`` and absolute paths too);
- a target inside ``root`` that is absent (HDF5 would go on searching elsewhere) in an upload
  (in a watched folder: a data file not written yet, which the reader reports per frame);
- any link out of a compressed file (read from memory, HDF5 would search the working folder).
Soft links stay inside their file; their loops end in HDF5's own limit of 16 hops (a read of
one fails as a corrupt file). No Ray.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from xray_platform.io.formats.base import (
    HDF5_MAGIC,
    FormatError,
    is_compressed,
    read_all,
    sniff,
)

MAX_LINKS = 200_000  # links walked per request, all files together (a real master: ~300)
MAX_FILES = 10_000  # files reached (an EIGER run: one data file per 1,000 frames)


class LinkOutside(FormatError):
    """An HDF5 file that would make its reader open a file outside the allowed folder."""


@dataclass
class _Walk:
    root: Path
    upload: bool  # an upload: only what was sent; a watched folder: data files may come later
    name: str  # what errors call the file (the upload's own name)
    seen: set[Path] = field(default_factory=set)
    links: int = 0

    def refuse(self, where: str, what: str) -> LinkOutside:
        if self.upload:
            return LinkOutside(f"{self.name}: {where} is {what} to a file not uploaded with it; "
                               "an upload must hold its data or link only to files sent with it")
        return LinkOutside(f"{self.name}: {where} is {what} to a file outside the watched "
                           "folder (--allow-links-outside follows it)")


def check_links(path: str | Path, root: str | Path, *, upload: bool = True,
                name: str | None = None) -> None:
    """Refuse (LinkOutside) a file that is a symbolic link out of ``root``, or an HDF5 file whose
    external links, VDS sources or external storage reach outside it; other files pass.
    ``name``: what messages call the file (default its path)."""
    path = Path(path)
    walk = _Walk(Path(os.path.realpath(root)), upload, name or str(path))
    real = Path(os.path.realpath(path))
    if not _inside(real, walk.root):
        raise walk.refuse("it", "a symbolic link")
    if sniff(real, 8).startswith(HDF5_MAGIC):
        _walk_file(real, walk)


def _inside(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def _target(base: Path, name: str) -> Path:
    """Where a link's file name points (relative names from ``base``), symlinks resolved."""
    p = Path(name)
    return Path(os.path.realpath(p if p.is_absolute() else base / p))


def _walk_file(path: Path, walk: _Walk) -> None:
    if path in walk.seen:  # an external-link loop between files ends here
        return
    walk.seen.add(path)
    if len(walk.seen) > MAX_FILES:
        raise LinkOutside(f"{walk.name}: links reach more than {MAX_FILES:,} files")
    in_memory = is_compressed(path)
    try:
        with h5py.File(io.BytesIO(read_all(path)) if in_memory else path, "r") as f:
            found: list[tuple[str, str, str]] = []  # (where, kind, file name)
            f.visititems_links(lambda n, link: _note(n, link, f, found, walk))
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, FormatError):
            raise
        raise FormatError(f"{walk.name}: truncated or corrupt HDF5 file ({e})") from None
    for where, kind, name in found:
        if in_memory:  # HDF5 resolves links of a file read from memory from the working folder
            raise walk.refuse(where, f"{kind} of a compressed file")
        _check_target(path, where, kind, name, walk)


def _note(name: str, link: object, f: h5py.File, found: list, walk: _Walk) -> None:
    """Collect the file names one link (and the object it holds) would make HDF5 open."""
    walk.links += 1
    if walk.links > MAX_LINKS:
        raise LinkOutside(f"{walk.name}: more than {MAX_LINKS:,} HDF5 links")
    where = "/" + name
    if isinstance(link, h5py.ExternalLink):
        found.append((where, "an external link", link.filename))
        return
    if not isinstance(link, h5py.HardLink):
        return  # soft links: paths inside this file
    obj = f.get(name, getlink=False)
    if not isinstance(obj, h5py.Dataset):
        return
    if obj.is_virtual:
        found.extend((where, "a virtual data set", s.file_name) for s in obj.virtual_sources()
                     if s.file_name != ".")
    for ext in obj.external or ():  # raw storage in other files: resolved from the CWD
        found.append((where, "external storage", os.path.join(os.getcwd(), ext[0])))


def _check_target(path: Path, where: str, kind: str, name: str, walk: _Walk) -> None:
    target = _target(path.parent, name)
    if not _inside(target, walk.root):
        raise walk.refuse(where, kind)
    if not target.is_file():
        if walk.upload or kind == "external storage":
            raise walk.refuse(where, kind)
        return  # a watched folder's data file not written yet: the reader says so per frame
    if kind != "external storage":
        _walk_file(target, walk)  # the file it reaches may link on
