"""Lasagna's own relighting prior: a small pixel-space conditional diffusion model that ships in the package.

The model is a diffusers `UNet2DModel` that denoises a relit image at a low resolution (lighting is
low-frequency) given

* the base image, as 3 extra input channels (the noisy image and the base are concatenated), and
* the light direction, as a class embedding: class i is `directions[i]` of the weights file, and one extra
  class (the last) means "no direction" (classifier-free guidance's unconditional row).

It is trained (`lasagna train builtin`, see `lasagna_core.train`) with classifier-free dropout of both
conditions, eps-prediction and a DDPM schedule. For SDS the unconditional row keeps the base and drops
only the direction, the way a ControlNet prior keeps its hint under the negative prompt: guidance then
amplifies what the *direction* adds to the picture, not what the base does.

One file holds everything: a `.safetensors` whose tensors are the U-Net's state dict and whose string
metadata (`format`, `unet_config`, `scheduler_config`, `directions`, `training`) describe it. A SHA-256
file beside it (`NAME.safetensors.sha256`, as `sha256sum` writes it) is checked at load when present, and is
required for the shipped weights: a damaged file is refused with one line instead of shading nonsense.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lasagna_core.directions import parse_direction
from lasagna_core.errors import ModelError, UsageError, reason
from lasagna_core.priors.base import Condition, Prior, classifier_free_guidance
from lasagna_core.priors.registry import Capabilities, register_prior
from lasagna_core.priors.schedule import NoiseSchedule

FORMAT = "lasagna-builtin-prior/1"
BUILTIN_NAME = "builtin"
WEIGHTS_PACKAGE = "lasagna_core.weights"
WEIGHTS_FILE = "builtin.safetensors"
MULTIPLE = 8  # working sides: the U-Net halves twice (needs 4), the layer generator needs 8


def shipped_weights() -> Path:
    """The path of the weights file shipped inside the package (it may be missing in a broken install)."""
    return Path(str(resources.files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_FILE)))


def is_builtin_name(model: str) -> bool:
    return model.strip().lower() == BUILTIN_NAME


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


def is_builtin_file(path: Path) -> bool:
    """True for a `.safetensors` file written by `lasagna train builtin` (judged by its header only)."""
    meta = read_metadata(path) if path.is_file() else None
    return bool(meta) and meta.get("format") == FORMAT


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


@dataclass(frozen=True)
class DirectionCondition(Condition):
    """classes: direction class ids `[2]` on the prior's device, row 0 the negative prompt's direction (or the
    null class), row 1 the prompt's; base: the base `[1, 3, h, w]` in [0, 1], which both rows keep."""

    classes: Tensor
    base: Tensor


