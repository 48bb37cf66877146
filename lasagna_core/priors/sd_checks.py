"""Whether the parts of a Stable Diffusion prior can work together, refused in one line before any network runs.

A ControlNet for another VAE, an inpainting U-Net, an SDXL refiner, a tiny autoencoder for other latents:
each would fail deep inside a forward pass (or, worse, run and mislead), so the prior asks here first.
"""

from __future__ import annotations

from typing import Any

from lasagna_core.errors import ModelError
from lasagna_core.priors.sd_components import vae_scale_factor

SDXL_TIME_IDS = 6
"""SDXL base's micro-conditioning: original size, crop top-left and target size, (h, w) each."""


def check_compatible(
    unet: Any, vae: Any, text_width: int, controlnet: Any | None, source: str, encoder_vae: Any | None = None, *,
    condition_channels: int = 0, pooled_width: int | None = None,
) -> None:
    """ModelError in one line for parts that would fail (or silently mislead) once the network runs.

    text_width: the width of the text embeddings the U-Net cross-attends to (SDXL: both encoders' together).
    condition_channels: latent channels concatenated after the noisy latent (IC-Light's condition latents).
    pooled_width: SDXL's pooled text embedding width (the U-Net's "text_time" conditioning), None for SD 1.x/2.x.
    """
    uc = unet.config
    _check_extra_conditioning(uc, source, pooled_width)
    expected = vae.config.latent_channels + condition_channels
    if uc.in_channels != expected:
        raise ModelError(
            f"Model '{source}' has a U-Net with {uc.in_channels} input channels (inpainting/depth model?); "
            f"Lasagna needs a plain text-to-image checkpoint ({expected} channels)."
        )
    if uc.cross_attention_dim != text_width:
        raise ModelError(f"Model '{source}': the U-Net and text encoder don't match (cross-attention width).")
    if controlnet is not None:
        cc = controlnet.config
        if (
            tuple(cc.block_out_channels) != tuple(uc.block_out_channels)
            or cc.cross_attention_dim != uc.cross_attention_dim
        ):
            raise ModelError(f"The ControlNet was trained for a different base architecture than '{source}'.")
        _check_controlnet_input(controlnet, vae, source)
    if encoder_vae is not None and encoder_vae.config.latent_channels != vae.config.latent_channels:
        raise ModelError(
            f"--vae makes {encoder_vae.config.latent_channels}-channel latents, but '{source}' works on "
            f"{vae.config.latent_channels}-channel latents; use a tiny autoencoder made for this model."
        )


def _check_extra_conditioning(uc: Any, source: str, pooled_width: int | None) -> None:
    """SD 1.x/2.x U-Nets take text alone; SDXL base's takes pooled text and six time ids ("text_time")."""
    addition = getattr(uc, "addition_embed_type", None)
    if getattr(uc, "class_embed_type", None) or getattr(uc, "num_class_embeds", None) or (addition and pooled_width is None):
        raise ModelError(f"Model '{source}' needs extra conditioning (SDXL/upscaler-style U-Net); it isn't supported.")
    if pooled_width is None:
        return
    expected = pooled_width + SDXL_TIME_IDS * int(getattr(uc, "addition_time_embed_dim", 0) or 0)
    if addition != "text_time" or getattr(uc, "projection_class_embeddings_input_dim", None) != expected:
        raise ModelError(
            f"Model '{source}' has a U-Net that is not conditioned like SDXL base (pooled text + {SDXL_TIME_IDS} time ids); "
            "an SDXL refiner or another variant isn't supported."
        )


def _check_controlnet_input(controlnet: Any, vae: Any, source: str) -> None:
    """The hint is the base (RGB) at the image size, and the ControlNet's conditioning embedding must bring it
    down to the latent size: its downsampling must equal the VAE's, or the residuals don't line up."""
    cc = controlnet.config
    channels = int(getattr(cc, "conditioning_channels", 3))
    if channels != 3:
        raise ModelError(
            f"The ControlNet takes a {channels}-channel hint, but Lasagna gives it the base image (3 channels, RGB)."
        )
    embedding = getattr(cc, "conditioning_embedding_out_channels", None)
    if embedding:
        hint_scale, latent_scale = 2 ** (len(embedding) - 1), vae_scale_factor(vae)
        if hint_scale != latent_scale:
            raise ModelError(
                f"The ControlNet shrinks its hint {hint_scale}x, but '{source}' works on latents {latent_scale}x "
                f"smaller than the image (its VAE downsamples by {latent_scale}): the ControlNet was made for "
                "another VAE; train or pick one for this model."
            )
