"""PSDs that Lasagna itself wrote, opened by GIMP: the right layers and modes, and GIMP's flatten agrees with
the merged image Lasagna stored (within 1/255 mean and 3/255 max). One GIMP start-up for the whole file."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from psd_tools import PSDImage

from lasagna_core.document import load
from lasagna_core.writing import save_psd
from lasagna_core.layers import BlendMode, PixelNode
from lasagna_core.edit import run_edit
from tests.conftest import EXAMPLE_PSD, edit_job, photoshop
from tests.gimp import gimp_flatten, gimp_open_many, read_png
from tests.tiny_sd import make_tiny_sd

pytestmark = pytest.mark.gimp

# Layer values stay where Photoshop and GIMP agree (docs/GIMP.md): GIMP mixes an unclamped Divide/Add result
# before opacity, so those two are written opaque at 100%; the others also get partial opacity.
CASES = {
    "normal-alpha": (BlendMode.NORMAL, 3, True, 0.8),
    "multiply": (BlendMode.MULTIPLY, 1, False, 0.7),
    "screen": (BlendMode.SCREEN, 1, False, 0.6),
    "divide": (BlendMode.DIVIDE, 1, False, 1.0),
    "linear-dodge": (BlendMode.LINEAR_DODGE, 3, False, 1.0),
}
GIMP_MODE = {"normal": "normal", "multiply": "multiply", "screen": "screen", "divide": "divide", "linear_dodge": "addition"}


def _layer(mode: BlendMode, channels: int, alpha: bool, opacity: float, height: int, width: int) -> PixelNode:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin(x / 17.0) * np.cos(y / 23.0)
    if mode is BlendMode.DIVIDE:
        wave = 0.6 + 0.4 * wave  # keeps base/layer mostly inside [0, 1]
    color = np.stack([wave, 1 - wave, 0.5 * wave][:channels]).astype(np.float32)
    coverage = np.clip(x / width, 0, 1)[None].astype(np.float32) if alpha else None
    return PixelNode(mode.value, color, coverage, blend_mode=mode, opacity=opacity)


@dataclass
class Opened:
    psd: Path
    png: Path
    layers: list[Any]  # GIMP's view of each layer: name, mode, opacity, visible


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Opened]:
    folder = tmp_path_factory.mktemp("gimp-roundtrip")
    docs: dict[str, Path] = {}
    example = load(EXAMPLE_PSD)
    for name, (mode, channels, alpha, opacity) in CASES.items():
        docs[name] = save_psd(example, [_layer(mode, channels, alpha, opacity, example.height, example.width)],
                              folder / f"{name}.psd")
    cyrillic = load(photoshop("2layers.psd"))
    docs["unicode-names"] = save_psd(cyrillic, [PixelNode("Тени", np.full((1, 55, 101), 0.5, np.float32), None,
                                                          blend_mode=BlendMode.MULTIPLY)], folder / "unicode.psd")
    model = make_tiny_sd(folder / "tiny-sd")
    run_edit(edit_job(EXAMPLE_PSD, "light from the left", model=str(model), steps=5, output=folder / "shade.psd"))
    run_edit(edit_job(EXAMPLE_PSD, "paint it", template="colorize-sd", model=str(model), steps=5, output=folder / "colorize.psd"))
    run_edit(edit_job(EXAMPLE_PSD, "light from the left", layer="Orange", model=str(model), steps=5,
                         output=folder / "clipped.psd"))
    docs.update(shade=folder / "shade.psd", colorize=folder / "colorize.psd", clipped=folder / "clipped.psd")
    pngs = {name: folder / f"{name}-gimp.png" for name in docs}
    results = gimp_open_many(list(docs.values()), pngs=list(pngs.values()))
    return {name: Opened(docs[name], pngs[name], doc.layers) for name, doc in zip(docs, results)}


@dataclass
class Agreement:
    """How GIMP's flatten of a document compares with the merged image Lasagna stored in it."""

    mean: float  # over the whole canvas
    worst: float  # outside the ignored pixels
    differing: float  # share of canvas pixels more than 3/255 apart (ignored ones left out)
    gimp_alpha: float  # mean alpha of GIMP's flatten: near 0 where GIMP left tiles unrendered

    @property
    def agrees(self) -> bool:
        return self.mean <= 1 / 255 and self.worst <= 3 / 255

    def __str__(self) -> str:
        return (f"mean {self.mean * 255:.3f}/255, max {self.worst * 255:.3f}/255, {self.differing:.1%} of pixels "
                f"apart, GIMP's mean alpha {self.gimp_alpha:.3f}")


