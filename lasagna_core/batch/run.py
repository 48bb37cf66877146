"""`run_batch`: one whole batch, from the options to the summary.

It checks the options (usage errors before anything is touched), plans the files, reports what needs no
work, and hands the rest to one runner: this process, the worker pool (`local.py`) or Ray (`ray_runner.py`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from ..errors import OutputError, UsageError
from ..writing import remove_stale_temporaries, result_complete
from .inputs import input_root
from .local import run_here, run_pool
from .lock import lock_out
from .planning import plan
from .results import Run, open_log, record
from .signals import StopSignals, stop_signals
from .types import BatchOptions, BatchSummary, Interrupted, NoticeCallback, PlannedItem, RecordCallback, WorkItem


def run_batch(
    options: BatchOptions,
    *,
    on_record: RecordCallback | None = None,
    on_notice: NoticeCallback | None = None,
    on_start: Callable[[int], None] | None = None,
) -> BatchSummary:
    """Run the whole batch and return its summary; records go to `on_record` (and the log) as files finish.

    Raises UsageError (before any work) for bad options: unknown template, bad devices, no prompt at all,
    a prompts file that doesn't parse, an IN that doesn't exist. Per-file problems are records, not raises.
    """
    from ..templates import load_template

    started = time.perf_counter()
    load_template(options.edit.template)  # an unknown template is a usage error before anything else
    if options.prompt is None and options.prompts is None:
        raise UsageError("give --prompt TEXT (for every file) or --prompts FILE (CSV/JSONL: input -> prompt)")
    devices = [d.strip() for d in options.devices if d.strip()] or ["auto"]
    if options.ray is not None and devices != ["auto"]:
        raise UsageError("--ray and --devices don't go together: Ray places the tasks on the cluster's devices")
    if options.ray is not None:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise UsageError("--ray needs Ray, which is not installed: pip install 'lasagna[ray]'")
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: OUT must be a folder, and this is a file")
    root = input_root(options.inputs)
    if root is not None and os.path.realpath(root) == os.path.realpath(out):
        raise UsageError(f"{out}: OUT is IN itself, so every rerun would take the outputs for inputs; give another "
                         "folder (one inside IN is fine: it is left out of the inputs)")
    notices: list[str] = []
    items = plan(options, notices=notices)
    if options.ray is None:
        _check_devices(devices, options.edit.prior.precision)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: can't create the output folder ({exc.strerror or exc})") from None
    with ExitStack() as held:
        signals = held.enter_context(stop_signals())
        held.enter_context(lock_out(out, options.shard))  # before the log: a refused run must not truncate it
        log = open_log(options.log)
        if log is not None:
            held.callback(log.close)
        run = Run(options, on_record, on_notice, log)
        run.summary.total = len(items)
        if not items:
            notices.append(f"nothing to do: no inputs in {options.inputs}" + (" for this shard" if options.shard else ""))
        for text in notices:
            run.notice(text)
        try:
            if on_start is not None:
                on_start(len(items))
            todo = _triage(run, items, signals)
            if todo and not run.stop:
                if options.ray is not None:
                    from .ray_runner import run_on_ray

                    run_on_ray(run, todo, options.edit, address=options.ray, cpus_per_task=options.ray_cpus,
                               signals=signals)
                elif len(devices) > 1:
                    run_pool(run, todo, options.edit, devices, signals)
                else:
                    run_here(run, todo, options.edit, devices[0], signals)
            signals.check()  # a stop that came after the last file is still the user's stop
        except Interrupted as exc:
            run.summary.signal = exc.signum
    summary = run.summary
    summary.not_attempted = summary.total - summary.ok - summary.skipped - summary.failed
    summary.seconds = time.perf_counter() - started
    return summary


def _check_devices(devices: Sequence[str], precision: str) -> None:
    from ..runtime import resolve_device, resolve_dtype

    for name in devices:
        resolve_dtype(precision, resolve_device(name))


def _triage(run: Run, items: Sequence[PlannedItem], signals: StopSignals) -> list[WorkItem]:
    """Report what needs no work (refused, or already complete) and return the rest as work items.

    Each output folder is first settled by the writer's rules (what a killed run left: a commit it had begun
    finished, its other temporaries removed), so a result a SIGKILL caught mid-rename counts as done, and no
    temporary stays in a folder whose files are all skipped."""
    todo = []
    settled: set[Path] = set()
    for index, item in enumerate(items):
        signals.check()
        if run.stop:
            break
        started = time.perf_counter()
        output = None if item.output is None else str(item.output)
        if item.output is not None and item.output.parent not in settled:
            settled.add(item.output.parent)
            remove_stale_temporaries(item.output.parent)
        if item.error is not None:
            run.emit(record(str(item.source.path), output, "failed", item.error, time.perf_counter() - started, item.seed))
        elif run.options.skip_existing and item.output is not None and result_complete(item.output):
            run.emit(record(str(item.source.path), output, "skipped", None, time.perf_counter() - started, item.seed))
        else:
            assert item.output is not None and item.prompt is not None
            todo.append(WorkItem(index, str(item.source.path), str(item.output), item.prompt, item.seed))
    return todo
