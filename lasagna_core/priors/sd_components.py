"""Stable Diffusion's model files: what `--model` names, the diffusers components loaded from it, and the
few operations on those components that both the prior and the ControlNet trainer need.

Loading follows diffusers' conventions, weights from `.safetensors` only, and never downloads: a hub id is
looked up in the Hugging Face cache (`lasagna models pull ID` fills it). Accepted model sources:

* a folder written by `StableDiffusionPipeline.save_pretrained` (model_index.json, unet/, vae/,
  text_encoder/, tokenizer/, scheduler/; an SDXL one adds text_encoder_2/ and tokenizer_2/); fp16-variant-only
  folders work too;
* a hub id whose snapshot is in the cache (same layout);
* a single original-format `.safetensors` checkpoint (A1111/ComfyUI style). Its architecture configs come
  from `--model-config` (a diffusers folder or cached hub id of the same architecture) or, by default, from
  the cached snapshot of the base repo diffusers infers from the checkpoint's keys (SD 1.x ->
  stable-diffusion-v1-5/stable-diffusion-v1-5, SD 2.x -> stabilityai/stable-diffusion-2-1, SDXL ->
  stabilityai/stable-diffusion-xl-base-1.0).

Which of these layouts a family loads is an `Architecture` (`SD`, `SDXL`): the same loaders serve both.

Whether the loaded parts can work together is `sd_checks`' business.
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


@dataclass(frozen=True)
class Architecture:
    """One pipeline layout the loaders read: its sub-folders (with their weight-file stems), the diffusers
    pipeline class of its single-file checkpoints and the model types diffusers infers for them."""

    title: str  # for messages: "Stable Diffusion 1.x/2.x"
    components: Mapping[str, str | None]
    pipeline: str
    single_file_types: tuple[str, ...]
    pipeline_options: Mapping[str, Any]  # what from_single_file is told about the parts Lasagna never loads


SD = Architecture("Stable Diffusion 1.x/2.x", COMPONENTS, "StableDiffusionPipeline", ("v1", "v2"), {
    "safety_checker": None, "feature_extractor": None, "image_encoder": None, "requires_safety_checker": False})
SDXL = Architecture("Stable Diffusion XL base", {**COMPONENTS, "text_encoder_2": "model", "tokenizer_2": None},
                    "StableDiffusionXLPipeline", ("xl_base",), {"feature_extractor": None, "image_encoder": None})
_TEXT_ENCODERS = {"text_encoder": "CLIPTextModel", "text_encoder_2": "CLIPTextModelWithProjection"}


def hub_files(architecture: Architecture = SD, *, adapter: bool = False) -> HubFiles:
    """The files of a hub repo that loading reads: a pipeline's sub-folders, or an adapter's root."""
    roots = [""] if adapter else [f"{sub}/" for sub in architecture.components]
    allow = ["config.json"] if adapter else ["model_index.json"]
    for root in roots:
        allow += [f"{root}*.json", f"{root}*.txt", f"{root}*.safetensors"]
    return HubFiles(tuple(allow), ("*non_ema*", "*.ckpt", "*.bin", "*.fp16*"))


@dataclass
class SDComponents:
    """The diffusers modules of one Stable Diffusion model, loaded in one dtype, and its scheduler config.
    SDXL's second text encoder and tokenizer, and whether its pipeline zeroes the embeddings of an empty
    negative prompt (`force_zeros_for_empty_prompt`), are None / False for SD 1.x/2.x."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]
    text_encoder_2: Any = None
    tokenizer_2: Any = None
    zero_empty_negative: bool = False


def load_model(
    model: str, *, model_config: str | None = None, dtype: torch.dtype, architecture: Architecture = SD
) -> SDComponents:
    """The components of a diffusers folder, a cached hub id or a single `.safetensors` checkpoint.

    `model_config` only matters for a single-file checkpoint: a diffusers folder or cached hub id whose
    configs (model_index.json, */config.json, tokenizer, scheduler) describe the checkpoint's architecture.
    """
    path = Path(model).expanduser()
    if path.is_file():
        return load_single_file(path, config=model_config, dtype=dtype, architecture=architecture)
    if model_config is not None:
        raise ModelError(f"--model-config is for a single-file checkpoint; '{model}' is not a file.")
    return load_components(resolve_model_folder(model), dtype=dtype, architecture=architecture)


