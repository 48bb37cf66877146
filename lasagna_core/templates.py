"""Edit templates: which layers an edit makes (blend mode, channels, range, neutral value) and its defaults.

Templates are TOML files so that a new edit type is data, not code: the engine never names `shade` or
`colorize`. Built-in ones ship in the `lasagna_templates` package (the repo's `templates/` folder).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from .errors import UsageError
from .layers import BlendMode

T = TypeVar("T")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class LayerSpec:
    """One layer an edit generates. With `alpha`, the layer rests transparent and `neutral` is its start colour."""

    name: str
    blend_mode: BlendMode
    channels: int = 1  # 1 = gray, 3 = RGB
    alpha: bool = False
    low: float = 0.0
    high: float = 1.0
    neutral: float = 1.0
    opacity: float = 1.0


@dataclass(frozen=True)
class DistillSettings:
    """Hyper-parameters of one distillation run; templates give defaults, the CLI may override them."""

    steps: int = 500
    guidance: float = 12.0
    noise_samples: int = 4
    learning_rate: float = 5e-3
    neutral_weight: float = 0.002  # L1 pull to neutral per pixel, against the summed SDS loss
    t_min: float = 0.02
    t_max: float = 0.98


@dataclass(frozen=True)
class GeneratorSettings:
    """The layer generator's shape and where it works; a template's `[generator]` table.

    width: channels of its first level (doubling per level); levels: resolutions it works at.
    resolution: the long side of its working image; unset, the prior's working size. A larger one distils
    at more detail than the prior sees: the composite is resized to the prior's size for the SDS loss.
    """

    width: int = 32
    levels: int = 3
    resolution: int | None = None

    @property
    def multiple(self) -> int:
        """Working sides must be multiples of this: the generator halves `levels - 1` times (and needs 8)."""
        return max(8, 2 ** (self.levels - 1))


@dataclass(frozen=True)
class EditSpec:
    name: str
    description: str
    prompt: str  # template with a {prompt} placeholder
    negative_prompt: str
    model: str  # default prior when the user gives no --model
    layers: tuple[LayerSpec, ...]
    defaults: DistillSettings
    source: str  # where it was read from, for messages
    generator: GeneratorSettings = GeneratorSettings()

    def render_prompt(self, text: str) -> str:
        return self.prompt.replace("{prompt}", text.strip())


def builtin_names() -> list[str]:
    return sorted(p.name[: -len(".toml")] for p in resources.files("lasagna_templates").iterdir() if p.name.endswith(".toml"))


def load_template(name_or_path: str) -> EditSpec:
    """A built-in template by name (`shade`) or a user's TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UsageError(f"template file {path} does not exist")
        return parse_template(path.read_text(encoding="utf-8"), str(path))
    if name_or_path not in builtin_names():
        raise UsageError(f"unknown template '{name_or_path}' (built-in: {', '.join(builtin_names())}; or pass a .toml file)")
    text = resources.files("lasagna_templates").joinpath(f"{name_or_path}.toml").read_text(encoding="utf-8")
    return parse_template(text, f"built-in template '{name_or_path}'")


def parse_template(text: str, source: str) -> EditSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: not valid TOML ({exc})") from None
    try:
        return _build(data, source)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{source}: {exc}") from None


def _build(data: dict[str, Any], source: str) -> EditSpec:
    layers = data.get("layers")
    if not layers:
        raise ValueError("needs at least one [[layers]] table")
    specs = tuple(_layer(entry) for entry in layers)
    if len({spec.name for spec in specs}) != len(specs):
        raise ValueError("layer names must be unique")
    prompt = str(data.get("prompt", "{prompt}"))
    if "{prompt}" not in prompt:
        raise ValueError("'prompt' must contain the {prompt} placeholder")
    return EditSpec(
        name=str(data["name"]),
        description=str(data.get("description", "")),
        prompt=prompt,
        negative_prompt=str(data.get("negative_prompt", "")),
        model=str(data.get("model", "")),
        layers=specs,
        defaults=_settings(data.get("defaults", {})),
        source=source,
        generator=_generator(data.get("generator", {})),
    )


def _layer(entry: dict[str, Any]) -> LayerSpec:
    low, high = (float(v) for v in entry.get("range", (0.0, 1.0)))
    spec = LayerSpec(
        name=str(entry["name"]),
        blend_mode=BlendMode.parse(str(entry["blend_mode"])),
        channels=int(entry.get("channels", 1)),
        alpha=bool(entry.get("alpha", False)),
        low=low,
        high=high,
        neutral=float(entry["neutral"]),
        opacity=float(entry.get("opacity", 1.0)),
    )
    if spec.channels not in (1, 3):
        raise ValueError(f"layer '{spec.name}': channels must be 1 (gray) or 3 (RGB)")
    if not 0.0 <= low < high <= 1.0 or not low <= spec.neutral <= high:
        raise ValueError(f"layer '{spec.name}': need 0 <= range low < high <= 1 and neutral inside the range")
    if spec.blend_mode is BlendMode.PASS_THROUGH or not 0.0 < spec.opacity <= 1.0:
        raise ValueError(f"layer '{spec.name}': pass_through is a group mode, and opacity must be in (0, 1]")
    return spec


def _table(cls: type[T], data: dict[str, Any], table: str) -> T:
    """A settings dataclass from a TOML table: known keys only, each value converted to its default's type
    (int for a key whose default is unset)."""
    known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown [{table}] keys: {', '.join(unknown)} (known: {', '.join(known)})")
    defaults = cls()
    kinds = {key: type(getattr(defaults, key)) if getattr(defaults, key) is not None else int for key in known}
    return cls(**{key: kinds[key](value) for key, value in data.items()})


def _generator(data: dict[str, Any]) -> GeneratorSettings:
    generator = _table(GeneratorSettings, data, "generator")
    if generator.width < 8 or generator.levels < 1 or (generator.resolution is not None and generator.resolution < generator.multiple):
        raise ValueError(f"[generator] needs width >= 8, levels >= 1 and resolution >= {generator.multiple}")
    return generator


def _settings(data: dict[str, Any]) -> DistillSettings:
    settings = _table(DistillSettings, data, "defaults")
    if not 0.0 <= settings.t_min < settings.t_max <= 1.0 or settings.steps < 1 or settings.noise_samples < 1:
        raise ValueError("[defaults] need 0 <= t_min < t_max <= 1, steps >= 1 and noise_samples >= 1")
    return settings
