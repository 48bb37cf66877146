"""The distillation engine: generator, composition, loop, full-size layers, and whole `shade`/`colorize` runs
with a tiny Stable Diffusion of the real architecture loaded from disk like a user's --model PATH."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from psd_tools import PSDImage
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.blend import composite
from lasagna_core.distill import compose, distill, neutral_distance
from lasagna_core.document import read_layer_tree
from lasagna_core.errors import UsageError
from lasagna_core.generator import START_MARGIN, LayerGenerator
from lasagna_core.edit import run_edit
from lasagna_core.priors.base import Condition
from lasagna_core.resample import guided_upsample, resize
from lasagna_core.templates import DistillSettings, load_template, parse_template
from tests.conftest import EXAMPLE_PSD, edit_job, gradient_rgb, to_uint8
from tests.oracle_prior import OraclePrior
from tests.tiny_sd import make_tiny_sd

FAST = ["--steps", "3"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "picture.png"
    Image.fromarray(to_uint8(gradient_rgb(48, 64))).save(path)
    return path


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})
    return result.exit_code, result.stdout, result.stderr


# ------------------------------------------------------------------------------------------ generator


@pytest.mark.parametrize("name", ["shade", "shade-divide", "shade-sd", "colorize", "colorize-grey", "colorize-sd", "colorize-multiply"])
def test_generator_starts_at_neutral(name: str) -> None:
    spec = load_template(name)
    outputs = LayerGenerator(spec.layers)(torch.rand(1, 3, 32, 48))
    for layer, out in zip(spec.layers, outputs):
        assert out.color.shape == (1, layer.channels, 32, 48)
        if layer.alpha:
            assert out.alpha is not None and float(out.alpha.detach().max()) <= START_MARGIN + 1e-6
        else:
            assert float((out.color.detach() - layer.neutral).abs().max()) <= START_MARGIN * (layer.high - layer.low) + 1e-6


def test_compose_is_the_psd_blend_of_the_layers() -> None:
    spec = load_template("shade")
    base = torch.rand(1, 3, 8, 8)
    shadows, light = torch.full((1, 1, 8, 8), 0.5), torch.full((1, 1, 8, 8), 0.25)
    from lasagna_core.generator import LayerOutput

    out = compose(base, spec.layers, [LayerOutput(shadows, None), LayerOutput(light, None)])
    expected = 1 - (1 - base * 0.5) * (1 - 0.25)  # multiply, then screen
    torch.testing.assert_close(out, expected)


def test_regulariser_is_zero_at_neutral_and_ignores_outside_mask() -> None:
    spec = load_template("shade")
    from lasagna_core.generator import LayerOutput

    neutral = [LayerOutput(torch.ones(1, 1, 4, 4), None), LayerOutput(torch.zeros(1, 1, 4, 4), None)]
    assert float(neutral_distance(spec.layers, neutral)) == 0.0
    moved = [LayerOutput(torch.full((1, 1, 4, 4), 0.5), None), LayerOutput(torch.zeros(1, 1, 4, 4), None)]
    dead_zone = START_MARGIN  # where the generator starts, the pull stops (saturated logits would go blank)
    assert float(neutral_distance(spec.layers, moved)) == pytest.approx(16 * (0.5 - dead_zone))
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    assert float(neutral_distance(spec.layers, moved, mask)) == pytest.approx(8 * (0.5 - dead_zone))
    resting = [LayerOutput(torch.full((1, 1, 4, 4), 1 - dead_zone / 2), None), LayerOutput(torch.full((1, 1, 4, 4), dead_zone), None)]
    assert float(neutral_distance(spec.layers, resting)) == 0.0


def test_layers_resting_in_the_dead_zone_snap_to_exactly_neutral() -> None:
    """Values the optimisation left within the dead zone are no edit: shade writes them as exact neutrals,
    so untouched pixels stay byte for byte; real edits pass unchanged."""
    spec = load_template("colorize-sd")
    shade = load_template("shade")
    from lasagna_core.distill import snap_to_neutral
    from lasagna_core.generator import LayerOutput

    shadows = torch.tensor([[[[0.995, 0.7]]]])
    light = torch.tensor([[[[0.004, 0.3]]]])
    snapped = snap_to_neutral(shade.layers, [LayerOutput(shadows, None), LayerOutput(light, None)])
    assert snapped[0].color.flatten().tolist() == [1.0, pytest.approx(0.7)]
    assert snapped[1].color.flatten().tolist() == [0.0, pytest.approx(0.3)]
    alpha_layer = next(layer for layer in spec.layers if layer.alpha)
    color = torch.full((1, alpha_layer.channels, 1, 2), 0.5)
    out = snap_to_neutral([alpha_layer], [LayerOutput(color, torch.tensor([[[[0.005, 0.4]]]]))])[0]
    assert out.alpha is not None and out.alpha.flatten().tolist() == [0.0, pytest.approx(0.4)]


def test_loop_trains_the_generator_towards_what_the_prior_wants() -> None:
    spec = load_template("shade")
    base = torch.rand(1, 3, 32, 32)
    target = base * torch.linspace(0.3, 1.0, 32).view(1, 1, 1, 32)  # darker on the left
    losses: list[float] = []
    settings = DistillSettings(steps=60, learning_rate=1e-2, neutral_weight=1e-4, noise_samples=1, t_min=0.5, t_max=0.5)
    generator = distill(base, spec.layers, OraclePrior(target), Condition("", ""), settings,
                        seed=0, on_step=lambda info: losses.append(float(info.sds)))
    assert losses[-1] < 0.2 * losses[0]
    shadows = generator(base)[0].color[0, 0].detach()
    assert float(shadows[:, :8].mean()) < float(shadows[:, -8:].mean()) - 0.3


def test_sds_loss_falls_with_fixed_noise(tiny_model: Path) -> None:
    """With t and noise fixed, the tiny SD prior's SDS residual on the composite gets smaller as G trains."""
    from lasagna_core.priors import PriorSettings, load_prior

    prior = load_prior(PriorSettings(str(tiny_model), device="cpu"))
    spec = load_template("shade")
    base = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    cond = prior.condition("light from the left", base)
    torch.manual_seed(0)
    generator = LayerGenerator(spec.layers)
    optimiser = torch.optim.Adam(generator.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        image = compose(base, spec.layers, generator(base))
        loss = prior.sds_loss(image, cond, guidance=1.0, t_range=(0.5, 0.5), samples=2,
                              generator=torch.Generator().manual_seed(7))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    # noise and t are fixed, so the loss is deterministic and any fall is the generator's doing
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05


class _FlakyPrior(OraclePrior):
    """Returns NaN on the calls listed in `bad` (1-based), a real loss otherwise."""

    def __init__(self, target: torch.Tensor, bad: set[int] | None = None):
        super().__init__(target)
        self.calls, self.bad = 0, bad

    def sds_loss(self, image, cond, **kwargs):
        self.calls += 1
        loss = super().sds_loss(image, cond, **kwargs)
        return loss * float("nan") if self.bad is None or self.calls in self.bad else loss


def test_divergence_rolls_back_and_halves_the_learning_rate() -> None:
    spec = load_template("shade")
    base = torch.rand(1, 3, 16, 16)
    prior = _FlakyPrior(base * 0.5, bad={30})
    steps_seen: list[int] = []
    generator = distill(base, spec.layers, prior, Condition("", ""),
                        DistillSettings(steps=60, noise_samples=1), seed=0, on_step=lambda i: steps_seen.append(i.step))
    assert all(torch.isfinite(p).all() for p in generator.parameters())
    assert steps_seen[-1] == 60 and steps_seen.count(26) == 2  # steps 26..50 were redone after the NaN at 30
    assert prior.calls == 60 + 25


def test_endless_divergence_fails_cleanly() -> None:
    from lasagna_core.errors import DistillationError

    spec = load_template("shade")
    base = torch.rand(1, 3, 16, 16)
    with pytest.raises(DistillationError, match="diverged"):
        distill(base, spec.layers, _FlakyPrior(base), Condition("", ""),
                DistillSettings(steps=30, noise_samples=1), seed=0)


# ------------------------------------------------------------------------------------------ full size


def test_guided_upsampling_puts_layer_edges_on_base_edges() -> None:
    """A shadow that stops at an object's outline must stop at the outline at full size, not blur over it."""
    high = torch.zeros(1, 3, 256, 256)
    high[..., :, 101:] = 1.0  # the object's edge at x = 101, not on the 4x grid
    low = resize(high, (64, 64))
    layer_low = 1.0 - 0.6 * low.mean(1, keepdim=True)  # dark where the object is
    guided = guided_upsample(layer_low, low, high, eps=1e-4)
    bilinear = torch.nn.functional.interpolate(layer_low, size=(256, 256), mode="bilinear", align_corners=False)
    truth = 1.0 - 0.6 * high.mean(1, keepdim=True)
    band = slice(95, 108)
    assert float((guided - truth)[..., band].abs().max()) < 0.05
    assert float((bilinear - truth)[..., band].abs().max()) > 0.2


# ------------------------------------------------------------------------------------------ whole runs


def test_shade_writes_multiply_and_screen_layers(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.psd"
    code, stdout, stderr = cli("shade", str(EXAMPLE_PSD), "-p", "light from the left", "-m", str(tiny_model),
                               "-o", str(out), "--json", *FAST)
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["output"] == str(out) and result["template"] == "shade" and result["seed"] == 0
    psd = PSDImage.open(out)
    top = list(psd)[-2:]
    assert [(l.name, l.blend_mode.name, l.bbox) for l in top] == [
        ("Shadows", "MULTIPLY", (0, 0, 512, 384)), ("Light", "SCREEN", (0, 0, 512, 384))
    ]
    # merged image = new layers over the original merged image, by the project's compositor
    original = PSDImage.open(EXAMPLE_PSD).numpy()
    from lasagna_core.layers import PixelNode

    nodes = [PixelNode("below", np.ascontiguousarray(original.transpose(2, 0, 1)), None), *read_layer_tree(psd)[-2:]]
    expected, _ = composite(nodes, 384, 512)
    assert np.abs(psd.numpy()[..., :3] - expected[0].numpy().transpose(1, 2, 0)).max() <= 1 / 255 + 1e-6
    record = json.loads(out.with_name("out.psd.json").read_text())
    assert record["prompt"] == "light from the left" and record["model"] == str(tiny_model)
    assert record["settings"]["steps"] == 3


def test_colorize_writes_normal_layer_with_alpha(tiny_model: Path, picture: Path) -> None:
    code, _, stderr = cli("colorize", str(picture), "-p", "a colourful painting", "-t", "colorize-sd", "-m", str(tiny_model), *FAST)
    assert code == 0, stderr
    out = picture.with_name("picture.lasagna.psd")
    layers = list(PSDImage.open(out))
    assert [(l.name, l.blend_mode.name) for l in layers] == [("Background", "NORMAL"), ("Colour", "NORMAL")]
    colour = layers[1].numpy()
    assert colour.shape == (48, 64, 4) and float(colour[..., 3].max()) < 0.5  # mostly transparent after 3 steps


def test_colorize_multiply_template(tiny_model: Path, picture: Path, tmp_path: Path) -> None:
    code, _, stderr = cli("colorize", str(picture), "-p", "flat colours", "-t", "colorize-multiply",
                          "-m", str(tiny_model), "-o", str(tmp_path / "flats.psd"), *FAST)
    assert code == 0, stderr
    layer = list(PSDImage.open(tmp_path / "flats.psd"))[-1]
    assert (layer.name, layer.blend_mode.name, layer.numpy().shape[-1]) == ("Flats", "MULTIPLY", 4)


def test_same_seed_same_layer(tiny_model: Path, picture: Path, tmp_path: Path) -> None:
    def layers(seed: int, name: str) -> list[np.ndarray]:
        # guidance strong enough for the tiny model's layers to leave the neutral dead zone in 4 steps
        request = edit_job(picture, "light from the top", model=str(tiny_model), steps=4, guidance=100.0, seed=seed,
                              output=tmp_path / name, device="cpu")
        run_edit(request)
        return [l.numpy() for l in list(PSDImage.open(tmp_path / name))[1:]]

    first, again, other = layers(3, "a.psd"), layers(3, "b.psd"), layers(4, "c.psd")
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other))


