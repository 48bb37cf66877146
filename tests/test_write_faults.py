"""A real `lasagna shade` stopped at every stage of its write - SIGINT, SIGTERM, SIGKILL, a full disk - through
the test-only hook in `lasagna_core/writing/faults.py`. Afterwards the result is the old pair or the complete
new one (never a PSD beside a sidecar that isn't its own), the input is byte-identical, and once the next run
has written into the folder no temporary file is left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from psd_tools import PSDImage

from lasagna_core.writing.faults import STAGES
from tests.conftest import gradient_rgb, to_uint8

LASAGNA = str(Path(sys.executable).with_name("lasagna"))
FAULTS = ("SIGINT", "SIGTERM", "SIGKILL", "ENOSPC")
EXIT = {"SIGINT": 130, "SIGTERM": 143, "SIGKILL": -signal.SIGKILL, "ENOSPC": 1}


def shade(folder: Path, seed: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [LASAGNA, "shade", "in.png", "-p", "light from the left", "--steps", "2", "--seed", str(seed), "-o", "out.psd"],
        cwd=folder, env={**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@pytest.fixture(scope="module")
def old_result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the input and an earlier result of it (seed 0), copied for each case."""
    folder = tmp_path_factory.mktemp("old")
    Image.fromarray(to_uint8(gradient_rgb(20, 28))).save(folder / "in.png")
    proc = shade(folder, 0, {})
    assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
    return folder


def _pair(folder: Path) -> tuple[bytes, int] | None:
    """(PSD bytes, the seed its sidecar records), after checking both are there and parse."""
    psd, sidecar = folder / "out.psd", folder / "out.psd.json"
    assert psd.exists() == sidecar.exists(), os.listdir(folder)
    if not psd.exists():
        return None
    PSDImage.open(psd)
    return psd.read_bytes(), json.loads(sidecar.read_text())["seed"]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("stage", STAGES)
def test_a_write_stopped_at_any_stage_leaves_the_old_pair_or_the_new_one(
    tmp_path: Path, old_result: Path, stage: str, fault: str
) -> None:
    folder = tmp_path / "case"
    shutil.copytree(old_result, folder)
    old_psd, source = (folder / "out.psd").read_bytes(), (folder / "in.png").read_bytes()
    marker = tmp_path / "paused"
    if fault == "ENOSPC":
        proc = shade(folder, 5, {"LASAGNA_TEST_FAIL_AT": stage})
    else:
        proc = shade(folder, 5, {"LASAGNA_TEST_PAUSE_AT": stage, "LASAGNA_TEST_PAUSE_FILE": str(marker),
                                 "LASAGNA_TEST_PAUSE_SECONDS": "60"})
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()[1].decode()
        proc.send_signal(getattr(signal, fault))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT[fault], err.decode()
    if fault != "SIGKILL":
        assert len(err.decode().strip().splitlines()) == 1 and "Traceback" not in err.decode(), err.decode()
    assert (folder / "in.png").read_bytes() == source

    next_run = subprocess.run([LASAGNA, "flatten", "in.png", "-o", "next.png"], cwd=folder, capture_output=True)
    assert next_run.returncode == 0, next_run.stderr.decode()
    assert sorted(name for name in os.listdir(folder) if name.startswith(".")) == []

    psd, seed = _pair(folder) or (b"", -1)
    committed = stage in ("renamed", "sidecar-renamed") and fault != "ENOSPC" or stage == "sidecar-renamed"
    if committed:  # signals are held until both renames are done; a kill between them is rolled forward
        assert seed == 5 and psd != old_psd
    else:
        assert (psd, seed) == (old_psd, 0)
