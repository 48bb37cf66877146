"""Where and in what precision the prior runs: `--device` and `--precision` turned into torch objects.

Both functions raise `UsageError` (a person's mistake, exit code 2) for a device that isn't there or a
precision the device can't run, so the CLI can pass the option strings through unchanged. Torch is
imported inside the functions: the CLI reads DEVICES and PRECISIONS from here at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lasagna_core.errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def quiet_model_libraries() -> None:
    """diffusers and transformers print progress bars and advice on stderr, which belongs to the user.
    The environment variables cover what they print while being imported, so this runs before that."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str) -> torch.device:
    """`auto|cpu|cuda|mps` (also `cuda:N`) -> torch.device; auto picks cuda, then mps, then cpu."""
    import torch

    key = name.strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(
                f"Device '{name}' was asked for, but this PyTorch sees no CUDA GPU "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                "use --device cpu or auto."
            )
        index = key.partition(":")[2]
        if index:
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise UsageError(
                    f"Device '{name}' doesn't exist: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                    f"numbered from 0."
                )
        return torch.device(key)
    if key == "mps":
        if not _mps_available():
            raise UsageError(
                "Device 'mps' was asked for, but Apple's Metal backend isn't available here; use --device cpu or auto."
            )
        return torch.device("mps")
    raise UsageError(f"Unknown device '{name}': choose one of {', '.join(DEVICES)}.")


def resolve_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """`auto|fp32|fp16|bf16` on `device` -> torch.dtype; auto is fp16 on CUDA and fp32 elsewhere.

    fp16 on the CPU is refused rather than silently mapped: PyTorch's CPU kernels for half precision are
    slow or missing, so it would be slower than fp32 and no lighter on quality.
    """
    import torch

    key = precision.strip().lower()
    dev = torch.device(device)
    if key == "auto":
        return torch.float16 if dev.type == "cuda" else torch.float32
    if key == "fp32":
        return torch.float32
    if key == "fp16":
        if dev.type == "cpu":
            raise UsageError(
                "Precision fp16 isn't supported on the CPU (PyTorch's half-precision CPU kernels are slow or "
                "missing); use --precision fp32 or bf16 there."
            )
        return torch.float16
    if key == "bf16":
        if dev.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UsageError(
                "Precision bf16 isn't supported by this GPU (it needs compute capability 8.0 or newer); "
                "use --precision fp16 or fp32."
            )
        return torch.bfloat16
    raise UsageError(f"Unknown precision '{precision}': choose one of {', '.join(PRECISIONS)}.")
