"""What used to be lost on the way through: the picture of a PSD with no layer records, the low bytes of a
16-bit colour PNG, a layer whose name has a slash or a twin; and what `inspect` got wrong about a file."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from typing import Any
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from psd_tools import PSDImage
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.describe import describe
from lasagna_core.document import flatten_layers, load
from lasagna_core.errors import UsageError
from lasagna_core.layers import BlendMode, PixelNode
from lasagna_core.writing import save_psd
from tests.conftest import gradient_rgb, to_uint8
from tests.gimp import read_png


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})
    return result.exit_code, result.stdout, result.stderr


def png16(path: Path, samples: np.ndarray) -> Path:
    """A 16-bit PNG written by hand (PIL can't write one in colour): uint16 [H, W, C]."""
    height, width, channels = samples.shape
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in samples)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def tiff16(path: Path, samples: np.ndarray, *, compression: int = 1) -> Path:
    """A one-strip little-endian 16-bit RGB(A) TIFF written by hand (PIL can't write one): uint16 [H, W, C].
    `compression` is only the tag (1 none, 8 Deflate, with the strip deflated), to see a compressed file said."""
    height, width, channels = samples.shape
    data = samples.astype("<u2").tobytes()
    data = zlib.compress(data) if compression == 8 else data
    tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, channels, "bits"), (259, 3, 1, compression),
            (262, 3, 1, 2), (273, 4, 1, "data"), (277, 3, 1, channels), (278, 3, 1, height), (279, 4, 1, len(data)),
            (284, 3, 1, 1)] + ([(338, 3, 1, 2)] if channels == 4 else [])
    bits_at = 8 + 2 + 12 * len(tags) + 4
    data_at = bits_at + 2 * channels
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        value = {"bits": bits_at, "data": data_at}.get(value, value) if isinstance(value, str) else value
        ifd += struct.pack("<HHIHH", tag, kind, count, value, 0) if kind == 3 and count == 1 else struct.pack("<HHII", tag, kind, count, value)
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + struct.pack(f"<{channels}H", *[16] * channels) + data)
    return path


def _shadow(height: int, width: int) -> PixelNode:
    return PixelNode("Shadows", np.full((1, height, width), 0.5, np.float32), None, blend_mode=BlendMode.MULTIPLY)


# ------------------------------------------------------------------------------------ layerless PSDs


@pytest.fixture
def flat_psd(tmp_path: Path) -> tuple[Path, np.ndarray]:
    pixels = to_uint8(gradient_rgb())
    path = tmp_path / "flat.psd"
    PSDImage.frompil(Image.fromarray(pixels)).save(path)
    assert len(PSDImage.open(path)) == 0  # only the merged image, as applications that flatten on save write
    return path, pixels.astype(np.float32) / 255


def test_a_psd_without_layers_gets_its_picture_as_a_real_layer(tmp_path: Path, flat_psd: tuple[Path, np.ndarray]) -> None:
    path, picture = flat_psd
    out = save_psd(load(path), [_shadow(24, 32)], tmp_path / "out.psd")
    layers = list(PSDImage.open(out))
    assert [layer.name for layer in layers] == ["Background", "Shadows"]
    np.testing.assert_allclose(layers[0].numpy()[:, :, :3], picture, atol=1e-6)
    flat = flatten_layers(out)  # Lasagna's compositor sees the picture under the shadow, as Photoshop would
    np.testing.assert_allclose(flat.color.transpose(1, 2, 0), picture * (128 / 255), atol=1 / 255)


