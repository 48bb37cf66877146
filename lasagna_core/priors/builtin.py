"""Lasagna's own relighting prior: the pixel-space model of `pixel.py` that ships in the package, conditioned on

* the base image, as 3 extra input channels,
* the light direction, as a class: class i is `directions[i]` of the weights file (`pixel_file.py`), and
* in files trained with `--light-color`, the light's colour, as 3 more constant channels (sRGB scaled to
  [-1, 1]; white light is all ones, the colour a prompt with no colour word asks for). A coloured light
  recolours the whole scene, backdrop included, which a direction-only prior can only guess from the base.

Trained by `lasagna train builtin` (`lasagna_core.train`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lasagna_core.directions import parse_direction
from lasagna_core.errors import UsageError
from lasagna_core.light_colors import WHITE, parse_light_color
from lasagna_core.priors.pixel import PixelCondition, PixelPrior
from lasagna_core.priors.pixel_file import RELIGHT, default_unet_config as pixel_unet_config
from lasagna_core.priors.registry import Capabilities, register_prior

BUILTIN_NAME = "builtin"
WEIGHTS_FILE = "builtin.safetensors"
LIGHT_CHANNELS = 3


@register_prior("builtin", title="built-in")
class BuiltinPrior(PixelPrior):
    """SDS through the built-in pixel-space relighting model; `directions` are its class names. The family has
    no options (its Config is empty)."""

    capabilities = Capabilities(samples=True, encoder=False, rescales=True, conditions_on=frozenset({"direction", "image"}))
    task = RELIGHT
    model_name = BUILTIN_NAME
    weights_file = WEIGHTS_FILE
    condition_channels = 3
    optional_channels = LIGHT_CHANNELS
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

    @property
    def knows_light_color(self) -> bool:
        """The network takes the light's colour (a file trained with `--light-color`)."""
        return self.has_optional_channels

    @torch.no_grad()
    def condition(self, prompt: str, base: Tensor, negative_prompt: str = "") -> PixelCondition:
        """Parse the prompt into a direction (UsageError with one line if it can't) and, for a network that
        takes it, a light colour; the base is the picture. Both rows keep the colour: guidance amplifies what
        the direction adds, as it does for the base."""
        base = self.checked_base(base)
        wanted = self.class_of(parse_direction(prompt))
        negative = self.class_of(parse_direction(negative_prompt)) if negative_prompt.strip() else self.null_class
        ids = torch.tensor([negative, wanted], dtype=torch.long, device=self.device)
        return PixelCondition(prompt, negative_prompt, classes=ids, channels=self._pictures(base, [prompt]))

    def _pictures(self, bases: Tensor, prompts: list[str]) -> Tensor:
        """The condition channels for bases [B,3,h,w] in [0,1] and one prompt each, in the network's scale."""
        lights = torch.tensor([prompt_light(p) for p in prompts]) if self.knows_light_color else None
        return condition_pictures(bases, lights)

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
        pictures = self._pictures(base.to(self.device, torch.float32), prompts)
        return self.sample_classes(pictures, classes, steps=steps, guidance=guidance, generator=generator)


def prompt_light(prompt: str) -> tuple[float, float, float]:
    """The sRGB colour (largest channel 1) of the light a prompt names; white when it names none."""
    color = parse_light_color(prompt)
    return WHITE if color is None else color.rgb


def condition_pictures(bases: Tensor, lights: Tensor | None) -> Tensor:
    """The network's condition channels: bases [B,3,h,w] in [0,1] and, for a light-colour network, each
    example's light colour `lights` [B,3] in [0,1] as constant planes, all scaled to [-1, 1]. The trainer
    and the prior build them here, so what the network learnt is what it is asked."""
    pictures = bases * 2 - 1
    if lights is None:
        return pictures
    planes = (lights.to(bases) * 2 - 1)[:, :, None, None].expand(-1, -1, *bases.shape[-2:])
    return torch.cat([pictures, planes], 1)


def in_channels(light_color: bool) -> int:
    """The network's input channels: the noisy image, the base and, when asked, the light's colour."""
    return 3 + BuiltinPrior.condition_channels + (LIGHT_CHANNELS if light_color else 0)


def takes_light_color(unet_config: dict[str, Any]) -> bool:
    """Whether a relighting architecture has the light-colour channels."""
    return int(unet_config["in_channels"]) == in_channels(True)


def default_unet_config(resolution: int, classes: int, *, light_color: bool = False) -> dict[str, Any]:
    """The relighting architecture `lasagna train builtin` uses by default (`pixel_file.default_unet_config`),
    with the light-colour channels when asked."""
    return pixel_unet_config(resolution, classes, in_channels(light_color))
