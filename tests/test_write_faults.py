"""A real `lasagna shade` and `lasagna batch` stopped at every stage of a write - SIGINT, SIGTERM, SIGKILL, a
full disk - through the test-only hook in `lasagna_core/writing/faults.py`. Afterwards a result is the old pair
or the complete new one (never a PSD beside a sidecar that isn't its own), the input is byte-identical, and
once the next run has written into the folder no temporary file is left. For batch also: its log never
calls a file ok that isn't complete on disk, OUT's lock is released (or, after SIGKILL, stale and taken
over), and a rerun finishes every file - with worker processes (`--devices cpu,cpu`) too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image
from psd_tools import PSDImage
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.writing import result_complete
from lasagna_core.writing.faults import STAGES
from tests.conftest import REPO, gradient_rgb, to_uint8
from tests.processes import LASAGNA, children, interruptible, wait_until_ended

FAULTS = ("SIGINT", "SIGTERM", "SIGKILL", "ENOSPC")
EXIT = {"SIGINT": 130, "SIGTERM": 143, "SIGKILL": -signal.SIGKILL, "ENOSPC": 1}


def lasagna(folder: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [LASAGNA, *args], cwd=folder, env={**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=interruptible,
    )


def paused(folder: Path, args: list[str], stage: str, marker: Path, seconds: float = 60, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`lasagna ARGS`, once its first write pauses at `stage` (each later write pauses there for `seconds`)."""
    proc = lasagna(folder, args, {"LASAGNA_TEST_PAUSE_AT": stage, "LASAGNA_TEST_PAUSE_FILE": str(marker),
                                  "LASAGNA_TEST_PAUSE_SECONDS": str(seconds), **(env or {})})
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not marker.exists():
        proc.kill()
        pytest.fail(proc.communicate()[1].decode())
    return proc


def stopped(folder: Path, args: list[str], stage: str, fault: str, marker: Path) -> subprocess.Popen[bytes]:
    """`lasagna ARGS` with a full disk at `stage` of every write, or sent the signal `fault` at its first."""
    if fault == "ENOSPC":
        return lasagna(folder, args, {"LASAGNA_TEST_FAIL_AT": stage})
    proc = paused(folder, args, stage, marker)
    proc.send_signal(getattr(signal, fault))
    return proc


def committed(stage: str, fault: str) -> bool:
    """Whether a write stopped there has put its new pair in place: signals are held until both renames are
    done (a kill between them is rolled forward by the next writer); an error raised after them is too late."""
    return stage in ("renamed", "sidecar-renamed") and fault != "ENOSPC" or stage == "sidecar-renamed"


# ------------------------------------------------------------------------------------------ lasagna shade


def shade_args(seed: int) -> list[str]:
    return ["shade", "in.png", "-p", "light from the left", "--steps", "2", "--seed", str(seed), "-o", "out.psd"]


