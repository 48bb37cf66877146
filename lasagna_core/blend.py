"""Photoshop's blend modes and layer-stack compositing as differentiable torch ops.

This is the only place in the project where a blend formula is written down: the optimisation's
composition function, the merged image stored in a PSD, previews and `lasagna flatten` all call it, so
what the optimiser sees is what Photoshop shows. Every formula was checked against merged images that
Photoshop itself wrote (docs/BLEND-MODES.md has the table and the variants that lost).

Colours are straight (not premultiplied) float32 in [0, 1], shaped [B, C, H, W]; alpha is [B, 1, H, W].
Compositing follows the W3C Compositing spec, which Adobe wrote from Photoshop's behaviour:
Cs' = (1 - ab) Cs + ab B(Cb, Cs), then source-over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .color import PSD_LUMA
from .layers import BlendMode, GroupNode, Node, PixelNode

__all__ = ["mix", "blend", "composite", "to_tensor"]

_EPS = 1e-6
# Photoshop's own weights for hue/saturation/colour/luminosity and darker/lighter colour are the W3C ones;
# Rec.601 (0.299, 0.587, 0.114) and Rec.709 fit the fixtures worse (docs/BLEND-MODES.md).
# Slope of the straight-through gradient given to Hard Mix, whose true derivative is zero almost everywhere.
_HARD_MIX_SOFTNESS = 0.05


def to_tensor(array: np.ndarray | Tensor) -> Tensor:
    """[C, H, W] or [H, W] pixels (numpy or torch) -> float32 [1, C, H, W]; tensors keep their graph."""
    t = array if isinstance(array, Tensor) else torch.from_numpy(np.ascontiguousarray(array))
    t = t.to(torch.float32)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"expected [C, H, W] or [H, W] pixels, got shape {tuple(t.shape)}")
    return t[None]


# --- helpers that keep gradients finite where the textbook formula divides by zero or takes sqrt(0) ---


def _div(num: Tensor, den: Tensor, fallback: Tensor | float) -> Tensor:
    """num / den where den > eps, else fallback; the unused branch never sees a zero denominator."""
    ok = den > _EPS
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), fallback)


def luminosity(c: Tensor) -> Tensor:
    """PSD's Lum of [B, 3, H, W] colours, [B, 1, H, W]: the lightness the Color, Hue and Luminosity modes keep or set."""
    r, g, b = c.unbind(1)
    return (PSD_LUMA[0] * r + PSD_LUMA[1] * g + PSD_LUMA[2] * b)[:, None]


def _clip_color(c: Tensor) -> Tensor:
    """Pull an out-of-gamut colour back towards its own luminosity (W3C ClipColor)."""
    lum = luminosity(c)
    lo, hi = c.amin(1, keepdim=True), c.amax(1, keepdim=True)
    c = torch.where(lo < 0, lum + _div((c - lum) * lum, lum - lo, 0.0), c)
    return torch.where(hi > 1, lum + _div((c - lum) * (1 - lum), hi - lum, 0.0), c)


def _set_lum(c: Tensor, lum: Tensor) -> Tensor:
    return _clip_color(c + (lum - luminosity(c)))


def _set_sat(c: Tensor, sat: Tensor) -> Tensor:
    """Scale c's chroma to `sat` keeping its hue; grey in, grey (0) out."""
    lo, hi = c.amin(1, keepdim=True), c.amax(1, keepdim=True)
    return _div((c - lo) * sat, (hi - lo).expand_as(c), 0.0)


def _sat(c: Tensor) -> Tensor:
    return c.amax(1, keepdim=True) - c.amin(1, keepdim=True)


# --- the separable pieces other modes are built from ---


def _dodge(cb: Tensor, cs: Tensor) -> Tensor:
    return torch.clamp(_div(cb, 1 - cs, 1.0), max=1.0)


def _burn(cb: Tensor, cs: Tensor) -> Tensor:
    return 1 - torch.clamp(_div(1 - cb, cs, 1.0), max=1.0)


