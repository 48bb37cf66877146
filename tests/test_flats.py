"""lasagna_core.flats on line drawings made here: anti-aliased rings and bars of ink on paper."""

from __future__ import annotations

import numpy as np
import pytest

from lasagna_core.flats import INK_THRESHOLD, PRIOR_SIZE, fill_flats, find_regions, hints_from_rgba
from tests.line_art import art, bar, blurry, ring

N = 400  # default gap at this size: 2 px


def nested_rings() -> tuple[np.ndarray, np.ndarray]:
    cover = np.maximum(ring(N, 200, 200, 150, 3), ring(N, 200, 200, 60, 2))
    return art(cover), cover


def test_each_region_is_one_colour_and_no_colour_crosses_a_line():
    line_art, cover = nested_rings()
    # the colour's edges are soft and 12 px off the drawn lines, as a 64 px prior's are
    colour = blurry(N, (0.9, 0.2, 0.1), (0.2, 0.3, 0.9), 200, 200, 162, 30)
    colour = np.where(blurry(N, (1,) * 3, (0,) * 3, 200, 200, 50, 20)[:1] > 0.5, np.array([[[0.1]], [[0.8]], [[0.2]]], np.float32), colour)
    regions = find_regions(line_art)
    flats = fill_flats(regions, colour, outside="fill")
    assert regions.count == 3 and regions.outside.sum() == 1
    for label in range(regions.count):
        pixels = flats.rgb[:, regions.labels == label]
        assert np.ptp(pixels, axis=1).max() == 0  # one colour, exactly
    yy, xx = np.mgrid[0:N, 0:N] + 0.5
    d = np.hypot(xx - 200, yy - 200)
    paper = cover == 0
    assert np.allclose(flats.rgb[:, paper & (d < 58)].T, [0.1, 0.8, 0.2], atol=1e-4)
    assert np.allclose(flats.rgb[:, paper & (d > 62) & (d < 148)].T, [0.9, 0.2, 0.1], atol=1e-4)
    outer = flats.rgb[:, paper & (d > 152)]
    assert np.allclose(outer.T, outer[:, 0]) and outer[2, 0] > 0.8  # the blur's red did not cross the line


def test_ink_takes_a_neighbouring_regions_colour_and_outside_is_transparent():
    line_art, cover = nested_rings()
    colour = blurry(N, (0.9, 0.2, 0.1), (0.2, 0.3, 0.9), 200, 200, 150, 30)
    regions = find_regions(line_art)
    flats = fill_flats(regions, colour)
    yy, xx = np.mgrid[0:N, 0:N] + 0.5
    d = np.hypot(xx - 200, yy - 200)
    inside_colours = {tuple(c) for c in flats.colours[~regions.outside]}
    inner_fringe = (cover > 0) & (d < 149.5)  # the outline's inner half (split mid-line, to a pixel), the inner ring
    assert flats.alpha[inner_fringe].min() == 1  # colour under the ink: no white fringe inside
    assert {tuple(c) for c in flats.rgb[:, inner_fringe].T} <= inside_colours
    assert (flats.alpha[(cover > 0) & (d > 150.5)] == 0).all()  # the outline's outer half belongs to the paper around
    assert (flats.alpha[d > 153] == 0).all() and (flats.rgb[:, d > 153] == 1).all()  # outside: empty, white
    assert regions.ink.max() == pytest.approx(1.0) and regions.ink[cover == 0].max() == 0


def test_a_small_gap_is_closed_by_default_and_a_wide_one_is_not():
    closed = find_regions(art(ring(N, 200, 200, 120, 2, gap_at=0.0, gap=2)))
    assert closed.gap == 4  # two widths of the 2 px line
    centre = closed.labels[200, 200]
    assert closed.count == 2 and not closed.outside[centre]
    assert closed.labels[200, 316] == centre != closed.labels[200, 324]  # paper at the gap stays on its side
    open_ = find_regions(art(ring(N, 200, 200, 120, 2, gap_at=0.0, gap=20)))
    assert open_.count == 1 and open_.outside[open_.labels[200, 200]]
    # the same 20 px gap is closed when asked for
    assert find_regions(art(ring(N, 200, 200, 120, 2, gap_at=0.0, gap=20)), gap=24).count == 2


def test_grey_pencil_and_coloured_ink_on_cream_paper_close_their_regions():
    cover = ring(N, 200, 200, 120, 1)
    cream = (0.95, 0.93, 0.86)
    for ink in ((0.57, 0.56, 0.52), (0.3, 0.5, 1.0), (1.0, 0.85, 0.0)):  # HB pencil, blue ink, yellow ink
        regions = find_regions(art(cover, ink=ink, paper=cream, noise=0.02))
        assert regions.count == 2, ink
        assert regions.lines[cover == 0].mean() < 1e-3  # the paper's grain is not ink
    light = find_regions(art(cover, ink=(0.85, 0.83, 0.77), paper=cream))  # construction lines: too faint
    assert light.count == 1 and INK_THRESHOLD > 0.1


