"""GIMP, an application we did not write, opens our PSDs with the layers and modes we meant, and
composites them as lasagna_core.blend.composite does.

Every document is built twice from the same 8/16-bit arrays: as a PSD (psd-tools) for GIMP, and as a
PixelNode/GroupNode tree for composite(). All documents go through ONE GIMP start-up (module fixture).

GIMP differs from a Photoshop-style compositor in known places (docs/GIMP.md), so the data avoids
them on purpose: addition and divide never leave [0, 1] where the layer is partly transparent or
below 100% opacity (GIMP mixes the unclamped result), and soft light / hue / saturation / colour /
luminosity are not compared at all (GIMP uses other formulas).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image
from psd_tools import PSDImage
from psd_tools.constants import BlendMode as PsdMode

from lasagna_core.layers import BlendMode, GroupNode, Node, PixelNode
from tests.gimp import (
    GimpDocument,
    GimpError,
    gimp_flatten,
    gimp_layer_modes,
    gimp_open_many,
    read_png,
)

pytestmark = pytest.mark.gimp  # conftest skips these without GIMP, or fails them where CI requires it

W, H = 48, 32
MEAN_TOL = 1 / 255
MAX_TOL = 3 / 255

# What GIMP 2.10's PSD importer turns each Photoshop mode into (measured; docs/GIMP.md).
GIMP_MODE_OF = {
    "normal": "normal",
    "dissolve": "dissolve",
    "darken": "darken-only",
    "multiply": "multiply",
    "color_burn": "burn",
    "linear_burn": "linear-burn",
    "darker_color": "luma-darken-only",
    "lighten": "lighten-only",
    "screen": "screen",
    "color_dodge": "dodge",
    "linear_dodge": "addition",
    "lighter_color": "luma-lighten-only",
    "overlay": "overlay",
    "soft_light": "softlight",
    "hard_light": "hardlight",
    "vivid_light": "vivid-light",
    "linear_light": "linear-light",
    "pin_light": "pin-light",
    "hard_mix": "hard-mix",
    "difference": "difference",
    "exclusion": "exclusion",
    "subtract": "subtract",
    "divide": "divide",
    "hue": "lch-hue",
    "saturation": "lch-chroma",
    "color": "lch-color",
    "luminosity": "lch-lightness",
    "pass_through": "pass-through",
}


# ----------------------------------------------------------------------------- building documents


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _backdrop(depth: int = 8) -> np.ndarray:
    """Opaque textured backdrop, uint [H, W, 3], values kept off 0 and 1."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    rgb = np.stack([0.05 + 0.9 * x / (W - 1), 0.05 + 0.9 * y / (H - 1), 0.5 + 0.45 * np.sin(0.7 * x + 0.3 * y)], -1)
    top = 255 if depth == 8 else 65535
    return np.round(rgb * top).astype(np.uint8 if depth == 8 else np.uint16)


def _ramp_alpha(h: int, w: int) -> np.ndarray:
    """uint8 [h, w, 1]: transparent left columns, a ramp, opaque right columns."""
    ramp = np.clip((np.arange(w) - 3) / (w - 8), 0, 1)
    return np.round(np.broadcast_to(ramp[None, :, None], (h, w, 1)) * 255).astype(np.uint8)


def _unit(a: np.ndarray) -> np.ndarray:
    """uint8/uint16 [h, w, C] -> float32 [C, h, w] in [0, 1], exactly the values the PSD stores."""
    top = 255.0 if a.dtype == np.uint8 else 65535.0
    return np.ascontiguousarray((a.astype(np.float64) / top).astype(np.float32).transpose(2, 0, 1))


