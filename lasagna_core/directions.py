"""Named light directions and the parser that turns a prompt into one of them.

Coordinates are the picture's: x to the right, y up, z out of the picture toward the camera (the camera looks
down -z). Each vector points from the scene TOWARD the light, so "left" is (-1, 0, 0): light coming from the
left lights the left side of an object. "front" is light from the camera, "back" is light from behind the
objects (backlight, rim light), "top" is light from the top of the picture.

These are the canonical, unelevated directions: the synthetic renderer (`lasagna_core.synth.lighting`) lifts the
eight in-plane ones toward the camera and spreads "back" over a ring of lights behind the objects, but the
named direction and its image-plane projection (`image_plane_vector`) are what the data, the prior's class
label and the direction-accuracy metric share.
"""

from __future__ import annotations

import math
import re

from .errors import UsageError

_D = 1.0 / math.sqrt(2.0)

DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "left": (-1.0, 0.0, 0.0),
    "right": (1.0, 0.0, 0.0),
    "top": (0.0, 1.0, 0.0),
    "bottom": (0.0, -1.0, 0.0),
    "top-left": (-_D, _D, 0.0),
    "top-right": (_D, _D, 0.0),
    "bottom-left": (-_D, -_D, 0.0),
    "bottom-right": (_D, -_D, 0.0),
    "front": (0.0, 0.0, 1.0),
    "back": (0.0, 0.0, -1.0),
}
"""Direction name -> unit vector toward the light (x right, y up, z toward the camera). Order is fixed: it is
the order of the manifest's lines within a scene and may serve as a class index."""

DIRECTION_NAMES: tuple[str, ...] = tuple(DIRECTIONS)

PROMPTS: dict[str, str] = {
    "left": "light from the left",
    "right": "light from the right",
    "top": "light from the top",
    "bottom": "light from the bottom",
    "top-left": "light from the top left",
    "top-right": "light from the top right",
    "bottom-left": "light from the bottom left",
    "bottom-right": "light from the bottom right",
    "front": "light from the front",
    "back": "light from behind",
}
"""The canonical prompt of each direction: what the synthetic manifest writes, and what `parse_direction`
maps back to the same name."""

_SIDES = {"left": "left", "right": "right", "top": "top", "bottom": "bottom"}

# Single words -> one component. Only whole words count ("bright" is not "right", "background" is not "back").
_WORDS: dict[str, str] = {
    "left": "left", "lefthand": "left", "west": "left", "western": "left",
    "right": "right", "righthand": "right", "east": "right", "eastern": "right",
    "top": "top", "above": "top", "upper": "top", "overhead": "top", "north": "top",
    "northern": "top", "topside": "top",
    "bottom": "bottom", "below": "bottom", "beneath": "bottom", "under": "bottom", "underneath": "bottom",
    "lower": "bottom", "south": "bottom", "southern": "bottom", "underlit": "bottom", "underlighting": "bottom",
    "uplit": "bottom", "uplight": "bottom", "uplighting": "bottom", "uplighted": "bottom",
    "front": "front", "frontal": "front", "frontlit": "front", "frontlight": "front", "frontlighting": "front",
    "flash": "front", "headon": "front", "camera": "front", "viewer": "front",
    "back": "back", "behind": "back", "backlit": "back", "backlight": "back", "backlighting": "back",
    "backlighted": "back", "rim": "back", "rimlight": "back", "rimlit": "back", "silhouette": "back",
    "silhouetted": "back", "contre": "back", "contrejour": "back", "halo": "back",
}
_COMPOUNDS: dict[str, tuple[str, ...]] = {
    "topleft": ("top", "left"), "topright": ("top", "right"), "bottomleft": ("bottom", "left"),
    "bottomright": ("bottom", "right"), "upperleft": ("top", "left"), "upperright": ("top", "right"),
    "lowerleft": ("bottom", "left"), "lowerright": ("bottom", "right"), "northwest": ("top", "left"),
    "northeast": ("top", "right"), "southwest": ("bottom", "left"), "southeast": ("bottom", "right"),
}
# Phrases checked before single words (after normalisation to single spaces).
_PHRASES: tuple[tuple[str, str], ...] = (
    ("behind the camera", "front"), ("behind the viewer", "front"), ("behind me", "front"),
    ("behind the photographer", "front"), ("top down", "top"), ("in front", "front"),
    ("head on", "front"), ("from the camera", "front"), ("on camera", "front"),
)

