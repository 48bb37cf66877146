"""Offline colouring: colour words, line-art data from the tests' own emoji packages, the colouring prior's file
and conditioning, its trainer, and `lasagna colorize` with no prompt and no model argument (flats on a
Multiply layer, hints from a file or a Hints layer, a Color layer for greyscale pictures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from psd_tools import PSDImage

from lasagna_core.color_words import COLOR_WORDS, color_words_in, nearest_color_word
from lasagna_core.flatart.coloring import generate, read_region_ids
from lasagna_core.flatart.line_art import STYLES, draw_lines
from lasagna_core.labelling import boundaries
from lasagna_core.guides import is_line_art
from lasagna_core.priors import pixel_file
from lasagna_core.priors.builtin import BuiltinPrior
from lasagna_core.priors.builtin_color import BuiltinColorPrior, color_channels, hints_at
from lasagna_core.priors.catalog import family_for
from lasagna_core.priors.schedule import NoiseSchedule
from lasagna_core.train.color import ColorConfig, color_batch, load_color_pairs, read_color_manifest, train_color
from tests.relight_data import TINY_UNET_KW
from tests.test_flat_art import write_fluent, write_twemoji
from tests.test_engine import cli

SIZE = 32


def test_color_words_in_order_with_synonyms():
    assert color_words_in("a Crimson kite with navy and GOLD stripes") == ["red", "blue", "yellow"]
    assert color_words_in("light from the left") == []
    for name, word in COLOR_WORDS.items():
        assert nearest_color_word(np.array(word.rgb)) == name
    assert nearest_color_word(np.array([0.9, 0.1, 0.12])) == "red"


def test_lines_follow_region_edges():
    regions = np.full((40, 40), -1, np.int32)
    regions[8:32, 8:32] = 1
    regions[8:32, 20:32] = 2
    ink = draw_lines(regions, STYLES["ink"], np.random.default_rng(0))
    assert ink[20, 8] > 0.8 and ink[20, 20] > 0.8 and ink[20, 19] > 0.8  # outline and the inner border
    assert ink[20, 14] == 0 and ink[2, 2] == 0  # inside a region, and the paper
    assert boundaries(regions).sum() > 0 and not boundaries(np.zeros((5, 5), np.int32)).any()
    gappy = draw_lines(regions, STYLES["gaps"], np.random.default_rng(0))
    assert (gappy[boundaries(regions)] == 0).sum() > 0  # some edge pixels left blank


@pytest.fixture(scope="module")
def line_art_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lineart")
    sources = [write_fluent(root / "fluent"), write_twemoji(root / "twemoji")]
    generate(sources, root / "data", count=8, size=SIZE, supersample=2, val_fraction=0.2, test_fraction=0.2)
    return root / "data"


def test_line_art_data_set(line_art_data: Path):
    lines = [json.loads(l) for l in (line_art_data / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 8 * (len(STYLES) + 1)
    assert {l["kind"] for l in lines} == {"line-art", "greyscale"}
    by_design: dict[str, set[str]] = {}
    for l in lines:
        by_design.setdefault(l["design"].split("/")[1], set()).add(l["split"])
    assert all(len(s) == 1 for s in by_design.values())  # no design in two splits
    apple = next(l for l in lines if l["design"] == "fluent-emoji-flat/red-apple" and l["kind"] == "line-art")
    assert apple["color"] == "red"  # the apple's largest region is its red body
    flats = np.asarray(Image.open(line_art_data / apple["target"]).convert("RGB"), np.float32) / 255
    guide = np.asarray(Image.open(line_art_data / apple["input"]).convert("L"), np.float32) / 255
    ids = read_region_ids(line_art_data / apple["regions"])
    assert ids.shape == guide.shape and ids.max() >= 2
    assert guide.min() < 0.4 and np.median(guide) > 0.9  # dark lines on paper
    assert (np.abs(flats[ids == 0] - 1).max(1) < 0.05).mean() > 0.9  # the paper is white in the truth (but at its edge)
    grey = next(l for l in lines if l["scene"] == apple["scene"] and l["kind"] == "greyscale")
    lum = np.asarray(Image.open(line_art_data / grey["input"]).convert("L"), np.float32) / 255
    assert np.abs(lum - flats @ np.array([0.3, 0.59, 0.11], np.float32)).max() < 2 / 255


def test_training_batch_hints_take_the_truths_colour(line_art_data: Path):
    pairs = load_color_pairs(read_color_manifest(line_art_data, "train"), SIZE)
    config = ColorConfig(batch_size=12, size=SIZE, no_hints=0.0, class_dropout=0.0, guide_dropout=0.0, flip=False)
    idx = torch.arange(12) % pairs.guides.shape[0]
    batch = color_batch(pairs, config, NoiseSchedule.from_config(pixel_file.default_scheduler_config()),
                        torch.Generator().manual_seed(0), idx)
    assert batch["input"].shape == (12, 8, SIZE, SIZE)
    mask = batch["input"][:, 7:8]
    assert bool((mask.flatten(1).sum(1) > 0).all())
    hinted = (batch["input"][:, 4:7] + 1) / 2
    flats = pairs.flats[idx].float() / 255
    assert float(((hinted - flats).abs() * mask).max()) < 1e-5
    dropped = color_batch(pairs, ColorConfig(batch_size=12, size=SIZE, guide_dropout=1.0),
                          NoiseSchedule.from_config(pixel_file.default_scheduler_config()), torch.Generator().manual_seed(0), idx)
    assert float(dropped["input"][:, 3:].abs().max()) == 0.0  # neither guide nor hints: the unconditional row's input


def test_paper_inside_a_ring_weighs_hole_weight_times_in_the_loss(tmp_path: Path):
    """A ring's hole is a closed region in the line art that stays paper: it is weighted, the paper around not."""
    from lasagna_core.train.denoiser import weighted_mse

    size = 32
    ys, xs = np.mgrid[0:size, 0:size]
    distance = np.hypot(ys - 15.5, xs - 15.5)
    ring = (distance >= 6) & (distance < 11)
    (tmp_path / "images").mkdir()
    Image.fromarray(ring.astype(np.uint16)).save(tmp_path / "images/0_regions.png")
    flats = np.where(ring[..., None], [200, 40, 40], 255).astype(np.uint8)
    Image.fromarray(flats).save(tmp_path / "images/0_flats.png")
    Image.fromarray(np.full((size, size), 255, np.uint8)).save(tmp_path / "images/0_ink.png")
    (tmp_path / "manifest.jsonl").write_text(json.dumps({
        "input": "images/0_ink.png", "kind": "line-art", "target": "images/0_flats.png", "split": "train",
        "scene": "0", "regions": "images/0_regions.png"}) + "\n")
    pairs = load_color_pairs(read_color_manifest(tmp_path, "train"), size)
    holes = pairs.holes[0, 0]
    assert bool(holes[distance < 5].all()) and not bool(holes[distance >= 6].any())
    config = ColorConfig(batch_size=1, size=size, hole_weight=10.0)
    batch = color_batch(pairs, config, NoiseSchedule.from_config(pixel_file.default_scheduler_config()),
                        torch.Generator().manual_seed(0), torch.zeros(1, dtype=torch.long))
    weight = batch["weight"][0, 0]
    assert set(weight[distance < 5].tolist()) == {10.0} and set(weight[distance >= 6].tolist()) == {1.0}
    error = torch.zeros_like(batch["target"])
    error[..., 15, 15] = 1.0  # one wrong pixel in the hole counts ten times
    assert float(weighted_mse(batch["target"] + error, batch)) == pytest.approx(10 * 3 / error.numel())


