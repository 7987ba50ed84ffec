"""`edgekit bench`: latency, throughput, memory, compute efficiency and per-op profiles of
artifacts on host runtimes, vs PyTorch eager; `bench compare` and `bench ingest` for reports.

`edgekit bench ARTIFACTS...` is the `run` subcommand: a group whose first argument is not a
subcommand name runs the benchmark, so the common case needs no extra word.
"""

from __future__ import annotations

from pathlib import Path

import typer
from typer.core import TyperGroup

from edgekit.cli._common import Guard, configure_logging, console
from edgekit.errors import EdgekitError


class _RunByDefault(TyperGroup):
    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in {"--help", "-h"}:
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_RunByDefault,
    no_args_is_help=True,
    help="Benchmark artifacts (`edgekit bench ARTIFACTS...`), compare reports, ingest device "
    "reports.",
)


class BenchOptionError(EdgekitError):
    exit_code = 2


def parse_counts(text: str | None, option: str) -> list[int] | None:
    """'1,2,4' -> [1, 2, 4]; a one-line error for anything else."""
    if text is None:
        return None
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or any(c < 1 for c in counts):
        raise BenchOptionError(
            f"{option} {text!r} is not a list of counts.", hint=f"e.g. {option} 1,2,4."
        )
    return sorted(set(counts))


