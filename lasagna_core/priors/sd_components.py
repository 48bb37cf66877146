"""Stable Diffusion's model files: what `--model` names, the diffusers components loaded from it, and the
few operations on those components that both the prior and the ControlNet trainer need.

Loading follows diffusers' conventions, weights from `.safetensors` only, and never downloads: a hub id is
looked up in the Hugging Face cache (`lasagna models pull ID` fills it). Accepted model sources:

* a folder written by `StableDiffusionPipeline.save_pretrained` (model_index.json, unet/, vae/,
  text_encoder/, tokenizer/, scheduler/); fp16-variant-only folders work too;
* a hub id whose snapshot is in the cache (same layout);
* a single original-format `.safetensors` checkpoint (A1111/ComfyUI style). Its architecture configs come
  from `--model-config` (a diffusers folder or cached hub id of the same architecture) or, by default, from
  the cached snapshot of the base repo diffusers infers from the checkpoint's keys (SD 1.x ->
  stable-diffusion-v1-5/stable-diffusion-v1-5, SD 2.x -> stabilityai/stable-diffusion-2-1).

`check_compatible` refuses parts that can't work together (a ControlNet for another VAE, an inpainting
U-Net, ...) in one line before any network runs.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from lasagna_core.errors import ModelError, reason
from lasagna_core.priors.registry import HubFiles

# Sub-folders of a diffusers Stable Diffusion folder that the prior needs, with their weight-file stems.
COMPONENTS: dict[str, str | None] = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
    "tokenizer": None,
    "scheduler": None,
}
CONTROLNET_WEIGHTS = "diffusion_pytorch_model"
_HAS_ACCELERATE = importlib.util.find_spec("accelerate") is not None
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
# Errors the model libraries raise for a bad file (not for a bug in our code).
_LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, KeyError)
try:
    from safetensors import SafetensorError

    _LOAD_ERRORS += (SafetensorError,)
except ImportError:  # pragma: no cover - older safetensors
    pass


def pull_hint(model_id: str) -> str:
    return f"run `lasagna models pull {model_id}` or pass the path of a local model folder or .safetensors file"


def hub_files(*, adapter: bool = False) -> HubFiles:
    """The files of a hub repo that loading reads: a pipeline's sub-folders, or an adapter's root."""
    roots = [""] if adapter else [f"{sub}/" for sub in COMPONENTS]
    allow = ["config.json"] if adapter else ["model_index.json"]
    for root in roots:
        allow += [f"{root}*.json", f"{root}*.txt", f"{root}*.safetensors"]
    return HubFiles(tuple(allow), ("*non_ema*", "*.ckpt", "*.bin", "*.fp16*"))


@dataclass
class SDComponents:
    """The diffusers modules of one Stable Diffusion model, loaded in one dtype, and its scheduler config."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]


def load_model(model: str, *, model_config: str | None = None, dtype: torch.dtype) -> SDComponents:
    """The components of a diffusers folder, a cached hub id or a single `.safetensors` checkpoint.

    `model_config` only matters for a single-file checkpoint: a diffusers folder or cached hub id whose
    configs (model_index.json, */config.json, tokenizer, scheduler) describe the checkpoint's architecture.
    """
    path = Path(model).expanduser()
    if path.is_file():
        return load_single_file(path, config=model_config, dtype=dtype)
    if model_config is not None:
        raise ModelError(f"--model-config is for a single-file checkpoint; '{model}' is not a file.")
    return load_components(resolve_model_folder(model), dtype=dtype)


# ---------------------------------------------------------------------- operations both the prior and training use


def vae_scale_factor(vae: Any) -> int:
    """How many image pixels one latent covers along a side: the VAE halves the image per block after the first."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def working_resolution(unet: Any, vae: Any) -> int:
    """The long side, in pixels, of the images the U-Net was trained on."""
    sample_size = unet.config.sample_size
    if isinstance(sample_size, (list, tuple)):
        sample_size = max(sample_size)
    return int(sample_size) * vae_scale_factor(vae)


def encode_latents(vae: Any, pixels: Tensor) -> Tensor:
    """Scaled latents of `pixels` in [-1, 1]: the posterior mean of a KL VAE (no sampling noise, so a seeded
    run repeats exactly), or what a tiny autoencoder (TAESD) encodes; shift and scale from the VAE's config."""
    encoded = vae.encode(pixels)
    posterior = getattr(encoded, "latent_dist", None)
    latents = posterior.mean if posterior is not None else encoded.latents
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    return (latents - shift) * float(vae.config.scaling_factor)


