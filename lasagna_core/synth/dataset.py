"""Synthetic relighting data sets on disk: PNGs, `manifest.jsonl` and fixed train/val/test splits.

Layout written by `generate` (`lasagna dataset synth OUT_DIR`)::

    OUT_DIR/manifest.jsonl            one line per (scene, direction) pair, scenes in order
    OUT_DIR/dataset.json              how it was made: seed, count, size, directions, render constants
    OUT_DIR/images/<id>_base.png      the flat, unshaded picture (albedo x constant): the model's input
    OUT_DIR/images/<id>_<dir>.png     the same scene relit from <dir> (left, top-right, back, ...): the target
    OUT_DIR/images/<id>_mask.png      8-bit gray, the objects' coverage: >= 128 is object, else background

The manifest (the contract `lasagna train` reads; real relighting data such as ReNe can be converted to
the same lines): UTF-8 JSON Lines, one object per line::

    {"input": "images/00012_base.png", "target": "images/00012_left.png", "prompt": "light from the left",
     "direction": "left", "mask": "images/00012_mask.png", "split": "train", "scene": "00012"}

- input, target: image paths relative to the manifest's folder (forward slashes), same size, RGB.
- prompt: text for text-conditioned models; direction: a name of `lasagna_core.directions.DIRECTIONS`
  (for a converted set without it, `read_manifest` parses it from the prompt).
- mask: optional, gray image, foreground >= 128 (used by the direction metric); absent means the whole image.
- split: "train", "val" or "test" (absent means train). All lines of one scene share a split, so no scene
  seen in training is in the held-out sets.
- scene: an id grouping the lines that share an input (absent means the input path).

Determinism: scene i of seed K is drawn from its own random stream (`np.random.SeedSequence(K,
spawn_key=(0, i))`) and its split from another (`spawn_key=(1, i)`), so the same seed gives byte-identical
files on the same machine and software, whatever `--workers`, and `--count 6000` starts with the same
3000 scenes, in the same splits, as `--count 3000`. Splits are drawn per scene (val with probability
val_fraction, test with test_fraction), so their sizes are close to, not exactly, the fractions.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..directions import DIRECTION_NAMES, DIRECTIONS, PROMPTS, parse_direction
from ..errors import DocumentError, OutputError, UsageError
from .render import Render
from .scene import SceneMix

MANIFEST = "manifest.jsonl"
INFO = "dataset.json"
IMAGES = "images"
SPLITS = ("train", "val", "test")
_OWN_IMAGE = re.compile(r"^\d+_[a-z-]+\.png$")

Progress = Callable[[int, int], None]


@dataclass
class SynthResult:
    out_dir: Path
    manifest: Path
    scenes: int
    pairs: int
    size: int
    seed: int
    directions: list[str]
    splits: dict[str, int] = field(default_factory=dict)  # scenes per split
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir), "manifest": str(self.manifest), "scenes": self.scenes, "pairs": self.pairs,
            "size": self.size, "seed": self.seed, "directions": self.directions, "splits": self.splits,
            "seconds": round(self.seconds, 3),
        }


def scene_id(index: int, count: int) -> str:
    return f"{index:0{max(5, len(str(max(count - 1, 0))))}d}"


def scene_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, index)))


def scene_split(seed: int, index: int, val_fraction: float, test_fraction: float) -> str:
    u = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index))).uniform()
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def write_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)).save(path, format="PNG", compress_level=6)


@dataclass(frozen=True)
class RenderJob:
    """Scenes for one worker process to render and write (picklable: it crosses the process boundary)."""

    images: Path
    seed: int
    scenes: tuple[tuple[int, str], ...]  # (index, id)
    size: int
    supersample: int
    directions: tuple[str, ...]
    mix: SceneMix


def _write_chunk(job: RenderJob) -> int:
    """Render each scene of `job` and write its base, mask and one PNG per direction."""
    from .render import render
    from .scene import random_scene

    for index, sid in job.scenes:
        scene = random_scene(scene_rng(job.seed, index), job.mix)
        result = render(scene, job.size, supersample=job.supersample, directions=job.directions)
        write_render(result, job.images, sid)
    return len(job.scenes)


def write_render(result: Render, images: Path, sid: str) -> None:
    """A scene's base, mask and one target per direction as `<id>_base.png`, `<id>_mask.png`, `<id>_<dir>.png`."""
    write_png(result.base, images / f"{sid}_base.png")
    write_png(result.mask, images / f"{sid}_mask.png")
    for name, target in result.targets.items():
        write_png(target, images / f"{sid}_{name}.png")


