"""The weights file of Lasagna's own pixel-space priors (relighting and colouring): one `.safetensors`.

Its tensors are the U-Net's state dict; its string metadata describe it: `format`, `task` ("relight" or
"color"; files written before colouring existed have none and are relighting priors), `unet_config`,
`scheduler_config`, `classes` (the class names in class-id order: light directions or colour words; older
relighting files call it `directions`) and `training`. A SHA-256 file beside it (`NAME.safetensors.sha256`,
as `sha256sum` writes it) is checked at load when present, and is required for the shipped weights: a
damaged file is refused with one line instead of painting nonsense.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from lasagna_core.errors import ModelError, reason

FORMAT = "lasagna-builtin-prior/1"
WEIGHTS_PACKAGE = "lasagna_core.weights"
RELIGHT = "relight"


def shipped_weights(file: str) -> Path:
    """The path of a weights file shipped inside the package (it may be missing in a broken install)."""
    return Path(str(resources.files(WEIGHTS_PACKAGE).joinpath(file)))


def read_metadata(path: Path) -> dict[str, str] | None:
    """The `__metadata__` of a safetensors header, read without torch; None if it isn't a safetensors file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                return None
            (length,) = struct.unpack("<Q", head)
            if length <= 0 or length > 100_000_000:
                return None
            header = json.loads(fh.read(length).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else None


def file_task(path: Path) -> str | None:
    """The task of a pixel-prior file (judged by its header only), or None for any other file."""
    meta = read_metadata(path) if path.is_file() else None
    if not meta or meta.get("format") != FORMAT:
        return None
    return meta.get("task", RELIGHT)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_sha256(path: Path) -> Path:
    """Write `PATH.sha256` in `sha256sum` format; returns its path."""
    out = path.with_name(path.name + ".sha256")
    out.write_text(f"{sha256_of(path)}  {path.name}\n", encoding="utf-8")
    return out


def verify_sha256(path: Path, *, required: bool, what: str) -> None:
    """ModelError (one line) if `PATH.sha256` exists (or is required) and does not match the file."""
    check = path.with_name(path.name + ".sha256")
    if not check.is_file():
        if required:
            raise ModelError(f"{what} '{path}' has no SHA-256 file beside it ({check.name}); reinstall Lasagna.")
        return
    expected = check.read_text(encoding="utf-8").split()[:1]
    actual = sha256_of(path)
    if not expected or expected[0].lower() != actual:
        want = expected[0][:12] if expected else "nothing"
        raise ModelError(
            f"{what} '{path}' is damaged: its SHA-256 is {actual[:12]}..., expected {want}...; "
            + ("reinstall Lasagna (pip install --force-reinstall lasagna)." if required else "retrain or re-copy it.")
        )


def default_scheduler_config() -> dict[str, Any]:
    return {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "epsilon",
        "clip_sample": True,
    }


def default_unet_config(resolution: int, classes: int, in_channels: int) -> dict[str, Any]:
    """The architecture `lasagna train` uses by default: about 1.1 M parameters, attention at the lowest
    resolution only; `in_channels` = 3 (the noisy image) + the task's condition channels."""
    return {
        "sample_size": resolution,
        "in_channels": in_channels,
        "out_channels": 3,
        "layers_per_block": 1,
        "block_out_channels": [32, 64, 64],
        "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
        "attention_head_dim": 32,
        "norm_num_groups": 16,
        "num_class_embeds": classes + 1,
    }


def fine_tune_config(start: Any, size: int) -> dict[str, Any]:
    """The architecture a fine-tune keeps from the prior it starts from, at the training size: the U-Net's
    convolutions and attention do not depend on the picture size, so a 32 px prior can start a 64 px one."""
    return {**model_config(start), "sample_size": size}


def new_unet(config: dict[str, Any]) -> Any:
    from diffusers import UNet2DModel

    return UNet2DModel(**config)


def model_config(model: Any) -> dict[str, Any]:
    """A diffusers model's config as plain JSON data (no private keys, tuples as lists): what the weights file
    stores and what a checkpoint's fingerprint compares."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(model.config).items() if not k.startswith("_")}


@dataclass(frozen=True)
class PixelWeights:
    """What a weights file holds, loaded: the U-Net and what its metadata say."""

    unet: Any
    task: str
    classes: list[str]
    scheduler_config: dict[str, Any]
    training: dict[str, Any]


def save_weights(
    unet: Any,
    path: Path,
    *,
    task: str,
    classes: list[str],
    scheduler_config: dict[str, Any],
    training: dict[str, Any] | None = None,
) -> Path:
    """Write the U-Net's weights (float32) plus the metadata that describe them, atomically, and `.sha256`."""
    import torch
    from safetensors.torch import save_file

    meta = {
        "format": FORMAT,
        "task": task,
        "unet_config": json.dumps(model_config(unet)),
        "scheduler_config": json.dumps(dict(scheduler_config)),
        "classes": json.dumps(list(classes)),
        "training": json.dumps(training or {}),
    }
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in unet.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.chmod(0o644)  # an ordinary readable file (safetensors may create it private), e.g. for package data
    tmp.replace(path)
    write_sha256(path)
    return path


def load_weights(path: Path, meta: dict[str, str]) -> PixelWeights:
    """The U-Net of a weights file whose header `meta` has been read; ModelError (one line) if it is broken."""
    from safetensors.torch import load_file

    try:
        config = json.loads(meta["unet_config"])
        classes = list(json.loads(meta["classes"] if "classes" in meta else meta["directions"]))
        scheduler_config = dict(json.loads(meta["scheduler_config"]))
        training = dict(json.loads(meta.get("training", "{}")))
    except (KeyError, ValueError, TypeError) as e:
        raise ModelError(f"'{path}' has broken metadata ({reason(e, with_type=True)}); retrain or reinstall it.") from None
    try:
        unet = new_unet(config)
        unet.load_state_dict(load_file(str(path)), strict=True)
    except Exception as e:  # safetensors/torch raise many types for a damaged file
        raise ModelError(f"Could not load the built-in prior from '{path}': {reason(e, with_type=True)}") from None
    return PixelWeights(unet, meta.get("task", RELIGHT), classes, scheduler_config, training)
