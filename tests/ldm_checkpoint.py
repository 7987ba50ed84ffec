"""Test support: write a CompVis/LDM single-file checkpoint from diffusers-layout modules.

CompVis-style DreamBooth trainers save one `.ckpt`/`.safetensors` in the original latent-diffusion
key layout. To test loading such files offline we produce one from our tiny models. The key
mapping is the inverse of what diffusers' single-file loader applies, generalised over the number
of blocks and layers per block (the tiny models have 2 blocks of 1 layer, SD 1.5 4 blocks of 2).
"""

from __future__ import annotations

from pathlib import Path

import torch


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    config = unet.config
    blocks, layers = len(config.block_out_channels), config.layers_per_block
    renames = [  # (diffusers prefix, LDM prefix), most specific first
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for i in range(blocks):
        for j in range(layers):
            ldm = f"input_blocks.{i * (layers + 1) + j + 1}."
            renames += [
                (f"down_blocks.{i}.resnets.{j}.", ldm + "0."),
                (f"down_blocks.{i}.attentions.{j}.", ldm + "1."),
            ]
        if i < blocks - 1:
            renames.append(
                (
                    f"down_blocks.{i}.downsamplers.0.conv.",
                    f"input_blocks.{(i + 1) * (layers + 1)}.0.op.",
                )
            )
        has_attention = "CrossAttn" in config.up_block_types[i]
        for j in range(layers + 1):
            ldm = f"output_blocks.{i * (layers + 1) + j}."
            renames += [
                (f"up_blocks.{i}.resnets.{j}.", ldm + "0."),
                (f"up_blocks.{i}.attentions.{j}.", ldm + "1."),
            ]
        if i < blocks - 1:
            renames.append(
                (
                    f"up_blocks.{i}.upsamplers.0.",
                    f"output_blocks.{i * (layers + 1) + layers}.{2 if has_attention else 1}.",
                )
            )
    resnet_parts = [
        ("norm1", "in_layers.0"),
        ("conv1", "in_layers.2"),
        ("norm2", "out_layers.0"),
        ("conv2", "out_layers.3"),
        ("time_emb_proj", "emb_layers.1"),
        ("conv_shortcut", "skip_connection"),
    ]
    converted = {}
    for key, value in unet.state_dict().items():
        new = key
        if "resnets" in key:
            for hf, sd in resnet_parts:
                new = new.replace(f".{hf}.", f".{sd}.")
        for hf, sd in renames:
            if new.startswith(hf):
                new = sd + new[len(hf) :]
                break
        converted["model.diffusion_model." + new] = value
    return converted


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    config = vae.config
    blocks, layers = len(config.block_out_channels), config.layers_per_block
    renames = [
        ("encoder.conv_norm_out.", "encoder.norm_out."),
        ("decoder.conv_norm_out.", "decoder.norm_out."),
    ]
    for part in ("encoder", "decoder"):
        renames += [
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1."),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2."),
            (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."),
        ]
    for i in range(blocks):
        for j in range(layers):
            renames.append(
                (f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.")
            )
        if i < blocks - 1:
            renames.append(
                (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            )
        # LDM numbers the decoder's up blocks in reverse.
        for j in range(layers + 1):
            renames.append(
                (f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{blocks - 1 - i}.block.{j}.")
            )
        if i < blocks - 1:
            renames.append(
                (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{blocks - 1 - i}.upsample.")
            )
    attention_parts = [
        ("group_norm.", "norm."),
        ("to_q.", "q."),
        ("to_k.", "k."),
        ("to_v.", "v."),
        ("to_out.0.", "proj_out."),
    ]
    converted = {}
    for key, value in vae.state_dict().items():
        new = key.replace("conv_shortcut", "nin_shortcut")
        for hf, sd in renames:
            if new.startswith(hf):
                new = sd + new[len(hf) :]
                break
        if ".mid.attn_1." in new:
            for hf, sd in attention_parts:
                new = new.replace(f"attn_1.{hf}", f"attn_1.{sd}")
            # LDM's attention projections are 1x1 convolutions.
            if new.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
                value = value.reshape(*value.shape, 1, 1)
        converted["first_stage_model." + new] = value
    return converted


def text_encoder_to_ldm(text_encoder) -> dict[str, torch.Tensor]:
    # SD 1.x keeps the Hugging Face CLIP layout under this prefix (with `text_model.`).
    converted = {}
    for key, value in text_encoder.state_dict().items():
        inner = key if key.startswith("text_model.") else f"text_model.{key}"
        converted["cond_stage_model.transformer." + inner] = value
    return converted


def write_ldm_checkpoint(text_encoder, unet, vae, path: Path) -> Path:
    state = {**unet_to_ldm(unet), **vae_to_ldm(vae), **text_encoder_to_ldm(text_encoder)}
    state = {k: v.contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path
