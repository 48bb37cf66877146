"""Reading images and layered documents, and writing PSDs back with new layers, atomically.

The only module that touches file formats and converts between uint8/uint16 and float32. It never
imports torch at module level: `lasagna inspect` must start fast. Compositing (for a PSD without a
stored merged image, and for the merged image written back) is delegated to `blend.composite`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import DocumentError, ImageTooLargeError, LasagnaError, OutputError, UnsupportedDocumentError, UsageError, reason
from .layers import BlendMode, GroupNode, Node, PixelNode

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
    path = _readable_file(path)
    if _sniff(path) == "psd":
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
def _decoding(path: Path) -> Iterator[None]:
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
    with _decoding(path):
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
        color, alpha = _split_channels(np.ascontiguousarray(merged.transpose(2, 0, 1), dtype=np.float32))
    else:
        notices.append(f"{path.name} has no stored merged image; composited its layers with Lasagna's compositor")
        color, alpha = _composite_to_numpy(read_layer_tree(psd), header.height, header.width)
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
        layer_names=tuple(node.name for node in psd.descendants()),
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


def find_layer(psd: Any, name: str) -> Any:
    """A layer by name, or by 'Group/Layer' path when names repeat; errors list what exists."""
    wanted = name.strip("/").split("/")
    matches = [layer for layer in psd.descendants() if _layer_path(layer)[-len(wanted) :] == wanted]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        names = ", ".join(sorted({"/".join(_layer_path(layer)) for layer in psd.descendants()})) or "none"
        raise UsageError(f"no layer named '{name}' (layers: {names})")
    paths = ", ".join("/".join(_layer_path(layer)) for layer in matches)
    raise UsageError(f"{len(matches)} layers are named '{name}'; pass the full path, one of: {paths}")


def _layer_path(layer: Any) -> list[str]:
    path = [layer.name]
    parent = layer.parent
    while parent is not None and parent.kind != "psdimage":
        path.insert(0, parent.name)
        parent = parent.parent
    return path


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
            image.load()
            image = ImageOps.exif_transpose(image)
            array, depth = _pil_to_float(path, image, notices)
    except (DocumentError, UsageError):
        raise
    except MemoryError:
        raise ImageTooLargeError(f"{path.name}: not enough memory to decode this image") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... on damaged files
        raise DocumentError(f"{path.name}: damaged or unreadable image ({reason(exc, limit=160)})") from None
    color, alpha = _split_channels(array)
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


def _split_channels(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    channels = array.shape[0]
    if channels in (2, 4):
        return array[: channels - 1], array[channels - 1 :]
    return array, None


def _as_rgb(color: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(color, 3, axis=0) if color.shape[0] == 1 else color[:3], dtype=np.float32)


def _drop_opaque(alpha: np.ndarray | None) -> np.ndarray | None:
    return None if alpha is None or bool((alpha >= 1.0).all()) else alpha


def _composite_to_numpy(nodes: Sequence[Node], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    from .blend import composite

    color, alpha = composite(nodes, height, width)
    return color[0].numpy(), alpha[0].numpy()


def _readable_file(path: str | os.PathLike[str]) -> Path:
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


def _sniff(path: Path) -> str:
    """'psd' or 'raster' by content, not by name: a PNG renamed .psd is still read (or refused) for what it is."""
    with path.open("rb") as f:
        magic = f.read(4)
    return "psd" if magic == b"8BPS" else "raster"


def flatten_layers(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Composite a document's layers with Lasagna's own compositor: (color [3,H,W], alpha [1,H,W], notices)."""
    path = _readable_file(path)
    if _sniff(path) != "psd":
        doc = _load_raster(path, max_pixels=max_pixels)
        return doc.base, doc.alpha, doc.notices
    header = read_psd_header(path)
    check_pixel_limit(path, header.width, header.height, max_pixels)
    _refuse_unsupported_psd(path, header)
    with _decoding(path):
        psd = open_psd(path, max_pixels=max_pixels)
        color, alpha = _composite_to_numpy(read_layer_tree(psd), header.height, header.width)
        return _as_rgb(color), alpha, _unrendered(psd)


def _unrendered(psd: Any) -> list[str]:
    """Notices for what the compositor leaves out, so a flatten that differs from Photoshop says why."""
    notices = []
    for layer in psd.descendants():
        if not layer.is_group() and not layer.has_pixels():
            notices.append(f"layer '{layer.name}' ({layer.kind}) has no pixels of its own and was left out")
        elif layer.has_effects() and layer.visible:
            notices.append(f"layer '{layer.name}' has layer effects, which Lasagna does not render")
    return notices


