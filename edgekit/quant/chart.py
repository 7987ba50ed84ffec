"""PNG chart of a sensitivity report: per-layer SQNR, model order, one series per scheme."""

from __future__ import annotations

from pathlib import Path

from edgekit.artifact import write_bytes_atomic
from edgekit.quant.analyze import SensitivityReport


def write_chart(report: SensitivityReport, path: Path) -> Path:
    import io

    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(8.0, 0.18 * len(report.layers)), 6.5))
    positions = range(len(report.layers))
    for scheme in report.schemes:
        axes.plot(
            positions, [e.sqnr_db[scheme] for e in report.layers], marker="o", ms=3, label=scheme
        )
    for index, entry in enumerate(report.layers):
        if entry.in_attention:
            axes.axvspan(index - 0.5, index + 0.5, color="tab:orange", alpha=0.12, lw=0)
    axes.set_xlabel("layer (model order; shaded: inside attention blocks)")
    axes.set_ylabel("output SQNR, this layer alone quantized (dB)")
    axes.set_title(f"{report.model_kind}: per-layer quantization sensitivity")
    axes.set_xticks(list(positions))
    axes.set_xticklabels([e.path for e in report.layers], rotation=90, fontsize=5)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return write_bytes_atomic(path, buffer.getvalue())
