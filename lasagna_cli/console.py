"""Where output goes: results scripts read on stdout, everything for people on stderr, colour only on a TTY.

Text is printed as given. Both consoles parse no rich markup and no emoji codes, so a file called
`photo [final].png`, a prompt like `[/] make it nice` or a message naming `lasagna[eval]` reaches the user
unchanged: text from users and from error messages is data, never markup. The tool's own styling is applied
as rich styles on the parts it names (`say(("error:", "bold red"), " ", message)`), never parsed out of text.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from lasagna_core.errors import LasagnaError

from . import progress_stream

_PLAIN: dict[str, Any] = {"markup": False, "emoji": False, "highlight": False, "no_color": "NO_COLOR" in os.environ}
stderr = Console(stderr=True, **_PLAIN)
stdout = Console(**_PLAIN)

T = TypeVar("T")
Part = str | tuple[str, str]
"""A piece of a line: plain text, or (plain text, rich style) for the tool's own styling."""


def styled(*parts: Part) -> Text:
    """One line from plain pieces and (text, style) pairs; no piece is ever read as markup."""
    return Text.assemble(*parts)


def say(*parts: Part) -> None:
    """A line for people, on stderr, unwrapped (a long path stays one line in logs)."""
    stderr.print(styled(*parts), soft_wrap=True)


def show(*parts: Part) -> None:
    """A line of a result, on stdout, unwrapped."""
    stdout.print(styled(*parts), soft_wrap=True)


def print_json(data: Any) -> None:
    """One JSON document on stdout, no colour, no wrapping: for scripts. A file name that isn't UTF-8 (its bytes
    held as surrogates) is written as JSON escapes, never as raw bytes that would make the document invalid."""
    text = json.dumps(data, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@contextmanager
def progress_bar(*, loss: bool = False, elapsed: bool = False) -> Iterator[Any]:
    """A transient rich Progress on stderr when it is a terminal (and TERM isn't dumb), else None: pipes,
    logs and `--progress jsonl` get no bar. Columns: the task's description, bar, done/total, optionally a `loss` field and the
    elapsed time, then the time remaining. rich is imported only here, when a bar is drawn."""
    if progress_stream.current() is not None or not stderr.is_terminal or os.environ.get("TERM") == "dumb":
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns: list[Any] = [TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn()]
    if loss:
        columns.append(TextColumn("loss {task.fields[loss]}", markup=False))
    if elapsed:
        columns.append(TimeElapsedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=stderr, transient=True) as bar:
        yield bar


def notice(text: str) -> None:
    say(("note:", "yellow"), " ", text)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and a non-zero exit: the whole of what a user sees when their input is wrong (with
    `--progress jsonl`, the message of the stream's final line instead)."""
    stream = progress_stream.current()
    if stream is None:
        say(("error:", "bold red"), " ", message)
    else:
        stream.failed(message)
    raise typer.Exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds like Ctrl-C: temporaries removed, one line."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the project's errors, Ctrl-C, SIGTERM and unexpected failures into one line and an exit code."""
    main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    previous = signal.signal(signal.SIGTERM, _terminate) if main else None
    try:
        yield
    except LasagnaError as exc:
        fail(str(exc), exc.exit_code)
    except Terminated:
        fail("terminated", 128 + signal.SIGTERM)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except typer.Exit:
        raise
    except Exception as exc:  # a bug, not the user's fault: still one line, the traceback on request
        if os.environ.get("LASAGNA_DEBUG"):
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (set LASAGNA_DEBUG=1 for the traceback)", 70)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def guarded(command: Callable[..., T]) -> Callable[..., T]:
    """Decorator form of user_errors for Typer commands."""
    import functools

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with user_errors():
            return command(*args, **kwargs)

    return wrapper
