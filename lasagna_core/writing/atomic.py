"""Files that appear whole or not at all, and a result with its sidecar: both or neither.

Every file is written to a temporary beside its target, synced, then renamed over it. A main file and its
companions (the PSD and its `.psd.json`) share one token in their temporaries' names and are renamed main
first. That order is the journal: a companion's temporary that outlives its main temporary means the main
file was committed, so the commit is finished (rolled forward) by whoever finds it; any other leftover is
rolled back. While the renames run, SIGINT and SIGTERM are held back and delivered after them; a SIGKILL
there leaves a state the next writer into that folder completes (`remove_stale_temporaries`).

Temporary names say whose they are: `.NAME.HASH.lasagna-HOST-PID-TOKEN-ROLE.tmp`, where HASH is the
target's name hashed (NAME is cut to keep the whole within the file system's 255-byte name limit), HOST a
hash of this machine's name and PID the writer's process id. A temporary is removed by another run only
when its HOST is this machine's and its PID is no longer alive: never a live run's, never anything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import signal
import socket
import string
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from .faults import checkpoint

Writer = Callable[[IO[bytes]], None]

_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:4]
_TEMP = re.compile(
    r"\.(?P<prefix>.*)\.(?P<target>[0-9a-f]{8})\.lasagna-(?P<host>[0-9a-f]{4})-(?P<pid>[0-9]+)-(?P<token>[0-9a-z]{6})"
    r"-(?P<role>m|b|[cx]\.[A-Za-z0-9]{1,8})\.tmp",
    re.DOTALL,
)
_TOKEN_CHARS = string.digits + string.ascii_lowercase


def name_limit(folder: Path) -> int:
    """The longest file name, in bytes, the folder's file system takes (255 nearly everywhere)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def name_bytes(name: str) -> int:
    return len(name.encode("utf-8", "surrogateescape"))


def _hash(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def temporary_name(target: str, token: str, role: str, limit: int = 255) -> str:
    """The temporary for `target` (a file name): within `limit` bytes however long `target` is."""
    tail = f".{_hash(target)}.lasagna-{_HOST}-{os.getpid()}-{token}-{role}.tmp"
    budget = max(limit - 1 - name_bytes(tail), 0)
    prefix = target.encode("utf-8", "surrogateescape")[:budget].decode("utf-8", "ignore")
    return f".{prefix}{tail}"


def _new_token() -> str:
    return "".join(secrets.choice(_TOKEN_CHARS) for _ in range(6))


def probe(target: Path) -> None:
    """Create and remove a temporary where writing `target` will put its own: a folder that can't be written,
    a read-only file system or a name too long raises OSError now, before any long work."""
    tmp = target.parent / temporary_name(target.name, _new_token(), "m", name_limit(target.parent))
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    os.unlink(tmp)


class WrittenUnsynced(OSError):
    """Every file of the write is in place, but what came after the last rename (syncing the folder) failed:
    the new result is there and complete, only its durability across a power cut is in doubt."""


def write_files(main: Path, write_main: Writer, companions: Sequence[tuple[str, bytes]] = ()) -> None:
    """Write `main` (by `write_main`) and each companion `main.name + suffix` (its bytes): afterwards all of
    them are the new files, or - after any error, interruption or kill - none of them changed."""
    folder, token, limit = main.parent, _new_token(), name_limit(main.parent)

    def temporary(role: str) -> Path:
        return folder / temporary_name(main.name, token, role, limit)

    main_tmp = temporary("m")
    others = [(temporary(f"c{suffix}"), main.with_name(main.name + suffix), data) for suffix, data in companions]
    written: list[Path] = []
    try:
        _write_temporary(main_tmp, write_main, written)
        checkpoint("temp-written")
        for tmp, _, data in others:
            _write_temporary(tmp, lambda f, data=data: f.write(data), written)
        if others:
            checkpoint("sidecar-temp-written")
        _commit(main, main_tmp, [(tmp, target) for tmp, target, _ in others], temporary)
    except BaseException:
        for tmp in reversed(written):  # companions before the main temporary: see the module's docstring
            tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """A file object whose content replaces `path` only if the block finishes: a crash leaves no partial file."""
    path = Path(path)
    tmp = path.parent / temporary_name(path.name, _new_token(), "m", name_limit(path.parent))
    written: list[Path] = []
    try:
        with _open_temporary(tmp, written) as f:
            yield f
        checkpoint("temp-written")
        _commit(path, tmp, [], lambda role: tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_temporary(tmp: Path, write: Writer, written: list[Path]) -> None:
    with _open_temporary(tmp, written) as f:
        write(f)


@contextlib.contextmanager
def _open_temporary(tmp: Path, written: list[Path]) -> Iterator[IO[bytes]]:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 less the umask, like any new file
    written.append(tmp)
    with os.fdopen(fd, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def _commit(main: Path, main_tmp: Path, others: Sequence[tuple[Path, Path]], temporary: Callable[[str], Path]) -> None:
    """The renames, main first, with SIGINT/SIGTERM held back until they are done.

    With companions, the old main file is kept as a hard link (role `b`) until they are in place: a failure
    after the main rename renames the companions' temporaries to role `x` (abandoned: never rolled forward)
    and puts the old main back, so the old pair stands. On a file system without hard links the new main and
    the old companions are removed instead: no file is left beside a companion that isn't its own."""
    with _signals_held() as interrupted:
        kept = _keep(main, temporary("b")) if others else None
        os.replace(main_tmp, main)
        if others:
            try:
                checkpoint("renamed", interrupted=interrupted)
                for tmp, target in others:
                    os.replace(tmp, target)
            except BaseException:
                _undo_commit(main, others, kept, temporary)
                raise
            if kept is not None:
                kept.unlink()
        try:
            _sync_folder(main.parent)
            checkpoint("sidecar-renamed" if others else "renamed", interrupted=interrupted)
        except OSError as exc:
            raise WrittenUnsynced(exc.errno, exc.strerror) from None


def _keep(main: Path, backup: Path) -> Path | None:
    if not main.exists():
        return None
    try:
        os.link(main, backup)
    except OSError:
        return None
    return backup


def _undo_commit(main: Path, others: Sequence[tuple[Path, Path]], kept: Path | None, temporary: Callable[[str], Path]) -> None:
    abandoned = []
    for tmp, target in others:
        if tmp.exists():
            abandoned.append(temporary("x" + target.name[len(main.name):]))
            os.replace(tmp, abandoned[-1])
    if kept is not None:
        os.replace(kept, main)
    else:
        main.unlink(missing_ok=True)
        for _, target in others:
            target.unlink(missing_ok=True)
    for path in abandoned:
        path.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    """Make the renames durable (a power cut after this keeps them); not every platform can."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _signals_held() -> Iterator[Callable[[], bool]]:
    """SIGINT and SIGTERM arriving inside the block are delivered when it ends (so a result is never half
    renamed); yields whether one is waiting. Only the main thread can change handlers: elsewhere, nothing is
    held."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pending: list[int] = []
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in wanted}
    for s in wanted:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield lambda: bool(pending)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Finish or undo what writers on this machine that are no longer running left in `folder`: a commit
    whose main file was renamed is completed, an abandoned one is undone, anything else is removed.
    Returns the temporaries it renamed or removed."""
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return []
    groups: dict[tuple[str, str], dict[str, re.Match[str]]] = {}
    for name in names:
        match = _TEMP.fullmatch(name)
        if match and match["host"] == _HOST and not _alive(int(match["pid"])):
            groups.setdefault((match["pid"], match["token"]), {})[match["role"]] = match
    touched: list[Path] = []
    for roles in groups.values():
        paths = {role: Path(folder) / match.string for role, match in roles.items()}
        companions = [role for role in roles if role.startswith("c")]
        abandoned = [role for role in roles if role.startswith("x")]
        main = _main_of(Path(folder), next(iter(roles.values())), names)
        if abandoned and "b" in roles and main is not None:
            os.replace(paths.pop("b"), main)
        if "m" in roles or abandoned or main is None or not main.exists():
            companions = []
        for role in companions:
            os.replace(paths.pop(role), main.with_name(main.name + role[1:]))
        for role in sorted(paths, key=lambda r: r == "m"):  # companions before the main temporary
            paths[role].unlink(missing_ok=True)
        touched += [Path(folder) / match.string for match in roles.values()]
    return touched


def _main_of(folder: Path, match: re.Match[str], names: Sequence[str]) -> Path | None:
    """The main file a temporary belongs to: its name's hash identifies it (the name in the temporary may be cut)."""
    for name in (match["prefix"], *names):
        if _hash(name) == match["target"] and not _TEMP.fullmatch(name):
            return folder / name
    return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True
