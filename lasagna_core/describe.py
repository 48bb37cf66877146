"""`lasagna inspect`: what a file is (size as written, colour mode in words, true bit depth, layer tree), read
from its headers without decoding pixels or importing torch."""

from __future__ import annotations

import os
from typing import Any

from .document import DEFAULT_MAX_PIXELS, check_pixel_limit, decoding_errors, open_psd, read_psd_header, readable_file, sniff_format
from .errors import DocumentError, reason

_RASTER_MODES = {
    "1": "bitmap", "L": "grayscale", "LA": "grayscale", "La": "grayscale", "I": "grayscale", "F": "grayscale",
    "P": "indexed", "PA": "indexed", "RGB": "rgb", "RGBA": "rgb", "RGBa": "rgb", "RGBX": "rgb", "CMYK": "cmyk",
    "YCbCr": "ycbcr", "LAB": "lab", "HSV": "hsv",
}
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height when applied


def describe(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Size, mode, depth and layer tree of a document; the size is the one Lasagna reads and writes it at."""
    path = readable_file(path)
    if sniff_format(path) == "psd":
        header = read_psd_header(path)
        with decoding_errors(path):
            psd = open_psd(path, max_pixels=max_pixels)
            return {
                "path": str(path),
                "format": "psb" if header.version == 2 else "psd",
                "width": header.width,
                "height": header.height,
                "mode": header.mode,
                "depth": header.depth,
                "float": header.depth == 32,
                "channels": header.channels,
                "has_merged_image": bool(psd.has_preview()),
                "layers": [_describe_layer(layer) for layer in reversed(list(psd))],
            }
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as image:
            check_pixel_limit(path, image.width, image.height, max_pixels)
            depth = _raster_depth(image)  # before getexif, which may decode the pixels and drop the tile
            turned = image.getexif().get(0x0112) in _ROTATED
            return {
                "path": str(path),
                "format": (image.format or "unknown").lower(),
                "width": image.height if turned else image.width,
                "height": image.width if turned else image.height,
                "mode": _RASTER_MODES.get(image.mode.split(";")[0], image.mode.lower()),
                "depth": depth,
                "float": image.mode == "F",
                "channels": len(image.getbands()),
                "has_merged_image": True,
                "layers": [],
            }
    except DocumentError:
        raise
    except Exception as exc:
        raise DocumentError(f"{path.name}: damaged or unreadable image ({reason(exc, limit=160)})") from None


def _raster_depth(image: Any) -> int:
    """Bits per sample in the file: PIL's mode says 8 for a 16-bit colour PNG (it keeps the high bytes), so
    the decoder's raw mode is asked as well."""
    if image.mode == "1":
        return 1
    if image.mode in ("I", "F"):
        return 32
    tile = getattr(image, "tile", None) or []
    raw = str(tile[0][3][0] if tile and isinstance(tile[0][3], tuple) else tile[0][3]) if tile else ""
    return 16 if image.mode.startswith("I;16") or ";16" in raw else 8


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
