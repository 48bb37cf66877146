"""`lasagna train color`: the built-in colouring prior (`lasagna_core.priors.builtin_color`) on the data of
`lasagna dataset line-art`, eps-prediction DDPM with the shared loop (`denoiser.py`).

Each example is a guide (line art or a greyscale picture) and its flats. The target is the picture the
colour layer makes: guide x flats for line art (Multiply), the flats themselves for greyscale (their Lum is
the guide, so the Color blend gives them back). Hints are drawn afresh every batch: 0 to `MAX_DOTS` dots of
2 x 2 pixels at random points inside the art's regions (not on a region's edge), in the flats' colour there,
none for a share `no_hints` of the examples. Paper the drawing encloses (`labelling.enclosed_paper`: inside a
handle, a ring of beads) weighs `hole_weight` times a pixel elsewhere in the loss: the line art draws such a
hole as a closed region like any other, and only a few pixels of a few drawings say that it stays paper
(docs/training/color64-run.md). The colour word (the manifest's `color`) is dropped to the null class for a
share `class_dropout`, since most colourings are asked for with no prompt, and, independently,
the guide and hints for a share `guide_dropout`: the prior's unconditional row (`BuiltinColorPrior`) drops
both, so that guidance amplifies what the line art and the hints say about colour.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..color_words import COLOR_WORDS
from ..errors import DocumentError, UsageError
from ..priors.schedule import NoiseSchedule
from ..synth.dataset import check_split, read_json_lines, split_of
from .curve import draw_loss_curve
from .denoiser import Batch, DenoiserSettings, fit_denoiser, new_denoiser
from .manifest import load_image, manifest_path
from .run import ProgressCallback, TrainingRun, TrainResult

KINDS = ("line-art", "greyscale")
MAX_DOTS = 6


@dataclass
class ColorConfig(DenoiserSettings):
    size: int = 64
    class_dropout: float = 0.5
    no_hints: float = 0.4
    guide_dropout: float = 0.15  # the guide and hints dropped (zeros): the unconditional row guidance pushes away from
    hole_weight: float = 1.0  # loss weight of the paper the drawing encloses (1: as any pixel)


@dataclass(frozen=True)
class ColorExample:
    input: Path
    target: Path
    regions: Path | None
    kind: str
    color: str | None
    split: str
    scene: str


def read_color_manifest(data: Path, split: str | None = None) -> list[ColorExample]:
    """The colouring manifest's examples (of one split if given); DocumentError naming the line when one is wrong."""
    check_split(split)
    path = manifest_path(data)
    examples = []
    for where, item in read_json_lines(path, ("input", "target")):
        kind = item.get("kind", "line-art")
        if kind not in KINDS:
            raise DocumentError(f"{where}: kind must be one of {', '.join(KINDS)}, not '{kind}'")
        color = item.get("color")
        if color is not None and color not in COLOR_WORDS:
            raise DocumentError(f"{where}: unknown colour '{color}' (use {', '.join(COLOR_WORDS)})")
        record_split = split_of(item, where)
        if split is None or record_split == split:
            regions = item.get("regions")
            examples.append(ColorExample(path.parent / item["input"], path.parent / item["target"],
                                         path.parent / regions if regions else None, kind, color, record_split,
                                         str(item.get("scene", item["input"]))))
    return examples


@dataclass
class ColorPairs:
    """A split in memory: guides [N,1,S,S] and flats [N,3,S,S] uint8, line-art flags [N] bool, colour class ids
    [N] (the null class when none), hint candidates [N,1,S,S] bool (inside a region, away from its edges), holes
    [N,1,S,S] bool (paper the drawing encloses; none without the manifest's region ids)."""

    guides: Tensor
    flats: Tensor
    line_art: Tensor
    classes: Tensor
    candidates: Tensor
    holes: Tensor


