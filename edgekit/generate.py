"""Text-to-image with an exported Stable Diffusion artifact, on the host runtime.

The same loop drives the artifact's components and the PyTorch components they came from:
tokenizer -> text encoder (prompt and negative prompt) -> denoising with classifier-free
guidance, by the sampler the manifest's `pipeline.scheduler` names (edgekit/scheduling.py, no
diffusers) -> VAE decoder. With the same seed, prompt and steps, the two images differ only by
what the export changed, so their PSNR is the end-to-end fidelity of the artifact.
`generate_pytorch` runs the loop on a PyTorch pipeline alone (a trained folder, a preset).

Guidance: a UNet that takes a batch of 2 (`PipelineInfo.unet_batch`) gets the unconditional and
conditional inputs in one call per step; otherwise it is called once per branch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit import exporters
from edgekit.artifact import Manifest, read_manifest
from edgekit.errors import ArtifactError, EdgekitError, SourceError, VerificationError
from edgekit.models.base import PipelineInfo
from edgekit.scheduling import sampler_for, timesteps

# Identical images have infinite PSNR; report this ceiling instead (JSON has no infinity).
PSNR_CEILING_DB = 200.0
# The least PSNR (artifact image vs PyTorch image, same seed, prompt and steps) `generate`
# accepts, per manifest precision; below it the command exits with VerificationError's code.
# Measured on tiny-sd (seeded random weights), "a photo of sks cat", seeds 0-2, 2 and 4 steps,
# fp32: ONNX 126.3-129.7 dB, LiteRT 123.4-126.6 dB, ExecuTorch 122.6-127.4 dB. The ONNX UNet's
# noise output scaled by 1.05 gives 52.0-52.5 dB, by 1.01 66.0-66.4 dB, by 1.001 85.9-86.4 dB.
# 80 dB (RMS error 0.026 grey levels) fails a 1% UNet error and leaves ~40 dB for the longer step
# counts and larger models not measured here. fp16 pipelines (Core ML, macOS only) have no
# measurement yet, so no gate: generate reports their PSNR and says no threshold applies.
MIN_PIPELINE_PSNR_DB: dict[str, float] = {"fp32": 80.0}
REQUIRED_COMPONENTS = ("text-encoder", "unet", "vae-decoder")

Component = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class GenerateError(EdgekitError):
    exit_code = 2


@dataclass
class GenerateResult:
    image: np.ndarray  # (H, W, 3) float32 RGB in [0, 1]
    seconds: float
    reference_image: np.ndarray | None = None
    reference_seconds: float | None = None
    # PSNR on 0-255 pixel values before 8-bit rounding, so differences below one grey level
    # still show (rounded images of a good export are often identical).
    psnr_db: float | None = None
    precision: str = "fp32"
    # MIN_PIPELINE_PSNR_DB for the artifact's precision; None where none is measured.
    min_psnr_db: float | None = None

    def fidelity_error(self) -> VerificationError | None:
        """The error to report when the artifact's image is too far from PyTorch's."""
        if self.psnr_db is None or self.min_psnr_db is None or self.psnr_db >= self.min_psnr_db:
            return None
        return VerificationError(
            f"The artifact's image is {self.psnr_db:.1f} dB PSNR from the PyTorch pipeline's, "
            f"under the {self.min_psnr_db:.1f} dB an {self.precision} pipeline must reach "
            "(same seed, prompt and steps).",
            hint="compare the two images; re-export and check each component's verification "
            "in manifest.json.",
        )


def check_artifact(artifact_dir: Path, *, steps: int) -> Manifest:
    """Everything `generate` can check before any work or output: a full pipeline artifact whose
    runtime exists here, and a step count its schedule serves."""
    if steps < 1:
        raise GenerateError(f"--steps {steps} is not allowed.", hint="use 1 or more steps.")
    manifest = read_manifest(artifact_dir)
    _check_pipeline(manifest)
    exporters.require_host_runtime(manifest, action="generate")
    timesteps(manifest.pipeline.scheduler, steps)
    return manifest


def generate(
    artifact_dir: Path,
    prompt: str,
    *,
    negative_prompt: str = "",
    steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    threads: int | None = None,
    compare_with_pytorch: bool = True,
) -> GenerateResult:
    manifest = check_artifact(artifact_dir, steps=steps)
    components = open_components(artifact_dir, manifest, threads)
    started = time.perf_counter()
    image = run_pipeline(
        components, artifact_dir, manifest, prompt, negative_prompt, steps, guidance_scale, seed
    )
    result = GenerateResult(
        image=image,
        seconds=time.perf_counter() - started,
        precision=manifest.precision,
        min_psnr_db=MIN_PIPELINE_PSNR_DB.get(manifest.precision),
    )
    if compare_with_pytorch:
        reference = _pytorch_components(manifest)
        started = time.perf_counter()
        result.reference_image = run_pipeline(
            reference, artifact_dir, manifest, prompt, negative_prompt, steps, guidance_scale, seed
        )
        result.reference_seconds = time.perf_counter() - started
        result.psnr_db = psnr_db(result.reference_image, image)
    return result


def run_pipeline(
    components: dict[str, Component],
    artifact_dir: Path,
    manifest: Manifest,
    prompt: str,
    negative_prompt: str,
    steps: int,
    guidance_scale: float,
    seed: int,
) -> np.ndarray:
    from edgekit.models import clip_tokenizer

    tokenizer = clip_tokenizer.load_tokenizer(artifact_dir)
    info = manifest.pipeline
    return _image(components, tokenizer, info, prompt, negative_prompt, steps, guidance_scale, seed)


def generate_pytorch(
    source: str | Path,
    prompt: str,
    *,
    negative_prompt: str = "",
    steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    config: Path | None = None,
    allow_pickle: bool = False,
) -> GenerateResult:
    """The same loop on a PyTorch pipeline (a preset, a diffusers folder such as `edgekit train
    dreambooth` writes, or a single file + config), guidance batched in one UNet call."""
    import tempfile

    from edgekit import models
    from edgekit.models import clip_tokenizer

    if steps < 1:
        raise GenerateError(f"--steps {steps} is not allowed.", hint="use 1 or more steps.")
    pipeline = models.load_pipeline(
        source,
        height=height,
        width=width,
        config=config,
        allow_pickle=allow_pickle,
        unet_batch=2,
    )
    missing = [c for c in REQUIRED_COMPONENTS if c not in pipeline.components]
    if missing:
        raise GenerateError(
            f"'{source}' has no {', '.join(missing)}; generating needs all three components.",
            hint="pass a full pipeline (diffusers folder with unet/, vae/, text_encoder/).",
        )
    timesteps(pipeline.info.scheduler, steps)  # a step count the schedule cannot serve fails here
    with tempfile.TemporaryDirectory(prefix="edgekit-tokenizer-") as folder:
        pipeline.write_assets(Path(folder))
        tokenizer = clip_tokenizer.load_tokenizer(Path(folder))
    components = {name: model.run_torch for name, model in pipeline.components.items()}
    started = time.perf_counter()
    image = _image(
        components, tokenizer, pipeline.info, prompt, negative_prompt, steps, guidance_scale, seed
    )
    return GenerateResult(image=image, seconds=time.perf_counter() - started)


def _image(
    components: dict[str, Component],
    tokenizer,
    info: PipelineInfo,
    prompt: str,
    negative_prompt: str,
    steps: int,
    guidance_scale: float,
    seed: int,
) -> np.ndarray:
    """Denoise, then decode: the image (H, W, 3) in [0, 1]."""
    latents = denoise(
        components, tokenizer, info, prompt, negative_prompt, steps, guidance_scale, seed
    )
    z = (latents / np.float32(info.vae_scaling_factor)).astype(np.float32)
    image = components["vae-decoder"]({"z": z})["image"][0]  # (3, H, W) in [-1, 1]
    return np.clip(image.transpose(1, 2, 0) / 2 + 0.5, 0.0, 1.0).astype(np.float32)


def denoise(
    components: dict[str, Component],
    tokenizer,
    info: PipelineInfo,
    prompt: str,
    negative_prompt: str,
    steps: int,
    guidance_scale: float,
    seed: int,
) -> np.ndarray:
    """Text encoder, then the guided denoising loop: the final latents (1, C, H/8, W/8).
    Quantization calibration drives the same loop to record the UNet's real inputs."""
    from edgekit.models import clip_tokenizer

    ids = clip_tokenizer.encode(tokenizer, [prompt, negative_prompt])
    text = components["text-encoder"]
    cond = text({"input_ids": ids[:1]})["last_hidden_state"]
    uncond = text({"input_ids": ids[1:]})["last_hidden_state"]

    # DDIM with eta=0 is deterministic: no noise is drawn after the initial latents, so the
    # artifact and PyTorch runs see the same random numbers. The initial noise comes from
    # torch's generator so a seed gives the latents it gives in diffusers.
    scheduler = sampler_for(info.scheduler)
    latents = initial_latents(info, seed)

    unet = components["unet"]
    # A UNet exported with batch 2 takes both guidance branches in one call (unconditional
    # first); the two rows are independent, so the result equals two calls of batch 1.
    both = np.concatenate([uncond, cond]) if info.unet_batch == 2 else None
    for t in scheduler.set_timesteps(steps):
        sample = scheduler.scale_model_input(latents, t)
        timestep = np.array([float(t)], dtype=np.float32)
        if both is not None:
            noise = unet(
                {
                    "sample": np.concatenate([sample, sample]),
                    "timestep": np.concatenate([timestep, timestep]),
                    "encoder_hidden_states": both,
                }
            )["noise_pred"]
            noise_uncond, noise_cond = noise[:1], noise[1:]
        else:
            noise_uncond = unet(
                {"sample": sample, "timestep": timestep, "encoder_hidden_states": uncond}
            )["noise_pred"]
            noise_cond = unet(
                {"sample": sample, "timestep": timestep, "encoder_hidden_states": cond}
            )["noise_pred"]
        guided = noise_uncond + np.float32(guidance_scale) * (noise_cond - noise_uncond)
        latents = scheduler.step(guided, t, latents).prev_sample
    return latents


