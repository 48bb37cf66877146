"""Batch runs: one template over many inputs, the model loaded once per worker, resumable, isolated per file.

The runner behind `lasagna batch`. It finds the inputs (a folder, a glob, or a list of paths), maps each to
`OUT/<relative folder>/<stem>.psd` (never outside OUT, never onto an input), keeps the shard this job owns,
skips outputs that are already complete, and runs `pipeline.run_edit` on the rest: in this process, in one
worker process per `--devices` entry, or as Ray tasks (`batch_ray.py`). Every file ends as one record
(input, output, status ok|skipped|failed, error, seconds, seed), written to the JSONL log and handed to the
caller; one file's failure never stops the others unless `fail_fast`.

SIGINT and SIGTERM stop the run cleanly: the file in progress is abandoned and whatever it had written is
removed (its output, sidecar, temporary files and any folder made for it), the records so far are kept, and
the summary says which signal stopped the run so that the CLI exits 128 + signal (130, 143).

Like the rest of `lasagna_core`, nothing here prints: callers get records and notices through callbacks.
Torch is imported only where an edit actually runs.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .document import DEFAULT_MAX_PIXELS, PSD_SUFFIXES, RASTER_SUFFIXES
from .errors import LasagnaError, ModelError, OutputError, UsageError, reason

INPUT_SUFFIXES = tuple(sorted(set(RASTER_SUFFIXES + PSD_SUFFIXES)))
"""What a folder walk picks up (case-insensitively). Globs and path lists are taken as given."""

MAX_WORKER_RESTARTS = 3
"""A worker process that dies (segfault, out-of-memory kill) is replaced at most this many times per device."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: stop now, abandon the file in progress, keep what is done."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class EditConfig:
    """The per-edit settings every file of a batch shares (picklable: it travels to worker processes)."""

    template: str = "shade"
    model: str | None = None
    controlnet: str | None = None
    layer: str | None = None
    steps: int | None = None
    guidance: float | None = None
    precision: str = "auto"
    variations: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS
    low_memory: bool = False
    fast_encoder: str | None = None
    vae: str | None = None

    def speed(self) -> dict[str, Any]:
        """The prior's speed/memory options, only those asked for (EditRequest fields of the same names)."""
        wanted = {"low_memory": self.low_memory, "fast_encoder": self.fast_encoder, "vae": self.vae}
        return {key: value for key, value in wanted.items() if value}


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


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' (K from 1 to N, as in `split -n K/N`) -> (K, N)."""
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit():
        raise UsageError(f"--shard must look like K/N, e.g. 1/4 (K from 1 to N), not '{text}'")
    shard = (int(k), int(n))
    if shard[1] < 1 or not 1 <= shard[0] <= shard[1]:
        raise UsageError(f"--shard {text}: K must be between 1 and N, and N at least 1")
    return shard


