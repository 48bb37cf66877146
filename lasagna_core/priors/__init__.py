"""Diffusion priors behind one interface (`Prior`), and the two entry points the CLI calls.

`load_prior` never touches the network; `pull_model` is the only function here that downloads.
Importing this package is cheap: torch, diffusers, transformers and huggingface_hub are imported inside
the functions, and `Prior`, `Condition`, `sds_gradient` (from `.base`, which needs torch) on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lasagna_core.errors import ModelError, reason

if TYPE_CHECKING:
    from lasagna_core.priors.base import Condition, Prior, sds_gradient

__all__ = ["Condition", "Prior", "load_prior", "pull_model", "sds_gradient"]

# The sub-folders a Stable Diffusion prior reads (mirrors stable_diffusion.COMPONENTS; kept literal so that
# `lasagna models pull` imports neither torch nor diffusers).
_SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def __getattr__(name: str) -> Any:
    if name in ("Condition", "Prior", "sds_gradient"):
        from lasagna_core.priors import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_prior(
    model: str,
    *,
    controlnet: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    config: str | None = None,
    vae: str | None = None,
    fast_encoder: str | None = None,
    low_memory: bool = False,
) -> Prior:
    """The prior for `model`: a diffusers folder, a hub id in the HF cache, or a single .safetensors checkpoint.

    `device` and `precision` are the CLI strings (see runtime.py). `config` is only for single-file
    checkpoints: a diffusers folder or cached hub id describing the checkpoint's architecture.
    `vae` (a TAESD-style AutoencoderTiny folder or hub id) and `fast_encoder="half"` are cheaper gradient
    paths through the encoder, `low_memory` trades speed for GPU memory (StableDiffusionPrior); the built-in
    pixel-space prior has no encoder and ignores `low_memory`.
    Raises UsageError for a bad device/precision and ModelError for a model that can't be loaded.
    """
    from lasagna_core.runtime import resolve_device, resolve_dtype

    _quiet_model_libraries()
    dev = resolve_device(device)
    dtype = resolve_dtype(precision, dev)
    # Dispatch on what `model` is: "builtin" (the weights shipped in the package) or a file written by
    # `lasagna train builtin` is the built-in pixel-space prior; everything else is Stable Diffusion.
    from lasagna_core.priors import builtin

    if builtin.is_builtin_name(model) or builtin.is_builtin_file(Path(model).expanduser()):
        if controlnet:
            raise ModelError("--controlnet needs a Stable Diffusion model; the built-in prior has no ControlNet.")
        if vae or fast_encoder:
            raise ModelError("--vae and --fast-encoder need a Stable Diffusion model; the built-in prior has no encoder.")
        return builtin.BuiltinPrior.load(model, device=dev, dtype=dtype)
    from lasagna_core.priors.stable_diffusion import StableDiffusionPrior

    return StableDiffusionPrior.load(
        model, controlnet=controlnet, device=dev, dtype=dtype, config=config,
        vae=vae, fast_encoder=fast_encoder, low_memory=low_memory,
    )


def _quiet_model_libraries() -> None:
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


def pull_model(
    model_id: str,
    *,
    controlnet: bool = False,
    variant: str | None = None,
    configs_only: bool = False,
) -> Path:
    """Download into the HF cache exactly the files the prior loads; returns the snapshot folder.

    controlnet: `model_id` is a ControlNet repo (config.json + weights at its root), not a pipeline.
    variant: "fp16" to fetch the fp16 weight variants instead of the full-precision ones.
    configs_only: only configs and tokenizer files (what a single-file checkpoint needs), no weights.
    """
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import snapshot_download

    roots = [""] if controlnet else [f"{sub}/" for sub in _SD_SUBFOLDERS]
    allow = ["config.json"] if controlnet else ["model_index.json"]
    for root in roots:
        allow += [f"{root}*.json", f"{root}*.txt"]
        if not configs_only:
            # Sharded variants are named like diffusion_pytorch_model.fp16-00001-of-00002.safetensors.
            allow.append(f"{root}*.{variant}*.safetensors" if variant else f"{root}*.safetensors")
    ignore = ["*non_ema*", "*.ckpt", "*.bin"] + ([] if variant else ["*.fp16*"])
    network_errors = (OSError, getattr(hf_errors, "HTTPError", OSError))
    try:
        return Path(snapshot_download(model_id, allow_patterns=allow, ignore_patterns=ignore))
    except hf_errors.HFValidationError:
        raise ModelError(f"'{model_id}' is not a valid Hugging Face model id (expected OWNER/NAME).") from None
    except hf_errors.RepositoryNotFoundError:
        raise ModelError(
            f"Model '{model_id}' was not found on the Hugging Face hub (or it is gated: log in with `hf auth login`)."
        ) from None
    except network_errors as e:
        raise ModelError(f"Could not download '{model_id}': {reason(e)}") from None
