"""The Krita plug-in's Krita-free parts: the blend-mode table, the command line, reading the progress stream,
the kritarc edit, and `lasagna krita install` / `uninstall` (tests/test_krita.py runs the rest in Krita)."""

from __future__ import annotations

import ast
import json
import os
import py_compile
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.layers import BlendMode
from lasagna_core.templates import builtin_names, load_template
from lasagna_krita import kritarc
from lasagna_krita.blend_modes import KRITA_COMPOSITE_OPS, krita_composite_op
from lasagna_krita.command import EditOptions, LasagnaNotFound, build_command, find_lasagna
from lasagna_krita.install import default_locations
from lasagna_krita.progress import LineReader, describe, outcome_message, parse_line
from tests.conftest import REPO, gradient_rgb, to_uint8

PLUGIN = REPO / "lasagna_krita"
KRITA_FREE = ("__init__", "blend_modes", "command", "install", "kritarc", "progress")


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", **(env or {})})
    return result.exit_code, result.stdout, result.stderr


# ------------------------------------------------------------------------------------------ blend modes


def test_every_blend_mode_and_every_templates_modes_have_a_krita_op() -> None:
    assert set(KRITA_COMPOSITE_OPS) == {mode.value for mode in BlendMode}
    assert len(set(KRITA_COMPOSITE_OPS.values())) == len(KRITA_COMPOSITE_OPS)  # no two modes look alike in Krita
    written = {layer.blend_mode.value for name in builtin_names() for layer in load_template(name).layers}
    assert written <= set(KRITA_COMPOSITE_OPS)  # every mode a built-in template writes
    assert {m: krita_composite_op(m) for m in ("multiply", "screen", "normal", "divide", "overlay", "soft_light", "color",
                                              "color_burn", "linear_light", "luminosity", "difference", "hard_mix")} == {
        "multiply": "multiply", "screen": "screen", "normal": "normal", "divide": "divide", "overlay": "overlay",
        "soft_light": "soft_light", "color": "color", "color_burn": "burn", "linear_light": "linear light",
        "luminosity": "luminize", "difference": "diff", "hard_mix": "hard_mix_photoshop"}
    with pytest.raises(ValueError, match="no Krita composite op for blend mode 'glow'"):
        krita_composite_op("glow")


# ------------------------------------------------------------------------------------------ the command line


def test_command_line_is_one_the_cli_accepts(tmp_path: Path) -> None:
    argv = build_command("/venv/bin/lasagna", EditOptions("colorize-multiply", "a red fox", steps=7, seed=3, model="m"),
                         tmp_path / "base.png", tmp_path / "out.psd")
    assert argv == ["/venv/bin/lasagna", "colorize", str(tmp_path / "base.png"), "--template", "colorize-multiply",
                    "--output", str(tmp_path / "out.psd"), "--seed", "3", "--progress", "jsonl", "--prompt", "a red fox",
                    "--steps", "7", "--model", "m"]
    shade = build_command("lasagna", EditOptions(prompt="  "), tmp_path / "b.png", tmp_path / "o.psd", hints=tmp_path / "h.png")
    assert shade[1] == "shade" and "--prompt" not in shade and "--steps" not in shade and shade[-2:] == ["--hints", str(tmp_path / "h.png")]
    # Every option parses: the run gets as far as the missing input (exit 1), not a usage error (exit 2).
    code, _, err = cli(*argv[1:])
    assert code == 1 and "base.png: no such file" in err, err


def test_lasagna_is_the_setting_then_path_then_the_installer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "bin" / "lasagna"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_lasagna(None, str(tool)) == str(tool)
    assert find_lasagna(str(tool), None) == str(tool)
    with pytest.raises(LasagnaNotFound, match="no lasagna executable on PATH"):
        find_lasagna(None, str(tmp_path / "gone"))
    with pytest.raises(LasagnaNotFound, match="does not exist"):
        find_lasagna(str(tmp_path / "nope"), str(tool))
    monkeypatch.setenv("PATH", str(tool.parent))
    assert find_lasagna(None, None) == str(tool)


# ------------------------------------------------------------------------------------------ the progress stream


def test_reader_parses_a_real_stream_in_any_chunks(tmp_path: Path) -> None:
    picture = tmp_path / "a.png"
    Image.fromarray(to_uint8(gradient_rgb(24, 32))).save(picture)
    code, _, err = cli("shade", str(picture), "-p", "light from the left", "--steps", "3", "--progress", "jsonl",
                       "-o", str(tmp_path / "ünïcode.psd"))
    assert code == 0, err
    data = err.encode("utf-8")
    whole = LineReader()
    whole.feed(data)
    for size in (1, 2, 7, 64):  # QProcess hands over whatever the pipe holds, mid-line and mid-character
        reader = LineReader()
        for start in range(0, len(data), size):
            reader.feed(data[start:start + size])
        reader.close()
        assert reader.events == whole.events
    kinds = [e.kind for e in whole.events]
    assert kinds.count("progress") == 3 and kinds[-1] == "result" and whole.final is whole.events[-1]
    assert whole.final.result["output"].endswith("ünïcode.psd")
    assert describe(whole.events[1]).startswith("distill 2/3, about ")


