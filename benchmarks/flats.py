"""The `flats` section of benchmarks/run.py: how long `find_regions` + `fill_flats` take at document size,
and the measurements behind `flats.INK_THRESHOLD` (which threshold still seals a line of each style, and how
dark paper grain gets).

    python benchmarks/run.py --only flats
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from benchmarks.harness import peak_rss_mb, reset_peak_rss

LINE_STYLES = {  # name: (width px, ink sRGB)
    "black ink, 1 px": (1.0, (0.0, 0.0, 0.0)),
    "black ink, 0.75 px": (0.75, (0.0, 0.0, 0.0)),
    "black ink, 2 px": (2.0, (0.0, 0.0, 0.0)),
    "pencil, 50% grey, 1 px": (1.0, (0.5, 0.5, 0.5)),
    "pencil, 60% grey, 1 px": (1.0, (0.6, 0.6, 0.6)),
    "pencil, 70% grey, 2 px": (2.0, (0.7, 0.7, 0.7)),
    "blue ink, 1 px": (1.0, (0.3, 0.5, 1.0)),
    "red ink, 1 px": (1.0, (0.9, 0.1, 0.1)),
    "yellow ink, 1 px": (1.0, (1.0, 0.9, 0.0)),
}
CREAM = (0.95, 0.93, 0.86)


def _ring_cover(n: int, cx: float, cy: float, radius: float, width: float, samples: int) -> np.ndarray:
    """Coverage of a circle of ink, supersampled `samples` x `samples` per pixel (every sub-pixel position)."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    cover = np.zeros((n, n), np.float32)
    for oy in range(samples):
        for ox in range(samples):
            d = np.abs(np.hypot(xx + (ox + 0.5) / samples - cx, yy + (oy + 0.5) / samples - cy) - radius)
            cover += d <= width / 2
    return cover / samples**2


