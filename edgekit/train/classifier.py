"""Fine-tune a MobileViT classifier on an image folder (one subfolder per class), on accelerate.

The output is what `edgekit export` takes as it is: a Hugging Face MobileViT folder whose
config.json names the classes (the folder names) and whose preprocessor_config.json is the
preprocessing training validated with, so the artifact's manifest, `edgekit classify` and a demo
app feed the model exactly what it was measured on. That preprocessing is the one edgekit's
manifest records for the base model; training adds augmentation (a random resized crop and a
horizontal flip of the decoded photo) in front of it, on the training split only.

accelerate runs the loop (devices, mixed precision, gradient accumulation, `accelerate launch`
for several GPUs, or several CPU processes: edgekit/train/engine.py); the learning-rate schedules
are transformers'. Under a launcher the processes share the data, validation counts each photo
once (gathered), and the main process alone reports and writes.

Resumable by epoch: after each epoch the whole state (weights, optimizer, LR schedule, every RNG
state, the epochs' records and the best epoch's weights) is saved, atomically, as
OUT/checkpoints/checkpoint-<epoch> (edgekit/train/checkpoints.py; the newest one kept), and
`--resume latest` continues after the last completed epoch with the result of a run that never
stopped, bit for bit on the CPU, one process or two (tests/test_train_classifier.py); the
checkpoint holds each process's RNG state and the shuffling generator of their shared sampler,
so it resumes with the same number of processes. An interrupted run leaves
those checkpoints and nothing else. The model folders are written into a staging folder beside
`out` and moved in at the end, the training card last (a folder with a card is whole); the
checkpoints of a finished run are then removed, so `out` holds what export takes.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgekit import __version__
from edgekit.errors import OutputError, SourceError
from edgekit.models.base import (
    TRAINING_CARD_FILE,
    Preprocessing,
    SourceInfo,
    sha256_of_files,
)
from edgekit.models.mobilevit import MobileViTClassifier, save_preprocessor_config
from edgekit.train import checkpoints
from edgekit.train.config import TrainConfigError
from edgekit.train.engine import distributed_state, make_accelerator, scoped_accelerator_state
from edgekit.train.images import ImageFolderError, read_image_folder

TRAIN_FOLDER, VAL_FOLDER = "train", "val"
BEST_FOLDER, LAST_FOLDER = "best", "last"
# Random resized crop of the decoded photo (torchvision's RandomResizedCrop sampling): the area
# kept and the aspect ratio of the window. The area floor is above torchvision's ImageNet 0.08:
# the crop must still show the class in the small photo sets a fine-tune is given.
CROP_SCALE = (0.25, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10
FLIP_PROBABILITY = 0.5
# Schedules of transformers.get_scheduler that need no arguments beyond warm-up and length.
Scheduler = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
]
_VERSIONED_PACKAGES = ("torch", "transformers", "accelerate", "numpy", "pillow")
# Config keys a checkpoint depends on: resuming with another value would load state that does
# not fit or continue another run (the LR schedule spans `epochs`; the split follows the seed and
# val_fraction; the optimizer state holds the learning rate), so it is refused.
STATE_KEYS = (
    "epochs",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "lr_scheduler",
    "warmup",
    "seed",
    "val_fraction",
    "freeze_backbone",
    "mixed_precision",
    "gradient_accumulation_steps",
    "qat",
)


class ClassifierConfig(BaseModel):
    """`edgekit train classifier`: a YAML file (--config) and options, the same keys."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(description="MobileViT preset or Hugging Face MobileViT folder.")
    data: Path = Field(
        description="One subfolder of photos per class; or train/ and val/, each holding them."
    )
    out: Path = Field(description="Folder to write; it must not exist or be empty.")
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(16, ge=1, description="Photos per step, per process.")
    learning_rate: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    lr_scheduler: Scheduler = "cosine"
    warmup: float = Field(
        0.0, ge=0, lt=1, description="Fraction of the optimizer steps spent warming up."
    )
    seed: int = 0
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Held out per class when data has no train/ + val/."
    )
    freeze_backbone: bool = Field(False, description="Train the new head only.")
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    gradient_accumulation_steps: int = Field(1, ge=1)
    num_workers: int = Field(0, ge=0, description="DataLoader processes that decode photos.")
    allow_pickle: bool = Field(
        False, description="Read a base folder's pytorch_model.bin (restricted unpickler)."
    )
    qat: bool = Field(
        False,
        description="Quantization-aware training: fake int8 (XNNPACK's pt2e scheme) in the "
        "forward pass, so the weights learn to survive `edgekit export --quant int8`.",
    )

    @model_validator(mode="after")
    def _warmup_needs_a_schedule_with_one(self) -> ClassifierConfig:
        if self.warmup and self.lr_scheduler == "constant":
            # transformers' constant schedule takes no warm-up: it would be ignored silently.
            raise ValueError("lr_scheduler 'constant' has no warm-up; use constant_with_warmup")
        if self.qat:
            # The QAT graph is traced once in fp32 (torch.export): autocast and activation
            # checkpointing are not in it, and a frozen backbone could not adapt to int8.
            clashes = [
                name
                for name, clash in (
                    (f"mixed_precision {self.mixed_precision}", self.mixed_precision != "no"),
                    ("gradient_checkpointing", self.gradient_checkpointing),
                    ("freeze_backbone", self.freeze_backbone),
                )
                if clash
            ]
            if clashes:
                raise ValueError(f"qat trains in fp32 with every layer: drop {', '.join(clashes)}")
        return self


