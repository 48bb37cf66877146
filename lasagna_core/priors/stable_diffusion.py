"""Stable Diffusion 1.x / 2.x (epsilon or v-prediction), optionally with a ControlNet or an IC-Light offset, as
an SDS prior.

Loading and resolving the model files is `sd_components`' job, IC-Light's offset and condition images
`iclight`'s; this module is the prior itself (and the base class of the SDXL family's). Choices,
per DreamFusion/threestudio: the noise schedule is always the model's *training* DDPM schedule (rebuilt
from whatever sampler config the checkpoint ships); w(t) = 1 - alphas_cumprod[t]; the image is encoded to
the posterior *mean* (no VAE sampling noise, so a seeded generator gives identical losses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lasagna_core.errors import ModelError
from lasagna_core.priors import iclight
from lasagna_core.priors import sd_components as parts
from lasagna_core.priors.base import Condition, Prior, classifier_free_guidance
from lasagna_core.priors.registry import Capabilities, HubFiles, register_prior
from lasagna_core.priors.schedule import PREDICTIONS, NoiseSchedule
from lasagna_core.priors.sd_checks import check_compatible

FAST_ENCODERS = (None, "half")
"""Gradient paths cheaper than the full VAE encoder (see StableDiffusionPrior.encode)."""


@dataclass(frozen=True)
class TextCondition(Condition):
    """embeddings: text embeddings `[2, L, D]`, row 0 the negative/unconditional prompt, row 1 the prompt, in the
    prior's dtype and on its device, stacked so one batched network call serves both.
    hint: control image `[1, 3, h, w]` (the base, in [0, 1]) when the prior has a ControlNet, else None.
    concat: IC-Light's condition latents `[1, C, h/8, w/8]` (the base's, then the background's) concatenated
    after the noisy latent for both rows, when the prior has an IC-Light offset, else None."""

    embeddings: Tensor
    hint: Tensor | None = None
    concat: Tensor | None = None


@dataclass(frozen=True)
class LatentConfig:
    """The options every Stable Diffusion family (1.x/2.x and XL) has: how the model files are read and how
    the composite reaches the latent."""

    model_config: str | None = field(default=None, metadata={
        "help": "For a single-file checkpoint: a diffusers folder or cached hub id of the same architecture."})
    vae: str | None = field(default=None, metadata={
        "help": "A TAESD-style AutoencoderTiny (folder or hub id) replacing the VAE encoder on the gradient path."})
    fast_encoder: str | None = field(default=None, metadata={"help": "'half': encode at half size for the gradient."})
    low_memory: bool = field(default=False, metadata={"help": "Trade speed for GPU memory (see _enable_low_memory)."})


def sd_capabilities(*, controlnet: bool, iclight: bool) -> Capabilities:
    """What an SD prior can do with these adapters: a ControlNet or IC-Light conditions on the base image, and
    IC-Light samples relit pictures (its own use, eval's direct baseline); IC-Light also takes a matte."""
    conditions = {"text"} | ({"image"} if controlnet or iclight else set()) | ({"matte"} if iclight else set())
    return Capabilities(samples=iclight, encoder=True, conditions_on=frozenset(conditions))


@register_prior("stable-diffusion", title="Stable Diffusion", fallback=True)
class StableDiffusionPrior(Prior):
    """SDS through a frozen SD U-Net (+ optional ControlNet or IC-Light offset), in latent space, back through
    the VAE encoder.

    Attributes the loop may read: `multiple`, `resolution`, `device`, `dtype`, `schedule`, `prediction_type`,
    `source` (what was loaded). The diffusers modules are public attributes (`unet`, `vae`, `text_encoder`,
    `tokenizer`, `controlnet`, `encoder_vae`) for tests and diagnostics only. The family is the catch-all:
    any folder or hub id that is not another family's is tried as Stable Diffusion.
    """

    @dataclass(frozen=True)
    class Config(LatentConfig):
        controlnet: str | None = field(default=None, metadata={"help": "ControlNet folder or cached hub id, conditioned on the base."})
        iclight: str | None = field(default=None, metadata={
            "help": "IC-Light offset (file, folder or cached hub id) merged into an SD 1.5 U-Net; conditions on the base."})
        background: str | None = field(default=None, metadata={
            "help": "With an IC-Light fbc offset: the background picture it conditions on."})

    capabilities = sd_capabilities(controlnet=False, iclight=False)
    architecture = parts.SD

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
        light: iclight.IcLight | None = None,
    ) -> None:
        self.unet, self.vae, self.text_encoder, self.controlnet = unet, vae, text_encoder, controlnet
        self.tokenizer = tokenizer
        self.iclight = light  # the merged IC-Light offset (its variant) and background, or None
        text_width, pooled_width = self._text_widths()
        check_compatible(unet, vae, text_width, controlnet, source, encoder_vae, pooled_width=pooled_width,
                         condition_channels=light.condition_channels if light else 0)
        self.device = torch.device(device)
        self.dtype = dtype
        self.source = source
        if fast_encoder not in FAST_ENCODERS:
            raise ValueError(f"fast_encoder must be one of {FAST_ENCODERS}, got {fast_encoder!r}")
        self.fast_encoder = fast_encoder
        self.encoder_vae = encoder_vae  # a TAESD-style AutoencoderTiny used for the gradient path, or None
        self.low_memory = bool(low_memory)
        for module in self._networks():
            module.requires_grad_(False)
            module.eval()
            module.to(self.device)
            if module.dtype != dtype:  # loaders already load in `dtype`; this is for hand-built modules
                module.to(dtype)
        self.controlnet_scale = float(controlnet_scale)
        self.capabilities = sd_capabilities(controlnet=controlnet is not None, iclight=light is not None)
        self.scheduler_config = dict(scheduler_config)

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
    def check_files(cls, model: str) -> None:
        parts.check_local_files(model)

    @classmethod
    def load(cls, model: str, config: Any = None, *, device: torch.device | str, dtype: torch.dtype) -> "StableDiffusionPrior":
        """Load from a diffusers folder, a cached hub id, or a single `.safetensors` checkpoint (see
        sd_components). Raises ModelError with a one-line message for anything the user can fix; an IC-Light
        offset that doesn't fit a diffusers folder's U-Net is refused from the headers, before anything loads."""
        config = config or cls.Config()
        light = None
        if config.iclight or config.background:
            if not config.iclight:
                raise ModelError("--background is the background of an IC-Light fbc model: it needs --iclight.")
            offset = iclight.read_offset(config.iclight, background=config.background is not None)
            base_shapes = parts.unet_weight_shapes(model)
            if base_shapes is not None:
                iclight.check_fits(offset, base_shapes, model)
            background = iclight.read_background(config.background) if config.background else None
            light = iclight.IcLight(offset, background)
        loaded = parts.load_model(model, model_config=config.model_config, dtype=dtype, architecture=cls.architecture)
        if light is not None:
            iclight.merge(loaded.unet, light.offset, model)
        cn = parts.load_controlnet(config.controlnet, dtype=dtype) if config.controlnet else None
        return cls(controlnet=cn, light=light, **cls._loaded(model, loaded, config, device, dtype))

    @classmethod
    def _loaded(cls, model: str, loaded: parts.SDComponents, config: Any, device: Any, dtype: torch.dtype) -> dict[str, Any]:
        """The constructor arguments every Stable Diffusion family's `load` shares."""
        tiny = parts.load_tiny_autoencoder(config.vae, dtype=dtype) if config.vae else None
        return dict(
            unet=loaded.unet, vae=loaded.vae, text_encoder=loaded.text_encoder, tokenizer=loaded.tokenizer,
            scheduler_config=loaded.scheduler_config, device=torch.device(device), dtype=dtype, source=model,
            encoder_vae=tiny, fast_encoder=config.fast_encoder, low_memory=config.low_memory,
        )

    @classmethod
    def capabilities_for(cls, config: Any) -> Capabilities:
        return sd_capabilities(controlnet=bool(config.controlnet), iclight=bool(config.iclight))

    @classmethod
    def hub_files(cls, *, adapter: str | None = None) -> HubFiles | None:
        """The pipeline's files; with `adapter`, those of the repo `--controlnet`, `--vae` or `--iclight` loads
        (None for an option the family lacks)."""
        if adapter is not None and adapter not in {f.name for f in dataclasses.fields(cls.Config)}:
            return None
        if adapter == "iclight":
            return iclight.hub_files()
        return parts.hub_files(cls.architecture, adapter=adapter is not None)

    def _text_widths(self) -> tuple[int, int | None]:
        """(width of the text embeddings the U-Net cross-attends to, width of a pooled embedding or None)."""
        return int(self.text_encoder.config.hidden_size), None

    def _networks(self) -> list[Any]:
        """The frozen modules the prior moves to its device and dtype."""
        return [m for m in (self.unet, self.vae, self.text_encoder, self.controlnet, self.encoder_vae) if m is not None]

    def _enable_low_memory(self) -> None:
        """What `--low-memory` switches on: the encoder recomputes its activations in the backward pass
        (gradient checkpointing) instead of storing them, the VAE encodes batches one image at a time, the
        VAE decoder (SDS never decodes) leaves the device, and the text encoder stays on the CPU (it runs
        once per run). Attention is left to PyTorch's scaled-dot-product kernels, whose flash and
        memory-efficient paths never hold the full attention matrix: diffusers' attention slicing would
        replace them with sliced plain matmuls that hold [heads/slices, N, N] and are slower. IC-Light's
        direct sampling decodes, so with an offset the decoder stays."""
        for vae in (self.vae, self.encoder_vae):
            if vae is None:
                continue
            if getattr(vae, "_supports_gradient_checkpointing", False):
                vae.enable_gradient_checkpointing()
            if hasattr(vae, "enable_slicing"):
                vae.enable_slicing()
        if getattr(self.vae, "decoder", None) is not None and not self.capabilities.samples:
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
        encoder = self.encoder_vae if self.encoder_vae is not None else self.vae
        x = image.to(self.device, encoder.dtype) * 2 - 1
        size = (x.shape[-2] // self.vae_scale, x.shape[-1] // self.vae_scale)
        if self.fast_encoder == "half":
            x = F.interpolate(x, scale_factor=0.5, mode="area")
        latents = parts.encode_latents(encoder, x)
        if tuple(latents.shape[-2:]) != size:
            latents = F.interpolate(latents, size=size, mode="bilinear", align_corners=False)
        return latents.float()

    # ------------------------------------------------------------------ the interface

    @torch.no_grad()
    def condition(self, prompt: str, base: Tensor, negative_prompt: str = "", *, matte: Tensor | None = None) -> TextCondition:
        """`matte` [1, 1, h, w] (where the subject is; IC-Light greys the rest of the base) only when
        `capabilities.conditions_on` has "matte"."""
        check_base(base)
        # On the text encoder's device: the CPU under low_memory.
        embeddings = parts.encode_text(self.tokenizer, self.text_encoder, [negative_prompt, prompt])
        embeddings = embeddings.to(self.device, self.dtype)
        hint = base.to(self.device, self.dtype) if self.controlnet is not None else None
        concat = self._iclight_latents(base, matte) if self.iclight is not None else None
        return TextCondition(prompt, negative_prompt, embeddings=embeddings, hint=hint, concat=concat)

    def _iclight_latents(self, base: Tensor, matte: Tensor | None) -> Tensor:
        """IC-Light's condition latents: the base greyed outside the matte, then (fbc) the background covering
        the base's size, each encoded to the VAE posterior's mode from IC-Light's pixel scale."""
        images = [iclight.over_grey(base, matte)]
        if self.iclight.background is not None:
            images.append(iclight.cover(self.iclight.background, tuple(base.shape[-2:])))
        pixels = [iclight.model_pixels(image.to(self.device, torch.float32)).to(self.vae.dtype) for image in images]
        return torch.cat([parts.encode_latents(self.vae, x) for x in pixels], dim=1).to(self.dtype)

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
        text, hint, concat, extra = self._condition_inputs(cond, batch, tuple(noisy.shape[-2:]))
        if self.controlnet is not None:
            down, mid = self.controlnet(
                latent_in,
                t_in,
                encoder_hidden_states=text,
                controlnet_cond=hint,
                conditioning_scale=self.controlnet_scale,
                return_dict=False,
            )
            extra = {**extra, "down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        unet_in = latent_in if concat is None else torch.cat([latent_in, concat], dim=1)
        return self.unet(unet_in, t_in, encoder_hidden_states=text, return_dict=False, **extra)[0]

    def _condition_inputs(
        self, cond: TextCondition, batch: int, latent_size: tuple[int, ...]
    ) -> tuple[Tensor, Tensor | None, Tensor | None, dict[str, Any]]:
        """The text embeddings repeated for the batch, the resized control hint, IC-Light's condition latents
        for every row and the U-Net's extra keyword arguments: the same every step of a run, so they are made
        once and reused while the condition, batch and size stay the same."""
        cached = self._cond_cache
        if cached is not None and cached[0] is cond and cached[1] == batch and cached[2] == latent_size:
            return cached[3]
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
        concat = None
        if self.iclight is not None:
            if cond.concat is None or tuple(cond.concat.shape[-2:]) != latent_size:
                raise ValueError("this prior has an IC-Light offset: make the condition with prior.condition() at the working size")
            concat = cond.concat.expand(2 * batch, -1, -1, -1)
        inputs = (text, hint, concat, self._unet_extras(cond, batch))
        self._cond_cache = (cond, batch, latent_size, inputs)
        return inputs

    def _unet_extras(self, cond: TextCondition, batch: int) -> dict[str, Any]:
        """Keyword arguments of the U-Net call beyond the text (SDXL's pooled text and time ids)."""
        return {}

    # ------------------------------------------------------------------ direct generation (IC-Light)

    @torch.no_grad()
    def sample(
        self, base: Tensor, prompts: list[str], *, steps: int = 50, guidance: float = 3.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """What IC-Light's users get today: its relit picture of each base, DDIM-sampled from noise with the base's
        condition latents (fc; fbc adds the background's) and classifier-free guidance on the prompt, decoded
        by the VAE. One pass at the working size: the demo's optional high-resolution second pass is left out."""
        if not self.capabilities.samples:
            return super().sample(base, prompts, steps=steps, guidance=guidance, generator=generator)
        from diffusers import DDIMScheduler

        # predict_noise converts v/x0 to eps, so the sampler steps on eps; IC-Light's demo DDIM settings.
        scheduler = DDIMScheduler.from_config(self.scheduler_config, prediction_type="epsilon", clip_sample=False,
                                              set_alpha_to_one=False, steps_offset=1)
        rng_device = generator.device if generator is not None else self.device
        pictures = []
        for image, prompt in zip(base, prompts):
            cond = self.condition(prompt, image[None])
            scheduler.set_timesteps(steps, device=self.device)
            shape = (1, self.vae.config.latent_channels, image.shape[-2] // self.vae_scale, image.shape[-1] // self.vae_scale)
            x = torch.randn(shape, generator=generator, device=rng_device).to(self.device) * scheduler.init_noise_sigma
            for t in scheduler.timesteps:
                eps_uncond, eps_cond = self.predict_noise(x, t.reshape(1).to(self.device), cond)
                x = scheduler.step(classifier_free_guidance(eps_uncond, eps_cond, guidance), t, x).prev_sample
            pictures.append((parts.decode_latents(self.vae, x).float() + 1) / 2)
        return torch.cat(pictures).clamp(0, 1)


def check_base(base: Tensor) -> None:
    """ValueError unless `base` is one RGB picture [1, 3, H, W]: what `condition` takes."""
    if base.ndim != 4 or base.shape[0] != 1 or base.shape[1] != 3:
        raise ValueError(f"base must be [1, 3, H, W], got {list(base.shape)}")
