"""The relighting eval's measures of the shading an artist keeps: cast-shadow IoU, the error near outlines,
the Light layer's hue under coloured light, the PSNR gain over the base, the compared prior's row, and a
held-out flat-art split (`dataset flat-art --splits test`) evaluated end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.color import srgb_to_lab
from lasagna_core.directions import DIRECTION_NAMES
from lasagna_core.document import load
from lasagna_core.errors import DocumentError
from lasagna_core.evaluate.metrics import adds_light, cast_shadow_iou, light_hue, light_hue_error, outline_band, outline_error
from lasagna_core.evaluate.report import CaseResult, summarise
from lasagna_core.light_colors import LIGHT_COLORS
from lasagna_core.priors import pixel_file
from lasagna_core.train.manifest import read_manifest
from tests.relight_data import tiny_unet
from tests.test_flat_art import write_fluent, write_twemoji

SIZE = 48
SQUARE = slice(10, 30)


def _square_scene() -> tuple[np.ndarray, np.ndarray]:
    """A grey ground (0.7) with a 20 x 20 px square object (0.5) at rows and columns 10-29, and its mask."""
    base = np.full((3, SIZE, SIZE), 0.7, np.float32)
    base[:, SQUARE, SQUARE] = 0.5
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[SQUARE, SQUARE] = 1.0
    return base, mask


def _with_shadow(base: np.ndarray, columns: slice, value: float) -> np.ndarray:
    """`base` with the square's shadow on the ground over its rows and `columns` (the square itself kept)."""
    out = base.copy()
    out[:, SQUARE, columns] = value
    out[:, SQUARE, SQUARE] = base[:, SQUARE, SQUARE]
    return out


def test_cast_shadow_iou_of_a_square_caster_with_a_known_shadow() -> None:
    base, mask = _square_scene()
    truth = _with_shadow(base, slice(20, 36), 0.4)  # light from the left: a shadow 6 px wide right of the square
    assert cast_shadow_iou(truth, base, truth, mask) == 1.0
    half = _with_shadow(base, slice(17, 33), 0.4)  # 3 of its 6 columns: 60 px shared of a 120 px union
    assert cast_shadow_iou(half, base, truth, mask) == pytest.approx(0.5)
    wrong_side = _with_shadow(base, slice(4, 10), 0.4)  # toward the light: no overlap
    assert cast_shadow_iou(wrong_side, base, truth, mask) == 0.0
    assert cast_shadow_iou(base, base, truth, mask) == 0.0  # no shadow at all
    faint = _with_shadow(base, slice(20, 36), 0.685)  # darker, but by less than 5 L*
    assert 0 < srgb_to_lab(base)[0, 12, 32] - srgb_to_lab(faint)[0, 12, 32] < 5
    assert cast_shadow_iou(faint, base, truth, mask) == 0.0
    inside = base.copy()
    inside[:, SQUARE, 20:30] = 0.2  # darkening the object itself is form shading, no cast shadow
    assert cast_shadow_iou(inside, base, truth, mask) == 0.0
    assert cast_shadow_iou(truth, base, inside, mask) is None  # a truth without a cast shadow: not counted
    ground = mask == 0
    dim = truth.copy()
    dim[:, ground] *= 0.85  # a dim coloured light: the whole ground ~8 L* darker, the shadow still its shape
    assert srgb_to_lab(base)[0, 40, 40] - srgb_to_lab(dim)[0, 40, 40] > 5
    assert cast_shadow_iou(truth, base, dim, mask) == 1.0
    all_dark = base.copy()
    all_dark[:, ground] *= 0.85  # darker everywhere, no shadow: no match for a shadow of the caster's shape
    assert cast_shadow_iou(all_dark, base, dim, mask) == 0.0
    assert cast_shadow_iou(truth, base, truth, None) is None