def check_options(count: int, size: int, seed: int, val_fraction: float, test_fraction: float, supersample: int,
                  workers: int, directions: Sequence[str]) -> None:
    """The options every renderer of data shares, refused before any work with one line each."""
    if count < 1:
        raise UsageError(f"--count must be at least 1, not {count}")
    if not 8 <= size <= 4096:
        raise UsageError(f"--size must be between 8 and 4096 pixels, not {size}")
    if seed < 0:
        raise UsageError(f"--seed must be 0 or more, not {seed}")
    for name, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise UsageError(f"{name} must be at least 0 and below 1, not {value}")
    if val_fraction + test_fraction >= 1.0:
        raise UsageError(f"--val-fraction + --test-fraction must leave scenes for training (they add up to {val_fraction + test_fraction:g})")
    if not 1 <= supersample <= 8:
        raise UsageError(f"--supersample must be between 1 and 8, not {supersample}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown or not directions:
        raise UsageError(f"unknown light direction(s) {', '.join(unknown) or '(none given)'}: use {', '.join(DIRECTION_NAMES)}")


def check_share(option: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"{option} must be between 0 and 1, not {value}")


def prepare_output(out_dir: Path, overwrite: bool) -> Path:
    """Create OUT_DIR/images; refuse a non-empty folder unless overwrite, which removes only our own files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputError(f"{out_dir}: folder is not empty; pass --overwrite to replace the data set in it")
        for name in (MANIFEST, INFO):
            (out_dir / name).unlink(missing_ok=True)
        images = out_dir / IMAGES
        if images.is_dir():
            for path in images.iterdir():
                if path.is_file() and _OWN_IMAGE.match(path.name):
                    path.unlink()
    try:
        (out_dir / IMAGES).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: can't create the folder ({exc.strerror or exc})") from None
    return out_dir / IMAGES


def generate(
    out_dir: Path,
    *,
    count: int,
    size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    supersample: int = 2,
    workers: int = 1,
    overwrite: bool = False,
    directions: Sequence[str] = DIRECTION_NAMES,
    mix: SceneMix = SceneMix(),
    on_progress: Progress | None = None,
) -> SynthResult:
    """Render `count` random scenes, each as a base and one relit picture per direction, and write the
    images, `manifest.jsonl` (atomically, last) and `dataset.json` into `out_dir`."""
    from .. import __version__
    from . import lighting

    out_dir = Path(out_dir)
    directions = tuple(directions)
    check_options(count, size, seed, val_fraction, test_fraction, supersample, workers, directions)
    check_share("--backdrop-fraction", mix.backdrop)
    check_share("--photo-like", mix.photo_like)
    images = prepare_output(out_dir, overwrite)
    started = time.perf_counter()
    ids = [scene_id(i, count) for i in range(count)]
    chunk = chunk_size(count, workers)
    jobs = [
        RenderJob(images, seed, tuple((i, ids[i]) for i in range(start, min(start + chunk, count))), size, supersample,
                  directions, mix)
        for start in range(0, count, chunk)
    ]
    run_jobs(_write_chunk, jobs, workers, count, on_progress)

    splits = [scene_split(seed, i, val_fraction, test_fraction) for i in range(count)]
    lines = []
    for i, sid in enumerate(ids):
        lines += [manifest_line(sid, name, PROMPTS[name], splits[i]) for name in directions]
    split_counts = {s: splits.count(s) for s in SPLITS}
    info = {
        "generator": "lasagna dataset synth", "version": __version__, "count": count, "size": size, "seed": seed,
        "supersample": supersample, "backdrop_fraction": mix.backdrop, "photo_like": mix.photo_like, "val_fraction": val_fraction, "test_fraction": test_fraction,
        "splits": split_counts, "pairs": len(lines),
        "directions": {name: {"vector": list(DIRECTIONS[name]), "prompt": PROMPTS[name]} for name in directions},
        "render": {
            "camera": "orthographic, looking down -z at x, y in [-1, 1]", "light_elevation_deg": round(np.degrees(lighting.LIGHT_ELEVATION), 3),
            "back_ring": {"lights": lighting.BACK_SHADING, "shadow_rays": lighting.BACK_RING, "elevation_deg": -round(np.degrees(lighting.BACK_ELEVATION), 3), "gain": lighting.BACK_GAIN},
            "base_gain": lighting.BASE_GAIN, "ambient": [0.25, 0.35], "key": [0.8, 1.0], "colour": "sRGB, shading in linear light",
        },
    }
    write_dataset(out_dir, info, lines)
    return SynthResult(out_dir, out_dir / MANIFEST, count, len(lines), size, seed, list(directions), split_counts,
                       time.perf_counter() - started)


def manifest_line(sid: str, direction: str, prompt: str, split: str, **extra: Any) -> str:
    """One pair of scene `sid` as a manifest line (the keys documented above, then any extra ones)."""
    return json.dumps({
        "input": f"{IMAGES}/{sid}_base.png", "target": f"{IMAGES}/{sid}_{direction}.png", "prompt": prompt,
        "direction": direction, "mask": f"{IMAGES}/{sid}_mask.png", "split": split, "scene": sid, **extra,
    }, ensure_ascii=False)


def chunk_size(count: int, workers: int) -> int:
    """Scenes per job: small enough to spread over the workers and report progress, at most 32."""
    return max(1, min(32, count // (workers * 8) or 1))


def run_jobs(write: Callable[[Any], int], jobs: Sequence[Any], workers: int, total: int, on_progress: Progress | None) -> None:
    """Run `write` (a module-level function returning the scenes it wrote) on each job, in `workers` spawned
    processes when more than one, reporting scenes done out of `total`."""
    done = 0
    if on_progress:
        on_progress(0, total)
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            done += write(job)
            if on_progress:
                on_progress(done, total)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            for n in pool.map(write, jobs):
                done += n
                if on_progress:
                    on_progress(done, total)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def write_dataset(out_dir: Path, info: dict[str, Any], lines: Sequence[str]) -> None:
    """`dataset.json`, then `manifest.jsonl` last, each atomically: a manifest on disk means a complete set."""
    from ..writing.atomic import atomic_write

    with atomic_write(out_dir / INFO) as f:
        f.write((json.dumps(info, indent=2) + "\n").encode("utf-8"))
    with atomic_write(out_dir / MANIFEST) as f:
        f.write(("\n".join(lines) + "\n").encode("utf-8"))


REQUIRED = ("input", "target", "prompt")


def check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")


def split_of(item: dict[str, Any], where: str) -> str:
    """A manifest line's split ("train" when absent); DocumentError naming the line for anything else."""
    split = item.get("split", "train")
    if split not in SPLITS:
        raise DocumentError(f"{where}: split must be one of {', '.join(SPLITS)}, not '{split}'")
    return split


def read_json_lines(path: Path, required: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, object) for each non-blank line of a JSON Lines manifest whose `required` keys are non-empty
    strings; DocumentError naming the file and line for anything else. Shared by every manifest reader."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DocumentError(f"{path}: can't read the manifest ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DocumentError(f"{path}: not a UTF-8 JSON Lines manifest") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise DocumentError(f"{where}: expected a JSON object with {', '.join(required)}")
        missing = [k for k in required if not isinstance(item.get(k), str) or not item.get(k)]
        if missing:
            raise DocumentError(f"{where}: missing {', '.join(missing)}")
        yield where, item


def _light_color(value: Any, where: str) -> tuple[float, float, float] | None:
    """A coloured light's sRGB (flat-art data); None for white light."""
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in value)):
        raise DocumentError(f"{where}: 'light_color' must be three numbers in [0, 1] (sRGB), not {json.dumps(value)}")
    return (float(value[0]), float(value[1]), float(value[2]))


