"""The Stable Diffusion prior, on tiny models of the real architectures, loaded the way `--model PATH` is.

CPU only, no network: hub ids are looked up in a fake, empty or hand-made HF cache.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lasagna_core.errors import ModelError, UsageError
from lasagna_core.priors import Prior, PriorSettings, load_prior, pull_model, sds_gradient
from lasagna_core.priors.base import Condition, sds_surrogate_loss
from lasagna_core.priors.schedule import NoiseSchedule
from lasagna_core.runtime import resolve_device, resolve_dtype
from tests.conftest import put_in_cache
from tests.tiny_sd import TINY_MULTIPLE, TINY_RESOLUTION, make_tiny_sd, make_tiny_single_file

SIZE = TINY_RESOLUTION


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    make_tiny_sd(root / "sd", controlnet_folder=root / "controlnet")
    make_tiny_sd(root / "sd_v", prediction_type="v_prediction")
    return {"sd": root / "sd", "controlnet": root / "controlnet", "sd_v": root / "sd_v", "root": root}


@pytest.fixture(scope="module")
def prior(models) -> Prior:
    return load_prior(PriorSettings(str(models["sd"]), device="cpu"))


@pytest.fixture(scope="module")
def cn_prior(models) -> Prior:
    return load_prior(PriorSettings(str(models["sd"]), device="cpu", options={"controlnet": str(models["controlnet"])}))


def _image(b: int = 1, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g)


def _loss(prior: Prior, cond: Condition, image: torch.Tensor, seed: int = 0, **kw) -> torch.Tensor:
    return prior.sds_loss(image, cond, guidance=7.5, generator=torch.Generator().manual_seed(seed), **kw)


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert text and "\n" not in text and "Traceback" not in text
    return text


# ------------------------------------------------------------------ (1) the formula


def test_sds_gradient_matches_hand_computed_case():
    uncond = torch.tensor([1.0, -2.0])
    cond = torch.tensor([3.0, 0.0])
    noise = torch.tensor([0.5, 1.0])
    # eps_hat = uncond + 2 * (cond - uncond) = [5, 2]; grad = 0.5 * (eps_hat - noise) = [2.25, 0.5]
    assert torch.allclose(sds_gradient(uncond, cond, noise, 2.0, 0.5), torch.tensor([2.25, 0.5]))
    # guidance 1 is plain conditional prediction; per-sample weights broadcast
    w = torch.tensor([[1.0], [0.25]])
    out = sds_gradient(uncond.expand(2, 2), cond.expand(2, 2), noise.expand(2, 2), 1.0, w)
    assert torch.allclose(out, torch.tensor([[2.5, -1.0], [0.625, -0.25]]))


def test_surrogate_loss_gradient_is_batch_mean_of_grad():
    latents = torch.randn(4, 4, 2, 2, requires_grad=True)
    grad = torch.randn(4, 4, 2, 2)
    sds_surrogate_loss(latents, grad).backward()
    assert torch.allclose(latents.grad, grad / 4)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_prediction_conversions_recover_epsilon(prediction):
    """The schedule's training target, read back through to_epsilon, is the noise that was added."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    schedule = NoiseSchedule(torch.tensor([0.9, 0.5, 0.01]), prediction)
    t = torch.tensor([0, 1, 2])
    a = schedule.alphas_cumprod.view(3, 1, 1, 1)
    noisy = schedule.add_noise(x0, eps, t)
    assert torch.allclose(noisy, a.sqrt() * x0 + (1 - a).sqrt() * eps)
    target = schedule.training_target(x0, eps, t)
    assert torch.allclose(schedule.to_epsilon(target, noisy, t), eps, atol=1e-4)


# ------------------------------------------------------------------ (2) frozen prior, gradient into the image


def test_prior_is_frozen_and_gradient_reaches_image(cn_prior):
    modules = {"unet": cn_prior.unet, "vae": cn_prior.vae, "text": cn_prior.text_encoder, "cn": cn_prior.controlnet}
    before = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in modules.items()}
    cond = cn_prior.condition("a photo of a cat", _image())
    image = _image(4, seed=1).requires_grad_(True)
    loss = _loss(cn_prior, cond, image)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert image.grad is not None and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
    for name, m in modules.items():
        assert not m.training
        for p in m.parameters():
            assert not p.requires_grad and p.grad is None, name
        after = m.state_dict()
        assert all(torch.equal(before[name][k], after[k]) for k in after), name


