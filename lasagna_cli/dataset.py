"""`lasagna dataset ...`: make training data for the built-in priors. numpy and the renderer are
imported inside the command, so `lasagna --help` stays fast."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from .console import guarded, print_json, progress_bar, say
from .progress_stream import current, report, with_progress_option

dataset_app = typer.Typer(help="Make training data: relighting pairs (synthetic scenes, or flat emoji art inflated into 3-D and lit from named directions) and colouring pairs (line art drawn from emoji art); mixes of them for one training run.", no_args_is_help=True)

# Options both commands take, with the same meaning.
SIZE = typer.Option(64, "--size", "-s", min=8, max=4096, help="Picture width and height in pixels.")
SUPERSAMPLE = typer.Option(2, "--supersample", min=1, max=8, help="Rays per pixel along each axis (anti-aliasing and soft shadow edges).")
WORKERS = typer.Option(0, "--workers", "-j", min=0, help="Processes rendering in parallel; 0: one per CPU core (the files do not depend on it).")
OVERWRITE = typer.Option(False, "--overwrite", help="Write into a non-empty folder, replacing a data set already there.")
JSON = typer.Option(False, "--json", help="Print a summary as one JSON object on stdout.")
# Options the two commands that read emoji packages share.
PACKAGES_THEN_OUT = typer.Argument(..., metavar="SRC... OUT", help="Unpacked package folders (npm pack @iconify-json/fluent-emoji-flat or @twemoji/svg, then tar xzf), then the folder to write images/, manifest.jsonl and dataset.json into.")
DESIGN_COUNT = typer.Option(0, "--count", "-n", min=0, help="Number of scenes; 0: one per selected design (more repeats designs in new places).")
DESIGN_SEED = typer.Option(0, "--seed", min=0, help="Random seed for placements and looks (splits go by design name, not by seed).")
DESIGN_VAL = typer.Option(0.1, "--val-fraction", min=0.0, max=0.99, help="Share of designs in the validation split.")
DESIGN_TEST = typer.Option(0.1, "--test-fraction", min=0.0, max=0.99, help="Share of designs in the held-out test split.")
DESIGN_SPLITS = typer.Option("train,val,test", "--splits", help="Comma-separated splits whose designs to draw (e.g. 'test' for a held-out set at another size).")


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A transient bar on a TTY, as the `on_progress` callback of a data set writer; None elsewhere; with
    `--progress jsonl`, one line per finished chunk."""
    stream = current()
    if stream is not None:
        yield lambda done, total: stream.progress("render", done, total)
        return
    with progress_bar() as bar:
        if bar is None:
            yield None
            return
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@dataset_app.command("synth")
@with_progress_option
@guarded
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write images/, manifest.jsonl and dataset.json into (created if missing)."),
    count: int = typer.Option(1000, "--count", "-n", min=1, help="Number of scenes; each gives one line per light direction."),
    size: int = SIZE,
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed: the same seed gives byte-identical files."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=0.99, help="Share of scenes in the validation split."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", min=0.0, max=0.99, help="Share of scenes in the held-out test split."),
    supersample: int = SUPERSAMPLE,
    backdrop_fraction: float = typer.Option(0.0, "--backdrop-fraction", min=0.0, max=1.0, help="Share of scenes on a plain backdrop that no light reaches instead of a ground plane (both look alike in the flat base, so a mix leaves cast shadows ambiguous)."),
    photo_like: float = typer.Option(0.0, "--photo-like", min=0.0, max=1.0, help="Share of scenes built to look like photos: a close-up or a clutter of objects, detailed textures, and a base already lit from a random direction."),
    workers: int = WORKERS,
    overwrite: bool = OVERWRITE,
    json_output: bool = JSON,
) -> None:
    """Render random primitives flat (the base) and under each named light direction, with shadows, as PNGs plus a manifest.jsonl that `lasagna train` reads."""
    from lasagna_core.synth.dataset import generate
    from lasagna_core.synth.scene import SceneMix

    workers = workers or _auto_workers(count)
    with _progress("rendering scenes") as on_progress:
        result = generate(
            out_dir, count=count, size=size, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
            supersample=supersample, workers=workers, overwrite=overwrite,
            mix=SceneMix(backdrop=backdrop_fraction, photo_like=photo_like),
            on_progress=on_progress,
        )
    report(result.as_dict())
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



