"""`edgekit train classifier` on real photos: validation top-1 and time per epoch.

    .venv/bin/python benchmarks/bench_train_classifier.py [--base tiny-mobilevit] [--epochs 8]

Real photos only (no download): three photos that ship with scikit-image (a cat, a coffee cup,
a rocket), each cut into a dozen crops at random positions and scales, every other one mirrored,
one class per photo. The seeded split holds a quarter of each class (3 photos) out for
validation. The untrained head's top-1 (before the first step) is the chance line the epochs are
read against.
Results go to benchmarks/results/train-classifier-<base>-cpu.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
# Class name -> scikit-image photo.
PHOTOS = {"cat": "chelsea", "coffee": "coffee", "rocket": "rocket"}
PHOTOS_PER_CLASS = 12
# Each crop keeps this range of the photo's side lengths, so the crops overlap but differ.
CROP_SIDE = (0.5, 0.9)
VAL_FRACTION = 0.25
# Shorter side of the written PNGs: above the models' input sizes, small enough to decode fast.
PHOTO_SHORT_SIDE = 96


def write_photo_classes(folder: Path, *, per_class: int = PHOTOS_PER_CLASS, seed: int = 0) -> Path:
    """`folder`/<class>/NN.png: `per_class` crops of each class's photo; returns `folder`."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    for label, name in PHOTOS.items():
        photo = Image.fromarray(np.asarray(getattr(data, name)()))
        width, height = photo.size
        (folder / label).mkdir(parents=True)
        for index in range(per_class):
            side = rng.uniform(*CROP_SIDE)
            crop_width, crop_height = int(width * side), int(height * side)
            left = int(rng.integers(0, width - crop_width + 1))
            top = int(rng.integers(0, height - crop_height + 1))
            crop = photo.crop((left, top, left + crop_width, top + crop_height))
            if index % 2:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            scale = PHOTO_SHORT_SIDE / min(crop.size)
            crop = crop.resize((round(crop.width * scale), round(crop.height * scale)))
            crop.save(folder / label / f"{index:02d}.png")
    return folder


def main() -> None:
    import torch
    from transformers.utils import logging as transformers_logging

    from edgekit import __version__
    from edgekit.artifact import now_utc
    from edgekit.cli._common import configure_logging
    from edgekit.train.classifier import ClassifierConfig, train_classifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="tiny-mobilevit")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: its own)"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure_logging(verbose=False)
    transformers_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    # Other work on the machine slows every epoch: the record keeps the load it ran under.
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="edgekit-train-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        config = ClassifierConfig(
            base=args.base,
            data=write_photo_classes(scratch / "photos"),
            out=scratch / "model",
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            val_fraction=VAL_FRACTION,
        )
        card = train_classifier(
            config,
            on_epoch=lambda r, best: print(
                f"epoch {r.epoch}: loss {r.train_loss:.4f}, val top-1 {r.val_top1:.1%}, "
                f"{r.seconds:.1f} s"
            ),
        )
    machine = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    record = {
        "benchmark": "train-classifier",
        "base": args.base,
        "random_weights": card.base.random_weights,
        "created_utc": now_utc(),
        "edgekit": __version__,
        "machine": machine,
        "device": card.device,
        "photos": {"classes": PHOTOS, "per_class": PHOTOS_PER_CLASS},
        "train_images": card.train.images,
        "val_images": card.val.images,
        # The data and out folders were scratch folders, gone after the run.
        "config": {k: v for k, v in card.config.items() if k not in ("data", "out")},
        "initial_val_top1": card.initial_val_top1,
        "epochs": [e.model_dump() for e in card.epochs],
        "best_epoch": card.best_epoch,
        "best_val_top1": card.best_val_top1,
        "versions": card.versions,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"train-classifier-{args.base}-cpu"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    stem.with_suffix(".md").write_text(_markdown(record))
    print(f"wrote {stem}.json and .md")


def _markdown(record: dict) -> str:
    machine = record["machine"]
    load = machine["load_average_1min"]
    config = record["config"]
    rows = "\n".join(
        f"| {e['epoch']} | {e['train_loss']:.4f} | {e['val_top1']:.1%} "
        f"({e['val_correct']}/{record['val_images']}) | {e['seconds']:.1f} s |"
        for e in record["epochs"]
    )
    weights = (
        "RANDOM preset weights: the backbone learns from scratch, so this measures the training "
        "path and its speed, not a pretrained model's transfer."
        if record["random_weights"]
        else "Pretrained weights."
    )
    return (
        f"# train classifier: {record['base']} on {len(record['photos']['classes'])} photo "
        "classes\n\n"
        f"{machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch threads, "
        f"device {record['device']}; 1-minute load average {load['before']:.1f} before, "
        f"{load['after']:.1f} after (other work on the machine slows the epochs). "
        f"{record['train_images']} training and "
        f"{record['val_images']} validation photos (crops of scikit-image's "
        f"{', '.join(record['photos']['classes'].values())}); batch {config['batch_size']}, "
        f"AdamW lr {config['learning_rate']}, {config['lr_scheduler']} schedule, seed "
        f"{config['seed']}. {weights}\n\n"
        f"Untrained head (before the first step): val top-1 {record['initial_val_top1']:.1%}.\n\n"
        "| epoch | train loss | val top-1 | time (train + val) |\n|---|---|---|---|\n"
        f"{rows}\n\n"
        f"Best: epoch {record['best_epoch']}, val top-1 {record['best_val_top1']:.1%}.\n\n"
        f"Measured {record['created_utc']} with edgekit {record['edgekit']}, torch "
        f"{record['versions'].get('torch')}, accelerate {record['versions'].get('accelerate')}, "
        f"on {machine['platform']}, Python {machine['python']}.\n"
    )


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
