"""Flat-colour emoji art from two npm packages, unpacked (`npm pack NAME@VERSION`, then `tar xzf`).

- Fluent Emoji Flat (`@iconify-json/fluent-emoji-flat`, MIT, Microsoft): one `icons.json` in Iconify's format
  (SVG bodies on a 32 x 32 viewBox, keyed by name), `metadata.json` (name -> category) and `chars.json`
  (codepoints -> name).
- Twemoji (`@twemoji/svg`, artwork CC-BY 4.0): a folder of `<codepoints>.svg` files on a 36 x 36 viewBox. It
  ships no names or categories, so its designs take them from Fluent's `chars.json` and `metadata.json` (the
  same Unicode emoji): a Twemoji folder needs the Fluent package among the sources.

The emoji's name ("red-apple") is a design's identity across both packages: the split is a hash of it, so
both artists' apples land in the same split and no object seen in training is in a held-out set.

Selection by metadata (`metadata_rule`): the categories of single things (`OBJECT_CATEGORIES`), no skin-tone
variants, and no faces outside "Animals & Nature" (a cat's head is an object; the moon with a face is a
smiley). Scenes and multi-piece designs are left to the measured rule of `lasagna_core.flatart.raster`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DocumentError

FLUENT = "fluent-emoji-flat"
TWEMOJI = "twemoji"
OBJECT_CATEGORIES = ("Animals & Nature", "Food & Drink", "Objects", "Travel & Places", "Activities")
SKIN_TONES = ("1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff")
_TONE_SUFFIX = re.compile(r"-(light|medium-light|medium|medium-dark|dark)$")
_TWEMOJI_FILE = re.compile(r"^[0-9a-f]{2,6}(-[0-9a-f]{2,6})*\.svg$")
SVG_NS = "http://www.w3.org/2000/svg"


@dataclass(frozen=True)
class Design:
    """One emoji drawing: its package, the emoji's name and category, and a complete SVG document."""

    package: str
    name: str
    category: str
    codepoints: str
    svg: str

    @property
    def key(self) -> str:
        return f"{self.package}/{self.name}"


@dataclass(frozen=True)
class Catalogue:
    """Fluent's names and categories, which both packages' designs are filed under."""

    names: dict[str, str]  # normalised codepoints ("1f34e", no fe0f) -> name
    categories: dict[str, str]  # name -> category


def normalise_codepoints(text: str) -> str:
    """Codepoints as Twemoji names its files: lower-case hex joined by '-', without the fe0f selector."""
    return "-".join(p for p in text.lower().split("-") if p and p != "fe0f")


def _root(folder: Path) -> Path:
    """The folder itself, or the `package/` folder that `tar xzf` of an npm tarball leaves."""
    return folder / "package" if not (folder / "icons.json").is_file() and (folder / "package").is_dir() else folder


def package_kind(folder: Path) -> str:
    """FLUENT or TWEMOJI for an unpacked package folder; DocumentError naming the folder otherwise."""
    root = _root(Path(folder))
    if not root.is_dir():
        raise DocumentError(f"{folder}: not a folder (give the unpacked npm package: tar xzf the .tgz)")
    if (root / "icons.json").is_file() and (root / "metadata.json").is_file():
        return FLUENT
    if any(_TWEMOJI_FILE.match(p.name) for p in root.iterdir()):
        return TWEMOJI
    raise DocumentError(
        f"{folder}: neither Fluent Emoji Flat (icons.json + metadata.json) nor Twemoji (<codepoints>.svg files); "
        "unpack @iconify-json/fluent-emoji-flat or @twemoji/svg with npm pack and tar xzf"
    )


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DocumentError(f"{path}: can't read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DocumentError(f"{path}: expected a JSON object")
    return data


def read_catalogue(fluent_folder: Path) -> Catalogue:
    root = _root(Path(fluent_folder))
    chars = _json(root / "chars.json") if (root / "chars.json").is_file() else {}
    groups = _json(root / "metadata.json").get("categories", {})
    categories = {name: category for category, names in groups.items() for name in names}
    return Catalogue({normalise_codepoints(k): v for k, v in chars.items()}, categories)


def _fluent_designs(folder: Path, catalogue: Catalogue) -> list[Design]:
    data = _json(_root(folder) / "icons.json")
    icons = data.get("icons")
    if not isinstance(icons, dict):
        raise DocumentError(f"{folder}: icons.json has no 'icons' object")
    width, height = data.get("width", 16), data.get("height", 16)
    codepoints = {name: cp for cp, name in catalogue.names.items()}
    designs = []
    for name, icon in sorted(icons.items()):
        body = icon.get("body") if isinstance(icon, dict) else None
        if not isinstance(body, str):
            continue
        w, h = icon.get("width", width), icon.get("height", height)
        svg = f'<svg xmlns="{SVG_NS}" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 {w} {h}">{body}</svg>'
        designs.append(Design(FLUENT, name, catalogue.categories.get(name, ""), codepoints.get(name, ""), svg))
    return designs


def _twemoji_designs(folder: Path, catalogue: Catalogue) -> list[Design]:
    designs = []
    for path in sorted(_root(folder).iterdir()):
        if not _TWEMOJI_FILE.match(path.name):
            continue
        cp = normalise_codepoints(path.stem)
        name = catalogue.names.get(cp)
        if name is None:  # flags and people combinations Fluent does not draw
            continue
        try:
            svg = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DocumentError(f"{path}: can't read the SVG ({exc})") from None
        designs.append(Design(TWEMOJI, name, catalogue.categories.get(name, ""), cp, svg))
    return designs


def load_designs(sources: Sequence[Path]) -> list[Design]:
    """Every design of the given package folders (each Fluent or Twemoji; see `package_kind`), in a fixed order."""
    kinds = [(Path(s), package_kind(Path(s))) for s in sources]
    fluent = [s for s, kind in kinds if kind == FLUENT]
    if not fluent:
        raise DocumentError(
            "Twemoji names its files by codepoint only: add the unpacked Fluent Emoji Flat package "
            "(@iconify-json/fluent-emoji-flat) to the sources for the names and categories"
        )
    catalogue = read_catalogue(fluent[0])
    designs: list[Design] = []
    for source, kind in kinds:
        designs += (_fluent_designs if kind == FLUENT else _twemoji_designs)(source, catalogue)
    return designs


def metadata_rule(design: Design) -> bool:
    """A single object, animal, food or vehicle by its package metadata (the first half of the selection)."""
    if design.category not in OBJECT_CATEGORIES:
        return False
    if _TONE_SUFFIX.search(design.name) or any(t in design.codepoints.split("-") for t in SKIN_TONES):
        return False
    return "face" not in design.name.split("-") or design.category == "Animals & Nature"


def design_split(name: str, val_fraction: float, test_fraction: float) -> str:
    """"train", "val" or "test" from a hash of the emoji's name alone: the same in every run, seed and package."""
    u = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def count_by(designs: Iterable[Design], attribute: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for design in designs:
        value = getattr(design, attribute)
        counts[value] = counts.get(value, 0) + 1
    return counts
