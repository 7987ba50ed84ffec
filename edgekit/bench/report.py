"""Turning bench results into table cells: the one place that decides what a reader sees.

The rich table of `edgekit bench`, the Markdown report and the HTML page all take their cells
from `row`, so a rule such as "no speed-up from an unreliable row" holds everywhere at once.
Several reports (a host run and device runs ingested beside it) render as one table; a device
row names its device in the variant cell.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from edgekit.bench.schema import BenchReport, BenchResult, PipelineBreakdown

COLUMNS = [
    "variant",
    "format",
    "precision / plan",
    "runtime",
    "threads",
    "batch",
    "size",
    "vs fp32",
    "SQNR",
    "top-1",
    "load",
    "first",
    "p50 [95% CI]",
    "p90",
    "p99",
    "img/s",
    "memory +",
    "peak RSS",
    "GFLOP/s",
    "% of peak",
    "vs PyTorch",
]
# Left-aligned in a rich table; every other column holds a number.
TEXT_COLUMNS = {"variant", "format", "precision / plan", "runtime", "vs PyTorch"}

# The runner omits p99 below this many timed runs (edgekit.bench.timing.MIN_RUNS_FOR); the
# report says why the cell is empty instead of leaving the reader to guess.
P99_MIN_RUNS = 100
P99_NOTE = f"p99 is shown as '-' where a row had fewer than {P99_MIN_RUNS} timed runs."
# An error message in a table cell is cut here; the full text is listed under the table.
ERROR_CELL_CHARS = 80
# A sustained run's window medians are listed in full up to this many; a longer run shows its
# first and last few (the reader wants the trend, not sixty numbers).
MAX_LISTED_WINDOWS = 12
LISTED_WINDOWS_EACH_END = 5

# Markdown legend for the columns that are not self-explanatory.
COLUMN_NOTES = (
    "SQNR, top-1: worst output and argmax agreement of the artifact vs PyTorch fp32 at export "
    "time. vs fp32: fp32 weight bytes / artifact bytes. p50 [95% CI]: median and its "
    "confidence interval. img/s: batch x 1000 / median (one stream). memory +: peak RSS during "
    "load and runs minus RSS after the runtime's imports. % of peak: achieved GFLOP/s over "
    "this host's measured matmul peak. vs PyTorch: PyTorch eager median / variant median "
    "(median of per-round ratios); above 1x is faster; never printed from an unreliable row."
)


def _ms(value: float | None) -> str:
    """Milliseconds with the precision a reader can use: 0.123, 12.3, 1234."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f} ms"
    if value < 100:
        return f"{value:.1f} ms"
    return f"{value:.0f} ms"


def _mib(size_bytes: int | None) -> str:
    return "-" if size_bytes is None else f"{size_bytes / 2**20:.1f} MiB"


def _first_line(text: str | None, limit: int = ERROR_CELL_CHARS) -> str:
    lines = (text or "").strip().splitlines()
    line = lines[0] if lines else "no error message"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def device_label(result: BenchResult, report: BenchReport | None) -> str | None:
    """The device a row was measured on, when it was not this kind of host run."""
    if report is not None and report.machine.device != "host":
        return report.machine.device
    return "device" if result.source == "device" else None


def variant_label(result: BenchResult, report: BenchReport | None = None) -> str:
    if result.emulated:
        return f"{result.name} @ {result.emulated} (emulated time)"
    device = device_label(result, report)
    return f"{result.name} @ {device}" if device else result.name


def _baseline_unreliable(result: BenchResult, report: BenchReport | None) -> bool:
    """Whether the PyTorch row this one would be compared with is itself unreliable."""
    if report is None:
        return False
    baselines = [
        r
        for r in report.results
        if r.format == "pytorch" and r.threads == result.threads and r.batch == result.batch
    ]
    return bool(baselines) and all(not r.reliability.reliable for r in baselines)


def speedup_cell(result: BenchResult, report: BenchReport | None = None) -> str:
    if result.status != "ok":
        return f"{result.status.upper()}: {_first_line(result.error)}"
    if not result.reliability.reliable:
        reasons = "; ".join(result.reliability.reasons) or "spread too wide"
        return f"UNRELIABLE: {reasons}"
    if result.format == "pytorch":
        return "baseline"
    if result.speedup_vs_pytorch is None:
        return "- (baseline unreliable)" if _baseline_unreliable(result, report) else "-"
    return f"{result.speedup_vs_pytorch:.2f}x"


