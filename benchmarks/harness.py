"""Shared pieces of the benchmarks: timers, peak memory, the priors measured, and the step split.

Nothing here is imported by the product. Run the suite with `python benchmarks/run.py` (see its --help).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CACHE = Path(os.environ.get("LASAGNA_BENCH_CACHE", Path(tempfile.gettempdir()) / "lasagna-bench"))


# ---------------------------------------------------------------------------------------------- measuring


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so a peak can be measured for one phase."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def timeit(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                on_warmed: Callable[[], Any] | None = None) -> dict[str, list[float]]:
    """Time several variants round-robin (A B A B ...), so that load from other processes hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    if on_warmed is not None:
        on_warmed()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def summary(seconds: list[float]) -> dict[str, float]:
    """Median and spread (median absolute deviation, as % of the median) of timings, in ms."""
    med = statistics.median(seconds)
    mad = statistics.median(abs(s - med) for s in seconds)
    return {"median_ms": round(med * 1000, 3), "mad_pct": round(100 * mad / med, 1) if med else 0.0, "n": len(seconds)}


# ---------------------------------------------------------------------------------------------- priors


def tiny_sd_folder() -> Path:
    """tests/tiny_sd.py's model, written once into the cache."""
    from tests.tiny_sd import make_tiny_sd

    folder = CACHE / "tiny-sd"
    if not (folder / "model_index.json").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        make_tiny_sd(folder)
    return folder


SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
    scaling_factor=0.18215,
)
SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)
SD15_SCHEDULER = dict(
    _class_name="PNDMScheduler",
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    prediction_type="epsilon",
)


