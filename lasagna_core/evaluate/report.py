"""The results of `lasagna eval`: each case's numbers (`CaseResult`), the report (`EvalReport`), its summary
per method, and the report written as a Markdown table or as JSON (and read back)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import HUE_TOLERANCE, OUTLINE_RADIUS, visible_share


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
    cast_shadow_iou: float | None = None  # None: the truth casts no shadow (the defaults read older reports)
    outline_error: float | None = None
    light_hue_error: float | None = None  # degrees; None: white light, a truth that adds no light, or no layers


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
    compare_model: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["results"] = [asdict(r) for r in self.results]
        return out


def _mean(values: Sequence[float | None]) -> float | None:
    """The mean of the values a case has (None: the case does not count)."""
    given = [v for v in values if v is not None]
    return float(np.mean(given)) if given else None


def summarise(results: Sequence[CaseResult], methods: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """Per method: the means over the cases; `psnr_gain` is the mean of each case's PSNR minus the base's on
    the same case, and `light_hue_share` the share of coloured-light cases (whose truth adds light) whose Light
    layer is within HUE_TOLERANCE degrees of the asked colour."""
    summary: dict[str, dict[str, float | None]] = {}
    floor = [r.psnr for r in results if r.method == "base"]
    for m in methods:
        rows = [r for r in results if r.method == m]
        finite = [r.psnr for r in rows if np.isfinite(r.psnr)]
        directional = [r.direction_r for r in rows if r.direction_r is not None]
        gains = [r.psnr - b for r, b in zip(rows, floor) if np.isfinite(r.psnr) and np.isfinite(b)] if floor else []
        hues = [r.light_hue_error for r in rows if r.light_hue_error is not None]
        summary[m] = {
            "psnr": float(np.mean(finite)) if finite else None,
            "psnr_gain": float(np.mean(gains)) if gains else None,
            "ssim": float(np.mean([r.ssim for r in rows])),
            "chroma_drift": float(np.mean([r.chroma_drift for r in rows])),
            "hue_drift": float(np.mean([r.hue_drift for r in rows])),
            "edge_similarity": float(np.mean([r.edge_similarity for r in rows])),
            "shading": float(np.mean([r.shading for r in rows])),
            # the unedited base changes nothing: its correlation is undefined, not "wrong"
            "direction_accuracy": None if m == "base" or not directional else float(np.mean([r > 0 for r in directional])),
            "visible_direction_accuracy": None if m == "base" or not directional else visible_share(
                [(r.direction_r, r.shading) for r in rows if r.direction_r is not None]),
            "cast_shadow_iou": _mean([r.cast_shadow_iou for r in rows]),
            "outline_error": _mean([r.outline_error for r in rows]),
            "light_hue_share": float(np.mean([e <= HUE_TOLERANCE for e in hues])) if hues else None,
            "seconds": float(np.mean([r.seconds for r in rows])),
        }
    return summary


LABELS = {
    "psnr": "PSNR vs GT (dB) ↑",
    "psnr_gain": "PSNR gain over base (dB) ↑",
    "ssim": "SSIM vs GT ↑",
    "chroma_drift": "chroma drift vs base, Lab |Δa*b*| ↓",
    "hue_drift": "chroma drift at equal lightness ↓",
    "edge_similarity": "edge similarity to base ↑",
    "shading": "shading strength |ΔL*| in mask",
    "direction_accuracy": "direction accuracy ↑",
    "visible_direction_accuracy": "right and visible (|ΔL*| ≥ 1) ↑",
    "cast_shadow_iou": "cast-shadow IoU ↑",
    "outline_error": f"outline error |ΔL*| within {OUTLINE_RADIUS} px ↓",
    "light_hue_share": f"Light hue within {HUE_TOLERANCE:.0f}° ↑",
    "seconds": "s / case",
}
OPTIONAL = ("light_hue_share",)
"""Columns shown only when some case has a value (coloured light is in flat-art data only)."""


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if key in ("direction_accuracy", "visible_direction_accuracy", "light_hue_share"):
        return f"{100 * value:.0f}%"
    if key == "psnr_gain":
        return f"{value:+.2f}"
    if key in ("psnr", "chroma_drift", "hue_drift", "shading", "outline_error"):
        return f"{value:.2f}"
    if key == "seconds":
        return f"{value:.1f}"
    return f"{value:.3f}"


def markdown_table(report: EvalReport) -> str:
    keys = [k for k in LABELS if k not in OPTIONAL or any(row.get(k) is not None for row in report.summary.values())]
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
        + (f", the first {report.settings['coarse_steps']} at half the prior's size" if report.settings.get("coarse_steps") else "")
        + (f"; direct generation: DDIM {report.settings['direct_steps']} steps, guidance {report.settings['direct_guidance']}"
           if "direct" in report.summary else "")
        + (f"; row `{compare_label(report.compare_model)}`: the same with model `{report.compare_model}`"
           if report.compare_model else "")
        + f". Wall time {report.seconds / 60:.1f} min."
    )
    colored = _cases_with(report, "light_hue_error")
    lines.append("")
    lines.append(f"Cast-shadow IoU over the {_cases_with(report, 'cast_shadow_iou')} cases whose truth casts a shadow; "
                 f"outline error within {OUTLINE_RADIUS} px of the object's and the colour regions' outlines"
                 + (f"; Light hue over the {colored} cases in coloured light whose truth adds light" if colored else "") + ".")
    if report.photos:
        p = report.photos
        lines.append("")
        lines.append(f"Photos without ground truth ({', '.join(sorted({r['photo'] for r in p['rows']}))}; whole picture as the "
                     f"mask): direction accuracy {_fmt('direction_accuracy', p['direction_accuracy'])}, right and visible "
                     f"{_fmt('direction_accuracy', p.get('visible_direction_accuracy'))}, over {p['cases']} photo x direction cases; "
                     f"mean shading |ΔL*| {np.mean([r['shading'] for r in p['rows']]):.2f}.")
    return "\n".join(lines) + "\n"


def compare_label(model: str) -> str:
    """The row name of a compared prior: `lasagna [builtin]`, or a weights file's name (what has a suffix)
    without its folders; from the text alone, so a report read back elsewhere names it alike."""
    return f"lasagna [{Path(model).name if Path(model).suffix else model}]"


def _cases_with(report: EvalReport, key: str) -> int:
    """How many cases have a value of `key` (the most any method has: the base writes no Light layer)."""
    return max((sum(getattr(r, key) is not None for r in report.results if r.method == m) for m in report.summary), default=0)


def write_report(report: EvalReport, path: Path) -> Path:
    """Written atomically: an interrupted eval never leaves half a table behind."""
    from ..writing.atomic import atomic_write

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
