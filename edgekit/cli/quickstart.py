"""`edgekit quickstart`: the built-in default, end to end, on a preset."""

from __future__ import annotations

from pathlib import Path

import typer

from edgekit.cli._common import Guard, configure_logging, console
from edgekit.exporters import format_names


def quickstart(
    preset: str = typer.Option(
        "mobilevit-small",
        help="MobileViT preset: mobilevit-small, mobilevit-x-small, "
        "mobilevit-xx-small, tiny-mobilevit.",
    ),
    out: Path = typer.Option(
        Path("edgekit-quickstart"), "--out", "-o", help="Where artifacts and the report go."
    ),
    threads: int = typer.Option(2, help="Threads each runtime may use."),
    runs: int = typer.Option(20, help="Timed runs per variant."),
    rounds: int = typer.Option(3, help="Interleaved rounds of all variants (median ratio)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show converter logs."),
) -> None:
    """Export a MobileViT preset to every format, verify, benchmark, and write a report."""
    configure_logging(verbose)
    with Guard():
        from edgekit import models, profiles
        from edgekit.artifact import write_text_atomic
        from edgekit.bench import BenchSettings, TimingSettings, run_bench
        from edgekit.bench.report import markdown
        from edgekit.cli.bench import render_report, write_reports
        from edgekit.cli.export import print_manifest_summary, say_replaced
        from edgekit.export import export_for_target
        from edgekit.quickstart import check_preset, quickstart_report_intro

        check_preset(preset)
        console.print(
            f"[bold]edgekit quickstart[/bold]: {preset} -> {', '.join(format_names())}, "
            "verify against PyTorch, benchmark.\n"
            f"[yellow]{preset} has RANDOM weights[/yellow] (published architecture, seeded init): "
            "latency and fidelity are real; its predictions are not."
        )
        with console.status(f"Building {preset} ..."):
            loaded = models.load(preset)
        artifacts = []
        for format_name in format_names():
            profile = profiles.resolve(format_name)
            with console.status(f"Exporting to {format_name} ({profile.name}) and verifying ..."):
                path, manifest = export_for_target(loaded, profile, out, on_replace=say_replaced)
            print_manifest_summary(path, manifest)
            artifacts.append(path)
        del loaded
        with console.status("Benchmarking, each variant in its own process ..."):
            report = run_bench(
                artifacts,
                timing=TimingSettings(warmup_runs=3, min_runs=runs),
                settings=BenchSettings(threads=[threads], rounds=rounds),
            )
        render_report(report)
        report_md = out / "report.md"
        write_reports(report, json_out=out / "bench.json", markdown_out=None)
        write_text_atomic(
            report_md,
            quickstart_report_intro(preset, artifacts) + markdown(report, title="Benchmark"),
        )
        from edgekit.bench.html import write_report_folder

        # This run only: a rerun replaces the page, as it replaces the artifacts.
        page = write_report_folder(out / "bench-report", [report])
        console.print(f"Report: [bold]{report_md}[/bold], with plots: [bold]{page}[/bold]")
