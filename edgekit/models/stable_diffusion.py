"""Stable Diffusion components: diffusers pipeline folders, bare UNet folders, presets.

Each component is wrapped into a module with plain tensor inputs and outputs, at a fixed latent
size, because every mobile format wants static shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.errors import SourceError, UnknownChoiceError
from edgekit.models.base import LoadedModel, SourceInfo, TensorSpec, sha256_of_files, sha256_of_text
from edgekit.models.init import reinitialize
from edgekit.models.weights import check_weight_files

# CLIP's tokenizer pads every prompt to 77 tokens; the UNet's cross-attention sees that length.
TEXT_SEQUENCE_LENGTH = 77
# SD's VAE downsamples by 8; used when a folder has no vae/config.json to read it from.
DEFAULT_VAE_SCALE_FACTOR = 8
PRESET_SEED = 0

# Published UNet config of Stable Diffusion 1.5 (860M parameters).
_SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "norm_num_groups": 32,
}
# The same block types at the size diffusers' own tests use: exports in seconds.
_TINY_UNET: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "cross_attention_dim": 32,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "norm_num_groups": 32,
}
SD_PRESETS: dict[str, dict[str, Any]] = {"sd15-unet": _SD15_UNET, "tiny-sd": _TINY_UNET}
COMPONENTS = ["unet"]


class UNetDenoiser(nn.Module):
    """`(sample, timestep, encoder_hidden_states)` -> predicted noise; no dicts, no kwargs."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        # sample: (B, 4, H/8, W/8); timestep: (B,); encoder_hidden_states: (B, 77, D)
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


def is_diffusers_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file() or _class_name(path / "config.json") == (
        "UNet2DConditionModel"
    )


def load_preset(
    name: str,
    *,
    component: str = "unet",
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
) -> LoadedModel:
    from diffusers import UNet2DConditionModel

    _check_component(component)
    recipe = SD_PRESETS[name]
    latent_hw = _latent_hw(recipe, DEFAULT_VAE_SCALE_FACTOR, height, width)  # fail before building
    unet = reinitialize(UNet2DConditionModel(**recipe), seed=PRESET_SEED)
    options = {"component": component, "height": height, "width": width, "batch_size": batch_size}
    source = SourceInfo(
        kind="preset",
        path=name,
        sha256=sha256_of_text(json.dumps({"recipe": recipe, "seed": PRESET_SEED}, sort_keys=True)),
        is_preset=True,
        random_weights=True,
        component=component,
        options=options,
    )
    return _wrap_unet(unet, source, latent_hw, batch_size)


def load_folder(
    path: Path,
    *,
    component: str = "unet",
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
) -> LoadedModel:
    from diffusers import UNet2DConditionModel

    _check_component(component)
    is_pipeline = (path / "model_index.json").is_file()
    unet_dir = path / "unet" if is_pipeline else path
    if _class_name(unet_dir / "config.json") != "UNet2DConditionModel":
        raise SourceError(
            f"{unet_dir} has no UNet2DConditionModel config.json.",
            hint="pass a diffusers pipeline folder (model_index.json + unet/) or a UNet folder.",
        )
    vae_scale = _vae_scale_factor(path / "vae" / "config.json") if is_pipeline else None
    unet_config = json.loads((unet_dir / "config.json").read_text())
    latent_hw = _latent_hw(unet_config, vae_scale or DEFAULT_VAE_SCALE_FACTOR, height, width)
    weight_files = check_weight_files(
        unet_dir, ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"]
    )
    try:
        unet = UNet2DConditionModel.from_pretrained(unet_dir, local_files_only=True)
    except Exception as exc:  # diffusers raises many types for one cause: unreadable weights
        raise SourceError(
            f"Could not load the UNet from {unet_dir}: {str(exc).splitlines()[0]}",
            hint="re-save it with save_pretrained() or check the copy finished.",
        ) from exc
    source = SourceInfo(
        kind="diffusers-folder",
        path=str(path.resolve()),
        sha256=sha256_of_files([*weight_files, unet_dir / "config.json"], root=path),
        is_preset=False,
        random_weights=False,
        component=component,
        options={
            "component": component,
            "height": height,
            "width": width,
            "batch_size": batch_size,
        },
    )
    return _wrap_unet(unet.eval(), source, latent_hw, batch_size)


def _wrap_unet(
    unet: nn.Module, source: SourceInfo, latent_hw: tuple[int, int], batch_size: int
) -> LoadedModel:
    config = unet.config
    latent_h, latent_w = latent_hw
    latent_shape = [batch_size, config.in_channels, latent_h, latent_w]
    return LoadedModel(
        module=UNetDenoiser(unet).eval(),
        model_kind="sd-unet",
        inputs=[
            # Latents are roughly unit-variance; timesteps span the 1000-step schedule.
            TensorSpec(name="sample", shape=latent_shape, dtype="float32", value_range=[-2.0, 2.0]),
            TensorSpec(
                name="timestep", shape=[batch_size], dtype="float32", value_range=[1.0, 999.0]
            ),
            TensorSpec(
                name="encoder_hidden_states",
                shape=[batch_size, TEXT_SEQUENCE_LENGTH, config.cross_attention_dim],
                dtype="float32",
                value_range=[-1.0, 1.0],
            ),
        ],
        outputs=[
            TensorSpec(
                name="noise_pred",
                shape=[batch_size, config.out_channels, latent_h, latent_w],
                dtype="float32",
            )
        ],
        source=source,
    )


def _latent_hw(
    unet_config: dict[str, Any], vae_factor: int, height: int | None, width: int | None
) -> tuple[int, int]:
    # The UNet halves the latent once per down block but the last; sizes must survive that.
    unet_factor = 2 ** (len(unet_config["block_out_channels"]) - 1)
    default = unet_config.get("sample_size", 64)
    return (
        _latent_size(height, vae_factor, unet_factor, default, "height"),
        _latent_size(width, vae_factor, unet_factor, default, "width"),
    )


def _latent_size(
    pixels: int | None, vae_factor: int, unet_factor: int, default: int, what: str
) -> int:
    if pixels is None:
        return default
    step = vae_factor * unet_factor  # SD 1.5: 8 * 8 = 64 pixels
    if pixels <= 0 or pixels % step:
        raise SourceError(
            f"--{what} {pixels} is not a positive multiple of {step} (VAE factor {vae_factor} x "
            f"UNet factor {unet_factor}).",
            hint=f"use e.g. {max(step, round(pixels / step) * step)}.",
        )
    return pixels // vae_factor


def _vae_scale_factor(vae_config: Path) -> int | None:
    if not vae_config.is_file():
        return None
    blocks = json.loads(vae_config.read_text()).get("block_out_channels")
    return 2 ** (len(blocks) - 1) if blocks else None


def _class_name(config: Path) -> str | None:
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _check_component(component: str) -> None:
    if component not in COMPONENTS:
        raise UnknownChoiceError("Stable Diffusion component", component, COMPONENTS)
