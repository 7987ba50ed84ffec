"""`edgekit generate`: an image from an exported Stable Diffusion artifact, vs PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer

from edgekit.cli._common import Guard, configure_logging, console


def generate(
    artifact: Path = typer.Option(..., "--artifact", "-a", help="An SD pipeline artifact folder."),
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
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show runtime logs."),
) -> None:
    """Generate an image with the exported components on their host runtime.

    Exits with code 4 when the image is further from the PyTorch pipeline's than the artifact's
    precision allows (both images are still written, to look at).
    """
    configure_logging(verbose)
    with Guard():
        from edgekit.artifact import prepare_output_dir
        from edgekit.generate import check_artifact, save_png
        from edgekit.generate import generate as run_generate

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