def shard_of(key: str, count: int) -> int:
    """The shard (1..count) that owns `key`: a stable hash, so it depends on nothing but the key itself.

    Jobs of an array that list the folder at different moments still agree on every file they both see."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


# ---------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Source:
    path: Path  # as the user wrote it (joined with the folder for a walk)
    rel: Path  # relative to the input root: decides where the output goes
    error: str | None = None  # found but unusable before any reading (e.g. a folder that can't be listed)


def discover(spec: str, *, stdin_paths: Sequence[str] | None = None, exclude: Path | None = None) -> list[Source]:
    """The inputs named by `spec`, in a deterministic order, each with its path relative to the input root.

    - a folder: every file below it whose suffix is an image or PSD (hidden entries and `exclude`, the output
      folder, are left out); a folder *named* like an image is listed too, so that it gets its own error line
    - a glob (`shots/**/*.png`, quoted): its matches, relative to the part of the pattern before the first wildcard
    - `-`: the paths in `stdin_paths` (one per line; blank lines and `#` comments ignored), relative to the
      deepest folder they all share
    - a single file: that file
    """
    excluded = os.path.realpath(exclude) if exclude is not None else None
    if spec == "-":
        return _from_list(stdin_paths or [])
    if any(ch in spec for ch in "*?["):
        return _from_glob(spec, excluded)
    root = Path(spec)
    if root.is_dir():
        return _from_folder(root, excluded)
    if root.exists() or root.is_symlink():
        return [Source(root, Path(root.name))]
    raise UsageError(f"{spec}: no such file or folder (IN is a folder, a quoted glob, or - for paths on stdin)")


def _is_input_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(INPUT_SUFFIXES)


def _from_folder(root: Path, excluded: str | None) -> list[Source]:
    found: list[Source] = []

    def unreadable(error: OSError) -> None:
        where = Path(error.filename) if error.filename else root
        reason = error.strerror or type(error).__name__
        found.append(Source(where, where.relative_to(root), f"{where}: can't list this folder ({reason.lower()})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        here = Path(dirpath)
        kept = []
        for name in sorted(dirnames):
            if name.startswith(".") or (excluded and os.path.realpath(here / name) == excluded):
                continue
            kept.append(name)
            if _is_input_name(name):  # a folder named like an image: reported, and still walked into
                found.append(Source(here / name, (here / name).relative_to(root)))
        dirnames[:] = kept
        for name in sorted(filenames):
            if _is_input_name(name):
                found.append(Source(here / name, (here / name).relative_to(root)))
    return sorted(found, key=lambda s: s.rel.as_posix())


def _from_glob(pattern: str, excluded: str | None) -> list[Source]:
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if any(ch in part for ch in "*?["))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    found = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        path = Path(match)
        if path.is_dir() and not _is_input_name(path.name):
            continue
        if excluded and (os.path.realpath(path) + os.sep).startswith(excluded + os.sep):
            continue  # our own outputs, when OUT lies inside what the glob covers
        found.append(Source(path, Path(os.path.relpath(path, root))))
    return found


def _from_list(lines: Iterable[str]) -> list[Source]:
    paths = []
    for line in lines:
        text = line.rstrip("\r\n")
        if text.strip() and not text.lstrip().startswith("#"):
            paths.append(Path(text))
    if not paths:
        return []
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(a) for a in absolute])
    seen: set[str] = set()
    found = []
    for path, full in zip(paths, absolute):
        if full not in seen:  # the same path twice is one input
            seen.add(full)
            found.append(Source(path, Path(os.path.relpath(full, root))))
    return found


# ---------------------------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptEntry:
    prompt: str
    seed: int | None = None


def read_prompts(path: Path) -> dict[str, PromptEntry]:
    """A CSV (`input,prompt[,seed]`, header optional) or JSONL (`{"input":..., "prompt":..., "seed":...}`) file.

    Keys are matched against each input's path relative to IN, its path as given, its absolute path, then
    its bare file name. Any mistake in the file is a UsageError naming the line.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"--prompts {path}: can't read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"--prompts {path}: not UTF-8 text") from None
    suffix = path.suffix.lower()
    is_jsonl = suffix in (".jsonl", ".ndjson", ".json") or (suffix != ".csv" and text.lstrip().startswith("{"))
    rows = _jsonl_rows(path, text) if is_jsonl else _csv_rows(path, text)
    entries: dict[str, PromptEntry] = {}
    for line, key, prompt, seed in rows:
        key = _norm_key(key)
        if not key:
            raise UsageError(f"--prompts {path}:{line}: the input is empty")
        if key in entries:
            raise UsageError(f"--prompts {path}:{line}: '{key}' is listed twice")
        entries[key] = PromptEntry(prompt, seed)
    return entries


