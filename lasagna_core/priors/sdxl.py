"""Stable Diffusion XL base as an SDS prior: the Stable Diffusion family's prior with SDXL's conditioning.

What differs from SD 1.x/2.x, as diffusers' StableDiffusionXLPipeline does it: two text encoders (CLIP ViT-L
and OpenCLIP bigG), whose penultimate hidden states are concatenated (768 + 1280 = 2048 wide) for the
cross-attention; the second one's pooled, projected embedding and six "time ids" (original size, crop
top-left, target size: here the working size, uncropped) go to the U-Net's "text_time" embedding; an empty
negative prompt becomes zero embeddings where the pipeline says so (`force_zeros_for_empty_prompt`, SDXL
base's setting); SDXL's VAE overflows in fp16, so with fp16 weights it stays in float32 unless its config
says it needn't (`force_upcast`, as diffusers does), and `--vae` takes SDXL's TAESD (madebyollin/taesdxl).
Everything else (encoding the composite, the schedule, the one SDS loss, low memory) is the SD family's.

A model is SDXL when its folder's model_index.json lists `text_encoder_2`, or its single `.safetensors` file
has the second text encoder's original keys (`conditioner.embedders.1.`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lasagna_core.errors import ModelError
from lasagna_core.priors import sd_components as parts
from lasagna_core.priors.registry import Capabilities, register_prior
from lasagna_core.priors.stable_diffusion import LatentConfig, StableDiffusionPrior, TextCondition, check_base

SINGLE_FILE_MARK = "conditioner.embedders.1."
"""Key prefix of SDXL base's second text encoder in an original-format checkpoint."""


@dataclass(frozen=True, kw_only=True)
class XLCondition(TextCondition):
    """pooled: the second encoder's pooled embeddings `[2, P]` (negative row first); time_ids `[2, 6]`."""

    pooled: Tensor
    time_ids: Tensor


def is_sdxl(model: str) -> bool:
    """Whether `--model` names an SDXL model: cheap (a header or model_index.json), never raises."""
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            return False
        try:
            return any(key.startswith(SINGLE_FILE_MARK) for key in parts.header_shapes(path))
        except ModelError:
            return False
    try:
        index = json.loads((parts.resolve_model_folder(model) / "model_index.json").read_text(encoding="utf-8"))
    except (ModelError, OSError, ValueError):
        return False
    return isinstance(index, dict) and "text_encoder_2" in index


@register_prior("sdxl", title="Stable Diffusion XL")
class StableDiffusionXLPrior(StableDiffusionPrior):
    """SDS through a frozen SDXL base U-Net. Public modules as the SD prior's, plus `text_encoder_2` and
    `tokenizer_2`."""

    @dataclass(frozen=True)
    class Config(LatentConfig):
        """The options every Stable Diffusion family has (ControlNets and IC-Light are SD 1.5's)."""

    capabilities = Capabilities(samples=False, encoder=True, conditions_on=frozenset({"text"}))
    architecture = parts.SDXL

    def __init__(self, *, text_encoder_2: Any, tokenizer_2: Any, zero_empty_negative: bool = True, **common: Any) -> None:
        # Set before the shared set-up, which checks, moves and freezes every text encoder.
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.zero_empty_negative = zero_empty_negative
        super().__init__(**common)
        if self.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
            self.vae.to(torch.float32)

    @classmethod
    def probe(cls, model: str) -> bool:
        return is_sdxl(model)

    @classmethod
    def load(cls, model: str, config: Any = None, *, device: torch.device | str, dtype: torch.dtype) -> StableDiffusionXLPrior:
        """From an SDXL diffusers folder, a cached hub id or a single `.safetensors` checkpoint."""
        config = config or cls.Config()
        loaded = parts.load_model(model, model_config=config.model_config, dtype=dtype, architecture=cls.architecture)
        return cls(text_encoder_2=loaded.text_encoder_2, tokenizer_2=loaded.tokenizer_2,
                   zero_empty_negative=loaded.zero_empty_negative, **cls._loaded(model, loaded, config, device, dtype))

    @classmethod
    def capabilities_for(cls, config: Any) -> Capabilities:
        return cls.capabilities

    def _text_widths(self) -> tuple[int, int | None]:
        width = int(self.text_encoder.config.hidden_size) + int(self.text_encoder_2.config.hidden_size)
        return width, int(self.text_encoder_2.config.projection_dim)

    def _networks(self) -> list[Any]:
        return [*super()._networks(), self.text_encoder_2]

    def _enable_low_memory(self) -> None:
        super()._enable_low_memory()
        self.text_encoder_2.to("cpu", torch.float32)

    @torch.no_grad()
    def condition(self, prompt: str, base: Tensor, negative_prompt: str = "", *, matte: Tensor | None = None) -> XLCondition:
        check_base(base)
        hidden = []
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = parts.tokenize(tokenizer, [negative_prompt, prompt]).input_ids.to(encoder.device)
            out = encoder(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
        embeddings, pooled = torch.cat(hidden, dim=-1), out[0]  # pooled: the second encoder's text_embeds
        if self.zero_empty_negative and not negative_prompt:
            embeddings = torch.cat([torch.zeros_like(embeddings[:1]), embeddings[1:]])
            pooled = torch.cat([torch.zeros_like(pooled[:1]), pooled[1:]])
        height, width = base.shape[-2:]
        time_ids = torch.tensor([[height, width, 0, 0, height, width]] * 2, device=self.device, dtype=self.dtype)
        return XLCondition(prompt, negative_prompt, embeddings=embeddings.to(self.device, self.dtype),
                           pooled=pooled.to(self.device, self.dtype), time_ids=time_ids)

    def _unet_extras(self, cond: TextCondition, batch: int) -> dict[str, Any]:
        if not isinstance(cond, XLCondition):
            raise TypeError(f"an SDXL prior needs an XLCondition from its condition(), got {type(cond).__name__}")
        return {"added_cond_kwargs": {"text_embeds": cond.pooled.repeat_interleave(batch, dim=0),
                                      "time_ids": cond.time_ids.repeat_interleave(batch, dim=0)}}
