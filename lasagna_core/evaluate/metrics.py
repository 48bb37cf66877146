"""What `lasagna eval` measures, per case (numpy, [3,H,W] sRGB in [0,1]) then averaged:

* PSNR (dB) and SSIM (Gaussian window, sigma 1.5, mean over RGB) of the result against the ground truth;
* chroma drift: mean over pixels of |delta (a*, b*)| (CIE Lab, D65) between result and base. Lab's a*b*
  shrink as a colour darkens, so this also counts correct shading (the ground-truth row shows how much);
  hence also
* chroma drift at equal lightness: the same after a gray gain (on the sRGB values, where Multiply acts)
  brings the result to the base's luma - 0 for a gray Multiply shading, > 0 for hue/saturation changes;
* edge similarity: Pearson correlation of the Sobel gradient magnitudes of the result's and the base's
  lightness - 1 when the picture's structure is kept;
* shading strength: mean |delta L*| inside the object mask - so that a layer that does nothing (the trap of
  a too-strong pull to neutral) shows as ~0 instead of hiding behind the direction metric;
* direction accuracy: the fraction of cases where the change of log-luminance inside the object mask
  correlates positively (Pearson r > 0) with the light's image-plane direction, measured as the
  position of each pixel relative to the centroid of its own object (connected component of the mask),
  projected on that direction. Front and back lights have no image-plane direction: those cases are left
  out of this metric (their count is reported) but kept in all the others;
* cast-shadow IoU, outline error and the Light layer's hue: see `cast_shadow_iou`, `outline_error` and
  `light_hue` (scored where the truth adds light: `adds_light`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..color import PSD_LUMA, linear_to_lab, srgb_to_lab, srgb_to_linear
from ..labelling import boundaries, components

VISIBLE_SHADING = 1.0
"""Mean |delta L*| (CIE Lab lightness units) a case's change must reach to count in the *visible* direction
accuracy: about one just-noticeable difference."""


CAST_SHADOW_DARKENING = 5.0
"""How much darker than the base (CIE L*) a pixel outside the object must be to count as cast shadow."""

OUTSIDE_COVERAGE = 0.01
"""A pixel is outside the object where the mask covers at most this much of it: the anti-aliased rim holds
part of the object's own form shading, which is no cast shadow."""

OUTLINE_RADIUS = 2
"""Pixels within this distance of an outline are the outline error's band."""

REGION_EDGE = 8.0
"""|delta Lab| between 4-neighbours of the base that makes an edge between colour regions (flat art's region
steps are tens of units, split over one or two anti-aliased pixels; gradients and faint textures change a
fraction of a unit a pixel)."""

HUE_TOLERANCE = 30.0
"""Degrees of CIE Lab hue within which a Light layer carries the asked light colour."""

GREY_CHROMA = 2.0
"""Lab chroma below which a mean light colour is grey: it has no hue to compare."""

LIT_SHARE = 0.001
"""The share of pixels the truth must brighten (by more than VISIBLE_SHADING L*) for a case to have light for
the Light layer to carry. A coloured light from behind often only darkens and tints the picture (15% of the
flat-art test split's coloured-light cases brighten no pixel at all): an empty Light layer is right there."""


