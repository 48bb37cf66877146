"""lasagna_core.evaluate.colouring on a line drawing made here: two nested rings, their truth, and results
that are right, bled across a line, blurred, leaked out of the drawing, flood-filled or painting paper that
the drawing encloses."""

from __future__ import annotations

import numpy as np
import pytest

from lasagna_core.color import ciede2000, srgb_to_lab
from lasagna_core.evaluate.colouring import (
    crossing_share,
    flood_fill_baseline,
    hint_errors,
    lightness_drift,
    one_colour_share,
    score_colouring,
    unhinted_error,
)
from lasagna_core.flats import fill_flats, find_regions, hints_from_rgba
from lasagna_core.labelling import enclosed_paper
from tests.line_art import art, ring

N = 400
GREEN, RED, WHITE = (0.1, 0.7, 0.2), (0.9, 0.2, 0.1), (1.0, 1.0, 1.0)
_yy, _xx = np.mgrid[0:N, 0:N] + 0.5
D = np.hypot(_xx - 200, _yy - 200)
COVER = np.maximum(ring(N, 200, 200, 150, 3), ring(N, 200, 200, 60, 2))
LABELS = np.where(D < 60, 5, np.where(D < 150, 9, -1))  # the truth's regions: disc 5, ring 9, paper -1


def paint(*parts: tuple[np.ndarray, tuple]) -> np.ndarray:
    out = np.ones((3, N, N), np.float32)
    for where, rgb in parts:
        out[:, where] = np.array(rgb, np.float32)[:, None]
    return out


TRUTH = paint((D < 60, GREEN), ((D >= 60) & (D < 150), RED))


def test_the_truth_scores_perfectly():
    scores = score_colouring(TRUTH, TRUTH, LABELS, lines=COVER, hints={9: RED})
    assert scores.one_colour == 1.0 and scores.crossing == 0.0
    assert scores.hint_errors == pytest.approx((0.0,), abs=0.01) and scores.unhinted_error == pytest.approx(0.0, abs=1e-6)
    assert scores.lightness_drift is None


def test_colour_bled_across_a_line_is_counted_pixel_by_pixel():
    spill = (D >= 52) & (D < 60)  # the ring's red 8 px into the disc
    result = paint((D < 52, GREEN), ((D >= 52) & (D < 150), RED))
    scored = COVER < 0.5
    assert crossing_share(result, LABELS, lines=COVER) == pytest.approx((spill & scored).sum() / scored.sum())
    assert one_colour_share(result, LABELS, lines=COVER) == 0.5  # the disc (a quarter red) is not one colour
    # a faint difference (under CIEDE2000 2) is no crossing and still one colour
    tinted = paint((D < 60, (0.11, 0.7, 0.2)), ((D >= 60) & (D < 150), RED))
    assert crossing_share(tinted, LABELS) == 0.0 and one_colour_share(tinted, LABELS) == 1.0


def test_a_flat_leaking_out_of_the_drawing_crosses_its_outline():
    result = paint((D < 60, GREEN), ((D >= 60) & (D < 160), RED))
    leaked = (D >= 150) & (D < 160) & (COVER < 0.5)
    assert crossing_share(result, LABELS, lines=COVER) == pytest.approx(leaked.sum() / (COVER < 0.5).sum())


def test_a_blurred_colouring_is_not_flat_and_crosses_lines_where_its_edges_are_off_them():
    k = 12
    padded = np.pad(TRUTH, ((0, 0), (k, k), (k, k)), mode="edge")
    blurred = sum(padded[:, dy:dy + N, dx:dx + N] for dy in range(2 * k + 1) for dx in range(2 * k + 1)) / (2 * k + 1) ** 2
    assert one_colour_share(blurred, LABELS, lines=COVER) == 0.0
    assert crossing_share(blurred, LABELS, lines=COVER) < 0.002  # mixed, but on the right side of each line
    shifted = np.pad(blurred, ((0, 0), (0, 0), (10, 0)), mode="edge")[:, :, :N]  # edges 10 px off the lines
    assert crossing_share(shifted, LABELS, lines=COVER) > 0.01


