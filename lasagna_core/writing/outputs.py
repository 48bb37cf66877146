"""Where results go: the one place for output names, the sidecar rule, the checks made before any work, and the
choice of writer by the output's suffix.

A command (or the batch runner) asks for a target first - `document_output` for an edit's layered result,
`image_output` for a flat picture - which refuses in one line everything that would fail later: an unknown
or mismatched suffix, a folder that is missing or can't be written, a name too long, an output that is one
of the inputs, a document that can't hold the new layers. Writing the target afterwards is atomic (a result
is its document and its sidecar, both or neither), and any OS error on the way is one OutputError.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from ..errors import OutputError, UsageError
from .atomic import WrittenUnsynced, name_bytes, name_limit, probe, remove_stale_temporaries, write_files
from .images import IMAGE_FORMATS, PNG, ImageFormat

if TYPE_CHECKING:
    import numpy as np

    from ..document import Document
    from ..layers import PixelNode

SIDECAR_SUFFIX = ".json"
"""`OUT.psd` -> `OUT.psd.json`: the sidecar that records how a result was made."""

RESULT_SUFFIX = ".psd"
"""The suffix of a result when nothing says otherwise (batch outputs, and edits of anything but a PSB)."""


class DocumentFormat(Protocol):
    """A format that can hold an edit's result: the source's layers plus the new ones."""

    name: str
    suffixes: tuple[str, ...]

    def check(self, doc: Document, channels: Sequence[int], target: Path) -> None:
        """Raise a LasagnaError, before any work, if `doc` with new layers of `channels` colour planes each
        can't be written to `target` in this format."""

    def default_suffix(self, doc: Document) -> str: ...

    def write(self, f: IO[bytes], doc: Document, new_layers: Sequence[PixelNode]) -> None: ...


def _document_formats() -> tuple[DocumentFormat, ...]:
    from .psd import PsdFormat  # psd-tools and numpy only when a document is written

    return (PsdFormat(),)


def sidecar_for(output: Path) -> Path:
    return output.with_name(output.name + SIDECAR_SUFFIX)


def result_file(folder: Path, stem: str) -> Path:
    """`folder/stem.psd`: where the batch runner puts the result of an input named `stem.*`."""
    return folder / (stem + RESULT_SUFFIX)


def default_output(doc: Document) -> Path:
    """`photo.png` -> `photo.lasagna.psd` beside it (`.psb` for a PSB): never the input itself."""
    suffix = _document_formats()[0].default_suffix(doc)
    return doc.path.with_name(f"{doc.path.stem}.lasagna{suffix}")


@dataclass(frozen=True)
class DocumentTarget:
    """A checked place for an edit's result."""

    path: Path
    format: DocumentFormat
    sidecar: Path


@dataclass(frozen=True)
class ImageTarget:
    """A checked place for a flat picture."""

    path: Path
    format: ImageFormat


def document_output(
    path: Path, doc: Document, channels: Sequence[int], *, overwrite_input: bool = False, other_inputs: Sequence[Path] = ()
) -> DocumentTarget:
    """The target for `doc` with new layers of `channels` colour planes each, checked before any work."""
    _check_writable(path, companions=(SIDECAR_SUFFIX,))
    _refuse_inputs(path, [doc.path, *other_inputs], overwrite_input=overwrite_input, companions=(SIDECAR_SUFFIX,))
    fmt = _by_suffix(path, _document_formats(), "an edit's result", "for a flat picture, run lasagna flatten on the result")
    fmt.check(doc, channels, path)
    return DocumentTarget(path, fmt, sidecar_for(path))


def image_output(path: Path, *, inputs: Sequence[Path]) -> ImageTarget:
    """The target for a flat picture, checked before any work; it never replaces one of `inputs`."""
    _check_writable(path, companions=())
    _refuse_inputs(path, inputs, overwrite_input=False, companions=())
    fmt = _by_suffix(path, IMAGE_FORMATS, "a flat picture", "")
    return ImageTarget(path, fmt)


def write_document(target: DocumentTarget, doc: Document, new_layers: Sequence[PixelNode], record: dict[str, Any] | None) -> Path:
    """Write the result and (with a `record`) its sidecar: both or neither, the old pair intact on failure."""
    companions = [] if record is None else [(SIDECAR_SUFFIX, json.dumps(record, indent=2, sort_keys=True).encode() + b"\n")]
    with _write_errors(target.path):
        write_files(target.path, lambda f: target.format.write(f, doc, new_layers), companions)
    return target.path


