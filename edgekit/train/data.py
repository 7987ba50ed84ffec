"""DreamBooth's training examples: the subject's photos and the class images, as tensors.

Photos are decoded once, up front: DreamBooth trains on 3-5 photos (and up to a few hundred
class images) for hundreds of steps, so decoding them again every step would be wasted work.
Each is resized so its shorter side is the training resolution and kept uncropped; the crop
and flip happen per step in `augment`, drawing from the trainer's seeded generator. That keeps
every random draw of a run in one generator that the checkpoint saves and restores: augmenting
in the dataset would draw from the global RNG while the dataloader prefetches the next batch,
so a resumed run (which fetches from a fresh iterator) would crop and flip differently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from edgekit.train.images import read_image_folder


@dataclass(frozen=True)
class Examples:
    """Decoded images of one role ('instance' or 'class'), in sorted file order."""

    paths: list[Path]
    pixels: list[torch.Tensor]  # each (3, H, W) in [-1, 1], shorter side = resolution
    skipped_warning: str | None

    def sha256(self) -> dict[str, str]:
        """File name -> sha256 of its bytes (the training card records what was trained on)."""
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.paths}


def load_examples(folder: Path, role: str, resolution: int) -> Examples:
    """Every readable image in `folder` (see edgekit/train/images.py: others skipped, none an
    error), decoded."""
    images = read_image_folder(folder, role)
    return decode_examples(images.images, resolution, images.skipped_warning(role))


def decode_examples(
    paths: list[Path], resolution: int, skipped_warning: str | None = None
) -> Examples:
    return Examples(
        paths=list(paths),
        pixels=[load_pixels(path, resolution) for path in paths],
        skipped_warning=skipped_warning,
    )


def load_pixels(path: Path, resolution: int) -> torch.Tensor:
    """Decode (EXIF orientation applied, RGB), resize the shorter side to `resolution` with
    bilinear filtering (as diffusers' DreamBooth script), scale to [-1, 1]."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
    width, height = rgb.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    array = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


class DreamBoothDataset(Dataset):
    """Example i pairs instance photo i mod n with class image i mod m, as diffusers' script does:
    an epoch visits every photo and every class image at least once."""

    def __init__(self, instance: Examples, class_examples: Examples | None) -> None:
        self.instance = instance
        self.class_examples = class_examples

    def __len__(self) -> int:
        class_count = len(self.class_examples.pixels) if self.class_examples else 0
        return max(len(self.instance.pixels), class_count)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"instance": self.instance.pixels[index % len(self.instance.pixels)]}
        if self.class_examples is not None:
            pixels = self.class_examples.pixels
            item["class"] = pixels[index % len(pixels)]
        return item


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
    """Lists, not stacked tensors: uncropped images differ in size until `augment` crops them."""
    return {key: [item[key] for item in items] for key in items[0]}


def augment(
    images: list[torch.Tensor],
    resolution: int,
    *,
    center_crop: bool,
    random_flip: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    """Crop each image to resolution x resolution (centered, or at a random offset) and flip it
    horizontally with probability 1/2; returns (B, 3, resolution, resolution)."""
    cropped = []
    for image in images:
        height, width = image.shape[-2:]
        if center_crop:
            top, left = (height - resolution) // 2, (width - resolution) // 2
        else:
            top = int(torch.randint(0, height - resolution + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - resolution + 1, (1,), generator=generator))
        crop = image[:, top : top + resolution, left : left + resolution]
        if random_flip and bool(torch.rand((), generator=generator) < 0.5):
            crop = crop.flip(-1)
        cropped.append(crop)
    return torch.stack(cropped)
