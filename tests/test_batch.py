"""`lasagna batch`: discovery, output mapping, shards, prompts, resumability, isolation, signals, workers, Ray.

Edits use the tiny Stable Diffusion from tests/tiny_sd.py, `--steps 2` and 32x48 images, so a whole batch
costs about as much as loading the model. The signal tests run the real command in a subprocess and send it
real signals mid-way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from psd_tools import PSDImage
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.batch import BatchOptions, EditConfig, discover, parse_shard, plan, read_prompts, shard_of
from lasagna_core.errors import UsageError
from lasagna_core.priors import PriorSettings
from lasagna_core.writing import result_complete
from tests.conftest import REPO, gradient_rgb, to_uint8
from tests.tiny_sd import make_tiny_sd

FAST = ["--steps", "2"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


def picture(path: Path, seed: int = 0, height: int = 32, width: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(gradient_rgb(height, width, seed=seed))).save(path)
    return path


def cli(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"}, input=input)
    return result.exit_code, result.stdout, result.stderr


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def psds(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.psd"))


def assert_clean(out: Path) -> None:
    """Every PSD complete (sidecar there, both parse), no temporary file, no orphan sidecar, OUT's lock released."""
    assert not [p for p in out.rglob("*.tmp")], "temporary files left behind"
    assert not list(out.glob(".lasagna-batch*.lock")), "the lock of OUT was not released"
    for psd in out.rglob("*.psd"):
        assert result_complete(psd), psd
        PSDImage.open(psd).numpy()
    for sidecar in out.rglob("*.psd.json"):
        assert sidecar.with_suffix("").exists(), sidecar


def options(source: Path | str, out: Path, **kw) -> BatchOptions:
    """BatchOptions with the shade template; keyword arguments go to EditConfig when they name one of its fields,
    `model` to its prior settings."""
    kw.setdefault("prompt", "light from the left")
    edit = {k: kw.pop(k) for k in list(kw) if k in EditConfig.__dataclass_fields__}
    prior = PriorSettings(kw.pop("model", None))
    return BatchOptions(inputs=str(source), out=out, edit=EditConfig(prior=prior, **edit), **kw)


# ------------------------------------------------------------------------------------------ inputs and outputs


def test_folder_walk_mirrors_relative_paths(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for name in ["a.png", "b.JPG", "sub/c.psd", "sub/deeper/d.tif", ".hidden.png", ".cache/e.png", "notes.txt",
                 "out/old.psd"]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"x")
    (src / "folder.png").mkdir()  # a directory named like an image: listed, so it gets its own error line
    items = plan(options(src, src / "out"))  # OUT inside IN: our outputs are never taken as inputs
    assert [(i.source.rel.as_posix(), i.output.relative_to(src / "out").as_posix()) for i in items] == [
        ("a.png", "a.psd"), ("b.JPG", "b.psd"), ("folder.png", "folder.psd"), ("sub/c.psd", "sub/c.psd"),
        ("sub/deeper/d.tif", "sub/deeper/d.psd"),
    ]


def test_glob_and_stdin_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["shots/a/1.png", "shots/a/2.png", "shots/b/3.png", "shots/b/skip.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    found = discover("shots/**/*.png")
    assert [s.rel.as_posix() for s in found] == ["a/1.png", "a/2.png", "b/3.png"]
    # stdin: relative to the deepest folder all the paths share; blank lines and comments ignored
    found = discover("-", stdin_paths=["shots/a/1.png", "", "# a comment", str(tmp_path / "shots/b/3.png"), "shots/a/1.png"])
    assert [(str(s.path), s.rel.as_posix()) for s in found] == [
        ("shots/a/1.png", "a/1.png"), (str(tmp_path / "shots/b/3.png"), "b/3.png")
    ]
    assert [s.rel.as_posix() for s in discover("-", stdin_paths=["shots/a/../b/3.png"])] == ["3.png"]
    with pytest.raises(UsageError, match="no such file or folder"):
        discover("nowhere")


def test_outputs_never_escape_out_nor_overwrite_an_input(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for name in ["a.png", "a.psd", "b.png", "b.jpg", "c.png", "link/d.png"]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"x")
    # OUT == IN: a.png -> a.psd is an input; a.psd -> a.psd is itself; b.png and b.jpg collide
    errors = {i.source.rel.as_posix(): i.error for i in plan(options(src, src))}
    assert "one of the inputs" in errors["a.png"] and "one of the inputs" in errors["a.psd"]
    assert errors["b.jpg"] is None and "already writes" in errors["b.png"] and errors["c.png"] is None  # first in order wins
    # a folder inside OUT that is a link to somewhere else
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere")
    errors = {i.source.rel.as_posix(): i.error for i in plan(options(src, out))}
    assert "outside" in errors["link/d.png"]
    from lasagna_core.batch import output_for
    from lasagna_core.errors import OutputError

    for rel in ["../x.png", "/etc/x.png", "a/../../x.png"]:
        with pytest.raises(OutputError, match="outside"):
            output_for(out, Path(rel))


def test_shard_spec() -> None:
    assert parse_shard("2/5") == (2, 5)
    for bad in ["0/3", "4/3", "x/3", "3", "1/0", "-1/3"]:
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)


