"""sRGB, linear light and CIE L*a*b* (D65) in numpy: the one implementation of these curves that the data
renderers (`synth`, `flatart`) and the metrics (`evaluate.metrics`) share."""

from __future__ import annotations

import numpy as np

PSD_LUMA = (0.3, 0.59, 0.11)
"""The weights of PSD's Lum (the W3C blend spec's): what the Color, Hue and Luminosity modes keep or set."""

_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values -> linear light, float64. Not clipped: a gain may have pushed values above 1, and
    the curve extends there (callers that need [0, 1] clip first)."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB-encoded float32, clipped to [0, 1] (what a picture file can hold)."""
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1.0 / 2.4) - 0.055).astype(np.float32)


def linear_to_lab(lin: np.ndarray) -> np.ndarray:
    """[3, H, W] linear RGB (values above 1 allowed) -> [3, H, W] CIE L*a*b* (D65)."""
    xyz = np.tensordot(_RGB_TO_XYZ, lin, axes=1) / np.array([0.95047, 1.0, 1.08883])[:, None, None]
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """[3, H, W] sRGB in [0, 1] -> [3, H, W] CIE L*a*b* (D65)."""
    return linear_to_lab(srgb_to_linear(np.clip(rgb, 0, 1)))
