"""`lasagna dataset mix`: one training manifest out of several data sets, pictures left where they are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.errors import OutputError, UsageError
from lasagna_core.synth.dataset import generate, read_manifest
from lasagna_core.synth.mix import MixSource, mix
from lasagna_core.train.manifest import load_image, read_manifest as read_examples

runner = CliRunner()


@pytest.fixture()
def sets(tmp_path: Path) -> tuple[Path, Path]:
    """Two small synthetic sets; in the second, scene 00001's left-light pair is in a coloured light."""
    first, second = tmp_path / "sets" / "plain", tmp_path / "sets" / "other"
    generate(first, count=3, size=8, seed=0, workers=1)
    generate(second, count=4, size=8, seed=1, workers=1)
    lines = [json.loads(line) for line in (second / "manifest.jsonl").read_text().splitlines()]
    for line in lines:
        if line["scene"] == "00001" and line["direction"] == "left":
            line["light_color"] = [1.0, 0.5, 0.2]
    (second / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return first, second


def test_mix_points_at_the_sources_pictures_with_prefixed_scenes_and_their_splits(sets: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = sets
    out = tmp_path / "elsewhere" / "mix"
    result = mix(out, [MixSource(first), MixSource(second, 2)])
    assert result.pairs == 30 + 20
    mixed = read_manifest(out / "manifest.jsonl")
    assert {r["scene"] for r in mixed} == {"plain-00000", "plain-00001", "plain-00002", "other-00000", "other-00001"}
    sources = {"plain": read_manifest(first / "manifest.jsonl"), "other": read_manifest(second / "manifest.jsonl")}
    for row in mixed:
        prefix, scene = row["scene"].split("-", 1)
        original = next(r for r in sources[prefix] if r["scene"] == scene and r["direction"] == row["direction"])
        assert row["input"].resolve() == original["input"].resolve() and row["target"].resolve() == original["target"].resolve()
        assert row["split"] == original["split"] and row["light_color"] == original["light_color"]
    line = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert line["input"] == "../../sets/plain/images/00000_base.png"  # relative: the folders can move together
    # the trainer's reader opens them: the mixed pair is the source's pair, pixel for pixel
    example = read_examples(out, None)[0]
    assert np.array_equal(load_image(example.target).numpy(), load_image(first / "images" / f"00000_{example.direction}.png").numpy())
    info = json.loads((out / "dataset.json").read_text())
    assert [s["pairs"] for s in info["sources"]] == [30, 20] and info["white_light"] is False


def test_white_light_drops_coloured_pairs_only(sets: tuple[Path, Path], tmp_path: Path) -> None:
    _, second = sets
    result = mix(tmp_path / "mix", [MixSource(second)], white_light=True)
    rows = read_manifest(tmp_path / "mix" / "manifest.jsonl")
    assert result.pairs == 39 and all(r["light_color"] is None for r in rows)
    assert not [r for r in rows if r["scene"] == "other-00001" and r["direction"] == "left"]


def test_source_spec_and_refusals(sets: tuple[Path, Path], tmp_path: Path) -> None:
    first, _ = sets
    assert MixSource.parse("data/synth64:1000") == MixSource(Path("data/synth64"), 1000)
    assert MixSource.parse("C:/data/set") == MixSource(Path("C:/data/set"))  # a colon without digits is the path's
    with pytest.raises(UsageError, match="at least one scene"):
        MixSource.parse("data:0")
    with pytest.raises(UsageError, match="share the folder name 'plain'"):
        mix(tmp_path / "m", [MixSource(first), MixSource(first, 1)])
    with pytest.raises(UsageError, match="no manifest.jsonl"):
        mix(tmp_path / "m", [MixSource(tmp_path / "missing")])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="more than a mix"):
        mix(tmp_path / "mine", [MixSource(first)], overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine" and not (tmp_path / "mine" / "manifest.jsonl").exists()


def test_cli(sets: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = sets
    out = tmp_path / "mix"
    env = {"NO_COLOR": "1"}
    done = runner.invoke(app, ["dataset", "mix", str(first), f"{second}:1", str(out), "--json"], env=env)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["pairs"] == 40 and [s["scenes"] for s in summary["sources"]] == [3, 1]
    again = runner.invoke(app, ["dataset", "mix", str(first), str(out)], env=env)
    assert again.exit_code == 1 and again.stderr.count("\n") == 1 and "--overwrite" in again.stderr
    replaced = runner.invoke(app, ["dataset", "mix", str(second), str(out), "--overwrite", "--white-light"], env=env)
    assert replaced.exit_code == 0 and "wrote 39 pairs (39 pairs of 4 scenes from other)" in replaced.stderr
    assert len(read_manifest(out / "manifest.jsonl")) == 39
    missing = runner.invoke(app, ["dataset", "mix", str(tmp_path / "nothing"), str(tmp_path / "m2")], env=env)
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1 and "no manifest.jsonl" in missing.stderr
    alone = runner.invoke(app, ["dataset", "mix", str(out)], env=env)
    assert alone.exit_code == 2 and "then the output folder" in alone.stderr