# ---------------------------------------------------------------------------------------------- inspecting


def describe(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Size, mode, depth and layer tree of a document, without decoding pixels or importing torch."""
    path = _readable_file(path)
    if _sniff(path) == "psd":
        header = read_psd_header(path)
        with _decoding(path):
            psd = open_psd(path, max_pixels=max_pixels)
            return {
                "path": str(path),
                "format": "psb" if header.version == 2 else "psd",
                "width": header.width,
                "height": header.height,
                "mode": header.mode,
                "depth": header.depth,
                "channels": header.channels,
                "has_merged_image": bool(psd.has_preview()),
                "layers": [_describe_layer(layer) for layer in reversed(list(psd))],
            }
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as image:
            check_pixel_limit(path, image.width, image.height, max_pixels)
            return {
                "path": str(path),
                "format": (image.format or "unknown").lower(),
                "width": image.width,
                "height": image.height,
                "mode": image.mode,
                "depth": 16 if image.mode.startswith("I") else 8,
                "channels": len(image.getbands()),
                "has_merged_image": True,
                "layers": [],
            }
    except DocumentError:
        raise
    except Exception as exc:
        raise DocumentError(f"{path.name}: damaged or unreadable image ({reason(exc, limit=160)})") from None


def _describe_layer(layer: Any) -> dict[str, Any]:
    """One entry of the layer tree, top to bottom like Photoshop's Layers panel."""
    entry: dict[str, Any] = {
        "name": layer.name,
        "kind": layer.kind,
        "blend_mode": layer.blend_mode.name.lower(),
        "opacity": round(layer.opacity / 255.0, 4),
        "visible": bool(layer.visible),
        "clipping": bool(layer.clipping),
        "has_mask": bool(layer.has_mask()),
        "bbox": list(layer.bbox),
    }
    if layer.is_group():
        entry["children"] = [_describe_layer(child) for child in reversed(list(layer))]
    return entry


# ---------------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """A file object whose content replaces `path` only if the block finishes: a crash leaves no partial file."""
    path = Path(path)
    if not path.parent.is_dir():
        raise OutputError(f"{path.parent}: output folder does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(output: Path, inputs: Sequence[Path], *, overwrite_input: bool = False) -> None:
    """Refuse an output that would replace one of the inputs unless the user said so explicitly, or that
    can't be written at all; cheap, so callers run it before any long work."""
    if not output.parent.is_dir():
        raise OutputError(f"{output.parent}: output folder does not exist")
    for source in inputs:
        if output.exists() and source.exists() and output.resolve() == source.resolve() and not overwrite_input:
            raise OutputError(f"{output}: refusing to overwrite the input; choose another -o or pass --overwrite-input")


def save_psd(
    doc: Document,
    new_layers: Sequence[PixelNode],
    output: str | os.PathLike[str],
    *,
    record: dict[str, Any] | None = None,
    overwrite_input: bool = False,
) -> Path:
    """Write `doc` with `new_layers` added, keeping every original layer as it was.

    New layers go on top of the document, or - when the document's base is a `--layer` - right above that
    layer as clipping masks. The stored merged image is replaced by the new flattened result. A JSON
    sidecar (`OUT.psd.json`) records how the layers were made when `record` is given.
    """
    output = Path(output)
    check_output(output, [doc.path], overwrite_input=overwrite_input)
    psd = _open_for_writing(doc)
    _refuse_channel_mismatch(doc, new_layers)
    anchor = find_layer(psd, doc.base_layer) if doc.base_layer else None
    added, stored = [], []
    for node in new_layers:
        quantised = _quantised(node, psd.depth)
        added.append(_add_layer(psd, node, anchor, quantised))
        stored.append(_as_stored(node, quantised, psd.depth))
        if anchor is not None:
            anchor = added[-1]
    color, alpha = _merged_after_edit(doc, psd, stored)
    psd._record.image_data.set_data(  # psd-tools' save() would re-render with its own compositor
        _encode_merged(psd, color, alpha), psd._record.header
    )
    _drop_stale_thumbnails(psd)
    with atomic_write(output) as f:
        psd._record.write(f)
    if record is not None:
        sidecar = output.with_name(output.name + ".json")
        with atomic_write(sidecar) as f:
            f.write(json.dumps(record, indent=2, sort_keys=True).encode() + b"\n")
    return output


def _open_for_writing(doc: Document) -> Any:
    """A fresh copy of the source PSD (never the one read for the base), or a new PSD around a raster."""
    from psd_tools import PSDImage

    if doc.kind == "psd":
        return open_psd(doc.path, max_pixels=doc.width * doc.height)
    psd = PSDImage.new("RGB", (doc.width, doc.height), depth=doc.depth)
    pixels = doc.base if doc.alpha is None else np.concatenate([doc.base, doc.alpha])
    psd.create_pixel_layer_from_array(np.ascontiguousarray(pixels.transpose(1, 2, 0)), name=RASTER_LAYER)
    return psd


def _refuse_channel_mismatch(doc: Document, new_layers: Sequence[PixelNode]) -> None:
    if doc.kind == "psd" and doc.color_mode == "grayscale" and any(n.color.shape[0] == 3 for n in new_layers):
        raise UnsupportedDocumentError(
            f"{doc.path.name}: a grayscale document can't hold colour layers; convert it to RGB "
            f"(Photoshop: Image > Mode > RGB Color) or pass a flattened PNG"
        )


def _quantised(node: PixelNode, depth: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour, alpha) as the integers the file stores, rounded exactly as psd-tools rounds (rint(clip(x) * max)):
    one or two bytes a sample instead of four, so an 8192 px layer costs 64 MB a plane, not 256."""
    top, kind = (65535.0, np.uint16) if depth == 16 else (255.0, np.uint8)

    def quantise(plane: np.ndarray) -> np.ndarray:
        out = np.clip(plane, 0.0, 1.0).astype(np.float32, copy=False)
        np.multiply(out, np.float32(top), out=out)
        np.rint(out, out=out)
        return out.astype(kind)

    return quantise(node.color), None if node.alpha is None else quantise(node.alpha)


def _as_stored(node: PixelNode, quantised: tuple[np.ndarray, np.ndarray | None], depth: int) -> PixelNode:
    """The layer as a reader of the written file sees it (values, opacity), without decoding it back: what the
    merged image is composited from."""
    top = np.float32(65535.0 if depth == 16 else 255.0)
    color, alpha = quantised
    return PixelNode(
        name=node.name,
        color=color.astype(np.float32) / top,
        alpha=None if alpha is None else alpha.astype(np.float32) / top,
        top=node.top,
        left=node.left,
        blend_mode=node.blend_mode,
        opacity=round(node.opacity * 255) / 255.0,
        visible=node.visible,
        clipping=node.clipping,
    )


def _add_layer(psd: Any, node: PixelNode, anchor: Any | None, quantised: tuple[np.ndarray, np.ndarray | None]) -> Any:
    from psd_tools.constants import BlendMode as PsdBlendMode

    planes = 1 if psd.color_mode.name == "GRAYSCALE" else 3
    color, alpha = quantised
    color = color if color.shape[0] == planes else np.repeat(color, planes, axis=0)
    pixels = color if alpha is None else np.concatenate([color, alpha])
    layer = psd.create_pixel_layer_from_array(
        np.ascontiguousarray(pixels.transpose(1, 2, 0)),
        name=node.name,
        top=node.top,
        left=node.left,
        opacity=round(node.opacity * 255),
        blend_mode=PsdBlendMode[node.blend_mode.name],
    )
    layer.name = node.name  # the setter also writes the Unicode name block that psd-tools' constructor omits
    layer.visible = node.visible
    if anchor is not None:
        parent = anchor.parent
        parent.insert(parent.index(anchor) + 1, layer)
        layer.clipping = True
    return layer


def _merged_after_edit(doc: Document, psd: Any, stored: Sequence[PixelNode]) -> tuple[np.ndarray, np.ndarray]:
    """The new merged image: the added top layers, as stored, over Photoshop's own merged image when there is
    one (exact for everything below; it is the document's base, already decoded by `load`); otherwise, and
    for layers clipped inside the stack, the whole tree re-composited.

    Only what changed is composited: the new layers over the stored merged image, in strips of rows (every
    blend mode is per pixel), so an 8192 px document needs a few hundred MB here rather than gigabytes."""
    if doc.base_layer is None and doc.kind == "psd" and psd.has_preview():
        if doc.alpha is None and all(_covers_canvas(node, doc) for node in stored):
            return _blend_over_in_strips(doc.base, stored, doc.height, doc.width)
        below = PixelNode("merged", doc.base, doc.alpha)
        return _composite_in_strips([below, *stored], doc.height, doc.width)
    return _composite_to_numpy(read_layer_tree(psd), doc.height, doc.width)


STRIP_PIXELS = 4_000_000
"""Pixels per strip when compositing a flat stack of layers strip by strip (`_composite_in_strips`)."""


def _composite_in_strips(nodes: Sequence[PixelNode], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """`blend.composite` of a flat list of pixel layers, one strip of rows at a time: the same numbers (every
    formula is per pixel), with memory bounded by the strip instead of the document."""
    rows = max(1, STRIP_PIXELS // max(width, 1))
    if rows >= height:
        return _composite_to_numpy(nodes, height, width)
    color = np.empty((3, height, width), dtype=np.float32)
    alpha = np.empty((1, height, width), dtype=np.float32)
    for y0 in range(0, height, rows):
        y1 = min(y0 + rows, height)
        strip = [cropped for node in nodes if (cropped := _rows_of(node, y0, y1)) is not None]
        c, a = _composite_to_numpy(strip, y1 - y0, width)
        color[:, y0:y1], alpha[:, y0:y1] = c, a
    return color, alpha


def _covers_canvas(node: PixelNode, doc: Document) -> bool:
    return (node.top, node.left) == (0, 0) and node.color.shape[1:] == (doc.height, doc.width) and not node.clipping


def _blend_over_in_strips(base: np.ndarray, layers: Sequence[PixelNode], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-canvas layers over an opaque image with `blend.blend`, strip by strip: exactly what `blend.composite`
    computes for that stack (it first draws the image onto a transparent canvas, which changes nothing when
    the image is opaque), without that draw and without copying the whole canvas for every layer."""
    import torch

    from .blend import blend, to_tensor

    rows = max(1, STRIP_PIXELS // max(width, 1))
    color = np.empty((3, height, width), dtype=np.float32)
    alpha = np.ones((1, height, width), dtype=np.float32)
    visible = [node for node in layers if node.visible]
    with torch.no_grad():
        for y0 in range(0, height, rows):
            y1 = min(y0 + rows, height)
            c, a = to_tensor(base[:, y0:y1]), torch.ones(1, 1, y1 - y0, width)
            for node in visible:
                source_alpha = None if node.alpha is None else to_tensor(node.alpha[:, y0:y1])
                c, a = blend(c, to_tensor(node.color[:, y0:y1]), node.blend_mode, source_alpha=source_alpha,
                             opacity=node.opacity, backdrop_alpha=a)
            color[:, y0:y1], alpha[:, y0:y1] = c[0].numpy(), a[0].numpy()
    return color, alpha


def _rows_of(node: PixelNode, y0: int, y1: int) -> PixelNode | None:
    """The part of a placed layer that falls in document rows [y0, y1), placed in the strip's coordinates."""
    h = node.color.shape[1]
    a, b = max(y0 - node.top, 0), min(y1 - node.top, h)
    if b <= a:
        return None
    return PixelNode(
        name=node.name,
        color=node.color[:, a:b],
        alpha=None if node.alpha is None else node.alpha[:, a:b],
        top=node.top + a - y0,
        left=node.left,
        blend_mode=node.blend_mode,
        opacity=node.opacity,
        visible=node.visible,
        clipping=node.clipping,
    )


def _encode_merged(psd: Any, color: np.ndarray, alpha: np.ndarray) -> list[bytes]:
    from psd_tools.api import numpy_io

    planes = 1 if psd.color_mode.name == "GRAYSCALE" else 3
    color = color[:planes]
    return numpy_io.encode_image_data(psd, color.transpose(1, 2, 0), alpha.transpose(1, 2, 0))


def _drop_stale_thumbnails(psd: Any) -> None:
    """A thumbnail of the old picture would contradict the new merged image; viewers fall back to the latter."""
    from psd_tools.constants import Resource

    for key in (Resource.THUMBNAIL_RESOURCE_PS4, Resource.THUMBNAIL_RESOURCE):
        if key in psd.image_resources:
            del psd.image_resources[key]


def save_png(color: np.ndarray, alpha: np.ndarray | None, output: str | os.PathLike[str]) -> Path:
    """Write float32 [3|1, H, W] (+ alpha) as an 8-bit PNG, atomically."""
    from PIL import Image

    output = Path(output)
    planes = [color] if alpha is None else [color, alpha]
    data = np.concatenate(planes) if alpha is not None else color
    data = np.round(np.clip(data, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[data.shape[2]]
    image = Image.fromarray(data if data.shape[2] > 1 else data[:, :, 0], mode=mode)
    with atomic_write(output) as f:
        image.save(f, format="PNG")
    return output