def _norm_key(key: str) -> str:
    key = key.strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def _seed(path: Path, line: int, value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"--prompts {path}:{line}: seed must be a whole number, not {value!r}") from None


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, str, str, int | None]]:
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"--prompts {path}:{line}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("input"), str) or not isinstance(row.get("prompt"), str):
            raise UsageError(f'--prompts {path}:{line}: expected {{"input": "...", "prompt": "..."}}')
        yield line, row["input"], row["prompt"], _seed(path, line, row.get("seed"))


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, str, str, int | None]]:
    reader = csv.reader(io.StringIO(text))
    columns = {"input": 0, "prompt": 1, "seed": 2}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        cells = [cell.strip().lower() for cell in row]
        if line == 1 and "input" in cells and "prompt" in cells:
            columns = {name: cells.index(name) for name in ("input", "prompt", "seed") if name in cells}
            continue
        if len(row) <= max(columns["input"], columns["prompt"]):
            raise UsageError(f"--prompts {path}:{line}: expected input,prompt[,seed]")
        seed = row[columns["seed"]] if "seed" in columns and len(row) > columns["seed"] else None
        yield line, row[columns["input"]], row[columns["prompt"]], _seed(path, line, seed)


# ---------------------------------------------------------------------------------------------- the plan


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


def output_for(out: Path, rel: Path) -> Path:
    """`OUT/<rel's folders>/<rel's stem>.psd`; refuses a relative path that would climb out of OUT."""
    parts = rel.parts
    if not parts or rel.is_absolute() or any(part in ("..", ".", "") for part in parts):
        raise OutputError(f"{rel}: its output would land outside the output folder")
    return out.joinpath(*parts[:-1], Path(parts[-1]).stem + ".psd")


