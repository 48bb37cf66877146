"""The writing room: a result and its sidecar both or neither, temporaries that fit and that the next writer
cleans up (only its own), psd-tools' private API in one guarded place, one parse per edit."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from psd_tools import PSDImage

from lasagna_core.document import load
from lasagna_core.layers import BlendMode, PixelNode
from lasagna_core.writing import atomic, save_psd
from lasagna_core.writing.atomic import name_bytes, remove_stale_temporaries, temporary_name, write_files
from lasagna_core.writing.faults import STAGES
from lasagna_core.writing.psd import write_psd_with_merged_image
from tests.conftest import EXAMPLE_PSD, gradient_rgb


def _temporaries(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _as_pid(pid: int, target: str, token: str, role: str) -> str:
    """The temporary name a writer with process id `pid` makes (its length depends on the pid's digits)."""
    from unittest import mock

    with mock.patch("os.getpid", return_value=pid):
        return temporary_name(target, token, role)


@pytest.mark.parametrize("stem", ["a" * 235, "é" * 117])
def test_temporary_names_fit_in_255_bytes_and_the_write_works(tmp_path: Path, stem: str) -> None:
    main = tmp_path / f"{stem}.lasagna.psd"
    assert name_bytes(main.name + ".json") <= 255
    for role in ("m", "b", "c.json", "x.json"):
        assert name_bytes(temporary_name(main.name, "abcdef", role)) <= 255
    write_files(main, lambda f: f.write(b"psd"), [(".json", b"{}")])
    assert main.read_bytes() == b"psd" and main.with_name(main.name + ".json").read_bytes() == b"{}"
    assert _temporaries(tmp_path) == []


@pytest.mark.parametrize("stage", STAGES)
def test_a_full_disk_at_any_stage_keeps_the_old_pair_or_completes_the_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    main, sidecar = tmp_path / "out.psd", tmp_path / "out.psd.json"
    main.write_bytes(b"old psd")
    sidecar.write_bytes(b"old json")
    monkeypatch.setenv("LASAGNA_TEST_FAIL_AT", stage)
    with pytest.raises(OSError, match="No space left"):
        write_files(main, lambda f: f.write(b"new psd"), [(".json", b"new json")])
    pair = (main.read_bytes(), sidecar.read_bytes())
    assert pair == ((b"new psd", b"new json") if stage == "sidecar-renamed" else (b"old psd", b"old json"))
    assert _temporaries(tmp_path) == []


def test_a_failure_after_the_main_rename_without_an_old_pair_leaves_neither(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LASAGNA_TEST_FAIL_AT", "renamed")
    with pytest.raises(OSError):
        write_files(tmp_path / "out.psd", lambda f: f.write(b"new"), [(".json", b"{}")])
    assert os.listdir(tmp_path) == []


def test_a_killed_commit_is_rolled_forward_when_the_main_file_was_renamed(tmp_path: Path) -> None:
    """The state SIGKILL leaves between the two renames: new main in place, old sidecar, the new sidecar's
    temporary and the backup link of the old main. The next writer completes the pair."""
    dead = _dead_pid()
    main = tmp_path / ("x" * 235 + ".psd")  # a cut name: the target is found by its hash
    main.write_bytes(b"new psd")
    main.with_name(main.name + ".json").write_bytes(b"old json")
    (tmp_path / _as_pid(dead, main.name, "tok123", "c.json")).write_bytes(b"new json")
    (tmp_path / _as_pid(dead, main.name, "tok123", "b")).write_bytes(b"old psd")
    assert len(remove_stale_temporaries(tmp_path)) == 2
    assert main.read_bytes() == b"new psd" and main.with_name(main.name + ".json").read_bytes() == b"new json"
    assert _temporaries(tmp_path) == []


def test_a_killed_write_before_the_commit_is_rolled_back(tmp_path: Path) -> None:
    dead = _dead_pid()
    main = tmp_path / "out.psd"
    main.write_bytes(b"old psd")
    for role, data in (("m", b"new psd"), ("c.json", b"new json"), ("b", b"old psd")):
        (tmp_path / _as_pid(dead, main.name, "tok123", role)).write_bytes(data)
    remove_stale_temporaries(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["out.psd"] and main.read_bytes() == b"old psd"


def test_a_killed_undo_puts_the_old_main_back(tmp_path: Path) -> None:
    """Killed while undoing a failed commit: the companion already marked abandoned (x), the old main still
    in its backup link. The old pair comes back; the abandoned sidecar is never rolled forward."""
    dead = _dead_pid()
    main = tmp_path / "out.psd"
    main.write_bytes(b"new psd")
    (tmp_path / "out.psd.json").write_bytes(b"old json")
    (tmp_path / _as_pid(dead, main.name, "tok123", "x.json")).write_bytes(b"new json")
    (tmp_path / _as_pid(dead, main.name, "tok123", "b")).write_bytes(b"old psd")
    remove_stale_temporaries(tmp_path)
    assert main.read_bytes() == b"old psd" and (tmp_path / "out.psd.json").read_bytes() == b"old json"
    assert _temporaries(tmp_path) == []


def test_only_dead_writers_temporaries_of_this_machine_are_touched(tmp_path: Path) -> None:
    dead = _dead_pid()
    ours = temporary_name("out.psd", "tok123", "m")
    kept = [
        ours,  # this (live) process's
        ours.replace(f"lasagna-{atomic._HOST}-", "lasagna-0000-" if atomic._HOST != "0000" else "lasagna-ffff-"),  # another machine's
        ".out.psd.tmp",  # someone else's naming
        f".out.psd.lasagna-{dead}.tmp",
        "out.psd",
    ]
    for name in kept:
        (tmp_path / name).write_bytes(b"keep")
    stale = tmp_path / _as_pid(dead, "out.psd", "tok123", "m")
    stale.write_bytes(b"stale")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(os.listdir(tmp_path)) == sorted(kept)


def test_merged_image_is_written_through_psd_tools_record_api(tmp_path: Path) -> None:
    """Fails loudly when psd-tools moves the private names `write_psd_with_merged_image` relies on: the
    written merged image must be ours (a flat 25% gray), not psd-tools' re-render of the layer."""
    from psd_tools.api import numpy_io

    psd = PSDImage.new("RGB", (8, 6))
    psd.create_pixel_layer_from_array(gradient_rgb(6, 8), name="Layer")
    merged = numpy_io.encode_image_data(psd, np.full((6, 8, 3), 0.25, np.float32), np.ones((6, 8, 1), np.float32))
    buffer = io.BytesIO()
    write_psd_with_merged_image(psd, merged, buffer)
    back = PSDImage.open(io.BytesIO(buffer.getvalue()))
    assert [layer.name for layer in back] == ["Layer"]
    np.testing.assert_allclose(back.numpy()[:, :, :3], 64 / 255, atol=1e-6)

    class Moved:
        pass

    with pytest.raises(RuntimeError, match="psd-tools .* changed its private PSD record API"):
        write_psd_with_merged_image(Moved(), merged, io.BytesIO())


def test_an_edit_parses_its_psd_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []
    original = PSDImage.open.__func__  # type: ignore[attr-defined]

    def counting(cls: type, *args: object, **kwargs: object) -> PSDImage:
        opened.append(args[0])
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PSDImage, "open", classmethod(counting))
    doc = load(EXAMPLE_PSD)
    shadow = PixelNode("Shadows", np.full((1, doc.height, doc.width), 0.5, np.float32), None, blend_mode=BlendMode.MULTIPLY)
    save_psd(doc, [shadow], tmp_path / "out.psd", record={"prompt": "p"})
    assert len(opened) == 1
    save_psd(doc, [shadow], tmp_path / "again.psd")  # a second save of the same document starts from the file again
    assert [layer.name for layer in PSDImage.open(tmp_path / "again.psd")][-1] == "Shadows"
    assert sum(layer.name == "Shadows" for layer in PSDImage.open(tmp_path / "again.psd")) == 1
