"""A real `lasagna` process and the processes it starts, for the tests that stop one with a signal."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

LASAGNA = str(Path(sys.executable).with_name("lasagna"))


def interruptible() -> None:
    """SIGINT as a terminal's Ctrl-C finds it: a test run started in the background by a non-interactive
    shell inherits SIGINT ignored, and Python then keeps ignoring it, so the SIGINT cases would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_until_ended(pids: list[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(running(pid) for pid in pids):
        assert time.monotonic() < deadline, "a worker went on after its run was stopped"
        time.sleep(0.1)