def sd15_prior(*, controlnet: bool = False, device: str = "cpu", dtype: Any = None, **prior_kwargs: Any) -> Any:
    """Stable Diffusion 1.5's architecture (published configs) with random weights: same shapes, same FLOPs.

    The tokenizer is tests/tiny_sd.py's byte-level one (ids < 514 of CLIP's 49408): tokenisation costs
    nothing either way, and the text encoder runs once per run."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from lasagna_core.priors.stable_diffusion import StableDiffusionPrior
    from tests.tiny_sd import _write_tokenizer_files

    dtype = dtype or torch.float32
    tok_dir = CACHE / "sd15-tokenizer"
    _write_tokenizer_files(tok_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
        text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
        cn = ControlNetModel.from_unet(unet) if controlnet else None
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=77)
    return StableDiffusionPrior(
        unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer, scheduler_config=SD15_SCHEDULER,
        controlnet=cn, device=torch.device(device), dtype=dtype, source="sd15-random", **prior_kwargs,
    )


def builtin_prior() -> Any:
    """The shipped built-in prior when its weights are installed, else its default architecture (the one
    `lasagna train builtin` trains, at its default 32 px) with random weights: same shapes, same FLOPs."""
    from lasagna_core.priors import PriorSettings, builtin, load_prior, pixel_file

    if builtin.BuiltinPrior.shipped().is_file():
        return load_prior(PriorSettings("builtin", device="cpu"))
    from lasagna_core.directions import DIRECTION_NAMES
    from lasagna_core.train.builtin import BuiltinConfig

    size = BuiltinConfig.size
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = pixel_file.new_unet(builtin.default_unet_config(size, len(DIRECTION_NAMES)))
    return builtin.BuiltinPrior(unet, classes=list(DIRECTION_NAMES), scheduler_config=pixel_file.default_scheduler_config(),
                                source="builtin-random")


def make_prior(kind: str, **kwargs: Any) -> Any:
    from lasagna_core.priors import PriorSettings, load_prior

    if kind == "tiny":
        return load_prior(PriorSettings(str(tiny_sd_folder()), device="cpu", options={**kwargs}))
    if kind == "sd15":
        return sd15_prior(**kwargs)
    if kind == "builtin":
        return builtin_prior()
    raise ValueError(kind)


# ---------------------------------------------------------------------------------------------- one step, split


def step_split(prior: Any, size: tuple[int, int], *, samples: int, steps: int, repeats: int, template: str = "shade",
               distill_fn: Callable[..., Any] | None = None, warmup: int = 1) -> dict[str, Any]:
    """Time one distillation step and its parts, each alone at the same sizes.

    step:       median interval between on_step callbacks of a real `distill` run (first two dropped).
    prior:      the prior's batched network call (cond + uncond for `samples` noise samples), no autograd.
    encoder:    for latent priors, the VAE encoder forward + backward of one working-size image.
    generator:  G forward + backward.
    blend:      the composition f(x, y) and the regulariser, forward + backward.
    optimiser:  Adam step + zero_grad on G's parameters.
    other:      step - the parts (noise, schedule, SDS formula, surrogate loss, bookkeeping).
    floor:      prior + encoder + generator: the work a step can't avoid.
    """
    import torch

    from lasagna_core.distill import compose, distill, neutral_distance
    from lasagna_core.generator import LayerGenerator
    from lasagna_core.templates import load_template

    distill_fn = distill_fn or distill
    spec = load_template(template)
    settings = replace(spec.defaults, steps=steps, noise_samples=samples)
    h, w = size
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, h, w, generator=g)
    cond = prior.condition("light from the left", base)

    rounds: list[list[float]] = []  # per round: the step intervals of that round's distill() run

    def step_part() -> None:
        """One short distill() run; its per-step intervals (after the first step, when there are enough) count."""
        stamps = [time.perf_counter()]
        distill_fn(base, spec.layers, prior, cond, settings, seed=0, on_step=lambda info: stamps.append(time.perf_counter()))
        new = [b - a for a, b in zip(stamps, stamps[1:])]
        rounds.append(new[1:] if len(new) >= 4 else new)

    # The parts are timed in the form the current loop runs them (channels-last G on the CPU, fused Adam):
    # the floor is the best known form of the unavoidable work, before and after alike.
    gen = LayerGenerator(spec.layers).to(memory_format=torch.channels_last)
    g_base = base.contiguous(memory_format=torch.channels_last)
    params = list(gen.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)

    def generator_part() -> None:
        outs = gen(g_base)
        sum(o.color.sum() + (o.alpha.sum() if o.alpha is not None else 0) for o in outs).backward()

    with torch.no_grad():
        outs0 = gen(base)

    def blend_part() -> None:
        outs = [type(o)(o.color.detach().requires_grad_(), None if o.alpha is None else o.alpha.detach().requires_grad_())
                for o in outs0]
        c = compose(base, spec.layers, outs)
        (c.sum() + neutral_distance(spec.layers, outs)).backward()

    generator_part()

    def optimiser_part() -> None:  # the grads stay populated; the loop's zero_grad(set_to_none=True) is in "other"
        opt.step()

    parts: dict[str, Callable[[], None]] = {"step": step_part, "generator": generator_part, "blend": blend_part,
                                            "optimiser": optimiser_part}
    if hasattr(prior, "vae"):
        latent_hw = (h // prior.vae_scale, w // prior.vae_scale)
        image = base.clone().requires_grad_()

        def encoder_part() -> None:
            latents = prior.encode(image) if hasattr(prior, "encode") else prior.vae.encode(image * 2 - 1).latent_dist.mean
            latents.backward(torch.ones_like(latents))

        parts["encoder"] = encoder_part
        noisy = torch.randn(samples, 4, *latent_hw, generator=g)
        t = torch.randint(20, 980, (samples,), generator=g)

        def prior_part() -> None:
            with torch.inference_mode():
                prior._predict(noisy, t, cond, samples)

        parts["prior"] = prior_part
    elif hasattr(prior, "predict") and hasattr(prior, "null_class"):  # the built-in pixel-space prior: no encoder
        noisy = torch.randn(2 * samples, 3, h, w, generator=g)
        t = torch.randint(20, 980, (2 * samples,), generator=g)
        hint = base.expand(2 * samples, -1, -1, -1) * 2 - 1
        classes = torch.tensor([prior.null_class] * samples + [0] * samples)

        def prior_part() -> None:
            with torch.inference_mode():
                prior.predict(noisy, t, hint, classes)

        parts["prior"] = prior_part
    # Round-robin: a short distill() run, then each part alone, `repeats` times, so load from other processes
    # falls on the step and its parts alike.
    raw = interleaved(parts, repeats, warmup=warmup, on_warmed=rounds.clear)
    raw.pop("step")
    times = {k: summary(v) for k, v in raw.items()}
    intervals = [x for r in rounds for x in r]
    step = summary(intervals)
    # Paired per round (a distill() run and the floor parts timed right after it, under the same load): the
    # overhead share of each round, then its median and spread. Load drifts over seconds, so pairing removes
    # most of it, which the difference of two separately gathered medians does not.
    floor_keys = [k for k in ("prior", "encoder", "generator") if k in raw]
    paired = [100 * (statistics.median(r) - sum(raw[k][i] for k in floor_keys)) / statistics.median(r)
              for i, r in enumerate(rounds) if r]
    paired_med = statistics.median(paired)
    paired_mad = statistics.median(abs(x - paired_med) for x in paired)
    ms = {k: v["median_ms"] for k, v in times.items()}
    floor = ms.get("prior", 0) + ms.get("encoder", 0) + ms["generator"]
    other = step["median_ms"] - sum(ms.values())
    return {
        "size": [h, w],
        "samples": samples,
        "steps_timed": len(intervals),
        "step": step,
        "steps_per_s": round(1000 / step["median_ms"], 3),
        "parts": times,
        "other_ms": round(other, 3),
        "floor_ms": round(floor, 3),
        "overhead_ms": round(step["median_ms"] - floor, 3),
        "overhead_pct_of_step": round(100 * (step["median_ms"] - floor) / step["median_ms"], 1),
        "overhead_pct_paired": round(paired_med, 1),
        "overhead_pct_paired_mad": round(paired_mad, 1),
        "rounds": len(paired),
        "step_over_floor": round(step["median_ms"] / floor, 3),
    }
