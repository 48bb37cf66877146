"""Which way to bring a layer from the prior's working size to the document's full size?

Measures, on a picture with sharp edges and a known ideal shading layer, the error of
  guided  - the layer computed at working size, upsampled by the guided filter (what Lasagna does),
  direct  - the fully convolutional generator run again on the full-size base,
  bilinear - plain bilinear upsampling (the naive baseline),
against the ideal full-size layer, over the whole picture and in a band around the objects' edges.
The generator is trained at working size with an oracle prior (tests/oracle_prior.py) that wants exactly
the ideal layer, so the
only thing compared is the trip to full size.

    python benchmarks/full_resolution.py            # prints a Markdown table
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lasagna_core.distill import distill
from lasagna_core.resample import guided_upsample
from lasagna_core.templates import DistillSettings, load_template

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere: tests/ is importable
from tests.oracle_prior import OraclePrior  # noqa: E402


def scene(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat-coloured discs and boxes with anti-aliased edges, and their coverage mask, at any size."""
    y, x = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    s = width / 512
    shapes = [
        ((0.27, 0.43, 0.67), torch.clamp(40 * s - torch.hypot(x - 136 * s, y - 150 * s) + 0.5, 0, 1)),
        ((0.91, 0.50, 0.14), torch.clamp(46 * s - torch.hypot(x - 262 * s, y - 262 * s) + 0.5, 0, 1)),
        ((0.52, 0.71, 0.23), torch.clamp(32 * s - torch.hypot(x - 348 * s, y - 276 * s) + 0.5, 0, 1)),
        ((0.87, 0.84, 0.78), ((x > 392 * s) & (x < 462 * s) & (y > 196 * s) & (y < 302 * s)).float()),
    ]
    image = torch.tensor([0.62, 0.47, 0.36]).view(3, 1, 1).expand(3, height, width).clone()
    cover = torch.zeros(height, width)
    for rgb, alpha in shapes:
        image = image * (1 - alpha) + torch.tensor(rgb).view(3, 1, 1) * alpha
        cover = torch.maximum(cover, alpha)
    return image[None], cover[None, None]


def ideal_layer(cover: torch.Tensor) -> torch.Tensor:
    """Multiply layer: objects darken from left to right, the background is untouched."""
    ramp = torch.linspace(0.0, 0.6, cover.shape[-1]).view(1, 1, 1, -1)
    return 1.0 - ramp * cover


def edge_band(cover: torch.Tensor, width: int) -> torch.Tensor:
    soft = (cover > 0.02) & (cover < 0.98)
    return F.max_pool2d(soft.float(), 2 * width + 1, stride=1, padding=width) > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="full-size width (height is 3/4 of it)")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    full_h, full_w = args.size * 3 // 4, args.size
    base, cover = scene(full_h, full_w)
    spec = load_template("shade")
    shadows_only = spec.layers[:1]
    prior = OraclePrior()
    low_size = prior.working_size(full_h, full_w)
    base_low, cover_low = scene(*low_size)
    prior.target = base_low * ideal_layer(cover_low)
    generator = distill(base_low, shadows_only, prior, prior.condition("", base_low),
                        DistillSettings(steps=args.steps, learning_rate=1e-2, neutral_weight=1e-4, noise_samples=1, t_min=0.5, t_max=0.5), seed=0)
    truth = ideal_layer(cover)
    band = edge_band(cover, max(2, full_w // 512))
    with torch.no_grad():
        layer_low = generator(base_low)[0].color
        started = time.perf_counter()
        results = {"guided": guided_upsample(layer_low, base_low, base).clamp(0, 1)}
        guided_s = time.perf_counter() - started
        started = time.perf_counter()
        results["direct"] = generator(base)[0].color
        direct_s = time.perf_counter() - started
        results["bilinear"] = F.interpolate(layer_low, size=(full_h, full_w), mode="bilinear", align_corners=False)
    seconds = {"guided": guided_s, "direct": direct_s, "bilinear": float("nan")}
    low_error = float((layer_low - ideal_layer(cover_low)).abs().mean())
    print(f"full size {full_w}x{full_h}, working size {low_size[1]}x{low_size[0]}, "
          f"layer error at working size {low_error * 255:.2f}/255\n")
    print("| method | mean error (/255) | error in edge band (/255) | max in edge band (/255) | seconds |")
    print("|---|---|---|---|---|")
    for name, layer in results.items():
        diff = (layer - truth).abs()
        print(f"| {name} | {float(diff.mean()) * 255:.2f} | {float(diff[band].mean()) * 255:.2f} | "
              f"{float(diff[band].max()) * 255:.1f} | {seconds[name]:.2f} |")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
