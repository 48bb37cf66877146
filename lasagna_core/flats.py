"""Flats at document size: every closed region of the line art filled with one colour, as colourists deliver.

`find_regions` splits the line art into regions the way an artist's fill tool does: ink is darkness against
the paper; lines are where the ink reaches `INK_THRESHOLD`; gaps at the ends of lines are sealed
(`gap_closing`: only where a line ends, so narrow strips and necks between lines stay whole); the paper
left is labelled and grown over the lines and seals, each pixel taking the side of its less inked
neighbour (the ink `smoothed`, so a pencil line splits along its middle, not its grain), so that every
pixel, ink included, has a region and colour continues under the lines. Regions under `min_size` (specks
between hatching lines) join the neighbour they share the longest border with. Regions touching the canvas
edge are the paper around the drawing ("outside").

`flats_of` paints one colour per region at document size (what `colorize` writes: the region colours its
`region_generator.RegionGenerator` trained, seen at the working size through `region_shares`); a hinted
region takes its hint's colour exactly. `fill_flats` takes the colours from a colour picture instead: the
median, channel by channel, over each region's interior (its pixels farther than `margin` from the region's
border, where a blurry low-resolution colour mixes with the neighbours').

Measured choices (benchmarks/run.py, section `flats`, on anti-aliased circles of ink):
* INK_THRESHOLD 0.15: a 1 px line seals its circle up to a threshold of about half its darkness (the worst
  sub-pixel position splits it over two pixels): 0.5 for black ink, 0.37 for 0.75 px black, 0.35 for blue,
  0.25 for 50% grey pencil, 0.19 for 60% grey pencil. Paper noise of 2% (the most changed of three channels)
  reaches 0.14 at its worst pixel in a megapixel, 3% reaches 0.2: 0.15 seals the pencil and leaves paper
  of up to 2% noise alone (noisier paper makes specks of "ink", which the regions grow over).
* The smallest region is one pixel of the colour prior (PRIOR_SIZE 64: 1/4096 of the picture, a 16 px square
  at 1024 x 1024): a smaller region has no colour of its own in the prior's picture; it is a speck between
  hatching lines or a hole in a solid black. (The eval scores regions of at least 0.1% of the picture.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .gap_closing import close_gaps
from .labelling import boundaries, components, edge_labels, grow, neighbour_pairs

INK_THRESHOLD = 0.15
PAPER_PERCENTILE = 90
PRIOR_SIZE = 64
"""The colour prior's side in pixels: its pixel is the smallest region and the colour's blur at a border."""

_F = np.float32
Outside = Literal["transparent", "fill"]


@dataclass(frozen=True)
class LineRegions:
    """The regions of a line drawing. labels (H, W) int32 0..n-1 (every pixel, ink included); ink (H, W)
    float32 in [0, 1] (darkness against the paper: coverage, for black ink); lines (H, W) bool (the pixels
    the fill treats as lines, ink >= INK_THRESHOLD); outside (n,) bool (touching the canvas edge); sizes (n,)
    int64 pixels; gap, the widest gap (px) that was closed."""

    labels: np.ndarray
    ink: np.ndarray
    lines: np.ndarray
    outside: np.ndarray
    sizes: np.ndarray
    gap: int

    @property
    def count(self) -> int:
        return int(self.sizes.size)


@dataclass(frozen=True)
class Hints:
    """Colour hints: index (H, W) int32, which of `colours` (k, 3) float32 sRGB each pixel hints (-1: none)."""

    index: np.ndarray
    colours: np.ndarray

    def region_colours(self, labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(hinted (count,) bool, colours (count, 3) float32): a region a hint touches takes the colour most
        of the hint pixels inside it have (a scribble across two regions hints both)."""
        if self.index.shape != labels.shape:
            raise ValueError(f"hints are {self.index.shape[1]}x{self.index.shape[0]} px, the line art "
                             f"{labels.shape[1]}x{labels.shape[0]}")
        hinted, colours = np.zeros(count, bool), np.ones((count, 3), _F)
        on = self.index >= 0
        if not on.any():
            return hinted, colours
        k = len(self.colours)
        pairs, votes = np.unique(labels[on].astype(np.int64) * k + self.index[on], return_counts=True)
        region, colour = pairs // k, pairs % k
        order = np.lexsort((-votes, region))  # per region, the most voted colour first
        first = order[np.r_[True, region[order][1:] != region[order][:-1]]]
        hinted[region[first]] = True
        colours[region[first]] = self.colours[colour[first]]
        return hinted, colours


@dataclass(frozen=True)
class Flats:
    """rgb (3, H, W) float32 sRGB, white where alpha is 0 (so it is also the flats on white paper, and
    neutral under Multiply); alpha (H, W) float32, 0 or 1; per region: colours (n, 3) float32, painted (n,)
    bool (alpha 1), hinted (n,) bool."""

    rgb: np.ndarray
    alpha: np.ndarray
    colours: np.ndarray
    painted: np.ndarray
    hinted: np.ndarray


