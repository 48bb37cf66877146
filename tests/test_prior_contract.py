"""The contract every registered prior family keeps, and a toy family registered from this file alone.

`ToyPrior` below is one class and one registration: `lasagna shade`, `batch` and `eval` reach it by
`--model toy-prior` with no edit anywhere else in the code base. The parametrised contract runs over every
Lasagna family (built-in, Stable Diffusion plain, with a ControlNet and with IC-Light fc and fbc offsets, SDXL;
tiny models) and the toy:
shapes, determinism for a seed, finite gradients, refusals, and capabilities that tell the truth.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from psd_tools import PSDImage
from torch import Tensor
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_cli.prior_flags import PRIOR_FLAGS
from lasagna_core.errors import ModelError, UsageError
from lasagna_core.priors import Capabilities, Condition, Prior, PriorSettings, families, family_for, load_prior, register_prior
from lasagna_core.priors.registry import flag_of
from lasagna_core.priors.schedule import NoiseSchedule

TOY = "toy-prior"


@dataclass(frozen=True)
class ToyCondition(Condition):
    strength: float


@register_prior("toy", title="toy")
class ToyPrior(Prior):
    """Pixel space, conditioned on the prompt's length: its 'noise' estimate leans towards a brighter picture
    the longer the prompt. Enough for the real SDS loop to move the layers; nothing to download."""

    capabilities = Capabilities(samples=False, encoder=False, conditions_on=frozenset({"text"}))
    multiple, resolution = 8, 32

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device, self.dtype, self.source = device, dtype, TOY
        self.schedule = NoiseSchedule(torch.linspace(0.9999, 0.01, 1000, device=device))
        self.seen: list[tuple[int, ...]] = []

    @classmethod
    def probe(cls, model: str) -> bool:
        return model == TOY

    @classmethod
    def load(cls, model: str, config: Any, *, device: torch.device, dtype: torch.dtype) -> ToyPrior:
        return cls(device, dtype)

    def condition(self, prompt: str, base: Tensor, negative_prompt: str = "") -> ToyCondition:
        return ToyCondition(prompt, negative_prompt, strength=len(prompt) / 20)

    def encode(self, image: Tensor) -> Tensor:
        self.seen.append(tuple(image.shape))
        return image.to(self.device, torch.float32) * 2 - 1

    def predict_noise(self, noisy: Tensor, t: Tensor, cond: Condition) -> tuple[Tensor, Tensor]:
        assert isinstance(cond, ToyCondition)
        uncond = 0.1 * noisy
        return uncond, uncond - cond.strength


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})
    return result.exit_code, result.stdout, result.stderr


# ------------------------------------------------------------------------------------------ the priors


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from lasagna_core.priors import builtin, pixel_file
    from tests.relight_data import tiny_unet
    from tests.tiny_sd import make_iclight_offset, make_tiny_sd
    from tests.tiny_sdxl import make_tiny_sdxl

    root = tmp_path_factory.mktemp("contract")
    torch.manual_seed(0)
    weights = pixel_file.save_weights(pixel_file.new_unet(tiny_unet(16, 4)), root / "builtin.safetensors",
                                   task="relight", classes=["left", "right", "top", "bottom"],
                                   scheduler_config=pixel_file.default_scheduler_config())
    sd = make_tiny_sd(root / "sd", controlnet_folder=root / "cn")
    Image.new("RGB", (48, 32), (30, 90, 160)).save(root / "background.png")
    return {"builtin": str(weights), "sd": str(sd), "cn": str(root / "cn"), "sdxl": str(make_tiny_sdxl(root / "sdxl")),
            "fc": str(make_iclight_offset(sd, root / "fc.safetensors")),
            "fbc": str(make_iclight_offset(sd, root / "fbc.safetensors", channels=12)), "background": str(root / "background.png")}


KINDS = ["builtin", "stable-diffusion", "stable-diffusion+controlnet", "stable-diffusion+iclight-fc",
         "stable-diffusion+iclight-fbc", "sdxl", "toy"]


@pytest.fixture(scope="module", params=KINDS)
def prior(request: pytest.FixtureRequest, models: dict[str, str]) -> Prior:
    kind = request.param
    settings = {
        "builtin": PriorSettings(models["builtin"], device="cpu"),
        "stable-diffusion": PriorSettings(models["sd"], device="cpu"),
        "stable-diffusion+controlnet": PriorSettings(models["sd"], device="cpu", options={"controlnet": models["cn"]}),
        "stable-diffusion+iclight-fc": PriorSettings(models["sd"], device="cpu", options={"iclight": models["fc"]}),
        "stable-diffusion+iclight-fbc": PriorSettings(models["sd"], device="cpu", options={
            "iclight": models["fbc"], "background": models["background"]}),
        "sdxl": PriorSettings(models["sdxl"], device="cpu"),
        "toy": PriorSettings(TOY, device="cpu"),
    }[kind]
    return load_prior(settings)


def _prompts(prior: Prior) -> tuple[str, str]:
    if "direction" in prior.capabilities.conditions_on:
        return "light from the left", "light from the right"
    return "a photo of a cat", "a watercolour of a ship at night"


def _base(prior: Prior, seed: int = 0) -> Tensor:
    h, w = prior.working_size(prior.resolution, prior.resolution)
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _loss(prior: Prior, cond: Condition, image: Tensor, seed: int = 3) -> Tensor:
    return prior.sds_loss(image, cond, guidance=5.0, generator=torch.Generator().manual_seed(seed), samples=2)


def test_the_family_that_loaded_it_is_the_one_its_probe_names(prior: Prior, models: dict[str, str]) -> None:
    family = family_for(prior.source)
    assert family.prior is type(prior) and prior.family == family.name
    assert dataclasses.asdict(prior.config) == dataclasses.asdict(family.config({k: v for k, v in
                                                                                 dataclasses.asdict(prior.config).items()}))


def test_shapes(prior: Prior) -> None:
    h, w = prior.working_size(300, 200)
    assert h % prior.multiple == 0 and w % prior.multiple == 0 and h > w
    base = _base(prior)
    cond = prior.condition(_prompts(prior)[0], base)
    assert isinstance(cond, Condition) and cond.prompt == _prompts(prior)[0]
    x = prior.encode(base)
    assert x.dtype == torch.float32 and x.shape[0] == 1 and torch.isfinite(x).all()
    assert (x.shape[-2:] != base.shape[-2:]) == prior.capabilities.encoder  # latents are smaller than the image
    t = torch.tensor([100, 500])
    with torch.no_grad():
        eps_u, eps_c = prior.predict_noise(x.repeat(2, 1, 1, 1), t, cond)
    assert eps_u.shape == eps_c.shape == (2, *x.shape[1:]) and eps_u.dtype == torch.float32


def test_same_seed_same_loss_and_finite_gradient(prior: Prior) -> None:
    base = _base(prior)
    cond = prior.condition(_prompts(prior)[0], base)
    image = _base(prior, 1).requires_grad_(True)
    loss = _loss(prior, cond, image)
    loss.backward()
    assert torch.equal(loss.detach(), _loss(prior, cond, _base(prior, 1)).detach())
    assert not torch.equal(loss.detach(), _loss(prior, cond, _base(prior, 1), seed=4).detach())
    assert image.grad is not None and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


def test_bad_calls_are_refused(prior: Prior) -> None:
    cond = prior.condition(_prompts(prior)[0], _base(prior))
    with pytest.raises(ValueError):
        prior.sds_loss(_base(prior)[:, :2], cond, guidance=5.0)
    with pytest.raises(ValueError):
        prior.sds_loss(_base(prior), cond, guidance=5.0, t_range=(0.9, 0.1))
    with pytest.raises(ModelError, match="--not-an-option"):
        family_for(prior.source).config({"not_an_option": 1})


def test_capabilities_tell_the_truth(prior: Prior) -> None:
    caps = prior.capabilities
    base, other = _base(prior, 0), _base(prior, 5)
    image = _base(prior, 1)
    first, second = _prompts(prior)
    reference = _loss(prior, prior.condition(first, base), image)
    assert not torch.equal(reference, _loss(prior, prior.condition(second, base), image))  # the prompt counts
    assert torch.equal(reference, _loss(prior, prior.condition(first, other), image)) != ("image" in caps.conditions_on)
    if "matte" in caps.conditions_on:  # the matte counts too: the base greyed outside it
        half = torch.ones(1, 1, *base.shape[-2:])
        half[..., : base.shape[-1] // 2] = 0
        assert not torch.equal(reference, _loss(prior, prior.condition(first, base, matte=half), image))
    if caps.rescales:  # a condition made at the working size scores a picture of half that size
        half = torch.nn.functional.interpolate(image, scale_factor=0.5, mode="area")
        small = _loss(prior, prior.condition(first, base), half)
        assert torch.isfinite(small) and not torch.equal(small, _loss(prior, prior.condition(second, base), half))
    if caps.samples:
        out = prior.sample(base.repeat(2, 1, 1, 1), [first, second], steps=2, generator=torch.Generator().manual_seed(0))
        assert out.shape == (2, *base.shape[1:]) and 0 <= out.min() and out.max() <= 1
    else:
        with pytest.raises(UsageError, match="can't generate images directly"):
            prior.sample(base, [first], steps=2)


def test_every_family_config_is_complete_and_has_its_flag() -> None:
    """Forgetting the CLI flag of a new Config field fails here; so does a flag no family has."""
    flags = {flag.flag for flag in PRIOR_FLAGS}
    owned = set()
    for family in families():
        config = family.prior.Config()  # every option has a default
        assert dataclasses.is_dataclass(config) and family.prior.Config.__dataclass_params__.frozen, family.name
        for field in family.config_fields:
            assert flag_of(field.name) in flags, f"{family.name}.Config.{field.name} has no flag in lasagna_cli/prior_flags.py"
            assert field.metadata.get("help"), f"{family.name}.Config.{field.name} has no help"
            owned.add(flag_of(field.name))
    assert flags <= owned, f"flags no family has: {sorted(flags - owned)}"
    for command in ("shade", "colorize", "eval"):
        code, out, _ = run(command, "--help")
        assert code == 0 and all(flag in out for flag in flags), command


def test_settings_travel_as_one_hashable_picklable_object() -> None:
    import pickle

    settings = PriorSettings("m", "cpu", options={"vae": "x", "low_memory": True})
    assert pickle.loads(pickle.dumps(settings)) == settings and hash(settings) == hash(PriorSettings("m", "cpu", options={
        "low_memory": True, "vae": "x"}))
    assert settings.option_values() == {"low_memory": True, "vae": "x"}


# ------------------------------------------------------------------------------------------ the toy, end to end


@pytest.fixture()
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    Image.fromarray((torch.rand(40, 56, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()).save(path)
    return path


def test_toy_prior_shades_through_the_cli(picture: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.psd"
    code, _, err = run("shade", str(picture), "-p", "light from the left", "-m", TOY, "--steps", "3", "--device", "cpu",
                       "-o", str(out))
    assert code == 0, err
    assert [(layer.name, layer.blend_mode.name) for layer in PSDImage.open(out)][1:] == [("Shadows", "MULTIPLY"), ("Light", "SCREEN")]
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert (record["model"], record["prior"], record["prior_options"]) == (TOY, "toy", {})


def test_toy_prior_runs_a_batch_through_the_cli(picture: Path, tmp_path: Path) -> None:
    """`lasagna batch` on one device edits in this process, where the toy is registered. Worker processes
    (`--devices cpu,cpu`, Ray) are fresh interpreters that know Lasagna's own families only, so this test
    keeps to the one-device path."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        (src / name).write_bytes(picture.read_bytes())
    out = tmp_path / "out"
    code, stdout, err = run("batch", "shade", str(src), str(out), "-p", "light from the left", "-m", TOY, "--steps", "2",
                            "--devices", "cpu", "--json")
    assert code == 0, err
    assert [(Path(rec["input"]).name, rec["status"]) for rec in map(json.loads, stdout.splitlines())] == [("a.png", "ok"), ("b.png", "ok")]
    for name in ("a", "b"):
        assert [(layer.name, layer.blend_mode.name) for layer in PSDImage.open(out / f"{name}.psd")][1:] == [
            ("Shadows", "MULTIPLY"), ("Light", "SCREEN")]
        record = json.loads((out / f"{name}.psd.json").read_text())
        assert (record["model"], record["prior"]) == (TOY, "toy")


