"""Measured quality of relighting: Lasagna (SDS into a template's layers) against two baselines.

On the held-out `test` split of a relighting manifest (ground truth exists), each case is edited three ways:

* `base`    - the unedited base (the floor every edit must beat in PSNR);
* `lasagna` - the template's layers distilled from the prior by SDS and blended over the base;
* `direct`  - direct generation: DDIM-sampling the same prior conditioned on base + direction (the paper's
              "ControlNet" baseline, which is free to change the content);

plus a `ground truth` row (the relit render itself) that checks the metrics. Metrics, per case then averaged:

* PSNR (dB) and SSIM (Gaussian window, sigma 1.5, mean over RGB) of the result against the ground truth;
* chroma drift: mean over pixels of |delta (a*, b*)| (CIE Lab, D65) between result and base. Lab's a*b*
  shrink as a colour darkens, so this also counts correct shading (the ground-truth row shows how much);
  hence also
* chroma drift at equal lightness: the same after a gray gain (on the sRGB values, where Multiply acts)
  brings the result to the base's luma - 0 for a gray Multiply shading, > 0 for hue/saturation changes;
* edge similarity: Pearson correlation of the Sobel gradient magnitudes of the result's and the base's
  lightness - 1 when the picture's structure is kept;
* shading strength: mean |delta L*| inside the object mask - so that a layer that does nothing (the trap of
  a too-strong pull to neutral) shows as ~0 instead of hiding behind the direction metric;
* direction accuracy: the fraction of cases where the change of log-luminance inside the object mask
  correlates positively (Pearson r > 0) with the light's image-plane direction, measured as the
  position of each pixel relative to the centroid of its own object (connected component of the mask),
  projected on that direction. Front and back lights have no image-plane direction: those cases are left
  out of this metric (their count is reported) but kept in all the others.

Nothing here prints; `on_progress` reports (done, total, method).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .priors import PriorSettings
from .priors.base import Prior
from .templates import DistillSettings, EditSpec

METHODS = ("base", "lasagna", "direct", "ground truth")
VISIBLE_SHADING = 1.0
"""Mean |delta L*| (CIE Lab lightness units) a case's change must reach to count in the *visible* direction
accuracy: about one just-noticeable difference."""


def visible_share(pairs: Sequence[tuple[float, float]]) -> float:
    """Share of (direction r, shading |delta L*|) pairs that are right AND visible: faint layers can't score."""
    return float(np.mean([r > 0 and shading >= VISIBLE_SHADING for r, shading in pairs]))


# ---------------------------------------------------------------------- colour and metrics (numpy, [3,H,W] in [0,1])


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    c = np.clip(rgb.astype(np.float64), 0, 1)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])


