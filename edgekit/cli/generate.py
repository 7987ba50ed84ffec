"""`edgekit generate`: an image from an exported Stable Diffusion artifact (vs PyTorch), or from
a PyTorch pipeline (a trained folder, a preset)."""

from __future__ import annotations

from pathlib import Path

import typer

from edgekit.cli._common import Guard, configure_logging, console


def generate(
    artifact: Path | None = typer.Option(
        None, "--artifact", "-a", help="An SD pipeline artifact folder (from `edgekit export`)."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Instead of --artifact: a PyTorch pipeline (a diffusers folder, e.g. from `edgekit "
        "train dreambooth`, a preset such as tiny-sd, or a single file with --config), run with "
        "the same sampler, guidance batched in one UNet call.",
    ),
    prompt: str = typer.Option(..., "--prompt", "-p", help="What to draw."),
    negative_prompt: str = typer.Option("", help="What to steer away from."),
    steps: int = typer.Option(
        20, help="Denoising steps of the sampler the artifact's manifest names (DDIM)."
    ),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, help="Seed of the initial latents."),
    out: Path = typer.Option(Path("generated.png"), "--out", "-o", help="PNG file to write."),
    compare: bool = typer.Option(
        True, help="Also run the PyTorch pipeline the artifact came from and report PSNR."
    ),
    threads: int | None = typer.Option(None, help="Runtime threads (default: runtime's own)."),
    height: int | None = typer.Option(None, help="With --model: image height in pixels."),
    width: int | None = typer.Option(None, help="With --model: image width in pixels."),
    config: Path | None = typer.Option(
        None, "--config", help="With --model and a single-file checkpoint: its diffusers folder."
    ),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="With --model: read pickle-based weights (see export)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show runtime logs."),
) -> None:
    """Generate an image with the exported components on their host runtime (--artifact), or
    with a PyTorch pipeline (--model).

    Exits with code 4 when the artifact's image is further from the PyTorch pipeline's than the
    artifact's precision allows (both images are still written, to look at).
    """
    configure_logging(verbose)
    with Guard():
        from edgekit.artifact import prepare_output_dir
        from edgekit.generate import GenerateError, check_artifact, generate_pytorch, save_png
        from edgekit.generate import generate as run_generate

        if (artifact is None) == (model is None):
            raise GenerateError(
                "Pass exactly one of --artifact (an exported pipeline) and --model (a PyTorch "
                "pipeline).",
                hint="e.g. --model db/ for a folder `edgekit train dreambooth` wrote.",
            )
        if model is not None:
            from edgekit.models import is_stable_diffusion

            # A missing or non-SD source fails before the output folder exists.
            if not is_stable_diffusion(model):
                raise GenerateError(
                    f"'{model}' is not a Stable Diffusion pipeline.",
                    hint="pass a diffusers pipeline folder, an SD preset (tiny-sd, sd15), or a "
                    "single-file checkpoint with --config.",
                )
            prepare_output_dir(out.parent)
            with console.status(f"Generating {steps} steps with {model} (PyTorch) ..."):
                result = generate_pytorch(
                    model,
                    prompt,
                    negative_prompt=negative_prompt,
                    steps=steps,
                    guidance_scale=guidance,
                    seed=seed,
                    height=height,
                    width=width,
                    config=config,
                    allow_pickle=allow_pickle,
                )
            save_png(result.image, out)
            console.print(
                f"[green]✓[/green] {out} ({result.image.shape[1]}x{result.image.shape[0]}, "
                f"{result.seconds:.1f} s, PyTorch)"
            )
            return

        # Every input is checked before any output exists: a wrong artifact leaves no folder.
        check_artifact(artifact, steps=steps)
        prepare_output_dir(out.parent)  # fail before minutes of denoising, not after

        with console.status(f"Generating {steps} steps with {artifact} ..."):
            result = run_generate(
                artifact,
                prompt,
                negative_prompt=negative_prompt,
                steps=steps,
                guidance_scale=guidance,
                seed=seed,
                threads=threads,
                compare_with_pytorch=compare,
            )
        save_png(result.image, out)
        console.print(
            f"[green]✓[/green] {out} ({result.image.shape[1]}x{result.image.shape[0]}, "
            f"{result.seconds:.1f} s)"
        )
        if result.reference_image is not None:
            reference = out.with_name(f"{out.stem}-pytorch{out.suffix}")
            save_png(result.reference_image, reference)
            console.print(
                f"PyTorch reference: {reference} ({result.reference_seconds:.1f} s); "
                f"PSNR artifact vs PyTorch: [bold]{result.psnr_db:.1f} dB[/bold] "
                "(same seed, prompt and steps"
                + (
                    f"; {result.precision} needs >= {result.min_psnr_db:.1f} dB)"
                    if result.min_psnr_db is not None
                    else f"; no threshold measured for {result.precision})"
                )
            )
            failure = result.fidelity_error()
            if failure is not None:
                raise failure