class _Doc:
    """One PSD and the equivalent node tree, built side by side from the same arrays."""

    def __init__(self, depth: int = 8):
        self.psd = PSDImage.new("RGB", (W, H), depth=depth)
        self.nodes: list[Node] = []
        self.depth = depth

    def layer(self, rgba: np.ndarray, name: str, mode: str = "normal", *, top: int = 0, left: int = 0,
              opacity: int = 255, nodes: list | None = None, clipping: bool = False,
              visible: bool = True, mask: np.ndarray | None = None):
        layer = self.psd.create_pixel_layer_from_array(
            rgba, name=name, top=top, left=left, opacity=opacity, blend_mode=PsdMode[mode.upper()]
        )
        alpha = _unit(rgba[..., 3:]) if rgba.shape[-1] == 4 else None
        if mask is not None:  # a layer mask; composite() wants it folded into alpha
            layer.create_mask(Image.fromarray(mask[..., 0], "L"))
            m = _unit(mask)
            alpha = m if alpha is None else alpha * m
        layer.clipping = clipping
        layer.visible = visible
        node = PixelNode(name, _unit(rgba[..., :3]), alpha, top=top, left=left, blend_mode=BlendMode(mode),
                         opacity=opacity / 255, visible=visible, clipping=clipping)
        (self.nodes if nodes is None else nodes).append(node)
        return layer

    def backdrop(self) -> None:
        self.layer(_backdrop(self.depth), "backdrop")


def _top_layer(mode: str, seed: int, *, in_gamut: bool, opaque: bool) -> tuple[np.ndarray, int, int]:
    """An RGBA layer smaller than the canvas at (top, left) = (4, 6); for addition/divide `in_gamut`
    keeps B(Cb, Cs) inside [0, 1] so that clamping before or after the opacity mix agree."""
    top, left, h, w = 4, 6, 24, 36
    rng = _rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    under = _backdrop()[top : top + h, left : left + w].astype(np.int64)
    if in_gamut and mode == "linear_dodge":  # Cb + Cs <= 1
        rgb = (rng.random((h, w, 3)) * (255 - under)).astype(np.uint8)
    if in_gamut and mode == "divide":  # Cs >= Cb > 0, so Cb / Cs <= 1
        rgb = (under + rng.random((h, w, 3)) * (256 - under)).clip(0, 255).astype(np.uint8)
    alpha = np.full((h, w, 1), 255, np.uint8) if opaque else _ramp_alpha(h, w)
    return np.concatenate([rgb, alpha], -1), top, left


def _mode_doc(mode: str, seed: int, *, in_gamut: bool = True, opaque: bool = False) -> _Doc:
    doc = _Doc()
    doc.backdrop()
    rgba, top, left = _top_layer(mode, seed, in_gamut=in_gamut, opaque=opaque)
    doc.layer(rgba, mode, mode, top=top, left=left, opacity=255 if opaque else 204)
    return doc


def _random_rgba(seed: int, alpha: np.ndarray | None = None, h: int = H, w: int = W, depth: int = 8) -> np.ndarray:
    rng = _rng(seed)
    top = 255 if depth == 8 else 65535
    dtype = np.uint8 if depth == 8 else np.uint16
    rgb = rng.integers(0, top + 1, (h, w, 3)).astype(dtype)
    if alpha is None:
        return rgb
    return np.concatenate([rgb, (alpha * top).round().astype(dtype)], -1)


def _clip_doc() -> _Doc:
    """A clip base with holes, and a Multiply layer clipped to it (psd-tools `clipping = True`)."""
    doc = _Doc()
    doc.backdrop()
    base_alpha = np.zeros((H, W, 1))
    base_alpha[6:26, 8:40] = 1.0
    doc.layer(_random_rgba(11, base_alpha), "clip base")
    ramp = _ramp_alpha(H, W).astype(np.float64) / 255
    doc.layer(_random_rgba(12, ramp), "clipped multiply", "multiply", opacity=204, clipping=True)
    return doc


def _mask_doc() -> _Doc:
    doc = _Doc()
    doc.backdrop()
    mask = _ramp_alpha(H, W)[::-1, ::-1].copy()
    doc.layer(_random_rgba(21), "masked screen", "screen", mask=mask)
    return doc


def _group_doc(mode: str) -> _Doc:
    """A group (isolated Normal at 50% or Pass Through at 100%) holding Multiply and Screen layers."""
    doc = _Doc()
    doc.backdrop()
    children: list[Node] = []
    ramp = _ramp_alpha(H, W).astype(np.float64) / 255
    l1 = doc.layer(_random_rgba(31, ramp), "inner multiply", "multiply", nodes=children)
    l2 = doc.layer(_random_rgba(32, ramp[:, ::-1]), "inner screen", "screen", opacity=153, nodes=children)
    opacity = 128 if mode == "normal" else 255
    doc.psd.create_group([l1, l2], name=f"group {mode}", opacity=opacity, blend_mode=PsdMode[mode.upper()])
    doc.nodes.append(GroupNode(f"group {mode}", children, BlendMode(mode), opacity=opacity / 255))
    return doc


