"""Synthetic relighting data: random primitives rendered flat (the base) and under named light directions.

`scene` makes random scenes, `geometry` intersects rays with their solids, `lighting` is the lights and the
shading formula, `render` draws one scene with numpy; `dataset` writes many of them as PNGs with a
`manifest.jsonl` (the format `lasagna train` reads). Nothing here imports torch.
"""
