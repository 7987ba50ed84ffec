"""`edgekit train dreambooth|classifier`: training whose outputs export and quantize take as
they are. Each command lives in its own module; this one composes the group."""

from __future__ import annotations

import typer

from edgekit.cli import train_classifier, train_dreambooth

app = typer.Typer(
    help="Train on a server: personalize Stable Diffusion (DreamBooth), fine-tune MobileViT.",
    no_args_is_help=True,
)
# Registrations, one line per command: app.command("name")(function)
app.command("classifier")(train_classifier.classifier)
app.command("dreambooth")(train_dreambooth.dreambooth)


@app.callback()
def _group() -> None:
    """Train on a server: personalize Stable Diffusion (DreamBooth), fine-tune MobileViT."""
