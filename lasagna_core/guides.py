"""What a colouring edit reads besides the base: the artist's colour hints, and whether the base is line art.

Hints come the way artists give them: `--hints FILE`, an image the document's size whose opaque pixels are
colour dots or scribbles, or a top-level layer named `Hints` in the input PSD (kept, hidden, in the output).
A Hints layer is not part of the picture being coloured: the base is then the document's other layers
composited (Photoshop's stored merged image would show the dots).

Line art or greyscale (`is_line_art`): in line art what is not paper is thin. The picture's dark part (PSD
Lum below `PAPER`) is eroded by a few pixels; strokes vanish, filled areas stay. Line art keeps less than
`SOLID_SHARE` of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .color import PSD_LUMA
from .document import Document, composite_to_numpy, load, read_layer_tree
from .errors import DocumentError, UsageError
from .layers import PixelNode

HINTS_LAYER = "hints"
PAPER = 0.85
SOLID_SHARE = 0.2


@dataclass(frozen=True)
class HintPicture:
    """rgba: float32 [4, H, W] at the document's size, straight alpha; source: where it came from (messages)."""

    rgba: np.ndarray
    source: str


def hints_file(doc: Document, path: Path, max_pixels: int) -> HintPicture:
    """The --hints image, checked against the document: same size, and some opaque pixels."""
    picture = load(path, max_pixels=max_pixels)
    if (picture.width, picture.height) != (doc.width, doc.height):
        raise UsageError(f"--hints {path.name} is {picture.width}x{picture.height} but the document is {doc.width}x{doc.height}")
    if picture.alpha is None:
        raise UsageError(f"--hints {path.name} has no transparency: paint the hint dots on a transparent image (PNG or a PSD layer)")
    return _checked(HintPicture(np.concatenate([picture.base, picture.alpha]).astype(np.float32), path.name))


def take_hints_layer(doc: Document) -> tuple[Document, HintPicture | None]:
    """A PSD's top-level `Hints` layer as hints, and the document with the base composited without it
    (unchanged, and None, when there is no such layer or the document is not a PSD). The layer is hidden in
    the parsed PSD the writer writes back: the output keeps it, and shows the colours, not the dots."""
    if doc.psd is None or doc.base_layer is not None:
        return doc, None
    nodes = read_layer_tree(doc.psd)
    found = [n for n in nodes if isinstance(n, PixelNode) and n.name.strip().lower() == HINTS_LAYER]
    if not found:
        return doc, None
    node = found[-1]
    rgba = np.zeros((4, doc.height, doc.width), np.float32)
    h, w = node.color.shape[1:]
    y0, x0, y1, x1 = max(node.top, 0), max(node.left, 0), min(node.top + h, doc.height), min(node.left + w, doc.width)
    if y1 > y0 and x1 > x0:
        src = (slice(y0 - node.top, y1 - node.top), slice(x0 - node.left, x1 - node.left))
        color = node.color if node.color.shape[0] == 3 else np.repeat(node.color, 3, axis=0)
        rgba[:3, y0:y1, x0:x1] = color[(slice(None), *src)]
        rgba[3:, y0:y1, x0:x1] = 1.0 if node.alpha is None else node.alpha[(slice(None), *src)]
    for layer in doc.psd:
        if layer.name == node.name and layer.kind == "pixel":
            layer.visible = False
    base, alpha = composite_to_numpy([n for n in nodes if n is not node], doc.height, doc.width)
    alpha = None if bool((alpha >= 1.0).all()) else alpha
    return replace(doc, base=np.ascontiguousarray(base), alpha=alpha), _checked(HintPicture(rgba, f"layer '{node.name}'"))


def _checked(hints: HintPicture) -> HintPicture:
    if not bool((hints.rgba[3] > 0.5).any()):
        raise DocumentError(f"hints {hints.source}: no opaque pixels, so there is no hint to follow")
    return hints


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(radius):
        step = out.copy()
        step[1:, :] &= out[:-1, :]
        step[:-1, :] &= out[1:, :]
        step[:, 1:] &= out[:, :-1]
        step[:, :-1] &= out[:, 1:]
        out = step
    return out


def is_line_art(base: np.ndarray) -> bool:
    """True when the picture [3, H, W] is strokes on paper rather than filled greys (see module doc)."""
    lum = np.tensordot(np.asarray(PSD_LUMA, np.float32), base, axes=1)
    dark = lum < PAPER
    total = int(dark.sum())
    if total == 0:
        return True
    radius = max(3, round(0.008 * max(lum.shape)))
    return int(_erode(dark, radius).sum()) < SOLID_SHARE * total
