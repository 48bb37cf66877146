"""One edit, end to end: load the document, distil the template's layers, bring them to full size, save.

`run_edit` is what `shade` and `colorize` call (and the batch runner, for every file); `Distillation` is
the part `eval` shares with it: distil one template's layers for one base with one prior, at the
generator's working size, and finish them at full size. The options a whole batch shares are one
picklable `EditConfig`; an `EditJob` adds what is particular to one document.
"""

from __future__ import annotations

import copy
import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import __version__
from .distill import StepInfo, compose, distill, finished_layers
from .document import Document, load
from .errors import DocumentError, UsageError
from .generator import LayerOutput
from .layers import PixelNode
from .edit_config import EditConfig, EditJob, check_prompt
from .guides import hints_file, take_hints_layer, is_line_art
from .priors import PriorSettings, load_prior
from .priors.catalog import family_for
from .priors.base import Prior
from .resample import fit_size, resize
from .tint import light_of, tint_plane, written_channels
from .templates import DistillSettings, EditSpec, LayerSpec, load_template, settings_with
from .writing import default_output, document_output, preview_folder, save_png, write_document


@dataclass
class EditResult:
    output: Path
    sidecar: Path
    seconds: float
    record: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[StepInfo, int, int], None]  # (step info, variation index, variations)


def prior_settings(config: EditConfig, spec: EditSpec | None = None) -> PriorSettings:
    """The config's prior settings with the template's default model when no --model was given, and the
    template's [prior] options under the command line's."""
    return with_template(config.prior, spec or load_template(config.template))


def with_template(settings: PriorSettings, spec: EditSpec) -> PriorSettings:
    """`settings` with the template's model when it names none, and the template's prior options where the
    command line gave none (`shade-iclight` brings `iclight`)."""
    options = {**dict(spec.prior_options), **settings.option_values()}
    return replace(settings, model=settings.model or spec.model, options=options)


def load_edit_prior(config: EditConfig, spec: EditSpec | None = None) -> Prior:
    """The prior `run_edit` uses for `config`. Callers that run many edits (batch workers) load it once with
    this and pass it to `run_edit(prior=)`."""
    return load_prior(prior_settings(config, spec))


def check_settings_for(settings: DistillSettings, asked: PriorSettings) -> None:
    """UsageError (one line) before the prior loads when the settings ask what its family can't do: coarse
    steps of a prior that scores pictures only at its working size."""
    family = family_for(asked.model)
    if settings.coarse_steps and not family.prior.capabilities_for(family.config(asked.option_values())).rescales:
        raise UsageError("coarse_steps: this prior scores pictures only at its working size (the built-in priors take coarse steps)")


def edit_settings(spec: EditSpec, steps: int | None = None, guidance: float | None = None) -> DistillSettings:
    """The template's distillation defaults with the command line's --steps / --guidance, checked by the same
    rules as the template's own values."""
    overrides = {k: v for k, v in (("steps", steps), ("guidance", guidance)) if v is not None}
    try:
        return settings_with(overrides, base=spec.defaults, label=lambda key: f"--{key}")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


