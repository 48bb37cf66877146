"""Relighting data from flat emoji art on disk, in `lasagna dataset synth`'s layout and manifest format.

`generate` (`lasagna dataset flat-art SRC... OUT`) selects the single-object designs of the package folders
(`select_designs`), renders scene i from design i of a fixed order (a hash of each design's key, so a small
--count samples every category) and, past the last design, the same designs again with new placements,
backgrounds and lights. Each scene is one base (the art over its background), one mask (the art's alpha) and
one target per named direction (`lasagna_core.flatart.relight`), written as the synthetic set's files are.

Manifest lines carry the synthetic set's keys (`lasagna train` and `lasagna eval` read them unchanged) plus
`design` ("twemoji/red-apple") and, for pairs lit by a coloured light, `light` (its name in
`lasagna_core.light_colors`), `light_color` (its sRGB colour, largest channel 1), `shadow_tint` (true when
the shadows took the colour's tint) and a prompt that names it ("warm light from the left"). Pairs under
white light have exactly the synthetic set's prompts.

Splits go by the emoji's name (`packages.design_split`): every scene of a design, and the same emoji from
the other package, share one split, whatever the seed. Scene i draws its shot from
`SeedSequence(seed, spawn_key=(0, i))` and its light colours from `spawn_key=(2, i)`, so --colored-lights
changes the lights and nothing else, and the files do not depend on --workers. `splits` draws the designs
of some splits only (`--splits test`: the held-out designs at another size, for `lasagna eval`); scene i is
then the i-th of those designs, so its placement differs from the full set's.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..directions import DIRECTION_NAMES, DIRECTIONS
from ..errors import UsageError
from ..light_colors import LIGHT_COLORS, colored_prompt
from ..synth.dataset import (
    IMAGES, MANIFEST, SPLITS, Progress, check_options, check_share, chunk_size, manifest_line, prepare_output,
    run_jobs, scene_id, scene_rng, write_dataset, write_render,
)
from ..synth.lighting import BASE_GAIN, LIGHT_ELEVATION
from . import packages as P
from .raster import COVERAGE, MIN_MAIN_SHARE, RULE_SIZE, require_resvg, shape_rule, shape_stats

LICENCES = {
    P.FLUENT: "MIT (Microsoft Fluent Emoji, https://github.com/microsoft/fluentui-emoji)",
    P.TWEMOJI: "CC-BY 4.0 (Twemoji artwork, https://github.com/jdecked/twemoji): credit 'Twemoji' in anything shipped",
}


@dataclass
class FlatArtResult:
    out_dir: Path
    manifest: Path
    scenes: int
    pairs: int
    colored_pairs: int
    size: int
    seed: int
    directions: list[str]
    designs: dict[str, int]  # selected designs per package
    splits: dict[str, int] = field(default_factory=dict)  # designs per split
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir), "manifest": str(self.manifest), "scenes": self.scenes, "pairs": self.pairs,
            "colored_pairs": self.colored_pairs, "size": self.size, "seed": self.seed, "directions": self.directions,
            "designs": self.designs, "splits": self.splits, "seconds": round(self.seconds, 3),
        }


def select_designs(designs: Sequence[P.Design]) -> list[P.Design]:
    """The designs that pass both halves of the rule (package metadata, then the measured shape), in the
    fixed order scenes take them."""
    chosen = [d for d in designs if P.metadata_rule(d) and shape_rule(shape_stats(d.svg))]
    return sorted(chosen, key=lambda d: hashlib.sha256(d.key.encode("utf-8")).hexdigest())


def designs_of_splits(sources: Sequence[Path], splits: Sequence[str], val_fraction: float, test_fraction: float) -> list[P.Design]:
    """The selected designs of `sources` (`select_designs`, in its order) whose split is one of `splits`: a
    held-out set at another size needs no training designs. Unknown split names are refused before the
    packages are read."""
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or not splits:
        raise UsageError(f"unknown split(s) {', '.join(unknown) or '(none given)'}: use {', '.join(SPLITS)}")
    designs = [d for d in select_designs(P.load_designs(sources))
               if P.design_split(d.name, val_fraction, test_fraction) in splits]
    if not designs:
        some = "" if set(splits) == set(SPLITS) else f" of the {', '.join(splits)} split"
        raise UsageError(f"no design{some} in the sources passes the selection rule (single objects, animals, food, vehicles)")
    return designs


def draw_lightings(seed: int, index: int, directions: Sequence[str], colored: float, tint: float) -> list[Any]:
    """Scene `index`'s lighting per direction: a coloured light with probability `colored`, its shadow tint
    with probability `tint` among those."""
    from .relight import Lighting

    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, index)))
    names = list(LIGHT_COLORS)
    out = []
    for direction in directions:
        u, pick, v = rng.uniform(), int(rng.integers(len(names))), rng.uniform()
        color = LIGHT_COLORS[names[pick]] if u < colored else None
        out.append(Lighting(direction, color, color is not None and v < tint))
    return out


@dataclass(frozen=True)
class ArtJob:
    """Scenes for one worker process (picklable): (index, id, svg, lightings) each."""

    images: Path
    seed: int
    scenes: tuple[tuple[int, str, str, tuple[Any, ...]], ...]
    size: int
    supersample: int


def _write_chunk(job: ArtJob) -> int:
    from .relight import random_art_scene, render_art

    for index, sid, svg, lightings in job.scenes:
        scene = random_art_scene(svg, scene_rng(job.seed, index), job.size * job.supersample)
        write_render(render_art(scene, job.size, job.supersample, lightings), job.images, sid)
    return len(job.scenes)


def package_versions(sources: Sequence[Path]) -> dict[str, str]:
    versions = {}
    for source in sources:
        for candidate in (Path(source) / "package.json", Path(source) / "package" / "package.json"):
            if candidate.is_file():
                try:
                    meta = json.loads(candidate.read_text(encoding="utf-8"))
                    versions[str(meta.get("name"))] = str(meta.get("version"))
                except (OSError, ValueError):
                    pass
                break
    return versions


def generate(
    sources: Sequence[Path],
    out_dir: Path,
    *,
    count: int = 0,
    size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    supersample: int = 2,
    workers: int = 1,
    overwrite: bool = False,
    directions: Sequence[str] = DIRECTION_NAMES,
    colored_lights: float = 0.0,
    shadow_tint: float = 0.5,
    splits: Sequence[str] = SPLITS,
    on_progress: Progress | None = None,
) -> FlatArtResult:
    """Select the designs of `sources` (those of `splits` only, `designs_of_splits`), render `count` scenes
    (0: one per design) and write the images, `dataset.json` and `manifest.jsonl` (atomically, last) into
    `out_dir`."""
    from .. import __version__
    from . import relight as L

    out_dir = Path(out_dir)
    directions = tuple(directions)
    check_options(max(count, 1), size, seed, val_fraction, test_fraction, supersample, workers, directions)
    if count < 0:
        raise UsageError(f"--count must be 0 (one scene per design) or more, not {count}")
    check_share("--colored-lights", colored_lights)
    check_share("--shadow-tint", shadow_tint)
    require_resvg()
    started = time.perf_counter()
    designs = designs_of_splits(sources, splits, val_fraction, test_fraction)  # a few seconds; the output folder is untouched until it passes
    count = count or len(designs)
    images = prepare_output(out_dir, overwrite)
    ids = [scene_id(i, count) for i in range(count)]
    drawn = [designs[i % len(designs)] for i in range(count)]
    lightings = [tuple(draw_lightings(seed, i, directions, colored_lights, shadow_tint)) for i in range(count)]
    chunk = chunk_size(count, workers)
    jobs = [
        ArtJob(images, seed, tuple((i, ids[i], drawn[i].svg, lightings[i]) for i in range(start, min(start + chunk, count))),
               size, supersample)
        for start in range(0, count, chunk)
    ]
    run_jobs(_write_chunk, jobs, workers, count, on_progress)

    split_of = {d.name: P.design_split(d.name, val_fraction, test_fraction) for d in designs}
    lines = []
    for i, sid in enumerate(ids):
        design = drawn[i]
        for lighting in lightings[i]:
            extra: dict[str, Any] = {"design": design.key}
            if lighting.color is not None:
                extra.update(light=lighting.color.name, light_color=list(lighting.color.rgb), shadow_tint=lighting.tint_shadows)
            lines.append(manifest_line(sid, lighting.direction, colored_prompt(lighting.direction, lighting.color),
                                       split_of[design.name], **extra))
    used = designs[:count]
    split_counts = {s: sum(1 for d in used if split_of[d.name] == s) for s in SPLITS}
    per_package = P.count_by(used, "package")
    colored = sum(1 for ls in lightings for lt in ls if lt.color is not None)
    info = {
        "generator": "lasagna dataset flat-art", "version": __version__, "count": count, "size": size, "seed": seed,
        "supersample": supersample, "val_fraction": val_fraction, "test_fraction": test_fraction, "splits": list(splits),
        "colored_lights": colored_lights, "shadow_tint": shadow_tint,
        "sources": package_versions(sources), "licences": {k: LICENCES[k] for k in per_package},
        "designs": per_package, "design_splits": split_counts, "pairs": len(lines), "colored_pairs": colored,
        "selection": {
            "categories": list(P.OBJECT_CATEGORIES), "no": "skin-tone variants, faces outside Animals & Nature",
            "coverage": list(COVERAGE), "largest_piece_share": MIN_MAIN_SHARE, "measured_at_px": RULE_SIZE,
        },
        "directions": {name: {"vector": list(DIRECTIONS[name]), "prompt": colored_prompt(name, None)} for name in directions},
        "light_colors": {c.name: {"phrase": c.phrase, "rgb": list(c.rgb), "shadow": list(c.shadow)} for c in LIGHT_COLORS.values()},
        "render": {
            "shape": "Poisson inflation, height = 2 sqrt(u); colour regions stacked at 0.25, depth 0.45-0.8",
            "light_elevation_deg": round(float(np.degrees(LIGHT_ELEVATION)), 3), "base_gain": BASE_GAIN,
            "ambient": [0.25, 0.35], "key": [0.8, 1.0], "backgrounds": list(L.BACKGROUNDS),
            "colour": "sRGB, shading in linear light",
        },
        "images": IMAGES, "manifest": MANIFEST,
    }
    write_dataset(out_dir, info, lines)
    return FlatArtResult(out_dir, out_dir / MANIFEST, count, len(lines), colored, size, seed, list(directions),
                         per_package, split_counts, time.perf_counter() - started)
