"""The speed and memory levers change cost, not results: each is checked against the code it replaced.

No timings here (they belong to benchmarks/run.py); these tests only pin down correctness: the faster SDS
step gives the same loss and gradient as the one before it, --low-memory gives the same gradient, the fast
encoder paths run and keep shapes, and the fast commands start without the heavy libraries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks.baseline import baseline_distill, baseline_sds_loss
from lasagna_core.distill import distill
from lasagna_core.errors import ModelError
from lasagna_core.priors import PriorSettings, load_prior
from lasagna_core.templates import load_template
from tests.conftest import REPO
from tests.tiny_sd import make_tiny_sd


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("speed-models")
    eps = make_tiny_sd(root / "eps", controlnet_folder=root / "cn")
    v = make_tiny_sd(root / "v", prediction_type="v_prediction")
    return {"eps": eps, "cn": root / "cn", "v": v}


def _image(seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _loss_and_grad(fn, prior, image, cond, samples: int = 3):
    x = image.clone().requires_grad_()
    loss = fn(prior, x, cond, guidance=7.5, generator=torch.Generator().manual_seed(5), samples=samples)
    loss.backward()
    return loss.detach(), x.grad


def _current(prior, *args, **kwargs):
    return prior.sds_loss(*args, **kwargs)


@pytest.mark.parametrize("kind", ["eps", "eps+controlnet", "v"])
def test_sds_loss_is_unchanged_by_the_speed_work(models: dict[str, Path], kind: str) -> None:
    """Noise tables once per prior, cached text/hint, inference_mode: the same numbers as before, exactly."""
    folder = models["v" if kind == "v" else "eps"]
    prior = load_prior(PriorSettings(str(folder), device="cpu", options={"controlnet": str(models["cn"]) if "controlnet" in kind else None}))
    image = _image()
    cond = prior.condition("light from the left", image)
    for _ in range(2):  # the second call goes through the cached condition inputs
        new_loss, new_grad = _loss_and_grad(_current, prior, image, cond)
        old_loss, old_grad = _loss_and_grad(baseline_sds_loss, prior, image, cond)
        assert torch.equal(new_loss, old_loss)
        assert torch.equal(new_grad, old_grad)


def test_cached_condition_inputs_follow_the_condition(models: dict[str, Path]) -> None:
    prior = load_prior(PriorSettings(str(models["eps"]), device="cpu", options={"controlnet": str(models["cn"])}))
    image, other = _image(0), _image(1)
    a = prior.condition("light from the left", image)
    b = prior.condition("a dark night", other)
    _loss_and_grad(_current, prior, image, a)  # fills the cache with a's text and hint
    for cond, samples in ((b, 3), (a, 2)):  # another condition, then another batch size
        new_loss, new_grad = _loss_and_grad(_current, prior, image, cond, samples)
        old_loss, old_grad = _loss_and_grad(baseline_sds_loss, prior, image, cond, samples)
        assert torch.equal(new_loss, old_loss) and torch.equal(new_grad, old_grad)


def test_distill_with_levers_matches_the_old_loop(models: dict[str, Path]) -> None:
    """Fused Adam and a channels-last G change rounding only: same layers to a small tolerance, and the
    loop stays deterministic."""
    prior = load_prior(PriorSettings(str(models["eps"]), device="cpu"))
    spec = load_template("shade")
    settings = replace(spec.defaults, steps=6, noise_samples=2)
    base = _image()
    cond = prior.condition("light from the left", base)
    new = distill(base, spec.layers, prior, cond, settings, seed=3)
    again = distill(base, spec.layers, prior, cond, settings, seed=3)
    old = baseline_distill(base, spec.layers, prior, cond, settings, seed=3)
    with torch.no_grad():
        out_new, out_again, out_old = new(base), again(base), old(base)
    for a, b, c in zip(out_new, out_again, out_old):
        assert torch.equal(a.color, b.color)
        assert torch.allclose(a.color, c.color, atol=1e-4), (a.color - c.color).abs().max()


def test_low_memory_gives_the_same_gradient(models: dict[str, Path]) -> None:
    normal = load_prior(PriorSettings(str(models["eps"]), device="cpu", options={"controlnet": str(models["cn"])}))
    low = load_prior(PriorSettings(str(models["eps"]), device="cpu", options={"controlnet": str(models["cn"]), "low_memory": True}))
    assert low.low_memory and low.vae.encoder.gradient_checkpointing
    assert low.text_encoder.device.type == "cpu" and low.text_encoder.dtype == torch.float32
    image = _image()
    _, g_normal = _loss_and_grad(_current, normal, image, normal.condition("light", image))
    _, g_low = _loss_and_grad(_current, low, image, low.condition("light", image))
    assert torch.nn.functional.cosine_similarity(g_normal.flatten(), g_low.flatten(), dim=0) > 0.9999
    assert torch.allclose(g_normal, g_low, atol=1e-6)
    assert all(p.grad is None for p in low.vae.parameters())


def test_fast_encoder_half_runs_and_keeps_the_latent_size(models: dict[str, Path]) -> None:
    full = load_prior(PriorSettings(str(models["eps"]), device="cpu"))
    half = load_prior(PriorSettings(str(models["eps"]), device="cpu", options={"fast_encoder": "half"}))
    image = _image()
    assert half.encode(image).shape == full.encode(image).shape
    _, grad = _loss_and_grad(_current, half, image, half.condition("light", image))
    assert grad.shape == image.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ValueError):
        load_prior(PriorSettings(str(models["eps"]), device="cpu", options={"fast_encoder": "quarter"}))


def test_tiny_autoencoder_replaces_the_encoder(models: dict[str, Path], tmp_path: Path) -> None:
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    tiny = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                           num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))
    tiny.save_pretrained(tmp_path / "taesd", safe_serialization=True)
    prior = load_prior(PriorSettings(str(models["eps"]), device="cpu", options={"vae": str(tmp_path / "taesd")}))
    image = _image()
    latents = prior.encode(image)
    assert latents.shape == (1, 4, 8, 8)
    _, grad = _loss_and_grad(_current, prior, image, prior.condition("light", image))
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ModelError, match="tiny autoencoder"):
        load_prior(PriorSettings(str(models["eps"]), device="cpu", options={"vae": str(models["eps"] / "vae")}))


def test_cli_speed_options_reach_the_prior_and_the_sidecar(models: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from lasagna_cli.app import app

    Image.new("RGB", (96, 64), (120, 80, 40)).save(tmp_path / "in.png")
    out = tmp_path / "out.psd"
    result = CliRunner().invoke(app, ["shade", str(tmp_path / "in.png"), "-p", "light", "-m", str(models["eps"]),
                                      "--steps", "2", "--device", "cpu", "--low-memory", "--fast-encoder", "-o", str(out)],
                                env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.stderr
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert record["prior"] == "stable-diffusion"
    assert record["prior_options"] == {"controlnet": None, "model_config": None, "vae": None, "fast_encoder": "half",
                                       "low_memory": True, "iclight": None, "background": None}


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["templates"], ["templates", "--json"]])
def test_fast_commands_import_no_heavy_library(args: list[str]) -> None:
    """`templates` joins --help/--version/inspect (tests/test_cli.py): no torch, diffusers or transformers;
    --help, --version and templates not even numpy (half of their start-up time)."""
    code = (
        "import sys; from lasagna_cli.app import app\n"
        f"try: app({args!r})\n"
        "except SystemExit: pass\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules)\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stderr.strip().endswith("HEAVY="), proc.stderr[-500:]


def _new_layers(height: int, width: int) -> list:
    import numpy as np

    from lasagna_core.layers import BlendMode, PixelNode

    rng = np.random.default_rng(0)
    gray = rng.uniform(-0.1, 1.1, (1, height, width)).astype(np.float32)  # out of range on purpose: clipped
    rgb = rng.uniform(0, 1, (3, height, width)).astype(np.float32)
    alpha = rng.uniform(0, 1, (1, height, width)).astype(np.float32)
    return [PixelNode("Shadows", gray, None, blend_mode=BlendMode.MULTIPLY),
            PixelNode("Light", gray[:, ::-1].copy(), None, blend_mode=BlendMode.SCREEN, opacity=0.7),
            PixelNode("Colour", rgb, alpha, blend_mode=BlendMode.NORMAL, visible=False),
            PixelNode("Colour 2", rgb[:, ::-1].copy(), alpha, blend_mode=BlendMode.OVERLAY)]


@pytest.mark.parametrize("strip_pixels", [4_000_000, 5_000])
def test_save_psd_writes_the_same_file_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strip_pixels: int) -> None:
    """Quantising before psd-tools, reusing the loaded merged image and compositing in strips: byte-identical
    output (layers and merged image) to the save_psd it replaced, for a PSD and for a raster input."""
    from PIL import Image

    from benchmarks.baseline import baseline_save_psd
    from lasagna_core import document
    from lasagna_core.writing import psd as psd_writer
    from lasagna_core.writing import save_psd
    from tests.conftest import EXAMPLE_PSD, gradient_rgb, to_uint8

    monkeypatch.setattr(psd_writer, "STRIP_PIXELS", strip_pixels)  # 5000: strips of a few rows, many strips
    Image.fromarray(to_uint8(gradient_rgb(40, 56))).save(tmp_path / "in.png")
    import numpy as np

    deep = np.round(gradient_rgb(30, 44)[:, :, 0] * 65535).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # 16-bit gray: a 16-bit document
    rgba = np.dstack([to_uint8(gradient_rgb(36, 48)), np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (36, 1))])
    Image.fromarray(rgba).save(tmp_path / "cut.png")
    save_psd(document.load(tmp_path / "cut.png"), [], tmp_path / "cut.psd")  # a merged image with alpha
    for source in (EXAMPLE_PSD, tmp_path / "in.png", tmp_path / "deep.png", tmp_path / "cut.psd"):
        doc = document.load(source)
        layers = _new_layers(doc.height, doc.width)
        save_psd(doc, layers, tmp_path / "new.psd")
        baseline_save_psd(doc, layers, tmp_path / "old.psd")
        assert (tmp_path / "new.psd").read_bytes() == (tmp_path / "old.psd").read_bytes(), source.name