# ------------------------------------------------------------------ (3) (4) one batched call, text once


def _count_calls(module: torch.nn.Module, sizes: list[int]):
    return module.register_forward_hook(lambda _m, args, _out: sizes.append(args[0].shape[0]))


@pytest.mark.parametrize("which", ["prior", "cn_prior"])
def test_one_batched_unet_call_per_step(which, request):
    p = request.getfixturevalue(which)
    cond = p.condition("a photo", _image())
    unet_calls: list[int] = []
    cn_calls: list[int] = []
    hooks = [_count_calls(p.unet, unet_calls)]
    if p.controlnet is not None:
        hooks.append(_count_calls(p.controlnet, cn_calls))
    try:
        _loss(p, cond, _image(3))
        assert unet_calls == [6]
        assert cn_calls == ([6] if p.controlnet is not None else [])
        _loss(p, cond, _image(1), samples=2)  # encode once, two noise samples
        assert unet_calls == [6, 4]
    finally:
        for h in hooks:
            h.remove()


def test_text_encoder_runs_once_per_condition(prior):
    calls: list[int] = []
    hook = _count_calls(prior.text_encoder, calls)
    try:
        cond = prior.condition("a photo of a dog", _image(), negative_prompt="blurry")
        for _ in range(3):
            _loss(prior, cond, _image(2))
    finally:
        hook.remove()
    assert calls == [2]  # one batched call: negative + positive
    assert cond.embeddings.shape == (2, 77, 32)
    assert not torch.equal(cond.embeddings[0], cond.embeddings[1])
    assert cond.hint is None  # no ControlNet, no hint


# ------------------------------------------------------------------ (5) ControlNet, (6) v-prediction


def test_controlnet_changes_eps_and_follows_the_base(prior, cn_prior):
    base = _image(seed=3)
    image = _image(2, seed=4)
    plain = _loss(prior, prior.condition("a photo", base), image)
    cond = cn_prior.condition("a photo", base)
    assert cond.hint is not None and cond.hint.shape == (1, 3, SIZE, SIZE)
    controlled = _loss(cn_prior, cond, image)
    assert not torch.allclose(plain, controlled)
    other_base = _loss(cn_prior, cn_prior.condition("a photo", 1 - base), image)
    assert not torch.allclose(controlled, other_base)
    # a hint at another size is resized to the image, not refused
    small = cn_prior.condition("a photo", base[..., ::2, ::2])
    assert torch.isfinite(_loss(cn_prior, small, image))


def test_v_prediction_model(models):
    p = load_prior(PriorSettings(str(models["sd_v"]), device="cpu"))
    assert p.prediction_type == "v_prediction"
    cond = p.condition("a photo", _image())
    image = _image(2).requires_grad_(True)
    loss = _loss(p, cond, image)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


# ------------------------------------------------------------------ (7) errors a user can cause


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError) as e:
        load_prior(PriorSettings(str(tmp_path / "nope"), device="cpu"))
    assert "does not exist" in _one_line(e)


def test_folder_missing_unet_weights(models, tmp_path):
    broken = shutil.copytree(models["sd"], tmp_path / "sd")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelError) as e:
        load_prior(PriorSettings(str(broken), device="cpu"))
    assert str(Path("unet") / "diffusion_pytorch_model.safetensors") in _one_line(e)


def test_folder_without_model_index(models, tmp_path):
    broken = shutil.copytree(models["sd"], tmp_path / "sd")
    (broken / "model_index.json").unlink()
    with pytest.raises(ModelError) as e:
        load_prior(PriorSettings(str(broken), device="cpu"))
    assert "model_index.json" in _one_line(e)


def test_pickle_only_weights_are_refused(tmp_path):
    folder = make_tiny_sd(tmp_path / "sd_bin", safe_serialization=False)
    assert (folder / "unet" / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(ModelError) as e:
        load_prior(PriorSettings(str(folder), device="cpu"))
    text = _one_line(e)
    assert "pickle" in text and ".safetensors" in text


def test_corrupt_weights_are_a_model_error(models, tmp_path):
    broken = shutil.copytree(models["sd"], tmp_path / "sd")
    weights = broken / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError) as e:
        load_prior(PriorSettings(str(broken), device="cpu"))
    assert "vae" in _one_line(e)


