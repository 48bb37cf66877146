"""The `lasagna` command as a user and a script meet it: exit codes, stdout/stderr, JSON, start-up imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lasagna_cli.app import app
from tests.conftest import EXAMPLE_PSD, REPO, gradient_rgb, photoshop, to_uint8

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"NO_COLOR": "1"})
    return result.exit_code, result.stdout, result.stderr


def test_version_and_help() -> None:
    from lasagna_core import __version__

    code, out, _ = run("--version")
    assert code == 0 and out.strip() == f"lasagna {__version__}"
    code, out, _ = run("--help")
    assert code == 0 and "inspect" in out and "flatten" in out


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["inspect", str(EXAMPLE_PSD)], ["krita", "--help"],
                                  ["krita", "install", "--help"], ["shade", "--help"]])
def test_fast_commands_do_not_import_torch(args: list[str]) -> None:
    code = (
        "import sys; from lasagna_cli.app import app\n"
        f"try: app({args!r})\n"
        "except SystemExit: pass\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stderr.strip().endswith("HEAVY="), proc.stderr


def test_inspect_json_layer_tree() -> None:
    code, out, err = run("inspect", str(EXAMPLE_PSD), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert (info["width"], info["height"], info["mode"], info["depth"]) == (512, 384, "rgb", 8)
    top = info["layers"][0]
    assert (top["name"], top["blend_mode"], top["kind"]) == ("Ink", "multiply", "pixel")
    group = info["layers"][1]
    assert group["kind"] == "group" and [c["name"] for c in group["children"]] == ["Cup", "Lime", "Orange", "Vase"]


def test_inspect_every_fixture_without_traceback() -> None:
    fixtures = sorted(photoshop("").glob("**/*.ps[db]"))
    for path in fixtures:
        code, out, err = run("inspect", str(path), "--json")
        assert code == 0, f"{path.name}: {err}"
        assert json.loads(out)["path"] == str(path)


def test_bad_input_is_one_line_and_nonzero(tmp_path: Path) -> None:
    (tmp_path / "broken.psd").write_bytes(photoshop("2layers.psd").read_bytes()[:400])
    for args, pattern in [
        (["inspect", str(tmp_path / "missing.psd")], "no such file"),
        (["inspect", str(tmp_path / "broken.psd")], "damaged or truncated"),
        (["flatten", str(photoshop("4x4_8bit_cmyk.psd")), "-o", str(tmp_path / "x.png")], "CMYK documents are not supported"),
    ]:
        code, out, err = run(*args)
        assert code == 1, args
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and pattern in lines[0], err
        assert "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_flatten_writes_png_matching_photoshop_merge(tmp_path: Path) -> None:
    path = photoshop("2layers.psd")
    code, _, err = run("flatten", str(path), "-o", str(tmp_path / "flat.png"))
    assert code == 0, err
    flat = np.asarray(Image.open(tmp_path / "flat.png").convert("RGB"), dtype=np.int16)
    from psd_tools import PSDImage

    merged = np.round(PSDImage.open(path).numpy()[..., :3] * 255).astype(np.int16)
    assert np.abs(flat - merged).max() <= 1


def test_flatten_raster_round_trips(tmp_path: Path) -> None:
    pixels = to_uint8(gradient_rgb())
    Image.fromarray(pixels).save(tmp_path / "in.png")
    code, _, _ = run("flatten", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"))
    assert code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), pixels)


def test_console_script_is_installed() -> None:
    proc = subprocess.run([str(Path(sys.executable).with_name("lasagna")), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("lasagna ")
