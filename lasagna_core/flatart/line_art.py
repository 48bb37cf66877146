"""Line art drawn from a design's colour regions: the sketch a colourist would be handed for that design.

Lines run along every edge of the region map (region against region, and the art against the paper), so the
colour design is, pixel for pixel, a correct set of flats for the drawing. A `LineStyle` says how the lines
look: clean ink, an uneven brush (width varying along the line), grey pencil with grain, or ink with small
gaps, the kind artists' fill tools close. Widths are in pixels of the grid the regions are given at; the data
set draws at a multiple of its output size and box-filters down, which anti-aliases the lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..labelling import boundaries

_F = np.float32


@dataclass(frozen=True)
class LineStyle:
    name: str
    width: tuple[float, float]  # line width range, pixels of the drawing grid
    darkness: tuple[float, float]  # 1 = black ink, 0.4 = light pencil
    wobble: float = 0.0  # relative width variation along the line (a brush)
    grain: float = 0.0  # pencil grain: share of the darkness that random texture takes away
    gaps: int = 0  # small breaks in the lines


STYLES: dict[str, LineStyle] = {s.name: s for s in (
    LineStyle("ink", (2.0, 4.0), (0.9, 1.0)),
    LineStyle("brush", (2.0, 7.0), (0.85, 1.0), wobble=0.6),
    LineStyle("pencil", (2.0, 3.5), (0.45, 0.75), grain=0.35),
    LineStyle("gaps", (2.0, 4.0), (0.9, 1.0), gaps=6),
)}


def distance_to(mask: np.ndarray, limit: int) -> np.ndarray:
    """(H, W) float32: an octagonal approximation of each pixel's distance to `mask`, up to `limit` (beyond it
    `limit + 1`), by growing the mask one ring at a time, alternating 4- and 8-neighbour steps."""
    dist = np.where(mask, 0.0, limit + 1.0).astype(_F)
    grown = mask.copy()
    for ring in range(1, limit + 1):
        step = grown.copy()
        step[1:, :] |= grown[:-1, :]
        step[:-1, :] |= grown[1:, :]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        if ring % 2 == 0:
            step[1:, 1:] |= grown[:-1, :-1]
            step[:-1, :-1] |= grown[1:, 1:]
            step[1:, :-1] |= grown[:-1, 1:]
            step[:-1, 1:] |= grown[1:, :-1]
        dist[step & ~grown] = ring
        grown = step
    return dist


def smooth_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 in about [-1, 1]: random values on a coarse grid, bicubically enlarged."""
    from PIL import Image

    coarse = rng.uniform(-1.0, 1.0, (cells, cells)).astype(_F)
    big = Image.fromarray(coarse, mode="F").resize((shape[1], shape[0]), Image.BICUBIC)
    return np.clip(np.asarray(big, _F), -1.0, 1.0)


def draw_lines(regions: np.ndarray, style: LineStyle, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 ink coverage in [0, 1] (times the line's darkness) along the edges of `regions`."""
    edge = boundaries(regions)
    width = rng.uniform(*style.width)
    half = np.full(regions.shape, width / 2.0, _F)
    if style.wobble:
        half *= 1.0 + style.wobble * smooth_noise(regions.shape, 12, rng)
    # edge pixels lie on both sides of a border, half a pixel from it: a pixel `ring` rings out is ring + 1/2
    # from the border, and a line of half-width h covers clip(h + 1/2 - (ring + 1/2)) of it
    ring = distance_to(edge, int(np.ceil(width * (1 + style.wobble))) + 1)
    ink = np.clip(half - ring, 0.0, 1.0)
    if style.gaps:
        ys, xs = np.nonzero(edge)
        if ys.size:
            rows, cols = np.mgrid[: regions.shape[0], : regions.shape[1]]
            for k in rng.choice(ys.size, size=min(style.gaps, ys.size), replace=False):
                radius = width * rng.uniform(0.8, 1.5)
                ink[(rows - ys[k]) ** 2 + (cols - xs[k]) ** 2 <= radius**2] = 0.0
    darkness = rng.uniform(*style.darkness)
    if style.grain:
        ink *= 1.0 - style.grain * rng.uniform(0.0, 1.0, ink.shape).astype(_F)
    return (ink * darkness).astype(_F)
