"""SIGINT and SIGTERM during a batch: raised as `Interrupted` in the main thread, once, so the run stops cleanly.

Used by the run itself and by each worker process; the runners catch `Interrupted`, take back the file in
progress and keep the records so far.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from .types import Interrupted

SignalHandler = Callable[[int, FrameType | None], None]


@contextmanager
def stop_signals() -> Iterator[Callable[[], None]]:
    """While running, SIGINT and SIGTERM raise Interrupted in the main thread (once; repeats are ignored while
    the run winds down). Yields a function that installs the handlers again (Ray's init replaces SIGTERM's)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    handler = interrupt_handler()
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in wanted}

    def install() -> None:
        for s in wanted:
            signal.signal(s, handler)

    install()
    try:
        yield install
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def interrupt_handler() -> SignalHandler:
    """A signal handler that raises Interrupted once (repeats are ignored while the run winds down).

    Python runs handlers between any two bytecodes, finalizers included; an exception raised inside a
    `__del__` is printed as a traceback and swallowed, and the stop would be lost. So when the signal lands
    in a finalizer, it is sent again a moment later instead of raised there.
    """
    fired: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if fired:
            return
        if _in_finalizer(frame):
            threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()
            return
        fired.append(signum)
        raise Interrupted(signum)

    return handler


def _in_finalizer(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False
