"""A hand-made relighting manifest for tests: flat-coloured discs lit by a linear ramp from the named side.

    make_manifest(folder, *, scenes=4, directions=("left", "right", "top"), size=16, splits=None, lights=None) -> Path
        Writes PNGs and `manifest.jsonl` in the format `lasagna train` reads; returns the folder.
        `splits` maps a scene index to "train"/"val"/"test" (default: all train but the last scene, which is test).
        `lights`: sRGB light colours given to the pairs in turn (the lit disc is tinted by it, the line
        records it as `light_color`); None: white light, no `light_color`.

    TINY_UNET: a UNet2DModel architecture override small enough to train in a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from lasagna_core.directions import DIRECTIONS, PROMPTS

TINY_UNET_KW = {
    "layers_per_block": 1,
    "block_out_channels": [16, 32, 32],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}


def tiny_unet(size: int, classes: int) -> dict:
    from lasagna_core.priors.builtin import default_unet_config

    return {**default_unet_config(size, classes), **TINY_UNET_KW}


def _png(array: np.ndarray, path: Path) -> str:
    data = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(data if data.ndim == 3 else data, mode="RGB" if data.ndim == 3 else "L").save(path)
    return path.name


def make_manifest(folder: Path, *, scenes: int = 4, directions=("left", "right", "top"), size: int = 16,
                  splits: dict[int, str] | None = None, lights: list[tuple[float, float, float]] | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    px = (xs - (size - 1) / 2) / (size / 2)
    py = -(ys - (size - 1) / 2) / (size / 2)
    lines = []
    for s in range(scenes):
        split = (splits or {}).get(s, "test" if s == scenes - 1 else "train")
        colour = rng.uniform(0.3, 0.9, 3).astype(np.float32)
        mask = (px**2 + py**2 < 0.6).astype(np.float32)
        base = np.where(mask[..., None] > 0, colour, 0.5).astype(np.float32)
        base_name = _png(base, folder / f"s{s}_base.png")
        mask_name = _png(mask, folder / f"s{s}_mask.png")
        for d in directions:
            x, y, _ = DIRECTIONS[d]
            shade = np.clip(0.6 + 0.4 * (x * px + y * py), 0, 1.2)
            light = None if lights is None else lights[len(lines) % len(lights)]
            tint = np.ones(3, np.float32) if light is None else np.asarray(light, np.float32)
            target = np.where(mask[..., None] > 0, base * shade[..., None] * tint, base)
            line = {"input": base_name, "target": _png(target, folder / f"s{s}_{d}.png"), "prompt": PROMPTS[d],
                    "direction": d, "mask": mask_name, "split": split, "scene": f"s{s}"}
            lines.append(line if light is None else {**line, "light_color": list(light)})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines), encoding="utf-8")
    return folder