class ClassifierTrainError(TrainConfigError):
    """A configuration that cannot run here (e.g. fp16 without a GPU)."""


@dataclass(frozen=True)
class Split:
    """Photos and their class indices (into `ClassFolders.labels`)."""

    paths: list[Path]
    targets: list[int]

    def per_class(self, labels: list[str]) -> dict[str, int]:
        return {label: self.targets.count(index) for index, label in enumerate(labels)}


@dataclass(frozen=True)
class ClassFolders:
    root: Path
    labels: list[str]  # sorted folder names; index = class id
    train: Split
    val: Split
    split_by: Literal["folders", "val_fraction"]
    skipped: list[Path]
    warnings: list[str]  # one line per class folder with skipped files


def read_class_folders(data: Path, *, val_fraction: float, seed: int) -> ClassFolders:
    """The photos under `data`, checked and split, before anything is loaded or written.

    `data/train/<class>/` + `data/val/<class>/` are used as given; otherwise `data/<class>/` is
    split per class (stratified): `val_fraction` of each class, at least one photo, goes to
    validation, drawn with `seed`.
    """
    if not data.is_dir():
        raise ImageFolderError(
            f"The data folder '{data}' does not exist or is not a folder.",
            hint="pass a folder with one subfolder of photos per class (--data).",
        )
    has_train, has_val = (data / TRAIN_FOLDER).is_dir(), (data / VAL_FOLDER).is_dir()
    if has_train != has_val:
        present, missing = (TRAIN_FOLDER, VAL_FOLDER) if has_train else (VAL_FOLDER, TRAIN_FOLDER)
        raise ImageFolderError(
            f"'{data}' has a {present}/ folder but no {missing}/ folder.",
            hint=f"add {missing}/ with the same class subfolders, or put the class subfolders "
            f"directly in '{data}' (a {val_fraction:.0%} validation split is then drawn).",
        )
    if has_train:
        train_classes = _class_folders(data / TRAIN_FOLDER)
        val_classes = _class_folders(data / VAL_FOLDER)
        if sorted(train_classes) != sorted(val_classes):
            only_train = sorted(set(train_classes) - set(val_classes))
            only_val = sorted(set(val_classes) - set(train_classes))
            differences = [
                f"only in {folder}/: {', '.join(names)}"
                for folder, names in ((TRAIN_FOLDER, only_train), (VAL_FOLDER, only_val))
                if names
            ]
            raise ImageFolderError(
                f"train/ and val/ in '{data}' have different class folders ("
                + "; ".join(differences)
                + ").",
                hint="every class needs photos in both: train on them, validate on the others.",
            )
        labels = sorted(train_classes)
        train, train_skipped = _read_split(train_classes, labels, "train")
        val, val_skipped = _read_split(val_classes, labels, "val")
        skipped = {**train_skipped, **val_skipped}
        return ClassFolders(
            root=data,
            labels=labels,
            train=train,
            val=val,
            split_by="folders",
            skipped=[p for folder in skipped.values() for p in folder.skipped],
            warnings=[w for folder in skipped.values() if (w := folder.skipped_warning("class"))],
        )

    classes = _class_folders(data)
    labels = sorted(classes)
    folders = {label: read_image_folder(classes[label], f"class '{label}'") for label in labels}
    too_few = {label: len(f.images) for label, f in folders.items() if len(f.images) < 2}
    if too_few:
        listed = ", ".join(f"'{label}' ({count})" for label, count in too_few.items())
        raise ImageFolderError(
            f"Cannot split a class with one photo into training and validation: {listed}.",
            hint="give every class at least 2 photos (1 to train on, 1 to validate on; "
            "5 or more for a meaningful top-1), or split them yourself into train/ and val/.",
        )
    rng = random.Random(seed)
    train, val = Split([], []), Split([], [])
    for index, label in enumerate(labels):
        images = list(folders[label].images)
        rng.shuffle(images)
        # At least one photo on each side, whatever the fraction rounds to.
        held_out = min(len(images) - 1, max(1, round(len(images) * val_fraction)))
        for split, chosen in ((val, images[:held_out]), (train, images[held_out:])):
            split.paths.extend(sorted(chosen))
            split.targets.extend([index] * len(chosen))
    return ClassFolders(
        root=data,
        labels=labels,
        train=train,
        val=val,
        split_by="val_fraction",
        skipped=[p for f in folders.values() for p in f.skipped],
        warnings=[w for f in folders.values() if (w := f.skipped_warning("class"))],
    )


