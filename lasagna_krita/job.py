"""One Lasagna run on an open Krita document: prepare (export, command line), run, finish (import the layers).

The docker runs the command with QProcess so that Krita stays responsive; `run_on_document` is the same
job run to the end in the calling thread, for scripts. Both read the `--progress jsonl` stream with
`progress.LineReader` and turn a failed run into `LasagnaRunError` carrying the CLI's one-line message
and exit code. Needs Krita.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

from krita import Krita

from .command import EditOptions, build_command, find_lasagna
from .document_io import add_layers, check_document, export_png, group_name
from .install import installed_executable
from .progress import Event, LineReader, outcome_message, result_layers

SETTINGS_GROUP = "lasagna_krita"
TERMINATED = 143  # lasagna's exit code after SIGTERM (the docker's Cancel)


class LasagnaRunError(RuntimeError):
    """A run that ended without layers: `str()` is the CLI's one-line message, `exit_code` its exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def configured_executable() -> str:
    """The `lasagna` path the user set in the docker ('' when none: then PATH decides)."""
    return Krita.instance().readSetting(SETTINGS_GROUP, "executable", "")


@dataclass
class Job:
    document: Any
    options: EditOptions
    base_layer: Optional[Any]
    folder: Path
    argv: List[str]

    @classmethod
    def prepare(cls, document: Any, options: EditOptions, *, base_layer: Optional[Any] = None,
                hints_layer: Optional[Any] = None, executable: Optional[str] = None) -> "Job":
        """Check the document, find `lasagna`, export the base (and hints) to a temporary folder."""
        check_document(document, base_layer)
        program = find_lasagna(executable or configured_executable(), installed_executable())
        folder = Path(tempfile.mkdtemp(prefix="lasagna-krita-"))
        try:
            base = folder / "base.png"
            export_png(document, base_layer, base)
            hints = None
            if hints_layer is not None:
                hints = folder / "hints.png"
                export_png(document, hints_layer, hints)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return cls(document, options, base_layer, folder, build_command(program, options, base, folder / "result.psd", hints))

    def finish(self, reader: LineReader, exit_code: int) -> List[Any]:
        """The new layer nodes of a finished run; LasagnaRunError for a failed one. Removes the temporaries."""
        try:
            final = reader.final
            if exit_code != 0 or final is None or final.kind != "result":
                raise LasagnaRunError(outcome_message(reader, exit_code), exit_code or 1)
            return add_layers(self.document, Path(final.result["output"]), result_layers(final.result),
                              self.base_layer, group_name(self.options.prompt, self.options.template))
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def run_on_document(document: Any, template: str, prompt: str, *, steps: Optional[int] = None, seed: int = 0,
                    model: Optional[str] = None, base_layer: Optional[Any] = None, hints_layer: Optional[Any] = None,
                    executable: Optional[str] = None, on_progress: Optional[Callable[[Event], None]] = None) -> List[Any]:
    """Run `lasagna` with `template` and `prompt` on `document` (or on `base_layer` of it) and add the new layers
    to it; returns them (Krita nodes), bottom to top. Blocks until Lasagna is done; `on_progress` gets each
    Event of its stream. Raises LasagnaRunError with the CLI's message when Lasagna fails."""
    job = Job.prepare(document, EditOptions(template, prompt, steps, seed, model), base_layer=base_layer,
                      hints_layer=hints_layer, executable=executable)
    reader = LineReader()
    try:
        process = subprocess.Popen(job.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        job.cleanup()
        raise LasagnaRunError(f"can't run {job.argv[0]}: {exc.strerror or exc}", 1) from None
    assert process.stderr is not None
    try:
        for line in process.stderr:
            for event in reader.feed(line):
                if on_progress is not None:
                    on_progress(event)
    except BaseException:  # a callback that raised, Ctrl-C in Krita's console: stop Lasagna as Cancel does
        process.terminate()
        process.wait()
        job.cleanup()
        raise
    reader.close()
    return job.finish(reader, process.wait())
