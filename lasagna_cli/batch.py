"""`lasagna batch TEMPLATE IN OUT`: many files, one command, for shell scripts, cron, SLURM arrays and clusters.

Only options, printing and exit codes live here; the runner is `lasagna_core.batch`. Like every command
module, nothing heavy is imported at module level.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from typer.core import TyperCommand

from lasagna_core.document import DEFAULT_MAX_PIXELS

from .console import notice, print_json, progress_bar, say, stderr, styled, user_errors
from .prior_flags import with_prior_options
from .progress_stream import current, report, with_progress_option

if TYPE_CHECKING:
    from lasagna_core.batch import BatchSummary, Record

_RAY_WORDS = ("auto", "local")


class BatchCommand(TyperCommand):
    """Lets `--ray` be given without a value (`--ray` alone: a local Ray instance).

    Typer has no optional-value options, so a bare `--ray` is rewritten to `--ray=` before parsing. The next
    word is taken as the address only when it looks like one (auto, local, HOST:PORT, ray://...), so
    `--ray` may also stand before the positional arguments; `--ray=ADDRESS` always works."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, ray_flag_without_value(args))


def ray_flag_without_value(args: list[str]) -> list[str]:
    """`--ray` not followed by an address (auto, local, anything with a colon) -> `--ray=` (a local instance)."""
    rewritten = []
    for i, arg in enumerate(args):
        if arg == "--ray":
            following = args[i + 1] if i + 1 < len(args) else None
            if following is None or not (following in _RAY_WORDS or ":" in following):
                rewritten.append("--ray=")
                continue
        rewritten.append(arg)
    return rewritten


@with_progress_option
@with_prior_options
def batch_command(
    template: str = typer.Argument(..., help="Template: shade, colorize, another built-in name, or a .toml file."),
    inputs: str = typer.Argument(..., metavar="IN", help="A folder (walked recursively), a quoted glob like 'shots/**/*.png', or - to read paths from stdin."),
    out: Path = typer.Argument(..., metavar="OUT", help="Output folder: IN's relative paths are mirrored as <stem>.psd (each with a .psd.json sidecar)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="The prompt for every file (the fallback when --prompts is given)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="CSV (input,prompt[,seed]) or JSONL ({\"input\", \"prompt\", \"seed\"}) mapping inputs to prompts."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Diffusion prior: hub id, local folder or .safetensors file (default: the template's)."),
    layer: Optional[str] = typer.Option(None, "--layer", "-l", help="PSD layer (name or Group/Name) to use as the base in every file."),
    close_gaps: Optional[int] = typer.Option(None, "--close-gaps", min=0, help="Colouring: the widest gap (px) in the lines that the flats' fill closes where a line ends; 0 closes none (default: two line widths)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimisation steps (default: the template's)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", min=0.0, help="Classifier-free guidance scale (default: the template's)."),
    seed: int = typer.Option(0, "--seed", help="Seed for every file (a seed column in --prompts overrides it per file); recorded in the log."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, fp16 or bf16."),
    variations: int = typer.Option(1, "--variations", "-k", min=1, help="K alternative layer sets per file; all but the first hidden."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=1, help="Refuse documents with more pixels than this."),
    devices: str = typer.Option("auto", "--devices", "--device", help="Comma-separated devices, one worker process each (cuda:0,cuda:1); one device runs in this process."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: process only shard K of N (1-based; stable per file) - for SLURM/Kubernetes array jobs."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Run the files as Ray tasks: alone for a local instance ($RAY_ADDRESS if set), 'auto' for this machine's cluster, or an address."),
    ray_cpus: int = typer.Option(1, "--ray-cpus", min=1, help="CPUs (and torch threads) per Ray task when the cluster has no GPUs."),
    skip_existing: bool = typer.Option(True, "--skip-existing/--no-skip-existing", help="Skip files whose output PSD and sidecar already exist and parse."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first file that fails (exit code 1)."),
    log: Optional[Path] = typer.Option(None, "--log", help="Write one JSON line per file: input, output, status (ok|skipped|failed), error, seconds, seed."),
    json_output: bool = typer.Option(False, "--json", help="Print the same JSON line per file on stdout, for scripts."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="On stderr, only failures and the summary."),
    prior_options: Optional[dict[str, Any]] = None,
) -> None:
    """Run one template over many files: resumable, one line per bad file, exit 0 all done / 1 any failed."""
    with user_errors():
        from lasagna_core.batch import BatchOptions, EditConfig, parse_shard
        from lasagna_core.errors import UsageError
        from lasagna_core.priors import PriorSettings

        from .edit import PRECISIONS, _check_choice

        _check_choice("--precision", precision, PRECISIONS)
        device_list = [d.strip() for d in devices.split(",")]
        if any(not d for d in device_list):
            raise UsageError(f"--devices must be a comma-separated list like cuda:0,cuda:1, not '{devices}'")
        if inputs == "-" and sys.stdin.isatty():
            raise UsageError("IN is -, but nothing is piped in: e.g. find shots -name '*.png' | lasagna batch shade - out")
        edit = EditConfig(
            template=template, prior=PriorSettings(model, precision=precision, options=prior_options or {}),
            layer=layer, steps=steps, guidance=guidance, variations=variations, max_pixels=max_pixels,
            close_gaps=close_gaps,
        )
        options = BatchOptions(
            inputs=inputs, out=out, edit=edit, prompt=prompt, prompts=prompts,
            stdin_paths=sys.stdin.read().splitlines() if inputs == "-" else None, seed=seed,
            skip_existing=skip_existing, fail_fast=fail_fast, shard=parse_shard(shard) if shard else None,
            devices=device_list, ray=ray, ray_cpus=ray_cpus, log=log,
        )
        from lasagna_core.batch import run_batch

        with _Reporter(json_output=json_output, quiet=quiet) as reporter:
            summary = run_batch(
                options, on_record=reporter.record, on_notice=reporter.notice, on_start=reporter.start
            )
        from dataclasses import asdict

        report({**asdict(summary), "exit_code": summary.exit_code},
               failure=f"{summary.failed} of {summary.total} files failed; {_headline(summary)}")
        if current() is None:  # the stream's final line carries the summary
            _print_summary(summary, log)
        if summary.exit_code:
            raise typer.Exit(summary.exit_code)


class _Reporter:
    """Per-file lines on stderr (a progress bar instead on a TTY, progress lines with `--progress jsonl`) and
    JSON lines on stdout with --json."""

    def __init__(self, *, json_output: bool, quiet: bool):
        self.json_output, self.quiet = json_output, quiet
        self.bars = ExitStack()
        self.bar: Any = None
        self.task: Any = None
        self.stream, self.done, self.total = current(), 0, 0

    def __enter__(self) -> _Reporter:
        return self

    def start(self, total: int) -> None:
        self.total = total
        if self.stream is not None:
            self.stream.progress("batch", 0, total)
        if total == 0:
            return
        self.bar = self.bars.enter_context(progress_bar(elapsed=True))
        if self.bar is not None:
            self.task = self.bar.add_task("batch", total=total)

    def record(self, rec: Record) -> None:
        if self.json_output:
            print_json(rec)
        if self.bar is not None:
            self.bar.advance(self.task)
        self.done += 1
        if self.stream is not None:
            self.stream.progress("batch", self.done, self.total, input=rec["input"], status=rec["status"])
        self._line(rec)

    def _line(self, rec: Record) -> None:
        status = rec["status"]
        if status == "failed":
            say(("failed", "bold red"), f"  {rec['input']}: {_without_name(rec['input'], rec['error'])}")
        elif not self.quiet and self.bar is None:  # on a TTY the bar shows progress; elsewhere one line per file
            detail = f" -> {rec['output']} ({rec['seconds']:.1f} s)" if status == "ok" else " (output already complete)"
            say(f"{status:<7} {rec['input']}{detail}")

    def notice(self, text: str) -> None:
        if not self.quiet:
            notice(text)

    def __exit__(self, *exc: Any) -> None:
        self.bars.__exit__(*exc)


def _print_summary(summary: BatchSummary, log: Path | None) -> None:
    from rich import box
    from rich.table import Table

    say(_headline(summary))
    table = Table(box=box.SIMPLE, show_header=True, header_style="bold")
    table.add_column("status")
    table.add_column("files", justify="right")
    for name, count, style in (("ok", summary.ok, "green"), ("skipped", summary.skipped, "cyan"),
                               ("failed", summary.failed, "red"), ("not attempted", summary.not_attempted, "yellow")):
        if count or name in ("ok", "failed"):
            table.add_row(styled((name, style)), str(count))
    table.add_row(styled(("total", "bold")), str(summary.total))
    stderr.print(table)
    if summary.failures:
        failures = Table(box=box.SIMPLE, show_header=True, header_style="bold")
        failures.add_column("failed file", overflow="fold")
        failures.add_column("error", overflow="fold")
        for input_path, error in summary.failures[:20]:
            failures.add_row(input_path, _without_name(input_path, error))
        stderr.print(failures)
        if len(summary.failures) > 20:
            say(f"... and {len(summary.failures) - 20} more" + (f" (see {log})" if log else ""))
    elif log is not None:
        say(f"log: {log}")


def _without_name(input_path: str, error: str | None) -> str:
    """'a/b.png' + 'b.png: damaged ...' -> 'damaged ...': the line already starts with the path."""
    error = error or ""
    for prefix in (f"{input_path}: ", f"{Path(input_path).name}: "):
        if error.startswith(prefix):
            return error[len(prefix):]
    return error


def _headline(summary: BatchSummary) -> str:
    import signal

    workers = ", ".join(summary.workers) if summary.workers else "no worker needed"
    text = f"batch: {summary.seconds:.1f} s, workers: {workers}, model loaded {summary.model_loads}x"
    if summary.signal is not None:
        text += f" - stopped by {signal.Signals(summary.signal).name}; rerun the same command to finish"
    elif summary.stop_reason == "fail-fast":
        text += " - stopped at the first failure (--fail-fast)"
    elif summary.stop_reason == "model":
        text += " - stopped: the model can't be loaded"
    return text
