"""What an edit is asked to do, as data: torch-free, so the batch planner and the CLI can build and check it
before anything heavy is imported, and picklable, so it travels to worker processes and Ray tasks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .document import DEFAULT_MAX_PIXELS
from .errors import UsageError
from .priors.registry import PriorSettings

if TYPE_CHECKING:
    from .templates import EditSpec

EMPTY_PROMPT = "--prompt is empty; say what the edit should do, e.g. 'light from the left'"


@dataclass(frozen=True)
class EditConfig:
    """What every document of an edit shares: the template, the prior and the distillation overrides.

    Frozen, hashable and picklable: it travels to batch worker processes and Ray tasks. None means 'the
    template's default' (for `prior.model` too)."""

    template: str = "shade"
    prior: PriorSettings = PriorSettings()
    layer: str | None = None
    steps: int | None = None
    guidance: float | None = None
    variations: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS
    close_gaps: int | None = None  # flats: the widest gap (px) sealed at line ends; None: two line widths


@dataclass
class EditJob:
    """One document to edit with an `EditConfig`."""

    input: Path
    prompt: str
    config: EditConfig = EditConfig()
    output: Path | None = None
    seed: int = 0
    mask: Path | None = None
    hints: Path | None = None  # colour hints: an image whose opaque pixels are dots or scribbles
    preview_dir: Path | None = None
    preview_every: int = 50
    overwrite_input: bool = False


def check_prompt(prompt: str, spec: EditSpec, model: str | None) -> None:
    """UsageError (one line) when the prior family of `model` (else the template's) can't read `prompt`, asked
    before anything loads: an empty prompt is refused for families conditioned on text or a direction (a
    colouring prior needs none), unless the family guessed from `model` can't load it (an empty folder is
    taken for Stable Diffusion): then that ModelError is the one to hear. Then each family answers for the
    rendered prompt (`Prior.check_prompt`)."""
    from .priors.catalog import family_for

    family = family_for(model or spec.model)
    if not prompt.strip() and family.prior.capabilities.conditions_on & {"text", "direction"}:
        if model:
            family.prior.check_files(model)
        raise UsageError(EMPTY_PROMPT)
    family.prior.check_prompt(spec.render_prompt(prompt))