def initial_latents(info: PipelineInfo, seed: int) -> np.ndarray:
    """The seed's starting latents (1, C, H/8, W/8), from torch's generator so that a seed gives
    the latents it gives in diffusers."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    shape = (1, info.latent_channels, info.latent_height, info.latent_width)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32).numpy()
    return (noise * info.scheduler.init_noise_sigma).astype(np.float32)


def denoise_seeds(
    components: dict[str, Component],
    tokenizer,
    info: PipelineInfo,
    prompt: str,
    negative_prompt: str,
    steps: int,
    guidance_scale: float,
    seeds: list[int],
) -> np.ndarray:
    """`denoise` for many seeds in one loop: the final latents (len(seeds), C, H/8, W/8).

    For components that take any batch (PyTorch modules; exported UNets have a fixed batch):
    the text encoder runs once for both prompts, the UNet once per step for every seed and both
    guidance branches (batch 2N, the N unconditional rows first). Each seed's noise is drawn
    from its own generator, as `denoise` draws it, and the rows never mix, so a seed's image
    does not depend on the batch it lands in; batched matmuls may sum in another order than
    `denoise`'s batch of 1, so the two agree to float rounding, not bit for bit.
    """
    from edgekit.models import clip_tokenizer

    count = len(seeds)
    ids = clip_tokenizer.encode(tokenizer, [prompt, negative_prompt])
    hidden = components["text-encoder"]({"input_ids": ids})["last_hidden_state"]
    cond, uncond = hidden[:1], hidden[1:]
    both = np.concatenate([np.repeat(uncond, count, axis=0), np.repeat(cond, count, axis=0)])

    scheduler = sampler_for(info.scheduler)
    latents = np.concatenate([initial_latents(info, seed) for seed in seeds])  # (N, C, h, w)
    unet = components["unet"]
    for t in scheduler.set_timesteps(steps):
        sample = scheduler.scale_model_input(latents, t)
        noise = unet(
            {
                "sample": np.concatenate([sample, sample]),  # (2N, C, h, w)
                "timestep": np.full(2 * count, float(t), dtype=np.float32),
                "encoder_hidden_states": both,
            }
        )["noise_pred"]
        noise_uncond, noise_cond = noise[:count], noise[count:]
        guided = noise_uncond + np.float32(guidance_scale) * (noise_cond - noise_uncond)
        latents = scheduler.step(guided, t, latents).prev_sample
    return latents


def psnr_db(reference: np.ndarray, image: np.ndarray) -> float:
    """PSNR of two [0, 1] images on the 0-255 scale."""
    mse = float(np.mean(((reference.astype(np.float64) - image.astype(np.float64)) * 255) ** 2))
    return PSNR_CEILING_DB if mse == 0 else min(PSNR_CEILING_DB, 10 * math.log10(255.0**2 / mse))


def save_png(image: np.ndarray, path: Path) -> Path:
    import io

    from PIL import Image

    from edgekit.artifact import write_bytes_atomic

    buffer = io.BytesIO()
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return write_bytes_atomic(path, buffer.getvalue())


def _check_pipeline(manifest: Manifest) -> None:
    if manifest.pipeline is None:
        raise GenerateError(
            f"{manifest.name} is a {manifest.model_kind} artifact, not a Stable Diffusion "
            "pipeline.",
            hint="export an SD source without --component to get text encoder, UNet and VAE.",
        )
    missing = [c for c in REQUIRED_COMPONENTS if c not in {x.name for x in manifest.components}]
    if missing:
        raise GenerateError(
            f"{manifest.name} lacks {', '.join(missing)}; generating needs all three components.",
            hint="re-export without --component (or with all three).",
        )


def open_components(artifact_dir: Path, manifest: Manifest, threads: int | None):
    """Every component's runtime, as its target profile sets it up (generate, bench)."""
    return {
        c.name: exporters.open_runtime(artifact_dir, manifest, c, threads=threads)
        for c in manifest.components
    }


