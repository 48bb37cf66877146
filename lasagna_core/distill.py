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
from torch import Tensor, nn

from .blend import blend
from .errors import DistillationError
from .generator import START_MARGIN, LayerGenerator, LayerOutput
from .priors.base import Condition, Prior
from .resample import fit_size, guided_upsample, resize
from .templates import DistillSettings, GeneratorSettings, LayerSpec


@dataclass
class StepInfo:
    """What a caller sees after each step. Tensors stay on the device: reading them (`.item()`) syncs, so
    a progress bar should do it only when it redraws."""

    step: int  # 1-based
    steps: int
    loss: Tensor
    sds: Tensor
    regulariser: Tensor
    generator: nn.Module


def compose(base: Tensor, specs: Sequence[LayerSpec], outputs: Sequence[LayerOutput], mask: Tensor | None = None) -> Tensor:
    """The edit's composition function f(x, y): the layers blended over the base, bottom to top, exactly as
    the written PSD stacks them; outside `mask` the base is left as it is."""
    color = base
    for spec, out in zip(specs, outputs):
        color, _ = blend(color, out.color, spec.blend_mode, source_alpha=out.alpha, opacity=spec.opacity)
    return color if mask is None else mask * color + (1 - mask) * base


def _beyond_rest(spec: LayerSpec, plane: Tensor, alpha: bool) -> Tensor:
    """How far each value of a layer's colour (or, for alpha layers, its alpha) is from changing nothing,
    minus a dead zone of the generator's start margin; 0 where the layer rests.

    The layers start at the ends of their sigmoids, that margin from neutral. A pull that kept pushing past
    it would drive the logits into saturation, where Adam's normalised steps leave the SDS gradient no grip
    and the layer stays blank for good (seen on photos, where that gradient is weak)."""
    if alpha:
        return (plane - START_MARGIN).clamp(min=0)
    return ((plane - spec.neutral).abs() - START_MARGIN * (spec.high - spec.low)).clamp(min=0)


def neutral_distance(specs: Sequence[LayerSpec], outputs: Sequence[LayerOutput], mask: Tensor | None = None) -> Tensor:
    """Summed L1 distance of every pixel of every layer from the layer that changes nothing (alpha 0 for alpha
    layers), beyond the dead zone of `_beyond_rest`. A sum, like the SDS loss, so the balance between the two
    does not move with the working size."""
    total = outputs[0].color.new_zeros(())
    for spec, out in zip(specs, outputs):
        if out.alpha is not None:
            change = _beyond_rest(spec, out.alpha, alpha=True)
        else:
            change = _beyond_rest(spec, out.color, alpha=False).mean(1, keepdim=True)
        total = total + (change if mask is None else change * mask).sum()
    return total


def snap_to_neutral(specs: Sequence[LayerSpec], outputs: Sequence[LayerOutput]) -> list[LayerOutput]:
    """Layers with every value inside the dead zone set exactly to neutral (alpha to 0): what the optimisation
    did not push out of it is not an edit, and untouched pixels then stay byte for byte."""
    snapped = []
    for spec, out in zip(specs, outputs):
        if out.alpha is not None:
            resting = _beyond_rest(spec, out.alpha, alpha=True) == 0
            snapped.append(LayerOutput(out.color, out.alpha.masked_fill(resting, 0.0)))
        else:
            resting = _beyond_rest(spec, out.color, alpha=False) == 0
            snapped.append(LayerOutput(out.color.masked_fill(resting, spec.neutral), None))
    return snapped


def finished_layers(outputs: Sequence[LayerOutput], specs: Sequence[LayerSpec], base_low: Tensor, base: Tensor) -> list[LayerOutput]:
    """The layers as they are written: brought to `base`'s size by the edge-aware `guided_upsample` (nothing
    to do at equal sizes), clamped to each spec's range and snapped to neutral where they rest. What both
    `shade` and `eval` compose and save."""
    same = tuple(base_low.shape[-2:]) == tuple(base.shape[-2:])

    def grow(plane: Tensor) -> Tensor:
        return plane if same else guided_upsample(plane, base_low, base)

    return snap_to_neutral(specs, [
        LayerOutput(grow(out.color).clamp(spec.low, spec.high), None if out.alpha is None else grow(out.alpha).clamp(0.0, 1.0))
        for out, spec in zip(outputs, specs)
    ])