def _deep_doc() -> _Doc:
    """16 bits per channel: Normal with partial alpha and opacity, then Multiply."""
    doc = _Doc(depth=16)
    doc.backdrop()
    ramp = _ramp_alpha(H, W).astype(np.float64) / 255
    doc.layer(_random_rgba(41, ramp, depth=16), "normal 16", opacity=200)
    doc.layer(_random_rgba(42, depth=16), "multiply 16", "multiply", opacity=180)
    return doc


def _transparent_doc() -> _Doc:
    """No backdrop: the composite's own alpha is compared too; plus a hidden layer GIMP must skip."""
    doc = _Doc()
    y, x = np.mgrid[0:H, 0:W]
    doc.layer(_random_rgba(51, (x / (W - 1))[..., None]), "fading normal")
    doc.layer(_random_rgba(52, (y / (H - 1))[..., None]), "multiply on alpha", "multiply", opacity=230)
    doc.layer(_random_rgba(53), "hidden", visible=False)
    return doc


# name -> (builder, comparable with composite())
MODE_DOCS: dict[str, Callable[[], _Doc]] = {
    "normal": lambda: _mode_doc("normal", 1),
    "multiply": lambda: _mode_doc("multiply", 2),
    "screen": lambda: _mode_doc("screen", 3),
    "divide": lambda: _mode_doc("divide", 4),
    "linear_dodge": lambda: _mode_doc("linear_dodge", 5),
    # Opaque at 100%: here B(Cb, Cs) may leave [0, 1] (and Cs = 0 divides) since both sides clip the same.
    "divide_saturating": lambda: _mode_doc("divide", 6, in_gamut=False, opaque=True),
    "linear_dodge_saturating": lambda: _mode_doc("linear_dodge", 7, in_gamut=False, opaque=True),
}
STRUCTURE_DOCS: dict[str, Callable[[], _Doc]] = {
    "clipping": _clip_doc,
    "layer_mask": _mask_doc,
    "group_normal": lambda: _group_doc("normal"),
    "group_pass_through": lambda: _group_doc("pass_through"),
    "depth16": _deep_doc,
    "transparent_hidden": _transparent_doc,
}


@dataclass
class Rendered:
    doc: _Doc
    gimp: GimpDocument
    gimp_rgba: np.ndarray  # float32 [H, W, 4]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Rendered]:
    """Every document above through ONE GIMP start-up."""
    root = tmp_path_factory.mktemp("gimp")
    builders = {**MODE_DOCS, **STRUCTURE_DOCS}
    docs = {name: build() for name, build in builders.items()}
    psds = []
    for name, doc in docs.items():
        path = root / f"{name}.psd"
        doc.psd.save(path)
        psds.append(path)
    opened = gimp_open_many(psds, root / "png")
    return {
        name: Rendered(doc, g, read_png(g.png)) for (name, doc), g in zip(docs.items(), opened)
    }


def composite_errors(r: Rendered) -> dict[str, float]:
    """Mean/max |GIMP - composite()| in [0, 1] units, colour where GIMP's alpha > 0, and alpha."""
    from lasagna_core.blend import composite

    color, alpha = composite(r.doc.nodes, H, W)
    ours_c = color[0].detach().numpy().transpose(1, 2, 0).astype(np.float64)
    ours_a = alpha[0, 0].detach().numpy().astype(np.float64)
    theirs = r.gimp_rgba.astype(np.float64)
    assert theirs.shape == (H, W, 4), theirs.shape
    seen = theirs[..., 3] > 0
    ec = np.abs(theirs[..., :3] - ours_c)[seen]
    ea = np.abs(theirs[..., 3] - ours_a)
    return {"color_mean": float(ec.mean()), "color_max": float(ec.max()),
            "alpha_mean": float(ea.mean()), "alpha_max": float(ea.max())}


