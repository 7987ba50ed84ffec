"""Calibration data: the inputs static int8 layers take their activation ranges from.

Three sources, best first:
- an image folder, for classifiers: every image preprocessed exactly as the manifest says
  (edgekit/preprocess.py), so ranges are those of what the app will feed the model;
- a prompts file, for Stable Diffusion: the PyTorch pipeline runs a few denoising steps per
  prompt and each component's real inputs are recorded (token ids, the UNet's latents, timesteps
  and text embeddings at every step, the final latents the VAE decodes);
- seeded synthetic inputs, with a warning: uniform noise has other ranges than photos, so the
  quantized model's accuracy on real data means less.

Every source is re-iterable and streamed: iterating reads and preprocesses one input at a time
(recorded SD inputs wait in a temporary folder on disk, not in memory), so memory stays bounded
by one input however many there are. Users of onnxruntime and coremltools report calibration
memory growing with the number of images when everything is materialized first.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    from edgekit.models.base import LoadedModel, LoadedPipeline

# Seeds apart from the verification seeds (0-7), so an artifact is never verified on the very
# inputs it was calibrated on.
SYNTHETIC_SEED_BASE = 10_000
DEFAULT_SYNTHETIC_COUNT = 16
# Images used from a folder, spread evenly over its sorted files (so every class subfolder is
# represented). Static int8 ranges settle within a few dozen images; more mostly costs time.
DEFAULT_IMAGE_COUNT = 64
DEFAULT_PROMPT_STEPS = 4
SYNTHETIC_WARNING = (
    "calibrating on seeded synthetic inputs: activation ranges of random noise differ from real "
    "data's, so the quantized model's fidelity on real inputs means less. Pass --calib IMAGES_DIR "
    "(classifiers) or --prompts FILE (Stable Diffusion)."
)


class CalibrationError(EdgekitError):
    """Calibration data that is missing, empty or not what the model takes."""

    exit_code = 2


@dataclass
class Calibration:
    """Re-iterable calibration inputs (the `CalibrationInputs` protocol of quant.spec)."""

    kind: Literal["images", "prompts", "synthetic"]
    description: str
    count: int
    sha256: str
    warning: str | None
    produce: Callable[[], Iterator[dict[str, np.ndarray]]]

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self.produce()


def synthetic_calibration(
    model: LoadedModel, *, count: int = DEFAULT_SYNTHETIC_COUNT
) -> Calibration:
    """`count` seeded inputs in each input's value range, the same on every machine."""
    from edgekit.models.base import seeded_inputs

    seeds = range(SYNTHETIC_SEED_BASE, SYNTHETIC_SEED_BASE + count)
    digest = hashlib.sha256(
        json.dumps([s.model_dump() for s in model.inputs] + list(seeds), sort_keys=True).encode()
    )
    return Calibration(
        kind="synthetic",
        description=f"{count} seeded synthetic inputs (seeds {seeds[0]}-{seeds[-1]})",
        count=count,
        sha256=digest.hexdigest(),
        warning=SYNTHETIC_WARNING,
        produce=lambda: (seeded_inputs(model.inputs, seed) for seed in seeds),
    )


def image_calibration(
    model: LoadedModel, folder: Path, *, count: int = DEFAULT_IMAGE_COUNT
) -> Calibration:
    """Images under `folder` (subfolders included), preprocessed as the model's manifest says.

    Every file is checked up front (header only), so a text file among the images fails in one
    line before a slow export starts, not halfway through calibration.
    """
    from edgekit.preprocess import preprocess

    if model.preprocessing is None or len(model.inputs) != 1:
        raise CalibrationError(
            f"--calib takes images, but {model.model_kind} has no image preprocessing.",
            hint="calibrate Stable Diffusion components with --prompts FILE.",
        )
    chosen = _pick_evenly(_image_files(folder), count)
    digest = hashlib.sha256(model.preprocessing.model_dump_json().encode())
    for path in chosen:
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    input_name = model.inputs[0].name
    batch = model.inputs[0].shape[0]

    def produce() -> Iterator[dict[str, np.ndarray]]:
        for path in chosen:
            pixels = preprocess(path, model.preprocessing)
            # A model exported with a static batch > 1 takes the image repeated to that batch.
            yield {input_name: np.repeat(pixels, batch, axis=0)}

    return Calibration(
        kind="images",
        description=f"{len(chosen)} images from {folder}",
        count=len(chosen),
        sha256=digest.hexdigest(),
        warning=None,
        produce=produce,
    )


def prompt_calibration(
    pipeline: LoadedPipeline,
    prompts_file: Path,
    *,
    steps: int = DEFAULT_PROMPT_STEPS,
    guidance_scale: float = 7.5,
    seed: int = 0,
) -> dict[str, Calibration]:
    """Run the PyTorch pipeline on every prompt and record each component's inputs.

    `pipeline` must hold the text encoder and the UNet (the loop needs both); the VAE decoder's
    inputs are the final latents, recorded without running it. Returns component -> inputs.
    """
    from edgekit.generate import denoise
    from edgekit.models import clip_tokenizer

    prompts = read_prompts(prompts_file)
    missing = {"text-encoder", "unet"} - set(pipeline.components)
    if missing:
        raise CalibrationError(
            f"Recording calibration inputs runs the pipeline, which needs {', '.join(missing)}.",
            hint="load the pipeline with all its components for calibration.",
        )
    records = _RecordFolder()
    torch_components = {n: c.run_torch for n, c in pipeline.components.items()}
    recording = {
        "text-encoder": records.recorder("text-encoder", torch_components["text-encoder"]),
        "unet": records.recorder("unet", torch_components["unet"]),
    }
    with tempfile.TemporaryDirectory(prefix="edgekit-tokenizer-") as tokenizer_dir:
        clip_tokenizer.write_tokenizer_files(Path(tokenizer_dir))
        tokenizer = clip_tokenizer.load_tokenizer(Path(tokenizer_dir))
        for index, prompt in enumerate(prompts):
            latents = denoise(
                recording, tokenizer, pipeline.info, prompt, "", steps, guidance_scale, seed + index
            )
            z = (latents / np.float32(pipeline.info.vae_scaling_factor)).astype(np.float32)
            records.save("vae-decoder", {"z": z})

    digest = hashlib.sha256(
        json.dumps(
            {"prompts": prompts, "steps": steps, "guidance": guidance_scale, "seed": seed}
        ).encode()
    ).hexdigest()
    return {
        component: Calibration(
            kind="prompts",
            description=f"{component} inputs from {len(prompts)} prompts in {prompts_file}, "
            f"{steps} PyTorch denoising steps each",
            count=records.count(component),
            sha256=digest,
            warning=None,
            produce=(lambda c=component: records.read(c)),
        )
        for component in records.components()
        if component in pipeline.components or component == "vae-decoder"
    }


