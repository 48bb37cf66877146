"""The noise schedule a prior was trained with, as one object (diffusers' scheduler/model split).

It owns everything about the diffusion process that is not the network: adding noise, the timestep range
a (lo, hi) fraction means, the SDS weighting w(t), what the network predicts and how that becomes eps, and
the training target. `Prior.sds_loss` and both trainers use it, so the noising formula is written once.
A family with another process (flow matching) brings another schedule with the same methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

PREDICTIONS = ("epsilon", "v_prediction", "sample")


class NoiseSchedule:
    """DDPM's variance-preserving process x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, a_t = alpha-bar.

    alphas_cumprod: [T] float32 on the device the noising runs on (kept there so no step copies from the host).
    prediction_type: what the network outputs: "epsilon", "v_prediction" or "sample" (x_0).
    """

    def __init__(self, alphas_cumprod: Tensor, prediction_type: str = "epsilon") -> None:
        if prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {PREDICTIONS}, got {prediction_type!r}")
        self.alphas_cumprod = alphas_cumprod
        self.prediction_type = prediction_type

    @classmethod
    def from_config(cls, config: Mapping[str, Any], device: torch.device | str = "cpu") -> NoiseSchedule:
        """The training schedule of a diffusers scheduler config, whatever sampler it names (PNDM, DDIM, ...).
        ValueError for a prediction type outside PREDICTIONS: the family refuses it in its users' words."""
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler.from_config(dict(config))
        return cls(scheduler.alphas_cumprod.to(device, torch.float32), str(scheduler.config.prediction_type))

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def timestep_range(self, lo: float, hi: float) -> tuple[int, int]:
        """The inclusive timesteps [t_lo, t_hi] that the fractions (lo, hi) of the schedule mean."""
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"t_range must satisfy 0 <= lo <= hi <= 1, got {(lo, hi)}")
        n = self.num_train_timesteps
        t_lo = min(max(int(round(lo * n)), 0), n - 1)
        return t_lo, min(max(int(round(hi * n)), t_lo), n - 1)

    def _alpha_bar(self, t: Tensor, ndim: int) -> Tensor:
        return self.alphas_cumprod[t].view(t.shape[0], *([1] * (ndim - 1)))

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t for clean samples `x0` [B, ...], noise like it and timesteps `t` [B]: DDPM's forward process."""
        alpha_bar = self._alpha_bar(t, x0.ndim)
        return alpha_bar**0.5 * x0 + (1 - alpha_bar) ** 0.5 * noise

    def sds_weight(self, t: Tensor, ndim: int) -> Tensor:
        """DreamFusion's w(t) = sigma_t^2 = 1 - alpha_bar_t, shaped [B, 1, ...] to broadcast over `ndim` dims."""
        return 1 - self._alpha_bar(t, ndim)

    def to_epsilon(self, prediction: Tensor, noisy: Tensor, t: Tensor) -> Tensor:
        """eps from what the network predicted for `noisy` at `t` (rows of all three match)."""
        if self.prediction_type == "epsilon":
            return prediction
        alpha_bar = self._alpha_bar(t, noisy.ndim)
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1-a) x0
            return alpha_bar.sqrt() * prediction + (1 - alpha_bar).sqrt() * noisy
        return (noisy - alpha_bar.sqrt() * prediction) / (1 - alpha_bar).sqrt()  # x0-prediction

    def training_target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the network is trained to output for x_t = add_noise(x0, noise, t)."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            alpha_bar = self._alpha_bar(t, x0.ndim)
            return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
        return x0
