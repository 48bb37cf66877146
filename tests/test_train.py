"""`lasagna train builtin|controlnet` on a hand-made manifest: the loss falls, checkpoints resume exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lasagna_cli.app import app
from lasagna_core.errors import UsageError
from lasagna_core.priors.builtin import BuiltinPrior
from lasagna_core.priors.pixel_file import read_metadata
from lasagna_core.train.builtin import BuiltinConfig, train_builtin
from lasagna_core.train.controlnet import ControlNetConfig, train_controlnet
from lasagna_core.train.manifest import mirror_direction, read_manifest
from lasagna_core.train.run import checkpoint_dir, learning_rate_at
from tests.relight_data import make_manifest, tiny_unet
from tests.tiny_sd import make_tiny_sd

SIZE = 16


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("relight"), scenes=4, size=SIZE, splits={2: "val", 3: "test"})


def _config(**kw) -> BuiltinConfig:
    base = dict(steps=4, batch_size=6, size=SIZE, warmup=2, learning_rate=2e-3, checkpoint_every=2, unet=tiny_unet(SIZE, 3))
    return BuiltinConfig(**{**base, **kw})


def test_manifest_reading(data):
    rows = read_manifest(data)
    assert len(rows) == 12 and {r.split for r in rows} == {"train", "val", "test"}
    assert rows[0].input.is_file() and rows[0].mask is not None and rows[0].prompt == "light from the left"
    assert mirror_direction("left", ["left", "right", "top"]) == 1 and mirror_direction("top", ["left", "top"]) == 1
    with pytest.raises(UsageError):
        read_manifest(data / "nowhere")


def test_learning_rate_schedule():
    assert learning_rate_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert learning_rate_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert learning_rate_at(100, 100, 1.0, 10) == pytest.approx(0.1)


def test_builtin_loss_falls_on_a_fixed_batch(data, tmp_path):
    result = train_builtin(data, tmp_path / "p.safetensors", _config(steps=25, overfit_one_batch=True, flip=False))
    losses = result.history["loss"]
    assert result.finished and len(losses) == 25
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses
    prior = BuiltinPrior.load(str(result.output))  # the saved file loads, with its checksum
    assert prior.directions == ["left", "right", "top"] and prior.training["steps"] == 25
    curve = Image.open(result.loss_curve)
    assert curve.size[0] > 100 and result.history["val_loss"]


def test_builtin_resume_continues_exactly(data, tmp_path):
    straight = train_builtin(data, tmp_path / "a.safetensors", _config())
    first = train_builtin(data, tmp_path / "b.safetensors", _config(max_minutes=0.0))  # stops after one step
    assert not first.finished and first.steps_done == 1 and checkpoint_dir(tmp_path / "b.safetensors").is_dir()
    second = train_builtin(data, tmp_path / "b.safetensors", _config(max_minutes=0.0))  # a stop rewrites the weights
    record = json.loads(read_metadata(second.output)["training"])  # read as data: loading a prior pins torch to 1 thread
    assert (second.steps_done, record["steps"], record["finished"]) == (2, 2, False)
    resumed = train_builtin(data, tmp_path / "b.safetensors", _config())
    assert resumed.finished and resumed.steps_done == 4
    assert resumed.history["loss"] == pytest.approx(straight.history["loss"], rel=1e-5)
    a, b = BuiltinPrior.load(str(straight.output)), BuiltinPrior.load(str(resumed.output))
    for (k, x), (_, y) in zip(a.unet.state_dict().items(), b.unet.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), k
    with pytest.raises(UsageError):  # a checkpoint for another architecture is not silently reused
        train_builtin(data, tmp_path / "b.safetensors", _config(unet={**tiny_unet(SIZE, 3), "block_out_channels": [8, 16, 16]}))


def test_builtin_fine_tune_starts_from_the_given_prior(data, tmp_path):
    from lasagna_core.priors.pixel_file import sha256_of

    start = train_builtin(data, tmp_path / "start.safetensors", _config()).output
    # at learning rate 0 a fine-tune writes back the weights it started from (up to the EMA's rounding)
    still = train_builtin(data, tmp_path / "still.safetensors", _config(learning_rate=0.0, unet=None, init=str(start)))
    a, b = BuiltinPrior.load(str(start)), BuiltinPrior.load(str(still.output))
    for (k, x), (_, y) in zip(a.unet.state_dict().items(), b.unet.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), k
    assert b.training["init"] == {"model": str(start), "sha256": sha256_of(start)}
    with pytest.raises(UsageError, match="--init or an architecture"):
        train_builtin(data, tmp_path / "both.safetensors", _config(init=str(start)))
    with pytest.raises(UsageError, match="--init"):  # data with a direction the prior has no class for
        train_builtin(make_manifest(tmp_path / "more", directions=("left", "bottom"), size=SIZE),
                      tmp_path / "more.safetensors", _config(unet=None, init=str(start)))
    # a fine-tune may change the size: the same weights, now a prior that works at the training size
    bigger = BuiltinPrior.load(str(train_builtin(data, tmp_path / "big.safetensors",
                                                 _config(learning_rate=0.0, unet=None, size=2 * SIZE, init=str(start))).output))
    assert a.resolution == SIZE and bigger.resolution == 2 * SIZE
    for (k, x), (_, y) in zip(a.unet.state_dict().items(), bigger.unet.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), k
    # an interrupted fine-tune resumes to exactly the uninterrupted one; from other starting weights it is refused
    other = train_builtin(data, tmp_path / "other.safetensors", _config(seed=1)).output
    straight = train_builtin(data, tmp_path / "straight.safetensors", _config(unet=None, init=str(start)))
    first = train_builtin(data, tmp_path / "c.safetensors", _config(unet=None, init=str(start), max_minutes=0.0))
    assert not first.finished and first.steps_done == 1
    with pytest.raises(UsageError, match="different model"):
        train_builtin(data, tmp_path / "c.safetensors", _config(unet=None, init=str(other)))
    resumed = train_builtin(data, tmp_path / "c.safetensors", _config(unet=None, init=str(start)))
    assert resumed.finished and resumed.history["loss"] == pytest.approx(straight.history["loss"], rel=1e-5)


def test_checkpoints_of_the_previous_version_still_resume(data, tmp_path):
    """Before fine-tuning existed the fingerprint also held the data folder and no starting weights."""
    first = train_builtin(data, tmp_path / "old.safetensors", _config(max_minutes=0.0))
    state_file = checkpoint_dir(tmp_path / "old.safetensors") / "state.json"
    state = json.loads(state_file.read_text())
    del state["fingerprint"]["init"]
    state["fingerprint"]["data"] = str(data)
    state_file.write_text(json.dumps(state))
    resumed = train_builtin(data, tmp_path / "old.safetensors", _config())
    assert not first.finished and resumed.finished and resumed.steps_done == 4


def test_light_color_fine_tune_starts_as_its_start_and_conditions_on_the_manifests_colours(tmp_path):
    from lasagna_core.light_colors import LIGHT_COLORS
    from lasagna_core.priors.schedule import NoiseSchedule
    from lasagna_core.train.builtin import _builtin_batch
    from lasagna_core.train.manifest import load_pairs

    red, blue = LIGHT_COLORS["red"].rgb, LIGHT_COLORS["blue"].rgb
    colored = make_manifest(tmp_path / "colored", scenes=4, size=SIZE, lights=[red, blue, (1.0, 1.0, 1.0)])
    start = train_builtin(colored, tmp_path / "start.safetensors", _config()).output
    widened = train_builtin(colored, tmp_path / "wide.safetensors", _config(learning_rate=0.0, unet=None, init=str(start),
                                                                            light_color=True))
    a, b = BuiltinPrior.load(str(start)), BuiltinPrior.load(str(widened.output))
    assert not a.knows_light_color and b.knows_light_color and b.training["light_color"] is True
    assert b.unet.config.in_channels == a.unet.config.in_channels + 3
    conv_a, conv_b = a.unet.conv_in.weight, b.unet.conv_in.weight
    assert torch.allclose(conv_b[:, :6], conv_a, atol=1e-6) and torch.count_nonzero(conv_b[:, 6:]) == 0
    # with zero weights on the colour the widened prior predicts what its start did, whatever colour is asked
    base = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    noisy, t = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)), torch.tensor([500])
    for prompt in ("red light from the left", "light from the left"):
        ca, cb = a.condition(prompt, base), b.condition(prompt, base)
        assert cb.channels.shape[1] == 6 and ca.channels.shape[1] == 3
        assert torch.allclose(torch.cat(b.predict_noise(noisy, t, cb)), torch.cat(a.predict_noise(noisy, t, ca)), atol=1e-5)
    # the prompt's colour word becomes constant planes (white without one) and the trainer feeds the manifest's
    # colours the same way, zeroed with the base when the base is dropped
    assert torch.allclose(b.condition("red light from the left", base).channels[0, 3:, 2, 5], torch.tensor(red) * 2 - 1)
    assert torch.equal(b.condition("light from the left", base).channels[0, 3:], torch.ones(3, SIZE, SIZE))
    pairs = load_pairs(read_manifest(colored, "train"), SIZE)
    batch = _builtin_batch(pairs, _config(batch_size=64, dropout=0.3), NoiseSchedule.from_config(a.scheduler_config),
                           torch.Generator().manual_seed(0), pairs.bases.shape[0], True)
    planes = batch["input"][:, 6:9, 0, 0]
    dropped = batch["input"][:, 3:6].flatten(1).abs().amax(1) == 0
    seen = {tuple(round(v, 3) for v in ((row + 1) / 2).tolist()) for row in planes[~dropped]}
    assert seen == {tuple(round(v, 3) for v in c) for c in (red, blue, (1.0, 1.0, 1.0))}
    assert dropped.any() and torch.count_nonzero(planes[dropped]) == 0
    # the colour is learnt from: on the coloured data the conditioned loss falls like the plain one
    fit = train_builtin(colored, tmp_path / "fit.safetensors", _config(steps=25, overfit_one_batch=True, flip=False,
                                                                       unet=None, init=str(start), light_color=True))
    assert sum(fit.history["loss"][-5:]) < 0.6 * sum(fit.history["loss"][:5])
    with pytest.raises(UsageError, match="--light-color needs 9 input channels"):
        train_builtin(colored, tmp_path / "narrow.safetensors", _config(light_color=True))


def test_train_builtin_command(data, tmp_path):
    out = tmp_path / "cli.safetensors"
    result = CliRunner().invoke(app, ["train", "builtin", "--data", str(data), "--out", str(out), "--steps", "2",
                                      "--batch-size", "4", "--size", "16", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["finished"] and Path(info["output"]).is_file() and out.with_name(out.name + ".sha256").is_file()
    assert not BuiltinPrior.load(str(out)).knows_light_color
    colour = tmp_path / "colour.safetensors"
    result = CliRunner().invoke(app, ["train", "builtin", "--data", str(data), "--out", str(colour), "--steps", "2",
                                      "--batch-size", "4", "--size", "16", "--light-color", "--init", str(out)])
    assert result.exit_code == 0, result.output
    assert BuiltinPrior.load(str(colour)).knows_light_color
    bad = CliRunner().invoke(app, ["train", "builtin", "--data", str(tmp_path / "none"), "--out", str(out)])
    assert bad.exit_code == 2


def test_controlnet_loss_falls_on_a_fixed_batch_and_loads(data, tmp_path):
    sd = make_tiny_sd(tmp_path / "sd")
    config = ControlNetConfig(steps=12, batch_size=2, learning_rate=1e-3, overfit_one_batch=True, device="cpu")
    result = train_controlnet(str(sd), data, tmp_path / "cn", config)
    losses = result.history["loss"]
    assert result.finished and (tmp_path / "cn" / "config.json").is_file()
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    from lasagna_core.priors import PriorSettings, load_prior

    prior = load_prior(PriorSettings(str(sd), device="cpu", options={"controlnet": str(tmp_path / "cn")}))
    assert prior.controlnet is not None


def test_controlnet_out_that_is_a_file_is_refused_before_loading(data, tmp_path):
    (tmp_path / "cn").write_text("not a folder")
    with pytest.raises(UsageError, match="--out must be a folder"):
        train_controlnet(str(tmp_path / "no-such-model"), data, tmp_path / "cn", ControlNetConfig(steps=1, device="cpu"))
    assert (tmp_path / "cn").read_text() == "not a folder"


def test_controlnet_resume_refuses_a_checkpoint_of_another_model(data, tmp_path, monkeypatch):
    eps, v = make_tiny_sd(tmp_path / "eps"), make_tiny_sd(tmp_path / "v", prediction_type="v_prediction")
    (tmp_path / "cn").mkdir()
    (tmp_path / "cn" / "notes.txt").write_text("mine")
    first = train_controlnet(str(eps), data, tmp_path / "cn", ControlNetConfig(steps=3, batch_size=1, device="cpu", max_minutes=0.0))
    assert not first.finished and first.steps_done == 1 and checkpoint_dir(tmp_path / "cn").is_dir()
    with pytest.raises(UsageError, match="different model"):
        train_controlnet(str(v), data, tmp_path / "cn", ControlNetConfig(steps=3, batch_size=1, device="cpu"))
    done = train_controlnet(str(eps), data, tmp_path / "cn", ControlNetConfig(steps=3, batch_size=1, device="cpu"))
    assert done.finished and done.steps_done == 3 and len(done.history["loss"]) == 3
    # saved by swapping finished files in: nothing staged is left, the user's own file stays
    assert sorted(p.name for p in (tmp_path / "cn").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors", "loss.png", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cn", "cn.ckpt", "eps", "v"]
    # `--out .` names the same folder and checkpoint (the run is complete, so it only saves again)
    monkeypatch.chdir(tmp_path / "cn")
    again = train_controlnet(str(eps), data, Path("."), ControlNetConfig(steps=3, batch_size=1, device="cpu"))
    assert again.finished and again.steps_done == 3 and (tmp_path / "cn" / "config.json").is_file()


def test_sigterm_stops_training_at_a_checkpoint(data, tmp_path):
    """A `nohup` run that is killed with SIGTERM saves where it got to and says how to resume."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "p.safetensors"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lasagna_cli", "train", "builtin", "--data", str(data), "--out", str(out),
         "--size", str(SIZE), "--steps", "100000", "--batch-size", "2", "--checkpoint-every", "100000", "--log-every", "1"],
        stderr=subprocess.PIPE, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("step 3/"):
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, rest
    state = json.loads((checkpoint_dir(out) / "state.json").read_text())
    assert state["step"] >= 3
    assert f"stopped at step {state['step']}/100000" in rest and "Traceback" not in rest
