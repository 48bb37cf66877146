"""IC-Light (lllyasviel/IC-Light) as an option of the Stable Diffusion 1.5 family: its offset file, the merge into
the base U-Net, and the condition images it sees.

What its public demo (gradio_demo.py, gradio_demo_bg.py) does, and this module does the same way:

* The U-Net's `conv_in` is widened from 4 input channels to 8 ("fc": foreground-conditioned) or 12 ("fbc":
  foreground and background): the new input weights start at zero, the old four are copied, the bias is kept.
* The weights file is an OFFSET: a state dict with exactly the keys (and shapes) of the widened U-Net, in
  diffusers' key names, added to the base: merged[k] = base[k] + offset[k], loaded strictly. An offset whose
  keys or shapes don't fit the base is refused in one line (`check_fits`), before the model loads where the
  base's weights header can be read (a diffusers folder), and always before the merge.
* The condition images go to the VAE as uint8 u -> u / 127 - 1 (the demo's "so that 127 must be strictly 0.0"):
  not u / 127.5 - 1, so 0 -> -1, 127 -> exactly 0, 255 -> 128/127 (about 1.008). For Lasagna's float images
  v in [0, 1] (v = u / 255 for 8-bit input) that is (255 v - 127) / 127 (`model_pixels`), and 127/255 -> 0.0
  exactly in float32. They are encoded to the posterior's mode (its mean) times the scaling factor and
  concatenated after the noisy latent on the channel axis (foreground first, then the background), the same
  for every row of the batch, conditional and unconditional alike.
* The demo greys (127) what a matting network says is not the subject. Lasagna takes the matte from the
  document instead: the edit's coverage (the base's alpha, or `--mask`), so transparent pixels become grey.

The composite that SDS scores is encoded as every Stable Diffusion latent is (2 v - 1): IC-Light's demo decodes
its outputs with the same mapping, and the 0.4% difference of scale is far below what the prior can tell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lasagna_core.errors import ModelError
from lasagna_core.priors.registry import HubFiles
from lasagna_core.priors.sd_components import cached_snapshot, header_shapes
from lasagna_core.resample import resize

HUB_REPO = "lllyasviel/ic-light"
OFFSET_FILES = {"fc": "iclight_sd15_fc.safetensors", "fbc": "iclight_sd15_fbc.safetensors"}
VARIANTS = {8: "fc", 12: "fbc"}
"""conv_in's input channels -> the IC-Light variant: 4 noisy-latent channels + 4 per condition image."""
GREY = 127 / 255
"""The demo's background grey (uint8 127) in Lasagna's [0, 1] scale: the condition pixel value 0."""
BASE_CHANNELS = 4


@dataclass(frozen=True)
class Offset:
    """An IC-Light offset file, known from its header: where it is, and the shape of each of its tensors."""

    path: Path
    shapes: Mapping[str, tuple[int, ...]]

    @property
    def channels(self) -> int:
        return int(self.shapes["conv_in.weight"][1])

    @property
    def variant(self) -> str:
        return VARIANTS[self.channels]


@dataclass(frozen=True)
class IcLight:
    """What a prior with an IC-Light offset conditions on besides the text: the variant's condition channels
    (4 for fc, 8 for fbc) and, for fbc, the background [1, 3, H, W] in [0, 1] (grey where it is transparent)."""

    offset: Offset
    background: Tensor | None = None

    @property
    def condition_channels(self) -> int:
        return self.offset.channels - BASE_CHANNELS


def hub_files() -> HubFiles:
    """What `lasagna models pull lllyasviel/ic-light --iclight` fetches: the fc and fbc offsets (1.7 GB each)."""
    return HubFiles(tuple(OFFSET_FILES.values()))


def read_offset(name: str, *, background: bool) -> Offset:
    """The offset `--iclight NAME` names (a .safetensors file, or a folder or cached hub id holding the variant's
    file: fbc with --background, fc without), checked against the use asked for; nothing is loaded yet."""
    path = Path(name).expanduser()
    if not path.is_file():
        filename = OFFSET_FILES["fbc" if background else "fc"]
        folder = path if path.is_dir() else cached_snapshot(name, missing=(
            f"--iclight '{name}' is neither a file nor in the Hugging Face cache: run "
            f"`lasagna models pull {name} --iclight`, or pass the offset file itself."))
        path = folder / filename
        if not path.is_file():
            raise ModelError(
                f"--iclight '{name}' has no {filename}: run `lasagna models pull {HUB_REPO} --iclight`, "
                "or pass the offset file itself."
            )
    shapes = header_shapes(path)
    width = shapes.get("conv_in.weight")
    if width is None or len(width) != 4 or width[1] not in VARIANTS:
        found = "no conv_in.weight" if width is None else f"a conv_in taking {width[1] if len(width) > 1 else '?'} channels"
        raise ModelError(
            f"'{path.name}' is not an IC-Light offset: it has {found}, where IC-Light widens conv_in to 8 (fc) or 12 (fbc)."
        )
    offset = Offset(path, shapes)
    if background != (offset.variant == "fbc"):
        raise ModelError(
            f"'{path.name}' is an IC-Light {offset.variant} offset, which conditions on the foreground alone: drop "
            "--background, or use an fbc offset." if background else
            f"'{path.name}' is an IC-Light fbc offset: it needs --background FILE (the background it conditions on)."
        )
    return offset