class Distillation:
    """Distil one template's layers for one base with one prior: what shade, batch and eval all run.

    The generator works at its own size (the template's `[generator] resolution`, by default the prior's
    working size); the condition (prompt, and the base as hint) is made once at the prior's size and
    serves every seed. `base` [1, 3, H, W] in [0, 1] and `coverage` [1, 1, H, W] (where the edit may act)
    are at full size on the prior's device.
    """

    def __init__(
        self, prior: Prior, spec: EditSpec, settings: DistillSettings, base: Tensor, prompt: str,
        coverage: Tensor | None = None, hints: Tensor | None = None, close_gaps: int | None = None,
    ) -> None:
        self.prior, self.spec, self.settings, self.base = prior, spec, settings, base
        self.light = light_of(spec, prompt)
        height, width = base.shape[-2:]
        self.prior_size = prior.working_size(height, width)
        shape = spec.generator
        self.size = self.prior_size if shape.resolution is None else fit_size(height, width, shape.resolution, shape.multiple)
        self.base_low = resize(base, self.size)
        self.mask_low = None if coverage is None else resize(coverage, self.size)
        hint = resize(base, self.prior_size)
        guides: dict[str, Tensor] = {}  # only priors that condition on hints / a matte take them
        if hints is not None:
            guides["hints"] = hints
        if coverage is not None and "matte" in prior.capabilities.conditions_on:
            guides["matte"] = resize(coverage, self.prior_size)
        self._prompt, self._base_at_prior, self._hints = spec.render_prompt(prompt), hint, hints
        self.condition = prior.condition(self._prompt, hint, spec.negative_prompt, **guides)
        self.regions = None  # the line art's closed regions, for a flats template
        self.hint_dots = None
        self._untrained_regions: Any = None  # the flats' generator before training: copied for every seed
        if spec.paints_flats:
            from .flats import find_regions, hints_from_rgba
            from .region_generator import RegionGenerator

            self.regions = find_regions(_numpy(base), gap=close_gaps)
            self.hint_dots = None if hints is None else hints_from_rgba(_numpy(hints))
            self._untrained_regions = RegionGenerator(spec.layers, self.regions, self.size, self.hint_dots)

    def layers(self, seed: int, on_step: Callable[[StepInfo], None] | None = None) -> list[LayerOutput]:
        """The layers for `seed` as they are written: full size, clamped, snapped to neutral where they rest."""
        generator = distill(
            self.base_low, self.spec.layers, self.prior, self.condition, self.settings, seed=seed, mask=self.mask_low,
            on_step=on_step, shape=self.spec.generator, prior_size=self.prior_size, generator=self._region_generator(seed),
        )
        if self.regions is not None:
            return [self._flats(generator.colours(), self.spec.layers[0])]
        with torch.no_grad():
            layers = finished_layers(generator(self.base_low), self.spec.layers, self.base_low, self.base)
        return [LayerOutput(self._held(tint_plane(out.color, spec, self.light), spec), out.alpha)
                for out, spec in zip(layers, self.spec.layers)]

    def _held(self, color: Tensor, spec: LayerSpec) -> Tensor:
        """A Color layer with a lightness tolerance desaturated where it would move the base's L* more."""
        if spec.lightness_tolerance is None:
            return color
        from .lightness import hold_lightness

        return hold_lightness(color, self.base, spec.lightness_tolerance)

    def _region_generator(self, seed: int) -> Any:
        """Flats are trained as one colour per closed region (`region_generator`; the regions' shares at the
        working size are worked out once per run), each seed from its own sampled start where the template
        asks for one; other layers by the default convolutional generator (None)."""
        if self._untrained_regions is None:
            return None
        generator = copy.deepcopy(self._untrained_regions)
        steps = self.spec.generator.sample_steps
        if steps and self.prior.capabilities.samples:
            generator.start_at(self._sampled_colours(seed, steps))
        return generator

    def _sampled_colours(self, seed: int, steps: int) -> np.ndarray:
        """(n, 3): each region's median colour in one direct sample of the prior for `seed` (off the ink: on the
        paper a flats layer shows its own value, so that colour is the layer's value).

        From mid grey, SDS on region colours averages the prior's many colourings of a drawing: at guidance 1
        everything greys, and at guidance 5 every colouring is pushed the same way, away from the fully
        unconditional average, so unhinted flats came out blue (docs/eval/coloring-start.md). A sample
        picks one colouring; SDS then refines it, and each seed gets a colouring of its own."""
        from .flats import INK_THRESHOLD, region_medians

        generator = torch.Generator(device=self.prior.device).manual_seed(seed)
        guides = {} if self._hints is None else {"hints": self._hints}
        sample = self.prior.sample(self._base_at_prior, [self._prompt], steps=steps, guidance=self.settings.guidance,
                                   generator=generator, **guides)
        full = _numpy(resize(sample, tuple(self.base.shape[-2:])))
        return region_medians(full, self.regions.labels, self.regions.ink < INK_THRESHOLD, self.regions.count)

    def _flats(self, colours: Tensor, spec: LayerSpec) -> LayerOutput:
        """The flats of the trained region colours at full size; outside the drawing the layer rests at its
        neutral (or is transparent)."""
        from .flats import flats_of

        flats = flats_of(self.regions, colours.detach().float().cpu().numpy(), hints=self.hint_dots)
        color = torch.from_numpy(flats.rgb)[None].to(self.base.device)
        alpha = torch.from_numpy(flats.alpha)[None, None].to(self.base.device)
        if spec.alpha:
            return LayerOutput(color, alpha)
        return LayerOutput(color * alpha + (1 - alpha) * spec.neutral, None)

    def composite(self, layers: list[LayerOutput]) -> Tensor:
        """The full-size picture the layers make over the base, [1, 3, H, W] in [0, 1]."""
        with torch.no_grad():
            return compose(self.base, self.spec.layers, layers).clamp(0, 1)


