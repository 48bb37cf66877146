"""IC-Light as an option of the Stable Diffusion family, held to the real file format: a tiny SD 1.5-shaped
U-Net saved with save_pretrained, offsets made as lllyasviel's are (tests/tiny_sd.make_iclight_offset), the
merge, the condition latents at conv_in, the CLI end to end, refusals, `models pull`, and eval's IC-Light
direct baseline. CPU only, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from psd_tools import PSDImage
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.errors import ModelError
from lasagna_core.priors import PriorSettings, load_prior, pull_model
from lasagna_core.priors import iclight as ic
from tests.conftest import put_in_cache
from tests.tiny_sd import TINY_RESOLUTION, make_iclight_offset, make_tiny_sd, make_tiny_single_file

SIZE = TINY_RESOLUTION


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("iclight")
    sd = make_tiny_sd(root / "sd")
    Image.fromarray((torch.rand(SIZE, SIZE, 3, generator=torch.Generator().manual_seed(9)) * 255).byte().numpy()).save(
        root / "background.png")
    return {"sd": sd, "fc": make_iclight_offset(sd, root / "fc.safetensors"),
            "fbc": make_iclight_offset(sd, root / "fbc.safetensors", channels=12, seed=5),
            "background": root / "background.png", "root": root}


@pytest.fixture(scope="module")
def fc(models: dict[str, Path]):
    return load_prior(PriorSettings(str(models["sd"]), device="cpu", options={"iclight": str(models["fc"])}))


@pytest.fixture(scope="module")
def fbc(models: dict[str, Path]):
    return load_prior(PriorSettings(str(models["sd"]), device="cpu", options={
        "iclight": str(models["fbc"]), "background": str(models["background"])}))


def _image(seed: int, size: int = SIZE) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _latents(prior, image: torch.Tensor) -> torch.Tensor:
    """IC-Light's condition latent computed the demo's way, independently of the prior's code: uint8-scale
    pixels / 127 - 1, the VAE posterior's mode times the scaling factor."""
    with torch.no_grad():
        return prior.vae.encode((image * 255 - 127) / 127).latent_dist.mode() * prior.vae.config.scaling_factor


def _conv_in_inputs(prior, cond, image: torch.Tensor, seed: int = 3) -> torch.Tensor:
    seen = []
    hook = prior.unet.conv_in.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        prior.sds_loss(image, cond, guidance=5.0, generator=torch.Generator().manual_seed(seed), samples=2)
    finally:
        hook.remove()
    assert len(seen) == 1  # one batched U-Net call
    return seen[0]


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", **(env or {})})
    return result.exit_code, result.stdout, result.stderr


# ------------------------------------------------------------------------------ the merge


@pytest.mark.parametrize("variant", ["fc", "fbc"])
def test_merged_weights_are_base_plus_offset(models: dict[str, Path], variant: str, request: pytest.FixtureRequest) -> None:
    from diffusers import UNet2DConditionModel

    prior = request.getfixturevalue(variant)
    base = UNet2DConditionModel.from_pretrained(models["sd"] / "unet").state_dict()
    offset = load_file(models[variant])
    merged = prior.unet.state_dict()
    channels = {"fc": 8, "fbc": 12}[variant]
    assert merged.keys() == offset.keys() == base.keys() and prior.unet.config.in_channels == channels
    for key in base:
        if key != "conv_in.weight":
            assert torch.equal(merged[key], base[key] + offset[key]), key
    conv, extra = merged["conv_in.weight"], offset["conv_in.weight"]
    assert conv.shape == (base["conv_in.weight"].shape[0], channels, 3, 3)
    assert torch.equal(conv[:, :4], base["conv_in.weight"] + extra[:, :4])  # the old inputs copied, then offset
    assert torch.equal(conv[:, 4:], extra[:, 4:])  # the new inputs started at zero
    assert torch.equal(merged["conv_in.bias"], base["conv_in.bias"] + offset["conv_in.bias"])  # the bias kept


def test_pixels_map_as_the_demo_does() -> None:
    values = torch.tensor([0.0, ic.GREY, 1.0])
    assert ic.model_pixels(values).tolist() == [-1.0, 0.0, pytest.approx(128 / 127)]
    assert ic.model_pixels(torch.tensor(127 / 255)).item() == 0.0  # exactly, in float32


# ------------------------------------------------------------------------------ the condition reaches conv_in