def unet_weight_shapes(model: str) -> dict[str, tuple[int, ...]] | None:
    """The U-Net's tensor shapes from the header of a diffusers folder's (or cached hub id's) weights file,
    without loading a tensor; None where that is not cheap (a single-file checkpoint, sharded weights)."""
    if Path(model).expanduser().is_file():
        return None
    folder = resolve_model_folder(model) / "unet"
    variant = _weights_variant(folder, COMPONENTS["unet"])
    weights = folder / f"{COMPONENTS['unet']}{'.' + variant if variant else ''}.safetensors"
    return header_shapes(weights) if weights.is_file() else None


def header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor in a safetensors file, read from its header alone; ModelError if unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except _LOAD_ERRORS as e:
        raise ModelError(f"'{path}' is not a readable safetensors file ({reason(e, with_type=True)}).") from None


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
    """Scaled latents of `pixels` in [-1, 1]: the posterior mean of a KL VAE (its mode: a diagonal Gaussian's
    mode is its mean; no sampling noise, so a seeded run repeats exactly), or what a tiny autoencoder (TAESD)
    encodes; shift and scale from the VAE's config."""
    encoded = vae.encode(pixels)
    posterior = getattr(encoded, "latent_dist", None)
    latents = posterior.mean if posterior is not None else encoded.latents
    return (latents - _shift(vae)) * float(vae.config.scaling_factor)


def decode_latents(vae: Any, latents: Tensor) -> Tensor:
    """Pixels in [-1, 1] (not clamped) for scaled latents: the inverse of `encode_latents`."""
    return vae.decode(latents.to(vae.dtype) / float(vae.config.scaling_factor) + _shift(vae)).sample


def _shift(vae: Any) -> float:
    return float(getattr(vae.config, "shift_factor", None) or 0.0)


def tokenize(tokenizer: Any, prompts: Sequence[str]) -> Any:
    """`prompts` as token ids padded to the tokenizer's maximum length (truncated beyond it)."""
    return tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )


def encode_text(tokenizer: Any, text_encoder: Any, prompts: Sequence[str]) -> Tensor:
    """The text encoder's last hidden state `[N, L, D]` for `prompts`, padded to the tokenizer's maximum length,
    on the text encoder's device."""
    tokens = tokenize(tokenizer, prompts)
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


def check_local_files(model: str) -> None:
    """What loading would refuse first, from names alone: a folder without model_index.json, a path that
    does not exist (a hub id is left to the cache lookup)."""
    path = Path(model).expanduser()
    if path.is_dir():
        _require(path / "model_index.json")
    elif not path.exists() and _looks_like_path(model):
        raise ModelError(f"Model path '{model}' does not exist.")


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