def _class_folders(folder: Path) -> dict[str, Path]:
    classes = {
        p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")
    }
    if len(classes) < 2:
        found = f"only '{next(iter(classes))}'" if classes else "none"
        raise ImageFolderError(
            f"'{folder}' needs one subfolder of photos per class, at least 2; found {found}.",
            hint="make a folder per class, named after it (cat/, dog/, ...), holding its photos.",
        )
    return classes


def _read_split(classes: dict[str, Path], labels: list[str], role: str):
    folders = {
        label: read_image_folder(classes[label], f"{role} class '{label}'") for label in labels
    }
    split = Split([], [])
    for index, label in enumerate(labels):
        split.paths.extend(folders[label].images)
        split.targets.extend([index] * len(folders[label].images))
    return split, {f"{role}/{label}": folder for label, folder in folders.items()}


def random_resized_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random window: CROP_SCALE of the area, aspect ratio in
    CROP_RATIO, drawn from torch's generator (seeded by accelerate, per DataLoader worker).

    torchvision's RandomResizedCrop sampling; torchvision itself is not a dependency. When no
    window fits in CROP_ATTEMPTS draws (very elongated photos) the whole photo is used.
    """
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(CROP_ATTEMPTS):
        target_area = area * torch.empty(1).uniform_(*CROP_SCALE).item()
        aspect = math.exp(torch.empty(1).uniform_(*log_ratio).item())
        crop_width = round(math.sqrt(target_area * aspect))
        crop_height = round(math.sqrt(target_area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(torch.randint(0, height - crop_height + 1, (1,)).item())
            left = int(torch.randint(0, width - crop_width + 1, (1,)).item())
            return left, top, left + crop_width, top + crop_height
    return 0, 0, width, height


class PhotoDataset(torch.utils.data.Dataset):
    """(pixel_values (3, H, W), class index) per photo: edgekit.preprocess with the manifest's
    preprocessing, after the training augmentation when `augment` is set."""

    def __init__(self, split: Split, preprocessing: Preprocessing, *, augment: bool) -> None:
        self.split = split
        self.preprocessing = preprocessing
        self.augment = augment

    def __len__(self) -> int:
        return len(self.split.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        from edgekit.preprocess import load_image, preprocess_rgb

        image = load_image(self.split.paths[index])
        if self.augment:
            image = image.crop(random_resized_crop_box(image.width, image.height))
            if torch.rand(1).item() < FLIP_PROBABILITY:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = preprocess_rgb(image, self.preprocessing)[0]
        return torch.from_numpy(pixels), self.split.targets[index]


class EpochRecord(BaseModel):
    epoch: int
    train_loss: float = Field(description="Mean cross-entropy over the epoch's training photos.")
    val_top1: float
    val_correct: int
    val_images: int
    seconds: float = Field(description="Training and validation of this epoch, wall clock.")


class SplitRecord(BaseModel):
    folder: str
    images: int
    per_class: dict[str, int]
    sha256: str = Field(description="Over the photos' bytes and paths relative to the data folder.")


class TrainingCard(BaseModel):
    """training_card.json: what was trained on what, how, and how well, to trace a model back."""

    created_utc: str
    base: SourceInfo
    config: dict
    labels: list[str]
    split: Literal["folders", "val_fraction"]
    train: SplitRecord
    val: SplitRecord
    skipped_files: list[str]
    preprocessing: Preprocessing = Field(
        description="Validation's, written as preprocessor_config.json (the manifest's)."
    )
    augmentation: dict = Field(description="Training split only, before the preprocessing.")
    head: Literal["new", "kept from the base"] = Field(
        description="Kept when the base's labels are the class folders, in order."
    )
    validation: Literal["float", "fake-quantized int8 (QAT)"] = Field(
        description="How val top-1 was measured: with QAT, through the fake-quantized model, so "
        "it estimates the int8 export's accuracy."
    )
    initial_val_top1: float = Field(
        description="Before the first step: chance level for a new head."
    )
    epochs: list[EpochRecord]
    best_epoch: int
    best_val_top1: float
    device: str
    num_processes: int
    versions: dict[str, str]
    resumed_from: str | None = Field(None, description="The checkpoint this run resumed from.")


def check_output_folder(out: Path, *, resume: bool = False) -> None:
    """`out` must be new or empty: a previous model there is not overwritten. Resuming, it holds
    the checkpoints of the interrupted run (and perhaps part of its outputs, never the card)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(
            f"'{out}' is a file; training writes a new model folder.",
            hint="pass another --out, or remove it first.",
        )
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return
    if resume and TRAINING_CARD_FILE in entries:
        raise OutputError(
            f"'{out}' holds a finished run ({TRAINING_CARD_FILE}): there is nothing to resume.",
            hint="pass another --out for a new run, or remove it first.",
        )
    if resume:
        return  # the checkpoints are looked for next; outputs of a cut-short publish replaced
    if checkpoints.CHECKPOINTS_DIR in entries and TRAINING_CARD_FILE not in entries:
        raise OutputError(
            f"'{out}' holds the checkpoints of an interrupted run; training writes a new model "
            "folder.",
            hint="add --resume latest to continue that run, or pass another --out.",
        )
    raise OutputError(
        f"'{out}' is a folder that is not empty; training writes a new model folder.",
        hint="pass another --out, or remove it first.",
    )


