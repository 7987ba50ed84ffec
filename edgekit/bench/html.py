"""A report folder: `index.md`, a self-contained `index.html` with plots, and the source JSON.

    folder/
      index.html      one file: tables, plots inline as base64 PNG data URIs, no scripts
      index.md        the same tables; plots linked from plots/
      plots/*.png
      data/*.json     every report shown, as validated bench reports (schema 2.0)

The page is rebuilt from `data/` alone, so `edgekit bench ingest` can add a device report later
and the host and device rows end up in one table. Each file is written atomically (temp file
beside it, then rename): a reader never sees half a page, and an interrupted write leaves the
previous page.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
import re
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgekit.artifact import write_bytes_atomic, write_text_atomic
from edgekit.bench.report import (
    COLUMN_NOTES,
    COLUMNS,
    P99_NOTE,
    TEXT_COLUMNS,
    caption,
    labelled_rows,
    legend,
    markdown,
    p99_omitted,
    pipeline_columns,
    pipeline_rows,
    row,
    row_problems,
    runtime_label,
    sustained_line,
    variant_label,
)
from edgekit.bench.schema import BenchReport, BenchResult
from edgekit.errors import OutputError

DATA_DIR = "data"
PLOTS_DIR = "plots"
# Box plots beyond this many rows become unreadable; the rest are named in the caption.
MAX_BOXES = 60
# Latencies spanning more than this ratio are drawn on a log axis, so a 2 ms and a 2 s row
# both show their spread.
LOG_AXIS_RATIO = 20.0


@dataclass
class Plot:
    name: str
    title: str
    caption: str
    png: bytes | None = None
    skipped: str | None = None  # why the data does not allow this plot


def report_key(report: BenchReport) -> str:
    """Content hash of the validated report: the same report ingested twice is one file."""
    return hashlib.sha256(report.model_dump_json().encode()).hexdigest()


def data_file_name(report: BenchReport) -> str:
    stamp = re.sub(r"[^0-9T]", "", report.created_utc.split("+")[0])[:15] or "undated"
    device = re.sub(r"[^a-z0-9]+", "-", report.machine.device.lower()).strip("-")[:40]
    return f"{stamp}-{device or 'host'}-{report_key(report)[:12]}.json"


def write_report_folder(folder: Path, reports: Sequence[BenchReport]) -> Path:
    """Write exactly these reports as the folder's page; returns the path of index.html.

    Report JSON in `data/` that is not among `reports` is removed after the new files are in
    place (to add to a folder, read it first: `edgekit.bench.ingest.merge_into_folder`).
    """
    _check_writable(folder)
    by_name = {data_file_name(report): report for report in reports}  # duplicates once
    unique = list(by_name.values())
    plots = build_plots(unique)  # before any write: a plotting failure changes nothing
    for name, report in by_name.items():
        write_text_atomic(folder / DATA_DIR / name, report.model_dump_json(indent=2) + "\n")
    for plot in plots:
        if plot.png is not None:
            write_bytes_atomic(folder / PLOTS_DIR / f"{plot.name}.png", plot.png)
    write_text_atomic(folder / "index.md", folder_markdown(unique, plots))
    index = write_text_atomic(folder / "index.html", page_html(unique, plots, sorted(by_name)))
    _remove_stale(folder / DATA_DIR, "*.json", keep=set(by_name))
    _remove_stale(folder / PLOTS_DIR, "*.png", keep={f"{p.name}.png" for p in plots if p.png})
    return index


def _check_writable(folder: Path) -> None:
    """Refuse before any plotting: one line naming the folder and why."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(
            f"Cannot write the report folder '{folder}': {exc.strerror or exc}.",
            hint="choose a --report folder you can write to.",
        ) from exc


def _remove_stale(directory: Path, pattern: str, *, keep: set[str]) -> None:
    for path in directory.glob(pattern):
        if path.name not in keep:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Plots


