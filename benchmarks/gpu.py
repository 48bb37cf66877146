"""GPU speed of the priors GPU users own: SD 1.5 + ControlNet, IC-Light fc and SDXL base, full size, random weights.

    python benchmarks/gpu.py                      # on CUDA: fp16 and bf16, all three priors at native sizes
    python benchmarks/gpu.py --tiny --device cpu  # the same measurements on the test suite's tiny models

For each prior and precision it runs the real distillation loop (`distill`, the prior's own template: shade-sd,
shade-iclight, shade-sdxl, with their noise samples) and reports steps per second, peak GPU memory
(`torch.cuda.max_memory_allocated`; peak RSS on the CPU), and each unavoidable part timed alone at the same
sizes - the prior's batched network call (U-Net, + ControlNet), the encoder's forward and backward, the layer
generator's forward and backward - whose sum is the floor a step can't go under. The encoder's share is its
part of the step; the largest gap is the part (or the overhead above the floor) that costs most, which is where
to act. Random weights have the published architectures' shapes and FLOPs, so the speed is the real models'
(the numbers say nothing about quality). Every timing is bracketed by device synchronisation; medians of
`--repeats` after a warm-up. Writes `--out` (JSON) and prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.harness import CACHE, SD15_SCHEDULER, SD15_TEXT, SD15_UNET, SD15_VAE, peak_rss_mb  # noqa: E402

PRIORS = ("sd15-controlnet", "iclight-fc", "sdxl")
TEMPLATES = {"sd15-controlnet": "shade-sd", "iclight-fc": "shade-iclight", "sdxl": "shade-sdxl"}

SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20), use_linear_projection=True, cross_attention_dim=2048,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)
SDXL_VAE = {**SD15_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
SDXL_TEXT_2 = {**SD15_TEXT, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
               "num_attention_heads": 20, "hidden_act": "gelu", "projection_dim": 1280}
"""SDXL base's published configs (unet/, vae/, text_encoder_2/ of stabilityai/stable-diffusion-xl-base-1.0)."""

TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64), layers_per_block=1,
                 cross_attention_dim=32, attention_head_dim=8)
TINY_XL_UNET = dict(sample_size=8, in_channels=4, out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(32, 64), layers_per_block=1,
                    attention_head_dim=(2, 4), use_linear_projection=True, cross_attention_dim=80,
                    addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=96)