@settings(max_examples=25, deadline=None)
@given(names=st.lists(st.text("abcxyz/._-0123", min_size=1, max_size=12), max_size=40), count=st.integers(1, 6))
def test_shards_are_disjoint_and_cover_everything(names: list[str], count: int) -> None:
    keys = {n for n in names}
    owners = {key: shard_of(key, count) for key in keys}
    assert all(1 <= k <= count for k in owners.values())
    parts = [{key for key in keys if shard_of(key, count) == k} for k in range(1, count + 1)]
    assert set().union(*parts) == keys and sum(len(p) for p in parts) == len(keys)
    assert owners == {key: shard_of(key, count) for key in sorted(keys, reverse=True)}  # order never matters


def test_shard_plans_partition_a_folder(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for i in range(40):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}.png").write_bytes(b"x")
    (src / "f1.jpg").write_bytes(b"x")  # would collide with nothing; d*/ keeps names apart
    everything = {i.source.rel for i in plan(options(src, tmp_path / "out"))}
    for n in (1, 2, 3, 7):
        shards = [{i.source.rel for i in plan(options(src, tmp_path / "out", shard=(k, n)))} for k in range(1, n + 1)]
        assert set().union(*shards) == everything
        assert sum(len(s) for s in shards) == len(everything)


def test_colliding_inputs_share_a_shard(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for name in ["same.png", "same.jpg", "same.tif"]:
        (src / name).write_bytes(b"x")
    for k in (1, 2, 3, 4, 5):
        items = plan(options(src, tmp_path / "out", shard=(k, 5)))
        assert len(items) in (0, 3)  # all three or none: exactly one of them may write same.psd


# ------------------------------------------------------------------------------------------ prompts


def test_prompts_files(tmp_path: Path) -> None:
    csv_file = tmp_path / "p.csv"
    csv_file.write_text('\ufeffinput,prompt,seed\na.png,"light, from the left",7\n./sub/b.png,rim light,\n')
    assert set(read_prompts(csv_file)) == {"a.png", "sub/b.png"}  # BOM, header and ./ handled
    assert (read_prompts(csv_file)["a.png"].prompt, read_prompts(csv_file)["a.png"].seed) == ("light, from the left", 7)
    assert read_prompts(csv_file)["sub/b.png"].seed is None
    headerless = tmp_path / "p2.csv"
    headerless.write_text("a.png,warm light\n")
    assert read_prompts(headerless)["a.png"].prompt == "warm light"
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"input": "a.png", "prompt": "x", "seed": 3}\n\n{"input": "b.png", "prompt": "y"}\n')
    assert {k: (v.prompt, v.seed) for k, v in read_prompts(jsonl).items()} == {"a.png": ("x", 3), "b.png": ("y", None)}
    for text, message in [('{"input": "a.png"}\n', "expected"), ("{nope\n", "not valid JSON"),
                          ('{"input": "a.png", "prompt": "x", "seed": "many"}\n', "whole number"),
                          ('{"input": "a.png", "prompt": "x"}\n{"input": "./a.png", "prompt": "y"}\n', "listed twice")]:
        jsonl.write_text(text)
        with pytest.raises(UsageError, match=message):
            read_prompts(jsonl)
    with pytest.raises(UsageError, match="can't read"):
        read_prompts(tmp_path / "missing.csv")