class _RecordFolder:
    """Recorded inputs as .npz files in a temporary folder, read back one at a time. The folder
    is removed when the last calibration using it is garbage collected (or at exit)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="edgekit-calibration-"))
        self._counts: dict[str, int] = {}
        weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)

    def save(self, component: str, arrays: dict[str, np.ndarray]) -> None:
        index = self._counts.get(component, 0)
        folder = self.path / component
        folder.mkdir(exist_ok=True)
        np.savez(folder / f"{index:06d}.npz", **arrays)
        self._counts[component] = index + 1

    def recorder(self, component: str, run: Callable) -> Callable:
        def record_and_run(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            self.save(component, arrays)
            return run(arrays)

        return record_and_run

    def components(self) -> list[str]:
        return list(self._counts)

    def count(self, component: str) -> int:
        return self._counts.get(component, 0)

    def read(self, component: str) -> Iterator[dict[str, np.ndarray]]:
        for index in range(self.count(component)):
            with np.load(self.path / component / f"{index:06d}.npz") as data:
                yield {name: data[name] for name in data.files}


def _image_files(folder: Path) -> list[Path]:
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise CalibrationError(
            f"Calibration folder '{folder}' does not exist or is not a folder.",
            hint="pass --calib with a folder of images (subfolders per class are fine).",
        )
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise CalibrationError(
            f"Calibration folder '{folder}' holds no images.",
            hint="put a few dozen representative photos in it (JPEG, PNG, ...).",
        )
    for path in files:
        try:
            with Image.open(path) as image:
                image.verify()  # header and structure only: cheap, no full decode
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise CalibrationError(
                f"'{path}' in the calibration folder is not an image Pillow can read "
                f"({type(exc).__name__}).",
                hint="calibration folders must hold images only: move other files out.",
            ) from exc
    return files


def _pick_evenly(files: list[Path], count: int) -> list[Path]:
    if count < 1:
        raise CalibrationError(f"--calib-count {count} is not allowed.", hint="use 1 or more.")
    if len(files) <= count:
        return files
    indices = np.unique(np.linspace(0, len(files) - 1, count).round().astype(int))
    return [files[i] for i in indices]


def read_prompts(path: Path) -> list[str]:
    if not path.is_file():
        raise CalibrationError(
            f"No prompts file at '{path}'.", hint="write one prompt per line to a text file."
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise CalibrationError(
            f"'{path}' is not UTF-8 text.", hint="write one prompt per line to a text file."
        ) from exc
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise CalibrationError(
            f"Prompts file '{path}' holds no prompts.", hint="write one prompt per line."
        )
    return prompts


def calibration_for(
    loaded: LoadedModel | LoadedPipeline,
    *,
    images: Path | None = None,
    prompts: Path | None = None,
    count: int | None = None,
    steps: int = DEFAULT_PROMPT_STEPS,
) -> dict[str, Calibration]:
    """Calibration inputs for every component of `loaded`, from what the user passed: images
    for a classifier, prompts for a pipeline, else seeded synthetic inputs (with a warning)."""
    from edgekit.models.base import LoadedPipeline

    is_pipeline = isinstance(loaded, LoadedPipeline)
    components = loaded.components if is_pipeline else {"model": loaded}
    if images is not None and is_pipeline:
        raise CalibrationError(
            "--calib takes images, which Stable Diffusion components do not take.",
            hint="calibrate with --prompts FILE (one prompt per line).",
        )
    if prompts is not None and not is_pipeline:
        raise CalibrationError(
            f"--prompts calibrates Stable Diffusion; {loaded.model_kind} takes images.",
            hint="pass --calib IMAGES_DIR.",
        )
    if images is not None:
        return {"model": image_calibration(loaded, images, count=count or DEFAULT_IMAGE_COUNT)}
    if prompts is not None:
        recorded = prompt_calibration(_full_pipeline(loaded), prompts, steps=steps)
        return {name: recorded[name] for name in components}
    return {
        name: synthetic_calibration(model, count=count or DEFAULT_SYNTHETIC_COUNT)
        for name, model in components.items()
    }


def _full_pipeline(pipeline: LoadedPipeline) -> LoadedPipeline:
    """The pipeline with the text encoder and UNet that recording needs, reloaded from the same
    source with the same options when the export asked for fewer components."""
    if {"text-encoder", "unet"} <= set(pipeline.components):
        return pipeline
    from edgekit import models

    options = pipeline.source.options
    return models.load_pipeline(
        pipeline.source.path,
        height=options.get("height"),
        width=options.get("width"),
        config=options.get("config"),
        allow_pickle=bool(options.get("allow_pickle", False)),
    )
