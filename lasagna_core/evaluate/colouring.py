"""What `lasagna eval` measures for colouring (numpy), per case, against the truth's regions.

The inputs: `result` (3, H, W) sRGB in [0, 1], the colour a method gives every pixel, seen on white paper
where it leaves the page empty (`flats.Flats.rgb` is exactly that); `truth` the same for the colour art;
`labels` (H, W) int, the truth's regions (ids >= 0, any numbering; -1: paper); `lines` (H, W), the line
art's ink coverage, or None. Paper the drawing encloses (inside a bag's handle, a ring of beads, between a
sloth's arms: `enclosed_paper`) is scored as a closed region of its own, white in the truth, since the line
art draws it as one: a flat that paints it stays inside its lines and is a wrong colour (unhinted error,
holes kept paper), not a colour across a line. Only the paper touching the canvas edge is "the paper around
the drawing". Pixels under a line (coverage >=
LINE_COVERAGE) are not scored: the ink hides the colour there, and where a flat's edge falls inside a line
is the colourist's choice. A region's colour is its channel-wise median over its scored pixels
(`flats.region_medians`). Colour differences are CIEDE2000 (about 1 = just noticeable).

* one colour: the share of closed regions of at least MIN_REGION_SHARE of the picture of which at least
  ONE_COLOUR_SHARE of the scored pixels lie within ONE_COLOUR_TOLERANCE of the region's colour;
* crossing: the share of scored pixels whose colour crossed a line: off their own region's colour by more
  than ONE_COLOUR_TOLERANCE and closer to the colour of a region adjacent to theirs in the truth (the paper
  around the drawing counts as a region here: a flat that leaks out of the drawing crosses its outline);
* hint errors: per hinted region, the difference of its colour to the hint's (HINT_TOLERANCE is the bar);
* unhinted error: the mean over the closed regions (of at least MIN_REGION_SHARE) that no hint touched of
  the difference of the region's colour to the truth's colour of the region;
* holes kept paper: the share of the enclosed paper regions (of at least MIN_REGION_SHARE) whose colour is
  within HINT_TOLERANCE of the truth's there (the paper), nan where there are none;
* lightness drift (greyscale inputs): the mean |delta L*| of the result against the grey input, all pixels.

The flood-fill baseline (`flood_fill_baseline`) is the classical tool: every region a hint touches filled
with the hint's colour, the others left empty; empty regions are scored as the white paper the artist sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..color import ciede2000, srgb_to_lab
from ..flats import Hints, LineRegions, flats_of, region_medians
from ..labelling import enclosed_paper, neighbour_pairs

LINE_COVERAGE = 0.5
MIN_REGION_SHARE = 0.001
ONE_COLOUR_TOLERANCE = 2.0
ONE_COLOUR_SHARE = 0.95
HINT_TOLERANCE = 5.0


@dataclass(frozen=True)
class ColouringScores:
    one_colour: float  # share of closed regions in one colour (nan: no region large enough)
    crossing: float  # share of scored pixels whose colour crossed a line
    hint_errors: tuple[float, ...]  # CIEDE2000 of each hinted region (in the order given) to its hint
    unhinted_error: float  # mean CIEDE2000 of unhinted regions to the truth (nan: none)
    holes_kept_paper: float  # share of enclosed paper regions left the paper's colour (nan: none)
    lightness_drift: float | None  # mean |delta L*| against the grey input; None for line art


@dataclass(frozen=True)
class _Regions:
    """The truth's regions renumbered 0..n-1 (the paper around the drawing, if any, is one of them)."""

    index: np.ndarray  # (H, W) int64
    ids: np.ndarray  # (n,) the caller's id of each (-1: the paper around the drawing; enclosed paper above theirs)
    scored: np.ndarray  # (H, W) bool
    sizes: np.ndarray  # (n,) all pixels
    holes: np.ndarray  # (n,) bool: enclosed paper

    @classmethod
    def of(cls, labels: np.ndarray, lines: np.ndarray | None) -> _Regions:
        labels, first_hole = enclosed_paper(labels)
        ids, index = np.unique(labels, return_inverse=True)
        index = index.reshape(labels.shape)
        scored = np.ones(labels.shape, bool) if lines is None else lines < LINE_COVERAGE
        return cls(index, ids, scored, np.bincount(index.ravel(), minlength=ids.size), ids >= first_hole)

    def colours(self, image: np.ndarray) -> np.ndarray:
        """(n, 3) CIE L*a*b*: each region's median colour over its scored pixels."""
        return srgb_to_lab(region_medians(image, self.index, self.scored, self.ids.size).T[:, :, None])[:, :, 0].T

    def large(self) -> np.ndarray:
        """(n,) bool: regions of at least MIN_REGION_SHARE of the picture, large enough to score."""
        return self.sizes >= MIN_REGION_SHARE * self.index.size

    def closed(self) -> np.ndarray:
        """(n,) bool: closed regions large enough to score (enclosed paper included)."""
        return (self.ids >= 0) & self.large()

    def position(self, region_id: int) -> int:
        found = np.flatnonzero(self.ids == region_id)
        if not found.size:
            raise ValueError(f"no region {region_id} in the truth's labels")
        return int(found[0])


def _check(image: np.ndarray, labels: np.ndarray, name: str) -> None:
    if image.shape != (3, *labels.shape):
        raise ValueError(f"{name} must be (3, {labels.shape[0]}, {labels.shape[1]}), got {image.shape}")


