"""One batch at a time in an output folder: a lock file in OUT naming its owner (pid, host).

Two runs into the same OUT would both redo every file and both report "ok" for outputs the other wrote.
The lock is an `flock` on `OUT/.lasagna-batch.lock`: the kernel drops it when its process ends however it
ends (SIGKILL included), so a lock left by a dead run is stale by construction and simply taken over;
the pid and host written in it are only for the message. Shards of one array job (`--shard K/N`, same N)
lock their own file and run side by side; a run whose files overlap a live one's (no shard, or another
N) is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputError

_NAME = re.compile(r"\.lasagna-batch(?:\.shard-(\d+)-of-(\d+))?\.lock")


def lock_name(shard: tuple[int, int] | None) -> str:
    return ".lasagna-batch.lock" if shard is None else f".lasagna-batch.shard-{shard[0]}-of-{shard[1]}.lock"


@contextmanager
def lock_out(out: Path, shard: tuple[int, int] | None) -> Iterator[None]:
    """Hold OUT for this run (and shard); OutputError, one line, while another live run holds it."""
    path = out / lock_name(shard)
    fd = _take(path)
    try:
        _refuse_overlapping(out, path, shard)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it: a run that opened it meanwhile sees it is gone
        os.close(fd)


def _take(path: Path) -> int:
    """An exclusive flock on `path`, retried when the file was removed or replaced between open and lock."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{path}: can't create the lock file of the output folder ({exc.strerror or exc})") from None
        try:
            if not _try_lock(fd, path):
                raise _held(path.parent, fd)
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)


def _refuse_overlapping(out: Path, own: Path, shard: tuple[int, int] | None) -> None:
    """Other lock files of OUT whose files may overlap ours: refused while held, removed when stale."""
    for other in sorted(out.glob(".lasagna-batch*.lock")):
        match = _NAME.fullmatch(other.name)
        if other == own or match is None:
            continue
        theirs = (int(match[1]), int(match[2])) if match[1] else None
        if not _overlap(shard, theirs):
            continue
        try:
            fd = os.open(other, os.O_RDWR)
        except OSError:
            continue  # gone meanwhile: its run ended
        try:
            if not _try_lock(fd, other):
                raise _held(out, fd)
            if _same_file(fd, other):
                other.unlink(missing_ok=True)  # stale: its run died without releasing it
        finally:
            os.close(fd)


def _overlap(a: tuple[int, int] | None, b: tuple[int, int] | None) -> bool:
    """Shards K/N and K'/N of one N are disjoint; anything else may share files."""
    return a is None or b is None or a[1] != b[1] or a[0] == b[0]


def _try_lock(fd: int, path: Path) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:  # a file system without locks
        raise OutputError(f"{path}: can't lock the output folder ({exc.strerror or exc})") from None
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _held(out: Path, fd: int) -> OutputError:
    return OutputError(f"{out}: another lasagna batch is writing into it ({_owner(fd)}); "
                       "wait for it to finish or stop it, or give another OUT")


def _owner(fd: int) -> str:
    """'pid 123 on host, since 14:02' from the lock file, or less when it can't be read."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        since = time.strftime("%H:%M", time.localtime(float(info["started"])))
        return f"pid {int(info['pid'])} on {info['host']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its lock file is being written"
