"""The distillation step as it was before the speed work (lasagna 0.x, git 418dd10), kept verbatim so the
benchmarks can time "before" and "after" side by side in one process.

`baseline_sds_loss` is StableDiffusionPrior.sds_loss and `baseline_distill` is distill.distill as they were.
"""
# ruff: noqa
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lasagna_core.distill import CHECK_EVERY, MAX_RESTARTS, StepInfo, all_finite, compose, copy_weights, neutral_distance
from lasagna_core.errors import DistillationError
from lasagna_core.generator import LayerGenerator
from lasagna_core.priors.base import Condition, Prior, sds_gradient, sds_surrogate_loss
from lasagna_core.templates import DistillSettings, LayerSpec
from collections.abc import Callable, Sequence
import torch.nn.functional as F


def baseline_sds_loss(
    self,
    image: Tensor,
    cond: Condition,
    *,
    guidance: float,
    t_range: tuple[float, float] = (0.02, 0.98),
    generator: torch.Generator | None = None,
    samples: int = 1,
) -> Tensor:
    """SDS surrogate loss (see `Prior.sds_loss`).

    Random draws (t, then noise) come from `generator` on its own device and are moved to the prior's
    device; pass a generator on `prior.device` to avoid the tiny host-to-device copies.
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [B, 3, H, W], got {list(image.shape)}")
    if image.shape[-2] % self.vae_scale or image.shape[-1] % self.vae_scale:
        raise ValueError(f"image sides must be multiples of {self.vae_scale}, got {list(image.shape[-2:])}")
    lo, hi = t_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"t_range must satisfy 0 <= lo <= hi <= 1, got {t_range}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")

    # Encode with gradient: the only part of the prior the graph passes through.
    x = image.to(self.device, self.dtype) * 2 - 1
    latents = self.vae.encode(x).latent_dist.mean
    shift = float(getattr(self.vae.config, "shift_factor", None) or 0.0)
    latents = ((latents - shift) * float(self.vae.config.scaling_factor)).float()
    if samples > 1:
        latents = latents.repeat_interleave(samples, dim=0)
    batch = latents.shape[0]

    alphas_cumprod = self.schedule.alphas_cumprod
    n = alphas_cumprod.shape[0]
    t_lo = min(max(int(round(lo * n)), 0), n - 1)
    t_hi = min(max(int(round(hi * n)), t_lo), n - 1)
    rng_device = generator.device if generator is not None else self.device
    t = torch.randint(t_lo, t_hi + 1, (batch,), generator=generator, device=rng_device).to(self.device)
    noise = torch.randn(latents.shape, generator=generator, device=rng_device, dtype=torch.float32)
    noise = noise.to(self.device)
    alpha_bar = alphas_cumprod[t].view(batch, 1, 1, 1)

    with torch.no_grad():
        # diffusers' own add_noise and conversions as the independent reference for the schedule's formulas
        from diffusers import DDPMScheduler

        reference = DDPMScheduler(num_train_timesteps=n)
        reference.alphas_cumprod = alphas_cumprod
        noisy = reference.add_noise(latents.detach(), noise, t)
        pred = baseline_predict(self, noisy, t, cond, batch).float()
        a2, noisy2 = alpha_bar.repeat(2, 1, 1, 1), torch.cat([noisy, noisy])
        if self.prediction_type == "v_prediction":
            pred = a2.sqrt() * pred + (1 - a2).sqrt() * noisy2
        elif self.prediction_type == "sample":
            pred = (noisy2 - a2.sqrt() * pred) / (1 - a2).sqrt()
        eps_uncond, eps_cond = pred.chunk(2)
        # DreamFusion's weighting w(t) = sigma_t^2 = 1 - alpha_bar_t.
        grad = sds_gradient(eps_uncond, eps_cond, noise, guidance, 1 - alpha_bar)
    return sds_surrogate_loss(latents, grad)

def baseline_predict(self, noisy: Tensor, t: Tensor, cond: Condition, batch: int) -> Tensor:
    """One batched network call for [uncond x batch, cond x batch]; returns the raw prediction [2B, ...]."""
    latent_in = torch.cat([noisy, noisy]).to(self.dtype)
    t_in = torch.cat([t, t])
    text = cond.embeddings.to(self.device, self.dtype).repeat_interleave(batch, dim=0)
    extra: dict[str, Any] = {}
    if self.controlnet is not None:
        if cond.hint is None:
            raise ValueError("this prior has a ControlNet but the condition has no hint; call prior.condition()")
        hint = cond.hint.to(self.device, self.dtype)
        size = (noisy.shape[-2] * self.vae_scale, noisy.shape[-1] * self.vae_scale)
        if tuple(hint.shape[-2:]) != size:
            hint = F.interpolate(hint, size=size, mode="bilinear", align_corners=False, antialias=True)
        down, mid = self.controlnet(
            latent_in,
            t_in,
            encoder_hidden_states=text,
            controlnet_cond=hint.expand(2 * batch, -1, -1, -1),
            conditioning_scale=self.controlnet_scale,
            return_dict=False,
        )
        extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
    return self.unet(latent_in, t_in, encoder_hidden_states=text, return_dict=False, **extra)[0]


def baseline_distill(
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
    """Train a fresh generator for `base` [1, 3, h, w] (the prior's working size) and return it.

    Every CHECK_EVERY steps the loss and weights are checked for NaN/Inf; on divergence the generator goes
    back to the last good check and carries on at half the learning rate, at most MAX_RESTARTS times.
    """
    device = base.device
    torch.manual_seed(seed)
    generator = LayerGenerator(specs).to(device)
    noise = torch.Generator(device=device).manual_seed(seed)
    learning_rate = settings.learning_rate
    optimiser = torch.optim.Adam(generator.parameters(), lr=learning_rate)
    t_range = (settings.t_min, settings.t_max)
    good_step, good_weights, restarts = 0, copy_weights(generator), 0
    step = 0
    while step < settings.steps:
        step += 1
        outputs = generator(base)
        composite = compose(base, specs, outputs, mask)
        sds = baseline_sds_loss(prior, 
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
                optimiser = torch.optim.Adam(generator.parameters(), lr=learning_rate)
                step = good_step
                continue
        if on_step is not None:
            on_step(StepInfo(step, settings.steps, loss.detach(), sds.detach(), regulariser.detach(), generator))
    return generator




# ---------------------------------------------------------------------------------------------- PSD writing
# document._add_layer and document._merged_after_edit as they were before the big-document work (git 418dd10).


def baseline_add_layer(psd: Any, node: Any, anchor: Any | None) -> Any:
    import numpy as np
    from psd_tools.constants import BlendMode as PsdBlendMode

    planes = 1 if psd.color_mode.name == "GRAYSCALE" else 3
    color = node.color if node.color.shape[0] == planes else np.repeat(node.color, planes, axis=0)
    pixels = color if node.alpha is None else np.concatenate([color, node.alpha])
    layer = psd.create_pixel_layer_from_array(
        np.ascontiguousarray(np.clip(pixels, 0.0, 1.0).transpose(1, 2, 0)),
        name=node.name,
        top=node.top,
        left=node.left,
        opacity=round(node.opacity * 255),
        blend_mode=PsdBlendMode[node.blend_mode.name],
    )
    layer.name = node.name  # the setter also writes the Unicode name block that psd-tools' constructor omits
    layer.visible = node.visible
    if anchor is not None:
        parent = anchor.parent
        parent.insert(parent.index(anchor) + 1, layer)
        layer.clipping = True
    return layer


def baseline_merged_after_edit(doc: Any, psd: Any, added: Any) -> Any:
    import numpy as np

    from lasagna_core.document import _to_node, composite_to_numpy, read_layer_tree, split_channels
    from lasagna_core.layers import PixelNode

    if doc.base_layer is None and doc.kind == "psd" and psd.has_preview():
        below_color, below_alpha = split_channels(np.ascontiguousarray(psd.numpy().transpose(2, 0, 1), dtype=np.float32))
        stored = [_to_node(layer, psd.size) for layer in added]
        return composite_to_numpy([PixelNode("merged", below_color, below_alpha), *stored], doc.height, doc.width)
    return composite_to_numpy(read_layer_tree(psd), doc.height, doc.width)


def baseline_save_psd(doc: Any, new_layers: Any, output: Any, *, record: Any = None, overwrite_input: bool = False) -> Any:
    """document.save_psd as it was (git 418dd10), on today's helpers for everything it did not change."""
    import json
    from pathlib import Path

    from lasagna_core.document import find_layer
    from lasagna_core.writing.atomic import atomic_write
    from lasagna_core.writing.outputs import document_output
    from lasagna_core.writing.psd import _drop_stale_thumbnails, _encode_merged, source_psd

    output = Path(output)
    document_output(output, doc, [node.color.shape[0] for node in new_layers], overwrite_input=overwrite_input)
    psd = source_psd(doc)
    anchor = find_layer(psd, doc.base_layer) if doc.base_layer else None
    added = []
    for node in new_layers:
        added.append(baseline_add_layer(psd, node, anchor))
        if anchor is not None:
            anchor = added[-1]
    color, alpha = baseline_merged_after_edit(doc, psd, added)
    psd._record.image_data.set_data(_encode_merged(psd, color, alpha), psd._record.header)
    _drop_stale_thumbnails(psd)
    with atomic_write(output) as f:
        psd._record.write(f)
    if record is not None:
        sidecar = output.with_name(output.name + ".json")
        with atomic_write(sidecar) as f:
            f.write(json.dumps(record, indent=2, sort_keys=True).encode() + b"\n")
    return output
