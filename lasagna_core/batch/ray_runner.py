"""`lasagna batch --ray [ADDRESS]`: the files of a batch as tasks on a Ray cluster.

Optional: Ray is imported only here, and only when `--ray` is given (`pip install 'lasagna[ray]'`).

- no address: $RAY_ADDRESS when it is set (as inside a Ray job), else a new local Ray instance, shut down at
  the end; `auto` joins the cluster already running on this machine; anything else is passed to `ray.init`.
- one task per file; one GPU per task when the cluster has GPUs, else `cpus_per_task` CPUs (and as many
  torch threads). A Ray worker process keeps its prior between tasks (`ray_task`), so the model is
  loaded once per worker process, not once per file.
- paths are sent as given: on a multi-node cluster IN, OUT and the model must be on storage every node sees.
- at most two tasks per slot are in flight, so `--fail-fast`, a model that can't load, or Ctrl-C stop the
  run promptly; on SIGINT/SIGTERM the running tasks are cancelled (each removes what it had written).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import UsageError, reason
from ..writing import discard_incomplete
from .results import Run, record
from .signals import StopSignals
from .types import EditConfig, Interrupted, Record, WorkItem
from .work import PriorSource, process

CANCEL_WAIT_S = 20.0

TaskResult = tuple[Record, bool, int, list[str]]
"""What one Ray task sends back: (record, fatal, model loads it caused, notices)."""


def run_on_ray(
    run: Run,
    todo: Sequence[WorkItem],
    config: EditConfig,
    *,
    address: str,
    cpus_per_task: int = 1,
    signals: StopSignals,
) -> None:
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray, which is not installed: pip install 'lasagna[ray]'") from None
    if cpus_per_task < 1:
        raise UsageError("--ray-cpus must be at least 1")

    local = not address and not os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if local:
        kwargs.update(address="local", include_dashboard=False)
    else:
        kwargs["address"] = address or None
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"--ray {address or os.environ.get('RAY_ADDRESS', '')}: can't start or reach Ray ({reason(exc)})") from None
    signals.install()  # ray.init installs its own SIGTERM handler in the driver
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            options: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
            device, threads, slots = "cuda", max(1, cpus_per_task), gpus
        else:
            options = {"num_cpus": cpus_per_task}
            device, threads = "cpu", cpus_per_task
            slots = max(1, int(resources.get("CPU", 1)) // cpus_per_task)
        # max_calls=0: reuse worker processes (Ray's default for GPU tasks is a fresh process per task,
        # which would reload the model for every file).
        task = ray.remote(max_calls=0, **options)(ray_task)
        run.summary.workers = [f"ray: {slots} x {'GPU' if gpus else f'{cpus_per_task} CPU'}"]
        remote_config = _absolute_config(config)
        _drive(ray, run, list(todo), lambda item: task.remote(_absolute_item(item), remote_config, device, threads),
               window=2 * slots, signals=signals)
    finally:
        ray.shutdown()


def _drive(ray: Any, run: Run, todo: list[WorkItem], submit: Callable[[WorkItem], Any], window: int,
           signals: StopSignals) -> None:
    pending = list(reversed(todo))
    in_flight: dict[Any, WorkItem] = {}
    try:
        while (pending and not run.stop) or in_flight:
            signals.check()
            while pending and not run.stop and len(in_flight) < window:
                item = pending.pop()
                in_flight[submit(item)] = item
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                _collect(ray, run, ref, in_flight.pop(ref))
    except Interrupted:
        for ref in in_flight:
            ray.cancel(ref)  # raises KeyboardInterrupt in the task, which removes what it had written
        ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=CANCEL_WAIT_S)
        for ref in ready:
            item = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except Exception:
                discard_incomplete(_path(item))
                continue
            _report(run, result, item)  # it finished before the cancel reached it
        for item in in_flight.values():
            discard_incomplete(_path(item))
        raise


def _absolute_item(item: WorkItem) -> WorkItem:
    """Ray workers need not share our working folder: they get absolute paths (records keep the user's)."""
    return replace(item, input=os.path.abspath(item.input), output=os.path.abspath(item.output))


def _absolute_config(config: EditConfig) -> EditConfig:
    """Local model folders and files, the prior options that name local paths (ControlNets, tiny VAEs) and
    template files as absolute paths; hub ids, names and other values unchanged."""
    def absolute(value: Any) -> Any:
        return os.path.abspath(value) if isinstance(value, str) and value and os.path.exists(value) else value

    prior = replace(config.prior, model=absolute(config.prior.model),
                    options={name: absolute(value) for name, value in config.prior.options})
    return replace(config, prior=prior, template=absolute(config.template))


def _collect(ray: Any, run: Run, ref: Any, item: WorkItem) -> None:
    try:
        result = ray.get(ref)
    except Exception as exc:  # the task's process died, or Ray could not run it
        discard_incomplete(_path(item))
        run.emit(record(item.input, item.output, "failed", f"Ray task failed: {reason(exc)}", 0.0, item.seed))
        return
    _report(run, result, item)


def _report(run: Run, result: TaskResult, item: WorkItem) -> None:
    rec, fatal, loads, notices = result
    rec.update(input=item.input, output=item.output)
    run.summary.model_loads += loads
    for text in notices:
        run.notice(text)
    run.emit(rec)
    if fatal:
        run.fatal()


def _path(item: WorkItem) -> Path:
    return Path(item.output)


_PRIORS: dict[tuple[EditConfig, str], PriorSource] = {}
"""Priors of this process, for Ray tasks: a Ray worker process runs many tasks and loads the model once."""


def ray_task(item: WorkItem, config: EditConfig, device: str, threads: int) -> TaskResult:
    """The body of one Ray task: (record, fatal, model loads it caused, notices)."""
    import torch

    torch.set_num_threads(threads)
    priors = _PRIORS.setdefault((config, device), PriorSource(config, device))
    loads = priors.loads
    notices: list[str] = []
    rec, fatal = process(item, config, priors, on_notice=notices.append)
    return rec, fatal, priors.loads - loads, notices
