"""Output naming, completeness and clean-up: where a file's result goes, whether it is done, and how an
abandoned attempt is taken back.

Kept together and apart from the runners: it is the one place batch names and cleans its outputs, so a
writer shared by every command can take its place here alone.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import OutputError

FileIdentity = tuple[int, int, int] | None
"""(inode, mtime in ns, size) of a file, or None when there is none."""


def output_for(out: Path, rel: Path) -> Path:
    """`OUT/<rel's folders>/<rel's stem>.psd`; refuses a relative path that would climb out of OUT."""
    parts = rel.parts
    if not parts or rel.is_absolute() or any(part in ("..", ".", "") for part in parts):
        raise OutputError(f"{rel}: its output would land outside the output folder")
    return out.joinpath(*parts[:-1], Path(parts[-1]).stem + ".psd")


def sidecar_for(output: Path) -> Path:
    """A result is its PSD and this JSON record beside it (`a.psd` -> `a.psd.json`)."""
    return output.with_name(output.name + ".json")


def output_complete(output: Path) -> bool:
    """An output counts as done only when the PSD and its sidecar are both there and both parse."""
    from ..document import open_psd

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


def file_identity(path: Path) -> FileIdentity:
    """What tells a file this attempt wrote from the one that was there before (None: no file)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def make_parents(output: Path) -> list[Path]:
    """Create the output's missing folders; returns them (deepest last) so a failure can take them back."""
    missing = []
    parent = output.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
    return missing


def undo(output: Path, before: dict[Path, FileIdentity], made: Sequence[Path]) -> None:
    """Remove what this attempt wrote: changed outputs, our temporary files, and folders made for it."""
    for path, identity in before.items():
        if file_identity(path) != identity and file_identity(path) is not None:
            path.unlink(missing_ok=True)
    remove_temporaries(output)
    for folder in made:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            break


def remove_temporaries(output: Path) -> None:
    """The atomic writer's temporary files of this output and its sidecar (`.NAME.*.tmp`)."""
    for path in (output, sidecar_for(output)):
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # atomic_write's naming
            tmp.unlink(missing_ok=True)


def discard_partial(output: Path) -> None:
    """After a worker was killed mid-file: its temporary files go, and a PSD without its sidecar (or the
    reverse) is incomplete, so it goes too; a complete pair stays (the file was finished)."""
    remove_temporaries(output)
    sidecar = sidecar_for(output)
    if output.exists() != sidecar.exists() or (output.exists() and not output_complete(output)):
        output.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
