"""Synthetic relighting data: the renderer on hand-checkable scenes, the data set on disk, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.directions import DIRECTION_NAMES, PROMPTS, parse_direction
from lasagna_core.errors import DocumentError, OutputError, UsageError
from lasagna_core.color import linear_to_srgb, srgb_to_linear
from lasagna_core.synth.dataset import SPLITS, generate, read_manifest
from lasagna_core.synth.geometry import intersect, normal
from lasagna_core.synth.lighting import BASE_GAIN, LIGHT_ELEVATION, visibility
from lasagna_core.synth.render import CAMERA_Z, render
from lasagna_core.synth.scene import Primitive, Scene, SceneMix, Texture, random_rotation, random_scene

GRAY = np.array([0.4, 0.4, 0.4])


def _flat(color: np.ndarray = GRAY) -> Texture:
    return Texture("flat", np.asarray(color, float), np.zeros(3))


def _scene(*prims: Primitive, background: str = "plain") -> Scene:
    return Scene(list(prims), background, _flat(np.array([0.2, 0.3, 0.5])), ground_specular=0.0, ambient=0.3, key=0.9)


def _sphere(x: float = 0.0, y: float = 0.0, z: float = 0.5, r: float = 0.5, specular: float = 0.0) -> Primitive:
    return Primitive("sphere", np.array([x, y, z]), np.eye(3), (r,), _flat(), specular=specular, shininess=20.0)


def _lum(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.2126, 0.7152, 0.0722], np.float32)


def _pixel(size: int, x: float, y: float) -> tuple[int, int]:
    """Row, column of the pixel at picture coordinates x (right), y (up) in [-1, 1]."""
    return int((1 - y) / 2 * size), int((x + 1) / 2 * size)


def test_sphere_is_brighter_on_the_side_of_the_light() -> None:
    size = 32
    out = render(_scene(_sphere()), size, directions=["left", "right", "top", "bottom"])
    inside = out.mask > 0.99
    half = size // 2
    left, right = np.zeros_like(inside), np.zeros_like(inside)
    left[:, :half], right[:, half:] = True, True
    upper, lower = np.zeros_like(inside), np.zeros_like(inside)
    upper[:half], lower[half:] = True, True  # row 0 is the top of the picture
    lum = {d: _lum(img) for d, img in out.targets.items()}
    assert lum["left"][inside & left].mean() > lum["left"][inside & right].mean() + 0.1
    assert lum["right"][inside & right].mean() > lum["right"][inside & left].mean() + 0.1
    assert lum["top"][inside & upper].mean() > lum["top"][inside & lower].mean() + 0.1
    assert lum["bottom"][inside & lower].mean() > lum["bottom"][inside & upper].mean() + 0.1
    # the plain backdrop is never lit: it keeps its base colour in every render
    outside = out.mask == 0
    for img in out.targets.values():
        np.testing.assert_array_equal(img[outside], out.base[outside])


def test_base_is_flat_albedo_without_shading() -> None:
    out = render(_scene(_sphere(specular=0.5), background="ground"), 32, directions=["left"])
    inside = out.mask > 0.999
    outside = out.mask < 0.001
    assert inside.sum() > 100 and outside.sum() > 100
    expected_object = linear_to_srgb(GRAY * BASE_GAIN)
    np.testing.assert_allclose(out.base[inside], np.broadcast_to(expected_object, out.base[inside].shape), atol=1e-6)
    assert np.ptp(out.base[outside], axis=0).max() < 1e-6
    # while the relit target does vary across the object
    assert np.ptp(_lum(out.targets["left"])[inside]) > 0.3


def test_cast_shadow_falls_on_the_ground_away_from_the_light() -> None:
    size = 48
    out = render(_scene(_sphere(z=0.5, r=0.25), background="ground"), size, directions=["left", "top", "front"])
    # a point at height h casts its shadow h / tan(elevation) away from the light
    reach = 0.5 / math.tan(LIGHT_ELEVATION)
    lum_left = _lum(out.targets["left"])
    shadow, lit = _pixel(size, reach, 0.0), _pixel(size, -reach, 0.0)
    assert out.mask[shadow] == 0 and out.mask[lit] == 0
    assert lum_left[shadow] < 0.75 * lum_left[lit]
    lum_top = _lum(out.targets["top"])
    assert lum_top[_pixel(size, 0.0, -reach)] < 0.75 * lum_top[_pixel(size, 0.0, reach)]
    assert lum_top[_pixel(size, reach, 0.0)] == pytest.approx(lum_top[_pixel(size, -reach, 0.0)], abs=1e-6)
    # light from the camera: the shadow hides behind the sphere, the whole ground is evenly lit
    near = out.mask > 0
    for axis in (0, 1):
        for shift in (-2, -1, 1, 2):
            near = near | np.roll(out.mask > 0, shift, axis=axis)
    ground = _lum(out.targets["front"])[~near]
    assert ground.size > 1000 and np.ptp(ground) < 1e-6


@pytest.mark.parametrize("kind", ["sphere", "box", "cylinder", "capsule"])
def test_no_shadow_acne_on_convex_solids(kind: str) -> None:
    """A lone convex solid on a plain backdrop can't shadow itself: every facing sample must see the light."""
    rng = np.random.default_rng(3)
    size = {"sphere": (0.5,), "box": (0.4, 0.3, 0.35), "cylinder": (0.35, 0.4), "capsule": (0.25, 0.35)}[kind]
    prim = Primitive(kind, np.array([0.0, 0.0, 0.6]), random_rotation(rng), size, _flat())
    scene = _scene(prim)
    ss, res = 2, 32 * 2
    out = render(scene, 32, supersample=ss, directions=DIRECTION_NAMES)
    assert out.mask.max() == 1.0
    # visibility through the same path render uses, on a ray grid over the object
    coords = (np.arange(res) + 0.5) / res * 2 - 1
    gx, gy = np.meshgrid(coords, -coords)
    origin = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, CAMERA_Z)]).astype(np.float32)
    tn, tf = intersect(prim, origin, np.array([[0], [0], [-1]], np.float32))
    hit = (tn <= tf) & (tn > 0)
    points = origin[:, hit].copy()
    points[2] = CAMERA_Z - tn[hit]
    normals = normal(prim, points)
    n = points.shape[1] - points.shape[1] % (ss * ss)
    for name in DIRECTION_NAMES:
        vis = visibility(scene, name, points[:, :n], normals[:, :n], np.ones(n, bool), ss)
        assert vis.min() == 1.0, name


