"""A small numpy ray caster for synthetic relighting scenes: random primitives, textures, lights, shadows.

Scene and camera
    An orthographic camera looks down -z at the square x, y in [-1, 1] (x right, y up, row 0 of the picture
    at y = 1). The background is a ground plane z = 0 facing the camera (a table seen from above: it
    receives light and cast shadows) or, on request, a plain backdrop that no light reaches (it keeps its
    colour in every render). One to three primitives (sphere, box, cylinder, capsule, torus), randomly rotated, rest on or
    float just above the plane. Spheres, boxes, cylinders and capsules are intersected analytically; the
    torus is sphere-traced on its exact distance function inside its bounding sphere.

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
    rim, BACK_RING shadow rays for its visibility), which gives a rim light and leaves the plane at ambient. Supersampling (default 2 x 2 per pixel, averaged in linear light)
    anti-aliases silhouettes and textures; each sub-sample's shadow ray is tilted a little differently
    (SHADOW_SOFTNESS), which turns hard shadow edges into a short penumbra.
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..directions import DIRECTION_NAMES, DIRECTIONS

CAMERA_Z = 10.0
LIGHT_ELEVATION = math.radians(40.0)
BACK_ELEVATION = math.radians(25.0)
BACK_RING = 6
BACK_SHADING = 24
BACK_GAIN = 2.2
SHADOW_SOFTNESS = 0.035
BASE_GAIN = 0.85
SHADOW_OFFSET = 2e-3
PRIMITIVES = ("sphere", "box", "cylinder", "capsule", "torus")
TEXTURES = ("flat", "stripes", "checks", "noise")
DETAILED_TEXTURES = ("flat", "stripes", "checks", "fractal")  # photo-like scenes: mostly 1/f noise, like real surfaces
_F = np.float32


# --------------------------------------------------------------------------------------------- scene data


@dataclass
class Texture:
    """A solid texture: colour as a function of 3-D position (object space for objects, world for the plane)."""

    kind: str
    color1: np.ndarray  # linear RGB
    color2: np.ndarray
    frequency: float = 3.0
    axis: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    phase: float = 0.0
    waves: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))  # direction xyz, frequency, phase (noise, fractal)

    def sample(self, p: np.ndarray) -> np.ndarray:
        """p: (3, N) positions -> (3, N) linear albedo."""
        c1 = self.color1.astype(_F)[:, None]
        if self.kind == "flat":
            return np.broadcast_to(c1, p.shape).copy()
        if self.kind == "stripes":
            s = self.frequency * (self.axis.astype(_F) @ p) + _F(self.phase)
            t = (s - np.floor(s) < 0.5).astype(_F)
        elif self.kind == "checks":
            q = np.floor(p * _F(self.frequency) + _F(self.phase)).sum(axis=0)
            t = (np.mod(q, 2.0) == 0).astype(_F)
        elif self.kind in ("noise", "fractal"):  # a sum of plane waves at amplitude 1/frequency
            acc = np.zeros(p.shape[1], _F)
            for wx, wy, wz, freq, phase in self.waves.astype(_F):
                acc += np.sin(_F(2 * math.pi) * freq * (wx * p[0] + wy * p[1] + wz * p[2]) + phase) / freq
            norm = float(np.sum(1.0 / self.waves[:, 3])) if len(self.waves) else 1.0
            t = np.clip(0.5 + 0.75 * acc / _F(norm), 0.0, 1.0)
        else:
            raise ValueError(f"unknown texture {self.kind!r}")
        c2 = self.color2.astype(_F)[:, None]
        return c1 + (c2 - c1) * t[None, :]


@dataclass
class Primitive:
    """One solid: kind, centre, rotation (local -> world), size parameters and material."""

    kind: str
    center: np.ndarray
    rotation: np.ndarray
    size: tuple[float, ...]  # sphere (r,), box (bx, by, bz), cylinder (r, h), capsule (r, h), torus (R, r)
    texture: Texture
    specular: float = 0.2
    shininess: float = 30.0

    @property
    def bound(self) -> float:
        """Radius of a sphere around the centre that contains the solid."""
        s = self.size
        return {
            "sphere": lambda: s[0],
            "box": lambda: math.sqrt(s[0] ** 2 + s[1] ** 2 + s[2] ** 2),
            "cylinder": lambda: math.hypot(s[0], s[1]),
            "capsule": lambda: s[0] + s[1],
            "torus": lambda: s[0] + s[1],
        }[self.kind]()


@dataclass
class Scene:
    primitives: list[Primitive]
    background: str  # "ground" or "plain"
    background_texture: Texture
    ground_specular: float = 0.05
    ambient: float = 0.3
    key: float = 0.9
    base_light: tuple[str, float] | None = None  # (direction, share): the base is lit that much from there


@dataclass(frozen=True)
class SceneMix:
    """What share of random scenes take each variation (0 = none, the default data).

    `backdrop`: a plain backdrop that no light reaches instead of the ground plane. `photo_like`: scenes built
    to look more like photographs than primitives on a table: a close-up of one object filling most of the
    frame or a clutter of four to six, detailed (fractal) textures, and a base that already carries some
    light from a random direction, as every photo does, so the prior learns to relight what is lit already."""

    backdrop: float = 0.0
    photo_like: float = 0.0


def half_height(kind: str, size: Sequence[float], rotation: np.ndarray) -> float:
    """How far the rotated solid reaches below its centre along world z (to rest it on the plane)."""
    az = abs(float(rotation[2, 2]))  # world z component of the local z axis
    side = math.sqrt(max(0.0, 1.0 - az * az))
    if kind == "sphere":
        return size[0]
    if kind == "box":
        return float(np.abs(rotation[2, :]) @ np.asarray(size))
    if kind == "cylinder":
        return az * size[1] + side * size[0]
    if kind == "capsule":
        return az * size[1] + size[0]
    if kind == "torus":
        return side * size[0] + size[1]
    raise ValueError(kind)


# ------------------------------------------------------------------------------------------ random scenes


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1.0 / 2.4) - 0.055).astype(_F)


def _color(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float], hue: float | None = None) -> np.ndarray:
    h = rng.uniform() if hue is None else hue % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val))
    return srgb_to_linear(np.array(rgb))


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (Shoemake's quaternion method)."""
    u1, u2, u3 = rng.uniform(size=3)
    a, b = math.sqrt(1 - u1), math.sqrt(u1)
    x, y, z, w = a * math.sin(2 * math.pi * u2), a * math.cos(2 * math.pi * u2), b * math.sin(2 * math.pi * u3), b * math.cos(2 * math.pi * u3)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def random_texture(rng: np.random.Generator, *, ground: bool = False, detailed: bool = False) -> Texture:
    """Two colours in a pattern; `detailed` (photo-like scenes) mostly picks fractal noise: a dozen waves up
    to three times finer than "noise" (frequencies 1-12 against 1-4), which gives the busy, everywhere-textured
    look of real surfaces."""
    if detailed:
        kind = str(rng.choice(DETAILED_TEXTURES, p=[0.1, 0.1, 0.1, 0.7]))
    else:
        kind = str(rng.choice(TEXTURES, p=[0.4, 0.15, 0.2, 0.25] if ground else [0.35, 0.2, 0.2, 0.25]))
    sat, val = ((0.0, 0.45), (0.35, 0.9)) if ground else ((0.15, 0.9), (0.3, 0.95))
    hue = rng.uniform()
    c1 = _color(rng, sat, val, hue)
    if rng.uniform() < 0.5:  # same hue, another value
        c2 = _color(rng, sat, val, hue + rng.uniform(-0.05, 0.05))
    else:
        c2 = _color(rng, sat, val, hue + rng.uniform(0.2, 0.8))
    waves = np.zeros((0, 5))
    if kind == "noise":
        waves = np.array([[*random_unit(rng), rng.uniform(1.0, 4.0), rng.uniform(0, 2 * math.pi)] for _ in range(4)])
    elif kind == "fractal":
        waves = np.array([[*random_unit(rng), math.exp(rng.uniform(0.0, math.log(12.0))), rng.uniform(0, 2 * math.pi)] for _ in range(12)])
    freq = {"stripes": rng.uniform(2.0, 5.0), "checks": rng.uniform(3.0, 7.0)}.get(kind, 1.0)
    return Texture(kind, c1, c2, float(freq), random_unit(rng), float(rng.uniform()), waves)