def ink_coverage(base: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: how far each pixel is from the paper toward black, in its most changed
    channel relative to the paper's value there (coloured ink darkens one channel at least; anti-aliased
    edges, blended in sRGB values, give their coverage). The paper is the PAPER_PERCENTILE-th percentile of
    each channel: a sketch is mostly paper."""
    stride = max(1, max(base.shape[1:]) // 512)
    sample = base[:, ::stride, ::stride].reshape(3, -1)
    paper = np.maximum(np.percentile(sample, PAPER_PERCENTILE, axis=1), 0.5).astype(_F)[:, None, None]
    return np.clip(((paper - base) / paper).max(axis=0), 0.0, 1.0).astype(_F)


def smoothed(image: np.ndarray) -> np.ndarray:
    """`image` (H, W) summed over each pixel's 3 x 3 neighbourhood (the edge repeated): the ink a pixel's
    neighbours grow over is compared smoothed, so a pencil line's grain does not decide which side of the
    line a pixel belongs to, its profile does."""
    padded = np.pad(image, 1, mode="edge")
    rows = padded[:-2] + padded[1:-1] + padded[2:]
    return rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """`mask` widened by a disc of `radius` px (offsets with dx^2 + dy^2 <= radius^2), row span by row span."""
    h, w = mask.shape
    rows = [mask]  # rows[k]: mask widened by k px sideways
    for k in range(1, radius + 1):
        wider = rows[-1].copy()
        if k < w:
            wider[:, k:] |= mask[:, :-k]
            wider[:, :-k] |= mask[:, k:]
        rows.append(wider)
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        if abs(dy) >= h:
            continue
        span = rows[int(np.sqrt(radius * radius - dy * dy))]
        if dy > 0:
            out[dy:] |= span[:-dy]
        elif dy < 0:
            out[:dy] |= span[-dy:]
        else:
            out |= span
    return out


def find_regions(base: np.ndarray, *, gap: int | None = None, min_size: int | None = None) -> LineRegions:
    """The closed regions of line art `base` (3, H, W) float32 sRGB in [0, 1], ink on light paper. `gap`:
    gaps of up to this many px at the ends of lines are closed (default `default_gap`: 0.5% of the longer
    side, at least 2); `min_size`: smaller regions join a neighbour (default one pixel of the prior:
    H W / PRIOR_SIZE^2)."""
    if base.ndim != 3 or base.shape[0] != 3:
        raise ValueError(f"line art must be (3, H, W), got {base.shape}")
    _, h, w = base.shape
    min_size = max(1, round(h * w / PRIOR_SIZE**2)) if min_size is None else min_size
    ink = ink_coverage(base)
    lines = ink >= INK_THRESHOLD
    closing = close_gaps(lines, gap)
    sealed = lines | closing.seals
    labels = grow(components(np.where(sealed, -1, 0)), sealed, cost=smoothed(ink))
    labels = np.maximum(labels, 0)  # all ink and no paper: one region
    labels = _merge_small(labels, min_size)
    sizes = np.bincount(labels.ravel()).astype(np.int64)
    outside = np.zeros(sizes.size, bool)
    outside[edge_labels(labels)] = True
    return LineRegions(labels, ink, lines, outside, sizes, closing.gap)


def _merge_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Regions under `min_size` px joined to the neighbour they share the longest border with, in rounds;
    a small region joins a small neighbour only of a higher id, so no round has a cycle. Labels 0..n-1 out."""
    labels = _compact(labels)
    while True:
        count = int(labels.max()) + 1
        small = np.bincount(labels.ravel(), minlength=count) < min_size
        a, b = neighbour_pairs(labels)
        keep = small[a]
        if count == 1 or not keep.any():
            return labels
        pairs, border = np.unique(a[keep].astype(np.int64) * count + b[keep], return_counts=True)
        a, b = pairs // count, pairs % count
        order = np.lexsort((-border, a))
        best = order[np.r_[True, a[order][1:] != a[order][:-1]]]
        a, b = a[best], b[best]
        allowed = ~small[b] | (b > a)
        target = np.arange(count)
        target[a[allowed]] = b[allowed]
        while True:
            jumped = target[target]
            if np.array_equal(jumped, target):
                break
            target = jumped
        labels = _compact(target[labels])


def _compact(labels: np.ndarray) -> np.ndarray:
    """The labels renumbered 0..n-1 in their order (a count and a lookup: sorting 4 Mpx costs a second)."""
    present = np.bincount(labels.ravel()) > 0
    return (np.cumsum(present) - 1).astype(np.int32)[labels]


def hints_from_rgba(rgba: np.ndarray) -> Hints:
    """Hints from an RGBA image (4, H, W) float32 in [0, 1], straight alpha: its pixels of alpha >= 0.5 are
    colour dots or scribbles; pixels of one 8-bit colour are one hint colour."""
    if rgba.ndim != 3 or rgba.shape[0] != 4:
        raise ValueError(f"a hint image must be (4, H, W), got {rgba.shape}")
    on = rgba[3] >= 0.5
    index = np.full(on.shape, -1, np.int32)
    rgb = rgba[:3, on].T
    if not rgb.size:
        return Hints(index, np.zeros((0, 3), _F))
    q = np.round(np.clip(rgb, 0, 1) * 255).astype(np.int64)
    _, which = np.unique((q[:, 0] * 256 + q[:, 1]) * 256 + q[:, 2], return_inverse=True)
    which = which.ravel()
    counts = np.bincount(which)
    colours = np.stack([np.bincount(which, rgb[:, c]) / counts for c in range(3)], axis=1)
    index[on] = which
    return Hints(index, colours.astype(_F))


