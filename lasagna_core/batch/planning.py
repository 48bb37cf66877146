"""Planning: map every input to its output, refuse what must not be written, attach prompts, keep one shard.

Pure apart from reading the prompts file and resolving paths; nothing is created here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import OutputError, UsageError
from .inputs import discover
from .outputs import output_for
from .prompts import check_prompts, prompt_key, read_prompts
from .types import BatchOptions, PlannedItem, PromptEntry, Source


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


def plan(options: BatchOptions, sources: Sequence[Source] | None = None, notices: list[str] | None = None) -> list[PlannedItem]:
    """Map inputs to outputs, refuse what must not be written, keep this job's shard and attach prompts.

    Pure apart from reading the prompts file and resolving paths; nothing is created. A prompt the prior
can't read is a UsageError here, before the first file. Sharding is by the
    output path, so inputs that would collide on one output always land in the same shard.
    """
    out = Path(options.out)
    if sources is None:
        sources = discover(options.inputs, stdin_paths=options.stdin_paths, exclude=out)
    entries = read_prompts(options.prompts) if options.prompts is not None else {}
    check_prompts(options.edit, options.prompt, entries, options.prompts)
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
        key = prompt_key(key)
        if key in entries:
            used.add(key)
            return entries[key]
    return None


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