def check_fits(offset: Offset, base: Mapping[str, tuple[int, ...]], source: str) -> None:
    """ModelError in one line unless the offset has exactly the keys of the base U-Net `base` (key -> shape) and
    each tensor the shape it has once conv_in is widened: merged[k] = base[k] + offset[k] must be strict."""
    conv = base.get("conv_in.weight")
    if conv is None or conv[1] != BASE_CHANNELS:
        raise ModelError(f"IC-Light needs a plain SD 1.5 U-Net (4 input channels); '{source}' isn't one.")
    expected = {**base, "conv_in.weight": (conv[0], offset.channels, *conv[2:])}
    missing, extra = sorted(expected.keys() - offset.shapes.keys()), sorted(offset.shapes.keys() - expected.keys())
    where = f"The IC-Light offset '{offset.path.name}' doesn't fit the U-Net of '{source}'"
    if missing or extra:
        parts = [f"{len(keys)} keys {what} (first: {keys[0]})" for keys, what in ((missing, "missing"), (extra, "extra")) if keys]
        raise ModelError(f"{where}: {' and '.join(parts)}; IC-Light offsets are made for SD 1.5 U-Nets.")
    wrong = [key for key in expected if tuple(offset.shapes[key]) != tuple(expected[key])]
    if wrong:
        key = wrong[0]
        raise ModelError(
            f"{where}: {len(wrong)} tensors differ in shape (first: {key}, {list(offset.shapes[key])} in the offset, "
            f"{list(expected[key])} in the U-Net); IC-Light offsets are made for SD 1.5 U-Nets."
        )


def merge(unet: Any, offset: Offset, source: str) -> None:
    """Widen `unet`'s conv_in to the offset's channels and add the offset to every weight (in float32, then
    back to the U-Net's dtype), strictly: the checks run before anything is changed."""
    from safetensors.torch import load_file

    check_fits(offset, {key: tuple(value.shape) for key, value in unet.state_dict().items()}, source)
    widen_conv_in(unet, offset.channels)
    values = load_file(str(offset.path))
    state = unet.state_dict()
    merged = {key: (base.float() + values[key].to(base.device).float()).to(base.dtype) for key, base in state.items()}
    unet.load_state_dict(merged, strict=True)


def widen_conv_in(unet: Any, channels: int) -> None:
    """IC-Light's conv_in: `channels` inputs, the new input weights zero, the old ones copied, the bias kept."""
    old = unet.conv_in
    new = torch.nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                          device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
    new.bias = old.bias
    unet.conv_in = new
    unet.register_to_config(in_channels=channels)


def model_pixels(image: Tensor) -> Tensor:
    """IC-Light's condition pixels for `image` in [0, 1]: (255 v - 127) / 127, grey (127/255) exactly 0."""
    return (image * 255 - 127) / 127


def over_grey(image: Tensor, matte: Tensor | None) -> Tensor:
    """`image` [B, 3, h, w] with what the matte [B, 1, h, w] leaves out turned grey, as IC-Light's demo does."""
    return image if matte is None else image * matte + GREY * (1 - matte)


def read_background(path: str) -> Tensor:
    """`--background FILE` as [1, 3, H, W] in [0, 1], grey where it is transparent."""
    from lasagna_core.document import load

    doc = load(path)
    alpha = None if doc.alpha is None else torch.from_numpy(doc.alpha)[None]
    return over_grey(torch.from_numpy(doc.base)[None], alpha)


def cover(image: Tensor, size: tuple[int, int]) -> Tensor:
    """`image` scaled to cover `size` and centre-cropped to it (the demo's resize-and-centre-crop)."""
    height, width = image.shape[-2:]
    scale = max(size[0] / height, size[1] / width)
    scaled = resize(image, (max(size[0], math.ceil(height * scale)), max(size[1], math.ceil(width * scale))))
    top, left = (scaled.shape[-2] - size[0]) // 2, (scaled.shape[-1] - size[1]) // 2
    return scaled[..., top : top + size[0], left : left + size[1]]
