"""Gaps in line art closed where a line ends, as the close-gap option of artists' fill tools does.

A gap is paper between the end of a line and another line (or the other end of the same line, the long
way round) no wider than `gap` px. Only line ends are joined: where two lines run close side by side
without ending (a narrow strip, the neck between a circle and the frame around it) nothing is closed.
Widening every line by half the gap, the simpler way, closes both and cuts those regions apart.

A line end is an end pixel of the lines' skeleton (Zhang-Suen thinning; parts thicker than THINNING_LIMIT
of the longer side stay shapes, so a solid black area costs no more than a thick line). It is joined by a
straight seal to the nearest line pixel, not of its own stroke, that the seal reaches over at most `gap` px
of paper; its own stroke is the lines' connected piece that holds the end within the window searched (a
stroke that leaves the window and comes back counts as another: a curl that nearly closes is closed, like a
gap).

The default gap is GAP_WIDTHS line widths (pen lifts are one or two widths), the width being the lines'
area over their skeleton's length, between 2 px and GAP_LIMIT of the longer side. Measured on the held-out
line art at 256 px (40 designs x 4 styles, each found region a random colour, `lasagna eval`'s one-colour
measure): see `docs/eval/gap-closing.md`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .labelling import components

GAP_WIDTHS = 2.0  # the default gap, in line widths
GAP_LIMIT = 0.02  # the widest default gap, a share of the longer side
THINNING_LIMIT = 0.01  # thicker than this share of the longer side (twice): a shape, not a line
CONE = 0.5  # a seal runs within 60 degrees (cos 0.5) of the way its line heads

_RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))  # P2..P9, clockwise from north


def _thinning_tables() -> tuple[np.ndarray, np.ndarray]:
    """For each of the 256 neighbourhoods (bit k: P2..P9 set), whether Zhang-Suen's first and second
    sub-step remove the pixel."""
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1
    count = bits.sum(axis=1)
    turns = ((1 - bits) & np.roll(bits, -1, axis=1)).sum(axis=1)
    p2, p4, p6, p8 = bits[:, 0], bits[:, 2], bits[:, 4], bits[:, 6]
    base = (count >= 2) & (count <= 6) & (turns == 1)
    return base & ((p2 & p4 & p6) == 0) & ((p4 & p6 & p8) == 0), base & ((p2 & p4 & p8) == 0) & ((p2 & p6 & p8) == 0)


_REMOVED = _thinning_tables()


def skeleton(mask: np.ndarray, rounds: int) -> np.ndarray:
    """(H, W) bool: `mask` thinned to 8-connected lines one px wide (Zhang and Suen 1984), at most `rounds`
    rounds of its two sub-steps (thicker parts stay partly unthinned). Only the pixels still set are looked
    at, by their neighbourhood's code in a table, so lines cost their area, not the page's."""
    h, w = mask.shape
    image = np.pad(mask, 1).ravel()
    offsets = np.array([dy * (w + 2) + dx for dy, dx in _RING])
    weights = (1 << np.arange(8)).astype(np.uint8)
    on = np.flatnonzero(image)
    for _ in range(rounds):
        changed = False
        for removed in _REMOVED:
            code = (image[on[:, None] + offsets].astype(np.uint8) * weights).sum(axis=1, dtype=np.uint8)
            gone = removed[code]
            if gone.any():
                image[on[gone]] = False
                on = on[~gone]
                changed = True
        if not changed:
            break
    return image.reshape(h + 2, w + 2)[1:-1, 1:-1]


def line_ends(bones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the skeleton pixels with exactly one skeleton pixel among their 8 neighbours."""
    padded = np.pad(bones, 1)
    h, w = padded.shape
    count = np.sum([padded[1 + dy: h - 1 + dy, 1 + dx: w - 1 + dx] for dy, dx in _RING], axis=0)
    return np.nonzero(bones & (count == 1))


@dataclass(frozen=True)
class GapClosing:
    """seals (H, W) bool: the straight seals, one px wide, laid over paper; gap: the widest gap (px) closed;
    line_width: the lines' mean width (px), 0 with no lines."""

    seals: np.ndarray
    gap: int
    line_width: float


def close_gaps(lines: np.ndarray, gap: int | None = None) -> GapClosing:
    """The seals that close the gaps at the ends of `lines` (H, W) bool; `gap` None: GAP_WIDTHS line widths
    (see the module's docstring); under 1: nothing is closed."""
    h, w = lines.shape
    out = np.zeros(lines.shape, bool)
    bones = skeleton(lines, max(2, round(THINNING_LIMIT * max(h, w))))
    width = float(lines.sum() / bones.sum()) if bones.any() else 0.0
    if gap is None:
        gap = int(np.clip(round(GAP_WIDTHS * width), 2, max(2, round(GAP_LIMIT * max(h, w)))))
    if gap < 1 or not bones.any():
        return GapClosing(out, gap, width)
    rows, cols = line_ends(bones)
    for y, x in zip(rows.tolist(), cols.tolist()):
        r = int(np.ceil(gap + 2 * _half_width(lines, y, x, 2 * gap))) + 1
        y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
        window = lines[y0:y1, x0:x1]
        pieces = components(np.where(window, 0, -1))
        ty, tx = np.nonzero(window & (pieces != pieces[y - y0, x - x0]))
        if not ty.size:
            continue
        ty, tx = ty + y0, tx + x0
        heading = _heading(bones[y0:y1, x0:x1], y - y0, x - x0, max(3, gap))
        ahead = (ty - y) * heading[0] + (tx - x) * heading[1] >= CONE * np.hypot(ty - y, tx - x)
        ty, tx = ty[ahead], tx[ahead]
        if not ty.size:
            continue
        t = np.linspace(0.0, 1.0, 4 * r + 1)[:, None]
        py, px = np.rint(y + t * (ty - y)).astype(int), np.rint(x + t * (tx - x)).astype(int)
        length = np.hypot(ty - y, tx - x)
        paper = (~lines[py, px]).mean(axis=0) * length
        fits = np.flatnonzero(paper <= gap + 0.5)
        if fits.size:
            k = fits[np.argmin(length[fits])]
            out[py[:, k], px[:, k]] = True
    return GapClosing(out & ~lines, gap, width)


def _heading(bones: np.ndarray, y: int, x: int, steps: int) -> tuple[float, float]:
    """The unit direction in which the skeleton runs out at its end (y, x): from the mean of its pixels
    within `steps` px along it to the end."""
    near = np.zeros(bones.shape, bool)
    near[y, x] = True
    for _ in range(steps):
        grown = near.copy()
        grown[1:] |= near[:-1]
        grown[:-1] |= near[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        near = grown & bones
    ys, xs = np.nonzero(near)
    dy, dx = y - ys.mean(), x - xs.mean()
    norm = np.hypot(dy, dx)
    return (0.0, 0.0) if norm == 0 else (dy / norm, dx / norm)


def _half_width(lines: np.ndarray, y: int, x: int, r: int) -> float:
    """The distance from (y, x) to the nearest paper pixel, looked for up to `r` px away."""
    h, w = lines.shape
    y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
    paper = ~lines[y0:y1, x0:x1]
    if not paper.any():
        return float(r)
    yy, xx = np.nonzero(paper)
    return float(np.hypot(yy + y0 - y, xx + x0 - x).min())