def run_edit(
    job: EditJob,
    *,
    prior: Prior | None = None,
    on_progress: ProgressCallback | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> EditResult:
    started = time.perf_counter()
    config = job.config
    if config.variations < 1:
        raise UsageError("--variations must be at least 1")
    spec = load_template(config.template)
    check_prompt(job.prompt, spec, config.prior.model)
    if config.close_gaps is not None and not spec.paints_flats:
        raise UsageError(f"--close-gaps: template '{spec.name}' paints no flats (the colorize template does)")
    family = family_for(prior_settings(config, spec).model)
    takes_hints = "hints" in family.prior.capabilities.conditions_on
    if job.hints is not None and not takes_hints:
        raise UsageError(f"--hints: {family.title} takes no colour hints (the colouring templates' prior does)")
    doc = load(job.input, layer=config.layer, max_pixels=config.max_pixels)
    hint_picture = None
    if takes_hints:
        doc, hint_picture = take_hints_layer(doc)
        if job.hints is not None:
            hint_picture = hints_file(doc, job.hints, config.max_pixels)
    on_paper = doc.base if doc.alpha is None else doc.base * doc.alpha + (1 - doc.alpha)  # what a colourist sees
    if spec.greyscale and not is_line_art(on_paper):
        spec = load_template(spec.greyscale)
        check_prompt(job.prompt, spec, config.prior.model)
    settings = edit_settings(spec, config.steps, config.guidance)
    asked = prior_settings(config, spec)
    check_settings_for(settings, asked)
    flats = spec.paints_flats
    if config.close_gaps is not None and not flats and on_notice:
        on_notice(f"{job.input.name} is a greyscale picture, not line art: --close-gaps has no lines to close")
    coverage = _coverage(doc, job.mask, config.max_pixels, paper=flats)
    for text in doc.notices:
        if on_notice:
            on_notice(text)
    target = document_output(  # before minutes of work, not after: where, which format, can the document hold it
        job.output or default_output(doc), doc, written_channels(spec, light_of(spec, job.prompt)),
        overwrite_input=job.overwrite_input, other_inputs=[p for p in (job.mask, job.hints) if p is not None],
    )
    if job.preview_dir is not None:
        preview_folder(job.preview_dir)
    prior = prior or load_prior(asked)

    device = prior.device
    base = torch.from_numpy(np.ascontiguousarray(on_paper if flats else doc.base))[None].to(device)
    hints = None if hint_picture is None else torch.from_numpy(hint_picture.rgba)[None].to(device)
    run = Distillation(prior, spec, settings, base, job.prompt, None if coverage is None else coverage.to(device), hints,
                       config.close_gaps)
    names = layer_names(spec, config.variations, set(doc.layer_names))
    nodes: list[PixelNode] = []
    for index in range(config.variations):
        step_hook = _step_hook(run, job, index, on_progress)
        nodes += _layer_nodes(spec, run.layers(job.seed + index, step_hook), coverage, index, names[index],
                              doc.base_layer is not None)

    record = _record(job, spec, settings, asked, prior, target.path, run.size, device, names[0])
    record["hints"] = None if hint_picture is None else hint_picture.source
    record["light_color"] = None if run.light is None else run.light.name
    record["close_gaps"] = None if run.regions is None else run.regions.gap
    write_document(target, doc, nodes, record)
    return EditResult(target.path, target.sidecar, time.perf_counter() - started, record)


def _coverage(doc: Document, mask_path: Path | None, max_pixels: int, *, paper: bool = False) -> Tensor | None:
    """Where the edit may act, [1, 1, H, W]: the --mask file (its alpha, else its gray), else the base's alpha
    (not for flats, `paper`: line art's transparent paper is what they colour, the base is taken over white).
    Checked before any model is loaded; an empty coverage is refused, since there would be nothing to edit."""
    if mask_path is None:
        if doc.alpha is None or paper:
            return None
        coverage, source, empty = torch.from_numpy(doc.alpha)[None], doc.path.name, "fully transparent"
    else:
        coverage, empty = _mask_file(doc, mask_path, max_pixels)
        source = mask_path.name
    if not bool((coverage > 0).any()):
        raise DocumentError(f"{source}: {empty}, so there is nothing to edit")
    return coverage


def _mask_file(doc: Document, mask_path: Path, max_pixels: int) -> tuple[Tensor, str]:
    """The mask's plane, and what an empty one is called: its alpha (transparent) or else its gray (black)."""
    mask_doc = load(mask_path, max_pixels=max_pixels)
    if (mask_doc.width, mask_doc.height) != (doc.width, doc.height):
        raise UsageError(
            f"--mask {mask_path.name} is {mask_doc.width}x{mask_doc.height} but the document is {doc.width}x{doc.height}"
        )
    if mask_doc.alpha is not None:
        return torch.from_numpy(np.ascontiguousarray(mask_doc.alpha))[None], "fully transparent"
    return torch.from_numpy(np.ascontiguousarray(mask_doc.base.mean(axis=0, keepdims=True)))[None], "all black"


def layer_names(spec: EditSpec, variations: int, taken: set[str]) -> list[list[str]]:
    """Each variation's layer names: the template's ('Shadows', 'Light'), 'Shadows v2' for the second
    variation; numbered as a set ('Shadows 2', 'Light 2', 'Shadows 2 v2') when the document already has any
    of those names, so that shading a Lasagna output again leaves both sets apart."""
    number = 1
    while True:  # ends: `taken` is finite, and the numbered names of one run differ from each other
        suffix = "" if number == 1 else f" {number}"
        names = [[f"{layer.name}{suffix}{f' v{index + 1}' if index else ''}" for layer in spec.layers]
                 for index in range(variations)]
        flat = [name for row in names for name in row]
        if len(set(flat)) == len(flat) and taken.isdisjoint(flat):
            return names
        number += 1


def _layer_nodes(
    spec: EditSpec, layers: list[LayerOutput], coverage: Tensor | None, index: int, names: list[str], clip: bool
) -> list[PixelNode]:
    """The finished layers as PSD layers; outside the coverage each holds its neutral value (or
    transparency), so applications that ignore clipping flags still show the same picture. With a --layer
    base (`clip`) they are clipped to it, except flats, which go beneath their line art."""
    nodes = []
    for layer, name, out in zip(spec.layers, names, layers):
        color, alpha = out.color, out.alpha
        if coverage is not None:
            cover = coverage.to(color.device)
            if alpha is not None:
                alpha = alpha * cover
            else:
                color = cover * color + (1 - cover) * layer.neutral
        nodes.append(
            PixelNode(
                name=name,
                color=_numpy(color),
                alpha=None if alpha is None else _numpy(alpha),
                blend_mode=layer.blend_mode,
                opacity=layer.opacity,
                visible=index == 0,
                clipping=clip and layer.finish != "flats",
            )
        )
    return nodes


def _numpy(tensor: Tensor) -> np.ndarray:
    return tensor[0].detach().float().cpu().numpy()


def _step_hook(run: Distillation, job: EditJob, index: int, on_progress: ProgressCallback | None) -> Callable[[StepInfo], None]:
    """Progress, and preview PNGs of the composite every `preview_every` steps when --preview is set."""
    variations = job.config.variations

    def hook(info: StepInfo) -> None:
        if on_progress is not None:
            on_progress(info, index, variations)
        if job.preview_dir is not None and (info.step % job.preview_every == 0 or info.step == info.steps):
            with torch.no_grad():
                outputs = info.generator(run.base_low)
                image = compose(run.base_low, run.spec.layers, outputs, run.mask_low)
            save_png(_numpy(image), None, job.preview_dir / f"v{index + 1}-step{info.step:05d}.png")

    return hook


def _record(
    job: EditJob, spec: EditSpec, settings: DistillSettings, asked: PriorSettings, prior: Prior, output: Path,
    size: tuple[int, int], device: Any, names: list[str],
) -> dict[str, Any]:
    """The sidecar: enough to know, months later, what produced these layers and to reproduce them."""
    return {
        "tool": "lasagna",
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": str(job.input),
        "output": str(output),
        "template": spec.name,
        "template_source": spec.source,
        "prompt": job.prompt,
        "rendered_prompt": spec.render_prompt(job.prompt),
        "negative_prompt": spec.negative_prompt,
        "model": asked.model,
        "prior": prior.family,
        "prior_options": asdict(prior.config),
        "base_layer": job.config.layer,
        "seed": job.seed,
        "variations": job.config.variations,
        "working_size": list(size),
        "device": str(device),
        "settings": asdict(settings),
        "generator": asdict(spec.generator),
        "layers": [
            {"name": name, "blend_mode": s.blend_mode.value, "opacity": s.opacity, "channels": s.channels, "alpha": s.alpha,
             "neutral": s.neutral}
            for name, s in zip(names, spec.layers)
        ],
    }