def linear_to_lab(lin: np.ndarray) -> np.ndarray:
    """[3, H, W] linear RGB (values above 1 allowed) -> [3, H, W] CIE L*a*b* (D65)."""
    xyz = np.tensordot(_RGB_TO_XYZ, lin, axes=1) / np.array([0.95047, 1.0, 1.08883])[:, None, None]
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """[3, H, W] sRGB in [0, 1] -> [3, H, W] CIE L*a*b* (D65)."""
    return linear_to_lab(srgb_to_linear(rgb))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    """Mean SSIM over channels with a Gaussian window (Wang et al. 2004 constants), 'valid' borders."""
    radius = max(1, min(int(3 * sigma + 0.5), (min(a.shape[-2:]) - 1) // 2))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :])[None, None].repeat(a.shape[0], 1, 1, 1)
    ta, tb = (torch.from_numpy(v.astype(np.float64))[None] for v in (a, b))

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, window, groups=a.shape[0])

    mu_a, mu_b = blur(ta), blur(tb)
    var_a, var_b = blur(ta * ta) - mu_a**2, blur(tb * tb) - mu_b**2
    cov = blur(ta * tb) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def chroma_drift(result: np.ndarray, base: np.ndarray) -> float:
    la, lb = srgb_to_lab(result), srgb_to_lab(base)
    return float(np.mean(np.hypot(la[1] - lb[1], la[2] - lb[2])))


def chroma_drift_equal_lightness(result: np.ndarray, base: np.ndarray) -> float:
    """Mean |delta (a*, b*)| after a gray gain brings the result to the base's luma (in sRGB values, where
    Multiply acts): a gray Multiply shading of the base scores 0, a change of hue or saturation (or light that
    washes colour out) does not. Plain Lab a*b* shrink with lightness, so `chroma_drift` also counts shading."""
    luma = np.array([0.3, 0.59, 0.11])
    yr, yb = np.tensordot(luma, result, axes=1), np.tensordot(luma, base, axes=1)
    gain = np.minimum(yb / np.maximum(yr, 1e-3), 20.0)[None]
    scaled = np.maximum(result * gain, 0.0)
    lin = np.where(scaled <= 0.04045, scaled / 12.92, ((scaled + 0.055) / 1.055) ** 2.4)  # no clip above 1
    la, lb = linear_to_lab(lin), srgb_to_lab(base)
    return float(np.mean(np.hypot(la[1] - lb[1], la[2] - lb[2])))


def _sobel_magnitude(gray: np.ndarray) -> np.ndarray:
    p = np.pad(gray, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return np.hypot(gx, gy)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-12 else 0.0


def edge_similarity(result: np.ndarray, base: np.ndarray) -> float:
    return _pearson(_sobel_magnitude(srgb_to_lab(result)[0]), _sobel_magnitude(srgb_to_lab(base)[0]))


def shading_strength(result: np.ndarray, base: np.ndarray, mask: np.ndarray) -> float:
    d = np.abs(srgb_to_lab(result)[0] - srgb_to_lab(base)[0])
    m = mask > 0.5
    return float(d[m].mean()) if m.any() else float(d.mean())


def components(mask: np.ndarray) -> np.ndarray:
    """4-connected component labels of a boolean mask [H, W] (0 = background, 1.. = objects)."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    h, w = mask.shape
    current = 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        current += 1
        stack = [(y0, x0)]
        labels[y0, x0] = current
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    stack.append((ny, nx))
    return labels


def direction_correlation(result: np.ndarray, base: np.ndarray, mask: np.ndarray | None, vector: tuple[float, float]) -> float | None:
    """Pearson r between the change of log-luminance and each pixel's position (relative to its object's
    centroid, y up) projected on the light's image-plane `vector`; None without an image-plane direction."""
    dx, dy = vector
    if abs(dx) + abs(dy) < 1e-6:
        return None
    lum = lambda im: np.log(np.clip(0.3 * im[0] + 0.59 * im[1] + 0.11 * im[2], 1e-3, None))  # noqa: E731
    change = lum(result) - lum(base)
    h, w = change.shape
    m = np.ones((h, w), bool) if mask is None else mask > 0.5
    if m.sum() < 3:
        m = np.ones((h, w), bool)
    labels = components(m)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    proj = np.zeros((h, w))
    for label in range(1, labels.max() + 1):
        sel = labels == label
        cx, cy = xs[sel].mean(), ys[sel].mean()
        proj[sel] = (xs[sel] - cx) * dx - (ys[sel] - cy) * dy
    return _pearson(change[m], proj[m])


# ---------------------------------------------------------------------- the runner


@dataclass
class CaseResult:
    scene: str
    direction: str
    method: str
    psnr: float
    ssim: float
    chroma_drift: float
    hue_drift: float
    edge_similarity: float
    shading: float
    direction_r: float | None
    seconds: float


@dataclass
class EvalReport:
    data: str
    model: str
    template: str
    cases: int
    settings: dict[str, Any]
    summary: dict[str, dict[str, float | None]]
    direction_cases: int
    skipped_direction: dict[str, int]
    seconds: float
    split: str = "test"
    results: list[CaseResult] = field(default_factory=list)
    photos: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["results"] = [asdict(r) for r in self.results]
        return out


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
    photos: Sequence[tuple[str, np.ndarray]] = (),
    pictures: Path | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> EvalReport:
    """Run the comparison on `data`'s `split` (tune settings on "val", report on "test"), and the direction
    check on `photos` with the same prior and settings; see the module doc for what is measured."""
    from .directions import image_plane_vector
    from .edit import edit_settings
    from .errors import UsageError
    from .priors import families, family_for, load_prior
    from .resample import resize
    from .templates import load_template
    from .train.manifest import load_image, read_manifest

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
    model = prior_settings.model or spec.model
    if "direct" in methods and not family_for(model).prior.capabilities.samples:  # before the model loads
        able = " or ".join(f"the {f.title}" for f in families() if f.prior.capabilities.samples) or "no registered"
        raise UsageError(f"the direct-generation baseline samples the prior, which '{model}' can't do: only {able} prior can (pass --no-direct)")
    prior = load_prior(replace(prior_settings, model=model))

    loaded = []
    for ex in cases:
        base = load_image(ex.input)
        target = load_image(ex.target)
        mask = load_image(ex.mask, gray=True)[0].numpy() if ex.mask is not None else None
        loaded.append((ex, base, target, mask))

    outputs: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    total = len(loaded) * len(methods)
    done = 0
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
            done += len(loaded)
            if on_progress:
                on_progress(done, total, m)
            continue
        for index, (ex, base, target, mask) in enumerate(loaded):
            t0 = time.perf_counter()
            if m == "base":
                result = base.numpy()
            elif m == "ground truth":
                result = target.numpy()
            else:
                result = _lasagna(prior, spec, settings, base.numpy(), ex.prompt, seed + index)
            outputs[m].append(result)
            seconds[m].append(time.perf_counter() - t0)
            done += 1
            if on_progress:
                on_progress(done, total, m)

    results: list[CaseResult] = []
    for m in methods:
        for (ex, base, target, mask), out, sec in zip(loaded, outputs[m], seconds[m]):
            b, t = base.numpy(), target.numpy()
            r = direction_correlation(out, b, mask, image_plane_vector(ex.direction))
            results.append(CaseResult(
                scene=ex.scene, direction=ex.direction, method=m,
                psnr=psnr(out, t), ssim=ssim(out, t), chroma_drift=chroma_drift(out, b),
                hue_drift=chroma_drift_equal_lightness(out, b),
                edge_similarity=edge_similarity(out, b),
                shading=shading_strength(out, b, mask if mask is not None else np.ones(b.shape[1:])),
                direction_r=r, seconds=sec,
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
        skipped_direction=skipped, seconds=0.0, split=split, results=results,
    )
    if photos:
        report.photos = photo_directions(photos, prior=prior, spec=spec, settings=settings, seed=seed,
                                         pictures=None if pictures is None else pictures / "photos", on_progress=on_progress)
    report.seconds = time.perf_counter() - started
    return report


def _lasagna(prior: Prior, spec: EditSpec, settings: DistillSettings, picture: np.ndarray, prompt: str, seed: int) -> np.ndarray:
    """What `lasagna shade` makes of `picture` ([3,H,W] in [0,1]): the same `Distillation`, composed at full
    size; as numpy on the CPU."""
    from .edit import Distillation

    full = torch.from_numpy(np.ascontiguousarray(picture, dtype=np.float32))[None].to(prior.device)
    run = Distillation(prior, spec, settings, full, prompt)
    return run.composite(run.layers(seed))[0].cpu().numpy()


def summarise(results: Sequence[CaseResult], methods: Sequence[str]) -> dict[str, dict[str, float | None]]:
    summary: dict[str, dict[str, float | None]] = {}
    for m in methods:
        rows = [r for r in results if r.method == m]
        finite = [r.psnr for r in rows if np.isfinite(r.psnr)]
        directional = [r.direction_r for r in rows if r.direction_r is not None]
        summary[m] = {
            "psnr": float(np.mean(finite)) if finite else None,
            "ssim": float(np.mean([r.ssim for r in rows])),
            "chroma_drift": float(np.mean([r.chroma_drift for r in rows])),
            "hue_drift": float(np.mean([r.hue_drift for r in rows])),
            "edge_similarity": float(np.mean([r.edge_similarity for r in rows])),
            "shading": float(np.mean([r.shading for r in rows])),
            # the unedited base changes nothing: its correlation is undefined, not "wrong"
            "direction_accuracy": None if m == "base" or not directional else float(np.mean([r > 0 for r in directional])),
            "visible_direction_accuracy": None if m == "base" or not directional else visible_share(
                [(r.direction_r, r.shading) for r in rows if r.direction_r is not None]),
            "seconds": float(np.mean([r.seconds for r in rows])),
        }
    return summary


def save_contact_sheet(loaded: Sequence[Any], outputs: dict[str, list[np.ndarray]], methods: Sequence[str], folder: Path,
                       per_sheet: int = 10, scale: int = 4) -> list[Path]:
    """PNG sheets, one row per case: base | each method's result, enlarged `scale`x (nearest)."""
    from .writing import save_png

    folder.mkdir(parents=True, exist_ok=True)
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
    *,
    prior: Prior,
    spec: EditSpec,
    settings: DistillSettings,
    directions: Sequence[str] = ("left", "right", "top", "bottom"),
    seed: int = 0,
    pictures: Path | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Direction accuracy on photos without ground truth: each photo ([3,H,W] in [0,1]) lit from each
    direction the way `lasagna shade` does it; the whole picture is the mask (objects are not segmented),
    positions relative to the picture's centre."""
    from .directions import PROMPTS, image_plane_vector

    rows = []
    total, done = len(photos) * len(directions), 0
    for name, photo in photos:
        for d in directions:
            out = _lasagna(prior, spec, settings, photo, PROMPTS[d], seed)
            r = direction_correlation(out, photo, None, image_plane_vector(d))
            rows.append({"photo": name, "direction": d, "r": r, "shading": shading_strength(out, photo, np.ones(photo.shape[1:])),
                         "chroma_drift": chroma_drift(out, photo)})
            if pictures is not None:
                from .writing import save_png

                pictures.mkdir(parents=True, exist_ok=True)
                save_png(out.astype(np.float32), None, pictures / f"{name}-{d}.png")
            done += 1
            if on_progress:
                on_progress(done, total, "photos")
    accuracy = float(np.mean([r["r"] > 0 for r in rows])) if rows else None
    visible = visible_share([(r["r"], r["shading"]) for r in rows]) if rows else None
    return {"cases": len(rows), "direction_accuracy": accuracy, "visible_direction_accuracy": visible, "rows": rows}


# ---------------------------------------------------------------------- writing the table


LABELS = {
    "psnr": "PSNR vs GT (dB) ↑",
    "ssim": "SSIM vs GT ↑",
    "chroma_drift": "chroma drift vs base, Lab |Δa*b*| ↓",
    "hue_drift": "chroma drift at equal lightness ↓",
    "edge_similarity": "edge similarity to base ↑",
    "shading": "shading strength |ΔL*| in mask",
    "direction_accuracy": "direction accuracy ↑",
    "visible_direction_accuracy": "right and visible (|ΔL*| ≥ 1) ↑",
    "seconds": "s / case",
}


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if key in ("direction_accuracy", "visible_direction_accuracy"):
        return f"{100 * value:.0f}%"
    if key in ("psnr", "chroma_drift", "hue_drift", "shading"):
        return f"{value:.2f}"
    if key == "seconds":
        return f"{value:.1f}"
    return f"{value:.3f}"


def markdown_table(report: EvalReport) -> str:
    keys = list(LABELS)
    lines = ["| method | " + " | ".join(LABELS[k].replace("|", "\\|") for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for m, row in report.summary.items():
        lines.append(f"| {m} | " + " | ".join(_fmt(k, row.get(k)) for k in keys) + " |")
    skipped = ", ".join(f"{n} {d}" for d, n in sorted(report.skipped_direction.items())) or "none"
    lines.append("")
    lines.append(
        f"{report.cases} {'held-out test' if report.split == 'test' else report.split} cases ({report.direction_cases} with an image-plane light direction; "
        f"left out of direction accuracy only: {skipped}). Model `{report.model}`, template `{report.template}`, "
        f"distillation: {report.settings['steps']} steps, guidance {report.settings['guidance']}, "
        f"{report.settings['noise_samples']} noise samples, lr {report.settings['learning_rate']}, "
        f"neutral weight {report.settings['neutral_weight']}"
        + (f"; direct generation: DDIM {report.settings['direct_steps']} steps, guidance {report.settings['direct_guidance']}"
           if "direct" in report.summary else "")
        + f". Wall time {report.seconds / 60:.1f} min."
    )
    if report.photos:
        p = report.photos
        lines.append("")
        lines.append(f"Photos without ground truth ({', '.join(sorted({r['photo'] for r in p['rows']}))}; whole picture as the "
                     f"mask): direction accuracy {_fmt('direction_accuracy', p['direction_accuracy'])}, right and visible "
                     f"{_fmt('direction_accuracy', p.get('visible_direction_accuracy'))}, over {p['cases']} photo x direction cases; "
                     f"mean shading |ΔL*| {np.mean([r['shading'] for r in p['rows']]):.2f}.")
    return "\n".join(lines) + "\n"


def write_report(report: EvalReport, path: Path) -> Path:
    """Written atomically: an interrupted eval never leaves half a table behind."""
    from .writing.atomic import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        text = json.dumps(report.to_json(), indent=1, default=float) + "\n"
    else:
        text = markdown_table(report)
    with atomic_write(path) as f:
        f.write(text.encode("utf-8"))
    return path


def report_from_json(path: Path) -> EvalReport:
    """An EvalReport read back from `write_report(..., X.json)`; the summary is recomputed from the cases."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    results = [CaseResult(**r) for r in data.pop("results")]
    methods = list(data["summary"])
    data["summary"] = summarise(results, methods)
    photos = data.get("photos") or {}
    if photos.get("rows"):
        photos["visible_direction_accuracy"] = visible_share([(r["r"], r["shading"]) for r in photos["rows"]])
    return EvalReport(**data, results=results)
