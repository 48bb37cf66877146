"""Training the priors Lasagna distils from, on a relighting manifest (`lasagna dataset synth` writes one).

The manifest is `manifest.jsonl` in the data folder, one JSON object per line:
`{"input": base png, "target": relit png, "prompt": "light from the left", "direction": "left",
"mask": object mask png, "split": "train"|"val"|"test", "scene": id}`, paths relative to the manifest's
folder. Real relighting data (e.g. ReNe) converted to the same lines trains the same way.

* `train_builtin`: the built-in pixel-space prior (`lasagna_core.priors.builtin`): eps-prediction DDPM on
  the relit image, given the base as extra channels and the direction as a class, both dropped at random
  (classifier-free guidance). Horizontal flips with left<->right swapped double the data. Weights are kept
  as an exponential moving average (EMA), which is what gets saved.
* `train_controlnet`: a diffusers ControlNet adapter on a Stable Diffusion folder (the authors' recipe):
  the base is the hint, the manifest's prompts the text; saved with `save_pretrained`, loadable with
  `--controlnet`.

Both checkpoint to `OUT.ckpt/` (safetensors + JSON, never pickle) every `checkpoint_every` steps and at the
end, resume from it, and stop cleanly after `max_minutes` so a long run can go on across sessions.
Never prints: progress goes through `on_progress`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import DocumentError, UsageError
from .priors.schedule import NoiseSchedule
from .synth.dataset import MANIFEST
from .synth.dataset import read_manifest as read_records


# ---------------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class Example:
    input: Path
    target: Path
    prompt: str
    direction: str
    mask: Path | None
    split: str
    scene: str


def manifest_path(data: Path) -> Path:
    data = Path(data)
    path = data / MANIFEST if data.is_dir() else data
    if not path.is_file():
        raise UsageError(f"no {MANIFEST} in '{data}' (make one with `lasagna dataset synth DIR`)")
    return path


def read_manifest(data: Path, split: str | None = None) -> list[Example]:
    """The manifest's examples (of one split if given), read and checked by `lasagna_core.synth.dataset`."""
    return [
        Example(input=r["input"], target=r["target"], prompt=r["prompt"], direction=r["direction"], mask=r["mask"],
                split=r["split"], scene=r["scene"])
        for r in read_records(manifest_path(data), split)
    ]


def load_image(path: Path, size: int | None = None, gray: bool = False) -> Tensor:
    """[C, H, W] float32 in [0, 1] (C = 1 if gray), resized (area) to `size` x `size` when given."""
    from .document import load
    from .resample import resize

    try:
        doc = load(path)
    except DocumentError as e:
        raise DocumentError(f"dataset image: {e}") from None
    image = torch.from_numpy(np.ascontiguousarray(doc.base))
    if gray:
        image = image.mean(0, keepdim=True)
    if size is not None and tuple(image.shape[-2:]) != (size, size):
        image = resize(image[None], (size, size))[0]
    return image


def _to_uint8(image: Tensor) -> Tensor:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


@dataclass
class PairSet:
    """A split held in memory as uint8: bases/targets [N,3,S,S], class ids [N], mirror ids [N] (-1 = none)."""

    bases: Tensor
    targets: Tensor
    classes: Tensor
    mirrored: Tensor
    directions: list[str]


def load_pairs(examples: list[Example], size: int, directions: list[str] | None = None) -> PairSet:
    from .directions import DIRECTIONS

    if not examples:
        raise UsageError("the manifest has no examples for this split")
    if directions is None:
        present = {e.direction for e in examples}
        unknown = sorted(present - set(DIRECTIONS))
        if unknown:
            raise UsageError(f"manifest directions not known to Lasagna: {', '.join(unknown)}")
        directions = [d for d in DIRECTIONS if d in present]
    cache: dict[Path, Tensor] = {}

    def image(path: Path) -> Tensor:
        if path not in cache:
            cache[path] = _to_uint8(load_image(path, size))
        return cache[path]

    bases = torch.stack([image(e.input) for e in examples])
    targets = torch.stack([_to_uint8(load_image(e.target, size)) for e in examples])
    classes = torch.tensor([directions.index(e.direction) if e.direction in directions else -1 for e in examples])
    mirror = [mirror_direction(d, directions) for d in directions]
    mirrored = torch.tensor([mirror[c] if c >= 0 else -1 for c in classes.tolist()])
    return PairSet(bases, targets, classes, mirrored, list(directions))


