"""The `edgekit` command: Typer app composed of one module per command group.

Only this package prints. It imports the library lazily inside commands so `edgekit --help`
stays free of torch and converters (a test checks this).
"""

from __future__ import annotations

import typer

from edgekit import __version__
from edgekit.cli import bench as bench_cmd
from edgekit.cli import classify as classify_cmd
from edgekit.cli import emulator as emulator_cmd
from edgekit.cli import export as export_cmd
from edgekit.cli import generate as generate_cmd
from edgekit.cli import install as install_cmd
from edgekit.cli import quantize as quantize_cmd
from edgekit.cli import quickstart as quickstart_cmd
from edgekit.cli import train as train_cmd

app = typer.Typer(
    name="edgekit",
    help="Take vision models to phones: export, verify against PyTorch, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command("export")(export_cmd.export)
app.add_typer(bench_cmd.app, name="bench")
app.command("generate")(generate_cmd.generate)
app.command("classify")(classify_cmd.classify)
app.command("install")(install_cmd.install)
app.command("quickstart")(quickstart_cmd.quickstart)
app.add_typer(quantize_cmd.app, name="quantize")
app.add_typer(train_cmd.app, name="train")
app.add_typer(emulator_cmd.app, name="emulator")
app.command("verify")(emulator_cmd.verify)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgekit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Take vision models to phones: export, verify against PyTorch, benchmark."""


def main() -> None:
    app()
