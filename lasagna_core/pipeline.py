"""The batch runner's way into `edit.run_edit`, kept only until it builds `edit.EditConfig` itself.

`EditRequest` is the flat request of earlier versions (every option one field); it becomes an
`edit.EditJob` and changes nothing else. Delete this module when `lasagna_core.batch` has moved to
`EditConfig` / `EditJob` / `edit.load_edit_prior` (nothing else imports it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .document import DEFAULT_MAX_PIXELS
from .edit import EditConfig, EditJob, EditResult, ProgressCallback, prior_settings
from .edit import run_edit as _run_job
from .priors import PriorSettings, load_prior
from .priors.base import Prior
from .templates import EditSpec


@dataclass
class EditRequest:
    """Everything a user can ask of one edit, flat; None means 'the template's default'."""

    input: Path
    prompt: str
    template: str = "shade"
    output: Path | None = None
    model: str | None = None
    controlnet: str | None = None
    layer: str | None = None
    mask: Path | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    variations: int = 1
    preview_dir: Path | None = None
    preview_every: int = 50
    max_pixels: int = DEFAULT_MAX_PIXELS
    overwrite_input: bool = False
    low_memory: bool = False
    fast_encoder: str | None = None
    vae: str | None = None

    def job(self) -> EditJob:
        """The same request as an EditJob; prior options only when asked, as the CLI sends them."""
        asked = {"controlnet": self.controlnet, "low_memory": self.low_memory, "fast_encoder": self.fast_encoder,
                 "vae": self.vae}
        prior = PriorSettings(self.model, self.device, self.precision, {k: v for k, v in asked.items() if v})
        config = EditConfig(template=self.template, prior=prior, layer=self.layer, steps=self.steps,
                            guidance=self.guidance, variations=self.variations, max_pixels=self.max_pixels)
        return EditJob(input=self.input, prompt=self.prompt, config=config, output=self.output, seed=self.seed,
                       mask=self.mask, preview_dir=self.preview_dir, preview_every=self.preview_every,
                       overwrite_input=self.overwrite_input)


def run_edit(
    request: EditRequest,
    *,
    prior: Prior | None = None,
    on_progress: ProgressCallback | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> EditResult:
    return _run_job(request.job(), prior=prior, on_progress=on_progress, on_notice=on_notice)


def load_prior_for(request: EditRequest, spec: EditSpec | None = None) -> Prior:
    return load_prior(prior_settings(request.job().config, spec))  # looked up here: tests/test_batch.py patches it
