"""`edgekit export`: model source -> verified artifact folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgekit.cli._common import Guard, configure_logging, console
from edgekit.exporters import format_names


def export(
    model: str = typer.Argument(
        ...,
        help="A preset name (e.g. mobilevit-small, tiny-sd), a Hugging Face MobileViT folder, "
        "or a diffusers pipeline / UNet folder.",
    ),
    target: str = typer.Option(
        ..., "--target", "-t", help=f"Output format: {', '.join(format_names())}."
    ),
    out: Path = typer.Option(
        Path("artifacts"), "--out", "-o", help="Folder the artifact goes into."
    ),
    component: str | None = typer.Option(None, help="Stable Diffusion component to export: unet."),
    height: int | None = typer.Option(None, help="Stable Diffusion image height in pixels."),
    width: int | None = typer.Option(None, help="Stable Diffusion image width in pixels."),
    batch_size: int = typer.Option(1, help="Static batch size of the exported model."),
    precision: str = typer.Option("fp32", help="Weight/compute precision: fp32."),
    name: str | None = typer.Option(None, help="Artifact folder name (default: derived)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show converter logs and traces."),
) -> None:
    """Export MODEL to --target, verify it against PyTorch, write an artifact folder."""
    configure_logging(verbose)
    with Guard():
        from edgekit import exporters, models
        from edgekit.export import export_artifact

        exporters.get(target)  # an unknown target fails before a slow model load
        with console.status(f"Loading {model} ..."):
            loaded = models.load(
                model, component=component, height=height, width=width, batch_size=batch_size
            )
        if loaded.source.random_weights:
            console.print(
                f"[yellow]{model} is a preset with RANDOM weights[/yellow] "
                "(real architecture, seeded init): use it to test the path, not results."
            )
        with console.status(f"Exporting to {target} and verifying ..."):
            path, manifest = export_artifact(loaded, target, out, precision=precision, name=name)
        print_manifest_summary(path, manifest)


def print_manifest_summary(path: Path, manifest) -> None:
    size = sum(f.size_bytes for f in manifest.files)
    console.print(
        f"[green]✓[/green] {manifest.format} artifact at [bold]{path}[/bold] "
        f"({size / 2**20:.1f} MiB, exported in {manifest.export.duration_s:.1f} s)"
    )
    table = Table(title=manifest.verification.message, title_justify="left")
    for column in ["output", "shape", "SQNR dB", "cosine", "max abs diff", "top-1", "status"]:
        table.add_column(column)
    for o in manifest.verification.outputs:
        table.add_row(
            o.name,
            "x".join(map(str, o.shape)),
            f"{o.sqnr_db:.1f}" if o.sqnr_db is not None else "-",
            f"{o.cosine:.6f}" if o.cosine is not None else "-",
            f"{o.max_abs_diff:.2e}" if o.max_abs_diff is not None else "-",
            f"{o.top1_agreement:.0%}" if o.top1_agreement is not None else "-",
            "[green]pass[/green]" if o.passed else f"[red]{'; '.join(o.failures)}[/red]",
        )
    console.print(table)
    details = manifest.export.details
    if "delegated_ops" in details:
        not_delegated = details["non_delegated_by_op"] or "none"
        console.print(
            f"XNNPACK delegated {details['delegated_ops']} ops in "
            f"{details['delegated_subgraphs']} subgraphs; not delegated "
            f"({details['non_delegated_ops']}): {not_delegated}"
        )
