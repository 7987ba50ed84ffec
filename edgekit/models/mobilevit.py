"""MobileViT image classifiers: Hugging Face folders and built-in presets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.errors import SourceError
from edgekit.models.base import (
    ChannelOrder,
    CropRule,
    Interpolation,
    LoadedModel,
    Preprocessing,
    ResizeRule,
    SourceInfo,
    TensorSpec,
    TrainingCardLink,
    sha256_of_files,
    sha256_of_text,
)
from edgekit.models.init import calibrate_batchnorm, reinitialize
from edgekit.models.weights import check_weight_files, consent_option, uses_pickle

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
# Changes whenever the preset weight recipe does, so a preset artifact's source sha256 stops
# matching weights it was not exported from. v2: BatchNorm statistics calibrated on seeded images.
PRESET_INIT_VERSION = 2
# Seeded random images whose activations set the presets' BatchNorm statistics.
_CALIBRATION_BATCHES = 4
_CALIBRATION_BATCH_SIZE = 8
# The published image processor resizes the shorter edge to 288 and center-crops 256.
_RESIZE_OVER_CROP = 288 / 256
_NO_NORMALIZATION_MEAN = (0.0, 0.0, 0.0)
_NO_NORMALIZATION_STD = (1.0, 1.0, 1.0)
# Pillow's resampling filter codes, as Hugging Face preprocessor configs store them.
_PIL_RESAMPLE_CODES = {
    0: Interpolation.NEAREST,
    1: Interpolation.LANCZOS,
    2: Interpolation.BILINEAR,
    3: Interpolation.BICUBIC,
    4: Interpolation.BOX,
    5: Interpolation.HAMMING,
}


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
    generator = torch.Generator().manual_seed(PRESET_SEED)
    size = config.image_size
    batches = [
        (torch.rand(_CALIBRATION_BATCH_SIZE, 3, size, size, generator=generator),)
        for _ in range(_CALIBRATION_BATCHES)
    ]
    calibrate_batchnorm(model, batches)
    recipe_id = {"recipe": recipe, "seed": PRESET_SEED, "init": PRESET_INIT_VERSION}
    source = SourceInfo(
        kind="preset",
        path=name,
        sha256=sha256_of_text(json.dumps(recipe_id, sort_keys=True)),
        is_preset=True,
        random_weights=True,
        options={"batch_size": batch_size},
    )
    return _wrap(model, config, _default_preprocessing(config.image_size), source, batch_size)


def load_folder(path: Path, *, batch_size: int = 1, allow_pickle: bool = False) -> LoadedModel:
    """`allow_pickle`: the user's consent to read a pytorch_model.bin (restricted unpickler)."""
    from transformers import MobileViTForImageClassification

    weight_files = check_weight_files(
        path,
        ["model.safetensors", "pytorch_model.bin"],
        allow_pickle=allow_pickle,
        loader="transformers.MobileViTForImageClassification",
    )
    pickled = uses_pickle(weight_files)
    try:
        # Exactly the file checked above: use_safetensors=False only where a .bin was consented
        # to, and transformers 5 reads it with torch.load(weights_only=True), as passed here.
        model = MobileViTForImageClassification.from_pretrained(
            path, local_files_only=True, use_safetensors=not pickled, weights_only=True
        )
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
        options={"batch_size": batch_size, **consent_option(pickled)},
        training_card=TrainingCardLink.in_folder(path),
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
    height, width = preprocessing.output_size
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
    """The published apple/mobilevit-* preprocessor_config.json, scaled to `image_size`.

    Those files say size 288 (shorter edge), crop_size 256, resample 2 (Pillow bilinear) and
    do_flip_channels true; MobileViT's processor never normalizes.
    """
    return Preprocessing(
        resize=ResizeRule.SHORTEST_EDGE,
        resize_shortest_edge=round(image_size * _RESIZE_OVER_CROP),
        interpolation=Interpolation.BILINEAR,
        crop=CropRule.CENTER,
        crop_height=image_size,
        crop_width=image_size,
        rescale_factor=1 / 255,
        mean=list(_NO_NORMALIZATION_MEAN),
        std=list(_NO_NORMALIZATION_STD),
        channel_order=ChannelOrder.BGR,
    )