def test_reader_keeps_a_crash_and_says_the_clis_line() -> None:
    reader = LineReader()
    reader.feed(b'{"event": "progress", "stage": "distill", "step": 1, "total": 9, "seconds": 1, "eta": null}\n')
    reader.feed(b"Traceback (most recent call last):\n  boom\nRuntimeError: segfault-ish")
    reader.close()
    assert reader.final is None and reader.events[-1].text == "RuntimeError: segfault-ish"
    assert outcome_message(reader, -11) == "RuntimeError: segfault-ish"
    assert outcome_message(LineReader(), 3) == "lasagna exited with code 3"
    error = LineReader()
    error.feed(b'{"event": "error", "exit_code": 1, "seconds": 0.1, "message": "a.psd: damaged"}\n')
    assert outcome_message(error, 1) == "a.psd: damaged" and parse_line("  ") is None
    assert parse_line("[1, 2]").kind == "message"  # JSON but not the stream's


# ------------------------------------------------------------------------------------------ kritarc


SAMPLES = [
    "",
    "[General]\nx=1",
    "[General]\nx=1\n",
    "[python]\nenable_scripter=true\n\n[General]\nx=1\n",
    "[python]\nenable_lasagna_krita = false\n",
    "[python]\nenable_lasagna_krita=true\n",
    "[a]\n[python]\n[b]\ny=2\n",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_kritarc_entry_is_set_and_taken_back_exactly(text: str) -> None:
    new, change = kritarc.set_entry(text, "python", "enable_lasagna_krita", "true")
    assert kritarc.read_entry(new, "python", "enable_lasagna_krita") == "true"
    for group, key in (("General", "x"), ("python", "enable_scripter"), ("b", "y")):
        assert kritarc.read_entry(new, group, key) == kritarc.read_entry(text, group, key)
    assert kritarc.undo(new, "python", "enable_lasagna_krita", change) == text


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(
    st.sampled_from(["[python]", "[General]", "[python][sub]", "", "enable_lasagna_krita=false", "# note"]),
    st.from_regex(r"[a-z_]{1,8}=[a-z0-9 ]{0,6}", fullmatch=True)), max_size=8), st.booleans())
def test_kritarc_round_trip_on_any_file(lines: list[str], final_newline: bool) -> None:
    text = "\n".join(lines) + ("\n" if final_newline and lines else "")
    new, change = kritarc.set_entry(text, "python", "enable_lasagna_krita", "true")
    assert kritarc.read_entry(new, "python", "enable_lasagna_krita") == "true"
    assert kritarc.undo(new, "python", "enable_lasagna_krita", change) == text


# ------------------------------------------------------------------------------------------ install / uninstall


