"""The prior families Lasagna can load, and the one settings object that chooses and configures a prior.

A family is one module with one registration (threestudio's guidance modules)::

    @register_prior("builtin", title="built-in")
    class BuiltinPrior(Prior):
        @dataclass(frozen=True)
        class Config:             # the family's own options: one field each, help in the metadata
            ...
        capabilities = Capabilities(samples=True, conditions_on=frozenset({"direction", "image"}))

        @classmethod
        def probe(cls, model: str) -> bool: ...      # can this family load `--model MODEL`?

        @classmethod
        def load(cls, model, config, *, device, dtype) -> "BuiltinPrior": ...

`catalog.load_prior(PriorSettings(...))` asks the families in registration order whether they can load the
model; the catch-all family (Stable Diffusion, which takes any folder or hub id) registers with
`fallback=True` and is asked last, whatever the import order. Torch-free, so `--help` and settings objects
stay cheap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lasagna_core.errors import ModelError

CONDITIONS = ("text", "direction", "image", "hints", "color-words", "matte")


@dataclass(frozen=True)
class Capabilities:
    """What a prior can truthfully do, so callers ask instead of guessing with hasattr.

    samples: `Prior.sample` generates images (eval's direct baseline); otherwise it refuses.
    encoder: an encoder sits between the pixels and the diffused variable (a latent model).
    conditions_on: what the prompt and the base become for the network: "text" (embeddings), "direction"
        (a light-direction class parsed from the prompt), "image" (the base as a hint), "hints" (colour hints,
        `--hints` / a Hints layer: `condition(..., hints=)` takes them), "color-words" (a colour class parsed
        from the prompt), "matte" (the edit's coverage, where the subject is: `condition(..., matte=)` takes it).
    rescales: the prior scores pictures smaller than its working size (sides still multiples of its `multiple`)
        with the same condition, as the coarse steps of `DistillSettings.coarse_steps` ask.
    """

    samples: bool = False
    encoder: bool = False
    rescales: bool = False
    conditions_on: frozenset[str] = frozenset({"text"})

    def __post_init__(self) -> None:
        unknown = set(self.conditions_on) - set(CONDITIONS)
        if unknown:
            raise ValueError(f"unknown conditions {sorted(unknown)}; known: {', '.join(CONDITIONS)}")


@dataclass(frozen=True)
class PriorSettings:
    """Which prior, where it runs, and its family's options: the one object that travels from the command
    line to the loader, to worker processes and Ray tasks (frozen, hashable, picklable) and to the sidecar.

    model: what `--model` names (None: the template's default, filled in by the edit flow).
    device, precision: the CLI strings (see runtime.py).
    options: the options asked for, by the family Config's field names; a mapping is accepted and kept as
        sorted (name, value) pairs so that the settings stay hashable. Options not given take the
        family's defaults.
    """

    model: str | None = None
    device: str = "auto"
    precision: str = "auto"
    options: tuple[tuple[str, Any], ...] | Mapping[str, Any] = ()

    def __post_init__(self) -> None:
        pairs = self.options.items() if isinstance(self.options, Mapping) else self.options
        object.__setattr__(self, "options", tuple(sorted((str(k), v) for k, v in pairs)))

    def option_values(self) -> dict[str, Any]:
        return dict(self.options)  # type: ignore[arg-type]


def flag_of(name: str) -> str:
    """The command-line flag of a Config field: `fast_encoder` -> `--fast-encoder` (tests hold the CLI to it)."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class PriorFamily:
    """One registered family: its name, the prior class, and whether it is the catch-all asked last."""

    name: str
    title: str  # for messages: "the built-in prior", "a Stable Diffusion model"
    prior: type[Any]  # a `base.Prior` subclass (not imported here: base imports this module)
    fallback: bool = False

    @property
    def config_fields(self) -> tuple[dataclasses.Field[Any], ...]:
        return dataclasses.fields(self.prior.Config)

    @property
    def option_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.config_fields)

    def config(self, options: Mapping[str, Any]) -> Any:
        """The family's Config with `options` applied; ModelError in one line naming any flag it lacks."""
        foreign = [name for name in options if name not in self.option_names]
        if foreign:
            flags = " and ".join(flag_of(name) for name in foreign)
            owners = sorted({f.title for f in registered() if set(foreign) <= f.option_names})
            need = ("needs " if len(foreign) == 1 else "need ") + (f"a {' or '.join(owners)} model" if owners else "another prior")
            raise ModelError(f"{flags} {need}; the {self.title} prior has no such option{'s' if len(foreign) > 1 else ''}.")
        return self.prior.Config(**options)


_FAMILIES: dict[str, PriorFamily] = {}

P = TypeVar("P", bound=type)


def register_prior(name: str, *, title: str | None = None, fallback: bool = False) -> Callable[[P], P]:
    """Class decorator: register a Prior subclass as the family `name` (see the module doc)."""

    def register(cls: P) -> P:
        if name in _FAMILIES and _FAMILIES[name].prior is not cls:
            raise ValueError(f"a prior family named '{name}' is already registered")
        if fallback and any(f.fallback and f.name != name for f in _FAMILIES.values()):
            raise ValueError(f"only one catch-all prior family may be registered; '{name}' would be the second")
        if not dataclasses.is_dataclass(cls.Config):
            raise TypeError(f"{cls.__name__}.Config must be a dataclass")
        cls.family = name
        _FAMILIES[name] = PriorFamily(name, title or name, cls, fallback)
        return cls

    return register


def registered() -> list[PriorFamily]:
    """The families registered so far, in the order they are asked: registration order, the catch-all last.
    `catalog.families()` first imports Lasagna's own family modules."""
    ordered = list(_FAMILIES.values())
    return [f for f in ordered if not f.fallback] + [f for f in ordered if f.fallback]


@dataclass(frozen=True)
class HubFiles:
    """What `lasagna models pull` downloads for a family: snapshot_download's allow/ignore patterns."""

    allow: tuple[str, ...]
    ignore: tuple[str, ...] = field(default=())