@app.command("run")
def bench(
    artifacts: list[Path] = typer.Argument(
        ..., help="Artifact folders written by `edgekit export`, or folders holding them."
    ),
    threads: str | None = typer.Option(
        None,
        help="Thread counts to sweep, e.g. 1,2,4. Default: what each artifact's target profile "
        "names (e.g. 4 for tflite-android, capped at this host's cores).",
    ),
    batch: str | None = typer.Option(
        None,
        help="Batch sizes to sweep, e.g. 1,4. Each artifact has the batch it was exported with "
        "(export --batch-size N); artifacts of other batch sizes are skipped with a note.",
    ),
    runs: int = typer.Option(
        100, help="Timed runs per variant (at least; 100 or more gives a p99)."
    ),
    warmup: int = typer.Option(5, help="Untimed runs after the first inference."),
    min_time: float = typer.Option(0.0, help="Keep timing until this many seconds have passed."),
    max_time: float = typer.Option(
        30.0, help="Stop timing a slow variant after this many seconds (once 10 runs are done)."
    ),
    rounds: int = typer.Option(1, help="Interleaved rounds: every variant once per round."),
    timeout: float = typer.Option(600.0, help="Seconds before a variant's process is stopped."),
    pytorch: bool = typer.Option(True, help="Add a PyTorch eager baseline row per source model."),
    compute: bool = typer.Option(
        True, help="FLOPs, GFLOP/s and the share of this host's measured matmul peak."
    ),
    profile_ops: bool = typer.Option(
        False, "--profile-ops", help="Per-op profile of each artifact (after its timed runs)."
    ),
    profile_runs: int = typer.Option(10, help="Runs the per-op profile sums over."),
    top: int = typer.Option(15, help="Ops shown per artifact with --profile-ops."),
    steps: int = typer.Option(
        20, help="Stable Diffusion artifacts: denoising steps for the per-image breakdown."
    ),
    images: int = typer.Option(
        1, help="Stable Diffusion artifacts: whole images generated end to end (0: none)."
    ),
    emulate: str | None = typer.Option(
        None,
        help="Run under emulation instead (arm64, after `edgekit emulator setup arm64`): "
        "emulated wall time per core, for comparing artifacts, never a phone's latency.",
    ),
    cpu: str = typer.Option("cortex-a76", help="With --emulate: cores, e.g. cortex-a76,max."),
    emulator_cache: Path | None = typer.Option(None, help="With --emulate: the emulator cache."),
    device: str | None = typer.Option(
        None,
        "--device",
        help="Measure on an Android phone instead: adb, or adb:SERIAL with several connected. "
        "Runs the android-demo app's benchmark mode (android-demo/BENCH_PROTOCOL.md); "
        "--min-time becomes its sustained mode.",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
    markdown_out: Path | None = typer.Option(None, "--markdown", help="Write a Markdown report."),
    report_dir: Path | None = typer.Option(
        None,
        "--report",
        help="Add this run to a report folder: Markdown + a self-contained HTML page with "
        "plots, beside the reports already there (device reports from `bench ingest`).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show runtime logs."),
) -> None:
    """Benchmark artifacts, each in its own process: load, first run, percentiles, memory."""
    configure_logging(verbose)
    if device is not None:
        from edgekit.cli.device_bench import bench_device

        host_only = {
            "--emulate": emulate is not None,
            "--profile-ops": profile_ops,
            "--batch": batch is not None,
            "--rounds": rounds != 1,
        }
        return bench_device(
            artifacts, device, threads=threads, runs=runs, warmup=warmup, min_time=min_time,
            timeout=timeout, host_only=host_only, json_out=json_out, markdown_out=markdown_out,
            report_dir=report_dir, top=top,
        )  # fmt: skip
    with Guard():
        from edgekit.bench import BenchSettings, TimingSettings, run_bench

        timing = TimingSettings(
            warmup_runs=warmup, min_runs=runs, min_time_s=min_time, max_time_s=max_time
        )
        settings = BenchSettings(
            threads=parse_counts(threads, "--threads"),
            batches=parse_counts(batch, "--batch"),
            rounds=rounds,
            pytorch_baseline=pytorch,
            compute=compute,
            profile_runs=profile_runs if profile_ops else 0,
            pipeline_steps=steps,
            pipeline_images=images,
            timeout_s=timeout,
            emulate=(emulate, [c.strip() for c in cpu.split(",") if c.strip()])
            if emulate
            else None,
            emulator_cache=emulator_cache,
        )
        with console.status("Benchmarking (one process per variant) ..."):
            report = run_bench(artifacts, timing=timing, settings=settings)
        render_report(report, top=top)
        write_reports(report, json_out=json_out, markdown_out=markdown_out, report_dir=report_dir)
        failed = [r for r in report.results if r.status != "ok"]
        if failed:
            from edgekit.bench import BenchError

            raise BenchError(
                f"{len(failed)} of {len(report.results)} rows could not be measured: "
                + "; ".join(r.error or r.status for r in failed),
                hint="the other rows were measured and written; re-export or rerun the failed "
                "artifacts with --verbose.",
            )


# A terminal cannot hold all the report's columns side by side: it gets two tables, what each
# artifact is (once per artifact) and how each measurement went (once per threads x batch).
# The Markdown and HTML reports and the JSON have every column in one row.
ARTIFACT_COLUMNS = ["variant", "precision / plan", "runtime", "size", "vs fp32", "SQNR", "top-1"]
MEASUREMENT_COLUMNS = [
    "variant", "threads", "batch", "load", "first", "p50 [95% CI]", "p90", "p99", "img/s",
    "memory +", "% of peak", "vs PyTorch",
]  # fmt: skip


def _short(column: str, cell: str) -> str:
    """Terminal cells: 'UNRELIABLE: <reasons>' becomes 'UNRELIABLE' (the reasons are listed
    under the table), '51% of fp32' becomes '51%' (the kind is in the JSON)."""
    if column == "vs PyTorch":
        return cell.split(":", 1)[0]
    if column == "% of peak":
        return cell.split(" ", 1)[0]
    return cell


def render_report(report, *, top: int = 15) -> None:
    from rich import box
    from rich.table import Table

    from edgekit.bench.report import (
        COLUMNS,
        P99_NOTE,
        TEXT_COLUMNS,
        caption,
        p99_omitted,
        pipeline_markdown,
        row,
        row_problems,
    )

    artifacts = Table(box=box.SIMPLE_HEAD, title="What was measured", title_justify="left")
    measurements = Table(box=box.SIMPLE_HEAD, caption=caption(report), caption_justify="left")
    for table, columns in [(artifacts, ARTIFACT_COLUMNS), (measurements, MEASUREMENT_COLUMNS)]:
        for column in columns:
            table.add_column(column, justify="left" if column in TEXT_COLUMNS else "right")
    seen = set()
    for result in report.results:
        cells = dict(zip(COLUMNS, row(result, report=report), strict=True))
        if cells["variant"] not in seen:
            seen.add(cells["variant"])
            artifacts.add_row(*(cells[c] for c in ARTIFACT_COLUMNS))
        measurements.add_row(*(_short(c, cells[c]) for c in MEASUREMENT_COLUMNS))
    console.print(artifacts)
    console.print(measurements)
    for result in report.results:
        problem = row_problems(report, result)
        if problem:
            console.print(problem, style="red", highlight=False)
    if p99_omitted((report, r) for r in report.results):
        console.print(P99_NOTE)
    counted = [r for r in report.results if r.instructions_per_inference is not None]
    if counted:
        console.print("Instructions per inference (qemu plugin; repeatable, unlike emulated time):")
        for result in counted:
            low, high = result.instructions_range
            console.print(
                f"  {result.name} @ {result.emulated}: {result.instructions_per_inference:,} "
                f"(range {low:,}-{high:,})",
                highlight=False,
            )
    if report.pipelines:
        console.print(pipeline_markdown(report.pipelines))
    for result in report.results:
        if result.op_profile is not None:
            from edgekit.bench.ops import ops_table

            table = ops_table(result.op_profile, top)
            table.title = f"{result.name}, threads {result.threads}: top {top} ops"
            table.title_justify = "left"
            console.print(table)
        elif result.op_profile_note:
            console.print(
                f"[yellow]no per-op profile for {result.name}:[/yellow] {result.op_profile_note}"
            )
    for warning in report.warnings:
        console.print(f"[bold yellow]warning:[/bold yellow] {warning}")
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def write_reports(
    report, *, json_out: Path | None, markdown_out: Path | None, report_dir: Path | None = None
) -> None:
    from edgekit.artifact import write_text_atomic
    from edgekit.bench.report import markdown

    if json_out:
        write_text_atomic(json_out, report.model_dump_json(indent=2) + "\n")
        console.print(f"JSON report: {json_out}")
    if markdown_out:
        write_text_atomic(markdown_out, markdown(report))
        console.print(f"Markdown report: {markdown_out}")
    if report_dir:
        from edgekit.bench.ingest import merge_into_folder

        # Added beside the reports already there (e.g. device reports from `bench ingest`).
        merge_into_folder(report_dir, [report])
        console.print(f"Report folder: {report_dir} (index.html, index.md)")


def _register_report_commands() -> None:
    from edgekit.cli import bench_reports

    app.command("compare")(bench_reports.compare)
    app.command("ingest")(bench_reports.ingest)


_register_report_commands()
