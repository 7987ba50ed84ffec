"""What every model adapter returns: an export-ready module plus the facts needed to feed it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, model_validator

from edgekit.scheduling import SchedulerSpec

if TYPE_CHECKING:
    import numpy as np
    import torch


class TensorSpec(BaseModel):
    """One named input or output: static shape and dtype name (numpy spelling)."""

    name: str
    shape: list[int]
    dtype: str
    value_range: list[float] | None = Field(
        None, description="[low, high] of the seeded inputs used to verify and benchmark."
    )


class ResizeRule(StrEnum):
    """How the decoded photo is resized before the crop."""

    # The shorter side becomes `resize_shortest_edge`; the longer one
    # int(resize_shortest_edge * longer / shorter), as Hugging Face computes it: truncated, not
    # rounded, so a 451x300 photo at 288 becomes 432x288, not 433x288.
    SHORTEST_EDGE = "shortest-edge"
    # Exactly `resize_height` x `resize_width`; the aspect ratio is not kept.
    EXACT = "exact"
    NONE = "none"


class Interpolation(StrEnum):
    """Pillow's resampling filters by name; Hugging Face configs store their int codes."""

    NEAREST = "nearest"  # 0
    LANCZOS = "lanczos"  # 1
    BILINEAR = "bilinear"  # 2
    BICUBIC = "bicubic"  # 3
    BOX = "box"  # 4
    HAMMING = "hamming"  # 5


class CropRule(StrEnum):
    # Window of crop_height x crop_width at top = (H - crop_height) // 2, left = (W - crop_width)
    # // 2; an image smaller than the window is first zero-padded, ceil of half the gap on the
    # top/left (pixel value 0 before rescale and normalize).
    CENTER = "center"
    NONE = "none"


class ChannelOrder(StrEnum):
    RGB = "RGB"
    BGR = "BGR"


class Layout(StrEnum):
    NCHW = "NCHW"
    NHWC = "NHWC"


class Preprocessing(BaseModel):
    """How a photo becomes the model's input tensor. Demo apps read this from the manifest.

    Steps, in this order (edgekit.preprocess implements them with Pillow and numpy and gives
    tensors identical to Hugging Face's PIL image processor):
      1. decode; apply the EXIF orientation; convert to 8-bit RGB (Pillow's convert("RGB"):
         alpha is dropped, greyscale repeated, palette expanded);
      2. resize the 8-bit image with Pillow's filter `interpolation` (rule `resize`);
      3. crop (rule `crop`);
      4. multiply by `rescale_factor` in float64, then round once to float32;
      5. (x - mean) / std per channel in float32, mean and std in RGB order;
      6. reorder channels to `channel_order`, then lay out as `layout` with a batch axis of 1.
    """

    resize: ResizeRule = Field(description="Resize rule; see the sizes it needs.")
    resize_shortest_edge: int | None = Field(
        None, ge=1, description="Pixels of the shorter side after resizing (rule shortest-edge)."
    )
    resize_height: int | None = Field(None, ge=1, description="Pixels (rule exact).")
    resize_width: int | None = Field(None, ge=1, description="Pixels (rule exact).")
    interpolation: Interpolation = Field(description="Pillow resampling filter of the resize.")
    crop: CropRule = Field(description="'center': crop_height x crop_width window; 'none'.")
    crop_height: int | None = Field(None, ge=1, description="Pixels (rule center).")
    crop_width: int | None = Field(None, ge=1, description="Pixels (rule center).")
    rescale_factor: float = Field(gt=0, description="Multiply 0-255 pixel values by this first.")
    mean: list[float] = Field(min_length=3, max_length=3, description="Per channel, RGB order.")
    std: list[float] = Field(min_length=3, max_length=3, description="Per channel, RGB order.")
    channel_order: ChannelOrder = Field(description="MobileViT expects BGR.")
    layout: Layout = Layout.NCHW

    @model_validator(mode="after")
    def _sizes_match_rules(self) -> Preprocessing:
        if self.resize == ResizeRule.SHORTEST_EDGE and self.resize_shortest_edge is None:
            raise ValueError("resize 'shortest-edge' needs resize_shortest_edge")
        if self.resize == ResizeRule.EXACT and (
            self.resize_height is None or self.resize_width is None
        ):
            raise ValueError("resize 'exact' needs resize_height and resize_width")
        if self.crop == CropRule.CENTER and (self.crop_height is None or self.crop_width is None):
            raise ValueError("crop 'center' needs crop_height and crop_width")
        if self.crop == CropRule.NONE and self.resize != ResizeRule.EXACT:
            # Any other rule gives each photo its own size; exported models take one fixed size.
            raise ValueError("crop 'none' needs resize 'exact', so every photo gets one size")
        if any(s == 0 for s in self.std):
            raise ValueError("std must not contain 0")
        return self

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of every preprocessed image."""
        if self.crop == CropRule.CENTER:
            return self.crop_height, self.crop_width
        return self.resize_height, self.resize_width


# The record `edgekit train` writes beside the weights it trained (config, data hashes, losses).
TRAINING_CARD_FILE = "training_card.json"


class TrainingCardLink(BaseModel):
    """The training card of a source that `edgekit train` wrote, pinned by its hash."""

    file: str = Field(description="File name, in the source folder.")
    sha256: str

    @classmethod
    def in_folder(cls, folder: Path) -> TrainingCardLink | None:
        """The card `edgekit train` left in a model folder, so an export traces back to the run
        that made the weights; None for folders it did not write."""
        card = folder / TRAINING_CARD_FILE
        if not card.is_file():
            return None
        return cls(file=TRAINING_CARD_FILE, sha256=hashlib.sha256(card.read_bytes()).hexdigest())


class SourceInfo(BaseModel):
    """Where the weights came from, so a report can be traced back and re-run."""

    kind: str = Field(description="'preset', 'hf-folder', 'diffusers-folder'.")
    path: str = Field(description="Preset name or absolute path of the source.")
    sha256: str = Field(description="sha256 over the weight and config files (or preset recipe).")
    is_preset: bool
    random_weights: bool = Field(
        description="True for presets: seeded random weights, not trained."
    )
    component: str | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="Load options to rebuild it.")
    training_card: TrainingCardLink | None = Field(
        None, description="The training card, where `edgekit train` made this source."
    )


@dataclass
class LoadedModel:
    """An eval-mode module with plain-tensor inputs/outputs and everything needed to drive it.

    `module(*tensors)` takes the inputs in `inputs` order and returns a tuple in `outputs` order.
    """

    module: torch.nn.Module
    model_kind: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source: SourceInfo
    preprocessing: Preprocessing | None = None
    labels: list[str] | None = None
    _program: torch.export.ExportedProgram | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def sample_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        return seeded_inputs(self.inputs, seed)

    def exported_program(self) -> torch.export.ExportedProgram:
        """The module through torch.export (non-strict, the static shapes of `inputs`), traced
        once per component and shared: the exporters that start from torch.export (ONNX,
        ExecuTorch and its pt2e quantization, Core ML, TFLite's PT2E path) all take this one
        program, so exporting to several targets traces the model once and every format starts
        from the same graph. Consumers must not mutate it: they transform copies
        (`run_decompositions`, `.module()`), which leave it as it is.

        It shares the module's parameter tensors; changing weights after the first call (only
        `quantize analyze` does, and it never exports) would change the program too."""
        if self._program is None:
            import torch

            args = tuple(torch.from_numpy(array) for array in self.sample_inputs().values())
            self._program = torch.export.export(self.module, args, strict=False)
        return self._program

    def run_torch(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The PyTorch reference: the same call signature as every exported artifact's runtime."""
        import torch

        tensors = [torch.from_numpy(arrays[spec.name]) for spec in self.inputs]
        with torch.inference_mode():
            results = self.module(*tensors)
        if not isinstance(results, tuple | list):
            results = (results,)
        return {
            spec.name: r.detach().numpy() for spec, r in zip(self.outputs, results, strict=True)
        }

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


