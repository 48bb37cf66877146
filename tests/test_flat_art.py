"""Relighting data from flat art: packages written by the tests in Fluent's and Twemoji's formats (no network),
the selection rule, inflation, the renderer's light and shadows, coloured lights, the data set and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.directions import PROMPTS, parse_direction
from lasagna_core.errors import DocumentError
from lasagna_core.flatart import packages as P
from lasagna_core.flatart.dataset import generate, select_designs
from lasagna_core.flatart.inflate import InflateSettings, height_field, normals
from lasagna_core.flatart.raster import rasterise, shape_stats
from lasagna_core.flatart.relight import ArtScene, Lighting, render_art
from lasagna_core.light_colors import LIGHT_COLORS
from lasagna_core.synth.lighting import LIGHT_ELEVATION
from lasagna_core.train.manifest import read_manifest

APPLE = '<circle cx="16" cy="17" r="10" fill="#dd2e44"/><ellipse cx="20" cy="7" rx="4" ry="2.5" fill="#77b255"/>'
CHAIR = ('<rect x="9" y="4" width="14" height="7" fill="#8a5a44"/><rect x="7" y="15" width="18" height="5" fill="#a0684c"/>'
         '<rect x="10" y="10" width="3" height="6" fill="#8a5a44"/><rect x="19" y="10" width="3" height="6" fill="#8a5a44"/>'
         '<rect x="8" y="19" width="3" height="10" fill="#5b3a2e"/><rect x="21" y="19" width="3" height="10" fill="#5b3a2e"/>')
BEAR = '<circle cx="16" cy="18" r="9" fill="#c97b3f"/><circle cx="16" cy="20" r="5" fill="#f0c89a"/><circle cx="9" cy="9" r="3.5" fill="#c97b3f"/>'
SUNRISE = '<rect width="32" height="32" fill="#ffcc4d"/><rect y="20" width="32" height="12" fill="#3b88c3"/>'
SPARKLES = '<circle cx="6" cy="6" r="3" fill="#ffac33"/><circle cx="24" cy="10" r="4" fill="#ffac33"/><circle cx="12" cy="24" r="5" fill="#ffac33"/>'
NEEDLE = '<rect x="15" y="3" width="1.5" height="26" fill="#99aab5"/>'
DISC = '<circle cx="16" cy="16" r="10" fill="#ffcc4d"/>'

FLUENT_ICONS = {  # name: (category, codepoints, body)
    "red-apple": ("Food & Drink", "1f34e", APPLE),
    "chair": ("Objects", "1fa91", CHAIR),
    "teddy-bear": ("Activities", "1f9f8", BEAR),
    "cat-face": ("Animals & Nature", "1f431", DISC),
    "sun-with-face": ("Travel & Places", "1f31e", DISC),
    "grinning-face": ("Smileys & Emotion", "1f600", DISC),
    "chequered-flag": ("Flags", "1f3c1", DISC),
    "thumbs-up-dark": ("People & Body", "1f44d-1f3ff", DISC),
    "sunrise": ("Travel & Places", "1f305", SUNRISE),
    "sparkles": ("Activities", "2728", SPARKLES),
    "sewing-needle": ("Objects", "1faa1", NEEDLE),
}
TWEMOJI_FILES = {  # codepoints (file name): 36 x 36 body
    "1f34e": '<circle cx="18" cy="19" r="12" fill="#be1931"/><path d="M19 7s3-4 8-4c4 0 6 2 6 2s-4 3-7 3-7-1-7-1z" fill="#77b255"/>',
    "1f9f8": '<circle cx="18" cy="20" r="11" fill="#a0522d"/><circle cx="18" cy="22" r="6" fill="#deb887"/>',
    "1f3c1": '<rect x="4" y="4" width="28" height="20" fill="#292f33"/>',
    "1f1e6-1f1e8": '<rect width="36" height="24" fill="#00247d"/>',  # a flag Fluent does not name: skipped
}
SELECTED = {"fluent-emoji-flat/red-apple", "fluent-emoji-flat/chair", "fluent-emoji-flat/teddy-bear",
            "fluent-emoji-flat/cat-face", "twemoji/red-apple", "twemoji/teddy-bear"}


def write_fluent(folder: Path) -> Path:
    root = folder / "package"
    root.mkdir(parents=True)
    icons = {name: {"body": f'<g fill="none">{body}</g>'} for name, (_, _, body) in FLUENT_ICONS.items()}
    (root / "icons.json").write_text(json.dumps({"prefix": "fluent-emoji-flat", "icons": icons, "width": 32, "height": 32}))
    categories: dict[str, list[str]] = {}
    for name, (category, _, _) in FLUENT_ICONS.items():
        categories.setdefault(category, []).append(name)
    (root / "metadata.json").write_text(json.dumps({"categories": categories}))
    (root / "chars.json").write_text(json.dumps({cp: name for name, (_, cp, _) in FLUENT_ICONS.items()}))
    (root / "package.json").write_text(json.dumps({"name": "@iconify-json/fluent-emoji-flat", "version": "0.0.0-test"}))
    return folder


def write_twemoji(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for cp, body in TWEMOJI_FILES.items():
        (folder / f"{cp}.svg").write_text(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36">{body}</svg>')
    return folder


@pytest.fixture()
def sources(tmp_path: Path) -> list[Path]:
    return [write_fluent(tmp_path / "fluent"), write_twemoji(tmp_path / "twemoji")]


def _lum(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.2126, 0.7152, 0.0722], np.float32)


# ---------------------------------------------------------------------------------------------- loading


def test_selection_keeps_single_objects_and_drops_flags_people_faces_scenes_and_scattered_designs(sources: list[Path]) -> None:
    designs = P.load_designs(sources)
    assert {d.key for d in designs} >= SELECTED | {"twemoji/chequered-flag"}
    assert not any(d.codepoints == "1f1e6-1f1e8" for d in designs)  # a Twemoji file Fluent does not name
    assert {d.key for d in select_designs(designs)} == SELECTED
    stats = {d.name: shape_stats(d.svg) for d in designs if d.package == P.FLUENT}
    assert stats["sunrise"].coverage > 0.95  # a scene fills the canvas
    assert stats["sparkles"].main_share < 0.6  # three pieces
    assert stats["sewing-needle"].coverage < 0.05
    assert 0.25 < stats["red-apple"].coverage < 0.4 and stats["red-apple"].main_share == 1.0


def test_a_folder_that_is_neither_package_is_refused_in_one_line(tmp_path: Path, sources: list[Path]) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    with pytest.raises(DocumentError, match="neither Fluent Emoji Flat"):
        P.package_kind(tmp_path / "other")
    with pytest.raises(DocumentError, match="add the unpacked Fluent Emoji Flat package"):
        P.load_designs([sources[1]])
    result = CliRunner().invoke(app, ["dataset", "flat-art", str(tmp_path / "other"), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "neither Fluent Emoji Flat" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_colour_regions_follow_the_svg_shapes_and_merge_touching_shapes_of_one_colour() -> None:
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect x="4" y="4" width="12" height="24" fill="#ff0000"/>'
           '<rect x="16" y="4" width="12" height="24" fill="#ff0000"/><circle cx="16" cy="16" r="5" fill="#0000ff"/></svg>')
    raster = rasterise(svg, 64)
    regions = raster.regions
    assert regions[0, 0] == -1
    red_left, red_right, blue = regions[32, 12], regions[32, 52], regions[32, 32]
    assert red_left == red_right != blue and blue >= 0  # two red rectangles side by side are one region
    assert np.all(regions[raster.rgba[..., 3] < 0.5] == -1)


# --------------------------------------------------------------------------------------------- inflation


def test_height_field_is_highest_inside_the_silhouette_and_zero_outside() -> None:
    size = 96
    y, x = np.mgrid[:size, :size]
    r = np.hypot(x - 47.5, y - 47.5)
    alpha = (r < 30).astype(np.float32)
    regions = np.where(r < 30, np.where(r < 10, 1, 0), -1)
    h = height_field(alpha, regions)
    assert np.all(h[alpha < 0.5] == 0) and np.all(h[r < 29] > 0)
    assert np.unravel_index(np.argmax(h), h.shape) in {(47, 47), (47, 48), (48, 47), (48, 48)}
    one_region = height_field(alpha, np.where(r < 30, 0, -1))
    assert abs(float(one_region[48, 48]) - 30 * 1.25) < 1.5  # a hemisphere (radius 30) plus a quarter of itself
    body = height_field(alpha, regions, InflateSettings(part_weight=0.0))
    assert abs(float(body[48, 48]) - 30) < 1.0
    assert abs(float(h[48, 48] - body[48, 48]) - 0.25 * 10) < 0.5  # the inner disc (radius 10) stacked on the body
    tiny = height_field(alpha, np.where(r < 30, np.where(r < 1.5, 1, 0), -1))
    assert abs(float(tiny[48, 48] - one_region[48, 48])) < 0.1  # a seed-sized region is not a bump
    n = normals(body)
    assert n[0, 48, 70] > 0.5 and n[0, 48, 25] < -0.5  # the rim faces outward
    assert n[1, 25, 48] > 0.5  # up in the picture is +y


# -------------------------------------------------------------------------------------------- rendering


def _scene(svg_body: str, size: int, *, slab: float | None = None, gap: float = 0.0) -> ArtScene:
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">{svg_body}</svg>'
    raster = rasterise(svg, size)
    if slab is None:
        height = height_field(raster.rgba[..., 3], raster.regions)
    else:  # a thin flat plate: its shadow is its silhouette, shifted
        height = np.where(raster.rgba[..., 3] >= 0.5, slab, 0).astype(np.float32)
    background = np.full((size, size, 3), 0.7, np.float32)
    return ArtScene(raster.rgba, height, background, gap=gap, ambient=0.3, key=0.9, specular=0.0, ground_specular=0.0)


def test_the_lit_side_is_brighter() -> None:
    size = 48
    out = render_art(_scene(DISC, size * 2), size, 2, [Lighting(d) for d in ("left", "right", "top", "bottom")])
    inside = out.mask > 0.99
    cols = np.arange(size)[None, :].repeat(size, 0)
    rows = cols.T
    lum = {d: _lum(t) for d, t in out.targets.items()}
    assert lum["left"][inside & (cols < 24)].mean() > lum["left"][inside & (cols >= 24)].mean() + 0.1
    assert lum["right"][inside & (cols >= 24)].mean() > lum["right"][inside & (cols < 24)].mean() + 0.1
    assert lum["top"][inside & (rows < 24)].mean() > lum["top"][inside & (rows >= 24)].mean() + 0.1
    assert lum["bottom"][inside & (rows >= 24)].mean() > lum["bottom"][inside & (rows < 24)].mean() + 0.1
    # the base is the art itself over its background
    assert np.allclose(out.base[24, 24], np.array([0xff, 0xcc, 0x4d]) / 255, atol=1 / 255)
    assert np.allclose(out.base[1, 1], 0.7, atol=1 / 255)


L_SHAPE = '<rect x="6" y="4" width="6" height="20" fill="#3b88c3"/><rect x="6" y="18" width="16" height="6" fill="#3b88c3"/>'


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_cast_shadow_falls_away_from_the_light_with_the_casters_shape() -> None:
    size, ss = 64, 2
    gap, slab = 12.0, 1.0  # grid pixels: the plate floats, so its shadow is a shifted copy
    scene = _scene(L_SHAPE, size * ss, slab=slab, gap=gap)
    out = render_art(scene, size, ss, [Lighting("left"), Lighting("top")])
    silhouette = out.mask >= 0.5
    open_ground = _lum(out.targets["left"])[1, size - 2]  # a corner far from any shadow
    shift = round((gap + slab / 2) / math.tan(LIGHT_ELEVATION) / ss)  # output pixels
    for direction, (dr, dc) in (("left", (0, shift)), ("top", (shift, 0))):
        lum = _lum(out.targets[direction])
        shadow = (out.mask < 0.01) & (lum < _lum(out.targets[direction])[1, size - 2] - 0.1)
        away = np.roll(silhouette, (dr, dc), axis=(0, 1)) & (out.mask < 0.01)
        toward = np.roll(silhouette, (-dr, -dc), axis=(0, 1)) & (out.mask < 0.01)
        assert shadow.sum() > 50
        assert _iou(shadow, away) > 0.7, direction
        assert _iou(shadow, toward) < 0.1, direction
    assert open_ground > 0.5


def test_an_inflated_design_shades_its_far_side_and_casts_a_shadow_there() -> None:
    size = 48
    out = render_art(_scene(APPLE, size * 2, gap=4.0), size, 2, [Lighting("left")])
    lum, base = _lum(out.targets["left"]), _lum(out.base)
    ground = out.mask < 0.01
    cols = np.arange(size)[None, :].repeat(size, 0)
    darker = ground & (lum < np.median(lum[ground]) - 0.05)
    assert darker[:, 27:].sum() > 20 * max(darker[:, :21].sum(), 1)  # right of the apple, not left
    assert lum[(out.mask > 0.99) & (cols < 20)].mean() - base[(out.mask > 0.99) & (cols < 20)].mean() > 0.0


def test_coloured_light_tints_the_lit_side_and_optionally_the_shadows() -> None:
    size = 48
    scene = _scene(DISC, size * 2, gap=6.0)
    warm, moon = LIGHT_COLORS["warm"], LIGHT_COLORS["moonlight"]
    white = render_art(scene, size, 2, [Lighting("left")]).targets["left"]
    lit_warm = render_art(scene, size, 2, [Lighting("left", warm)]).targets["left"]
    lit_moon = render_art(scene, size, 2, [Lighting("left", moon)]).targets["left"]
    tinted = render_art(scene, size, 2, [Lighting("left", warm, tint_shadows=True)]).targets["left"]
    lit_side = (slice(18, 30), slice(8, 16))  # inside the disc, toward the light
    ratio = lambda img: float(img[lit_side][..., 0].mean() / img[lit_side][..., 2].mean())  # noqa: E731
    assert ratio(lit_warm) > ratio(white) * 1.2
    assert ratio(lit_moon) < ratio(white) / 1.2
    shadow = (slice(20, 28), slice(40, 44))  # the cast shadow right of the disc, on the grey ground
    assert float(white[shadow].mean()) < float(white[2, 2].mean()) - 0.1
    assert abs(float(white[shadow][..., 2].mean() - white[shadow][..., 0].mean())) < 0.01  # grey under white light
    assert float(tinted[shadow][..., 2].mean() - tinted[shadow][..., 0].mean()) > 0.03  # warm light: cool shadows


# ---------------------------------------------------------------------------------------------- data set


def test_data_set_manifest_splits_by_design_and_reads_back(tmp_path: Path, sources: list[Path]) -> None:
    out = tmp_path / "set"
    result = generate(sources, out, size=16, supersample=1, val_fraction=0.3, test_fraction=0.3, colored_lights=0.5,
                      directions=("left", "top", "back"))
    assert result.scenes == len(SELECTED) and result.pairs == 3 * len(SELECTED)
    assert result.designs == {"fluent-emoji-flat": 4, "twemoji": 2}
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {"input", "target", "prompt", "direction", "mask", "split", "scene", "design"} <= set(lines[0])
    split_of: dict[str, set[str]] = {}
    for line in lines:
        split_of.setdefault(line["design"].split("/", 1)[1], set()).add(line["split"])
        assert parse_direction(line["prompt"]) == line["direction"]
        if "light_color" in line:
            assert line["prompt"] == PROMPTS[line["direction"]].replace("light", LIGHT_COLORS[line["light"]].phrase, 1)
            assert line["light_color"] == list(LIGHT_COLORS[line["light"]].rgb)
        else:
            assert line["prompt"] == PROMPTS[line["direction"]]
    assert 0 < result.colored_pairs < result.pairs
    # one split per emoji, the same in both packages, from its name alone
    assert all(len(s) == 1 for s in split_of.values())
    assert all(s == {P.design_split(name, 0.3, 0.3)} for name, s in split_of.items())
    examples = read_manifest(out)
    assert len(examples) == result.pairs
    assert all(e.input.is_file() and e.target.is_file() and e.mask is not None and e.mask.is_file() for e in examples)
    assert Image.open(examples[0].target).size == (16, 16)
    info = json.loads((out / "dataset.json").read_text())
    assert info["generator"] == "lasagna dataset flat-art" and "twemoji" in info["licences"]
    assert info["sources"] == {"@iconify-json/fluent-emoji-flat": "0.0.0-test"}


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path, sources: list[Path]) -> None:
    def files(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    generate(sources, tmp_path / "a", count=8, size=16, supersample=1, colored_lights=0.3, workers=1, directions=("left",))
    generate(sources, tmp_path / "b", count=8, size=16, supersample=1, colored_lights=0.3, workers=2, directions=("left",))
    assert files(tmp_path / "a") == files(tmp_path / "b")
    lines = (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 8 and len({json.loads(line)["design"] for line in lines}) == len(SELECTED)  # designs repeat past the last


def test_cli_end_to_end(tmp_path: Path, sources: list[Path]) -> None:
    out = tmp_path / "set"
    args = ["dataset", "flat-art", *map(str, sources), str(out), "--size", "16", "--supersample", "1", "-j", "1", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["scenes"] == len(SELECTED) and summary["pairs"] == 10 * len(SELECTED) and summary["colored_pairs"] == 0
    assert (out / "manifest.jsonl").is_file()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "not empty" in again.output
    bad = CliRunner().invoke(app, ["dataset", "flat-art", str(sources[0]), str(tmp_path / "x"), "--colored-lights", "1.5"])
    assert bad.exit_code == 2 and not (tmp_path / "x").exists()


def test_a_viewbox_that_is_not_square_is_fitted_into_the_square_picture() -> None:
    svg = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 33"><rect x="0" y="0" width="32" height="33" fill="#000"/></svg>'
    raster = rasterise(svg, 45)  # Fluent's swan has this viewBox; resvg alone would give 44 x 45 or so
    assert raster.rgba.shape == (45, 45, 4) and raster.regions.shape == (45, 45)
    assert raster.rgba[22, 22, 3] == 1.0 and raster.rgba[22, 0, 3] < 0.6  # centred, with a sliver either side


def test_a_missing_svg_renderer_is_refused_before_any_work(tmp_path: Path, sources: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "resvg_py", None)  # import resvg_py now raises ImportError
    result = CliRunner().invoke(app, ["dataset", "flat-art", *map(str, sources), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "pip install 'lasagna[data]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_splits_test_draws_only_the_held_out_designs(tmp_path: Path, sources: list[Path]) -> None:
    """`--splits test` renders the held-out designs alone (the test set at another size, for eval)."""
    out = tmp_path / "test16"
    result = CliRunner().invoke(app, ["dataset", "flat-art", *map(str, sources), str(out), "--size", "16", "--supersample", "1",
                                      "-j", "1", "--test-fraction", "0.5", "--splits", "test", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    held = {d.key for d in select_designs(P.load_designs(sources)) if P.design_split(d.name, 0.1, 0.5) == "test"}
    assert held and {line["design"] for line in lines} == held and {line["split"] for line in lines} == {"test"}
    assert len(lines) == 10 * len(held) and json.loads(result.stdout)["splits"] == {"train": 0, "val": 0, "test": len(held)}
    assert json.loads((out / "dataset.json").read_text())["splits"] == ["test"]
    bad = CliRunner().invoke(app, ["dataset", "flat-art", *map(str, sources), str(tmp_path / "x"), "--splits", "test,exam"])
    assert bad.exit_code == 2 and "unknown split(s) exam" in bad.output and not (tmp_path / "x").exists()
    none = CliRunner().invoke(app, ["dataset", "flat-art", *map(str, sources), str(tmp_path / "y"), "--test-fraction", "0",
                                    "--splits", "test"])
    assert none.exit_code == 2 and "no design of the test split" in none.output and not (tmp_path / "y").exists()