def _sqnr(result: BenchResult) -> str:
    if result.format == "pytorch":
        return "reference"
    sqnr_db = result.fidelity.worst_sqnr_db
    text = "n/a" if sqnr_db is None else ("exact" if math.isinf(sqnr_db) else f"{sqnr_db:.1f} dB")
    if result.fidelity.verification_status == "failed":
        text += " FAILED"
    return text


def runtime_label(result: BenchResult) -> str:
    runtime = result.runtime
    return f"{runtime.name} + {runtime.delegate}" if runtime.delegate else runtime.name


def _precision(result: BenchResult) -> str:
    return f"{result.precision} ({result.plan})" if result.plan else result.precision


def _p50(result: BenchResult) -> str:
    latency = result.latency
    if latency is None:
        return "-"
    if latency.median_ci95_ms is None:
        return _ms(latency.median_ms)
    low, high = latency.median_ci95_ms
    return f"{_ms(latency.median_ms)} [{low:.3g}, {high:.3g}]"


def _compute_cells(result: BenchResult) -> tuple[str, str]:
    compute = result.compute
    if compute is None or compute.gflops_per_s is None:
        return "-", "-"
    fraction = "-"
    if compute.peak_fraction is not None:
        fraction = f"{compute.peak_fraction:.0%}" + (
            f" of {compute.peak_kind}" if compute.peak_kind else ""
        )
    return f"{compute.gflops_per_s:.1f}", fraction


def row(result: BenchResult, *, report: BenchReport | None = None) -> list[str]:
    """The cells of one result, in `COLUMNS` order. `report` (the one holding the row) labels
    device rows and tells whether a missing speed-up is due to an unreliable baseline."""
    smaller = result.size_vs_fp32
    identity = [
        variant_label(result, report),
        result.format,
        _precision(result),
        runtime_label(result),
        "default" if result.threads is None else str(result.threads),
        str(result.batch),
        _mib(result.model_size_bytes),
        f"{smaller:.2f}x smaller" if smaller and result.format != "pytorch" else "-",
        _sqnr(result),
        f"{result.fidelity.top1_agreement:.0%}"
        if result.fidelity.top1_agreement is not None
        else "-",
    ]
    if result.status != "ok":
        measured = ["-"] * (len(COLUMNS) - len(identity) - 1)
        measured[2] = result.status.upper()  # the p50 column: no number, and why
        return identity + measured + [speedup_cell(result, report)]
    latency = result.latency
    memory = result.memory
    gflops, peak_fraction = _compute_cells(result)
    return identity + [
        _ms(result.load_ms),
        _ms(result.first_inference_ms),
        _p50(result),
        _ms(latency.p90_ms if latency else None),
        _ms(latency.p99_ms if latency else None),
        f"{result.throughput_per_s:.1f}" if result.throughput_per_s is not None else "-",
        _mib(memory.increase_bytes if memory else None),
        _mib(memory.peak_rss_bytes if memory else None),
        gflops,
        peak_fraction,
        speedup_cell(result, report),
    ]


def _thermal_path(states: Sequence[str | None]) -> str | None:
    """'none -> light -> moderate': the known states in order, repeats folded; 'none
    throughout' when several readings agree; None when the platform gave none."""
    known = [state for state in states if state is not None]
    path = [state for i, state in enumerate(known) if i == 0 or known[i - 1] != state]
    if not path:
        return None
    if len(path) == 1 and len(known) > 1:
        return f"{path[0]} throughout"
    return " -> ".join(path)