def sidecar_for(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def plan(options: BatchOptions, sources: Sequence[Source] | None = None, notices: list[str] | None = None) -> list[PlannedItem]:
    """Map inputs to outputs, refuse what must not be written, keep this job's shard and attach prompts.

    Pure apart from reading the prompts file and resolving paths; nothing is created. Sharding is by the
    output path, so inputs that would collide on one output always land in the same shard.
    """
    out = Path(options.out)
    if sources is None:
        sources = discover(options.inputs, stdin_paths=options.stdin_paths, exclude=out)
    entries = read_prompts(options.prompts) if options.prompts is not None else {}
    real_inputs = {os.path.realpath(s.path) for s in sources if s.error is None}
    out_real = os.path.realpath(out)
    items: list[PlannedItem] = []
    owners: dict[str, Path] = {}
    used: set[str] = set()
    for source in sources:
        entry = _lookup(entries, source, used)
        prompt = entry.prompt if entry is not None else options.prompt
        seed = entry.seed if entry is not None and entry.seed is not None else options.seed
        item = PlannedItem(source, None, prompt, seed, source.error)
        items.append(item)
        if item.error:
            continue
        try:
            item.output = output_for(out, source.rel)
        except OutputError as exc:
            item.error = str(exc)
            continue
        real_output = os.path.realpath(item.output)
        if not _within(real_output, out_real):
            item.error = f"{source.path}: its output {item.output} would land outside {out} (a link inside it points elsewhere)"
        elif real_output in real_inputs:
            item.error = f"{source.path}: refusing to write {item.output}, which is one of the inputs"
        elif (first := owners.setdefault(os.path.normcase(real_output), source.path)) != source.path:
            item.error = f"{source.path}: {first} already writes {item.output}; rename one of them"
        elif prompt is None:
            item.error = f"{source.path}: no prompt for it in {options.prompts} and no --prompt for the rest"
    if notices is not None and entries and len(used) < len(entries):
        missing = sorted(set(entries) - used)
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        notices.append(f"{len(missing)} entr{'y' if len(missing) == 1 else 'ies'} in {options.prompts} matched no input: {shown}")
    if options.shard is not None:
        k, n = options.shard
        items = [item for item in items if shard_of(_shard_key(out, item), n) == k]
    return items


def _shard_key(out: Path, item: PlannedItem) -> str:
    if item.output is not None:
        return item.output.relative_to(out).as_posix()
    return item.source.rel.as_posix()


def _lookup(entries: dict[str, PromptEntry], source: Source, used: set[str]) -> PromptEntry | None:
    if not entries:
        return None
    for key in (source.rel.as_posix(), str(source.path), source.path.as_posix(), os.path.abspath(source.path),
                os.path.realpath(source.path), source.path.name):
        key = _norm_key(key)
        if key in entries:
            used.add(key)
            return entries[key]
    return None


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def output_complete(output: Path) -> bool:
    """An output counts as done only when the PSD and its sidecar are both there and both parse."""
    from .document import open_psd

    sidecar = sidecar_for(output)
    if not output.is_file() or not sidecar.is_file():
        return False
    try:
        if not isinstance(json.loads(sidecar.read_text(encoding="utf-8")), dict):
            return False
        open_psd(output, max_pixels=1 << 62)
    except Exception:  # unreadable, damaged, truncated: not done, so it is made again
        return False
    return True


# ---------------------------------------------------------------------------------------------- one file


def record(input: str, output: str | None, status: str, error: str | None, seconds: float, seed: int) -> dict[str, Any]:
    """One line of the results log (and of `--json`): the same six keys for every file."""
    return {"input": input, "output": output, "status": status, "error": error, "seconds": round(seconds, 3), "seed": seed}


class PriorSource:
    """The prior of one worker, loaded on first use and then reused for every file; a load failure is kept
    and raised again, so a broken model costs one attempt, not one per file."""

    def __init__(self, config: EditConfig, device: str):
        self.config, self.device = config, device
        self.prior: Any = None
        self.error: ModelError | None = None
        self.loads = 0

    def get(self) -> Any:
        if self.prior is None:
            if self.error is not None:
                raise self.error
            from .pipeline import EditRequest, load_prior_for

            request = EditRequest(Path("-"), "-", template=self.config.template, model=self.config.model,
                                  controlnet=self.config.controlnet, device=self.device, precision=self.config.precision,
                                  **self.config.speed())
            try:
                self.prior = load_prior_for(request)
            except ModelError as exc:
                self.error = exc
                raise
            self.loads += 1
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
    item: WorkItem, config: EditConfig, priors: PriorSource, on_notice: Callable[[str], None] | None = None
) -> tuple[dict[str, Any], bool]:
    """Run one file: (its record, whether the failure is fatal for the whole worker - the model can't load).

    Never raises for a bad file: the project's errors, and any other exception, become a failed record.
    On any failure or interruption, what this attempt wrote is removed, so nothing is left for that file.
    Interruptions (Interrupted, KeyboardInterrupt) are re-raised after that cleanup.
    """
    started = time.perf_counter()
    output = Path(item.output)
    before = {path: _identity(path) for path in (output, sidecar_for(output))}
    made: list[Path] = []

    def failed(message: str) -> dict[str, Any]:
        _undo(output, before, made)
        return record(item.input, item.output, "failed", message, time.perf_counter() - started, item.seed)

    try:
        try:
            made += _make_parents(output)
        except OSError as exc:
            return failed(f"{output.parent}: can't create the output folder ({exc.strerror or exc})"), False
        from .pipeline import EditRequest, run_edit

        request = EditRequest(
            input=Path(item.input), prompt=item.prompt, template=config.template, output=output, model=config.model,
            controlnet=config.controlnet, layer=config.layer, steps=config.steps, guidance=config.guidance,
            seed=item.seed, device=priors.device, precision=config.precision, variations=config.variations,
            max_pixels=config.max_pixels, **config.speed(),
        )
        run_edit(request, prior=_LazyPrior(priors), on_notice=on_notice)
    except LasagnaError as exc:
        if exc is priors.error:  # the model itself can't be loaded: every file would fail the same way
            return failed(f"model: {exc}"), True
        return failed(str(exc)), False
    except MemoryError:
        return failed("out of memory while editing this file"), False
    except Exception as exc:  # a bug, or a library failing on this file: isolated to it, reported in one line
        return failed(f"internal error: {reason(exc, with_type=True)}"), False
    except BaseException:
        _undo(output, before, made)
        raise
    return record(item.input, item.output, "ok", None, time.perf_counter() - started, item.seed), False


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _make_parents(output: Path) -> list[Path]:
    """Create the output's missing folders; returns them (deepest last) so a failure can take them back."""
    missing = []
    parent = output.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
    return missing