def test_per_file_prompts_and_seeds(tiny_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    for i, name in enumerate(["a.png", "sub/b.png", "c.png"]):
        picture(src / name, seed=i)
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("input,prompt,seed\na.png,light from the top,11\nsub/b.png,rim light,\nghost.png,nobody,\n")
    out = tmp_path / "out"
    code, stdout, stderr = cli("batch", "shade", str(src), str(out), "--prompts", str(prompts), "-m", str(tiny_model),
                               "--seed", "5", "--json", *FAST)
    assert code == 1, stderr  # c.png has no prompt: no --prompt fallback was given
    records = {Path(r["input"]).name: r for r in map(json.loads, stdout.splitlines())}
    assert (records["a.png"]["status"], records["a.png"]["seed"]) == ("ok", 11)
    assert (records["b.png"]["status"], records["b.png"]["seed"]) == ("ok", 5)
    assert records["c.png"]["status"] == "failed" and "no prompt" in records["c.png"]["error"]
    assert json.loads((out / "a.psd.json").read_text())["prompt"] == "light from the top"
    assert json.loads((out / "sub/b.psd.json").read_text())["seed"] == 5
    assert "1 entry in" in stderr and "ghost.png" in stderr  # a prompt for a file that isn't there is flagged
    code, stdout, _ = cli("batch", "shade", str(src), str(out), "--prompts", str(prompts), "-p", "fallback",
                          "-m", str(tiny_model), "--json", *FAST)
    assert code == 0 and json.loads((out / "c.psd.json").read_text())["prompt"] == "fallback"


# ------------------------------------------------------------------------------------------ the acceptance run


def test_twenty_files_three_broken_then_rerun(tiny_model: Path, tmp_path: Path) -> None:
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "results.jsonl"
    for i in range(17):
        picture(src / ("sub" if i % 3 == 0 else "") / f"img{i:02d}.png", seed=i)
    (src / "zero.png").write_bytes(b"")
    (src / "truncated.png").write_bytes((src / "img01.png").read_bytes()[:60])
    (src / "text.jpg").write_text("not a picture")
    args = ["batch", "shade", str(src), str(out), "-p", "light from the left", "-m", str(tiny_model), *FAST,
            "--log", str(log), "--json"]
    code, stdout, stderr = cli(*args)
    assert code == 1, stderr
    first = read_log(log)
    assert [json.loads(line) for line in stdout.splitlines()] == first  # --json: the same line per file
    assert len(first) == 20 and {tuple(sorted(r)) for r in first} == {("error", "input", "output", "seconds", "seed", "status")}
    assert sorted(r["status"] for r in first).count("ok") == 17
    failed = {Path(r["input"]).name: r["error"] for r in first if r["status"] == "failed"}
    assert set(failed) == {"zero.png", "truncated.png", "text.jpg"}
    assert "empty file" in failed["zero.png"] and "damaged" in failed["truncated.png"]
    assert len(psds(out)) == 17 and "sub/img00.psd" in psds(out)
    assert not (out / "zero.psd").exists() and not (out / "truncated.psd.json").exists()
    assert_clean(out)
    for name in failed:  # one line each on stderr, no traceback
        assert sum(name in line and line.startswith("failed") for line in stderr.splitlines()) == 1
    assert "Traceback" not in stderr and "model loaded 1x" in stderr
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    code, stdout, stderr = cli(*args)
    assert code == 1
    again = read_log(log)
    assert sorted(r["status"] for r in again).count("skipped") == 17
    assert {Path(r["input"]).name: r["error"] for r in again if r["status"] == "failed"} == failed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps  # nothing redone, nothing touched
    assert "model loaded 0x" in stderr  # only broken files were left, and they fail before needing the model


def test_incomplete_outputs_are_redone(tiny_model: Path, tmp_path: Path) -> None:
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log.jsonl"
    for i in range(4):
        picture(src / f"p{i}.png", seed=i)
    args = ["batch", "shade", str(src), str(out), "-p", "x", "-m", str(tiny_model), *FAST, "--log", str(log)]
    assert cli(*args)[0] == 0
    (out / "p0.psd.json").unlink()  # sidecar missing
    (out / "p1.psd").write_bytes((out / "p1.psd").read_bytes()[:500])  # PSD damaged
    (out / "p2.psd.json").write_text("{")  # sidecar damaged
    (out / "p3.psd").unlink()  # only the sidecar left
    assert cli(*args)[0] == 0
    assert {Path(r["input"]).name: r["status"] for r in read_log(log)} == {
        "p0.png": "ok", "p1.png": "ok", "p2.png": "ok", "p3.png": "ok"
    }
    assert cli(*args)[0] == 0 and {r["status"] for r in read_log(log)} == {"skipped"}
    assert_clean(out)
    assert cli(*args, "--no-skip-existing")[0] == 0
    assert {r["status"] for r in read_log(log)} == {"ok"}


def test_fail_fast_stops_at_the_first_failure(tiny_model: Path, tmp_path: Path) -> None:
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log.jsonl"
    (src / "a-broken.png").parent.mkdir(parents=True)
    (src / "a-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    for i in range(3):
        picture(src / f"b{i}.png", seed=i)
    code, _, stderr = cli("batch", "shade", str(src), str(out), "-p", "x", "-m", str(tiny_model), *FAST,
                          "--log", str(log), "--fail-fast")
    assert code == 1 and [r["status"] for r in read_log(log)] == ["failed"]
    assert "not attempted" in stderr and "--fail-fast" in stderr and psds(out) == []


def test_nan_during_optimisation_fails_that_file_only(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prior that turns NaN for one prompt: that file fails with the engine's DistillationError, no PSD of NaN."""
    import lasagna_core.edit as edit_flow

    real_load = edit_flow.load_prior

    def load_prior(*args, **kwargs):
        prior = real_load(*args, **kwargs)
        sds_loss = prior.sds_loss

        def poisoned(image, cond, **kw):
            loss = sds_loss(image, cond, **kw)
            return loss * float("nan") if "explode" in cond.prompt else loss

        prior.sds_loss = poisoned
        return prior

    monkeypatch.setattr(edit_flow, "load_prior", load_prior)
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log.jsonl"
    for name in ["a.png", "b.png", "c.png"]:
        picture(src / name)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"input": "b.png", "prompt": "explode"}\n')
    code, _, stderr = cli("batch", "shade", str(src), str(out), "-p", "light", "--prompts", str(prompts),
                          "-m", str(tiny_model), *FAST, "--log", str(log))
    assert code == 1
    status = {Path(r["input"]).name: (r["status"], r["error"]) for r in read_log(log)}
    assert status["a.png"] == ("ok", None) and status["c.png"] == ("ok", None)
    assert status["b.png"][0] == "failed" and "diverged" in status["b.png"][1]
    assert psds(out) == ["a.psd", "c.psd"] and "Traceback" not in stderr


def test_usage_errors_exit_2(tiny_model: Path, tmp_path: Path) -> None:
    picture(tmp_path / "in" / "a.png")
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    (tmp_path / "file").write_text("x")
    bad_prompts = tmp_path / "p.jsonl"
    bad_prompts.write_text("{oops\n")
    cases = [
        (["batch", "shade", src, out], "--prompt"),
        (["batch", "nope", src, out, "-p", "x"], "unknown template 'nope'"),
        (["batch", "shade", str(tmp_path / "missing"), out, "-p", "x"], "no such file or folder"),
        (["batch", "shade", src, out, "-p", "x", "--shard", "3/2"], "--shard"),
        (["batch", "shade", src, out, "-p", "x", "--devices", "tpu"], "Unknown device"),
        (["batch", "shade", src, out, "-p", "x", "--devices", "cpu,,cpu"], "--devices"),
        (["batch", "shade", src, out, "-p", "x", "--ray", "--devices", "cpu,cpu"], "don't go together"),
        (["batch", "shade", src, str(tmp_path / "file"), "-p", "x"], "OUT must be a folder"),
        (["batch", "shade", src, out, "--prompts", str(bad_prompts)], "not valid JSON"),
        (["batch", "shade", src, out, "-p", "   "], "--prompt is empty"),
    ]
    for args, message in cases:
        code, _, stderr = cli(*args, "-m", str(tiny_model))
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0], (args, stderr)
    assert not (tmp_path / "out").exists()


def test_ray_takes_an_optional_address() -> None:
    from lasagna_cli.batch import ray_flag_without_value as rewrite

    assert rewrite(["shade", "in", "out", "--ray"]) == ["shade", "in", "out", "--ray="]
    assert rewrite(["--ray", "shade", "in", "out"]) == ["--ray=", "shade", "in", "out"]
    assert rewrite(["shade", "in", "out", "--ray", "--json"]) == ["shade", "in", "out", "--ray=", "--json"]
    for address in ("auto", "local", "10.0.0.5:6379", "ray://head:10001"):
        assert rewrite(["shade", "in", "out", "--ray", address]) == ["shade", "in", "out", "--ray", address]
    assert rewrite(["--ray=auto"]) == ["--ray=auto"]


def test_stdin_list_and_quiet_output(tiny_model: Path, tmp_path: Path) -> None:
    a, b = picture(tmp_path / "x" / "a.png"), picture(tmp_path / "y" / "z" / "b.png", seed=1)
    out = tmp_path / "out"
    code, stdout, stderr = cli("batch", "shade", "-", str(out), "-p", "x", "-m", str(tiny_model), *FAST, "-q",
                               input=f"{a}\n{b}\n")
    assert code == 0, stderr
    assert psds(out) == ["x/a.psd", "y/z/b.psd"] and stdout == ""
    assert not any(line.startswith("ok ") for line in stderr.splitlines()) and "total" in stderr  # quiet: no per-file lines, the summary only


# ------------------------------------------------------------------------------------------ signals and workers


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("NO_COLOR", None)  # stderr is a pipe here: no colour, no bar, whatever NO_COLOR says
    return subprocess.Popen([sys.executable, "-m", "lasagna_cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_oks(proc: subprocess.Popen, log: Path, count: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the batch ended before it could be interrupted: {proc.communicate()}")
        if log.exists() and sum('"status": "ok"' in line for line in log.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the batch made no progress")


@pytest.mark.parametrize("signum,devices", [(signal.SIGINT, "cpu"), (signal.SIGTERM, "cpu,cpu")], ids=["sigint", "sigterm-2-workers"])
def test_signal_mid_batch_then_rerun_finishes(tiny_model: Path, tmp_path: Path, signum: int, devices: str) -> None:
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log.jsonl"
    for i in range(6):
        picture(src / ("sub" if i % 2 else "") / f"f{i}.png", seed=i)
    args = ["batch", "shade", str(src), str(out), "-p", "light", "-m", str(tiny_model), "--log", str(log), "--devices", devices]
    proc = _start([*args, "--steps", "8"], tmp_path)  # slow enough per file to be stopped in the middle of one
    _wait_for_oks(proc, log, 2)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    assert f"stopped by {signal.Signals(signum).name}" in stderr and "Traceback" not in stderr
    assert "\x1b[" not in stderr  # not a terminal: no colour codes, no progress bar
    if devices == "cpu,cpu":
        assert "workers: cpu, cpu" in stderr and ("model loaded 1x" in stderr or "model loaded 2x" in stderr)
    done = [r for r in read_log(log) if r["status"] == "ok"]
    assert 2 <= len(done) < 6 and len(psds(out)) == len(done)
    assert_clean(out)  # the file in progress left nothing: no PSD, no sidecar, no temporary file

    code, _, stderr = cli(*args, *FAST)
    assert code == 0, stderr
    statuses = [r["status"] for r in read_log(log)]
    assert statuses.count("skipped") == len(done) and statuses.count("ok") == 6 - len(done)
    assert len(psds(out)) == 6
    assert_clean(out)


def test_ray_local_instance(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'lasagna[ray]'")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log.jsonl"
    for i in range(4):
        picture(src / f"r{i}.png", seed=i)
    (src / "broken.png").write_bytes(b"broken")
    code, _, stderr = cli("batch", "shade", str(src), str(out), "-p", "x", "-m", str(tiny_model), *FAST,
                          "--log", str(log), "--ray")
    assert code == 1, stderr
    assert sorted(r["status"] for r in read_log(log)) == ["failed", "ok", "ok", "ok", "ok"]
    assert psds(out) == [f"r{i}.psd" for i in range(4)]
    assert_clean(out)
    loads = int(stderr.split("model loaded ")[1].split("x")[0])
    assert "workers: ray:" in stderr and 1 <= loads <= 2  # once per Ray worker process (2 CPUs here), not per file


def test_out_that_cannot_be_created_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "a.png")
    (tmp_path / "file").write_text("x")
    code, _, stderr = cli("batch", "shade", str(tmp_path / "in"), str(tmp_path / "file" / "out"), "-p", "x", "-m", str(tiny_model))
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "can't create the output folder" in lines[0], stderr


# ------------------------------------------------------------------------------------------ refusals before any work


def test_unreadable_prompt_is_a_usage_error_before_the_first_file(tiny_model: Path, tmp_path: Path) -> None:
    """The built-in prior (shade's default) needs a light direction: 'make it nice' is one line, exit 2, before
    any file; a Stable Diffusion model takes any text, so the same prompt plans fine with -m."""
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(3):
        picture(src / f"{i}.png", seed=i)
    code, _, stderr = cli("batch", "shade", str(src), str(out), "-p", "make it nice")
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--prompt: can't tell the light direction" in lines[0], stderr
    prompts = tmp_path / "p.csv"
    prompts.write_text("input,prompt\n0.png,light from the left\n1.png,make it nice\n")
    code, _, stderr = cli("batch", "shade", str(src), str(out), "--prompts", str(prompts), "-p", "light from the top")
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and f"--prompts {prompts}, 1.png: can't tell" in lines[0], stderr
    assert not out.exists()
    with pytest.raises(UsageError, match="light direction"):
        plan(options(src, out, prompt="make it nice"))
    assert all(i.error is None for i in plan(options(src, out, prompt="make it nice", model=str(tiny_model))))


def test_out_equal_to_in_is_refused_and_outputs_are_never_inputs(tiny_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    picture(src / "a.png")
    for spec in (str(src), str(src / "*.png")):
        code, _, stderr = cli("batch", "shade", spec, str(src), "-p", "x", "-m", str(tiny_model))
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "OUT is IN itself" in lines[0], stderr
    assert sorted(p.name for p in src.iterdir()) == ["a.png"]
    out = src / "out"  # inside IN: left out of the inputs, whichever way IN is given
    args = ["batch", "shade", str(src), str(out), "-p", "x", "-m", str(tiny_model), *FAST, "--json"]
    assert cli(*args)[0] == 0
    code, stdout, _ = cli(*args)
    assert code == 0 and [json.loads(line)["status"] for line in stdout.splitlines()] == ["skipped"]
    listed = [str(p) for p in sorted(src.rglob("*")) if p.is_file()]  # what `find IN` pipes in: outputs too
    assert [s.rel.as_posix() for s in discover("-", stdin_paths=listed, exclude=out)] == ["a.png"]


# ------------------------------------------------------------------------------------------ the log says what is on disk


def test_a_stop_after_a_file_is_written_still_records_it(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT arriving once a file's PSD and sidecar are on disk (here: while its record is being made) used
    to leave both on disk and log the file 'not attempted'; it is recorded 'ok', and the run stops after it."""
    import lasagna_core.batch.work as work
    from lasagna_core.batch import run_batch

    real_record = work.record

    def record_then_sigint(*args, **kwargs):
        rec = real_record(*args, **kwargs)
        if rec["status"] == "ok":
            signal.raise_signal(signal.SIGINT)
        return rec

    monkeypatch.setattr(work, "record", record_then_sigint)
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log.jsonl"
    for i in range(3):
        picture(src / f"f{i}.png", seed=i)
    summary = run_batch(options(src, out, model=str(tiny_model), steps=2, log=log, devices=["cpu"]))
    assert summary.signal == signal.SIGINT and summary.exit_code == 130
    assert [(Path(r["input"]).name, r["status"]) for r in read_log(log)] == [("f0.png", "ok")]
    assert psds(out) == ["f0.psd"] and summary.not_attempted == 2
    assert_clean(out)


# ------------------------------------------------------------------------------------------ one run per OUT


def _lock_owner(out: Path, proc: subprocess.Popen, timeout: float = 120) -> dict:
    """The lock file's content once `proc` has taken OUT."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the batch ended before it took the lock: {proc.communicate()}")
        try:
            owner = json.loads((out / ".lasagna-batch.lock").read_text())
            if owner.get("pid") == proc.pid:
                return owner
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the batch never took the lock")


def test_a_second_run_into_the_same_out_is_refused_and_a_killed_runs_lock_is_taken_over(tiny_model: Path, tmp_path: Path) -> None:
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log.jsonl"
    for i in range(3):
        picture(src / f"f{i}.png", seed=i)
    first = _start(["batch", "shade", str(src), str(out), "-p", "light from the left", "-m", str(tiny_model),
                    "--steps", "100000", "--log", str(log)], tmp_path)  # never finishes a file
    try:
        owner = _lock_owner(out, first)
        assert owner["host"] and owner["pid"] == first.pid
        second = _start(["batch", "shade", str(src), str(out), "-p", "rim light", "-m", str(tiny_model), *FAST,
                         "--log", str(log)], tmp_path)
        _, stderr = second.communicate(timeout=120)
        lines = stderr.strip().splitlines()
        assert second.returncode == 1 and len(lines) == 1, stderr
        assert "another lasagna batch is writing into it" in lines[0] and f"pid {first.pid}" in lines[0]
        assert first.poll() is None and log.exists() and psds(out) == []  # the first run's log is not truncated
    finally:
        first.kill()
        first.communicate()
    assert (out / ".lasagna-batch.lock").exists()  # SIGKILL: no handler ran, the lock file stays, stale
    code, stdout, stderr = cli("batch", "shade", str(src), str(out), "-p", "rim light", "-m", str(tiny_model), *FAST, "--json")
    assert code == 0, stderr
    assert [json.loads(line)["status"] for line in stdout.splitlines()] == ["ok"] * 3
    assert {json.loads((out / f"f{i}.psd.json").read_text())["prompt"] for i in range(3)} == {"rim light"}
    assert_clean(out)


def test_shards_lock_apart_and_overlapping_runs_are_refused(tmp_path: Path) -> None:
    from lasagna_core.batch.lock import lock_out
    from lasagna_core.errors import OutputError

    out = tmp_path / "out"
    out.mkdir()
    with lock_out(out, (1, 2)), lock_out(out, (2, 2)):  # one array job's shards run side by side
        for overlapping in (None, (1, 2), (1, 3)):
            with pytest.raises(OutputError, match=f"pid {os.getpid()}"):
                with lock_out(out, overlapping):
                    pass
        assert sorted(p.name for p in out.iterdir()) == [".lasagna-batch.shard-1-of-2.lock", ".lasagna-batch.shard-2-of-2.lock"]
    assert list(out.iterdir()) == []
    (out / ".lasagna-batch.shard-1-of-3.lock").write_text('{"pid": 1}')  # stale: nobody holds it
    with lock_out(out, None):
        assert [p.name for p in out.iterdir()] == [".lasagna-batch.lock"]
    assert list(out.iterdir()) == []


def test_the_lock_is_released_when_the_run_fails_after_taking_it(tiny_model: Path, tmp_path: Path) -> None:
    picture(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    code, _, stderr = cli("batch", "shade", str(tmp_path / "in"), str(out), "-p", "x", "-m", str(tiny_model),
                          "--log", str(tmp_path / "missing" / "log.jsonl"))
    assert code == 1 and "can't write it" in stderr
    assert list(out.iterdir()) == []


def test_workers_count_their_model_loads_and_stop_when_the_run_is_killed(tiny_model: Path, tmp_path: Path) -> None:
    """`--devices cpu,cpu` stopped while both workers are on their first file loaded the model twice: the
    summary says 2x (it said 0x, the loads being reported with the finished file). And workers whose run was
    SIGKILLed stop instead of writing on into OUT unseen."""
    hooks, markers = tmp_path / "hooks", tmp_path / "loaded"
    hooks.mkdir()
    markers.mkdir()
    (hooks / "sitecustomize.py").write_text(  # in every process: a marker file once the model is loaded
        "import os, pathlib\nimport lasagna_core.edit as edit_flow\nreal = edit_flow.load_edit_prior\n"
        "def load_edit_prior(*args, **kwargs):\n    prior = real(*args, **kwargs)\n"
        f"    pathlib.Path({str(markers)!r}, str(os.getpid())).touch()\n    return prior\n"
        "edit_flow.load_edit_prior = load_edit_prior\n"
    )
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(4):
        picture(src / f"f{i}.png", seed=i)
    args = ["batch", "shade", str(src), str(out), "-p", "light", "-m", str(tiny_model), "--steps", "100000",
            "--devices", "cpu,cpu"]

    def start_and_wait_for_two_loads() -> subprocess.Popen:
        for marker in markers.iterdir():
            marker.unlink()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), str(REPO)])}
        proc = subprocess.Popen([sys.executable, "-m", "lasagna_cli", *args], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while len(list(markers.iterdir())) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        return proc

    proc = start_and_wait_for_two_loads()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "model loaded 2x" in stderr, stderr
    assert_clean(out)

    proc = start_and_wait_for_two_loads()
    workers = [int(marker.name) for marker in markers.iterdir()]
    proc.kill()
    proc.communicate()
    deadline = time.monotonic() + 60
    while any(_running(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker went on after its run was killed"
        time.sleep(0.1)
    assert psds(out) == [] and not list(out.rglob("*.tmp"))  # each abandoned its file and took it back


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False