def caption(report: BenchReport) -> str:
    """One paragraph: the machine (a phone with its SoC and thermal state) and the settings
    every row shares."""
    machine = report.machine
    settings = report.settings
    hardware = [f"{machine.soc} SoC"] if machine.soc else []
    hardware.append(machine.processor)
    if machine.cpu_count is not None:
        hardware.append(f"{machine.cpu_count} cores")
    where = ", ".join(hardware)
    if machine.device != "host":
        where = f"{machine.device} ({where})"
    parts = [where]
    thermal = _thermal_path([machine.thermal_state_start, machine.thermal_state_end])
    if thermal:
        parts.append(f"thermal state {thermal}")
    if "threads" in settings:
        parts.append(f"threads: {settings['threads']}")
    if "batches" in settings:
        parts.append(f"batch: {settings['batches']}")
    runs = []
    if "warmup_runs" in settings:
        runs.append(f"{settings['warmup_runs']} warm-up runs")
    if "min_runs" in settings:
        runs.append(f">= {settings['min_runs']} timed runs")
    if settings.get("rounds", 1) > 1:
        runs.append(f"{settings['rounds']} interleaved rounds")
    if runs:
        parts.append(", ".join(runs))
    if machine.load_average is not None:
        parts.append(f"load average {machine.load_average:.2f} at start")
    text = "; ".join(parts) + "; latency is per call (one batch)."
    if any(r.random_weights for r in report.results):
        text += " Weights are RANDOM (preset): latency is real, predictions are not."
    return text


def _as_list(report_or_reports: BenchReport | Sequence[BenchReport]) -> list[BenchReport]:
    if isinstance(report_or_reports, BenchReport):
        return [report_or_reports]
    return list(report_or_reports)


def labelled_rows(reports: Iterable[BenchReport]) -> list[tuple[BenchReport, BenchResult]]:
    """Every result of every report, host and device side by side, with its report."""
    return [(report, result) for report in reports for result in report.results]


def _row_label(report: BenchReport, result: BenchResult) -> str:
    threads = "default" if result.threads is None else result.threads
    label = f"{variant_label(result, report)} ({runtime_label(result)}, threads {threads}, "
    return label + f"batch {result.batch})"


def row_problems(report: BenchReport, result: BenchResult) -> str | None:
    """A line for the list under the table: a failed or unreliable row, in full."""
    label = _row_label(report, result)
    if result.status != "ok":
        return f"{result.status.upper()}: {label}: {result.error or 'no error message'}"
    if not result.reliability.reliable:
        reasons = "; ".join(result.reliability.reasons) or "spread too wide"
        return f"UNRELIABLE: {label}: {reasons}; no speed-up is printed from it."
    return None


def sustained_line(report: BenchReport, result: BenchResult) -> str | None:
    """A line for the list under the table: a sustained run's windows, slowdown and thermal
    states (throttling on a phone shows here, not as an unreliable spread)."""
    run = result.sustained
    if run is None:
        return None
    medians = [_ms(value).removesuffix(" ms") for value in run.window_medians_ms]
    if len(medians) > MAX_LISTED_WINDOWS:
        ends = LISTED_WINDOWS_EACH_END
        medians = [*medians[:ends], "...", *medians[-ends:]]
    windows = len(run.window_medians_ms)
    text = (
        f"SUSTAINED: {_row_label(report, result)}: {run.duration_s:.0f} s, "
        f"{windows} window{'s' if windows != 1 else ''} of {run.window_s:.0f} s; "
        f"window medians {', '.join(medians) or '-'} ms; "
    )
    if run.slowdown is None:
        text += "slowdown n/a (fewer than two windows)"
    else:
        text += f"slowdown {run.slowdown:.2f}x (last window / first)"
    thermal = _thermal_path(run.thermal_states)
    return text + (f"; thermal state {thermal}." if thermal else ".")


def p99_omitted(pairs: Iterable[tuple[BenchReport, BenchResult]]) -> bool:
    return any(
        result.status == "ok" and result.latency is not None and result.latency.p99_ms is None
        for _, result in pairs
    )


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_escape(c) for c in cells) + " |" for cells in rows]
    return lines


def legend(reports: Sequence[BenchReport]) -> list[tuple[str, str]]:
    """(estimator, meaning) as the reports name them, once each; a device that defines one
    differently (a trimmed mean called "avg") gets its own entry, labelled with the device."""
    entries: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for report in reports:
        for name, meaning in report.estimators.items():
            if name not in seen:
                seen[name] = meaning
                entries.append((name, meaning))
            elif seen[name] != meaning:
                entries.append((f"{name} ({report.machine.device})", meaning))
    return entries


