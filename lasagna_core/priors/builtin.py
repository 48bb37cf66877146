"""Lasagna's own relighting prior: the pixel-space model of `pixel.py` that ships in the package, conditioned on

* the base image, as 3 extra input channels, and
* the light direction, as a class: class i is `directions[i]` of the weights file (`pixel_file.py`).

Trained by `lasagna train builtin` (`lasagna_core.train`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lasagna_core.directions import parse_direction
from lasagna_core.errors import UsageError
from lasagna_core.priors.pixel import PixelCondition, PixelPrior
from lasagna_core.priors.pixel_file import RELIGHT, default_unet_config as pixel_unet_config
from lasagna_core.priors.registry import Capabilities, register_prior

BUILTIN_NAME = "builtin"
WEIGHTS_FILE = "builtin.safetensors"


@register_prior("builtin", title="built-in")
class BuiltinPrior(PixelPrior):
    """SDS through the built-in pixel-space relighting model; `directions` are its class names. The family has
    no options (its Config is empty)."""

    capabilities = Capabilities(samples=True, encoder=False, conditions_on=frozenset({"direction", "image"}))
    task = RELIGHT
    model_name = BUILTIN_NAME
    weights_file = WEIGHTS_FILE
    condition_channels = 3
    what = "relighting"

    @property
    def directions(self) -> list[str]:
        return self.classes

    def class_of(self, direction: str) -> int:
        try:
            return self.classes.index(direction)
        except ValueError:
            raise UsageError(
                f"the built-in prior was not trained for the direction '{direction}' "
                f"(it knows: {', '.join(self.classes)})"
            ) from None

    @classmethod
    def check_prompt(cls, prompt: str) -> None:
        """The prompt must name a light direction (the classes the network was trained on)."""
        parse_direction(prompt)

    @torch.no_grad()
    def condition(self, prompt: str, base: Tensor, negative_prompt: str = "") -> PixelCondition:
        """Parse the prompt into a direction (UsageError with one line if it can't); the base is the picture."""
        base = self.checked_base(base)
        wanted = self.class_of(parse_direction(prompt))
        negative = self.class_of(parse_direction(negative_prompt)) if negative_prompt.strip() else self.null_class
        ids = torch.tensor([negative, wanted], dtype=torch.long, device=self.device)
        return PixelCondition(prompt, negative_prompt, classes=ids, channels=base * 2 - 1)

    @torch.no_grad()
    def sample(
        self,
        base: Tensor,
        prompts: list[str],
        *,
        steps: int = 50,
        guidance: float = 3.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Direct generation (the 'ControlNet' baseline): relit images [B,3,h,w] in [0,1] for bases [B,3,h,w]
        in [0,1] and one prompt (or direction name) each."""
        classes = [self.class_of(parse_direction(p)) for p in prompts]
        return self.sample_classes(base * 2 - 1, classes, steps=steps, guidance=guidance, generator=generator)


def default_unet_config(resolution: int, classes: int) -> dict[str, Any]:
    """The relighting architecture `lasagna train builtin` uses by default (`pixel_file.default_unet_config`)."""
    return pixel_unet_config(resolution, classes, 3 + BuiltinPrior.condition_channels)