@pytest.fixture(scope="module")
def old_result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the input and an earlier result of it (seed 0), copied for each case."""
    folder = tmp_path_factory.mktemp("old")
    Image.fromarray(to_uint8(gradient_rgb(20, 28))).save(folder / "in.png")
    proc = lasagna(folder, shade_args(0), {})
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
    proc = stopped(folder, shade_args(5), stage, fault, tmp_path / "paused")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT[fault], err.decode()
    if fault != "SIGKILL":
        assert len(err.decode().strip().splitlines()) == 1 and "Traceback" not in err.decode(), err.decode()
    assert (folder / "in.png").read_bytes() == source

    next_run = subprocess.run([LASAGNA, "flatten", "in.png", "-o", "next.png"], cwd=folder, capture_output=True)
    assert next_run.returncode == 0, next_run.stderr.decode()
    assert sorted(name for name in os.listdir(folder) if name.startswith(".")) == []

    psd, seed = _pair(folder) or (b"", -1)
    if fault == "ENOSPC":  # the one line says what is on disk: the new result, or nothing changed
        assert ("written, but" in err.decode()) == committed(stage, fault), err.decode()
    if committed(stage, fault):
        assert seed == 5 and psd != old_psd
    else:
        assert (psd, seed) == (old_psd, 0)


# ------------------------------------------------------------------------------------------ lasagna batch

NAMES = ("p0", "p1", "p2")
TWO_WORKERS = ["--devices", "cpu,cpu"]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pictures")
    for i, name in enumerate(NAMES):
        Image.fromarray(to_uint8(gradient_rgb(20, 28, seed=i))).save(folder / f"{name}.png")
    return folder


def batch_args(case: Path, *extra: str) -> list[str]:
    return ["batch", "shade", str(case / "in"), str(case / "out"), "-p", "light from the left", "--steps", "2",
            "--log", str(case / "log.jsonl"), *extra]


def logged(case: Path) -> dict[str, str]:
    """Each logged file's status, by the input's stem."""
    lines = (case / "log.jsonl").read_text().splitlines() if (case / "log.jsonl").exists() else []
    return {Path(rec["input"]).stem: rec["status"] for rec in map(json.loads, lines)}


def complete(out: Path) -> set[str]:
    """The results in OUT that are complete; any other PSD or sidecar there fails the test."""
    found = {path.name.split(".")[0] for path in out.glob("*.psd*") if not path.name.startswith(".")}
    for name in found:
        assert result_complete(out / f"{name}.psd"), sorted(os.listdir(out))
        PSDImage.open(out / f"{name}.psd").numpy()
    return found


def hidden(out: Path) -> list[str]:
    """Temporaries and lock files: what a finished run must not leave."""
    return sorted(name for name in os.listdir(out) if name.startswith("."))


def inputs_of(case: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((case / "in").iterdir())}


def new_case(tmp_path: Path, pictures: Path) -> tuple[Path, dict[str, bytes]]:
    shutil.copytree(pictures, tmp_path / "in")
    return tmp_path, inputs_of(tmp_path)


def after_the_stop(case: Path, code: int, err: str, fault: str, sources: dict[str, bytes]) -> set[str]:
    """What every stopped batch must leave; returns the files complete on disk."""
    assert code == EXIT[fault], err
    assert "Traceback" not in err, err
    assert inputs_of(case) == sources
    out = case / "out"
    ok = {name for name, status in logged(case).items() if status == "ok"}
    if fault == "SIGKILL":  # no handler ran: its lock stays (stale), and a commit may be half done until the rerun
        assert ".lasagna-batch.lock" in hidden(out)
        assert all(result_complete(out / f"{name}.psd") for name in ok)
        return ok
    assert hidden(out) == []  # no temporary, the lock released
    done = complete(out)
    assert ok <= done, "the log calls a file ok that isn't complete on disk"
    return done


def ended(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode()


def in_process(args: list[str], **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, env={"NO_COLOR": "1", **env})
    return result.exit_code, result.stderr


def rerun_finishes_everything(case: Path, done: set[str], sources: dict[str, bytes]) -> None:
    """The next run takes OUT over, completes what a killed commit began, redoes the rest, leaves nothing hidden."""
    code, err = in_process(batch_args(case))
    assert code == 0, err
    assert logged(case) == {name: "skipped" if name in done else "ok" for name in NAMES}
    assert complete(case / "out") == set(NAMES) and hidden(case / "out") == []
    assert inputs_of(case) == sources


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("stage", STAGES)
def test_a_batch_stopped_at_any_stage_leaves_complete_results_and_a_rerun_finishes(
    tmp_path: Path, pictures: Path, stage: str, fault: str
) -> None:
    """The run is stopped at its first file's write (a full disk: at every file's, in this process since no
    signal is involved). A signal that the commit holds back lets that file finish, and the log says so; a
    SIGKILL mid-rename is rolled forward by the rerun, which then skips the file."""
    case, sources = new_case(tmp_path, pictures)
    if fault == "ENOSPC":
        code, err = in_process(batch_args(case), LASAGNA_TEST_FAIL_AT=stage)
    else:
        code, err = ended(stopped(case, batch_args(case), stage, fault, tmp_path / "paused"))
    done = after_the_stop(case, code, err, fault, sources)
    first_done = committed(stage, fault)
    if fault == "ENOSPC":  # every file fails alone, in one line each, and a pair already in place stays
        assert logged(case) == dict.fromkeys(NAMES, "failed")
        assert done == (set(NAMES) if first_done else set())
    elif fault != "SIGKILL":
        assert logged(case) == ({"p0": "ok"} if first_done else {}) and done == ({"p0"} if first_done else set())
    else:
        assert logged(case) == {}
        done = {"p0"} if first_done else set()
    rerun_finishes_everything(case, done, sources)


def writers(out: Path, *, between_renames: bool = False) -> set[int]:
    """The pids of the processes whose temporaries are in OUT (the writer's temporaries name it); with
    `between_renames`, only those whose PSD is renamed into place and whose sidecar is not yet."""
    roles: dict[tuple[int, str], set[str]] = {}
    for name in hidden(out):
        if name.endswith(".tmp"):
            _, pid, token, role = name.split(".lasagna-")[1].removesuffix(".tmp").split("-", 3)
            roles.setdefault((int(pid), token), set()).add(role)
    return {pid for (pid, _), held in roles.items() if not between_renames or held == {"c.json"}}


@pytest.mark.parametrize("fault,stage", [("SIGTERM", "renamed"), ("SIGKILL", "sidecar-temp-written")])
def test_a_batch_with_workers_stopped_mid_write_leaves_complete_results_and_a_rerun_finishes(
    tmp_path: Path, pictures: Path, stage: str, fault: str
) -> None:
    """The signal goes to the run itself; its workers stop too (SIGKILL: they notice their run is gone). Every
    file a worker had paused in the middle of its renames is complete afterwards, every other is absent.
    (SIGTERM before the renames: the zombie test below; a worker killed between them: the test after this.)"""
    case, sources = new_case(tmp_path, pictures)
    marker = tmp_path / "paused"
    proc = paused(case, batch_args(case, *TWO_WORKERS), stage, marker)
    workers = children(proc.pid)
    proc.send_signal(getattr(signal, fault))
    done = after_the_stop(case, *ended(proc), fault, sources)
    wait_until_ended(workers)
    finished = len(marker.read_text().splitlines()) if committed(stage, fault) else 0
    assert len(complete(case / "out")) == finished
    if fault == "SIGKILL":
        assert hidden(case / "out") == [".lasagna-batch.lock"]  # the workers took back their own temporaries
    else:
        assert done == {name for name, status in logged(case).items() if status == "ok"}
    rerun_finishes_everything(case, complete(case / "out"), sources)


def test_a_worker_killed_between_its_renames_leaves_the_complete_pair(tmp_path: Path, pictures: Path) -> None:
    """SIGKILL to a worker after its PSD's rename, before its sidecar's: the run finishes the commit that
    worker began (it used to delete the sidecar's temporary, then the PSD without it), and logs the file
    failed; a new worker does the other files, and the rerun skips all."""
    case, sources = new_case(tmp_path, pictures)
    proc = paused(case, batch_args(case, *TWO_WORKERS), "renamed", tmp_path / "paused", seconds=3)
    killed = writers(case / "out", between_renames=True)
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    code, err = ended(proc)
    assert code == 1 and "died while editing this file" in err, err
    assert sorted(logged(case).values()) == sorted(["failed"] * len(killed) + ["ok"] * (len(NAMES) - len(killed)))
    assert complete(case / "out") == set(NAMES) and hidden(case / "out") == []
    rerun_finishes_everything(case, set(NAMES), sources)


def test_a_worker_that_does_not_wind_down_is_reaped_before_its_leftovers_are_removed(tmp_path: Path, pictures: Path) -> None:
    """A worker that can't react to the stop (here: SIGSTOPped while its temporary is written) is killed when
    the wind-down ends; its temporary goes only once it is reaped, since until then it counts as alive."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text("import lasagna_core.batch.local as local\nlocal.WIND_DOWN_S = 1.0\n")
    case, sources = new_case(tmp_path, pictures)
    env = {"PYTHONPATH": os.pathsep.join([str(hooks), str(REPO)])}
    proc = paused(case, batch_args(case, *TWO_WORKERS), "temp-written", tmp_path / "paused", env=env)
    for pid in writers(case / "out"):
        os.kill(pid, signal.SIGSTOP)
    proc.send_signal(signal.SIGTERM)
    assert after_the_stop(case, *ended(proc), "SIGTERM", sources) == set()
    rerun_finishes_everything(case, set(), sources)