def test_fp16_variant_only_folder_loads(models, tmp_path):
    folder = shutil.copytree(models["sd"], tmp_path / "sd")
    for weights in folder.glob("*/*.safetensors"):
        weights.rename(weights.with_name(weights.stem + ".fp16.safetensors"))
    p = load_prior(PriorSettings(str(folder), device="cpu"))
    assert torch.isfinite(_loss(p, p.condition("a photo", _image()), _image(2)))


def test_bf16_on_cpu(models):
    p = load_prior(PriorSettings(str(models["sd"]), device="cpu", precision="bf16"))
    assert p.dtype == torch.bfloat16 and p.unet.dtype == torch.bfloat16
    image = _image(2).requires_grad_(True)
    loss = _loss(p, p.condition("a photo", _image()), image)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert image.grad.dtype == torch.float32 and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


def test_pickle_checkpoint_file_is_refused(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not really a pickle")
    with pytest.raises(ModelError) as e:
        load_prior(PriorSettings(str(ckpt), device="cpu"))
    assert "safetensors" in _one_line(e)


def test_uncached_hub_id_offline(fake_hub_cache):
    with pytest.raises(ModelError) as e:
        load_prior(PriorSettings("lasagna-tests/not-cached", device="cpu"))
    text = _one_line(e)
    assert "lasagna models pull lasagna-tests/not-cached" in text and "local path" in text


def test_cached_hub_id_loads_from_the_cache(models, fake_hub_cache):
    put_in_cache(fake_hub_cache, "lasagna-tests/tiny-sd", {"": models["sd"]})
    p = load_prior(PriorSettings("lasagna-tests/tiny-sd", device="cpu"))
    assert p.resolution == SIZE


def test_pull_model_offline_is_a_model_error(fake_hub_cache):
    with pytest.raises(ModelError) as e:
        pull_model("lasagna-tests/not-cached")
    assert "lasagna-tests/not-cached" in _one_line(e)
    with pytest.raises(ModelError) as e:
        pull_model("not/a/valid id")
    assert "not a valid" in _one_line(e)


def test_device_and_precision_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(UsageError, match="fp16"):
        resolve_dtype("fp16", "cpu")
    with pytest.raises(UsageError, match="Unknown precision"):
        resolve_dtype("fp8", "cpu")
    with pytest.raises(UsageError, match="Unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(UsageError, match="no CUDA GPU"):
            resolve_device("cuda")


# ------------------------------------------------------------------ (8) working size


class _SDSized(Prior):
    multiple, resolution = 64, 512

    def condition(self, prompt, base, negative_prompt=""):  # pragma: no cover - not used
        raise NotImplementedError

    def encode(self, image):  # pragma: no cover - not used
        raise NotImplementedError

    def predict_noise(self, noisy, t, cond):  # pragma: no cover - not used
        raise NotImplementedError


@pytest.mark.parametrize(
    "hw, expected",
    [((512, 512), (512, 512)), ((3000, 4000), (384, 512)), ((1080, 1920), (256, 512)), ((4000, 100), (512, 64))],
)
def test_working_size_sd_like(hw, expected):
    assert _SDSized().working_size(*hw) == expected


def test_working_size_tiny(prior):
    assert (prior.resolution, prior.multiple) == (TINY_RESOLUTION, TINY_MULTIPLE)
    for h, w in [(100, 200), (200, 100), (64, 64), (1000, 10), (7, 5)]:
        wh, ww = prior.working_size(h, w)
        assert wh % prior.multiple == 0 and ww % prior.multiple == 0
        assert max(wh, ww) == prior.resolution
        if min(wh, ww) > prior.multiple:  # aspect kept to within one rounding step
            assert abs(wh / ww - h / w) <= prior.multiple / min(wh, ww)


# ------------------------------------------------------------------ (9) determinism


def test_same_seed_same_loss(prior):
    cond = prior.condition("a photo", _image())
    image = _image(4)
    assert torch.equal(_loss(prior, cond, image, seed=7), _loss(prior, cond, image, seed=7))
    assert not torch.equal(_loss(prior, cond, image, seed=7), _loss(prior, cond, image, seed=8))


def test_samples_equals_repeated_image(prior):
    cond = prior.condition("a photo", _image())
    a = _image(1).requires_grad_(True)
    b = _image(1).requires_grad_(True)
    la = _loss(prior, cond, a, samples=3)
    lb = _loss(prior, cond, b.repeat_interleave(3, dim=0))
    la.backward()
    lb.backward()
    assert torch.allclose(la, lb, rtol=1e-5)
    assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-4 * b.grad.abs().max().item())


def test_bad_inputs_are_programming_errors(prior):
    cond = prior.condition("a photo", _image())
    with pytest.raises(ValueError):
        prior.sds_loss(_image(size=60), cond, guidance=7.5)
    with pytest.raises(ValueError):
        prior.sds_loss(_image(), cond, guidance=7.5, t_range=(0.9, 0.1))


# ------------------------------------------------------------------ (10) single-file checkpoints


def test_single_file_checkpoint_with_local_config(models, prior, tmp_path, fake_hub_cache):
    single = make_tiny_single_file(models["sd"], tmp_path / "tiny.safetensors")
    p = load_prior(PriorSettings(str(single), device="cpu", options={"model_config": str(models["sd"])}))
    for name in ("unet", "vae", "text_encoder"):
        ours, ref = getattr(p, name).state_dict(), getattr(prior, name).state_dict()
        assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref), name
    cond_a, cond_b = p.condition("a photo", _image()), prior.condition("a photo", _image())
    assert torch.equal(_loss(p, cond_a, _image(2)), _loss(prior, cond_b, _image(2)))


