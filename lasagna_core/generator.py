"""The layer generator G: a small convolutional UNet that looks at the base image and paints the edit layers.

A network rather than free per-pixel parameters because convolution is a smoothness prior: shading comes
out as coherent regions instead of per-pixel noise. It starts at every layer's neutral value (a layer that
changes nothing), so the first composite is the untouched base and the regulariser's job is only to keep it
honest. Fully convolutional: the same weights run at any size whose sides are multiples of 8.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .templates import LayerSpec

START_MARGIN = 0.01
"""Sigmoid heads start this far inside their range: at the exact end the gradient would vanish."""


@dataclass
class LayerOutput:
    """One generated layer: colour in the spec's range [B, C, H, W], alpha [B, 1, H, W] for alpha layers."""

    color: Tensor
    alpha: Tensor | None


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="replicate"),
        nn.GroupNorm(groups, cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1, padding_mode="replicate"),
        nn.GroupNorm(groups, cout),
        nn.SiLU(),
    )


class LayerGenerator(nn.Module):
    """G(x): base [B, 3, H, W] in [0, 1] -> one LayerOutput per template layer."""

    def __init__(self, layers: Sequence[LayerSpec], width: int = 32, levels: int = 3):
        super().__init__()
        self.specs = tuple(layers)
        channels = [width * 2**i for i in range(levels)]
        self.stem = _block(3 + 2, channels[0])  # RGB + x/y coordinates: light direction is a position
        self.down = nn.ModuleList(_block(channels[i], channels[i + 1], stride=2) for i in range(levels - 1))
        self.up = nn.ModuleList(_block(channels[i + 1] + channels[i], channels[i]) for i in reversed(range(levels - 1)))
        self.head = nn.Conv2d(channels[0], sum(s.channels + int(s.alpha) for s in self.specs), 1)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([b for s in self.specs for b in _start_logits(s)]))

    def forward(self, base: Tensor) -> list[LayerOutput]:
        features = [self.stem(torch.cat([base * 2 - 1, _coordinates(base)], dim=1))]
        for down in self.down:
            features.append(down(features[-1]))
        x = features.pop()
        for up in self.up:
            skip = features.pop()
            x = up(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return self._split(self.head(x))

    def _split(self, logits: Tensor) -> list[LayerOutput]:
        outputs, start = [], 0
        for spec in self.specs:
            color = spec.low + (spec.high - spec.low) * torch.sigmoid(logits[:, start : start + spec.channels])
            start += spec.channels
            alpha = None
            if spec.alpha:
                alpha = torch.sigmoid(logits[:, start : start + 1])
                start += 1
            outputs.append(LayerOutput(color, alpha))
        return outputs


def _start_logits(spec: LayerSpec) -> list[float]:
    fraction = (spec.neutral - spec.low) / (spec.high - spec.low)
    logits = [_logit(fraction)] * spec.channels
    return logits + ([_logit(0.0)] if spec.alpha else [])


def _logit(fraction: float) -> float:
    p = min(max(fraction, START_MARGIN), 1 - START_MARGIN)
    return math.log(p / (1 - p))


def _coordinates(base: Tensor) -> Tensor:
    b, _, h, w = base.shape
    ys = torch.linspace(-1, 1, h, device=base.device, dtype=base.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=base.device, dtype=base.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([xs, ys], dim=1)
