"""Training the priors Lasagna distils from, on a relighting manifest (`lasagna dataset synth` writes one).

The manifest is `manifest.jsonl` in the data folder, one JSON object per line:
`{"input": base png, "target": relit png, "prompt": "light from the left", "direction": "left",
"mask": object mask png, "split": "train"|"val"|"test", "scene": id}`, paths relative to the manifest's
folder. Real relighting data (e.g. ReNe) converted to the same lines trains the same way.

* `manifest`: the manifest's examples, their pictures, and a split held in memory as pairs;
* `run`: what both trainers share around their steps (`TrainingRun`: checkpoints, resume, the deadline),
  the learning-rate schedule, progress and results; `curve`: the loss curve PNG;
* `builtin`: `train_builtin`, the built-in pixel-space prior (`lasagna_core.priors.builtin`);
* `controlnet`: `train_controlnet`, a diffusers ControlNet adapter on a Stable Diffusion folder.

Both checkpoint to `OUT.ckpt/` (safetensors + JSON, never pickle) every `checkpoint_every` steps and at the
end, resume from it, and stop cleanly after `max_minutes` so a long run can go on across sessions.
Never prints: progress goes through `on_progress`.
"""
