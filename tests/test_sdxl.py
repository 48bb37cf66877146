"""The Stable Diffusion XL family on a tiny SDXL of the real architecture (tests/tiny_sdxl.py), saved with
save_pretrained and as an original-format single file, loaded the way `--model` loads them. CPU, no network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from psd_tools import PSDImage
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.errors import ModelError
from lasagna_core.priors import PriorSettings, family_for, load_prior
from lasagna_core.priors.sdxl import StableDiffusionXLPrior
from tests.conftest import put_in_cache
from tests.tiny_sd import TINY_RESOLUTION, make_tiny_sd, make_tiny_single_file
from tests.tiny_sdxl import SECOND_WIDTH, make_tiny_sdxl, make_tiny_sdxl_single_file

SIZE = TINY_RESOLUTION


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from diffusers import AutoencoderTiny

    root = tmp_path_factory.mktemp("sdxl")
    xl = make_tiny_sdxl(root / "xl")
    sd = make_tiny_sd(root / "sd")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                        latent_channels=4).save_pretrained(root / "taesdxl")
    return {"xl": xl, "xl_file": make_tiny_sdxl_single_file(xl, root / "xl.safetensors"), "sd": sd,
            "sd_file": make_tiny_single_file(sd, root / "sd.safetensors"), "taesdxl": root / "taesdxl", "root": root}


@pytest.fixture(scope="module")
def prior(models: dict[str, Path]) -> StableDiffusionXLPrior:
    return load_prior(PriorSettings(str(models["xl"]), device="cpu"))


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})
    return result.exit_code, result.stdout, result.stderr


def _image(seed: int) -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_the_probe_tells_sdxl_from_sd(models: dict[str, Path]) -> None:
    assert family_for(str(models["xl"])).name == "sdxl" and family_for(str(models["xl_file"])).name == "sdxl"
    assert family_for(str(models["sd"])).name == "stable-diffusion"
    assert family_for(str(models["sd_file"])).name == "stable-diffusion"


def test_two_text_encoders_pooled_embeddings_and_time_ids(prior: StableDiffusionXLPrior) -> None:
    """The embeddings are both encoders' penultimate hidden states side by side, the pooled one is the second
    encoder's projection, an empty negative prompt is zeros (force_zeros_for_empty_prompt), and the time ids
    are (original size, crop top-left, target size) of the working size."""
    from lasagna_core.priors.sd_components import tokenize

    cond = prior.condition("light from the left", _image(0)[..., :48, :])
    with torch.no_grad():
        first = prior.text_encoder(tokenize(prior.tokenizer, ["light from the left"]).input_ids, output_hidden_states=True)
        second = prior.text_encoder_2(tokenize(prior.tokenizer_2, ["light from the left"]).input_ids, output_hidden_states=True)
    assert cond.embeddings.shape == (2, 77, 32 + SECOND_WIDTH) and cond.pooled.shape == (2, SECOND_WIDTH)
    assert torch.allclose(cond.embeddings[1], torch.cat([first.hidden_states[-2][0], second.hidden_states[-2][0]], -1), atol=1e-5)
    assert torch.allclose(cond.pooled[1], second.text_embeds[0], atol=1e-5)
    assert not cond.embeddings[0].any() and not cond.pooled[0].any()
    assert cond.time_ids.tolist() == [[48, 64, 0, 0, 48, 64]] * 2
    negative = prior.condition("light from the left", _image(0), "dark")
    assert negative.embeddings[0].any() and negative.pooled[0].any()


def test_the_unet_gets_pooled_text_and_time_ids(prior: StableDiffusionXLPrior) -> None:
    seen: list[dict] = []
    hook = prior.unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["added_cond_kwargs"]),
                                                with_kwargs=True)
    cond = prior.condition("light from the left", _image(0))
    try:
        loss = prior.sds_loss(_image(1), cond, guidance=5.0, generator=torch.Generator().manual_seed(0), samples=3)
    finally:
        hook.remove()
    assert torch.isfinite(loss) and len(seen) == 1
    assert seen[0]["text_embeds"].shape == (6, SECOND_WIDTH) and seen[0]["time_ids"].shape == (6, 6)
    assert torch.equal(seen[0]["text_embeds"][3:], cond.pooled[1:].expand(3, -1))  # [uncond x 3, cond x 3]


def test_the_single_file_loads_the_same_weights(models: dict[str, Path], prior: StableDiffusionXLPrior) -> None:
    single = load_prior(PriorSettings(str(models["xl_file"]), device="cpu", options={"model_config": str(models["xl"])}))
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ours, ref = getattr(single, name).state_dict(), getattr(prior, name).state_dict()
        assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref), name


def test_the_single_file_finds_sdxl_base_configs_in_the_cache(models: dict[str, Path], fake_hub_cache: Path) -> None:
    with pytest.raises(ModelError, match="lasagna models pull stabilityai/stable-diffusion-xl-base-1.0"):
        load_prior(PriorSettings(str(models["xl_file"]), device="cpu"))
    put_in_cache(fake_hub_cache, "stabilityai/stable-diffusion-xl-base-1.0", {"": models["xl"]})
    assert load_prior(PriorSettings(str(models["xl_file"]), device="cpu")).resolution == SIZE


@pytest.mark.parametrize("form", ["xl", "xl_file"])
def test_shade_runs_end_to_end(models: dict[str, Path], tmp_path: Path, form: str) -> None:
    Image.fromarray((torch.rand(40, 56, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()).save(
        tmp_path / "photo.png")
    out = tmp_path / "out.psd"
    extra = ["--model-config", str(models["xl"])] if form == "xl_file" else []
    code, _, err = run("shade", str(tmp_path / "photo.png"), "-m", str(models[form]), *extra, "-p", "light from the left",
                       "--steps", "3", "--device", "cpu", "-o", str(out))
    assert code == 0, err
    assert [(layer.name, layer.blend_mode.name) for layer in PSDImage.open(out)][-2:] == [("Shadows", "MULTIPLY"), ("Light", "SCREEN")]
    assert json.loads(out.with_name(out.name + ".json").read_text())["prior"] == "sdxl"


def test_vae_takes_an_sdxl_tiny_autoencoder(models: dict[str, Path], prior: StableDiffusionXLPrior) -> None:
    fast = load_prior(PriorSettings(str(models["xl"]), device="cpu", options={"vae": str(models["taesdxl"])}))
    image = _image(1).requires_grad_(True)
    latents = fast.encode(image)
    assert latents.shape == prior.encode(_image(1)).shape and not torch.allclose(latents, prior.encode(_image(1)))
    latents.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(p.grad is None for p in fast.vae.parameters())  # the full VAE's encoder is off the gradient path


@pytest.mark.parametrize("flag", ["--iclight", "--controlnet"])
def test_sd15_adapters_are_refused_in_one_line(models: dict[str, Path], tmp_path: Path, flag: str) -> None:
    Image.new("RGB", (32, 32), (120, 80, 40)).save(tmp_path / "in.png")
    code, _, err = run("shade", str(tmp_path / "in.png"), "-m", str(models["xl"]), flag, "x", "-p", "light", "--device", "cpu",
                       "-o", str(tmp_path / "out.psd"))
    assert code == 1 and err.strip().splitlines() == [f"error: {flag} needs a Stable Diffusion model; the Stable Diffusion XL prior has no such option."]


def test_a_refiner_is_refused(models: dict[str, Path], tmp_path: Path) -> None:
    refiner = tmp_path / "refiner"
    shutil.copytree(models["xl"], refiner)
    index = json.loads((refiner / "model_index.json").read_text())
    index["text_encoder"] = [None, None]
    (refiner / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="has no text_encoder .* isn't a Stable Diffusion XL base model"):
        load_prior(PriorSettings(str(refiner), device="cpu"))


def test_fp16_keeps_the_vae_in_float32(models: dict[str, Path]) -> None:
    """SDXL's VAE overflows in fp16; like diffusers, the prior keeps it in float32 when its config asks."""
    half = StableDiffusionXLPrior.load(str(models["xl"]), device="cpu", dtype=torch.float16)
    assert half.unet.dtype == torch.float16 and half.text_encoder_2.dtype == torch.float16
    assert half.vae.dtype == torch.float32 and half.vae.config.force_upcast
