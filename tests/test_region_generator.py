"""Flats trained as one colour per closed region (`lasagna_core.region_generator`), with `flats.region_shares`
and `flats.flats_of`, the pieces it stands on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lasagna_core.distill import compose, distill
from lasagna_core.flats import find_regions, flats_of, hints_from_rgba, region_shares
from lasagna_core.region_generator import RegionGenerator
from lasagna_core.resample import resize
from lasagna_core.templates import DistillSettings, load_template
from tests.line_art import art, bar, ring
from tests.oracle_prior import OraclePrior

N = 128


def _two_rooms() -> np.ndarray:
    """A box of ink split by a wall into two rooms, on white paper (3, N, N)."""
    outer = np.maximum(bar(N, 16, 112, 16, 112) - bar(N, 20, 108, 20, 108), 0)
    wall = bar(N, 62, 66, 16, 112)
    return art(np.maximum(outer, wall))


def test_region_shares_are_area_shares_summing_to_one_per_cell():
    labels = np.zeros((8, 8), np.int32)
    labels[:, 5:] = 1  # column 5..7: region 1; a 4 x 4 picture's cells are 2 x 2 px
    cell, region, share = region_shares(labels, 2, (4, 4))
    dense = np.zeros((16, 2), np.float32)
    dense[cell, region] = share
    assert np.allclose(dense.sum(1), 1)
    cells = dense.reshape(4, 4, 2)
    assert np.allclose(cells[:, :2, 0], 1) and np.allclose(cells[:, 2, :], 0.5) and np.allclose(cells[:, 3, 1], 1)


def test_generator_paints_one_colour_per_region_and_leaves_the_paper_neutral():
    spec = load_template("colorize").layers
    regions = find_regions(_two_rooms())
    gen = RegionGenerator(spec, regions, (32, 32))
    with torch.no_grad():
        gen.logits[:] = torch.randn_like(gen.logits)
    out = gen(torch.zeros(1, 3, 32, 32))[0].color[0]
    left, right = out[:, 8:14, 7:14], out[:, 8:14, 18:25]  # whole working pixels inside each room
    assert left.flatten(1).std(1).max() < 1e-6 and right.flatten(1).std(1).max() < 1e-6
    assert (left[:, 0, 0] - right[:, 0, 0]).abs().max() > 0.05  # two regions, two colours
    assert torch.allclose(out[:, :2, :2], torch.ones(3, 2, 2))  # the paper outside rests at white (Multiply's neutral)


def test_a_hinted_region_is_fixed_at_its_hint_and_takes_no_gradient():
    spec = load_template("colorize").layers
    base = _two_rooms()
    rgba = np.zeros((4, N, N), np.float32)
    rgba[:, 60:66, 36:42] = np.array([0.2, 0.8, 0.3, 1.0])[:, None, None]  # a green dot in the left room
    hints = hints_from_rgba(rgba)
    regions = find_regions(base)
    gen = RegionGenerator(spec, regions, (32, 32), hints)
    out = gen(torch.zeros(1, 3, 32, 32))[0].color
    out.sum().backward()
    left = regions.labels[64, 40]
    assert torch.allclose(gen.colours()[left], torch.tensor([0.2, 0.8, 0.3]))
    assert gen.logits.grad[left].abs().max() == 0 and gen.logits.grad[regions.labels[64, 90]].abs().max() > 0


def test_a_start_sets_the_free_regions_and_leaves_the_hinted_at_their_hint():
    spec = load_template("colorize").layers
    base = _two_rooms()
    rgba = np.zeros((4, N, N), np.float32)
    rgba[:, 60:66, 36:42] = np.array([0.2, 0.8, 0.3, 1.0])[:, None, None]
    regions = find_regions(base)
    gen = RegionGenerator(spec, regions, (32, 32), hints_from_rgba(rgba))
    assert torch.allclose(gen.colours()[regions.labels[64, 90]], torch.full((3,), 0.5))  # mid grey unless started
    start = np.tile(np.array([[0.7, 0.1, 0.4]], np.float32), (regions.count, 1))
    gen.start_at(start)
    assert torch.allclose(gen.colours()[regions.labels[64, 90]], torch.tensor([0.7, 0.1, 0.4]), atol=1e-5)
    assert torch.allclose(gen.colours()[regions.labels[64, 40]], torch.tensor([0.2, 0.8, 0.3]))
    with pytest.raises(ValueError, match="values must be"):
        gen.start_at(start[:1])


def test_distilling_against_a_prior_that_knows_the_flats_gives_each_region_its_colour():
    """The real SDS loop, with the oracle prior whose score pulls the composite to a target: target flats
    (red left room, blue right room) under the ink must come back as the trained region colours."""
    spec = load_template("colorize")
    base = torch.from_numpy(_two_rooms())[None]
    regions = find_regions(base[0].numpy())
    truth = np.ones((regions.count, 3), np.float32)
    truth[regions.labels[64, 40]] = (0.9, 0.15, 0.1)
    truth[regions.labels[64, 90]] = (0.1, 0.3, 0.9)
    flats = flats_of(regions, truth)
    target = base * torch.from_numpy(flats.rgb)[None]
    prior = OraclePrior(resize(target, (32, 32)), resolution=32)
    base_low = resize(base, (32, 32))
    settings = DistillSettings(steps=120, guidance=1.0, noise_samples=1, learning_rate=0.1, neutral_weight=0.0)
    gen = distill(base_low, spec.layers, prior, prior.condition("", base_low), settings, seed=0,
                  generator=RegionGenerator(spec.layers, regions, (32, 32)))
    got = gen.colours().detach().numpy()
    for y, x in ((64, 40), (64, 90)):
        assert np.abs(got[regions.labels[y, x]] - truth[regions.labels[y, x]]).max() < 0.06
    composite = compose(base_low, spec.layers, gen(base_low))
    assert (composite - resize(target, (32, 32))).abs().mean() < 0.03


def test_only_a_single_flats_layer_is_accepted():
    shade = load_template("shade").layers
    with pytest.raises(ValueError, match="exactly one layer, a flats layer"):
        RegionGenerator(shade, find_regions(art(ring(N, 64, 64, 30, 3))), (32, 32))
