"""The command-line flags of the prior families' options, declared once for every command that loads a prior.

Each flag is named after a field of a family's `Config` (`fast_encoder` -> `--fast-encoder`; a test holds
every registered family to it). `with_prior_options(command)` adds the flags to a Typer command (Typer
reads the wrapper's `__signature__`) and hands the command one `prior_options` dict: the options the user
gave, by field name, ready for `PriorSettings(options=...)`. Which family accepts them is the loader's
business: it refuses one the chosen family lacks in one line naming the flag. Adding a prior option is
one Config field plus one `PriorFlag` here. No torch at import.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import typer


@dataclass(frozen=True)
class PriorFlag:
    """One option flag: the Config field it sets, its Typer option, and how a given value becomes the field's
    (a flag left at its default is not sent at all)."""

    field: str
    annotation: Any
    option: Any
    to_value: Callable[[Any], Any] = lambda value: value

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


PRIOR_FLAGS: tuple[PriorFlag, ...] = (
    PriorFlag("controlnet", Optional[str], typer.Option(
        None, "--controlnet", help="ControlNet conditioned on the base (hub id or folder), e.g. a relighting adapter (SD models).")),
    PriorFlag("model_config", Optional[str], typer.Option(
        None, "--model-config", help="For a single-file .safetensors checkpoint: a diffusers folder or hub id of the same architecture (SD models).")),
    PriorFlag("low_memory", bool, typer.Option(
        False, "--low-memory", help="Use less GPU memory, a little slower: encoder gradient checkpointing, VAE decoder and text encoder kept off the GPU (SD models).")),
    PriorFlag("fast_encoder", bool, typer.Option(
        False, "--fast-encoder", help="Encode the composite at half size for the gradient (a quarter of the encoder work or less, blurrier latents; SD models)."),
        lambda on: "half" if on else None),
    PriorFlag("vae", Optional[str], typer.Option(
        None, "--vae", help="A tiny autoencoder (diffusers AutoencoderTiny folder or hub id, e.g. madebyollin/taesd, madebyollin/taesdxl for SDXL) for the gradient path (SD models).")),
    PriorFlag("iclight", Optional[str], typer.Option(
        None, "--iclight", help="IC-Light relighting offset merged into the SD 1.5 --model: its .safetensors file, or lllyasviel/ic-light (pulled) for fc, fbc with --background.")),
    PriorFlag("background", Optional[str], typer.Option(
        None, "--background", help="The background picture an IC-Light fbc offset conditions on (with --iclight).")),
    PriorFlag("word_guidance", Optional[float], typer.Option(
        None, "--word-guidance", min=0.0, help="How much more a colour word in the prompt weighs than the line art: (1 + this) x --guidance; default 2 (built-in colouring prior).")),
)


def with_prior_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command(..., prior_options: dict)` as a Typer command with one flag per entry of PRIOR_FLAGS."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "prior_options"]
    added = [inspect.Parameter(f.field, inspect.Parameter.KEYWORD_ONLY, default=f.option, annotation=f.annotation)
             for f in PRIOR_FLAGS]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        options = {f.field: f.to_value(kwargs.pop(f.field)) for f in PRIOR_FLAGS}
        return command(**kwargs, prior_options={name: value for name, value in options.items() if value is not None and value is not False})

    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper
