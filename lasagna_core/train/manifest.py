"""The relighting manifest as training reads it: its examples, their pictures as tensors, and one split
held in memory as uint8 pairs with each direction's mirror (for the left<->right flip)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DocumentError, UsageError
from ..light_colors import WHITE
from ..synth.dataset import MANIFEST
from ..synth.dataset import read_manifest as read_records


@dataclass(frozen=True)
class Example:
    input: Path
    target: Path
    prompt: str
    direction: str
    mask: Path | None
    split: str
    scene: str
    light_color: tuple[float, float, float] | None = None  # sRGB of a coloured light (flat-art data); None: white


def manifest_path(data: Path) -> Path:
    data = Path(data)
    path = data / MANIFEST if data.is_dir() else data
    if not path.is_file():
        raise UsageError(f"no {MANIFEST} in '{data}' (make one with `lasagna dataset synth DIR`)")
    return path


def read_manifest(data: Path, split: str | None = None) -> list[Example]:
    """The manifest's examples (of one split if given), read and checked by `lasagna_core.synth.dataset`."""
    return [
        Example(input=r["input"], target=r["target"], prompt=r["prompt"], direction=r["direction"], mask=r["mask"],
                split=r["split"], scene=r["scene"], light_color=r["light_color"])
        for r in read_records(manifest_path(data), split)
    ]


def load_image(path: Path, size: int | None = None, gray: bool = False) -> Tensor:
    """[C, H, W] float32 in [0, 1] (C = 1 if gray), resized (area) to `size` x `size` when given."""
    from ..document import load
    from ..resample import resize

    try:
        doc = load(path)
    except DocumentError as e:
        raise DocumentError(f"dataset image: {e}") from None
    image = torch.from_numpy(np.ascontiguousarray(doc.base))
    if gray:
        image = image.mean(0, keepdim=True)
    if size is not None and tuple(image.shape[-2:]) != (size, size):
        image = resize(image[None], (size, size))[0]
    return image


def _to_uint8(image: Tensor) -> Tensor:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


@dataclass
class PairSet:
    """A split held in memory as uint8: bases/targets [N,3,S,S], class ids [N], mirror ids [N] (-1 = none), and
    each pair's light colour [N,3] float32 in [0,1] (white for white light)."""

    bases: Tensor
    targets: Tensor
    classes: Tensor
    mirrored: Tensor
    directions: list[str]
    lights: Tensor


def load_pairs(examples: list[Example], size: int, directions: list[str] | None = None) -> PairSet:
    from ..directions import DIRECTIONS

    if not examples:
        raise UsageError("the manifest has no examples for this split")
    if directions is None:
        present = {e.direction for e in examples}
        unknown = sorted(present - set(DIRECTIONS))
        if unknown:
            raise UsageError(f"manifest directions not known to Lasagna: {', '.join(unknown)}")
        directions = [d for d in DIRECTIONS if d in present]
    cache: dict[Path, Tensor] = {}

    def image(path: Path) -> Tensor:
        if path not in cache:
            cache[path] = _to_uint8(load_image(path, size))
        return cache[path]

    bases = torch.stack([image(e.input) for e in examples])
    targets = torch.stack([_to_uint8(load_image(e.target, size)) for e in examples])
    classes = torch.tensor([directions.index(e.direction) if e.direction in directions else -1 for e in examples])
    mirror = [mirror_direction(d, directions) for d in directions]
    mirrored = torch.tensor([mirror[c] if c >= 0 else -1 for c in classes.tolist()])
    lights = torch.tensor([e.light_color or WHITE for e in examples], dtype=torch.float32)
    return PairSet(bases, targets, classes, mirrored, list(directions), lights)


def mirror_direction(direction: str, directions: list[str]) -> int:
    """Class id of the direction seen in a left-right mirror (x -> -x), or -1 if it isn't among `directions`."""
    from ..directions import DIRECTIONS

    x, y, z = DIRECTIONS[direction]
    for i, name in enumerate(directions):
        u = DIRECTIONS[name]
        if abs(u[0] + x) < 1e-6 and abs(u[1] - y) < 1e-6 and abs(u[2] - z) < 1e-6:
            return i
    return -1
