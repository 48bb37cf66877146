"""lasagna_core.gap_closing: gaps closed at line ends only, on line drawings made here."""

from __future__ import annotations

import numpy as np

from lasagna_core.flats import find_regions, ink_coverage
from lasagna_core.gap_closing import close_gaps, line_ends, skeleton
from tests.line_art import art, bar, ring

N = 400


def test_a_neck_narrower_than_the_gap_is_not_cut():
    # a disc drawn 2 px inside a ring's outline: the ring's paper runs round it through a 2 px neck at the top
    cover = np.maximum(ring(N, 200, 200, 150, 2), ring(N, 200, 90, 36, 2))
    regions = find_regions(art(cover), gap=8)
    ring_paper = regions.labels[200, 200]
    assert regions.count == 3
    assert regions.labels[52, 200] == ring_paper  # the 2 px between the two lines above the disc
    assert regions.labels[90, 200] != ring_paper and not regions.outside[ring_paper]


def test_a_line_ending_short_of_another_is_sealed_to_it():
    # a frame split in two by a bar that stops 5 px short of the frame's right side
    frame = np.maximum.reduce([bar(N, 50, 350, 50, 52), bar(N, 50, 350, 348, 350), bar(N, 50, 52, 50, 350),
                               bar(N, 348, 350, 50, 350)])
    cover = np.maximum(frame, bar(N, 50, 343, 199, 201))
    closed = find_regions(art(cover), gap=6)
    assert closed.count == 3 and closed.labels[100, 200] != closed.labels[300, 200]
    assert closed.labels[190, 346] == closed.labels[100, 200]  # the seal's paper stays on its side
    assert find_regions(art(cover), gap=3).count == 2  # 5 px is wider than a 3 px gap


def test_the_default_gap_follows_the_line_width():
    for width, pen_lift in ((1.0, 6), (4.0, 6)):
        regions = find_regions(art(ring(N, 200, 200, 120, width, gap_at=0.0, gap=pen_lift)))
        assert regions.gap == (3 if width == 1.0 else 8)  # two widths of the line as ink (anti-aliasing widens
        # it a little), at most 2% of the 400 px side
        assert (regions.count == 2) == (width == 4.0)  # a 6 px lift is 6 widths of a thin line, 1.5 of a thick


def test_skeleton_is_one_px_wide_and_keeps_the_ends_of_a_stroke():
    lines = ink_coverage(art(bar(N, 100, 300, 195, 205))) >= 0.15
    bones = skeleton(lines, 10)
    assert bones.sum(axis=0)[110:290].max() == 1 and bones[:, 150].sum() == 1
    rows, cols = line_ends(bones)
    assert len(rows) == 2 and cols.min() < 110 and cols.max() > 290
    assert close_gaps(lines).seals.sum() == 0  # a stroke alone on the page: nothing to seal it to