def load_color_pairs(examples: list[ColorExample], size: int) -> ColorPairs:
    from ..flatart.coloring import read_region_ids
    from ..labelling import enclosed_paper

    if not examples:
        raise UsageError("the manifest has no examples for this split")
    names = list(COLOR_WORDS)
    guides, flats, candidates, holes = [], [], [], []
    cache: dict[Path, tuple[Tensor, Tensor, Tensor]] = {}
    for e in examples:
        if e.target not in cache:
            target = load_image(e.target, size)
            uniform = (F.max_pool2d(target[None], 3, 1, 1) + F.max_pool2d(-target[None], 3, 1, 1)).amax(1)[0] < 8 / 255
            inside, hole = torch.ones_like(uniform), torch.zeros_like(uniform)
            if e.regions is not None:
                ids = read_region_ids(e.regions) - 1
                labels, first_hole = enclosed_paper(ids)
                inside = _at(torch.from_numpy(ids) >= 0, size) > 0.5
                hole = _at(torch.from_numpy(labels >= first_hole), size) > 0.5
            cache[e.target] = ((target * 255).round().to(torch.uint8), (uniform & inside)[None], hole[None])
        flat, candidate, hole = cache[e.target]
        flats.append(flat)
        candidates.append(candidate)
        holes.append(hole)
        guides.append((load_image(e.input, size, gray=True) * 255).round().to(torch.uint8))
    classes = torch.tensor([names.index(e.color) if e.color else len(names) for e in examples])
    line_art = torch.tensor([e.kind == "line-art" for e in examples])
    return ColorPairs(torch.stack(guides), torch.stack(flats), line_art, classes, torch.stack(candidates), torch.stack(holes))


def _at(mask: Tensor, size: int) -> Tensor:
    """A full-size mask [H, W] as the share of each working pixel [S, S] it covers."""
    return F.interpolate(mask[None, None].float(), size=(size, size), mode="area")[0, 0]


