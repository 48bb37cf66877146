"""`lasagna eval`: the metrics on hand-made cases, and the runner end to end on a tiny prior."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.color import srgb_to_lab
from lasagna_core.errors import UsageError
from lasagna_core.evaluate.metrics import (
    chroma_drift,
    chroma_drift_equal_lightness,
    direction_correlation,
    edge_similarity,
    psnr,
    ssim,
)
from lasagna_core.evaluate.report import markdown_table, report_from_json, write_report
from lasagna_core.evaluate.run import evaluate
from lasagna_core.labelling import components
from lasagna_core.priors import PriorSettings, pixel_file
from tests.processes import LASAGNA, children, interruptible, wait_until_ended
from tests.relight_data import make_manifest, tiny_unet


def _disc(size: int = 24, offset: int = 0) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size]
    return ((xs - size / 2 - offset) ** 2 + (ys - size / 2) ** 2 < (size / 5) ** 2).astype(np.float32)


def test_lab_of_known_colours():
    lab = srgb_to_lab(np.array([[[1.0]], [[1.0]], [[1.0]]]))[:, 0, 0]
    assert lab == pytest.approx([100.0, 0.0, 0.0], abs=0.05)
    red = srgb_to_lab(np.array([[[1.0]], [[0.0]], [[0.0]]]))[:, 0, 0]
    assert red == pytest.approx([53.24, 80.09, 67.20], abs=0.1)


def test_psnr_ssim_chroma_edges():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.8, (3, 24, 24))
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=0.01)
    assert ssim(a, rng.uniform(0, 1, a.shape)) < 0.3
    # plain Lab a*b* shrink when a colour darkens; at equal lightness a gray shading change is ~free, a hue swap is not
    assert chroma_drift(a * 0.7, a) > 3.0
    assert chroma_drift_equal_lightness(a * 0.7, a) < 0.5 < 10 < chroma_drift_equal_lightness(a[[1, 2, 0]], a)
    assert edge_similarity(a * 0.8, a) > 0.95 and edge_similarity(np.full_like(a, 0.5) + 0.01 * rng.uniform(size=a.shape), a) < 0.5


def test_components_and_direction_correlation():
    two = np.maximum(_disc(32, -8), _disc(32, 8))
    labels = components(np.where(two > 0, 0, -1))
    assert labels.max() == 1 and (labels[two == 0] == -1).all()
    base = np.full((3, 32, 32), 0.5)
    xs = np.mgrid[0:32, 0:32][1].astype(float)
    # light from the left: each object brighter on its left side (relative to its own centre)
    lit = base * (1.0 - 0.02 * (xs - np.where(xs < 16, 8, 24)))[None]
    assert direction_correlation(lit, base, two, (-1.0, 0.0)) > 0.9
    assert direction_correlation(lit, base, two, (1.0, 0.0)) < -0.9
    assert direction_correlation(lit, base, two, (0.0, 0.0)) is None
    assert direction_correlation(base, base, two, (-1.0, 0.0)) == 0.0  # no change is not "right"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    data = make_manifest(root / "data", scenes=3, size=16, directions=("left", "right", "front"))
    torch.manual_seed(0)
    unet = pixel_file.new_unet(tiny_unet(16, 3))
    weights = pixel_file.save_weights(unet, root / "p.safetensors", task="relight", classes=["left", "right", "front"],
                                   scheduler_config=pixel_file.default_scheduler_config())
    return data, weights


def test_eval_runner_reports_every_method(setup, tmp_path):
    data, weights = setup
    report = evaluate(data, prior_settings=PriorSettings(str(weights), device="cpu"), limit=3, steps=3, direct_steps=2, pictures=tmp_path / "pics")
    assert report.cases == 3 and set(report.summary) == {"base", "lasagna", "direct", "ground truth"}
    assert report.summary["base"]["chroma_drift"] == 0.0 and report.summary["base"]["direction_accuracy"] is None
    assert report.summary["ground truth"]["direction_accuracy"] == 1.0  # the metric agrees with the renders
    assert report.summary["base"]["psnr"] < 60
    assert report.skipped_direction == {"front": 1} and report.direction_cases == 2
    assert list((tmp_path / "pics").glob("cases-*.png"))
    md = write_report(report, tmp_path / "r.md").read_text()
    assert "| lasagna |" in md and "front" in md and "direct generation: DDIM 2 steps" in md
    js = json.loads(write_report(report, tmp_path / "r.json").read_text())
    assert len(js["results"]) == 12
    assert markdown_table(report).count("\n|") >= 5
    assert "\\|ΔL*\\|" in markdown_table(report)  # pipes inside headers are escaped
    again = report_from_json(tmp_path / "r.json")
    assert again.summary["lasagna"]["psnr"] == pytest.approx(report.summary["lasagna"]["psnr"])
    assert 0.0 <= again.summary["lasagna"]["visible_direction_accuracy"] <= report.summary["lasagna"]["direction_accuracy"]


def test_eval_command(setup, tmp_path):
    data, weights = setup
    out = tmp_path / "results.json"
    result = CliRunner().invoke(app, ["eval", "--data", str(data), "--model", str(weights), "--limit", "2", "--steps", "2",
                                      "--direct-steps", "2", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["cases"] == 2 and out.is_file()
    missing = CliRunner().invoke(app, ["eval", "--data", str(tmp_path / "nothing")])
    assert missing.exit_code == 2


def test_eval_on_another_split(setup, tmp_path):
    """Settings are tuned on a split other than the reported test split; the table says which it was."""
    data, weights = setup
    md = tmp_path / "train.md"
    result = CliRunner().invoke(app, ["eval", "--data", str(data), "--model", str(weights), "--split", "train", "--steps", "1",
                                      "--direct-steps", "1", "--out", str(md)])
    assert result.exit_code == 0, result.output
    assert "6 train cases" in md.read_text() and "held-out" not in md.read_text()  # 2 train scenes x 3 directions
    for split, message in (("val", "has no val split"), ("everything", "split must be one of train, val, test, not 'everything'")):
        refused = CliRunner().invoke(app, ["eval", "--data", str(data), "--model", str(weights), "--split", split])
        assert refused.exit_code == 2 and message in refused.stderr and "Traceback" not in refused.output


def test_photos_use_the_same_prior_and_settings(tmp_path):
    """Photos go through the same path as the test cases (the eval's --steps included) and land in the report."""
    four = ["left", "right", "top", "bottom"]
    data = make_manifest(tmp_path / "data", scenes=1, size=16, directions=("left",))
    torch.manual_seed(0)
    weights = pixel_file.save_weights(pixel_file.new_unet(tiny_unet(16, 4)), tmp_path / "p.safetensors", task="relight", classes=four,
                                   scheduler_config=pixel_file.default_scheduler_config())
    rng = np.random.default_rng(0)
    photo = rng.uniform(0.2, 0.8, size=(3, 24, 40)).astype(np.float32)
    report = evaluate(data, prior_settings=PriorSettings(str(weights), device="cpu"), limit=1, steps=2, methods=("base", "lasagna"), photos=[("noise", photo)],
                      pictures=tmp_path / "pics")
    rows = report.photos["rows"]
    assert report.photos["cases"] == 4 and [r["direction"] for r in rows] == ["left", "right", "top", "bottom"]
    assert all(r["photo"] == "noise" and np.isfinite(r["shading"]) for r in rows)
    assert sorted(p.name for p in (tmp_path / "pics" / "photos").iterdir())[0] == "noise-bottom.png"
    assert "Photos without ground truth (noise" in markdown_table(report)


def test_bad_photo_path_fails_before_any_work(setup, tmp_path):
    data, weights = setup
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["eval", "--data", str(data), "--model", str(weights), "--photo", str(tmp_path / "nope.png"),
                                      "--out", str(out)])
    assert result.exit_code == 1 and "nope.png" in result.stderr and "eval:" not in result.stderr
    assert "Traceback" not in result.output and not out.exists()


