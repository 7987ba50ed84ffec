"""`edgekit bench`: latency, memory and size of artifacts on host runtimes, vs PyTorch eager."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgekit.cli._common import Guard, configure_logging, console


def bench(
    artifacts: list[Path] = typer.Argument(
        ..., help="Artifact folders written by `edgekit export`."
    ),
    threads: int | None = typer.Option(
        None,
        help="Threads each runtime may use. Default: what each artifact's target profile names "
        "(e.g. 4 for tflite-android), so the numbers are for the settings the app will use.",
    ),
    runs: int = typer.Option(20, help="Timed runs per variant (at least)."),
    warmup: int = typer.Option(3, help="Untimed runs after the first inference."),
    min_time: float = typer.Option(0.0, help="Keep timing until this many seconds have passed."),
    rounds: int = typer.Option(1, help="Interleaved rounds: every variant once per round."),
    pytorch: bool = typer.Option(True, help="Add a PyTorch eager baseline row per source model."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
    markdown_out: Path | None = typer.Option(None, "--markdown", help="Write a Markdown report."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show runtime logs."),
) -> None:
    """Benchmark artifacts, each in its own process: load, first run, percentiles, memory."""
    configure_logging(verbose)
    with Guard():
        from edgekit.bench import TimingSettings, run_bench

        timing = TimingSettings(warmup_runs=warmup, min_runs=runs, min_time_s=min_time)
        with console.status("Benchmarking (one process per variant) ..."):
            report = run_bench(
                artifacts, threads=threads, timing=timing, rounds=rounds, pytorch_baseline=pytorch
            )
        render_report(report)
        write_reports(report, json_out=json_out, markdown_out=markdown_out)


def render_report(report) -> None:
    from edgekit.bench.report import COLUMNS, caption, row

    table = Table(caption=caption(report), caption_justify="left")
    for column in COLUMNS:
        table.add_column(
            column, justify="left" if column in {"variant", "format", "runtime"} else "right"
        )
    for result in report.results:
        table.add_row(*row(result))
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def write_reports(report, *, json_out: Path | None, markdown_out: Path | None) -> None:
    from edgekit.artifact import write_text_atomic
    from edgekit.bench.report import markdown

    if json_out:
        write_text_atomic(json_out, report.model_dump_json(indent=2) + "\n")
        console.print(f"JSON report: {json_out}")
    if markdown_out:
        write_text_atomic(markdown_out, markdown(report))
        console.print(f"Markdown report: {markdown_out}")
