"""Reading images and layered documents: the reading room (writing is `lasagna_core.writing`).

Converts the files' uint8/uint16 samples to float32 and refuses what can't be read, in one line. It never
imports torch at module level: `lasagna inspect` must start fast. Compositing (for a PSD without a stored
merged image) is delegated to `blend.composite`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DocumentError, ImageTooLargeError, LasagnaError, UnsupportedDocumentError, UsageError, reason
from .layer_paths import find_layer
from .layers import BlendMode, GroupNode, Node, PixelNode
from .sixteen_bit import sixteen_bit_colour

DEFAULT_MAX_PIXELS = 150_000_000
"""Refuse documents above this many pixels (a 12k x 12k image) unless the user raises the limit."""

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
PSD_SUFFIXES = (".psd", ".psb")

if TYPE_CHECKING:
    import numpy as np
else:

    class _LazyNumpy:
        """numpy on first use: `lasagna --help`, `--version` and `templates` import this module (for its
        constants) but never touch a pixel, and numpy is half of their start-up time."""

        def __getattr__(self, name: str) -> Any:
            import numpy

            globals()["np"] = numpy
            return getattr(numpy, name)

    np = _LazyNumpy()

_PSD_MODES = {0: "bitmap", 1: "grayscale", 2: "indexed", 3: "rgb", 4: "cmyk", 7: "multichannel", 8: "duotone", 9: "lab"}

# psd-tools logs what it skips in a damaged file ("Invalid signature", "Failed to read tagged block"); with no
# handler Python would print those on stderr, beside Lasagna's own one-line error. Applications that
# configure logging still get them.
logging.getLogger("psd_tools").addHandler(logging.NullHandler())


RASTER_LAYER = "Background"
"""The name of the one layer a raster input becomes in the written PSD."""


@dataclass
class Document:
    """An opened input: the base image the edit is computed from, and what is needed to write it back."""

    path: Path
    kind: str  # "psd" or "raster"
    width: int
    height: int
    color_mode: str  # "rgb" or "grayscale" after any conversion
    depth: int  # bits per channel of the source: 8 or 16
    base: np.ndarray  # float32 [3, H, W] in [0, 1]: merged image, raster, or the --layer layer placed in the canvas
    alpha: np.ndarray | None  # float32 [1, H, W]; None when the base is opaque everywhere
    base_layer: str | None = None  # name of the --layer base, the layer new layers get clipped to
    notices: list[str] = field(default_factory=list)  # conversions made while reading, for the CLI to show
    layer_names: tuple[str, ...] = ()  # every layer and group the output will hold already: new ones are named apart
    psd: Any = field(default=None, repr=False)  # the parsed source PSD: the writer takes it, so no edit parses twice

    def take_psd(self) -> Any:
        """The parsed source PSD for the writer to add layers to: the one `load` parsed the first time, a fresh
        parse after that (the writer changes it, and a second save must start from the file as it is)."""
        psd, self.psd = self.psd, None
        return psd if psd is not None else open_psd(self.path, max_pixels=self.width * self.height)


@dataclass(frozen=True)
class PsdHeader:
    version: int  # 1 = PSD, 2 = PSB
    channels: int
    height: int
    width: int
    depth: int
    mode: str


# ---------------------------------------------------------------------------------------------- reading


def load(path: str | os.PathLike[str], *, layer: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Document:
    """Open an image or PSD/PSB as a Document; `layer` picks one PSD layer as the base instead of the merged image."""
    path = readable_file(path)
    if sniff_format(path) == "psd":
        return _load_psd(path, layer=layer, max_pixels=max_pixels)
    if layer is not None:
        raise UsageError(f"--layer needs a PSD; {path.name} is a flat image with no layers")
    return _load_raster(path, max_pixels=max_pixels)


def read_psd_header(path: Path) -> PsdHeader:
    """Parse the 26-byte header, so that hostile sizes are refused before psd-tools reads anything else."""
    with path.open("rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:4] != b"8BPS":
        raise DocumentError(f"{path.name}: not a Photoshop document (bad or truncated header)")
    version, channels, height, width, depth, mode = struct.unpack(">H6xHIIHH", head[4:])
    if version not in (1, 2):
        raise DocumentError(f"{path.name}: unknown Photoshop file version {version}")
    return PsdHeader(version, channels, height, width, depth, _PSD_MODES.get(mode, f"mode {mode}"))


def open_psd(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """psd-tools' PSDImage for `path`, after the size check; any parse failure becomes one DocumentError."""
    from psd_tools import PSDImage

    header = read_psd_header(path)
    check_pixel_limit(path, header.width, header.height, max_pixels)
    try:
        return PSDImage.open(path)
    except MemoryError:
        raise ImageTooLargeError(f"{path.name}: not enough memory to open this document") from None
    except Exception as exc:  # psd-tools raises struct.error, ValueError, EOFError, ... on damaged files
        raise DocumentError(f"{path.name}: damaged or truncated Photoshop document ({reason(exc, limit=160)})") from None


