"""MobileViT image classifiers: Hugging Face folders and built-in presets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.errors import SourceError
from edgekit.models.base import (
    LoadedModel,
    Preprocessing,
    SourceInfo,
    TensorSpec,
    sha256_of_files,
    sha256_of_text,
)
from edgekit.models.init import reinitialize
from edgekit.models.weights import check_weight_files

# Published architecture configs (apple/mobilevit-*), minus the 1000 ImageNet label names, which
# are replaced with class_<i> since preset weights are random anyway.
MOBILEVIT_PRESETS: dict[str, dict[str, Any]] = {
    "mobilevit-small": {
        "image_size": 256,
        "hidden_sizes": [144, 192, 240],
        "neck_hidden_sizes": [16, 32, 64, 96, 128, 160, 640],
        "expand_ratio": 4.0,
        "num_labels": 1000,
    },
    "mobilevit-x-small": {
        "image_size": 256,
        "hidden_sizes": [96, 120, 144],
        "neck_hidden_sizes": [16, 32, 48, 64, 80, 96, 384],
        "expand_ratio": 4.0,
        "num_labels": 1000,
    },
    "mobilevit-xx-small": {
        "image_size": 256,
        "hidden_sizes": [64, 80, 96],
        "neck_hidden_sizes": [16, 16, 24, 48, 64, 80, 320],
        "expand_ratio": 2.0,
        "num_labels": 1000,
    },
    # Same block structure at a size that exports in seconds: for tests and demos.
    "tiny-mobilevit": {
        "image_size": 64,
        "hidden_sizes": [16, 24, 32],
        "neck_hidden_sizes": [8, 8, 16, 16, 24, 32, 64],
        "num_attention_heads": 2,
        "expand_ratio": 2.0,
        "num_labels": 10,
    },
}

PRESET_SEED = 0
# The published image processor resizes the shorter edge to 288 and center-crops 256.
_RESIZE_OVER_CROP = 288 / 256


class MobileViTClassifier(nn.Module):
    """`pixel_values (N,3,H,W) float32 BGR in [0,1]` -> `logits (N, num_labels)`; no dicts."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def is_mobilevit_folder(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "mobilevit"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def load_preset(name: str, *, batch_size: int = 1) -> LoadedModel:
    from transformers import MobileViTConfig, MobileViTForImageClassification

    recipe = MOBILEVIT_PRESETS[name]
    config = MobileViTConfig(
        **recipe, id2label={i: f"class_{i}" for i in range(recipe["num_labels"])}
    )
    model = reinitialize(MobileViTForImageClassification(config), seed=PRESET_SEED)
    source = SourceInfo(
        kind="preset",
        path=name,
        sha256=sha256_of_text(json.dumps({"recipe": recipe, "seed": PRESET_SEED}, sort_keys=True)),
        is_preset=True,
        random_weights=True,
        options={"batch_size": batch_size},
    )
    return _wrap(model, config, _default_preprocessing(config.image_size), source, batch_size)


def load_folder(path: Path, *, batch_size: int = 1) -> LoadedModel:
    from transformers import MobileViTForImageClassification

    weight_files = check_weight_files(path, ["model.safetensors", "pytorch_model.bin"])
    try:
        model = MobileViTForImageClassification.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # transformers raises many types for one cause: unreadable weights
        raise SourceError(
            f"Could not load MobileViT weights from {path}: {str(exc).splitlines()[0]}",
            hint="re-save the model with save_pretrained() or check the download finished.",
        ) from exc
    model.eval()
    config = model.config
    files = [*weight_files, path / "config.json"]
    processor_file = path / "preprocessor_config.json"
    if processor_file.is_file():
        files.append(processor_file)
    source = SourceInfo(
        kind="hf-folder",
        path=str(path.resolve()),
        sha256=sha256_of_files(files, root=path),
        is_preset=False,
        random_weights=False,
        options={"batch_size": batch_size},
    )
    preprocessing = _preprocessing_from_folder(processor_file, config.image_size)
    return _wrap(model, config, preprocessing, source, batch_size)


def _wrap(
    model: nn.Module,
    config: Any,
    preprocessing: Preprocessing,
    source: SourceInfo,
    batch_size: int,
) -> LoadedModel:
    labels = [config.id2label[i] for i in range(config.num_labels)]
    height, width = preprocessing.crop_height, preprocessing.crop_width
    return LoadedModel(
        module=MobileViTClassifier(model).eval(),
        model_kind="mobilevit-classifier",
        inputs=[
            TensorSpec(
                name="pixel_values",
                shape=[batch_size, 3, height, width],
                dtype="float32",
                value_range=[0.0, 1.0],  # after rescale by 1/255
            )
        ],
        outputs=[TensorSpec(name="logits", shape=[batch_size, config.num_labels], dtype="float32")],
        source=source,
        preprocessing=preprocessing,
        labels=labels,
    )


def _default_preprocessing(image_size: int) -> Preprocessing:
    return Preprocessing(
        resize_shortest_edge=round(image_size * _RESIZE_OVER_CROP),
        crop_height=image_size,
        crop_width=image_size,
        rescale_factor=1 / 255,
        mean=[0.0, 0.0, 0.0],
        std=[1.0, 1.0, 1.0],
        channel_order="BGR",
    )


def _preprocessing_from_folder(processor_file: Path, image_size: int) -> Preprocessing:
    """Read MobileViTImageProcessor's settings; fall back to the published defaults."""
    base = _default_preprocessing(image_size)
    if not processor_file.is_file():
        return base
    try:
        settings = json.loads(processor_file.read_text())
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{processor_file} is not valid JSON ({exc.msg}, line {exc.lineno}).",
            hint="fix or delete it; edgekit then uses MobileViT's published preprocessing.",
        ) from exc
    crop = settings.get("crop_size") or {}
    size = settings.get("size") or {}
    crop_h = (
        int(crop.get("height", base.crop_height))
        if settings.get("do_center_crop", True)
        else image_size
    )
    crop_w = (
        int(crop.get("width", base.crop_width))
        if settings.get("do_center_crop", True)
        else image_size
    )
    mean = settings.get("image_mean", base.mean) if settings.get("do_normalize") else base.mean
    std = settings.get("image_std", base.std) if settings.get("do_normalize") else base.std
    return Preprocessing(
        resize_shortest_edge=int(size.get("shortest_edge", base.resize_shortest_edge)),
        crop_height=crop_h,
        crop_width=crop_w,
        rescale_factor=float(settings.get("rescale_factor", base.rescale_factor))
        if settings.get("do_rescale", True)
        else 1.0,
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        channel_order="BGR" if settings.get("do_flip_channel_order", True) else "RGB",
    )
