"""One edit, end to end: load the document, distil the template's layers, bring them to full size, save.

The single function the CLI commands and the batch runner both call, so that an edit means the same thing
everywhere. It takes an already-loaded prior when the caller has one (batch loads the model once).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import __version__
from .distill import StepInfo, compose, distill, finished_layers
from .document import DEFAULT_MAX_PIXELS, Document, load
from .errors import DocumentError, UsageError
from .generator import LayerOutput
from .layers import PixelNode
from .priors import load_prior
from .priors.base import Prior
from .resample import resize
from .templates import DistillSettings, EditSpec, load_template, settings_with
from .writing import default_output, document_output, preview_folder, save_png, write_document


@dataclass
class EditRequest:
    """Everything a user can ask of one edit; None means 'the template's default'."""

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
    low_memory: bool = False  # SD: encoder gradient checkpointing, decoder and text encoder off the GPU
    fast_encoder: str | None = None  # SD: "half" encodes at half size for the gradient path
    vae: str | None = None  # SD: a TAESD-style AutoencoderTiny (folder or hub id) for the gradient path


@dataclass
class EditResult:
    output: Path
    sidecar: Path
    seconds: float
    record: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[StepInfo, int, int], None]  # (step info, variation index, variations)


def run_edit(
    request: EditRequest,
    *,
    prior: Prior | None = None,
    on_progress: ProgressCallback | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> EditResult:
    started = time.perf_counter()
    if not request.prompt.strip():
        raise UsageError("--prompt is empty; say what the edit should do, e.g. 'light from the left'")
    if request.variations < 1:
        raise UsageError("--variations must be at least 1")
    spec = load_template(request.template)
    settings = edit_settings(spec, request.steps, request.guidance)
    doc = load(request.input, layer=request.layer, max_pixels=request.max_pixels)
    coverage = _coverage(doc, request.mask, request.max_pixels)
    for text in doc.notices:
        if on_notice:
            on_notice(text)
    target = document_output(  # before minutes of work, not after: where, which format, can the document hold it
        request.output or default_output(doc), doc, [layer.channels for layer in spec.layers],
        overwrite_input=request.overwrite_input, other_inputs=[request.mask] if request.mask else [],
    )
    if request.preview_dir is not None:
        preview_folder(request.preview_dir)
    model = request.model or spec.model
    prior = prior or load_prior_for(request, spec)

    device = prior.device
    base = torch.from_numpy(doc.base)[None].to(device)
    size = prior.working_size(doc.height, doc.width)
    base_low = resize(base, size)
    mask_low = None if coverage is None else resize(coverage.to(device), size)
    condition = prior.condition(spec.render_prompt(request.prompt), base_low, spec.negative_prompt)

    names = layer_names(spec, request.variations, set(doc.layer_names))
    nodes: list[PixelNode] = []
    for index in range(request.variations):
        seed = request.seed + index
        step_hook = _step_hook(spec, base_low, mask_low, request, index, on_progress)
        generator = distill(base_low, spec.layers, prior, condition, settings, seed=seed, mask=mask_low, on_step=step_hook)
        with torch.no_grad():
            outputs = generator(base_low)
        nodes += _full_size_layers(spec, outputs, base_low, base, coverage, index, names[index])

    record = _record(request, spec, settings, model, target.path, size, device, names[0])
    write_document(target, doc, nodes, record)
    return EditResult(target.path, target.sidecar, time.perf_counter() - started, record)


def load_prior_for(request: EditRequest, spec: EditSpec | None = None) -> Prior:
    """The prior `run_edit` uses for `request`: its --model, else its template's default, on its device.

    Callers that run many edits (batch workers) load it once with this and pass it to `run_edit(prior=)`."""
    spec = spec or load_template(request.template)
    speed: dict[str, Any] = {}  # only when asked: a prior family without these options keeps its signature
    if request.low_memory:
        speed["low_memory"] = True
    if request.fast_encoder:
        speed["fast_encoder"] = request.fast_encoder
    if request.vae:
        speed["vae"] = request.vae
    return load_prior(request.model or spec.model, controlnet=request.controlnet, device=request.device,
                      precision=request.precision, **speed)


def edit_settings(spec: EditSpec, steps: int | None = None, guidance: float | None = None) -> DistillSettings:
    """The template's distillation defaults with the command line's --steps / --guidance, checked by the same
    rules as the template's own values."""
    overrides = {k: v for k, v in (("steps", steps), ("guidance", guidance)) if v is not None}
    try:
        return settings_with(overrides, base=spec.defaults, label=lambda key: f"--{key}")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _coverage(doc: Document, mask_path: Path | None, max_pixels: int) -> Tensor | None:
    """Where the edit may act, [1, 1, H, W]: the --mask file (its alpha, else its gray), else the base's alpha.
    Checked before any model is loaded; an empty coverage is refused, since there would be nothing to edit."""
    if mask_path is None:
        if doc.alpha is None:
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


def _full_size_layers(
    spec: EditSpec, outputs: list[LayerOutput], base_low: Tensor, base: Tensor, coverage: Tensor | None, index: int,
    names: list[str],
) -> list[PixelNode]:
    """Edge-aware upsampling to the document size; outside the coverage each layer holds its neutral value
    (or transparency), so applications that ignore clipping flags still show the same picture."""
    nodes = []
    cover = None if coverage is None else coverage.to(base.device)
    for layer, name, out in zip(spec.layers, names, finished_layers(outputs, spec.layers, base_low, base)):
        color, alpha = out.color, out.alpha
        if cover is not None:
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
            )
        )
    return nodes


def _numpy(tensor: Tensor) -> np.ndarray:
    return tensor[0].detach().float().cpu().numpy()


def _step_hook(
    spec: EditSpec, base_low: Tensor, mask_low: Tensor | None, request: EditRequest, index: int,
    on_progress: ProgressCallback | None,
) -> Callable[[StepInfo], None]:
    """Progress, and preview PNGs of the composite every `preview_every` steps when --preview is set."""

    def hook(info: StepInfo) -> None:
        if on_progress is not None:
            on_progress(info, index, request.variations)
        if request.preview_dir is not None and (info.step % request.preview_every == 0 or info.step == info.steps):
            with torch.no_grad():
                outputs = info.generator(base_low)
                image = compose(base_low, spec.layers, outputs, mask_low)
            save_png(_numpy(image), None, request.preview_dir / f"v{index + 1}-step{info.step:05d}.png")

    return hook


def _record(
    request: EditRequest, spec: EditSpec, settings: DistillSettings, model: str, output: Path, size: tuple[int, int], device: Any,
    names: list[str],
) -> dict[str, Any]:
    """The sidecar: enough to know, months later, what produced these layers and to reproduce them."""
    return {
        "tool": "lasagna",
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": str(request.input),
        "output": str(output),
        "template": spec.name,
        "template_source": spec.source,
        "prompt": request.prompt,
        "rendered_prompt": spec.render_prompt(request.prompt),
        "negative_prompt": spec.negative_prompt,
        "model": model,
        "controlnet": request.controlnet,
        "low_memory": request.low_memory,
        "fast_encoder": request.fast_encoder,
        "vae": request.vae,
        "base_layer": request.layer,
        "seed": request.seed,
        "variations": request.variations,
        "working_size": list(size),
        "device": str(device),
        "settings": asdict(settings),
        "layers": [
            {"name": name, "blend_mode": s.blend_mode.value, "channels": s.channels, "alpha": s.alpha, "neutral": s.neutral}
            for name, s in zip(names, spec.layers)
        ],
    }
