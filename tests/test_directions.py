"""Named light directions and the prompt parser."""

from __future__ import annotations

import math

import pytest

from lasagna_core.directions import DIRECTION_NAMES, DIRECTIONS, PROMPTS, direction_vector, image_plane_vector, parse_direction
from lasagna_core.errors import UsageError


def test_directions_are_unit_vectors_in_picture_coordinates() -> None:
    assert {"left", "right", "top", "bottom", "front", "back", "top-left", "top-right", "bottom-left", "bottom-right"} <= set(DIRECTIONS)
    for name, v in DIRECTIONS.items():
        assert math.isclose(math.hypot(*v), 1.0, rel_tol=1e-9), name
    assert DIRECTIONS["left"][0] < 0 and DIRECTIONS["right"][0] > 0  # x right
    assert DIRECTIONS["top"][1] > 0 and DIRECTIONS["bottom"][1] < 0  # y up
    assert DIRECTIONS["front"][2] > 0 and DIRECTIONS["back"][2] < 0  # z toward the camera
    assert image_plane_vector("front") == (0.0, 0.0) and image_plane_vector("back") == (0.0, 0.0)
    x, y = image_plane_vector("top-left")
    assert x < 0 < y and math.isclose(math.hypot(x, y), 1.0)
    with pytest.raises(UsageError):
        direction_vector("sideways")


@pytest.mark.parametrize("name", DIRECTION_NAMES)
def test_canonical_prompts_and_names_parse_back(name: str) -> None:
    assert parse_direction(PROMPTS[name]) == name
    assert parse_direction(name) == name
    assert parse_direction(name.upper().replace("-", "_")) == name


@pytest.mark.parametrize(("prompt", "expected"), [
    ("light from the left", "left"),
    ("lit from the top right", "top-right"),
    ("light coming from above", "top"),
    ("backlit", "back"),
    ("rim light from behind", "back"),
    ("front lighting", "front"),
    ("sunlight from the upper left", "top-left"),
    ("left", "left"),
    ("from the right side", "right"),
    ("light from below", "bottom"),
    ("Light from the Bottom-Right.", "bottom-right"),
    ("a bright photo of a hamburger, light from the right", "right"),  # "bright" is not "right"
    ("soft window light from the lower left", "bottom-left"),
    ("overhead lighting", "top"),
    ("uplit face", "bottom"),
    ("light from behind the camera", "front"),
    ("rim light from the left", "left"),  # the visible side wins
    ("top-down light", "top"),
    ("light from the north-west", "top-left"),
    ("camera flash", "front"),
    ("silhouetted against the background", "back"),
])
def test_natural_prompts(prompt: str, expected: str) -> None:
    assert parse_direction(prompt) == expected


@pytest.mark.parametrize("prompt", ["", "   ", "a photo of a cat", "asdf qwerty", "bright and moody", "light from the left and the right", "from above and below"])
def test_unparseable_prompts_give_one_line(prompt: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_direction(prompt)
    message = str(info.value)
    assert "\n" not in message
    assert "understood:" in message and "left" in message and "backlit" in message
    assert info.value.exit_code == 2
