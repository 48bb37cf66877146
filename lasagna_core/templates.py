"""Edit templates: which layers an edit makes (blend mode, channels, range, neutral value) and its defaults.

Templates are TOML files so that a new edit type is data, not code: the engine never names `shade` or
`colorize`. Built-in ones ship in the `lasagna_templates` package (the repo's `templates/` folder).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UsageError
from .layers import BlendMode

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
    finish: str = "upsample"  # how it reaches document size: FINISHES
    tint: str | None = None  # "light" / "shadow": takes the prompt's light colour (`lasagna_core.tint`)
    lightness_tolerance: float | None = None  # a Color layer held within this many CIE L* of the base (`lightness`)


FINISHES = ("upsample", "flats")
"""upsample: the edge-aware guided upsampling of the distilled layer; flats: one colour per closed region of
the base's line art (`lasagna_core.flats`), trained as such (`lasagna_core.region_generator`), for a colour
layer (3 channels) that is the template's only layer."""


def _bounds(low: float, high: float = math.inf, *, above: bool = False, below: bool = False) -> dict[str, Any]:
    """A setting's allowed range as field metadata: low <= v (low < v with `above`), v <= high (v < high)."""
    return {"bounds": (low, high, above, below)}


@dataclass(frozen=True)
class DistillSettings:
    """Hyper-parameters of one distillation run; templates give defaults, the CLI may override them. Each
    field's range is data (its metadata) so that a template and a command-line override are checked by the
    same `settings_with`."""

    steps: int = field(default=500, metadata=_bounds(1))
    guidance: float = field(default=12.0, metadata=_bounds(0.0))
    noise_samples: int = field(default=4, metadata=_bounds(1))
    learning_rate: float = field(default=5e-3, metadata=_bounds(0.0, above=True))
    neutral_weight: float = field(default=0.002, metadata=_bounds(0.0))  # L1 pull to neutral per pixel, against the summed SDS loss
    t_min: float = field(default=0.02, metadata=_bounds(0.0, 1.0, below=True))
    t_max: float = field(default=0.98, metadata=_bounds(0.0, 1.0, above=True))
    # The first `coarse_steps` score the composite at half the prior's working size, for a quarter of the cost
    # of a step: the layout of light and shadow needs no fine detail (priors with `Capabilities.rescales`).
    coarse_steps: int = field(default=0, metadata=_bounds(0))


def settings_with(
    values: Mapping[str, Any], *, base: DistillSettings | None = None, label: Callable[[str], str] = str
) -> DistillSettings:
    """`base` (default: DistillSettings()) with `values` set, each checked for its type and range. ValueError
    names the setting as `label(key)` ('[defaults] steps' in a template, '--steps' on the command line) and
    the bad value, e.g. "--guidance must be at least 0, not -5.0". Keys must be fields of DistillSettings."""
    base = base or DistillSettings()
    checked = {f.name: _checked(label(f.name), values[f.name], isinstance(f.default, int), f.metadata["bounds"])
               for f in fields(DistillSettings) if f.name in values}
    settings = replace(base, **checked)
    if settings.t_min >= settings.t_max:
        raise ValueError(f"{label('t_min')} ({settings.t_min}) must be below {label('t_max')} ({settings.t_max})")
    return settings


def _checked(name: str, value: Any, whole: bool, bounds: tuple[float, float, bool, bool]) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not float(value).is_integer()):
        raise ValueError(f"{name} must be {'a whole number' if whole else 'a number'}, not {value!r}")
    low, high, above, below = bounds
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    if value < low or (above and value == low) or value > high or (below and value == high):
        lower = f"above {low:g}" if above else f"at least {low:g}"
        upper = "" if high == math.inf else f" and {'below' if below else 'at most'} {high:g}"
        raise ValueError(f"{name} must be {lower}{upper}, not {value!r}")
    return int(value) if whole else float(value)


