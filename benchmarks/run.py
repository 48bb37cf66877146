"""Lasagna's speed and memory benchmarks: run on demand, never as timed tests.

    python benchmarks/run.py            # everything (about an hour on a 2-core CPU; SD-1.5-sized steps dominate)
    python benchmarks/run.py --quick    # fewer repeats, SD-1.5-sized measurements at 1 step
    python benchmarks/run.py --only startup levers   # some sections; the others are kept from results.json
    python benchmarks/run.py --big      # also the 8192 x 8192 document (needs ~10 GB of free memory; run it alone)

Writes benchmarks/results.json and benchmarks/RESULTS.md. Every measurement that compares two variants runs
them interleaved (A B A B ...) in one process and reports medians with the median absolute deviation (MAD,
as % of the median) as the noise level. Each section runs in its own subprocess so that its peak RSS is its own.
Torch runs with one intra-op thread (`--threads`): on a shared 2-core machine two threads fight other
processes for the cores and a step gets up to 40x slower (measured in the `threads` lever).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from benchmarks import flats, harness  # noqa: E402
from benchmarks.harness import interleaved, peak_rss_mb, summary  # noqa: E402

RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
PY = sys.executable
SECTIONS = ("startup", "tiny", "builtin", "levers", "lowmem", "e2e", "sd15", "bigdoc", "flats")


# ============================================================================================== workers
# Each worker runs in a fresh interpreter (`run.py --worker NAME`), prints one JSON object on its last line.


def _torch_setup(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def worker_tiny(args: argparse.Namespace) -> dict[str, Any]:
    """The tiny test SD model on a 512 x 512 input (working size 64 x 64), 4 noise samples: split and floor."""
    prior = harness.make_prior("tiny")
    h, w = prior.working_size(512, 512)
    steps, repeats = (8, 6) if args.quick else (10, 20)
    out = harness.step_split(prior, (h, w), samples=4, steps=steps, repeats=repeats)
    out["input"] = [512, 512]
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def worker_builtin(args: argparse.Namespace) -> dict[str, Any]:
    prior = harness.make_prior("builtin")
    h, w = prior.working_size(512, 512)
    steps, repeats = (8, 6) if args.quick else (10, 20)
    out = harness.step_split(prior, (h, w), samples=4, steps=steps, repeats=repeats)
    out["input"] = [512, 512]
    out["source"] = prior.source
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def worker_sd15(args: argparse.Namespace) -> dict[str, Any]:
    """SD-1.5-sized random-weight models at 512 px: a step's split and floor (1 noise sample: on a CPU one
    step takes minutes), and the encoder's gradient paths (full, half resolution, a TAESD-sized tiny AE)."""
    import torch

    result: dict[str, Any] = {}
    t0 = time.perf_counter()
    if args.sd_model:  # real weights (a local SD 1.x/2.x folder): the gradient comparisons then mean something
        from lasagna_core.priors import PriorSettings, load_prior

        prior = load_prior(PriorSettings(args.sd_model, device="cpu"))
        result["model"] = args.sd_model
    else:
        prior = harness.make_prior("sd15")
        result["model"] = "sd15-random"
    result["build_s"] = round(time.perf_counter() - t0, 1)
    size = prior.working_size(512, 512)
    steps = 2 if args.quick else 3
    split = harness.step_split(prior, size, samples=1, steps=steps, repeats=1, warmup=0)
    split["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["step"] = split
    result["encoder"] = encoder_paths(prior, size, repeats=1 if args.quick else 2, taesd=args.taesd)
    return result


def encoder_paths(prior: Any, size: tuple[int, int], *, repeats: int, taesd: str | None = None) -> dict[str, Any]:
    """Time the encoder's forward+backward for each gradient path, and compare each path's SDS gradient on the
    image with the full encoder's (same image, t and noise): cosine similarity and relative norm."""
    import torch
    from diffusers import AutoencoderTiny

    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, *size, generator=g)
    cond = prior.condition("light from the left", image)
    if taesd:  # a real TAESD (e.g. madebyollin/taesd saved locally)
        tiny = AutoencoderTiny.from_pretrained(taesd, use_safetensors=True, local_files_only=True).eval().requires_grad_(False)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            tiny = AutoencoderTiny().eval().requires_grad_(False)  # TAESD's architecture (diffusers defaults)

    def set_path(name: str) -> None:
        prior.fast_encoder = "half" if name == "half" else None
        prior.encoder_vae = tiny if name == "tiny-ae" else None

    def fwd_bwd(name: str):
        def run() -> None:
            set_path(name)
            x = image.clone().requires_grad_()
            prior.encode(x).sum().backward()
        return run

    names = ["full", "half", "tiny-ae"]
    times = interleaved({n: fwd_bwd(n) for n in names}, repeats, warmup=0)

    def sds_grad(name: str) -> torch.Tensor:
        set_path(name)
        x = image.clone().requires_grad_()
        noise = torch.Generator().manual_seed(1)
        prior.sds_loss(x, cond, guidance=12.0, generator=noise, samples=1).backward()
        return x.grad.flatten()

    def vjp(name: str, latent_grad: torch.Tensor) -> torch.Tensor:
        """The same latent-space gradient pushed back to the image through one path's encoder."""
        set_path(name)
        x = image.clone().requires_grad_()
        prior.encode(x).backward(latent_grad)
        return x.grad.flatten()

    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return round(float(torch.nn.functional.cosine_similarity(a, b, dim=0)), 4)

    full = sds_grad("full")
    set_path("full")
    with torch.no_grad():
        latent_shape = prior.encode(image).shape
    latent_grad = torch.randn(latent_shape, generator=torch.Generator().manual_seed(2))
    full_vjp = vjp("full", latent_grad)
    effect = {}
    for name in ("half", "tiny-ae") if taesd else ("half",):  # a random tiny AE's gradient would compare nothing
        other = sds_grad(name)
        other_vjp = vjp(name, latent_grad)
        effect[name] = {
            "sds_grad_cosine_vs_full": cos(full, other),
            "sds_grad_norm_ratio_vs_full": round(float(other.norm() / full.norm()), 4),
            "encoder_vjp_cosine_vs_full": cos(full_vjp, other_vjp),
        }
    set_path("full")
    out = {n: summary(times[n]) for n in names}
    return {"fwd_bwd": out, "speedup_vs_full": {n: round(out["full"]["median_ms"] / out[n]["median_ms"], 2) for n in names},
            "gradient_effect": effect}


