"""The results of a run: one record per file, written to the JSONL log and handed to the caller, and counted.

Every runner (this process, the worker pool, Ray) reports through `Run`, so the log, `--json` and the
summary agree whichever way the files were edited.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from ..errors import OutputError
from .types import BatchOptions, BatchSummary, NoticeCallback, Record, RecordCallback


def record(input: str, output: str | None, status: str, error: str | None, seconds: float, seed: int) -> Record:
    """One line of the results log (and of `--json`): the same six keys for every file."""
    return {"input": input, "output": output, "status": status, "error": error, "seconds": round(seconds, 3), "seed": seed}


def open_log(path: Path | None) -> IO[str] | None:
    if path is None:
        return None
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"--log {path}: can't write it ({exc.strerror or exc})") from None


class Run:
    """Bookkeeping shared by every way of running: records to the log and the caller, counts, stop flags."""

    def __init__(self, options: BatchOptions, on_record: RecordCallback | None, on_notice: NoticeCallback | None,
                 log: IO[str] | None):
        self.options, self.on_record, self.on_notice, self.log = options, on_record, on_notice, log
        self.summary = BatchSummary()
        self.stop = False

    def emit(self, rec: Record) -> None:
        status = rec["status"]
        setattr(self.summary, status, getattr(self.summary, status) + 1)
        if status == "failed":
            self.summary.failures.append((rec["input"], rec["error"] or ""))
            if self.options.fail_fast and not self.stop:
                self.stop, self.summary.stop_reason = True, "fail-fast"
        if self.log is not None:
            self.log.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self.log.flush()
        if self.on_record is not None:
            self.on_record(rec)

    def fatal(self) -> None:
        if not self.stop:
            self.stop, self.summary.stop_reason = True, "model"

    def notice(self, text: str) -> None:
        if self.on_notice is not None:
            self.on_notice(text)
