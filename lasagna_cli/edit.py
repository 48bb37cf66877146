"""`lasagna shade` and `lasagna colorize`: one command body, two default templates."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer

from lasagna_core.document import DEFAULT_MAX_PIXELS
from lasagna_core.runtime import DEVICES, PRECISIONS

from .console import notice, print_json, progress_bar, say, user_errors
from .prior_flags import with_prior_options
from .progress_stream import current, report, with_progress_option


def make_edit_command(default_template: str, summary: str, *, prompt_required: bool = True) -> Callable[..., None]:
    """Build a Typer command whose differences from its siblings are the default template and whether a
    prompt is required (colouring needs none: the colour comes from the drawing and the hints)."""
    prompt_help = ("What the edit should do, e.g. 'light from the left'." if prompt_required
                   else "Optional colour words, e.g. 'a red car' (the first colour goes to the largest region).")

    @with_progress_option
    @with_prior_options
    def command(
        input: Path = typer.Argument(..., help="Image or PSD/PSB to edit (never overwritten)."),
        prompt: str = typer.Option(... if prompt_required else "", "--prompt", "-p", help=prompt_help),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="PSD to write (default: INPUT.lasagna.psd beside the input)."),
        template: str = typer.Option(default_template, "--template", "-t", help="Built-in template name (see `lasagna templates`) or a .toml file."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Diffusion prior: hub id, local folder or .safetensors file (default: the template's)."),
        layer: Optional[str] = typer.Option(None, "--layer", "-l", help="PSD layer (name or Group/Name) to use as the base; new layers are clipped to it."),
        mask: Optional[Path] = typer.Option(None, "--mask", help="Image whose alpha (or gray) confines the edit."),
        hints: Optional[Path] = typer.Option(None, "--hints", help="Colour hints: an image the document's size whose opaque pixels are colour dots or scribbles (a PSD's 'Hints' layer is read too)."),
        close_gaps: Optional[int] = typer.Option(None, "--close-gaps", min=0, help="Colouring: the widest gap (px) in the lines that the flats' fill closes where a line ends; 0 closes none (default: two line widths)."),
        steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimisation steps (default: the template's)."),
        guidance: Optional[float] = typer.Option(None, "--guidance", min=0.0, help="Classifier-free guidance scale (default: the template's)."),
        seed: int = typer.Option(0, "--seed", help="Random seed: same seed, inputs and device give the same layer."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
        precision: str = typer.Option("auto", "--precision", help="auto, fp32, fp16 or bf16."),
        variations: int = typer.Option(1, "--variations", "-k", min=1, help="Make K alternative layer sets (seeds SEED..SEED+K-1); all but the first hidden."),
        preview: Optional[Path] = typer.Option(None, "--preview", help="Folder for PNG snapshots of the composite during optimisation."),
        preview_every: int = typer.Option(50, "--preview-every", min=1, help="Steps between --preview snapshots."),
        overwrite_input: bool = typer.Option(False, "--overwrite-input", help="Allow -o to name the input file itself."),
        max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=1, help="Refuse documents with more pixels than this."),
        json_output: bool = typer.Option(False, "--json", help="Print the result as one JSON object on stdout."),
        prior_options: dict[str, Any] | None = None,
    ) -> None:
        with user_errors():
            _check_choice("--device", device.split(":")[0], DEVICES)
            _check_choice("--precision", precision, PRECISIONS)
            from lasagna_core.edit import EditConfig, EditJob, run_edit
            from lasagna_core.priors import PriorSettings

            config = EditConfig(
                template=template, prior=PriorSettings(model, device, precision, prior_options or {}), layer=layer,
                steps=steps, guidance=guidance, variations=variations, max_pixels=max_pixels, close_gaps=close_gaps,
            )
            job = EditJob(input=input, prompt=prompt, config=config, output=output, seed=seed, mask=mask, hints=hints,
                          preview_dir=preview, preview_every=preview_every, overwrite_input=overwrite_input)
            with _progress() as on_progress:
                result = run_edit(job, on_progress=on_progress, on_notice=notice)
            payload = {"output": str(result.output), "sidecar": str(result.sidecar),
                       "seconds": round(result.seconds, 3), **result.record}
            report(payload)
            if json_output:
                print_json(payload)
            else:
                names = ", ".join(f"{l['name']} ({l['blend_mode']})" for l in result.record["layers"])
                say(f"wrote {result.output}: {names} in {result.seconds:.1f} s")

    command.__doc__ = summary
    return command


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    from lasagna_core.errors import UsageError

    if value not in choices:
        raise UsageError(f"{option} must be one of {', '.join(choices)}, not '{value}'")


@contextmanager
def _progress() -> Iterator[Callable[[Any, int, int], None] | None]:
    """A progress bar (step, loss, ETA) per variation on a TTY; nothing at all in pipes and logs; with
    `--progress jsonl`, one line per step, counted across the variations."""
    stream = current()
    if stream is not None:
        yield lambda info, index, variations: stream.progress(
            "distill", index * info.steps + info.step, variations * info.steps)
        return
    with progress_bar(loss=True) as bar:
        if bar is None:
            yield None
            return
        task = None

        def update(info: Any, index: int, variations: int) -> None:
            nonlocal task
            if task is None or info.step == 1:
                label = "distilling" if variations == 1 else f"variation {index + 1}/{variations}"
                task = bar.add_task(label, total=info.steps, loss="-")
            redraw = info.step % 10 == 0 or info.step == info.steps
            loss = f"{info.loss.item():.3g}" if redraw else bar.tasks[task].fields["loss"]  # .item() syncs: rarely
            bar.update(task, completed=info.step, loss=loss)

        yield update
