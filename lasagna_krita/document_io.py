"""The open Krita document in and out: the base picture Lasagna edits, and its new layers brought back.

The base goes out as a PNG, not a PSD: the document's projection (what the user sees), or one layer's
projection when that layer is the base, both in canvas coordinates with their alpha. That is lossless for
the 8-bit RGBA documents this supports, names no layer by a path that Krita's duplicate names could make
ambiguous, and gives Lasagna the coverage (the layer's alpha) that keeps the new layers neutral outside it.

The new layers come back from Lasagna's PSD, opened by Krita itself, by the names the result line gives;
each is a new paint layer with the blend mode (`blend_modes`), opacity and pixels, in a pass-through group
named after the prompt so that the layers blend with the picture below as they do in the PSD. When a layer
was the base, the group goes directly above it and each new layer inherits alpha: Krita has no Photoshop
clipping masks, and alpha inheritance (clipped to what lies below in the same group) is its equivalent.
No existing layer is changed. Needs Krita (imported only inside Krita).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from krita import Krita
from PyQt5.QtGui import QImage

from .blend_modes import krita_composite_op

GROUP_NAME_LIMIT = 60


class UnsupportedDocument(RuntimeError):
    """A document the plug-in can't hand to Lasagna; the message says how to convert it."""


def check_document(document: Any, base: Optional[Any]) -> None:
    if base is not None and base.type().endswith("mask"):
        raise UnsupportedDocument(f"the active node '{base.name()}' is a mask: select a layer to use as the base")
    if (document.colorModel(), document.colorDepth()) != ("RGBA", "U8"):
        raise UnsupportedDocument(
            f"the Lasagna plug-in works on 8-bit RGB documents, this one is {document.colorModel()} "
            f"{document.colorDepth()}: Image > Convert Image Color Space... to RGB/Alpha, 8-bit integer")


def export_png(document: Any, node: Optional[Any], path: Path) -> None:
    """The document's projection, or `node`'s (masks and children included), as an RGBA PNG of the canvas."""
    document.waitForDone()
    width, height = document.width(), document.height()
    if node is None:
        data = document.pixelData(0, 0, width, height)  # the document's projection
    else:
        data = node.projectionPixelData(0, 0, width, height)
    image = QImage(bytes(data), width, height, width * 4, QImage.Format_ARGB32)  # Krita's 8-bit RGBA is BGRA
    if not image.save(str(path), "PNG"):
        raise OSError(f"can't write {path}")


def group_name(prompt: str, template: str) -> str:
    text = " ".join(prompt.split()) or template
    return text if len(text) <= GROUP_NAME_LIMIT else text[: GROUP_NAME_LIMIT - 3].rstrip() + "..."


def add_layers(document: Any, result_psd: Path, layers: List[Dict[str, Any]], base: Optional[Any], name: str) -> List[Any]:
    """Lasagna's new `layers` (bottom to top, as its result line lists them) from `result_psd` into `document`,
    in a new group above `base` (or above everything); returns the new layer nodes, bottom to top."""
    result = Krita.instance().openDocument(str(result_psd))
    if result is None:
        raise OSError(f"Krita can't open Lasagna's result {result_psd}")
    try:
        sources = {node.name(): node for node in result.topLevelNodes()}
        missing = [layer["name"] for layer in layers if layer["name"] not in sources]
        if missing:
            raise OSError(f"{result_psd.name} has no layer named {', '.join(missing)}")
        group = document.createGroupLayer(name)
        group.setPassThroughMode(True)
        parent = document.rootNode() if base is None else base.parentNode()
        above = base if base is not None else (parent.childNodes() or [None])[-1]
        parent.addChildNode(group, above)
        nodes = [_copy_layer(document, group, sources[layer["name"]], layer, clipped=base is not None) for layer in layers]
    finally:
        result.close()
    document.refreshProjection()
    document.waitForDone()
    return nodes


def _copy_layer(document: Any, group: Any, source: Any, layer: Dict[str, Any], clipped: bool) -> Any:
    node = document.createNode(layer["name"], "paintlayer")
    group.addChildNode(node, None)  # on top of the group's layers so far
    box = source.bounds()
    node.setPixelData(source.pixelData(box.x(), box.y(), box.width(), box.height()), box.x(), box.y(), box.width(), box.height())
    node.setBlendingMode(krita_composite_op(layer["blend_mode"]))
    node.setOpacity(round(float(layer.get("opacity", 1.0)) * 255))
    node.setVisible(source.visible())
    node.setInheritAlpha(clipped)
    return node
