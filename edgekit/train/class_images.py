"""Class images for prior preservation: made by the base model, recorded, reused.

DreamBooth trains on the subject's photos and, beside them, on images of the subject's class
("a photo of cat") that the base model itself generated, so fine-tuning keeps what the model
knew about the class (Ruiz et al. 2022, section 3.3). Generating a few hundred of them is the
slowest part of a short run, so they are kept in `class_dir` and reused by later runs, but only
by runs that would generate the same thing: a record file (`class_images.json`) lists each image
with the base model's sha256, the prompt and the seed. Images recorded for another model or
prompt are not used (and not deleted); images the user put in the folder without a record are
the user's class images and are used as they are, as diffusers' script does.

Generation is resumable: each batch's images and the record are written atomically as the
batch finishes, so a killed run keeps what it made. Under `accelerate launch` the processes
share the work (`Workers`): each denoises its own batches of seeds, and the main process alone
writes the record, after each round of batches. Every image has its own seed (seed,
seed + 1, ...) and its own initial noise, and a batch's rows never mix, so image k is the same
(to float rounding) whether it was made in one run or across two, in whichever batch.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field, ValidationError

from edgekit.errors import EdgekitError
from edgekit.models.base import PipelineInfo
from edgekit.train.images import ImageFolderError, read_image_folder

RECORD_FILE = "class_images.json"
# How generated images are named: class-<model and prompt tag>-<seed>.png.
_GENERATED_NAME = re.compile(r"^class-[0-9a-f]{8}-\d{6}\.png$")


class ClassImagesError(EdgekitError):
    exit_code = 2


class ClassImageEntry(BaseModel):
    """One generated image and everything that made it."""

    file: str
    sha256: str
    model: str = Field(description="Preset name or path of the base model.")
    model_sha256: str
    prompt: str
    seed: int
    steps: int
    guidance_scale: float
    height: int
    width: int


class ClassImageRecord(BaseModel):
    images: list[ClassImageEntry] = []


@dataclass
class ClassImages:
    """The class images a run trains on, and where they came from."""

    paths: list[Path]
    generated: int
    reused: int  # recorded for this model and prompt by an earlier run
    user_images: int  # in the folder without a record: the user's own
    not_reused: list[ClassImageEntry] = field(default_factory=list)
    skipped_warning: str | None = None

    def summary(self, model: str) -> str:
        made = f"generated {self.generated} with {model}" if self.generated else "generated none"
        user = f", {self.user_images} of your own" if self.user_images else ""
        return f"class images: {made}, reused {self.reused}{user} ({len(self.paths)} in all)"

    def not_reused_warning(self) -> str | None:
        if not self.not_reused:
            return None
        others = sorted(
            {f"{e.model} ({e.model_sha256[:12]}), '{e.prompt}'" for e in self.not_reused}
        )
        return (
            f"{len(self.not_reused)} class image(s) in the folder were generated for another "
            f"model or prompt ({'; '.join(others)}) and are not reused"
        )


@dataclass
class Workers:
    """The processes that generate together: this one's `index` of `count`; `gather` returns
    the lists every process passed it, joined in process order (accelerate's gather_object);
    `barrier` waits for all. Alone by default."""

    index: int = 0
    count: int = 1
    gather: Callable[[list], list] = lambda items: items
    barrier: Callable[[], None] = lambda: None


class ImageGenerator:
    """Stable Diffusion's PyTorch modules driven by edgekit's own sampler (the DDIM loop of
    `edgekit.generate`, which `generate` and quantization calibration run), so class images
    and validation images come from the sampler the exported artifacts use. A batch of seeds
    shares one loop (`denoise_seeds`): the text encoder runs once and the UNet once per step,
    conditional and unconditional rows of every seed in one call."""

    def __init__(
        self,
        text_encoder: torch.nn.Module,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        tokenizer,
        info: PipelineInfo,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        self.text_encoder, self.unet, self.vae = text_encoder, unet, vae
        self.tokenizer, self.info, self.device, self.autocast = tokenizer, info, device, autocast

    def _encode_text(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = torch.from_numpy(arrays["input_ids"]).long().to(self.device)
        with torch.inference_mode(), self.autocast():
            hidden = self.text_encoder(input_ids=ids, return_dict=False)[0]
        return {"last_hidden_state": hidden.float().cpu().numpy()}

    def _predict_noise(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sample, timestep, hidden = (
            torch.from_numpy(arrays[name]).to(self.device)
            for name in ("sample", "timestep", "encoder_hidden_states")
        )
        with torch.inference_mode(), self.autocast():
            noise = self.unet(sample, timestep, hidden, return_dict=False)[0]
        return {"noise_pred": noise.float().cpu().numpy()}

    def components(self) -> dict[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]:
        """The text encoder and UNet as the sampling loop calls them (numpy in, numpy out)."""
        return {"text-encoder": self._encode_text, "unet": self._predict_noise}

    def latents(
        self, prompt: str, seeds: list[int], *, steps: int, guidance_scale: float
    ) -> np.ndarray:
        """(len(seeds), C, H/8, W/8): one denoising loop for the whole batch of seeds."""
        from edgekit.generate import denoise_seeds

        return denoise_seeds(
            self.components(), self.tokenizer, self.info, prompt, "", steps, guidance_scale, seeds
        )

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) float32 RGB in [0, 1] from final latents, one VAE call for the batch."""
        z = torch.from_numpy(latents / np.float32(self.info.vae_scaling_factor)).to(self.device)
        with torch.inference_mode(), self.autocast():
            image = self.vae.decode(z, return_dict=False)[0]
        image = (image.float().cpu().numpy().transpose(0, 2, 3, 1) + 1.0) / 2.0
        return np.clip(image, 0.0, 1.0).astype(np.float32)

    def images(
        self, prompt: str, seeds: list[int], *, steps: int, guidance_scale: float
    ) -> np.ndarray:
        """(len(seeds), H, W, 3) float32 RGB in [0, 1]: the batch denoised together (the UNet
        called `steps` times, guidance batched), each image a function of its own seed."""
        latents = self.latents(prompt, seeds, steps=steps, guidance_scale=guidance_scale)
        return self.decode(latents)


def prepare_class_images(
    folder: Path,
    *,
    prompt: str,
    count: int,
    model: str,
    model_sha256: str,
    seed: int,
    steps: int,
    guidance_scale: float,
    batch_size: int,
    generator: Callable[[], ImageGenerator],
    on_batch: Callable[[int, int], None] = lambda done, total: None,
    workers: Workers | None = None,
) -> ClassImages:
    """`count` class images in `folder`: the user's and the recorded ones that fit this model and
    prompt first, the rest generated (`generator` is called only if any are missing).

    Every process of `workers` calls this with the same arguments and gets the same result;
    the seeds to make are dealt out a batch per process per round."""
    from edgekit.artifact import write_text_atomic
    from edgekit.generate import save_png

    workers = workers or Workers()
    record = _read_record(folder)
    # Entries whose image was deleted are forgotten: the image is made again if needed.
    record.images = [e for e in record.images if (folder / e.file).is_file()]
    recorded = {entry.file for entry in record.images}
    fits = [e for e in record.images if e.model_sha256 == model_sha256 and e.prompt == prompt]
    not_reused = [e for e in record.images if e.model_sha256 != model_sha256 or e.prompt != prompt]
    user, skipped_warning = _user_images(folder, recorded)
    have = [*user, *(folder / e.file for e in sorted(fits, key=lambda e: e.seed))]
    missing = max(0, count - len(have))
    taken = {e.seed for e in fits}
    seeds = [s for s in range(seed, seed + count + len(taken)) if s not in taken][:missing]
    # Every process has read the folder before any writes to it: they all plan the same seeds.
    workers.barrier()
    made: list[Path] = []
    if seeds:
        images = generator()
        height = images.info.latent_height * images.info.vae_scale_factor
        width = images.info.latent_width * images.info.vae_scale_factor
        tag = hashlib.sha256(f"{model_sha256}\n{prompt}".encode()).hexdigest()[:8]
        on_batch(0, len(seeds))  # the user hears of the wait before it
        per_round = batch_size * workers.count
        for start in range(0, len(seeds), per_round):
            mine = start + workers.index * batch_size
            batch = seeds[mine : mine + batch_size]
            entries = []
            if batch:  # the last round may not reach every process
                pixels = images.images(prompt, batch, steps=steps, guidance_scale=guidance_scale)
                for s, image in zip(batch, pixels, strict=True):
                    path = save_png(image, folder / f"class-{tag}-{s:06d}.png")
                    entries.append(
                        ClassImageEntry(
                            file=path.name,
                            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                            model=model,
                            model_sha256=model_sha256,
                            prompt=prompt,
                            seed=s,
                            steps=steps,
                            guidance_scale=guidance_scale,
                            height=height,
                            width=width,
                        )
                    )
            entries = workers.gather(entries)  # the round's images of every process, seed order
            record.images.extend(entries)
            made.extend(folder / entry.file for entry in entries)
            if workers.index == 0:
                # The record follows each round, so a killed run's images are reused next time.
                write_text_atomic(folder / RECORD_FILE, record.model_dump_json(indent=2) + "\n")
            on_batch(len(made), len(seeds))
    return ClassImages(
        paths=[*have, *made][:count],
        generated=len(made),
        reused=min(len(fits), max(0, count - len(user))),
        user_images=min(len(user), count),
        not_reused=not_reused,
        skipped_warning=skipped_warning,
    )


def _read_record(folder: Path) -> ClassImageRecord:
    path = folder / RECORD_FILE
    if not path.is_file():
        return ClassImageRecord()
    try:
        return ClassImageRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, UnicodeDecodeError) as exc:
        raise ClassImagesError(
            f"'{path}' is not a class image record edgekit wrote.",
            hint=f"delete {RECORD_FILE} (its images are then kept as your own class images) or "
            "choose another class_dir.",
        ) from exc


def _user_images(folder: Path, recorded: set[str]) -> tuple[list[Path], str | None]:
    """Readable images in `folder` that the record does not list, and the warning about files
    that are no images (the record itself aside). A file named as edgekit names generated
    images but not recorded is left out: a run killed between saving it and recording it made
    it (maybe half-written), and generating that seed again overwrites it."""
    if not folder.is_dir():
        return [], None

    def theirs(path: Path) -> bool:
        return path.name != RECORD_FILE and not (
            path.name not in recorded and _GENERATED_NAME.match(path.name)
        )

    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    files = [p for p in files if theirs(p)]
    if not files:
        return [], None
    try:
        found = read_image_folder(folder, "class")
    except ImageFolderError:  # files, but none an image: list them, then generate
        return [], _skipped(files)
    skipped = [p for p in found.skipped if theirs(p)]
    return [p for p in found.images if p.name not in recorded and theirs(p)], _skipped(skipped)


def _skipped(paths: list[Path]) -> str | None:
    if not paths:
        return None
    from edgekit.train.images import ImageFolder

    return ImageFolder(images=[], skipped=sorted(paths)).skipped_warning("class")
