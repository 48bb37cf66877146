"""What Lasagna's own pixel-space priors share: a small diffusers `UNet2DModel` that denoises an image at a low
resolution given condition pictures as extra input channels and a class (a light direction, a colour word).

The noisy image (3 channels, in [-1, 1]) and the task's condition channels are concatenated; class i is
`classes[i]` of the weights file and one extra class (the last) means "no class" (classifier-free guidance's
unconditional row). Trained (`lasagna train`) with classifier-free dropout, eps-prediction and a DDPM
schedule. For relighting, the unconditional row of SDS keeps the condition pictures and drops only the class,
the way a ControlNet prior keeps its hint under the negative prompt: guidance then amplifies what the *class*
adds. For colouring (`unconditional_drops_pictures`) it drops the pictures too: with no prompt both rows
would otherwise be the same, and SDS without guidance paints the washed-out mean of all colourings. Guidance
then amplifies the pictures and the class as one, and the line art outweighs a colour word; a family with a
`class_emphasis` w > 0 adds a third row (the pictures, no class) and pushes the conditional row w times
further along what the class adds (`guided_pair`), so guidance weighs the class (1 + w) times the pictures.

A task is a subclass (`builtin.BuiltinPrior` relights, `builtin_color.BuiltinColorPrior` colours) that says
its name, its shipped file, its condition channels and how a prompt becomes a `PixelCondition`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lasagna_core.errors import ModelError
from lasagna_core.priors.base import Condition, Prior, classifier_free_guidance
from lasagna_core.priors.pixel_file import FORMAT, load_weights, read_metadata, shipped_weights, verify_sha256, file_task
from lasagna_core.priors.schedule import NoiseSchedule

MULTIPLE = 8  # working sides: the U-Net halves twice (needs 4), the layer generator needs 8


@dataclass(frozen=True)
class PixelCondition(Condition):
    """classes: class ids `[2]` on the prior's device, row 0 the negative prompt's (or the null class), row 1
    the prompt's; channels: the condition pictures `[1, C, h, w]` in the network's scale, which both rows keep
    (area-resized to the noisy image's size when they differ)."""

    classes: Tensor
    channels: Tensor
    class_asked: bool = False  # the prompt's row has a class (known without reading `classes` off the device)


class PixelPrior(Prior):
    """SDS and direct sampling through a pixel-space conditional U-Net (see module doc).

    Attributes: `unet` (frozen), `classes` (names in class-id order), `null_class`, `resolution`, `multiple`,
    `schedule`, `scheduler_config`, `training` (what the weights file says about how it was trained), `source`,
    `has_optional_channels` (the file's network takes the family's `optional_channels` too).
    """

    task: ClassVar[str]
    model_name: ClassVar[str]  # what --model says for the shipped weights ("builtin")
    weights_file: ClassVar[str]  # the shipped file, in lasagna_core/weights
    condition_channels: ClassVar[int]
    optional_channels: ClassVar[int] = 0  # condition channels a newer file of the family adds after the pictures
    what: ClassVar[str]  # "relighting", "colouring": for messages
    unconditional_drops_pictures: ClassVar[bool] = False  # the uncond row: zeros for the pictures too, not only the null class

    def __init__(
        self,
        unet: Any,
        *,
        classes: list[str],
        scheduler_config: dict[str, Any],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        training: dict[str, Any] | None = None,
        source: str = "",
        config: Any = None,
    ) -> None:
        self.config = type(self).Config() if config is None else config
        self.device = torch.device(device)
        self.dtype = dtype
        self.source = source
        self.training = dict(training or {})
        self.classes = list(classes)
        self.null_class = len(self.classes)
        if unet.config.num_class_embeds != self.null_class + 1:
            raise ModelError(
                f"Model '{source}': its U-Net has {unet.config.num_class_embeds} classes but the file names "
                f"{len(self.classes)} (+1 null class)."
            )
        accepted = sorted({3 + self.condition_channels, 3 + self.condition_channels + self.optional_channels})
        if unet.config.in_channels not in accepted or unet.config.out_channels != 3:
            raise ModelError(
                f"Model '{source}' is not a built-in {self.what} prior "
                f"(needs {' or '.join(map(str, accepted))} input and 3 output channels)."
            )
        self.has_optional_channels = bool(self.optional_channels) and unet.config.in_channels == max(accepted)
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
    def is_own_name(cls, model: str) -> bool:
        return model.strip().lower() == cls.model_name

    @classmethod
    def shipped(cls) -> Path:
        return shipped_weights(cls.weights_file)

    @classmethod
    def probe(cls, model: str) -> bool:
        """The shipped weights' name, or a file whose header says `lasagna train` wrote it for this task."""
        return cls.is_own_name(model) or file_task(Path(model).expanduser()) == cls.task

    @classmethod
    def load(
        cls, model: str, config: Any = None, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> "PixelPrior":
        """The shipped weights (SHA-256 required) or the path of a file `lasagna train` wrote."""
        if cls.is_own_name(model):
            path, required, what = cls.shipped(), True, f"The built-in {cls.what} prior's weights file"
            if not path.is_file():
                raise ModelError(f"The built-in {cls.what} prior's weights are missing from this installation ({path}); reinstall Lasagna.")
        else:
            path, required, what = Path(model).expanduser(), False, "Model file"
            if not path.is_file():
                raise ModelError(f"Model path '{model}' does not exist.")
        verify_sha256(path, required=required, what=what)
        _one_cpu_thread(torch.device(device))
        meta = read_metadata(path)
        if meta is None:
            raise ModelError(f"{what} '{path}' is not a readable safetensors file (truncated or damaged?).")
        if meta.get("format") != FORMAT or file_task(path) != cls.task:
            raise ModelError(f"{what} '{path}' is not a Lasagna built-in {cls.what} prior.")
        weights = load_weights(path, meta)
        return cls(weights.unet, classes=weights.classes, scheduler_config=weights.scheduler_config, device=device,
                   dtype=dtype, training=weights.training, source=model, config=config)

    # ------------------------------------------------------------------ the interface

    def encode(self, image: Tensor) -> Tensor:
        """Pixel space: the image itself, scaled to [-1, 1], is the diffused variable (no encoder)."""
        if image.shape[-2] % 4 or image.shape[-1] % 4:
            raise ValueError(f"image sides must be multiples of 4, got {list(image.shape[-2:])}")
        return image.to(self.device, torch.float32) * 2 - 1

    def predict_noise(self, noisy: Tensor, t: Tensor, cond: Condition) -> tuple[Tensor, Tensor]:
        """(eps_uncond, eps_cond) of `guided_pair` for the condition's two classes."""
        if not isinstance(cond, PixelCondition):
            raise TypeError(f"a built-in prior needs a PixelCondition from its condition(), got {type(cond).__name__}")
        batch = noisy.shape[0]
        channels = self.fit_channels(cond.channels, noisy.shape[-2:]).expand(batch, -1, -1, -1)
        classes = cond.classes.to(self.device).repeat_interleave(batch)
        return self.guided_pair(noisy, t, channels, classes[:batch], classes[batch:], class_asked=cond.class_asked)

    @property
    def class_emphasis(self) -> float:
        """How much further than plain guidance the class is pushed (module doc); 0 for families without it."""
        return 0.0

    def guided_pair(self, noisy: Tensor, t: Tensor, channels: Tensor, uncond_classes: Tensor, cond_classes: Tensor,
                    *, class_asked: bool) -> tuple[Tensor, Tensor]:
        """(eps_uncond, eps_cond) float32 from one batched call: the unconditional row has the null class (and
        zeros for the pictures where the family drops them), the conditional row the pictures and its class;
        with `class_emphasis` w and a class asked, a third row of the pictures alone, and eps_cond becomes
        eps_cond + w (eps_cond - eps_pictures)."""
        emphasis = self.class_emphasis if class_asked else 0.0
        rows = [(self._unconditional(channels), uncond_classes), (channels, cond_classes)]
        if emphasis:
            rows.append((channels, torch.full_like(cond_classes, self.null_class)))
        n = len(rows)
        eps = self.predict(torch.cat([noisy] * n), torch.cat([t] * n), torch.cat([c for c, _ in rows]),
                           torch.cat([k for _, k in rows])).float().chunk(n)
        eps_cond = eps[1] + emphasis * (eps[1] - eps[2]) if emphasis else eps[1]
        return eps[0], eps_cond

    def predict(self, noisy: Tensor, t: Tensor, channels: Tensor, classes: Tensor) -> Tensor:
        """eps for noisy images [B,3,h,w] in [-1,1]; `channels` [B,C,h,w] the condition pictures in the network's
        scale (zeros = dropped), `classes` [B] long (null_class = no class)."""
        inp = torch.cat([noisy, channels], dim=1).to(self.dtype)
        return self.unet(inp, t, class_labels=classes, return_dict=False)[0]

    def checked_base(self, base: Tensor) -> Tensor:
        """The base `condition` takes, [1, 3, h, w], as float32 on the prior's device (ValueError otherwise)."""
        if base.ndim != 4 or base.shape[0] != 1 or base.shape[1] != 3:
            raise ValueError(f"base must be [1, 3, H, W], got {list(base.shape)}")
        return base.to(self.device, torch.float32)

    def _unconditional(self, channels: Tensor) -> Tensor:
        return torch.zeros_like(channels) if self.unconditional_drops_pictures else channels

    def fit_channels(self, channels: Tensor, size: Any) -> Tensor:
        channels = channels.to(self.device, torch.float32)
        if tuple(channels.shape[-2:]) != tuple(size):
            channels = F.interpolate(channels, size=tuple(size), mode="area")
        return channels

    @torch.no_grad()
    def sample_classes(
        self, channels: Tensor, classes: list[int], *, steps: int, guidance: float, generator: torch.Generator | None
    ) -> Tensor:
        """Direct generation: DDIM-sample images [B,3,h,w] in [0,1] for condition pictures `channels` [B,C,h,w]
        (network scale) and one class id each, with classifier-free guidance on the class."""
        from diffusers import DDIMScheduler

        # Clipping the x0 estimate to the image range keeps high-noise steps sane: with the cosine schedule
        # alpha_bar is ~0 near t = T, where an eps-model's x0 = (x - sqrt(1 - a) eps) / sqrt(a) blows up its
        # small errors into whole-picture colour casts.
        scheduler = DDIMScheduler.from_config(self.scheduler_config, clip_sample=True)
        scheduler.set_timesteps(steps, device=self.device)
        b = channels.shape[0]
        channels = channels.to(self.device, torch.float32)
        null = torch.full((b,), self.null_class, device=self.device)
        ids = torch.tensor(list(classes), device=self.device)
        asked = any(c != self.null_class for c in classes)
        rng_device = generator.device if generator is not None else self.device
        x = torch.randn((b, 3, *channels.shape[-2:]), generator=generator, device=rng_device).to(self.device)
        for t in scheduler.timesteps:
            tt = torch.full((b,), int(t), device=self.device, dtype=torch.long)
            eps_u, eps_c = self.guided_pair(x, tt, channels, null, ids, class_asked=asked)
            x = scheduler.step(classifier_free_guidance(eps_u, eps_c, guidance), t, x).prev_sample
        return ((x + 1) / 2).clamp(0, 1)


def _one_cpu_thread(device: torch.device) -> None:
    """On the CPU, run PyTorch single-threaded unless the user chose a count with OMP_NUM_THREADS.

    The network is far too small (~1 M parameters) to gain from intra-op threads, and on a busy machine
    spinning OpenMP threads made a whole 1024 x 1024 `shade` 26x slower (505 s with 2 threads vs 19 s with 1
    on the project's shared 2-core machine)."""
    if device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)