@dataset_app.command("flat-art")
@with_progress_option
@guarded
def flat_art(
    paths: list[Path] = PACKAGES_THEN_OUT,
    count: int = DESIGN_COUNT,
    size: int = SIZE,
    seed: int = DESIGN_SEED,
    val_fraction: float = DESIGN_VAL,
    test_fraction: float = DESIGN_TEST,
    supersample: int = SUPERSAMPLE,
    colored_lights: float = typer.Option(0.0, "--colored-lights", min=0.0, max=1.0, help="Share of pairs lit by a coloured light (warm, sunset, moonlight, ...), named in the prompt and the manifest."),
    shadow_tint: float = typer.Option(0.5, "--shadow-tint", min=0.0, max=1.0, help="Share of the coloured pairs whose shadows take the colour's cool or complementary tint."),
    splits: str = DESIGN_SPLITS,
    workers: int = WORKERS,
    overwrite: bool = OVERWRITE,
    json_output: bool = JSON,
) -> None:
    """Inflate single-object emoji art (Fluent Emoji Flat, Twemoji) into 3-D shapes and render it flat (the base) and under each named light direction, with cast shadows, as PNGs plus a manifest.jsonl that `lasagna train` reads."""
    from lasagna_core.flatart.dataset import generate

    sources, out_dir = _packages_then_out(paths, "flat-art")
    workers = workers or _auto_workers(count or 1000)  # 0: one scene per design, about 1,400 with both packages
    with _progress("rendering flat art") as on_progress:
        result = generate(
            sources, out_dir, count=count, size=size, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
            supersample=supersample, workers=workers, overwrite=overwrite, colored_lights=colored_lights,
            shadow_tint=shadow_tint, splits=_names(splits), on_progress=on_progress,
        )
    report(result.as_dict())
    if json_output:
        print_json(result.as_dict())
    else:
        designs = ", ".join(f"{n} {name}" for name, n in result.designs.items())
        splits = ", ".join(f"{n} {name}" for name, n in result.splits.items())
        say(
            f"wrote {result.scenes} scenes of {designs} designs ({splits}) x {len(result.directions)} directions = "
            f"{result.pairs} pairs ({result.colored_pairs} in coloured light) to {result.manifest} in {result.seconds:.1f} s"
        )


@dataset_app.command("line-art")
@guarded
def line_art(
    paths: list[Path] = PACKAGES_THEN_OUT,
    count: int = DESIGN_COUNT,
    size: int = SIZE,
    seed: int = DESIGN_SEED,
    val_fraction: float = DESIGN_VAL,
    test_fraction: float = DESIGN_TEST,
    supersample: int = typer.Option(4, "--supersample", min=1, max=8, help="Draw at this multiple of --size and box-filter down (anti-aliased lines)."),
    styles: str = typer.Option("ink,brush,pencil,gaps", "--styles", help="Comma-separated line styles, one line-art picture each: ink, brush, pencil, gaps."),
    splits: str = DESIGN_SPLITS,
    workers: int = WORKERS,
    overwrite: bool = OVERWRITE,
    json_output: bool = JSON,
) -> None:
    """Colouring data from single-object emoji art (Fluent Emoji Flat, Twemoji): line art drawn along each design's colour regions in several styles, and its greyscale, each paired with the flat colours (the truth), as PNGs plus a manifest.jsonl that `lasagna train color` reads."""
    from lasagna_core.flatart.coloring import generate

    sources, out_dir = _packages_then_out(paths, "line-art")
    workers = workers or _auto_workers(count or 1000)
    with _progress("drawing line art") as on_progress:
        result = generate(
            sources, out_dir, count=count, size=size, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
            supersample=supersample, workers=workers, overwrite=overwrite,
            styles=_names(styles), splits=_names(splits), on_progress=on_progress,
        )
    if json_output:
        print_json(result.as_dict())
    else:
        splits = ", ".join(f"{n} {name}" for name, n in result.splits.items())
        say(f"wrote {result.scenes} scenes ({splits} designs) x {len(result.styles)} line styles + greyscale = "
            f"{result.pairs} pairs to {result.manifest} in {result.seconds:.1f} s")


@dataset_app.command("mix")
@guarded
def mix(
    paths: list[str] = typer.Argument(..., metavar="SRC[:N]... OUT", help="Data set folders (each optionally DIR:N, its first N scenes), then the folder to write the mixed manifest.jsonl into."),
    white_light: bool = typer.Option(False, "--white-light", help="Keep only pairs lit by white light (drop coloured-light pairs)."),
    overwrite: bool = OVERWRITE,
    json_output: bool = JSON,
) -> None:
    """Mix data sets into one training manifest without copying pictures: paths point into the sources, scenes are prefixed with each source's folder name, splits stay the sources' own."""
    from lasagna_core.synth.mix import MixSource, mix as mix_sets

    *sources, out_dir = paths  # no source: `mix` refuses it in the same words as the other commands
    result = mix_sets(Path(out_dir), [MixSource.parse(s) for s in sources], white_light=white_light, overwrite=overwrite)
    if json_output:
        print_json(result.as_dict())
    else:
        parts = ", ".join(f"{s['pairs']} pairs of {s['scenes']} scenes from {s['prefix']}" for s in result.sources)
        say(f"wrote {result.pairs} pairs ({parts}) to {result.manifest} in {result.seconds:.1f} s")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _packages_then_out(paths: list[Path], command: str) -> tuple[list[Path], Path]:
    from lasagna_core.errors import UsageError

    if len(paths) < 2:
        raise UsageError(f"give at least one package folder and then the output folder: lasagna dataset {command} SRC... OUT")
    *sources, out_dir = paths
    return sources, out_dir
