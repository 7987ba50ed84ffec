"""Model adapters: a source (preset name or folder) -> `LoadedModel`.

`load()` is the single entry point. Adapters are imported lazily so importing this package
does not pull in transformers or diffusers.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import SourceError
from edgekit.models.base import LoadedModel, Preprocessing, SourceInfo, TensorSpec

__all__ = ["LoadedModel", "Preprocessing", "SourceInfo", "TensorSpec", "load", "preset_names"]

# Preset name -> adapter family. Kept here (no heavy import) so errors and --help can list them.
_PRESET_FAMILIES = {
    "mobilevit-small": "mobilevit",
    "mobilevit-x-small": "mobilevit",
    "mobilevit-xx-small": "mobilevit",
    "tiny-mobilevit": "mobilevit",
    "sd15-unet": "stable_diffusion",
    "tiny-sd": "stable_diffusion",
}


# Framework modules the adapters import lazily; bench imports them before timing a PyTorch load.
FRAMEWORK_MODULES = (
    "transformers.models.mobilevit.modeling_mobilevit",
    "diffusers.models.unets.unet_2d_condition",
)


def preset_names() -> list[str]:
    return sorted(_PRESET_FAMILIES)


def load(
    source: str | Path,
    *,
    component: str | None = None,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
) -> LoadedModel:
    """Load a preset name or a model folder into an export-ready `LoadedModel`.

    `component`, `height` and `width` apply to Stable Diffusion sources only.
    """
    if batch_size < 1:
        raise SourceError(f"Batch size {batch_size} is not allowed.", hint="use 1 or more.")
    name = str(source)
    family = _PRESET_FAMILIES.get(name)
    if family == "mobilevit":
        from edgekit.models import mobilevit

        _reject_sd_options(name, component, height, width)
        return mobilevit.load_preset(name, batch_size=batch_size)
    if family == "stable_diffusion":
        from edgekit.models import stable_diffusion

        return stable_diffusion.load_preset(
            name, component=component or "unet", height=height, width=width, batch_size=batch_size
        )

    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(
            f"No model at '{name}': it is neither an existing path nor a preset.",
            hint=f"check the path, or use a preset: {', '.join(preset_names())}.",
        )
    if not path.is_dir():
        raise SourceError(
            f"'{name}' is a file; edgekit loads model folders.",
            hint="pass the folder that save_pretrained() wrote (config.json + weights).",
        )
    from edgekit.models import mobilevit, stable_diffusion

    if mobilevit.is_mobilevit_folder(path):
        _reject_sd_options(name, component, height, width)
        return mobilevit.load_folder(path, batch_size=batch_size)
    if stable_diffusion.is_diffusers_folder(path):
        return stable_diffusion.load_folder(
            path, component=component or "unet", height=height, width=width, batch_size=batch_size
        )
    raise SourceError(
        f"'{name}' is not a model folder edgekit knows: no MobileViT config.json "
        "(model_type 'mobilevit'), no diffusers model_index.json or UNet config.json.",
        hint="pass a Hugging Face MobileViT folder, a diffusers pipeline or UNet folder, "
        "or a preset.",
    )


def _reject_sd_options(
    name: str, component: str | None, height: int | None, width: int | None
) -> None:
    if component is not None or height is not None or width is not None:
        raise SourceError(
            f"'{name}' is a MobileViT classifier; --component/--height/--width apply to "
            "Stable Diffusion sources only.",
            hint="drop those options; the input size comes from the model's config.",
        )
