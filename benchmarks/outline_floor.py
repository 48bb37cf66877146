"""How small can the outline error of layers painted at a working size get, once brought to document size?

The perfect layers are known for every case of a relighting manifest: per channel, Multiply = truth / base
where the truth is darker and Screen = (truth - base) / (1 - base) where it is lighter, which compose to the
truth exactly. Shrunk (area) to a working size and brought back by each upsampler, they give the floor that
no prior working at that size can beat: what is left of `lasagna eval`'s outline error (L* within 2 px of
outlines, `evaluate.metrics.outline_error`) and PSNR when only the resolution is lost.

    python benchmarks/outline_floor.py /work/data/flat512-test --sizes 64 128 256   # prints a Markdown table
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lasagna_core.blend import mix
from lasagna_core.evaluate.metrics import outline_band, outline_error, psnr
from lasagna_core.evaluate.run import pick_cases
from lasagna_core.layers import BlendMode
from lasagna_core.resample import fit_size, guided_upsample, resize
from lasagna_core.train.manifest import load_image, read_manifest

Upsampler = Callable[[Tensor, Tensor, Tensor], Tensor]

UPSAMPLERS: dict[str, Upsampler] = {
    "guided filter, radius 2, eps 1e-3 (used)": lambda layer, low, high: guided_upsample(layer, low, high),
    "guided filter, radius 1, eps 1e-4": lambda layer, low, high: guided_upsample(layer, low, high, radius=1, eps=1e-4),
    "bilinear": lambda layer, low, high: F.interpolate(layer, size=high.shape[-2:], mode="bilinear", align_corners=False),
}


def perfect_layers(base: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """(Multiply, Screen) RGB layers that turn `base` into `truth` exactly."""
    multiply = torch.where(truth < base, truth / base.clamp_min(1e-6), torch.ones_like(base)).clamp(0, 1)
    screen = torch.where(truth > base, (truth - base) / (1 - base).clamp_min(1e-6), torch.zeros_like(base)).clamp(0, 1)
    return multiply, screen


def compose(base: Tensor, multiply: Tensor, screen: Tensor) -> Tensor:
    """The two layers over `base` with the PSD formulas the written layers use."""
    return mix(mix(base, multiply, BlendMode.MULTIPLY), screen, BlendMode.SCREEN).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a relighting dataset folder (manifest.jsonl with a test split)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="working sizes (long side)")
    parser.add_argument("--limit", type=int, default=24, help="cases, picked as `lasagna eval --limit` picks them")
    args = parser.parse_args()
    errors: dict[tuple[int, str], list[float]] = {}
    gains: dict[tuple[int, str], list[float]] = {}
    for example in pick_cases(read_manifest(args.data, "test"), args.limit, 0):
        base, truth = load_image(example.input)[None], load_image(example.target)[None]
        target = truth[0].numpy()
        mask = load_image(example.mask, gray=True)[0].numpy() if example.mask is not None else None
        band = outline_band(base[0].numpy(), mask)
        floor = psnr(base[0].numpy(), target)
        multiply, screen = perfect_layers(base, truth)
        for size in args.sizes:
            low = fit_size(*base.shape[-2:], size, 8)  # the generator's working size for `[generator] resolution`
            base_low = resize(base, low)
            for name, up in UPSAMPLERS.items():
                result = compose(base, up(resize(multiply, low), base_low, base).clamp(0, 1),
                                 up(resize(screen, low), base_low, base).clamp(0, 1))[0].numpy()
                error = outline_error(result, target, band)
                if error is not None:
                    errors.setdefault((size, name), []).append(error)
                gains.setdefault((size, name), []).append(psnr(result, target) - floor)
    print("| working size | upsampler | outline error (L*, within 2 px) | PSNR gain over base (dB) |")
    print("|---|---|---|---|")
    for (size, name), values in errors.items():
        print(f"| {size} | {name} | {np.mean(values):.2f} | {np.mean(gains[size, name]):+.2f} |")


if __name__ == "__main__":
    main()