def test_flatten_of_a_psd_without_layers_shows_its_picture(tmp_path: Path, flat_psd: tuple[Path, np.ndarray]) -> None:
    path, picture = flat_psd
    code, _, err = cli("flatten", str(path), "-o", str(tmp_path / "f.png"))
    assert code == 0 and "no layers" in err
    flat = np.asarray(Image.open(tmp_path / "f.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(flat[:, :, :3], picture, atol=1e-6)
    assert flat.shape[2] == 3 or (flat[:, :, 3] == 1).all()


@pytest.mark.gimp
def test_gimp_shows_the_picture_of_a_shaded_layerless_psd(tmp_path: Path, flat_psd: tuple[Path, np.ndarray]) -> None:
    from tests.gimp import gimp_flatten

    path, picture = flat_psd
    out = save_psd(load(path), [_shadow(24, 32)], tmp_path / "out.psd")
    gimp_flatten(out, tmp_path / "gimp.png")
    seen = read_png(tmp_path / "gimp.png")
    np.testing.assert_allclose(seen[:, :, :3], picture * (128 / 255), atol=2 / 255)


# ------------------------------------------------------------------------------------ 16-bit colour


@pytest.mark.parametrize("writer", [png16, tiff16])
@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_pngs_and_tiffs_stay_sixteen_bit_end_to_end(tmp_path: Path, channels: int, writer: Any) -> None:
    rng = np.random.default_rng(1)
    samples = rng.integers(0, 65536, (24, 32, channels), dtype=np.uint16)
    if channels == 4:
        samples[:, :, 3] = np.linspace(1000, 65535, 32, dtype=np.uint16)
    path = writer(tmp_path / f"deep.{writer.__name__[:3]}", samples)
    doc = load(path)
    assert doc.depth == 16
    np.testing.assert_array_equal(np.rint(doc.base * 65535).astype(np.uint16), samples[:, :, :3].transpose(2, 0, 1))
    assert describe(path)["depth"] == 16
    out = save_psd(doc, [_shadow(24, 32)], tmp_path / "deep.psd")
    psd = PSDImage.open(out)
    assert psd.depth == 16
    background = np.rint(psd[0].numpy() * 65535).astype(np.uint16)
    np.testing.assert_array_equal(background[:, :, :3], samples[:, :, :3])
    code, _, _ = cli("flatten", str(path), "-o", str(tmp_path / "flat.png"))
    assert code == 0
    np.testing.assert_array_equal(np.rint(read_png(tmp_path / "flat.png") * 65535).astype(np.uint16), samples)


def test_a_compressed_sixteen_bit_colour_tiff_says_it_is_read_at_eight_bits(tmp_path: Path) -> None:
    samples = np.random.default_rng(2).integers(0, 65536, (12, 16, 3), dtype=np.uint16)
    doc = load(tiff16(tmp_path / "deep.tif", samples, compression=8))
    assert doc.depth == 8 and any("read at 8 bits" in text for text in doc.notices), doc.notices
    np.testing.assert_allclose(doc.base, (samples >> 8).transpose(2, 0, 1) / 255.0, atol=1e-6)


# ------------------------------------------------------------------------------------ layer paths


@pytest.fixture
def tricky_psd(tmp_path: Path) -> Path:
    """Bottom to top: 'Dup' (0.2), 'A/B' (0.4), 'Dup' (0.6), group 'G' holding '#2' (0.8)."""
    psd = PSDImage.new("RGB", (16, 12))
    for name, value in (("Dup", 0.2), ("A/B", 0.4), ("Dup", 0.6)):
        psd.create_pixel_layer_from_array(np.full((12, 16, 3), value, np.float32), name=name)
    group = psd.create_group(name="G")
    layer = psd.create_pixel_layer_from_array(np.full((12, 16, 3), 0.8, np.float32), name="#2")
    group.append(layer)
    psd.save(tmp_path / "tricky.psd")
    return tmp_path / "tricky.psd"


def _value(path: Path, layer: str) -> float:
    return round(float(load(path, layer=layer).base.mean()), 2)


def test_a_slash_in_a_layer_name_is_written_escaped(tricky_psd: Path) -> None:
    assert _value(tricky_psd, "A\\/B") == 0.4
    with pytest.raises(UsageError, match=r"no layer named 'A/B'.*A\\/B.*'\\/'"):
        load(tricky_psd, layer="A/B")


def test_same_named_layers_are_told_apart_by_position(tricky_psd: Path) -> None:
    with pytest.raises(UsageError, match=r"2 layers match 'Dup'; pass one of: #2, #4 .*'#2'") as caught:
        load(tricky_psd, layer="Dup")
    assert "Group/#2" in str(caught.value)
    assert (_value(tricky_psd, "#2"), _value(tricky_psd, "#4")) == (0.6, 0.2)
    assert _value(tricky_psd, "G/#1") == 0.8 and _value(tricky_psd, "G/\\#2") == 0.8


def test_cli_says_how_to_name_a_layer(tricky_psd: Path) -> None:
    code, _, err = cli("shade", str(tricky_psd), "-p", "light from the left", "-l", "Dup", "-m", "/nonexistent")
    assert code == 2 and "#2" in err and "\\/" in err


# ------------------------------------------------------------------------------------ inspect


def test_inspect_shows_the_size_a_rotated_jpeg_is_written_at(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    Image.fromarray(np.zeros((40, 80, 3), np.uint8)).save(tmp_path / "o.jpg", exif=exif.tobytes())
    info = describe(tmp_path / "o.jpg")
    doc = load(tmp_path / "o.jpg")
    assert (info["width"], info["height"]) == (doc.width, doc.height) == (40, 80)


@pytest.mark.parametrize("mode,expected", [
    ("1", ("bitmap", 1, False)), ("P", ("indexed", 8, False)), ("L", ("grayscale", 8, False)),
    ("I;16", ("grayscale", 16, False)), ("F", ("grayscale", 32, True)), ("RGBA", ("rgb", 8, False)),
])
def test_inspect_names_modes_in_words_with_their_true_depth(tmp_path: Path, mode: str, expected: tuple[str, int, bool]) -> None:
    path = tmp_path / ("x.tif" if mode == "F" else "x.png")
    Image.new(mode, (8, 6)).save(path)
    info = describe(path)
    assert (info["mode"], info["depth"], info["float"]) == expected
    code, out, _ = cli("inspect", str(path))
    assert code == 0 and f"{expected[0]}  {expected[1]}-bit" in out


def test_inspect_json_is_valid_utf8_for_a_file_name_that_is_not(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    Image.new("RGB", (4, 4)).save(tmp_path / name)
    proc = subprocess.run([sys.executable, "-m", "lasagna_cli", "inspect", "--json", name], cwd=tmp_path,
                          capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.decode("utf-8"))  # strict UTF-8: raw \xe9 would fail here
    assert os.fsencode(info["path"]) == b"caf\xe9.png"
