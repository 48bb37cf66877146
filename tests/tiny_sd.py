"""Tiny Stable Diffusion models of the real architectures, saved the way users' models are saved.

Import from test files as `from tests.tiny_sd import make_tiny_sd` (tests/ is a package).

API (stable; other test files depend on it):

    make_tiny_sd(folder, *, controlnet_folder=None, prediction_type="epsilon", safe_serialization=True,
                 vae_blocks=4) -> Path
        Writes a StableDiffusionPipeline.save_pretrained folder (model_index.json, unet/, vae/,
        text_encoder/, tokenizer/, scheduler/) into `folder` and returns it; with `controlnet_folder`
        also writes a ControlNetModel (from_unet, zero-convs randomised so it changes the output).
        prediction_type: "epsilon" (SD 1.x-like, PNDM scheduler config) or "v_prediction" (SD 2.x-like,
        DDIM scheduler config). safe_serialization=False writes pickle .bin weights (for refusal tests).
        vae_blocks: the VAE's depth; it downsamples by 2 ** (vae_blocks - 1) (8 by default, 2 with 2 blocks).
        The model: 64 px working resolution (U-Net sample_size 8 x VAE factor 8), sides multiples of 16,
        CLIP text encoder of width 32 with a byte-level BPE vocab of 514 tokens, max length 77.
        Deterministic (seeded without touching the caller's RNG state); about a second on a CPU.

    make_tiny_single_file(folder, out_file) -> Path
        Converts a make_tiny_sd folder into one original-format (LDM keys) .safetensors checkpoint, the
        kind A1111/ComfyUI users have; load it with config=folder.

    make_iclight_offset(folder, out_file, *, channels=8, seed=4) -> Path
        An IC-Light offset file for a make_tiny_sd model, made as the real ones are (module function doc).

    tiny_vae(vae_blocks=4, **config), _unet_to_ldm, _vae_to_ldm, _write_tokenizer_files: shared with
        tests/tiny_sdxl.py.

    TINY_RESOLUTION = 64, TINY_MULTIPLE = 16
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_RESOLUTION = 64
TINY_MULTIPLE = 16
_TEXT_WIDTH = 32


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _write_tokenizer_files(folder: Path) -> tuple[Path, Path, int]:
    """CLIP's vocabulary layout without merges: 256 byte tokens, 256 byte+</w> tokens, then the two specials."""
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")
    return vocab_file, merges_file, len(vocab)


