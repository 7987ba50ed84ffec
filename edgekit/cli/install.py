"""`edgekit install`: put an artifact where a demo app loads it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekit.cli._common import Guard, configure_logging, console


def install(
    artifact: Annotated[
        Path, typer.Argument(metavar="ARTIFACT", help="An artifact folder (`edgekit export`).")
    ],
    app: Annotated[
        str,
        typer.Option(
            "--app",
            help="android-demo, ios-demo (in the current folder or this edgekit checkout), or "
            "the path of a copy of either app.",
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Install even an artifact whose verification failed.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs.")] = False,
) -> None:
    """Copy an artifact and its manifest into a demo app's asset folder (all or nothing)."""
    configure_logging(verbose)
    with Guard():
        from edgekit.device.install import install_artifact

        result = install_artifact(artifact, app, force=force)
    manifest, destination = result.manifest, result.destination
    action = "Replaced the earlier copy of" if result.replaced else "Installed"
    console.print(
        f"{action} {manifest.name} ({manifest.format}) in {result.checkout.app.name} at "
        f"[bold]{destination}[/bold]:",
        highlight=False,
        soft_wrap=True,
    )
    width = max(len(f.path) for f in result.files)
    for installed in result.files:
        console.print(
            f"  {installed.path:<{width}} -> {destination / installed.path} "
            f"({installed.size_bytes / 2**20:.2f} MiB)",
            highlight=False,
            soft_wrap=True,
        )
    if result.forced:
        console.print(
            "[yellow]![/yellow] Installed with --force although its verification failed: "
            "the app may show wrong results."
        )
    elif manifest.status == "structure-only":
        console.print(
            "[yellow]![/yellow] Only its structure was checked at export (no runtime for "
            f"{manifest.format} on that OS): its numerics are unverified."
        )
