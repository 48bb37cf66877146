"""Flat pictures (`lasagna flatten`, previews, evaluation images) in the format their name asks for.

PIL writes 8 bits per sample; a 16-bit PNG is encoded here (PIL can't write one in colour), so a 16-bit
document flattens without losing precision.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from ..errors import OutputError


@dataclass(frozen=True)
class ImageFormat:
    """One flat picture format: what it is called, the names it answers to and what it can hold."""

    name: str
    suffixes: tuple[str, ...]
    pil_format: str
    max_depth: int  # bits per sample it is written with at most
    alpha: bool  # whether it can hold transparency
    options: dict[str, Any] = field(default_factory=dict)

    def write(self, f: IO[bytes], color: np.ndarray, alpha: np.ndarray | None, depth: int = 8) -> None:
        """float32 [1|3, H, W] (+ alpha [1, H, W]) at `depth` bits, or this format's most if fewer."""
        if alpha is not None and not self.alpha:
            if not bool((alpha >= 1.0).all()):
                raise OutputError(f"{self.name} can't hold transparency and this picture has some; write a .png or .tif")
            alpha = None
        planes = color if alpha is None else np.concatenate([color, alpha])
        if min(depth, self.max_depth) == 16:
            f.write(_png16(planes))
            return
        from PIL import Image

        data = np.round(np.clip(planes, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[data.shape[2]]
        Image.fromarray(data if data.shape[2] > 1 else data[:, :, 0], mode=mode).save(f, format=self.pil_format, **self.options)


PNG = ImageFormat("PNG", (".png",), "PNG", 16, True)
IMAGE_FORMATS = (
    PNG,
    ImageFormat("JPEG", (".jpg", ".jpeg"), "JPEG", 8, False, {"quality": 95}),
    ImageFormat("TIFF", (".tif", ".tiff"), "TIFF", 8, True, {"compression": "tiff_deflate"}),
    ImageFormat("WebP", (".webp",), "WEBP", 8, True, {"lossless": True}),
)


def _png16(planes: np.ndarray) -> bytes:
    """A 16-bit PNG of [C, H, W] samples in [0, 1] (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA)."""
    channels, height, width = planes.shape
    samples = np.rint(np.clip(planes, 0.0, 1.0) * 65535.0).astype(">u2").transpose(1, 2, 0).reshape(height, -1)
    rows = np.zeros((height, 1 + samples.shape[1] * 2), dtype=np.uint8)  # filter byte 0 (None) on each row
    rows[:, 1:] = samples.view(np.uint8).reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 16, {1: 0, 2: 4, 3: 2, 4: 6}[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