def build_plots(reports: Sequence[BenchReport]) -> list[Plot]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI

    pairs = [
        (report, result)
        for report, result in labelled_rows(reports)
        if result.status == "ok" and result.latency is not None
    ]
    return [
        _latency_distribution(pairs),
        _size_fidelity_latency(pairs),
        _threads_scaling(pairs),
        _batch_scaling(pairs),
    ]


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _setting_label(report: BenchReport, result: BenchResult) -> str:
    threads = "default threads" if result.threads is None else f"t{result.threads}"
    settings = f"{threads} b{result.batch}"
    return f"{variant_label(result, report)} | {runtime_label(result)} {settings}"


def _runtime_colors(pairs) -> dict[str, str]:
    names = sorted({result.runtime.name for _, result in pairs})
    return {name: f"C{index % 10}" for index, name in enumerate(names)}


def _latency_distribution(pairs) -> Plot:
    plot = Plot(
        "latency-distribution",
        "Latency distribution per variant and runtime",
        "Every timed run (or the kept reservoir) of each row; box: quartiles, whiskers: 1.5 IQR, "
        "red: rows flagged unreliable.",
    )
    with_samples = [(rep, res) for rep, res in pairs if res.samples_ms]
    if not with_samples:
        plot.skipped = "no row kept its raw samples (samples_ms is empty everywhere)."
        return plot
    if len(with_samples) > MAX_BOXES:
        plot.caption += f" The first {MAX_BOXES} of {len(with_samples)} rows are shown."
        with_samples = with_samples[:MAX_BOXES]
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 1.2 + 0.32 * len(with_samples)))
    boxes = axes.boxplot(
        [res.samples_ms for _, res in with_samples],
        orientation="horizontal",
        tick_labels=[_setting_label(rep, res) for rep, res in with_samples],
        patch_artist=True,
        flierprops={"markersize": 2},
    )
    for box, (_, result) in zip(boxes["boxes"], with_samples, strict=True):
        box.set_facecolor("#f4a6a6" if not result.reliability.reliable else "#a6c8f4")
    everything = [s for _, res in with_samples for s in res.samples_ms if s > 0]
    if everything and max(everything) / min(everything) > LOG_AXIS_RATIO:
        axes.set_xscale("log")
    axes.invert_yaxis()  # first row on top, as in the table
    axes.set_xlabel("latency per call (ms)")
    axes.tick_params(axis="y", labelsize=7)
    axes.grid(axis="x", alpha=0.3)
    plot.png = _png(figure)
    return plot


