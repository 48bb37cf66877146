"""Text reaches the user as given: file names, prompts, layer names and error messages with brackets (rich
markup syntax) or emoji codes are printed literally by every command, with NO_COLOR and with colour forced."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import gradient_rgb, to_uint8

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
QUICK = ["-p", "light from the left", "--steps", "2", "--device", "cpu"]


def run(*args: str, cwd: Path, color: bool, **env: str) -> tuple[int, str, str]:
    """The CLI in a fresh process (the consoles are made at import): with NO_COLOR, or without it and colour
    forced, so styles are emitted around the text and must not eat any of it. Colour codes are stripped."""
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    environ.update({"FORCE_COLOR": "1"} if color else {"NO_COLOR": "1"}, **env)
    proc = subprocess.run([sys.executable, "-m", "lasagna_cli", *args], capture_output=True, text=True, cwd=cwd, env=environ)
    if color and "error:" in proc.stderr:
        assert ANSI.search(proc.stderr), "colour was forced, yet 'error:' is not styled: the test would prove nothing"
    return proc.returncode, ANSI.sub("", proc.stdout), ANSI.sub("", proc.stderr)


def picture(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(gradient_rgb(24, 32))).save(path, format="PNG")
    return path


@pytest.mark.parametrize("color", [False, True], ids=["NO_COLOR", "colour"])
def test_shade_reports_bracketed_and_emoji_names_as_given(tmp_path: Path, color: bool) -> None:
    for name in ("[/b]weird.png", "photo [final].png", ":smile: [bold]x[/].png"):
        source = picture(tmp_path / name)
        code, _, err = run("shade", name, *QUICK, cwd=tmp_path, color=color)
        output = source.with_name(source.stem + ".lasagna.psd")
        assert code == 0 and "Traceback" not in err and output.is_file(), err
        line = err.strip().splitlines()[-1]  # with colour forced, a progress bar is drawn first
        assert line.startswith(f"wrote {output.relative_to(tmp_path)}: Shadows (multiply), Light (screen) in "), line


@pytest.mark.parametrize("color", [False, True], ids=["NO_COLOR", "colour"])
def test_inspect_and_flatten_print_names_as_given(tmp_path: Path, color: bool) -> None:
    source = picture(tmp_path / "[" / "x].png")  # the path "[/x].png"
    code, out, err = run("inspect", "[/x].png", cwd=tmp_path, color=color)
    assert code == 0, err
    assert out.splitlines()[0].startswith("x].png  PNG  32x24")
    target = tmp_path / "[red]flat[x] :smile:.png"
    code, out, err = run("flatten", str(source), "-o", str(target), cwd=tmp_path, color=color)
    assert code == 0 and err.strip() == f"wrote {target}", err


def test_inspect_shows_bracketed_layer_names(tmp_path: Path) -> None:
    from lasagna_core.document import load
    from lasagna_core.writing import save_psd
    from lasagna_core.layers import BlendMode, PixelNode

    doc = load(picture(tmp_path / "a.png"))
    layer = PixelNode(name="[/] :smile: [b]ink", color=np.ones((1, 24, 32), np.float32), alpha=None, blend_mode=BlendMode.MULTIPLY)
    save_psd(doc, [layer], tmp_path / "a.psd")
    code, out, err = run("inspect", "a.psd", cwd=tmp_path, color=True)
    assert code == 0, err
    assert any(line.lstrip("├└─ ").startswith("[/] :smile: [b]ink  pixel  multiply") for line in out.splitlines()), out


@pytest.mark.parametrize("color", [False, True], ids=["NO_COLOR", "colour"])
def test_bracketed_prompt_in_an_error_is_one_line(tmp_path: Path, color: bool) -> None:
    source = picture(tmp_path / "a.png")
    code, out, err = run("shade", str(source), "-p", "[/] make it nice", "--steps", "2", cwd=tmp_path, color=color)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "the prompt '[/] make it nice' (no direction found)" in lines[0], err


@pytest.mark.parametrize("color", [False, True], ids=["NO_COLOR", "colour"])
def test_error_texts_keep_their_brackets(tmp_path: Path, color: bool) -> None:
    source = picture(tmp_path / "a.png")
    (tmp_path / "empty.toml").write_text('name = "empty"\n')
    (tmp_path / "odd.toml").write_text(
        'name = "odd"\n[[layers]]\nname = "S"\nblend_mode = "multiply"\nneutral = 1.0\n[defaults]\nspeed = 3\n'
    )
    cases = [
        (["shade", str(source), "-p", "light from the left", "-t", str(tmp_path / "empty.toml")],
         "needs at least one [[layers]] table"),
        (["shade", str(source), "-p", "light from the left", "-t", str(tmp_path / "odd.toml")],
         "unknown [defaults] keys: speed"),
        (["batch", "shade", str(source), str(tmp_path / "out"), "-p", "light from the left", "--ray"],
         "pip install 'lasagna[ray]'"),
    ]
    if __import__("importlib").util.find_spec("ray") is not None:
        cases.pop()
    cases.append((["eval", "--data", str(tmp_path), "--skimage-photos"], "pip install 'lasagna[eval]'"))
    (tmp_path / "no-skimage" / "skimage").mkdir(parents=True)  # as if scikit-image were not installed
    (tmp_path / "no-skimage" / "skimage" / "__init__.py").write_text("raise ImportError('not installed')\n")
    for args, text in cases:
        code, out, err = run(*args, cwd=tmp_path, color=color, PYTHONPATH=str(tmp_path / "no-skimage"))
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], err


def test_help_texts_keep_their_brackets(tmp_path: Path) -> None:
    code, out, _ = run("eval", "--help", cwd=tmp_path, color=False)
    assert code == 0 and "(pip install 'lasagna[eval]')" in " ".join(out.split())
    code, out, _ = run("batch", "--help", cwd=tmp_path, color=False)
    assert code == 0 and "--ray [ADDRESS]" in out


def test_batch_lines_and_summary_print_names_as_given(tmp_path: Path) -> None:
    picture(tmp_path / "in" / "photo [final].png")
    (tmp_path / "in" / "[b]bad[red].png").write_bytes(b"not a picture")
    code, _, err = run("batch", "shade", "in", "out", *QUICK[:-2], cwd=tmp_path, color=False)
    assert code == 1 and (tmp_path / "out" / "photo [final].psd").is_file(), err
    lines = err.splitlines()
    assert "failed  in/[b]bad[red].png: damaged or unreadable image (cannot identify image file" in err, err
    assert any(line.startswith("ok      in/photo [final].png -> out/photo [final].psd (") for line in lines), err
    assert any(line.split()[:2] == ["in/[b]bad[red].png", "damaged"] for line in lines), err  # the summary table


def test_models_pull_offline_keeps_the_whole_hint(tmp_path: Path) -> None:
    code, out, err = run("models", "pull", "lasagna-tests/not-cached", cwd=tmp_path, color=False,
                         HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Could not download 'lasagna-tests/not-cached': "), err
    assert lines[0].endswith("set 'HF_HUB_OFFLINE=0' as environment variable."), err


def test_reason_shortens_by_whole_sentences_and_words() -> None:
    from lasagna_core.errors import reason

    hint = "To go online, set 'HF_HUB_OFFLINE=0' as environment variable."
    assert reason(OSError(f"{'Not cached here. ' * 11}{hint}\nsecond line")).endswith(f"here. {hint}")
    assert reason(OSError("Short. " + "x" * 300)) == "Short."  # a later sentence too long for the limit is left out
    long = reason(ValueError("word " * 100), limit=50)
    assert long == " ".join(["word"] * 10) + "..."
    assert reason(ValueError("a" * 80), limit=50) == "a" * 50 + "..."  # a "word" longer than the limit
    assert reason(KeyError(), with_type=True) == "KeyError"