def train_classifier(
    config: ClassifierConfig,
    *,
    resume: str | None = None,
    on_data: Callable[[ClassFolders], None] | None = None,
    on_epoch: Callable[[EpochRecord, bool], None] | None = None,
    on_resume: Callable[[Path, int], None] | None = None,
) -> TrainingCard | None:
    """Fine-tune `config.base` on `config.data`; write `config.out`; return its training card
    (None in the processes but the main one under `accelerate launch`: they write nothing).

    `resume`: 'latest' (the newest complete checkpoint in OUT/checkpoints) or a checkpoint
    folder, to continue after its epoch. `on_data(folders)` is called once the photos are
    checked (warnings to show), `on_resume(checkpoint, epoch)` once a checkpoint is loaded,
    `on_epoch(record, is_best)` after each epoch's validation, in the main process only. Every
    check that can refuse the run comes before the first step and the first file written.
    """
    from accelerate.utils import set_seed

    folders = read_class_folders(config.data, val_fraction=config.val_fraction, seed=config.seed)
    check_output_folder(config.out, resume=resume is not None)
    checkpoint = None
    if resume is not None:
        checkpoint = checkpoints.resolve(resume, checkpoints.checkpoints_dir(config.out))
    processes = distributed_state()  # first: it decides whether CPU processes form one group
    if not processes.is_main_process:
        on_data = on_epoch = on_resume = None  # the user hears each thing once
    if config.mixed_precision == "fp16" and processes.device.type == "cpu":
        # accelerate would train in fp32 on a CPU without a word.
        raise ClassifierTrainError(
            "mixed_precision fp16 needs a GPU; this run has the CPU only.",
            hint="use bf16 (CPU autocast) or no.",
        )
    base = _load_base(config)
    state = _state_settings(config, folders, base.source.sha256, processes.num_processes)
    if checkpoint is not None:
        _check_resumable(state, checkpoints.read_marker(checkpoint), checkpoint)
    if on_data:
        on_data(folders)
    with scoped_accelerator_state():
        accelerator = make_accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
        )
        set_seed(config.seed)
        run = _Resume(checkpoint, state, on_resume)
        return _fit(config, folders, base, accelerator, on_epoch, run)


