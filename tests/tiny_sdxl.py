"""A tiny Stable Diffusion XL base of the real architecture, saved the way users' SDXL models are saved.

    make_tiny_sdxl(folder) -> Path
        A StableDiffusionXLPipeline.save_pretrained folder (model_index.json with text_encoder_2 and
        force_zeros_for_empty_prompt, unet/, vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/,
        scheduler/). The U-Net has SDXL's "text_time" conditioning (pooled text of width 48 + 6 time ids x 8)
        and cross-attends to both encoders' hidden states (32 + 48); the second text encoder is a
        CLIPTextModelWithProjection with 10 layers, so that diffusers' single-file inference (which looks for
        its 10th block) calls a converted checkpoint "xl_base". 64 px working resolution, like tests/tiny_sd.py.
        Deterministic; a few seconds on a CPU.

    make_tiny_sdxl_single_file(folder, out_file) -> Path
        The same model as one original-format .safetensors checkpoint (what A1111/ComfyUI users have), in
        the key layout diffusers' SDXL single-file conversion reads: model.diffusion_model.* (U-Net, with
        add_embedding as label_emb), first_stage_model.* (VAE), conditioner.embedders.0.transformer.* (CLIP
        ViT-L, transformers' names) and conditioner.embedders.1.model.* (OpenCLIP's names: resblocks, ln_1,
        attn.in_proj_weight holding q, k and v, c_fc, c_proj, text_projection transposed).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from tests.tiny_sd import _TEXT_WIDTH, TINY_RESOLUTION, _unet_to_ldm, _vae_to_ldm, _write_tokenizer_files, tiny_vae

TIME_EMBED = 8
SECOND_ENCODER_LAYERS = 10
SECOND_WIDTH = 48
"""Wider than the first encoder, as bigG (1280) is than ViT-L (768): diffusers' single-file loader tells the
two apart by their position embeddings' width."""


def _text_config(vocab_size: int, layers: int, width: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=37, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1, projection_dim=width,
    )


def make_tiny_sdxl(folder: Path) -> Path:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(10)
        unet = UNet2DConditionModel(
            sample_size=TINY_RESOLUTION // 8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=(2, 4), use_linear_projection=True,
            transformer_layers_per_block=(1, 2), cross_attention_dim=_TEXT_WIDTH + SECOND_WIDTH, addition_embed_type="text_time",
            addition_time_embed_dim=TIME_EMBED, projection_class_embeddings_input_dim=SECOND_WIDTH + 6 * TIME_EMBED,
        )
        torch.manual_seed(11)
        vae = tiny_vae(scaling_factor=0.13025)
        _, _, vocab_size = _write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
        torch.manual_seed(12)
        text_encoder = CLIPTextModel(_text_config(vocab_size, 2, _TEXT_WIDTH))
        torch.manual_seed(13)
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(vocab_size, SECOND_ENCODER_LAYERS, SECOND_WIDTH))
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                         tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
        pipe.save_pretrained(folder, safe_serialization=True)
    for sub in ("tokenizer", "tokenizer_2"):  # the slow-tokenizer files, as the hub's SDXL repos ship them
        _write_tokenizer_files(folder / sub)
        (folder / sub / "tokenizer.json").unlink(missing_ok=True)
    return folder


_OPEN_CLIP_NAMES = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
                    ("self_attn.out_proj", "attn.out_proj")]


def _open_clip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """transformers' CLIPTextModelWithProjection -> OpenCLIP's text tower keys (inverse of diffusers'
    convert_open_clip_checkpoint)."""
    out = {
        prefix + "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        prefix + "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        prefix + "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        prefix + "text_projection": sd["text_projection.weight"].T.contiguous(),
    }
    layer = "text_model.encoder.layers."
    for key, value in sd.items():
        if not key.startswith(layer) or ".self_attn.q_proj." in key or ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            continue
        rest = key[len(layer):]
        for hf, oc in _OPEN_CLIP_NAMES:
            rest = rest.replace(hf, oc)
        out[prefix + "transformer.resblocks." + rest] = value
    for index in range(SECOND_ENCODER_LAYERS):
        attn = f"{layer}{index}.self_attn."
        for kind in ("weight", "bias"):
            out[f"{prefix}transformer.resblocks.{index}.attn.in_proj_{kind}"] = torch.cat(
                [sd[f"{attn}{p}_proj.{kind}"] for p in ("q", "k", "v")])
    return out


def make_tiny_sdxl_single_file(folder: Path, out_file: Path) -> Path:
    from safetensors.torch import load_file, save_file

    folder = Path(folder)

    def part(sub: str, name: str) -> tuple[dict, dict]:
        return load_file(folder / sub / name), json.loads((folder / sub / "config.json").read_text())

    unet, unet_cfg = part("unet", "diffusion_pytorch_model.safetensors")
    vae, vae_cfg = part("vae", "diffusion_pytorch_model.safetensors")
    first, _ = part("text_encoder", "model.safetensors")
    second, _ = part("text_encoder_2", "model.safetensors")
    state = {**_unet_to_ldm(unet, unet_cfg), **_vae_to_ldm(vae, vae_cfg),
             **_open_clip(second, "conditioner.embedders.1.model.")}
    for key, value in first.items():  # transformers >= 5.6 saves CLIPTextModel without its text_model. prefix
        state["conditioner.embedders.0.transformer." + (key if key.startswith("text_model.") else "text_model." + key)] = value
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_file))
    return Path(out_file)
