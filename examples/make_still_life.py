"""Rebuild examples/still-life.psd: a flat-coloured (unshaded) layered illustration, the kind of base an
artist hands to `lasagna shade`. Run: python examples/make_still_life.py"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from psd_tools import PSDImage
from psd_tools.constants import BlendMode

WIDTH, HEIGHT = 512, 384


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
    return np.clip(r - np.hypot(x - cx, y - cy) + 0.5, 0.0, 1.0)


def _box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
    return (np.clip(x - x0, 0, 1) * np.clip(x1 - x, 0, 1) * np.clip(y - y0, 0, 1) * np.clip(y1 - y, 0, 1)).astype(np.float32)


def _flat(rgb: tuple[int, int, int], alpha: np.ndarray) -> np.ndarray:
    color = np.broadcast_to(np.array(rgb, np.float32) / 255.0, (HEIGHT, WIDTH, 3))
    return np.concatenate([color, alpha[..., None]], axis=2).astype(np.float32)


def build(path: Path) -> None:
    psd = PSDImage.new("RGB", (WIDTH, HEIGHT), depth=8)
    y = np.mgrid[0:HEIGHT, 0:WIDTH][0] / HEIGHT
    wall = np.where(y < 0.62, 1.0, 0.0)[..., None] * np.array([0.86, 0.82, 0.74]) + np.where(
        y >= 0.62, 1.0, 0.0
    )[..., None] * np.array([0.62, 0.47, 0.36])
    psd.create_pixel_layer_from_array(wall.astype(np.float32), name="Background")
    objects = psd.create_group(name="Objects")
    layers = [
        ("Vase", (70, 110, 170), _box(96, 120, 176, 300) + _disc(136, 120, 40) - _box(96, 120, 176, 300) * _disc(136, 120, 40)),
        ("Orange", (232, 128, 36), _disc(262, 262, 46)),
        ("Lime", (132, 182, 58), _disc(348, 276, 32)),
        ("Cup", (222, 214, 200), _box(392, 196, 462, 302)),
    ]
    for name, rgb, alpha in layers:
        objects.append(_cropped_layer(psd, name, _flat(rgb, np.clip(alpha, 0, 1))))
    _cropped_layer(psd, "Ink", _flat((40, 30, 28), _outline())).blend_mode = BlendMode.MULTIPLY
    psd.save(path)


def _cropped_layer(psd: PSDImage, name: str, pixels: np.ndarray):
    """A layer trimmed to its visible pixels and placed at an offset, as Photoshop stores them."""
    rows, cols = np.nonzero(pixels[..., 3] > 0)
    top, left = int(rows.min()), int(cols.min())
    crop = pixels[top : rows.max() + 1, left : cols.max() + 1]
    return psd.create_pixel_layer_from_array(np.ascontiguousarray(crop), name=name, top=top, left=left)


def _outline() -> np.ndarray:
    """Thin dark lines around each shape, on their own Multiply layer as an inker would keep them."""
    shapes = [
        np.clip(_box(96, 120, 176, 300) + _disc(136, 120, 40), 0, 1),
        _disc(262, 262, 46),
        _disc(348, 276, 32),
        _box(392, 196, 462, 302),
    ]
    lines = np.zeros((HEIGHT, WIDTH), np.float32)
    for shape in shapes:
        grown = np.maximum.reduce([np.roll(np.roll(shape, dy, 0), dx, 1) for dy in (-2, 0, 2) for dx in (-2, 0, 2)])
        lines = np.maximum(lines, grown - shape)
    return np.clip(lines, 0.0, 1.0)


if __name__ == "__main__":
    build(Path(__file__).with_name("still-life.psd"))
