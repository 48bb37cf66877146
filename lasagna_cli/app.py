"""The `lasagna` command. Heavy imports (torch, diffusers) happen inside commands, never at module level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lasagna_core import __version__
from lasagna_core.document import DEFAULT_MAX_PIXELS

from .batch import BatchCommand, batch_command
from .console import guarded, notice, print_json, say, show, stdout, styled
from .dataset import dataset_app
from .edit import make_edit_command
from .evaluate import eval_command
from .krita import krita_app
from .train import train_app

app = typer.Typer(
    name="lasagna",
    help="Generative edits as real Photoshop layers: shading and colour distilled into a new layer you keep editing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain text too: "pip install 'lasagna[eval]'" keeps its brackets
    context_settings={"help_option_names": ["-h", "--help"]},
)

MaxPixels = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", help="Refuse documents with more pixels than this (protects memory).", min=1)


def _version(value: bool) -> None:
    if value:
        show(f"lasagna {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", "-V", help="Print the version and exit.", callback=_version, is_eager=True),
) -> None:
    """Lasagna: text-guided edits distilled into a PSD layer with the matching blend mode."""


@app.command()
@guarded
def inspect(
    file: Path = typer.Argument(..., help="Image or PSD/PSB to describe."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout for scripts."),
    max_pixels: int = MaxPixels,
) -> None:
    """Show a document's size, colour mode, depth and layer tree (kind, blend mode, opacity, visibility, bbox)."""
    from lasagna_core.describe import describe

    info = describe(file, max_pixels=max_pixels)
    if json_output:
        print_json(info)
        return
    from rich.tree import Tree

    tree = Tree(styled(
        (file.name, "bold"), f"  {info['format'].upper()}  {info['width']}x{info['height']}  "
        f"{info['mode']}  {info['depth']}-bit{' float' if info['float'] else ''}" + ("" if info["has_merged_image"] else "  (no merged image)")
    ))
    _add_layers(tree, info["layers"])
    stdout.print(tree)


def _add_layers(tree: Any, layers: list[dict[str, Any]]) -> None:
    for layer in layers:
        flags = [] if layer["visible"] else ["hidden"]
        flags += ["clipped"] if layer["clipping"] else []
        flags += ["mask"] if layer["has_mask"] else []
        left, top, right, bottom = layer["bbox"]
        label = styled(layer["name"], (
            f"  {layer['kind']}  {layer['blend_mode']}  {layer['opacity'] * 100:.0f}%  "
            f"bbox {left},{top} {right - left}x{bottom - top}{'  ' + ' '.join(flags) if flags else ''}", "dim"
        ))
        branch = tree.add(label)
        _add_layers(branch, layer.get("children", []))


@app.command()
@guarded
def flatten(
    file: Path = typer.Argument(..., help="PSD/PSB (or image) to flatten."),
    output: Path = typer.Option(..., "--output", "-o", help="Picture to write: .png (16-bit for a 16-bit source), .jpg, .tif or .webp."),
    max_pixels: int = MaxPixels,
) -> None:
    """Flatten a document's layers with Lasagna's own compositor and write a picture (ignores the stored merged image)."""
    from lasagna_core.document import flatten_layers
    from lasagna_core.writing import image_output, write_image

    target = image_output(output, inputs=[file])
    flat = flatten_layers(file, max_pixels=max_pixels)
    for text in flat.notices + write_image(target, flat.color, flat.alpha, flat.depth):
        notice(text)
    say(f"wrote {output}")


app.command("shade")(make_edit_command("shade", "Distil shading into a Multiply (shadows) and a Screen (light) layer."))
app.command("colorize")(make_edit_command(
    "colorize", "Colour line art as flats (one colour per closed region, Multiply under the ink) or a greyscale picture with a Color layer; offline, no prompt needed.",
    prompt_required=False,
))
app.command("batch", cls=BatchCommand)(batch_command)


@app.command()
@guarded
def templates(
    json_output: bool = typer.Option(False, "--json", help="Print the templates as JSON on stdout."),
) -> None:
    """List the built-in edit templates and the layers each one makes."""
    from lasagna_core.priors.registry import flag_of
    from lasagna_core.templates import builtin_names, load_template

    specs = [load_template(name) for name in builtin_names()]
    if json_output:
        print_json([
            {"name": s.name, "description": s.description, "model": s.model, "prior_options": dict(s.prior_options),
             "layers": [{"name": l.name, "blend_mode": l.blend_mode.value, "channels": l.channels, "alpha": l.alpha,
                         "range": [l.low, l.high], "neutral": l.neutral} for l in s.layers]}
            for s in specs
        ])
        return
    for spec in specs:
        layers = ", ".join(f"{l.name} ({l.blend_mode.value}{', RGB' if l.channels == 3 else ''}{' + alpha' if l.alpha else ''})" for l in spec.layers)
        options = "".join(f" {flag_of(name)}" + ("" if value is True else f" {value}") for name, value in spec.prior_options)
        show((spec.name, "bold"), f"  {spec.description}\n    layers: {layers}\n    model: {spec.model}{options}")


models = typer.Typer(help="Download and manage diffusion priors.", no_args_is_help=True)
app.add_typer(models, name="models")
app.add_typer(train_app, name="train")
app.command("eval")(eval_command)
app.add_typer(dataset_app, name="dataset")
app.add_typer(krita_app, name="krita")


@models.command("pull")
@guarded
def models_pull(
    model_id: str = typer.Argument(..., help="Hugging Face hub id, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5."),
    controlnet: bool = typer.Option(False, "--controlnet", help="The id is a ControlNet adapter (or a tiny autoencoder for --vae), not a full pipeline."),
    iclight: bool = typer.Option(False, "--iclight", help="The id is IC-Light's repo (lllyasviel/ic-light): fetch its fc and fbc offsets."),
) -> None:
    """Download a model's safetensors weights into the local Hugging Face cache, for offline use (SD and SDXL
    pipelines are told apart by their model_index.json)."""
    from lasagna_core.errors import UsageError
    from lasagna_core.priors import pull_model

    if controlnet and iclight:
        raise UsageError("--controlnet and --iclight name different kinds of repo: pass one")
    path = pull_model(model_id, adapter="controlnet" if controlnet else "iclight" if iclight else None)
    show(str(path))


def main() -> None:
    app()
