"""A plausible 3-D shape for flat art: the silhouette and its colour regions inflated into a height field.

As 2-D lighting tools do (Ink-and-Ray, Lumo): each region is inflated by solving the Poisson equation
-laplacian(u) = 1 inside it with u = 0 on its outline, and height = 2 sqrt(u), which is exactly a hemisphere
for a disc and rounds any outline smoothly. (A profile of the distance to the outline, the obvious
alternative, leaves creases along the medial axis: an apple looks folded.) The whole silhouette gives the
body; each colour region of at least `min_part_area` of the canvas adds `part_weight` times its own
inflation on top, so parts (a belly, a wheel, a leaf) stand out like stacked layers. Tiny or thin regions
(seeds, eyes, outline strokes) would become bumps and ridges: they join the region around them instead. Heights are in pixels of the raster they come from, times `depth`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..labelling import boundaries, grow

_F = np.float32


@dataclass(frozen=True)
class InflateSettings:
    depth: float = 1.0  # height of the body relative to a hemisphere
    part_weight: float = 0.25
    min_part_area: float = 0.0005  # share of the canvas
    min_part_width: float = 0.01  # area / outline length (about half the width) as a share of the side
    opaque: float = 0.5  # alpha from which a pixel belongs to the silhouette
    tolerance: float = 1e-5
    max_iterations: int = 4000


def poisson(regions: np.ndarray, settings: InflateSettings = InflateSettings()) -> np.ndarray:
    """u with -laplacian(u) = 1 inside every region (pixels of equal id >= 0, 4-neighbours coupled only within
    a region) and u = 0 outside; all regions in one conjugate-gradient solve (the system is block diagonal)."""
    inside = regions >= 0
    right = inside[:, :-1] & (regions[:, :-1] == regions[:, 1:])
    down = inside[:-1, :] & (regions[:-1, :] == regions[1:, :])

    def apply(u: np.ndarray) -> np.ndarray:
        out = 4.0 * u
        out[:, :-1] -= np.where(right, u[:, 1:], 0.0)
        out[:, 1:] -= np.where(right, u[:, :-1], 0.0)
        out[:-1, :] -= np.where(down, u[1:, :], 0.0)
        out[1:, :] -= np.where(down, u[:-1, :], 0.0)
        return np.where(inside, out, 0.0)

    b = inside.astype(np.float64)
    u = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = float((r * r).sum())
    stop = settings.tolerance**2 * rr
    for _ in range(settings.max_iterations):
        if rr <= stop:
            break
        ap = apply(p)
        alpha = rr / float((p * ap).sum())
        u += alpha * p
        r -= alpha * ap
        rr_new = float((r * r).sum())
        p = r + (rr_new / rr) * p
        rr = rr_new
    return np.maximum(u, 0.0)


def height_field(alpha: np.ndarray, regions: np.ndarray, settings: InflateSettings = InflateSettings()) -> np.ndarray:
    """(H, W) float32 heights in pixels: the inflated silhouette plus the inflated large colour regions."""
    silhouette = alpha >= settings.opaque
    body = 2.0 * np.sqrt(poisson(np.where(silhouette, 0, -1), settings))
    parts = absorb_small_regions(np.where(silhouette, regions, -1), settings)
    bumps = 2.0 * np.sqrt(poisson(parts, settings)) if (parts >= 0).any() else 0.0
    return (settings.depth * (body + settings.part_weight * bumps)).astype(_F)


def absorb_small_regions(regions: np.ndarray, settings: InflateSettings) -> np.ndarray:
    """Regions too small (under `min_part_area` of the canvas) or too thin (area / outline length, about half
    their width, under `min_part_width` of the side: strokes, seeds, eyes) handed to the regions around them,
    so they neither bump nor punch a dimple into their neighbour's bump."""
    ids = regions[regions >= 0]
    if ids.size == 0:
        return regions
    edge = boundaries(regions)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    area = np.bincount(ids)
    outline = np.bincount(regions[edge & (regions >= 0)], minlength=area.size)
    side = max(regions.shape)
    small = (area < settings.min_part_area * regions.size) | (area < settings.min_part_width * side * np.maximum(outline, 1))
    return grow(regions, (regions >= 0) & small[np.maximum(regions, 0)])


def normals(height: np.ndarray) -> np.ndarray:
    """(3, H, W) unit normals of the surface z = height (x right, y up, z toward the camera; row 0 at the top)."""
    dz_dx = np.zeros_like(height)
    dz_dy = np.zeros_like(height)
    dz_dx[:, 1:-1] = (height[:, 2:] - height[:, :-2]) * 0.5
    dz_dy[1:-1, :] = (height[:-2, :] - height[2:, :]) * 0.5  # y grows upward, rows downward
    n = np.stack([-dz_dx, -dz_dy, np.ones_like(height)])
    return (n / np.sqrt((n * n).sum(axis=0))).astype(_F)
