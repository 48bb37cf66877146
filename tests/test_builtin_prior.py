"""The built-in pixel-space relighting prior: file format, SHA-256 check, the SDS interface, prompt parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lasagna_core.errors import ModelError, UsageError
from lasagna_core.priors import PriorSettings, load_prior
from lasagna_core.priors import builtin
from lasagna_core.priors import pixel_file
from lasagna_core.priors.builtin import BuiltinPrior
from lasagna_core.priors.pixel_file import save_weights
from tests.relight_data import tiny_unet

SIZE = 16
DIRS = ["left", "right", "top", "bottom"]


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert text and "\n" not in text and "Traceback" not in text
    return text


def _weights_file(path: Path, **architecture) -> Path:
    """A tiny relighting prior's weights file (seeded), with `architecture` overriding the tiny U-Net's."""
    torch.manual_seed(0)
    unet = pixel_file.new_unet({**tiny_unet(SIZE, len(DIRS)), **architecture})
    return save_weights(unet, path, task="relight", classes=DIRS, scheduler_config=pixel_file.default_scheduler_config(), training={"steps": 0})


def _shade_a_photo(tmp_path: Path, prompt: str, weights: Path, name: str = "photo"):
    """`lasagna shade` of a small random photo with `weights`, two steps: (the CLI result, the output PSD)."""
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from lasagna_cli.app import app

    photo = tmp_path / "photo.png"
    if not photo.exists():
        Image.fromarray((np.random.default_rng(0).uniform(0, 1, (40, 56, 3)) * 255).astype(np.uint8)).save(photo)
    out = tmp_path / f"{name}.psd"
    result = CliRunner().invoke(app, ["shade", str(photo), "-p", prompt, "--model", str(weights), "--steps", "2",
                                      "-o", str(out), "--device", "cpu"])
    return result, out


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return _weights_file(tmp_path_factory.mktemp("builtin") / "prior.safetensors")


@pytest.fixture(scope="module")
def prior(weights) -> BuiltinPrior:
    p = load_prior(PriorSettings(str(weights), device="cpu"))
    assert isinstance(p, BuiltinPrior)
    return p


def test_round_trip_keeps_weights_directions_and_checksum(weights, prior, tmp_path):
    assert weights.with_name(weights.name + ".sha256").read_text().split()[0] == pixel_file.sha256_of(weights)
    assert prior.directions == DIRS and prior.null_class == len(DIRS) and prior.resolution == SIZE
    again = save_weights(prior.unet, tmp_path / "again.safetensors", task="relight", classes=prior.directions,
                         scheduler_config=prior.scheduler_config, training=prior.training)
    other = BuiltinPrior.load(str(again))
    for (k, a), (_, b) in zip(prior.unet.state_dict().items(), other.unet.state_dict().items()):
        assert torch.equal(a, b), k
    assert other.training == {"steps": 0}
    assert pixel_file.file_task(again) == "relight" and pixel_file.file_task(tmp_path / "missing.safetensors") is None


def test_damaged_file_is_refused_with_one_line(weights, tmp_path):
    bad = tmp_path / "bad.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside a tensor
    bad.write_bytes(bytes(data))
    (tmp_path / "bad.safetensors.sha256").write_text(weights.with_name(weights.name + ".sha256").read_text())
    with pytest.raises(ModelError) as e:
        load_prior(PriorSettings(str(bad), device="cpu"))
    assert "damaged" in _one_line(e) and "SHA-256" in str(e.value)


def test_truncated_file_without_checksum_is_refused_with_one_line(weights, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError) as e:
        BuiltinPrior.load(str(cut))
    _one_line(e)


def test_shipped_weights_need_their_checksum(monkeypatch, weights, tmp_path):
    copy = tmp_path / "builtin.safetensors"
    copy.write_bytes(weights.read_bytes())
    monkeypatch.setattr(builtin.BuiltinPrior, "shipped", classmethod(lambda cls: copy))
    with pytest.raises(ModelError) as e:
        load_prior(PriorSettings("builtin", device="cpu"))
    assert "SHA-256" in _one_line(e)
    pixel_file.write_sha256(copy)
    assert isinstance(load_prior(PriorSettings("builtin", device="cpu")), BuiltinPrior)
    copy.write_bytes(copy.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ModelError) as e:
        load_prior(PriorSettings("builtin", device="cpu"))
    assert "damaged" in _one_line(e) and "reinstall" in str(e.value)


@pytest.mark.parametrize(
    "prompt, direction",
    [("light from the left", "left"), ("lit from the right side", "right"), ("sun overhead", "top"), ("uplit", "bottom")],
)
def test_condition_parses_the_prompt(prior, prompt, direction):
    cond = prior.condition(prompt, torch.rand(1, 3, SIZE, SIZE))
    assert cond.classes.tolist() == [prior.null_class, DIRS.index(direction)]
    assert cond.channels.shape == (1, 3, SIZE, SIZE) and float(cond.channels.min()) >= -1


def test_unparseable_or_untrained_prompt_gives_one_line(prior):
    with pytest.raises(UsageError) as e:
        prior.condition("make it pretty", torch.rand(1, 3, SIZE, SIZE))
    assert "left" in _one_line(e)
    with pytest.raises(UsageError) as e:
        prior.condition("backlit", torch.rand(1, 3, SIZE, SIZE))  # a direction this tiny model wasn't trained on
    assert "back" in _one_line(e)


def test_sds_gradient_reaches_the_image_only_and_is_seeded(prior):
    base = torch.rand(1, 3, SIZE, SIZE)
    cond = prior.condition("light from the left", base)
    image = base.clone().requires_grad_(True)
    loss = prior.sds_loss(image, cond, guidance=7.5, generator=torch.Generator().manual_seed(0), samples=3)
    loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in prior.unet.parameters())
    again = prior.sds_loss(base, cond, guidance=7.5, generator=torch.Generator().manual_seed(0), samples=3)
    assert torch.allclose(loss.detach(), again)
    # samples=k is the same loss as the image repeated k times
    rep = prior.sds_loss(base.repeat_interleave(3, 0), cond, guidance=7.5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loss.detach(), rep, rtol=1e-4)


def test_working_size_keeps_aspect_and_multiples(prior):
    h, w = prior.working_size(1024, 512)
    assert h == SIZE and w % prior.multiple == 0 and w < h


def test_direct_sampling_gives_images(prior):
    out = prior.sample(torch.rand(2, 3, SIZE, SIZE), ["left", "top"], steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, SIZE, SIZE) and 0 <= out.min() and out.max() <= 1


def test_controlnet_with_builtin_is_refused(weights):
    with pytest.raises(ModelError, match="--controlnet needs a Stable Diffusion model; the built-in prior has no such option"):
        load_prior(PriorSettings(str(weights), device="cpu", options={"controlnet": "somewhere"}))


def test_shade_command_runs_with_a_builtin_model_file(weights, tmp_path):
    result, out = _shade_a_photo(tmp_path, "light from the left", weights)
    assert result.exit_code == 0, result.output
    assert out.is_file()
    bad, _ = _shade_a_photo(tmp_path, "make it nice", weights, name="x")
    assert bad.exit_code == 2 and "light direction" in bad.output


def test_shipped_weights_load_and_are_the_shade_default():
    from lasagna_core.templates import load_template

    prior = load_prior(PriorSettings("builtin", device="cpu"))
    assert isinstance(prior, BuiltinPrior) and prior.resolution == 32
    assert set(prior.directions) == {"left", "right", "top", "bottom", "top-left", "top-right", "bottom-left",
                                     "bottom-right", "front", "back"}
    assert builtin.BuiltinPrior.shipped().stat().st_size <= 20 * 1024 * 1024
    assert prior.training.get("finished") is True
    assert load_template("shade").model == "builtin" and load_template("shade-divide").model == "builtin"


def _unseen_scene(size: int, directions: list[str]):
    """A sphere and a box on a table, built here (not in any training set), rendered flat and relit."""
    import numpy as np

    from lasagna_core.synth.render import render
    from lasagna_core.synth.scene import Primitive, Scene, Texture

    def flat(rgb: tuple[float, float, float]) -> Texture:
        return Texture("flat", np.array(rgb), np.zeros(3))

    sphere = Primitive("sphere", np.array([-0.35, 0.1, 0.35]), np.eye(3), (0.35,), flat((0.8, 0.3, 0.2)), specular=0.2, shininess=30.0)
    box = Primitive("box", np.array([0.45, -0.2, 0.2]), np.eye(3), (0.2, 0.25, 0.2), flat((0.2, 0.5, 0.8)), specular=0.1, shininess=20.0)
    scene = Scene([sphere, box], "ground", flat((0.7, 0.65, 0.55)), ground_specular=0.02, ambient=0.3, key=0.9)
    return render(scene, size, directions=directions)


def test_shipped_prior_samples_keep_the_scene_and_light_it_from_the_asked_side():
    """Direct generation with the shipped weights on an unseen scene: relit from the asked side, colours near
    the scene's. Guards the x0 clipping: without it the high-noise DDIM steps turned whole pictures orange,
    green or purple (with the shipped weights: mean chroma drift 47 and PSNR 10.9 dB against the ground truth,
    against 16.5 and 16.9 dB with it)."""
    import numpy as np

    from lasagna_core.evaluate.metrics import chroma_drift, direction_correlation, psnr

    asked = {"left": (-1.0, 0.0), "top-right": (0.7071, 0.7071)}
    rendered = _unseen_scene(32, list(asked))
    prior = load_prior(PriorSettings("builtin", device="cpu"))
    base = torch.from_numpy(rendered.base).permute(2, 0, 1)[None]
    drift, gain, r = [], [], []
    for seed in range(3):
        out = prior.sample(base.expand(2, -1, -1, -1), list(asked), steps=50, generator=torch.Generator().manual_seed(seed)).numpy()
        for sample, (direction, vector) in zip(out, asked.items()):
            truth = rendered.targets[direction].transpose(2, 0, 1)
            drift.append(chroma_drift(sample, base[0].numpy()))
            gain.append(psnr(sample, truth))
            r.append(direction_correlation(sample, base[0].numpy(), rendered.mask, vector))
    assert np.mean(drift) < 30 and np.mean(gain) > 14
    assert min(r) > 0.3


@pytest.mark.parametrize("prompt, vector", [("light from the left", (-1.0, 0.0)), ("lit from the top right", (0.7071, 0.7071))])
def test_shipped_prior_shades_from_the_asked_side(tmp_path, prompt, vector):
    """End to end with the shipped weights and the shade defaults, on a scene built here (not in any training
    set), at 96 px so the guided upsampling runs: the change must be visible and come from the asked side."""
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from lasagna_cli.app import app
    from lasagna_core.document import load
    from lasagna_core.evaluate.metrics import direction_correlation, shading_strength

    rendered = _unseen_scene(96, ["left"])
    Image.fromarray(np.round(rendered.base * 255).astype(np.uint8)).save(tmp_path / "scene.png")

    out = tmp_path / "shaded.psd"
    result = CliRunner().invoke(app, ["shade", str(tmp_path / "scene.png"), "--prompt", prompt, "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    base = load(tmp_path / "scene.png").base.astype(np.float64)
    composite = load(out).base.astype(np.float64)
    mask = rendered.mask
    assert shading_strength(composite, base, mask) >= 1.0  # a just-noticeable difference, inside the objects
    assert direction_correlation(composite, base, mask, vector) > 0.3


@pytest.mark.parametrize("prompt, vector", [("light from the left", (-1.0, 0.0)), ("light from the right", (1.0, 0.0))])
def test_shipped_prior_shades_the_example_document_from_the_asked_side(tmp_path, prompt, vector):
    """The README's demo: the layered still life, shaded with no model argument. It is a drawing, not a
    synthetic render, so this guards what the photo-like fine-tunes bought. Measured here: the shipped
    weights give |ΔL*| 3.88 / 2.67 and r 0.26 / 0.58 (left / right); the stage-1 weights, before them, 1.16 /
    1.77 and r 0.03 / 0.40, so "left" failed. Over five seeds at 256 px the shipped ones stay at |ΔL*| 1.9-4.0
    and r 0.27-0.68."""
    import numpy as np
    from typer.testing import CliRunner

    from lasagna_cli.app import app
    from lasagna_core.document import load
    from lasagna_core.evaluate.metrics import direction_correlation, shading_strength

    example = Path(__file__).resolve().parents[1] / "examples" / "still-life.psd"
    out = tmp_path / "shaded.psd"
    result = CliRunner().invoke(app, ["shade", str(example), "--prompt", prompt, "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    base = load(example).base.astype(np.float64)
    composite = load(out).base.astype(np.float64)
    assert shading_strength(composite, base, np.ones(base.shape[1:])) >= 1.5
    assert direction_correlation(composite, base, None, vector) > 0.2


def test_a_light_color_prior_hears_the_prompts_colour_and_shades(tmp_path):
    from psd_tools import PSDImage

    weights = _weights_file(tmp_path / "colour.safetensors", in_channels=builtin.in_channels(light_color=True))
    prior = load_prior(PriorSettings(str(weights), device="cpu"))
    assert isinstance(prior, BuiltinPrior) and prior.knows_light_color
    base = torch.full((1, 3, SIZE, SIZE), 0.5)
    samples = {p: prior.sample(base, [p], steps=3, generator=torch.Generator().manual_seed(0))
               for p in ("red light from the left", "blue light from the left", "light from the left")}
    assert (samples["red light from the left"] - samples["blue light from the left"]).abs().max() > 1e-3
    result, out = _shade_a_photo(tmp_path, "warm light from the left", weights)
    assert result.exit_code == 0, result.output
    assert [(l.name, l.blend_mode.name) for l in PSDImage.open(out)][-2:] == [("Shadows", "MULTIPLY"), ("Light", "SCREEN")]


def test_a_file_with_other_input_channels_is_refused_with_one_line(tmp_path):
    weights = _weights_file(tmp_path / "odd.safetensors", in_channels=7)
    with pytest.raises(ModelError) as e:
        load_prior(PriorSettings(str(weights), device="cpu"))
    assert "needs 6 or 9 input and 3 output channels" in _one_line(e)