def _pytorch_components(manifest: Manifest) -> dict[str, Component]:
    """The PyTorch modules the artifact was exported from, checked by sha256.

    Loaded as one pipeline, so a single-file checkpoint is read once, not once per component.
    """
    from edgekit import models

    options = manifest.source.options
    try:
        pipeline = models.load_pipeline(
            manifest.source.path,
            components=[entry.name for entry in manifest.components],
            height=options.get("height"),
            width=options.get("width"),
            config=options.get("config"),
            # The consent to read pickle-based weights given at export, recorded by the loader.
            allow_pickle=bool(options.get("allow_pickle", False)),
            unet_batch=int(options.get("unet_batch", 1)),
        )
    except SourceError as exc:
        raise GenerateError(
            f"The PyTorch source of {manifest.name} is not available for comparison: {exc.message}",
            hint="pass --no-compare to generate without the PyTorch reference.",
        ) from exc
    for entry in manifest.components:
        if pipeline.components[entry.name].source.sha256 != entry.source.sha256:
            raise ArtifactError(
                f"The {entry.name} at {entry.source.path} changed since the export (sha256 "
                "differs), so it is no reference for this artifact.",
                hint="re-export, or pass --no-compare.",
            )
    return {name: model.run_torch for name, model in pipeline.components.items()}