def encode_text(tokenizer: Any, text_encoder: Any, prompts: Sequence[str]) -> Tensor:
    """The text encoder's last hidden state `[N, L, D]` for `prompts`, padded to the tokenizer's maximum length,
    on the text encoder's device."""
    tokens = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    device = text_encoder.device
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = tokens.attention_mask.to(device)
    return text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]


# ---------------------------------------------------------------------- resolving what `model` names


def _looks_like_path(model: str) -> bool:
    return (
        model.startswith((".", "/", "~", "\\"))
        or "\\" in model
        or model.count("/") > 1
        or model.lower().endswith((".safetensors",) + _PICKLE_SUFFIXES)
    )


def cached_snapshot(repo_id: str, *, missing: str | None = None) -> Path:
    """The cached snapshot folder of a hub repo, without touching the network.

    ModelError if it isn't cached: `missing` is that error's message (default: how to pull it)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except HFValidationError:
        raise ModelError(f"Model '{repo_id}' is neither an existing path nor a valid Hugging Face model id.") from None
    except OSError:  # LocalEntryNotFoundError and friends: not in the cache
        raise ModelError(
            missing
            or f"Model '{repo_id}' is not a local path and is not in the Hugging Face cache: {pull_hint(repo_id)}."
        ) from None


def resolve_model_folder(model: str) -> Path:
    """A local folder, or the cached snapshot of a hub id; ModelError for anything else."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelError(f"Model '{model}' is not a folder or a .safetensors file.")
    if _looks_like_path(model):
        raise ModelError(f"Model path '{model}' does not exist.")
    return cached_snapshot(model)


# ---------------------------------------------------------------------- diffusers folders


def _weights_variant(folder: Path, stem: str) -> str | None:
    """None for `stem.safetensors` (or a sharded index), "fp16" for an fp16-only folder; else ModelError."""
    if (folder / f"{stem}.safetensors").is_file() or (folder / f"{stem}.safetensors.index.json").is_file():
        return None
    if (folder / f"{stem}.fp16.safetensors").is_file() or (folder / f"{stem}.safetensors.index.fp16.json").is_file():
        return "fp16"
    pickles = sorted(p.name for p in folder.glob("*") if p.suffix in _PICKLE_SUFFIXES) if folder.is_dir() else []
    if pickles:
        raise ModelError(
            f"'{folder}' has only pickle weights ({pickles[0]}); Lasagna loads .safetensors only: "
            f"convert them (e.g. load and save_pretrained with safe_serialization=True) or pull a safetensors copy."
        )
    raise ModelError(f"Model file missing: '{folder / stem}.safetensors'.")


def _require(path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"Model file missing: '{path}'.")


def _read_json(path: Path) -> dict[str, Any]:
    _require(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"Model file '{path}' is not valid JSON ({e}).") from None
    if not isinstance(data, dict):
        raise ModelError(f"Model file '{path}' is not a JSON object.")
    return data


