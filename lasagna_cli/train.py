"""`lasagna train builtin` and `lasagna train controlnet`: train the priors Lasagna distils from."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer

from .console import guarded, print_json, progress_bar, say
from .progress_stream import current, report, with_progress_option

train_app = typer.Typer(help="Train a prior on a manifest (see `lasagna dataset`).", no_args_is_help=True)

Data = typer.Option(..., "--data", "-d", help="Folder with manifest.jsonl (or the manifest file itself).")
Steps = typer.Option(None, "--steps", min=1, help="Total optimisation steps (counting steps already done when resuming).")
Seed = typer.Option(0, "--seed", help="Random seed (initialisation, batches, noise).")
Resume = typer.Option(True, "--resume/--no-resume", help="Continue from OUT.ckpt/ when it exists.")
CheckpointEvery = typer.Option(100, "--checkpoint-every", min=1, help="Steps between checkpoints (OUT.ckpt/).")
MaxMinutes = typer.Option(None, "--max-minutes", min=0.0, help="Checkpoint and stop after this much wall time; run again to resume.")
LogEvery = typer.Option(50, "--log-every", min=1, help="Steps between plain progress lines when stderr is not a terminal.")
Json = typer.Option(False, "--json", help="Print the result as one JSON object on stdout.")


@train_app.command("builtin")
@with_progress_option
@guarded
def builtin(
    data: Path = Data,
    out: Path = typer.Option(..., "--out", "-o", help="Weights file to write (.safetensors; a .sha256 and .loss.png go beside it)."),
    steps: Optional[int] = Steps,
    batch_size: int = typer.Option(48, "--batch-size", min=1, help="Examples per step."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="Peak learning rate (linear warm-up, cosine decay)."),
    size: int = typer.Option(32, "--size", min=8, help="Training resolution in pixels (square); the prior's working size."),
    dropout: float = typer.Option(0.1, "--dropout", min=0.0, max=1.0, help="Classifier-free dropout of the direction and of the base."),
    init: Optional[str] = typer.Option(None, "--init", help="Fine-tune: start from this prior ('builtin' for the shipped one, or a weights file) instead of random weights."),
    light_color: bool = typer.Option(False, "--light-color", help="Condition on the light's colour (the manifest's light_color): 3 more input channels, zero-initialised in an --init prior without them."),
    seed: int = Seed,
    resume: bool = Resume,
    checkpoint_every: int = CheckpointEvery,
    max_minutes: Optional[float] = MaxMinutes,
    log_every: int = LogEvery,
    json_output: bool = Json,
) -> None:
    """Train the built-in pixel-space relighting prior (the default model of `lasagna shade`)."""
    from lasagna_core.train.builtin import BuiltinConfig, train_builtin

    if size % 4:
        from lasagna_core.errors import UsageError

        raise UsageError("--size must be a multiple of 4")
    config = BuiltinConfig(
        steps=steps or BuiltinConfig.steps, batch_size=batch_size, learning_rate=lr, size=size, dropout=dropout,
        light_color=light_color, seed=seed, resume=resume, checkpoint_every=checkpoint_every, max_minutes=max_minutes,
        init=init,
    )
    with _progress("training built-in prior", log_every) as on_progress:
        result = train_builtin(data, out, config, on_progress=on_progress)
    _report(result, json_output)


@train_app.command("color")
@guarded
def color(
    data: Path = Data,
    out: Path = typer.Option(..., "--out", "-o", help="Weights file to write (.safetensors; a .sha256 and .loss.png go beside it)."),
    steps: Optional[int] = Steps,
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Examples per step."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="Peak learning rate (linear warm-up, cosine decay)."),
    size: int = typer.Option(64, "--size", min=8, help="Training resolution in pixels (square); the prior's working size."),
    class_dropout: float = typer.Option(0.5, "--class-dropout", min=0.0, max=1.0, help="Share of examples trained with no colour word."),
    no_hints: float = typer.Option(0.4, "--no-hints", min=0.0, max=1.0, help="Share of examples trained with no hint dots."),
    guide_dropout: float = typer.Option(0.15, "--guide-dropout", min=0.0, max=1.0, help="Share of examples trained with neither guide nor hints (what guidance pushes away from)."),
    hole_weight: float = typer.Option(1.0, "--hole-weight", min=1.0, help="Loss weight of the paper a drawing encloses (inside a handle, a ring), against 1 for any other pixel: the few pixels that say a hole stays paper."),
    init: Optional[str] = typer.Option(None, "--init", help="Fine-tune: start from this colouring prior ('builtin-color' or a weights file)."),
    seed: int = Seed,
    resume: bool = Resume,
    checkpoint_every: int = CheckpointEvery,
    max_minutes: Optional[float] = MaxMinutes,
    log_every: int = LogEvery,
    json_output: bool = Json,
) -> None:
    """Train the built-in colouring prior (the default model of `lasagna colorize`) on `lasagna dataset line-art` data."""
    from lasagna_core.train.color import ColorConfig, train_color

    if size % 8:
        from lasagna_core.errors import UsageError

        raise UsageError("--size must be a multiple of 8")
    config = ColorConfig(
        steps=steps or ColorConfig.steps, batch_size=batch_size, learning_rate=lr, size=size, class_dropout=class_dropout,
        no_hints=no_hints, guide_dropout=guide_dropout, hole_weight=hole_weight, seed=seed, resume=resume, checkpoint_every=checkpoint_every, max_minutes=max_minutes, init=init,
    )
    with _progress("training colouring prior", log_every) as on_progress:
        result = train_color(data, out, config, on_progress=on_progress)
    _report(result, json_output)


@train_app.command("controlnet")
@with_progress_option
@guarded
def controlnet(
    model: str = typer.Option(..., "--model", "-m", help="Stable Diffusion folder or cached hub id to train the adapter for."),
    data: Path = Data,
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the ControlNet into (save_pretrained; use with --controlnet)."),
    steps: Optional[int] = Steps,
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Examples per step."),
    lr: float = typer.Option(1e-5, "--lr", min=0.0, help="Learning rate (AdamW)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    seed: int = Seed,
    resume: bool = Resume,
    checkpoint_every: int = CheckpointEvery,
    max_minutes: Optional[float] = MaxMinutes,
    log_every: int = LogEvery,
    json_output: bool = Json,
) -> None:
    """Train a ControlNet relighting adapter on a Stable Diffusion model (the paper's recipe): base -> hint, prompt -> text."""
    from lasagna_core.train.controlnet import ControlNetConfig, train_controlnet

    config = ControlNetConfig(
        steps=steps or ControlNetConfig.steps, batch_size=batch_size, learning_rate=lr, device=device, seed=seed,
        resume=resume, checkpoint_every=checkpoint_every, max_minutes=max_minutes,
    )
    with _progress("training ControlNet", log_every) as on_progress:
        result = train_controlnet(model, data, out, config, on_progress=on_progress)
    _report(result, json_output)


def _report(result: Any, json_output: bool) -> None:
    payload = {"output": str(result.output), "steps_done": result.steps_done, "steps": result.steps,
               "seconds": round(result.seconds, 1), "finished": result.finished,
               "loss_curve": str(result.loss_curve) if result.loss_curve else None,
               "final_loss": result.history["loss"][-1] if result.history.get("loss") else None}
    report(payload)
    if json_output:
        print_json(payload)
        return
    if result.finished:
        say(f"wrote {result.output} after {result.steps_done} steps in {result.seconds / 60:.1f} min "
            f"(loss curve: {result.loss_curve})")
    else:
        say(f"stopped at step {result.steps_done}/{result.steps} after {result.seconds / 60:.1f} min; "
            "run the same command again to resume")


@contextmanager
def _progress(label: str, log_every: int) -> Iterator[Callable[[Any], None]]:
    """A rich progress bar on a terminal; otherwise one plain line every `log_every` steps (for nohup logs);
    with `--progress jsonl`, one line per step."""
    stream = current()
    if stream is not None:
        yield lambda info: stream.progress("train", info.step, info.steps, loss=info.loss, learning_rate=info.learning_rate)
        return
    with progress_bar(loss=True) as bar:
        if bar is None:
            def line(info: Any) -> None:
                if info.step % log_every == 0 or info.step == info.steps:
                    eta = info.seconds / max(info.step, 1) * (info.steps - info.step)
                    say(f"step {info.step}/{info.steps} loss {info.loss:.4f} lr {info.learning_rate:.2e} "
                        f"elapsed {info.seconds / 60:.1f} min eta {eta / 60:.1f} min")

            yield line
            return
        task = bar.add_task(label, total=None, loss="-")

        def update(info: Any) -> None:
            bar.update(task, total=info.steps, completed=info.step, loss=f"{info.loss:.4f}")

        yield update