def test_the_base_latent_is_concatenated_after_the_noisy_latent(fc) -> None:
    image, base_a, base_b = _image(1), _image(2), _image(4)
    seen_a = _conv_in_inputs(fc, fc.condition("sunlight from the left", base_a), image)
    seen_b = _conv_in_inputs(fc, fc.condition("sunlight from the left", base_b), image)
    assert seen_a.shape == (4, 8, SIZE // 8, SIZE // 8)  # [uncond x 2 samples, cond x 2 samples]
    assert torch.equal(seen_a[:, :4], seen_b[:, :4])  # the noisy latents: the same draw
    assert not torch.allclose(seen_a[:, 4:], seen_b[:, 4:])  # the base is what changed
    for seen, base in ((seen_a, base_a), (seen_b, base_b)):
        for row in seen:  # every row, conditional and unconditional alike
            assert torch.allclose(row[4:], _latents(fc, base)[0], atol=1e-6)


def test_fbc_appends_the_background_latent(fbc, models: dict[str, Path]) -> None:
    from lasagna_core.document import load

    background = torch.from_numpy(load(models["background"]).base)[None]
    base = _image(2)
    seen = _conv_in_inputs(fbc, fbc.condition("sunlight", base), _image(1))
    assert seen.shape[1] == 12
    assert torch.allclose(seen[0, 4:8], _latents(fbc, base)[0], atol=1e-6)
    assert torch.allclose(seen[0, 8:12], _latents(fbc, background)[0], atol=1e-6)  # same size: no crop


def test_the_matte_turns_the_rest_of_the_base_grey(fc) -> None:
    base = _image(2)
    matte = torch.zeros(1, 1, SIZE, SIZE)
    matte[..., : SIZE // 2] = 1.0
    greyed = base.clone()
    greyed[..., SIZE // 2 :] = 127 / 255
    cond = fc.condition("sunlight", base, matte=matte)
    assert torch.allclose(cond.concat, _latents(fc, greyed), atol=1e-6)
    assert not torch.allclose(cond.concat, fc.condition("sunlight", base).concat)


def test_a_transparent_picture_is_greyed_by_the_edit_flow(fc, tmp_path: Path) -> None:
    """`Distillation` hands the prior the base's alpha as the matte: IC-Light sees grey where it is transparent."""
    from lasagna_core.document import load
    from lasagna_core.edit import Distillation
    from lasagna_core.templates import load_template

    pixels = (torch.rand(SIZE, SIZE, 4, generator=torch.Generator().manual_seed(0)) * 255).byte()
    pixels[:, SIZE // 2 :, 3] = 0
    Image.fromarray(pixels.numpy(), "RGBA").save(tmp_path / "cutout.png")
    doc = load(tmp_path / "cutout.png")
    base, alpha = torch.from_numpy(doc.base)[None], torch.from_numpy(doc.alpha)[None]
    spec = load_template("shade")
    run_ = Distillation(fc, spec, spec.defaults, base, "sunlight", alpha)
    assert torch.allclose(run_.condition.concat, _latents(fc, base * alpha + (1 - alpha) * 127 / 255), atol=1e-6)


# ------------------------------------------------------------------------------ the command line


def _picture(path: Path, alpha: bool = False) -> Path:
    pixels = (torch.rand(40, 56, 4 if alpha else 3, generator=torch.Generator().manual_seed(0)) * 255).byte()
    if alpha:
        pixels[:, :20, 3] = 0
    Image.fromarray(pixels.numpy(), "RGBA" if alpha else "RGB").save(path)
    return path


def _layers(path: Path) -> list[tuple[str, str]]:
    return [(layer.name, layer.blend_mode.name) for layer in PSDImage.open(path)]


def test_shade_with_an_fc_offset_writes_multiply_and_screen_layers(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.psd"
    code, _, err = run("shade", str(_picture(tmp_path / "photo.png", alpha=True)), "-m", str(models["sd"]), "--iclight",
                       str(models["fc"]), "-p", "sunlight from the left", "--steps", "3", "--device", "cpu", "-o", str(out))
    assert code == 0, err
    assert _layers(out)[-2:] == [("Shadows", "MULTIPLY"), ("Light", "SCREEN")]
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert record["prior"] == "stable-diffusion" and record["prior_options"]["iclight"] == str(models["fc"])


def test_shade_with_an_fbc_offset_and_a_background(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.psd"
    code, _, err = run("shade", str(_picture(tmp_path / "photo.png")), "-m", str(models["sd"]), "--iclight", str(models["fbc"]),
                       "--background", str(models["background"]), "-p", "sunlight", "--steps", "3", "--device", "cpu",
                       "-o", str(out))
    assert code == 0, err
    assert _layers(out)[-2:] == [("Shadows", "MULTIPLY"), ("Light", "SCREEN")]
    assert json.loads(out.with_name(out.name + ".json").read_text())["prior_options"]["background"] == str(models["background"])


def _mismatched(models: dict[str, Path], tmp_path: Path, change: str) -> Path:
    offset = load_file(models["fc"])
    if change == "missing":
        offset.pop("conv_out.bias")
    elif change == "shape":
        key = next(k for k in offset if k.endswith("attn2.to_k.weight"))
        offset[key] = torch.zeros(offset[key].shape[0], 2 * offset[key].shape[1])  # an SD 2.x-wide text encoder
    else:
        offset["conv_in.weight"] = offset["conv_in.weight"][:, :6].contiguous()
    path = tmp_path / f"{change}.safetensors"
    save_file(offset, str(path))
    return path


@pytest.mark.parametrize("change, words", [
    ("missing", "doesn't fit the U-Net of"), ("shape", "tensors differ in shape"), ("channels", "is not an IC-Light offset"),
])
def test_a_mismatched_offset_is_one_line_before_any_work(models: dict[str, Path], tmp_path: Path, change: str, words: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from lasagna_core import edit
    from lasagna_core.priors import sd_components

    def not_now(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(edit, "distill", not_now)
    monkeypatch.setattr(sd_components, "load_model", not_now)  # refused from the headers: the model never loads
    out = tmp_path / "out.psd"
    code, stdout, err = run("shade", str(_picture(tmp_path / "photo.png")), "-m", str(models["sd"]), "--iclight",
                            str(_mismatched(models, tmp_path, change)), "-p", "sunlight", "--steps", "3", "--device", "cpu",
                            "-o", str(out))
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert "Traceback" not in err + stdout and not out.exists() and not out.with_name(out.name + ".json").exists()


def test_a_single_file_base_is_checked_at_the_merge(models: dict[str, Path], tmp_path: Path) -> None:
    """A single-file checkpoint's U-Net has no diffusers header to read: the same check runs on the loaded U-Net,
    before it is changed."""
    single = make_tiny_single_file(models["sd"], tmp_path / "tiny.safetensors")
    with pytest.raises(ModelError, match="doesn't fit the U-Net of") as e:
        load_prior(PriorSettings(str(single), device="cpu", options={
            "iclight": str(_mismatched(models, tmp_path, "missing")), "model_config": str(models["sd"])}))
    assert "\n" not in str(e.value)
    prior = load_prior(PriorSettings(str(single), device="cpu", options={"iclight": str(models["fc"]), "model_config": str(models["sd"])}))
    assert prior.unet.config.in_channels == 8


@pytest.mark.parametrize("options, words", [
    ({"iclight": "fbc"}, "it needs --background FILE"),
    ({"iclight": "fc", "background": "background"}, "drop --background, or use an fbc offset"),
    ({"background": "background"}, "it needs --iclight"),
])
def test_the_variant_and_the_background_must_agree(models: dict[str, Path], options: dict[str, str], words: str) -> None:
    with pytest.raises(ModelError, match=words):
        load_prior(PriorSettings(str(models["sd"]), device="cpu", options={k: str(models[v]) for k, v in options.items()}))


def test_the_hub_id_picks_fc_or_fbc_from_the_cache(models: dict[str, Path], fake_hub_cache: Path) -> None:
    with pytest.raises(ModelError, match=r"lasagna models pull lllyasviel/ic-light --iclight"):
        load_prior(PriorSettings(str(models["sd"]), device="cpu", options={"iclight": ic.HUB_REPO}))
    put_in_cache(fake_hub_cache, ic.HUB_REPO, {"iclight_sd15_fc.safetensors": models["fc"], "iclight_sd15_fbc.safetensors": models["fbc"]})
    assert load_prior(PriorSettings(str(models["sd"]), device="cpu", options={"iclight": ic.HUB_REPO})).unet.config.in_channels == 8
    with_bg = load_prior(PriorSettings(str(models["sd"]), device="cpu", options={
        "iclight": ic.HUB_REPO, "background": str(models["background"])}))
    assert with_bg.unet.config.in_channels == 12


def test_the_shade_iclight_template_brings_iclight(models: dict[str, Path], fake_hub_cache: Path, tmp_path: Path) -> None:
    put_in_cache(fake_hub_cache, ic.HUB_REPO, {"iclight_sd15_fc.safetensors": models["fc"]})
    out = tmp_path / "out.psd"
    code, _, err = run("shade", str(_picture(tmp_path / "photo.png")), "-t", "shade-iclight", "-m", str(models["sd"]),
                       "-p", "sunlight from the left", "--steps", "2", "--device", "cpu", "-o", str(out))
    assert code == 0, err
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert record["prior_options"]["iclight"] == ic.HUB_REPO and record["template"] == "shade-iclight"
    assert record["rendered_prompt"] == "sunlight from the left, best quality"
    code, listing, _ = run("templates")
    assert code == 0 and "--iclight lllyasviel/ic-light" in listing


# ------------------------------------------------------------------------------ lasagna models pull


@pytest.fixture
def fake_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str], list[str]]]:
    """snapshot_download replaced: records (repo, allow, ignore) and writes the model_index.json the repo has."""
    import huggingface_hub

    calls: list[tuple[str, list[str], list[str]]] = []
    indexes = {"owner/xl": {"_class_name": "StableDiffusionXLPipeline", "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]},
               "owner/sd": {"_class_name": "StableDiffusionPipeline"}}

    def snapshot_download(repo_id: str, *, allow_patterns: list[str], ignore_patterns: list[str] = ()) -> str:
        calls.append((repo_id, list(allow_patterns), list(ignore_patterns)))
        folder = tmp_path / "snapshots" / repo_id.replace("/", "--")
        folder.mkdir(parents=True, exist_ok=True)
        if repo_id in indexes:
            (folder / "model_index.json").write_text(json.dumps(indexes[repo_id]))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_pull_fetches_the_iclight_offsets(fake_download) -> None:
    code, out, err = run("models", "pull", ic.HUB_REPO, "--iclight")
    assert code == 0, err
    assert fake_download == [(ic.HUB_REPO, ["iclight_sd15_fc.safetensors", "iclight_sd15_fbc.safetensors"], [])]
    code, _, err = run("models", "pull", ic.HUB_REPO, "--iclight", "--controlnet")
    assert code == 2 and "pass one" in err


def test_pull_tells_sdxl_from_sd_by_the_model_index(fake_download) -> None:
    pull_model("owner/xl")
    pull_model("owner/sd")
    (xl_first, xl_allow, _), (_, xl_files, _), (_, _, _), (_, sd_files, sd_ignore) = fake_download
    assert xl_allow == ["model_index.json"]
    assert {"text_encoder_2/*.safetensors", "tokenizer_2/*.txt", "unet/*.safetensors"} <= set(xl_files)
    assert "unet/*.safetensors" in sd_files and not any("_2/" in pattern for pattern in sd_files)
    assert "*.fp16*" in sd_ignore


# ------------------------------------------------------------------------------ eval's direct baseline


def test_eval_runs_iclight_direct_baseline_and_without_it(models: dict[str, Path], tmp_path: Path) -> None:
    from tests.relight_data import make_manifest

    data = make_manifest(tmp_path / "data", scenes=2, size=16, directions=("left",))
    common = ["eval", "--data", str(data), "--model", str(models["sd"]), "--steps", "2", "--json"]
    code, _, err = run(*common)
    assert code == 2 and "(pass --no-direct)" in err  # plain SD: no direct baseline, refused before it loads
    code, out, err = run(*common, "--iclight", str(models["fc"]), "--direct-steps", "2", "--direct-guidance", "2")
    assert code == 0, err
    report = json.loads(out)
    assert set(report["summary"]) == {"base", "lasagna", "direct", "ground truth"}
    assert report["summary"]["direct"]["psnr"] != report["summary"]["base"]["psnr"]
    code, out, err = run(*common, "--iclight", str(models["fc"]), "--no-direct")
    assert code == 0, err
    assert set(json.loads(out)["summary"]) == {"base", "lasagna", "ground truth"}


def test_sampling_follows_the_base_and_the_seed(fc) -> None:
    a, b = _image(2), _image(4)

    def sample(base: torch.Tensor, seed: int) -> torch.Tensor:
        return fc.sample(base, ["sunlight"], steps=3, guidance=2.0, generator=torch.Generator().manual_seed(seed))

    first = sample(a, 0)
    assert first.shape == a.shape and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, sample(a, 0)) and not torch.equal(first, sample(a, 1)) and not torch.equal(first, sample(b, 0))


def test_a_template_prior_table_takes_text_or_true_false() -> None:
    from lasagna_core.errors import UsageError
    from lasagna_core.templates import load_template, parse_template

    assert dict(load_template("shade-iclight").prior_options) == {"iclight": ic.HUB_REPO}
    text = 'name = "t"\n[prior]\niclight = 3\n[[layers]]\nname = "L"\nblend_mode = "multiply"\nchannels = 1\nrange = [0.0, 1.0]\nneutral = 1.0\n'
    with pytest.raises(UsageError, match=r"\[prior\] iclight must be text or true/false, not 3"):
        parse_template(text, "t.toml")
