"""The generator for flats: one colour per closed region of the line art, as free parameters.

Flats are one colour a region by definition, so instead of the convolutional `LayerGenerator` (whose
per-pixel output SDS has to push, pixel by noisy pixel, from white towards a colour and which smears
colour across lines) colouring trains one colour per region. A region's gradient is then the sum of the
score over all its pixels, a far steadier signal than any one pixel's, and no colour can cross a line.
Measured on the colouring eval (docs/eval/coloring-eval.md): the convolutional generator left the flats
near white after 80 steps; this one colours them in the same number of steps.

The regions come from `flats.find_regions` at document size; at the working size a pixel is the mix of
the regions it covers (`flats.region_shares`, applied by plain index arithmetic rather than a sparse matrix,
so every device runs it). Regions the flats leave empty (the paper around the
drawing, unless hinted) rest at the layer's neutral; hinted regions are fixed at their hint's colour, so
the prior sees them and colours the rest to go with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .flats import Hints, LineRegions, hinted_regions, painted_regions, region_shares
from .generator import LayerOutput
from .templates import LayerSpec

START = 0.5
"""Every free region starts at this fraction of the layer's range (mid grey): where the sigmoid is steepest,
so each region's colour is the prior's choice rather than a drift away from white (measured in the
module's docstring)."""

EDGE = 1e-3
"""Starts are kept this far inside (0, 1): at the sigmoid's flat ends no gradient would move a region."""


class RegionGenerator(nn.Module):
    """G for one flats layer: forward(base) -> [LayerOutput] at the working size it was made for; `colours()`
    the (n, 3) region colours in [0, 1] (hinted regions their hint's) that `flats.flats_of` paints."""

    def __init__(self, specs: Sequence[LayerSpec], regions: LineRegions, size: tuple[int, int], hints: Hints | None = None):
        super().__init__()
        if len(specs) != 1 or specs[0].finish != "flats":
            raise ValueError("a RegionGenerator paints exactly one layer, a flats layer")
        self.spec = specs[0]
        self.size = tuple(size)
        hinted, hint_colours = hinted_regions(regions, hints)
        painted = painted_regions(regions, hinted)
        cell, region, share = region_shares(regions.labels, regions.count, self.size)
        keep = painted[region]
        self.register_buffer("cell", torch.from_numpy(cell[keep]))
        self.register_buffer("region", torch.from_numpy(region[keep]))
        self.register_buffer("share", torch.from_numpy(share[keep])[:, None])
        coverage = np.bincount(cell[keep], share[keep], minlength=self.size[0] * self.size[1])
        self.register_buffer("coverage", torch.from_numpy(coverage.astype(np.float32)).view(1, 1, *self.size))
        self.register_buffer("hinted", torch.from_numpy(hinted)[:, None])
        self.register_buffer("hint_colours", torch.from_numpy(hint_colours))
        self.logits = nn.Parameter(torch.logit(torch.full((regions.count, 3), START), eps=EDGE))

    def start_at(self, values: np.ndarray) -> None:
        """Start the free regions at the layer values `values` (n, 3) instead of mid grey (hinted ones keep
        their hint)."""
        if values.shape != tuple(self.logits.shape):
            raise ValueError(f"values must be {tuple(self.logits.shape)}, got {values.shape}")
        fraction = (torch.from_numpy(np.asarray(values, np.float32)) - self.spec.low) / (self.spec.high - self.spec.low)
        with torch.no_grad():
            self.logits.copy_(torch.logit(fraction, eps=EDGE))

    def colours(self) -> Tensor:
        """(n, 3) in [0, 1]: every region's colour, the hinted ones their hint's."""
        return torch.where(self.hinted, self.hint_colours, torch.sigmoid(self.logits))

    def forward(self, base: Tensor) -> list[LayerOutput]:
        if tuple(base.shape[-2:]) != self.size:
            raise ValueError(f"this RegionGenerator works at {list(self.size)}, got a base of {list(base.shape[-2:])}")
        spec = self.spec
        value = spec.low + (spec.high - spec.low) * self.colours()
        cells = value.new_zeros(self.size[0] * self.size[1], 3).index_add(0, self.cell, self.share * value[self.region])
        painted = cells.T.reshape(1, 3, *self.size)
        if spec.alpha:
            return [LayerOutput(painted / self.coverage.clamp_min(1e-6), self.coverage)]
        return [LayerOutput(painted + (1 - self.coverage) * spec.neutral, None)]

