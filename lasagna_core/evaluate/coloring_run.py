"""`lasagna eval` on a colouring data set (`lasagna dataset line-art`): Lasagna's flats against the classical
flood fill and direct sampling from the prior, scored by `evaluate.colouring` against the truth's regions.

Cases come from the held-out split: per scene its line art in one style (the styles take turns) and, for a
share of the scenes, its greyscale picture. Each line-art case runs

* `lasagna` - the colorize template's flats, no hints, no prompt;
* `lasagna+hints` - the same with one hint dot (its region's true colour) in each of the HINTED largest
  closed regions, at a point deep inside it;
* `flood fill` - those dots filled into their regions, every other region left white (what the classical
  tool gives; unhinted regions are scored as that white);
* `direct` - the prior's own sample for the line art (with the same dots), brought to full size;
* `lasagna+word` - flats with a prompt naming a colour for the drawing ("a blue drawing"), the colour taking
  turns over WORDS; scored by the hue of the largest region against the named colour's.

Greyscale cases run the colorize-grey template (a Color layer) and report the lightness drift and the chroma
the layer adds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..color import srgb_to_lab
from ..color_words import COLOR_WORDS
from ..errors import UsageError
from ..flatart.coloring import read_region_ids
from ..flats import find_regions, hints_from_rgba
from ..priors import PriorSettings, load_prior
from ..resample import resize
from ..train.color import ColorExample, read_color_manifest
from .colouring import HINT_TOLERANCE, flood_fill_baseline, score_colouring
from .run import pick_cases

HINTED = 5
WORDS = ("red", "orange", "yellow", "green", "blue", "purple", "pink")
HUE_TOLERANCE = 30.0
METHODS = ("lasagna", "lasagna+hints", "flood fill", "direct")


@dataclass
class ColorCaseResult:
    case: str
    kind: str
    method: str
    scores: dict[str, Any]
    seconds: float


@dataclass
class ColorEvalReport:
    data: str
    model: str
    cases: int
    results: list[ColorCaseResult] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for method in sorted({r.method for r in self.results}, key=_method_order):
            rows = [r.scores for r in self.results if r.method == method]
            hints = [e for r in rows for e in r.get("hint_errors", [])]
            out[method] = {
                "cases": len(rows),
                "one_colour": _mean(r.get("one_colour") for r in rows),
                "crossing": _mean(r.get("crossing") for r in rows),
                "hints_within_5": None if not hints else float(np.mean([e <= HINT_TOLERANCE for e in hints])),
                "unhinted_error": _mean(r.get("unhinted_error") for r in rows),
                "holes_kept_paper": _mean(r.get("holes_kept_paper") for r in rows),
                "hue_within_30": _mean(r.get("hue_ok") for r in rows),
                "lightness_drift": _mean(r.get("lightness_drift") for r in rows),
                "chroma_added": _mean(r.get("chroma_added") for r in rows),
            }
        return out

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data, "model": self.model, "cases": self.cases, "seconds": round(self.seconds, 1),
                "summary": self.summary(), "results": [asdict(r) for r in self.results]}


def _method_order(name: str) -> int:
    order = (*METHODS, "lasagna+word", "lasagna (greyscale)")
    return order.index(name) if name in order else len(order)


def _mean(values: Any) -> float | None:
    kept = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(kept)) if kept else None


def is_coloring_data(data: Path) -> bool:
    """A colouring manifest's lines carry `kind` (line-art / greyscale); a relighting one's do not. False when
    there is no manifest to read (the relighting path says so, after its own checks)."""
    from ..train.manifest import manifest_path

    try:
        with open(manifest_path(data), encoding="utf-8") as fh:
            first = fh.readline()
        return "kind" in json.loads(first)
    except (UsageError, OSError, ValueError):
        return False


def _picture(path: Path) -> np.ndarray:
    from ..document import load

    return np.ascontiguousarray(load(path).base)


def deep_point(mask: np.ndarray) -> tuple[int, int]:
    """A pixel of `mask` (H, W) as far from its border as erosion finds: the last pixel left standing."""
    from ..flats import dilate

    inside = mask.copy()
    while True:
        smaller = ~dilate(~inside, 1)
        if not smaller.any():
            ys, xs = np.nonzero(inside)
            middle = len(ys) // 2
            return int(ys[middle]), int(xs[middle])
        inside = smaller


def hint_picture(truth: np.ndarray, labels: np.ndarray, count: int, radius: int) -> tuple[np.ndarray, dict[int, tuple]]:
    """RGBA hints (4, H, W): a dot of `radius` px in the true colour deep inside each of the `count` largest
    closed regions (labels >= 0), and {region: colour}."""
    sizes = np.bincount(labels[labels >= 0].ravel())
    rgba = np.zeros((4, *labels.shape), np.float32)
    rows, cols = np.mgrid[: labels.shape[0], : labels.shape[1]]
    chosen: dict[int, tuple] = {}
    for region in np.argsort(-sizes)[:count]:
        if sizes[region] == 0:
            break
        mask = labels == region
        y, x = deep_point(mask)
        colour = np.median(truth[:, mask], axis=1)
        dot = ((rows - y) ** 2 + (cols - x) ** 2 <= radius**2) & mask
        rgba[:3, dot] = colour[:, None]
        rgba[3, dot] = 1.0
        chosen[int(region)] = tuple(float(c) for c in colour)
    return rgba, chosen


def largest_region_hue_ok(result: np.ndarray, labels: np.ndarray, word: str) -> bool:
    """Whether the largest closed region's colour is within HUE_TOLERANCE degrees of hue of `word`'s."""
    sizes = np.bincount(labels[labels >= 0].ravel())
    mask = labels == int(np.argmax(sizes))
    got = srgb_to_lab(np.median(result[:, mask], axis=1).reshape(3, 1, 1))[:, 0, 0]
    want = srgb_to_lab(np.array(COLOR_WORDS[word].rgb).reshape(3, 1, 1))[:, 0, 0]
    diff = abs(math.degrees(math.atan2(got[2], got[1]) - math.atan2(want[2], want[1]))) % 360
    return min(diff, 360 - diff) <= HUE_TOLERANCE and math.hypot(got[1], got[2]) > 10


def evaluate_coloring(
    data: Path,
    *,
    prior_settings: PriorSettings,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    steps: int | None = None,
    direct: bool = True,
    direct_steps: int = 50,
    grey_every: int = 4,
    pictures: Path | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> ColorEvalReport:
    """Run every method on the split's cases (see module doc): `limit` scenes (a seeded sample), the greyscale
    picture of every `grey_every`-th; `pictures`: a folder for contact sheets (line art | flats | flats with
    the hint dots | flood fill | truth), one row per line-art case."""
    from ..edit import Distillation, edit_settings
    from ..templates import load_template

    started = time.perf_counter()
    examples = read_color_manifest(data, split)
    if not examples:
        raise UsageError(f"the manifest has no {split} examples")
    by_scene: dict[str, list[ColorExample]] = {}
    for e in examples:
        by_scene.setdefault(e.scene, []).append(e)
    scenes = pick_cases(sorted(by_scene), limit, seed)
    prior = load_prior(prior_settings)
    line_spec, grey_spec = load_template("colorize"), load_template("colorize-grey")
    line_settings, grey_settings = edit_settings(line_spec, steps), edit_settings(grey_spec, steps)
    report = ColorEvalReport(str(data), prior_settings.model, len(scenes))
    total, done = len(scenes), 0
    device = prior.device
    sheet: list[list[np.ndarray]] = []

    def flats_of(base: np.ndarray, prompt: str, hints: np.ndarray | None) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        tensor = torch.from_numpy(base)[None].to(device)
        hint_tensor = None if hints is None else torch.from_numpy(hints)[None].to(device)
        run = Distillation(prior, line_spec, line_settings, tensor, prompt, None, hint_tensor)
        layer = run.layers(seed)[0]
        return layer.color[0].cpu().numpy(), time.perf_counter() - t0

    for index, scene in enumerate(scenes):
        cases = by_scene[scene]
        line = [c for c in cases if c.kind == "line-art"]
        if line:
            case = line[index % len(line)]
            base, truth = _picture(case.input), _picture(case.target)
            labels = read_region_ids(case.regions) - 1 if case.regions else find_regions(truth).labels
            regions = find_regions(base)
            lines = regions.ink
            radius = max(2, round(max(labels.shape) / 128))
            hints, chosen = hint_picture(truth, labels, HINTED, radius)
            name = f"{scene}/{case.input.stem.split('_', 1)[1]}"
            plain, seconds = flats_of(base, "", None)
            _add(report, name, "line-art", "lasagna", score_colouring(plain, truth, labels, lines=lines), seconds)
            hinted, seconds = flats_of(base, "", hints)
            _add(report, name, "line-art", "lasagna+hints",
                 score_colouring(hinted, truth, labels, lines=lines, hints=chosen), seconds)
            t0 = time.perf_counter()
            filled = flood_fill_baseline(regions, hints_from_rgba(hints))
            dots = hinted * (1 - hints[3:]) + hints[:3] * hints[3:]
            sheet.append([base, base * plain, base * dots, base * filled, base * truth])
            _add(report, name, "line-art", "flood fill",
                 score_colouring(filled, truth, labels, lines=lines, hints=chosen), time.perf_counter() - t0)
            if direct:
                t0 = time.perf_counter()
                small = resize(torch.from_numpy(base)[None], prior.working_size(*base.shape[1:])).to(device)
                g = torch.Generator(device=device).manual_seed(seed)
                sample = prior.sample(small, [""], steps=direct_steps, generator=g,
                                      hints=torch.from_numpy(hints)[None].to(device))
                full = resize(sample.cpu(), tuple(base.shape[1:]))[0].numpy()
                _add(report, name, "line-art", "direct",
                     score_colouring(full, truth, labels, lines=lines, hints=chosen), time.perf_counter() - t0)
            word = WORDS[index % len(WORDS)]
            result, seconds = flats_of(base, f"a {word} drawing", None)
            _add(report, name, "line-art", "lasagna+word", {"hue_ok": largest_region_hue_ok(result, labels, word),
                                                            "word": word}, seconds)
        grey = [c for c in cases if c.kind == "greyscale"]
        if grey and index % grey_every == 0:
            base = _picture(grey[0].input)
            t0 = time.perf_counter()
            run = Distillation(prior, grey_spec, grey_settings, torch.from_numpy(base)[None].to(device), "", None)
            composite = run.composite(run.layers(seed))[0].cpu().numpy()
            lab, lab_base = srgb_to_lab(composite), srgb_to_lab(base)
            _add(report, f"{scene}/grey", "greyscale", "lasagna (greyscale)",
                 {"lightness_drift": float(np.abs(lab[0] - lab_base[0]).mean()),
                  "chroma_added": float(np.hypot(lab[1], lab[2]).mean() - np.hypot(lab_base[1], lab_base[2]).mean())},
                 time.perf_counter() - t0)
        done += 1
        if on_progress is not None:
            on_progress(done, total, "scenes")
    report.seconds = time.perf_counter() - started
    if pictures is not None and sheet:
        save_sheet(sheet, Path(pictures) / "coloring.png")
    return report


def save_sheet(rows: Sequence[Sequence[np.ndarray]], path: Path) -> Path:
    """The pictures (3, H, W) of each row side by side, rows under each other (all of one size), as a PNG."""
    from ..writing import save_png

    picture = np.concatenate([np.concatenate(list(row), axis=2) for row in rows], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(picture, None, path)
    return path


def _add(report: ColorEvalReport, case: str, kind: str, method: str, scores: Any, seconds: float) -> None:
    values = asdict(scores) if hasattr(scores, "__dataclass_fields__") else dict(scores)
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
    report.results.append(ColorCaseResult(case, kind, method, values, round(seconds, 2)))


COLUMNS = (("one_colour", "regions in one colour"), ("crossing", "colour across lines"),
           ("hints_within_5", "hints within dE 5"), ("unhinted_error", "unhinted dE to truth"),
           ("holes_kept_paper", "holes kept paper"),
           ("hue_within_30", "named hue within 30 deg"), ("lightness_drift", "|dL*| (grey)"),
           ("chroma_added", "chroma added (grey)"))


def coloring_table(report: ColorEvalReport) -> str:
    summary = report.summary()
    head = "| method | cases | " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|---|---|" + "---|" * len(COLUMNS)
    rows = []
    for method, values in summary.items():
        cells = []
        for key, _ in COLUMNS:
            v = values[key]
            cells.append("-" if v is None else f"{100 * v:.2f}%" if key == "crossing"  # its bar is 0.5%
                         else f"{100 * v:.1f}%" if key in ("one_colour", "hints_within_5", "holes_kept_paper", "hue_within_30") else f"{v:.2f}")
        rows.append(f"| {method} | {values['cases']} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows]) + f"\n\n{report.cases} scenes of {report.data}, model {report.model}, {report.seconds / 60:.1f} min\n"


def write_coloring_report(report: ColorEvalReport, path: Path) -> Path:
    from ..writing.atomic import atomic_write

    text = json.dumps(report.to_json(), indent=1) if path.suffix.lower() == ".json" else coloring_table(report)
    with atomic_write(path) as fh:
        fh.write(text.encode("utf-8"))
    return path
