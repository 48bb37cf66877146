"""`--progress jsonl`: every stderr line is one JSON object, steps go up, and the last line is the one result
or error, with the message and exit code the CLI gives without the flag."""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_cli.progress_stream import JsonlProgress
from tests.conftest import REPO, gradient_rgb, to_uint8
from tests.tiny_sd import make_tiny_sd

LASAGNA = str(Path(sys.executable).with_name("lasagna"))
ENV = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


def picture(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(gradient_rgb(32, 48, seed=seed))).save(path)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})
    return result.exit_code, result.stdout, result.stderr


def stream(stderr: str) -> list[dict[str, Any]]:
    """The lines as JSON, checking the stream's shape: all parse, one final line, last."""
    lines = [json.loads(line) for line in stderr.splitlines()]  # a line that isn't JSON fails here
    finals = [i for i, line in enumerate(lines) if line["event"] in ("result", "error")]
    assert finals == [len(lines) - 1], stderr
    return lines


def progress(lines: list[dict[str, Any]], stage: str) -> list[dict[str, Any]]:
    found = [line for line in lines if line["event"] == "progress" and line["stage"] == stage]
    assert [line["step"] for line in found] == sorted({line["step"] for line in found}), found  # strictly up
    assert all(line["seconds"] >= 0 and set(line) >= {"total", "eta"} for line in found)
    return found


def test_shade_streams_steps_then_the_result(tmp_path: Path) -> None:
    code, out, err = run("shade", str(picture(tmp_path / "a.png")), "-p", "light from the left", "--steps", "4",
                         "-k", "2", "--progress", "jsonl")
    assert code == 0 and out == ""
    lines = stream(err)
    steps = progress(lines, "distill")
    assert [s["step"] for s in steps] == list(range(1, 9)) and {s["total"] for s in steps} == {8}  # 2 variations
    assert steps[0]["eta"] is None and all(s["eta"] >= 0 for s in steps[1:]) and steps[-1]["eta"] == 0
    final = lines[-1]
    assert final["event"] == "result" and final["exit_code"] == 0
    assert Path(final["result"]["output"]).is_file() and [l["name"] for l in final["result"]["layers"]] == ["Shadows", "Light"]
    assert any(l["event"] == "message" and l["text"].startswith("wrote ") for l in lines)


def test_colorize_streams_steps_then_the_result(tmp_path: Path, tiny_model: Path) -> None:
    code, _, err = run("colorize", str(picture(tmp_path / "a.png")), "-p", "a watercolour fox", "-t", "colorize-sd", "-m", str(tiny_model),
                       "--steps", "3", "--progress", "jsonl")
    assert code == 0, err
    lines = stream(err)
    assert [s["step"] for s in progress(lines, "distill")] == [1, 2, 3]
    assert lines[-1]["event"] == "result" and lines[-1]["result"]["layers"][0]["blend_mode"] == "normal"


def test_batch_streams_files_and_ends_with_the_failure(tmp_path: Path) -> None:
    picture(tmp_path / "in" / "a.png")
    picture(tmp_path / "in" / "c.png", seed=1)
    (tmp_path / "in" / "b.png").write_bytes(b"not a picture")
    code, _, err = run("batch", "shade", str(tmp_path / "in"), str(tmp_path / "out"), "-p", "light from the left",
                       "--steps", "2", "--progress", "jsonl")
    assert code == 1
    lines = stream(err)
    files = progress(lines, "batch")
    assert [f["step"] for f in files] == [0, 1, 2, 3] and {f["total"] for f in files} == {3}
    assert sorted(f["status"] for f in files[1:]) == ["failed", "ok", "ok"]
    final = lines[-1]
    assert final["event"] == "error" and final["exit_code"] == 1
    assert final["message"].startswith("1 of 3 files failed") and final["result"]["ok"] == 2
    assert not any("status" in l.get("text", "") and "total" in l.get("text", "") for l in lines)  # no table


