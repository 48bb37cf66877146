"""A Color-mode layer held to the picture's lightness, as the colourist means it: CIE L*, what the eye reads.

PSD's Color blend keeps the base's Lum (0.3 R + 0.59 G + 0.11 B of the sRGB values), and for saturated
colours that is not L*: over mid grey a strong green comes out 20 L* lighter and a strong red 5, so the
drawn shading shifts. `hold_lightness` desaturates each pixel of the layer toward its own Lum just as far as
the composite needs to stay within `tolerance` L* of the base there (bisection on the saturation: a grey
layer pixel changes nothing, so a safe value always exists). Pixels already within it keep their colour.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .blend import luminosity, mix
from .color import srgb_lightness
from .layers import BlendMode

ROUNDS = 8
"""Bisection rounds: the saturation kept is within 1/256 of the most the tolerance allows."""


def hold_lightness(color: Tensor, base: Tensor, tolerance: float) -> Tensor:
    """`color` [1, 3, H, W], a Color-mode layer over `base` [1, 3, H, W] (both sRGB in [0, 1]), with each
    pixel's saturation cut to what keeps the composite's CIE L* within `tolerance` of the base's."""
    grey = luminosity(color)
    target = srgb_lightness(base[0].detach().cpu().numpy())

    def drift(share: Tensor) -> np.ndarray:
        shown = mix(base, (grey + share * (color - grey)).clamp(0.0, 1.0), BlendMode.COLOR)
        return np.abs(srgb_lightness(shown[0].detach().cpu().numpy()) - target)

    full = torch.ones_like(grey)
    whole = drift(full) <= tolerance
    if whole.all():
        return color
    low, high = torch.zeros_like(grey), full
    for _ in range(ROUNDS):
        middle = (low + high) / 2
        fits = torch.from_numpy(drift(middle) <= tolerance).to(color.device)[None, None]
        low, high = torch.where(fits, middle, low), torch.where(fits, high, middle)
    keep = torch.from_numpy(whole).to(color.device)[None, None]
    return (grey + torch.where(keep, full, low) * (color - grey)).clamp(0.0, 1.0)