def worker_levers(args: argparse.Namespace) -> dict[str, Any]:
    """Each lever before/after, interleaved in this one process, on the tiny SD model at 64 x 64 (4 samples)."""
    import torch

    from benchmarks.baseline import baseline_distill, baseline_sds_loss
    from lasagna_core.distill import distill
    from lasagna_core.generator import LayerGenerator
    from lasagna_core.templates import load_template

    quick = args.quick
    prior = harness.make_prior("tiny")
    spec = load_template("shade")
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 64, 64, generator=g)
    cond = prior.condition("light from the left", base)
    reps = 15 if quick else 40
    out: dict[str, Any] = {}

    def pair(name: str, before: Any, after: Any, repeats: int = reps, note: str = "") -> None:
        t = interleaved({"before": before, "after": after}, repeats)
        b, a = summary(t["before"]), summary(t["after"])
        out[name] = {"before": b, "after": a, "speedup": round(b["median_ms"] / a["median_ms"], 3), "note": note}

    # 1. Adam: per-tensor loop (PyTorch's CPU default) vs the fused kernel.
    def adam(**kw: Any):
        gen = LayerGenerator(spec.layers)
        for q in gen.parameters():
            q.grad = torch.randn_like(q)
        opt = torch.optim.Adam(gen.parameters(), lr=1e-3, **kw)
        return opt.step
    pair("fused Adam (optimiser step)", adam(), adam(fused=True), note="G has 473k parameters in 42 tensors")

    # 2. G's forward+backward, contiguous vs channels-last (oneDNN).
    def gen_fb(channels_last: bool):
        gen = LayerGenerator(spec.layers)
        x = base
        if channels_last:
            gen = gen.to(memory_format=torch.channels_last)
            x = base.contiguous(memory_format=torch.channels_last)

        def run() -> None:
            outs = gen(x)
            sum(o.color.sum() for o in outs).backward()
        return run
    pair("channels-last generator (G fwd+bwd)", gen_fb(False), gen_fb(True), repeats=reps // 2)

    # 3. The frozen U-Net call: no_grad vs inference_mode.
    noisy = torch.randn(4, 4, 8, 8, generator=g)
    t = torch.randint(20, 980, (4,), generator=g)

    def unet(mode: Any):
        def run() -> None:
            with mode():
                prior._predict(noisy, t, cond, 4)
        return run
    pair("inference_mode for the prior (U-Net call)", unet(torch.no_grad), unet(torch.inference_mode))

    # 4. sds_loss forward+backward alone: per-step add_noise tables, text/hint repeat, no_grad -> all levers in it.
    image = base.clone()

    def sds(fn: Any):
        def run() -> None:
            x = image.clone().requires_grad_()
            fn(prior, x, cond, guidance=12.0, generator=torch.Generator().manual_seed(0), samples=4).backward()
        return run
    pair("sds_loss (noise tables once, cached text/hint, inference_mode)", sds(baseline_sds_loss),
         sds(lambda p, *a, **k: p.sds_loss(*a, **k)))

    # 5. The whole step: the loop as it was vs as it is (all levers), interleaved in chunks.
    settings = spec.defaults.__class__(**{**spec.defaults.__dict__, "steps": 12 if quick else 20})

    def loop(fn: Any):
        stamps: list[float] = []

        def run() -> None:
            local = [time.perf_counter()]
            fn(base, spec.layers, prior, cond, settings, seed=0, on_step=lambda info: local.append(time.perf_counter()))
            stamps.extend(b - a for a, b in zip(local[2:], local[3:]))
        run.stamps = stamps  # type: ignore[attr-defined]
        return run
    before, after = loop(baseline_distill), loop(distill)
    interleaved({"before": before, "after": after}, 4 if quick else 8, warmup=1)
    b, a = summary(before.stamps), summary(after.stamps)
    out["whole step (all levers)"] = {"before": b, "after": a, "speedup": round(b["median_ms"] / a["median_ms"], 3),
                                      "note": "per-step intervals of distill() runs, interleaved"}

    # 6. Checks, not levers: one batched U-Net call per step, the text encoder once per run.
    calls = {"unet": 0, "text_encoder": 0}
    hooks = [prior.unet.register_forward_hook(lambda *a: calls.__setitem__("unet", calls["unet"] + 1)),
             prior.text_encoder.register_forward_hook(lambda *a: calls.__setitem__("text_encoder", calls["text_encoder"] + 1))]
    c2 = prior.condition("light from the left", base)
    distill(base, spec.layers, prior, c2, settings.__class__(**{**settings.__dict__, "steps": 5}), seed=0)
    for hook in hooks:
        hook.remove()
    out["checks"] = {"unet_calls_per_step": calls["unet"] / 5, "text_encoder_calls_per_run": calls["text_encoder"],
                     "attention_processors": sorted({type(a).__name__ for a in prior.unet.attn_processors.values()}),
                     "host_syncs": "loss/weights finiteness check every 25 steps only (distill.CHECK_EVERY)"}

    # 7. Threads: the same step at 1 and 2 intra-op threads (a property of this shared machine, not a lever).
    def threads(n: int):
        def run() -> None:
            torch.set_num_threads(n)
            try:
                after()
            finally:
                torch.set_num_threads(args.threads)
        return run
    after.stamps.clear()
    st: dict[str, list[float]] = {}
    for n in (1, 2):
        after.stamps.clear()
        run = threads(n)
        t_start = time.perf_counter()
        run()
        st[str(n)] = list(after.stamps)
        if time.perf_counter() - t_start > 120:
            break
    out["threads (step ms at 1 and 2 intra-op threads)"] = {k: summary(v) for k, v in st.items() if v}
    if not quick:
        out["torch.compile (generator)"] = compile_lever(spec, base)
    return out


def compile_lever(spec: Any, base: Any) -> dict[str, Any]:
    """torch.compile of G (fwd+bwd): compile time and steady-state time vs eager; optional, not kept unless it wins."""
    import torch

    from lasagna_core.generator import LayerGenerator

    eager = LayerGenerator(spec.layers).to(memory_format=torch.channels_last)
    x = base.contiguous(memory_format=torch.channels_last)
    errors = []
    for fmt in (torch.channels_last, torch.contiguous_format):  # inductor's channels-last replicate-pad backward fails
        try:
            torch._dynamo.reset()
            xc = base.contiguous(memory_format=fmt)
            compiled = torch.compile(LayerGenerator(spec.layers).to(memory_format=fmt))
            t0 = time.perf_counter()
            outs = compiled(xc)
            sum(o.color.sum() for o in outs).backward()
            compile_s = time.perf_counter() - t0
            break
        except Exception as e:  # no compiler, unsupported op...
            errors.append(f"{fmt}: {type(e).__name__}: {str(e).splitlines()[0][:150]}")
    else:
        return {"error": " | ".join(errors)}

    def fb(m: Any, inp: Any):
        def run() -> None:
            outs = m(inp)
            sum(o.color.sum() for o in outs).backward()
        return run
    t = interleaved({"eager": fb(eager, x), "compiled": fb(compiled, xc)}, 15)
    e, c = summary(t["eager"]), summary(t["compiled"])
    return {"compile_s": round(compile_s, 1), "eager": e, "compiled": c, "speedup": round(e["median_ms"] / c["median_ms"], 3),
            "compiled_format": str(fmt), "errors": errors}


def worker_lowmem(args: argparse.Namespace) -> dict[str, Any]:
    """--low-memory on the CPU with the tiny model: it runs, and its SDS gradient matches the default path's."""
    import torch

    from lasagna_core.priors import PriorSettings, load_prior

    folder = str(harness.tiny_sd_folder())
    normal = load_prior(PriorSettings(folder, device="cpu"))
    low = load_prior(PriorSettings(folder, device="cpu", options={"low_memory": True}))
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def grad(prior: Any) -> torch.Tensor:
        cond = prior.condition("light from the left", image)
        x = image.clone().requires_grad_()
        prior.sds_loss(x, cond, guidance=12.0, generator=torch.Generator().manual_seed(1), samples=4).backward()
        return x.grad.flatten()

    a, b = grad(normal), grad(low)
    cond_n, cond_l = normal.condition("x", image), low.condition("x", image)

    def fb(prior: Any, cond: Any):
        def run() -> None:
            x = image.clone().requires_grad_()
            prior.sds_loss(x, cond, guidance=12.0, generator=torch.Generator().manual_seed(1), samples=4).backward()
        return run
    t = interleaved({"default": fb(normal, cond_n), "low_memory": fb(low, cond_l)}, 10 if args.quick else 25)
    return {
        "cosine": round(float(torch.nn.functional.cosine_similarity(a, b, dim=0)), 6),
        "max_abs_diff": float((a - b).abs().max()),
        "sds_fwd_bwd": {k: summary(v) for k, v in t.items()},
    }


def worker_e2e_phases(args: argparse.Namespace) -> dict[str, Any]:
    """Where the fixed cost of a `lasagna shade` goes: the imports (fresh interpreters, median of 3, minus a bare
    interpreter), then in this process the model load (after a first load has imported the model classes) and a
    1-step edit."""
    env = _env(args)
    bare = statistics.median(_wait_rss([PY, "-c", "pass"], env)[0] for _ in range(3))
    heavy = ("import torch, diffusers, transformers; from diffusers import UNet2DConditionModel, AutoencoderKL, DDPMScheduler; "
             "from transformers import CLIPTextModel, CLIPTokenizer; import lasagna_core.edit")
    out: dict[str, Any] = {
        "import_torch_s": round(statistics.median(_wait_rss([PY, "-c", "import torch"], env)[0] for _ in range(3)) - bare, 2),
        "import_diffusers_transformers_lasagna_s": round(
            statistics.median(_wait_rss([PY, "-c", heavy], env)[0] for _ in range(3)) - bare, 2),
    }
    from lasagna_core.edit import EditConfig, EditJob, load_edit_prior, run_edit
    from lasagna_core.priors import PriorSettings

    config = EditConfig(prior=PriorSettings(str(harness.tiny_sd_folder()), device="cpu"), steps=1)
    load_edit_prior(config)
    for n in (512, 2048):
        src = Path(args.path) / f"in-{n}.png"
        job = EditJob(input=src, prompt="light from the left", config=config, output=Path(args.path) / f"phases-{n}.psd")
        t3 = time.perf_counter()
        prior = load_edit_prior(config)
        t4 = time.perf_counter()
        run_edit(job, prior=prior)
        t5 = time.perf_counter()
        out[f"{n}px"] = {"load_prior_s": round(t4 - t3, 2), "run_edit_1_step_s": round(t5 - t4, 2)}
    return out


def worker_lowmem_vae(args: argparse.Namespace) -> dict[str, Any]:
    """The SD-1.5-sized VAE encoder's forward+backward at 512 px with and without gradient checkpointing (what
    --low-memory switches on): peak RSS above the resting RSS (fp32 on the CPU; fp16 on a GPU halves it), time,
    and whether the gradient is the same."""
    import torch
    from diffusers import AutoencoderKL

    from benchmarks.harness import reset_peak_rss

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(**harness.SD15_VAE).eval().requires_grad_(False)
    image = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    out: dict[str, Any] = {}
    grads = {}
    for name in ("default", "checkpointed"):
        if name == "checkpointed":
            vae.enable_gradient_checkpointing()
        import gc

        gc.collect()
        reset_peak_rss()
        rest = peak_rss_mb()
        t0 = time.perf_counter()
        x = image.clone().requires_grad_()
        vae.encode(x * 2 - 1).latent_dist.mean.sum().backward()
        seconds = time.perf_counter() - t0
        out[name] = {"activation_peak_mb": round(peak_rss_mb() - rest, 1), "seconds": round(seconds, 1)}
        grads[name] = x.grad.flatten()
    out["gradient_cosine"] = round(float(torch.nn.functional.cosine_similarity(grads["default"], grads["checkpointed"], dim=0)), 6)
    return out


def worker_bigdoc_make(args: argparse.Namespace) -> dict[str, Any]:
    path = big_document()
    return {"path": str(path), "bytes": path.stat().st_size}


def big_document() -> Path:
    """An 8192 x 8192 8-bit RGB PSD: a full-canvas background and 9 layers of 1024..8192 px with smooth,
    painting-like content (RLE-compressible, like real artwork), various blend modes, and Photoshop-style
    stored merged image (written by psd-tools' compositor)."""
    import numpy as np
    from psd_tools import PSDImage
    from psd_tools.constants import BlendMode

    path = harness.CACHE / "big-8192.psd"
    if path.is_file():
        return path
    harness.CACHE.mkdir(parents=True, exist_ok=True)
    n = 8192
    psd = PSDImage.new("RGB", (n, n), depth=8)
    rng = np.random.default_rng(0)
    modes = [BlendMode.NORMAL, BlendMode.MULTIPLY, BlendMode.SCREEN, BlendMode.OVERLAY, BlendMode.NORMAL]
    for i in range(10):
        side = n if i == 0 else int(rng.integers(1024, n + 1))
        yy = np.linspace(0, 1, side, dtype=np.float32)[:, None]
        xx = np.linspace(0, 1, side, dtype=np.float32)[None, :]
        planes = [np.floor(16 * (0.5 + 0.5 * np.sin(6.28 * (f1 * xx + f2 * yy) + ph))) / 16
                  for f1, f2, ph in rng.uniform(0.2, 2.0, (3, 3))]
        pixels = (np.stack(planes, axis=2) * 255).astype(np.uint8)
        del planes
        top, left = (0, 0) if i == 0 else (int(rng.integers(0, n - side + 1)), int(rng.integers(0, n - side + 1)))
        psd.create_pixel_layer_from_array(pixels, name=f"Layer {i}", top=top, left=left,
                                          blend_mode=modes[i % len(modes)] if i else BlendMode.NORMAL)
        del pixels
    tmp = path.with_suffix(".tmp")
    psd.save(tmp)
    tmp.replace(path)
    return path


def _two_layers(n: int) -> list[Any]:
    """Two full-size gray float32 layers like `shade` writes (Multiply shadows, Screen light)."""
    import numpy as np

    from lasagna_core.layers import BlendMode, PixelNode

    yy = np.linspace(0, 1, n, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, n, dtype=np.float32)[None, :]
    shadows = (0.6 + 0.4 * xx * np.ones_like(yy))[None]
    light = (0.3 * (1 - yy) * np.ones_like(xx))[None]
    return [PixelNode("Shadows", shadows.astype(np.float32), None, blend_mode=BlendMode.MULTIPLY),
            PixelNode("Light", light.astype(np.float32), None, blend_mode=BlendMode.SCREEN)]


def worker_bigdoc_floor(args: argparse.Namespace) -> dict[str, Any]:
    """psd-tools alone: open, read the merged image, add two layers, save (public save() re-composites)."""
    import numpy as np
    from psd_tools import PSDImage
    from psd_tools.constants import BlendMode as PsdBlendMode

    src, out = Path(args.path), Path(args.out)
    raw = args.variant == "raw"
    t0 = time.perf_counter()
    psd = PSDImage.open(src)
    merged = psd.numpy()
    t_read = time.perf_counter() - t0
    layers = _two_layers(psd.width)
    t1 = time.perf_counter()
    for node in layers:
        psd.create_pixel_layer_from_array(np.ascontiguousarray(np.repeat(node.color, 3, 0).transpose(1, 2, 0)),
                                          name=node.name, blend_mode=PsdBlendMode[node.blend_mode.name])
    if raw:  # no re-composite: the bare record write, the least any writer must do
        with open(out, "wb") as f:
            psd._record.write(f)
    else:
        psd.save(out)
    t_write = time.perf_counter() - t1
    del merged
    return {"read_s": round(t_read, 2), "write_s": round(t_write, 2), "total_s": round(t_read + t_write, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1), "out_bytes": out.stat().st_size}


def worker_bigdoc_project(args: argparse.Namespace) -> dict[str, Any]:
    """Lasagna: document.load (merged image as the base) + save_psd with two new top layers."""
    from lasagna_core.document import load
    from lasagna_core.writing import save_psd

    src, out = Path(args.path), Path(args.out)
    t0 = time.perf_counter()
    doc = load(src)
    t_read = time.perf_counter() - t0
    layers = _two_layers(doc.width)
    if args.variant == "before":
        from benchmarks.baseline import baseline_save_psd as save_psd  # noqa: F811 - the writer as it was
    t1 = time.perf_counter()
    save_psd(doc, layers, out)
    t_write = time.perf_counter() - t1
    return {"read_s": round(t_read, 2), "write_s": round(t_write, 2), "total_s": round(t_read + t_write, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1), "out_bytes": out.stat().st_size}


def worker_upsample(args: argparse.Namespace) -> dict[str, Any]:
    """Guided upsampling of two 64 x 64 gray layers to 8192 x 8192 (what the pipeline does after distilling)."""
    import torch

    from lasagna_core.resample import guided_upsample, resize

    n = 8192
    base = torch.rand(1, 3, n, n)
    rss0 = peak_rss_mb()
    base_low = resize(base, (64, 64))
    layer = torch.rand(1, 1, 64, 64)
    t0 = time.perf_counter()
    for _ in range(2):
        up = guided_upsample(layer, base_low, base).clamp(0, 1)
        del up
    return {"seconds_two_layers": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
            "base_rss_mb": round(rss0, 1)}


WORKERS = {
    "tiny": worker_tiny, "builtin": worker_builtin, "sd15": worker_sd15, "levers": worker_levers, "lowmem": worker_lowmem,
    "bigdoc_make": worker_bigdoc_make, "bigdoc_floor": worker_bigdoc_floor, "bigdoc_project": worker_bigdoc_project,
    "upsample": worker_upsample, "lowmem_vae": worker_lowmem_vae, "e2e_phases": worker_e2e_phases,
    "flats": lambda args: flats.worker(args.quick),
}


# ============================================================================================== the parent


def run_worker(name: str, args: argparse.Namespace, *extra: str, timeout: float = 7200) -> dict[str, Any]:
    cmd = [PY, str(Path(__file__)), "--worker", name, "--threads", str(args.threads), *extra] + (["--quick"] if args.quick else [])
    cmd += [f"--sd-model={args.sd_model}"] if args.sd_model else []
    cmd += [f"--taesd={args.taesd}"] if args.taesd else []
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(args))
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": f"worker {name} failed ({proc.returncode}): " + " | ".join(tail)}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