def _color_dodge(cb: Tensor, cs: Tensor) -> Tensor:
    # Black stays black even under white (Photoshop and W3C agree): the cb == 0 test wins over cs == 1.
    return torch.where(cb <= 0, torch.zeros_like(cb), _dodge(cb, cs))


def _color_burn(cb: Tensor, cs: Tensor) -> Tensor:
    # White stays white even under black.
    return torch.where(cb >= 1, torch.ones_like(cb), _burn(cb, cs))


def _hard_light(cb: Tensor, cs: Tensor) -> Tensor:
    return torch.where(cs <= 0.5, cb * 2 * cs, 1 - (1 - cb) * (1 - (2 * cs - 1)))


def _soft_light(cb: Tensor, cs: Tensor) -> Tensor:
    # W3C's curve (a polynomial below cb = 1/4, sqrt above) matches Photoshop; the plain-sqrt curve often
    # quoted as "Photoshop's" is off by up to 20 levels on the fixtures. sqrt never sees cb < 1/4, so its
    # gradient stays finite at black.
    d = torch.where(cb <= 0.25, ((16 * cb - 12) * cb + 4) * cb, torch.sqrt(torch.clamp(cb, min=0.25)))
    return torch.where(cs <= 0.5, cb - (1 - 2 * cs) * cb * (1 - cb), cb + (2 * cs - 1) * (d - cb))


def _vivid_light(cb: Tensor, cs: Tensor) -> Tensor:
    # Unlike Color Dodge/Burn, Photoshop lets the source's extremes win here: black source -> black even on
    # a white backdrop, white source -> white even on black.
    return torch.where(cs <= 0.5, _burn(cb, 2 * cs), _dodge(cb, 2 * cs - 1))


def _pin_light(cb: Tensor, cs: Tensor) -> Tensor:
    return torch.where(cs <= 0.5, torch.minimum(cb, 2 * cs), torch.maximum(cb, 2 * cs - 1))


def _hard_mix(cb: Tensor, cs: Tensor) -> Tensor:
    # Forward: Photoshop's 0/1 threshold, cb + cs > 1. Exact ties (cb + cs == 1) go white for a dark source
    # and black for a light one, as measured (hard-mix.psd: B(1, 0) = 1 but B(0, 1) = 0).
    # Backward: a steep sigmoid's slope (straight-through), because the threshold's own derivative is zero
    # and would give the optimiser nothing to follow.
    tie = _EPS * torch.where(cs < 0.5, -1.0, 1.0)
    hard = (cb + cs > 1 + tie).to(cs.dtype)
    soft = torch.sigmoid((cb + cs - 1) / _HARD_MIX_SOFTNESS)
    return hard + soft - soft.detach()


def _divide(cb: Tensor, cs: Tensor) -> Tensor:
    # Dividing by a black source gives white, except a black backdrop, which stays black (0/0 -> 0).
    white = (cb > 0).to(cb.dtype)
    return torch.clamp(_div(cb, cs, white), max=1.0)


def _pick_by_lum(cb: Tensor, cs: Tensor, darker: bool) -> Tensor:
    ls, lb = luminosity(cs), luminosity(cb)
    return torch.where(ls < lb if darker else ls > lb, cs, cb)


