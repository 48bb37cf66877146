"""The one small interface every diffusion prior offers the distillation loop.

A prior is a frozen image model that, given an image and a text condition, returns a loss whose gradient
w.r.t. the image is the score-distillation (SDS) gradient. The loop never sees model-library types:
images go in as float tensors `[B, 3, H, W]` in [0, 1], a scalar loss comes out.

How the distillation loop uses it::

    prior = load_prior(PriorSettings("stable-diffusion-v1-5/stable-diffusion-v1-5"))
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
from typing import Any, ClassVar

import torch
from torch import Tensor

from lasagna_core.errors import UsageError
from lasagna_core.priors.registry import Capabilities
from lasagna_core.priors.schedule import NoiseSchedule
from lasagna_core.resample import fit_size


@dataclass(frozen=True)
class Condition:
    """What `Prior.condition` computes once per run and `Prior.sds_loss` reuses every step: the prompt pair,
    and in each family's subclass what the network is conditioned on (text embeddings, classes, a hint)."""

    prompt: str
    negative_prompt: str


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
    Jacobian is omitted, as in DreamFusion. The only copy of this formula in the code base (the guidance in
    `classifier_free_guidance`).
    """
    return weight * (classifier_free_guidance(eps_pred_uncond, eps_pred_cond, guidance) - noise)


def classifier_free_guidance(eps_uncond: Tensor, eps_cond: Tensor, guidance: float) -> Tensor:
    """eps_hat = eps_uncond + guidance * (eps_cond - eps_uncond): what SDS and every direct sampler step on."""
    return eps_uncond + guidance * (eps_cond - eps_uncond)


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
    schedule: the noise schedule the network was trained with, on `device`.
    family, Config, capabilities, config, source: the registered family's name, its options class, what
        it can do, the options this prior was loaded with, and what `--model` named.
    A family registers with `registry.register_prior` and implements `probe` and `load` (module doc there).
    """

    multiple: int
    resolution: int
    device: torch.device
    dtype: torch.dtype
    schedule: NoiseSchedule
    family: ClassVar[str] = ""
    capabilities: Capabilities = Capabilities()
    source: str = ""

    @dataclass(frozen=True)
    class Config:
        """A family without options."""

    config: Any = Config()

    @classmethod
    def probe(cls, model: str) -> bool:
        """Whether this family can load what `--model` names (cheap: names and file headers only)."""
        return False

    @classmethod
    def load(cls, model: str, config: Any, *, device: torch.device, dtype: torch.dtype) -> Prior:
        """The prior for `model` with the family's `config`; ModelError for anything the user can fix."""
        raise NotImplementedError(f"{cls.__name__} can't be loaded by name")

    @classmethod
    def check_files(cls, model: str) -> None:
        """ModelError (one line) when a local `model` plainly lacks what this family loads (names only): asked
        before a prompt is refused for a family guessed from that model, so that a wrong `--model` is the
        error the user hears. Nothing by default: `load` says the rest."""

    @classmethod
    def check_prompt(cls, prompt: str) -> None:
        """UsageError (one line) when this family can't condition on `prompt`, asked before any model loads so
        that a batch refuses an unreadable prompt once instead of failing every file. Any text by default."""

    @classmethod
    def hub_files(cls, *, adapter: str | None = None) -> Any:
        """What `lasagna models pull` fetches for this family (a registry.HubFiles), or None: nothing to pull.
        `adapter` names the option whose repo it is ("controlnet", "vae", ...), None the model itself."""
        return None

    @classmethod
    def capabilities_for(cls, config: Any) -> Capabilities:
        """What a prior of this family loaded with `config` can do, known before it loads (eval asks first)."""
        return cls.capabilities

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) with the input's aspect ratio, long side = `resolution`, sides multiples of `multiple`."""
        return fit_size(height, width, self.resolution, self.multiple)

    @abstractmethod
    def condition(self, prompt: str, base: Tensor, negative_prompt: str = "") -> Condition:
        """Encode the prompt pair once per run; `base` [1,3,h,w] in [0,1] at the working size is the control hint.
        A prior whose `capabilities.conditions_on` has "matte" also takes `matte=` [1,1,h,w] (where the subject is)."""

    @abstractmethod
    def encode(self, image: Tensor) -> Tensor:
        """The diffused variable for `image` [B,3,h,w] in [0,1]: latents for a latent model, the pixels scaled
        to [-1, 1] for a pixel model; float32 and differentiable w.r.t. `image`."""

    @abstractmethod
    def predict_noise(self, noisy: Tensor, t: Tensor, cond: Condition) -> tuple[Tensor, Tensor]:
        """(eps_uncond, eps_cond) float32 for `noisy` [B,...] at timesteps `t` [B], from ONE batched call of the
        frozen network; called under no_grad."""

    def sample(
        self, base: Tensor, prompts: list[str], *, steps: int = 50, guidance: float = 3.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Direct generation: images [B,3,h,w] in [0,1] for bases [B,3,h,w] and one prompt each. Only a prior
        whose `capabilities.samples` is true can; the others refuse in one line."""
        raise UsageError(f"the prior '{self.source or type(self).__name__}' can't generate images directly, only guide an edit")

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
        Noising, the timestep range and the weighting w(t) are the prior's `schedule`'s.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, H, W], got {list(image.shape)}")
        t_lo, t_hi = self.schedule.timestep_range(*t_range)
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        x = self.encode(image)
        if samples > 1:
            x = x.repeat_interleave(samples, dim=0)
        batch = x.shape[0]
        rng_device = generator.device if generator is not None else self.device
        t = torch.randint(t_lo, t_hi + 1, (batch,), generator=generator, device=rng_device).to(self.device)
        noise = torch.randn(x.shape, generator=generator, device=rng_device, dtype=torch.float32).to(self.device)
        with torch.no_grad():
            noisy = self.schedule.add_noise(x.detach(), noise, t)
            eps_uncond, eps_cond = self.predict_noise(noisy, t, cond)
            grad = sds_gradient(eps_uncond, eps_cond, noise, guidance, self.schedule.sds_weight(t, x.ndim))
        return sds_surrogate_loss(x, grad)
