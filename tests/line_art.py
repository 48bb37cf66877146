"""Line drawings for the tests, made with numpy: anti-aliased rings and bars of ink on paper, and a blurry
colour like a 64 px prior's."""

from __future__ import annotations

import numpy as np


def ring(n: int, cx: float, cy: float, radius: float, width: float, gap_at: float | None = None, gap: float = 0.0) -> np.ndarray:
    """Coverage (H, W) of an anti-aliased circle of ink; `gap` px of it left out around angle `gap_at`."""
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    cover = np.clip(width / 2 - np.abs(np.hypot(xx - cx, yy - cy) - radius) + 0.5, 0, 1)
    if gap_at is not None:
        along = radius * np.abs(np.angle(np.exp(1j * (np.arctan2(yy - cy, xx - cx) - gap_at))))
        cover = cover * np.clip(along - gap / 2 + 0.5, 0, 1)
    return cover


def bar(n: int, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    return (np.clip(np.minimum(xx - x0, x1 - xx) + 0.5, 0, 1) * np.clip(np.minimum(yy - y0, y1 - yy) + 0.5, 0, 1))


def art(cover: np.ndarray, ink=(0.0, 0.0, 0.0), paper=(1.0, 1.0, 1.0), noise: float = 0.0) -> np.ndarray:
    ink_, paper_ = np.array(ink)[:, None, None], np.array(paper)[:, None, None]
    out = paper_ * (1 - cover) + ink_ * cover
    out = out + np.random.default_rng(0).normal(0, noise, out.shape)
    return np.clip(out, 0, 1).astype(np.float32)


def blurry(n: int, inside: tuple, outside: tuple, cx: float, cy: float, radius: float, blur: float) -> np.ndarray:
    """A colour like the prior's: a disc of `inside` colour whose soft edge lies off the drawn line."""
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    t = np.clip((radius - np.hypot(xx - cx, yy - cy)) / blur + 0.5, 0, 1)
    return (np.array(inside)[:, None, None] * t + np.array(outside)[:, None, None] * (1 - t)).astype(np.float32)