def snapshot(*roots: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under `roots` with its mode and (for files) bytes: 'as it was' means this is equal."""
    found = {}
    for root in roots:
        for path in [root, *sorted(root.rglob("*"))] if root.exists() else []:
            found[str(path)] = (path.stat().st_mode, path.read_bytes() if path.is_file() else b"")
    return found


@pytest.fixture
def profile(tmp_path: Path) -> dict[str, str]:
    """A Krita profile that already holds another plug-in and settings, with HOME and XDG pointing into it."""
    (tmp_path / "res" / "pykrita" / "other").mkdir(parents=True)
    (tmp_path / "res" / "pykrita" / "other.desktop").write_text("[Desktop Entry]\nName=Other\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kritarc").write_text("[General]\nx=1\n\n[python]\nenable_other=true\n")
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_DATA_HOME": str(tmp_path / "data")}


def test_install_then_uninstall_leaves_the_folders_as_they_were(tmp_path: Path, profile: dict[str, str]) -> None:
    res, config = tmp_path / "res", tmp_path / "config"
    before = snapshot(res, config, tmp_path / "data")
    code, _, err = cli("krita", "install", "--resources", str(res), env=profile)
    assert code == 0, err
    pykrita = res / "pykrita"
    desktop = (pykrita / "lasagna_krita.desktop").read_text()
    assert "ServiceTypes=Krita/PythonPlugin" in desktop and "X-KDE-Library=lasagna_krita" in desktop
    assert sorted(p.name for p in (pykrita / "lasagna_krita").iterdir()) == sorted(
        [p.name for p in PLUGIN.glob("*.py")] + ["install.json"])
    assert (pykrita / "lasagna_krita" / "job.py").read_bytes() == (PLUGIN / "job.py").read_bytes()
    rc = (config / "kritarc").read_text()
    assert rc == "[General]\nx=1\n\n[python]\nenable_other=true\nenable_lasagna_krita=true\n"
    lines = err.strip().splitlines()
    assert lines[0] == f"created {pykrita / 'lasagna_krita'}" and lines[1].startswith("recorded ")
    assert lines[-1] == f"enabled {config / 'kritarc'} ([python] enable_lasagna_krita=true)"
    assert len(lines) == len(list(PLUGIN.glob("*.py"))) + 4  # created, recorded, one per file, the .desktop, enabled
    manifest = json.loads((pykrita / "lasagna_krita" / "install.json").read_text())
    assert Path(manifest["executable"]).name == "lasagna" and manifest["created_folders"] == [str(pykrita / "lasagna_krita")]

    again = snapshot(res, config)
    code, _, err = cli("krita", "install", "--resources", str(res), env=profile)  # idempotent
    assert code == 0 and snapshot(res, config) == again
    assert all(line.split()[0] in ("recorded", "unchanged") for line in err.strip().splitlines()), err

    cache = pykrita / "lasagna_krita" / "__pycache__"  # what Krita's Python leaves when it loads the plug-in
    py_compile.compile(str(pykrita / "lasagna_krita" / "job.py"), cfile=str(cache / "job.cpython-38.pyc"))
    code, out, err = cli("krita", "uninstall", "--resources", str(res), "--json", env=profile)
    assert code == 0, err
    actions = json.loads(out)["actions"]
    assert {"action": "disabled", "path": str(config / "kritarc"), "detail": "[python] enable_lasagna_krita"} in actions
    assert snapshot(res, config, tmp_path / "data") == before
    code, _, err = cli("krita", "uninstall", "--resources", str(res), env=profile)
    assert code == 0 and err.strip() == f"nothing to do: the plug-in is not installed in {res}"


def test_install_into_an_empty_place_creates_and_removes_everything(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "cfg" / "deep"), "XDG_DATA_HOME": str(tmp_path / "d")}
    code, _, err = cli("krita", "install", env=env)  # the defaults: $XDG_DATA_HOME/krita and $XDG_CONFIG_HOME/kritarc
    assert code == 0, err
    assert (tmp_path / "d" / "krita" / "pykrita" / "lasagna_krita.desktop").is_file()
    assert (tmp_path / "cfg" / "deep" / "kritarc").read_text() == "[python]\nenable_lasagna_krita=true\n"
    assert err.splitlines()[:4] == [f"created {tmp_path / 'd'}", f"created {tmp_path / 'd' / 'krita'}",
                                    f"created {tmp_path / 'd' / 'krita' / 'pykrita'}",
                                    f"created {tmp_path / 'd' / 'krita' / 'pykrita' / 'lasagna_krita'}"]
    code, _, err = cli("krita", "uninstall", env=env)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == []


def test_a_plugin_folder_install_did_not_write_is_left_alone(tmp_path: Path, profile: dict[str, str]) -> None:
    (tmp_path / "res" / "pykrita" / "lasagna_krita").mkdir()
    (tmp_path / "res" / "pykrita" / "lasagna_krita" / "mine.py").write_text("x = 1\n")
    before = snapshot(tmp_path)
    for verb in ("install", "uninstall"):
        code, _, err = cli("krita", verb, "--resources", str(tmp_path / "res"), env=profile)
        assert code == 1 and len(err.strip().splitlines()) == 1 and "not written by `lasagna krita install`" in err
    assert snapshot(tmp_path) == before


def test_unwritable_resources_is_one_line(tmp_path: Path, profile: dict[str, str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = cli("krita", "install", "--resources", str(blocker / "res"), env=profile)
    assert code == 1 and err.startswith("error: can't create ") and len(err.strip().splitlines()) == 1


def test_default_locations_per_platform(tmp_path: Path) -> None:
    home = Path("/h")
    assert default_locations("linux", {}, home) == type(default_locations())(home / ".local/share/krita", home / ".config/kritarc")
    assert default_locations("linux", {"XDG_DATA_HOME": "/d", "XDG_CONFIG_HOME": "/c"}, home).kritarc == Path("/c/kritarc")
    mac = default_locations("darwin", {}, home)
    assert (mac.resources, mac.kritarc) == (home / "Library/Application Support/krita", home / "Library/Preferences/kritarc")
    win = default_locations("win32", {"APPDATA": "C:/R", "LOCALAPPDATA": "C:/L"}, home)
    assert (win.resources, win.kritarc) == (Path("C:/R/krita"), Path("C:/L/kritarc"))


# ------------------------------------------------------------------------------------------ what needs Krita


def test_krita_free_modules_import_neither_krita_nor_the_krita_facing_ones() -> None:
    """The CLI and these tests import them outside Krita; Krita's Python runs them without Lasagna's packages."""
    for name in KRITA_FREE:
        tree = ast.parse((PLUGIN / f"{name}.py").read_text())
        imported = {(node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) and not node.level else
                    (node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        heavy = imported & {"PyQt5", "lasagna_core", "lasagna_cli", "torch", "numpy", "docker", "job", "document_io"}
        if name != "__init__":  # the package's face imports the Krita-facing modules only inside Krita
            assert "krita" not in imported, name
            assert not heavy, (name, heavy)
    all_modules = {p.stem for p in PLUGIN.glob("*.py")}
    assert all_modules - set(KRITA_FREE) == {"docker", "document_io", "job"}