@register_prior("builtin", title="built-in")
class BuiltinPrior(Prior):
    """SDS through the built-in pixel-space relighting model (see module doc).

    Attributes: `unet` (diffusers UNet2DModel, frozen), `directions` (class names in class-id order),
    `null_class`, `resolution`, `multiple`, `schedule`, `scheduler_config`, `training` (what the weights
    file says about how it was trained), `source`. The family has no options (its Config is empty).
    """

    capabilities = Capabilities(samples=True, encoder=False, conditions_on=frozenset({"direction", "image"}))

    def __init__(
        self,
        unet: Any,
        *,
        directions: list[str],
        scheduler_config: dict[str, Any],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        training: dict[str, Any] | None = None,
        source: str = "",
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.source = source
        self.training = dict(training or {})
        self.directions = list(directions)
        self.null_class = len(self.directions)
        if unet.config.num_class_embeds != self.null_class + 1:
            raise ModelError(
                f"Model '{source}': its U-Net has {unet.config.num_class_embeds} classes but the file names "
                f"{len(self.directions)} directions (+1 null class)."
            )
        if unet.config.in_channels != 6 or unet.config.out_channels != 3:
            raise ModelError(f"Model '{source}' is not a built-in relighting prior (needs 6 input, 3 output channels).")
        self.unet = unet
        unet.requires_grad_(False)
        unet.eval()
        unet.to(self.device)
        if unet.dtype != dtype:
            unet.to(dtype)
        self.scheduler_config = dict(scheduler_config)
        if self.scheduler_config.get("prediction_type", "epsilon") != "epsilon":
            raise ModelError(f"Model '{source}' must be an eps-prediction model.")
        self.schedule = NoiseSchedule.from_config(self.scheduler_config, self.device)
        size = unet.config.sample_size
        self.resolution = int(max(size) if isinstance(size, (list, tuple)) else size)
        self.multiple = MULTIPLE

    # ------------------------------------------------------------------ loading

    @classmethod
    def probe(cls, model: str) -> bool:
        """`builtin`, or a file whose header says `lasagna train builtin` wrote it."""
        return is_builtin_name(model) or is_builtin_file(Path(model).expanduser())

    @classmethod
    def load(
        cls, model: str, config: Any = None, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> "BuiltinPrior":
        """`builtin` (the shipped weights, SHA-256 required) or the path of a file `lasagna train builtin` wrote."""
        if is_builtin_name(model):
            path, required, what = shipped_weights(), True, "The built-in prior's weights file"
            if not path.is_file():
                raise ModelError(f"The built-in prior's weights are missing from this installation ({path}); reinstall Lasagna.")
        else:
            path, required, what = Path(model).expanduser(), False, "Model file"
            if not path.is_file():
                raise ModelError(f"Model path '{model}' does not exist.")
        verify_sha256(path, required=required, what=what)
        _one_cpu_thread(torch.device(device))
        meta = read_metadata(path)
        if meta is None:
            raise ModelError(f"{what} '{path}' is not a readable safetensors file (truncated or damaged?).")
        if meta.get("format") != FORMAT:
            raise ModelError(f"{what} '{path}' is not a Lasagna built-in prior (format {meta.get('format')!r}).")
        unet, info = _unet_from_file(path, meta)
        return cls(unet, device=device, dtype=dtype, source=model, **info)

    # ------------------------------------------------------------------ the interface

    def class_of(self, direction: str) -> int:
        try:
            return self.directions.index(direction)
        except ValueError:
            raise UsageError(
                f"the built-in prior was not trained for the direction '{direction}' "
                f"(it knows: {', '.join(self.directions)})"
            ) from None

    @classmethod
    def check_prompt(cls, prompt: str) -> None:
        """The prompt must name a light direction (the classes the network was trained on)."""
        parse_direction(prompt)

    @torch.no_grad()
    def condition(self, prompt: str, base: Tensor, negative_prompt: str = "") -> DirectionCondition:
        """Parse the prompt into a direction (UsageError with one line if it can't)."""
        if base.ndim != 4 or base.shape[0] != 1 or base.shape[1] != 3:
            raise ValueError(f"base must be [1, 3, H, W], got {list(base.shape)}")
        wanted = self.class_of(parse_direction(prompt))
        negative = self.class_of(parse_direction(negative_prompt)) if negative_prompt.strip() else self.null_class
        ids = torch.tensor([negative, wanted], dtype=torch.long, device=self.device)
        return DirectionCondition(prompt, negative_prompt, classes=ids, base=base.to(self.device, torch.float32))

    def encode(self, image: Tensor) -> Tensor:
        """Pixel space: the image itself, scaled to [-1, 1], is the diffused variable (no encoder)."""
        if image.shape[-2] % 4 or image.shape[-1] % 4:
            raise ValueError(f"image sides must be multiples of 4, got {list(image.shape[-2:])}")
        return image.to(self.device, torch.float32) * 2 - 1

    def predict_noise(self, noisy: Tensor, t: Tensor, cond: Condition) -> tuple[Tensor, Tensor]:
        """(eps_uncond, eps_cond): both rows keep the base; only the direction class is dropped for uncond."""
        if not isinstance(cond, DirectionCondition):
            raise TypeError(f"the built-in prior needs a DirectionCondition from its condition(), got {type(cond).__name__}")
        batch = noisy.shape[0]
        base = self._hint(cond.base, noisy.shape[-2:]).expand(batch, -1, -1, -1)
        classes = cond.classes.to(self.device).repeat_interleave(batch)
        eps = self.predict(torch.cat([noisy, noisy]), torch.cat([t, t]), torch.cat([base, base]), classes)
        eps_uncond, eps_cond = eps.float().chunk(2)
        return eps_uncond, eps_cond

    # ------------------------------------------------------------------ the network and direct sampling

    def predict(self, noisy: Tensor, t: Tensor, base: Tensor, classes: Tensor) -> Tensor:
        """eps for noisy images [B,3,h,w] in the model's [-1,1] scale; `base` [B,3,h,w] in [-1,1] (zeros =
        dropped), `classes` [B] long (null_class = no direction)."""
        inp = torch.cat([noisy, base], dim=1).to(self.dtype)
        return self.unet(inp, t, class_labels=classes, return_dict=False)[0]

    def _hint(self, hint: Tensor, size: Any) -> Tensor:
        hint = hint.to(self.device, torch.float32)
        if tuple(hint.shape[-2:]) != tuple(size):
            hint = F.interpolate(hint, size=tuple(size), mode="area")
        return hint * 2 - 1

    @torch.no_grad()
    def sample(
        self,
        base: Tensor,
        prompts: list[str],
        *,
        steps: int = 50,
        guidance: float = 3.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Direct generation (the 'ControlNet' baseline): DDIM-sample relit images [B,3,h,w] in [0,1] for bases
        [B,3,h,w] in [0,1] and one prompt (or direction name) each, with classifier-free guidance on the
        direction."""
        from diffusers import DDIMScheduler

        # Clipping the x0 estimate to the image range keeps high-noise steps sane: with the cosine schedule
        # alpha_bar is ~0 near t = T, where an eps-model's x0 = (x - sqrt(1 - a) eps) / sqrt(a) blows up its
        # small errors into whole-picture colour casts.
        scheduler = DDIMScheduler.from_config(self.scheduler_config, clip_sample=True)
        scheduler.set_timesteps(steps, device=self.device)
        b = base.shape[0]
        cond_base = self._hint(base, base.shape[-2:])
        classes = torch.tensor([self.null_class] * b + [self.class_of(parse_direction(p)) for p in prompts], device=self.device)
        rng_device = generator.device if generator is not None else self.device
        x = torch.randn(base.shape, generator=generator, device=rng_device).to(self.device)
        for t in scheduler.timesteps:
            tt = torch.full((2 * b,), int(t), device=self.device, dtype=torch.long)
            eps = self.predict(torch.cat([x, x]), tt, torch.cat([cond_base, cond_base]), classes).float()
            eps_u, eps_c = eps.chunk(2)
            x = scheduler.step(classifier_free_guidance(eps_u, eps_c, guidance), t, x).prev_sample
        return ((x + 1) / 2).clamp(0, 1)


def _one_cpu_thread(device: torch.device) -> None:
    """On the CPU, run PyTorch single-threaded unless the user chose a count with OMP_NUM_THREADS.

    The network is far too small (32 px, ~1 M parameters) to gain from intra-op threads, and on a busy
    machine spinning OpenMP threads made a whole 1024 x 1024 `shade` 26x slower (505 s with 2 threads vs
    19 s with 1 on the project's shared 2-core machine)."""
    import os

    if device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)


# ---------------------------------------------------------------------- the file format


def default_unet_config(resolution: int, classes: int) -> dict[str, Any]:
    """The architecture `lasagna train builtin` uses by default: about 1.1 M parameters, attention at the lowest resolution only."""
    return {
        "sample_size": resolution,
        "in_channels": 6,
        "out_channels": 3,
        "layers_per_block": 1,
        "block_out_channels": [32, 64, 64],
        "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
        "attention_head_dim": 32,
        "norm_num_groups": 16,
        "num_class_embeds": classes + 1,
    }


def default_scheduler_config() -> dict[str, Any]:
    return {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "epsilon",
        "clip_sample": True,
    }


def new_unet(config: dict[str, Any]) -> Any:
    from diffusers import UNet2DModel

    return UNet2DModel(**config)


def model_config(model: Any) -> dict[str, Any]:
    """A diffusers model's config as plain JSON data (no private keys, tuples as lists): what the weights file
    stores and what a checkpoint's fingerprint compares."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(model.config).items() if not k.startswith("_")}


def save_weights(
    unet: Any,
    path: Path,
    *,
    directions: list[str],
    scheduler_config: dict[str, Any],
    training: dict[str, Any] | None = None,
) -> Path:
    """Write the U-Net's weights (float32) plus the metadata that describes them, atomically, and `.sha256`."""
    from safetensors.torch import save_file

    meta = {
        "format": FORMAT,
        "unet_config": json.dumps(model_config(unet)),
        "scheduler_config": json.dumps(dict(scheduler_config)),
        "directions": json.dumps(list(directions)),
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


def _unet_from_file(path: Path, meta: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    from safetensors.torch import load_file

    try:
        config = json.loads(meta["unet_config"])
        info = {
            "directions": list(json.loads(meta["directions"])),
            "scheduler_config": dict(json.loads(meta["scheduler_config"])),
            "training": dict(json.loads(meta.get("training", "{}"))),
        }
    except (KeyError, ValueError, TypeError) as e:
        raise ModelError(f"'{path}' has broken metadata ({reason(e, with_type=True)}); retrain or reinstall it.") from None
    try:
        unet = new_unet(config)
        state = load_file(str(path))
        unet.load_state_dict(state, strict=True)
    except Exception as e:  # safetensors/torch raise many types for a damaged file
        raise ModelError(f"Could not load the built-in prior from '{path}': {reason(e, with_type=True)}") from None
    return unet, info