@dataclass(frozen=True)
class GeneratorSettings:
    """The layer generator's shape and where it works; a template's `[generator]` table.

    width: channels of its first level (doubling per level); levels: resolutions it works at.
    resolution: the long side of its working image; unset, the prior's working size. A larger one distils
    at more detail than the prior sees: the composite is resized to the prior's size for the SDS loss.
    sample_steps: for flats, the DDIM steps of one direct sample of the prior whose region medians each seed's
    colours start from (`edit.Distillation`; 0: every region starts at mid grey). Priors that can't sample
    start at mid grey.
    """

    width: int = field(default=32, metadata=_bounds(8))
    levels: int = field(default=3, metadata=_bounds(1))
    resolution: int | None = field(default=None, metadata=_bounds(8))
    sample_steps: int = field(default=0, metadata=_bounds(0))

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
    greyscale: str | None = None  # the template to use instead when the input is a greyscale picture, not line art
    prior_options: tuple[tuple[str, Any], ...] = ()  # [prior]: the family's options by Config field name

    def render_prompt(self, text: str) -> str:
        return self.prompt.replace("{prompt}", text.strip())

    @property
    def paints_flats(self) -> bool:
        """Whether its (only) layer is flats: one colour per closed region of line art."""
        return any(layer.finish == "flats" for layer in self.layers)


_PLACEHOLDER = re.compile(r"\{(\w*)\}")
"""`{name}` in a prompt: only `{prompt}` is ever filled in, so any other is a typo sent to the model verbatim."""


def builtin_names() -> list[str]:
    return sorted(p.name[: -len(".toml")] for p in resources.files("lasagna_templates").iterdir() if p.name.endswith(".toml"))


def load_template(name_or_path: str) -> EditSpec:
    """A built-in template by name (`shade`) or a user's TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if path.is_dir():
            raise UsageError(f"template {path} is a folder, not a .toml file")
        if not path.is_file():
            raise UsageError(f"template file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"template file {path} is not a text (TOML) file") from None
        return parse_template(text, str(path))
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
    layers, defaults = data.get("layers"), data.get("defaults", {})
    if not layers:
        raise ValueError("needs at least one [[layers]] table")
    if not isinstance(layers, list) or not all(isinstance(entry, dict) for entry in layers):
        raise ValueError("'layers' must be [[layers]] tables")
    if not isinstance(defaults, dict):
        raise ValueError("'defaults' must be a [defaults] table")
    specs = tuple(_layer(entry) for entry in layers)
    if len({spec.name for spec in specs}) != len(specs):
        raise ValueError("layer names must be unique")
    flats = any(spec.finish == "flats" for spec in specs)
    if len(specs) > 1 and flats:
        raise ValueError('a finish = "flats" layer must be the template\'s only layer (flats are trained as one colour per region)')
    generator = _generator(data.get("generator", {}))
    if generator.sample_steps and not flats:
        raise ValueError('[generator] sample_steps needs a finish = "flats" layer (it starts region colours)')
    prompt = str(data.get("prompt", "{prompt}"))
    if "{prompt}" not in prompt:
        raise ValueError("'prompt' must contain the {prompt} placeholder")
    negative_prompt = str(data.get("negative_prompt", ""))
    for key, text, filled in (("prompt", prompt, {"prompt"}), ("negative_prompt", negative_prompt, set())):
        unknown = sorted(set(_PLACEHOLDER.findall(text)) - filled)
        if unknown:
            raise ValueError(f"'{key}' has the placeholder {{{unknown[0]}}}, but "
                             + ("only {prompt} is filled in" if filled else "nothing is filled into the negative prompt"))
    return EditSpec(
        name=str(_required(data, "name", "the template")),
        description=str(data.get("description", "")),
        prompt=prompt,
        negative_prompt=negative_prompt,
        model=str(data.get("model", "")),
        layers=specs,
        defaults=_settings(defaults),
        source=source,
        generator=generator,
        greyscale=str(data["greyscale"]) if "greyscale" in data else None,
        prior_options=_prior_options(data.get("prior", {})),
    )


def _prior_options(table: Any) -> tuple[tuple[str, Any], ...]:
    """The [prior] table: option names of the prior's family with text or true/false values (which names the
    family has is checked when it loads, in the command line's words)."""
    if not isinstance(table, dict):
        raise ValueError("'prior' must be a [prior] table")
    for key, value in table.items():
        if not isinstance(value, (str, bool)):
            raise ValueError(f"[prior] {key} must be text or true/false, not {value!r}")
    return tuple(sorted(table.items()))