def check_pixel_limit(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise DocumentError(f"{path.name}: the document has no pixels ({width}x{height})")
    if width * height > max_pixels:
        size, limit = _pixel_counts(width * height, max_pixels)
        raise ImageTooLargeError(
            f"{path.name}: {width}x{height} is {size}, above the limit of {limit}; "
            f"pass --max-pixels {width * height} to open it anyway"
        )


def _pixel_counts(*counts: int) -> list[str]:
    """Counts as '151.2 megapixels', or as exact pixels where megapixels would say 0 or the same for all."""
    mega = [f"{round(n / 1e6, 1):g} megapixels" for n in counts]
    if min(counts) < 1_000_000 or len(set(mega)) < len(mega):
        return [f"{n:,} pixels" for n in counts]
    return mega


def read_layer_tree(psd: Any) -> list[Node]:
    """The psd-tools layer tree as PixelNode/GroupNode, bottom to top, masks folded into alpha.

    Layers without pixels of their own (adjustment and fill layers) are left out: the compositor has no
    formula for them, which is one reason the stored merged image is preferred as the base.
    """
    return [node for layer in psd for node in [_to_node(layer, psd.size)] if node is not None]


def _to_node(layer: Any, size: tuple[int, int]) -> Node | None:
    opacity = layer.opacity / 255.0 * getattr(layer, "fill_opacity", 255) / 255.0
    mode = BlendMode(layer.blend_mode.name.lower())
    if layer.is_group():
        children = [node for child in layer for node in [_to_node(child, size)] if node is not None]
        return GroupNode(
            name=layer.name,
            children=children,
            blend_mode=mode,
            opacity=layer.opacity / 255.0,
            visible=layer.visible,
            clipping=bool(layer.clipping),
            mask=_group_mask(layer, size),
        )
    if not layer.has_pixels():
        return None
    pixels = layer.numpy()
    if pixels is None or pixels.size == 0:
        return None
    pixels = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
    color_channels = 1 if pixels.shape[0] in (1, 2) else 3
    color, alpha = pixels[:color_channels], (pixels[color_channels:] if pixels.shape[0] > color_channels else None)
    mask = _layer_mask(layer, layer.bbox)
    if mask is not None:
        alpha = mask if alpha is None else alpha * mask
    return PixelNode(
        name=layer.name,
        color=color,
        alpha=alpha,
        top=layer.top,
        left=layer.left,
        blend_mode=mode,
        opacity=opacity,
        visible=layer.visible,
        clipping=bool(layer.clipping),
    )


def _layer_mask(layer: Any, bbox: tuple[int, int, int, int]) -> np.ndarray | None:
    """The layer's raster mask over `bbox` (left, top, right, bottom), or None when it has none or it is off."""
    if not layer.has_mask() or layer.mask.disabled:
        return None
    left, top, right, bottom = bbox
    out = np.full((1, bottom - top, right - left), layer.mask.background_color / 255.0, dtype=np.float32)
    m_left, m_top, m_right, m_bottom = layer.mask.bbox
    data = layer.numpy("mask")
    if data is None or m_right <= m_left or m_bottom <= m_top:
        return out
    x0, y0, x1, y1 = max(left, m_left), max(top, m_top), min(right, m_right), min(bottom, m_bottom)
    if x1 > x0 and y1 > y0:
        out[0, y0 - top : y1 - top, x0 - left : x1 - left] = data[y0 - m_top : y1 - m_top, x0 - m_left : x1 - m_left, 0]
    return out


def _group_mask(layer: Any, size: tuple[int, int]) -> np.ndarray | None:
    width, height = size
    return _layer_mask(layer, (0, 0, width, height))


@contextlib.contextmanager
def decoding_errors(path: Path) -> Iterator[None]:
    """psd-tools decodes pixels (merged image, layers, masks) after `open` succeeded: damage found there is
    still one DocumentError, never a raw ValueError/struct.error/IndexError from inside the library. A channel
    psd-tools can't decompress (it would warn on stderr and paint it black) is damage too."""
    try:
        from psd_tools.compression import PSDDecompressionWarning
    except ImportError:  # older psd-tools: no such warning
        PSDDecompressionWarning = None  # type: ignore[assignment,misc]  # noqa: N806
    with warnings.catch_warnings():
        if PSDDecompressionWarning is not None:
            warnings.simplefilter("error", PSDDecompressionWarning)
        try:
            yield
        except LasagnaError:
            raise
        except MemoryError:
            raise ImageTooLargeError(f"{path.name}: not enough memory to decode this document") from None
        except Exception as exc:
            if PSDDecompressionWarning is not None and isinstance(exc, PSDDecompressionWarning):
                raise DocumentError(f"{path.name}: damaged Photoshop document (pixel data that can't be decompressed)") from None
            raise DocumentError(f"{path.name}: damaged or truncated Photoshop document ({reason(exc, limit=160)})") from None


def _load_psd(path: Path, *, layer: str | None, max_pixels: int) -> Document:
    with decoding_errors(path):
        return _read_psd(path, layer=layer, max_pixels=max_pixels)


def _read_psd(path: Path, *, layer: str | None, max_pixels: int) -> Document:
    header = read_psd_header(path)
    check_pixel_limit(path, header.width, header.height, max_pixels)
    _refuse_unsupported_psd(path, header)
    psd = open_psd(path, max_pixels=max_pixels)
    notices: list[str] = []
    if layer is not None:
        color, alpha = _placed_layer(psd, header, layer)
    elif psd.has_preview():
        merged = psd.numpy()  # Photoshop's own merged image: exact, unlike any re-composite
        color, alpha = split_channels(np.ascontiguousarray(merged.transpose(2, 0, 1), dtype=np.float32))
    else:
        notices.append(f"{path.name} has no stored merged image; composited its layers with Lasagna's compositor")
        color, alpha = composite_to_numpy(read_layer_tree(psd), header.height, header.width)
    return Document(
        path=path,
        kind="psd",
        width=header.width,
        height=header.height,
        color_mode=header.mode,
        depth=header.depth,
        base=_as_rgb(color),
        alpha=_drop_opaque(alpha),
        base_layer=layer,
        notices=notices,
        layer_names=tuple(node.name for node in psd.descendants()) or (RASTER_LAYER,),  # a layerless PSD gets one
        psd=psd,
    )


def _refuse_unsupported_psd(path: Path, header: PsdHeader) -> None:
    if header.mode not in ("rgb", "grayscale"):
        raise UnsupportedDocumentError(
            f"{path.name}: {header.mode.upper()} documents are not supported; convert it to RGB in your editor "
            f"(Photoshop: Image > Mode > RGB Color) and try again"
        )
    if header.depth not in (8, 16):
        raise UnsupportedDocumentError(
            f"{path.name}: {header.depth}-bit documents are not supported; convert it to 8 or 16 bits per channel "
            f"(Photoshop: Image > Mode > 16 Bits/Channel)"
        )


def _placed_layer(psd: Any, header: PsdHeader, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The --layer layer's pixels (colour, coverage) placed at its offset in a canvas-sized array."""
    layer = find_layer(psd, name)
    node = _to_node(layer, psd.size)
    if not isinstance(node, PixelNode):
        raise UsageError(f"--layer '{name}' has no pixels of its own (it is a {layer.kind} layer); pick a pixel layer")
    color = np.zeros((node.color.shape[0], header.height, header.width), dtype=np.float32)
    alpha = np.zeros((1, header.height, header.width), dtype=np.float32)
    src, dst = _overlap(node, header.height, header.width)
    if src is None:
        raise UsageError(f"--layer '{name}' lies entirely outside the canvas")
    color[(slice(None), *dst)] = node.color[(slice(None), *src)]
    alpha[(slice(None), *dst)] = 1.0 if node.alpha is None else node.alpha[(slice(None), *src)]
    return color, alpha


def _overlap(node: PixelNode, height: int, width: int) -> tuple[tuple[slice, slice] | None, tuple[slice, slice]]:
    """Slices (source, destination) of the part of a placed layer that lies on the canvas."""
    h, w = node.color.shape[1:]
    y0, x0 = max(node.top, 0), max(node.left, 0)
    y1, x1 = min(node.top + h, height), min(node.left + w, width)
    dst = (slice(y0, y1), slice(x0, x1))
    if y1 <= y0 or x1 <= x0:
        return None, dst
    return (slice(y0 - node.top, y1 - node.top), slice(x0 - node.left, x1 - node.left)), dst


def _load_raster(path: Path, *, max_pixels: int) -> Document:
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = None  # our own limit, checked below before decoding, replaces PIL's bomb guard
    notices: list[str] = []
    try:
        with Image.open(path) as image:
            check_pixel_limit(path, image.width, image.height, max_pixels)
            if getattr(image, "n_frames", 1) > 1:
                notices.append(f"{path.name} has {image.n_frames} frames; using the first")
            wide = sixteen_bit_colour(path, image, notices)
            if wide is not None:
                array, depth = np.ascontiguousarray(wide.transpose(2, 0, 1), dtype=np.float32) / np.float32(65535.0), 16
            else:
                image.load()
                image = ImageOps.exif_transpose(image)
                array, depth = _pil_to_float(path, image, notices)
    except (DocumentError, UsageError):
        raise
    except MemoryError:
        raise ImageTooLargeError(f"{path.name}: not enough memory to decode this image") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... on damaged files
        raise DocumentError(f"{path.name}: damaged or unreadable image ({reason(exc, limit=160)})") from None
    color, alpha = split_channels(array)
    return Document(
        path=path,
        kind="raster",
        width=array.shape[2],
        height=array.shape[1],
        color_mode="grayscale" if color.shape[0] == 1 else "rgb",
        depth=depth,
        base=_as_rgb(color),
        alpha=_drop_opaque(alpha),
        notices=notices,
        layer_names=(RASTER_LAYER,),
    )


def _pil_to_float(path: Path, image: Any, notices: list[str]) -> tuple[np.ndarray, int]:
    """[C, H, W] float32 in [0, 1] (C = 1, 2, 3 or 4) and the source bit depth, converting odd modes."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        data = np.asarray(image, dtype=np.float32)
        return (np.clip(data / 65535.0, 0.0, 1.0)[None]).astype(np.float32), 16
    if mode == "F":
        raise UnsupportedDocumentError(f"{path.name}: 32-bit floating-point images are not supported; save it as 8 or 16 bits")
    conversions = {"1": "L", "P": "RGBA", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LA": "LA", "La": "LA", "RGBa": "RGBA"}
    if mode == "LAB":
        raise UnsupportedDocumentError(f"{path.name}: Lab images are not supported; convert it to RGB and try again")
    if mode not in ("L", "LA", "RGB", "RGBA"):
        if mode not in conversions:
            raise UnsupportedDocumentError(f"{path.name}: image mode {mode} is not supported")
        target = conversions[mode]
        if mode in ("1", "P", "PA", "CMYK"):
            notices.append(f"{path.name}: converted {_MODE_NAMES.get(mode, mode)} to {target} (colours may shift)")
        image = image.convert(target)
    data = np.asarray(image, dtype=np.float32) / 255.0
    data = data[None] if data.ndim == 2 else data.transpose(2, 0, 1)
    return np.ascontiguousarray(data), 8


_MODE_NAMES = {"1": "1-bit bitmap", "P": "indexed colour", "PA": "indexed colour", "CMYK": "CMYK"}


def split_channels(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    channels = array.shape[0]
    if channels in (2, 4):
        return array[: channels - 1], array[channels - 1 :]
    return array, None


def _as_rgb(color: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(color, 3, axis=0) if color.shape[0] == 1 else color[:3], dtype=np.float32)


def _drop_opaque(alpha: np.ndarray | None) -> np.ndarray | None:
    return None if alpha is None or bool((alpha >= 1.0).all()) else alpha


def composite_to_numpy(nodes: Sequence[Node], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    from .blend import composite

    color, alpha = composite(nodes, height, width)
    return color[0].numpy(), alpha[0].numpy()


def readable_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise DocumentError(f"{path}: no such file")
    if path.is_dir():
        raise DocumentError(f"{path}: is a folder, not an image")
    if not os.access(path, os.R_OK):
        raise DocumentError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise DocumentError(f"{path}: empty file")
    return path


def sniff_format(path: Path) -> str:
    """'psd' or 'raster' by content, not by name: a PNG renamed .psd is still read (or refused) for what it is."""
    with path.open("rb") as f:
        magic = f.read(4)
    return "psd" if magic == b"8BPS" else "raster"


@dataclass
class Flattened:
    """A document flattened to one picture, with what the flattening could not show."""

    color: np.ndarray  # float32 [3, H, W]
    alpha: np.ndarray | None  # float32 [1, H, W]; None when opaque
    depth: int  # bits per channel of the source, so the picture can be written without losing any
    notices: list[str]


def flatten_layers(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Flattened:
    """Composite a document's layers with Lasagna's own compositor. A PSD without layer records (written by
    applications that flatten on save) is its stored merged image: there is nothing else to composite."""
    path = readable_file(path)
    if sniff_format(path) != "psd":
        doc = _load_raster(path, max_pixels=max_pixels)
        return Flattened(doc.base, doc.alpha, doc.depth, doc.notices)
    header = read_psd_header(path)
    check_pixel_limit(path, header.width, header.height, max_pixels)
    _refuse_unsupported_psd(path, header)
    with decoding_errors(path):
        psd = open_psd(path, max_pixels=max_pixels)
        if len(psd) == 0 and psd.has_preview():
            color, alpha = split_channels(np.ascontiguousarray(psd.numpy().transpose(2, 0, 1), dtype=np.float32))
            notices = [f"{path.name} has no layers; its stored merged image is the picture"]
        else:
            color, alpha = composite_to_numpy(read_layer_tree(psd), header.height, header.width)
            notices = _unrendered(psd)
        return Flattened(_as_rgb(color), alpha, header.depth, notices)


def _unrendered(psd: Any) -> list[str]:
    """Notices for what the compositor leaves out, so a flatten that differs from Photoshop says why."""
    notices = []
    for layer in psd.descendants():
        if not layer.is_group() and not layer.has_pixels():
            notices.append(f"layer '{layer.name}' ({layer.kind}) has no pixels of its own and was left out")
        elif layer.has_effects() and layer.visible:
            notices.append(f"layer '{layer.name}' has layer effects, which Lasagna does not render")
    return notices
