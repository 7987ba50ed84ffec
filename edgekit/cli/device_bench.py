"""`edgekit bench ARTIFACTS --device adb[:SERIAL]`: the same command, measured on a phone.

The host bench's options that have a meaning on the device are passed on (runs, warm-up, one
thread count, --min-time as the app's sustained mode, the timeout); the report goes through the
host bench's own printing and writers, so `--report DIR` merges the device rows beside the host
rows already in that folder.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.cli._common import Guard, console


def bench_device(
    artifacts: list[Path],
    device: str,
    *,
    threads: str | None,
    runs: int,
    warmup: int,
    min_time: float,
    timeout: float,
    host_only: dict[str, bool],
    json_out: Path | None,
    markdown_out: Path | None,
    report_dir: Path | None,
    top: int,
) -> None:
    """`host_only` maps the flags that only the host bench has to whether they were given."""
    with Guard():
        from edgekit.bench import BenchError
        from edgekit.bench.runner import discover_artifacts
        from edgekit.cli.bench import BenchOptionError, parse_counts, render_report, write_reports
        from edgekit.device.adb import DeviceRunSettings, bench_on_device

        given = [flag for flag, is_set in host_only.items() if is_set]
        if given:
            raise BenchOptionError(
                f"{', '.join(given)} cannot be combined with --device: the app measures each "
                "artifact as exported, on the phone's own runtime.",
                hint="run those on the host (without --device), into the same --report folder.",
            )
        counts = parse_counts(threads, "--threads")
        if counts and len(counts) > 1:
            raise BenchOptionError(
                f"--threads {threads}: --device runs one thread count per run.",
                hint="run once per count, e.g. --threads 4, into the same --report folder.",
            )
        settings = DeviceRunSettings(
            runs=runs,
            warmup=warmup,
            threads=counts[0] if counts else None,
            sustained_s=min_time,
            timeout_s=timeout,
        )
        found = discover_artifacts(artifacts)
        with console.status(f"Benchmarking on {device} (pushing, then the app measures) ..."):
            report = bench_on_device(found, device, settings)
        render_report(report, top=top)
        write_reports(report, json_out=json_out, markdown_out=markdown_out, report_dir=report_dir)
        failed = [r for r in report.results if r.status != "ok"]
        if failed:
            raise BenchError(
                f"{len(failed)} of {len(report.results)} rows could not be measured on the "
                "device: " + "; ".join(r.error or r.status for r in failed),
                hint="the other rows were written; see the app's log: adb logcat -s EdgekitBench.",
            )