def _layer(entry: dict[str, Any]) -> LayerSpec:
    where = f"layer '{_required(entry, 'name', 'each [[layers]] table')}'"

    def number(key: str, default: float | None = None, *, whole: bool = False) -> Any:
        value = _required(entry, key, where) if default is None else entry.get(key, default)
        return _checked(f"{where}: {key}", value, whole, _ANY_NUMBER)

    span = entry.get("range", [0.0, 1.0])
    if not isinstance(span, list) or len(span) != 2:
        raise ValueError(f"{where}: range must be two numbers [low, high], not {span!r}")
    low, high = (_checked(f"{where}: range", v, False, _ANY_NUMBER) for v in span)
    alpha = entry.get("alpha", False)
    if not isinstance(alpha, bool):
        raise ValueError(f"{where}: alpha must be true or false, not {alpha!r}")
    spec = LayerSpec(
        name=str(entry["name"]),
        blend_mode=BlendMode.parse(str(_required(entry, "blend_mode", where))),
        channels=number("channels", 1, whole=True),
        alpha=alpha,
        low=low,
        high=high,
        neutral=number("neutral"),
        opacity=number("opacity", 1.0),
        finish=str(entry.get("finish", "upsample")),
        tint=str(entry["tint"]) if "tint" in entry else None,
        lightness_tolerance=number("lightness_tolerance") if "lightness_tolerance" in entry else None,
    )
    if spec.lightness_tolerance is not None and (spec.blend_mode is not BlendMode.COLOR or spec.lightness_tolerance < 0):
        raise ValueError(f"{where}: lightness_tolerance is for a Color-mode layer, in L* >= 0")
    if spec.tint is not None and (spec.tint not in ("light", "shadow") or spec.channels != 1):
        raise ValueError(f"{where}: tint must be \"light\" or \"shadow\" on a grey layer (channels = 1), not {spec.tint!r}")
    if spec.finish not in FINISHES:
        raise ValueError(f"{where}: finish must be one of {', '.join(FINISHES)}, not {spec.finish!r}")
    if spec.finish == "flats" and spec.channels != 3:
        raise ValueError(f"{where}: finish = \"flats\" needs a colour layer (channels = 3)")
    if spec.channels not in (1, 3):
        raise ValueError(f"{where}: channels must be 1 (gray) or 3 (RGB), not {spec.channels}")
    if not 0.0 <= low < high <= 1.0 or not low <= spec.neutral <= high:
        raise ValueError(f"{where}: need 0 <= range low < high <= 1 and neutral inside the range")
    if spec.blend_mode is BlendMode.PASS_THROUGH or not 0.0 < spec.opacity <= 1.0:
        raise ValueError(f"{where}: pass_through is a group mode, and opacity must be in (0, 1]")
    return spec


_ANY_NUMBER = (-math.inf, math.inf, False, False)


def _required(table: dict[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise ValueError(f"{where} needs '{key}'")
    return table[key]


def _known_keys(cls: type, data: dict[str, Any], table: str) -> list[str]:
    """The fields of the settings dataclass `cls`; ValueError for a key of the TOML table that isn't one."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown [{table}] keys: {', '.join(unknown)} (known: {', '.join(known)})")
    return known


def _generator(data: dict[str, Any]) -> GeneratorSettings:
    _known_keys(GeneratorSettings, data, "generator")
    bounds = {f.name: f.metadata["bounds"] for f in fields(GeneratorSettings)}
    generator = GeneratorSettings(**{key: _checked(f"[generator] {key}", value, True, bounds[key]) for key, value in data.items()})
    if generator.resolution is not None and generator.resolution < generator.multiple:
        raise ValueError(f"[generator] resolution must be at least {generator.multiple} for {generator.levels} levels, "
                         f"not {generator.resolution}")
    return generator


def _settings(data: dict[str, Any]) -> DistillSettings:
    _known_keys(DistillSettings, data, "defaults")
    return settings_with(data, label=lambda key: f"[defaults] {key}")
