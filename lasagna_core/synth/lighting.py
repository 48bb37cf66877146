"""The lighting model of the synthetic scenes: the lights of each named direction, shadows, and the shading
formula every renderer of this project applies (the flat-art relighter too).

Shading (linear light, encoded to sRGB at the end)
    base   = albedo * BASE_GAIN                           flat, no shading: the artist's colour layer
             (photo-like scenes mix in a share of one relit render, like a photo's existing light)
    target = albedo * (ambient + key * diffuse * shadow) + key * specular * shadow
    with diffuse = max(n.l, 0) (Lambert), specular = ks * max(n.h, 0)^shininess (Blinn-Phong, white light,
    h = normalise(l + v), v = +z) and shadow = 0/1 from a shadow ray against every primitive (the plane
    receives shadows but casts none), clipped to [0, 1]. The plain backdrop keeps its base colour.
    `ambient`, `key` and each object's ks/shininess are drawn per scene; BASE_GAIN is fixed.

Lights (`light_rig`)
    The eight in-plane directions of `lasagna_core.directions` are distant lights raised LIGHT_ELEVATION
    toward the camera (so the plane is lit and shadows fall on the far side); "front" is a light at the
    camera; "back" is a ring of lights BACK_ELEVATION behind the objects (BACK_SHADING samples for a smooth
    rim, BACK_RING shadow rays for its visibility), which gives a rim light and leaves the plane at ambient.
    Each sub-sample's shadow ray is tilted a little differently (SHADOW_SOFTNESS), which turns hard shadow
    edges into a short penumbra.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ..directions import DIRECTIONS
from .geometry import candidates, intersect
from .scene import Scene

LIGHT_ELEVATION = math.radians(40.0)
BACK_ELEVATION = math.radians(25.0)
BACK_RING = 6
BACK_SHADING = 24
BACK_GAIN = 2.2
SHADOW_SOFTNESS = 0.035
BASE_GAIN = 0.85
SHADOW_OFFSET = 2e-3
_F = np.float32


@dataclass(frozen=True)
class Rig:
    """The distant lights of one named direction: `shading` (unit vector toward the light, intensity) for
    diffuse and specular, `shadow` the directions whose unblocked fraction (among those facing the surface)
    scales them. One light: the same vector in both. The back ring: 24 shading samples (a smooth rim) and 6
    shadow rays."""

    shading: tuple[tuple[np.ndarray, float], ...]
    shadow: tuple[np.ndarray, ...]


def _ring(count: int, phase: float) -> list[np.ndarray]:
    c, s = math.cos(BACK_ELEVATION), math.sin(BACK_ELEVATION)
    angles = [2 * math.pi * (k + phase) / count for k in range(count)]
    return [np.array([c * math.cos(a), c * math.sin(a), -s], _F) for a in angles]


def light_rig(direction: str) -> Rig:
    """The lights that render a named direction of `lasagna_core.directions.DIRECTIONS`."""
    x, y, z = DIRECTIONS[direction]
    if z > 0.5:  # front: a light at the camera
        v = np.array([x, y, z], _F)
        return Rig(((v, 1.0),), (v,))
    if z < -0.5:  # back: a ring behind the objects, so every silhouette gets a rim
        return Rig(tuple((v, BACK_GAIN / BACK_SHADING) for v in _ring(BACK_SHADING, 0.0)), tuple(_ring(BACK_RING, 0.5)))
    v = np.array([x * math.cos(LIGHT_ELEVATION), y * math.cos(LIGHT_ELEVATION), math.sin(LIGHT_ELEVATION)], _F)
    v /= np.linalg.norm(v)
    return Rig(((v, 1.0),), (v,))


def _dot(v: np.ndarray, a: np.ndarray) -> np.ndarray:
    """A constant 3-vector against (3, N) vectors."""
    return v[0] * a[0] + v[1] * a[1] + v[2] * a[2]


@functools.lru_cache(maxsize=64)
def shadow_directions(direction: str, ss: int) -> tuple[np.ndarray, ...]:
    """For each shadow light of a direction's rig, its ss*ss tilted copies as a (3, ss*ss) array: sub-sample
    k = (i, j) of every pixel tilts its shadow ray by its own small offset, so a pixel sees a small area
    light (a short penumbra) instead of a point."""
    sub = [((m + 0.5) / ss - 0.5) * 2 * SHADOW_SOFTNESS for m in range(ss)]
    out = []
    for light in light_rig(direction).shadow:
        l = light.astype(np.float64)
        helper = np.array([0.0, 0.0, 1.0]) if abs(l[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        u = np.cross(l, helper)
        u /= np.linalg.norm(u)
        w = np.cross(l, u)
        dirs = []
        for k in range(ss * ss):
            v = l + sub[k % ss] * u + sub[k // ss] * w
            dirs.append(v / np.linalg.norm(v))
        out.append(np.stack(dirs, axis=1).astype(_F))
    return tuple(out)


def visibility(scene: Scene, direction: str, points: np.ndarray, normals: np.ndarray, receives: np.ndarray, ss: int) -> np.ndarray:
    """Per ray, the fraction of the rig's shadow rays that face the surface and reach the light unblocked.

    Rays are stored sub-sample by sub-sample (see `render.render`), so the lit rays of each sub-sample are one run
    and its tilted shadow direction is repeated over that run."""
    n = points.shape[1]
    bounds = np.arange(ss * ss + 1) * (n // (ss * ss))
    facing = np.zeros(n, _F)
    free = np.zeros(n, _F)
    for light, tilted in zip(light_rig(direction).shadow, shadow_directions(direction, ss)):
        lit = np.nonzero((_dot(light, normals) > 0) & receives)[0]
        if lit.size == 0:
            continue
        o = points[:, lit] + normals[:, lit] * _F(SHADOW_OFFSET)
        d = np.repeat(tilted, np.diff(np.searchsorted(lit, bounds)), axis=1)
        blocked = np.zeros(lit.size, bool)
        for prim in scene.primitives:
            cand = np.nonzero(candidates(prim, o, d) & ~blocked)[0]
            if cand.size == 0:
                continue
            tn, tf = intersect(prim, o[:, cand], d[:, cand])
            blocked[cand[(tn <= tf) & (tf > 0)]] = True
        facing[lit] += 1
        free[lit] += ~blocked
    return np.where(facing > 0, free / np.maximum(facing, 1), _F(1))


# --------------------------------------------------------------------------------------------- shading


def direct_light(rig: Rig, normals: np.ndarray, ks: np.ndarray, shininess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per surface point (normals (3, N)), the rig's Lambert term sum(w max(n.l, 0)) and Blinn-Phong term
    sum(w ks max(n.h, 0)^shininess), before shadows: the shading any renderer of this project applies."""
    diffuse = np.zeros(normals.shape[1], _F)
    specular = np.zeros(normals.shape[1], _F)
    for light, weight in rig.shading:
        ndl = _dot(light, normals)
        facing = np.nonzero(ndl > 0)[0]
        if facing.size == 0:
            continue
        diffuse[facing] += _F(weight) * ndl[facing]
        half = light + np.array([0, 0, 1], _F)
        half /= np.linalg.norm(half)
        ndh = np.maximum(_dot(half, normals[:, facing]), _F(1e-6))
        specular[facing] += _F(weight) * ks[facing] * np.exp(shininess[facing] * np.log(ndh))
    return diffuse, specular


def shade(albedo: np.ndarray, diffuse: np.ndarray, specular: np.ndarray, visibility: np.ndarray,
          ambient: np.ndarray | np.float32, key: np.ndarray | np.float32) -> np.ndarray:
    """(3, N) linear colour: albedo (ambient + key diffuse visibility) + key specular visibility. `ambient`
    and `key` are scalars for white light or (3, 1) linear RGB intensities for coloured light and tinted
    shadows (the same formula: times a colour of ones it is the white one, to the bit)."""
    return albedo * (ambient + key * diffuse * visibility) + key * specular * visibility
