"""`lasagna train controlnet`: a diffusers ControlNet adapter on a Stable Diffusion folder (the authors'
recipe): the base is the hint, the manifest's prompts the text; saved with `save_pretrained`, loadable with
`--controlnet`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UsageError
from ..priors.schedule import NoiseSchedule
from .curve import draw_loss_curve
from .manifest import load_image, read_manifest
from .run import ProgressCallback, RunSettings, TrainingRun, TrainResult, TrainStep


@dataclass
class ControlNetConfig(RunSettings):
    steps: int = 1000
    batch_size: int = 4
    learning_rate: float = 1e-5
    prompt_dropout: float = 0.1
    device: str = "auto"


def train_controlnet(model: str, data: Path, out: Path, config: ControlNetConfig, *, on_progress: ProgressCallback | None = None) -> TrainResult:
    """Train a ControlNet (initialised from the SD U-Net, diffusers' `ControlNetModel.from_unet`) on the
    manifest's train split: base -> hint, prompt -> text, relit image -> denoising target. Only the ControlNet
    learns. Writes `out/` with `save_pretrained` (safetensors) and `out/loss.png`."""
    from diffusers import ControlNetModel

    from ..priors import sd_components
    from ..runtime import quiet_model_libraries, resolve_device

    out = Path(out).resolve()  # `--out .` and the full path name the same folder and the same checkpoint
    if out.exists() and not out.is_dir():  # checked before the model loads and the steps run, not when saving
        raise UsageError(f"{out}: --out must be a folder for the ControlNet, and this is a file")
    quiet_model_libraries()
    started = time.perf_counter()
    device = resolve_device(config.device)
    folder = sd_components.resolve_model_folder(model)
    parts = sd_components.load_components(folder, dtype=torch.float32)
    unet, vae, text_encoder, tokenizer = parts.unet, parts.vae, parts.text_encoder, parts.tokenizer
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval().to(device)
    schedule = NoiseSchedule.from_config(parts.scheduler_config, device)
    prediction = schedule.prediction_type
    if prediction not in ("epsilon", "v_prediction"):
        raise UsageError(f"can't train a ControlNet for a '{prediction}' model")
    size = sd_components.working_resolution(unet, vae)

    examples = read_manifest(data, "train")
    if not examples:
        raise UsageError("the manifest has no training examples")
    torch.manual_seed(config.seed)
    controlnet = ControlNetModel.from_unet(unet).to(device)
    controlnet.train()
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=config.learning_rate, weight_decay=0.0)
    rng = torch.Generator().manual_seed(config.seed)
    from ..priors.pixel_file import model_config

    run = TrainingRun(out, {"model": str(Path(folder).resolve()), "unet": model_config(unet), "size": size, "prediction": prediction}, {"controlnet": controlnet},
                      optimizer, rng, config, {"loss": []}, started)
    run.resume()

    text_cache: dict[str, Tensor] = {}

    @torch.no_grad()
    def embed(prompts: list[str]) -> Tensor:
        for p in set(prompts) - set(text_cache):
            text_cache[p] = sd_components.encode_text(tokenizer, text_encoder, [p])[0]
        return torch.stack([text_cache[p] for p in prompts])

    @torch.no_grad()
    def make_batch() -> dict[str, Tensor]:
        idx = torch.randint(0, len(examples), (config.batch_size,), generator=rng).tolist()
        chosen = [examples[i] for i in idx]
        hint = torch.stack([load_image(e.input, size) for e in chosen]).to(device)
        target = torch.stack([load_image(e.target, size) for e in chosen]).to(device)
        latents = sd_components.encode_latents(vae, target * 2 - 1)
        drop = (torch.rand(len(chosen), generator=rng) < config.prompt_dropout).tolist()
        prompts = ["" if d else e.prompt for d, e in zip(drop, chosen)]
        t = torch.randint(0, schedule.num_train_timesteps, (len(chosen),), generator=rng).to(device)
        noise = torch.randn(latents.shape, generator=rng).to(device)
        return {"noisy": schedule.add_noise(latents, noise, t), "t": t, "text": embed(prompts), "hint": hint,
                "goal": schedule.training_target(latents, noise, t)}

    with run.stopping_on_signals():
        fixed = None
        while not run.finished:
            batch = fixed if fixed is not None else make_batch()
            if config.overfit_one_batch:
                fixed = batch
            down, mid = controlnet(batch["noisy"], batch["t"], encoder_hidden_states=batch["text"],
                                   controlnet_cond=batch["hint"], return_dict=False)
            pred = unet(batch["noisy"], batch["t"], encoder_hidden_states=batch["text"], down_block_additional_residuals=down,
                        mid_block_additional_residual=mid, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), batch["goal"].float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
            optimizer.step()
            stop = run.step_done(float(loss.item()))
            if on_progress is not None:
                on_progress(TrainStep(run.step, config.steps, run.history["loss"][-1], config.learning_rate, run.seconds))
            if stop:
                break

    _save_controlnet(controlnet, out)
    curve = draw_loss_curve(run.history, out / "loss.png", f"ControlNet: loss, {run.step} steps")
    return TrainResult(out, run.step, config.steps, run.seconds, run.finished, curve, run.history)


def _save_controlnet(controlnet: Any, out: Path) -> None:
    """`save_pretrained` into a fresh staging folder beside `out`, then each file into place (config.json
    last): a crash never leaves a half-written file where `--controlnet` loads it, and other files in `out`
    stay."""
    import shutil
    import tempfile

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        controlnet.save_pretrained(str(staging), safe_serialization=True)
        for path in sorted(staging.iterdir(), key=lambda p: p.name == "config.json"):
            path.replace(out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
