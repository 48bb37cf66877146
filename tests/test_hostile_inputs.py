"""Hostile and broken inputs, generated here: each gets one clear line, the batch goes on, nothing is written
for it, no traceback. And a property test: any byte mutation of a valid PSD either loads or raises one of
the project's own errors (LasagnaError), never a raw exception from inside psd-tools.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.document import load
from lasagna_core.errors import LasagnaError
from tests.conftest import EXAMPLE_PSD, PHOTOSHOP, gradient_rgb, to_uint8
from tests.tiny_sd import make_tiny_sd

FAST = ["--steps", "2"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})
    return result.exit_code, result.stdout, result.stderr


def make_psd(depth: int = 8, height: int = 24, width: int = 32) -> bytes:
    """A small valid RGB PSD (one pixel layer and a stored merged image) written by psd-tools."""
    from psd_tools import PSDImage

    psd = PSDImage.new("RGB", (width, height), depth=depth)
    psd.create_pixel_layer_from_array(gradient_rgb(height, width), name="Background")
    buffer = io.BytesIO()
    psd.save(buffer)
    return buffer.getvalue()


def patch_header(data: bytes, **fields: int) -> bytes:
    """Rewrite header fields of a PSD: channels, height, width, depth, mode (the 26-byte header, big-endian)."""
    offsets = {"channels": (12, ">H"), "height": (14, ">I"), "width": (18, ">I"), "depth": (22, ">H"), "mode": (24, ">H")}
    out = bytearray(data)
    for name, value in fields.items():
        offset, fmt = offsets[name]
        struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


# name -> (expected status, a phrase its error (or nothing, for ok) must contain)
EXPECTED: dict[str, tuple[str, str]] = {
    "zero-byte.png": ("failed", "empty file"),
    "zero-byte-doc.psd": ("failed", "empty file"),
    "truncated.psd": ("failed", "damaged or truncated"),
    "truncated-image.png": ("failed", "damaged or unreadable"),
    "png-renamed.psd": ("ok", ""),  # recognised by content: it is a fine PNG
    "huge-header.psd": ("failed", "300000x300000"),
    "cmyk.psd": ("failed", "CMYK documents are not supported"),
    "lab.psd": ("failed", "LAB documents are not supported"),
    "indexed.psd": ("failed", "INDEXED documents are not supported"),
    "bitmap.psd": ("failed", "BITMAP documents are not supported"),
    "float32.psd": ("failed", "32-bit documents are not supported"),
    "depth16.psd": ("ok", ""),
    "cmyk-photo.jpg": ("ok", ""),  # converted, with a notice
    "lab-scan.tif": ("failed", "Lab images are not supported"),
    "indexed-image.png": ("ok", ""),
    "bitmap-image.png": ("ok", ""),
    "depth16-image.png": ("ok", ""),
    "float32-image.tif": ("failed", "32-bit floating-point"),
    "alpha-only.png": ("failed", "fully transparent"),
    "alpha-only-gray.png": ("failed", "fully transparent"),
    "folder.png": ("failed", "is a folder"),
    "text.psd": ("failed", "damaged or unreadable"),  # recognised by content: not a PSD, not any image
}
REAL_FILES = {  # Photoshop's own files, when the shared fixtures are there
    "ps-cmyk.psd": ("4x4_8bit_cmyk.psd", ("failed", "CMYK documents are not supported")),
    "ps-32bit.psd": ("32bit5x5.psd", ("failed", "32-bit documents are not supported")),
    "ps-16bit.psd": ("16bit5x5.psd", ("ok", "")),
}


def build_corpus(folder: Path) -> dict[str, tuple[str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    psd = make_psd()
    picture = Image.fromarray(to_uint8(gradient_rgb(24, 32)))
    files = {
        "zero-byte.png": b"",
        "zero-byte-doc.psd": b"",
        "truncated.psd": psd[: len(psd) // 3],
        "truncated-image.png": png_bytes(picture)[:70],
        "png-renamed.psd": png_bytes(picture),
        "huge-header.psd": patch_header(psd, height=300_000, width=300_000),
        "cmyk.psd": patch_header(psd, mode=4, channels=4),
        "lab.psd": patch_header(psd, mode=9),
        "indexed.psd": patch_header(psd, mode=2, channels=1),
        "bitmap.psd": patch_header(psd, mode=0, depth=1, channels=1),
        "float32.psd": patch_header(psd, depth=32),
        "depth16.psd": make_psd(depth=16),
        "cmyk-photo.jpg": png_bytes(picture.convert("CMYK"), "JPEG"),
        "lab-scan.tif": png_bytes(Image.new("LAB", (32, 24), (50, 0, 0)), "TIFF"),
        "indexed-image.png": png_bytes(picture.convert("P")),
        "bitmap-image.png": png_bytes(picture.convert("1")),
        "depth16-image.png": png_bytes(Image.fromarray((gradient_rgb(24, 32)[..., 0] * 65535).astype(np.uint16))),
        "float32-image.tif": png_bytes(Image.fromarray(gradient_rgb(24, 32)[..., 0]), "TIFF"),
        "alpha-only.png": png_bytes(Image.new("RGBA", (32, 24), (0, 0, 0, 0))),
        "alpha-only-gray.png": png_bytes(Image.new("LA", (32, 24), (0, 0))),
        "text.psd": b"8BPX this is not a Photoshop document at all, whatever its name says",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "folder.png").mkdir()
    (folder / "folder.png" / "inside.txt").write_text("a directory named like an image")
    expected = dict(EXPECTED)
    for name, (fixture, outcome) in REAL_FILES.items():
        if (PHOTOSHOP / fixture).exists():
            shutil.copyfile(PHOTOSHOP / fixture, folder / name)
            expected[name] = outcome
    return expected


def check_run(folder: Path, out: Path, expected: dict[str, tuple[str, str]], code: int, stderr: str, log: Path) -> None:
    import json

    records = {Path(r["input"]).name: r for r in map(json.loads, log.read_text().splitlines())}
    assert set(records) == set(expected), set(records) ^ set(expected)
    for name, (status, phrase) in expected.items():
        rec = records[name]
        assert rec["status"] == status, (name, rec)
        assert phrase in (rec["error"] or ""), (name, rec["error"])
        lines = [line for line in stderr.splitlines()
                 if line.startswith(status) and (f"/{name}:" in line or f"/{name} " in line)]
        assert len(lines) == 1, (name, stderr)  # one clear line, on one line
        stem = Path(name).stem
        written = sorted(p.name for p in out.rglob("*") if p.name.startswith(stem + ".psd"))
        if status == "ok":
            assert written == [stem + ".psd", stem + ".psd.json"], name
        else:
            assert written == [], (name, written)  # nothing at all for a failed file
    assert code == 1 and "Traceback" not in stderr
    assert not list(out.rglob("*.tmp"))


def test_hostile_corpus_one_line_each_and_the_batch_goes_on(tiny_model: Path, tmp_path: Path) -> None:
    folder, out, log = tmp_path / "corpus", tmp_path / "out", tmp_path / "log.jsonl"
    expected = build_corpus(folder)
    code, _, stderr = cli("batch", "shade", str(folder), str(out), "-p", "light", "-m", str(tiny_model), *FAST,
                          "--log", str(log), "--max-pixels", "1000000")
    check_run(folder, out, expected, code, stderr, log)
    assert "converted CMYK to RGB" in stderr  # conversions are said, not hidden


def _without_permission_override() -> Callable[[], None] | None:
    """For root: a preexec function that removes the two capabilities that let root ignore permission bits
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the child's bounding set, so the command it runs meets real
    EACCES like any user. None where that isn't allowed."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2

    def drop() -> None:
        for cap in (cap_dac_override, cap_dac_read_search):
            if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    probe = Path(tempfile.mkdtemp()) / "probe"
    probe.write_text("x")
    probe.chmod(0o000)
    try:
        result = subprocess.run([sys.executable, "-c", f"open({str(probe)!r}).read()"], preexec_fn=drop,
                                capture_output=True, text=True)
    except OSError:
        return None
    finally:
        shutil.rmtree(probe.parent, ignore_errors=True)
    return drop if "PermissionError" in result.stderr else None


