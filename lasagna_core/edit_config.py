"""What an edit is asked to do, as data: torch-free, so the batch planner and the CLI can build and check it
before anything heavy is imported, and picklable, so it travels to worker processes and Ray tasks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .document import DEFAULT_MAX_PIXELS
from .priors.registry import PriorSettings


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


@dataclass
class EditJob:
    """One document to edit with an `EditConfig`."""

    input: Path
    prompt: str
    config: EditConfig = EditConfig()
    output: Path | None = None
    seed: int = 0
    mask: Path | None = None
    preview_dir: Path | None = None
    preview_every: int = 50
    overwrite_input: bool = False
