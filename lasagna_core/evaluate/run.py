"""The `lasagna eval` run: on the held-out `test` split of a relighting manifest (ground truth exists), each case
is edited three ways:

* `base`    - the unedited base (the floor every edit must beat in PSNR);
* `lasagna` - the template's layers distilled from the prior by SDS and blended over the base;
* `direct`  - direct generation: DDIM-sampling the same prior conditioned on base + direction (the paper's
              "ControlNet" baseline, which is free to change the content); for an IC-Light prior, IC-Light's
              own relit picture of the base (what its users get today);

plus a `ground truth` row (the relit render itself) that checks the metrics (`evaluate.metrics`), and with
`compare_model` a row `lasagna [NAME]`: the same distillation with another prior (today's shipped one beside
a new one) on the same cases. Each case's own prompt is the edit's, so a coloured light ("warm light from
the left") reaches the layers as `lasagna shade` gives it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..priors import PriorSettings
from .metrics import (
    adds_light,
    cast_shadow_iou,
    chroma_drift,
    chroma_drift_equal_lightness,
    direction_correlation,
    edge_similarity,
    light_hue_error,
    outline_band,
    outline_error,
    psnr,
    shading_strength,
    ssim,
    visible_share,
)
from .report import CaseResult, EvalReport, compare_label, summarise
from .shading import CaseShader, ShadeCase, ShadeSetup

METHODS = ("base", "lasagna", "direct", "ground truth")


def pick_cases(examples: Sequence[Any], limit: int | None, seed: int = 0) -> list[Any]:
    """A fixed, seeded sample of `limit` test cases (all when None), spread over scenes and directions."""
    order = np.random.default_rng(seed).permutation(len(examples)) if limit is not None else np.arange(len(examples))
    chosen = sorted(order[: limit if limit is not None else len(examples)].tolist())
    return [examples[i] for i in chosen]


def evaluate(
    data: Path,
    *,
    prior_settings: PriorSettings = PriorSettings("builtin", device="cpu"),
    template: str = "shade",
    limit: int | None = None,
    split: str = "test",
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    direct_steps: int = 50,
    direct_guidance: float = 3.0,
    methods: Sequence[str] = METHODS,
    compare_model: str | None = None,
    photos: Sequence[tuple[str, np.ndarray]] = (),
    pictures: Path | None = None,
    jobs: int = 1,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> EvalReport:
    """Run the comparison on `data`'s `split` (tune settings on "val", report on "test"), and the direction
    check on `photos` with the same prior and settings, the distillations in `jobs` processes; see the module
    doc for what is measured."""
    from ..directions import image_plane_vector
    from ..edit import check_settings_for, edit_settings, with_template
    from ..errors import UsageError
    from ..priors import family_for, load_prior
    from ..resample import resize
    from ..templates import load_template
    from ..train.manifest import load_image, read_manifest

    started = time.perf_counter()
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise UsageError(f"unknown eval method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    examples = read_manifest(data, split)
    if not examples:
        raise UsageError(f"'{data}' has no {split} split to evaluate on")
    cases = pick_cases(examples, limit, seed)
    spec = load_template(template)
    settings = edit_settings(spec, steps, guidance)
    asked = with_template(prior_settings, spec)
    model = asked.model
    family = family_for(model)
    if "direct" in methods and not family.prior.capabilities_for(family.config(asked.option_values())).samples:  # before the model loads
        raise UsageError(f"the direct-generation baseline samples the prior, which '{model}' can't do (pass --no-direct)")
    rows = {"lasagna": asked}
    if compare_model is not None:  # the same distillation with another prior: one more row after Lasagna's
        rows[compare_label(compare_model)] = with_template(
            PriorSettings(compare_model, prior_settings.device, prior_settings.precision), spec)
        at = list(methods).index("lasagna") + 1 if "lasagna" in methods else len(methods)
        methods = [*methods[:at], compare_label(compare_model), *methods[at:]]
    for row_settings in rows.values():
        check_settings_for(settings, row_settings)
    setup = ShadeSetup(rows, template, settings)
    priors = {row: load_prior(row_settings) for row, row_settings in rows.items()}
    prior = priors["lasagna"]

    loaded = []
    for ex in cases:
        base = load_image(ex.input)
        target = load_image(ex.target)
        mask = load_image(ex.mask, gray=True)[0].numpy() if ex.mask is not None else None
        loaded.append((ex, base, target, mask))

    outputs: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    hue_errors: dict[str, list[float | None]] = {m: [None] * len(loaded) for m in methods}
    hue_scored = [ex.light_color is not None and adds_light(target.numpy(), base.numpy()) for ex, base, target, _ in loaded]
    progress = _Progress(len(loaded) * len(methods), on_progress)
    for m in methods:
        if m == "direct":
            # Batched: one DDIM run over all cases (per-case time is the batch time / cases).
            t0 = time.perf_counter()
            results = []
            for i in range(0, len(loaded), 32):
                chunk = loaded[i : i + 32]
                bases = torch.stack([b for _, b, _, _ in chunk])
                size = prior.working_size(bases.shape[-2], bases.shape[-1])
                gen = torch.Generator().manual_seed(seed + i)
                out = prior.sample(resize(bases, size), [ex.prompt for ex, *_ in chunk], steps=direct_steps,
                                   guidance=direct_guidance, generator=gen)
                results += [o for o in resize(out, tuple(bases.shape[-2:]))]
            per = (time.perf_counter() - t0) / len(loaded)
            outputs[m] = [r.numpy() for r in results]
            seconds[m] = [per] * len(loaded)
            progress.advance(len(loaded), m)
        elif m in ("base", "ground truth"):
            outputs[m] = [(base if m == "base" else target).numpy() for _, base, target, _ in loaded]
            seconds[m] = [0.0] * len(loaded)
            progress.advance(len(loaded), m)
    distilled = [m for m in methods if m in priors]
    with CaseShader(setup, priors, spec, jobs) as shader:
        shaded = shader.shade([ShadeCase(m, base.numpy(), ex.prompt, seed + index) for m in distilled
                               for index, (ex, base, _, _) in enumerate(loaded)],
                              lambda case: progress.advance(1, case.prior))
        for k, m in enumerate(distilled):
            row = shaded[k * len(loaded) : (k + 1) * len(loaded)]
            outputs[m], seconds[m] = [s.composite for s in row], [s.seconds for s in row]
            hue_errors[m] = [light_hue_error(s.light, ex.light_color) if scored and s.light is not None else None
                             for s, (ex, *_), scored in zip(row, loaded, hue_scored)]
        photo_report = None if not photos else photo_directions(
            photos, shader, seed=seed, pictures=None if pictures is None else pictures / "photos", on_progress=on_progress)

    results: list[CaseResult] = []
    bands = [outline_band(base.numpy(), mask) for _, base, _, mask in loaded]
    for m in methods:
        for (ex, base, target, mask), band, out, sec, hue in zip(loaded, bands, outputs[m], seconds[m], hue_errors[m]):
            b, t = base.numpy(), target.numpy()
            r = direction_correlation(out, b, mask, image_plane_vector(ex.direction))
            results.append(CaseResult(
                scene=ex.scene, direction=ex.direction, method=m,
                psnr=psnr(out, t), ssim=ssim(out, t), chroma_drift=chroma_drift(out, b),
                hue_drift=chroma_drift_equal_lightness(out, b),
                edge_similarity=edge_similarity(out, b),
                shading=shading_strength(out, b, mask if mask is not None else np.ones(b.shape[1:])),
                direction_r=r, seconds=sec, cast_shadow_iou=cast_shadow_iou(out, b, t, mask),
                outline_error=outline_error(out, t, band), light_hue_error=hue,
            ))
    summary = summarise(results, methods)
    skipped: dict[str, int] = {}
    for ex, *_ in loaded:
        if image_plane_vector(ex.direction) == (0.0, 0.0):
            skipped[ex.direction] = skipped.get(ex.direction, 0) + 1
    if pictures is not None:
        save_contact_sheet(loaded, outputs, methods, pictures)
    settings_record = {**asdict(settings), "direct_steps": direct_steps, "direct_guidance": direct_guidance, "seed": seed,
                       "limit": limit}
    report = EvalReport(
        data=str(data), model=model, template=spec.name, cases=len(loaded), settings=settings_record, summary=summary,
        direction_cases=sum(1 for ex, *_ in loaded if image_plane_vector(ex.direction) != (0.0, 0.0)),
        skipped_direction=skipped, seconds=0.0, split=split, results=results, compare_model=compare_model,
    )
    if photo_report is not None:
        report.photos = photo_report
    report.seconds = time.perf_counter() - started
    return report


def save_contact_sheet(loaded: Sequence[Any], outputs: dict[str, list[np.ndarray]], methods: Sequence[str], folder: Path,
                       per_sheet: int = 10, tile: int = 128) -> list[Path]:
    """PNG sheets, one row per case: base | each method's result, small cases enlarged (nearest) to about
    `tile` px, large ones as they are (a 512 px test split makes sheets of 512 px tiles, not 2,048)."""
    from ..writing import save_png

    folder.mkdir(parents=True, exist_ok=True)
    scale = max(1, tile // max(loaded[0][1].shape[-2:])) if loaded else 1
    paths = []
    cols = [m for m in methods if m != "base"]
    for start in range(0, len(loaded), per_sheet):
        rows = []
        for i in range(start, min(start + per_sheet, len(loaded))):
            tiles = [loaded[i][1].numpy()] + [outputs[m][i] for m in cols]
            rows.append(np.concatenate([np.pad(t, ((0, 0), (1, 1), (1, 1)), constant_values=1.0) for t in tiles], axis=2))
        sheet = np.concatenate(rows, axis=1).repeat(scale, axis=1).repeat(scale, axis=2)
        path = folder / f"cases-{start // per_sheet + 1:02d}.png"
        save_png(sheet.astype(np.float32), None, path)
        paths.append(path)
    (folder / "README.txt").write_text("columns: base | " + " | ".join(cols) + "\n", encoding="utf-8")
    return paths


def photo_directions(
    photos: Sequence[tuple[str, np.ndarray]],
    shader: CaseShader,
    *,
    directions: Sequence[str] = ("left", "right", "top", "bottom"),
    seed: int = 0,
    pictures: Path | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Direction accuracy on photos without ground truth: each photo ([3,H,W] in [0,1]) lit from each
    direction the way `lasagna shade` does it, by the shader's "lasagna" prior; the whole picture is the mask
    (objects are not segmented), positions relative to the picture's centre."""
    from ..directions import PROMPTS, image_plane_vector

    asked = [(name, photo, d) for name, photo in photos for d in directions]
    progress = _Progress(len(asked), on_progress)
    shaded = shader.shade([ShadeCase("lasagna", photo, PROMPTS[d], seed) for _, photo, d in asked],
                          lambda _: progress.advance(1, "photos"))
    rows = []
    for (name, photo, d), result in zip(asked, shaded):
        out = result.composite
        r = direction_correlation(out, photo, None, image_plane_vector(d))
        rows.append({"photo": name, "direction": d, "r": r, "shading": shading_strength(out, photo, np.ones(photo.shape[1:])),
                     "chroma_drift": chroma_drift(out, photo)})
        if pictures is not None:
            from ..writing import save_png

            pictures.mkdir(parents=True, exist_ok=True)
            save_png(out.astype(np.float32), None, pictures / f"{name}-{d}.png")
    accuracy = float(np.mean([r["r"] > 0 for r in rows])) if rows else None
    visible = visible_share([(r["r"], r["shading"]) for r in rows]) if rows else None
    return {"cases": len(rows), "direction_accuracy": accuracy, "visible_direction_accuracy": visible, "rows": rows}


@dataclass
class _Progress:
    """Counts what is done out of `total` for an evaluation's `on_progress`."""

    total: int
    on_progress: Callable[[int, int, str], None] | None
    done: int = 0

    def advance(self, count: int, method: str) -> None:
        self.done += count
        if self.on_progress:
            self.on_progress(self.done, self.total, method)
