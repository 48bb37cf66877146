"""SIGINT and SIGTERM during a batch: the run stops cleanly, and the log says what is on disk.

A signal raises `Interrupted` at once only inside an interruptible section (a file's edit, waiting for
work): there, whatever the file had written is taken back. Anywhere else (recording a finished file,
handing out work) it is kept pending and raised at the runner's next `check()`, so a file whose PSD and
sidecar are on disk is always recorded before the run stops. Used by the run itself and by each worker.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from .types import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """The stop request of one process: the first SIGINT/SIGTERM is kept (repeats are ignored while the run
    winds down) and raised where it is safe. Not installed, it never raises: a caller outside the main
    thread, or a Ray task (Ray cancels with KeyboardInterrupt itself)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._open = 0

    def install(self) -> None:
        """Handle SIGINT and SIGTERM (again: Ray's init replaces SIGTERM's handler)."""
        for s in STOP_SIGNALS:
            signal.signal(s, self._handle)

    def check(self) -> None:
        """Raise Interrupted here if a stop is pending."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Inside, a signal raises Interrupted at once (the caller takes back what the section wrote)."""
        self.check()
        self._open += 1
        try:
            yield
        finally:
            self._open -= 1

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """Python runs handlers between any two bytecodes, finalizers included; an exception raised inside a
        `__del__` is printed as a traceback and swallowed, and the stop would be lost. So when the signal
        lands in a finalizer, it is sent again a moment later instead of raised there."""
        if self.signum is not None:
            return
        if self._open and _in_finalizer(frame):
            threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()
            return
        self.signum = signum
        if self._open:
            raise Interrupted(signum)


@contextmanager
def stop_signals() -> Iterator[StopSignals]:
    """SIGINT and SIGTERM handled by a StopSignals for the duration (in the main thread only; elsewhere the
    yielded one is not installed), the previous handlers restored afterwards."""
    stop = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    stop.install()
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _in_finalizer(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False