def _state_settings(
    config: ClassifierConfig, folders: ClassFolders, base_sha256: str, num_processes: int
) -> dict:
    """What a checkpoint depends on, recorded in its marker: STATE_KEYS, the base's weights, the
    photos of each split, the classes and the number of processes (each its own RNG state)."""
    values = config.model_dump(mode="json")
    return {
        **{key: values[key] for key in STATE_KEYS},
        "base_sha256": base_sha256,
        "labels": folders.labels,
        "train_sha256": sha256_of_files(folders.train.paths, root=folders.root),
        "val_sha256": sha256_of_files(folders.val.paths, root=folders.root),
        "num_processes": num_processes,
    }


def _check_resumable(current: dict, marker: dict, path: Path) -> None:
    changes = checkpoints.settings_changes(marker, current)
    if changes:
        raise checkpoints.CheckpointError(
            f"Cannot resume from {path}: it was saved with other settings or data "
            f"({', '.join(changes)}).",
            hint="resume with the settings and photos it was saved with, or start a new run "
            "with another --out.",
        )


@dataclass
class _Resume:
    checkpoint: Path | None
    state: dict  # _state_settings, for the checkpoints' markers
    on_resume: Callable[[Path, int], None] | None


class _Progress:
    """Where the run is, registered for checkpointing: the epochs done and their records, the
    validation before training, and the best epoch's weights (best/ is written at the end)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.records: list[dict] = []
        self.initial_correct = 0
        self.best_state: dict[str, torch.Tensor] = {}

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class _SamplerGenerator:
    """The generator accelerate gives a shuffled loader's sampler under several processes (the
    data order), registered for checkpointing. One process has none: its sampler draws from
    torch's global RNG, which accelerate's checkpoint holds anyway."""

    def __init__(self, loader) -> None:
        self.generator = getattr(loader, "synchronized_generator", None)

    def state_dict(self) -> dict:
        return {"state": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if self.generator is not None and state["state"] is not None:
            self.generator.set_state(state["state"])


def _fit(config: ClassifierConfig, folders: ClassFolders, base, accelerator, on_epoch, run):
    """The training run proper: the new head, the loop, the checkpoints, the card."""
    from edgekit.artifact import now_utc, prepare_output_dir, staging_dir

    # A base that already classifies exactly these classes (a model this command trained)
    # keeps its head: training goes on from it, e.g. QAT after a float fine-tune.
    keep_head = base.labels == folders.labels
    hf_model = base.module.model if keep_head else _with_new_head(base.module.model, folders.labels)
    hf_model.to(accelerator.device)
    if config.gradient_checkpointing:
        hf_model.gradient_checkpointing_enable()
    if config.freeze_backbone:
        hf_model.mobilevit.requires_grad_(False)
    network = _Network(
        hf_model,
        _qat_graph(hf_model, base.inputs[0].shape, accelerator.device)
        if config.qat
        else MobileViTClassifier(hf_model),
        qat=config.qat,
        freeze_backbone=config.freeze_backbone,
    )
    optimizer = torch.optim.AdamW(
        [p for p in network.module.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    train_loader = torch.utils.data.DataLoader(
        PhotoDataset(folders.train, base.preprocessing, augment=True),
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=config.num_workers,
    )
    val_loader = torch.utils.data.DataLoader(
        PhotoDataset(folders.val, base.preprocessing, augment=False),
        batch_size=config.batch_size,
        num_workers=config.num_workers,
    )
    model, optimizer, train_loader, val_loader = accelerator.prepare(
        network.module, optimizer, train_loader, val_loader
    )
    scheduler = accelerator.prepare(_scheduler(config, optimizer, len(train_loader), accelerator))

    progress = _Progress()
    accelerator.register_for_checkpointing(progress, _SamplerGenerator(train_loader))
    val_images = len(folders.val.paths)
    out = config.out
    staging_parent = prepare_output_dir(out.parent.resolve())  # writable, before any epoch
    saved_in = checkpoints.checkpoints_dir(out)
    if run.checkpoint is not None:
        accelerator.load_state(str(run.checkpoint))
        if run.on_resume:
            run.on_resume(run.checkpoint, progress.epoch)
    else:
        progress.initial_correct = _evaluate(network, model, val_loader, accelerator)
    for epoch in range(progress.epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        train_loss = _train_epoch(network, model, train_loader, optimizer, scheduler, accelerator)
        correct = _evaluate(network, model, val_loader, accelerator)
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_top1=correct / val_images,
            val_correct=correct,
            val_images=val_images,
            seconds=round(time.perf_counter() - started, 3),
        )
        is_best = all(record.val_top1 > done["val_top1"] for done in progress.records)
        if is_best:
            progress.best_state = network.float_state(model, accelerator)
        progress.records.append(record.model_dump())
        progress.epoch = epoch
        # Only the newest is kept: a resume continues after the last completed epoch, and the
        # older one goes only once the newer is complete.
        marker = {"state": run.state, "config": config.model_dump(mode="json")}
        # A QAT graph reaches some observers under two names (inputs and outputs that share
        # quantization parameters): safetensors' loader would refuse its checkpoint.
        checkpoints.save(accelerator, saved_in, epoch, marker, keep=1, safetensors=not config.qat)
        if on_epoch:
            on_epoch(record, is_best)
    records = [EpochRecord.model_validate(done) for done in progress.records]
    best = max(records, key=lambda r: r.val_top1)  # the first of equals, as the loop chose
    initial_correct = progress.initial_correct
    with staging_dir(staging_parent) as staging:
        folder = staging / "model"
        last = network.float_state(model, accelerator)
        network.save(last, accelerator, base.preprocessing, folder / LAST_FOLDER)
        network.save(progress.best_state, accelerator, base.preprocessing, folder / BEST_FOLDER)
        card = TrainingCard(
            created_utc=now_utc(),
            base=base.source,
            config=config.model_dump(mode="json"),
            labels=folders.labels,
            split=folders.split_by,
            train=_split_record(folders, folders.train),
            val=_split_record(folders, folders.val),
            skipped_files=[str(p) for p in folders.skipped],
            preprocessing=base.preprocessing,
            augmentation={
                "random_resized_crop": {"scale": list(CROP_SCALE), "ratio": list(CROP_RATIO)},
                "horizontal_flip": FLIP_PROBABILITY,
            },
            head="kept from the base" if keep_head else "new",
            validation="fake-quantized int8 (QAT)" if config.qat else "float",
            initial_val_top1=initial_correct / val_images,
            epochs=records,
            best_epoch=best.epoch,
            best_val_top1=best.val_top1,
            device=str(accelerator.device),
            num_processes=accelerator.num_processes,
            versions=_versions(),
            resumed_from=str(run.checkpoint) if run.checkpoint else None,
        )
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            # out/ itself holds the best model, so `edgekit export out/` exports it as it is.
            for file in (folder / BEST_FOLDER).iterdir():
                shutil.copy2(file, folder / file.name)
            (folder / TRAINING_CARD_FILE).write_text(card.model_dump_json(indent=2) + "\n")
            _publish(folder, out)
    return card if accelerator.is_main_process else None


def _publish(folder: Path, out: Path) -> None:
    """Move the staged model folder to `out`. `out` holds at most the run's checkpoints (and
    what an earlier attempt at this moved in, without a card): the entries move in one by one,
    the card last, so a folder with a card is whole; then the checkpoints go."""
    out.mkdir(exist_ok=True)
    entries = sorted(folder.iterdir(), key=lambda p: p.name == TRAINING_CARD_FILE)
    for entry in entries:
        target = out / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    out.chmod(0o755)
    shutil.rmtree(checkpoints.checkpoints_dir(out), ignore_errors=True)


def _load_base(config: ClassifierConfig):
    from edgekit import models

    if models.is_stable_diffusion(config.base):
        raise SourceError(
            f"'{config.base}' is a Stable Diffusion source; `train classifier` fine-tunes "
            "MobileViT classifiers.",
            hint=f"pass a MobileViT preset ({', '.join(_mobilevit_presets())}) or a Hugging Face "
            "MobileViT folder; Stable Diffusion is `edgekit train dreambooth`.",
        )
    return models.load(config.base, allow_pickle=config.allow_pickle)


def _mobilevit_presets() -> list[str]:
    from edgekit.models.mobilevit import MOBILEVIT_PRESETS

    return sorted(MOBILEVIT_PRESETS)


def _with_new_head(model, labels: list[str]):
    """`model` with a freshly initialized classifier for `labels` (the folder names), which
    config.json records as id2label/label2id; the backbone keeps its weights."""
    config = model.config
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: index for index, label in enumerate(labels)}
    model.num_labels = config.num_labels
    model.classifier = torch.nn.Linear(config.neck_hidden_sizes[-1], len(labels))
    return model


def _scheduler(config: ClassifierConfig, optimizer, batches_per_epoch: int, accelerator):
    """transformers' schedule over every optimizer step of the run. accelerate steps a prepared
    scheduler once per process per optimizer step, so lengths count all processes."""
    from transformers import get_scheduler

    steps = math.ceil(batches_per_epoch / config.gradient_accumulation_steps) * config.epochs
    total = steps * accelerator.num_processes
    return get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=round(total * config.warmup),
        num_training_steps=total,
    )


@dataclass
class _Network:
    """What is trained and what is saved.

    `hf_model` (MobileViTForImageClassification) is saved with save_pretrained. `module` is what
    the loop calls, pixel_values -> logits: edgekit's export wrapper around `hf_model`, or with
    QAT that wrapper traced and prepared for QAT, whose weights are `hf_model`'s by name.
    """

    hf_model: torch.nn.Module
    module: torch.nn.Module
    qat: bool
    freeze_backbone: bool

    def train_mode(self, prepared, accelerator) -> None:
        if self.qat:
            from torchao.quantization.pt2e import move_exported_model_to_train

            # A traced graph ignores .train(): BatchNorm and dropout are switched in the graph.
            move_exported_model_to_train(accelerator.unwrap_model(prepared))
            return
        prepared.train()
        if self.freeze_backbone:
            # A frozen backbone keeps its BatchNorm statistics and drops no activations: only
            # the head learns, on the features the backbone gives at inference.
            self.hf_model.mobilevit.eval()

    def eval_mode(self, prepared, accelerator) -> None:
        if self.qat:
            from torchao.quantization.pt2e import move_exported_model_to_eval

            move_exported_model_to_eval(accelerator.unwrap_model(prepared))
            return
        prepared.eval()

    def float_state(self, prepared, accelerator) -> dict[str, torch.Tensor]:
        """The trained weights under the Hugging Face model's names, copied to the CPU."""
        if self.qat:
            # The QAT graph holds the float weights under the wrapper's names ("model." + the
            # Hugging Face name), beside its observers; copied by name, the saved folder is a
            # plain float model that `edgekit export --quant int8` quantizes again.
            trained = accelerator.unwrap_model(prepared).state_dict()
            state = {name: trained[f"model.{name}"] for name in self.hf_model.state_dict()}
        else:
            state = self.hf_model.state_dict()
        return {name: tensor.detach().cpu().clone() for name, tensor in state.items()}

    def save(
        self,
        state: dict[str, torch.Tensor],
        accelerator,
        preprocessing: Preprocessing,
        folder: Path,
    ) -> None:
        """A Hugging Face folder of `state`: config.json (labels), model.safetensors, the
        preprocessor config. Training is over: the Hugging Face model only carries weights."""
        if not accelerator.is_main_process:
            return
        self.hf_model.load_state_dict(state)
        self.hf_model.save_pretrained(folder, save_function=accelerator.save)
        save_preprocessor_config(preprocessing, folder)


