"""What both trainers share around their steps: progress and results, checkpoints in `OUT.ckpt/` (safetensors
+ JSON, never pickle), `TrainingRun` (resume, checkpoint, deadline) and the learning-rate schedule."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UsageError


@dataclass
class TrainStep:
    step: int  # 1-based, counting resumed steps
    steps: int
    loss: float
    learning_rate: float
    seconds: float  # wall time of the whole run so far, across resumes


@dataclass
class TrainResult:
    output: Path
    steps_done: int
    steps: int
    seconds: float
    finished: bool
    loss_curve: Path | None
    history: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[TrainStep], None]


def checkpoint_dir(out: Path) -> Path:
    return Path(str(out) + ".ckpt")


def _save_checkpoint(folder: Path, tensors: dict[str, dict[str, Tensor]], state: dict[str, Any]) -> None:
    """Every part atomically; state.json last, so a checkpoint with a state.json is complete."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for name, group in tensors.items():
        tmp = folder / f"{name}.safetensors.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in group.items()}, str(tmp))
        tmp.replace(folder / f"{name}.safetensors")
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(folder / "state.json")


def _load_checkpoint(folder: Path, names: list[str]) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]] | None:
    from safetensors.torch import load_file

    if not (folder / "state.json").is_file():
        return None
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        return {n: load_file(str(folder / f"{n}.safetensors")) for n in names}, state
    except Exception as e:  # noqa: BLE001 - any damage means: can't resume
        raise UsageError(f"checkpoint '{folder}' can't be read ({type(e).__name__}); delete it or pass --no-resume") from None


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    flat = {f"{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)) for i, s in sd["state"].items() for k, v in s.items()}
    return flat, sd["param_groups"]


def _restore_optimizer(optimizer: torch.optim.Optimizer, flat: dict[str, Tensor], groups: list[dict[str, Any]]) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


@dataclass
class RunSettings:
    """What both trainers' configurations share: the length of the run and how `TrainingRun` keeps it."""

    steps: int
    seed: int = 0
    checkpoint_every: int = 100
    max_minutes: float | None = None
    resume: bool = True
    overfit_one_batch: bool = False  # same batch, noise and t every step (tests, debugging)


class TrainingRun:
    """The bookkeeping both trainers share around their steps: resume from `OUT.ckpt/` only when it was made
    for the same fingerprint (another model or set-up is refused, never silently mixed in), checkpoint every
    `checkpoint_every` steps, at the last step and at the `max_minutes` deadline, and count wall time across
    resumes. `modules` are saved and restored by name, with the optimizer and the batch generator's state.

    The fingerprint is compared key by key on the keys this run sets (a key the checkpoint lacks reads as
    None), so checkpoints of earlier versions, which recorded less, resume when what they recorded agrees; a
    checkpoint with no fingerprint at all (ControlNet runs of earlier versions) is taken as it is."""

    def __init__(self, out: Path, fingerprint: dict[str, Any], modules: dict[str, Any], optimizer: torch.optim.Optimizer,
                 rng: torch.Generator, config: RunSettings, history: dict[str, Any], started: float) -> None:
        self.folder = checkpoint_dir(out)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from state.json
        self.modules, self.optimizer, self.rng, self.config = modules, optimizer, rng, config
        self.history = history
        self.started = started
        self.step = 0
        self.seconds_before = 0.0
        self.deadline = None if config.max_minutes is None else started + 60 * config.max_minutes
        self.stop_signal: int | None = None

    @property
    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    @property
    def finished(self) -> bool:
        return self.step >= self.config.steps

    def resume(self) -> None:
        loaded = _load_checkpoint(self.folder, [*self.modules, "optimizer"]) if self.config.resume else None
        if loaded is None:
            return
        tensors, state = loaded
        kept = state.get("fingerprint")
        if kept is not None and any(kept.get(k) != v for k, v in self.fingerprint.items()):
            raise UsageError(f"checkpoint '{self.folder}' is for a different model or set-up; delete it or pass --no-resume")
        for name, module in self.modules.items():
            module.load_state_dict(tensors[name])
        _restore_optimizer(self.optimizer, {k: v for k, v in tensors["optimizer"].items() if k != "rng"}, state["param_groups"])
        self.rng.set_state(tensors["optimizer"]["rng"])
        self.step, self.seconds_before, self.history = int(state["step"]), float(state["seconds"]), state["history"]

    def save(self) -> None:
        opt_flat, groups = _optimizer_tensors(self.optimizer)
        opt_flat["rng"] = self.rng.get_state()
        state = {"step": self.step, "seconds": self.seconds, "history": self.history, "param_groups": groups,
                 "fingerprint": self.fingerprint, "config": asdict(self.config)}
        _save_checkpoint(self.folder, {**{n: m.state_dict() for n, m in self.modules.items()}, "optimizer": opt_flat}, state)

    @contextmanager
    def stopping_on_signals(self) -> Iterator[None]:
        """Inside, SIGINT/SIGTERM end the run at the end of the current step, checkpointed (a killed `nohup`
        run loses nothing but that step); the handlers before are restored after. Main thread only, where
        Python delivers signals."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum: int, frame: Any) -> None:
            self.stop_signal = signum

        kept = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in kept.items():
                signal.signal(s, handler)

    def step_done(self, loss: float, on_checkpoint: Callable[[], None] | None = None) -> bool:
        """Record a finished step's loss and checkpoint when due (`on_checkpoint` first, e.g. a validation
        loss); True when the run must stop now (finished, or past the deadline, checkpointed)."""
        self.step += 1
        self.history["loss"].append(loss)
        if self.step % self.config.checkpoint_every == 0 or self.finished:
            if on_checkpoint is not None:
                on_checkpoint()
            self.save()
        past_deadline = self.deadline is not None and time.perf_counter() > self.deadline
        if not self.finished and (past_deadline or self.stop_signal is not None):
            self.save()
            return True
        return self.finished


def learning_rate_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