def mirror_direction(direction: str, directions: list[str]) -> int:
    """Class id of the direction seen in a left-right mirror (x -> -x), or -1 if it isn't among `directions`."""
    from .directions import DIRECTIONS

    x, y, z = DIRECTIONS[direction]
    for i, name in enumerate(directions):
        u = DIRECTIONS[name]
        if abs(u[0] + x) < 1e-6 and abs(u[1] - y) < 1e-6 and abs(u[2] - z) < 1e-6:
            return i
    return -1


# ---------------------------------------------------------------------- progress, checkpoints, curves


@dataclass
class TrainStep:
    step: int  # 1-based, counting resumed steps
    steps: int
    loss: float
    learning_rate: float
    seconds: float  # wall time of the whole run so far, across resumes


@dataclass
class TrainResult:
    output: Path
    steps_done: int
    steps: int
    seconds: float
    finished: bool
    loss_curve: Path | None
    history: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[TrainStep], None]


def checkpoint_dir(out: Path) -> Path:
    return Path(str(out) + ".ckpt")


def _save_checkpoint(folder: Path, tensors: dict[str, dict[str, Tensor]], state: dict[str, Any]) -> None:
    """Every part atomically; state.json last, so a checkpoint with a state.json is complete."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for name, group in tensors.items():
        tmp = folder / f"{name}.safetensors.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in group.items()}, str(tmp))
        tmp.replace(folder / f"{name}.safetensors")
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(folder / "state.json")


def _load_checkpoint(folder: Path, names: list[str]) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]] | None:
    from safetensors.torch import load_file

    if not (folder / "state.json").is_file():
        return None
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        return {n: load_file(str(folder / f"{n}.safetensors")) for n in names}, state
    except Exception as e:  # noqa: BLE001 - any damage means: can't resume
        raise UsageError(f"checkpoint '{folder}' can't be read ({type(e).__name__}); delete it or pass --no-resume") from None


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    flat = {f"{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)) for i, s in sd["state"].items() for k, v in s.items()}
    return flat, sd["param_groups"]


def _restore_optimizer(optimizer: torch.optim.Optimizer, flat: dict[str, Tensor], groups: list[dict[str, Any]]) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


@dataclass
class RunSettings:
    """What both trainers' configurations share: the length of the run and how `TrainingRun` keeps it."""

    steps: int
    seed: int = 0
    checkpoint_every: int = 100
    max_minutes: float | None = None
    resume: bool = True
    overfit_one_batch: bool = False  # same batch, noise and t every step (tests, debugging)


class TrainingRun:
    """The bookkeeping both trainers share around their steps: resume from `OUT.ckpt/` only when it was made
    for the same fingerprint (another model or set-up is refused, never silently mixed in), checkpoint every
    `checkpoint_every` steps, at the last step and at the `max_minutes` deadline, and count wall time across
    resumes. `modules` are saved and restored by name, with the optimizer and the batch generator's state.

    The fingerprint is compared key by key on the keys this run sets (a key the checkpoint lacks reads as
    None), so checkpoints of earlier versions, which recorded less, resume when what they recorded agrees; a
    checkpoint with no fingerprint at all (ControlNet runs of earlier versions) is taken as it is."""

    def __init__(self, out: Path, fingerprint: dict[str, Any], modules: dict[str, Any], optimizer: torch.optim.Optimizer,
                 rng: torch.Generator, config: RunSettings, history: dict[str, Any], started: float) -> None:
        self.folder = checkpoint_dir(out)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from state.json
        self.modules, self.optimizer, self.rng, self.config = modules, optimizer, rng, config
        self.history = history
        self.started = started
        self.step = 0
        self.seconds_before = 0.0
        self.deadline = None if config.max_minutes is None else started + 60 * config.max_minutes

    @property
    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    @property
    def finished(self) -> bool:
        return self.step >= self.config.steps

    def resume(self) -> None:
        loaded = _load_checkpoint(self.folder, [*self.modules, "optimizer"]) if self.config.resume else None
        if loaded is None:
            return
        tensors, state = loaded
        kept = state.get("fingerprint")
        if kept is not None and any(kept.get(k) != v for k, v in self.fingerprint.items()):
            raise UsageError(f"checkpoint '{self.folder}' is for a different model or set-up; delete it or pass --no-resume")
        for name, module in self.modules.items():
            module.load_state_dict(tensors[name])
        _restore_optimizer(self.optimizer, {k: v for k, v in tensors["optimizer"].items() if k != "rng"}, state["param_groups"])
        self.rng.set_state(tensors["optimizer"]["rng"])
        self.step, self.seconds_before, self.history = int(state["step"]), float(state["seconds"]), state["history"]

    def save(self) -> None:
        opt_flat, groups = _optimizer_tensors(self.optimizer)
        opt_flat["rng"] = self.rng.get_state()
        state = {"step": self.step, "seconds": self.seconds, "history": self.history, "param_groups": groups,
                 "fingerprint": self.fingerprint, "config": asdict(self.config)}
        _save_checkpoint(self.folder, {**{n: m.state_dict() for n, m in self.modules.items()}, "optimizer": opt_flat}, state)

    def step_done(self, loss: float, on_checkpoint: Callable[[], None] | None = None) -> bool:
        """Record a finished step's loss and checkpoint when due (`on_checkpoint` first, e.g. a validation
        loss); True when the run must stop now (finished, or past the deadline, checkpointed)."""
        self.step += 1
        self.history["loss"].append(loss)
        if self.step % self.config.checkpoint_every == 0 or self.finished:
            if on_checkpoint is not None:
                on_checkpoint()
            self.save()
        if not self.finished and self.deadline is not None and time.perf_counter() > self.deadline:
            self.save()
            return True
        return self.finished


