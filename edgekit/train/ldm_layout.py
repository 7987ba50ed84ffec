"""diffusers -> original latent-diffusion (CompVis) key layout, for one single-file checkpoint.

Stable Diffusion UIs (AUTOMATIC1111, ComfyUI, InvokeAI) load fine-tuned models as one
`.safetensors` in the layout of the original CompVis code: the UNet under
`model.diffusion_model.`, the VAE under `first_stage_model.`, the CLIP text encoder under
`cond_stage_model.transformer.`. The renames are those that diffusers' single-file loader undoes
(diffusers/loaders/single_file_utils.py), generalized over the number of blocks and layers per
block read from the configs, so SD 1.x and the small test models convert alike.

Every key is renamed through a table of module prefixes (longest match wins); a key the table
does not cover is an error, never dropped, so a checkpoint is complete or not written. The
renames are pure: tensors keep their values (the VAE's attention projections become the 1x1
convolutions LDM uses, a reshape), so loading the file back gives the same weights bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."

# Inside a UNet resnet: diffusers name -> LDM ResBlock name.
_UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# Inside a VAE resnet only the shortcut is renamed; inside its mid-block attention, all of it.
_VAE_RESNET_PARTS = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}
_VAE_ATTENTION_PARTS = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_CLIP_TEXT_MODULES = {"embeddings", "encoder", "final_layer_norm"}
# The LDM attention projections that are 1x1 convolutions where diffusers has linear layers.
_VAE_CONV_PROJECTIONS = {"q", "k", "v", "proj_out"}


class LdmLayoutError(EdgekitError):
    """A model whose weights the SD 1.x single-file layout has no place for."""

    exit_code = 3


def unet_prefixes(config: Any) -> dict[str, str]:
    """diffusers module prefix -> LDM prefix, for a UNet2DConditionModel config."""
    blocks = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    table = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "mid_block.attentions.0.": "middle_block.1.",
    }
    resnets = {"mid_block.resnets.0.": "middle_block.0.", "mid_block.resnets.1.": "middle_block.2."}
    for i in range(blocks):
        # LDM numbers the input blocks consecutively: conv_in, then per down block its layers
        # and its downsampler; the output blocks likewise, each up block one layer longer.
        for j in range(layers):
            ldm = f"input_blocks.{1 + i * (layers + 1) + j}."
            resnets[f"down_blocks.{i}.resnets.{j}."] = ldm + "0."
            table[f"down_blocks.{i}.attentions.{j}."] = ldm + "1."
        if i < blocks - 1:
            ldm = f"input_blocks.{(i + 1) * (layers + 1)}.0.op."
            table[f"down_blocks.{i}.downsamplers.0.conv."] = ldm
        for j in range(layers + 1):
            ldm = f"output_blocks.{i * (layers + 1) + j}."
            resnets[f"up_blocks.{i}.resnets.{j}."] = ldm + "0."
            table[f"up_blocks.{i}.attentions.{j}."] = ldm + "1."
        if i < blocks - 1:
            # The upsampler follows the resnet (and the attention, where the block has one).
            position = 2 if "CrossAttn" in config["up_block_types"][i] else 1
            ldm = f"output_blocks.{i * (layers + 1) + layers}.{position}."
            table[f"up_blocks.{i}.upsamplers.0."] = ldm
    for diffusers_prefix, ldm_prefix in resnets.items():
        for part, ldm_part in _UNET_RESNET_PARTS.items():
            table[f"{diffusers_prefix}{part}."] = f"{ldm_prefix}{ldm_part}."
    return table


def vae_prefixes(config: Any) -> dict[str, str]:
    """diffusers module prefix -> LDM prefix, for an AutoencoderKL config."""
    blocks = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    table = {"quant_conv.": "quant_conv.", "post_quant_conv.": "post_quant_conv."}
    resnets: dict[str, str] = {}
    for part in ("encoder", "decoder"):
        table[f"{part}.conv_in."] = f"{part}.conv_in."
        table[f"{part}.conv_out."] = f"{part}.conv_out."
        table[f"{part}.conv_norm_out."] = f"{part}.norm_out."
        resnets[f"{part}.mid_block.resnets.0."] = f"{part}.mid.block_1."
        resnets[f"{part}.mid_block.resnets.1."] = f"{part}.mid.block_2."
        for name, ldm_name in _VAE_ATTENTION_PARTS.items():
            table[f"{part}.mid_block.attentions.0.{name}."] = f"{part}.mid.attn_1.{ldm_name}."
    for i in range(blocks):
        for j in range(layers):
            resnets[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
        # LDM numbers the decoder's up blocks from the lowest resolution up: in reverse.
        up = blocks - 1 - i
        for j in range(layers + 1):
            resnets[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{up}.block.{j}."
        if i < blocks - 1:
            table[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
            table[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{up}.upsample."
    for diffusers_prefix, ldm_prefix in resnets.items():
        for part, ldm_part in _VAE_RESNET_PARTS.items():
            table[f"{diffusers_prefix}{part}."] = f"{ldm_prefix}{ldm_part}."
    return table


def rename(key: str, table: dict[str, str], what: str) -> str:
    """`key` with its longest prefix in `table` replaced."""
    parts = key.split(".")
    for end in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:end]) + "."
        if prefix in table:
            return table[prefix] + key[len(prefix) :]
    raise LdmLayoutError(
        f"The {what} weight '{key}' has no place in the SD 1.x single-file layout.",
        hint="this architecture is not SD 1.x-shaped; use the diffusers folder instead.",
    )


def unet_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    table = unet_prefixes(config)
    return {UNET_PREFIX + rename(key, table, "UNet"): value for key, value in state.items()}


def vae_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    table = vae_prefixes(config)
    converted = {}
    for key, value in state.items():
        new = rename(key, table, "VAE")
        module, _, parameter = new.rpartition(".")
        projection = module.rpartition(".")[2] in _VAE_CONV_PROJECTIONS
        if ".mid.attn_1." in new and projection and parameter == "weight":
            value = value.reshape(*value.shape, 1, 1)  # (C, C) -> (C, C, 1, 1)
        converted[VAE_PREFIX + new] = value
    return converted


def text_encoder_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SD 1.x keeps Hugging Face's CLIP text model layout under `text_model.` (transformers 5's
    CLIPTextModel holds those modules directly, without the `text_model.` level)."""
    converted = {}
    for key, value in state.items():
        inner = key.removeprefix("text_model.")
        if inner.split(".")[0] not in _CLIP_TEXT_MODULES:
            raise LdmLayoutError(
                f"The text encoder weight '{key}' is not part of SD 1.x's CLIP text model.",
                hint="use the diffusers folder instead of the single file.",
            )
        converted[f"{TEXT_ENCODER_PREFIX}text_model.{inner}"] = value
    return converted


def check_convertible(unet, vae, text_encoder) -> None:
    """Raise LdmLayoutError now, before training, if the end of the run could not convert."""
    for module, table, what in (
        (unet, unet_prefixes(unet.config), "UNet"),
        (vae, vae_prefixes(vae.config), "VAE"),
    ):
        for key in module.state_dict():
            rename(key, table, what)
    text_encoder_to_ldm(dict.fromkeys(text_encoder.state_dict()))


def save_ldm_checkpoint(path: Path, unet, vae, text_encoder) -> Path:
    """One safetensors file holding the three modules in the LDM layout, in their dtypes."""
    from safetensors.torch import save_file

    state = {
        **unet_to_ldm(unet.state_dict(), unet.config),
        **vae_to_ldm(vae.state_dict(), vae.config),
        **text_encoder_to_ldm(text_encoder.state_dict()),
    }
    save_file({key: value.detach().contiguous() for key, value in state.items()}, str(path))
    return path