def load_components(folder: Path, *, dtype: torch.dtype, architecture: Architecture = SD) -> SDComponents:
    """unet, vae, the text encoder(s), tokenizer(s) and the scheduler config from a diffusers folder of
    `architecture`."""
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    index = _read_json(folder / "model_index.json")
    kind = index.get("_class_name", "an unknown pipeline")
    if ("text_encoder_2" in index) != ("text_encoder_2" in architecture.components) or "transformer" in index or (
        index.get("unet", [None, None])[1] not in ("UNet2DConditionModel", None)
    ):
        raise ModelError(f"'{folder}' holds a {kind}; this prior needs a {architecture.title} architecture.")
    variants: dict[str, str | None] = {}
    for sub, stem in architecture.components.items():
        if sub not in index or index[sub][0] is None:
            raise ModelError(f"'{folder}' has no {sub} (model_index.json), so it isn't a {architecture.title} model.")
        if stem is not None:
            _require(folder / sub / "config.json")
            variants[sub] = _weights_variant(folder / sub, stem)
    _require(folder / "scheduler" / "scheduler_config.json")
    tokenizers = [sub for sub in architecture.components if sub.startswith("tokenizer")]
    for sub in tokenizers:
        if not (folder / sub / "tokenizer.json").is_file():
            _require(folder / sub / "vocab.json")
            _require(folder / sub / "merges.txt")

    def load(sub: str, fn: Any) -> Any:
        try:
            return fn()
        except _LOAD_ERRORS as e:
            raise ModelError(f"Could not load {sub} from '{folder}': {reason(e, with_type=True)}") from None

    common = {"use_safetensors": True, "local_files_only": True}
    lean = {"low_cpu_mem_usage": _HAS_ACCELERATE}  # diffusers warns (and falls back) without accelerate
    texts = {
        sub: load(sub, lambda sub=sub: getattr(transformers, _TEXT_ENCODERS[sub]).from_pretrained(
            folder / sub, dtype=dtype, variant=variants[sub], **common))
        for sub in architecture.components if sub in _TEXT_ENCODERS
    }
    tokens = {sub: load(sub, lambda sub=sub: CLIPTokenizer.from_pretrained(folder / sub, local_files_only=True))
              for sub in tokenizers}
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
        text_encoder=texts["text_encoder"],
        tokenizer=tokens["tokenizer"],
        scheduler_config=_read_json(folder / "scheduler" / "scheduler_config.json"),
        text_encoder_2=texts.get("text_encoder_2"),
        tokenizer_2=tokens.get("tokenizer_2"),
        zero_empty_negative=bool(index.get("force_zeros_for_empty_prompt", "text_encoder_2" in architecture.components)),
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


# ---------------------------------------------------------------------- single-file checkpoints


class _CheckpointShapes(Mapping):
    """Key -> object with `.shape` (what diffusers' model-type inference reads), from the file's header alone."""

    def __init__(self, path: Path) -> None:
        self._shapes = header_shapes(path)

    def __getitem__(self, key: str) -> SimpleNamespace:
        return SimpleNamespace(shape=torch.Size(self._shapes[key]))

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)


def infer_base_repo(path: Path, architecture: Architecture = SD) -> str:
    """The hub repo whose configs describe this original-format checkpoint (diffusers' own inference)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS, infer_diffusers_model_type

    try:
        model_type = infer_diffusers_model_type(_CheckpointShapes(path))
    except _LOAD_ERRORS as e:
        raise ModelError(f"'{path}' is not a readable safetensors checkpoint ({reason(e, with_type=True)}).") from None
    if model_type not in architecture.single_file_types:
        raise ModelError(f"'{path}' looks like a '{model_type}' checkpoint; this prior needs {architecture.title}.")
    return DIFFUSERS_DEFAULT_PIPELINE_PATHS[model_type]["pretrained_model_name_or_path"]


def load_single_file(path: Path, *, config: str | None, dtype: torch.dtype, architecture: Architecture = SD) -> SDComponents:
    import diffusers

    if path.suffix.lower() != ".safetensors":
        raise ModelError(
            f"'{path}' is not a .safetensors file; Lasagna refuses pickle checkpoints (.ckpt/.pt/.bin): "
            "convert it to safetensors first."
        )
    if config is None:
        repo = infer_base_repo(path, architecture)
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
        pipe = getattr(diffusers, architecture.pipeline).from_single_file(
            str(path), config=str(config_dir), local_files_only=True, torch_dtype=dtype, **architecture.pipeline_options
        )
    except _LOAD_ERRORS as e:
        raise ModelError(f"Could not load the single-file checkpoint '{path}': {reason(e, with_type=True)}") from None
    return SDComponents(
        pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, dict(pipe.scheduler.config),
        text_encoder_2=getattr(pipe, "text_encoder_2", None), tokenizer_2=getattr(pipe, "tokenizer_2", None),
        zero_empty_negative=bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False)),
    )
