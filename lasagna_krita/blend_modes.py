"""Photoshop blend modes (as Lasagna's templates and sidecars name them) -> Krita composite op ids.

Krita has its own names for the same formulas ("burn" is Color Burn, "luminize" is Luminosity, some ids have
spaces). This table is Krita's own PSD importer's mapping (libs/psd/psd.cpp, psd_blendmode_to_composite_op),
so a layer the plug-in adds looks as it would had the user opened Lasagna's PSD in Krita; a test in Krita
holds it to that importer. Krita-free: plain data.
"""

from __future__ import annotations

KRITA_COMPOSITE_OPS: dict[str, str] = {
    "normal": "normal",
    "dissolve": "dissolve",
    "darken": "darken",
    "multiply": "multiply",
    "color_burn": "burn",
    "linear_burn": "linear_burn",
    "darker_color": "darker color",
    "lighten": "lighten",
    "screen": "screen",
    "color_dodge": "dodge",
    "linear_dodge": "linear_dodge",
    "lighter_color": "lighter color",
    "overlay": "overlay",
    "soft_light": "soft_light",
    "hard_light": "hard_light",
    "vivid_light": "vivid_light",
    "linear_light": "linear light",
    "pin_light": "pin_light",
    "hard_mix": "hard_mix_photoshop",
    "difference": "diff",
    "exclusion": "exclusion",
    "subtract": "subtract",
    "divide": "divide",
    "hue": "hue",
    "saturation": "saturation",
    "color": "color",
    "luminosity": "luminize",
    "pass_through": "pass through",
}


def krita_composite_op(blend_mode: str) -> str:
    """The Krita id of a Lasagna blend mode name ('multiply', 'soft_light', ...)."""
    try:
        return KRITA_COMPOSITE_OPS[blend_mode]
    except KeyError:
        raise ValueError(f"no Krita composite op for blend mode '{blend_mode}'") from None
