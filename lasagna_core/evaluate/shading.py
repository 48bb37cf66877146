"""The distillations of an evaluation, in this process or spread over `jobs` spawned processes.

An evaluation is one independent distillation per case (and per photo and direction), each with its own seed,
so the cases can run side by side: `lasagna eval --jobs 2` halves the wall time of a long evaluation on a
2-core machine. Each worker loads the priors once; a built-in prior runs one thread per process unless
OMP_NUM_THREADS says otherwise, so the numbers are those of the serial run whatever `jobs` is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..priors import PriorSettings
from ..priors.base import Prior
from ..templates import DistillSettings, EditSpec


@dataclass(frozen=True)
class ShadeCase:
    """One distillation: `picture` [3, H, W] in [0, 1] shaded with `prompt` by the prior of row `prior`."""

    prior: str
    picture: np.ndarray
    prompt: str
    seed: int


@dataclass(frozen=True)
class Shaded:
    """What `lasagna shade` makes of a case: the composite at full size, its Light (first Screen) layer as
    written (None when the template has none), and the seconds it took."""

    composite: np.ndarray
    light: np.ndarray | None
    seconds: float


@dataclass(frozen=True)
class ShadeSetup:
    """What every worker needs to shade any case, as data that pickles: the priors by row, and the template."""

    priors: Mapping[str, PriorSettings]
    template: str
    settings: DistillSettings

    def load(self) -> tuple[dict[str, Prior], EditSpec]:
        from ..priors import load_prior
        from ..templates import load_template

        return {row: load_prior(settings) for row, settings in self.priors.items()}, load_template(self.template)


def shade_picture(prior: Prior, spec: EditSpec, settings: DistillSettings, picture: np.ndarray, prompt: str,
                  seed: int) -> Shaded:
    """The same `Distillation` as `lasagna shade`, composed at full size; as numpy on the CPU."""
    from ..edit import Distillation
    from ..layers import BlendMode

    started = time.perf_counter()
    full = torch.from_numpy(np.ascontiguousarray(picture, dtype=np.float32))[None].to(prior.device)
    run = Distillation(prior, spec, settings, full, prompt)
    layers = run.layers(seed)
    light = next((out.color[0].cpu().numpy() for out, layer in zip(layers, spec.layers)
                  if layer.blend_mode is BlendMode.SCREEN), None)
    return Shaded(run.composite(layers)[0].cpu().numpy(), light, time.perf_counter() - started)


class CaseShader:
    """Shades lists of cases with the priors already loaded here (`jobs` 1) or in a pool of `jobs` processes,
    started at the first list and kept for the next (the photos after the test cases)."""

    def __init__(self, setup: ShadeSetup, priors: Mapping[str, Prior], spec: EditSpec, jobs: int = 1) -> None:
        self.setup, self.priors, self.spec, self.jobs = setup, priors, spec, jobs
        self._pool: Any = None

    def __enter__(self) -> CaseShader:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self._pool is None:
            return
        self._pool.shutdown(wait=kind is None, cancel_futures=True)
        if kind is not None:  # interrupted or failed: the cases still running are not waited for
            import multiprocessing

            for worker in multiprocessing.active_children():
                worker.terminate()
        self._pool = None

    def shade(self, cases: Sequence[ShadeCase], on_done: Callable[[ShadeCase], None] | None = None) -> list[Shaded]:
        """Each case's result, in the order of `cases`; `on_done` after each one that finishes."""
        if self.jobs == 1 or len(cases) <= 1:
            results = []
            for case in cases:
                results.append(shade_picture(self.priors[case.prior], self.spec, self.setup.settings, case.picture,
                                             case.prompt, case.seed))
                if on_done:
                    on_done(case)
            return results
        from concurrent.futures import as_completed

        futures = {self._workers().submit(_shade_in_worker, case): i for i, case in enumerate(cases)}
        done: list[Shaded | None] = [None] * len(cases)
        for future in as_completed(futures):
            index = futures[future]
            done[index] = future.result()
            if on_done:
                on_done(cases[index])
        return [result for result in done if result is not None]

    def _workers(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(self.setup,))
        return self._pool


_WORKER: tuple[dict[str, Prior], EditSpec, DistillSettings] | None = None
"""A worker process's priors, template and settings, loaded once when it starts."""


def _start_worker(setup: ShadeSetup) -> None:
    """Load the priors; leave Ctrl-C to the parent, which stops the pool (no traceback from every worker)."""
    import signal

    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    priors, spec = setup.load()
    _WORKER = priors, spec, setup.settings


def _shade_in_worker(case: ShadeCase) -> Shaded:
    assert _WORKER is not None, "the pool's initializer loads the priors"
    priors, spec, settings = _WORKER
    return shade_picture(priors[case.prior], spec, settings, case.picture, case.prompt, case.seed)
