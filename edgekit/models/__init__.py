"""Model adapters: a source (preset name or folder) -> `LoadedModel` / `LoadedPipeline`.

`load()` gives one export-ready module; `load_pipeline()` gives the several components of a
Stable Diffusion pipeline for one artifact. Adapters are imported lazily so importing this
package does not pull in transformers or diffusers.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import SourceError
from edgekit.models.base import (
    LoadedModel,
    LoadedPipeline,
    PipelineInfo,
    Preprocessing,
    SourceInfo,
    TensorSpec,
)

__all__ = [
    "LoadedModel",
    "LoadedPipeline",
    "PipelineInfo",
    "Preprocessing",
    "SourceInfo",
    "TensorSpec",
    "is_stable_diffusion",
    "load",
    "load_pipeline",
    "reload",
    "preset_names",
]

# Preset name -> adapter family. Kept here (no heavy import) so errors and --help can list them.
_PRESET_FAMILIES = {
    "mobilevit-small": "mobilevit",
    "mobilevit-x-small": "mobilevit",
    "mobilevit-xx-small": "mobilevit",
    "tiny-mobilevit": "mobilevit",
    "sd15": "stable_diffusion",
    "sd15-unet": "stable_diffusion",
    "tiny-sd": "stable_diffusion",
}
# Framework modules the adapters import lazily; bench imports them before timing a PyTorch load.
FRAMEWORK_MODULES = (
    "transformers.models.mobilevit.modeling_mobilevit",
    "transformers.models.clip.modeling_clip",
    "diffusers.models.unets.unet_2d_condition",
    "diffusers.models.autoencoders.autoencoder_kl",
)


def preset_names() -> list[str]:
    return sorted(_PRESET_FAMILIES)


def is_stable_diffusion(source: str | Path) -> bool:
    """True for SD presets, diffusers folders and single-file checkpoints; raises SourceError for
    a source that is neither an existing path nor a preset."""
    name = str(source)
    if name in _PRESET_FAMILIES:
        return _PRESET_FAMILIES[name] == "stable_diffusion"
    from edgekit.models import stable_diffusion

    if stable_diffusion.is_single_file_checkpoint(Path(name).expanduser()):
        return True
    return stable_diffusion.is_diffusers_folder(_existing_folder(name))


def load(
    source: str | Path,
    *,
    component: str | None = None,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
    config: str | Path | None = None,
    allow_pickle: bool = False,
) -> LoadedModel:
    """Load a preset name or a model folder into an export-ready `LoadedModel`.

    `component` (default "unet"), `height`, `width` and `config` (the diffusers folder that goes
    with a single-file checkpoint) apply to Stable Diffusion sources only. `allow_pickle` is the
    user's consent (--allow-pickle) to read pickle-based weights (.bin, .ckpt), which are then
    read with torch's restricted unpickler; without it they are refused. A source read that way
    records `allow_pickle: True` in its `source.options`, so passing those options back reloads it.
    """
    if batch_size < 1:
        raise SourceError(f"Batch size {batch_size} is not allowed.", hint="use 1 or more.")
    name = str(source)
    family = _PRESET_FAMILIES.get(name)
    if family is None and is_stable_diffusion(name):
        family, source = "stable_diffusion", Path(name).expanduser()
    if family is None:
        path = _existing_folder(name)
        from edgekit.models import mobilevit

        if mobilevit.is_mobilevit_folder(path):
            family, source = "mobilevit", path
        else:
            raise SourceError(
                f"'{name}' is not a model folder edgekit knows: no MobileViT config.json "
                "(model_type 'mobilevit'), no diffusers model_index.json or UNet config.json.",
                hint="pass a Hugging Face MobileViT folder, a diffusers pipeline or UNet folder, "
                "or a preset.",
            )
    if family == "mobilevit":
        from edgekit.models import mobilevit

        _reject_sd_options(name, component, height, width)
        if isinstance(source, Path):
            return mobilevit.load_folder(source, batch_size=batch_size, allow_pickle=allow_pickle)
        return mobilevit.load_preset(name, batch_size=batch_size)
    from edgekit.models import stable_diffusion

    return stable_diffusion.load_component(
        source,
        component=component or "unet",
        height=height,
        width=width,
        batch_size=batch_size,
        config=Path(config) if config else None,
        allow_pickle=allow_pickle,
    )


def reload(source: SourceInfo, **overrides) -> LoadedModel:
    """Rebuild the PyTorch model an artifact was exported from, as its manifest recorded it.

    The recorded load options carry the user's consents (e.g. allow_pickle); `overrides`
    replace some (e.g. batch_size). Weights that changed since the export (sha256) are refused:
    they are no reference for the artifact.
    """
    model = load(source.path, **{**source.options, **overrides})
    if model.source.sha256 != source.sha256:
        raise SourceError(
            f"The source at {source.path} changed since the export (sha256 differs), so it is "
            "no reference for this artifact.",
            hint="re-export from the current source, or run without the PyTorch comparison.",
        )
    return model


def load_pipeline(
    source: str | Path,
    *,
    components: list[str] | None = None,
    height: int | None = None,
    width: int | None = None,
    config: str | Path | None = None,
    allow_pickle: bool = False,
    unet_batch: int = 1,
) -> LoadedPipeline:
    """Load the chosen (default: all available) components of a Stable Diffusion source.

    `allow_pickle`: as for `load`. `unet_batch` 2: the UNet takes classifier-free guidance's
    unconditional and conditional inputs in one call (see PipelineInfo.unet_batch)."""
    if not is_stable_diffusion(source):
        raise SourceError(
            f"'{source}' is not a Stable Diffusion source, so it has no pipeline components.",
            hint="drop --component, or pass a diffusers pipeline folder or an SD preset.",
        )
    from edgekit.models import stable_diffusion

    name = str(source)
    return stable_diffusion.load_pipeline(
        name if name in _PRESET_FAMILIES else Path(name),
        components=components,
        height=height,
        width=width,
        config=Path(config) if config else None,
        allow_pickle=allow_pickle,
        unet_batch=unet_batch,
    )


def _existing_folder(name: str) -> Path:
    path = Path(name).expanduser()
    if not path.exists():
        raise SourceError(
            f"No model at '{name}': it is neither an existing path nor a preset.",
            hint=f"check the path, or use a preset: {', '.join(preset_names())}.",
        )
    if not path.is_dir():
        raise SourceError(
            f"'{name}' is a file; edgekit loads model folders and single-file SD checkpoints "
            "(.safetensors, .ckpt).",
            hint="pass the folder that save_pretrained() wrote (config.json + weights).",
        )
    return path


def _reject_sd_options(
    name: str, component: str | None, height: int | None, width: int | None
) -> None:
    if component is not None or height is not None or width is not None:
        raise SourceError(
            f"'{name}' is a MobileViT classifier; --component/--height/--width apply to "
            "Stable Diffusion sources only.",
            hint="drop those options; the input size comes from the model's config.",
        )