class PipelineInfo(BaseModel):
    """How a Stable Diffusion pipeline's components fit together; generate and apps read it."""

    vae_scaling_factor: float = Field(description="Latents are divided by this before decoding.")
    vae_scale_factor: int = Field(description="Image pixels per latent pixel (8 for SD 1.x).")
    latent_channels: int
    latent_height: int
    latent_width: int
    image_height: int
    image_width: int
    text_max_length: int
    unet_batch: int = Field(
        1,
        description="Batch the UNet takes. 1: classifier-free guidance calls it twice per step "
        "(unconditional, then conditional); 2: once, with the unconditional input first and the "
        "conditional second in the batch (sample and timestep repeated).",
    )
    tokenizer_files: list[str] = Field(default_factory=list)
    scheduler: SchedulerSpec = Field(
        description="The denoising loop: sampler and every parameter (the source's noise "
        "schedule, edgekit's DDIM sampler). The one source of truth for scheduling."
    )
    scheduler_config_file: str | None = Field(
        None,
        description="A diffusers DDIMScheduler config derived from `scheduler` (same values), "
        "for diffusers users.",
    )


@dataclass
class LoadedPipeline:
    """Several components exported into one artifact, plus the files that glue them together."""

    components: dict[str, LoadedModel]
    source: SourceInfo
    info: PipelineInfo
    # Writes tokenizer and scheduler files into the artifact folder; returns what it wrote.
    write_assets: Callable[[Path], list[Path]]
    model_kind: str = "sd-pipeline"


def sha256_of_files(paths: list[Path], *, root: Path | None = None) -> str:
    """One digest over several files, names included, so renaming a file changes it too."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        name = str(path.relative_to(root)) if root else path.name
        digest.update(name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def sha256_of_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def seeded_inputs(specs: list[TensorSpec], seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs for verification and benchmarks: same seed, same arrays on every machine.

    Values are uniform in each spec's `value_range` (default [-1, 1]), so an image input gets
    pixel-like values and a timestep a plausible step, not arbitrary noise.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        low, high = spec.value_range or (-1.0, 1.0)
        values = rng.uniform(low, high, size=spec.shape)
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            values = np.floor(values)
        arrays[spec.name] = values.astype(spec.dtype)
    return arrays
