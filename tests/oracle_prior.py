"""A stand-in prior whose denoiser knows the answer, for tests and benchmarks that need a known result.

Its noise prediction is exactly the noise that leads back to `target`, so the shared `Prior.sds_loss` turns
into a pull of the composite straight towards the target: SDS gradient = sqrt(a(1 - a)) (x - target) in the
[-1, 1] scale. It runs the real SDS code path; only the network is replaced by the answer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lasagna_core.priors.base import Condition, Prior
from lasagna_core.priors.schedule import NoiseSchedule


class OraclePrior(Prior):
    multiple, resolution = 8, 128
    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self, target: Tensor | None = None, resolution: int = 128):
        self.target = target  # [1, 3, h, w] in [0, 1] at the working size; may be set after construction
        self.resolution = resolution
        self.schedule = NoiseSchedule(torch.linspace(0.9999, 0.01, 1000))

    def condition(self, prompt: str, base: Tensor, negative_prompt: str = "") -> Condition:
        return Condition(prompt, negative_prompt)

    def encode(self, image: Tensor) -> Tensor:
        return image * 2 - 1

    def predict_noise(self, noisy: Tensor, t: Tensor, cond: Condition) -> tuple[Tensor, Tensor]:
        assert self.target is not None, "set the oracle's target first"
        alpha_bar = self.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (noisy - alpha_bar**0.5 * (self.target * 2 - 1)) / (1 - alpha_bar) ** 0.5
        return eps, eps
