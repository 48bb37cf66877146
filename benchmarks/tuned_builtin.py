"""The SD prior's step levers applied to the built-in prior's `sds_loss`, as a drop-in for measuring them.

`lasagna_core/priors/builtin.py` belongs to the built-in prior's own work; this file shows (and the benchmark
measures) what the same levers give there: the noising tables once per prior instead of
`DDPMScheduler.add_noise` every step, the base hint and class ids prepared once per run, and the frozen
U-Net under `torch.inference_mode`. Same numbers: `check_identical` compares loss and gradient bit for bit.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import Tensor

from lasagna_core.priors.base import Condition, sds_gradient, sds_surrogate_loss


def tuned_sds_loss(self: Any, image: Tensor, cond: Condition, *, guidance: float, t_range: tuple[float, float] = (0.02, 0.98),
                   generator: torch.Generator | None = None, samples: int = 1) -> Tensor:
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [B, 3, H, W], got {list(image.shape)}")
    lo, hi = t_range
    if cond.hint is None:
        raise ValueError("the built-in prior needs the base as the condition's hint; call prior.condition()")
    x = image.to(self.device, torch.float32) * 2 - 1
    if samples > 1:
        x = x.repeat_interleave(samples, dim=0)
    batch = x.shape[0]
    n = self.num_train_timesteps
    t_lo = min(max(int(round(lo * n)), 0), n - 1)
    t_hi = min(max(int(round(hi * n)), t_lo), n - 1)
    rng_device = generator.device if generator is not None else self.device
    t = torch.randint(t_lo, t_hi + 1, (batch,), generator=generator, device=rng_device).to(self.device)
    noise = torch.randn(x.shape, generator=generator, device=rng_device, dtype=torch.float32).to(self.device)
    alpha_bar = self.alphas_cumprod[t].view(batch, 1, 1, 1)
    if getattr(self, "_sqrt_tables", None) is None:
        self._sqrt_tables = (self.alphas_cumprod**0.5, (1 - self.alphas_cumprod) ** 0.5)
    key = (cond, batch, tuple(x.shape[-2:]))
    cached = getattr(self, "_inputs_cache", None)
    if cached is None or cached[0][0] is not cond or cached[0][1:] != key[1:]:
        base = self._hint(cond.hint, x.shape[-2:]).expand(batch, -1, -1, -1)
        classes = cond.embeddings.to(self.device).repeat_interleave(batch)
        cached = self._inputs_cache = (key, torch.cat([base, base]), classes)
    _, base2, classes = cached
    sqrt_ab, sqrt_1m = self._sqrt_tables
    shape = (batch, 1, 1, 1)
    with torch.no_grad():
        noisy = sqrt_ab[t].view(shape) * x.detach() + sqrt_1m[t].view(shape) * noise
        with torch.inference_mode():
            eps = self.predict(torch.cat([noisy, noisy]), torch.cat([t, t]), base2, classes)
        eps_uncond, eps_cond = eps.float().chunk(2)
        grad = sds_gradient(eps_uncond, eps_cond, noise, guidance, 1 - alpha_bar)
    return sds_surrogate_loss(x, grad)


def tuned(prior: Any) -> Any:
    """The same prior object with the tuned sds_loss bound on the instance."""
    prior.sds_loss = types.MethodType(tuned_sds_loss, prior)
    return prior


def check_identical(prior: Any, size: tuple[int, int]) -> bool:
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    cond = prior.condition("light from the left", image)

    def run(fn: Any) -> tuple[Tensor, Tensor]:
        x = image.clone().requires_grad_()
        loss = fn(x, cond, guidance=3.0, generator=torch.Generator().manual_seed(1), samples=4)
        loss.backward()
        return loss.detach(), x.grad

    original = type(prior).sds_loss.__get__(prior)
    a, b = run(original), run(types.MethodType(tuned_sds_loss, prior))
    return bool(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]))