_MIX: dict[BlendMode, Callable[[Tensor, Tensor], Tensor]] = {
    BlendMode.NORMAL: lambda cb, cs: cs,
    BlendMode.DISSOLVE: lambda cb, cs: cs,  # Photoshop dithers alpha at random; the expected value is Normal
    BlendMode.PASS_THROUGH: lambda cb, cs: cs,  # a group property; a layer with it blends as Normal
    BlendMode.MULTIPLY: lambda cb, cs: cb * cs,
    BlendMode.SCREEN: lambda cb, cs: cb + cs - cb * cs,
    BlendMode.OVERLAY: lambda cb, cs: _hard_light(cs, cb),
    BlendMode.HARD_LIGHT: _hard_light,
    BlendMode.SOFT_LIGHT: _soft_light,
    BlendMode.DARKEN: torch.minimum,
    BlendMode.LIGHTEN: torch.maximum,
    BlendMode.COLOR_DODGE: _color_dodge,
    BlendMode.COLOR_BURN: _color_burn,
    BlendMode.LINEAR_DODGE: lambda cb, cs: torch.clamp(cb + cs, max=1.0),
    BlendMode.LINEAR_BURN: lambda cb, cs: torch.clamp(cb + cs - 1, min=0.0),
    BlendMode.VIVID_LIGHT: _vivid_light,
    BlendMode.LINEAR_LIGHT: lambda cb, cs: torch.clamp(cb + 2 * cs - 1, 0.0, 1.0),
    BlendMode.PIN_LIGHT: _pin_light,
    BlendMode.HARD_MIX: _hard_mix,
    BlendMode.DIFFERENCE: lambda cb, cs: torch.abs(cb - cs),
    BlendMode.EXCLUSION: lambda cb, cs: cb + cs - 2 * cb * cs,
    BlendMode.SUBTRACT: lambda cb, cs: torch.clamp(cb - cs, min=0.0),
    BlendMode.DIVIDE: _divide,
    BlendMode.DARKER_COLOR: lambda cb, cs: _pick_by_lum(cb, cs, darker=True),
    BlendMode.LIGHTER_COLOR: lambda cb, cs: _pick_by_lum(cb, cs, darker=False),
    BlendMode.HUE: lambda cb, cs: _set_lum(_set_sat(cs, _sat(cb)), luminosity(cb)),
    BlendMode.SATURATION: lambda cb, cs: _set_lum(_set_sat(cb, _sat(cs)), luminosity(cb)),
    BlendMode.COLOR: lambda cb, cs: _set_lum(cs, luminosity(cb)),
    BlendMode.LUMINOSITY: lambda cb, cs: _set_lum(cb, luminosity(cs)),
}
_NON_SEPARABLE = {
    BlendMode.HUE, BlendMode.SATURATION, BlendMode.COLOR, BlendMode.LUMINOSITY,
    BlendMode.DARKER_COLOR, BlendMode.LIGHTER_COLOR,
}


def mix(backdrop: Tensor, source: Tensor, mode: BlendMode) -> Tensor:
    """B(Cb, Cs): the per-pixel mixing function of `mode`, both [B,3,H,W]."""
    mode = BlendMode(mode)
    if mode in _NON_SEPARABLE:
        backdrop, source = torch.broadcast_tensors(backdrop, source)
        if backdrop.shape[1] != 3:
            raise ValueError(f"{mode.value} needs RGB colours, got {backdrop.shape[1]} channel(s)")
    return _MIX[mode](backdrop, source)


def _compose(cb: Tensor, cs: Tensor, mode: BlendMode, as_: Tensor, ab: Tensor, atop: bool) -> tuple[Tensor, Tensor]:
    """Source-over (or source-atop, for clipped layers) of one blended layer; straight colour out."""
    if cs.shape[1] != cb.shape[1]:
        cs = cs.expand(-1, cb.shape[1], -1, -1)
    mixed = cs if mode is BlendMode.NORMAL else (1 - ab) * cs + ab * mix(cb, cs, mode)
    if atop:  # result keeps the backdrop's coverage: the clipped layer only paints where its base is
        return as_ * mixed + (1 - as_) * cb, ab
    alpha = as_ + ab * (1 - as_)
    return _div(as_ * mixed + (1 - as_) * ab * cb, alpha, 0.0), alpha


