"""The score-distillation loop: train the layer generator so that base + layers looks right to a frozen prior.

Each step composes the generated layers over the base with the PSD blend engine (so what is optimised is
what Photoshop shows), asks the prior for its SDS loss on that composite, adds an L1 pull of every layer
towards its neutral value, and updates the generator only. Never prints or reads files: progress goes out
through `on_step`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .blend import blend
from .generator import LayerGenerator, LayerOutput
from .priors.base import Condition, Prior
from .templates import DistillSettings, LayerSpec


@dataclass
class StepInfo:
    """What a caller sees after each step. Tensors stay on the device: reading them (`.item()`) syncs, so
    a progress bar should do it only when it redraws."""

    step: int  # 1-based
    steps: int
    loss: Tensor
    sds: Tensor
    regulariser: Tensor
    generator: LayerGenerator


def compose(base: Tensor, specs: Sequence[LayerSpec], outputs: Sequence[LayerOutput], mask: Tensor | None = None) -> Tensor:
    """The edit's composition function f(x, y): the layers blended over the base, bottom to top, exactly as
    the written PSD stacks them; outside `mask` the base is left as it is."""
    color = base
    for spec, out in zip(specs, outputs):
        color, _ = blend(color, out.color, spec.blend_mode, source_alpha=out.alpha, opacity=spec.opacity)
    return color if mask is None else mask * color + (1 - mask) * base


def neutral_distance(specs: Sequence[LayerSpec], outputs: Sequence[LayerOutput], mask: Tensor | None = None) -> Tensor:
    """Summed L1 distance of every pixel of every layer from the layer that changes nothing (alpha 0 for alpha
    layers). A sum, like the SDS loss, so the balance between the two does not move with the working size."""
    total = outputs[0].color.new_zeros(())
    for spec, out in zip(specs, outputs):
        change = out.alpha if out.alpha is not None else (out.color - spec.neutral).abs().mean(1, keepdim=True)
        total = total + (change if mask is None else change * mask).sum()
    return total


def distill(
    base: Tensor,
    specs: Sequence[LayerSpec],
    prior: Prior,
    condition: Condition,
    settings: DistillSettings,
    *,
    seed: int,
    mask: Tensor | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
) -> LayerGenerator:
    """Train a fresh generator for `base` [1, 3, h, w] (the prior's working size) and return it."""
    device = base.device
    torch.manual_seed(seed)
    generator = LayerGenerator(specs).to(device)
    noise = torch.Generator(device=device).manual_seed(seed)
    optimiser = torch.optim.Adam(generator.parameters(), lr=settings.learning_rate)
    t_range = (settings.t_min, settings.t_max)
    for step in range(1, settings.steps + 1):
        outputs = generator(base)
        composite = compose(base, specs, outputs, mask)
        sds = prior.sds_loss(
            composite, condition, guidance=settings.guidance, t_range=t_range, generator=noise, samples=settings.noise_samples
        )
        regulariser = neutral_distance(specs, outputs, mask)
        loss = sds + settings.neutral_weight * regulariser
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if on_step is not None:
            on_step(StepInfo(step, settings.steps, loss.detach(), sds.detach(), regulariser.detach(), generator))
    return generator