def hint_dots(flats: Tensor, candidates: Tensor, counts: Tensor, rng: torch.Generator) -> tuple[Tensor, Tensor]:
    """(colours [B,3,S,S], mask [B,1,S,S]): `counts[b]` dots of 2 x 2 pixels at candidate points of example b,
    in the flats' colour there (candidates have a uniform 3 x 3 neighbourhood, so the dot is one colour)."""
    b, _, s, _ = flats.shape
    weights = candidates.flatten(1).float() + 1e-6
    points = torch.multinomial(weights, MAX_DOTS, replacement=True, generator=rng)  # [B, MAX_DOTS]
    keep = torch.arange(MAX_DOTS)[None] < counts[:, None]
    mask = torch.zeros(b, s * s)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        y = (points // s + dy).clamp(max=s - 1)
        x = (points % s + dx).clamp(max=s - 1)
        mask.scatter_add_(1, y * s + x, keep.float())
    mask = (mask > 0).float().view(b, 1, s, s)
    return flats * mask, mask


def color_batch(pairs: ColorPairs, config: ColorConfig, schedule: NoiseSchedule, rng: torch.Generator,
                idx: Tensor | None = None) -> Batch:
    from ..priors.builtin_color import color_channels

    n = pairs.guides.shape[0]
    if idx is None:
        idx = torch.randint(0, n, (config.batch_size,), generator=rng)
    b = idx.shape[0]
    guide = pairs.guides[idx].float() / 255
    flats = pairs.flats[idx].float() / 255
    candidates, holes = pairs.candidates[idx], pairs.holes[idx]
    if config.flip:
        flip = torch.rand(b, generator=rng) < 0.5
        guide[flip], flats[flip], candidates[flip] = guide[flip].flip(-1), flats[flip].flip(-1), candidates[flip].flip(-1)
        holes[flip] = holes[flip].flip(-1)
    counts = torch.randint(1, MAX_DOTS + 1, (b,), generator=rng)
    counts[torch.rand(b, generator=rng) < config.no_hints] = 0
    hint_rgb, mask = hint_dots(flats, candidates, counts, rng)
    classes = pairs.classes[idx].clone()
    classes[torch.rand(b, generator=rng) < config.class_dropout] = len(COLOR_WORDS)
    picture = torch.where(pairs.line_art[idx][:, None, None, None], guide * flats, flats) * 2 - 1
    channels = color_channels(guide, hint_rgb, mask)
    channels[torch.rand(b, generator=rng) < config.guide_dropout] = 0.0
    t = torch.randint(0, schedule.num_train_timesteps, (b,), generator=rng)
    noise = torch.randn(picture.shape, generator=rng)
    noisy = schedule.add_noise(picture, noise, t)
    return {"input": torch.cat([noisy, channels], 1), "t": t, "classes": classes,
            "target": schedule.training_target(picture, noise, t), "weight": 1 + (config.hole_weight - 1) * holes.float()}


def train_color(data: Path, out: Path, config: ColorConfig, *, on_progress: ProgressCallback | None = None) -> TrainResult:
    """Train (or resume) the built-in colouring prior on `data`'s train split; write `out` (.safetensors +
    .sha256) and `out` with suffix `.loss.png`, the newest moving-average weights whether the run finished or
    stopped at `max_minutes` (then `finished` is False), so a long run can be tried between sessions."""
    from ..priors import builtin_color, pixel_file

    started = time.perf_counter()
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UsageError(f"--out must name a .safetensors file, not '{out}'")
    train_examples = read_color_manifest(data, "train")
    train = load_color_pairs(train_examples, config.size)
    val_examples = read_color_manifest(data, "val")
    val = load_color_pairs(val_examples[:256], config.size) if val_examples else None
    start = None
    if config.init is not None:
        threads = torch.get_num_threads()
        start = builtin_color.BuiltinColorPrior.load(config.init)
        torch.set_num_threads(threads)  # loading pins inference to one thread; training keeps the user's choice
    unet_config = pixel_file.fine_tune_config(start.unet, config.size) if start else config.unet or builtin_color.default_unet_config(config.size)
    sched_config = start.scheduler_config if start else pixel_file.default_scheduler_config()
    model, ema, optimizer = new_denoiser(unet_config, None if start is None else start.unet, config)
    schedule = NoiseSchedule.from_config(sched_config)
    rng = torch.Generator().manual_seed(config.seed)
    run = TrainingRun(out, {"unet": unet_config, "task": "color", "size": config.size, "init": config.init},
                      {"model": model, "ema": ema}, optimizer, rng, config,
                      {"loss": [], "val_step": [], "val_loss": []}, started)
    run.resume()
    val_batch = None
    if val is not None:
        fixed = ColorConfig(**{**config.__dict__, "flip": False, "class_dropout": 0.0, "guide_dropout": 0.0})
        val_batch = color_batch(val, fixed, schedule, torch.Generator().manual_seed(1234), torch.arange(val.guides.shape[0]))
    fit_denoiser(model, ema, optimizer, run, config, lambda: color_batch(train, config, schedule, rng), val_batch, on_progress)

    history = run.history
    curve = draw_loss_curve(history, out.with_suffix(".loss.png"), f"built-in colouring prior: loss, {run.step} steps")
    training: dict[str, Any] = {
        "steps": run.step, "batch_size": config.batch_size, "learning_rate": config.learning_rate, "size": config.size,
        "hole_weight": config.hole_weight, "train_pairs": train.guides.shape[0], "train_scenes": len({e.scene for e in train_examples}),
        "wall_seconds": round(run.seconds, 1),
        "final_train_loss": float(np.mean(history["loss"][-50:])) if history["loss"] else None,
        "final_val_loss": history["val_loss"][-1] if history["val_loss"] else None,
        "init": config.init, "torch": torch.__version__, "threads": torch.get_num_threads(), "finished": run.finished,
    }
    pixel_file.save_weights(ema, out, task="color", classes=list(COLOR_WORDS), scheduler_config=sched_config,
                                training=training)
    return TrainResult(out, run.step, config.steps, run.seconds, run.finished, curve, {**history, "training": training})