def read_manifest(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """The lines of a manifest (synthetic or converted), checked and completed, optionally one split only.

    Each record gets `input`, `target`, `mask` (None when absent) as absolute Paths, `prompt`, `direction`
    (parsed from the prompt when absent), `split` (default "train"), `scene` (default: the input path) and
    `light_color` (a coloured light's sRGB as a tuple; None when absent: white light).
    A line that is not a JSON object, lacks a required key, or names an unknown direction or split raises
    DocumentError naming the file and line. Files are not opened here.
    """
    check_split(split)
    path = Path(path)
    root = path.parent
    records = []
    for where, item in read_json_lines(path, REQUIRED):
        direction = item.get("direction")
        if direction is None:
            try:
                direction = parse_direction(item["prompt"])
            except UsageError as exc:
                raise DocumentError(f"{where}: no 'direction' and {exc}") from None
        elif direction not in DIRECTIONS:
            raise DocumentError(f"{where}: unknown direction '{direction}' (use {', '.join(DIRECTION_NAMES)})")
        record_split = split_of(item, where)
        if split is not None and record_split != split:
            continue
        mask = item.get("mask")
        records.append({
            **item,
            "input": root / item["input"], "target": root / item["target"], "mask": root / mask if mask else None,
            "prompt": item["prompt"], "direction": direction, "split": record_split,
            "scene": str(item.get("scene", item["input"])), "light_color": _light_color(item.get("light_color"), where),
        })
    return records
