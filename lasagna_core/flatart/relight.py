"""Flat art relit: the inflated design over a backdrop, shaded with the project's lighting model.

Scene (in pixels of the render grid, size x supersample on a side; x right, y up, z toward the camera)
    The backdrop is the plane z = 0 behind the art, like the synthetic renderer's ground plane (a table seen
    from above, or a wall): it receives light and cast shadows and casts none. Its picture is a digital
    artist's background: a flat colour or a linear or radial gradient, sometimes a faint texture or a
    vignette. The art floats `gap` above it as a solid from z = gap to z = gap + height (its height field).

Shading (linear light, encoded to sRGB at the end; `lasagna_core.synth.lighting`'s formulas)
    base   = the art over its background (what the artist drew), so albedo = base / BASE_GAIN
    target = albedo (ambient + key diffuse shadow) + key specular shadow (`lighting.shade`, `lighting.direct_light`)
    under each named direction's lights (`lighting.light_rig`). A coloured light (`LightColor`) multiplies
    `key` by its colour, at the luminance of white light unless a channel would pass 1.6; its shadow tint,
    when asked for, colours `ambient` at the same luminance.

Cast shadows march the height field: from every surface point toward each shadow light (one tilted copy of
it per sub-sample, `lighting.shadow_directions`, for a short penumbra), blocked where the ray passes through
the art's solid. Self-shadows of parts on the body come from the same test.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..color import srgb_to_linear
from ..light_colors import LightColor
from ..synth.lighting import BASE_GAIN, direct_light, light_rig, shade, shadow_directions
from ..synth.render import Render, box_filter, finish
from ..synth.scene import Texture, random_unit
from .inflate import InflateSettings, height_field, normals
from .raster import rasterise

_F = np.float32
LUMA = np.array([0.2126, 0.7152, 0.0722])
MAX_CHANNEL = 1.6
SHADOW_BIAS = 0.75  # px: a ray starts this far above its surface, against self-shadow acne
BACKGROUNDS = ("flat", "linear", "radial")


@dataclass(frozen=True)
class ArtScene:
    """One design placed and inflated: rgba (S, S, 4) sRGB straight alpha, height (S, S) in pixels (0 off the
    art), background (S, S, 3) sRGB, and the material and light strengths of the shot."""

    rgba: np.ndarray
    height: np.ndarray
    background: np.ndarray
    gap: float
    ambient: float = 0.3
    key: float = 0.9
    specular: float = 0.15
    shininess: float = 30.0
    ground_specular: float = 0.02


@dataclass(frozen=True)
class Lighting:
    """How one target is lit: a named direction, optionally a coloured light, optionally tinted shadows."""

    direction: str
    color: LightColor | None = None
    tint_shadows: bool = False


def light_intensity(rgb: Sequence[float]) -> np.ndarray:
    """(3, 1) linear intensity of an sRGB colour at the luminance of white, unless a channel would pass
    MAX_CHANNEL (saturated reds and greens are then dimmer than white: they can't be as bright without clipping)."""
    lin = srgb_to_linear(np.asarray(rgb, np.float64))
    scale = 1.0 / max(float(LUMA @ lin), float(lin.max()) / MAX_CHANNEL)
    return (lin * scale).astype(_F)[:, None]


# ----------------------------------------------------------------------------------------------- scenes


def _hsv(rng: np.random.Generator, hue: float, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(*sat), rng.uniform(*val)))