def blend(
    backdrop: Tensor,
    source: Tensor,
    mode: BlendMode,
    *,
    source_alpha: Tensor | None = None,
    opacity: float | Tensor = 1.0,
    backdrop_alpha: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Composite one layer over a backdrop (W3C compositing/Photoshop: Cs' = (1-ab)Cs + ab*B(Cb,Cs),
    source-over), returns (color [B,3,H,W], alpha [B,1,H,W]). source may have 1 channel (gray layer:
    broadcast) or 3. alpha None = opaque. Colours are straight (not premultiplied), in and out; where the
    result is fully transparent its colour is 0."""
    shape = (max(backdrop.shape[0], source.shape[0]), 1, *backdrop.shape[2:])
    ones = backdrop.new_ones(shape)
    as_ = (ones if source_alpha is None else source_alpha) * opacity
    ab = ones if backdrop_alpha is None else backdrop_alpha
    return _compose(backdrop, source, BlendMode(mode), as_, ab, atop=False)


# --- layer trees ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Doc:
    """The document being flattened: its size, and the device of the first tensor layer (else CPU)."""

    height: int
    width: int
    device: torch.device

    def tensor(self, pixels: np.ndarray | Tensor) -> Tensor:
        return to_tensor(pixels).to(self.device)

    def empty(self) -> "_Canvas":
        zeros = torch.zeros(1, 4, self.height, self.width, device=self.device)
        return _Canvas(zeros[:, :3], zeros[:, 3:])

    @property
    def everywhere(self) -> tuple[slice, slice]:
        return slice(0, self.height), slice(0, self.width)


class _Canvas:
    """A document-sized (colour, alpha) pair that layers are drawn into, one window at a time."""

    def __init__(self, color: Tensor, alpha: Tensor):
        self.color, self.alpha = color, alpha

    def draw(self, color: Tensor, alpha: Tensor, window: tuple[slice, slice], mode: BlendMode,
             opacity: float | Tensor, atop: bool = False) -> None:
        """Blend a layer covering `window` in; pixels outside it are left exactly as they were."""
        ys, xs = window
        c, a = _compose(self.color[..., ys, xs], color, mode, alpha * opacity, self.alpha[..., ys, xs], atop)
        self.color, self.alpha = self.color.clone(), self.alpha.clone()  # never write into a tensor autograd saved
        self.color[..., ys, xs], self.alpha[..., ys, xs] = c, a


def _pixels(node: PixelNode, doc: _Doc) -> tuple[Tensor, Tensor, tuple[slice, slice]] | None:
    """The part of a pixel layer inside the canvas as (colour [1,3,h,w], alpha [1,1,h,w], canvas window);
    None when nothing of it is (off the canvas, or 0x0)."""
    h, w = node.color.shape[-2:]
    y0, x0 = max(node.top, 0), max(node.left, 0)
    y1, x1 = min(node.top + h, doc.height), min(node.left + w, doc.width)
    if y1 <= y0 or x1 <= x0:
        return None
    ys, xs = slice(y0 - node.top, y1 - node.top), slice(x0 - node.left, x1 - node.left)
    color = doc.tensor(node.color)[..., ys, xs]
    color = color.expand(-1, 3, -1, -1) if color.shape[1] == 1 else color
    alpha = torch.ones_like(color[:, :1]) if node.alpha is None else doc.tensor(node.alpha)[..., ys, xs]
    return color, alpha, (slice(y0, y1), slice(x0, x1))


def _render(node: Node, doc: _Doc) -> _Canvas | None:
    """A node's own pixels on a transparent canvas, before its opacity and blend mode: what a clipping
    group or an isolated group is drawn from. A pass-through group asked for here renders isolated."""
    canvas = doc.empty()
    if isinstance(node, PixelNode):
        px = _pixels(node, doc)
        if px is None:
            return None
        canvas.draw(*px, BlendMode.NORMAL, 1.0)
        return canvas
    _draw_stack(canvas, node.children, doc)
    if node.mask is not None:
        canvas.alpha = canvas.alpha * doc.tensor(node.mask)
    return canvas


def _draw_stack(canvas: _Canvas, nodes: Sequence[Node], doc: _Doc) -> None:
    """Draw nodes bottom to top; a node followed by clipped nodes is drawn as one clipping group."""
    i = 0
    while i < len(nodes):
        base, j = nodes[i], i + 1
        while j < len(nodes) and nodes[j].clipping:
            j += 1
        clipped = [n for n in nodes[i + 1 : j] if n.visible]
        i = j
        if not base.visible:  # hiding a clip base hides what is clipped to it too
            continue
        if clipped:
            _draw_clipping_group(canvas, base, clipped, doc)
        elif isinstance(base, GroupNode) and base.blend_mode is BlendMode.PASS_THROUGH:
            _draw_pass_through(canvas, base, doc)
        elif isinstance(base, GroupNode):
            group = _render(base, doc)
            canvas.draw(group.color, group.alpha, doc.everywhere, base.blend_mode, base.opacity)
        elif (px := _pixels(base, doc)) is not None:
            canvas.draw(*px, base.blend_mode, base.opacity)


def _draw_pass_through(canvas: _Canvas, group: GroupNode, doc: _Doc) -> None:
    """Children blend straight into what lies below; opacity and mask then fade between before and after."""
    before = _Canvas(canvas.color, canvas.alpha)
    _draw_stack(canvas, group.children, doc)
    if group.opacity >= 1 and group.mask is None:
        return
    w = group.opacity * (1.0 if group.mask is None else doc.tensor(group.mask))
    alpha = before.alpha + w * (canvas.alpha - before.alpha)
    premul = before.color * before.alpha + w * (canvas.color * canvas.alpha - before.color * before.alpha)
    canvas.color, canvas.alpha = _div(premul, alpha.expand_as(premul), 0.0), alpha


def _draw_clipping_group(canvas: _Canvas, base: Node, clipped: list[Node], doc: _Doc) -> None:
    """Photoshop's default ("blend clipped layers as group"): clipped layers paint atop the base alone,
    then the group lands on the canvas with the base's blend mode and opacity."""
    group = _render(base, doc)
    if group is None:
        return
    for node in clipped:
        if isinstance(node, PixelNode):
            if (px := _pixels(node, doc)) is not None:
                group.draw(*px, node.blend_mode, node.opacity, atop=True)
        else:  # a clipped group is flattened first, then painted like a layer
            layer = _render(node, doc)
            group.draw(layer.color, layer.alpha, doc.everywhere, node.blend_mode, node.opacity, atop=True)
    canvas.draw(group.color, group.alpha, doc.everywhere, base.blend_mode, base.opacity)


def _first_device(nodes: Sequence[Node]) -> torch.device:
    for node in nodes:
        if isinstance(node, GroupNode):
            if (found := _first_device(node.children)) != torch.device("cpu"):
                return found
        elif isinstance(node.color, Tensor):
            return node.color.device
    return torch.device("cpu")


def composite(
    nodes: Sequence[Node],
    height: int,
    width: int,
    *,
    background: tuple[float, float, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Flatten a layer tree (layers.PixelNode/GroupNode, bottom to top, numpy pixels placed at top/left in
    document coords) to (color [1,3,H,W], alpha [1,1,H,W]). Handles visibility, opacity, pass-through groups
    and isolated groups with their own blend mode, group masks, clipping masks (a clipped layer is confined
    to its clip base's coverage), gray (C=1) layers, layers partly or wholly outside the canvas (crop), empty
    layers (0x0).

    `background` None starts from a transparent canvas (Photoshop's, for a document without a Background
    layer). Pixels may also be torch tensors: their graph is kept, so a layer tree can be optimised through
    this, and the result is on the device of the first tensor layer.
    """
    doc = _Doc(height, width, _first_device(nodes))
    canvas = doc.empty()
    if background is not None:
        canvas.color = torch.tensor(background, dtype=torch.float32, device=doc.device).view(1, 3, 1, 1)
        canvas.color = canvas.color.expand(1, 3, height, width)
        canvas.alpha = torch.ones(1, 1, height, width, device=doc.device)
    _draw_stack(canvas, nodes, doc)
    return canvas.color, canvas.alpha
