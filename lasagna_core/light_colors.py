"""Named light colours: the words a prompt uses for them, their colour, and the tint painters give shadows.

Data only (no numpy), so a prompt parser can learn the words without importing a renderer. Colours are sRGB
in [0, 1] scaled to a largest channel of 1 (the hue and saturation of the light, not its strength); the
renderer (`lasagna_core.flatart.relight`) turns them into linear intensities. `shadow` is the tint of the
ambient light that fills the shadows: the cool or complementary colour painters give the shadows of a warm
light, and the deep blue of a moonlit night.
"""

from __future__ import annotations

from dataclasses import dataclass

from .directions import PROMPTS


@dataclass(frozen=True)
class LightColor:
    name: str
    phrase: str  # replaces "light" in the direction's prompt: "warm light from the left", "moonlight from the top"
    rgb: tuple[float, float, float]
    shadow: tuple[float, float, float]


LIGHT_COLORS: dict[str, LightColor] = {c.name: c for c in (
    LightColor("warm", "warm light", (1.0, 0.82, 0.6), (0.75, 0.85, 1.0)),
    LightColor("golden", "golden light", (1.0, 0.78, 0.4), (0.7, 0.8, 1.0)),
    LightColor("sunset", "sunset light", (1.0, 0.55, 0.25), (0.65, 0.6, 1.0)),
    LightColor("cool", "cool light", (0.78, 0.88, 1.0), (1.0, 0.9, 0.8)),
    LightColor("blue", "blue light", (0.45, 0.65, 1.0), (1.0, 0.85, 0.7)),
    LightColor("moonlight", "moonlight", (0.6, 0.72, 1.0), (0.45, 0.5, 0.85)),
    LightColor("red", "red light", (1.0, 0.3, 0.25), (0.6, 0.9, 1.0)),
    LightColor("green", "green light", (0.45, 1.0, 0.5), (1.0, 0.7, 1.0)),
    LightColor("purple", "purple light", (0.75, 0.45, 1.0), (0.9, 1.0, 0.7)),
)}
"""Name -> colour; the order is fixed (a random draw picks by index)."""


WHITE = (1.0, 1.0, 1.0)
"""The colour of plain light: what a prompt with no colour word asks for."""


_SPELLINGS = {
    "warm": "warm", "golden": "golden", "gold": "golden", "yellow": "golden", "sunset": "sunset", "orange": "sunset",
    "sunrise": "sunset", "cool": "cool", "cold": "cool", "blue": "blue", "moonlight": "moonlight", "moonlit": "moonlight",
    "moon": "moonlight", "red": "red", "green": "green", "purple": "purple", "violet": "purple",
}
"""The words a prompt may use for each light colour (lower case)."""


def parse_light_color(prompt: str) -> LightColor | None:
    """The light colour a prompt names ("warm light from the left" -> warm; "sunset light from the top right"
    -> sunset), the first one when it names several; None when it names none (white light)."""
    import re

    for word in re.findall(r"[a-z]+", prompt.lower()):
        if word in _SPELLINGS:
            return LIGHT_COLORS[_SPELLINGS[word]]
    return None


def colored_prompt(direction: str, color: LightColor | None) -> str:
    """The direction's canonical prompt with the colour's words: "light from the left" -> "warm light from the
    left"; with no colour the canonical prompt itself, exactly."""
    prompt = PROMPTS[direction]
    return prompt if color is None else prompt.replace("light", color.phrase, 1)
