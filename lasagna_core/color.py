"""sRGB, linear light, CIE L*a*b* (D65) and the CIEDE2000 colour difference in numpy: the one implementation
of these formulas that the data renderers (`synth`, `flatart`), the flats and the metrics (`evaluate`) share."""

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


def _lab_f(t: np.ndarray) -> np.ndarray:
    return np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)


def linear_to_lab(lin: np.ndarray) -> np.ndarray:
    """[3, H, W] linear RGB (values above 1 allowed) -> [3, H, W] CIE L*a*b* (D65)."""
    f = _lab_f(np.tensordot(_RGB_TO_XYZ, lin, axes=1) / np.array([0.95047, 1.0, 1.08883])[:, None, None])
    return np.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def srgb_lightness(rgb: np.ndarray) -> np.ndarray:
    """[3, ...] sRGB in [0, 1] -> [...] CIE L* alone (a third of the work of `srgb_to_lab`)."""
    return 116 * _lab_f(np.tensordot(_RGB_TO_XYZ[1], srgb_to_linear(np.clip(rgb, 0, 1)), axes=1)) - 16


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """[3, H, W] sRGB in [0, 1] -> [3, H, W] CIE L*a*b* (D65)."""
    return linear_to_lab(srgb_to_linear(np.clip(rgb, 0, 1)))


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1) of L*a*b* colours with the channel first ([3, ...],
    broadcast against each other): about 1 is a just-noticeable difference. Written after Sharma, Wu and Dalal
    (2005), whose test pairs tests/test_color.py checks, hue-angle conventions included."""
    lab1, lab2 = np.asarray(lab1, np.float64), np.asarray(lab2, np.float64)
    (l1, a1, b1), (l2, a2, b2) = lab1, lab2
    c_mean7 = ((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_mean7 / (c_mean7 + 25.0**7)))
    a1, a2 = a1 * (1 + g), a2 * (1 + g)
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    h1, h2 = np.degrees(np.arctan2(b1, a1)) % 360, np.degrees(np.arctan2(b2, a2)) % 360
    chromatic = c1 * c2 != 0
    dh = h2 - h1
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh)) * chromatic
    d_hue = 2 * np.sqrt(c1 * c2) * np.sin(np.radians(dh) / 2)
    h_sum = h1 + h2
    h_mean = np.where(np.abs(h1 - h2) <= 180, h_sum / 2, np.where(h_sum < 360, h_sum + 360, h_sum - 360) / 2)
    h_mean = np.where(chromatic, h_mean, h_sum)
    l_mean, c_mean = (l1 + l2) / 2, (c1 + c2) / 2
    t = (1 - 0.17 * np.cos(np.radians(h_mean - 30)) + 0.24 * np.cos(np.radians(2 * h_mean))
         + 0.32 * np.cos(np.radians(3 * h_mean + 6)) - 0.20 * np.cos(np.radians(4 * h_mean - 63)))
    rotation = 30 * np.exp(-(((h_mean - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_mean, 1 + 0.015 * c_mean * t
    dl, dc, dhue = (l2 - l1) / s_l, (c2 - c1) / s_c, d_hue / s_h
    return np.sqrt(dl**2 + dc**2 + dhue**2 - np.sin(np.radians(2 * rotation)) * r_c * dc * dhue)