def _env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), NO_COLOR="1",
               TRANSFORMERS_VERBOSITY="error", DIFFUSERS_VERBOSITY="error", PYTHONPATH=str(REPO))
    return env


LAST_CPU_S = [0.0]


def _wait_rss(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of one command, measured with wait4 for exactly that child;
    its CPU time (user + system, which other processes' load does not inflate) goes to LAST_CPU_S[0]."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    LAST_CPU_S[0] = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss / 1024, proc.returncode


def section_startup(args: argparse.Namespace) -> dict[str, Any]:
    """Wall clock of the fast commands (median of N fresh processes), their heavy imports, and -X importtime."""
    lasagna = str(Path(PY).with_name("lasagna"))
    example = str(REPO / "examples" / "still-life.psd")
    commands = {"--help": ["--help"], "--version": ["--version"], "templates": ["templates"], "inspect": ["inspect", example]}
    n = 5 if args.quick else 11
    env = _env(args)
    out: dict[str, Any] = {"python_baseline": {}}
    bare = [_wait_rss([PY, "-c", "pass"], env)[0] for _ in range(n)]
    out["python_baseline"] = summary(bare)
    for name, argv in commands.items():
        walls, cpus = [], []
        for _ in range(n):
            wall, rss, code = _wait_rss([lasagna, *argv], env)
            walls.append(wall)
            cpus.append(LAST_CPU_S[0])
        probe = ("import sys; from lasagna_cli.app import app\ntry: app(%r)\nexcept SystemExit: pass\n"
                 "sys.stderr.write('HEAVY=' + ','.join(m for m in ('torch','diffusers','transformers') if m in sys.modules))") % (argv,)
        heavy = subprocess.run([PY, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO).stderr.strip().splitlines()
        imp = subprocess.run([PY, "-X", "importtime", "-c", probe], capture_output=True, text=True, env=env, cwd=REPO).stderr
        out[name] = {**summary(walls), "cpu_ms": round(1000 * statistics.median(cpus), 1), "exit_code": code, "heavy_imports": heavy[-1].split("HEAVY=")[-1] if heavy else "?",
                     "slowest_imports": _importtime_top(imp)}
    # The lever, before/after interleaved: numpy imported up front (as lasagna_core.document/layers did) or not.
    lever: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(n):
        for key, pre in (("before", "import numpy; "), ("after", "")):
            code = f"{pre}import sys; sys.argv = ['lasagna', 'templates']; from lasagna_cli.app import main; main()"
            lever[key].append(_wait_rss([PY, "-c", code], env)[0])
    out["numpy_lever_templates"] = {k: summary(v) for k, v in lever.items()}
    return out


def _importtime_top(text: str, k: int = 5) -> list[list[Any]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cum, name = (part.strip() for part in line[len("import time:"):].split("|"))
            if name and not name.startswith(" ") and "." not in name.strip():
                rows.append([name.strip(), round(int(cum) / 1000, 1)])
    rows.sort(key=lambda r: -r[1])
    return rows[:k]


def section_e2e(args: argparse.Namespace) -> dict[str, Any]:
    """A whole `lasagna shade` (model load, distillation, upsampling, PSD write) on 512 and 2048 inputs, tiny model."""
    import numpy as np
    from PIL import Image

    lasagna = str(Path(PY).with_name("lasagna"))
    model = str(harness.tiny_sd_folder())
    tmp = Path(tempfile.mkdtemp(prefix="lasagna-e2e-"))
    env = _env(args)
    out: dict[str, Any] = {}
    runs = 2 if args.quick else 3
    for n in (512, 2048):
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
        img = np.stack([xx, yy, 0.5 + 0.5 * np.sin(20 * xx * yy)], axis=2)
        src = tmp / f"in-{n}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(src)
        for steps in ((1, 100) if args.quick else (1, 500)):
            cmd = [lasagna, "shade", str(src), "-p", "light from the left", "-m", model, "--device", "cpu",
                   "--steps", str(steps), "-o", str(tmp / f"out-{n}.psd")]
            walls, rsss = [], []
            for _ in range(runs):
                wall, rss, code = _wait_rss(cmd, env)
                if code != 0:
                    return {"error": f"lasagna shade exited {code}"}
                walls.append(wall)
                rsss.append(rss)
            out[f"{n}px_{steps}steps"] = {**summary(walls), "peak_rss_mb": round(max(rsss), 1)}
        out.setdefault("_dir", str(tmp))
        fixed = out[f"{n}px_1steps"]["median_ms"]
        long = [k for k in out if k.startswith(f"{n}px_") and not k.endswith("_1steps")][0]
        nsteps = int(long.split("_")[1][:-5])
        out[f"{n}px_per_step_ms"] = round((out[long]["median_ms"] - fixed) / (nsteps - 1), 2)
    out["phases"] = run_worker("e2e_phases", args, "--path", out.pop("_dir"))
    return out


def section_bigdoc(args: argparse.Namespace) -> dict[str, Any]:
    made = run_worker("bigdoc_make", args, timeout=3600)
    if "error" in made:
        return made
    tmp = Path(tempfile.mkdtemp(prefix="lasagna-big-", dir=harness.CACHE))
    out: dict[str, Any] = {"document": made}
    runs = 1 if args.quick else 2
    for name, worker, variant in (("psd_tools_save", "bigdoc_floor", "save"), ("psd_tools_raw_write", "bigdoc_floor", "raw"),
                                  ("lasagna_before", "bigdoc_project", "before"), ("lasagna", "bigdoc_project", "")):
        rs = [run_worker(worker, args, "--path", made["path"], "--out", str(tmp / f"{name}.psd"), "--variant", variant,
                         timeout=3600) for _ in range(runs)]
        ok = [r for r in rs if "error" not in r]
        if not ok:
            out[name] = rs[0]
            continue
        out[name] = {k: statistics.median(r[k] for r in ok) for k in ("read_s", "write_s", "total_s", "peak_rss_mb", "out_bytes")}
        out[name]["runs"] = len(ok)
        (tmp / f"{name}.psd").unlink(missing_ok=True)
    if "lasagna" in out and "psd_tools_save" in out and "error" not in out["lasagna"]:
        for floor in ("psd_tools_save", "psd_tools_raw_write"):
            if "error" in out[floor]:
                continue
            out[f"ratio_vs_{floor}"] = {
                "time": round(out["lasagna"]["total_s"] / out[floor]["total_s"], 2),
                "memory": round(out["lasagna"]["peak_rss_mb"] / out[floor]["peak_rss_mb"], 2),
            }
    out["guided_upsample_8192"] = run_worker("upsample", args, timeout=1800)
    return out


def machine() -> dict[str, Any]:
    import torch

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        mem = next(line.split(":", 1)[1].strip() for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(), "load_avg_at_start": [round(x, 2) for x in load]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument("--big", action="store_true", help="also the 8192 x 8192 document section")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections (others kept from results.json)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the workers (default 1)")
    parser.add_argument("--report-only", action="store_true", help="only rewrite RESULTS.md from results.json")
    parser.add_argument("--sd-model", help="sd15 section: a local SD 1.x/2.x folder instead of random weights")
    parser.add_argument("--taesd", help="sd15 section: a local AutoencoderTiny (TAESD) folder instead of random weights")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        _torch_setup(args.threads)
        print(json.dumps(WORKERS[args.worker](args)))
        return

    results: dict[str, Any] = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.is_file() else {}
    if args.report_only:
        from benchmarks.report import write_markdown

        RESULTS_MD.write_text(write_markdown(results))
        return
    wanted = args.only or [s for s in SECTIONS if s != "bigdoc" or args.big]
    results["meta"] = meta = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
        "threads": args.threads,
        "quick": args.quick,
        "machine": machine(),
    }
    for section in wanted:
        t0 = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] {section} ...", file=sys.stderr, flush=True)
        if section == "startup":
            value = section_startup(args)
        elif section == "e2e":
            value = section_e2e(args)
        elif section == "bigdoc":
            value = section_bigdoc(args)
        elif section == "lowmem":
            value = run_worker(section, args)
            value["sd15_vae_encoder"] = run_worker("lowmem_vae", args)
        else:
            value = run_worker(section, args)
        value["section_s"] = round(time.perf_counter() - t0, 1)
        value["measured"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        value["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
        value["command"] = results["meta"]["command"]
        # Merge into the file as it is now: another invocation may have written other sections meanwhile.
        results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.is_file() else {}
        results["meta"] = meta
        results[section] = value
        RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
        print(f"    done in {value['section_s']} s", file=sys.stderr, flush=True)
    from benchmarks.report import write_markdown

    RESULTS_MD.write_text(write_markdown(json.loads(RESULTS_JSON.read_text())))
    print(f"wrote {RESULTS_JSON} and {RESULTS_MD}", file=sys.stderr)


if __name__ == "__main__":
    main()
