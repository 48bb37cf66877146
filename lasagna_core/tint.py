"""Coloured light in shading layers: the prompt's light colour (`light_colors.parse_light_color`) given to the
distilled light and shadow amounts, the way painters tint a Screen and a Multiply layer.

The built-in relighting prior decides where light and shadow fall (grey layers); the colour comes from the
words. A template layer with `tint = "light"` (a Screen layer of amount l) becomes the RGB layer l x colour,
the light's hue at its own strength; one with `tint = "shadow"` (a Multiply layer of value m) becomes
1 - (1 - m) x (1 - tint + Lum(tint)) per channel, where tint is the colour's `shadow` (the cool or
complementary fill painters give the shadows of a warm light): about as dark as before, the darkening leaning
to the tint's hue. Neutral values stay neutral (l = 0, m = 1), so untouched pixels stay untouched. With no
colour in the prompt nothing changes: the layers stay grey, exactly as without this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .color import PSD_LUMA
from .light_colors import LightColor, parse_light_color

if TYPE_CHECKING:
    from torch import Tensor

    from .templates import EditSpec, LayerSpec

TINTS = ("light", "shadow")


def light_of(spec: EditSpec, prompt: str) -> LightColor | None:
    """The light colour the prompt asks for, when the template has a layer to carry it."""
    return parse_light_color(prompt) if any(layer.tint for layer in spec.layers) else None


def written_channels(spec: EditSpec, light: LightColor | None) -> list[int]:
    """The channels each layer is written with: RGB for a tinted layer under a coloured light."""
    return [3 if light is not None and layer.tint else layer.channels for layer in spec.layers]


def tint_factors(layer: LayerSpec, light: LightColor) -> np.ndarray:
    """(3,) per-channel factors: the light's colour, or the shadow darkening's per channel."""
    if layer.tint == "light":
        return np.asarray(light.rgb, np.float32)
    shadow = np.asarray(light.shadow, np.float32)
    return 1 - shadow + np.float32(np.dot(PSD_LUMA, shadow))


def tint_plane(color: Tensor, layer: LayerSpec, light: LightColor | None) -> Tensor:
    """A finished layer's colour [B, C, H, W] as written under `light` (unchanged without one or a tint)."""
    if light is None or not layer.tint:
        return color
    import torch

    factors = torch.as_tensor(tint_factors(layer, light), dtype=color.dtype, device=color.device)[None, :, None, None]
    grey = color[:, :1]
    if layer.tint == "light":
        return grey * factors
    return (1 - (1 - grey) * factors).clamp(0, 1)
