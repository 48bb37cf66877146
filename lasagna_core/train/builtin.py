"""`lasagna train builtin`: the built-in pixel-space prior (`lasagna_core.priors.builtin`), eps-prediction DDPM
on the relit image, given the base as extra channels (with `light_color`, the light's colour too) and the
direction as a class, both dropped at random (classifier-free guidance). Horizontal flips with left<->right
swapped double the data. Weights are kept as an exponential moving average (EMA), which is what gets saved.
A fine-tune from a prior without the light-colour channels gets them with zero weights, so it starts as the
prior it starts from and learns what the colour adds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from ..priors.schedule import NoiseSchedule
from .curve import draw_loss_curve
from .manifest import PairSet, load_pairs, read_manifest
from .denoiser import DenoiserSettings, fit_denoiser, new_denoiser
from .run import ProgressCallback, TrainingRun, TrainResult


@dataclass
class BuiltinConfig(DenoiserSettings):
    dropout: float = 0.1  # probability of dropping the direction, and (independently) the base
    light_color: bool = False  # condition on the light's colour (the manifest's light_color; white when absent)


def train_builtin(data: Path, out: Path, config: BuiltinConfig, *, on_progress: ProgressCallback | None = None) -> TrainResult:
    """Train (or resume) the built-in prior on `data`'s train split; write `out` (.safetensors + .sha256) and
    `out` with suffix `.loss.png`, the newest moving-average weights whether the run finished or stopped at
    `max_minutes` (then `finished` is False, in the result and in the file's training record), so a long run
    can be evaluated between sessions, as `train_color` does."""
    from ..priors import builtin, pixel_file

    started = time.perf_counter()
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UsageError(f"--out must name a .safetensors file, not '{out}'")
    if config.init is not None and config.unet is not None:
        raise UsageError("a fine-tune keeps the architecture of the prior it starts from: give --init or an architecture, not both")
    start = _initial_prior(config.init) if config.init is not None else None
    train_examples = read_manifest(data, "train")
    if start is not None:
        unknown = sorted({e.direction for e in train_examples} - set(start.directions))
        if unknown:
            raise UsageError(f"--init '{config.init}' was not trained for the data's direction(s) {', '.join(unknown)}")
    train = load_pairs(train_examples, config.size, None if start is None else start.directions)
    val_examples = read_manifest(data, "val")
    val = load_pairs(val_examples[:256], config.size, train.directions) if val_examples else None
    directions = train.directions
    if start is not None:
        unet_config = pixel_file.fine_tune_config(start.unet, config.size)
        if config.light_color:
            unet_config["in_channels"] = builtin.in_channels(light_color=True)
        sched_config = start.scheduler_config
    else:
        unet_config = config.unet or builtin.default_unet_config(config.size, len(directions), light_color=config.light_color)
        sched_config = pixel_file.default_scheduler_config()
    light = builtin.takes_light_color(unet_config)
    if config.light_color and not light:
        raise UsageError(f"--light-color needs {builtin.in_channels(True)} input channels; the architecture given has {unet_config['in_channels']}")
    model, ema, optimizer = new_denoiser(unet_config, None if start is None else start.unet, config)
    schedule = NoiseSchedule.from_config(sched_config)
    rng = torch.Generator().manual_seed(config.seed)
    init = None if start is None else pixel_file.sha256_of(start.weights)
    run = TrainingRun(out, {"unet": unet_config, "directions": directions, "size": config.size, "init": init},
                      {"model": model, "ema": ema}, optimizer, rng, config,
                      {"loss": [], "val_step": [], "val_loss": []}, started)
    run.resume()

    n = train.bases.shape[0]
    val_batch = _fixed_val_batch(val, schedule, light) if val is not None else None
    fit_denoiser(model, ema, optimizer, run, config, lambda: _builtin_batch(train, config, schedule, rng, n, light),
                 val_batch, on_progress)

    seconds, finished, step, history = run.seconds, run.finished, run.step, run.history
    curve = draw_loss_curve(history, out.with_suffix(".loss.png"), f"built-in prior: loss, {step} steps")
    training = {
        "steps": step,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "size": config.size,
        "light_color": light,
        "train_pairs": n,
        "train_scenes": len({e.scene for e in train_examples}),
        "wall_seconds": round(seconds, 1),
        "final_train_loss": float(np.mean(history["loss"][-50:])) if history["loss"] else None,
        "final_val_loss": history["val_loss"][-1] if history["val_loss"] else None,
        "init": None if init is None else {"model": config.init, "sha256": init},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "finished": finished,
    }
    pixel_file.save_weights(ema, out, task="relight", classes=directions, scheduler_config=sched_config, training=training)
    return TrainResult(out, step, config.steps, seconds, finished, curve, {**history, "training": training})


@dataclass
class _StartingPoint:
    """What a fine-tune takes from the prior it starts from."""

    unet: Any
    directions: list[str]
    scheduler_config: dict[str, Any]
    weights: Path


def _initial_prior(model: str) -> _StartingPoint:
    """The prior a fine-tune starts from (SHA-256 checked like any load)."""
    from ..priors import builtin

    threads = torch.get_num_threads()
    prior = builtin.BuiltinPrior.load(model)
    torch.set_num_threads(threads)  # loading pins inference to one thread; training keeps the user's choice
    weights = builtin.BuiltinPrior.shipped() if builtin.BuiltinPrior.is_own_name(model) else Path(model).expanduser()
    return _StartingPoint(prior.unet, prior.directions, prior.scheduler_config, weights)


def _builtin_batch(pairs: PairSet, config: BuiltinConfig, schedule: NoiseSchedule, rng: torch.Generator, n: int,
                   light: bool) -> dict[str, Tensor]:
    from ..priors.builtin import condition_pictures

    idx = torch.randint(0, n, (config.batch_size,), generator=rng)
    base = pairs.bases[idx].float() / 255
    target = pairs.targets[idx].float() / 127.5 - 1
    classes = pairs.classes[idx].clone()
    if config.flip:
        flip = (torch.rand(config.batch_size, generator=rng) < 0.5) & (pairs.mirrored[idx] >= 0)
        base[flip] = base[flip].flip(-1)
        target[flip] = target[flip].flip(-1)
        classes[flip] = pairs.mirrored[idx][flip]
    null = len(pairs.directions)
    drop_class = torch.rand(config.batch_size, generator=rng) < config.dropout
    drop_base = torch.rand(config.batch_size, generator=rng) < config.dropout
    classes[drop_class | (classes < 0)] = null
    pictures = condition_pictures(base, pairs.lights[idx] if light else None)
    pictures[drop_base] = 0.0
    t = torch.randint(0, schedule.num_train_timesteps, (config.batch_size,), generator=rng)
    noise = torch.randn(target.shape, generator=rng)
    noisy = schedule.add_noise(target, noise, t)
    return {"input": torch.cat([noisy, pictures], 1), "t": t, "classes": classes,
            "target": schedule.training_target(target, noise, t)}


def _fixed_val_batch(val: PairSet, schedule: NoiseSchedule, light: bool) -> dict[str, Tensor]:
    rng = torch.Generator().manual_seed(1234)
    cfg = BuiltinConfig(batch_size=val.bases.shape[0], dropout=0.0, flip=False)
    return _builtin_batch(val, cfg, schedule, rng, val.bases.shape[0], light)
