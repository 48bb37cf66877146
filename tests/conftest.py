"""Shared test helpers: where the Photoshop fixtures are, small documents built in code, and an offline HF cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PHOTOSHOP = REPO.parent / "shared" / "fixtures" / "photoshop"
EXAMPLE_PSD = REPO / "examples" / "still-life.psd"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `gimp` (`krita`) skip where GIMP (Krita's kritarunner) is missing; CI sets
    LASAGNA_REQUIRE_GIMP=1 (LASAGNA_REQUIRE_KRITA=1) so there they fail instead."""
    if item.get_closest_marker("gimp") is not None:
        from tests.gimp import gimp_unavailable_reason

        _skip_or_fail(gimp_unavailable_reason(), "LASAGNA_REQUIRE_GIMP")
    if item.get_closest_marker("krita") is not None:
        from tests.krita import kritarunner_unavailable_reason

        _skip_or_fail(kritarunner_unavailable_reason(), "LASAGNA_REQUIRE_KRITA")


def _skip_or_fail(reason: str | None, required: str) -> None:
    if reason is None:
        return
    if os.environ.get(required):
        pytest.fail(f"{required} is set but {reason}")
    pytest.skip(reason)


def photoshop(name: str) -> Path:
    path = PHOTOSHOP / name
    if not path.exists():
        pytest.skip(f"shared fixture {path} is missing")
    return path


def gradient_rgb(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth, non-symmetric RGB test picture, float32 [H, W, 3] in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), 0.5 + 0.5 * np.sin(x / 3.0)], axis=2)
    return np.clip(base + rng.uniform(-0.05, 0.05, base.shape), 0, 1).astype(np.float32)


def to_uint8(array: np.ndarray) -> np.ndarray:
    return np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)


def edit_job(input: Path, prompt: str, *, model: str | None = None, device: str = "auto", output: Path | None = None,
             seed: int = 0, **config: object) -> object:
    """An `EditJob` the way `lasagna shade` builds one: `config` are EditConfig fields (template, layer, steps...)."""
    from lasagna_core.edit import EditConfig, EditJob
    from lasagna_core.priors import PriorSettings

    return EditJob(input, prompt, EditConfig(prior=PriorSettings(model, device), **config), output=output, seed=seed)


@pytest.fixture
def fake_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF cache in offline mode: nothing can be downloaded; `put_in_cache` adds snapshots by hand."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache


def put_in_cache(cache: Path, repo: str, files: dict[str, Path]) -> Path:
    """A snapshot of hub repo `repo` in `cache` holding `files` (name in the repo -> a local file or folder; ""
    for a folder's contents at the repo's root); returns the snapshot folder."""
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        if Path(source).is_dir():
            shutil.copytree(source, snapshot / name, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, snapshot / name)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abc")
    return snapshot
