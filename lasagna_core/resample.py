"""Moving layers between the prior's working size and the document's full size.

Upsampling is edge-aware (a fast guided filter, He & Sun 2015): the layer is modelled locally as a linear
function of the base's luminance at low resolution, and those coefficients - smooth by construction - are
what gets interpolated. At full size the layer's edges then follow the base's own edges instead of being a
blurry bilinear blow-up that spills shading across an object's outline.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-average when shrinking (no aliasing), bilinear when growing."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrinking = size[0] * size[1] < image.shape[-2] * image.shape[-1]
    if shrinking:
        return F.interpolate(image, size=size, mode="area")
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


def luminance(image: Tensor) -> Tensor:
    return image.mean(dim=1, keepdim=True)


def _box(x: Tensor, radius: int) -> Tensor:
    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), 2 * radius + 1, stride=1)


def guided_upsample(layer: Tensor, guide_low: Tensor, guide_high: Tensor, *, radius: int = 2, eps: float = 1e-3) -> Tensor:
    """`layer` [1, C, h, w] at the working size -> [1, C, H, W], its edges snapped to `guide_high`'s.

    guide_low / guide_high: the base image [1, 3, h, w] / [1, 3, H, W]. `eps` decides how strong an edge of
    the base must be to carry an edge of the layer; `radius` is in working-size pixels.
    """
    i_low, i_high = luminance(guide_low), luminance(guide_high)
    mean_i, mean_p = _box(i_low, radius), _box(layer, radius)
    cov = _box(i_low * layer, radius) - mean_i * mean_p
    var = _box(i_low * i_low, radius) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    size = tuple(guide_high.shape[-2:])
    a_high = F.interpolate(_box(a, radius), size=size, mode="bilinear", align_corners=False)
    b_high = F.interpolate(_box(b, radius), size=size, mode="bilinear", align_corners=False)
    return a_high * i_high + b_high
