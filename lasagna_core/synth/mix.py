"""One training manifest out of several data sets (`lasagna dataset mix SRC[:N]... OUT`).

A prior that should know flat art *and* keep what it learnt on primitives and photo-like scenes trains on
both; copying thousands of PNGs for that would be wasteful, so the mix is only a manifest: each line of a
source, its picture paths rewritten relative to OUT (`../flat64/images/...`), its scene prefixed with the
source's folder name so that two sets' scene "00012" stay two scenes. Splits are the sources' own, so a
design or scene held out in its set stays held out in the mix. Works for relighting and colouring
manifests alike (every relative path key is re-rooted).
"""

from __future__ import annotations

import json
import os
import posixpath
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OutputError, UsageError
from .dataset import INFO, MANIFEST, REQUIRED, SPLITS, read_json_lines, split_of, write_dataset

PATH_KEYS = ("input", "target", "mask", "regions")
"""Manifest keys that hold a picture path relative to the manifest's folder."""


@dataclass(frozen=True)
class MixSource:
    """A data set folder, and how many of its scenes to take (None: all), first come first taken."""

    folder: Path
    scenes: int | None = None

    @classmethod
    def parse(cls, text: str) -> MixSource:
        """'DIR' or 'DIR:N' (N > 0 digits; a colon not followed by digits is part of the path)."""
        head, sep, tail = text.rpartition(":")
        if sep and tail.isdigit():
            if int(tail) < 1:
                raise UsageError(f"'{text}': take at least one scene (DIR:N with N >= 1)")
            return cls(Path(head), int(tail))
        return cls(Path(text))


@dataclass
class MixResult:
    out_dir: Path
    manifest: Path
    pairs: int
    sources: list[dict[str, Any]] = field(default_factory=list)  # per source: folder, scenes, pairs, splits
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "manifest": str(self.manifest), "pairs": self.pairs,
                "sources": self.sources, "seconds": round(self.seconds, 3)}


def mix(out_dir: Path, sources: Sequence[MixSource], *, white_light: bool = False, overwrite: bool = False) -> MixResult:
    """Write OUT/manifest.jsonl and OUT/dataset.json for the mix; `white_light` keeps only pairs without a
    coloured light (a prior conditioned on the direction alone). Everything is read and checked before
    anything is written; the manifest is written last and atomically."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if not sources:
        raise UsageError("give at least one data set folder and then the output folder: lasagna dataset mix SRC... OUT")
    _check_output(out_dir, overwrite)
    names = [s.folder.resolve().name for s in sources]
    if len(set(names)) != len(names):
        raise UsageError(f"two sources share the folder name '{_first_repeat(names)}', which prefixes their scenes")
    lines: list[str] = []
    summary = []
    for source, name in zip(sources, names):
        rows = _rows(source, name, out_dir, white_light)
        lines += [json.dumps(row) for row in rows]
        splits = {s: len({r["scene"] for r in rows if r["split"] == s}) for s in SPLITS}
        summary.append({"folder": str(source.folder), "prefix": name, "scenes": len({r["scene"] for r in rows}),
                        "pairs": len(rows), "splits": splits})
    if not lines:
        raise UsageError("the sources have no pairs to mix" + (" in white light" if white_light else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"kind": "mix", "white_light": white_light, "sources": summary}
    write_dataset(out_dir, info, lines)
    return MixResult(out_dir, out_dir / MANIFEST, len(lines), summary, time.perf_counter() - started)


def _rows(source: MixSource, prefix: str, out_dir: Path, white_light: bool) -> list[dict[str, Any]]:
    """The source's lines as they go into the mix: filtered, re-rooted at OUT, scenes prefixed."""
    manifest = source.folder / MANIFEST
    if not manifest.is_file():
        raise UsageError(f"no {MANIFEST} in '{source.folder}' (make one with `lasagna dataset synth|flat-art|line-art`)")
    root = Path(os.path.relpath(source.folder.resolve(), out_dir.resolve())).as_posix()
    taken: set[str] = set()
    rows = []
    for where, item in read_json_lines(manifest, REQUIRED):
        if white_light and item.get("light_color") is not None:
            continue
        scene = str(item.get("scene", item["input"]))
        if scene not in taken:
            if source.scenes is not None and len(taken) == source.scenes:
                continue
            taken.add(scene)
        row = dict(item, split=split_of(item, where), scene=f"{prefix}-{scene}")
        for key in PATH_KEYS:
            if isinstance(row.get(key), str) and row[key]:
                row[key] = posixpath.normpath(f"{root}/{row[key]}")
        rows.append(row)
    return rows


def _check_output(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        own = {p.name for p in out_dir.iterdir()} <= {MANIFEST, INFO}
        if not overwrite:
            raise OutputError(f"{out_dir}: folder is not empty; pass --overwrite to replace the mix in it")
        if not own:
            raise OutputError(f"{out_dir}: holds more than a mix's manifest; --overwrite replaces only a mix")


def _first_repeat(names: Sequence[str]) -> str:
    return next(n for i, n in enumerate(names) if n in names[:i])
