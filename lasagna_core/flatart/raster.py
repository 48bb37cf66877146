"""SVG designs as pixels: the picture (resvg), its colour regions, and the measured half of the selection.

A design's colour regions come from its SVG, not from clustering pixels: each drawn shape (path, circle, ...)
is rasterised alone, every pixel is given to the topmost shape covering at least half of it, and touching
shapes of the same fill colour are one region. The height field stacks these regions as parts; line art
(strokes along region edges) can be drawn from the same map.

Measured rule (`shape_rule`): one connected opaque shape (the largest 4-connected piece of alpha >= 0.5 holds
at least `MIN_MAIN_SHARE` of the opaque pixels) covering `COVERAGE` of the canvas: scenes (sunrise, cityscape)
fill the canvas, and thin or scattered designs (sparkles, a needle) cover little of it.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from ..labelling import components
from ..errors import DocumentError, UsageError
from .packages import SVG_NS

COVERAGE = (0.10, 0.75)
MIN_MAIN_SHARE = 0.95
RULE_SIZE = 64
_DRAWN = {"path", "circle", "ellipse", "rect", "polygon", "polyline", "line", "use", "image", "text"}
_NOT_DRAWN = {"defs", "clipPath", "mask", "pattern", "symbol", "marker", "linearGradient", "radialGradient", "filter"}
_F = np.float32

ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")


@dataclass(frozen=True)
class Raster:
    """A design at size x size: rgba (H, W, 4) float32 sRGB with straight alpha, and regions (H, W) int32,
    the colour region of each pixel (-1 where no shape covers half of it; ids are arbitrary but distinct)."""

    rgba: np.ndarray
    regions: np.ndarray


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _drawn_shapes(root: ET.Element) -> list[ET.Element]:
    """The elements that paint, in paint order (document order), outside definitions."""
    found: list[ET.Element] = []

    def walk(element: ET.Element) -> None:
        for child in element:
            tag = _local(child.tag)
            if tag in _NOT_DRAWN:
                continue
            if tag in _DRAWN:
                found.append(child)
            else:
                walk(child)

    walk(root)
    return found


def _parse(svg: str) -> ET.Element:
    try:
        return ET.fromstring(svg)
    except ET.ParseError as exc:
        raise DocumentError(f"not a readable SVG ({exc})") from None


def require_resvg() -> None:
    """Refuse in one line, before any work, when the SVG renderer (an optional dependency) is missing."""
    try:
        import resvg_py  # noqa: F401
    except ImportError:
        raise UsageError("rasterising SVG art needs resvg-py: pip install 'lasagna[data]' (or pip install resvg-py)") from None


def render_svg(root: ET.Element, size: int) -> np.ndarray:
    """(size, size, 4) float32 RGBA in [0, 1] (sRGB, straight alpha); a viewBox that is not square (Fluent's
    swan is 32 x 33) is fitted and centred, as SVG's default preserveAspectRatio does."""
    import resvg_py
    from PIL import Image

    root.set("width", str(size))
    root.set("height", str(size))
    text = ET.tostring(root, encoding="unicode")
    try:
        png = resvg_py.svg_to_bytes(svg_string=text, width=size, height=size, skip_system_fonts=True)
    except ValueError as exc:
        raise DocumentError(f"resvg can't render the SVG ({exc})") from None
    with Image.open(io.BytesIO(bytes(png))) as image:
        return np.asarray(image.convert("RGBA"), dtype=_F) / _F(255)


def rasterise(svg: str, size: int) -> Raster:
    """The design and its colour regions at size x size pixels (one resvg call per drawn shape, plus one)."""
    root = _parse(svg)
    rgba = render_svg(root, size)
    shapes = _drawn_shapes(root)
    owner = np.full((size, size), -1, np.int32)
    for index, shape in enumerate(shapes):
        hidden = [(other, other.get("visibility")) for other in shapes if other is not shape]
        for other, _ in hidden:
            other.set("visibility", "hidden")
        alpha = render_svg(root, size)[..., 3]
        for other, old in hidden:
            if old is None:
                del other.attrib["visibility"]
            else:
                other.set("visibility", old)
        owner[alpha >= 0.5] = index
    # touching shapes of one colour are one region: the shape's fill as seen in the picture is its colour key
    keys = np.full(len(shapes), -1, np.int64)
    for index in range(len(shapes)):
        seen = owner == index
        if seen.any():
            r, g, b = np.round(np.median(rgba[seen, :3], axis=0) * 31).astype(np.int64)
            keys[index] = (r * 32 + g) * 32 + b
    colour = np.where(owner >= 0, keys[np.maximum(owner, 0)], -1)
    return Raster(rgba, components(colour))


@dataclass(frozen=True)
class ShapeStats:
    coverage: float  # share of the canvas with alpha >= 0.5
    main_share: float  # share of those pixels in the largest 4-connected piece


def shape_stats(svg: str, size: int = RULE_SIZE) -> ShapeStats:
    opaque = render_svg(_parse(svg), size)[..., 3] >= 0.5
    total = int(opaque.sum())
    if total == 0:
        return ShapeStats(0.0, 0.0)
    labels = components(np.where(opaque, 0, -1))
    largest = int(np.bincount(labels[opaque]).max())
    return ShapeStats(total / opaque.size, largest / total)


def shape_rule(stats: ShapeStats) -> bool:
    """The measured half of the selection: one connected shape covering COVERAGE of the canvas."""
    return COVERAGE[0] <= stats.coverage <= COVERAGE[1] and stats.main_share >= MIN_MAIN_SHARE