def test_single_file_without_cached_configs(models, tmp_path, fake_hub_cache):
    single = make_tiny_single_file(models["sd"], tmp_path / "tiny.safetensors")
    with pytest.raises(ModelError) as e:
        load_prior(PriorSettings(str(single), device="cpu"))
    text = _one_line(e)
    assert "tiny.safetensors" in text and "lasagna models pull stable-diffusion-v1-5/stable-diffusion-v1-5" in text


# ------------------------------------------------------------------ adapters that don't fit the model


def test_controlnet_for_another_vae_is_refused_before_any_work(tmp_path):
    """A new user's ControlNet: `ControlNetModel.from_unet(unet)` at diffusers' defaults (its hint embedding
    shrinks 8x) over a model whose VAE downsamples by 2. One line, exit 1, before distillation (was exit 70,
    'RuntimeError: The size of tensor a (8) must match ...')."""
    from diffusers import ControlNetModel, UNet2DConditionModel
    from PIL import Image
    from typer.testing import CliRunner

    from lasagna_cli.app import app

    model = make_tiny_sd(tmp_path / "sd-vae2", vae_blocks=2)
    ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(model / "unet")).save_pretrained(tmp_path / "cn")
    Image.new("RGB", (32, 32), (120, 80, 40)).save(tmp_path / "in.png")
    out = tmp_path / "out.psd"
    result = CliRunner().invoke(app, ["shade", str(tmp_path / "in.png"), "-p", "light", "-m", str(model), "--controlnet",
                                      str(tmp_path / "cn"), "--steps", "1", "--device", "cpu", "-o", str(out)],
                                env={"NO_COLOR": "1"})
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    assert "ControlNet shrinks its hint 8x" in lines[0] and "VAE downsamples by 2" in lines[0]
    assert not out.exists()


def test_model_config_flag_reaches_a_single_file_checkpoint(models, tmp_path, fake_hub_cache):
    """--model-config names the architecture of a single-file checkpoint (no cached base repo needed); on a
    folder it is refused in one line rather than ignored."""
    from PIL import Image
    from typer.testing import CliRunner

    from lasagna_cli.app import app

    single = make_tiny_single_file(models["sd"], tmp_path / "tiny.safetensors")
    Image.new("RGB", (64, 64), (120, 80, 40)).save(tmp_path / "in.png")
    out = tmp_path / "out.psd"
    args = ["shade", str(tmp_path / "in.png"), "-p", "light", "--steps", "1", "--device", "cpu", "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "-m", str(single), "--model-config", str(models["sd"])], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.stderr
    assert json.loads(out.with_name(out.name + ".json").read_text())["prior_options"]["model_config"] == str(models["sd"])
    refused = CliRunner().invoke(app, [*args, "-m", str(models["sd"]), "--model-config", str(models["sd"])],
                                 env={"NO_COLOR": "1"})
    assert refused.exit_code == 1 and refused.stderr.strip().splitlines() == [
        f"error: --model-config is for a single-file checkpoint; '{models['sd']}' is not a file."]
