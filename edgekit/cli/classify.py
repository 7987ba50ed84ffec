"""`edgekit classify`: top-k labels for photos from a classifier artifact, next to PyTorch's."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgekit.cli._common import Guard, configure_logging, console, err_console


def classify(
    artifact: Path = typer.Argument(
        ..., metavar="ARTIFACT", help="A classifier artifact folder (`edgekit export`)."
    ),
    images: list[Path] = typer.Argument(
        ..., metavar="IMAGE", help="Photos to classify (JPEG, PNG, ...)."
    ),
    top: int = typer.Option(5, "--top", help="How many labels to show per photo."),
    threads: int | None = typer.Option(None, help="Runtime threads (default: runtime's own)."),
    compare: bool = typer.Option(
        True, help="Also run the PyTorch model the artifact came from, when its source is here."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show runtime logs."),
) -> None:
    """Classify photos with the artifact on its host runtime (preprocessing from its manifest)."""
    configure_logging(verbose)
    with Guard():
        from edgekit.classify import classify as run_classify
        from edgekit.preprocess import ImageError

        with console.status(f"Classifying {len(images)} image(s) with {artifact} ..."):
            report = run_classify(
                artifact, images, top_k=top, threads=threads, compare_with_pytorch=compare
            )
        console.print(
            f"{report.artifact} on {report.runtime}"
            + (f", batch {report.batch_size}" if report.batch_size > 1 else "")
        )
        if report.status != "verified":
            console.print(
                f"[yellow]![/yellow] This artifact is marked {report.status} in its manifest."
            )
        if report.random_weights:
            console.print(
                "[yellow]![/yellow] Random preset weights: the labels mean nothing, "
                "the comparison with PyTorch still does."
            )
        for image in report.images:
            if image.error is not None:
                err_console.print(
                    f"[bold red]error:[/bold red] {image.error}", highlight=False, soft_wrap=True
                )
                continue
            console.print(
                f"[bold]{image.path}[/bold] ({image.width}x{image.height})",
                highlight=False,
                soft_wrap=True,
            )
            console.print(_table(image, report.top_k))
            if image.reference is not None:
                verdict = (
                    f"[green]✓[/green] top-{report.top_k} labels identical to PyTorch"
                    if image.labels_agree
                    else f"[yellow]![/yellow] top-{report.top_k} labels differ from PyTorch"
                )
                console.print(
                    f"{verdict}; scores differ by at most {image.max_score_difference:.1e}"
                )
        if report.reference_unavailable:
            console.print(
                f"[yellow]![/yellow] PyTorch comparison unavailable: {report.reference_unavailable}"
                ".",
                highlight=False,
            )
        if report.failed_images:
            raise typer.Exit(code=ImageError.exit_code)


def _table(image, top_k: int) -> Table:
    table = Table(highlight=False)
    table.add_column("#", justify="right")
    table.add_column("label")
    table.add_column("score", justify="right")
    if image.reference is not None:
        table.add_column("PyTorch label")
        table.add_column("PyTorch score", justify="right")
    for rank in range(min(top_k, len(image.predictions))):
        row = [str(rank + 1), image.predictions[rank].label, f"{image.predictions[rank].score:.4f}"]
        if image.reference is not None:
            row += [image.reference[rank].label, f"{image.reference[rank].score:.4f}"]
        table.add_row(*row)
    return table