def test_hints_at_working_size_keep_a_small_dots_colour():
    hints = torch.zeros(1, 4, 64, 64)
    hints[0, :3, 8:12, 8:12] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]
    hints[0, 3, 8:12, 8:12] = 1
    rgb, mask = hints_at(hints, (16, 16))
    assert mask.sum() == 1 and mask[0, 0, 2, 2] == 1 and mask[0, 0, 3, 3] == 0
    assert torch.allclose(rgb[0, :, 2, 2], torch.tensor([0.9, 0.2, 0.1]), atol=1e-5)
    channels = color_channels(torch.ones(1, 1, 16, 16), rgb, mask)
    assert channels.shape == (1, 5, 16, 16) and float(channels[0, 4].sum()) == 1.0


@pytest.fixture(scope="module")
def color_weights(line_art_data: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("colorprior") / "color.safetensors"
    from lasagna_core.priors.builtin_color import default_unet_config

    config = ColorConfig(steps=4, batch_size=4, size=SIZE, warmup=1, checkpoint_every=2,
                         unet={**default_unet_config(SIZE), **TINY_UNET_KW})
    result = train_color(line_art_data, out, config)
    assert result.finished and result.steps_done == 4
    return out


def test_color_fine_tune_keeps_the_start_and_may_change_the_size(color_weights: Path, line_art_data: Path, tmp_path):
    config = ColorConfig(steps=2, batch_size=4, size=2 * SIZE, warmup=1, learning_rate=0.0, init=str(color_weights))
    bigger = BuiltinColorPrior.load(str(train_color(line_art_data, tmp_path / "big.safetensors", config).output))
    start = BuiltinColorPrior.load(str(color_weights))
    assert start.resolution == SIZE and bigger.resolution == 2 * SIZE
    for (k, x), (_, y) in zip(start.unet.state_dict().items(), bigger.unet.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), k


def test_color_prior_file_is_its_own_family(color_weights: Path):
    assert pixel_file.file_task(color_weights) == "color"
    assert family_for(str(color_weights)).name == "color"
    assert family_for("builtin-color").name == "color" and family_for("builtin").name == "builtin"
    with pytest.raises(Exception, match="not a Lasagna built-in relighting prior"):
        BuiltinPrior.load(str(color_weights))
    prior = BuiltinColorPrior.load(str(color_weights))
    assert prior.classes == list(COLOR_WORDS) and prior.resolution == SIZE
    cond = prior.condition("a blue bird with a red beak", torch.ones(1, 3, SIZE, SIZE))
    assert cond.classes.tolist() == [prior.null_class, list(COLOR_WORDS).index("blue")]
    assert prior.condition("", torch.ones(1, 3, SIZE, SIZE)).classes.tolist() == [prior.null_class] * 2
    seen = []
    predict = prior.predict
    prior.predict = lambda noisy, t, channels, classes: seen.append(channels) or predict(noisy, t, channels, classes)
    prior.sds_loss(torch.rand(1, 3, SIZE, SIZE), cond, guidance=5.0)
    rows = seen[0].chunk(3)  # uncond, the prompt's row, the pictures alone (for the colour word's guidance)
    assert float(rows[0].abs().max()) == 0.0 and float(rows[1].abs().max()) > 0  # uncond drops the guide too
    assert torch.equal(rows[1], rows[2])
    prior.predict = predict
    sample = prior.sample(torch.ones(2, 3, SIZE, SIZE), ["red", ""], steps=2)
    assert sample.shape == (2, 3, SIZE, SIZE) and 0 <= float(sample.min()) and float(sample.max()) <= 1


def test_word_guidance_pushes_the_prompt_row_further_along_what_the_colour_word_adds(color_weights: Path):
    """eps_cond = eps(pictures, word) + w (eps(pictures, word) - eps(pictures, no word)); without a colour word
    the prior runs its two rows only."""
    prior = BuiltinColorPrior.load(str(color_weights), BuiltinColorPrior.Config(word_guidance=2.0))
    base = torch.rand(1, 3, SIZE, SIZE)
    cond = prior.condition("a red drawing", base)
    noisy, t = torch.randn(1, 3, SIZE, SIZE), torch.tensor([500])
    eps_u, eps_c = prior.predict_noise(noisy, t, cond)
    null = torch.tensor([prior.null_class])
    full = prior.predict(noisy, t, cond.channels, cond.classes[1:])
    pictures = prior.predict(noisy, t, cond.channels, null)
    assert torch.allclose(eps_c, full + 2.0 * (full - pictures), atol=1e-5)
    assert torch.allclose(eps_u, prior.predict(noisy, t, torch.zeros_like(cond.channels), null), atol=1e-5)
    plain = BuiltinColorPrior.load(str(color_weights), BuiltinColorPrior.Config(word_guidance=0.0))
    assert torch.allclose(plain.predict_noise(noisy, t, cond)[1], full, atol=1e-5)
    calls = []
    predict = prior.predict
    prior.predict = lambda noisy, t, channels, classes: calls.append(len(classes)) or predict(noisy, t, channels, classes)
    prior.predict_noise(noisy, t, prior.condition("a cat", base))
    assert calls == [2]


def test_word_guidance_flag_reaches_only_the_colouring_prior(color_weights: Path, tmp_path: Path):
    sketch = _sketch(tmp_path / "sketch.png")
    code, _, stderr = cli("colorize", str(sketch), "-o", str(tmp_path / "a.psd"), "-m", str(color_weights),
                          "-p", "a red drawing", "--word-guidance", "0", *FAST, "--json")
    assert code == 0, stderr
    assert json.loads((tmp_path / "a.psd.json").read_text())["prior_options"] == {"word_guidance": 0.0}
    code, _, stderr = cli("shade", str(sketch), "-p", "light from the left", "--word-guidance", "2")
    assert code != 0 and "--word-guidance" in stderr and "Traceback" not in stderr


def _sketch(path: Path, size: int = 96, gap: bool = False) -> Path:
    """Two boxes side by side in black ink on white: three closed regions plus the paper (with `gap`, the
    left box is open to the paper by a pen lift)."""
    image = np.ones((size, size, 3), np.float32)
    lines = np.zeros((size, size), bool)
    q = size // 8
    lines[2 * q:6 * q, 2 * q:2 * q + 2] = lines[2 * q:6 * q, 6 * q - 2:6 * q] = True
    lines[2 * q:2 * q + 2, 2 * q:6 * q] = lines[6 * q - 2:6 * q, 2 * q:6 * q] = True
    lines[2 * q:6 * q, 4 * q - 1:4 * q + 1] = True
    if gap:  # a 3 px pen lift in the left box's outer side
        lines[4 * q - 1:4 * q + 2, 2 * q:2 * q + 2] = False
    image[lines] = 0.05
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    return path


FAST = ["--steps", "3"]


def test_colorize_with_no_prompt_writes_flats_inside_the_lines(color_weights: Path, tmp_path: Path):
    sketch = _sketch(tmp_path / "sketch.png")
    out = tmp_path / "out.psd"
    code, _, stderr = cli("colorize", str(sketch), "-o", str(out), "-m", str(color_weights), *FAST)
    assert code == 0, stderr
    psd = PSDImage.open(out)
    flats = [l for l in psd if l.name == "Flats"]
    assert len(flats) == 1 and flats[0].blend_mode.name == "MULTIPLY"
    pixels = flats[0].numpy()[..., :3]
    q = 96 // 8
    left, right = pixels[3 * q:5 * q, 2 * q + 4:4 * q - 3], pixels[3 * q:5 * q, 4 * q + 3:6 * q - 4]
    for region in (left, right):
        assert np.ptp(region.reshape(-1, 3), axis=0).max() < 1e-6  # one flat colour per closed region
    assert np.abs(pixels[:q, :q] - 1).max() < 1e-6  # the paper outside the drawing is left alone (white = neutral)


def test_colorize_hints_file_sets_the_region_colour(color_weights: Path, tmp_path: Path):
    sketch = _sketch(tmp_path / "sketch.png")
    hints = np.zeros((96, 96, 4), np.uint8)
    hints[40:46, 30:36] = (30, 200, 60, 255)  # a green dot in the left box
    Image.fromarray(hints, "RGBA").save(tmp_path / "hints.png")
    out = tmp_path / "out.psd"
    code, _, stderr = cli("colorize", str(sketch), "-o", str(out), "--hints", str(tmp_path / "hints.png"),
                          "-m", str(color_weights), *FAST, "--json")
    assert code == 0, stderr
    pixels = next(l for l in PSDImage.open(out) if l.name == "Flats").numpy()[..., :3]
    assert np.abs(pixels[48, 30] - np.array([30, 200, 60]) / 255).max() < 2 / 255
    assert json.loads(out.with_name(out.name + ".json").read_text())["hints"] == "hints.png"


def test_each_seed_starts_its_flats_from_its_own_sample_of_the_prior(color_weights: Path, tmp_path: Path):
    """The template's `[generator] sample_steps`: a seed's region colours begin at the region medians of one
    direct sample of the prior (made with that seed), so variations differ; without it, at mid grey."""
    from dataclasses import replace

    from lasagna_core.edit import Distillation
    from lasagna_core.flats import INK_THRESHOLD, find_regions, region_medians
    from lasagna_core.priors import PriorSettings, load_prior
    from lasagna_core.resample import resize
    from lasagna_core.templates import load_template

    prior = load_prior(PriorSettings(str(color_weights), device="cpu"))
    spec = load_template("colorize")
    assert spec.generator.sample_steps > 0
    settings = replace(spec.defaults, steps=1, learning_rate=1e-9)  # one step that moves nothing: the start itself
    picture = np.asarray(Image.open(_sketch(tmp_path / "sketch.png")), np.float32).transpose(2, 0, 1) / 255
    base = torch.from_numpy(picture)[None]
    regions = find_regions(picture)
    inside = [(48, 36), (48, 60)]  # the two boxes' rooms
    run = Distillation(prior, spec, settings, base, "")
    first, again, second = (run.layers(seed)[0].color[0] for seed in (0, 0, 1))
    sample = prior.sample(resize(base, prior.working_size(96, 96)), [""], steps=spec.generator.sample_steps,
                          guidance=settings.guidance, generator=torch.Generator().manual_seed(0))
    medians = region_medians(resize(sample, (96, 96))[0].numpy(), regions.labels, regions.ink < INK_THRESHOLD, regions.count)
    for y, x in inside:
        assert np.abs(first[:, y, x].numpy() - medians[regions.labels[y, x]]).max() < 1e-3
    assert torch.equal(first, again)
    assert max((first[:, y, x] - second[:, y, x]).abs().max() for y, x in inside) > 0.02
    grey = Distillation(prior, replace(spec, generator=replace(spec.generator, sample_steps=0)), settings, base, "")
    start = grey.layers(0)[0].color[0]
    for y, x in inside:
        assert torch.allclose(start[:, y, x], torch.full((3,), 0.5), atol=1e-3)


def test_close_gaps_says_how_wide_a_pen_lift_is_sealed(color_weights: Path, tmp_path: Path):
    sketch = _sketch(tmp_path / "sketch.png", gap=True)
    q = 96 // 8
    # the default gap here is 2 px (2% of the 96 px side, under two widths of the 2 px lines): too narrow
    for flag, sealed in ((("--close-gaps", "4"), True), ((), False), (("--close-gaps", "0"), False)):
        out = tmp_path / f"out{len(flag)}.psd"
        code, _, stderr = cli("colorize", str(sketch), "-o", str(out), "-m", str(color_weights), *FAST, *flag)
        assert code == 0, stderr
        pixels = next(l for l in PSDImage.open(out) if l.name == "Flats").numpy()[..., :3]
        left = pixels[3 * q:5 * q, 2 * q + 4:4 * q - 3].reshape(-1, 3)
        assert np.ptp(left, axis=0).max() < 1e-6  # one flat either way
        assert (np.abs(left - 1).max() > 0.1) == sealed  # unsealed, the box is the paper around: left white
        record = json.loads(out.with_name(out.name + ".json").read_text())
        assert record["close_gaps"] == (int(flag[1]) if flag else 2)


def test_close_gaps_is_refused_where_no_flats_are_painted(tmp_path: Path):
    sketch = _sketch(tmp_path / "sketch.png")
    code, _, stderr = cli("shade", str(sketch), "-p", "light from the left", "--close-gaps", "3")
    assert code == 2 and "--close-gaps: template 'shade' paints no flats" in stderr and "Traceback" not in stderr
    assert stderr.strip().count("\n") == 0 and not (tmp_path / "sketch.lasagna.psd").exists()


def test_hints_are_refused_for_a_prior_without_them(tmp_path: Path):
    sketch = _sketch(tmp_path / "sketch.png")
    hints = np.zeros((96, 96, 4), np.uint8)
    hints[40:46, 30:36] = 255
    Image.fromarray(hints, "RGBA").save(tmp_path / "hints.png")
    code, _, stderr = cli("shade", str(sketch), "-p", "light from the left", "--hints", str(tmp_path / "hints.png"))
    assert code != 0 and "takes no colour hints" in stderr and "Traceback" not in stderr
    assert stderr.strip().count("\n") == 0 and not (tmp_path / "sketch.lasagna.psd").exists()


def test_hints_of_the_wrong_size_are_refused(color_weights: Path, tmp_path: Path):
    sketch = _sketch(tmp_path / "sketch.png")
    Image.fromarray(np.zeros((10, 10, 4), np.uint8), "RGBA").save(tmp_path / "hints.png")
    code, _, stderr = cli("colorize", str(sketch), "--hints", str(tmp_path / "hints.png"), "-m", str(color_weights))
    assert code != 0 and "is 10x10 but the document is 96x96" in stderr


def test_greyscale_picture_gets_a_color_layer(color_weights: Path, tmp_path: Path):
    rows = np.linspace(0.2, 0.9, 96, dtype=np.float32)
    grey = np.repeat(np.repeat(rows[:, None], 96, 1)[..., None], 3, 2)
    Image.fromarray(np.round(grey * 255).astype(np.uint8)).save(tmp_path / "grey.png")
    assert not is_line_art(np.moveaxis(grey, 2, 0))
    out = tmp_path / "grey.psd"
    code, _, stderr = cli("colorize", str(tmp_path / "grey.png"), "-o", str(out), "-m", str(color_weights), *FAST)
    assert code == 0, stderr
    layers = {l.name: l for l in PSDImage.open(out)}
    assert layers["Colour"].blend_mode.name == "COLOR"


def test_line_art_check():
    sketch = np.ones((3, 200, 200), np.float32)
    sketch[:, 50:150, 50:53] = 0
    sketch[:, 50:53, 50:150] = 0
    assert is_line_art(sketch)
    filled = np.ones((3, 200, 200), np.float32)
    filled[:, 50:150, 50:150] = 0.4
    assert not is_line_art(filled)


def _layered(tmp_path: Path, *, hints: bool, transparent_lines: bool) -> Path:
    """A PSD: a white Paper layer, a Lines layer (two boxes; transparent around the ink if asked) and,
    if asked, a Hints layer with a green dot in the left box."""
    sketch = np.asarray(Image.open(_sketch(tmp_path / "lines.png")).convert("RGB"))
    psd = PSDImage.new("RGB", (96, 96))
    psd.create_pixel_layer_from_array(np.full((96, 96, 3), 255, np.uint8), name="Paper")
    if transparent_lines:
        ink = (sketch[..., :1] < 128).astype(np.uint8) * 255
        lines = np.concatenate([np.zeros_like(sketch), ink], axis=2)
    else:
        lines = sketch
    psd.create_pixel_layer_from_array(np.ascontiguousarray(lines), name="Lines")
    if hints:
        dot = np.zeros((96, 96, 4), np.uint8)
        dot[40:46, 30:36] = (30, 200, 60, 255)
        psd.create_pixel_layer_from_array(dot, name="Hints")
    path = tmp_path / "layered.psd"
    psd.save(path)
    return path


def test_hints_layer_is_read_and_kept_hidden(color_weights: Path, tmp_path: Path):
    source = _layered(tmp_path, hints=True, transparent_lines=False)
    out = tmp_path / "out.psd"
    code, _, stderr = cli("colorize", str(source), "-o", str(out), "-m", str(color_weights), *FAST)
    assert code == 0, stderr
    layers = {l.name: l for l in PSDImage.open(out)}
    assert not layers["Hints"].visible and layers["Lines"].visible
    flats = layers["Flats"].numpy()[..., :3]
    assert np.abs(flats[48, 30] - np.array([30, 200, 60]) / 255).max() < 2 / 255
    merged = np.asarray(PSDImage.open(out).topil().convert("RGB"), np.float32) / 255
    assert np.abs(merged[42, 32] - flats[42, 32]).max() < 2 / 255  # the merged image shows the flat, not the dot layer


def test_flats_go_beneath_a_line_art_layer(color_weights: Path, tmp_path: Path):
    source = _layered(tmp_path, hints=False, transparent_lines=True)
    out = tmp_path / "out.psd"
    code, _, stderr = cli("colorize", str(source), "-o", str(out), "--layer", "Lines", "-m", str(color_weights), *FAST)
    assert code == 0, stderr
    names = [l.name for l in PSDImage.open(out)]
    assert names == ["Paper", "Flats", "Lines"]  # bottom to top: directly beneath the line art
    flats = next(l for l in PSDImage.open(out) if l.name == "Flats")
    assert not flats.clipping and flats.blend_mode.name == "MULTIPLY"
    pixels = flats.numpy()[..., :3]
    q = 96 // 8
    region = pixels[3 * q:5 * q, 2 * q + 4:4 * q - 3]
    assert np.ptp(region.reshape(-1, 3), axis=0).max() < 1e-6  # the line layer's transparent paper is coloured as one region


def test_shipped_colouring_prior_is_the_offline_default(tmp_path: Path):
    """A fresh install colours line art with no prompt and no model: the shipped weights load (SHA-256
    checked), are small enough to ship, and `colorize` writes flats with them."""
    from lasagna_core.priors import PriorSettings, load_prior
    from lasagna_core.templates import load_template

    prior = load_prior(PriorSettings("builtin-color", device="cpu"))
    assert isinstance(prior, BuiltinColorPrior) and prior.resolution == 64 and prior.classes == list(COLOR_WORDS)
    assert BuiltinColorPrior.shipped().stat().st_size <= 30 * 1024 * 1024
    assert load_template("colorize").model == "builtin-color"
    out = tmp_path / "out.psd"
    code, _, stderr = cli("colorize", str(_sketch(tmp_path / "sketch.png")), "-o", str(out), "--steps", "5")
    assert code == 0, stderr
    layers = {l.name: l for l in PSDImage.open(out)}
    assert layers["Flats"].blend_mode.name == "MULTIPLY"


def test_the_example_sketch_is_line_art():
    """`make demo` colours examples/sketch.png: 4 px anti-aliased strokes at 512 px must read as line art."""
    from lasagna_core.document import load

    root = Path(__file__).resolve().parents[1] / "examples"
    assert is_line_art(load(root / "sketch.png").base)
    assert not is_line_art(load(root / "still-life.psd").base)


def test_eval_on_colouring_data_scores_every_method(color_weights: Path, line_art_data: Path, tmp_path: Path):
    md, js, pictures = tmp_path / "c.md", tmp_path / "c.json", tmp_path / "pics"
    code, _, err = cli("eval", "--data", str(line_art_data), "--split", "train", "--limit", "1", "--model", str(color_weights),
                       "--steps", "2", "--direct-steps", "2", "--out", str(md), "--out", str(js), "--pictures", str(pictures))
    assert code == 0, err
    summary = json.loads(js.read_text())["summary"]
    assert set(summary) == {"lasagna", "lasagna+hints", "flood fill", "direct", "lasagna+word", "lasagna (greyscale)"}
    # the flats fix each hinted region at its hint's colour, as the flood fill does: the same hint scores
    assert summary["lasagna+hints"]["hints_within_5"] == summary["flood fill"]["hints_within_5"]
    assert 0.0 <= summary["lasagna"]["crossing"] <= 1.0 and summary["lasagna (greyscale)"]["lightness_drift"] >= 0.0
    row = next(line for line in md.read_text().splitlines() if line.startswith("| lasagna |"))
    assert row.split("|")[4].strip() == f"{100 * summary['lasagna']['crossing']:.2f}%"  # two decimals: its bar is 0.5%
    sheet = np.asarray(Image.open(pictures / "coloring.png"))
    assert sheet.shape[:2] == (SIZE, 5 * SIZE)  # line art | flats | flats with hint dots | flood fill | truth
