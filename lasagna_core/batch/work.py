"""One file of a batch: its edit, isolated (a failure becomes its record), with the worker's prior reused.

Every runner calls `process` for each file; torch and the edit flow are imported only when an edit runs.
"""

from __future__ import annotations

import time
from dataclasses import replace
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..edit_config import EditConfig, EditJob
from ..errors import LasagnaError, ModelError, reason
from .outputs import committed, make_parents, remove_folders, result_identities
from .results import record
from .signals import StopSignals
from .types import Record, WorkItem

if TYPE_CHECKING:
    from ..priors.base import Prior


def on_device(config: EditConfig, device: str) -> EditConfig:
    """The batch's config as one worker runs it: the same prior, on that worker's device."""
    return replace(config, prior=replace(config.prior, device=device))


class PriorSource:
    """The prior of one worker, loaded on first use and then reused for every file; a load failure is kept
    and raised again, so a broken model costs one attempt, not one per file. `on_load` hears of each load
    when it happens, so the count is true even when the file that caused it is then interrupted."""

    def __init__(self, config: EditConfig, device: str, on_load: Callable[[], None] | None = None):
        self.config, self.device, self.on_load = config, device, on_load
        self.prior: Prior | None = None
        self.error: ModelError | None = None
        self.loads = 0

    def get(self) -> Prior:
        if self.prior is None:
            if self.error is not None:
                raise self.error
            from ..edit import load_edit_prior

            try:
                self.prior = load_edit_prior(on_device(self.config, self.device))
            except ModelError as exc:
                self.error = exc
                raise
            self.loads += 1
            if self.on_load is not None:
                self.on_load()
        return self.prior


class _LazyPrior:
    """Stands in for the prior in `run_edit` and loads it on first use, so a file that fails before it needs
    the model (damaged, unsupported, too large) never costs a model load - a rerun that only meets the broken
    files loads nothing."""

    def __init__(self, source: PriorSource):
        self._source = source

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source.get(), name)


def process(
    item: WorkItem, config: EditConfig, priors: PriorSource, on_notice: Callable[[str], None] | None = None,
    stop: StopSignals | None = None,
) -> tuple[Record, bool]:
    """Run one file: (its record, whether the failure is fatal for the whole worker - the model can't load).

    Never raises for a bad file: the project's errors, and any other exception, become a failed record.
    On any failure or interruption, what this attempt wrote is taken back (the writer leaves the old result
    or none; the folders made for it go) - except a new result already complete on disk, which stays. An
    interruption is re-raised after that, unless it came once the result was complete and `stop` holds it:
    then the file is done, its record is returned, and the runner's next `stop.check()` ends the run.
    """
    started = time.perf_counter()
    output = Path(item.output)
    before = result_identities(output)
    made: list[Path] = []

    def take_back() -> bool:
        """Remove what this attempt made unless its result is complete; says whether it was."""
        done = committed(output, before)
        if not done:
            remove_folders(made)
        return done

    def finished(status: str, message: str | None = None) -> Record:
        return record(item.input, item.output, status, message, time.perf_counter() - started, item.seed)

    def failed(message: str) -> Record:
        take_back()
        return finished("failed", message)

    try:
        try:
            made += make_parents(output)
        except OSError as exc:
            return failed(f"{output.parent}: can't create the output folder ({exc.strerror or exc})"), False
        from ..edit import run_edit

        job = EditJob(input=Path(item.input), prompt=item.prompt, config=on_device(config, priors.device), output=output,
                      seed=item.seed)
        with stop.interruptible() if stop is not None else nullcontext():
            run_edit(job, prior=cast("Prior", _LazyPrior(priors)), on_notice=on_notice)
    except LasagnaError as exc:
        if exc is priors.error:  # the model itself can't be loaded: every file would fail the same way
            return failed(f"model: {exc}"), True
        return failed(str(exc)), False
    except MemoryError:
        return failed("out of memory while editing this file"), False
    except Exception as exc:  # a bug, or a library failing on this file: isolated to it, reported in one line
        return failed(f"internal error: {reason(exc, with_type=True)}"), False
    except BaseException:
        if take_back() and stop is not None and stop.signum is not None:
            return finished("ok"), False  # the signal was held until the pair was in place: the file is done
        raise
    return finished("ok"), False