def test_the_flats_of_a_blurry_colour_are_one_colour_and_do_not_cross():
    regions = find_regions(art(COVER))
    k = 10
    padded = np.pad(TRUTH, ((0, 0), (k, k), (k, k)), mode="edge")
    blurry = sum(padded[:, dy:dy + N:2, dx:dx + N:2] for dy in range(0, 2 * k + 1, 4) for dx in range(0, 2 * k + 1, 4)) / 36
    blurry = np.repeat(np.repeat(blurry, 2, axis=1), 2, axis=2).astype(np.float32)
    result = fill_flats(regions, blurry).rgb
    scores = score_colouring(result, TRUTH, LABELS, lines=COVER)
    assert scores.one_colour == 1.0 and scores.crossing < 0.005 and scores.unhinted_error < 2.0


def test_paper_the_drawing_encloses_is_a_region_of_its_own_not_the_paper_around():
    donut = np.where(D < 60, -1, LABELS)  # the inner disc is paper seen through a red ring
    split, first = enclosed_paper(donut)
    assert first == 10 and set(np.unique(split[D < 58]).tolist()) == {10} and split[5, 5] == -1
    assert enclosed_paper(LABELS)[0].tolist() == LABELS.tolist()  # nothing enclosed: unchanged
    truth = paint(((D >= 60) & (D < 150), RED))
    kept = score_colouring(truth, truth, donut, lines=COVER)
    assert kept.holes_kept_paper == 1.0 and kept.crossing == 0.0 and kept.unhinted_error == pytest.approx(0.0, abs=1e-6)
    # the ring's red painted into the hole stays inside the hole's lines: a wrong colour, not a crossing
    painted = score_colouring(paint((D < 150, RED)), truth, donut, lines=COVER)
    assert painted.crossing == 0.0 and painted.one_colour == 1.0 and painted.holes_kept_paper == 0.0
    white_vs_red = float(ciede2000(srgb_to_lab(np.ones((3, 1, 1)))[:, 0, 0], srgb_to_lab(np.float32(RED).reshape(3, 1, 1))[:, 0, 0]))
    assert painted.unhinted_error == pytest.approx(white_vs_red / 2, rel=1e-3)  # the ring right, the hole wrong
    assert np.isnan(score_colouring(TRUTH, TRUTH, LABELS, lines=COVER).holes_kept_paper)  # no hole to keep


def test_hint_errors_and_the_flood_fill_baseline_scored_as_white_paper():
    regions = find_regions(art(COVER))
    rgba = np.zeros((4, N, N), np.float32)
    rgba[:, 100:104, 100:104] = np.array([*RED, 1.0], np.float32)[:, None, None]
    baseline = flood_fill_baseline(regions, hints_from_rgba(rgba))
    assert tuple(baseline[:, 100, 100]) == tuple(np.float32(RED)) and tuple(baseline[:, 200, 200]) == (1, 1, 1)
    assert tuple(baseline[:, 5, 5]) == (1, 1, 1)
    assert hint_errors(baseline, LABELS, {9: RED}, lines=COVER) == pytest.approx((0.0,), abs=0.01)  # medians to 1/65535
    white_vs_green = float(ciede2000(srgb_to_lab(np.ones((3, 1, 1)))[:, 0, 0], srgb_to_lab(np.float32(GREEN).reshape(3, 1, 1))[:, 0, 0]))
    assert unhinted_error(baseline, TRUTH, LABELS, hinted=(9,), lines=COVER) == pytest.approx(white_vs_green, rel=1e-4)
    off = paint((D < 150, (0.8, 0.25, 0.15)))
    expected = ciede2000(srgb_to_lab(np.float32((0.8, 0.25, 0.15)).reshape(3, 1, 1)), srgb_to_lab(np.float32(RED).reshape(3, 1, 1)))
    assert hint_errors(off, LABELS, {9: RED}) == pytest.approx((float(expected[0, 0]),), rel=1e-4)
    with pytest.raises(ValueError, match="no region 3"):
        hint_errors(off, LABELS, {3: RED})


def test_lightness_drift_against_a_grey_input():
    grey = np.full((N, N), 0.5, np.float32)
    assert lightness_drift(np.full((3, N, N), 0.5, np.float32), grey) == pytest.approx(0.0, abs=1e-6)
    drift = lightness_drift(np.full((3, N, N), 0.4, np.float32), grey)
    assert drift == pytest.approx(float(srgb_to_lab(np.full((3, 1, 1), 0.5))[0, 0, 0] - srgb_to_lab(np.full((3, 1, 1), 0.4))[0, 0, 0]))
    assert score_colouring(TRUTH, TRUTH, LABELS, grey=grey).lightness_drift > 0
    with pytest.raises(ValueError, match="result must be"):
        one_colour_share(np.ones((3, 5, 5)), LABELS)
