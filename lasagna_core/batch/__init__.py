"""Batch runs: one template over many inputs, the model loaded once per worker, resumable, isolated per file.

The runner behind `lasagna batch`, one module per concern:

- `inputs`: what IN names (a folder, a glob, a list of paths), each input with its path relative to IN
- `prompts`: the `--prompts` file (CSV or JSONL: input -> prompt, seed)
- `planning`: each input mapped to `OUT/<relative folder>/<stem>.psd` (never outside OUT, never onto an
  input), prompts attached, one shard kept
- `outputs`: IN's relative paths mirrored into OUT, and taking back what one attempt made; naming a result,
  its sidecar, "complete" and settling what a killed writer left are the writer's (`lasagna_core.writing`)
- `work`: one file's edit (`edit.run_edit`), isolated: any failure becomes that file's record
- `local`: this process, or one worker process per `--devices` entry; `ray_runner`: Ray tasks
- `signals`: SIGINT/SIGTERM as `Interrupted`; `results`: the records, the JSONL log, the counts
- `run`: `run_batch`, from the options to the summary; `types`: the data all of them share

Every file ends as one record (input, output, status ok|skipped|failed, error, seconds, seed), written to
the JSONL log and handed to the caller; one file's failure never stops the others unless `fail_fast`.
SIGINT and SIGTERM stop the run cleanly: the file in progress is abandoned (the writer leaves its old result
or none, never half of one; a folder made for it goes), except that a signal arriving while its result is
being renamed into place waits for both renames, and that file is recorded ok. The records so far are kept,
and the summary says which signal stopped the run so that the CLI exits 128 + signal (130, 143).

Like the rest of `lasagna_core`, nothing here prints: callers get records and notices through callbacks.
Torch is imported only where an edit actually runs.
"""

from .inputs import INPUT_SUFFIXES, discover
from .outputs import output_for
from .planning import parse_shard, plan, shard_of
from .prompts import read_prompts
from .results import record
from .run import run_batch
from .types import (
    BatchOptions,
    BatchSummary,
    EditConfig,
    Interrupted,
    NoticeCallback,
    PlannedItem,
    PromptEntry,
    Record,
    RecordCallback,
    Source,
    WorkItem,
)
from .work import PriorSource, process

__all__ = [
    "INPUT_SUFFIXES", "BatchOptions", "BatchSummary", "EditConfig", "Interrupted", "NoticeCallback", "PlannedItem",
    "PriorSource", "PromptEntry", "Record", "RecordCallback", "Source", "WorkItem", "discover", "output_for",
    "parse_shard", "plan", "process", "read_prompts", "record", "run_batch", "shard_of",
]
