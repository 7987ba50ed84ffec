"""`edgekit train classifier`: fine-tune MobileViT on an image folder into a folder that
`edgekit export` takes as it is.

Every option is also a key of the --config YAML (options left unset do not override it), so
option defaults live in one place: `edgekit.train.classifier.ClassifierConfig`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from edgekit.cli._common import Guard, configure_logging, console


def classifier(
    config: Path | None = typer.Option(
        None, "--config", help="YAML with any of the keys below (learning_rate: 1e-3, ...)."
    ),
    resume: str | None = typer.Option(
        None,
        "--resume",
        help="Continue an interrupted run after its last completed epoch: 'latest' (the "
        "checkpoint in OUT/checkpoints) or a checkpoint folder; the same result as a run that "
        "never stopped.",
    ),
    base: str | None = typer.Option(
        None,
        help="MobileViT preset (mobilevit-small, mobilevit-x-small, mobilevit-xx-small, "
        "tiny-mobilevit) or Hugging Face MobileViT folder to start from.",
    ),
    data: Path | None = typer.Option(
        None,
        help="Image folder: one subfolder of photos per class (named after it), or train/ and "
        "val/ holding such subfolders.",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder to write (new or empty): best model, best/, last/."
    ),
    epochs: int | None = typer.Option(None, help="Passes over the training photos (default: 3)."),
    batch_size: int | None = typer.Option(None, help="Photos per step (default: 16)."),
    learning_rate: float | None = typer.Option(None, help="AdamW learning rate (default: 5e-4)."),
    weight_decay: float | None = typer.Option(None, help="AdamW weight decay (default: 0.01)."),
    lr_scheduler: str | None = typer.Option(
        None,
        help="linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup "
        "(default: cosine).",
    ),
    warmup: float | None = typer.Option(
        None, help="Fraction of the optimizer steps spent warming up (default: 0)."
    ),
    seed: int | None = typer.Option(None, help="Seeds the split, the head and the order."),
    val_fraction: float | None = typer.Option(
        None, help="Held out per class when --data has no train/ + val/ (default: 0.2)."
    ),
    freeze_backbone: bool | None = typer.Option(
        None, "--freeze-backbone/--no-freeze-backbone", help="Train the new head only."
    ),
    mixed_precision: str | None = typer.Option(
        None, help="no, bf16 or fp16 (fp16 needs a GPU) (default: no)."
    ),
    gradient_checkpointing: bool | None = typer.Option(
        None,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute activations in the backward pass: less memory, slower.",
    ),
    gradient_accumulation_steps: int | None = typer.Option(
        None, help="Batches per optimizer step (default: 1)."
    ),
    num_workers: int | None = typer.Option(
        None, help="DataLoader processes decoding photos (default: 0, in the main process)."
    ),
    allow_pickle: bool | None = typer.Option(
        None,
        "--allow-pickle",
        help="Read a base folder's pytorch_model.bin with torch's restricted unpickler.",
    ),
    qat: bool | None = typer.Option(
        None,
        "--qat/--no-qat",
        help="Quantization-aware training (fake int8, XNNPACK's pt2e scheme): for exporting "
        "with --quant int8. fp32 only; not with a frozen backbone.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library logs."),
) -> None:
    """Fine-tune MobileViT on --data; write --out (export it with `edgekit export OUT`)."""
    configure_logging(verbose)
    with Guard():
        from transformers.utils import logging as transformers_logging

        from edgekit.train.classifier import ClassifierConfig, train_classifier
        from edgekit.train.config import load_config

        # save_pretrained's progress bar, once per checkpoint, would split the epoch lines.
        transformers_logging.disable_progress_bar()

        settings = load_config(
            ClassifierConfig,
            config,
            {
                "base": base,
                "data": data,
                "out": out,
                "epochs": epochs,
                "batch_size": batch_size,
                "learning_rate": learning_rate,
                "weight_decay": weight_decay,
                "lr_scheduler": lr_scheduler,
                "warmup": warmup,
                "seed": seed,
                "val_fraction": val_fraction,
                "freeze_backbone": freeze_backbone,
                "mixed_precision": mixed_precision,
                "gradient_checkpointing": gradient_checkpointing,
                "gradient_accumulation_steps": gradient_accumulation_steps,
                "num_workers": num_workers,
                "allow_pickle": allow_pickle,
                "qat": qat,
            },
        )

        def on_data(folders) -> None:
            for warning in folders.warnings:
                console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
            split = "train/ and val/" if folders.split_by == "folders" else "a seeded split"
            console.print(
                f"{len(folders.labels)} classes ({', '.join(folders.labels)}): "
                f"{len(folders.train.paths)} training and {len(folders.val.paths)} validation "
                f"photos from {split}.",
                highlight=False,
            )

        def on_epoch(record, is_best: bool) -> None:
            console.print(
                f"epoch {record.epoch}/{settings.epochs}: train loss {record.train_loss:.4f}, "
                f"val top-1 {record.val_top1:.1%} ({record.val_correct}/{record.val_images}), "
                f"{record.seconds:.1f} s" + (" [green]best[/green]" if is_best else ""),
                highlight=False,
            )

        def on_resume(checkpoint: Path, epoch: int) -> None:
            console.print(f"resumed from {checkpoint} after epoch {epoch}", highlight=False)

        with console.status(f"Training {settings.base} on {settings.data} ..."):
            card = train_classifier(
                settings,
                resume=resume,
                on_data=on_data,
                on_epoch=on_epoch,
                on_resume=on_resume,
            )
        if card is None:  # another process of `accelerate launch`: the main one reports
            return
        if card.base.random_weights:
            console.print(
                f"[yellow]{settings.base} is a preset with RANDOM weights[/yellow]: the backbone "
                "was trained from scratch, not fine-tuned."
            )
        before = "new head" if card.head == "new" else "before training"
        console.print(
            f"[green]✓[/green] best val top-1 {card.best_val_top1:.1%} (epoch {card.best_epoch}; "
            f"{before} {card.initial_val_top1:.1%}) at [bold]{settings.out}[/bold] "
            f"(best/, last/, training_card.json). Export it: edgekit export {settings.out} "
            + (
                f"--target executorch --quant int8 --calib {settings.data}"
                if settings.qat
                else "--target tflite"
            ),
            highlight=False,
        )
