"""Moving layers between the prior's working size and the document's full size.

Upsampling is edge-aware (a fast guided filter, He & Sun 2015): the layer is modelled locally as a linear
function of the base's colour at low resolution, and those coefficients - smooth by construction - are
what gets interpolated. At full size the layer's edges then follow the base's own edges instead of being a
blurry bilinear blow-up that spills shading across an object's outline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def fit_size(height: int, width: int, long_side: int, multiple: int) -> tuple[int, int]:
    """(height, width) with the input's aspect ratio, long side about `long_side`, sides multiples of `multiple`."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    scale = long_side / max(height, width)

    def side(n: int) -> int:
        return max(multiple, int(round(n * scale / multiple)) * multiple)

    return side(height), side(width)


def resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-average when shrinking (no aliasing), bilinear when growing."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrinking = size[0] * size[1] < image.shape[-2] * image.shape[-1]
    if shrinking:
        return F.interpolate(image, size=size, mode="area")
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


def _box(x: Tensor, radius: int) -> Tensor:
    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), 2 * radius + 1, stride=1)


def guided_upsample(layer: Tensor, guide_low: Tensor, guide_high: Tensor, *, radius: int = 2, eps: float = 1e-3) -> Tensor:
    """`layer` [1, C, h, w] at the working size -> [1, C, H, W], its edges snapped to `guide_high`'s.

    guide_low / guide_high: the base image [1, 3, h, w] / [1, 3, H, W]. The colour version of the filter: an
    edge between two colours of equal brightness (orange on brown) still carries an edge of the layer.
    `eps` decides how strong an edge of the base must be to carry one of the layer; `radius` is in
    working-size pixels. The 3x3 solves run at the working size only; full size costs a few multiply-adds.
    """
    _, channels, h, w = layer.shape
    mean_i = _box(guide_low, radius)  # [1, 3, h, w]
    mean_p = _box(layer, radius)  # [1, C, h, w]
    products = guide_low[:, :, None] * guide_low[:, None, :]  # [1, 3, 3, h, w]
    cov_ii = _box(products.flatten(1, 2), radius).view(1, 3, 3, h, w) - mean_i[:, :, None] * mean_i[:, None, :]
    cov_ip = _box((guide_low[:, :, None] * layer[:, None, :]).flatten(1, 2), radius).view(1, 3, channels, h, w)
    cov_ip = cov_ip - mean_i[:, :, None] * mean_p[:, None, :]
    sigma = cov_ii.permute(0, 3, 4, 1, 2) + eps * torch.eye(3, dtype=layer.dtype, device=layer.device)
    a = torch.linalg.solve(sigma, cov_ip.permute(0, 3, 4, 1, 2))  # [1, h, w, 3, C]
    a = a.permute(0, 3, 4, 1, 2)  # [1, 3, C, h, w]
    b = mean_p - (a * mean_i[:, :, None]).sum(1)  # [1, C, h, w]
    size = tuple(guide_high.shape[-2:])
    a_high = F.interpolate(_box(a.flatten(1, 2), radius), size=size, mode="bilinear", align_corners=False)
    b_high = F.interpolate(_box(b, radius), size=size, mode="bilinear", align_corners=False)
    a_high = a_high.view(1, 3, channels, *size)
    return (a_high * guide_high[:, :, None]).sum(1) + b_high

