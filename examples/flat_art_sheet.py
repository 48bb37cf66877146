"""A contact sheet of a relighting data set: one row per design, its base then its targets, prompts underneath.

    python examples/flat_art_sheet.py DATA_DIR OUT.png [--designs 8] [--directions left,top,right,bottom]
        [--split test] [--scale 3]

Reads DATA_DIR/manifest.jsonl (any set in `lasagna dataset` format), takes the first scene of each of the
first --designs designs (scenes for a synthetic set) that has all the directions, and writes the sheet with PIL.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

LABEL = 12


def contact_sheet(data: Path, designs: int, directions: list[str], split: str | None, scale: int) -> Image.Image:
    rows: dict[str, dict[str, dict]] = {}
    for line in (data / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if split and item.get("split", "train") != split:
            continue
        design = item.get("design", item["scene"])
        scene = rows.setdefault(design, {}).setdefault(item["scene"], {})
        scene[item["direction"]] = item
    chosen = []
    for design, scenes in rows.items():
        complete = [s for s in scenes.values() if all(d in s for d in directions)]
        if complete:
            chosen.append((design, complete[0]))
        if len(chosen) == designs:
            break
    first = Image.open(data / chosen[0][1][directions[0]]["input"])
    tile = first.width * scale
    sheet = Image.new("RGB", ((len(directions) + 1) * tile, len(chosen) * (tile + LABEL)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (design, scene) in enumerate(chosen):
        y = row * (tile + LABEL)
        base = Image.open(data / scene[directions[0]]["input"]).convert("RGB").resize((tile, tile), Image.NEAREST)
        sheet.paste(base, (0, y))
        draw.text((2, y + tile), design.split("/")[-1][:18], fill="black")
        for col, direction in enumerate(directions, start=1):
            item = scene[direction]
            lit = Image.open(data / item["target"]).convert("RGB").resize((tile, tile), Image.NEAREST)
            sheet.paste(lit, (col * tile, y))
            draw.text((col * tile + 2, y + tile), item["prompt"].replace("light from the ", "")[:20], fill="black")
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--designs", type=int, default=8)
    parser.add_argument("--directions", default="left,top,right,bottom")
    parser.add_argument("--split", default=None)
    parser.add_argument("--scale", type=int, default=3)
    args = parser.parse_args()
    sheet = contact_sheet(args.data, args.designs, args.directions.split(","), args.split, args.scale)
    sheet.save(args.out)
    print(f"wrote {args.out} ({sheet.width} x {sheet.height})")


if __name__ == "__main__":
    main()