def _undo(output: Path, before: dict[Path, Any], made: Sequence[Path]) -> None:
    """Remove what this attempt wrote: changed outputs, our temporary files, and folders made for it."""
    for path, identity in before.items():
        if _identity(path) != identity and _identity(path) is not None:
            path.unlink(missing_ok=True)
    _remove_temporaries(output)
    for folder in made:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            break


def _remove_temporaries(output: Path) -> None:
    for path in (output, sidecar_for(output)):
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # atomic_write's naming
            tmp.unlink(missing_ok=True)


def discard_partial(output: Path) -> None:
    """After a worker was killed mid-file: its temporary files go, and a PSD without its sidecar (or the
    reverse) is incomplete, so it goes too; a complete pair stays (the file was finished)."""
    _remove_temporaries(output)
    sidecar = sidecar_for(output)
    if output.exists() != sidecar.exists() or (output.exists() and not output_complete(output)):
        output.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- the run


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


RecordCallback = Callable[[dict[str, Any]], None]
NoticeCallback = Callable[[str], None]


class _Run:
    """Bookkeeping shared by every way of running: records to the log and the caller, counts, stop flags."""

    def __init__(self, options: BatchOptions, on_record: RecordCallback | None, on_notice: NoticeCallback | None,
                 log: IO[str] | None):
        self.options, self.on_record, self.on_notice, self.log = options, on_record, on_notice, log
        self.summary = BatchSummary()
        self.stop = False

    def emit(self, rec: dict[str, Any]) -> None:
        status = rec["status"]
        setattr(self.summary, status, getattr(self.summary, status) + 1)
        if status == "failed":
            self.summary.failures.append((rec["input"], rec["error"]))
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
    from .templates import load_template

    started = time.perf_counter()
    load_template(options.edit.template)  # an unknown template is a usage error before anything else
    if options.prompt is None and options.prompts is None:
        raise UsageError("give --prompt TEXT (for every file) or --prompts FILE (CSV/JSONL: input -> prompt)")
    if options.prompt is not None and not options.prompt.strip():
        raise UsageError("--prompt is empty; say what the edit should do, e.g. 'light from the left'")
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
    notices: list[str] = []
    items = plan(options, notices=notices)
    if options.ray is None:
        _check_devices(devices, options.edit.precision)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: can't create the output folder ({exc.strerror or exc})") from None
    log = _open_log(options.log)
    run = _Run(options, on_record, on_notice, log)
    run.summary.total = len(items)
    if not items:
        notices.append(f"nothing to do: no inputs in {options.inputs}" + (" for this shard" if options.shard else ""))
    for text in notices:
        run.notice(text)
    try:
        with _stop_signals() as reinstall:
            if on_start is not None:
                on_start(len(items))
            todo = _triage(run, items)
            if todo and not run.stop:
                if options.ray is not None:
                    from .batch_ray import run_on_ray

                    run_on_ray(run, todo, options.edit, address=options.ray, cpus_per_task=options.ray_cpus,
                               reinstall_signals=reinstall)
                elif len(devices) > 1:
                    _run_pool(run, todo, options.edit, devices)
                else:
                    _run_here(run, todo, options.edit, devices[0])
    except Interrupted as exc:
        run.summary.signal = exc.signum
    finally:
        if log is not None:
            log.close()
    summary = run.summary
    summary.not_attempted = summary.total - summary.ok - summary.skipped - summary.failed
    summary.seconds = time.perf_counter() - started
    return summary


def _check_devices(devices: Sequence[str], precision: str) -> None:
    from .runtime import resolve_device, resolve_dtype

    for name in devices:
        resolve_dtype(precision, resolve_device(name))


def _open_log(path: Path | None) -> IO[str] | None:
    if path is None:
        return None
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"--log {path}: can't write it ({exc.strerror or exc})") from None