def load_components(folder: Path, *, dtype: torch.dtype) -> SDComponents:
    """unet, vae, text_encoder, tokenizer and the scheduler config from a diffusers SD folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    index = _read_json(folder / "model_index.json")
    kind = index.get("_class_name", "an unknown pipeline")
    if "text_encoder_2" in index or "transformer" in index or index.get("unet", [None, None])[1] not in (
        "UNet2DConditionModel",
        None,
    ):
        raise ModelError(
            f"'{folder}' holds a {kind}; Lasagna's Stable Diffusion prior needs an SD 1.x/2.x architecture."
        )
    variants: dict[str, str | None] = {}
    for sub, stem in COMPONENTS.items():
        if sub not in index or index[sub][0] is None:
            raise ModelError(f"'{folder}' has no {sub} (model_index.json), so it isn't a Stable Diffusion model.")
        if stem is not None:
            _require(folder / sub / "config.json")
            variants[sub] = _weights_variant(folder / sub, stem)
    _require(folder / "scheduler" / "scheduler_config.json")
    if not (folder / "tokenizer" / "tokenizer.json").is_file():
        _require(folder / "tokenizer" / "vocab.json")
        _require(folder / "tokenizer" / "merges.txt")

    def load(sub: str, fn: Any) -> Any:
        try:
            return fn()
        except _LOAD_ERRORS as e:
            raise ModelError(f"Could not load {sub} from '{folder}': {reason(e, with_type=True)}") from None

    common = {"use_safetensors": True, "local_files_only": True}
    lean = {"low_cpu_mem_usage": _HAS_ACCELERATE}  # diffusers warns (and falls back) without accelerate
    return SDComponents(
        unet=load(
            "unet",
            lambda: UNet2DConditionModel.from_pretrained(
                folder, subfolder="unet", torch_dtype=dtype, variant=variants["unet"], **common, **lean
            ),
        ),
        vae=load(
            "vae",
            lambda: AutoencoderKL.from_pretrained(
                folder, subfolder="vae", torch_dtype=dtype, variant=variants["vae"], **common, **lean
            ),
        ),
        text_encoder=load(
            "text_encoder",
            lambda: CLIPTextModel.from_pretrained(
                folder / "text_encoder", dtype=dtype, variant=variants["text_encoder"], **common
            ),
        ),
        tokenizer=load("tokenizer", lambda: CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)),
        scheduler_config=_read_json(folder / "scheduler" / "scheduler_config.json"),
    )


def load_controlnet(controlnet: str, *, dtype: torch.dtype) -> Any:
    from diffusers import ControlNetModel

    path = Path(controlnet).expanduser()
    if path.is_file():
        raise ModelError(
            f"ControlNet '{controlnet}' is a single file; Lasagna needs a diffusers ControlNet folder "
            "(config.json + diffusion_pytorch_model.safetensors) or a cached hub id."
        )
    folder = resolve_model_folder(controlnet)
    cfg = _read_json(folder / "config.json")
    if cfg.get("_class_name", "ControlNetModel") != "ControlNetModel":
        raise ModelError(f"'{folder}' holds a {cfg['_class_name']}, not a ControlNetModel.")
    variant = _weights_variant(folder, CONTROLNET_WEIGHTS)
    try:
        return ControlNetModel.from_pretrained(
            folder,
            torch_dtype=dtype,
            variant=variant,
            use_safetensors=True,
            local_files_only=True,
            low_cpu_mem_usage=_HAS_ACCELERATE,
        )
    except _LOAD_ERRORS as e:
        raise ModelError(f"Could not load the ControlNet from '{folder}': {reason(e, with_type=True)}") from None


def load_tiny_autoencoder(vae: str, *, dtype: torch.dtype) -> Any:
    """A TAESD-style `AutoencoderTiny` (diffusers folder or cached hub id, safetensors) for the fast gradient path."""
    from diffusers import AutoencoderTiny

    folder = resolve_model_folder(vae)
    cfg = _read_json(folder / "config.json")
    if cfg.get("_class_name") != "AutoencoderTiny":
        raise ModelError(
            f"--vae '{vae}' holds a {cfg.get('_class_name', 'unknown model')}; it must be a tiny autoencoder "
            "(diffusers AutoencoderTiny, e.g. madebyollin/taesd for SD 1.x/2.x)."
        )
    variant = _weights_variant(folder, "diffusion_pytorch_model")
    try:
        return AutoencoderTiny.from_pretrained(
            folder, torch_dtype=dtype, variant=variant, use_safetensors=True, local_files_only=True
        )
    except _LOAD_ERRORS as e:
        raise ModelError(f"Could not load the tiny autoencoder from '{folder}': {reason(e, with_type=True)}") from None


def check_compatible(
    unet: Any, vae: Any, text_encoder: Any, controlnet: Any | None, source: str, encoder_vae: Any | None = None
) -> None:
    """ModelError in one line for parts that would fail (or silently mislead) once the network runs."""
    uc = unet.config
    if getattr(uc, "addition_embed_type", None) or getattr(uc, "class_embed_type", None) or getattr(
        uc, "num_class_embeds", None
    ):
        raise ModelError(f"Model '{source}' needs extra conditioning (SDXL/upscaler-style U-Net); it isn't supported.")
    if uc.in_channels != vae.config.latent_channels:
        raise ModelError(
            f"Model '{source}' has a U-Net with {uc.in_channels} input channels (inpainting/depth model?); "
            f"Lasagna needs a plain text-to-image checkpoint ({vae.config.latent_channels} channels)."
        )
    if uc.cross_attention_dim != text_encoder.config.hidden_size:
        raise ModelError(f"Model '{source}': the U-Net and text encoder don't match (cross-attention width).")
    if controlnet is not None:
        cc = controlnet.config
        if (
            tuple(cc.block_out_channels) != tuple(uc.block_out_channels)
            or cc.cross_attention_dim != uc.cross_attention_dim
        ):
            raise ModelError(f"The ControlNet was trained for a different base architecture than '{source}'.")
        _check_controlnet_input(controlnet, vae, source)
    if encoder_vae is not None and encoder_vae.config.latent_channels != vae.config.latent_channels:
        raise ModelError(
            f"--vae makes {encoder_vae.config.latent_channels}-channel latents, but '{source}' works on "
            f"{vae.config.latent_channels}-channel latents; use a tiny autoencoder made for this model."
        )


def _check_controlnet_input(controlnet: Any, vae: Any, source: str) -> None:
    """The hint is the base (RGB) at the image size, and the ControlNet's conditioning embedding must bring it
    down to the latent size: its downsampling must equal the VAE's, or the residuals don't line up."""
    cc = controlnet.config
    channels = int(getattr(cc, "conditioning_channels", 3))
    if channels != 3:
        raise ModelError(
            f"The ControlNet takes a {channels}-channel hint, but Lasagna gives it the base image (3 channels, RGB)."
        )
    embedding = getattr(cc, "conditioning_embedding_out_channels", None)
    if embedding:
        hint_scale, latent_scale = 2 ** (len(embedding) - 1), vae_scale_factor(vae)
        if hint_scale != latent_scale:
            raise ModelError(
                f"The ControlNet shrinks its hint {hint_scale}x, but '{source}' works on latents {latent_scale}x "
                f"smaller than the image (its VAE downsamples by {latent_scale}): the ControlNet was made for "
                "another VAE; train or pick one for this model."
            )


# ---------------------------------------------------------------------- single-file checkpoints


class _CheckpointShapes(Mapping):
    """Key -> object with `.shape`, read from a safetensors header without loading any tensor."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self._file = safe_open(str(path), framework="pt")
        self._keys = list(self._file.keys())
        self._set = set(self._keys)

    def __getitem__(self, key: str) -> SimpleNamespace:
        if key not in self._set:
            raise KeyError(key)
        return SimpleNamespace(shape=torch.Size(self._file.get_slice(key).get_shape()))

    def __contains__(self, key: object) -> bool:
        return key in self._set

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def infer_base_repo(path: Path) -> str:
    """The hub repo whose configs describe this original-format checkpoint (diffusers' own inference)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS, infer_diffusers_model_type

    try:
        model_type = infer_diffusers_model_type(_CheckpointShapes(path))
    except _LOAD_ERRORS as e:
        raise ModelError(f"'{path}' is not a readable safetensors checkpoint ({reason(e, with_type=True)}).") from None
    if model_type not in ("v1", "v2"):
        raise ModelError(
            f"'{path}' looks like a '{model_type}' checkpoint; Lasagna's Stable Diffusion prior needs SD 1.x/2.x."
        )
    return DIFFUSERS_DEFAULT_PIPELINE_PATHS[model_type]["pretrained_model_name_or_path"]


def load_single_file(path: Path, *, config: str | None, dtype: torch.dtype) -> SDComponents:
    from diffusers import StableDiffusionPipeline

    if path.suffix.lower() != ".safetensors":
        raise ModelError(
            f"'{path}' is not a .safetensors file; Lasagna refuses pickle checkpoints (.ckpt/.pt/.bin): "
            "convert it to safetensors first."
        )
    if config is None:
        repo = infer_base_repo(path)
        config_dir = cached_snapshot(
            repo,
            missing=(
                f"The single-file checkpoint '{path.name}' needs the configs of '{repo}', which aren't in the "
                f"Hugging Face cache: run `lasagna models pull {repo}` once, or pass a diffusers folder of the "
                "same architecture with --model-config."
            ),
        )
    else:
        config_dir = resolve_model_folder(config)
    _read_json(config_dir / "model_index.json")
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path),
            config=str(config_dir),
            local_files_only=True,
            torch_dtype=dtype,
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
    except _LOAD_ERRORS as e:
        raise ModelError(f"Could not load the single-file checkpoint '{path}': {reason(e, with_type=True)}") from None
    return SDComponents(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, dict(pipe.scheduler.config))
