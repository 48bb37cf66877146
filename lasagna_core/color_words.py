"""Paint colours as words: the names a colouring prompt uses ("a red car with blue windows") and their colour.

Data and a parser only (numpy for the nearest-name lookup), so the CLI can check a prompt without a model.
The built-in colouring prior is conditioned on the FIRST colour a prompt names, as a class: in training that
class is the name nearest (in CIE L*a*b*) to the colour of the design's largest region, so "a red car" asks
for a red body. Later colour words are reported back as not used (hints are the way to place them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ColorWord:
    name: str
    rgb: tuple[float, float, float]  # sRGB in [0, 1]
    synonyms: tuple[str, ...] = ()


COLOR_WORDS: dict[str, ColorWord] = {c.name: c for c in (
    ColorWord("red", (0.86, 0.16, 0.16), ("crimson", "scarlet")),
    ColorWord("orange", (0.96, 0.55, 0.12)),
    ColorWord("yellow", (0.98, 0.84, 0.2), ("golden", "gold")),
    ColorWord("green", (0.3, 0.68, 0.25), ("lime",)),
    ColorWord("teal", (0.1, 0.6, 0.6), ("turquoise", "cyan")),
    ColorWord("blue", (0.2, 0.42, 0.85), ("navy",)),
    ColorWord("purple", (0.55, 0.3, 0.72), ("violet", "lilac")),
    ColorWord("pink", (0.96, 0.55, 0.7), ("magenta",)),
    ColorWord("brown", (0.52, 0.33, 0.18), ("tan",)),
    ColorWord("black", (0.12, 0.12, 0.13)),
    ColorWord("grey", (0.6, 0.6, 0.62), ("gray", "silver")),
    ColorWord("white", (0.95, 0.95, 0.93)),
)}
"""Name -> colour, in class-id order (the order is part of a trained prior's file, which stores the names)."""

_SPELLINGS = {word: c.name for c in COLOR_WORDS.values() for word in (c.name, *c.synonyms)}
_WORD = re.compile(r"[a-z]+")


def color_words_in(prompt: str) -> list[str]:
    """The colour names a prompt uses, in order, synonyms mapped to their name ("a crimson kite" -> ["red"])."""
    return [_SPELLINGS[w] for w in _WORD.findall(prompt.lower()) if w in _SPELLINGS]


def nearest_color_word(rgb: np.ndarray) -> str:
    """The name whose colour is nearest in CIE L*a*b* to an sRGB colour (3,) in [0, 1]."""
    from .color import srgb_to_lab

    names = list(COLOR_WORDS)
    table = np.array([COLOR_WORDS[n].rgb for n in names], np.float64).T[:, :, None]
    lab = srgb_to_lab(table)[:, :, 0]
    own = srgb_to_lab(np.asarray(rgb, np.float64).reshape(3, 1, 1))[:, 0, 0]
    return names[int(np.argmin(((lab.T - own) ** 2).sum(1)))]