def test_outline_band_is_two_pixels_either_side_of_the_object_and_colour_region_edges() -> None:
    base, mask = _square_scene()
    base[:, 21:30, SQUARE] = np.array([0.2, 0.3, 0.8], np.float32)[:, None, None]  # a blue lower part: a colour edge
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    base = base * (1 - 0.002 * xs)[None]  # a gentle gradient is no outline
    band = outline_band(base, mask)
    assert band[15, 7] and band[15, 8] and not band[15, 6]  # 2 px outside the square's left edge (column 10)
    assert band[15, 12] and not band[15, 13]  # 2 px inside it ...
    assert band[18, 15] and band[23, 15] and not band[17, 15] and not band[24, 15]  # ... and of the colour edge
    assert not band[40, 40] and not band[2, 2]
    lines = outline_band(np.full((3, SIZE, SIZE), 0.5, np.float32), np.zeros((SIZE, SIZE)))
    assert not lines.any()  # an empty picture has no outline


def test_outline_error_is_the_shading_error_in_lightness_near_the_outlines() -> None:
    base, mask = _square_scene()
    band = outline_band(base, mask)
    interior = base.copy()
    interior[:, 14:26, 14:26] = 0.3  # shading 4 px from any outline
    assert outline_error(base, interior, band) == 0.0  # outside the band: not counted
    rim = base.copy()
    rim[:, band] = base[:, band] * 0.8  # the truth darkens every band pixel
    expected = np.abs(srgb_to_lab(rim)[0] - srgb_to_lab(base)[0])[band].mean()
    assert outline_error(base, rim, band) == pytest.approx(expected)  # doing nothing misses all of it
    assert outline_error(rim, rim, band) == 0.0
    half = base.copy()
    half[:, band] = base[:, band] * 0.9
    assert 0 < outline_error(half, rim, band) < expected
    assert outline_error(rim, rim, np.zeros_like(band)) is None