def write_image(target: ImageTarget, color: np.ndarray, alpha: np.ndarray | None, depth: int = 8) -> list[str]:
    """Write a flat picture; returns a notice when the format holds fewer bits than the picture has."""
    with _write_errors(target.path):
        write_files(target.path, lambda f: target.format.write(f, color, alpha, depth))
    if depth > target.format.max_depth:
        return [f"{target.path.name}: {target.format.name} holds {target.format.max_depth} bits per channel, the "
                f"source has {depth}; write a .png to keep them"]
    return []


def save_psd(
    doc: Document, new_layers: Sequence[PixelNode], output: str | os.PathLike[str], *,
    record: dict[str, Any] | None = None, overwrite_input: bool = False,
) -> Path:
    """Check and write in one call, for callers with no long work in between (tests, benchmarks)."""
    channels = [node.color.shape[0] for node in new_layers]
    target = document_output(Path(output), doc, channels, overwrite_input=overwrite_input)
    return write_document(target, doc, new_layers, record)


def save_png(color: np.ndarray, alpha: np.ndarray | None, output: str | os.PathLike[str]) -> Path:
    """Write float32 [3|1, H, W] (+ alpha) as an 8-bit PNG, atomically: previews and evaluation pictures,
    whose folder was checked before the work."""
    output = Path(output)
    with _write_errors(output):
        write_files(output, lambda f: PNG.write(f, color, alpha, 8))
    return output


def preview_folder(folder: Path) -> Path:
    """Create the `--preview` folder and prove it writable, before any work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: can't create the preview folder ({exc.strerror or exc})") from None
    if not folder.is_dir():
        raise OutputError(f"{folder}: --preview must name a folder, and this is a file")
    with _write_errors(folder, "can't write previews there"):
        probe(folder / "v1-step00001.png")
    return folder


def result_complete(output: Path) -> bool:
    """A result counts as done only when the document and its sidecar are both there and both parse."""
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


def discard_incomplete(output: Path) -> None:
    """After a writer was killed: finish or undo its commit (`remove_stale_temporaries`), then remove a
    document without its sidecar (or the reverse), which no Lasagna writer leaves. A complete pair stays."""
    remove_stale_temporaries(output.parent)
    sidecar = sidecar_for(output)
    if output.exists() != sidecar.exists() or (output.exists() and not result_complete(output)):
        output.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)


def _by_suffix(path: Path, formats: Sequence[Any], what: str, hint: str) -> Any:
    for fmt in formats:
        if path.suffix.lower() in fmt.suffixes:
            return fmt
    known = ", ".join(suffix for fmt in formats for suffix in fmt.suffixes)
    raise UsageError(f"{path.name}: can't write {what} as '{path.suffix or 'no suffix'}'; name it {known}" + (f" ({hint})" if hint else ""))


def _refuse_inputs(path: Path, inputs: Sequence[Path], *, overwrite_input: bool, companions: Sequence[str]) -> None:
    """Every command that writes refuses to replace what it reads (the document only with --overwrite-input)."""
    for source in inputs:
        for written in (path, *(path.with_name(path.name + suffix) for suffix in companions)):
            if _same_file(written, source) and (written != path or not overwrite_input):
                allowed = " or pass --overwrite-input" if written == path and companions else ""
                raise OutputError(f"{written}: refusing to overwrite the input; choose another -o{allowed}")


def _check_writable(path: Path, *, companions: Sequence[str]) -> None:
    """Everything about the place that would make the write fail, found now by trying: the probe writes a
    temporary exactly where the real one will go. Stale temporaries of dead writers are cleaned up here."""
    if not path.parent.is_dir():
        raise OutputError(f"{path.parent}: output folder does not exist")
    limit = name_limit(path.parent)
    for name in (path.name, *(path.name + suffix for suffix in companions)):
        if name_bytes(name) > limit:
            raise OutputError(f"{name[:40]}...: name too long ({name_bytes(name)} bytes; the file system takes {limit}); choose a shorter -o")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; name the file to write, e.g. {path / 'out'}{path.suffix or RESULT_SUFFIX}")
    remove_stale_temporaries(path.parent)
    with _write_errors(path.parent, "can't write there"):
        probe(path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def _write_errors(path: Path, what: str = "can't be written, nothing was changed") -> Iterator[None]:
    """An OS error (full disk, read-only file system, permissions) as one line; a failed write has already
    put everything back as it was."""
    try:
        yield
    except WrittenUnsynced as exc:
        raise OutputError(f"{path}: written, but its folder could not be synced to disk ({exc.strerror or exc}); "
                          "check the disk") from None
    except OSError as exc:
        raise OutputError(f"{path}: {what} ({exc.strerror or exc})") from None