TINY_VAE = {**SD15_VAE, "block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 64}
TINY_TEXT = {**SD15_TEXT, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
TINY_TEXT_2 = {**TINY_TEXT, "hidden_size": 48, "projection_dim": 48}
"""tests/tiny_sd.py's and tests/tiny_sdxl.py's shapes: `--tiny` checks this script on a CPU in seconds."""


def build_prior(kind: str, *, tiny: bool, device: Any, dtype: Any) -> Any:
    """The prior `kind` with random weights of the published (or, `tiny`, the tests') shapes, built on `device`."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from lasagna_core.priors import iclight
    from lasagna_core.priors.sdxl import StableDiffusionXLPrior
    from lasagna_core.priors.stable_diffusion import StableDiffusionPrior
    from tests.tiny_sd import _write_tokenizer_files

    tokens = CACHE / "byte-tokenizer"
    _write_tokenizer_files(tokens)  # ids < 514 of CLIP's 49408: tokenising costs nothing either way
    tokenizer = CLIPTokenizer.from_pretrained(tokens, model_max_length=77)
    xl = kind == "sdxl"
    unet_config = (TINY_XL_UNET if xl else TINY_UNET) if tiny else (SDXL_UNET if xl else SD15_UNET)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**((TINY_VAE if tiny else SDXL_VAE if xl else SD15_VAE)))
        text = CLIPTextModel(CLIPTextConfig(**(TINY_TEXT if tiny else SD15_TEXT)))
        common: dict[str, Any] = dict(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer, scheduler_config=SD15_SCHEDULER,
                                      device=torch.device(device), dtype=dtype, source=f"{kind}-random")
        if xl:
            text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**(TINY_TEXT_2 if tiny else SDXL_TEXT_2)))
            return StableDiffusionXLPrior(text_encoder_2=text_2, tokenizer_2=tokenizer, **common)
        if kind == "sd15-controlnet":
            return StableDiffusionPrior(controlnet=ControlNetModel.from_unet(unet), **common)
        iclight.widen_conv_in(unet, 8)  # the fc offset's shape; its values don't change the cost
        conv = tuple(unet.conv_in.weight.shape)
        return StableDiffusionPrior(light=iclight.IcLight(iclight.Offset(Path("random"), {"conv_in.weight": conv})), **common)


def measure(prior: Any, kind: str, *, steps: int, repeats: int) -> dict[str, Any]:
    """Steps/s of a real distill() run, peak memory, and the floor's parts each timed alone (ms, medians)."""
    import torch

    from lasagna_core.distill import distill
    from lasagna_core.generator import LayerGenerator
    from lasagna_core.templates import load_template

    cuda = prior.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(prior.device)

    def timed(fn: Callable[[], Any]) -> float:
        fn()  # warm-up: kernels chosen, caches filled
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times)

    spec = load_template(TEMPLATES[kind])
    settings = replace(spec.defaults, steps=steps)
    samples = settings.noise_samples
    h, w = prior.working_size(prior.resolution, prior.resolution)
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, h, w, generator=g).to(prior.device)
    cond = prior.condition("light from the left", base)
    distill(base, spec.layers, prior, cond, replace(settings, steps=2), seed=0)  # warm-up run
    if cuda:
        torch.cuda.reset_peak_memory_stats(prior.device)
    sync()
    start = time.perf_counter()
    distill(base, spec.layers, prior, cond, settings, seed=0)
    sync()
    step_ms = 1000 * (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(prior.device) / 2**20 if cuda else peak_rss_mb()

    latent = (samples, prior.vae.config.latent_channels, h // prior.vae_scale, w // prior.vae_scale)
    noisy = torch.randn(latent, generator=g).to(prior.device)
    t = torch.randint(20, 980, (samples,), generator=g).to(prior.device)
    image = base.clone().requires_grad_()
    generator = LayerGenerator(spec.layers).to(prior.device)

    def network() -> None:
        with torch.inference_mode():
            prior._predict(noisy, t, cond, samples)

    def encoder() -> None:
        prior.encode(image).sum().backward()

    def layers() -> None:
        sum(out.color.sum() for out in generator(base)).backward()

    parts = {"prior network": timed(network), "encoder fwd+bwd": timed(encoder), "generator fwd+bwd": timed(layers)}
    floor = sum(parts.values())
    gaps = {**parts, "overhead above the floor": step_ms - floor}
    return {
        "prior": kind, "template": spec.name, "working_size": [h, w], "noise_samples": samples, "steps_timed": steps,
        "step_ms": round(step_ms, 2), "steps_per_s": round(1000 / step_ms, 3), "peak_memory_mib": round(peak, 1),
        "memory": "GPU max_memory_allocated" if cuda else "process peak RSS",
        "parts_ms": {k: round(v, 2) for k, v in parts.items()}, "floor_ms": round(floor, 2),
        "step_over_floor": round(step_ms / floor, 3), "encoder_share": round(parts["encoder fwd+bwd"] / step_ms, 3),
        "largest_gap": max(gaps, key=gaps.get),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| prior | precision | working size | samples | steps/s | step ms | floor ms | step / floor | "
            "prior network ms | encoder ms (share) | generator ms | peak MiB | largest gap |\n" + "|---" * 13 + "|\n")
    return head + "".join(
        f"| {r['prior']} | {r['precision']} | {r['working_size'][0]}x{r['working_size'][1]} | {r['noise_samples']} | "
        f"{r['steps_per_s']} | {r['step_ms']} | {r['floor_ms']} | {r['step_over_floor']} | {r['parts_ms']['prior network']} | "
        f"{r['parts_ms']['encoder fwd+bwd']} ({100 * r['encoder_share']:.0f}%) | {r['parts_ms']['generator fwd+bwd']} | "
        f"{r['peak_memory_mib']} | {r['largest_gap']} |\n" for r in rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precisions", default=None, help="comma-separated: fp16,bf16 (default on CUDA), fp32 (default on CPU)")
    parser.add_argument("--priors", default=",".join(PRIORS))
    parser.add_argument("--steps", type=int, default=20, help="distillation steps timed per run")
    parser.add_argument("--repeats", type=int, default=10, help="timings per part (median)")
    parser.add_argument("--tiny", action="store_true", help="the test suite's tiny shapes instead of the published ones")
    parser.add_argument("--out", type=Path, default=HERE / "gpu-results.json")
    args = parser.parse_args(argv)

    import torch

    device = torch.device(args.device)
    names = (args.precisions or ("fp16,bf16" if device.type == "cuda" else "fp32")).split(",")
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    unknown = sorted(set(names) - set(dtypes)) + sorted(set(args.priors.split(",")) - set(PRIORS))
    if unknown:
        parser.error(f"unknown precision or prior {unknown[0]} (precisions: {', '.join(dtypes)}; priors: {', '.join(PRIORS)})")
    rows = []
    for kind in args.priors.split(","):
        for name in names:
            prior = build_prior(kind, tiny=args.tiny, device=device, dtype=dtypes[name])
            rows.append({"precision": name, **measure(prior, kind, steps=args.steps, repeats=args.repeats)})
            del prior
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "tiny": args.tiny, "command": " ".join(["python", "benchmarks/gpu.py", *(argv if argv is not None else sys.argv[1:])]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(rows))
    return report


if __name__ == "__main__":
    main()
