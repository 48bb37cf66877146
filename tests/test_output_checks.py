"""Outputs refused before the work, in one line: folders, read-only places, long names, wrong suffixes, the
input itself, documents that can't hold the layers; and write errors that still happen (a full disk) are
one line with the old output intact."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from psd_tools import PSDImage
from typer.testing import CliRunner

from lasagna_cli.app import app
from tests.conftest import gradient_rgb, to_uint8

NO_MODEL = ["-m", "/nonexistent/model"]  # a refusal that names the output, not the model, came before loading it
FAST = ["--steps", "2"]


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})
    return result.exit_code, result.stderr


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "pic.png"
    Image.fromarray(to_uint8(gradient_rgb())).save(path)
    return path


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A small tmpfs mounted at `where` (root only; the test is skipped elsewhere)."""
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount to make a small or read-only file system")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_output_naming_an_existing_folder_is_refused_before_the_model(tmp_path: Path, picture: Path) -> None:
    (tmp_path / "out").mkdir()
    code, err = cli("shade", str(picture), "-p", "light from the left", "-o", str(tmp_path / "out"), *NO_MODEL)
    assert code == 1 and "is a folder" in one_line(err)


def test_a_name_too_long_for_the_result_or_its_sidecar_is_refused(tmp_path: Path, picture: Path) -> None:
    for name in ("a" * 252 + ".psd", "b" * 248 + ".psd"):  # 256 bytes; 252 bytes, whose sidecar would be 257
        code, err = cli("shade", str(picture), "-p", "light from the left", "-o", str(tmp_path / name), *NO_MODEL)
        assert code == 1 and "name too long" in one_line(err)


def test_read_only_output_and_preview_folders_are_refused_before_the_model(tmp_path: Path, picture: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        code, err = cli("shade", str(picture), "-p", "light from the left", "-o", str(ro / "out.psd"), *NO_MODEL)
        assert code == 1 and "can't write there" in one_line(err) and "Read-only" in err
        code, err = cli("shade", str(picture), "-p", "light from the left", "-o", str(tmp_path / "out.psd"),
                        "--preview", str(ro), *NO_MODEL)
        assert code == 1 and "previews" in one_line(err)


def test_a_preview_folder_that_cant_be_made_is_refused_before_the_model(tmp_path: Path, picture: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, err = cli("shade", str(picture), "-p", "light from the left", "-o", str(tmp_path / "o.psd"),
                    "--preview", str(tmp_path / "file" / "previews"), *NO_MODEL)
    assert code == 1 and "preview folder" in one_line(err)


def test_a_full_disk_is_one_line_and_the_old_result_stays(tmp_path: Path, picture: Path) -> None:
    with tmpfs(tmp_path / "small", "size=2m") as small:
        out = small / "out.psd"
        code, _ = cli("shade", str(picture), "-p", "light from the left", "-o", str(out), *FAST)
        assert code == 0
        old = out.read_bytes(), (small / "out.psd.json").read_bytes()
        with open(small / "filler", "wb", buffering=0) as f:  # leave less room than the new PSD needs
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 1024)
        code, err = cli("shade", str(picture), "-p", "light from the left", "-o", str(out), "--seed", "3", *FAST)
        assert code == 1 and "No space left" in one_line(err)
        assert (out.read_bytes(), (small / "out.psd.json").read_bytes()) == old
        assert sorted(os.listdir(small)) == ["filler", "out.psd", "out.psd.json"]


def test_suffixes_that_no_writer_has_are_refused_and_the_others_are_honoured(tmp_path: Path, picture: Path) -> None:
    code, err = cli("shade", str(picture), "-p", "light from the left", "-o", str(tmp_path / "out.png"), *NO_MODEL)
    assert code == 2 and "name it .psd" in one_line(err)
    code, err = cli("flatten", str(picture), "-o", str(tmp_path / "f.psd"))
    assert code == 2 and ".png" in one_line(err)
    magic = {"f.jpg": b"\xff\xd8", "f.tif": b"II*\0", "f.webp": b"RIFF", "f.png": b"\x89PNG"}
    for name, start in magic.items():
        assert cli("flatten", str(picture), "-o", str(tmp_path / name))[0] == 0
        assert (tmp_path / name).read_bytes().startswith(start), name
    code, err = cli("eval", "--data", str(tmp_path), "--out", str(tmp_path / "ev.txt"))
    assert code == 2 and ".md" in one_line(err)


def test_jpeg_refuses_transparency_in_one_line(tmp_path: Path) -> None:
    rgba = np.dstack([to_uint8(gradient_rgb()), np.full((24, 32), 100, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    code, err = cli("flatten", str(tmp_path / "cut.png"), "-o", str(tmp_path / "cut.jpg"))
    assert code == 1 and "transparency" in one_line(err) and not (tmp_path / "cut.jpg").exists()


@pytest.mark.parametrize("link", [False, True])
def test_flatten_refuses_to_replace_its_input(tmp_path: Path, link: bool) -> None:
    victim = tmp_path / "victim.psd"
    psd = PSDImage.new("RGB", (32, 24))
    psd.create_pixel_layer_from_array(gradient_rgb(), name="Layer")
    psd.save(victim)
    before = victim.read_bytes()
    target = victim
    if link:
        target = tmp_path / "victim.png"
        os.link(victim, target)
    code, err = cli("flatten", str(victim), "-o", str(target))
    assert code == 1 and "refusing to overwrite the input" in one_line(err)
    assert victim.read_bytes() == before


def test_colour_on_a_grayscale_psd_is_refused_before_the_model(tmp_path: Path) -> None:
    gray = tmp_path / "gray.psd"
    psd = PSDImage.new("L", (32, 24))
    psd.create_pixel_layer_from_array(gradient_rgb()[:, :, :1], name="Layer")
    psd.save(gray)
    code, err = cli("colorize", str(gray), "-p", "a red fox", *NO_MODEL)
    assert code == 1 and "grayscale document can't hold colour layers" in one_line(err)
    assert not (tmp_path / "gray.lasagna.psd").exists()


def test_binary_and_nan_templates_are_usage_errors(tmp_path: Path, picture: Path) -> None:
    (tmp_path / "bin.toml").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "nan.toml").write_text(
        'name = "x"\n[defaults]\nlearning_rate = nan\n[[layers]]\nname = "A"\nblend_mode = "multiply"\nneutral = 1.0\n'
    )
    code, err = cli("shade", str(picture), "-p", "light from the left", "-t", str(tmp_path / "bin.toml"))
    assert code == 2 and "not a text" in one_line(err)
    code, err = cli("shade", str(picture), "-p", "light from the left", "-t", str(tmp_path / "nan.toml"))
    assert code == 2 and "learning_rate must be a finite number" in one_line(err)


def test_stale_temporaries_of_a_killed_run_are_removed_by_the_next_run(tmp_path: Path, picture: Path) -> None:
    from lasagna_core.writing.atomic import temporary_name

    proc = subprocess.Popen(["true"])
    proc.wait()
    stale = tmp_path / temporary_name("out.psd", "tok123", "m").replace(f"-{os.getpid()}-", f"-{proc.pid}-")
    stale.write_bytes(b"half a psd")
    other = tmp_path / ".out.psd.mine.tmp"
    other.write_bytes(b"not lasagna's")
    code, _ = cli("shade", str(picture), "-p", "light from the left", "-o", str(tmp_path / "out.psd"), *FAST)
    assert code == 0 and not stale.exists() and other.exists()
