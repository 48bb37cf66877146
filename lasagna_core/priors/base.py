"""The one small interface every diffusion prior offers the distillation loop.

A prior is a frozen image model that, given an image and a text condition, returns a loss whose gradient
w.r.t. the image is the score-distillation (SDS) gradient. The loop never sees model-library types:
images go in as float tensors `[B, 3, H, W]` in [0, 1], a scalar loss comes out.

How the distillation loop uses it::

    prior = load_prior("stable-diffusion-v1-5/stable-diffusion-v1-5", device="auto")
    h, w = prior.working_size(doc_height, doc_width)
    cond = prior.condition(prompt, base_at_working_size)            # once per run
    for step in range(steps):
        image = blend(base, generator(base))                         # [1,3,h,w] in [0,1], has grad
        loss = prior.sds_loss(image, cond, guidance=100.0, generator=g, samples=4)
        loss.backward()                                              # grad lands in the generator only
        opt.step(); opt.zero_grad()
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Condition:
    """What `Prior.condition` computes once per run and `Prior.sds_loss` reuses every step.

    embeddings: text embeddings `[2, L, D]`, row 0 the negative/unconditional prompt, row 1 the prompt,
        in the prior's dtype and on its device, stacked so one batched network call serves both.
    hint: control image `[1, C, h, w]` (the base layer, in [0, 1]) when the prior has a ControlNet, else None.
    """

    prompt: str
    negative_prompt: str
    embeddings: Tensor
    hint: Tensor | None = None


def sds_gradient(
    eps_pred_uncond: Tensor,
    eps_pred_cond: Tensor,
    noise: Tensor,
    guidance: float,
    weight: Tensor | float,
) -> Tensor:
    """The SDS gradient w.r.t. the noised latent (DreamFusion eq. 3 with classifier-free guidance).

        eps_hat = eps_uncond + guidance * (eps_cond - eps_uncond)
        grad    = weight * (eps_hat - noise)

    `weight` is w(t), a float or a tensor broadcastable to the latents (e.g. `[B, 1, 1, 1]`). The U-Net
    Jacobian is omitted, as in DreamFusion. The only copy of this formula in the code base.
    """
    eps_hat = eps_pred_uncond + guidance * (eps_pred_cond - eps_pred_uncond)
    return weight * (eps_hat - noise)


def sds_surrogate_loss(latents: Tensor, grad: Tensor) -> Tensor:
    """A scalar whose gradient w.r.t. `latents` [B, ...] is `grad / B` (the batch mean of per-sample grads).

    0.5 * ||latents - sg(latents - grad)||^2 / B: its value (0.5 * ||grad||^2 / B) means nothing by itself;
    only its gradient matters.
    """
    target = (latents - grad).detach()
    return 0.5 * torch.nn.functional.mse_loss(latents, target, reduction="sum") / latents.shape[0]


class Prior(ABC):
    """A frozen diffusion model turned into an SDS loss.

    multiple: working sides must be multiples of this (64 for SD: 8 px per latent, 3 U-Net downsamplings).
    resolution: the long side of the working image the model was trained at (512 for SD 1.x, 768 for 2.x-v).
    device, dtype: where the model runs; `sds_loss` accepts float32 images on that device and casts.
    """

    multiple: int
    resolution: int
    device: torch.device
    dtype: torch.dtype

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) with the input's aspect ratio, long side = `resolution`, sides multiples of `multiple`."""
        if height <= 0 or width <= 0:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        m = self.multiple
        scale = self.resolution / max(height, width)

        def side(n: int) -> int:
            return max(m, int(round(n * scale / m)) * m)

        return side(height), side(width)

    @abstractmethod
    def condition(self, prompt: str, base: Tensor, negative_prompt: str = "") -> Condition:
        """Encode the prompt pair once per run; `base` [1,3,h,w] in [0,1] at the working size is the control hint."""

    alphas_cumprod: Tensor  # [T] float32 on `device`: the training schedule's alpha-bar
    num_train_timesteps: int

    @abstractmethod
    def encode(self, image: Tensor) -> Tensor:
        """The diffused variable for `image` [B,3,h,w] in [0,1]: latents for a latent model, the pixels scaled
        to [-1, 1] for a pixel model; float32 and differentiable w.r.t. `image`."""

    @abstractmethod
    def predict_noise(self, noisy: Tensor, t: Tensor, cond: Condition) -> tuple[Tensor, Tensor]:
        """(eps_uncond, eps_cond) float32 for `noisy` [B,...] at timesteps `t` [B], from ONE batched call of the
        frozen network; called under no_grad."""

    def sds_loss(
        self,
        image: Tensor,
        cond: Condition,
        *,
        guidance: float,
        t_range: tuple[float, float] = (0.02, 0.98),
        generator: torch.Generator | None = None,
        samples: int = 1,
    ) -> Tensor:
        """Scalar surrogate loss for `image` [B,3,h,w] in [0,1] (B = noise samples, one t each).

        Its gradient w.r.t. the encoded sample b is `sds_gradient(...)[b] / B`, flowing back into `image`
        through `encode`. The prior itself gets no gradient. Does not synchronise with the device.
        `samples` > 1 draws that many (t, noise) pairs per image, encoding each image once: the same
        loss and gradient as `image.repeat_interleave(samples, 0)`, cheaper. The mean runs over all of them.
        Random draws (t, then noise) come from `generator` on its own device; one on `device` avoids copies.
        Weighting: DreamFusion's w(t) = sigma_t^2 = 1 - alpha_bar_t.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, H, W], got {list(image.shape)}")
        lo, hi = t_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"t_range must satisfy 0 <= lo <= hi <= 1, got {t_range}")
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        x = self.encode(image)
        if samples > 1:
            x = x.repeat_interleave(samples, dim=0)
        batch = x.shape[0]
        n = self.num_train_timesteps
        t_lo = min(max(int(round(lo * n)), 0), n - 1)
        t_hi = min(max(int(round(hi * n)), t_lo), n - 1)
        rng_device = generator.device if generator is not None else self.device
        t = torch.randint(t_lo, t_hi + 1, (batch,), generator=generator, device=rng_device).to(self.device)
        noise = torch.randn(x.shape, generator=generator, device=rng_device, dtype=torch.float32).to(self.device)
        alpha_bar = self.alphas_cumprod[t].view(batch, *([1] * (x.ndim - 1)))
        with torch.no_grad():
            noisy = alpha_bar**0.5 * x.detach() + (1 - alpha_bar) ** 0.5 * noise  # DDPM's forward process
            eps_uncond, eps_cond = self.predict_noise(noisy, t, cond)
            grad = sds_gradient(eps_uncond, eps_cond, noise, guidance, 1 - alpha_bar)
        return sds_surrogate_loss(x, grad)