def test_renders_are_finite_and_in_range_for_random_scenes() -> None:
    for index in range(6):
        scene = random_scene(np.random.default_rng(index))
        out = render(scene, 16)
        for img in [out.base, out.mask, *out.targets.values()]:
            assert np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
        assert set(out.targets) == set(DIRECTION_NAMES)


def _background_changes(out_dir: Path) -> list[bool]:
    """Per scene: does any relit picture change the background (mask 0) from the flat base?"""
    changes = []
    for sid in sorted({line["scene"] for line in read_manifest(out_dir / "manifest.jsonl")}):
        images = out_dir / "images"
        outside = np.asarray(Image.open(images / f"{sid}_mask.png")) == 0
        base = np.asarray(Image.open(images / f"{sid}_base.png"), dtype=np.int16)
        lit = np.asarray(Image.open(images / f"{sid}_left.png"), dtype=np.int16)
        changes.append(bool(np.abs(lit - base)[outside].max() > 2))
    return changes


def test_backgrounds_receive_light_unless_a_backdrop_is_asked_for(tmp_path: Path) -> None:
    """By default every scene stands on a ground plane, so whether a cast shadow falls on the background is
    never ambiguous in the data; --backdrop-fraction 1 puts every scene on a backdrop no light reaches."""
    generate(tmp_path / "ground", count=6, size=16)
    assert _background_changes(tmp_path / "ground") == [True] * 6
    generate(tmp_path / "backdrop", count=6, size=16, mix=SceneMix(backdrop=1.0))
    assert _background_changes(tmp_path / "backdrop") == [False] * 6
    info = json.loads((tmp_path / "backdrop" / "dataset.json").read_text())
    assert info["backdrop_fraction"] == 1.0
    with pytest.raises(UsageError, match="--backdrop-fraction"):
        generate(tmp_path / "x", count=1, size=8, mix=SceneMix(backdrop=1.5))


