"""`--progress jsonl`: a long command's progress as one JSON object per line on stderr, for programs.

A Krita plug-in, a render-farm dashboard or a shell script reads these lines instead of parsing text meant
for people. The flag is declared once: `with_progress_option(command)` adds it to a Typer command (as
`with_prior_options` adds the prior flags), and while a command runs with `--progress jsonl`, `current()`
is the `JsonlProgress` that the command's own progress callbacks feed. Whatever else would reach stderr
(notes, "wrote ...", library warnings) becomes a `message` line, so every line parses, and the last line is
the result or the error, the latter with the same one-line message the CLI prints without the flag:

    {"event": "progress", "stage": "distill", "step": 3, "total": 150, "seconds": 1.2, "eta": 58.8}
    {"event": "message", "text": "note: photo.tif: read at 8 bits per channel"}
    {"event": "result", "exit_code": 0, "seconds": 12.3, "result": {"output": "photo.lasagna.psd", ...}}
    {"event": "error", "exit_code": 1, "seconds": 0.2, "message": "photo.psd: damaged or truncated"}

`seconds` counts from the command's start; `eta` (seconds left in the stage) is measured from the stage's
first line, null until a second one. Errors in the command line itself (an unknown option) are the
parser's, printed as text before any command runs.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from enum import Enum
from typing import Any, TextIO

import typer


class ProgressFormat(str, Enum):
    human = "human"
    jsonl = "jsonl"


PROGRESS_OPTION: Any = typer.Option(
    ProgressFormat.human, "--progress", case_sensitive=False,
    help="human: a bar on a terminal, plain lines elsewhere; jsonl: one JSON object per line on stderr "
         "(progress, messages, then the result or the error) for programs.",
)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class JsonlProgress:
    """Writes the stream's lines; one instance per command run. Thread-safe: a batch reports from threads."""

    def __init__(self, out: TextIO, clock: Callable[[], float] = time.monotonic):
        self._out, self._clock = out, clock
        self._started = clock()
        self._stages: dict[str, tuple[float, int]] = {}  # stage -> (time, step) of its first line
        self._lock = threading.Lock()
        self._result: Any = None
        self._failure: str | None = None

    def progress(self, stage: str, step: int, total: int | None, **fields: Any) -> None:
        now = self._clock()
        since, first = self._stages.setdefault(stage, (now, step))
        eta = None
        if total is not None and step > first:
            eta = round((now - since) / (step - first) * max(total - step, 0), 3)
        self._write({"event": "progress", "stage": stage, "step": step, "total": total,
                     "seconds": self._seconds(now), "eta": eta, **fields})

    def message(self, text: str) -> None:
        self._write({"event": "message", "text": text})

    def report(self, result: Any, failure: str | None = None) -> None:
        """What the final line carries; `failure` is its message when the command then exits non-zero."""
        self._result = result
        self._failure = failure if failure is not None else self._failure

    def failed(self, message: str) -> None:
        """The one-line error the CLI would print; the final line carries it."""
        self._failure = message

    def finish(self, exit_code: int) -> None:
        line: dict[str, Any] = {"event": "result" if exit_code == 0 else "error", "exit_code": exit_code,
                                "seconds": self._seconds(self._clock())}
        if exit_code:
            line["message"] = self._failure or f"exit code {exit_code}"
        if self._result is not None or exit_code == 0:
            line["result"] = self._result
        self._write(line)

    def _seconds(self, now: float) -> float:
        return round(now - self._started, 3)

    def _write(self, line: dict[str, Any]) -> None:
        text = json.dumps(line, ensure_ascii=False, default=str).encode("utf-8", "backslashreplace").decode("utf-8")
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()


class _MessageLines(io.TextIOBase):
    """sys.stderr while streaming: each line written becomes a `message` line (colour codes dropped)."""

    def __init__(self, stream: JsonlProgress):
        self._stream, self._pending = stream, ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def close(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = ""
        super().close()

    def _emit(self, line: str) -> None:
        line = _ANSI.sub("", line).rstrip()
        if line:
            self._stream.message(line)


_current: JsonlProgress | None = None


def current() -> JsonlProgress | None:
    """The stream of the command running with `--progress jsonl`, else None."""
    return _current


def report(result: Any, failure: str | None = None) -> None:
    """A command's result for the final line (nothing happens without `--progress jsonl`)."""
    if _current is not None:
        _current.report(result, failure)


@contextmanager
def streaming() -> Iterator[JsonlProgress]:
    """Run the body with stderr as a JSON-lines stream, ending with one result or error line."""
    global _current
    stream = JsonlProgress(sys.stderr)
    sink = _MessageLines(stream)
    _current = stream
    code = 70
    try:
        with redirect_stderr(sink):
            yield stream
        code = 0
    except typer.Exit as exc:  # also click's Exit, which typer.Exit is
        code = exc.exit_code
        raise
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        raise
    except BaseException as exc:  # a bug shown with LASAGNA_DEBUG=1: the traceback follows the final line
        stream.failed(f"internal error: {type(exc).__name__}: {exc}")
        raise
    finally:
        sink.close()
        _current = None
        stream.finish(code)


def with_progress_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` as a Typer command with `--progress human|jsonl`; jsonl runs it inside `streaming()`."""
    signature = inspect.signature(command, eval_str=True)
    added = inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=PROGRESS_OPTION, annotation=ProgressFormat)

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        if kwargs.pop("progress") is not ProgressFormat.jsonl:
            return command(**kwargs)
        with streaming():
            return command(**kwargs)

    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()] + [added]
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper
