"""Input discovery: which files a batch reads, in a deterministic order, each with its path relative to IN.

That relative path decides where the output goes (`OUT/<relative folder>/<stem>.psd`), so it is computed
here once, for a folder walk, a glob and a list of paths alike.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..document import PSD_SUFFIXES, RASTER_SUFFIXES
from ..errors import UsageError
from .types import Source

INPUT_SUFFIXES = tuple(sorted(set(RASTER_SUFFIXES + PSD_SUFFIXES)))
"""What a folder walk picks up (case-insensitively). Globs and path lists are taken as given."""


def discover(spec: str, *, stdin_paths: Sequence[str] | None = None, exclude: Path | None = None) -> list[Source]:
    """The inputs named by `spec`, in a deterministic order, each with its path relative to the input root.

    - a folder: every file below it whose suffix is an image or PSD (hidden entries and `exclude`, the output
      folder, are left out); a folder *named* like an image is listed too, so that it gets its own error line
    - a glob (`shots/**/*.png`, quoted): its matches, relative to the part of the pattern before the first wildcard
    - `-`: the paths in `stdin_paths` (one per line; blank lines and `#` comments ignored; paths inside
      `exclude` left out, as `find IN` lists the outputs too), relative to the deepest folder they all share
    - a single file: that file
    """
    excluded = os.path.realpath(exclude) if exclude is not None else None
    if spec == "-":
        return _from_list(stdin_paths or [], excluded)
    if any(ch in spec for ch in "*?["):
        return _from_glob(spec, excluded)
    root = Path(spec)
    if root.is_dir():
        return _from_folder(root, excluded)
    if root.exists() or root.is_symlink():
        return [Source(root, Path(root.name))]
    raise UsageError(f"{spec}: no such file or folder (IN is a folder, a quoted glob, or - for paths on stdin)")


def input_root(spec: str) -> Path | None:
    """The folder a folder walk or a glob starts from (None for `-` and a single file)."""
    if spec == "-":
        return None
    if any(ch in spec for ch in "*?["):
        return _glob_root(spec)
    return Path(spec) if Path(spec).is_dir() else None


def _glob_root(pattern: str) -> Path:
    """The part of a glob before its first wildcard: the matches' paths are relative to it."""
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if any(ch in part for ch in "*?["))
    return Path(*parts[:fixed]) if fixed else Path(".")


def _inside(path: str, excluded: str | None) -> bool:
    return excluded is not None and (os.path.realpath(path) + os.sep).startswith(excluded + os.sep)


def _is_input_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(INPUT_SUFFIXES)


def _from_folder(root: Path, excluded: str | None) -> list[Source]:
    found: list[Source] = []

    def unreadable(error: OSError) -> None:
        where = Path(error.filename) if error.filename else root
        reason = error.strerror or type(error).__name__
        found.append(Source(where, where.relative_to(root), f"{where}: can't list this folder ({reason.lower()})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        here = Path(dirpath)
        kept = []
        for name in sorted(dirnames):
            if name.startswith(".") or (excluded and os.path.realpath(here / name) == excluded):
                continue
            kept.append(name)
            if _is_input_name(name):  # a folder named like an image: reported, and still walked into
                found.append(Source(here / name, (here / name).relative_to(root)))
        dirnames[:] = kept
        for name in sorted(filenames):
            if _is_input_name(name):
                found.append(Source(here / name, (here / name).relative_to(root)))
    return sorted(found, key=lambda s: s.rel.as_posix())


def _from_glob(pattern: str, excluded: str | None) -> list[Source]:
    root = _glob_root(pattern)
    found = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        path = Path(match)
        if path.is_dir() and not _is_input_name(path.name):
            continue
        if _inside(match, excluded):
            continue  # our own outputs, when OUT lies inside what the glob covers
        found.append(Source(path, Path(os.path.relpath(path, root))))
    return found


def _from_list(lines: Iterable[str], excluded: str | None) -> list[Source]:
    paths = []
    for line in lines:
        text = line.rstrip("\r\n")
        if text.strip() and not text.lstrip().startswith("#") and not _inside(text, excluded):
            paths.append(Path(text))
    if not paths:
        return []
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(a) for a in absolute])
    seen: set[str] = set()
    found = []
    for path, full in zip(paths, absolute):
        if full not in seen:  # the same path twice is one input
            seen.add(full)
            found.append(Source(path, Path(os.path.relpath(full, root))))
    return found