def random_scene(rng: np.random.Generator, mix: SceneMix = SceneMix()) -> Scene:
    """One to three random primitives with random textures on a ground plane, or, for `mix.backdrop` of the
    scenes, on a plain backdrop. A flat base can't show which of the two it is, so a prior trained on a mix
    has to guess whether a cast shadow belongs on the background: the default keeps the data unambiguous.
    `mix.photo_like` of the scenes are a close-up or a clutter with detailed textures and a lit base (see
    `SceneMix`). Each variation draws from `rng` only when asked for, so the default data stay as they were."""
    photo = mix.photo_like > 0 and rng.uniform() < mix.photo_like
    if photo and rng.uniform() < 0.35:  # a close-up: one object fills most of the frame
        count, scale, spread = 1, (0.55, 0.9), 0.15
    elif photo:  # a clutter of small things
        count = int(rng.integers(4, 7))
        scale, spread = (0.12, 0.3), 0.7
    else:
        count = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
        scale = {1: (0.3, 0.5), 2: (0.22, 0.38), 3: (0.18, 0.32)}[count]
        spread = {1: 0.2, 2: 0.45, 3: 0.5}[count]
    placed: list[tuple[float, float, float]] = []
    for _ in range(count):
        s = rng.uniform(*scale)
        for _try in range(20):
            x, y = rng.uniform(-spread, spread, size=2)
            if all(math.hypot(x - px, y - py) > 0.8 * (s + ps) for px, py, ps in placed):
                break
        placed.append((float(x), float(y), float(s)))
    primitives = []
    for x, y, s in placed:
        kind = str(rng.choice(PRIMITIVES))
        rotation = np.eye(3) if kind == "sphere" else _rotation(rng)
        size: tuple[float, ...]
        if kind == "sphere":
            size = (s,)
        elif kind == "box":
            size = tuple(float(v) for v in s * rng.uniform(0.4, 0.75, size=3))
        elif kind == "cylinder":
            size = (s * rng.uniform(0.4, 0.8), s * rng.uniform(0.4, 0.9))
        elif kind == "capsule":
            size = (s * rng.uniform(0.3, 0.55), s * rng.uniform(0.3, 0.7))
        else:
            major = s * rng.uniform(0.6, 0.8)
            size = (major, major * rng.uniform(0.25, 0.45))
        size = tuple(float(v) for v in size)
        gap = 0.0 if rng.uniform() < 0.6 else rng.uniform(0.02, 0.15)
        z = half_height(kind, size, rotation) + gap
        primitives.append(Primitive(
            kind, np.array([x, y, z]), rotation, size, random_texture(rng, detailed=photo),
            specular=float(rng.uniform(0.05, 0.5)), shininess=float(rng.uniform(10.0, 80.0)),
        ))
    background = "plain" if rng.uniform() < mix.backdrop else "ground"
    if background == "ground":
        texture = random_texture(rng, ground=True, detailed=photo)
    else:
        texture = Texture("flat", _color(rng, (0.0, 0.5), (0.3, 0.95)), np.zeros(3))
    scene = Scene(
        primitives, background, texture, ground_specular=float(rng.uniform(0.0, 0.1)),
        ambient=float(rng.uniform(0.25, 0.35)), key=float(rng.uniform(0.8, 1.0)),
    )
    if photo:
        scene.base_light = (str(rng.choice(DIRECTION_NAMES)), float(rng.uniform(0.3, 0.8)))
    return scene