def random_background(rng: np.random.Generator, res: int) -> np.ndarray:
    """(res, res, 3) sRGB: a flat colour or a gradient, sometimes with a faint texture and a vignette."""
    kind = str(rng.choice(BACKGROUNDS, p=[0.35, 0.35, 0.3]))
    hue = rng.uniform()
    c1 = _hsv(rng, hue, (0.0, 0.55), (0.35, 0.97))
    shift = rng.uniform(-0.08, 0.08) if rng.uniform() < 0.7 else rng.uniform(0.2, 0.8)
    c2 = _hsv(rng, hue + shift, (0.0, 0.55), (0.35, 0.97))
    coords = (np.arange(res) + 0.5) / res * 2 - 1
    x, y = np.meshgrid(coords, -coords)
    if kind == "flat":
        t = np.zeros_like(x)
    elif kind == "linear":
        angle = rng.uniform(0, 2 * math.pi)
        t = np.clip((x * math.cos(angle) + y * math.sin(angle)) / math.sqrt(2) * 0.5 + 0.5, 0, 1)
    else:
        cx, cy = rng.uniform(-0.4, 0.4, size=2)
        t = np.clip(np.hypot(x - cx, y - cy) / rng.uniform(1.0, 1.8), 0, 1)
    image = c1 + (c2 - c1) * t[..., None]
    if rng.uniform() < 0.35:  # faint texture: the synthetic renderer's wave noise, a few per cent deep
        waves = np.array([[*random_unit(rng), rng.uniform(2.0, 12.0), rng.uniform(0, 2 * math.pi)] for _ in range(8)])
        depth = rng.uniform(0.02, 0.06)
        texture = Texture("noise", np.ones(3), np.full(3, 1 - depth), waves=waves)
        points = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)]).astype(_F)
        image = image * texture.sample(points).T.reshape(res, res, 3)
    if rng.uniform() < 0.3:
        image = image * (1 - rng.uniform(0.1, 0.35) * np.clip((x * x + y * y) / 2, 0, 1))[..., None]
    return np.clip(image, 0, 1).astype(_F)


def place(svg: str, res: int, scale: float, offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The design rasterised at scale x res pixels and placed at offset (row, column) of a res x res canvas:
    (rgba, regions)."""
    art = max(8, round(scale * res))
    raster = rasterise(svg, art)
    rgba = np.zeros((res, res, 4), _F)
    regions = np.full((res, res), -1, np.int32)
    r0, c0 = offset
    rgba[r0:r0 + art, c0:c0 + art] = raster.rgba
    regions[r0:r0 + art, c0:c0 + art] = raster.regions
    return rgba, regions


def random_art_scene(svg: str, rng: np.random.Generator, res: int) -> ArtScene:
    """The design at 60-85% of the canvas, somewhere inside it, inflated at a random depth, over a random
    background, floating a little above it."""
    scale = rng.uniform(0.6, 0.85)
    room = res - max(8, round(scale * res))
    offset = (int(rng.integers(0, room + 1)), int(rng.integers(0, room + 1)))
    rgba, regions = place(svg, res, scale, offset)
    height = height_field(rgba[..., 3], regions, InflateSettings(depth=float(rng.uniform(0.45, 0.8))))
    return ArtScene(
        rgba, height, random_background(rng, res), gap=float(rng.uniform(0.0, 0.05) * res),
        ambient=float(rng.uniform(0.25, 0.35)), key=float(rng.uniform(0.8, 1.0)),
        specular=float(rng.uniform(0.05, 0.4)), shininess=float(rng.uniform(10.0, 60.0)),
        ground_specular=float(rng.uniform(0.0, 0.05)),
    )


# -------------------------------------------------------------------------------------------- shadows


def _visibility(top: np.ndarray, bottom: float, surface: np.ndarray, normal: np.ndarray, receives: np.ndarray,
                direction: str, ss: int) -> np.ndarray:
    """(S, S): per point of `surface` (heights, with `normal` (3, S, S)) where `receives`, the fraction of the
    direction's shadow lights that face it and reach it unblocked by the solid from `bottom` to `top` (-inf:
    no solid there); 1 elsewhere."""
    size = top.shape[0]
    rows, cols = np.mgrid[:size, :size]
    sub = (rows % ss) * ss + cols % ss  # the sub-sample a grid point is, as `render` numbers them
    facing = np.zeros((size, size), _F)
    free = np.zeros((size, size), _F)
    ceiling = float(top.max()) if np.isfinite(top).any() else -np.inf
    for light, tilted in zip(light_rig(direction).shadow, shadow_directions(direction, ss)):
        lit = receives & ((normal[0] * light[0] + normal[1] * light[1] + normal[2] * light[2]) > 0)
        r0, c0 = rows[lit].astype(_F), cols[lit].astype(_F)
        d = tilted[:, sub[lit]]
        reach = np.hypot(d[0], d[1])
        along = reach > 1e-6
        step = np.where(along, 1.0 / np.maximum(reach, 1e-6), 0.0).astype(_F)
        dc, dr, dz = d[0] * step, -d[1] * step, d[2] * step  # per pixel of travel in the picture
        z0 = surface[lit] + _F(SHADOW_BIAS)
        blocked = np.zeros(r0.size, bool)
        active = np.nonzero(along & (z0 <= ceiling))[0]
        t = 1
        while active.size:
            r = np.rint(r0[active] + t * dr[active]).astype(np.int64)
            c = np.rint(c0[active] + t * dc[active]).astype(np.int64)
            z = z0[active] + t * dz[active]
            inside = (r >= 0) & (r < size) & (c >= 0) & (c < size) & (z <= ceiling) & ((z >= bottom) | (dz[active] > 0))
            hit = np.zeros(active.size, bool)
            hit[inside] = (z[inside] >= bottom) & (z[inside] <= top[r[inside], c[inside]])
            blocked[active[hit]] = True
            active = active[inside & ~hit]
            t += 1
        facing[lit] += 1
        free[lit] += ~blocked
    return np.where(facing > 0, free / np.maximum(facing, 1), _F(1))


# ----------------------------------------------------------------------------------------- rendering


def _rays(grid: np.ndarray, size: int, ss: int) -> np.ndarray:
    """(C, size*ss, size*ss) grid -> (C, N) in `render`'s sub-sample block order (for `render.finish`)."""
    c = grid.shape[0]
    return grid.reshape(c, size, ss, size, ss).transpose(0, 2, 4, 1, 3).reshape(c, -1)


