"""Stable Diffusion 1.x / 2.x (epsilon or v-prediction), optionally with a ControlNet, as an SDS prior.

Loading and resolving the model files is `sd_components`' job; this module is the prior itself. Choices,
per DreamFusion/threestudio: the noise schedule is always the model's *training* DDPM schedule (rebuilt
from whatever sampler config the checkpoint ships); w(t) = 1 - alphas_cumprod[t]; the image is encoded to
the posterior *mean* (no VAE sampling noise, so a seeded generator gives identical losses).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lasagna_core.errors import ModelError
from lasagna_core.priors import sd_components as parts
from lasagna_core.priors.base import Condition, Prior
from lasagna_core.priors.registry import Capabilities, HubFiles, register_prior
from lasagna_core.priors.schedule import PREDICTIONS, NoiseSchedule

FAST_ENCODERS = (None, "half")
"""Gradient paths cheaper than the full VAE encoder (see StableDiffusionPrior.encode)."""


@dataclass(frozen=True)
class TextCondition(Condition):
    """embeddings: text embeddings `[2, L, D]`, row 0 the negative/unconditional prompt, row 1 the prompt, in the
    prior's dtype and on its device, stacked so one batched network call serves both.
    hint: control image `[1, 3, h, w]` (the base, in [0, 1]) when the prior has a ControlNet, else None."""

    embeddings: Tensor
    hint: Tensor | None = None


@register_prior("stable-diffusion", title="Stable Diffusion", fallback=True)
class StableDiffusionPrior(Prior):
    """SDS through a frozen SD U-Net (+ optional ControlNet), in latent space, back through the VAE encoder.

    Attributes the loop may read: `multiple`, `resolution`, `device`, `dtype`, `schedule`, `prediction_type`,
    `source` (what was loaded). The diffusers modules are public attributes (`unet`, `vae`, `text_encoder`,
    `tokenizer`, `controlnet`, `encoder_vae`) for tests and diagnostics only. The family is the catch-all:
    any folder or hub id that is not another family's is tried as Stable Diffusion.
    """

    @dataclass(frozen=True)
    class Config:
        controlnet: str | None = field(default=None, metadata={"help": "ControlNet folder or cached hub id, conditioned on the base."})
        model_config: str | None = field(default=None, metadata={
            "help": "For a single-file checkpoint: a diffusers folder or cached hub id of the same architecture."})
        vae: str | None = field(default=None, metadata={
            "help": "A TAESD-style AutoencoderTiny (folder or hub id) replacing the VAE encoder on the gradient path."})
        fast_encoder: str | None = field(default=None, metadata={"help": "'half': encode at half size for the gradient."})
        low_memory: bool = field(default=False, metadata={"help": "Trade speed for GPU memory (see _enable_low_memory)."})

    capabilities = Capabilities(samples=False, encoder=True, conditions_on=frozenset({"text"}))

    def __init__(
        self,
        *,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        scheduler_config: Mapping[str, Any],
        controlnet: Any | None = None,
        device: torch.device,
        dtype: torch.dtype,
        controlnet_scale: float = 1.0,
        source: str = "",
        low_memory: bool = False,
        fast_encoder: str | None = None,
        encoder_vae: Any | None = None,
    ) -> None:
        parts.check_compatible(unet, vae, text_encoder, controlnet, source, encoder_vae)
        self.device = torch.device(device)
        self.dtype = dtype
        self.source = source
        self.unet, self.vae, self.text_encoder, self.controlnet = unet, vae, text_encoder, controlnet
        self.tokenizer = tokenizer
        if fast_encoder not in FAST_ENCODERS:
            raise ValueError(f"fast_encoder must be one of {FAST_ENCODERS}, got {fast_encoder!r}")
        self.fast_encoder = fast_encoder
        self.encoder_vae = encoder_vae  # a TAESD-style AutoencoderTiny used for the gradient path, or None
        self.low_memory = bool(low_memory)
        for module in (unet, vae, text_encoder, controlnet, encoder_vae):
            if module is not None:
                module.requires_grad_(False)
                module.eval()
                module.to(self.device)
                if module.dtype != dtype:  # loaders already load in `dtype`; this is for hand-built modules
                    module.to(dtype)
        self.controlnet_scale = float(controlnet_scale)
        if controlnet is not None:
            self.capabilities = Capabilities(samples=False, encoder=True, conditions_on=frozenset({"text", "image"}))

        # The training schedule, whatever sampler the checkpoint ships (PNDM, DDIM, Euler...), on the device
        # so that noising and w(t) never copy from the host inside sds_loss.
        prediction = str(dict(scheduler_config).get("prediction_type", "epsilon"))
        if prediction not in PREDICTIONS:
            raise ModelError(f"Model '{source}' uses prediction type '{prediction}', which Lasagna can't use.")
        self.schedule = NoiseSchedule.from_config(scheduler_config, self.device)
        self.prediction_type = prediction
        self._cond_cache: tuple[Any, ...] | None = None  # (condition, batch, latent size, text, hint)
        if self.low_memory:
            self._enable_low_memory()

        self.vae_scale = parts.vae_scale_factor(vae)
        self.multiple = self.vae_scale * 2 ** (len(unet.config.block_out_channels) - 1)
        self.resolution = parts.working_resolution(unet, vae)

    # ------------------------------------------------------------------ loading

    @classmethod
    def probe(cls, model: str) -> bool:
        """Anything: the catch-all family, asked last; `load` says in one line what a model lacks."""
        return True

    @classmethod
    def load(cls, model: str, config: Any = None, *, device: torch.device | str, dtype: torch.dtype) -> "StableDiffusionPrior":
        """Load from a diffusers folder, a cached hub id, or a single `.safetensors` checkpoint (see
        sd_components). Raises ModelError with a one-line message for anything the user can fix."""
        config = config or cls.Config()
        loaded = parts.load_model(model, model_config=config.model_config, dtype=dtype)
        cn = parts.load_controlnet(config.controlnet, dtype=dtype) if config.controlnet else None
        tiny = parts.load_tiny_autoencoder(config.vae, dtype=dtype) if config.vae else None
        return cls(
            unet=loaded.unet, vae=loaded.vae, text_encoder=loaded.text_encoder, tokenizer=loaded.tokenizer,
            scheduler_config=loaded.scheduler_config, controlnet=cn, device=torch.device(device), dtype=dtype,
            source=model, encoder_vae=tiny, fast_encoder=config.fast_encoder, low_memory=config.low_memory,
        )

    @classmethod
    def hub_files(cls, *, adapter: bool = False) -> HubFiles:
        return parts.hub_files(adapter=adapter)

    def _enable_low_memory(self) -> None:
        """What `--low-memory` switches on: the encoder recomputes its activations in the backward pass
        (gradient checkpointing) instead of storing them, the VAE encodes batches one image at a time, the
        VAE decoder (SDS never decodes) leaves the device, and the text encoder stays on the CPU (it runs
        once per run). Attention is left to PyTorch's scaled-dot-product kernels, whose flash and
        memory-efficient paths never hold the full attention matrix: diffusers' attention slicing would
        replace them with sliced plain matmuls that hold [heads/slices, N, N] and are slower."""
        for vae in (self.vae, self.encoder_vae):
            if vae is None:
                continue
            if getattr(vae, "_supports_gradient_checkpointing", False):
                vae.enable_gradient_checkpointing()
            if hasattr(vae, "enable_slicing"):
                vae.enable_slicing()
        if getattr(self.vae, "decoder", None) is not None:
            self.vae.decoder.to("cpu")
        self.text_encoder.to("cpu", torch.float32)  # half-precision CPU kernels are slow or missing

    def encode(self, image: Tensor) -> Tensor:
        """Scaled latents of `image` [B,3,h,w] in [0,1], float32, differentiable w.r.t. `image`.

        The full VAE encoder by default (the posterior mean). `fast_encoder="half"` encodes the image at half
        the size and upsamples the latent 2x (bilinear): a quarter of the pixels forward and backward (5-7x
        faster at 512 px on a CPU, benchmarks/RESULTS.md), at the price of a blurrier latent. With `encoder_vae` (a TAESD-style AutoencoderTiny, whose latents
        are already in the scaled space) the tiny encoder replaces the VAE's.
        """
        if image.shape[-2] % self.vae_scale or image.shape[-1] % self.vae_scale:
            raise ValueError(f"image sides must be multiples of {self.vae_scale}, got {list(image.shape[-2:])}")
        x = image.to(self.device, self.dtype) * 2 - 1
        size = (x.shape[-2] // self.vae_scale, x.shape[-1] // self.vae_scale)
        if self.fast_encoder == "half":
            x = F.interpolate(x, scale_factor=0.5, mode="area")
        latents = parts.encode_latents(self.encoder_vae if self.encoder_vae is not None else self.vae, x)
        if tuple(latents.shape[-2:]) != size:
            latents = F.interpolate(latents, size=size, mode="bilinear", align_corners=False)
        return latents.float()

    # ------------------------------------------------------------------ the interface

    @torch.no_grad()
    def condition(self, prompt: str, base: Tensor, negative_prompt: str = "") -> TextCondition:
        if base.ndim != 4 or base.shape[0] != 1 or base.shape[1] != 3:
            raise ValueError(f"base must be [1, 3, H, W], got {list(base.shape)}")
        # On the text encoder's device: the CPU under low_memory.
        embeddings = parts.encode_text(self.tokenizer, self.text_encoder, [negative_prompt, prompt])
        embeddings = embeddings.to(self.device, self.dtype)
        hint = base.to(self.device, self.dtype) if self.controlnet is not None else None
        return TextCondition(prompt, negative_prompt, embeddings=embeddings, hint=hint)

    def predict_noise(self, noisy: Tensor, t: Tensor, cond: Condition) -> tuple[Tensor, Tensor]:
        """(eps_uncond, eps_cond): one batched U-Net (+ ControlNet) call, converted from v or x0 when needed."""
        if not isinstance(cond, TextCondition):
            raise TypeError(f"a Stable Diffusion prior needs a TextCondition from its condition(), got {type(cond).__name__}")
        with torch.inference_mode():  # the frozen network: no autograd bookkeeping at all
            pred = self._predict(noisy, t, cond, noisy.shape[0]).float()
        pred = self.schedule.to_epsilon(pred, torch.cat([noisy, noisy]), torch.cat([t, t]))
        eps_uncond, eps_cond = pred.chunk(2)
        return eps_uncond, eps_cond

    def _predict(self, noisy: Tensor, t: Tensor, cond: TextCondition, batch: int) -> Tensor:
        """One batched network call for [uncond x batch, cond x batch]; returns the raw prediction [2B, ...]."""
        latent_in = torch.cat([noisy, noisy]).to(self.dtype)
        t_in = torch.cat([t, t])
        text, hint = self._condition_inputs(cond, batch, tuple(noisy.shape[-2:]))
        extra: dict[str, Any] = {}
        if self.controlnet is not None:
            down, mid = self.controlnet(
                latent_in,
                t_in,
                encoder_hidden_states=text,
                controlnet_cond=hint,
                conditioning_scale=self.controlnet_scale,
                return_dict=False,
            )
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        return self.unet(latent_in, t_in, encoder_hidden_states=text, return_dict=False, **extra)[0]

    def _condition_inputs(self, cond: TextCondition, batch: int, latent_size: tuple[int, ...]) -> tuple[Tensor, Tensor | None]:
        """The text embeddings repeated for the batch and the resized control hint: the same every step of a
        run, so they are made once and reused while the condition, batch and size stay the same."""
        cached = self._cond_cache
        if cached is not None and cached[0] is cond and cached[1] == batch and cached[2] == latent_size:
            return cached[3], cached[4]
        text = cond.embeddings.to(self.device, self.dtype).repeat_interleave(batch, dim=0)
        hint = None
        if self.controlnet is not None:
            if cond.hint is None:
                raise ValueError("this prior has a ControlNet but the condition has no hint; call prior.condition()")
            hint = cond.hint.to(self.device, self.dtype)
            size = (latent_size[0] * self.vae_scale, latent_size[1] * self.vae_scale)
            if tuple(hint.shape[-2:]) != size:
                hint = F.interpolate(hint, size=size, mode="bilinear", align_corners=False, antialias=True)
            hint = hint.expand(2 * batch, -1, -1, -1)
        self._cond_cache = (cond, batch, latent_size, text, hint)
        return text, hint
