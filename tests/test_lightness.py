"""lasagna_core.lightness: a Color-mode layer held to the base's CIE L*, and the template key that asks for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lasagna_core.blend import mix
from lasagna_core.color import srgb_lightness, srgb_to_lab
from lasagna_core.errors import UsageError
from lasagna_core.layers import BlendMode
from lasagna_core.lightness import hold_lightness
from lasagna_core.templates import load_template, parse_template


def _shown(color: torch.Tensor, base: torch.Tensor) -> np.ndarray:
    return mix(base, color, BlendMode.COLOR)[0].numpy()


def test_a_saturated_colour_is_desaturated_just_enough_and_a_mild_one_is_kept():
    base = torch.full((1, 3, 2, 2), 0.5)
    color = torch.tensor([[0.0, 0.8, 0.0], [0.9, 0.0, 0.0], [0.55, 0.5, 0.45], [0.5, 0.5, 0.5]]).T.reshape(1, 3, 2, 2)
    plain = np.abs(srgb_lightness(_shown(color, base)) - srgb_lightness(base[0].numpy()))
    assert plain[0, 0] > 15 and plain[0, 1] > 4  # PSD's Color keeps Lum, not L*: strong green and red drift
    held = hold_lightness(color, base, 1.0)
    drift = np.abs(srgb_lightness(_shown(held, base)) - srgb_lightness(base[0].numpy()))
    assert drift.max() <= 1.0
    chroma = np.hypot(*srgb_to_lab(_shown(held, base))[1:])
    assert chroma[0, 0] > 10 and chroma[0, 1] > 10  # still visibly green and red, only less so
    assert torch.equal(held[..., 1, :], color[..., 1, :])  # within the tolerance already: untouched


def test_the_greyscale_template_holds_lightness_and_other_modes_refuse_the_key():
    assert load_template("colorize-grey").layers[0].lightness_tolerance == 2.0
    text = 'name = "t"\nprompt = "{prompt}"\nmodel = "builtin"\n[[layers]]\nname = "L"\nblend_mode = "screen"\nneutral = 0\nlightness_tolerance = 1\n'
    with pytest.raises(UsageError, match="lightness_tolerance is for a Color-mode layer"):
        parse_template(text, "test.toml")