def test_specks_between_hatching_lines_join_their_neighbour():
    cover = ring(N, 200, 200, 150, 3)
    for x in range(120, 280, 5):  # cross-hatching: 3 px cells, far under the minimum region
        cover = np.maximum(cover, bar(N, x, x + 2, 120, 280))
        cover = np.maximum(cover, bar(N, 120, 280, x, x + 2))
    regions = find_regions(art(cover))
    assert regions.count == 2 and regions.sizes.min() >= N * N / PRIOR_SIZE**2
    assert regions.labels[200, 200] == regions.labels[60, 200]  # the hatched patch is part of the disc


def test_a_strip_narrower_than_the_gap_keeps_its_own_region():
    cover = np.maximum(ring(N, 200, 200, 150, 2), bar(N, 100, 300, 196, 198))  # two bars 3 px apart ...
    cover = np.maximum(cover, bar(N, 100, 300, 202, 204))
    cover = np.maximum(cover, np.maximum(bar(N, 98, 100, 196, 204), bar(N, 300, 302, 196, 204)))  # ... closed
    regions = find_regions(art(cover), gap=8)
    strip = regions.labels[200, 200]
    assert regions.labels[200, 150] == strip and regions.labels[190, 200] != strip != regions.labels[210, 200]
    assert regions.labels[190, 200] == regions.labels[210, 200]  # the disc around it, closed round the strip's ends


def test_a_region_takes_its_interior_colour_not_what_bled_in_at_its_border():
    cover = np.maximum(bar(N, 0, N, 180, 182), bar(N, 0, N, 204, 206))  # a strip 22 px high between two lines
    colour = np.zeros((3, N, N), np.float32)
    colour[2] = 0.9
    colour[:, 189:197] = np.array([0.9, 0.2, 0.1], np.float32)[:, None, None]  # red only in the strip's middle
    regions = find_regions(art(cover))
    flats = fill_flats(regions, colour, outside="fill")  # margin 400/64 = 6 px: most of the strip is within it
    assert tuple(flats.rgb[:, 193, 200]) == pytest.approx((0.9, 0.2, 0.1), abs=1e-4)
    assert tuple(flats.rgb[:, 10, 200]) == pytest.approx((0.0, 0.0, 0.9), abs=1e-4)


def test_hints_take_their_colour_exactly_and_a_scribble_hints_every_region_it_crosses():
    line_art, cover = nested_rings()
    colour = np.full((3, N, N), 0.5, np.float32)
    regions = find_regions(line_art)
    rgba = np.zeros((4, N, N), np.float32)
    rgba[:, 198:202, 195:205] = np.array([20, 120, 240, 255])[:, None, None] / 255  # a dot in the centre
    rgba[:, 100:103, 10:200] = np.array([250, 10, 10, 255])[:, None, None] / 255  # a scribble from outside into the ring
    rgba[:, 100:101, 10:14] = np.array([0, 255, 0, 255])[:, None, None] / 255  # a few stray pixels: outvoted
    rgba[3, 300:310, 300:310] = 0.2  # nearly transparent: no hint
    hints = hints_from_rgba(rgba)
    flats = fill_flats(regions, colour, hints=hints)
    centre, ring_, paper = regions.labels[200, 200], regions.labels[200, 100], regions.labels[5, 5]
    assert flats.hinted.sum() == 3 and flats.painted.all()
    assert tuple(flats.rgb[:, 200, 200]) == tuple(np.float32([20 / 255, 120 / 255, 240 / 255]))
    assert np.array_equal(flats.colours[ring_], flats.colours[paper])
    assert tuple(flats.colours[paper]) == tuple(np.float32([250 / 255, 10 / 255, 10 / 255]))
    assert flats.alpha[5, 5] == 1  # a hinted outside region is painted
    assert np.allclose(flats.rgb[:, cover == 0][:, 0], flats.colours[regions.labels[cover == 0][0]])
    no_hints = hints_from_rgba(np.zeros((4, N, N), np.float32))
    assert not fill_flats(regions, colour, hints=no_hints).hinted.any()


def test_refuses_mismatched_sizes_in_one_line():
    regions = find_regions(nested_rings()[0])
    with pytest.raises(ValueError, match="colour must be"):
        fill_flats(regions, np.zeros((3, 10, 10), np.float32))
    with pytest.raises(ValueError, match="hints are 10x10 px, the line art 400x400"):
        fill_flats(regions, np.zeros((3, N, N), np.float32), hints=hints_from_rgba(np.ones((4, 10, 10), np.float32)))
    with pytest.raises(ValueError, match="outside must be"):
        fill_flats(regions, np.zeros((3, N, N), np.float32), outside="paper")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="line art must be"):
        find_regions(np.zeros((N, N), np.float32))
