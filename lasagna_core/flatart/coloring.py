"""Colouring data from flat emoji art: line art (and greyscale) -> colour flats, pixel-aligned by construction.

`generate` (`lasagna dataset line-art SRC... OUT`) takes the designs `lasagna dataset flat-art` selects, places
design i % n at 55-90% of the canvas (a random spot, from `scene_rng(seed, i)`), and writes per scene::

    images/<id>_flats.png     the design over white paper: the truth a colourist delivers (flat colours)
    images/<id>_<style>.png   line art drawn along the design's region edges, one per `line_art.STYLES`
    images/<id>_grey.png      the flats' lightness (PSD Lum, 0.3 R + 0.59 G + 0.11 B): the greyscale case
    images/<id>_regions.png   16-bit region ids of the flats (0: paper), nearest-sampled: for the metrics

Everything is drawn at `size x supersample` pixels and box-filtered to `size`, which anti-aliases the lines.

Manifest lines (one per guide picture) carry `input` (the line art or grey picture), `target` (the flats),
`prompt` (the emoji's name in words), `kind` ("line-art" or "greyscale"), `style`, `split`, `scene`,
`design`, `regions`, and `color`: the `color_words` name nearest the colour of the design's largest region,
which is what the colouring prior learns a prompt's first colour word to mean. Splits go by the emoji's name
as for the relighting data (`packages.design_split`), so no design is in two splits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..color import PSD_LUMA
from ..color_words import nearest_color_word
from ..errors import UsageError
from ..synth.dataset import (
    IMAGES, MANIFEST, SPLITS, Progress, chunk_size, prepare_output, run_jobs, scene_id, scene_rng, write_dataset,
    write_png,
)
from . import packages as P
from .dataset import LICENCES, designs_of_splits, package_versions
from .line_art import STYLES, draw_lines
from .raster import require_resvg

KINDS = ("line-art", "greyscale")
LUM = np.array(PSD_LUMA, np.float32)
_F = np.float32


@dataclass
class ColoringResult:
    out_dir: Path
    manifest: Path
    scenes: int
    pairs: int
    size: int
    seed: int
    styles: list[str]
    splits: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "manifest": str(self.manifest), "scenes": self.scenes,
                "pairs": self.pairs, "size": self.size, "seed": self.seed, "styles": self.styles,
                "splits": self.splits, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class ColoringJob:
    """Scenes for one worker process (picklable): (index, id, svg) each."""

    images: Path
    seed: int
    scenes: tuple[tuple[int, str, str], ...]
    size: int
    supersample: int
    styles: tuple[str, ...]


def _shrink(a: np.ndarray, ss: int) -> np.ndarray:
    """(H*ss, W*ss, ...) -> (H, W, ...): the mean of each ss x ss block."""
    h, w = a.shape[0] // ss, a.shape[1] // ss
    return a.reshape(h, ss, w, ss, *a.shape[2:]).mean(axis=(1, 3))


def _region_ids(regions: np.ndarray, ss: int) -> np.ndarray:
    """(H, W) uint16 region ids 1..n at the output size (the block's centre sample), 0 where no region."""
    centre = regions[ss // 2 :: ss, ss // 2 :: ss]
    ids = np.zeros(centre.shape, np.uint16)
    for number, value in enumerate(np.unique(centre[centre >= 0])[:65535], start=1):
        ids[centre == value] = number
    return ids


def _write_chunk(job: ColoringJob) -> int:
    from PIL import Image

    from .relight import place

    res = job.size * job.supersample
    for index, sid, svg in job.scenes:
        rng = scene_rng(job.seed, index)
        scale = rng.uniform(0.55, 0.9)
        room = res - max(8, round(scale * res))
        rgba, regions = place(svg, res, scale, (int(rng.integers(0, room + 1)), int(rng.integers(0, room + 1))))
        flats = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
        small = _shrink(flats, job.supersample)
        write_png(small, job.images / f"{sid}_flats.png")
        write_png(np.repeat((small @ LUM)[..., None], 3, axis=2), job.images / f"{sid}_grey.png")
        for name in job.styles:
            paper = rng.uniform(0.94, 1.0)
            guide = paper * (1.0 - draw_lines(regions, STYLES[name], rng))
            write_png(np.repeat(_shrink(guide, job.supersample)[..., None], 3, axis=2), job.images / f"{sid}_{name}.png")
        Image.fromarray(_region_ids(regions, job.supersample)).save(job.images / f"{sid}_regions.png")
    return len(job.scenes)


def largest_region_color(flats: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The median sRGB colour (3,) of the largest region (ids > 0) of flats (H, W, 3); white if there is none."""
    counts = np.bincount(ids.ravel())
    if counts.size < 2 or counts[1:].max() == 0:
        return np.ones(3, _F)
    return np.median(flats[ids == int(np.argmax(counts[1:])) + 1], axis=0)


def read_region_ids(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image, dtype=np.int64)


def _scene_color(images: Path, sid: str) -> str:
    from PIL import Image

    with Image.open(images / f"{sid}_flats.png") as image:
        flats = np.asarray(image.convert("RGB"), _F) / 255
    return nearest_color_word(largest_region_color(flats, read_region_ids(images / f"{sid}_regions.png")))


def generate(
    sources: Sequence[Path],
    out_dir: Path,
    *,
    count: int = 0,
    size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    supersample: int = 4,
    workers: int = 1,
    overwrite: bool = False,
    styles: Sequence[str] = tuple(STYLES),
    splits: Sequence[str] = SPLITS,
    on_progress: Progress | None = None,
) -> ColoringResult:
    """Select the designs of `sources` (those of `splits` only: a held-out set at another size needs no
    training designs), draw `count` scenes (0: one per design) and write the images, `dataset.json` and
    `manifest.jsonl` (atomically, last) into `out_dir`."""
    from .. import __version__
    from ..synth.dataset import check_options

    out_dir = Path(out_dir)
    styles = tuple(styles)
    unknown = [s for s in styles if s not in STYLES]
    if unknown or not styles:
        raise UsageError(f"unknown line style(s) {', '.join(unknown) or '(none given)'}: use {', '.join(STYLES)}")
    check_options(max(count, 1), size, seed, val_fraction, test_fraction, supersample, workers, ("left",))
    if count < 0:
        raise UsageError(f"--count must be 0 (one scene per design) or more, not {count}")
    require_resvg()
    started = time.perf_counter()
    designs = designs_of_splits(sources, splits, val_fraction, test_fraction)
    count = count or len(designs)
    images = prepare_output(out_dir, overwrite)
    ids = [scene_id(i, count) for i in range(count)]
    drawn = [designs[i % len(designs)] for i in range(count)]
    chunk = chunk_size(count, workers)
    jobs = [ColoringJob(images, seed, tuple((i, ids[i], drawn[i].svg) for i in range(s, min(s + chunk, count))),
                        size, supersample, styles) for s in range(0, count, chunk)]
    run_jobs(_write_chunk, jobs, workers, count, on_progress)

    split_of = {d.name: P.design_split(d.name, val_fraction, test_fraction) for d in drawn}
    lines = []
    for sid, design in zip(ids, drawn):
        common = {"target": f"{IMAGES}/{sid}_flats.png", "prompt": design.name.replace("-", " "),
                  "split": split_of[design.name], "scene": sid, "design": design.key,
                  "regions": f"{IMAGES}/{sid}_regions.png", "color": _scene_color(images, sid)}
        for name in styles:
            lines.append(json.dumps({"input": f"{IMAGES}/{sid}_{name}.png", "kind": "line-art", "style": name, **common}))
        lines.append(json.dumps({"input": f"{IMAGES}/{sid}_grey.png", "kind": "greyscale", "style": "grey", **common}))
    used = {d.name: d for d in drawn}
    split_counts = {s: sum(1 for n in used if split_of[n] == s) for s in SPLITS}
    per_package = P.count_by(used.values(), "package")
    info = {
        "generator": "lasagna dataset line-art", "version": __version__, "count": count, "size": size, "seed": seed,
        "supersample": supersample, "val_fraction": val_fraction, "test_fraction": test_fraction,
        "styles": {n: {"width": list(STYLES[n].width), "darkness": list(STYLES[n].darkness), "wobble": STYLES[n].wobble,
                       "grain": STYLES[n].grain, "gaps": STYLES[n].gaps} for n in styles},
        "sources": package_versions(sources), "licences": {k: LICENCES[k] for k in per_package},
        "designs": per_package, "design_splits": split_counts, "pairs": len(lines), "kinds": list(KINDS),
        "images": IMAGES, "manifest": MANIFEST,
    }
    write_dataset(out_dir, info, lines)
    return ColoringResult(out_dir, out_dir / MANIFEST, count, len(lines), size, seed, list(styles), split_counts,
                          time.perf_counter() - started)
