"""The Photoshop writer: the source document with the new layers added and a new merged image.

Every original layer is kept as it was (psd-tools writes back the records it read); new layers go on top,
or, with a `--layer` base, right above it as clipping masks (nodes marked `clipping`) or right beneath it
(the others: flats under a line-art layer). The stored merged image is replaced by the new
composite, computed here (not by psd-tools' own compositor, which differs from Photoshop's), and that needs
psd-tools' private record API: `write_psd_with_merged_image` is the one place that touches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..document import RASTER_LAYER, Document, composite_to_numpy, find_layer, read_layer_tree, read_psd_header
from ..errors import UnsupportedDocumentError, UsageError
from ..layers import PixelNode


class PsdFormat:
    """Layered documents as PSD (and PSB, Photoshop's large-document variant of the same format)."""

    name = "Photoshop document"
    suffixes = (".psd", ".psb")

    def check(self, doc: Document, channels: Sequence[int], target: Path) -> None:
        """Refuse, before any work, a result this document can't hold or that would be named for the other
        variant of the format (a PSB is not a PSD: their headers and sizes differ)."""
        if doc.kind == "psd" and doc.color_mode == "grayscale" and any(c == 3 for c in channels):
            raise UnsupportedDocumentError(
                f"{doc.path.name}: a grayscale document can't hold colour layers; convert it to RGB "
                f"(Photoshop: Image > Mode > RGB Color) or pass a flattened PNG"
            )
        wanted = self.default_suffix(doc)
        if target.suffix.lower() != wanted:
            what = "a large document (PSB)" if wanted == ".psb" else "written as a PSD"
            raise UsageError(f"{target.name}: {doc.path.name} is {what}; name the output {target.stem}{wanted}")

    def default_suffix(self, doc: Document) -> str:
        """PSB for a PSB source (its sizes don't fit a PSD), PSD for everything else."""
        return ".psb" if doc.kind == "psd" and read_psd_header(doc.path).version == 2 else ".psd"

    def write(self, f: IO[bytes], doc: Document, new_layers: Sequence[PixelNode]) -> None:
        psd = source_psd(doc)
        base = find_layer(psd, doc.base_layer) if doc.base_layer else None
        anchor = base  # the layer the next clipped one goes above: the base, then the last clipped one
        stored = []
        for node in new_layers:
            quantised = _quantised(node, psd.depth)
            added = _add_layer(psd, node, anchor if node.clipping else base, quantised)
            stored.append(_as_stored(node, quantised, psd.depth))
            if anchor is not None and node.clipping:
                anchor = added
        color, alpha = _merged_after_edit(doc, psd, stored)
        _drop_stale_thumbnails(psd)
        write_psd_with_merged_image(psd, _encode_merged(psd, color, alpha), f)


def write_psd_with_merged_image(psd: Any, merged: list[bytes], f: IO[bytes]) -> None:
    """Write `psd` with `merged` (encoded channel data) as its stored merged image.

    psd-tools' public `save()` re-renders the merged image with its own compositor whenever layers changed,
    so this goes through the record below it, as psd-tools' own `save` does. If a psd-tools release moves
    those names, this fails here in one clear line (and tests/test_psd_writer.py fails first)."""
    try:
        record = psd._record
        set_data, header, write = record.image_data.set_data, record.header, record.write
    except AttributeError as exc:
        import psd_tools

        raise RuntimeError(
            f"psd-tools {psd_tools.__version__} changed its private PSD record API ({exc}); "
            "lasagna_core/writing/psd.py needs updating"
        ) from None
    set_data(merged, header)
    write(f)


def source_psd(doc: Document) -> Any:
    """What the new layers are added to: the source PSD as `load` parsed it (with its merged image made a
    real layer when it has no layers, so every application shows the picture), or a new PSD around a raster."""
    from psd_tools import PSDImage

    if doc.kind == "psd":
        psd = doc.take_psd()
        if len(psd) == 0:
            planes = 1 if psd.color_mode.name == "GRAYSCALE" else 3
            pixels = doc.base[:planes] if doc.alpha is None else np.concatenate([doc.base[:planes], doc.alpha])
            psd.create_pixel_layer_from_array(np.ascontiguousarray(pixels.transpose(1, 2, 0)), name=RASTER_LAYER)
        return psd
    psd = PSDImage.new("RGB", (doc.width, doc.height), depth=doc.depth)
    pixels = doc.base if doc.alpha is None else np.concatenate([doc.base, doc.alpha])
    psd.create_pixel_layer_from_array(np.ascontiguousarray(pixels.transpose(1, 2, 0)), name=RASTER_LAYER)
    return psd


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
    if anchor is not None:  # clipped right above the --layer base, or (flats under line art) right beneath it
        parent = anchor.parent
        parent.insert(parent.index(anchor) + (1 if node.clipping else 0), layer)
        layer.clipping = node.clipping
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
    return composite_to_numpy(read_layer_tree(psd), doc.height, doc.width)


STRIP_PIXELS = 4_000_000
"""Pixels per strip when compositing a flat stack of layers strip by strip (`_composite_in_strips`)."""


def _composite_in_strips(nodes: Sequence[PixelNode], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """`blend.composite` of a flat list of pixel layers, one strip of rows at a time: the same numbers (every
    formula is per pixel), with memory bounded by the strip instead of the document."""
    rows = max(1, STRIP_PIXELS // max(width, 1))
    if rows >= height:
        return composite_to_numpy(nodes, height, width)
    color = np.empty((3, height, width), dtype=np.float32)
    alpha = np.empty((1, height, width), dtype=np.float32)
    for y0 in range(0, height, rows):
        y1 = min(y0 + rows, height)
        strip = [cropped for node in nodes if (cropped := _rows_of(node, y0, y1)) is not None]
        c, a = composite_to_numpy(strip, y1 - y0, width)
        color[:, y0:y1], alpha[:, y0:y1] = c, a
    return color, alpha


def _covers_canvas(node: PixelNode, doc: Document) -> bool:
    return (node.top, node.left) == (0, 0) and node.color.shape[1:] == (doc.height, doc.width) and not node.clipping


def _blend_over_in_strips(base: np.ndarray, layers: Sequence[PixelNode], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-canvas layers over an opaque image with `blend.blend`, strip by strip: exactly what `blend.composite`
    computes for that stack (it first draws the image onto a transparent canvas, which changes nothing when
    the image is opaque), without that draw and without copying the whole canvas for every layer."""
    import torch

    from ..blend import blend, to_tensor

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