def _assert_close(name: str, r: Rendered) -> None:
    e = composite_errors(r)
    in255 = {k: round(v * 255, 3) for k, v in e.items()}
    assert e["color_mean"] <= MEAN_TOL and e["color_max"] <= MAX_TOL, f"{name}: GIMP vs composite, /255: {in255}"
    assert e["alpha_mean"] <= MEAN_TOL and e["alpha_max"] <= MAX_TOL, f"{name}: GIMP vs composite, /255: {in255}"


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", list(MODE_DOCS))
def test_mode_matches_composite(rendered: dict[str, Rendered], name: str) -> None:
    r = rendered[name]
    mode = name.removesuffix("_saturating")
    layers = [(l.name, l.mode, round(l.opacity, 3), l.visible) for l in r.gimp.layers]
    opacity = 1.0 if name.endswith("_saturating") else 0.8
    assert layers == [("backdrop", "normal", 1.0, True), (mode, GIMP_MODE_OF[mode], opacity, True)]
    top = r.gimp.layers[1]
    assert (top.offset, top.size) == ((6, 4), (36, 24))
    assert r.gimp.precision == "u8-gamma"
    if mode != "normal":  # GIMP's PSD import picks the Photoshop-like sRGB-space variant of each mode
        assert (top.blend_space, top.composite_space, top.composite_mode) == ("rgb-perceptual", "rgb-perceptual", "union")
    _assert_close(name, r)


@pytest.mark.parametrize("name", list(STRUCTURE_DOCS))
def test_structure_matches_composite(rendered: dict[str, Rendered], name: str) -> None:
    _assert_close(name, rendered[name])


def test_structure_as_gimp_reads_it(rendered: dict[str, Rendered]) -> None:
    clip = rendered["clipping"].gimp.layers
    # GIMP turns a clipping mask into an isolated group of base + clipped, the clipped layer in
    # "clip to backdrop" composite mode.
    assert [(l.path, l.mode, l.composite_mode) for l in clip] == [
        (("backdrop",), "normal", "union"),
        (("Group added by GIMP",), "normal", "union"),
        (("Group added by GIMP", "clip base"), "normal", "union"),
        (("Group added by GIMP", "clipped multiply"), "multiply", "clip-to-backdrop"),
    ]
    assert rendered["layer_mask"].gimp.layers[1].has_mask
    group = rendered["group_normal"].gimp.layers
    assert [(l.path, l.mode, round(l.opacity, 3), l.is_group) for l in group] == [
        (("backdrop",), "normal", 1.0, False),
        (("group normal",), "normal", 0.502, True),
        (("group normal", "inner multiply"), "multiply", 1.0, False),
        (("group normal", "inner screen"), "screen", 0.6, False),
    ]
    assert rendered["group_pass_through"].gimp.layers[1].mode == "pass-through"
    assert rendered["depth16"].gimp.precision == "u16-gamma"
    assert [l.visible for l in rendered["transparent_hidden"].gimp.layers] == [True, True, False]


def test_gimp_layer_modes_names_every_photoshop_mode(tmp_path: Path) -> None:
    """One layer per Photoshop mode in one document, read back with gimp_layer_modes()."""
    psd = PSDImage.new("RGB", (8, 8), depth=8)
    expected = []
    for i, mode in enumerate(m for m in PsdMode if m is not PsdMode.PASS_THROUGH):
        opacity = 255 - 8 * i
        layer = psd.create_pixel_layer_from_array(_random_rgba(i, h=8, w=8), name=f"L{i} {mode.name}",
                                                  opacity=opacity, blend_mode=mode)
        layer.visible = i % 5 != 3
        expected.append((layer.name, GIMP_MODE_OF[mode.name.lower()], round(opacity / 255, 3), layer.visible))
    path = tmp_path / "all modes.psd"  # a space in the name on purpose
    psd.save(path)
    got = [(n, m, round(o, 3), v) for n, m, o, v in gimp_layer_modes(path)]
    assert got == expected


def test_gimp_failure_raises_with_gimps_message(tmp_path: Path) -> None:
    bad = tmp_path / "not a psd.psd"
    bad.write_bytes(b"8BPS but not really a Photoshop file")
    with pytest.raises(GimpError, match=r"(?s)GIMP failed.*file-psd-load"):
        gimp_flatten(bad, tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_read_png_16_bit(rendered: dict[str, Rendered]) -> None:
    """GIMP writes a 16-bit PNG for a 16-bit PSD and read_png keeps all 16 bits."""
    r = rendered["depth16"]
    data = r.gimp.png.read_bytes()
    assert data[24] == 16  # IHDR bit depth
    v = np.round(r.gimp_rgba * 65535)
    assert np.any(v % 257 != 0)  # values that no 8-bit image has
