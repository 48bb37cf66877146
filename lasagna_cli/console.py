"""Where output goes: results scripts read on stdout, everything for people on stderr, colour only on a TTY."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from lasagna_core.errors import LasagnaError

stderr = Console(stderr=True, highlight=False, no_color="NO_COLOR" in os.environ)
stdout = Console(highlight=False, no_color="NO_COLOR" in os.environ)

T = TypeVar("T")


def print_json(data: Any) -> None:
    """One JSON document on stdout, no colour, no wrapping: for scripts."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def progress_bar(*, loss: bool = False, elapsed: bool = False) -> Iterator[Any]:
    """A transient rich Progress on stderr when it is a terminal (and TERM isn't dumb), else None: pipes and
    logs get no bar. Columns: the task's description, bar, done/total, optionally a `loss` field and the
    elapsed time, then the time remaining. rich is imported only here, when a bar is drawn."""
    if not stderr.is_terminal or os.environ.get("TERM") == "dumb":
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if loss:
        columns.append(TextColumn("loss {task.fields[loss]}"))
    if elapsed:
        columns.append(TimeElapsedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=stderr, transient=True) as bar:
        yield bar


def notice(text: str) -> None:
    from rich.markup import escape

    stderr.print(f"[yellow]note:[/] {escape(text)}", markup=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and a non-zero exit: the whole of what a user sees when their input is wrong. The
    message is escaped: '[generator]' in it is text, not rich markup."""
    from rich.markup import escape

    stderr.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True, emoji=False)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the project's errors, Ctrl-C and unexpected failures into one line and an exit code."""
    try:
        yield
    except LasagnaError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except typer.Exit:
        raise
    except Exception as exc:  # a bug, not the user's fault: still one line, the traceback on request
        if os.environ.get("LASAGNA_DEBUG"):
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (set LASAGNA_DEBUG=1 for the traceback)", 70)


def guarded(command: Callable[..., T]) -> Callable[..., T]:
    """Decorator form of user_errors for Typer commands."""
    import functools

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with user_errors():
            return command(*args, **kwargs)

    return wrapper
