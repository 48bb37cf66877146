"""New layers never take a name the document already has: shading a Lasagna output again adds a set that can
be told apart from the first, variations included."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from psd_tools import PSDImage
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.edit import layer_names
from lasagna_core.templates import load_template
from tests.conftest import gradient_rgb, to_uint8


def test_names_are_numbered_as_a_set_only_when_taken() -> None:
    shade = load_template("shade")
    assert layer_names(shade, 2, {"Background"}) == [["Shadows", "Light"], ["Shadows v2", "Light v2"]]
    assert layer_names(shade, 1, {"Background", "Light"}) == [["Shadows 2", "Light 2"]]
    taken = {"Shadows", "Light", "Shadows 2", "Light 2 v2"}  # the earlier run's second variation clashes too
    assert layer_names(shade, 2, taken) == [["Shadows 3", "Light 3"], ["Shadows 3 v2", "Light 3 v2"]]


def test_shading_an_output_again_adds_a_distinct_pair(tmp_path: Path) -> None:
    Image.fromarray(to_uint8(gradient_rgb(24, 32))).save(tmp_path / "a.png")
    quick = ["--steps", "2", "--device", "cpu", "--json"]
    runner = CliRunner()
    first = runner.invoke(app, ["shade", str(tmp_path / "a.png"), "-p", "light from the left", "-k", "2",
                                "-o", str(tmp_path / "once.psd"), *quick])
    assert first.exit_code == 0, first.stderr
    again = runner.invoke(app, ["shade", str(tmp_path / "once.psd"), "-p", "light from the right", "-k", "2",
                                "-o", str(tmp_path / "twice.psd"), *quick])
    assert again.exit_code == 0, again.stderr
    names = [layer.name for layer in PSDImage.open(tmp_path / "twice.psd")]
    assert names == ["Background", "Shadows", "Light", "Shadows v2", "Light v2",
                     "Shadows 2", "Light 2", "Shadows 2 v2", "Light 2 v2"]
    assert [layer["name"] for layer in json.loads(again.stdout)["layers"]] == ["Shadows 2", "Light 2"]
    sidecar = json.loads((tmp_path / "twice.psd.json").read_text())
    assert [layer["name"] for layer in sidecar["layers"]] == ["Shadows 2", "Light 2"]