def _triage(run: _Run, items: Sequence[PlannedItem]) -> list[WorkItem]:
    """Report what needs no work (refused, or already complete) and return the rest as work items."""
    todo = []
    for index, item in enumerate(items):
        if run.stop:
            break
        started = time.perf_counter()
        output = None if item.output is None else str(item.output)
        if item.error is not None:
            run.emit(record(str(item.source.path), output, "failed", item.error, time.perf_counter() - started, item.seed))
        elif run.options.skip_existing and item.output is not None and output_complete(item.output):
            run.emit(record(str(item.source.path), output, "skipped", None, time.perf_counter() - started, item.seed))
        else:
            assert item.output is not None and item.prompt is not None
            todo.append(WorkItem(index, str(item.source.path), str(item.output), item.prompt, item.seed))
    return todo


def _run_here(run: _Run, todo: Sequence[WorkItem], config: EditConfig, device: str) -> None:
    """One worker, this process: the model is loaded at the first file that needs it."""
    from .runtime import resolve_device

    priors = PriorSource(config, device)
    run.summary.workers = [str(resolve_device(device))]
    try:
        for item in todo:
            if run.stop:
                break
            rec, fatal = process(item, config, priors, on_notice=run.notice)
            run.emit(rec)
            if fatal:
                run.fatal()
    finally:
        run.summary.model_loads += priors.loads


# ---------------------------------------------------------------------------------------------- signals