@dataclass(frozen=True)
class _Result:
    """One result on the truth's regions, its Lab values and its region colours worked out once."""

    regions: _Regions
    lab: np.ndarray  # (3, H, W)
    colours: np.ndarray  # (n, 3) Lab

    @classmethod
    def of(cls, result: np.ndarray, labels: np.ndarray, lines: np.ndarray | None) -> _Result:
        _check(result, labels, "result")
        regions = _Regions.of(labels, lines)
        return cls(regions, srgb_to_lab(result), regions.colours(result))

    def one_colour(self) -> float:
        regions = self.regions
        closed = regions.closed()
        if not closed.any():
            return float("nan")
        keep = regions.scored & closed[regions.index]
        index = regions.index[keep]
        near = ciede2000(self.lab[:, keep], self.colours[index].T) <= ONE_COLOUR_TOLERANCE
        share = np.bincount(index, near, minlength=closed.size) / np.maximum(np.bincount(index, minlength=closed.size), 1)
        return float(np.mean(share[closed] >= ONE_COLOUR_SHARE))

    def crossing(self) -> float:
        regions = self.regions
        index = regions.index[regions.scored]
        if not index.size:
            return float("nan")
        lab = self.lab[:, regions.scored]
        own = ciede2000(lab, self.colours[index].T)
        off = np.flatnonzero(own > ONE_COLOUR_TOLERANCE)
        off = off[np.argsort(index[off], kind="stable")]  # grouped by region
        ends = np.cumsum(np.bincount(index[off], minlength=regions.ids.size))
        crossed = np.zeros(off.size, bool)
        for a, b in _adjacent(regions.index):
            mine = slice(ends[a - 1] if a else 0, ends[a])
            crossed[mine] |= ciede2000(lab[:, off[mine]], self.colours[b][:, None]) < own[off[mine]]
        return float(crossed.sum() / index.size)

    def hint_errors(self, hints: Mapping[int, tuple[float, float, float]]) -> tuple[float, ...]:
        out = []
        for region_id, rgb in hints.items():
            hint = srgb_to_lab(np.asarray(rgb, np.float64).reshape(3, 1, 1))[:, 0, 0]
            out.append(float(ciede2000(self.colours[self.regions.position(region_id)], hint)))
        return tuple(out)

    def truth_colours(self, truth: np.ndarray) -> np.ndarray:
        """(n, 3) Lab: the truth's colour of each region, which the measures against the truth share."""
        _check(truth, self.regions.index, "truth")
        return self.regions.colours(truth)

    def holes_kept_paper(self, truth_colours: np.ndarray) -> float:
        holes = self.regions.holes & self.regions.large()
        if not holes.any():
            return float("nan")
        return float(np.mean(ciede2000(self.colours[holes].T, truth_colours[holes].T) <= HINT_TOLERANCE))

    def unhinted_error(self, truth_colours: np.ndarray, hinted: tuple[int, ...]) -> float:
        scored = self.regions.closed() & ~np.isin(self.regions.ids, hinted)
        if not scored.any():
            return float("nan")
        return float(ciede2000(self.colours[scored].T, truth_colours[scored].T).mean())


def _adjacent(index: np.ndarray) -> np.ndarray:
    """(k, 2): the pairs of regions that touch, in both orders, each once."""
    n = int(index.max()) + 1
    a, b = neighbour_pairs(index)
    keys = np.unique(a * n + b)
    return np.stack([keys // n, keys % n], axis=1)


def one_colour_share(result: np.ndarray, labels: np.ndarray, *, lines: np.ndarray | None = None) -> float:
    return _Result.of(result, labels, lines).one_colour()


def crossing_share(result: np.ndarray, labels: np.ndarray, *, lines: np.ndarray | None = None) -> float:
    return _Result.of(result, labels, lines).crossing()


def hint_errors(result: np.ndarray, labels: np.ndarray, hints: Mapping[int, tuple[float, float, float]], *,
                lines: np.ndarray | None = None) -> tuple[float, ...]:
    """CIEDE2000 of each hinted region's colour to its hint; `hints` maps a truth region id to an sRGB colour."""
    return _Result.of(result, labels, lines).hint_errors(hints)


def unhinted_error(result: np.ndarray, truth: np.ndarray, labels: np.ndarray, *, hinted: tuple[int, ...] = (),
                   lines: np.ndarray | None = None) -> float:
    scored = _Result.of(result, labels, lines)
    return scored.unhinted_error(scored.truth_colours(truth), hinted)


def lightness_drift(result: np.ndarray, grey: np.ndarray) -> float:
    """Mean |delta L*| of the result against the grey input ((3, H, W) or (H, W))."""
    grey = np.broadcast_to(grey, result.shape) if grey.ndim == 2 else grey
    return float(np.abs(srgb_to_lab(result)[0] - srgb_to_lab(grey)[0]).mean())


def flood_fill_baseline(regions: LineRegions, hints: Hints) -> np.ndarray:
    """(3, H, W): the classical tool on the line art's regions: hinted regions in their hint's colour, the
    rest the white paper (the flats of an all-white colour, so the fill is the flats' own)."""
    return flats_of(regions, np.ones((regions.count, 3), np.float32), hints=hints).rgb


def score_colouring(result: np.ndarray, truth: np.ndarray, labels: np.ndarray, *, lines: np.ndarray | None = None,
                    hints: Mapping[int, tuple[float, float, float]] | None = None,
                    grey: np.ndarray | None = None) -> ColouringScores:
    """Every measure of one case (see the module's docstring); `grey`: the greyscale input, if it was one."""
    hints = hints or {}
    scored = _Result.of(result, labels, lines)
    truth_colours = scored.truth_colours(truth)
    return ColouringScores(
        one_colour=scored.one_colour(),
        crossing=scored.crossing(),
        hint_errors=scored.hint_errors(hints),
        unhinted_error=scored.unhinted_error(truth_colours, tuple(hints)),
        holes_kept_paper=scored.holes_kept_paper(truth_colours),
        lightness_drift=None if grey is None else lightness_drift(result, grey),
    )