def region_medians(image: np.ndarray, labels: np.ndarray, use: np.ndarray, count: int) -> np.ndarray:
    """(count, 3) float32: per region, the channel-wise median of `image` (3, H, W) in [0, 1] over its pixels
    where `use` is True (to 1/65535; a region with none of them gets white). The median commutes with the
    sRGB curve, so it is the same in sRGB values and in linear light; it ignores the minority of pixels that
    a neighbour's colour reached."""
    region = labels[use].astype(np.int64)
    sizes = np.bincount(region, minlength=count)
    starts = np.cumsum(sizes) - sizes
    out = np.ones((count, 3), _F)
    has = sizes > 0
    for c in range(3):
        q = np.round(np.clip(image[c][use], 0, 1) * 65535).astype(np.int64)
        ordered = np.sort((region << 16) | q)
        out[has, c] = (ordered[(starts + sizes // 2)[has]] & 0xFFFF) / 65535
    return out


def fill_flats(regions: LineRegions, colour: np.ndarray, *, hints: Hints | None = None,
               outside: Outside = "transparent", margin: int | None = None) -> Flats:
    """Flats from a colour picture at document size, `colour` (3, H, W) in [0, 1]: each region the median of
    its interior (see the module's docstring), hinted regions their hint's. `outside`: see `flats_of`.
    `margin`: px near a region's border not trusted (default one pixel of the prior: the longer side /
    PRIOR_SIZE)."""
    labels = regions.labels
    if colour.shape != (3, *labels.shape):
        raise ValueError(f"colour must be (3, {labels.shape[0]}, {labels.shape[1]}), got {colour.shape}")
    count = regions.count
    margin = max(1, round(max(labels.shape) / PRIOR_SIZE)) if margin is None else margin
    interior = ~dilate(boundaries(labels), margin)
    deep = np.bincount(labels[interior], minlength=count) > 0
    return flats_of(regions, region_medians(colour, labels, interior | ~deep[labels], count), hints=hints, outside=outside)


def hinted_regions(regions: LineRegions, hints: Hints | None) -> tuple[np.ndarray, np.ndarray]:
    """(hinted (n,) bool, colours (n, 3) float32): the regions `hints` touch and their colours (white else)."""
    if hints is None:
        return np.zeros(regions.count, bool), np.ones((regions.count, 3), _F)
    return hints.region_colours(regions.labels, regions.count)


def painted_regions(regions: LineRegions, hinted: np.ndarray, outside: Outside = "transparent") -> np.ndarray:
    """(n,) bool, the regions the flats colour: "transparent" leaves the regions touching the canvas edge (the
    paper around the drawing) empty unless hinted, "fill" colours every region."""
    if outside not in ("transparent", "fill"):
        raise ValueError(f"outside must be 'transparent' or 'fill', got {outside!r}")
    return (hinted | ~regions.outside) if outside == "transparent" else np.ones(regions.count, bool)


def flats_of(regions: LineRegions, colours: np.ndarray, *, hints: Hints | None = None,
             outside: Outside = "transparent") -> Flats:
    """The flats of one colour per region, `colours` (n, 3) in [0, 1]; hinted regions take their hint's."""
    if colours.shape != (regions.count, 3):
        raise ValueError(f"colours must be ({regions.count}, 3), got {colours.shape}")
    hinted, hint_colours = hinted_regions(regions, hints)
    colours = np.where(hinted[:, None], hint_colours, colours).astype(_F)
    painted = painted_regions(regions, hinted, outside)
    shown = np.where(painted[:, None], colours, _F(1))
    rgb = np.ascontiguousarray(shown.T[:, regions.labels])
    return Flats(rgb, painted[regions.labels].astype(_F), colours, painted, hinted)


def region_shares(labels: np.ndarray, count: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How much of each pixel of a smaller picture of `size` (h, w) each region covers, as the entries of a
    sparse matrix: (cell, region, share) with cell = y * w + x, shares of a cell summing to 1. Each document
    pixel falls in the cell of its position scaled down (exact area shares when the sizes divide)."""
    height, width = labels.shape
    h, w = size
    rows = (np.arange(height) * h // height).astype(np.int64)
    cols = (np.arange(width) * w // width).astype(np.int64)
    cell = (rows[:, None] * w + cols[None, :]).ravel()
    pairs, counts = np.unique(cell * count + labels.ravel().astype(np.int64), return_counts=True)
    cell_of, region_of = pairs // count, pairs % count
    area = np.bincount(cell, minlength=h * w)
    return cell_of, region_of, (counts / area[cell_of]).astype(_F)

