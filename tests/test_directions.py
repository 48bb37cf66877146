"""Named light directions and the prompt parser."""

from __future__ import annotations

import math
from pathlib import Path

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


@pytest.mark.parametrize("prompt", [
    "no light from the left", "not from the left", "without light from the left", "light isn't from the left",
    "no light from the top and left", "light not from behind the camera",
])
def test_a_prompt_that_only_negates_a_direction_is_refused(prompt: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_direction(prompt)
    assert "it says where the light does not come from" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("prompt", "expected"), [
    ("light from the right, not the left", "right"),
    ("not from the left but from the right", "right"),
    ("soft light from the left, not too harsh", "left"),
    ("no harsh shadows, light from behind the camera", "front"),
    ("backlit without front fill", "back"),
    ("light from the top, without any from the left", "top"),
])
def test_negated_directions_are_set_aside(prompt: str, expected: str) -> None:
    assert parse_direction(prompt) == expected


def test_shade_refuses_a_negated_direction_in_one_line(tmp_path: Path) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from lasagna_cli.app import app
    from tests.conftest import gradient_rgb, to_uint8

    Image.fromarray(to_uint8(gradient_rgb(24, 32))).save(tmp_path / "a.png")
    result = CliRunner().invoke(app, ["shade", str(tmp_path / "a.png"), "-p", "no light from the left", "--steps", "2",
                                      "--device", "cpu"], env={"NO_COLOR": "1"})
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "does not come from" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
