"""A small numpy ray caster for synthetic relighting scenes (`scene`): primary rays against the solids
(`geometry`), then the base and one relit picture per direction under the lighting model (`lighting`).
Supersampling (default 2 x 2 per pixel, averaged in linear light) anti-aliases silhouettes and textures and
gives each sub-sample its own tilted shadow ray (the penumbra)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..color import linear_to_srgb
from ..directions import DIRECTION_NAMES
from .geometry import candidates, intersect, normal
from .lighting import BASE_GAIN, direct_light, light_rig, shade, visibility
from .scene import Scene

CAMERA_Z = 10.0
_F = np.float32


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
        cand = np.nonzero(candidates(prim, origin, down))[0]
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
        vis = visibility(scene, name, points, normals, receives, ss)[shaded]
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
