"""Batch's own part of output handling: IN's relative paths mirrored into OUT, and taking back one attempt.

Everything else about results - their name's suffix, the sidecar rule, "is this result complete", finishing
or undoing what a killed writer left - is the writer's (`lasagna_core.writing`), shared with every command.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import OutputError
from ..writing import result_complete, result_file, sidecar_for

FileIdentity = tuple[int, int, int] | None
"""(inode, mtime in ns, size) of a file, or None when there is none."""


def output_for(out: Path, rel: Path) -> Path:
    """`OUT/<rel's folders>/<rel's stem>.psd`; refuses a relative path that would climb out of OUT."""
    parts = rel.parts
    if not parts or rel.is_absolute() or any(part in ("..", ".", "") for part in parts):
        raise OutputError(f"{rel}: its output would land outside the output folder")
    return result_file(out.joinpath(*parts[:-1]), Path(parts[-1]).stem)


def file_identity(path: Path) -> FileIdentity:
    """What tells a file this attempt wrote from the one that was there before (None: no file)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def result_identities(output: Path) -> tuple[FileIdentity, FileIdentity]:
    """The identities of a result's document and sidecar, taken before an attempt to compare after it."""
    return file_identity(output), file_identity(sidecar_for(output))


def committed(output: Path, before: tuple[FileIdentity, FileIdentity]) -> bool:
    """Whether this attempt put a new complete result in place (both files replaced since `before`).

    The writer commits a pair whole or not at all, with stop signals held until both renames are done; a
    signal or error that surfaces after that finds the new pair complete, and it stays: deleting it would
    lose the old pair as well as the new one."""
    now = result_identities(output)
    return all(new is not None and new != old for new, old in zip(now, before)) and result_complete(output)


def make_parents(output: Path) -> list[Path]:
    """Create the output's missing folders; returns them (deepest first) so a failure can take them back."""
    missing = []
    parent = output.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
    return missing


def remove_folders(made: Sequence[Path]) -> None:
    """Take back the folders an attempt made (`make_parents`' list, deepest first), as far as they are empty."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            break