def _qat_graph(hf_model, input_shape: list[int], device) -> torch.nn.Module:
    """`hf_model` behind edgekit's export wrapper, traced with torch.export (any batch size) and
    prepared for QAT with the XNNPACK quantizer's symmetric int8 scheme, per-channel weights:
    the scheme `edgekit export --target executorch --quant int8` quantizes with."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    hf_model.train()  # traced in training form: BatchNorm updates its statistics
    # Two photos: a traced batch of 1 would be specialized to 1.
    sample = torch.rand(2, *input_shape[1:], device=device)
    exported = torch.export.export(
        MobileViTClassifier(hf_model),
        (sample,),
        dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch")}},
        strict=False,
    )
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    )
    return prepare_qat_pt2e(exported.module(), quantizer)


def _train_epoch(network: _Network, model, loader, optimizer, scheduler, accelerator) -> float:
    network.train_mode(model, accelerator)
    loss_sum, photos = 0.0, 0
    for pixel_values, targets in loader:
        with accelerator.accumulate(model):
            logits = model(pixel_values)
            loss = torch.nn.functional.cross_entropy(logits.float(), targets)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        loss_sum += loss.item() * len(targets)
        photos += len(targets)
    totals = torch.tensor([loss_sum, photos], dtype=torch.float64, device=accelerator.device)
    total_loss, total_photos = accelerator.reduce(totals, reduction="sum").tolist()
    return total_loss / total_photos


def _evaluate(network: _Network, model, loader, accelerator) -> int:
    """Photos in `loader` whose top-1 class is right, over all processes."""
    network.eval_mode(model, accelerator)
    correct = 0
    with torch.no_grad():
        for pixel_values, targets in loader:
            predictions = model(pixel_values).argmax(dim=-1)
            predictions, targets = accelerator.gather_for_metrics((predictions, targets))
            correct += int((predictions == targets).sum().item())
    return correct


def _split_record(folders: ClassFolders, split: Split) -> SplitRecord:
    return SplitRecord(
        folder=str(folders.root.resolve()),
        images=len(split.paths),
        per_class=split.per_class(folders.labels),
        sha256=sha256_of_files(split.paths, root=folders.root),
    )


def _versions() -> dict[str, str]:
    versions = {"edgekit": __version__, "python": platform.python_version()}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
