"""16-bit colour rasters that PIL would cut to 8 bits: PIL holds at most 8 bits per sample of a colour image,
so the file is decoded twice, once per byte of each sample. Kept apart from document.py, which reads every
kind of file, because it is a workaround for one library's limit with its own small vocabulary (rawmodes).
Like document.py it imports numpy only when it decodes: `--help` and `templates` start without it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

_WIDE_RAWMODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "RGB;16L": "RGB;16B", "RGBA;16L": "RGBA;16B"}
"""The 16-bit colour sample layouts PIL reads a byte of, and the same samples read with the other byte order."""
_SIXTEEN_BIT_COLOUR = {*_WIDE_RAWMODES, "RGB;16N", "RGBA;16N"}  # 16N: libtiff's decoder (compressed TIFF)


def sixteen_bit_colour(path: Path, image: Any, notices: list[str]) -> np.ndarray | None:
    """A 16-bit RGB or RGBA PNG or uncompressed TIFF as uint16 [H, W, C] (EXIF orientation applied), else None.

    PIL holds at most 8 bits per sample of a colour image and keeps only each sample's high byte. Its decoder
    is still what unfilters the rows (PNG) or finds the strips (TIFF): decoding once more with the other byte
    order keeps each sample's low byte instead, and the two halves together are the file's 16 bits. A
    compressed 16-bit colour TIFF is read at 8 bits, and the notice says so."""
    import numpy as np
    from PIL import Image, ImageOps

    tile = getattr(image, "tile", None) or []
    rawmodes = {_rawmode(t.args) for t in tile}
    if image.format not in ("PNG", "TIFF") or len(rawmodes) != 1 or not rawmodes <= _SIXTEEN_BIT_COLOUR:
        return None
    if any(t.codec_name not in ("raw", "zip") for t in tile) or not rawmodes <= set(_WIDE_RAWMODES):
        notices.append(f"{path.name}: a compressed 16-bit colour TIFF is read at 8 bits per channel; "
                       "save it as a 16-bit PNG (or an uncompressed TIFF) to keep full precision")
        return None
    (own,) = rawmodes
    halves = []
    for rawmode in (own, _WIDE_RAWMODES[own]):
        with Image.open(path) as half:
            half.tile = [t._replace(args=_with_rawmode(t.args, rawmode)) for t in half.tile]
            half.load()
            halves.append(np.asarray(ImageOps.exif_transpose(half), dtype=np.uint16))
    return (halves[0] << 8) | halves[1]


def _rawmode(args: Any) -> Any:
    return args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else None


def _with_rawmode(args: Any, rawmode: str) -> Any:
    return rawmode if isinstance(args, str) else (rawmode, *args[1:])
