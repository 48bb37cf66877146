"""Synthetic relighting scenes as data, and random ones.

An orthographic camera looks down -z at the square x, y in [-1, 1] (x right, y up, row 0 of the picture at
y = 1). The background is a ground plane z = 0 facing the camera (a table seen from above: it receives light
and cast shadows) or, on request, a plain backdrop that no light reaches (it keeps its colour in every
render). One to three primitives (sphere, box, cylinder, capsule, torus), randomly rotated, rest on or float
just above the plane, each with a solid texture and a Blinn-Phong material (ks, shininess).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..color import srgb_to_linear
from ..directions import DIRECTION_NAMES

PRIMITIVES = ("sphere", "box", "cylinder", "capsule", "torus")
TEXTURES = ("flat", "stripes", "checks", "noise")
DETAILED_TEXTURES = ("flat", "stripes", "checks", "fractal")  # photo-like scenes: mostly 1/f noise, like real surfaces
_F = np.float32


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


def _color(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float], hue: float | None = None) -> np.ndarray:
    h = rng.uniform() if hue is None else hue % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val))
    return srgb_to_linear(np.array(rgb))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
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
        rotation = np.eye(3) if kind == "sphere" else random_rotation(rng)
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