def test_photo_like_scenes_are_close_ups_or_clutters_with_a_lit_base(tmp_path: Path) -> None:
    scenes = [random_scene(np.random.default_rng(index), SceneMix(photo_like=1.0)) for index in range(24)]
    counts = [len(scene.primitives) for scene in scenes]
    assert set(counts) <= {1, 4, 5, 6} and 1 in counts and max(counts) >= 4
    assert all(scene.base_light is not None and scene.base_light[0] in DIRECTION_NAMES for scene in scenes)
    kinds = [p.texture.kind for scene in scenes for p in scene.primitives] + [scene.background_texture.kind for scene in scenes]
    assert kinds.count("fractal") > len(kinds) / 2 and "noise" not in kinds
    for scene in scenes[:4]:
        direction, share = scene.base_light
        lit = render(scene, 16, directions=[direction])
        scene.base_light = None
        flat = render(scene, 16, directions=[direction])
        # the base is the flat albedo moved `share` of the way toward the relit render, in linear light
        want = (1 - share) * srgb_to_linear(flat.base) + share * srgb_to_linear(flat.targets[direction])
        assert np.allclose(srgb_to_linear(lit.base), want, atol=2e-3)
        assert np.abs(lit.base - flat.base).max() > 0.05
    generate(tmp_path / "photo", count=4, size=16, mix=SceneMix(photo_like=1.0))
    assert json.loads((tmp_path / "photo" / "dataset.json").read_text())["photo_like"] == 1.0
    with pytest.raises(UsageError, match="--photo-like"):
        generate(tmp_path / "x", count=1, size=8, mix=SceneMix(photo_like=-0.5))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", count=3, size=16, seed=7)
    generate(tmp_path / "b", count=3, size=16, seed=7, workers=2)
    generate(tmp_path / "c", count=3, size=16, seed=8)
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert files_a == files_b
    assert len(files_a) == 2 + 3 * (len(DIRECTION_NAMES) + 2) and a.pairs == 3 * len(DIRECTION_NAMES)
    assert files_a["images/00000_base.png"] != _files(tmp_path / "c")["images/00000_base.png"]


def test_larger_counts_extend_smaller_ones(tmp_path: Path) -> None:
    generate(tmp_path / "small", count=2, size=16, seed=1)
    generate(tmp_path / "large", count=5, size=16, seed=1)
    small, large = read_manifest(tmp_path / "small" / "manifest.jsonl"), read_manifest(tmp_path / "large" / "manifest.jsonl")
    assert [(r["scene"], r["split"]) for r in small] == [(r["scene"], r["split"]) for r in large[: len(small)]]
    for name in ("00000_base.png", "00001_left.png", "00001_mask.png"):
        assert (tmp_path / "small/images" / name).read_bytes() == (tmp_path / "large/images" / name).read_bytes()


def test_manifest_schema_and_splits_by_scene(tmp_path: Path) -> None:
    result = generate(tmp_path, count=30, size=16, seed=0, val_fraction=0.2, test_fraction=0.2, supersample=1)
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == result.pairs == 30 * len(DIRECTION_NAMES)
    split_of: dict[str, set[str]] = {}
    for line in lines:
        assert list(line) == ["input", "target", "prompt", "direction", "mask", "split", "scene"]
        assert line["prompt"] == PROMPTS[line["direction"]] and parse_direction(line["prompt"]) == line["direction"]
        assert line["split"] in SPLITS
        assert line["input"] == f"images/{line['scene']}_base.png" and line["target"] == f"images/{line['scene']}_{line['direction']}.png"
        split_of.setdefault(line["scene"], set()).add(line["split"])
    assert all(len(s) == 1 for s in split_of.values())  # a scene's directions share one split
    assert sorted(split_of) == [f"{i:05d}" for i in range(30)]  # every scene in exactly one split
    by_split = {s: {scene for scene, ss in split_of.items() if s in ss} for s in SPLITS}
    assert all(by_split[s] for s in SPLITS) and sum(map(len, by_split.values())) == 30
    assert result.splits == {s: len(by_split[s]) for s in SPLITS}
    per_scene = {}
    for line in lines:
        per_scene.setdefault(line["scene"], []).append(line["direction"])
    assert all(dirs == list(DIRECTION_NAMES) for dirs in per_scene.values())
    # the images exist, have the size asked for, and the mask is gray
    first = lines[0]
    assert Image.open(tmp_path / first["input"]).mode == "RGB" and Image.open(tmp_path / first["input"]).size == (16, 16)
    assert Image.open(tmp_path / first["target"]).size == (16, 16)
    assert Image.open(tmp_path / first["mask"]).mode == "L"
    info = json.loads((tmp_path / "dataset.json").read_text())
    assert info["count"] == 30 and info["seed"] == 0 and list(info["directions"]) == list(DIRECTION_NAMES)
    test_only = read_manifest(tmp_path / "manifest.jsonl", split="test")
    assert {r["scene"] for r in test_only} == by_split["test"] and all(r["input"].is_file() for r in test_only)