def test_direct_baseline_needs_a_prior_that_samples(tmp_path):
    from tests.tiny_sd import make_tiny_sd

    data = make_manifest(tmp_path / "data", scenes=1, size=16, directions=("left",))
    model = make_tiny_sd(tmp_path / "sd")
    with pytest.raises(UsageError, match=r"can.t do \(pass --no-direct\)"):
        evaluate(data, prior_settings=PriorSettings(str(model), device="cpu"))
    report = evaluate(data, prior_settings=PriorSettings(str(model), device="cpu"), steps=1, methods=("base", "lasagna"))
    assert report.cases == 1 and "direct" not in report.summary
    refused = CliRunner().invoke(app, ["eval", "--data", str(data), "--model", str(model), "--steps", "1"])
    assert refused.exit_code == 2 and "--no-direct" in refused.stderr and "Traceback" not in refused.output
    result = CliRunner().invoke(app, ["eval", "--data", str(data), "--model", str(model), "--steps", "1", "--no-direct", "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["summary"]) == {"base", "lasagna", "ground truth"}
    assert "direct generation" not in markdown_table(report) and "Wall time" in markdown_table(report)


def test_progress_in_a_log_says_each_method_the_end_and_once_a_minute_between(monkeypatch):
    """Not on a terminal, a two-hour evaluation still says where it is, without a line per case, and how long
    is left at the pace of what runs now (the instant base rows do not count)."""
    import lasagna_cli.evaluate as cli_eval

    lines: list[str] = []
    clock = [1000.0]
    monkeypatch.setattr(cli_eval, "say", lambda text: lines.append(text))
    monkeypatch.setattr(cli_eval.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(type(cli_eval.stderr), "is_terminal", property(lambda self: False))
    log = cli_eval.ProgressLog()
    for done in range(1, 4):
        log(done, 8, "base")  # the first line, then quiet: no time has passed
    for done in range(4, 8):
        clock[0] += 25.0  # 25 s a case: a line once 60 s have passed since the last
        log(done, 8, "lasagna")
    log(8, 8, "lasagna")
    assert lines == [
        "eval: base 1/8 (0.0 min)",
        "eval: lasagna 4/8 (0.4 min, about 1.7 min left)",  # at this method's pace, 25 s a case
        "eval: lasagna 7/8 (1.7 min, about 0.4 min left)",
        "eval: lasagna 8/8 (1.7 min)",
    ]


def test_jobs_spread_the_cases_without_changing_a_number(tmp_path):
    """Two worker processes give the serial run's numbers, case by case, for both priors and the photos."""
    four = ["left", "right", "top", "bottom"]
    data = make_manifest(tmp_path / "data", scenes=3, size=16, directions=("left", "top"))
    torch.manual_seed(0)
    weights = pixel_file.save_weights(pixel_file.new_unet(tiny_unet(16, 4)), tmp_path / "p.safetensors", task="relight",
                                      classes=four, scheduler_config=pixel_file.default_scheduler_config())
    photo = np.random.default_rng(1).uniform(0.2, 0.8, size=(3, 16, 24)).astype(np.float32)
    runs = [evaluate(data, prior_settings=PriorSettings(str(weights), device="cpu"), limit=3, steps=2,
                     methods=("base", "lasagna"), compare_model=str(weights), photos=[("noise", photo)], jobs=jobs)
            for jobs in (1, 2)]
    serial, pooled = ([(r.method, r.scene, r.direction, r.psnr, r.shading) for r in run.results] for run in runs)
    assert len(serial) == 6 and pooled == serial  # 2 test cases x base, lasagna, the compared prior
    assert pooled[2][0] == "lasagna" and pooled[2][3] != pooled[0][3]  # something was distilled
    assert [r["r"] for r in runs[1].photos["rows"]] == [r["r"] for r in runs[0].photos["rows"]]



@pytest.mark.parametrize("fault,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stopped_eval_stops_its_workers(setup, tmp_path, fault, code):
    """Ctrl-C or SIGTERM in the middle of `eval -j 2`: one line, the run's exit code, and no worker goes on
    distilling (they ignore Ctrl-C themselves and are stopped by the run, so no traceback from each)."""
    data, weights = setup
    proc = subprocess.Popen([LASAGNA, "eval", "--data", str(data), "--model", str(weights), "--no-direct", "--steps", "100000",
                             "-j", "2", "--out", str(tmp_path / "r.json")],
                            env={**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=interruptible)
    deadline = time.monotonic() + 120
    while len(children(proc.pid)) < 2 and proc.poll() is None:  # the two workers (and a resource tracker)
        assert time.monotonic() < deadline, "no workers started"
        time.sleep(0.1)
    workers = children(proc.pid)
    time.sleep(3)  # loading their priors, then distilling
    proc.send_signal(getattr(signal, fault))
    _, err = proc.communicate(timeout=60)
    wait_until_ended(workers)
    assert proc.returncode == code and "Traceback" not in err.decode()
    assert not (tmp_path / "r.json").exists()
