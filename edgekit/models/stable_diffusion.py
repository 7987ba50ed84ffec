"""Stable Diffusion components: diffusers pipeline folders, bare UNet folders, presets.

Each component is wrapped into a module with plain tensor inputs and outputs at fixed shapes,
because every mobile format wants static shapes:
  text-encoder  input_ids (B, 77) int32               -> last_hidden_state (B, 77, D)
  unet          sample (B, 4, h, w), timestep (B,),
                encoder_hidden_states (B, 77, D)       -> noise_pred (B, 4, h, w)
  vae-decoder   z (B, 4, h, w) = latents / scaling     -> image (B, 3, H, W) in [-1, 1]
The names follow apple's ml-stable-diffusion conversion where it has one (z, image, sample,
timestep, encoder_hidden_states, input_ids, last_hidden_state).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.errors import SourceError, UnknownChoiceError
from edgekit.models import clip_tokenizer
from edgekit.models.base import (
    LoadedModel,
    LoadedPipeline,
    PipelineInfo,
    SourceInfo,
    TensorSpec,
    TrainingCardLink,
    sha256_of_files,
    sha256_of_text,
)
from edgekit.models.init import reinitialize
from edgekit.models.weights import (
    check_pickle_consent,
    check_weight_files,
    checkpoint_convert_command,
    consent_option,
    uses_pickle,
)
from edgekit.scheduling import SchedulerSpec, diffusers_config, spec_from_source_config

COMPONENTS = ["text-encoder", "unet", "vae-decoder"]
# UNet batch sizes a pipeline exports: 1 (one call per guidance branch) or 2 (both in one call).
GUIDANCE_BATCHES = (1, 2)
TEXT_SEQUENCE_LENGTH = clip_tokenizer.MAX_LENGTH
# SD's VAE downsamples by 8; used when a folder has no vae/config.json to read it from.
DEFAULT_VAE_SCALE_FACTOR = 8
SD_VAE_SCALING_FACTOR = 0.18215
PRESET_SEED = 0
SCHEDULER_FILE = "scheduler_config.json"

# Published configs of Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5).
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
_SD15_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
_SD15_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "sample_size": 512,
    "scaling_factor": SD_VAE_SCALING_FACTOR,
}
# The same block types at the sizes diffusers' own tests use: each exports in seconds. The text
# encoder keeps CLIP's full 49408-token vocabulary so the real tokenizer drives it.
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
_TINY_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 32,
}
_TINY_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "sample_size": 32,
    "scaling_factor": SD_VAE_SCALING_FACTOR,
}
# SD 1.5's scheduler_config.json (a PNDM sampler over SD's trained noise schedule). Presets and
# folders without scheduler/ get this noise schedule; the artifact records it as a DDIM
# SchedulerSpec (edgekit's sampler, see edgekit/scheduling.py), not as PNDM.
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}


@dataclass(frozen=True)
class _Recipe:
    unet: dict[str, Any]
    text_encoder: dict[str, Any] | None
    vae: dict[str, Any] | None


SD_PRESETS: dict[str, _Recipe] = {
    "sd15": _Recipe(_SD15_UNET, _SD15_TEXT, _SD15_VAE),
    "sd15-unet": _Recipe(_SD15_UNET, None, None),
    "tiny-sd": _Recipe(_TINY_UNET, _TINY_TEXT, _TINY_VAE),
}


class TextEncoder(nn.Module):
    def __init__(self, text_model: nn.Module) -> None:
        super().__init__()
        self.text_model = text_model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: (B, 77) int32 -> (B, 77, D); int32 because mobile runtimes prefer it.
        return self.text_model(input_ids=input_ids.long(), return_dict=False)[0]


class UNetDenoiser(nn.Module):
    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        # sample: (B, 4, H/8, W/8); timestep: (B,); encoder_hidden_states: (B, 77, D)
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class VAEDecoder(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: (B, 4, h, w), already divided by the scaling factor -> (B, 3, 8h, 8w) in [-1, 1]
        return self.vae.decode(z, return_dict=False)[0]


def is_diffusers_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file() or _class_name(path / "config.json") == (
        "UNet2DConditionModel"
    )


# ---------------------------------------------------------------- sources: presets and folders


class _PresetSource:
    """Builds components from a preset recipe with seeded random weights."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.recipe = SD_PRESETS[name]

    def available(self) -> list[str]:
        names = ["unet"]
        if self.recipe.text_encoder:
            names.insert(0, "text-encoder")
        if self.recipe.vae:
            names.append("vae-decoder")
        return names

    def configs(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return self.recipe.unet, self.recipe.vae

    def build(self, component: str) -> tuple[nn.Module, str]:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        recipe = {
            "text-encoder": self.recipe.text_encoder,
            "unet": self.recipe.unet,
            "vae-decoder": self.recipe.vae,
        }[component]
        if component == "unet":
            module = UNet2DConditionModel(**recipe)
        elif component == "text-encoder":
            module = CLIPTextModel(CLIPTextConfig(**recipe))
        else:
            module = AutoencoderKL(**recipe)
        digest = sha256_of_text(json.dumps({"recipe": recipe, "seed": PRESET_SEED}, sort_keys=True))
        return reinitialize(module, seed=PRESET_SEED), digest

    def source_info(self, component: str | None, sha256: str, options: dict) -> SourceInfo:
        return SourceInfo(
            kind="preset",
            path=self.name,
            sha256=sha256,
            is_preset=True,
            random_weights=True,
            component=component,
            options=options,
        )

    def scheduler_spec(self) -> SchedulerSpec:
        return spec_from_source_config(
            SD15_SCHEDULER_CONFIG, origin=f"The {self.name} preset's scheduler config"
        )

    def scheduler_config(self) -> dict[str, Any]:
        return dict(SD15_SCHEDULER_CONFIG)

    def write_tokenizer(self, folder: Path) -> list[Path]:
        return clip_tokenizer.write_tokenizer_files(folder)


class _FolderSource:
    """Reads components from a diffusers pipeline folder (or a bare UNet folder)."""

    _SUBFOLDERS = {"text-encoder": "text_encoder", "unet": "unet", "vae-decoder": "vae"}

    def __init__(self, path: Path, *, allow_pickle: bool = False) -> None:
        self.path = path
        self.is_pipeline = (path / "model_index.json").is_file()
        self.allow_pickle = allow_pickle  # the user's consent to read .bin weights
        self._pickled: set[str] = set()  # components read from a pickle-based file

    def _dir(self, component: str) -> Path:
        return self.path / self._SUBFOLDERS[component] if self.is_pipeline else self.path

    def available(self) -> list[str]:
        if not self.is_pipeline:
            return ["unet"]
        return [c for c in COMPONENTS if (self._dir(c) / "config.json").is_file()]

    def configs(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        unet_dir = self._dir("unet")
        if _class_name(unet_dir / "config.json") != "UNet2DConditionModel":
            raise SourceError(
                f"{unet_dir} has no UNet2DConditionModel config.json.",
                hint="pass a diffusers pipeline folder (model_index.json + unet/) or UNet folder.",
            )
        vae_config = self.path / "vae" / "config.json"
        vae = _read_json(vae_config) if self.is_pipeline and vae_config.is_file() else None
        return _read_json(unet_dir / "config.json"), vae

    def build(self, component: str) -> tuple[nn.Module, str]:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        folder = self._dir(component)
        if component == "text-encoder":
            loader, weights = CLIPTextModel, ["model.safetensors", "pytorch_model.bin"]
            # transformers 5 reads a .bin with torch.load(weights_only=True): passed explicitly.
            extra: dict[str, Any] = {"weights_only": True}
        else:
            loader = UNet2DConditionModel if component == "unet" else AutoencoderKL
            weights = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"]
            # diffusers 0.42 reads a .bin with torch.load(weights_only=True) unconditionally.
            extra = {}
        weight_files = check_weight_files(
            folder,
            weights,
            allow_pickle=self.allow_pickle,
            loader=f"{loader.__module__.split('.')[0]}.{loader.__name__}",
        )
        pickled = uses_pickle(weight_files)
        if pickled:
            self._pickled.add(component)
        try:
            # use_safetensors pins the file checked above: a .bin only where it was consented to.
            module = loader.from_pretrained(
                folder, local_files_only=True, use_safetensors=not pickled, **extra
            )
        except Exception as exc:  # the libraries raise many types for one cause: unreadable weights
            raise SourceError(
                f"Could not load the {component} from {folder}: {str(exc).splitlines()[0]}",
                hint="re-save it with save_pretrained() or check the copy finished.",
            ) from exc
        digest = sha256_of_files([*weight_files, folder / "config.json"], root=self.path)
        return module.eval(), digest

    def reads_pickle(self, component: str | None) -> bool:
        """Whether `component` (None: any component) came from a pickle-based file."""
        return component in self._pickled if component else bool(self._pickled)

    def source_info(self, component: str | None, sha256: str, options: dict) -> SourceInfo:
        return SourceInfo(
            kind="diffusers-folder",
            path=str(self.path.resolve()),
            sha256=sha256,
            is_preset=False,
            random_weights=False,
            component=component,
            options={**options, **consent_option(self.reads_pickle(component))},
            training_card=TrainingCardLink.in_folder(self.path),
        )

    def scheduler_spec(self) -> SchedulerSpec:
        """The source's noise schedule, sampled with DDIM; SD 1.5's when it ships none."""
        config = self.path / "scheduler" / SCHEDULER_FILE
        if not config.is_file():
            return spec_from_source_config(SD15_SCHEDULER_CONFIG, origin="SD 1.5's scheduler")
        return spec_from_source_config(_read_json(config), origin=str(config))

    def scheduler_config(self) -> dict[str, Any]:
        """The source's diffusers scheduler config as it is (training reads its noise schedule
        and prediction type); SD 1.5's when it ships none."""
        config = self.path / "scheduler" / SCHEDULER_FILE
        return _read_json(config) if config.is_file() else dict(SD15_SCHEDULER_CONFIG)

    def write_tokenizer(self, folder: Path) -> list[Path]:
        written = []
        tokenizer_dir = self.path / "tokenizer"
        if (tokenizer_dir / "vocab.json").is_file() and (tokenizer_dir / "merges.txt").is_file():
            for name in clip_tokenizer.TOKENIZER_FILES:
                if (tokenizer_dir / name).is_file():
                    (folder / name).write_bytes((tokenizer_dir / name).read_bytes())
                    written.append(folder / name)
        else:
            # SD 1.x always uses CLIP's BPE vocabulary; the packaged copy is that file.
            written += clip_tokenizer.write_tokenizer_files(folder)
        return written


class _SingleFileSource(_FolderSource):
    """A CompVis/LDM single-file checkpoint (as CompVis-style DreamBooth trainers write), with a
    local diffusers folder that supplies the configs, tokenizer and scheduler."""

    CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")

    def __init__(
        self, checkpoint: Path, config: Path | None, *, allow_pickle: bool = False
    ) -> None:
        if checkpoint.suffix != ".safetensors":  # .ckpt; a disguised .safetensors fails its check
            check_pickle_consent(
                checkpoint,
                allow_pickle=allow_pickle,
                convert_command=checkpoint_convert_command(checkpoint),
            )
        if config is None:
            raise SourceError(
                f"{checkpoint} is a single-file checkpoint, which needs --config: a local "
                "diffusers folder with unet/, vae/ and text_encoder/ configs (edgekit never "
                "downloads).",
                hint="pass --config PATH (e.g. the folder of the base model you fine-tuned).",
            )
        if not (config / "unet" / "config.json").is_file():
            raise SourceError(
                f"--config {config} has no unet/config.json.",
                hint="pass a diffusers pipeline folder (as save_pretrained writes it).",
            )
        super().__init__(config, allow_pickle=allow_pickle)
        self.is_pipeline = True  # configs are read from the subfolders of the config folder
        self.checkpoint_path = checkpoint
        self._state: dict[str, torch.Tensor] | None = None
        self._digest: str | None = None

    def _checkpoint(self) -> dict[str, torch.Tensor]:
        if self._state is None:
            from diffusers.loaders.single_file_utils import load_single_file_checkpoint

            from edgekit.models.weights import check_safetensors, load_pickled_weights

            if self.reads_pickle(None):
                # Read here, not by diffusers, so the restricted unpickler is ours to choose.
                state = load_pickled_weights(self.checkpoint_path)
                # Trainers nest the weights under "state_dict", as diffusers' loader unwraps.
                while isinstance(state.get("state_dict"), dict):
                    state = state["state_dict"]
                self._state = state
                return state
            check_safetensors(self.checkpoint_path)
            try:
                self._state = load_single_file_checkpoint(
                    str(self.checkpoint_path), local_files_only=True
                )
            except Exception as exc:  # safetensors damage that its header check did not show
                raise SourceError(
                    f"Could not read {self.checkpoint_path}: {str(exc).splitlines()[0]}",
                    hint="the file is truncated or not a checkpoint: copy it again.",
                ) from exc
        return self._state

    def build(self, component: str) -> tuple[nn.Module, str]:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
        from transformers import CLIPTextModel

        state = self._checkpoint()
        subfolder = self._SUBFOLDERS[component]
        try:
            if component == "text-encoder":
                module = create_diffusers_clip_model_from_ldm(
                    CLIPTextModel,
                    state,
                    subfolder=subfolder,
                    config=str(self.path),
                    local_files_only=True,
                )
            else:
                loader = UNet2DConditionModel if component == "unet" else AutoencoderKL
                module = loader.from_single_file(
                    state, config=str(self.path), subfolder=subfolder, local_files_only=True
                )
        except Exception as exc:  # key or shape mismatches between checkpoint and config
            raise SourceError(
                f"The {component} in {self.checkpoint_path} does not fit the config in "
                f"{self.path / subfolder}: {str(exc).splitlines()[0]}",
                hint="pass the --config folder of the model this checkpoint was trained from.",
            ) from exc
        if self._digest is None:  # hashing a 4 GB checkpoint once is enough
            self._digest = sha256_of_files([self.checkpoint_path])
        config_digest = sha256_of_files([self.path / subfolder / "config.json"], root=self.path)
        return module.eval(), sha256_of_text(self._digest + config_digest)

    def reads_pickle(self, component: str | None) -> bool:
        return self.checkpoint_path.suffix != ".safetensors"  # every component is in the file

    def source_info(self, component: str | None, sha256: str, options: dict) -> SourceInfo:
        return SourceInfo(
            kind="ldm-checkpoint",
            path=str(self.checkpoint_path.resolve()),
            sha256=sha256,
            is_preset=False,
            random_weights=False,
            component=component,
            options={
                **options,
                "config": str(self.path),
                **consent_option(self.reads_pickle(component)),
            },
        )


def _write_scheduler(folder: Path, spec: SchedulerSpec) -> Path:
    """The diffusers config derived from the manifest's spec (never the source's file as is):
    diffusers users get the sampler that `generate` and the apps run."""
    target = folder / SCHEDULER_FILE
    target.write_text(json.dumps(diffusers_config(spec), indent=2) + "\n")
    return target


def is_single_file_checkpoint(path: Path) -> bool:
    return path.is_file() and path.suffix in _SingleFileSource.CHECKPOINT_SUFFIXES


def _source(
    name_or_path: str | Path, config: Path | None = None, *, allow_pickle: bool = False
) -> _PresetSource | _FolderSource:
    if isinstance(name_or_path, str) and name_or_path in SD_PRESETS:
        return _PresetSource(name_or_path)
    path = Path(name_or_path)
    if is_single_file_checkpoint(path):
        return _SingleFileSource(path, config, allow_pickle=allow_pickle)
    return _FolderSource(path, allow_pickle=allow_pickle)


# ---------------------------------------------------------------- public entry points


def load_component(
    source: str | Path,
    *,
    component: str = "unet",
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
    config: Path | None = None,
    allow_pickle: bool = False,
) -> LoadedModel:
    """One component as an export-ready module (what `models.load` returns for SD sources)."""
    src = _source(source, config, allow_pickle=allow_pickle)
    _check_component(component, src.available())
    shapes = _Shapes.from_configs(*src.configs(), height, width)  # fail before building
    module, digest = src.build(component)
    options = {"component": component, "height": height, "width": width, "batch_size": batch_size}
    return _wrap(component, module, shapes, src.source_info(component, digest, options), batch_size)


def load_pipeline(
    source: str | Path,
    *,
    components: list[str] | None = None,
    height: int | None = None,
    width: int | None = None,
    config: Path | None = None,
    allow_pickle: bool = False,
    unet_batch: int = 1,
) -> LoadedPipeline:
    """Several components (default: all the source has) for one pipeline artifact.

    `unet_batch` 2 makes the UNet take the guided step's two inputs in one call (apple's
    ml-stable-diffusion exports it so): one run of a batch of 2 costs less than two runs of 1
    on most runtimes, and `generate` then calls it once per step."""
    if unet_batch not in GUIDANCE_BATCHES:
        raise SourceError(
            f"UNet batch {unet_batch} is not allowed.",
            hint="use 1 (one call per guidance branch) or 2 (both branches in one call).",
        )
    src = _source(source, config, allow_pickle=allow_pickle)
    chosen = components or src.available()
    for component in chosen:
        _check_component(component, src.available())
    shapes = _Shapes.from_configs(*src.configs(), height, width)
    scheduler = src.scheduler_spec()  # an unusable schedule fails before the slow build
    loaded: dict[str, LoadedModel] = {}
    for component in [c for c in COMPONENTS if c in chosen]:
        module, digest = src.build(component)
        batch = unet_batch if component == "unet" else 1
        options = {"component": component, "height": height, "width": width, "batch_size": batch}
        info = src.source_info(component, digest, options)
        loaded[component] = _wrap(component, module, shapes, info, batch)
    pipeline_digest = sha256_of_text("".join(m.source.sha256 for m in loaded.values()))
    options = {
        "components": list(loaded),
        "available": src.available(),
        "height": height,
        "width": width,
        "unet_batch": unet_batch,
    }
    return LoadedPipeline(
        components=loaded,
        source=src.source_info(None, pipeline_digest, options),
        info=shapes.info(scheduler).model_copy(update={"unet_batch": unet_batch}),
        # The scheduler file is written from the spec read above (the manifest's), not read
        # from the source again: one read, so file and manifest cannot disagree.
        write_assets=lambda folder: [
            *src.write_tokenizer(folder),
            _write_scheduler(folder, scheduler),
        ],
    )


@dataclass
class DiffusersParts:
    """A source's raw diffusers and transformers modules, as training takes them (not wrapped
    for export), with what drives them: the PipelineInfo that `edgekit.generate.denoise` reads,
    the source's own scheduler config, and the tokenizer files."""

    text_encoder: nn.Module  # transformers CLIPTextModel
    unet: nn.Module  # diffusers UNet2DConditionModel
    vae: nn.Module  # diffusers AutoencoderKL, encoder included
    info: PipelineInfo  # latent sizes: the UNet config's sample size
    scheduler_config: dict[str, Any]
    source: SourceInfo
    write_tokenizer: Callable[[Path], list[Path]]


def load_diffusers_parts(
    source: str | Path, *, config: Path | None = None, allow_pickle: bool = False
) -> DiffusersParts:
    """Every component of a full SD source (preset, diffusers folder, single file + config)."""
    src = _source(source, config, allow_pickle=allow_pickle)
    missing = [c for c in COMPONENTS if c not in src.available()]
    if missing:
        raise SourceError(
            f"This source has no {', '.join(missing)}; training needs the whole pipeline.",
            hint="pass a full diffusers pipeline folder (model_index.json, unet/, vae/, "
            "text_encoder/), a full preset such as tiny-sd, or a single file with its config "
            "folder.",
        )
    shapes = _Shapes.from_configs(*src.configs(), None, None)
    info = shapes.info(src.scheduler_spec())
    built = {component: src.build(component) for component in COMPONENTS}
    digest = sha256_of_text("".join(d for _, d in built.values()))  # as load_pipeline's
    return DiffusersParts(
        text_encoder=built["text-encoder"][0],
        unet=built["unet"][0],
        vae=built["vae-decoder"][0],
        info=info,
        scheduler_config=src.scheduler_config(),
        source=src.source_info(None, digest, {"available": src.available()}),
        write_tokenizer=src.write_tokenizer,
    )


# ---------------------------------------------------------------- shapes and wrappers


@dataclass(frozen=True)
class _Shapes:
    latent_channels: int
    latent_h: int
    latent_w: int
    vae_factor: int
    cross_attention_dim: int
    scaling_factor: float

    @classmethod
    def from_configs(
        cls,
        unet: dict[str, Any],
        vae: dict[str, Any] | None,
        height: int | None,
        width: int | None,
    ) -> _Shapes:
        vae_factor = 2 ** (len(vae["block_out_channels"]) - 1) if vae else DEFAULT_VAE_SCALE_FACTOR
        # The UNet halves the latent once per down block but the last; sizes must survive that.
        unet_factor = 2 ** (len(unet["block_out_channels"]) - 1)
        default = unet.get("sample_size", 64)
        return cls(
            latent_channels=unet.get("in_channels", 4),
            latent_h=_latent_size(height, vae_factor, unet_factor, default, "height"),
            latent_w=_latent_size(width, vae_factor, unet_factor, default, "width"),
            vae_factor=vae_factor,
            cross_attention_dim=unet["cross_attention_dim"],
            scaling_factor=(vae or {}).get("scaling_factor", SD_VAE_SCALING_FACTOR),
        )

    def info(self, scheduler: SchedulerSpec) -> PipelineInfo:
        return PipelineInfo(
            vae_scaling_factor=self.scaling_factor,
            vae_scale_factor=self.vae_factor,
            latent_channels=self.latent_channels,
            latent_height=self.latent_h,
            latent_width=self.latent_w,
            image_height=self.latent_h * self.vae_factor,
            image_width=self.latent_w * self.vae_factor,
            text_max_length=TEXT_SEQUENCE_LENGTH,
            tokenizer_files=list(clip_tokenizer.TOKENIZER_FILES),
            scheduler=scheduler,
            scheduler_config_file=SCHEDULER_FILE,
        )


def _wrap(
    component: str, module: nn.Module, shapes: _Shapes, source: SourceInfo, batch: int
) -> LoadedModel:
    latent = [batch, shapes.latent_channels, shapes.latent_h, shapes.latent_w]
    if component == "text-encoder":
        hidden = module.config.hidden_size
        return LoadedModel(
            module=TextEncoder(module).eval(),
            model_kind="sd-text-encoder",
            inputs=[
                TensorSpec(
                    name="input_ids",
                    shape=[batch, TEXT_SEQUENCE_LENGTH],
                    dtype="int32",
                    value_range=[0.0, module.config.vocab_size - 1.0],
                )
            ],
            outputs=[
                TensorSpec(
                    name="last_hidden_state",
                    shape=[batch, TEXT_SEQUENCE_LENGTH, hidden],
                    dtype="float32",
                )
            ],
            source=source,
        )
    if component == "unet":
        return LoadedModel(
            module=UNetDenoiser(module).eval(),
            model_kind="sd-unet",
            inputs=[
                # Latents are roughly unit-variance; timesteps span the 1000-step schedule.
                TensorSpec(name="sample", shape=latent, dtype="float32", value_range=[-2.0, 2.0]),
                TensorSpec(
                    name="timestep", shape=[batch], dtype="float32", value_range=[1.0, 999.0]
                ),
                TensorSpec(
                    name="encoder_hidden_states",
                    shape=[batch, TEXT_SEQUENCE_LENGTH, shapes.cross_attention_dim],
                    dtype="float32",
                    value_range=[-1.0, 1.0],
                ),
            ],
            outputs=[TensorSpec(name="noise_pred", shape=latent, dtype="float32")],
            source=source,
        )
    image = [batch, 3, shapes.latent_h * shapes.vae_factor, shapes.latent_w * shapes.vae_factor]
    return LoadedModel(
        module=VAEDecoder(module).eval(),
        model_kind="sd-vae-decoder",
        # Unit-variance latents divided by the 0.18215 scaling factor span about +-5.
        inputs=[TensorSpec(name="z", shape=latent, dtype="float32", value_range=[-4.0, 4.0])],
        outputs=[TensorSpec(name="image", shape=image, dtype="float32")],
        source=source,
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path} is not valid JSON.", hint="re-save the model folder.") from exc


def _class_name(config: Path) -> str | None:
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _check_component(component: str, available: list[str]) -> None:
    if component not in COMPONENTS:
        raise UnknownChoiceError("Stable Diffusion component", component, COMPONENTS)
    if component not in available:
        raise SourceError(
            f"This source has no {component}; it has: {', '.join(available)}.",
            hint="pick one of those with --component, or pass a full pipeline folder.",
        )