# ------------------------------------------------------------------------------------------ intersection


def _candidates(prim: Primitive, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Rays (origins o (3, N), unit directions d (3, 1) or (3, N)) that pass within the bounding sphere."""
    c = prim.center.astype(_F)
    ox, oy, oz = o[0] - c[0], o[1] - c[1], o[2] - c[2]
    tb = -(ox * d[0] + oy * d[1] + oz * d[2])
    dist2 = ox * ox + oy * oy + oz * oz - tb * tb
    r = _F(prim.bound)
    return (dist2 < r * r) & (tb + r > 0)


def _sphere_interval(ox, oy, oz, dx, dy, dz, r):
    b = ox * dx + oy * dy + oz * dz
    c = ox * ox + oy * oy + oz * oz - r * r
    disc = b * b - c
    hit = disc >= 0
    h = np.sqrt(np.where(hit, disc, 0))
    return np.where(hit, -b - h, np.inf), np.where(hit, -b + h, -np.inf)


def _slab(o, d, lo, hi):
    """Interval of t where lo <= o + t d <= hi along one axis (d may be ~0)."""
    small = np.abs(d) < 1e-9
    safe = np.where(small, _F(1e-9), d)
    t1, t2 = (lo - o) / safe, (hi - o) / safe
    inside = (o >= lo) & (o <= hi)
    tn = np.where(small, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2))
    tf = np.where(small, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2))
    return tn, tf


def _disc_interval(ox, oy, dx, dy, r):
    """Interval of t inside the infinite cylinder x^2 + y^2 <= r^2 (axis z)."""
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - r * r
    parallel = a < 1e-12
    a_safe = np.where(parallel, _F(1.0), a)
    disc = b * b - a * c
    hit = disc >= 0
    h = np.sqrt(np.where(hit, disc, 0))
    tn = np.where(hit, (-b - h) / a_safe, np.inf)
    tf = np.where(hit, (-b + h) / a_safe, -np.inf)
    tn = np.where(parallel, np.where(c <= 0, -np.inf, np.inf), tn)
    tf = np.where(parallel, np.where(c <= 0, np.inf, -np.inf), tf)
    return tn, tf


def _torus_sdf(px, py, pz, major, minor):
    q = np.sqrt(px * px + py * py) - major
    return np.sqrt(q * q + pz * pz) - minor


def _torus_march(ol: np.ndarray, dl: np.ndarray, major: float, minor: float) -> tuple[np.ndarray, np.ndarray]:
    n = ol.shape[1]
    t_in, t_out = _sphere_interval(ol[0], ol[1], ol[2], dl[0], dl[1], dl[2], _F(major + minor))
    t_hit = np.full(n, np.inf, _F)
    act = np.nonzero((t_out > 0) & (t_in <= t_out))[0]
    per_ray = dl.shape[1] > 1
    t = np.maximum(t_in[act], 0).astype(_F)
    oa = ol[:, act]
    da = dl[:, act] if per_ray else dl
    t_end = t_out[act]
    for _ in range(64):
        if act.size == 0:
            break
        p = oa + da * t
        d = _torus_sdf(p[0], p[1], p[2], _F(major), _F(minor))
        hit = d < 5e-4
        t_hit[act[hit]] = t[hit]
        keep = ~hit & (t < t_end)
        act, t, d, oa, t_end = act[keep], t[keep], d[keep], oa[:, keep], t_end[keep]
        if per_ray:
            da = da[:, keep]
        t = t + np.maximum(d, _F(2e-4))
    # Near-misses of the last iterations are grazing rays: close enough counts as a hit.
    if act.size:
        p = oa + da * t
        close = _torus_sdf(p[0], p[1], p[2], _F(major), _F(minor)) < 2e-3
        t_hit[act[close]] = t[close]
    hit = np.isfinite(t_hit)
    return np.where(hit, t_hit, np.inf).astype(_F), np.where(hit, t_hit, -np.inf).astype(_F)


def intersect(prim: Primitive, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit t of rays o + t d (world, (3, N); d (3, 1) or (3, N)) through the solid; tn > tf: miss."""
    rot = prim.rotation.astype(_F)
    ol = rot.T @ (o - prim.center.astype(_F)[:, None])
    dl = rot.T @ d
    ox, oy, oz = ol
    dx, dy, dz = dl
    s = [_F(v) for v in prim.size]
    if prim.kind == "sphere":
        return _sphere_interval(ox, oy, oz, dx, dy, dz, s[0])
    if prim.kind == "box":
        tn, tf = _slab(ox, dx, -s[0], s[0])
        for oc, dc, b in ((oy, dy, s[1]), (oz, dz, s[2])):
            a, c = _slab(oc, dc, -b, b)
            tn, tf = np.maximum(tn, a), np.minimum(tf, c)
        return tn, tf
    if prim.kind == "cylinder":
        tn, tf = _disc_interval(ox, oy, dx, dy, s[0])
        a, c = _slab(oz, dz, -s[1], s[1])
        return np.maximum(tn, a), np.minimum(tf, c)
    if prim.kind == "capsule":
        r, h = s
        tn, tf = _disc_interval(ox, oy, dx, dy, r)
        a, c = _slab(oz, dz, -h, h)
        tn, tf = np.maximum(tn, a), np.minimum(tf, c)
        tf = np.where(tn <= tf, tf, -np.inf)
        tn = np.where(tn <= tf, tn, np.inf)
        for cz in (-h, h):  # the union of convex pieces of a convex solid is one interval
            a, c = _sphere_interval(ox, oy, oz - cz, dx, dy, dz, r)
            tn, tf = np.minimum(tn, a), np.maximum(tf, c)
        return tn, tf
    if prim.kind == "torus":
        return _torus_march(ol, dl if dl.ndim == 2 else dl[:, None], s[0], s[1])
    raise ValueError(prim.kind)


def normal(prim: Primitive, p: np.ndarray) -> np.ndarray:
    """World-space unit normals at points p (3, N) on the surface."""
    rot = prim.rotation.astype(_F)
    pl = rot.T @ (p - prim.center.astype(_F)[:, None])
    x, y, z = pl
    s = [_F(v) for v in prim.size]
    if prim.kind == "sphere":
        n = pl
    elif prim.kind == "box":
        q = np.abs(pl) / np.array(s, _F)[:, None]
        axis = np.argmax(q, axis=0)
        n = np.zeros_like(pl)
        cols = np.arange(pl.shape[1])
        n[axis, cols] = np.sign(pl[axis, cols])
    elif prim.kind == "cylinder":
        rho = np.sqrt(x * x + y * y)
        cap = np.abs(np.abs(z) - s[1]) < np.abs(rho - s[0])
        n = np.where(cap[None], np.stack([np.zeros_like(z), np.zeros_like(z), np.sign(z)]), np.stack([x, y, np.zeros_like(z)]))
    elif prim.kind == "capsule":
        n = np.stack([x, y, z - np.clip(z, -s[1], s[1])])
    elif prim.kind == "torus":
        rho = np.maximum(np.sqrt(x * x + y * y), _F(1e-6))
        k = 1 - s[0] / rho
        n = np.stack([x * k, y * k, z])
    else:
        raise ValueError(prim.kind)
    n = rot @ n
    return (n / np.maximum(np.sqrt((n * n).sum(axis=0)), _F(1e-12))).astype(_F)


# ----------------------------------------------------------------------------------------------- lights


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


def _visibility(scene: Scene, direction: str, points: np.ndarray, normals: np.ndarray, receives: np.ndarray, ss: int) -> np.ndarray:
    """Per ray, the fraction of the rig's shadow rays that face the surface and reach the light unblocked.

    Rays are stored sub-sample by sub-sample (see `render`), so the lit rays of each sub-sample are one run
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
            cand = np.nonzero(_candidates(prim, o, d) & ~blocked)[0]
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


# ------------------------------------------------------------------------------------------- rendering


@dataclass
class Render:
    """One scene's pictures, float32 in [0, 1], sRGB-encoded: base (H, W, 3), mask (H, W) as the object's
    coverage of each pixel, and one relit target (H, W, 3) per direction."""

    base: np.ndarray
    mask: np.ndarray
    targets: dict[str, np.ndarray]


def render(scene: Scene, size: int, *, supersample: int = 2, directions: Sequence[str] = DIRECTION_NAMES) -> Render:
    """Render the base and one relit picture per direction at size x size pixels."""
    ss = int(supersample)
    res = size * ss
    # Rays are stored sub-sample by sub-sample: block k = (i, j) holds sub-sample row i, column j of every
    # pixel in raster order, so a pixel's ss x ss samples are the same index in each of the ss^2 blocks.
    n_rays = res * res
    pixel = np.arange(size, dtype=np.float64)
    xs, ys = [], []
    for i in range(ss):
        for j in range(ss):
            gx, gy = np.meshgrid((pixel * ss + j + 0.5) / res * 2 - 1, 1 - (pixel * ss + i + 0.5) / res * 2)  # row 0 at y = +1
            xs.append(gx.ravel())
            ys.append(gy.ravel())
    origin = np.stack([np.concatenate(xs), np.concatenate(ys), np.full(n_rays, CAMERA_Z)]).astype(_F)
    down = np.array([[0], [0], [-1]], _F)

    # primary rays: nearest object per ray; the rest see the ground plane (z = 0) or the backdrop
    t_best = np.full(n_rays, np.inf, _F)
    owner = np.full(n_rays, -1, np.int64)
    for k, prim in enumerate(scene.primitives):
        cand = np.nonzero(_candidates(prim, origin, down))[0]
        if cand.size == 0:
            continue
        tn, tf = intersect(prim, origin[:, cand], down)
        closer = (tn <= tf) & (tn > 0) & (tn < t_best[cand])
        t_best[cand[closer]] = tn[closer]
        owner[cand[closer]] = k
    on_object = owner >= 0
    points = np.stack([origin[0], origin[1], np.zeros(n_rays, _F)])
    points[2, on_object] = CAMERA_Z - t_best[on_object]
    normals = np.zeros((3, n_rays), _F)
    normals[2] = 1
    albedo = np.zeros((3, n_rays), _F)
    ks = np.full(n_rays, scene.ground_specular, _F)
    shininess = np.full(n_rays, 20.0, _F)
    for k, prim in enumerate(scene.primitives):
        idx = np.nonzero(owner == k)[0]
        if idx.size == 0:
            continue
        p = points[:, idx]
        normals[:, idx] = normal(prim, p)
        local = prim.rotation.astype(_F).T @ (p - prim.center.astype(_F)[:, None])
        albedo[:, idx] = prim.texture.sample(local)
        ks[idx] = prim.specular
        shininess[idx] = prim.shininess
    background = np.nonzero(~on_object)[0]
    if background.size:
        albedo[:, background] = scene.background_texture.sample(points[:, background])
    receives = on_object | (scene.background == "ground")  # the plain backdrop is never lit
    shaded = np.nonzero(receives)[0]

    flat = albedo * _F(BASE_GAIN)
    n_s, ks_s, shin_s, albedo_s = normals[:, shaded], ks[shaded], shininess[shaded], albedo[:, shaded]

    def lit(name: str) -> np.ndarray:
        """(3, N) linear colour under the named direction's lights."""
        diffuse, specular = direct_light(light_rig(name), n_s, ks_s, shin_s)
        vis = _visibility(scene, name, points, normals, receives, ss)[shaded]
        lin = flat.copy()  # the plain backdrop keeps its base colour
        lin[:, shaded] = shade(albedo_s, diffuse, specular, vis, _F(scene.ambient), _F(scene.key))
        return lin

    relit = {name: lit(name) for name in directions}
    base_lin = flat
    if scene.base_light is not None:
        name, share = scene.base_light
        base_lin = (1 - _F(share)) * flat + _F(share) * (relit[name] if name in relit else lit(name))
    mask = box_filter(on_object.astype(_F)[None], size, ss)[0]
    return Render(finish(base_lin, size, ss), mask, {name: finish(lin, size, ss) for name, lin in relit.items()})


def box_filter(a: np.ndarray, size: int, ss: int) -> np.ndarray:
    """(C, N) rays in sub-sample blocks -> (C, size, size), the mean of each pixel's ss x ss samples."""
    blocks = a.reshape(a.shape[0], ss * ss, size * size)
    out = blocks[:, 0].copy()
    for k in range(1, ss * ss):
        out += blocks[:, k]
    return (out * _F(1.0 / (ss * ss))).reshape(a.shape[0], size, size)


def finish(lin: np.ndarray, size: int, ss: int) -> np.ndarray:
    """(3, N) linear at ss x resolution -> (size, size, 3) sRGB, box-filtered in linear light."""
    return linear_to_srgb(box_filter(np.clip(lin, 0, 1), size, ss).transpose(1, 2, 0))
