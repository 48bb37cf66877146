"""Stable Diffusion 1.x / 2.x (epsilon or v-prediction), optionally with a ControlNet, as an SDS prior.

Loading follows diffusers' conventions, weights from `.safetensors` only, and never downloads: a hub id is
looked up in the Hugging Face cache (`lasagna models pull ID` fills it). Accepted model sources:

* a folder written by `StableDiffusionPipeline.save_pretrained` (model_index.json, unet/, vae/,
  text_encoder/, tokenizer/, scheduler/); fp16-variant-only folders work too;
* a hub id whose snapshot is in the cache (same layout);
* a single original-format `.safetensors` checkpoint (A1111/ComfyUI style). Its architecture configs come
  from `config=` (a diffusers folder or cached hub id of the same architecture) or, by default, from the
  cached snapshot of the base repo diffusers infers from the checkpoint's keys (SD 1.x ->
  stable-diffusion-v1-5/stable-diffusion-v1-5, SD 2.x -> stabilityai/stable-diffusion-2-1).

Choices, per DreamFusion/threestudio: the noise schedule is always the model's *training* DDPM schedule
(rebuilt from whatever sampler config the checkpoint ships); w(t) = 1 - alphas_cumprod[t]; the image is
encoded to the posterior *mean* (no VAE sampling noise, so a seeded generator gives identical losses).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lasagna_core.errors import ModelError, reason
from lasagna_core.priors.base import Condition, Prior

# Sub-folders of a diffusers Stable Diffusion folder that the prior needs, with their weight-file stems.
COMPONENTS: dict[str, str | None] = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
    "tokenizer": None,
    "scheduler": None,
}
CONTROLNET_WEIGHTS = "diffusion_pytorch_model"
FAST_ENCODERS = (None, "half")
"""Gradient paths cheaper than the full VAE encoder (see StableDiffusionPrior.encode)."""
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


def v_to_epsilon(v: Tensor, noisy: Tensor, alpha_bar: Tensor) -> Tensor:
    """eps from a v-prediction: with x_t = sqrt(a) x0 + sqrt(1-a) eps and v = sqrt(a) eps - sqrt(1-a) x0,
    eps = sqrt(a) v + sqrt(1-a) x_t. `alpha_bar` broadcasts against the latents ([B,1,1,1])."""
    return alpha_bar.sqrt() * v + (1 - alpha_bar).sqrt() * noisy


def sample_to_epsilon(x0: Tensor, noisy: Tensor, alpha_bar: Tensor) -> Tensor:
    """eps from an x0-prediction: eps = (x_t - sqrt(a) x0) / sqrt(1-a)."""
    return (noisy - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()


class StableDiffusionPrior(Prior):
    """SDS through a frozen SD U-Net (+ optional ControlNet), in latent space, back through the VAE encoder.

    Attributes the loop may read: `multiple`, `resolution`, `device`, `dtype`, `prediction_type`,
    `num_train_timesteps`, `source` (what was loaded). The diffusers modules are public attributes
    (`unet`, `vae`, `text_encoder`, `tokenizer`, `controlnet`, `scheduler`) for tests and diagnostics only.
    """

    def __init__(
        self,
        *,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        scheduler_config: Mapping[str, Any],
        controlnet: Any | None = None,
        device: torch.device,
        dtype: torch.dtype,
        controlnet_scale: float = 1.0,
        source: str = "",
        low_memory: bool = False,
        fast_encoder: str | None = None,
        encoder_vae: Any | None = None,
    ) -> None:
        from diffusers import DDPMScheduler

        _check_compatible(unet, vae, text_encoder, controlnet, source)
        self.device = torch.device(device)
        self.dtype = dtype
        self.source = source
        self.unet, self.vae, self.text_encoder, self.controlnet = unet, vae, text_encoder, controlnet
        self.tokenizer = tokenizer
        if fast_encoder not in FAST_ENCODERS:
            raise ValueError(f"fast_encoder must be one of {FAST_ENCODERS}, got {fast_encoder!r}")
        self.fast_encoder = fast_encoder
        self.encoder_vae = encoder_vae  # a TAESD-style AutoencoderTiny used for the gradient path, or None
        self.low_memory = bool(low_memory)
        for module in (unet, vae, text_encoder, controlnet, encoder_vae):
            if module is not None:
                module.requires_grad_(False)
                module.eval()
                module.to(self.device)
                if module.dtype != dtype:  # loaders already load in `dtype`; this is for hand-built modules
                    module.to(dtype)
        self.controlnet_scale = float(controlnet_scale)

        # The training schedule, whatever sampler the checkpoint ships (PNDM, DDIM, Euler...).
        self.scheduler = DDPMScheduler.from_config(dict(scheduler_config))
        self.prediction_type: str = self.scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ModelError(
                f"Model '{source}' uses prediction type '{self.prediction_type}', which Lasagna can't use."
            )
        self.num_train_timesteps: int = int(self.scheduler.config.num_train_timesteps)
        # Kept on the device so add_noise and w(t) never copy from the host inside sds_loss.
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.scheduler.alphas_cumprod = self.alphas_cumprod
        # The noising tables, once per prior rather than per step (the same `** 0.5` DDPMScheduler.add_noise uses).
        self._cond_cache: tuple[Any, ...] | None = None  # (condition, batch, latent size, text, hint)
        if self.low_memory:
            self._enable_low_memory()

        vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.vae_scale = vae_scale
        self.multiple = vae_scale * 2 ** (len(unet.config.block_out_channels) - 1)
        sample_size = unet.config.sample_size
        if isinstance(sample_size, (list, tuple)):
            sample_size = max(sample_size)
        self.resolution = int(sample_size) * vae_scale
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        model: str,
        *,
        controlnet: str | None = None,
        device: torch.device | str,
        dtype: torch.dtype,
        config: str | None = None,
        vae: str | None = None,
        fast_encoder: str | None = None,
        low_memory: bool = False,
    ) -> "StableDiffusionPrior":
        """Load from a diffusers folder, a cached hub id, or a single `.safetensors` checkpoint (see module doc).

        `config` only matters for a single-file checkpoint: a diffusers folder or cached hub id whose configs
        (model_index.json, */config.json, tokenizer, scheduler) describe the checkpoint's architecture.
        Raises ModelError with a one-line message for anything the user can fix.
        """
        path = Path(model).expanduser()
        if path.is_file():
            parts = _load_single_file(path, config=config, dtype=dtype)
        else:
            parts = _load_folder(resolve_model_folder(model), dtype=dtype)
        cn = _load_controlnet(controlnet, dtype=dtype) if controlnet else None
        tiny = _load_tiny_autoencoder(vae, dtype=dtype) if vae else None
        return cls(
            **parts, controlnet=cn, device=torch.device(device), dtype=dtype, source=model,
            encoder_vae=tiny, fast_encoder=fast_encoder, low_memory=low_memory,
        )

    def _enable_low_memory(self) -> None:
        """What `--low-memory` switches on: the encoder recomputes its activations in the backward pass
        (gradient checkpointing) instead of storing them, the VAE encodes batches one image at a time, the
        VAE decoder (SDS never decodes) leaves the device, and the text encoder stays on the CPU (it runs
        once per run). Attention is left to PyTorch's scaled-dot-product kernels, whose flash and
        memory-efficient paths never hold the full attention matrix: diffusers' attention slicing would
        replace them with sliced plain matmuls that hold [heads/slices, N, N] and are slower."""
        for vae in (self.vae, self.encoder_vae):
            if vae is None:
                continue
            if getattr(vae, "_supports_gradient_checkpointing", False):
                vae.enable_gradient_checkpointing()
            if hasattr(vae, "enable_slicing"):
                vae.enable_slicing()
        if getattr(self.vae, "decoder", None) is not None:
            self.vae.decoder.to("cpu")
        self.text_encoder.to("cpu", torch.float32)  # half-precision CPU kernels are slow or missing

    def encode(self, image: Tensor) -> Tensor:
        """Scaled latents of `image` [B,3,h,w] in [0,1], float32, differentiable w.r.t. `image`.

        The full VAE encoder by default (the posterior mean). `fast_encoder="half"` encodes the image at half
        the size and upsamples the latent 2x (bilinear): a quarter of the pixels forward and backward (5-7x
        faster at 512 px on a CPU, benchmarks/RESULTS.md), at the price of a blurrier latent. With `encoder_vae` (a TAESD-style AutoencoderTiny, whose latents
        are already in the scaled space) the tiny encoder replaces the VAE's.
        """
        if image.shape[-2] % self.vae_scale or image.shape[-1] % self.vae_scale:
            raise ValueError(f"image sides must be multiples of {self.vae_scale}, got {list(image.shape[-2:])}")
        x = image.to(self.device, self.dtype) * 2 - 1
        size = (x.shape[-2] // self.vae_scale, x.shape[-1] // self.vae_scale)
        if self.fast_encoder == "half":
            x = F.interpolate(x, scale_factor=0.5, mode="area")
        if self.encoder_vae is not None:
            cfg = self.encoder_vae.config
            latents = self.encoder_vae.encode(x).latents
            latents = (latents - float(getattr(cfg, "shift_factor", None) or 0.0)) * float(cfg.scaling_factor)
        else:
            latents = self.vae.encode(x).latent_dist.mean
            latents = (latents - self.shift_factor) * self.scaling_factor
        if tuple(latents.shape[-2:]) != size:
            latents = F.interpolate(latents, size=size, mode="bilinear", align_corners=False)
        return latents.float()

    # ------------------------------------------------------------------ the interface

    @torch.no_grad()
    def condition(self, prompt: str, base: Tensor, negative_prompt: str = "") -> Condition:
        if base.ndim != 4 or base.shape[0] != 1 or base.shape[1] != 3:
            raise ValueError(f"base must be [1, 3, H, W], got {list(base.shape)}")
        tokens = self.tokenizer(
            [negative_prompt, prompt],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        text_device = self.text_encoder.device  # the CPU under low_memory
        ids = tokens.input_ids.to(text_device)
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(text_device)
        embeddings = self.text_encoder(ids, attention_mask=mask)[0]  # last hidden state [2, L, D]
        embeddings = embeddings.to(self.device, self.dtype)
        hint = base.to(self.device, self.dtype) if self.controlnet is not None else None
        return Condition(prompt=prompt, negative_prompt=negative_prompt, embeddings=embeddings, hint=hint)

    def predict_noise(self, noisy: Tensor, t: Tensor, cond: Condition) -> tuple[Tensor, Tensor]:
        """(eps_uncond, eps_cond): one batched U-Net (+ ControlNet) call, converted from v or x0 when needed."""
        with torch.inference_mode():  # the frozen network: no autograd bookkeeping at all
            pred = self._predict(noisy, t, cond, noisy.shape[0]).float()
        if self.prediction_type != "epsilon":
            alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1).repeat(2, 1, 1, 1)
            convert = v_to_epsilon if self.prediction_type == "v_prediction" else sample_to_epsilon
            pred = convert(pred, torch.cat([noisy, noisy]), alpha_bar)
        eps_uncond, eps_cond = pred.chunk(2)
        return eps_uncond, eps_cond

    def _predict(self, noisy: Tensor, t: Tensor, cond: Condition, batch: int) -> Tensor:
        """One batched network call for [uncond x batch, cond x batch]; returns the raw prediction [2B, ...]."""
        latent_in = torch.cat([noisy, noisy]).to(self.dtype)
        t_in = torch.cat([t, t])
        text, hint = self._condition_inputs(cond, batch, tuple(noisy.shape[-2:]))
        extra: dict[str, Any] = {}
        if self.controlnet is not None:
            down, mid = self.controlnet(
                latent_in,
                t_in,
                encoder_hidden_states=text,
                controlnet_cond=hint,
                conditioning_scale=self.controlnet_scale,
                return_dict=False,
            )
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        return self.unet(latent_in, t_in, encoder_hidden_states=text, return_dict=False, **extra)[0]

    def _condition_inputs(self, cond: Condition, batch: int, latent_size: tuple[int, ...]) -> tuple[Tensor, Tensor | None]:
        """The text embeddings repeated for the batch and the resized control hint: the same every step of a
        run, so they are made once and reused while the condition, batch and size stay the same."""
        cached = self._cond_cache
        if cached is not None and cached[0] is cond and cached[1] == batch and cached[2] == latent_size:
            return cached[3], cached[4]
        text = cond.embeddings.to(self.device, self.dtype).repeat_interleave(batch, dim=0)
        hint = None
        if self.controlnet is not None:
            if cond.hint is None:
                raise ValueError("this prior has a ControlNet but the condition has no hint; call prior.condition()")
            hint = cond.hint.to(self.device, self.dtype)
            size = (latent_size[0] * self.vae_scale, latent_size[1] * self.vae_scale)
            if tuple(hint.shape[-2:]) != size:
                hint = F.interpolate(hint, size=size, mode="bilinear", align_corners=False, antialias=True)
            hint = hint.expand(2 * batch, -1, -1, -1)
        self._cond_cache = (cond, batch, latent_size, text, hint)
        return text, hint


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


def _load_folder(folder: Path, *, dtype: torch.dtype) -> dict[str, Any]:
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
    return {
        "unet": load(
            "unet",
            lambda: UNet2DConditionModel.from_pretrained(
                folder, subfolder="unet", torch_dtype=dtype, variant=variants["unet"], **common, **lean
            ),
        ),
        "vae": load(
            "vae",
            lambda: AutoencoderKL.from_pretrained(
                folder, subfolder="vae", torch_dtype=dtype, variant=variants["vae"], **common, **lean
            ),
        ),
        "text_encoder": load(
            "text_encoder",
            lambda: CLIPTextModel.from_pretrained(
                folder / "text_encoder", dtype=dtype, variant=variants["text_encoder"], **common
            ),
        ),
        "tokenizer": load(
            "tokenizer", lambda: CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        ),
        "scheduler_config": _read_json(folder / "scheduler" / "scheduler_config.json"),
    }


def _load_controlnet(controlnet: str, *, dtype: torch.dtype) -> Any:
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


def _load_tiny_autoencoder(vae: str, *, dtype: torch.dtype) -> Any:
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


def _check_compatible(unet: Any, vae: Any, text_encoder: Any, controlnet: Any | None, source: str) -> None:
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


def _load_single_file(path: Path, *, config: str | None, dtype: torch.dtype) -> dict[str, Any]:
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
                "same architecture as its config."
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
    return {
        "unet": pipe.unet,
        "vae": pipe.vae,
        "text_encoder": pipe.text_encoder,
        "tokenizer": pipe.tokenizer,
        "scheduler_config": dict(pipe.scheduler.config),
    }
