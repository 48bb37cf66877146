"""Naming one layer of a PSD the way a person types it on the command line (`--layer`).

A path is layer names joined by `/`, matched against the end of each layer's path (`Hero` finds
`Characters/Hero`). Names may hold any character, so two spellings make every layer reachable:
`\\/` is a slash inside a name (`A\\/B` is the layer named "A/B"), and `#N` is the N-th entry of its
group counted from the top, as `lasagna inspect` and Photoshop's Layers panel list them (`#2`,
`Group/#2`: the second of two layers both named "Dup"). `\\#` and `\\\\` spell a literal `#` and `\\`.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import UsageError

Segment = str | int  # a layer name, or a 1-based position from the top of its group

_INDEX = re.compile(r"#([1-9][0-9]*)")
HELP = "write a '/' inside a name as '\\/', and pick one of same-named layers by its position, e.g. '#2' or 'Group/#2'"


def parse_layer_path(text: str) -> list[Segment]:
    """`Group/A\\/B` -> ["Group", "A/B"]; `Group/#2` -> ["Group", 2]."""
    segments: list[Segment] = []
    current, escaped, literal = [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped, literal = False, literal or (not current[:-1] and char == "#")
        elif char == "\\":
            escaped = True
        elif char == "/":
            segments.append(_segment("".join(current), literal))
            current, literal = [], False
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    segments.append(_segment("".join(current), literal))
    while segments and segments[0] == "":
        segments.pop(0)
    while segments and segments[-1] == "":
        segments.pop()
    return segments


def _segment(text: str, literal: bool) -> Segment:
    match = None if literal else _INDEX.fullmatch(text)
    return int(match.group(1)) if match else text


def find_layer(psd: Any, text: str) -> Any:
    """The one layer `text` names: an exact path from the document's top level first, else the end of a
    path; the error lists what exists, spelled so that it can be pasted back."""
    wanted = parse_layer_path(text)
    if not wanted:
        raise UsageError(f"--layer '{text}' names no layer; {HELP}")
    layers = list(psd.descendants())
    paths = {id(layer): _positions(layer) for layer in layers}
    exact = [layer for layer in layers if _matches(paths[id(layer)], wanted)]
    matches = exact or [layer for layer in layers if _matches(paths[id(layer)][-len(wanted):], wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        names = ", ".join(sorted(layer_path(layer) for layer in layers)) or "none"
        raise UsageError(f"no layer named '{text}' (layers: {names}); {HELP}")
    top_down = sorted(matches, key=lambda layer: [position for _, position in paths[id(layer)]])
    choices = ", ".join(layer_path(layer) for layer in top_down)
    raise UsageError(f"{len(matches)} layers match '{text}'; pass one of: {choices} ({HELP})")


def layer_path(layer: Any) -> str:
    """The shortest spelling that names `layer` alone: its names from the top level, escaped, with `#N`
    for a name its group holds more than once."""
    parts = []
    for node, position in _chain(layer):
        siblings = [child.name for child in _children_top_down(node.parent)]
        parts.append(f"#{position}" if siblings.count(node.name) > 1 else _escape(node.name))
    return "/".join(parts)


def _escape(name: str) -> str:
    name = name.replace("\\", "\\\\").replace("/", "\\/")
    return "\\" + name if _INDEX.fullmatch(name) else name


def _matches(path: list[tuple[str, int]], wanted: list[Segment]) -> bool:
    return len(path) == len(wanted) and all(
        position == want if isinstance(want, int) else name == want for (name, position), want in zip(path, wanted)
    )


def _positions(layer: Any) -> list[tuple[str, int]]:
    return [(node.name, position) for node, position in _chain(layer)]


def _chain(layer: Any) -> list[tuple[Any, int]]:
    """(layer, its position from the top of its group) for the layer and each group above it, top level first."""
    chain = []
    node = layer
    while node is not None and node.kind != "psdimage":
        siblings = _children_top_down(node.parent)
        chain.insert(0, (node, next(i for i, child in enumerate(siblings, 1) if child is node)))
        node = node.parent
    return chain


def _children_top_down(group: Any) -> list[Any]:
    return list(reversed(list(group)))
