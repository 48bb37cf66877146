"""A contact sheet of held-out flat-art designs lit from the four sides by two (or more) priors side by side:
the pictures issue 13 asks to be looked at (cast shadows in the caster's shape, form shading that follows
the outline, the lit side brighter), made the way `lasagna shade` makes them.

    python benchmarks/direction_sheet.py DATA OUT.png --model builtin --model NEW.safetensors \
        [--guidance 3 --guidance 8] [--template shade --template NEW.toml] [--designs 12] [--steps N]

DATA: a `lasagna dataset flat-art` folder; its first `--designs` test scenes, one white-light base each.
Rows: designs; columns: the base, then for each direction (left, right, top, bottom) one tile per model, in
the order the models are given (`--guidance` and `--template`, once per model, else each at the `shade`
template's defaults: a new prior with its own settings beside today's at today's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lasagna_core.directions import PROMPTS  # noqa: E402
from lasagna_core.document import load  # noqa: E402
from lasagna_core.edit import edit_settings  # noqa: E402
from lasagna_core.evaluate.shading import shade_picture  # noqa: E402
from lasagna_core.priors import PriorSettings, load_prior  # noqa: E402
from lasagna_core.templates import load_template  # noqa: E402
from lasagna_core.writing import save_png  # noqa: E402

DIRECTIONS = ("left", "right", "top", "bottom")


def held_out_bases(data: Path, designs: int) -> list[tuple[str, np.ndarray]]:
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines() if line.strip()]
    seen: dict[str, str] = {}
    for row in rows:
        if row.get("split") == "test" and row["scene"] not in seen:
            seen[row["scene"]] = row["input"]
    return [(scene, np.ascontiguousarray(load(data / path).base)) for scene, path in list(seen.items())[:designs]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--guidance", action="append", type=float)
    parser.add_argument("--template", action="append")
    parser.add_argument("--designs", type=int, default=12)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, given in (("--guidance", args.guidance), ("--template", args.template)):
        if given and len(given) != len(args.model):
            parser.error(f"give {name} once per --model, or not at all")
    bases = held_out_bases(args.data, args.designs)
    tiles: dict[tuple[int, str, int], np.ndarray] = {}
    for m, model in enumerate(args.model):
        spec = load_template(args.template[m] if args.template else "shade")
        prior = load_prior(PriorSettings(model))
        settings = edit_settings(spec, args.steps, args.guidance[m] if args.guidance else None)
        for b, (scene, base) in enumerate(bases):
            for d in DIRECTIONS:
                tiles[b, d, m] = shade_picture(prior, spec, settings, base, PROMPTS[d], args.seed).composite
            print(f"{model}: {b + 1}/{len(bases)} designs", file=sys.stderr, flush=True)
    pad = lambda t: np.pad(t, ((0, 0), (2, 2), (2, 2)), constant_values=1.0)  # noqa: E731
    rows = [np.concatenate([pad(base)] + [pad(tiles[b, d, m]) for d in DIRECTIONS for m in range(len(args.model))], axis=2)
            for b, (_, base) in enumerate(bases)]
    save_png(np.concatenate(rows, axis=1).astype(np.float32), None, args.out)
    print(f"wrote {args.out}: rows {', '.join(s for s, _ in bases)}; columns base | "
          + " | ".join(f"{d}: " + " / ".join(args.model) for d in DIRECTIONS))


if __name__ == "__main__":
    main()