def sketch(n: int, seed: int = 0) -> np.ndarray:
    """(3, n, n) line art with what real sketches have: overlapping circles and strokes of anti-aliased ink,
    pencil-grey circles, hatching and gaps in the lines."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    ink = np.zeros((n, n), np.float32)
    width = max(1.5, n / 400)
    for index in range(40):
        cx, cy = rng.uniform(0.1, 0.9, 2) * n
        d = np.abs(np.hypot(xx - cx, yy - cy) - rng.uniform(0.02, 0.2) * n)
        cover = np.clip(width / 2 - d + 0.5, 0, 1) * (0.6 if index % 4 == 0 else 1.0)
        if index % 5 == 0:  # a pen lift
            cover *= np.abs(np.arctan2(yy - cy, xx - cx) - rng.uniform(-3, 3)) > 0.02
        ink = np.maximum(ink, cover)
    for _ in range(25):
        x0, y0, x1, y1 = rng.uniform(0.05, 0.95, 4) * n
        length = np.hypot(x1 - x0, y1 - y0)
        t = np.clip(((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / length**2, 0, 1)
        d = np.hypot(xx - x0 - t * (x1 - x0), yy - y0 - t * (y1 - y0))
        ink = np.maximum(ink, np.clip(width / 2 - d + 0.5, 0, 1))
    x0, y0 = int(0.6 * n), int(0.2 * n)
    for k in range(0, n // 8, max(4, n // 150)):  # a hatched patch
        band = (xx > x0) & (xx < x0 + n // 8) & (yy > y0) & (yy < y0 + n // 8)
        ink = np.maximum(ink, band * np.clip(width / 2 - np.abs(xx - yy - (x0 - y0) + k) + 0.5, 0, 1))
    return np.repeat(1 - ink[None], 3, axis=0)


def prior_colour(n: int, seed: int = 1) -> np.ndarray:
    """A blurry colour as the prior gives it: 64 x 64 of smooth blobs, brought to n x n bilinearly."""
    from PIL import Image

    blobs = np.random.default_rng(seed).uniform(0, 255, (8, 8, 3)).astype(np.uint8)
    small = Image.fromarray(blobs).resize((64, 64), Image.BICUBIC).resize((n, n), Image.BILINEAR)
    return np.asarray(small, np.float32).transpose(2, 0, 1) / 255


def sealing_threshold(width: float, ink: tuple[float, float, float], paper: tuple[float, float, float], noise: float) -> float:
    """The highest INK_THRESHOLD (to 0.01) at which a circle of this line keeps its inside from its outside."""
    from lasagna_core.flats import ink_coverage
    from lasagna_core.labelling import components

    n = 200
    cover = _ring_cover(n, n / 2, n / 2, n / 3, width, samples=4)[None]
    art = np.array(paper)[:, None, None] * (1 - cover) + np.array(ink)[:, None, None] * cover
    art = np.clip(art + np.random.default_rng(0).normal(0, noise, art.shape), 0, 1).astype(np.float32)
    coverage = ink_coverage(art)
    for threshold in np.arange(0.02, 1.0, 0.01):
        labels = components(np.where(coverage >= threshold, -1, 0))
        inside, outside = labels[n // 2 - 10:n // 2 + 10, n // 2 - 10:n // 2 + 10], labels[:20, :20]
        if np.bincount(inside[inside >= 0]).argmax() == np.bincount(outside[outside >= 0]).argmax():
            return round(float(threshold) - 0.01, 2)
    return 1.0


def worker(quick: bool) -> dict[str, Any]:
    from lasagna_core.flats import fill_flats, find_regions, hints_from_rgba, ink_coverage

    out: dict[str, Any] = {"sealing": {}, "paper_grain": {}, "sizes": {}}
    for name, (width, ink) in LINE_STYLES.items():
        out["sealing"][name] = {"white": sealing_threshold(width, ink, (1.0, 1.0, 1.0), 0.0),
                                "cream_noise_2pct": sealing_threshold(width, ink, CREAM, 0.02)}
    for noise in (0.01, 0.02, 0.03):
        paper = np.clip(np.random.default_rng(1).normal(0.94, noise, (3, 1024, 1024)), 0, 1).astype(np.float32)
        out["paper_grain"][f"{noise:.2f}"] = round(float(ink_coverage(paper).max()), 3)
    for n in (1024, 2048):
        base, colour = sketch(n), prior_colour(n)
        rgba = np.zeros((4, n, n), np.float32)
        for y, x in np.random.default_rng(2).uniform(0.1, 0.9, (5, 2)) * n:
            rgba[:, int(y) - 3:int(y) + 3, int(x) - 3:int(x) + 3] = np.array([0.9, 0.3, 0.2, 1.0])[:, None, None]
        find_s, fill_s, hints_s = [], [], []
        rest = peak_rss_mb()
        reset_peak_rss()
        for _ in range(1 if quick else 3):
            t0 = time.perf_counter()
            regions = find_regions(base)
            t1 = time.perf_counter()
            hints = hints_from_rgba(rgba)
            t2 = time.perf_counter()
            fill_flats(regions, colour, hints=hints)
            t3 = time.perf_counter()
            find_s.append(t1 - t0)
            hints_s.append(t2 - t1)
            fill_s.append(t3 - t2)
        out["sizes"][str(n)] = {
            "find_regions_s": round(statistics.median(find_s), 2), "hints_s": round(statistics.median(hints_s), 3),
            "fill_flats_s": round(statistics.median(fill_s), 2), "regions": regions.count,
            "outside": int(regions.outside.sum()), "gap": regions.gap, "runs": len(find_s),
            "peak_rss_above_rest_mb": round(peak_rss_mb() - rest, 0),
        }
    return out


def markdown(r: dict[str, Any]) -> list[str]:
    """The section of RESULTS.md."""
    lines = ["## Flats at document size (`lasagna_core.flats`, numpy, one core)", ""]
    if not r or "error" in r:
        return lines + [f"Not measured: {r.get('error', 'missing') if r else 'missing'}.", ""]
    lines += ["`find_regions` (ink, gap closing, regions, growing back over the ink, small regions merged) and",
              "`fill_flats` (one colour a region from a blurry 64 px colour, 5 hint dots) on a busy synthetic sketch",
              "(`benchmarks/flats.py`: 40 circles, some pencil-grey, some with a pen lift, 25 strokes, a hatched patch);",
              f"median of {next(iter(r['sizes'].values()))['runs']} runs.", "",
              "| size | find_regions s | hints s | fill_flats s | total s | regions (outside) | gap closed px | peak RSS above rest MiB |",
              "|---|---|---|---|---|---|---|---|"]
    for n, s in r["sizes"].items():
        total = s["find_regions_s"] + s["hints_s"] + s["fill_flats_s"]
        lines.append(f"| {n} x {n} | {s['find_regions_s']:.2f} | {s['hints_s']:.3f} | {s['fill_flats_s']:.2f} | {total:.2f} | "
                     f"{s['regions']} ({s['outside']}) | {s['gap']} | {s['peak_rss_above_rest_mb']:.0f} |")
    lines += ["", "The ink threshold: the highest `INK_THRESHOLD` at which a circle drawn with each line (anti-aliased,",
              "every sub-pixel position along it) still keeps its inside apart from its outside; lines are ink >= the",
              "threshold. On cream paper (0.95, 0.93, 0.86) the paper also has 2% grain.", "",
              "| line | seals up to, white paper | seals up to, cream paper, 2% grain |", "|---|---|---|"]
    for name, s in r["sealing"].items():
        lines.append(f"| {name} | {s['white']:.2f} | {s['cream_noise_2pct']:.2f} |")
    grain = ", ".join(f"{float(k) * 100:.0f}% grain: {v}" for k, v in r["paper_grain"].items())
    lines += ["", f"The darkest paper grain in a 1024 x 1024 sheet, as ink: {grain}. `INK_THRESHOLD` = 0.15 lies",
              "between the faintest line here (60% grey pencil) and 2% grain.", ""]
    return lines
