"""The optimisation loop both pixel-space priors' trainers share (`builtin` relights, `color` colours): an
eps-prediction step on a batch the trainer makes, gradient clipping, the EMA weights that get saved, the
learning-rate schedule, and a fixed validation batch's loss at every checkpoint."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DistillationError
from .run import ProgressCallback, RunSettings, TrainingRun, TrainStep, learning_rate_at

@dataclass
class DenoiserSettings(RunSettings):
    """What both pixel-space trainers' configurations share."""

    steps: int = 2000
    batch_size: int = 48
    learning_rate: float = 1e-3
    warmup: int = 100
    size: int = 32
    ema: float = 0.995
    flip: bool = True
    unet: dict[str, Any] | None = None  # architecture override (default: pixel_file.default_unet_config)
    init: str | None = None  # fine-tune: start from this prior (its name or a weights file), its architecture and classes


Batch = dict[str, Tensor]  # input [B,C,S,S], t [B], classes [B], target [B,3,S,S]; optional weight [B,1,S,S] per pixel


def new_denoiser(unet_config: dict[str, Any], start: Any | None, config: DenoiserSettings) -> tuple[Any, Any, torch.optim.Optimizer]:
    """(model, ema, optimizer) for a run: a fresh U-Net seeded by `config.seed` (or `start`'s weights for a
    fine-tune), its frozen moving-average copy, and AdamW without weight decay. Input channels `start` lacks
    (a condition added by the fine-tune) get zero weights, as IC-Light widens Stable Diffusion's `conv_in`:
    the widened network computes exactly what `start` did until training gives them a use."""
    from ..priors.pixel_file import new_unet

    torch.manual_seed(config.seed)
    model = new_unet(unet_config)
    if start is not None:
        model.load_state_dict(_widened(start.state_dict(), model.state_dict()["conv_in.weight"].shape[1]))
    ema = new_unet(unet_config)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    return model, ema, torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)


def _widened(state: dict[str, Tensor], in_channels: int) -> dict[str, Tensor]:
    weight = state["conv_in.weight"]
    missing = in_channels - weight.shape[1]
    if missing <= 0:
        return state
    zeros = weight.new_zeros(weight.shape[0], missing, *weight.shape[2:])
    return {**state, "conv_in.weight": torch.cat([weight, zeros], 1)}


def fit_denoiser(
    model: Any, ema: Any, optimizer: torch.optim.Optimizer, run: TrainingRun, config: DenoiserSettings,
    next_batch: Callable[[], Batch], val_batch: Batch | None, on_progress: ProgressCallback | None,
) -> None:
    """Train `model` until `run` says stop (finished or past its deadline), keeping `ema` as its moving average
    (`config.ema`)."""

    def validate() -> None:
        if val_batch is not None:
            run.history["val_step"].append(run.step)
            run.history["val_loss"].append(val_loss(ema, val_batch))

    model.train()
    with run.stopping_on_signals():
        _steps(model, ema, optimizer, run, config, next_batch, validate, on_progress)


def _steps(model: Any, ema: Any, optimizer: torch.optim.Optimizer, run: TrainingRun, config: DenoiserSettings,
           next_batch: Callable[[], Batch], validate: Callable[[], None], on_progress: ProgressCallback | None) -> None:
    fixed: Batch | None = None
    while not run.finished:
        if config.overfit_one_batch and fixed is not None:
            batch = fixed
        else:
            batch = next_batch()
            if config.overfit_one_batch:
                fixed = batch
        lr = learning_rate_at(run.step, config.steps, config.learning_rate, config.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        pred = model(batch["input"], batch["t"], class_labels=batch["classes"], return_dict=False)[0]
        loss = weighted_mse(pred, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(config.ema, (1 + run.step) / (10 + run.step))
            for e, p in zip(ema.parameters(), model.parameters()):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        value = float(loss.item())
        if not math.isfinite(value):
            raise DistillationError(f"training diverged (loss {value}) at step {run.step + 1}; lower --lr")
        stop = run.step_done(value, validate)
        if on_progress is not None:
            on_progress(TrainStep(run.step, config.steps, value, lr, run.seconds))
        if stop:
            break


def weighted_mse(pred: Tensor, batch: Batch) -> Tensor:
    """The mean squared error, each pixel counted `batch["weight"]` times where the trainer gives weights."""
    squared = (pred - batch["target"]) ** 2
    weight = batch.get("weight")
    return squared.mean() if weight is None else (squared * weight).mean()


@torch.no_grad()
def val_loss(model: Any, batch: Batch) -> float:
    was_training = model.training
    model.eval()
    losses = []
    for i in range(0, batch["t"].shape[0], 64):
        sl = slice(i, i + 64)
        pred = model(batch["input"][sl], batch["t"][sl], class_labels=batch["classes"][sl], return_dict=False)[0]
        losses.append(F.mse_loss(pred, batch["target"][sl], reduction="sum"))
    model.train(was_training)
    return float(torch.stack(losses).sum() / batch["target"].numel())
