"""How well `flats.find_regions` finds a drawing's own regions, whatever colours them: every found region
gets a random colour and `lasagna eval`'s one-colour measure is taken against the truth's regions (so this
bounds what any colouring of the found regions can score), with the share of the truth's closed regions
that leak into the paper around the drawing (where a hint would flood the page).

    python benchmarks/region_finder.py DATA [--designs 40] [--gap PX]

DATA: a `lasagna dataset line-art` folder (its test split is what `lasagna eval` scores).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lasagna_core.evaluate.colouring import MIN_REGION_SHARE, one_colour_share  # noqa: E402
from lasagna_core.flats import find_regions  # noqa: E402
from lasagna_core.document import load  # noqa: E402
from lasagna_core.flatart.coloring import read_region_ids  # noqa: E402


def measure(data: Path, designs: int, gap: int | None) -> dict[str, dict[str, float]]:
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["kind"] == "line-art"]
    scenes = sorted({r["scene"] for r in rows})[:designs]
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, list[float]]] = {}
    for row in (r for r in rows if r["scene"] in scenes):
        base = np.ascontiguousarray(load(data / row["input"]).base)
        truth = read_region_ids(data / row["regions"])
        regions = find_regions(base, gap=gap)
        colours = rng.uniform(0.0, 1.0, (regions.count, 3)).astype(np.float32)
        picture = colours[regions.labels].transpose(2, 0, 1)
        scores = out.setdefault(row["style"], {"one_colour": [], "leaks": [], "gap": []})
        scores["one_colour"].append(one_colour_share(picture, truth, lines=regions.ink))
        scores["leaks"].append(leak_share(regions.labels, regions.outside, truth))
        scores["gap"].append(regions.gap)
    return {style: {k: float(np.nanmean(v)) for k, v in s.items()} for style, s in out.items()}


def leak_share(labels: np.ndarray, outside: np.ndarray, truth: np.ndarray) -> float:
    """The share of the truth's closed regions (of at least MIN_REGION_SHARE; the truth's paper is the region
    at the top-left corner) whose pixels mostly lie in a found region that touches the canvas edge."""
    paper = truth[0, 0]
    ids, counts = np.unique(truth, return_counts=True)
    closed = ids[(ids != paper) & (counts >= MIN_REGION_SHARE * truth.size)]
    if not closed.size:
        return float("nan")
    return float(np.mean([outside[np.bincount(labels[truth == t]).argmax()] for t in closed]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--designs", type=int, default=40)
    parser.add_argument("--gap", type=int, default=None)
    args = parser.parse_args()
    result = measure(args.data, args.designs, args.gap)
    print("| style | one colour | leak to the page | gap px (mean) |\n|---|---|---|---|")
    for style, s in result.items():
        print(f"| {style} | {s['one_colour']:.1%} | {s['leaks']:.1%} | {s['gap']:.1f} |")
    mean = np.mean([s["one_colour"] for s in result.values()])
    print(f"| all | {mean:.1%} | {np.mean([s['leaks'] for s in result.values()]):.1%} | |")


if __name__ == "__main__":
    main()
