"""Which prior families exist and which one loads a `--model`: the lookup `load_prior` is.

Lasagna's own families are imported on the first lookup (they need torch); a family defined elsewhere (a
plug-in, a test) is there as soon as its module has run its `register_prior`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lasagna_core.errors import ModelError
from lasagna_core.priors.registry import PriorFamily, PriorSettings, registered

if TYPE_CHECKING:
    from lasagna_core.priors.base import Prior

BUILTIN_FAMILIES = ("lasagna_core.priors.builtin", "lasagna_core.priors.builtin_color", "lasagna_core.priors.sdxl",
                    "lasagna_core.priors.stable_diffusion")
"""The modules that register Lasagna's own families."""


def families() -> list[PriorFamily]:
    """Every registered family in the order they are asked: registration order, the catch-all last."""
    for module in BUILTIN_FAMILIES:
        importlib.import_module(module)
    return registered()


def family_named(name: str) -> PriorFamily:
    for family in families():
        if family.name == name:
            return family
    raise ModelError(f"unknown prior family '{name}' (known: {', '.join(f.name for f in families())})")


def family_for(model: str) -> PriorFamily:
    """The first family whose probe accepts `model` (the catch-all's accepts anything, and its loader says
    what is wrong with a model it can't load)."""
    for family in families():
        if family.prior.probe(model):
            return family
    raise ModelError(f"no prior family can load '{model}' (known: {', '.join(f.name for f in families())})")


def load_prior(settings: PriorSettings) -> Prior:
    """The prior `settings` names, on its device and in its precision.

    Raises UsageError for a bad device/precision, ModelError for a model that can't be loaded or an option
    its family does not have. Never touches the network.
    """
    from lasagna_core.runtime import quiet_model_libraries, resolve_device, resolve_dtype

    if not settings.model:
        raise ValueError("PriorSettings.model is empty: fill in the template's default model first")
    quiet_model_libraries()
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.precision, device)
    family = family_for(settings.model)
    config = family.config(settings.option_values())
    prior = family.prior.load(settings.model, config, device=device, dtype=dtype)
    prior.config = config  # what the sidecar records: every option of the family, defaults included
    return prior
