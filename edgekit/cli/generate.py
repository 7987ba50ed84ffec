"""`edgekit generate`: an image from an exported Stable Diffusion artifact, vs PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer

from edgekit.cli._common import Guard, configure_logging, console


def generate(
    artifact: Path = typer.Option(..., "--artifact", "-a", help="An SD pipeline artifact folder."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="What to draw."),
    negative_prompt: str = typer.Option("", help="What to steer away from."),
    steps: int = typer.Option(20, help="DDIM denoising steps."),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, help="Seed of the initial latents."),
    out: Path = typer.Option(Path("generated.png"), "--out", "-o", help="PNG file to write."),
    compare: bool = typer.Option(
        True, help="Also run the PyTorch pipeline the artifact came from and report PSNR."
    ),
    threads: int | None = typer.Option(None, help="Runtime threads (default: runtime's own)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show runtime logs."),
) -> None:
    """Generate an image with the exported components on their host runtime."""
    configure_logging(verbose)
    with Guard():
        from edgekit.artifact import prepare_output_dir
        from edgekit.generate import generate as run_generate
        from edgekit.generate import save_png

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
                "(same seed, prompt and steps)"
            )
