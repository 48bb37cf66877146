"""The layer tree every other module speaks: pixels as float32 numpy, blend modes by name.

Kept free of torch and psd-tools so that `lasagna inspect` and template parsing start fast and the
compositor (blend.py) never needs to know which file format a layer came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # annotations only: importing numpy would double `lasagna --help`'s start-up time
    import numpy as np


class BlendMode(str, Enum):
    """Photoshop's blend modes; the value is psd-tools' enum name in lower case."""

    NORMAL = "normal"
    DISSOLVE = "dissolve"
    DARKEN = "darken"
    MULTIPLY = "multiply"
    COLOR_BURN = "color_burn"
    LINEAR_BURN = "linear_burn"
    DARKER_COLOR = "darker_color"
    LIGHTEN = "lighten"
    SCREEN = "screen"
    COLOR_DODGE = "color_dodge"
    LINEAR_DODGE = "linear_dodge"
    LIGHTER_COLOR = "lighter_color"
    OVERLAY = "overlay"
    SOFT_LIGHT = "soft_light"
    HARD_LIGHT = "hard_light"
    VIVID_LIGHT = "vivid_light"
    LINEAR_LIGHT = "linear_light"
    PIN_LIGHT = "pin_light"
    HARD_MIX = "hard_mix"
    DIFFERENCE = "difference"
    EXCLUSION = "exclusion"
    SUBTRACT = "subtract"
    DIVIDE = "divide"
    HUE = "hue"
    SATURATION = "saturation"
    COLOR = "color"
    LUMINOSITY = "luminosity"
    PASS_THROUGH = "pass_through"

    @classmethod
    def parse(cls, text: str) -> "BlendMode":
        """Accept 'linear-dodge', 'Linear Dodge', 'LINEAR_DODGE' and the common alias 'add'."""
        key = text.strip().lower().replace("-", "_").replace(" ", "_")
        key = {"add": "linear_dodge"}.get(key, key)
        try:
            return cls(key)
        except ValueError:
            known = ", ".join(m.value for m in cls if m is not cls.PASS_THROUGH)
            raise ValueError(f"unknown blend mode '{text}' (known: {known})") from None


@dataclass
class PixelNode:
    """A raster layer placed in document coordinates, masks already folded into `alpha`."""

    name: str
    color: np.ndarray  # float32 [C, h, w] in [0, 1], C = 1 (gray) or 3 (RGB)
    alpha: np.ndarray | None  # float32 [1, h, w]: pixel transparency x layer/vector mask; None = opaque
    top: int = 0
    left: int = 0
    blend_mode: BlendMode = BlendMode.NORMAL
    opacity: float = 1.0  # layer opacity x fill opacity, in [0, 1]
    visible: bool = True
    clipping: bool = False  # clipped to the nearest non-clipped layer below


@dataclass
class GroupNode:
    """A layer group; PASS_THROUGH groups blend their children straight into what lies below."""

    name: str
    children: list["Node"] = field(default_factory=list)  # bottom to top, like Photoshop's panel read upwards
    blend_mode: BlendMode = BlendMode.PASS_THROUGH
    opacity: float = 1.0
    visible: bool = True
    clipping: bool = False
    mask: np.ndarray | None = None  # float32 [1, H, W] in document coordinates; None = no mask


Node = Union[PixelNode, GroupNode]
