"""Coloured light in the shading layers: the prompt's colour words, the tinted Light (RGB Screen) and Shadows
(Multiply) layers, and a prompt with no colour that leaves the layers grey."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from psd_tools import PSDImage

from lasagna_core.light_colors import LIGHT_COLORS, parse_light_color
from lasagna_core.templates import load_template, parse_template
from lasagna_core.tint import light_of, tint_plane, written_channels
from tests.test_engine import cli


@pytest.mark.parametrize("prompt, name", [
    ("warm light from the left", "warm"), ("blue rim light from the right", "blue"),
    ("sunset light from the top right", "sunset"), ("cold moonlight from the top", "cool"),
    ("Golden hour light from the left", "golden"), ("light from the left", None),
])
def test_light_colour_words(prompt, name):
    found = parse_light_color(prompt)
    assert (found.name if found else None) == name


def test_tinted_planes_keep_neutral_and_take_the_colour():
    spec = load_template("shade")
    shadows, light = spec.layers
    warm = LIGHT_COLORS["warm"]
    assert light_of(spec, "warm light from the left") is warm and written_channels(spec, warm) == [3, 3]
    assert written_channels(spec, None) == [1, 1] and light_of(spec, "light from the left") is None
    lit = tint_plane(torch.tensor([0.0, 0.5]).view(1, 1, 1, 2), light, warm)
    assert lit.shape == (1, 3, 1, 2) and float(lit[..., 0].abs().max()) == 0.0  # neutral stays neutral
    assert torch.allclose(lit[0, :, 0, 1], 0.5 * torch.tensor(warm.rgb))
    dark = tint_plane(torch.tensor([1.0, 0.5]).view(1, 1, 1, 2), shadows, warm)
    assert float((dark[..., 0] - 1).abs().max()) < 1e-6
    r, g, b = dark[0, :, 0, 1].tolist()
    assert b > r  # a warm light's shadows lean blue (its cool counterpart darkens red more than blue)
    assert abs(0.3 * r + 0.59 * g + 0.11 * b - 0.5) < 0.02  # about as dark as the grey shadow
    grey = torch.rand(1, 1, 4, 4)
    assert torch.equal(tint_plane(grey, light, None), grey)


def test_tint_must_be_on_a_grey_layer():
    with pytest.raises(Exception, match="tint must be"):
        parse_template('name = "x"\n[[layers]]\nname = "A"\nblend_mode = "screen"\nchannels = 3\nneutral = 0.0\ntint = "light"\n', "t")


def _picture(path: Path) -> Path:
    image = np.full((48, 48, 3), 200, np.uint8)
    image[14:34, 14:34] = (180, 60, 60)
    Image.fromarray(image).save(path)
    return path


def test_warm_light_writes_a_warm_light_layer(tmp_path):
    out = tmp_path / "warm.psd"
    code, _, stderr = cli("shade", str(_picture(tmp_path / "p.png")), "-p", "warm light from the left", "-o", str(out), "--steps", "20")
    assert code == 0, stderr
    layers = {l.name: l for l in PSDImage.open(out)}
    light = layers["Light"].numpy()[..., :3]
    lit = light.max(axis=2) > 0.005  # the shipped 32 px prior brightens little (issue 13): a faint layer
    assert lit.any()
    assert (light[lit, 0] >= light[lit, 1]).all() and (light[lit, 1] >= light[lit, 2]).all()  # warm: R >= G >= B
    assert (light[lit, 0] > light[lit, 2]).all()
    shadows = layers["Shadows"].numpy()[..., :3]
    dark = shadows.min(axis=2) < 0.9
    assert dark.any() and (shadows[dark, 0] < shadows[dark, 2]).all()  # red darkened more: cool shadows
    assert out.with_name(out.name + ".json").read_text().count('"light_color": "warm"') == 1


def test_no_colour_keeps_grey_layers(tmp_path):
    out = tmp_path / "plain.psd"
    code, _, stderr = cli("shade", str(_picture(tmp_path / "p.png")), "-p", "light from the left", "-o", str(out), "--steps", "20")
    assert code == 0, stderr
    light = next(l for l in PSDImage.open(out) if l.name == "Light").numpy()[..., :3]
    assert np.abs(light[..., 0] - light[..., 2]).max() == 0  # grey, as before