@contextmanager
def _stop_signals() -> Iterator[Callable[[], None]]:
    """While running, SIGINT and SIGTERM raise Interrupted in the main thread (once; repeats are ignored while
    the run winds down). Yields a function that installs the handlers again (Ray's init replaces SIGTERM's)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    handler = _interrupt_handler()
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in wanted}

    def install() -> None:
        for s in wanted:
            signal.signal(s, handler)

    install()
    try:
        yield install
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _interrupt_handler() -> Callable[[int, Any], None]:
    """A signal handler that raises Interrupted once (repeats are ignored while the run winds down).

    Python runs handlers between any two bytecodes, finalizers included; an exception raised inside a
    `__del__` is printed as a traceback and swallowed, and the stop would be lost. So when the signal lands
    in a finalizer, it is sent again a moment later instead of raised there.
    """
    fired: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if fired:
            return
        if _in_finalizer(frame):
            threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()
            return
        fired.append(signum)
        raise Interrupted(signum)

    return handler


def _in_finalizer(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


# ---------------------------------------------------------------------------------------------- worker processes


def _run_pool(run: _Run, todo: Sequence[WorkItem], config: EditConfig, devices: Sequence[str]) -> None:
    """One worker process per device entry, each loading the model once; files handed out from one queue."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA or torch threads
    tasks: Any = ctx.Queue()
    results: Any = ctx.Queue()
    stop = ctx.Event()
    threads = max(1, (os.cpu_count() or 1) // len(devices))
    by_index = {item.index: item for item in todo}
    for item in todo:
        tasks.put(item)
    procs: dict[int, Any] = {}
    current: dict[int, int | None] = {}
    restarts = {slot: 0 for slot in range(len(devices))}
    done: set[int] = set()
    run.summary.workers = list(devices)

    def start(slot: int) -> None:
        tasks.put(None)  # one end-of-work marker per worker started
        proc = ctx.Process(target=_pool_worker, args=(slot, devices[slot], config, threads, tasks, results, stop),
                           name=f"lasagna-batch-{slot}", daemon=True)
        proc.start()
        procs[slot], current[slot] = proc, None

    def handle(message: tuple[Any, ...]) -> None:
        kind, slot = message[0], message[1]
        if kind == "start":
            current[slot] = message[2]
        elif kind == "notice":
            run.notice(message[3])
        elif kind == "loaded":
            run.summary.model_loads += 1
        elif kind == "done":
            current[slot] = None
            done.add(message[2])
            run.emit(message[3])
            if message[4]:
                run.fatal()
            if run.stop:
                stop.set()
        elif kind == "interrupted":  # a signal reached the worker but not us (e.g. `kill -INT <worker>`)
            current[slot] = None
            raise Interrupted(message[2])
        elif kind == "exit":
            procs.pop(slot).join()

    def drain(timeout: float) -> bool:
        try:
            handle(results.get(timeout=timeout))
            return True
        except queue.Empty:
            return False

    try:
        for slot in range(len(devices)):
            start(slot)
        while procs:
            if drain(0.5):
                continue
            for slot, proc in list(procs.items()):
                if proc.is_alive() or slot not in procs:
                    continue
                while drain(0.2):  # its last messages may still be on the way
                    pass
                if slot not in procs:
                    continue
                procs.pop(slot).join()
                index = current.get(slot)
                if index is not None:
                    item = by_index[index]
                    discard_partial(Path(item.output))
                    run.emit(record(item.input, item.output, "failed",
                                    f"the worker on {devices[slot]} died while editing this file (exit code {proc.exitcode})",
                                    0.0, item.seed))
                    done.add(index)
                if not run.stop and len(done) < len(todo) and restarts[slot] < MAX_WORKER_RESTARTS:
                    restarts[slot] += 1
                    start(slot)
    except Interrupted:
        stop.set()
        _wind_down(procs, handle, results)
        for slot, index in current.items():  # anything a killed worker left behind
            if index is not None and index not in done:
                discard_partial(Path(by_index[index].output))
        raise
    finally:
        stop.set()
        for proc in procs.values():
            proc.kill()
            proc.join()
        tasks.cancel_join_thread()
        results.cancel_join_thread()


def _wind_down(procs: dict[int, Any], handle: Callable[[tuple[Any, ...]], None], results: Any, timeout: float = 20.0) -> None:
    """Ask every worker to abandon its file (SIGTERM), keep the records of files that finished meanwhile."""
    for proc in procs.values():
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while procs and time.monotonic() < deadline:
        try:
            handle(results.get(timeout=0.2))
        except queue.Empty:
            for slot, proc in list(procs.items()):
                if not proc.is_alive():
                    procs.pop(slot).join()
        except Interrupted:
            continue  # a worker reporting the same stop


def _pool_worker(slot: int, device: str, config: EditConfig, threads: int, tasks: Any, results: Any, stop: Any) -> None:
    """A worker process: load the prior once (at its first file), then edit files until told to stop."""
    handler = _interrupt_handler()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        import torch

        torch.set_num_threads(threads)
        priors = PriorSource(config, device)
        while not stop.is_set():
            item = tasks.get()
            if item is None or stop.is_set():
                break
            results.put(("start", slot, item.index))
            loads = priors.loads
            rec, fatal = process(item, config, priors, on_notice=lambda text, i=item.index: results.put(("notice", slot, i, text)))
            if priors.loads > loads:
                results.put(("loaded", slot))
            results.put(("done", slot, item.index, rec, fatal))
            if fatal:
                break
    except Interrupted as exc:
        results.put(("interrupted", slot, exc.signum))
    finally:
        results.put(("exit", slot))
        results.close()
        results.join_thread()


# ---------------------------------------------------------------------------------------------- Ray tasks

_PRIORS: dict[tuple[EditConfig, str], PriorSource] = {}
"""Priors of this process, for Ray tasks: a Ray worker process runs many tasks and loads the model once."""


def ray_task(item: WorkItem, config: EditConfig, device: str, threads: int) -> tuple[dict[str, Any], bool, int, list[str]]:
    """The body of one Ray task: (record, fatal, model loads it caused, notices)."""
    import torch

    torch.set_num_threads(threads)
    priors = _PRIORS.setdefault((config, device), PriorSource(config, device))
    loads = priors.loads
    notices: list[str] = []
    rec, fatal = process(item, config, priors, on_notice=notices.append)
    return rec, fatal, priors.loads - loads, notices