def test_unreadable_files_and_folders(tiny_model: Path, tmp_path: Path) -> None:
    """Permission bits are real only for a process they apply to: as root (CI) the batch runs in a child that
    lacks root's permission-override capabilities, so the unreadable file and folder are truly unreadable."""
    preexec = None
    if os.geteuid() == 0:
        preexec = _without_permission_override()
        if preexec is None:
            pytest.skip("running as root and unable to drop CAP_DAC_OVERRIDE: root reads files whatever their permission bits")
    folder, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log.jsonl"
    folder.mkdir()
    Image.fromarray(to_uint8(gradient_rgb(24, 32))).save(folder / "good.png")
    Image.fromarray(to_uint8(gradient_rgb(24, 32, seed=1))).save(folder / "unreadable.png")
    (folder / "locked").mkdir()
    Image.fromarray(to_uint8(gradient_rgb(24, 32, seed=2))).save(folder / "locked" / "inside.png")
    (folder / "unreadable.png").chmod(0o000)
    (folder / "locked").chmod(0o000)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "lasagna_cli", "batch", "shade", str(folder), str(out), "-p", "x", "-m", str(tiny_model),
             *FAST, "--log", str(log)], env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True,
            timeout=300, preexec_fn=preexec,
        )
    finally:
        (folder / "locked").chmod(0o755)
        (folder / "unreadable.png").chmod(0o644)
    check_run(folder, out, {"good.png": ("ok", ""), "unreadable.png": ("failed", "permission denied"),
                            "locked": ("failed", "can't list this folder (permission denied)")},
              result.returncode, result.stderr, log)


