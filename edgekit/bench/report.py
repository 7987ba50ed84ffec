"""Formatting a `BenchReport`: one set of columns, rendered as a rich table or Markdown."""

from __future__ import annotations

from edgekit.bench.schema import BenchReport, BenchResult

COLUMNS = [
    "variant",
    "format",
    "precision",
    "runtime",
    "threads",
    "size",
    "vs fp32",
    "SQNR",
    "top-1",
    "load",
    "first",
    "p50",
    "p90",
    "p99",
    "peak RSS",
    "vs PyTorch",
]


def _mib(size_bytes: int) -> str:
    return f"{size_bytes / 2**20:.1f} MiB"


def row(result: BenchResult) -> list[str]:
    latency = result.latency
    sqnr = (
        "reference"
        if result.format == "pytorch"
        else (f"{result.worst_sqnr_db:.1f} dB" if result.worst_sqnr_db is not None else "n/a")
    )
    if result.verification_status == "failed":
        sqnr += " FAILED"
    speedup = f"{result.speedup_vs_pytorch:.2f}x" if result.speedup_vs_pytorch else "-"
    smaller = result.size_vs_fp32
    return [
        result.name,
        result.format,
        result.precision,
        result.runtime,
        str(result.threads),
        _mib(result.model_size_bytes),
        f"{smaller:.2f}x smaller" if smaller and result.format != "pytorch" else "-",
        sqnr,
        f"{result.top1_agreement:.0%}" if result.top1_agreement is not None else "-",
        f"{result.load_ms:.0f} ms",
        f"{result.first_inference_ms:.1f} ms",
        f"{latency.median_ms:.2f} ms",
        f"{latency.p90_ms:.2f} ms",
        f"{latency.p99_ms:.2f} ms",
        _mib(result.peak_rss_bytes),
        speedup,
    ]


def caption(report: BenchReport) -> str:
    s = report.settings
    machine = report.machine
    text = (
        f"{machine.processor}, {machine.cpu_count} cores, threads: {s['threads']}; "
        f"{s['warmup_runs']} warm-up runs, >= {s['min_runs']} timed runs"
        + (f" x {s['rounds']} interleaved rounds" if s.get("rounds", 1) > 1 else "")
        + "; latency is per inference, batch as exported."
    )
    if any(r.random_weights for r in report.results):
        text += " Weights are RANDOM (preset): latency is real, predictions are not."
    return text


def markdown(report: BenchReport, *, title: str = "edgekit bench") -> str:
    lines = [f"# {title}", "", caption(report), ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    lines += ["| " + " | ".join(row(r)) + " |" for r in report.results]
    lines.append("")
    lines.append(
        "SQNR, top-1: worst output and argmax agreement of the artifact vs PyTorch fp32 at export "
        "time. vs fp32: fp32 weight bytes / artifact bytes. vs PyTorch: PyTorch eager "
        "median / variant median (median of per-round ratios); above 1x is faster."
    )
    for note in report.notes:
        lines.append(f"- note: {note}")
    lines.append(
        f"\nMeasured {report.created_utc} with edgekit {report.edgekit_version} on "
        f"{report.machine.platform}, Python {report.machine.python}."
    )
    return "\n".join(lines) + "\n"
