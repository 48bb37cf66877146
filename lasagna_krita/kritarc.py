"""One entry of Krita's settings file (kritarc, KConfig's INI format) set and taken back, every other byte kept.

Krita enables a Python plug-in when its `[python]` group says `enable_<module>=true`. Install sets that
entry; uninstall puts back what was there: the old value, or no entry, no group and no file when install
made them. Lines are edited as text (configparser would reorder and re-case the user's file). Krita-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple


@dataclass(frozen=True)
class Change:
    """What `set_entry` did, so that `undo` can take exactly that back."""

    previous: Optional[str]  # the entry's old line, as it was written; None when there was no entry
    added_group: bool  # the group header was written by set_entry
    separated: bool  # and a blank line before it, to keep groups apart
    terminated: bool = False  # a newline was added to a last line that had none


def _lines(text: str) -> List[str]:
    return text.splitlines(keepends=True)


def _group_span(lines: List[str], group: str) -> Optional[Tuple[int, int]]:
    """(header index, end index) of `[group]`: its entries are lines header+1 .. end-1."""
    header = f"[{group}]"
    for index, line in enumerate(lines):
        if line.strip() == header:
            end = index + 1
            while end < len(lines) and not lines[end].lstrip().startswith("["):
                end += 1
            return index, end
    return None


def _entry_index(lines: List[str], span: Tuple[int, int], key: str) -> Optional[int]:
    for index in range(span[0] + 1, span[1]):
        name, sep, _ = lines[index].partition("=")
        if sep and name.strip() == key:
            return index
    return None


def read_entry(text: str, group: str, key: str) -> Optional[str]:
    lines = _lines(text)
    span = _group_span(lines, group)
    index = None if span is None else _entry_index(lines, span, key)
    return None if index is None else lines[index].partition("=")[2].strip()


def set_entry(text: str, group: str, key: str, value: str) -> Tuple[str, Change]:
    """`text` with `key=value` in `[group]`, and what changed."""
    lines = _lines(text)
    terminated = bool(lines) and not lines[-1].endswith("\n")
    if terminated:
        lines[-1] += "\n"
    entry = f"{key}={value}\n"
    span = _group_span(lines, group)
    if span is None:
        separated = bool(lines) and lines[-1].strip() != ""
        lines += (["\n"] if separated else []) + [f"[{group}]\n", entry]
        return "".join(lines), Change(None, added_group=True, separated=separated, terminated=terminated)
    index = _entry_index(lines, span, key)
    if index is None:
        end = span[1]
        while end > span[0] + 1 and lines[end - 1].strip() == "":  # before the blank lines closing the group
            end -= 1
        lines.insert(end, entry)
        return "".join(lines), Change(None, added_group=False, separated=False, terminated=terminated)
    previous = lines[index]
    lines[index] = entry
    return "".join(lines), Change(previous, added_group=False, separated=False, terminated=terminated)


def undo(text: str, group: str, key: str, change: Change) -> str:
    """`text` with `set_entry`'s change taken back: the old value, or the entry (and a group left empty that
    set_entry added, with its separating blank line) removed."""
    lines = _lines(text)
    span = _group_span(lines, group)
    index = None if span is None else _entry_index(lines, span, key)
    if span is None or index is None:
        return text
    if change.previous is not None:
        lines[index] = change.previous
    else:
        del lines[index]
        header, end = span[0], span[1] - 1
        if change.added_group and all(line.strip() == "" for line in lines[header + 1:end]):
            start = header - 1 if change.separated and header > 0 and lines[header - 1].strip() == "" else header
            del lines[start:end]
    text = "".join(lines)
    return text[:-1] if change.terminated and text.endswith("\n") else text
