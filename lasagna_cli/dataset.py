"""`lasagna dataset ...`: make training data for the built-in relighting prior. numpy and the renderer are
imported inside the command, so `lasagna --help` stays fast."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from .console import guarded, print_json, progress_bar, say

dataset_app = typer.Typer(help="Make relighting training data (synthetic scenes rendered under named light directions).", no_args_is_help=True)


@dataset_app.command("synth")
@guarded
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write images/, manifest.jsonl and dataset.json into (created if missing)."),
    count: int = typer.Option(1000, "--count", "-n", min=1, help="Number of scenes; each gives one line per light direction."),
    size: int = typer.Option(64, "--size", "-s", min=8, max=4096, help="Picture width and height in pixels."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed: the same seed gives byte-identical files."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=0.99, help="Share of scenes in the validation split."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", min=0.0, max=0.99, help="Share of scenes in the held-out test split."),
    supersample: int = typer.Option(2, "--supersample", min=1, max=8, help="Rays per pixel along each axis (anti-aliasing and soft shadow edges)."),
    backdrop_fraction: float = typer.Option(0.0, "--backdrop-fraction", min=0.0, max=1.0, help="Share of scenes on a plain backdrop that no light reaches instead of a ground plane (both look alike in the flat base, so a mix leaves cast shadows ambiguous)."),
    photo_like: float = typer.Option(0.0, "--photo-like", min=0.0, max=1.0, help="Share of scenes built to look like photos: a close-up or a clutter of objects, detailed textures, and a base already lit from a random direction."),
    workers: int = typer.Option(0, "--workers", "-j", min=0, help="Processes rendering in parallel; 0: one per CPU core (the files do not depend on it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty folder, replacing a data set already there."),
    json_output: bool = typer.Option(False, "--json", help="Print a summary as one JSON object on stdout."),
) -> None:
    """Render random primitives flat (the base) and under each named light direction, with shadows, as PNGs plus a manifest.jsonl that `lasagna train` reads."""
    from lasagna_core.synth.dataset import generate
    from lasagna_core.synth.render import SceneMix

    workers = workers or _auto_workers(count)
    with progress_bar() as bar:
        task = bar.add_task("rendering scenes", total=None) if bar is not None else None
        result = generate(
            out_dir, count=count, size=size, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
            supersample=supersample, workers=workers, overwrite=overwrite,
            mix=SceneMix(backdrop=backdrop_fraction, photo_like=photo_like),
            on_progress=None if bar is None else lambda done, total: bar.update(task, completed=done, total=total),
        )
    if json_output:
        print_json(result.as_dict())
    else:
        splits = ", ".join(f"{n} {name}" for name, n in result.splits.items())
        say(f"wrote {result.scenes} scenes x {len(result.directions)} directions = {result.pairs} pairs ({splits}) "
            f"to {result.manifest} in {result.seconds:.1f} s")


def _auto_workers(count: int) -> int:
    """One process per usable CPU core (at most 8), and a single one for small runs where start-up dominates."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8, count // 64))