def learning_rate_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def draw_loss_curve(history: dict[str, list[float]], path: Path, title: str = "training loss") -> Path:
    """A PNG of the training loss (raw, faint; smoothed, dark) and the validation loss (dots), drawn with PIL."""
    from PIL import Image, ImageDraw

    width, height, left, right, top, bottom = 800, 420, 70, 20, 40, 50
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    losses = np.asarray(history.get("loss", []), dtype=np.float64)
    val_steps = history.get("val_step", [])
    val = np.asarray(history.get("val_loss", []), dtype=np.float64)
    draw.text((left, 12), title, fill="black")
    if losses.size:
        k = max(1, losses.size // 50)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        values = np.concatenate([losses, val]) if val.size else losses
        lo, hi = float(np.percentile(values, 0.5)), float(np.max(values))
        lo, hi = (lo, hi) if hi > lo else (lo - 1e-3, lo + 1e-3)
        log = lo > 0 and hi / lo > 10  # a log axis shows the late, small improvements
        n = losses.size

        def scale(v: float) -> float:
            v = min(max(v, lo), hi)
            return (np.log(v) - np.log(lo)) / (np.log(hi) - np.log(lo)) if log else (v - lo) / (hi - lo)

        def xy(i: float, v: float) -> tuple[float, float]:
            x = left + (width - left - right) * (i / max(1, n - 1))
            y = top + (height - top - bottom) * (1 - scale(v))
            return x, y

        draw.rectangle([left, top, width - right, height - bottom], outline="black")
        for j in range(5):
            v = float(np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * j / 4)) if log else lo + (hi - lo) * j / 4
            _, y = xy(0, v)
            draw.line([left - 4, y, left, y], fill="black")
            draw.text((4, y - 6), f"{v:.4f}", fill="black")
        for j in range(5):
            i = (n - 1) * j / 4
            x, _ = xy(i, lo)
            draw.line([x, height - bottom, x, height - bottom + 4], fill="black")
            draw.text((x - 10, height - bottom + 8), f"{int(i) + 1}", fill="black")
        draw.text((width // 2 - 20, height - 20), "step", fill="black")
        draw.line([xy(i, v) for i, v in enumerate(losses)], fill=(190, 200, 230), width=1)
        offset = (k - 1) / 2
        if smooth.size > 1:
            draw.line([xy(i + offset, v) for i, v in enumerate(smooth)], fill=(20, 40, 160), width=2)
        for s, v in zip(val_steps, val):
            x, y = xy(s - 1, v)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(200, 40, 40))
        draw.text((width - right - 300, top + 6), "train (smoothed)   * val (EMA)" + ("   log scale" if log else ""), fill=(20, 40, 160))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


# ---------------------------------------------------------------------- the built-in prior


@dataclass
class BuiltinConfig(RunSettings):
    steps: int = 2000
    batch_size: int = 48
    learning_rate: float = 1e-3
    warmup: int = 100
    size: int = 32
    dropout: float = 0.1  # probability of dropping the direction, and (independently) the base
    ema: float = 0.995
    flip: bool = True
    unet: dict[str, Any] | None = None  # architecture override (default: builtin.default_unet_config)
    init: str | None = None  # fine-tune: start from this prior ("builtin" or a weights file), its architecture and directions


def train_builtin(data: Path, out: Path, config: BuiltinConfig, *, on_progress: ProgressCallback | None = None) -> TrainResult:
    """Train (or resume) the built-in prior on `data`'s train split; write `out` (.safetensors + .sha256) and
    `out` with suffix `.loss.png`. Returns when done or after `max_minutes` (then `finished` is False)."""
    from .priors import builtin

    started = time.perf_counter()
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UsageError(f"--out must name a .safetensors file, not '{out}'")
    if config.init is not None and config.unet is not None:
        raise UsageError("a fine-tune keeps the architecture of the prior it starts from: give --init or an architecture, not both")
    start = _initial_prior(config.init, config.size) if config.init is not None else None
    train_examples = read_manifest(data, "train")
    if start is not None:
        unknown = sorted({e.direction for e in train_examples} - set(start.directions))
        if unknown:
            raise UsageError(f"--init '{config.init}' was not trained for the data's direction(s) {', '.join(unknown)}")
    train = load_pairs(train_examples, config.size, None if start is None else start.directions)
    val_examples = read_manifest(data, "val")
    val = load_pairs(val_examples[:256], config.size, train.directions) if val_examples else None
    directions = train.directions
    if start is not None:
        unet_config = builtin.model_config(start.unet)
        sched_config = start.scheduler_config
    else:
        unet_config = config.unet or builtin.default_unet_config(config.size, len(directions))
        sched_config = builtin.default_scheduler_config()
    torch.manual_seed(config.seed)
    model = builtin.new_unet(unet_config)
    if start is not None:
        model.load_state_dict(start.unet.state_dict())
    ema = builtin.new_unet(unet_config)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    schedule = NoiseSchedule.from_config(sched_config)
    rng = torch.Generator().manual_seed(config.seed)
    init = None if start is None else builtin.sha256_of(start.weights)
    run = TrainingRun(out, {"unet": unet_config, "directions": directions, "size": config.size, "init": init},
                      {"model": model, "ema": ema}, optimizer, rng, config,
                      {"loss": [], "val_step": [], "val_loss": []}, started)
    run.resume()

    n = train.bases.shape[0]
    fixed: dict[str, Tensor] | None = None
    val_batch = _fixed_val_batch(val, schedule) if val is not None else None

    def validate() -> None:
        if val_batch is not None:
            run.history["val_step"].append(run.step)
            run.history["val_loss"].append(_val_loss(ema, val_batch))

    model.train()
    while not run.finished:
        if config.overfit_one_batch and fixed is not None:
            batch = fixed
        else:
            batch = _builtin_batch(train, config, schedule, rng, n)
            if config.overfit_one_batch:
                fixed = batch
        lr = learning_rate_at(run.step, config.steps, config.learning_rate, config.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        pred = model(batch["input"], batch["t"], class_labels=batch["classes"], return_dict=False)[0]
        loss = F.mse_loss(pred, batch["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(config.ema, (1 + run.step) / (10 + run.step))
            for e, p in zip(ema.parameters(), model.parameters()):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        value = float(loss.item())
        if not math.isfinite(value):
            from .errors import DistillationError

            raise DistillationError(f"training diverged (loss {value}) at step {run.step + 1}; lower --lr")
        stop = run.step_done(value, validate)
        if on_progress is not None:
            on_progress(TrainStep(run.step, config.steps, value, lr, run.seconds))
        if stop:
            break

    seconds, finished, step, history = run.seconds, run.finished, run.step, run.history
    curve = draw_loss_curve(history, out.with_suffix(".loss.png"), f"built-in prior: loss, {step} steps")
    training = {
        "steps": step,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "size": config.size,
        "train_pairs": n,
        "train_scenes": len({e.scene for e in train_examples}),
        "wall_seconds": round(seconds, 1),
        "final_train_loss": float(np.mean(history["loss"][-50:])) if history["loss"] else None,
        "final_val_loss": history["val_loss"][-1] if history["val_loss"] else None,
        "init": None if init is None else {"model": config.init, "sha256": init},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "finished": finished,
    }
    if finished or not out.exists():
        builtin.save_weights(ema, out, directions=directions, scheduler_config=sched_config, training=training)
    return TrainResult(out, step, config.steps, seconds, finished, curve, {**history, "training": training})


@dataclass
class _StartingPoint:
    """What a fine-tune takes from the prior it starts from."""

    unet: Any
    directions: list[str]
    scheduler_config: dict[str, Any]
    weights: Path


def _initial_prior(model: str, size: int) -> _StartingPoint:
    """The prior a fine-tune starts from (SHA-256 checked like any load), at the training resolution."""
    from .priors import builtin

    threads = torch.get_num_threads()
    prior = builtin.BuiltinPrior.load(model)
    torch.set_num_threads(threads)  # loading pins inference to one thread; training keeps the user's choice
    if prior.resolution != size:
        raise UsageError(f"--init '{model}' works at {prior.resolution} px; train it at --size {prior.resolution}, not {size}")
    weights = builtin.shipped_weights() if builtin.is_builtin_name(model) else Path(model).expanduser()
    return _StartingPoint(prior.unet, prior.directions, prior.scheduler_config, weights)


def _builtin_batch(pairs: PairSet, config: BuiltinConfig, schedule: NoiseSchedule, rng: torch.Generator, n: int) -> dict[str, Tensor]:
    idx = torch.randint(0, n, (config.batch_size,), generator=rng)
    base = pairs.bases[idx].float() / 127.5 - 1
    target = pairs.targets[idx].float() / 127.5 - 1
    classes = pairs.classes[idx].clone()
    if config.flip:
        flip = (torch.rand(config.batch_size, generator=rng) < 0.5) & (pairs.mirrored[idx] >= 0)
        base[flip] = base[flip].flip(-1)
        target[flip] = target[flip].flip(-1)
        classes[flip] = pairs.mirrored[idx][flip]
    null = len(pairs.directions)
    drop_class = torch.rand(config.batch_size, generator=rng) < config.dropout
    drop_base = torch.rand(config.batch_size, generator=rng) < config.dropout
    classes[drop_class | (classes < 0)] = null
    base[drop_base] = 0.0
    t = torch.randint(0, schedule.num_train_timesteps, (config.batch_size,), generator=rng)
    noise = torch.randn(target.shape, generator=rng)
    noisy = schedule.add_noise(target, noise, t)
    return {"input": torch.cat([noisy, base], 1), "t": t, "classes": classes,
            "target": schedule.training_target(target, noise, t)}


def _fixed_val_batch(val: PairSet, schedule: NoiseSchedule) -> dict[str, Tensor]:
    rng = torch.Generator().manual_seed(1234)
    cfg = BuiltinConfig(batch_size=val.bases.shape[0], dropout=0.0, flip=False)
    return _builtin_batch(val, cfg, schedule, rng, val.bases.shape[0])


@torch.no_grad()
def _val_loss(model: Any, batch: dict[str, Tensor]) -> float:
    was_training = model.training
    model.eval()
    losses = []
    for i in range(0, batch["t"].shape[0], 64):
        sl = slice(i, i + 64)
        pred = model(batch["input"][sl], batch["t"][sl], class_labels=batch["classes"][sl], return_dict=False)[0]
        losses.append(F.mse_loss(pred, batch["target"][sl], reduction="sum"))
    model.train(was_training)
    return float(torch.stack(losses).sum() / batch["target"].numel())


# ---------------------------------------------------------------------- a ControlNet adapter on Stable Diffusion


@dataclass
class ControlNetConfig(RunSettings):
    steps: int = 1000
    batch_size: int = 4
    learning_rate: float = 1e-5
    prompt_dropout: float = 0.1
    device: str = "auto"


def train_controlnet(model: str, data: Path, out: Path, config: ControlNetConfig, *, on_progress: ProgressCallback | None = None) -> TrainResult:
    """Train a ControlNet (initialised from the SD U-Net, diffusers' `ControlNetModel.from_unet`) on the
    manifest's train split: base -> hint, prompt -> text, relit image -> denoising target. Only the ControlNet
    learns. Writes `out/` with `save_pretrained` (safetensors) and `out/loss.png`."""
    from diffusers import ControlNetModel

    from .priors import sd_components
    from .runtime import quiet_model_libraries, resolve_device

    out = Path(out).resolve()  # `--out .` and the full path name the same folder and the same checkpoint
    if out.exists() and not out.is_dir():  # checked before the model loads and the steps run, not when saving
        raise UsageError(f"{out}: --out must be a folder for the ControlNet, and this is a file")
    quiet_model_libraries()
    started = time.perf_counter()
    device = resolve_device(config.device)
    folder = sd_components.resolve_model_folder(model)
    parts = sd_components.load_components(folder, dtype=torch.float32)
    unet, vae, text_encoder, tokenizer = parts.unet, parts.vae, parts.text_encoder, parts.tokenizer
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval().to(device)
    schedule = NoiseSchedule.from_config(parts.scheduler_config, device)
    prediction = schedule.prediction_type
    if prediction not in ("epsilon", "v_prediction"):
        raise UsageError(f"can't train a ControlNet for a '{prediction}' model")
    size = sd_components.working_resolution(unet, vae)

    examples = read_manifest(data, "train")
    if not examples:
        raise UsageError("the manifest has no training examples")
    torch.manual_seed(config.seed)
    controlnet = ControlNetModel.from_unet(unet).to(device)
    controlnet.train()
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=config.learning_rate, weight_decay=0.0)
    rng = torch.Generator().manual_seed(config.seed)
    from .priors.builtin import model_config

    run = TrainingRun(out, {"model": str(Path(folder).resolve()), "unet": model_config(unet), "size": size, "prediction": prediction}, {"controlnet": controlnet},
                      optimizer, rng, config, {"loss": []}, started)
    run.resume()

    text_cache: dict[str, Tensor] = {}

    @torch.no_grad()
    def embed(prompts: list[str]) -> Tensor:
        for p in set(prompts) - set(text_cache):
            text_cache[p] = sd_components.encode_text(tokenizer, text_encoder, [p])[0]
        return torch.stack([text_cache[p] for p in prompts])

    @torch.no_grad()
    def make_batch() -> dict[str, Tensor]:
        idx = torch.randint(0, len(examples), (config.batch_size,), generator=rng).tolist()
        chosen = [examples[i] for i in idx]
        hint = torch.stack([load_image(e.input, size) for e in chosen]).to(device)
        target = torch.stack([load_image(e.target, size) for e in chosen]).to(device)
        latents = sd_components.encode_latents(vae, target * 2 - 1)
        drop = (torch.rand(len(chosen), generator=rng) < config.prompt_dropout).tolist()
        prompts = ["" if d else e.prompt for d, e in zip(drop, chosen)]
        t = torch.randint(0, schedule.num_train_timesteps, (len(chosen),), generator=rng).to(device)
        noise = torch.randn(latents.shape, generator=rng).to(device)
        return {"noisy": schedule.add_noise(latents, noise, t), "t": t, "text": embed(prompts), "hint": hint,
                "goal": schedule.training_target(latents, noise, t)}

    fixed = None
    while not run.finished:
        batch = fixed if fixed is not None else make_batch()
        if config.overfit_one_batch:
            fixed = batch
        down, mid = controlnet(batch["noisy"], batch["t"], encoder_hidden_states=batch["text"],
                               controlnet_cond=batch["hint"], return_dict=False)
        pred = unet(batch["noisy"], batch["t"], encoder_hidden_states=batch["text"], down_block_additional_residuals=down,
                    mid_block_additional_residual=mid, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), batch["goal"].float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        stop = run.step_done(float(loss.item()))
        if on_progress is not None:
            on_progress(TrainStep(run.step, config.steps, run.history["loss"][-1], config.learning_rate, run.seconds))
        if stop:
            break

    _save_controlnet(controlnet, out)
    curve = draw_loss_curve(run.history, out / "loss.png", f"ControlNet: loss, {run.step} steps")
    return TrainResult(out, run.step, config.steps, run.seconds, run.finished, curve, run.history)


def _save_controlnet(controlnet: Any, out: Path) -> None:
    """`save_pretrained` into a fresh staging folder beside `out`, then each file into place (config.json
    last): a crash never leaves a half-written file where `--controlnet` loads it, and other files in `out`
    stay."""
    import shutil
    import tempfile

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        controlnet.save_pretrained(str(staging), safe_serialization=True)
        for path in sorted(staging.iterdir(), key=lambda p: p.name == "config.json"):
            path.replace(out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