CHECK_EVERY = 25
"""Steps between finiteness checks: each check waits for the device, so not every step."""
MAX_RESTARTS = 3


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
    shape: GeneratorSettings = GeneratorSettings(),
    prior_size: tuple[int, int] | None = None,
    generator: nn.Module | None = None,
) -> nn.Module:
    """Train a generator for `base` [1, 3, h, w] (the generator's working size) and return it: `generator`
    when given (flats' `RegionGenerator`), else a fresh `LayerGenerator` of `shape`.

    `prior_size`: the prior's working size when it differs from the generator's; the composite is resized
    to it (area when shrinking) before the SDS loss, and to half of it in the first `settings.coarse_steps`
    (`coarse_size`). Every CHECK_EVERY steps the loss and weights are
    checked for NaN/Inf; on divergence the generator goes back to the last good check and carries on at half
    the learning rate, at most MAX_RESTARTS times.
    """
    device = base.device
    torch.manual_seed(seed)
    g_input = base
    if generator is None:
        generator = LayerGenerator(specs, width=shape.width, levels=shape.levels)
        if device.type == "cpu":  # oneDNN's convolutions are faster channels-last (benchmarks/RESULTS.md)
            generator = generator.to(memory_format=torch.channels_last)
            g_input = base.contiguous(memory_format=torch.channels_last)
    generator = generator.to(device)
    noise = torch.Generator(device=device).manual_seed(seed)
    learning_rate = settings.learning_rate
    optimiser = _adam(generator, learning_rate)
    t_range = (settings.t_min, settings.t_max)
    scored_size = tuple(prior_size or base.shape[-2:])
    coarse = coarse_size(scored_size, prior.multiple) if settings.coarse_steps else scored_size
    good_step, good_weights, restarts = 0, copy_weights(generator), 0
    step = 0
    while step < settings.steps:
        step += 1
        outputs = generator(g_input)
        composite = resize(compose(base, specs, outputs, mask), coarse if step <= settings.coarse_steps else scored_size)
        sds = prior.sds_loss(
            composite, condition, guidance=settings.guidance, t_range=t_range, generator=noise, samples=settings.noise_samples
        )
        regulariser = neutral_distance(specs, outputs, mask)
        loss = sds + settings.neutral_weight * regulariser
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % CHECK_EVERY == 0 or step == settings.steps:
            if all_finite(loss, generator):
                good_step, good_weights = step, copy_weights(generator)
            else:
                restarts += 1
                if restarts > MAX_RESTARTS:
                    raise DistillationError(
                        f"the optimisation diverged (NaN/Inf) {restarts} times, even at learning rate {learning_rate:.2g}; "
                        "try a lower --guidance, or check the model"
                    )
                learning_rate /= 2
                generator.load_state_dict(good_weights)
                optimiser = _adam(generator, learning_rate)
                step = good_step
                continue
        if on_step is not None:
            on_step(StepInfo(step, settings.steps, loss.detach(), sds.detach(), regulariser.detach(), generator))
    return generator


def coarse_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Half of a working size `size` (sides multiples of `multiple`): where the coarse steps score the composite."""
    return fit_size(*size, max(size) // 2, multiple)


def _adam(generator: nn.Module, learning_rate: float) -> torch.optim.Adam:
    """Adam with its fused kernel where PyTorch has one (CPU, CUDA): one kernel for all of G's parameters
    instead of a loop over its tensors (benchmarks/RESULTS.md)."""
    fused = next(generator.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.Adam(generator.parameters(), lr=learning_rate, fused=fused or None)


def copy_weights(generator: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the weights, to go back to after a divergence."""
    return {name: value.detach().clone() for name, value in generator.state_dict().items()}


def all_finite(loss: Tensor, generator: nn.Module) -> bool:
    """Whether the loss and every weight are finite (one device sync for all of them)."""
    checks = [torch.isfinite(loss).all()] + [torch.isfinite(p).all() for p in generator.parameters()]
    return bool(torch.stack(checks).all())
