"""`edgekit bench compare | ingest | report`: the commands that read bench reports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgekit.cli._common import Guard, configure_logging, console

# Exit status of `bench compare` when a row regressed: a CI gate's "failed", distinct from the
# 2 of bad input (BenchReportError).
REGRESSION_EXIT_CODE = 1

VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs.")]


def parse_max_regression(text: str) -> float:
    """'5%' or '0.05' -> 0.05. A bare number of 1 or more is refused: '5' could mean 5% or 500%."""
    from edgekit.errors import BenchReportError

    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(%?)\s*", text)
    if match:
        number, percent = float(match.group(1)), bool(match.group(2))
        if percent or number < 1:
            return number / 100 if percent else number
    raise BenchReportError(
        f"--max-regression '{text}' is not a fraction below 1 or a percentage.",
        hint="e.g. --max-regression 5% or --max-regression 0.05.",
    )


def compare(
    a: Annotated[Path, typer.Argument(help="The reference report (JSON), e.g. from main.")],
    b: Annotated[Path, typer.Argument(help="The report to check against it.")],
    max_regression: Annotated[
        str | None,
        typer.Option(
            "--max-regression",
            help="Fail (exit 1) when a row is slower than this beyond its noise, e.g. 5% or "
            "0.05. Without it the table is printed and nothing fails.",
        ),
    ] = None,
    markdown_out: Annotated[
        Path | None, typer.Option("--markdown", help="Also write the table as Markdown here.")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Per-row latency change from A to B, matched by artifact and settings, noise-aware."""
    configure_logging(verbose)
    with Guard():
        from edgekit.artifact import write_text_atomic
        from edgekit.bench.compare import compare as compare_reports
        from edgekit.bench.compare import comparison_markdown
        from edgekit.bench.ingest import load_report

        threshold = parse_max_regression(max_regression) if max_regression is not None else None
        comparison = compare_reports(
            load_report(a), load_report(b), threshold, a_name=str(a), b_name=str(b)
        )
        _print_comparison(comparison)
        if markdown_out:
            write_text_atomic(markdown_out, comparison_markdown(comparison))
            console.print(f"Markdown: {markdown_out}")
    if comparison.regressions:
        console.print(
            f"[bold red]{len(comparison.regressions)} row(s) regressed beyond "
            f"{threshold:.1%}.[/bold red]"
        )
        raise typer.Exit(REGRESSION_EXIT_CODE)


def _print_comparison(comparison) -> None:
    from edgekit.bench.compare import COMPARE_COLUMNS, comparison_cells

    table = Table(title=f"{comparison.a_name} -> {comparison.b_name}", title_justify="left")
    for column in COMPARE_COLUMNS:
        table.add_column(column, justify="left" if column in {"variant", "verdict"} else "right")
    for compared in comparison.rows:
        table.add_row(*comparison_cells(compared), style="red" if compared.regressed else None)
    console.print(table)
    console.print(comparison.summary(), highlight=False)
    for label in comparison.only_in_a:
        console.print(f"only in {comparison.a_name}: {label}", highlight=False)
    for label in comparison.only_in_b:
        console.print(f"only in {comparison.b_name}: {label}", highlight=False)
    for note in comparison.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


def ingest(
    file: Annotated[Path, typer.Argument(help="A bench report JSON from a device or machine.")],
    report: Annotated[
        Path, typer.Option("--report", help="Report folder to merge it into (created if new).")
    ],
    verbose: VerboseOption = False,
) -> None:
    """Validate a bench report (schema 2.0) and add it to a report folder beside its rows."""
    configure_logging(verbose)
    with Guard():
        from edgekit.bench.ingest import ingest as ingest_report

        with console.status("Validating and rebuilding the report ..."):
            merged = ingest_report(file, report)
    if merged.added:
        console.print(f"Added {file} to {report}: {merged.total} report(s) on the page.")
    else:
        console.print(f"{file} is already in {report}: nothing added ({merged.total} report(s)).")
    console.print(f"HTML: {merged.index_html}")


def report(
    reports: Annotated[list[Path], typer.Argument(help="Bench report JSON files.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder to write.")],
    verbose: VerboseOption = False,
) -> None:
    """Build a report folder (index.md, index.html with plots, data/) from JSON reports; reports
    already in the folder stay."""
    configure_logging(verbose)
    with Guard():
        from edgekit.bench.ingest import load_report, merge_into_folder

        loaded = [load_report(path) for path in reports]  # every file valid before any write
        with console.status("Plotting ..."):
            merged = merge_into_folder(out, loaded)
    console.print(f"{merged.total} report(s) in {out}; HTML: {merged.index_html}")
