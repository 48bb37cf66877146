"""Diffusion priors behind one interface (`Prior`), registered by family, and the two entry points the CLI calls.

`load_prior(PriorSettings(...))` looks the family up (`catalog`, `registry`) and never touches the network;
`pull_model` is the only function here that downloads. Importing this package is cheap: torch, diffusers,
transformers and huggingface_hub are imported inside the functions, and `Prior`, `Condition`,
`sds_gradient` (from `.base`, which needs torch) on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lasagna_core.errors import ModelError, reason
from lasagna_core.priors.catalog import families, family_for, family_named, load_prior
from lasagna_core.priors.registry import Capabilities, HubFiles, PriorFamily, PriorSettings, flag_of, register_prior

if TYPE_CHECKING:
    from lasagna_core.priors.base import Condition, Prior, sds_gradient

__all__ = [
    "Capabilities", "Condition", "HubFiles", "Prior", "PriorFamily", "PriorSettings", "families", "family_for",
    "family_named", "load_prior", "pull_model", "register_prior", "sds_gradient",
]

DEFAULT_PULL_FAMILY = "stable-diffusion"
"""The family whose adapters (`--controlnet`, `--vae`, `--iclight` repos) `lasagna models pull` fetches."""


def __getattr__(name: str) -> Any:
    if name in ("Condition", "Prior", "sds_gradient"):
        from lasagna_core.priors import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pull_model(model_id: str, *, family: str | None = None, adapter: str | None = None) -> Path:
    """Download into the HF cache exactly the files `family` loads (its `hub_files`); returns the snapshot folder.

    adapter: `model_id` is the repo of that family's option `adapter` ("controlnet": config.json + weights at
    its root; "iclight": IC-Light's offsets), fetched for DEFAULT_PULL_FAMILY unless `family` is given.
    family None for a model: the repo's model_index.json is fetched first and the family whose probe takes
    the snapshot is the one whose files follow (SDXL's second text encoder, SD's sub-folders).
    """
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import snapshot_download

    network_errors = (OSError, getattr(hf_errors, "HTTPError", OSError))

    def fetch(allow: list[str], ignore: tuple[str, ...] = ()) -> Path:
        try:
            return Path(snapshot_download(model_id, allow_patterns=allow, ignore_patterns=list(ignore)))
        except hf_errors.HFValidationError:
            raise ModelError(f"'{model_id}' is not a valid Hugging Face model id (expected OWNER/NAME).") from None
        except hf_errors.RepositoryNotFoundError:
            raise ModelError(
                f"Model '{model_id}' was not found on the Hugging Face hub (or it is gated: log in with `hf auth login`)."
            ) from None
        except network_errors as e:
            raise ModelError(f"Could not download '{model_id}': {reason(e)}") from None

    if family is not None or adapter is not None:
        chosen = family_named(family or DEFAULT_PULL_FAMILY)
    else:
        chosen = family_for(str(fetch(["model_index.json"])))
    files = chosen.prior.hub_files(adapter=adapter)
    if files is None:
        what = f"an {flag_of(adapter)} repo" if adapter else "a model"
        raise ModelError(f"the {chosen.title} prior has nothing to download as {what}.")
    return fetch(list(files.allow), files.ignore)
