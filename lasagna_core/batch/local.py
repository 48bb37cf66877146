"""The local runners: the files in this process, or in one worker process per `--devices` entry.

Each worker loads the prior once (at its first file that needs it) and edits files from one shared queue;
a worker that dies fails the file it held and is replaced. On SIGINT/SIGTERM the workers are asked to
abandon their files. What a killed worker left is settled by the writer's rules (`discard_incomplete`: a
commit it had begun is finished, anything else removed) - only once the worker is reaped, since the writer
leaves alone the temporaries of a process that still exists, a zombie included.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..writing import discard_incomplete
from .results import Run, record
from .signals import StopSignals
from .types import EditConfig, Interrupted, WorkItem
from .work import PriorSource, process

MAX_WORKER_RESTARTS = 3
"""A worker process that dies (segfault, out-of-memory kill) is replaced at most this many times per device."""

WIND_DOWN_S = 20.0
"""How long, after a stop, the workers get to abandon their files before they are killed."""


def run_here(run: Run, todo: Sequence[WorkItem], config: EditConfig, device: str, signals: StopSignals) -> None:
    """One worker, this process: the model is loaded at the first file that needs it."""
    from ..runtime import resolve_device

    priors = PriorSource(config, device)
    run.summary.workers = [str(resolve_device(device))]
    try:
        for item in todo:
            signals.check()
            if run.stop:
                break
            rec, fatal = process(item, config, priors, on_notice=run.notice, stop=signals)
            run.emit(rec)
            if fatal:
                run.fatal()
    finally:
        run.summary.model_loads += priors.loads


def run_pool(run: Run, todo: Sequence[WorkItem], config: EditConfig, devices: Sequence[str], signals: StopSignals) -> None:
    """One worker process per device entry, each loading the model once; files handed out from one queue."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA or torch threads
    tasks: Any = ctx.Queue()
    results: Any = ctx.Queue()
    quit_event = ctx.Event()
    threads = max(1, (os.cpu_count() or 1) // len(devices))
    by_index = {item.index: item for item in todo}
    for item in todo:
        tasks.put(item)
    procs: dict[int, Any] = {}
    current: dict[int, int | None] = {}
    restarts = {slot: 0 for slot in range(len(devices))}
    done: set[int] = set()
    run.summary.workers = list(devices)

    def start(slot: int) -> None:
        tasks.put(None)  # one end-of-work marker per worker started
        proc = ctx.Process(target=_pool_worker, args=(slot, devices[slot], config, threads, tasks, results, quit_event),
                           name=f"lasagna-batch-{slot}", daemon=True)
        proc.start()
        procs[slot], current[slot] = proc, None

    def handle(message: tuple[Any, ...]) -> None:
        kind, slot = message[0], message[1]
        if kind == "start":
            current[slot] = message[2]
        elif kind == "notice":
            run.notice(message[3])
        elif kind == "loaded":
            run.summary.model_loads += 1
        elif kind == "done":
            current[slot] = None
            done.add(message[2])
            run.emit(message[3])
            if message[4]:
                run.fatal()
            if run.stop:
                quit_event.set()
        elif kind == "interrupted":  # a signal reached the worker but not us (e.g. `kill -INT <worker>`)
            current[slot] = None
            raise Interrupted(message[2])
        elif kind == "exit":
            procs.pop(slot).join()

    def drain(timeout: float) -> bool:
        try:
            handle(results.get(timeout=timeout))
            return True
        except queue.Empty:
            return False

    try:
        for slot in range(len(devices)):
            start(slot)
        while procs:
            signals.check()
            if drain(0.5):
                continue
            for slot, proc in list(procs.items()):
                if proc.is_alive() or slot not in procs:
                    continue
                while drain(0.2):  # its last messages may still be on the way
                    pass
                if slot not in procs:
                    continue
                procs.pop(slot).join()
                index = current.get(slot)
                if index is not None:
                    item = by_index[index]
                    discard_incomplete(Path(item.output))
                    run.emit(record(item.input, item.output, "failed",
                                    f"the worker on {devices[slot]} died while editing this file (exit code {proc.exitcode})",
                                    0.0, item.seed))
                    done.add(index)
                if not run.stop and len(done) < len(todo) and restarts[slot] < MAX_WORKER_RESTARTS:
                    restarts[slot] += 1
                    start(slot)
    except Interrupted:
        quit_event.set()
        _wind_down(procs, handle, results)
        _kill_and_reap(procs)
        for slot, index in current.items():  # anything a killed worker left behind
            if index is not None and index not in done:
                discard_incomplete(Path(by_index[index].output))
        raise
    finally:
        quit_event.set()
        _kill_and_reap(procs)
        tasks.cancel_join_thread()
        results.cancel_join_thread()


def _wind_down(procs: dict[int, Any], handle: Callable[[tuple[Any, ...]], None], results: Any) -> None:
    """Ask every worker to abandon its file (SIGTERM), keep the records of files that finished meanwhile."""
    for proc in procs.values():
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + WIND_DOWN_S
    while procs and time.monotonic() < deadline:
        try:
            handle(results.get(timeout=0.2))
        except queue.Empty:
            for slot, proc in list(procs.items()):
                if not proc.is_alive():
                    procs.pop(slot).join()
        except Interrupted:
            continue  # a worker reporting the same stop


def _kill_and_reap(procs: dict[int, Any]) -> None:
    """Workers that did not stop in time are killed and waited for (reaped), so their temporaries count as a
    dead writer's."""
    for proc in procs.values():
        proc.kill()
        proc.join()
    procs.clear()


def _pool_worker(slot: int, device: str, config: EditConfig, threads: int, tasks: Any, results: Any, quit_event: Any) -> None:
    """A worker process: load the prior once (at its first file), then edit files until told to stop."""
    signals = StopSignals()
    signals.install()
    threading.Thread(target=_stop_with_parent, daemon=True).start()
    try:
        import torch

        torch.set_num_threads(threads)
        priors = PriorSource(config, device, on_load=lambda: results.put(("loaded", slot)))
        while not quit_event.is_set():
            with signals.interruptible():  # nothing is in progress while waiting for work
                item = tasks.get()
            if item is None or quit_event.is_set():
                break
            results.put(("start", slot, item.index))
            rec, fatal = process(item, config, priors, stop=signals,
                                 on_notice=lambda text, i=item.index: results.put(("notice", slot, i, text)))
            results.put(("done", slot, item.index, rec, fatal))
            if fatal:
                break
    except Interrupted as exc:
        results.put(("interrupted", slot, exc.signum))
    finally:
        results.put(("exit", slot))
        results.close()
        results.join_thread()


def _stop_with_parent(grace_s: float = 20.0) -> None:
    """A worker whose run was killed (SIGKILL, no wind-down) must not go on writing into OUT unseen, where the
    next run may already be working: it stops as if sent SIGTERM, and exits outright after `grace_s`."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None:
        return
    parent.join()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os._exit(1)