def test_variations_are_hidden_alternatives(tiny_model: Path, picture: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.psd"
    run_edit(edit_job(picture, "light from the top", model=str(tiny_model), steps=2, variations=2, output=out))
    assert [(l.name, l.visible) for l in PSDImage.open(out)] == [
        ("Background", True), ("Shadows", True), ("Light", True), ("Shadows v2", False), ("Light v2", False)
    ]


def test_transparent_base_confines_the_layer(tiny_model: Path, tmp_path: Path) -> None:
    pixels = to_uint8(gradient_rgb(48, 64))
    alpha = np.zeros((48, 64), np.uint8)
    alpha[8:40, 16:48] = 255
    Image.fromarray(np.dstack([pixels, alpha]), "RGBA").save(tmp_path / "cut.png")
    out = tmp_path / "cut.psd"
    run_edit(edit_job(tmp_path / "cut.png", "light from the left", model=str(tiny_model), steps=3, output=out))
    shadows, light = [l.numpy()[..., 0] for l in list(PSDImage.open(out))[1:]]
    outside = alpha == 0
    assert np.all(shadows[outside] == 1.0) and np.all(light[outside] == 0.0)


def test_layer_base_gets_clipped_layers_neutral_outside(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.psd"
    run_edit(edit_job(EXAMPLE_PSD, "light from the left", layer="Orange", model=str(tiny_model), steps=3, output=out))
    psd = PSDImage.open(out)
    objects = [l for l in psd if l.name == "Objects"][0]
    assert [(l.name, l.clipping) for l in objects] == [
        ("Vase", False), ("Orange", False), ("Shadows", True), ("Light", True), ("Lime", False), ("Cup", False)
    ]
    shadows = [l for l in objects if l.name == "Shadows"][0].numpy()[..., 0]
    orange = [l for l in objects if l.name == "Orange"][0]
    left, top, right, bottom = orange.bbox
    assert np.all(shadows[:top] == 1.0) and np.all(shadows[bottom:] == 1.0)


def test_user_template_file(tiny_model: Path, picture: Path, tmp_path: Path) -> None:
    template = tmp_path / "glow.toml"
    template.write_text('name = "glow"\nprompt = "{prompt}, glowing"\n[defaults]\nsteps = 2\n'
                        '[[layers]]\nname = "Glow"\nblend_mode = "linear-dodge"\nneutral = 0.0\n')
    code, stdout, stderr = cli("shade", str(picture), "-p", "neon", "-t", str(template), "-m", str(tiny_model),
                               "-o", str(tmp_path / "g.psd"), "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["rendered_prompt"] == "neon, glowing"
    assert list(PSDImage.open(tmp_path / "g.psd"))[-1].blend_mode.name == "LINEAR_DODGE"


@pytest.mark.parametrize(
    "text,message",
    [
        ('name = "x"\n', "at least one [[layers]]"),
        ('name = "x"\nprompt = "no placeholder"\n[[layers]]\nname = "a"\nblend_mode = "multiply"\nneutral = 1.0\n', "placeholder"),
        ('name = "x"\n[[layers]]\nname = "a"\nblend_mode = "sparkle"\nneutral = 1.0\n', "unknown blend mode 'sparkle'"),
        ('name = "x"\n[[layers]]\nname = "a"\nblend_mode = "multiply"\nneutral = 2.0\n', "neutral inside the range"),
        ('name = "x"\n[defaults]\nstep = 3\n[[layers]]\nname = "a"\nblend_mode = "multiply"\nneutral = 1.0\n', "unknown [defaults] keys: step"),
        ("name = [", "not valid TOML"),
    ],
)
def test_bad_templates_are_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_template(text, "my.toml")


def test_cli_errors_are_one_line(tiny_model: Path, picture: Path, tmp_path: Path) -> None:
    cases = [
        (["shade", str(picture), "-p", "x", "-m", str(tmp_path / "no-model")], "no-model"),
        (["shade", str(picture), "-p", "x", "-t", "nope"], "unknown template 'nope'"),
        (["shade", str(picture), "-p", "x", "--device", "tpu"], "--device must be one of"),
        (["shade", str(picture), "-p", "  ", "-m", str(tiny_model)], "--prompt is empty"),
        # with no prompt, a model that can't load is the error to hear, not the prompt its guessed family wants
        (["colorize", str(picture), "-m", str(tmp_path)], f"Model file missing: '{tmp_path / 'model_index.json'}'"),
        (["colorize", str(picture), "-m", str(tmp_path / "nope" / "x")], "does not exist"),
        (["shade", str(tmp_path / "missing.png"), "-p", "x", "-m", str(tiny_model)], "no such file"),
        (["shade", str(picture), "-p", "x", "-m", str(tiny_model), "-o", str(picture)], "refusing to overwrite the input"),
    ]
    before = picture.read_bytes()
    for args, message in cases:
        code, out, err = cli(*args, *FAST)
        lines = err.strip().splitlines()
        assert code != 0 and len(lines) == 1 and message in lines[0], (args, err)
    assert picture.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picture.png"]


def test_templates_command_lists_builtins() -> None:
    code, out, _ = cli("templates", "--json")
    assert code == 0
    names = {t["name"]: t for t in json.loads(out)}
    assert {"shade", "shade-divide", "shade-sd", "colorize", "colorize-grey", "colorize-sd", "colorize-multiply"} <= set(names)
    assert [l["blend_mode"] for l in names["shade"]["layers"]] == ["multiply", "screen"]
    assert [l["blend_mode"] for l in names["shade-divide"]["layers"]] == ["multiply", "divide"]


def test_empty_mask_is_refused_before_the_model_is_loaded(picture: Path, tmp_path: Path) -> None:
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(tmp_path / "black.png")
    code, _, err = cli("shade", str(picture), "-p", "light from the left", "--mask", str(tmp_path / "black.png"),
                       "-m", str(tmp_path / "no-such-model"), "-o", str(tmp_path / "out.psd"))
    assert code == 1 and err.strip() == "error: black.png: all black, so there is nothing to edit"
    Image.new("RGBA", (64, 48), (255, 255, 255, 0)).save(tmp_path / "clear.png")  # white, but fully transparent
    code, _, err = cli("shade", str(picture), "-p", "light from the left", "--mask", str(tmp_path / "clear.png"),
                       "-m", str(tmp_path / "no-such-model"), "-o", str(tmp_path / "out.psd"))
    assert code == 1 and err.strip() == "error: clear.png: fully transparent, so there is nothing to edit"
    assert not (tmp_path / "out.psd").exists()
