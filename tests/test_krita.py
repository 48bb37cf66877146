"""The plug-in in a real Krita (kritarunner, headless): `run_on_document` and the docker on documents this test
writes, read back through Krita's own API (tests/krita_checks.py runs inside Krita and reports in JSON).

One Krita start-up serves every check: Krita's PSD importer against the blend-mode table, the whole
document and one layer as the base, a refused prompt, the docker's background run and its Cancel.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from psd_tools import PSDImage
from psd_tools.api.layers import Group
from psd_tools.constants import BlendMode as PsdMode

from lasagna_core.layers import BlendMode
from lasagna_core.templates import builtin_names
from lasagna_krita.blend_modes import KRITA_COMPOSITE_OPS
from tests.krita import run_kritarunner

pytestmark = pytest.mark.krita

W, H = 64, 48


def _scene(path: Path) -> Path:
    """A gradient backdrop and, above it in a group 'Characters', a 'Hero' disc (opaque inside, transparent
    outside, soft edge): the group is where an artist clips shading to a character."""
    psd = PSDImage.new("RGB", (W, H), depth=8)
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    backdrop = np.stack([x / W, y / H, np.full_like(x, 0.6), np.ones_like(x)], axis=2)
    psd.create_pixel_layer_from_array((backdrop * 255).round().astype(np.uint8), name="Backdrop")
    disc = np.clip(12.5 - np.hypot(x - 24, y - 22), 0, 1)
    hero = np.stack([np.full_like(x, 0.9), np.full_like(x, 0.5), np.full_like(x, 0.2), disc], axis=2)
    layer = psd.create_pixel_layer_from_array((hero * 255).round().astype(np.uint8), name="Hero")
    Group.group_layers(psd, [layer], name="Characters").blend_mode = PsdMode.NORMAL
    psd.save(path)
    return path


def _blend_modes(path: Path) -> Path:
    """One small layer per Lasagna blend mode, each named after its mode, for Krita's PSD importer to read."""
    psd = PSDImage.new("RGB", (8, 8), depth=8)
    for mode in BlendMode:
        if mode is not BlendMode.PASS_THROUGH:  # a group's mode, not a pixel layer's
            psd.create_pixel_layer_from_array(np.full((8, 8, 4), 128, np.uint8), name=mode.value,
                                              blend_mode=PsdMode[mode.name])
    psd.save(path)
    return path


@pytest.fixture(scope="module")
def krita_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("krita")
    config = {
        "executable": str(Path(sys.executable).with_name("lasagna")),
        "scene": str(_scene(folder / "scene.psd")), "blend_modes": str(_blend_modes(folder / "modes.psd")),
        "report": str(folder / "report.json"), "templates": len(builtin_names()),
    }
    (folder / "config.json").write_text(json.dumps(config))
    run = run_kritarunner("krita_checks", [str(folder / "config.json")], folder / "home")
    assert (folder / "report.json").exists(), f"kritarunner wrote no report:\n{run.stdout[-4000:]}"
    report = json.loads((folder / "report.json").read_text())
    assert "exception" not in report, report["exception"]
    return report


def test_blend_mode_table_is_krita_psd_importers(krita_report: dict[str, Any]) -> None:
    """Every Photoshop mode, as Krita's own PSD importer names it, is what the plug-in sets."""
    imported = krita_report["psd_import_modes"]
    assert set(imported) == {m.value for m in BlendMode} - {"pass_through"}
    assert {mode: KRITA_COMPOSITE_OPS[mode] for mode in imported} == imported


def test_whole_document_gets_the_layers_in_a_pass_through_group_on_top(krita_report: dict[str, Any]) -> None:
    whole = krita_report["whole"]
    assert [(n["name"], n["blending"], n["opacity"], n["bounds"]) for n in whole["new"]] == [
        ("Shadows", "multiply", 255, [0, 0, W, H]), ("Light", "screen", 255, [0, 0, W, H])]
    assert whole["top_level"] == ["Backdrop", "Characters", "light from the left"]
    assert {n["parent"] for n in whole["new"]} == {"light from the left"} and whole["group_pass_through"]
    assert not any(n["inherit_alpha"] for n in whole["new"])
    assert whole["originals_after"] == whole["originals_before"]  # names, modes, opacity, pixels: untouched
    assert whole["projection_changed"] and whole["projection_as_without_group"]
    steps = whole["progress_steps"]
    assert steps == sorted(steps) and steps[-1] == 3 and whole["final"] == ["result"]


def test_active_layer_as_base_is_clipped_and_leaves_the_rest_alone(krita_report: dict[str, Any]) -> None:
    layer = krita_report["layer"]
    assert [(n["name"], n["blending"], n["inherit_alpha"]) for n in layer["new"]] == [
        ("Shadows", "multiply", True), ("Light", "screen", True)]
    assert layer["group_just_above_hero"]
    assert layer["originals_after"] == layer["originals_before"]
    assert layer["changed_outside_hero"] == 0 and layer["changed_inside_hero"] > 0
    assert layer["group_parent"] == "Characters"
    # Clipped for real: a white Light layer (Screen) changes every pixel of the hero and none outside it.
    assert layer["white_light_outside_hero"] == 0 and layer["white_light_inside_hero"] == layer["hero_pixels"]


def test_a_refused_prompt_is_the_clis_line_and_adds_nothing(krita_report: dict[str, Any]) -> None:
    refused = krita_report["refused"]
    assert refused["raised"] and refused["exit_code"] == 2 and refused["nodes_unchanged"]
    assert "light direction" in refused["message"] or "direction" in refused["message"]
    assert "\n" not in refused["message"]


def test_documents_it_cannot_edit_are_refused_with_how_to_convert(krita_report: dict[str, Any]) -> None:
    (deep_kind, deep), (mask_kind, mask) = krita_report["unsupported"]
    assert deep_kind == mask_kind == "UnsupportedDocument"
    assert deep.startswith("the Lasagna plug-in works on 8-bit RGB documents, this one is RGBA U16")
    assert "Convert Image Color Space" in deep
    assert mask == "the active node 'Mask' is a mask: select a layer to use as the base"


def test_docker_runs_in_the_background_and_cancels(krita_report: dict[str, Any]) -> None:
    assert krita_report["docker_templates"] == builtin_names()
    assert krita_report["docker_busy_while_running"]
    run = krita_report["docker_run"]
    assert run["status"] == 'added Shadows, Light in "light from the left"' and run["added"] == 3  # group + 2
    assert run["bar"] == [1, 1]
    done, total, text = krita_report["docker_progress_before_cancel"]
    assert total == 5000 and 0 < done < total and text.startswith("distill ")
    cancel = krita_report["docker_cancel"]
    assert cancel["status"] == "cancelled" and cancel["added"] == 0 and not cancel["temporaries_left"]
    assert cancel["seconds"] < 20