def test_error_line_is_the_clis_line_and_exit_code(tmp_path: Path) -> None:
    args = ["shade", str(tmp_path / "missing.png"), "-p", "light from the left"]
    code, _, human = run(*args)
    jcode, _, err = run(*args, "--progress", "jsonl")
    assert code == jcode == 1
    (line,) = stream(err)
    assert line == {"event": "error", "exit_code": 1, "seconds": line["seconds"], "message": human.strip().removeprefix("error: ")}
    code, _, err = run("shade", str(picture(tmp_path / "a.png")), "-p", "make it nice", "--progress", "jsonl")
    assert code == 2 and stream(err)[-1]["exit_code"] == 2


def test_dataset_and_train_stream_their_progress(tmp_path: Path) -> None:
    code, _, err = run("dataset", "synth", str(tmp_path / "d"), "--count", "4", "--size", "8", "-j", "1", "--progress", "jsonl")
    assert code == 0, err
    lines = stream(err)
    assert progress(lines, "render")[-1]["step"] == 4 and lines[-1]["result"]["scenes"] == 4
    code, _, err = run("train", "builtin", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "w.safetensors"),
                       "--steps", "3", "--size", "8", "--batch-size", "2", "--progress", "jsonl")
    assert code == 0, err
    lines = stream(err)
    steps = progress(lines, "train")
    assert [s["step"] for s in steps] == [1, 2, 3] and all(s["loss"] > 0 and s["learning_rate"] > 0 for s in steps)
    assert lines[-1]["result"]["steps_done"] == 3 and not any("step 3/3" in l.get("text", "") for l in lines)


def test_no_bar_on_a_terminal_and_sigterm_ends_the_stream(tmp_path: Path) -> None:
    """On a real terminal jsonl still writes only JSON (the human bar would be drawn there otherwise); SIGTERM
    mid-run ends it with the 143 error line."""
    source = picture(tmp_path / "a.png")
    for args, bar in ((["--steps", "40"], True), (["--steps", "100000", "--progress", "jsonl"], False)):
        leader, follower = pty.openpty()
        process = subprocess.Popen([LASAGNA, "shade", str(source), "-p", "light from the left", "-o",
                                    str(tmp_path / "out.psd"), *args], stderr=follower, stdout=subprocess.DEVNULL,
                                   env={**ENV, "TERM": "xterm"}, cwd=REPO)
        os.close(follower)
        seen = _read_until(leader, b"distill" if not bar else b"distilling", 120)
        if not bar:
            process.send_signal(signal.SIGTERM)
        process.wait(60)
        seen += _read_until(leader, None, 5)
        os.close(leader)
        text = seen.decode("utf-8", "replace")
        if bar:
            assert process.returncode == 0 and "distilling" in text and "\x1b[" in text  # rich's live bar
            continue
        assert process.returncode == 143 and "\x1b" not in text
        lines = stream(text.replace("\r\n", "\n"))
        assert lines[-1] == {"event": "error", "exit_code": 143, "seconds": lines[-1]["seconds"], "message": "terminated"}


def _read_until(fd: int, marker: bytes | None, seconds: float) -> bytes:
    """What the terminal shows until `marker` appears (or `seconds` pass, or the writer closes it)."""
    import select

    data, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline and (marker is None or marker not in data):
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            data += chunk
    return data


def test_eta_is_measured_from_the_stages_first_line() -> None:
    now = [10.0]
    out = io.StringIO()
    stream_ = JsonlProgress(out, clock=lambda: now[0])
    for step, at in ((5, 11.0), (6, 13.0), (10, 21.0)):  # resumed at step 5; 2 s a step
        now[0] = at
        stream_.progress("train", step, 20)
    now[0] = 22.0
    stream_.report({"steps": 20})
    stream_.finish(0)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(l["seconds"], l["eta"]) for l in lines[:3]] == [(1.0, None), (3.0, 28.0), (11.0, 20.0)]
    assert lines[3] == {"event": "result", "exit_code": 0, "seconds": 12.0, "result": {"steps": 20}}