def test_light_hue_weights_the_colour_by_how_much_the_layer_brightens() -> None:
    warm, blue = (np.asarray(LIGHT_COLORS[n].rgb, np.float32)[:, None, None] for n in ("warm", "blue"))
    ramp = np.linspace(0, 0.6, SIZE, dtype=np.float32)[None, None, :].repeat(SIZE, 1)
    layer = ramp * warm  # a warm Screen layer, stronger to the right
    assert light_hue_error(layer, LIGHT_COLORS["warm"].rgb) < 0.5
    assert light_hue_error(layer, LIGHT_COLORS["blue"].rgb) > 150
    mixed = layer.copy()
    mixed[:, :, : SIZE // 2] = 0.01 * blue  # half the pixels a faint blue: hue noise where little light is
    assert light_hue_error(mixed, LIGHT_COLORS["warm"].rgb) < 3  # an average of hue angles would say ~100
    half_hues = [light_hue(layer[:, :, SIZE // 2 :]), light_hue(0.01 * blue)]
    assert abs(half_hues[0] - half_hues[1]) > 150
    assert light_hue(layer[:1]) is None and light_hue(np.zeros((3, 4, 4))) is None  # grey or empty: no hue
    assert light_hue_error(np.zeros((3, 4, 4)), LIGHT_COLORS["warm"].rgb) == 180.0  # a coloured light that left none
    assert light_hue_error(np.full((3, 4, 4), 0.3), LIGHT_COLORS["warm"].rgb) == 180.0


def test_only_a_truth_that_brightens_gives_the_light_layer_a_hue_to_match() -> None:
    """A coloured light from behind that only darkens and tints the picture leaves the Light layer nothing to
    carry: such a case is not scored for hue (an empty layer is right there)."""
    base = np.full((3, SIZE, SIZE), 0.5, np.float32)
    darker = base * np.asarray([0.7, 0.6, 0.5], np.float32)[:, None, None]  # dimmed and tinted, nowhere lighter
    assert not adds_light(darker, base) and not adds_light(base, base)
    lit = darker.copy()
    lit[:, :2, :2] = 0.8  # 4 of 2,304 pixels brightened: enough light to have a colour
    assert adds_light(lit, base)
    lit[:, :2, :2] = 0.505  # ... but not by a just-noticeable difference
    assert not adds_light(lit, base)


def test_summary_gain_over_base_and_hue_share_count_only_the_cases_that_have_them() -> None:
    def row(method: str, psnr: float, iou: float | None, hue: float | None) -> CaseResult:
        return CaseResult("s", "left", method, psnr, 0.9, 0.0, 0.0, 1.0, 2.0, 0.5, 0.1, cast_shadow_iou=iou,
                          outline_error=1.0, light_hue_error=hue)

    results = [row("base", 20.0, None, None), row("base", 22.0, None, None),
               row("lasagna", 25.0, 0.6, 10.0), row("lasagna", 26.0, None, 40.0),
               row("ground truth", float("inf"), 1.0, None), row("ground truth", float("inf"), None, None)]
    summary = summarise(results, ["base", "lasagna", "ground truth"])
    assert summary["lasagna"]["psnr_gain"] == pytest.approx(4.5)  # (5 + 4) / 2
    assert summary["base"]["psnr_gain"] == 0.0 and summary["ground truth"]["psnr_gain"] is None
    assert summary["lasagna"]["cast_shadow_iou"] == pytest.approx(0.6)  # the case without a shadow is not counted
    assert summary["lasagna"]["light_hue_share"] == 0.5 and summary["base"]["light_hue_share"] is None


def test_a_manifest_light_colour_that_is_not_three_numbers_is_refused_with_its_line(tmp_path: Path) -> None:
    line = {"input": "a.png", "target": "b.png", "prompt": "warm light from the left", "split": "test"}
    (tmp_path / "manifest.jsonl").write_text(json.dumps({**line, "light_color": [1.0, 0.8, 0.6]}) + "\n"
                                             + json.dumps({**line, "light_color": "warm"}) + "\n")
    with pytest.raises(DocumentError, match=r"line 2: 'light_color' must be three numbers"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.jsonl").write_text(json.dumps({**line, "light_color": [1.0, 0.8, 0.6]}) + "\n" + json.dumps(line) + "\n")
    assert [e.light_color for e in read_manifest(tmp_path)] == [(1.0, 0.8, 0.6), None]


# ------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> tuple[Path, Path]:
    """The test designs of the flat-art packages the flat-art tests write, at 16 px, all in coloured light,
    and a tiny relighting prior that knows the ten directions."""
    root = tmp_path_factory.mktemp("shadeval")
    sources = [write_fluent(root / "fluent"), write_twemoji(root / "twemoji")]
    data = root / "test16"
    result = CliRunner().invoke(app, ["dataset", "flat-art", *map(str, sources), str(data), "--size", "16", "--supersample", "1",
                                      "-j", "1", "--test-fraction", "0.5", "--splits", "test", "--colored-lights", "0.5"])
    assert result.exit_code == 0, result.output
    torch.manual_seed(0)
    weights = pixel_file.save_weights(pixel_file.new_unet(tiny_unet(16, len(DIRECTION_NAMES))), root / "p.safetensors",
                                      task="relight", classes=list(DIRECTION_NAMES),
                                      scheduler_config=pixel_file.default_scheduler_config())
    return data, weights


def test_eval_on_flat_art_shows_the_new_columns_and_the_compared_prior_in_both_outputs(held_out, tmp_path: Path) -> None:
    data, weights = held_out
    md, js = tmp_path / "t.md", tmp_path / "t.json"
    result = CliRunner().invoke(app, ["eval", "--data", str(data), "--model", str(weights), "--compare-model", "builtin",
                                      "--limit", "6", "--seed", "2", "--steps", "2", "--direct-steps", "1", "--out", str(md), "--out", str(js)])
    assert result.exit_code == 0, result.output
    table = md.read_text()
    header = table.splitlines()[0]
    for column in ("PSNR gain over base (dB)", "cast-shadow IoU", "direction accuracy", "right and visible",
                   "outline error \\|ΔL*\\| within 2 px", "Light hue within 30°"):
        assert column in header, column
    assert "| lasagna [builtin] |" in table and "row `lasagna [builtin]`: the same with model `builtin`" in table
    report = json.loads(js.read_text())
    assert list(report["summary"]) == ["base", "lasagna", "lasagna [builtin]", "direct", "ground truth"]
    assert report["compare_model"] == "builtin"
    assert report["summary"]["lasagna"]["psnr"] != report["summary"]["lasagna [builtin]"]["psnr"]  # the other prior's work
    truth, base = report["summary"]["ground truth"], report["summary"]["base"]
    assert truth["outline_error"] == 0.0 and base["outline_error"] > 0 and base["psnr_gain"] == 0.0
    if truth["cast_shadow_iou"] is not None:  # the metric agrees with the renders
        assert truth["cast_shadow_iou"] == 1.0 and base["cast_shadow_iou"] == 0.0
    cases = {(r["scene"], r["direction"]): r for r in report["results"] if r["method"] == "lasagna [builtin]"}
    lines = list(map(json.loads, (data / "manifest.jsonl").read_text().splitlines()))
    colored = {(line["scene"], line["direction"]) for line in lines if "light_color" in line}
    lit = {(line["scene"], line["direction"]) for line in lines
           if adds_light(load(data / line["target"]).base, load(data / line["input"]).base)}
    assert len(cases) == 6 and colored & lit & set(cases)
    for key, r in cases.items():  # the Light layer's hue is measured where a colour was asked and the truth lights
        assert (r["light_hue_error"] is not None) == (key in colored & lit)
    assert 0.0 <= report["summary"]["lasagna [builtin]"]["light_hue_share"] <= 1.0
    assert base["light_hue_share"] is None
    refused = CliRunner().invoke(app, ["eval", "--data", str(data), "--model", str(weights), "--compare-model", str(tmp_path / "no.pt")])
    assert refused.exit_code != 0 and "Traceback" not in refused.output and len(refused.output.strip().splitlines()) == 1


def test_each_case_is_edited_with_its_own_prompt_colour_included(held_out, monkeypatch: pytest.MonkeyPatch) -> None:
    """The case's prompt ("warm light from the left") reaches the distillation, so the Light layer is tinted
    as `lasagna shade` tints it."""
    import lasagna_core.edit as edit
    from lasagna_core.evaluate.run import evaluate
    from lasagna_core.priors import PriorSettings

    data, weights = held_out
    seen: list[tuple[str, object]] = []

    class Spy(edit.Distillation):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            seen.append((args[4], self.light))

    monkeypatch.setattr(edit, "Distillation", Spy)
    report = evaluate(data, prior_settings=PriorSettings(str(weights), device="cpu"), limit=4, seed=2, steps=1,
                      methods=("base", "lasagna"), compare_model=str(weights))
    assert list(report.summary) == ["base", "lasagna", "lasagna [p.safetensors]"]
    asked = {e.scene + e.direction: e for e in read_manifest(data, "test")}
    cases = [asked[r.scene + r.direction] for r in report.results if r.method == "lasagna"] * 2  # both priors
    assert [prompt for prompt, _ in seen] == [e.prompt for e in cases]
    assert any(light is not None for _, light in seen) and any(light is None for _, light in seen)
    for (prompt, light), case in zip(seen, cases):
        assert (light is None) == (case.light_color is None)
        if light is not None:
            assert light.rgb == case.light_color and light.phrase in prompt


def test_relighting_flags_are_refused_on_colouring_data_before_any_work(tmp_path: Path) -> None:
    line = {"input": "a.png", "target": "b.png", "prompt": "apple", "kind": "line-art", "split": "test"}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(line) + "\n")
    for flags, message in ((["--compare-model", "builtin"], "--compare-model goes with relighting data"),
                           (["--jobs", "2", "--skimage-photos"], "--skimage-photos, --jobs go with relighting data")):
        refused = CliRunner().invoke(app, ["eval", "--data", str(tmp_path), *flags])
        assert refused.exit_code == 2 and message in refused.output
        assert "Traceback" not in refused.output