def _agreement(psd: Path, png: Path, ignore: np.ndarray | None = None) -> Agreement:
    gimp = read_png(png)
    diff = np.abs(PSDImage.open(psd).numpy()[..., :3] - gimp[..., :3])
    kept = diff if ignore is None else diff[~ignore]
    return Agreement(float(diff.mean()), float(kept.max()), float((kept.max(-1) > 3 / 255).mean()),
                     float(gimp[..., 3].mean()) if gimp.shape[-1] == 4 else 1.0)


def _soft_edge_of(psd: Path, layer_name: str) -> np.ndarray:
    """Canvas pixels where a layer is partly transparent (its anti-aliased outline)."""
    document = PSDImage.open(psd)
    layer = [l for l in document.descendants() if l.name == layer_name][0]
    edge = np.zeros((document.height, document.width), bool)
    left, top, right, bottom = layer.bbox
    alpha = layer.numpy()[..., 3]
    edge[top:bottom, left:right] = (alpha > 0) & (alpha < 1)
    return edge


def _judged(psd: Path, png: Path, ignore: np.ndarray | None) -> tuple[Agreement, Agreement | None]:
    """GIMP's flatten `png` against the stored merged image and, when they disagree, a second render of `psd`
    by a fresh GIMP start: once, in CI, one document's flatten came out wrong over much of the canvas (mean
    79/255) where 270 renders of the same file here all agreed. A file we wrote wrongly disagrees on every
    render."""
    first = _agreement(psd, png, ignore)
    if first.agrees:
        return first, None
    again = png.with_name(f"{png.stem}-again.png")
    gimp_flatten(psd, again)
    return first, _agreement(psd, again, ignore)


@pytest.mark.parametrize("name", [*CASES, "unicode-names", "shade", "colorize", "clipped"])
def test_gimp_flatten_matches_stored_merged_image(written: dict[str, Opened], name: str) -> None:
    # GIMP composites a clipped layer over a partly transparent base pixel without the W3C (1 - ab) * Cs term
    # (docs/GIMP.md), so on the clip base's anti-aliased outline the two renderers may differ by design.
    psd = written[name].psd
    first, second = _judged(psd, written[name].png, _soft_edge_of(psd, "Orange") if name == "clipped" else None)
    if second is not None:
        assert second.agrees, f"{name}: first render {first}; a second GIMP start: {second}"
        warnings.warn(f"{name}: GIMP's first flatten disagreed ({first}), a second GIMP start agrees ({second})")


def test_a_disagreeing_flatten_is_rendered_again(written: dict[str, Opened], tmp_path: Path) -> None:
    # A flatten with its lower half unrendered (transparent black): the second start decides.
    broken = tmp_path / "shade-gimp.png"
    pixels = read_png(written["shade"].png)
    pixels[pixels.shape[0] // 2:] = 0
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(broken)
    first, second = _judged(written["shade"].psd, broken, None)
    assert not first.agrees and first.differing > 0.4 and first.gimp_alpha < 0.6
    assert second is not None and second.agrees and second.differing == 0.0


def test_gimp_reads_the_new_layers_with_their_modes(written: dict[str, Opened]) -> None:
    layers = {name: opened.layers for name, opened in written.items()}
    for name, (mode, *_rest) in CASES.items():
        top = layers[name][-1]
        assert (top.name, top.mode) == (mode.value, GIMP_MODE[mode.value])
    assert [l.name for l in layers["unicode-names"]] == ["Фон", "Слой", "Тени"]
    assert [(l.name, l.mode) for l in layers["shade"][-2:]] == [("Shadows", "multiply"), ("Light", "screen")]
    assert [(l.name, l.mode) for l in layers["colorize"][-1:]] == [("Colour", "normal")]