def test_read_manifest_completes_converted_lines(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text(
        '{"input": "a.png", "target": "b.png", "prompt": "lit from the upper right"}\n\n'
        '{"input": "a.png", "target": "c.png", "prompt": "x", "direction": "back", "split": "test", "mask": "m.png"}\n',
        encoding="utf-8",
    )
    first, second = read_manifest(tmp_path / "m.jsonl")
    assert first["direction"] == "top-right" and first["split"] == "train" and first["mask"] is None
    assert first["input"] == tmp_path / "a.png" and first["scene"] == "a.png"
    assert second["direction"] == "back" and second["mask"] == tmp_path / "m.png"
    for bad in ['{"input": "a.png", "target": "b.png"}', '{"input": "a.png", "target": "b.png", "prompt": "a cat"}',
                '[1]', '{"input": "a", "target": "b", "prompt": "left", "split": "holdout"}', "{nope"]:
        (tmp_path / "bad.jsonl").write_text(bad + "\n", encoding="utf-8")
        with pytest.raises(DocumentError, match="line 1"):
            read_manifest(tmp_path / "bad.jsonl")


def test_refuses_non_empty_folder_and_bad_options(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="--overwrite"):
        generate(tmp_path, count=1, size=8)
    generate(tmp_path, count=2, size=8, overwrite=True)
    generate(tmp_path, count=1, size=8, overwrite=True)  # the stale scene 00001 is removed, the user's file kept
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "images").iterdir())[0] == "00000_back.png"
    assert not list((tmp_path / "images").glob("00001_*"))
    for kwargs in ({"count": 0}, {"count": 1, "size": 4}, {"count": 1, "val_fraction": 0.6, "test_fraction": 0.5}, {"count": 1, "directions": ["sideways"]}):
        with pytest.raises(UsageError):
            generate(tmp_path / "x", **kwargs)  # type: ignore[arg-type]


runner = CliRunner()


def test_cli_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = runner.invoke(app, ["dataset", "synth", str(out), "--count", "4", "--size", "32", "--seed", "3", "--json", "--workers", "1"], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["scenes"] == 4 and summary["pairs"] == 40 and summary["size"] == 32 and summary["seed"] == 3
    assert Path(summary["manifest"]) == out / "manifest.jsonl" and sum(summary["splits"].values()) == 4
    assert len(read_manifest(out / "manifest.jsonl")) == 40
    assert Image.open(out / "images" / "00003_top-left.png").size == (32, 32)

    again = runner.invoke(app, ["dataset", "synth", str(out), "--count", "4", "--size", "32"], env={"NO_COLOR": "1"})
    assert again.exit_code == 1 and again.stdout == ""
    assert again.stderr.count("\n") == 1 and "not empty" in again.stderr and "--overwrite" in again.stderr

    plain = runner.invoke(app, ["dataset", "synth", str(out), "-n", "2", "-s", "16", "--overwrite", "-j", "1", "--photo-like", "0.5"], env={"NO_COLOR": "1"})
    assert plain.exit_code == 0 and plain.stdout == "" and "wrote 2 scenes" in plain.stderr
    assert len(read_manifest(out / "manifest.jsonl")) == 20
    assert json.loads((out / "dataset.json").read_text())["photo_like"] == 0.5

    bad = runner.invoke(app, ["dataset", "synth", str(tmp_path / "y"), "--val-fraction", "0.5", "--test-fraction", "0.5"], env={"NO_COLOR": "1"})
    assert bad.exit_code == 2 and "must leave scenes for training" in bad.stderr