def tiny_vae(vae_blocks: int = 4, **config):
    """The tiny models' AutoencoderKL (8x downsampling with 4 blocks), from the caller's RNG state."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * vae_blocks,
        up_block_types=("UpDecoderBlock2D",) * vae_blocks,
        block_out_channels=(8, 16, 16, 16)[:vae_blocks],
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=TINY_RESOLUTION,
        **config,
    )


def _build(tmp: Path, prediction_type: str, with_controlnet: bool, vae_blocks: int = 4):
    from diffusers import ControlNetModel, DDIMScheduler, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=_TEXT_WIDTH,
        attention_head_dim=8,
    )
    torch.manual_seed(1)
    vae = tiny_vae(vae_blocks)
    vocab_file, merges_file, vocab_size = _write_tokenizer_files(tmp)
    tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=_TEXT_WIDTH,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )
    sd_schedule = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
    }
    if prediction_type == "epsilon":
        scheduler = PNDMScheduler(**sd_schedule, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    else:
        scheduler = DDIMScheduler(
            **sd_schedule, prediction_type=prediction_type, clip_sample=False, set_alpha_to_one=False, steps_offset=1
        )
    controlnet = None
    if with_controlnet:
        torch.manual_seed(3)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 16, 16, 16))
        # from_unet zero-initialises the output convs, which would make the ControlNet a no-op.
        zero_convs = [controlnet.controlnet_cond_embedding.conv_out, *controlnet.controlnet_down_blocks]
        for conv in zero_convs + [controlnet.controlnet_mid_block]:
            torch.nn.init.normal_(conv.weight, std=0.2)
            torch.nn.init.normal_(conv.bias, std=0.2)
    return unet, vae, text_encoder, tokenizer, scheduler, controlnet


def make_tiny_sd(
    folder: Path,
    *,
    controlnet_folder: Path | None = None,
    prediction_type: str = "epsilon",
    safe_serialization: bool = True,
    vae_blocks: int = 4,
) -> Path:
    """Write a tiny SD pipeline folder (and optionally a ControlNet folder); returns `folder`."""
    import tempfile

    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as tmp:
        unet, vae, text_encoder, tokenizer, scheduler, controlnet = _build(
            Path(tmp), prediction_type, controlnet_folder is not None, vae_blocks
        )
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(folder, safe_serialization=safe_serialization)
        # Hub SD repos ship the slow-tokenizer files (vocab.json + merges.txt), not tokenizer.json.
        _write_tokenizer_files(folder / "tokenizer")
        (folder / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
        if controlnet is not None:
            controlnet.save_pretrained(Path(controlnet_folder), safe_serialization=safe_serialization)
    return folder


# ---------------------------------------------------------------- diffusers -> original (LDM) key names

_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]


def _rename_resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    for hf, ldm in _RESNET:
        if head == hf:
            return f"{ldm}.{tail}"
    return rest


def _unet_to_ldm(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Inverse of diffusers' convert_ldm_unet_checkpoint for SD- and SDXL-style U-Nets (any depth, any
    layers_per_block; SDXL's add_embedding is the original's label_emb)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    fixed = {**DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"], **DIFFUSERS_TO_LDM_MAPPING["unet"]["addition_embed_type"]}
    per = config["layers_per_block"] + 1
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        parts = key.split(".")
        if key in fixed:
            new = fixed[key]
        elif parts[0] == "down_blocks":
            b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"input_blocks.{b * per + j + 1}.0.{_rename_resnet(rest)}"
            elif kind == "attentions":
                new = f"input_blocks.{b * per + j + 1}.1.{rest}"
            else:  # downsamplers.0.conv.*
                new = f"input_blocks.{(b + 1) * per}.0.op.{'.'.join(parts[5:])}"
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = f"middle_block.{2 * j}.{_rename_resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"output_blocks.{b * per + j}.0.{_rename_resnet(rest)}"
            elif kind == "attentions":
                new = f"output_blocks.{b * per + j}.1.{rest}"
            else:  # upsamplers.0.conv.*
                new = f"output_blocks.{b * per + per - 1}.{2 if up_has_attn[b] else 1}.{rest}"
        else:
            raise KeyError(f"unexpected U-Net key {key}")
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Inverse of diffusers' convert_ldm_vae_checkpoint."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    fixed = DIFFUSERS_TO_LDM_MAPPING["vae"]
    n_up = len(config["up_block_types"])
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        parts = key.split(".")
        side = parts[0]
        if key in fixed:
            new = fixed[key]
        elif parts[1] == "down_blocks":
            i = parts[2]
            if parts[3] == "resnets":
                new = f"{side}.down.{i}.block.{parts[4]}." + ".".join(parts[5:])
            else:
                new = f"{side}.down.{i}.downsample.conv." + ".".join(parts[6:])
        elif parts[1] == "up_blocks":
            i = n_up - 1 - int(parts[2])
            if parts[3] == "resnets":
                new = f"{side}.up.{i}.block.{parts[4]}." + ".".join(parts[5:])
            else:
                new = f"{side}.up.{i}.upsample.conv." + ".".join(parts[6:])
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            new = f"{side}.mid.block_{int(parts[3]) + 1}." + ".".join(parts[4:])
        elif parts[1] == "mid_block":  # attentions.0.<name>.<param>
            name = ".".join(parts[4:-1])
            new = f"{side}.mid.attn_1.{attn[name]}.{parts[-1]}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        else:
            raise KeyError(f"unexpected VAE key {key}")
        out["first_stage_model." + new.replace("conv_shortcut", "nin_shortcut")] = value
    return out


def make_tiny_single_file(folder: Path, out_file: Path) -> Path:
    """One original-format .safetensors checkpoint (U-Net + VAE + CLIP) from a make_tiny_sd folder."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)

    def part(sub: str, name: str) -> tuple[dict, dict]:
        cfg = json.loads((folder / sub / "config.json").read_text())
        return load_file(folder / sub / name), cfg

    unet, unet_cfg = part("unet", "diffusion_pytorch_model.safetensors")
    vae, vae_cfg = part("vae", "diffusion_pytorch_model.safetensors")
    text, _ = part("text_encoder", "model.safetensors")
    state = {**_unet_to_ldm(unet, unet_cfg), **_vae_to_ldm(vae, vae_cfg)}
    # Original checkpoints nest CLIP under text_model.; transformers >= 5.6 saves CLIPTextModel flattened.
    for key, value in text.items():
        state["cond_stage_model.transformer." + (key if key.startswith("text_model.") else "text_model." + key)] = value
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_file))
    return Path(out_file)


# ---------------------------------------------------------------- IC-Light offsets


def make_iclight_offset(folder: Path, out_file: Path, *, channels: int = 8, seed: int = 4) -> Path:
    """An IC-Light offset for the make_tiny_sd model at `folder`, made the way lllyasviel's files are: the keys
    of the U-Net with conv_in widened to `channels` inputs (8 fc, 12 fbc), each value = a "trained" widened
    U-Net's weight minus the widened base's. The trained model here is the widened base (new conv_in inputs
    zero, old copied, bias kept) plus random changes, strong on conv_in's new inputs so that the condition
    visibly steers the network. Written with the same dtype as the base (float32)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    base = UNet2DConditionModel.from_pretrained(Path(folder) / "unet").state_dict()
    conv = base["conv_in.weight"]
    widened = dict(base)
    widened["conv_in.weight"] = torch.cat([conv, conv.new_zeros(conv.shape[0], channels - conv.shape[1], *conv.shape[2:])], 1)
    g = torch.Generator().manual_seed(seed)
    trained = {k: v + (0.3 if k == "conv_in.weight" else 0.01) * torch.randn(v.shape, generator=g) for k, v in widened.items()}
    save_file({k: (trained[k] - widened[k]).contiguous() for k in widened}, str(out_file))
    return Path(out_file)