def _preprocessing_from_folder(processor_file: Path, image_size: int) -> Preprocessing:
    """MobileViTImageProcessor's settings as transformers itself resolves them.

    transformers parses the file (legacy int sizes, missing keys -> its class defaults), so the
    block equals what its processor does with this folder (except without a crop: see below);
    no file: the published defaults.
    """
    if not processor_file.is_file():
        return _default_preprocessing(image_size)
    try:
        settings = json.loads(processor_file.read_text())
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{processor_file} is not valid JSON ({exc.msg}, line {exc.lineno}).",
            hint="fix or delete it; edgekit then uses MobileViT's published preprocessing.",
        ) from exc
    try:
        # The PIL backend: the one edgekit.preprocess reproduces bit for bit. Older transformers
        # have no backends and name the same PIL processor MobileViTImageProcessor.
        from transformers import MobileViTImageProcessorPil as Processor
    except ImportError:
        from transformers import MobileViTImageProcessor as Processor
    try:
        processor = Processor.from_dict(settings)
    except Exception as exc:  # transformers raises many types for one cause: unusable settings
        raise SourceError(
            f"{processor_file} has settings transformers cannot use: {str(exc).splitlines()[0]}",
            hint="fix or delete it; edgekit then uses MobileViT's published preprocessing.",
        ) from exc

    resize = {"resize": ResizeRule.NONE}
    size = processor.size
    if processor.do_resize:
        if size.shortest_edge and not size.longest_edge:
            resize = {
                "resize": ResizeRule.SHORTEST_EDGE,
                "resize_shortest_edge": size.shortest_edge,
            }
        elif size.height and size.width:
            resize = {
                "resize": ResizeRule.EXACT,
                "resize_height": size.height,
                "resize_width": size.width,
            }
        else:
            given = {k: v for k, v in dict(size).items() if v is not None}
            raise SourceError(
                f"{processor_file} resizes with size {given}; edgekit supports "
                "{'shortest_edge': N} or {'height': H, 'width': W}.",
                hint="use one of those sizes (MobileViT's own configs use shortest_edge).",
            )
    if processor.do_center_crop:
        crop = {
            "crop": CropRule.CENTER,
            "crop_height": processor.crop_size.height,
            "crop_width": processor.crop_size.width,
        }
    elif resize["resize"] == ResizeRule.EXACT:
        crop = {"crop": CropRule.NONE}
    else:
        # Without a crop transformers hands the model each photo at its own size; an exported
        # model takes one size, so edgekit center-crops to the model's image_size instead.
        crop = {"crop": CropRule.CENTER, "crop_height": image_size, "crop_width": image_size}
    # A null resample makes the processor fall back to bilinear.
    resample = processor.resample
    interpolation = (
        Interpolation.BILINEAR
        if resample is None
        else _PIL_RESAMPLE_CODES.get(resample if isinstance(resample, int) else -1)
    )
    if interpolation is None:
        raise SourceError(
            f"{processor_file} has resample {processor.resample!r}; edgekit knows Pillow's "
            f"filters {sorted(_PIL_RESAMPLE_CODES)} ({', '.join(i.value for i in Interpolation)}).",
            hint="use a Pillow filter code (2 = bilinear, 3 = bicubic).",
        )
    return Preprocessing(
        **resize,
        interpolation=interpolation,
        **crop,
        rescale_factor=float(processor.rescale_factor) if processor.do_rescale else 1.0,
        # MobileViT's processor (both backends) ignores do_normalize, image_mean and image_std:
        # the models were trained on unnormalized [0, 1] pixels, whatever the file says.
        mean=list(_NO_NORMALIZATION_MEAN),
        std=list(_NO_NORMALIZATION_STD),
        channel_order=ChannelOrder.BGR if processor.do_flip_channel_order else ChannelOrder.RGB,
    )


def save_preprocessor_config(preprocessing: Preprocessing, folder: Path) -> Path:
    """Write `preprocessing` as the folder's preprocessor_config.json: the inverse of
    `_preprocessing_from_folder`, so `load_folder` reads back exactly this block.

    transformers' own processor class writes the file, so transformers users get the same
    preprocessing too. MobileViT never normalizes (mean 0, std 1 in every block its loaders
    make), so the file says do_normalize false.
    """
    try:
        from transformers import MobileViTImageProcessorPil as Processor
    except ImportError:
        from transformers import MobileViTImageProcessor as Processor

    pre = preprocessing
    if pre.resize == ResizeRule.SHORTEST_EDGE:
        size = {"shortest_edge": pre.resize_shortest_edge}
    else:
        size = {"height": pre.resize_height, "width": pre.resize_width}
    crop = {"height": pre.crop_height, "width": pre.crop_width} if pre.crop_height else None
    resample_codes = {interpolation: code for code, interpolation in _PIL_RESAMPLE_CODES.items()}
    processor = Processor(
        do_resize=pre.resize != ResizeRule.NONE,
        **({"size": size} if pre.resize != ResizeRule.NONE else {}),
        resample=resample_codes[pre.interpolation],
        do_center_crop=pre.crop == CropRule.CENTER,
        **({"crop_size": crop} if crop else {}),
        do_rescale=True,
        rescale_factor=pre.rescale_factor,
        do_normalize=False,
        do_flip_channel_order=pre.channel_order == ChannelOrder.BGR,
    )
    processor.save_pretrained(folder)
    return folder / "preprocessor_config.json"
