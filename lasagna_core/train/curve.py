"""The training loss curve as a PNG, drawn with PIL (no plotting library)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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
