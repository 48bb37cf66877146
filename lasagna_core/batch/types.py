"""The data every room of the batch runner shares: options, inputs, work items, records, the summary.

Only dataclasses and plain types live here, so that every other module of the package can import them
without importing each other (the package has no import cycle).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from ..edit_config import EditConfig  # what every file of a batch shares: the edit flow's own config


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: stop now, abandon the file in progress, keep what is done."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class BatchOptions:
    inputs: str  # a folder, a glob, a single file, or "-" for `stdin_paths`
    out: Path
    edit: EditConfig = field(default_factory=EditConfig)
    prompt: str | None = None
    prompts: Path | None = None  # CSV or JSONL: input -> prompt (and optionally seed)
    stdin_paths: Sequence[str] | None = None
    seed: int = 0
    skip_existing: bool = True
    fail_fast: bool = False
    shard: tuple[int, int] | None = None  # (K, N), K from 1 to N
    devices: Sequence[str] = ("auto",)
    ray: str | None = None  # None: no Ray; "": local instance (or $RAY_ADDRESS); else an address
    ray_cpus: int = 1  # CPUs per Ray task when the cluster has no GPUs
    log: Path | None = None


@dataclass(frozen=True)
class Source:
    path: Path  # as the user wrote it (joined with the folder for a walk)
    rel: Path  # relative to the input root: decides where the output goes
    error: str | None = None  # found but unusable before any reading (e.g. a folder that can't be listed)


@dataclass(frozen=True)
class PromptEntry:
    prompt: str
    seed: int | None = None


@dataclass(frozen=True)
class WorkItem:
    """One file to edit (picklable: it travels to worker processes and Ray tasks)."""

    index: int
    input: str
    output: str
    prompt: str
    seed: int


@dataclass
class PlannedItem:
    source: Source
    output: Path | None
    prompt: str | None
    seed: int
    error: str | None = None  # refused before any work: collision, escape, would overwrite an input, no prompt


class Record(TypedDict):
    """One line of the results log (and of `--json`): the same six keys for every file."""

    input: str
    output: str | None
    status: str  # ok | skipped | failed
    error: str | None
    seconds: float
    seed: int


RecordCallback = Callable[[Record], None]
NoticeCallback = Callable[[str], None]


@dataclass
class BatchSummary:
    total: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    not_attempted: int = 0
    seconds: float = 0.0
    signal: int | None = None  # the signal that stopped the run, if one did
    stop_reason: str | None = None  # "fail-fast" or "model" when the run stopped early
    workers: list[str] = field(default_factory=list)
    model_loads: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, error)

    @property
    def exit_code(self) -> int:
        """0 all done, 1 any file failed or was left undone, 128 + signal (130 SIGINT, 143 SIGTERM) when stopped."""
        if self.signal is not None:
            return 128 + self.signal
        return 1 if self.failed or self.not_attempted else 0