def test_model_folder_missing_a_file(tiny_model: Path, tmp_path: Path) -> None:
    """A broken model fails the file that needed it with one line, then stops: every other file would fail the same way."""
    import json

    model = shutil.copytree(tiny_model, tmp_path / "model")
    (model / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    folder, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log.jsonl"
    folder.mkdir()
    (folder / "a-broken.png").write_bytes(b"")  # fails before the model is needed: reported, and no model load
    for i in range(3):
        Image.fromarray(to_uint8(gradient_rgb(24, 32, seed=i))).save(folder / f"b{i}.png")
    code, _, stderr = cli("batch", "shade", str(folder), str(out), "-p", "x", "-m", str(model), *FAST, "--log", str(log))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert code == 1 and [r["status"] for r in records] == ["failed", "failed"]
    assert "Model file missing" in records[1]["error"] and "unet" in records[1]["error"]
    assert "not attempted" in stderr and "model can't be loaded" in stderr and "Traceback" not in stderr
    assert sum(line.startswith("failed") for line in stderr.splitlines()) == 2
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------------------ property test


def _seeds() -> list[bytes]:
    seeds = [make_psd(), make_psd(depth=16), EXAMPLE_PSD.read_bytes()]
    for name in ("1layer.psd", "2layers.psd", "2layers.psb", "mask.psd", "clipping-mask.psd", "4x4_8bit_grayscale.psd",
                 "16bit5x5.psd", "empty-layer.psd"):
        if (PHOTOSHOP / name).exists():
            seeds.append((PHOTOSHOP / name).read_bytes())
    return seeds


SEEDS = _seeds()
FUZZ_DIR = Path(tempfile.mkdtemp(prefix="lasagna-fuzz-"))


@st.composite
def mutated_psds(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        # header and section lengths live near the start, the merged image's compressed data at the end:
        # aim at both (hypothesis favours small integers, so `from_end` lands near the end)
        from_start = draw(st.integers(0, min(len(data), 4096) - 1))
        from_end = len(data) - 1 - draw(st.integers(0, len(data) - 1))
        where = draw(st.sampled_from([from_start, from_end, draw(st.integers(0, len(data) - 1))]))
        action = draw(st.sampled_from(["set", "set", "set", "delete", "insert"]))
        if action == "set":
            data[where] = draw(st.integers(0, 255))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 64))]
        else:
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        if not data:
            break
    if draw(st.booleans()) and len(data) > 1:
        data = data[: len(data) - draw(st.integers(1, len(data) - 1))]  # truncated, mostly near the end
    return bytes(data)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=mutated_psds(), suffix=st.sampled_from([".psd", ".psb"]))
def test_mutated_psds_load_or_raise_only_lasagna_errors(data: bytes, suffix: str) -> None:
    import warnings

    path = FUZZ_DIR / f"mutant{suffix}"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be a second, unasked-for line on stderr
        try:
            doc = load(path, max_pixels=4_000_000)
        except LasagnaError as exc:
            assert str(exc) and "\n" not in str(exc)  # one line, written for a person
            return
    assert doc.base.shape == (3, doc.height, doc.width) and np.isfinite(doc.base).all()


def test_error_reason_is_one_short_line() -> None:
    from lasagna_core.errors import reason

    assert reason(ValueError("bad header\nTraceback-ish detail")) == "bad header"
    assert reason(ValueError()) == "ValueError"
    assert reason(KeyError("unet"), with_type=True) == "KeyError: 'unet'"
    assert reason(RuntimeError(), with_type=True) == "RuntimeError"
    assert reason(OSError("x" * 500)) == "x" * 200 + "..." and len(reason(OSError("y" * 500), limit=160)) == 163  # cut marked
