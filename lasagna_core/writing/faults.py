"""Fault injection for the write path. TEST-ONLY: nothing in Lasagna sets these variables, and unset they cost
one environment lookup per stage.

The writer calls `checkpoint(stage)` at each step of a write (see `STAGES`), so that a test can stop it
exactly there in a real subprocess:

    LASAGNA_TEST_PAUSE_AT=renamed       pause at that stage (a comma-separated list pauses at each), after
                                        writing the stage's name to LASAGNA_TEST_PAUSE_FILE, so the test knows
                                        when to send its signal; the pause ends after
                                        LASAGNA_TEST_PAUSE_SECONDS (default 30) or as soon as a signal that
                                        the commit holds back arrives
    LASAGNA_TEST_FAIL_AT=renamed        raise OSError(ENOSPC) there, as a full disk would

The batch runner can use the same hook: the stages belong to the writer, not to the command.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable

STAGES = (
    "temp-written",  # the main file's temporary is complete and synced
    "sidecar-temp-written",  # the sidecar's temporary too (the last moment nothing is visible yet)
    "renamed",  # the main file has replaced its target; the sidecar is not in place yet
    "sidecar-renamed",  # both are in place (a result is complete from here on)
)


def checkpoint(stage: str, *, interrupted: Callable[[], bool] = lambda: False) -> None:
    """Pause or fail at `stage` when a test asked for it; `interrupted` says whether a held-back signal ended
    the pause early."""
    if stage in os.environ.get("LASAGNA_TEST_FAIL_AT", "").split(","):
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {stage})")
    if stage not in os.environ.get("LASAGNA_TEST_PAUSE_AT", "").split(","):
        return
    marker = os.environ.get("LASAGNA_TEST_PAUSE_FILE")
    if marker:
        with open(marker, "a", encoding="utf-8") as f:
            f.write(stage + "\n")
    deadline = time.monotonic() + float(os.environ.get("LASAGNA_TEST_PAUSE_SECONDS", "30"))
    while time.monotonic() < deadline and not interrupted():
        time.sleep(0.02)