UNDERSTOOD = (
    "left, right, top (above, upper, overhead), bottom (below, under, uplit), the diagonals "
    "(top left, upper right, bottom-left, lower right, ...), front (frontal, from the camera, flash) and "
    "back (behind, backlit, rim light)"
)


def _fail(prompt: str, why: str) -> UsageError:
    shown = " ".join(prompt.split())
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return UsageError(
        f"can't tell the light direction from the prompt '{shown}' ({why}): say where the light comes from, "
        f"e.g. 'light from the left'; understood: {UNDERSTOOD}"
    )


# Words that turn the directions after them, up to the end of the clause, into where the light is NOT from.
# "isn't"/"don't" arrive as "isn"/"don" once punctuation is gone.
_NEGATIONS = frozenset({"no", "not", "without", "never", "nor", "neither", "none", "non", "except", "avoid",
                        "isn", "don", "doesn", "aren", "shouldn"})
# A negation's reach ends at punctuation or "but" ("not from the left, but from the right").
_CLAUSE_BREAK = re.compile(r"[,;:.!?()]|\bbut\b")


def parse_direction(prompt: str) -> str:
    """The named direction (a key of DIRECTIONS) a natural prompt asks for.

    "light from the left" -> "left"; "lit from the top right" / "sunlight from the upper left" -> diagonals;
    "light coming from above" -> "top"; "backlit" / "rim light from behind" -> "back"; "front lighting" ->
    "front". When a prompt names a side of the picture and also front/back ("rim light from the left"), the
    side wins: it is what shows in the picture. A direction after a negation in its clause ("no light from the
    left", "without ... left") says where the light is not from: it is set aside, so "light from the right,
    not the left" is "right", but a prompt that only says where the light is not from has no one direction
    and is refused. A prompt with no direction, or with opposite sides ("left and right"), raises UsageError
    with one line listing what is understood.
    """
    if not isinstance(prompt, str):
        raise _fail(str(prompt), "not text")
    text = prompt.lower().replace("_", " ").replace("-", " ").replace("\u2011", " ")
    if _words(text) in DIRECTIONS:  # exact names, e.g. "left"
        return _words(text)
    found: list[str] = []
    negated: list[str] = []
    for clause in (_words(part) for part in _CLAUSE_BREAK.split(text)):
        asked, refused = _clause_components(clause)
        found += asked
        negated += refused
    parts = set(found)
    if not parts and negated:
        raise _fail(prompt, "it says where the light does not come from, not where it comes from")
    if not parts:
        raise _fail(prompt, "no direction found")
    for a, b in (("left", "right"), ("top", "bottom")):
        if a in parts and b in parts:
            raise _fail(prompt, f"it names both {a} and {b}")
    vertical = "top" if "top" in parts else "bottom" if "bottom" in parts else None
    horizontal = "left" if "left" in parts else "right" if "right" in parts else None
    if vertical and horizontal:
        return f"{vertical}-{horizontal}"
    if vertical or horizontal:
        return vertical or horizontal  # type: ignore[return-value]
    if "front" in parts and "back" in parts:
        raise _fail(prompt, "it names both front and back")
    return "front" if "front" in parts else "back"


def _words(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


def _clause_components(clause: str) -> tuple[list[str], list[str]]:
    """The direction components one clause names, split into asked for and negated (after a negation)."""
    asked: list[str] = []
    negated: list[str] = []
    padded = f" {clause} "
    for phrase, component in _PHRASES:
        if f" {phrase} " in padded:
            (negated if _NEGATIONS.intersection(padded.split(f" {phrase} ")[0].split()) else asked).append(component)
            padded = padded.replace(f" {phrase} ", " ")
    after_negation = False
    for word in padded.split():
        after_negation = after_negation or word in _NEGATIONS
        components = _COMPOUNDS.get(word) or ((_WORDS[word],) if word in _WORDS else ())
        (negated if after_negation else asked).extend(components)
    return asked, negated


def direction_vector(direction: str) -> tuple[float, float, float]:
    """The unit vector toward the light of a named direction (UsageError for an unknown name)."""
    try:
        return DIRECTIONS[direction]
    except (KeyError, TypeError):
        raise UsageError(
            f"unknown light direction '{direction}': use one of {', '.join(DIRECTION_NAMES)}"
        ) from None


def image_plane_vector(direction: str) -> tuple[float, float]:
    """The light's direction projected on the picture (x right, y up); (0, 0) for front and back.

    For the direction-accuracy metric: a correct relighting brightens pixels in this direction (inside the
    object), so the luminance change should correlate positively with x*px + y*py (y measured upward).
    """
    x, y, _ = direction_vector(direction)
    return (x, y)