def _size_fidelity_latency(pairs) -> Plot:
    plot = Plot(
        "size-fidelity-latency",
        "Size vs fidelity vs latency",
        "x: median latency, y: worst-output SQNR vs PyTorch fp32 from the manifest, marker "
        "area: artifact size; one colour per runtime, triangles: device rows, hollow red "
        "rings: unreliable rows. Dashed: PyTorch eager median.",
    )
    candidates = [
        (rep, res)
        for rep, res in pairs
        if res.format != "pytorch"
        and res.fidelity.worst_sqnr_db is not None
        and math.isfinite(res.fidelity.worst_sqnr_db)
    ]
    if not candidates:
        plot.skipped = "no artifact row has a finite SQNR from its manifest."
        return plot
    # Per-call latencies at different batch sizes are not comparable: the smallest batch only.
    batch = min(res.batch for _, res in candidates)
    points = [(rep, res) for rep, res in candidates if res.batch == batch]
    plot.caption += f" Batch {batch}."
    import matplotlib.pyplot as plt

    colors = _runtime_colors(pairs)
    largest = max(res.model_size_bytes for _, res in points) or 1
    figure, axes = plt.subplots(figsize=(9, 6))
    for rep, res in points:
        x, y = res.latency.median_ms, res.fidelity.worst_sqnr_db
        area = 40 + 600 * res.model_size_bytes / largest
        marker = "^" if res.source == "device" or rep.machine.device != "host" else "o"
        axes.scatter([x], [y], s=area, c=colors[res.runtime.name], marker=marker, alpha=0.6)
        if not res.reliability.reliable:
            axes.scatter([x], [y], s=area * 1.8, facecolors="none", edgecolors="red")
        axes.annotate(
            f"{variant_label(res, rep)} t{res.threads}\n{res.model_size_bytes / 2**20:.1f} MiB",
            (x, y),
            fontsize=7,
            xytext=(6, 6),
            textcoords="offset points",
        )
    for _, res in pairs:
        if res.format == "pytorch" and res.batch == batch:
            axes.axvline(res.latency.median_ms, color="grey", ls="--", lw=1)
            axes.annotate(
                f"PyTorch eager t{res.threads}",
                (res.latency.median_ms, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                rotation=90,
                ha="right",
                va="top",
                color="grey",
            )
    for name in sorted({res.runtime.name for _, res in points}):
        axes.scatter([], [], c=colors[name], label=name)
    axes.legend(fontsize=8, loc="best")
    axes.set_xlabel(f"median latency per call, batch {batch} (ms)")
    axes.set_ylabel("worst output SQNR vs PyTorch fp32 (dB)")
    axes.grid(alpha=0.3)
    plot.png = _png(figure)
    return plot


def _series_key(report: BenchReport, result: BenchResult, *, vary: str) -> tuple:
    fixed = result.batch if vary == "threads" else result.threads
    return (variant_label(result, report), result.format, result.runtime.name, fixed)


def _scaling(pairs, *, vary: str, plot: Plot) -> Plot:
    """One line per artifact (and fixed setting) with at least two values of `vary`."""
    series: dict[tuple, dict[int, BenchResult]] = defaultdict(dict)
    for rep, res in pairs:
        value = getattr(res, vary)
        if value is not None:
            series[_series_key(rep, res, vary=vary)][value] = res
    lines = {key: points for key, points in series.items() if len(points) > 1}
    if not lines:
        values = sorted({v for points in series.values() for v in points})
        plot.skipped = (
            f"every artifact was measured at one {vary} value "
            f"({', '.join(map(str, values)) or 'none recorded'}); run with "
            f"--{vary} 1,2 (or more values) to see scaling."
        )
        return plot
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5))
    for (label, _, runtime, fixed), points in sorted(lines.items()):
        xs = sorted(points)
        ys = [_scaling_value(points[x], vary=vary) for x in xs]
        other = "b" if vary == "threads" else "t"
        axes.plot(xs, ys, marker="o", label=f"{label} ({runtime}, {other}{fixed})")
        shaky = [(x, y) for x, y in zip(xs, ys, strict=True) if not points[x].reliability.reliable]
        if shaky:
            axes.scatter(*zip(*shaky, strict=True), s=160, facecolors="none", edgecolors="red")
    axes.set_xticks(sorted({x for points in lines.values() for x in points}))
    axes.set_xlabel(vary)
    axes.set_ylabel(
        "median latency per call (ms)" if vary == "threads" else "throughput (images/s)"
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    plot.png = _png(figure)
    return plot


def _scaling_value(result: BenchResult, *, vary: str) -> float:
    if vary == "threads":
        return result.latency.median_ms
    if result.throughput_per_s is not None:
        return result.throughput_per_s
    return result.batch * 1000.0 / result.latency.median_ms


def _threads_scaling(pairs) -> Plot:
    plot = Plot(
        "threads-scaling",
        "Scaling with threads",
        "Median latency per call against threads, one line per artifact and batch size; hollow "
        "red rings: unreliable points.",
    )
    return _scaling(pairs, vary="threads", plot=plot)


def _batch_scaling(pairs) -> Plot:
    plot = Plot(
        "batch-scaling",
        "Scaling with batch size",
        "Throughput (images/s, one stream) against batch size, one line per artifact and "
        "thread count; hollow red rings: unreliable points.",
    )
    return _scaling(pairs, vary="batch", plot=plot)


# ---------------------------------------------------------------------------------------------
# index.md and index.html


def folder_markdown(reports: Sequence[BenchReport], plots: Sequence[Plot]) -> str:
    lines = [markdown(reports).rstrip("\n"), "", "## Plots", ""]
    for plot in plots:
        if plot.png is None:
            lines += [f"- {plot.title}: skipped, {plot.skipped}"]
        else:
            lines += [f"### {plot.title}", "", f"![{plot.title}]({PLOTS_DIR}/{plot.name}.png)", ""]
            lines += [plot.caption, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1d1d1f; }
table { border-collapse: collapse; font-size: 0.8rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.45rem; white-space: nowrap; }
th { background: #eef1f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.unreliable td { background: #fff1d6; } tr.failed td { background: #fbdada; }
tr.device td:first-child { font-weight: 600; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
.skipped, .caption { color: #555; font-size: 0.9rem; } .scroll { overflow-x: auto; }
"""


def _cells_html(columns: Sequence[str], cells: Sequence[str], tag: str = "td") -> str:
    parts = []
    for column, cell in zip(columns, cells, strict=True):
        numeric = tag == "td" and column not in TEXT_COLUMNS
        parts.append(f"<{tag}{' class=num' if numeric else ''}>{html.escape(cell)}</{tag}>")
    return "".join(parts)


def _row_class(report: BenchReport, result: BenchResult) -> str:
    classes = []
    if result.status != "ok":
        classes.append("failed")
    elif not result.reliability.reliable:
        classes.append("unreliable")
    if result.source == "device" or report.machine.device != "host":
        classes.append("device")
    return f' class="{" ".join(classes)}"' if classes else ""


def page_html(
    reports: Sequence[BenchReport], plots: Sequence[Plot], data_files: Sequence[str]
) -> str:
    pairs = labelled_rows(reports)
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>edgekit bench</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>edgekit bench</h1>",
        "<h2>Machines</h2><ul>",
        *(f"<li>{html.escape(caption(report))}</li>" for report in reports),
        "</ul><h2>Results</h2>",
        '<div class="scroll"><table><thead><tr>',
        _cells_html(COLUMNS, COLUMNS, tag="th"),
        "</tr></thead><tbody>",
    ]
    for report, result in pairs:
        cells = _cells_html(COLUMNS, row(result, report=report))
        out.append(f"<tr{_row_class(report, result)}>{cells}</tr>")
    out += ["</tbody></table></div>", f'<p class="caption">{html.escape(COLUMN_NOTES)}</p>']
    if p99_omitted(pairs):
        out.append(f'<p class="caption">{html.escape(P99_NOTE)}</p>')
    problems = [p for p in (row_problems(rep, res) for rep, res in pairs) if p]
    if problems:
        out += ["<h2>Rows to read with care</h2><ul>"]
        out += [f"<li>{html.escape(p)}</li>" for p in problems]
        out += ["</ul>"]
    sustained = [s for s in (sustained_line(rep, res) for rep, res in pairs) if s]
    if sustained:
        out += ["<h2>Sustained runs</h2><ul>"]
        out += [f"<li>{html.escape(line)}</li>" for line in sustained]
        out += ["</ul>"]
    out.append("<h2>Plots</h2>")
    for plot in plots:
        out.append(_figure_html(plot))
    pipelines = [p for report in reports for p in report.pipelines]
    if pipelines:
        columns = pipeline_columns(pipelines)
        out += ["<h2>Stable Diffusion pipelines</h2>", '<div class="scroll"><table><tr>']
        out += [_cells_html(columns, columns, tag="th"), "</tr>"]
        out += [f"<tr>{_cells_html(columns, cells)}</tr>" for cells in pipeline_rows(pipelines)]
        out += ["</table></div>"]
    remarks = [
        (kind, text)
        for report in reports
        for kind, texts in (("warning", report.warnings), ("note", report.notes))
        for text in texts
    ]
    if remarks:
        out += ["<h2>Warnings and notes</h2><ul>"]
        out += [f"<li><b>{kind}:</b> {html.escape(text)}</li>" for kind, text in remarks]
        out += ["</ul>"]
    out += ["<h2>Estimators</h2><ul>"]
    out += [f"<li>{html.escape(f'{name}: {meaning}')}</li>" for name, meaning in legend(reports)]
    out += ["</ul>", "<h2>Source reports</h2><ul>"]
    out += [f"<li>{DATA_DIR}/{html.escape(name)}</li>" for name in data_files]
    out += ["</ul></body></html>"]
    return "\n".join(out) + "\n"


def _figure_html(plot: Plot) -> str:
    title = html.escape(plot.title)
    if plot.png is None:
        return f'<h3>{title}</h3><p class="skipped">Skipped: {html.escape(plot.skipped or "")}</p>'
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure><h3>{title}</h3><img alt="{title}" src="data:image/png;base64,{data}">'
        f'<figcaption class="caption">{html.escape(plot.caption)}</figcaption></figure>'
    )
