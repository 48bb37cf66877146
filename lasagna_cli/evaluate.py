"""`lasagna eval`: Lasagna against the unedited base and direct generation on a held-out relighting split."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer

from .console import guarded, print_json, say, show, stderr
from .prior_flags import with_prior_options
from .progress_stream import current, report as report_result, with_progress_option


@with_progress_option
@with_prior_options
@guarded
def eval_command(
    data: Path = typer.Option(..., "--data", "-d", help="Folder with manifest.jsonl; its `--split` is evaluated."),
    split: str = typer.Option("test", "--split", help="Which split to evaluate: test (held out, for reporting) or val (for tuning settings)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Evaluate a fixed, seeded sample of N cases (default: all)."),
    out: list[Path] = typer.Option([], "--out", "-o", help="Write the results: .json (every case) or .md (the table). Repeatable."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Prior to distil from and sample (default: the template's; the built-in prior for shade, the colouring prior for colouring data)."),
    compare_model: Optional[str] = typer.Option(None, "--compare-model", help="Also distil with this prior (anything --model takes, e.g. builtin) on the same cases and settings: one more row, 'lasagna [builtin]' (relighting data)."),
    template: str = typer.Option("shade", "--template", "-t", help="Edit template whose layers Lasagna distils (relighting data; colouring data uses colorize and colorize-grey)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Distillation steps (default: the template's)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", min=0.0, help="SDS guidance (default: the template's)."),
    direct_steps: int = typer.Option(50, "--direct-steps", min=1, help="DDIM steps of the direct-generation baseline."),
    direct_guidance: float = typer.Option(3.0, "--direct-guidance", min=0.0, help="Guidance of the direct-generation baseline."),
    direct: bool = typer.Option(True, "--direct/--no-direct", help="Run the direct-generation baseline (it samples the prior: the built-in prior, or IC-Light with --iclight)."),
    photos: list[Path] = typer.Option([], "--photo", help="Also measure direction accuracy on this photo (no ground truth). Repeatable."),
    skimage_photos: bool = typer.Option(False, "--skimage-photos", help="Also use scikit-image's bundled sample photos (pip install 'lasagna[eval]')."),
    pictures: Optional[Path] = typer.Option(None, "--pictures", help="Folder for contact sheets (base | GT | Lasagna | direct) to look at."),
    seed: int = typer.Option(0, "--seed", help="Seed for the case sample, the distillation and the sampler."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Distil this many cases at once, each process loading the prior (relighting data; the numbers do not depend on it)."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON object on stdout."),
    prior_options: dict[str, Any] | None = None,
) -> None:
    """Measure quality on a held-out split. Relighting data: PSNR/SSIM vs ground truth and the gain over the
    base, chroma drift, edge similarity, direction accuracy, cast-shadow IoU, error near outlines, the Light
    layer's hue under coloured light. Colouring data (`lasagna dataset line-art`): regions in one colour,
    colour across lines, hint adherence, unhinted colour error, named hues, greyscale lightness drift."""
    from lasagna_core.errors import UsageError
    from lasagna_core.evaluate.coloring_run import is_coloring_data
    from lasagna_core.priors import PriorSettings

    for path in out:  # the writers write Markdown for any other name: refuse, before minutes of work
        if path.suffix.lower() not in (".json", ".md"):
            raise UsageError(f"--out {path.name}: name it .json (every case) or .md (the table)")
    if is_coloring_data(data):
        given = [flag for flag, on in (("--photo", photos), ("--skimage-photos", skimage_photos),
                                       ("--compare-model", compare_model), ("--jobs", jobs > 1)) if on]
        if given:
            raise UsageError(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with relighting data, not colouring data")
        _eval_coloring(data, split, limit, out, model or "builtin-color", steps, direct_steps, direct, pictures, seed,
                       device, json_output, prior_options or {})
        return
    from lasagna_core.evaluate.report import markdown_table, write_report
    from lasagna_core.evaluate.run import METHODS, evaluate

    named = [(p.stem, _load(p)) for p in photos] + (_skimage_photos() if skimage_photos else [])  # a bad path fails first
    prior = PriorSettings(model, device, options=prior_options or {})
    report = evaluate(
        data, prior_settings=prior, template=template, limit=limit, split=split, seed=seed, steps=steps, guidance=guidance,
        direct_steps=direct_steps, direct_guidance=direct_guidance, photos=named, pictures=pictures,
        methods=METHODS if direct else tuple(m for m in METHODS if m != "direct"), compare_model=compare_model,
        jobs=jobs, on_progress=ProgressLog(),
    )
    for path in out:
        write_report(report, path)
        say(f"wrote {path}")
    summary = {k: v for k, v in report.to_json().items() if k != "results"}
    report_result(summary)
    if json_output:
        print_json(summary)
    else:
        show(markdown_table(report))


def _eval_coloring(data: Path, split: str, limit: int | None, out: list[Path], model: str, steps: int | None,
                   direct_steps: int, direct: bool, pictures: Path | None, seed: int, device: str, json_output: bool,
                   prior_options: dict[str, Any]) -> None:
    from lasagna_core.evaluate.coloring_run import coloring_table, evaluate_coloring, write_coloring_report
    from lasagna_core.priors import PriorSettings

    report = evaluate_coloring(data, prior_settings=PriorSettings(model, device, options=prior_options), split=split,
                               limit=limit, seed=seed, steps=steps, direct=direct, direct_steps=direct_steps,
                               pictures=pictures, on_progress=ProgressLog())
    for path in out:
        write_coloring_report(report, path)
        say(f"wrote {path}")
    if json_output:
        print_json({k: v for k, v in report.to_json().items() if k != "results"})
    else:
        show(coloring_table(report))


LOG_EVERY_S = 60.0
"""Seconds between progress lines in a log (not a terminal): a two-hour evaluation says where it is."""


@dataclass
class ProgressLog:
    """`on_progress` of an evaluation: on a terminal every case, in a log a line when the method changes, at the
    end, and at most every LOG_EVERY_S seconds between, with the time so far and an estimate of what is left.
    The estimate goes at the pace of the method now running: the base and truth rows take no time, and
    counting them made a distillation's remaining minutes look several times shorter."""

    started: float = field(default_factory=lambda: time.monotonic())
    said: float = float("-inf")
    method: str = ""
    method_since: float = 0.0  # when the running method's first item began (the previous item's end)
    method_from: int = 0  # how much was done before it
    last: tuple[int, float] | None = None  # (done, when) at the previous call

    def __call__(self, done: int, total: int, method: str) -> None:
        stream = current()
        if stream is not None:
            stream.progress("photos" if method == "photos" else "cases", done, total, method=method)
            return
        now = time.monotonic()
        changed = method != self.method
        if changed:
            self.method_from, self.method_since = self.last or (0, self.started)
            self.method = method
        self.last = (done, now)
        if not (stderr.is_terminal or done == total or changed or now - self.said >= LOG_EVERY_S):
            return
        self.said = now
        minutes = (now - self.started) / 60
        pace = (now - self.method_since) / 60 / max(done - self.method_from, 1)  # minutes per item
        left = f", about {pace * (total - done):.1f} min left" if 0 < done < total and pace > 0 else ""
        say(f"eval: {method} {done}/{total} ({minutes:.1f} min{left})")


def _load(path: Path) -> Any:
    from lasagna_core.document import load

    return load(path).base


def _skimage_photos() -> list[tuple[str, Any]]:
    from lasagna_core.errors import UsageError

    try:
        from skimage import data as skdata
    except ImportError:
        raise UsageError("--skimage-photos needs scikit-image: pip install 'lasagna[eval]'") from None
    import numpy as np

    named = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        try:
            image = getattr(skdata, name)()
        except Exception:  # noqa: BLE001 - a sample that needs a download (offline) is skipped
            continue
        named.append((name, np.ascontiguousarray(image.astype(np.float32).transpose(2, 0, 1) / 255.0)))
    return named
