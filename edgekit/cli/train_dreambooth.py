"""`edgekit train dreambooth`: personalize Stable Diffusion from a few photos into a pipeline
folder that `edgekit export` takes as it is.

Every option is also a key of the --config YAML (options left unset do not override it), so
option defaults live in one place: `edgekit.train.dreambooth.DreamBoothConfig`. On several GPUs
the same command runs under accelerate's launcher:

    accelerate launch -m edgekit train dreambooth --config db.yaml
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edgekit.cli._common import Guard, configure_logging, console


def dreambooth(
    config: Path | None = typer.Option(
        None, "--config", help="YAML with any of the keys below (learning_rate: 5e-6, ...)."
    ),
    resume: str | None = typer.Option(
        None,
        "--resume",
        help="Continue from 'latest' (the newest complete checkpoint in OUT/checkpoints) or a "
        "checkpoint folder: the same losses and weights as a run that never stopped.",
    ),
    base: str | None = typer.Option(
        None,
        help="Model to personalize: a preset (tiny-sd, sd15), a diffusers pipeline folder, or a "
        "single-file .safetensors with --base-config.",
    ),
    base_config: Path | None = typer.Option(
        None, help="With a single-file base: its diffusers folder (configs, tokenizer)."
    ),
    allow_pickle: bool | None = typer.Option(
        None,
        "--allow-pickle",
        help="Read a pickle-based base (.ckpt, .bin) with torch's restricted unpickler.",
    ),
    instance_dir: Path | None = typer.Option(
        None, help="Folder of the subject's photos (3-5 is typical)."
    ),
    instance_prompt: str | None = typer.Option(
        None, help="Prompt with a rare identifier: 'a photo of sks cat'."
    ),
    class_prompt: str | None = typer.Option(
        None, help="The subject's class: 'a photo of cat'. Turns on prior preservation."
    ),
    class_dir: Path | None = typer.Option(
        None, help="Class images, generated where missing (default: OUT/class-images)."
    ),
    num_class_images: int | None = typer.Option(None, help="Class images (default: 100)."),
    prior_loss_weight: float | None = typer.Option(
        None, help="Weight of the class-prior loss (default: 1.0)."
    ),
    with_prior_preservation: bool | None = typer.Option(
        None,
        "--with-prior-preservation/--no-prior-preservation",
        help="Train on class images too (default: on when --class-prompt is set).",
    ),
    resolution: int | None = typer.Option(
        None, help="Training size in pixels, a multiple of 8 (default: 512)."
    ),
    center_crop: bool | None = typer.Option(
        None, "--center-crop/--random-crop", help="Crop the center (default: random crop)."
    ),
    random_flip: bool | None = typer.Option(
        None, "--random-flip/--no-random-flip", help="Flip at random (default: no)."
    ),
    max_steps: int | None = typer.Option(None, help="Optimizer steps (default: 400)."),
    train_batch_size: int | None = typer.Option(
        None, help="Photos per step, per GPU (default: 1)."
    ),
    gradient_accumulation_steps: int | None = typer.Option(
        None, help="Batches per optimizer step (default: 1)."
    ),
    learning_rate: float | None = typer.Option(None, help="AdamW learning rate (default: 5e-6)."),
    lr_scheduler: str | None = typer.Option(
        None,
        help="constant, constant_with_warmup, linear, cosine, cosine_with_restarts, polynomial "
        "(default: constant).",
    ),
    lr_warmup_steps: int | None = typer.Option(None, help="Warm-up steps (default: 0)."),
    max_grad_norm: float | None = typer.Option(None, help="Gradient clipping norm (default: 1.0)."),
    seed: int | None = typer.Option(
        None, help="Seeds every draw and the class images (default: 0)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder."),
    checkpoint_every: int | None = typer.Option(
        None, help="Save a checkpoint every N steps (default: 500)."
    ),
    checkpoints_total_limit: int | None = typer.Option(
        None, help="Keep the newest N checkpoints (default: all)."
    ),
    train_text_encoder: bool | None = typer.Option(
        None,
        "--train-text-encoder/--no-train-text-encoder",
        help="Train the text encoder too (default: no).",
    ),
    lora_rank: int | None = typer.Option(
        None, help="LoRA rank; 0 fine-tunes the whole UNet (default: 0)."
    ),
    gradient_checkpointing: bool | None = typer.Option(
        None,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute activations in the backward pass: less memory, slower.",
    ),
    use_8bit_adam: bool | None = typer.Option(
        None, "--use-8bit-adam/--no-8bit-adam", help="bitsandbytes' 8-bit AdamW (CUDA only)."
    ),
    fused_adam: bool | None = typer.Option(
        None,
        "--fused-adam/--no-fused-adam",
        help="AdamW's fused kernel (default: wherever torch has one for the device).",
    ),
    compile_unet: bool | None = typer.Option(
        None,
        "--compile-unet/--no-compile-unet",
        help="torch.compile the UNet (default: on with CUDA, off on the CPU).",
    ),
    mixed_precision: str | None = typer.Option(
        None, help="no, fp16 (GPU only) or bf16 (default: no)."
    ),
    validation_prompt: str | None = typer.Option(
        None, help="Prompt of validation images (TensorBoard and OUT/validation)."
    ),
    validation_every: int | None = typer.Option(
        None, help="A validation image every N steps (default: 100)."
    ),
    report_to: str | None = typer.Option(
        None, help="tensorboard (OUT/logs), wandb or none (default: tensorboard)."
    ),
    inference_steps: int | None = typer.Option(
        None, help="Denoising steps of class and validation images (default: 50)."
    ),
    guidance_scale: float | None = typer.Option(
        None, help="Guidance of class and validation images (default: 7.5)."
    ),
    sample_batch_size: int | None = typer.Option(
        None, help="Class images denoised together, one UNet call per step (default: 4)."
    ),
    deterministic: bool | None = typer.Option(
        None,
        "--deterministic/--no-deterministic",
        help="Deterministic GPU kernels (slower): GPU runs resume bit for bit, as CPU runs do.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library logs."),
) -> None:
    """Personalize Stable Diffusion with DreamBooth; write --out (export it with
    `edgekit export OUT --target ...`)."""
    options = dict(locals())
    configure_logging(verbose)
    with Guard():
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        from edgekit.train.config import load_config
        from edgekit.train.dreambooth import DreamBoothConfig, train

        if not verbose:  # their per-file load and save bars, between the trainer's own lines
            transformers_logging.disable_progress_bar()
            diffusers_logging.disable_progress_bar()

        overrides = {
            key: value
            for key, value in options.items()
            if key not in {"config", "resume", "verbose"}
        }
        settings = load_config(DreamBoothConfig, config, overrides)
        result = train(settings, resume=resume, reporter=RichReporter())
        if result.card is not None:
            final = ", ".join(f"{k} {v:.4g}" for k, v in result.card.final_losses.items())
            console.print(
                f"[green]✓[/green] {result.card.steps} steps ({final}) -> [bold]{result.out}"
                f"[/bold]; export with: edgekit export {result.out} --target onnx"
            )


class RichReporter:
    """The trainer's messages on the console, and a progress bar over the steps (the methods of
    edgekit.train.dreambooth.Reporter, which is not imported here: --help stays light)."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task = None

    def note(self, text: str) -> None:
        console.print(text, highlight=False)

    def warn(self, text: str) -> None:
        console.print(f"[yellow]warning:[/yellow] {text}", highlight=False)

    def class_images_progress(self, done: int, total: int) -> None:
        console.print(f"generating class images: {done}/{total}", highlight=False)

    def steps_started(self, first_step: int, total: int) -> None:
        self._bar = Progress(
            TextColumn("step"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task = self._bar.add_task(
            "train", total=total, completed=first_step, loss="-", speed=""
        )
        self._bar.start()

    def step(self, step: int, metrics: dict[str, float]) -> None:
        task = self._bar.tasks[0]
        self._bar.update(self._task, completed=step, loss=f"{metrics['loss']:.4f}")
        speed = task.speed  # steps per second over rich's recent window
        if speed:
            self._bar.update(self._task, speed=f"{speed:.2f} it/s")

    def steps_finished(self) -> None:
        if self._bar is not None:
            self._bar.stop()
