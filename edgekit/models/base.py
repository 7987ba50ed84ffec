"""What every model adapter returns: an export-ready module plus the facts needed to feed it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

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


class Preprocessing(BaseModel):
    """How a raw image becomes the model's input. Demo apps read this from the manifest."""

    resize_shortest_edge: int = Field(description="Resize so the shorter side has this length.")
    crop_height: int
    crop_width: int
    rescale_factor: float = Field(description="Multiply 0-255 pixel values by this first.")
    mean: list[float]
    std: list[float]
    channel_order: str = Field(description="'RGB' or 'BGR' (MobileViT expects BGR).")
    layout: str = "NCHW"


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

    def sample_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        return seeded_inputs(self.inputs, seed)

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
    tokenizer_files: list[str] = Field(default_factory=list)
    scheduler_config_file: str | None = None


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