def markdown(
    report_or_reports: BenchReport | Sequence[BenchReport], *, title: str = "edgekit bench"
) -> str:
    reports = _as_list(report_or_reports)
    lines = [f"# {title}", ""]
    for report in reports:
        lines += [caption(report), ""]
    pairs = labelled_rows(reports)
    lines += _table(COLUMNS, (row(result, report=report) for report, result in pairs))
    lines += ["", COLUMN_NOTES]
    if p99_omitted(pairs):
        lines += ["", P99_NOTE]
    problems = [p for p in (row_problems(rep, res) for rep, res in pairs) if p]
    if problems:
        lines += ["", "## Rows to read with care", ""]
        lines += [f"- {' '.join(p.splitlines())}" for p in problems]
    sustained = [s for s in (sustained_line(rep, res) for rep, res in pairs) if s]
    if sustained:
        lines += ["", "## Sustained runs", ""]
        lines += [f"- {line}" for line in sustained]
    if any(report.warnings or report.notes for report in reports):
        lines += ["", "## Warnings and notes", ""]
    for report in reports:
        lines += [f"- warning: {w}" for w in report.warnings]
        lines += [f"- note: {n}" for n in report.notes]
    if any(report.pipelines for report in reports):
        lines += ["", "## Stable Diffusion pipelines", ""]
        lines += pipeline_markdown([p for report in reports for p in report.pipelines]).splitlines()
    lines += ["", "## Estimators", ""]
    lines += [f"- `{name}`: {meaning}" for name, meaning in legend(reports)]
    lines.append("")
    for report in reports:
        lines.append(
            f"Measured {report.created_utc} on {report.machine.device} with edgekit "
            f"{report.edgekit_version}, {report.machine.platform}"
            + (f", Python {report.machine.python}" if report.machine.python else "")
            + "."
        )
    return "\n".join(lines) + "\n"


# The usual order of a Stable Diffusion pipeline's components; others follow alphabetically.
PIPELINE_ORDER = ["text-encoder", "unet", "vae-decoder"]


def _pipeline_components(pipelines: Sequence[PipelineBreakdown]) -> list[str]:
    names = {name for p in pipelines for name in p.component_median_ms}
    return [n for n in PIPELINE_ORDER if n in names] + sorted(names - set(PIPELINE_ORDER))


def pipeline_columns(pipelines: Sequence[PipelineBreakdown]) -> list[str]:
    return [
        "artifact",
        "format",
        "threads",
        "steps",
        "UNet calls/step",
        *(f"{name} p50" for name in _pipeline_components(pipelines)),
        "estimated s/image",
        "measured s/image",
        "cold load",
        "warm load",
    ]


def pipeline_rows(pipelines: Sequence[PipelineBreakdown]) -> list[list[str]]:
    components = _pipeline_components(pipelines)
    rows = []
    for pipeline in pipelines:
        measured = pipeline.measured_image_s
        rows.append(
            [
                pipeline.artifact,
                pipeline.format,
                "default" if pipeline.threads is None else str(pipeline.threads),
                str(pipeline.steps),
                str(pipeline.unet_calls_per_step),
                *(_ms(pipeline.component_median_ms.get(name)) for name in components),
                f"{pipeline.estimated_image_s:.2f} s",
                f"{statistics.median(measured):.2f} s (median of {len(measured)})"
                if measured
                else "-",
                f"{pipeline.cold_load_s:.2f} s" if pipeline.cold_load_s is not None else "-",
                f"{pipeline.warm_load_s:.2f} s" if pipeline.warm_load_s is not None else "-",
            ]
        )
    return rows


def pipeline_markdown(pipelines: Sequence[PipelineBreakdown]) -> str:
    """One image = text encoder + UNet x steps x calls per step + VAE decoder."""
    if not pipelines:
        return ""
    lines = _table(pipeline_columns(pipelines), pipeline_rows(pipelines))
    lines += [
        "",
        "estimated s/image: the component medians x their calls per image (text encoder once, "
        "UNet steps x calls per step, VAE decoder once). Cold load: every component in a fresh "
        "process; warm load: again in that process.",
    ]
    return "\n".join(lines) + "\n"
