"""Prompts: the `--prompts FILE` mapping (CSV or JSONL: input -> prompt, seed), and whether the prior can
read each prompt at all, asked before the first file rather than failed once per file."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .types import EditConfig, PromptEntry


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
        key = prompt_key(key)
        if not key:
            raise UsageError(f"--prompts {path}:{line}: the input is empty")
        if key in entries:
            raise UsageError(f"--prompts {path}:{line}: '{key}' is listed twice")
        entries[key] = PromptEntry(prompt, seed)
    return entries


def prompt_key(key: str) -> str:
    """How a key of the prompts file and an input's path are compared: trimmed, forward slashes, no leading ./"""
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


def check_prompts(edit: EditConfig, prompt: str | None, entries: dict[str, PromptEntry], path: Path | None) -> None:
    """Refuse (UsageError, one line) the first of `--prompt` and the `--prompts` entries the prior can't read."""
    from ..edit_config import check_prompt
    from ..templates import load_template

    spec = load_template(edit.template)
    asked = [("--prompt", prompt)] if prompt is not None else []
    asked += [(f"--prompts {path}, {key}", entry.prompt) for key, entry in entries.items()]
    for where, text in asked:
        try:
            check_prompt(text, spec, edit.prior.model)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