def test_toy_prior_refuses_an_option_it_lacks_in_one_line(picture: Path, tmp_path: Path) -> None:
    code, _, err = run("shade", str(picture), "-p", "light", "-m", TOY, "--vae", "somewhere", "--steps", "1", "-o",
                       str(tmp_path / "out.psd"))
    assert code == 1 and err.strip().splitlines() == [
        "error: --vae needs a Stable Diffusion or Stable Diffusion XL model; the toy prior has no such option."]
    assert not (tmp_path / "out.psd").exists()


def test_toy_prior_is_evaluated_through_the_cli(tmp_path: Path) -> None:
    from tests.relight_data import make_manifest

    data = make_manifest(tmp_path / "data", scenes=2, size=16, directions=("left",))
    code, _, err = run("eval", "--data", str(data), "--model", TOY, "--steps", "2")
    assert code == 2 and "can't do (pass --no-direct)" in err
    code, out, err = run("eval", "--data", str(data), "--model", TOY, "--steps", "2", "--no-direct", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["model"] == TOY and set(report["summary"]) == {"base", "lasagna", "ground truth"}


def test_generator_may_work_above_the_prior_size(picture: Path, tmp_path: Path) -> None:
    """`[generator] resolution` larger than the prior's: the layers are distilled at 48 px while the prior
    scores the composite resized to its own 32 px; width and depth come from the same table."""
    shade = (Path(__file__).resolve().parents[1] / "templates" / "shade.toml").read_text(encoding="utf-8")
    template = tmp_path / "fine.toml"
    template.write_text(shade.replace("[defaults]", "[generator]\nresolution = 48\nwidth = 16\nlevels = 2\n\n[defaults]"),
                        encoding="utf-8")
    from lasagna_core.edit import EditConfig, EditJob, run_edit

    prior = load_prior(PriorSettings(TOY, device="cpu"))
    job = EditJob(picture, "light", EditConfig(template=str(template), prior=PriorSettings(TOY, "cpu"), steps=2),
                  output=tmp_path / "out.psd")
    result = run_edit(job, prior=prior)
    assert result.record["working_size"] == [32, 48] and result.record["generator"] == {"width": 16, "levels": 2, "resolution": 48, "sample_steps": 0}
    assert set(prior.seen) == {(1, 3, 24, 32)}  # the prior's working size for a 40 x 56 picture
    assert PSDImage.open(result.output)[1].numpy().shape[:2] == (40, 56)
    template.write_text(shade.replace("[defaults]", "[generator]\ndepth = 3\n\n[defaults]"), encoding="utf-8")
    code, _, err = run("shade", str(picture), "-p", "light", "-t", str(template), "-m", TOY, "-o", str(tmp_path / "x.psd"))
    assert code == 2 and "unknown [generator] keys: depth" in err


def test_coarse_steps_score_the_first_steps_at_half_the_prior_size(picture: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`[defaults] coarse_steps = 2`: the first two steps see the composite at half the prior's working size,
    the rest at the full one; a prior that can't score smaller pictures is refused in one line before it loads,
    by shade and by eval."""
    shade = (Path(__file__).resolve().parents[1] / "templates" / "shade.toml").read_text(encoding="utf-8")
    template = tmp_path / "coarse.toml"
    template.write_text(shade.replace("[defaults]", "[defaults]\ncoarse_steps = 2"), encoding="utf-8")
    out = tmp_path / "x.psd"
    code, _, err = run("shade", str(picture), "-p", "light", "-t", str(template), "-m", TOY, "--steps", "3", "-o", str(out))
    assert code == 2 and err.strip().splitlines() == [
        "error: coarse_steps: this prior scores pictures only at its working size (the built-in priors take coarse steps)"]
    assert not out.exists()
    from tests.relight_data import make_manifest

    data = make_manifest(tmp_path / "data", scenes=1, size=16, directions=("left",))
    code, _, eval_err = run("eval", "--data", str(data), "--model", TOY, "-t", str(template), "--no-direct")
    assert code == 2 and eval_err == err
    from lasagna_core.edit import EditConfig, EditJob, run_edit

    monkeypatch.setattr(ToyPrior, "capabilities", dataclasses.replace(ToyPrior.capabilities, rescales=True))
    prior = load_prior(PriorSettings(TOY, device="cpu"))
    job = EditJob(picture, "light", EditConfig(template=str(template), prior=PriorSettings(TOY, "cpu"), steps=3), output=out)
    result = run_edit(job, prior=prior)
    assert prior.seen == [(1, 3, 16, 16), (1, 3, 16, 16), (1, 3, 24, 32)]  # half of 24 x 32 in multiples of 8, then 24 x 32
    assert result.record["settings"]["coarse_steps"] == 2


def test_the_registry_and_settings_import_no_torch() -> None:
    """Settings objects are made at CLI start-up and in batch planning: no torch, diffusers or numpy for them."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import sys; from lasagna_core.priors import PriorSettings, register_prior; PriorSettings('builtin')\n"
            "sys.stderr.write('HEAVY=' + ','.join(m for m in ('torch', 'diffusers', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stderr.strip().endswith("HEAVY="), proc.stderr[-500:]
