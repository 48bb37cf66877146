"""Synthetic relighting data: random primitives rendered flat (the base) and under named light directions.

`render` draws one scene with numpy; `dataset` writes many of them as PNGs with a `manifest.jsonl` (the format
`lasagna train` reads). Nothing here imports torch.
"""