def render_art(scene: ArtScene, size: int, ss: int, lightings: Sequence[Lighting]) -> Render:
    """The base and one target per lighting (keyed by direction) at size x size, from a scene at size * ss."""
    res = size * ss
    if scene.rgba.shape[:2] != (res, res):
        raise ValueError(f"scene is {scene.rgba.shape[:2]}, expected {res} x {res}")
    alpha = scene.rgba[..., 3]
    solid = alpha >= 0.5
    top = np.where(solid, scene.gap + scene.height, -np.inf).astype(_F)
    art = srgb_to_linear(scene.rgba[..., :3]).astype(_F)
    ground = srgb_to_linear(scene.background).astype(_F)
    a = alpha[None]
    flat = (a * art.transpose(2, 0, 1) + (1 - a) * ground.transpose(2, 0, 1)).astype(_F)

    on_art = alpha > 0
    art_normal = normals(scene.height)
    behind = alpha < 1  # the backdrop shows through here
    up = np.zeros((3, int(behind.sum())), _F)
    up[2] = 1
    surfaces = (  # (albedo (3, N), normals (3, N), heights (N,), ks, shininess, where)
        (art[on_art].T / _F(BASE_GAIN), art_normal[:, on_art], (scene.gap + scene.height)[on_art], scene.specular, scene.shininess, on_art),
        (ground[behind].T / _F(BASE_GAIN), up, np.zeros(up.shape[1], _F), scene.ground_specular, 20.0, behind),
    )
    targets = {}
    for lighting in lightings:
        rig = light_rig(lighting.direction)
        key = _F(scene.key) * (light_intensity(lighting.color.rgb) if lighting.color else _F(1))
        ambient = _F(scene.ambient) * (light_intensity(lighting.color.shadow) if lighting.color and lighting.tint_shadows else _F(1))
        shaded = []
        for albedo, normal, heights, ks, shininess, where in surfaces:
            n = normal.shape[1]
            diffuse, specular = direct_light(rig, normal, np.full(n, ks, _F), np.full(n, shininess, _F))
            surface = np.zeros((res, res), _F)
            surface[where] = heights
            grid_normal = np.zeros((3, res, res), _F)
            grid_normal[:, where] = normal
            vis = _visibility(top, scene.gap, surface, grid_normal, where, lighting.direction, ss)[where]
            out = np.zeros((3, res, res), _F)
            out[:, where] = shade(albedo, diffuse, specular, vis, ambient, key)
            shaded.append(out)
        lit = a * shaded[0] + (1 - a) * shaded[1]
        targets[lighting.direction] = finish(_rays(lit, size, ss), size, ss)
    mask = box_filter(_rays(alpha[None].astype(_F), size, ss), size, ss)[0]
    return Render(finish(_rays(flat, size, ss), size, ss), mask, targets)
