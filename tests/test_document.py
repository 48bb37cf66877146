"""Reading images and PSDs, refusing bad ones with one clear error, and writing PSDs back without loss."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from psd_tools import PSDImage

from lasagna_core import document
from lasagna_core.describe import describe
from lasagna_core.document import load
from lasagna_core.writing import save_psd
from lasagna_core.errors import DocumentError, ImageTooLargeError, OutputError, UnsupportedDocumentError, UsageError
from lasagna_core.layers import BlendMode, PixelNode
from tests.conftest import EXAMPLE_PSD, gradient_rgb, photoshop, to_uint8


# ------------------------------------------------------------------------------------------ rasters in


@pytest.mark.parametrize("suffix,format_", [(".png", "PNG"), (".tif", "TIFF"), (".webp", "WEBP")])
def test_lossless_rasters_read_exactly(tmp_path: Path, suffix: str, format_: str) -> None:
    pixels = to_uint8(gradient_rgb())
    path = tmp_path / f"pic{suffix}"
    Image.fromarray(pixels).save(path, format=format_, **({"lossless": True} if format_ == "WEBP" else {}))
    doc = load(path)
    assert doc.kind == "raster" and (doc.width, doc.height) == (32, 24)
    assert doc.base.dtype == np.float32 and doc.base.shape == (3, 24, 32)
    np.testing.assert_array_equal(to_uint8(doc.base.transpose(1, 2, 0)), pixels)
    assert doc.alpha is None


def test_rgba_png_keeps_alpha(tmp_path: Path) -> None:
    pixels = np.dstack([to_uint8(gradient_rgb()), np.tile(np.arange(32, dtype=np.uint8) * 8, (24, 1))])
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    doc = load(tmp_path / "a.png")
    assert doc.alpha is not None and doc.alpha.shape == (1, 24, 32)
    np.testing.assert_allclose(doc.alpha[0, 0], np.arange(32) * 8 / 255.0, atol=1e-6)


def test_sixteen_bit_grayscale_keeps_precision(tmp_path: Path) -> None:
    values = (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 80 + 7).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    doc = load(tmp_path / "g16.png")
    assert doc.depth == 16 and doc.color_mode == "grayscale"
    np.testing.assert_allclose(doc.base[0], values / 65535.0, atol=1e-6)
    np.testing.assert_array_equal(doc.base[0], doc.base[2])  # gray expanded to RGB


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(pixels).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    doc = load(tmp_path / "o.jpg")
    assert (doc.width, doc.height) == (20, 40)
    assert doc.base[:, :10].mean() > 0.9 and doc.base[:, 30:].mean() < 0.1  # white half now on top


@pytest.mark.parametrize(
    "mode,expected",
    [("P", "indexed colour"), ("1", "1-bit bitmap"), ("CMYK", "CMYK")],
)
def test_odd_raster_modes_convert_with_notice(tmp_path: Path, mode: str, expected: str) -> None:
    image = Image.fromarray(to_uint8(gradient_rgb())).convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    image.save(path)
    doc = load(path)
    assert doc.base.shape == (3, 24, 32)
    assert any(expected in text for text in doc.notices)


def test_float_tiff_is_refused(tmp_path: Path) -> None:
    Image.fromarray(np.ones((4, 4), np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(UnsupportedDocumentError, match="32-bit floating-point"):
        load(tmp_path / "f.tif")


# ------------------------------------------------------------------------------------------ bad input


def test_missing_empty_folder_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="no such file"):
        load(tmp_path / "nope.png")
    (tmp_path / "empty.psd").write_bytes(b"")
    with pytest.raises(DocumentError, match="empty file"):
        load(tmp_path / "empty.psd")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(DocumentError, match="is a folder"):
        load(tmp_path / "dir.png")
    (tmp_path / "junk.png").write_bytes(b"hello, not an image" * 10)
    with pytest.raises(DocumentError, match="damaged or unreadable"):
        load(tmp_path / "junk.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    Image.fromarray(to_uint8(gradient_rgb())).save(path)
    path.chmod(0)
    with pytest.raises(DocumentError, match="permission denied"):
        load(path)


def test_truncated_png_and_psd(tmp_path: Path) -> None:
    Image.fromarray(to_uint8(gradient_rgb(64, 64))).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DocumentError, match="cut.png"):
        load(tmp_path / "cut.png")
    psd_bytes = photoshop("2layers.psd").read_bytes()
    (tmp_path / "cut.psd").write_bytes(psd_bytes[: len(psd_bytes) // 3])
    with pytest.raises(DocumentError, match="damaged or truncated Photoshop document"):
        load(tmp_path / "cut.psd")


def test_png_renamed_psd_is_read_by_content(tmp_path: Path) -> None:
    Image.fromarray(to_uint8(gradient_rgb())).save(tmp_path / "fake.psd", format="PNG")
    assert load(tmp_path / "fake.psd").kind == "raster"


def _hostile_psd(path: Path, width: int, height: int, mode: int = 3, depth: int = 8) -> Path:
    header = b"8BPS" + struct.pack(">H6xHIIHH", 2, 3, height, width, depth, mode)
    path.write_bytes(header + b"\0" * 64)
    return path


def test_huge_header_refused_before_decoding(tmp_path: Path) -> None:
    path = _hostile_psd(tmp_path / "bomb.psb", 300_000, 300_000)
    with pytest.raises(ImageTooLargeError, match="--max-pixels"):
        load(path)
    with pytest.raises(ImageTooLargeError):
        describe(path)


def test_pixel_limit_flag_applies_to_rasters(tmp_path: Path) -> None:
    Image.fromarray(to_uint8(gradient_rgb())).save(tmp_path / "p.png")
    with pytest.raises(ImageTooLargeError, match="above the limit"):
        load(tmp_path / "p.png", max_pixels=100)
    assert load(tmp_path / "p.png", max_pixels=32 * 24).width == 32


@pytest.mark.parametrize(
    "name,pattern",
    [
        ("4x4_8bit_cmyk.psd", "CMYK documents are not supported"),
        ("32bit5x5.psd", "32-bit documents are not supported"),
    ],
)
def test_unsupported_psd_modes_refused(name: str, pattern: str) -> None:
    with pytest.raises(UnsupportedDocumentError, match=pattern):
        load(photoshop(name))


@pytest.mark.parametrize("mode,label", [(9, "LAB"), (2, "INDEXED"), (0, "BITMAP")])
def test_lab_indexed_bitmap_psd_refused(tmp_path: Path, mode: int, label: str) -> None:
    with pytest.raises(UnsupportedDocumentError, match=label):
        load(_hostile_psd(tmp_path / "m.psd", 8, 8, mode=mode))


# ------------------------------------------------------------------------------------------ PSDs in


def test_psd_base_is_photoshops_merged_image() -> None:
    path = photoshop("2layers.psd")
    doc = load(path)
    merged = PSDImage.open(path).numpy()
    np.testing.assert_array_equal(doc.base, merged.transpose(2, 0, 1)[:3])
    assert (doc.kind, doc.width, doc.height, doc.depth) == ("psd", 101, 55, 8)


def test_sixteen_bit_psd_keeps_precision() -> None:
    doc = load(photoshop("16bit5x5.psd"))
    assert doc.depth == 16
    steps = doc.base * 255.0
    assert np.abs(steps - np.round(steps)).max() > 1e-3  # not quantised to 8 bits


def test_grayscale_psd_reads_as_gray_rgb() -> None:
    doc = load(photoshop("4x4_8bit_grayscale.psd"))
    assert doc.color_mode == "grayscale"
    np.testing.assert_array_equal(doc.base[0], doc.base[1])


def test_layer_option_places_layer_at_its_offset() -> None:
    path = photoshop("2layers.psd")
    doc = load(path, layer="Слой")
    layer = [l for l in PSDImage.open(path) if l.name == "Слой"][0]
    left, top, right, bottom = layer.bbox
    pixels = layer.numpy()
    np.testing.assert_array_equal(doc.base[:, top:bottom, left:right], pixels[..., :3].transpose(2, 0, 1))
    assert doc.alpha is not None
    assert doc.alpha[0, :top].max() == 0 and doc.alpha[0, :, :left].max() == 0
    np.testing.assert_array_equal(doc.alpha[0, top:bottom, left:right], pixels[..., 3])
    assert doc.base_layer == "Слой"


def test_layer_option_errors() -> None:
    with pytest.raises(UsageError, match="no layer named 'Nope'.*Слой"):
        load(photoshop("2layers.psd"), layer="Nope")
    with pytest.raises(UsageError, match="Objects/Vase"):
        load(EXAMPLE_PSD, layer="Objects/Nope")


def test_layer_option_on_raster_is_usage_error(tmp_path: Path) -> None:
    Image.fromarray(to_uint8(gradient_rgb())).save(tmp_path / "p.png")
    with pytest.raises(UsageError, match="flat image"):
        load(tmp_path / "p.png", layer="Background")


def test_describe_every_fixture_or_refuses_cleanly() -> None:
    fixtures = sorted(photoshop("").glob("**/*.ps[db]"))
    assert len(fixtures) >= 30
    for path in fixtures:
        info = describe(path)
        assert info["width"] > 0 and info["height"] > 0
        assert isinstance(info["layers"], list)


# ------------------------------------------------------------------------------------------ PSDs out


def _shadow_layer(height: int, width: int) -> PixelNode:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    gray = (0.4 + 0.6 * x / max(width - 1, 1))[None]
    return PixelNode("Shadows", gray.astype(np.float32), None, blend_mode=BlendMode.MULTIPLY, opacity=0.8)


def _layer_signature(layer) -> tuple:
    pixels = layer.numpy() if layer.has_pixels() else None
    mask = (layer.mask.bbox, layer.numpy("mask").tobytes()) if layer.has_mask() and layer.mask.bbox[2] > layer.mask.bbox[0] else None
    return (layer.name, layer.kind, layer.blend_mode, layer.opacity, layer.visible, layer.bbox, layer.clipping,
            None if pixels is None else pixels.tobytes(), mask, layer.parent.name if layer.parent is not None else None)


@pytest.mark.parametrize("name", ["still-life", "2layers.psd", "clipping-mask.psd", "mask.psd", "empty-layer.psd", "16bit5x5.psd"])
def test_round_trip_keeps_every_original_layer(tmp_path: Path, name: str) -> None:
    source = EXAMPLE_PSD if name == "still-life" else photoshop(name)
    doc = load(source)
    out = save_psd(doc, [_shadow_layer(doc.height, doc.width)], tmp_path / "out.psd", record={"prompt": "p"})
    before, after = PSDImage.open(source), PSDImage.open(out)
    kept = [_layer_signature(l) for l in list(after.descendants())[:-1]]
    assert [_layer_signature(l) for l in before.descendants()] == kept
    new = list(after)[-1]
    assert (new.name, new.blend_mode.name, new.opacity, new.bbox) == ("Shadows", "MULTIPLY", 204, (0, 0, doc.width, doc.height))
    assert json.loads((tmp_path / "out.psd.json").read_text()) == {"prompt": "p"}


def test_merged_image_is_new_layers_over_photoshops_merged(tmp_path: Path) -> None:
    from lasagna_core.blend import composite

    path = photoshop("2layers.psd")
    doc = load(path)
    shadow = _shadow_layer(doc.height, doc.width)
    out = save_psd(doc, [shadow], tmp_path / "out.psd")
    written = PSDImage.open(out)
    stored = written.numpy()[..., :3]
    stored_layer = list(written)[-1].numpy()[..., :3].mean(axis=2)[None]
    expected, _ = composite([PixelNode("merged", doc.base, None), PixelNode("s", stored_layer, None,
                            blend_mode=BlendMode.MULTIPLY, opacity=204 / 255)], doc.height, doc.width)
    assert np.abs(stored - expected[0].numpy().transpose(1, 2, 0)).max() <= 1 / 255 + 1e-6
    assert np.abs(stored - doc.base.transpose(1, 2, 0)).max() > 0.1  # the picture really changed


def test_raster_input_becomes_layered_psd(tmp_path: Path) -> None:
    pixels = to_uint8(gradient_rgb())
    Image.fromarray(pixels).save(tmp_path / "pic.png")
    doc = load(tmp_path / "pic.png")
    out = save_psd(doc, [_shadow_layer(24, 32)], tmp_path / "pic.psd")
    psd = PSDImage.open(out)
    assert [l.name for l in psd] == ["Background", "Shadows"]
    np.testing.assert_array_equal(to_uint8(list(psd)[0].numpy()[..., :3]), pixels)


def test_clipped_to_layer_base(tmp_path: Path) -> None:
    path = photoshop("2layers.psd")
    doc = load(path, layer="Фон")
    clipped = replace(_shadow_layer(doc.height, doc.width), clipping=True)
    beneath = replace(_shadow_layer(doc.height, doc.width), name="Flats")
    out = save_psd(doc, [clipped, beneath], tmp_path / "clip.psd")
    names = [(l.name, l.clipping) for l in PSDImage.open(out)]
    # a node marked clipping goes right above the --layer base, clipped; an unmarked one right beneath it
    assert names == [("Flats", False), ("Фон", False), ("Shadows", True), ("Слой", False)]


def test_grayscale_psd_refuses_colour_layers(tmp_path: Path) -> None:
    doc = load(photoshop("4x4_8bit_grayscale.psd"))
    colour = PixelNode("Colour", np.zeros((3, 4, 4), np.float32), None)
    with pytest.raises(UnsupportedDocumentError, match="grayscale document can't hold colour layers"):
        save_psd(doc, [colour], tmp_path / "g.psd")
    assert not (tmp_path / "g.psd").exists()


def test_never_overwrites_input_without_flag(tmp_path: Path) -> None:
    copy = tmp_path / "in.psd"
    copy.write_bytes(photoshop("2layers.psd").read_bytes())
    original = copy.read_bytes()
    doc = load(copy)
    with pytest.raises(OutputError, match="refusing to overwrite the input"):
        save_psd(doc, [_shadow_layer(doc.height, doc.width)], copy)
    assert copy.read_bytes() == original
    save_psd(doc, [_shadow_layer(doc.height, doc.width)], copy, overwrite_input=True)
    assert len(list(PSDImage.open(copy))) == 3


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = load(photoshop("2layers.psd"))
    out = tmp_path / "out.psd"
    out.write_bytes(b"previous result")
    from psd_tools.psd import PSD

    def explode(self, fp, **kwargs):
        fp.write(b"8BPS partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(PSD, "write", explode)
    with pytest.raises(KeyboardInterrupt):
        save_psd(doc, [_shadow_layer(doc.height, doc.width)], out)
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.psd"]


def test_output_folder_missing(tmp_path: Path) -> None:
    doc = load(photoshop("2layers.psd"))
    with pytest.raises(OutputError, match="output folder does not exist"):
        save_psd(doc, [], tmp_path / "no" / "such" / "out.psd")