def visible_share(pairs: Sequence[tuple[float, float]]) -> float:
    """Share of (direction r, shading |delta L*|) pairs that are right AND visible: faint layers can't score."""
    return float(np.mean([r > 0 and shading >= VISIBLE_SHADING for r, shading in pairs]))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    """Mean SSIM over channels with a Gaussian window (Wang et al. 2004 constants), 'valid' borders."""
    radius = max(1, min(int(3 * sigma + 0.5), (min(a.shape[-2:]) - 1) // 2))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :])[None, None].repeat(a.shape[0], 1, 1, 1)
    ta, tb = (torch.from_numpy(v.astype(np.float64))[None] for v in (a, b))

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, window, groups=a.shape[0])

    mu_a, mu_b = blur(ta), blur(tb)
    var_a, var_b = blur(ta * ta) - mu_a**2, blur(tb * tb) - mu_b**2
    cov = blur(ta * tb) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def chroma_drift(result: np.ndarray, base: np.ndarray) -> float:
    la, lb = srgb_to_lab(result), srgb_to_lab(base)
    return float(np.mean(np.hypot(la[1] - lb[1], la[2] - lb[2])))


def chroma_drift_equal_lightness(result: np.ndarray, base: np.ndarray) -> float:
    """Mean |delta (a*, b*)| after a gray gain brings the result to the base's luma (in sRGB values, where
    Multiply acts): a gray Multiply shading of the base scores 0, a change of hue or saturation (or light that
    washes colour out) does not. Plain Lab a*b* shrink with lightness, so `chroma_drift` also counts shading."""
    luma = np.array([0.3, 0.59, 0.11])
    yr, yb = np.tensordot(luma, result, axes=1), np.tensordot(luma, base, axes=1)
    gain = np.minimum(yb / np.maximum(yr, 1e-3), 20.0)[None]
    scaled = np.maximum(result * gain, 0.0)
    lin = srgb_to_linear(scaled)  # no clip above 1
    la, lb = linear_to_lab(lin), srgb_to_lab(base)
    return float(np.mean(np.hypot(la[1] - lb[1], la[2] - lb[2])))


def _sobel_magnitude(gray: np.ndarray) -> np.ndarray:
    p = np.pad(gray, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return np.hypot(gx, gy)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-12 else 0.0


def edge_similarity(result: np.ndarray, base: np.ndarray) -> float:
    return _pearson(_sobel_magnitude(srgb_to_lab(result)[0]), _sobel_magnitude(srgb_to_lab(base)[0]))


def shading_strength(result: np.ndarray, base: np.ndarray, mask: np.ndarray) -> float:
    d = np.abs(srgb_to_lab(result)[0] - srgb_to_lab(base)[0])
    m = mask > 0.5
    return float(d[m].mean()) if m.any() else float(d.mean())


def direction_correlation(result: np.ndarray, base: np.ndarray, mask: np.ndarray | None, vector: tuple[float, float]) -> float | None:
    """Pearson r between the change of log-luminance and each pixel's position (relative to its object's
    centroid, y up) projected on the light's image-plane `vector`; None without an image-plane direction."""
    dx, dy = vector
    if abs(dx) + abs(dy) < 1e-6:
        return None
    lum = lambda im: np.log(np.clip(0.3 * im[0] + 0.59 * im[1] + 0.11 * im[2], 1e-3, None))  # noqa: E731
    change = lum(result) - lum(base)
    h, w = change.shape
    m = np.ones((h, w), bool) if mask is None else mask > 0.5
    if m.sum() < 3:
        m = np.ones((h, w), bool)
    labels = components(np.where(m, 0, -1))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    proj = np.zeros((h, w))
    for label in range(labels.max() + 1):
        sel = labels == label
        cx, cy = xs[sel].mean(), ys[sel].mean()
        proj[sel] = (xs[sel] - cx) * dx - (ys[sel] - cy) * dy
    return _pearson(change[m], proj[m])


def cast_shadow_iou(result: np.ndarray, base: np.ndarray, truth: np.ndarray, mask: np.ndarray | None) -> float | None:
    """IoU of the cast shadows of truth and result: the pixels outside the object (`mask` <= OUTSIDE_COVERAGE)
    that are darker than the base by more than CAST_SHADOW_DARKENING L*, counted from the change the
    surroundings took as a whole (the median over the outside pixels). A dim coloured light (red, blue,
    moonlight) or a light from behind darkens the whole backdrop by 7-30 L*: counted from the base alone, the
    whole background would be "shadow", and a picture darkened all over would match it while casting none.
    Where the backdrop keeps its lightness (white light from a side) the median is within about 2 L* of 0.
    None when the truth casts no shadow (or there is no mask to tell the object from its surroundings): such
    a case is not counted."""
    if mask is None:
        return None
    outside = mask <= OUTSIDE_COVERAGE
    if not outside.any():
        return None
    lightness = srgb_to_lab(base)[0]

    def shadow(picture: np.ndarray) -> np.ndarray:
        darkening = lightness - srgb_to_lab(picture)[0]
        return outside & (darkening - np.median(darkening[outside]) > CAST_SHADOW_DARKENING)

    wanted = shadow(truth)
    if not wanted.any():
        return None
    made = shadow(result)
    return float((wanted & made).sum() / (wanted | made).sum())


def outline_band(base: np.ndarray, mask: np.ndarray | None, radius: int = OUTLINE_RADIUS) -> np.ndarray:
    """(H, W) bool: the pixels within `radius` px of an outline: the edge of the object mask and the edges
    between the base's colour regions (4-neighbours more than REGION_EDGE apart in Lab)."""
    from ..flats import dilate

    lab = srgb_to_lab(base)
    edges = np.zeros(base.shape[1:], bool)
    if mask is not None:
        edges |= boundaries((mask > 0.5).astype(np.int32))
    across = np.sqrt(((lab[:, :, 1:] - lab[:, :, :-1]) ** 2).sum(0)) > REGION_EDGE
    edges[:, 1:] |= across
    edges[:, :-1] |= across
    down = np.sqrt(((lab[:, 1:] - lab[:, :-1]) ** 2).sum(0)) > REGION_EDGE
    edges[1:] |= down
    edges[:-1] |= down
    return dilate(edges, radius)


def outline_error(result: np.ndarray, truth: np.ndarray, band: np.ndarray) -> float | None:
    """Mean |error| of the result's shading against the truth's over `band` (`outline_band`), shading being
    the change of CIE L* over the base: what the layers do to the base against what the light did to it.
    The base cancels ((L_t - L_b) - (L_r - L_b) = L_t - L_r), so it is the L* error of the composite there.

    L* rather than a ratio of luma: a ratio divides by the base, and the dark outline ink is exactly where
    this looks, so a ratio would blow up there; L* weighs an error alike in the lit and the dark parts, and
    Multiply and Screen both show as lightness. None when there is no outline."""
    if not band.any():
        return None
    return float(np.abs(srgb_to_lab(truth)[0] - srgb_to_lab(result)[0])[band].mean())


def light_hue(layer: np.ndarray) -> float | None:
    """The CIE Lab hue (degrees) of a Screen layer ([C, H, W] in [0, 1]) as light: the hue of its mean colour
    weighted by how much each pixel brightens (its Lum: Screen adds (1 - base) x layer, so a pixel's light
    scales with the layer's amount there), scaled to a largest channel of 1 (the light's colour, not its
    strength, as the manifest's `light_color` is). Weighting the colours rather than averaging hue angles
    keeps the faint pixels, whose hue is noise, from counting as much as the light the viewer sees. None for
    a layer that brightens nothing or is grey (one channel, or chroma below GREY_CHROMA): it has no hue."""
    if layer.shape[0] != 3:
        return None
    weight = np.tensordot(np.asarray(PSD_LUMA), layer.astype(np.float64), axes=1)
    if weight.sum() <= 1e-9:
        return None
    mean = (layer * weight[None]).sum(axis=(1, 2)) / weight.sum()
    return _hue(mean / mean.max())


def _hue(rgb: np.ndarray) -> float | None:
    _, a, b = srgb_to_lab(np.asarray(rgb, np.float64).reshape(3, 1, 1))[:, 0, 0]
    return None if np.hypot(a, b) < GREY_CHROMA else float(np.degrees(np.arctan2(b, a)) % 360)


def adds_light(target: np.ndarray, base: np.ndarray) -> bool:
    """Whether the truth brightens the base anywhere that counts (LIT_SHARE of the pixels, by more than
    VISIBLE_SHADING L*): only then does the Light layer's hue have something to match."""
    lighter = srgb_to_lab(target)[0] - srgb_to_lab(base)[0] > VISIBLE_SHADING
    return bool(lighter.mean() >= LIT_SHARE)


def light_hue_error(layer: np.ndarray, asked: Sequence[float]) -> float:
    """Degrees between the Light layer's hue (`light_hue`) and the asked light colour's (sRGB): 180, the
    largest, when the layer carries no hue: a coloured light that leaves no colour is a miss."""
    hue, want = light_hue(layer), _hue(np.asarray(asked))
    if hue is None or want is None:
        return 180.0
    return float(abs((hue - want + 180.0) % 360.0 - 180.0))
