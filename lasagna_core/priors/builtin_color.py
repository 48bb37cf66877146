"""Lasagna's own colouring prior: the pixel-space model of `pixel.py` that ships in the package, conditioned on

* the guide: the base's lightness (PSD Lum), which is line art on paper or a greyscale picture, 1 channel;
* colour hints: an RGB picture of the hinted colours and a mask of where they are, 4 channels (zeros: none);
* the first colour word of the prompt (`color_words`), as a class: the colour of the drawing's largest region.

It denoises the coloured picture as the colour layer makes it: line art times the flats (Multiply), or the
greyscale picture with the flats' colour (Color mode). Trained by `lasagna train color` on the data of
`lasagna dataset line-art`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lasagna_core.blend import luminosity
from lasagna_core.color_words import COLOR_WORDS, color_words_in
from lasagna_core.errors import UsageError
from lasagna_core.priors.pixel import PixelCondition, PixelPrior
from lasagna_core.priors.pixel_file import default_unet_config as pixel_unet_config
from lasagna_core.priors.registry import Capabilities, register_prior

COLOR = "color"
HINT_OPACITY = 0.25  # a working-size pixel is hinted when at least this share of it was painted


def color_channels(guide: Tensor, hint_rgb: Tensor, hint_mask: Tensor) -> Tensor:
    """The network's condition channels [B, 5, h, w] from the guide [B,1,h,w], the hinted colours [B,3,h,w]
    (all in [0, 1]) and the hint mask [B,1,h,w] in {0, 1}: what training and the prior both feed it."""
    return torch.cat([guide * 2 - 1, (hint_rgb * 2 - 1) * hint_mask, hint_mask], dim=1)


def hints_at(hints: Tensor, size: Any) -> tuple[Tensor, Tensor]:
    """A hint picture [1, 4, H, W] (straight RGBA in [0, 1]; opaque pixels are dots or scribbles) at a working
    size: (colours [1,3,h,w], mask [1,1,h,w]). Colours are averaged with their opacity (area resampling of
    premultiplied colour), so a dot smaller than a working pixel keeps its colour."""
    rgb, alpha = hints[:, :3], hints[:, 3:4]
    small_alpha = F.interpolate(alpha, size=tuple(size), mode="area")
    small_rgb = F.interpolate(rgb * alpha, size=tuple(size), mode="area") / small_alpha.clamp_min(1e-6)
    mask = (small_alpha >= HINT_OPACITY).float()
    return small_rgb.clamp(0, 1) * mask, mask


@register_prior(COLOR, title="built-in colouring")
class BuiltinColorPrior(PixelPrior):
    """SDS through the built-in colouring model; `classes` are colour words."""

    @dataclass(frozen=True)
    class Config:
        word_guidance: float = field(default=2.0, metadata={"help": (
            "How much more a colour word in the prompt weighs than the line art under guidance: its pull is "
            "(1 + this) x --guidance (0: as much). Measured in README \"Colouring\".")})

    capabilities = Capabilities(samples=True, encoder=False, rescales=True, conditions_on=frozenset({"image", "hints", "color-words"}))
    task = COLOR
    model_name = "builtin-color"
    weights_file = "builtin-color.safetensors"
    condition_channels = 5
    what = "colouring"
    unconditional_drops_pictures = True

    @property
    def class_emphasis(self) -> float:
        return float(self.config.word_guidance)

    def class_of(self, prompt: str) -> int:
        """The class of the prompt's first colour word, or the null class when it names none."""
        words = color_words_in(prompt)
        if not words:
            return self.null_class
        if words[0] not in self.classes:
            raise UsageError(f"the built-in colouring prior was not trained for the colour '{words[0]}' "
                             f"(it knows: {', '.join(self.classes)})")
        return self.classes.index(words[0])

    @torch.no_grad()
    def condition(self, prompt: str, base: Tensor, negative_prompt: str = "", *, hints: Tensor | None = None) -> PixelCondition:
        """The base's lightness as the guide, `hints` [1,4,H,W] (any size; None: no hints) brought to the base's
        size, and the prompt's first colour word as the class (none: the unconditional class)."""
        base = self.checked_base(base)
        size = base.shape[-2:]
        if hints is None:
            hint_rgb, mask = base.new_zeros(1, 3, *size), base.new_zeros(1, 1, *size)
        else:
            hint_rgb, mask = hints_at(hints.to(self.device, torch.float32), size)
        asked = self.class_of(prompt)
        ids = torch.tensor([self.class_of(negative_prompt), asked], dtype=torch.long, device=self.device)
        return PixelCondition(prompt, negative_prompt, classes=ids, channels=color_channels(luminosity(base), hint_rgb, mask),
                              class_asked=asked != self.null_class)

    @torch.no_grad()
    def sample(
        self,
        base: Tensor,
        prompts: list[str],
        *,
        steps: int = 50,
        guidance: float = 3.0,
        generator: torch.Generator | None = None,
        hints: Tensor | None = None,
    ) -> Tensor:
        """Direct generation (the baseline): coloured pictures [B,3,h,w] in [0,1] for bases [B,3,h,w] (line art or
        greyscale) and one prompt each, with `hints` [B,4,H,W] when given."""
        rows = [self.condition(p, base[i:i + 1], hints=None if hints is None else hints[i:i + 1]) for i, p in enumerate(prompts)]
        channels = torch.cat([r.channels for r in rows])
        return self.sample_classes(channels, [int(r.classes[1]) for r in rows], steps=steps, guidance=guidance,
                                   generator=generator)


def default_unet_config(resolution: int) -> dict[str, Any]:
    """The colouring architecture `lasagna train color` uses by default (`pixel_file.default_unet_config`)."""
    return pixel_unet_config(resolution, len(COLOR_WORDS), 3 + BuiltinColorPrior.condition_channels)
