"""Per-op profiles (`edgekit bench --profile-ops --top N`): asking a runtime for one, the top ops
by time, and the table a reader sees.

A runtime that offers a profile implements `edgekit.exporters.OpProfiler` (onnxruntime's trace,
ExecuTorch's ETDump read with the Inspector); one that offers none says why in one line, and
that line is what bench shows in place of the table. Every row says where the op ran and
whether it was delegated; an op that does a layer's arithmetic on a slower path than the
artifact intends (a convolution on ExecuTorch's portable kernels instead of XNNPACK) is flagged
FALLBACK in every rendering.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from edgekit.bench.schema import OpProfile, OpRow
from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    import numpy as np
    from rich.table import Table

    from edgekit.exporters import Runtime

OP_COLUMNS = [
    "op",
    "node",
    "module path",
    "ran on",
    "delegated",
    "fallback",
    "calls",
    "total",
    "mean",
    "share",
]
TEXT_COLUMNS = {"op", "node", "module path", "ran on", "delegated", "fallback"}
FALLBACK_LABEL = "FALLBACK"
FALLBACK_STYLE = "bold red"
# Long module paths and node names are cut from the left in a table cell: their end (the layer
# and the op) is what tells rows apart.
CELL_CHARS = 60


def profile_runtime(runtime: Runtime, inputs: dict[str, np.ndarray], runs: int) -> OpProfile | str:
    """The runtime's per-op profile over `runs` runs, or the plain reason it offers none."""
    from edgekit.exporters import OpProfiler

    if runs < 1:
        raise EdgekitError(
            f"A per-op profile needs at least one run; {runs} were asked for.",
            hint="profile with 1 or more runs.",
        )
    if isinstance(runtime, OpProfiler):
        return runtime.profile_ops(inputs, runs)
    reason = getattr(runtime, "op_profile_unavailable_reason", None)
    return reason or f"edgekit reads no per-op profile from {runtime.name} {runtime.version}."


def top_ops(profile: OpProfile, n: int) -> list[OpRow]:
    """The `n` ops that took the most time, most first."""
    if n < 1:
        raise EdgekitError(
            f"--top must name at least one op; got {n}.", hint="pass --top 15, for example."
        )
    return sorted(profile.ops, key=lambda op: op.total_ms, reverse=True)[:n]


def share_by_backend(profile: OpProfile) -> dict[str, float]:
    """Fraction of the profiled time per place ops ran ('XNNPACK', 'portable kernels', ...),
    largest first."""
    shares: dict[str, float] = defaultdict(float)
    for op in profile.ops:
        shares[op.backend] += op.share
    return dict(sorted(shares.items(), key=lambda item: item[1], reverse=True))


def summary(profile: OpProfile) -> str:
    """One line: where the time went, and how much of it fell back to a slower path."""
    places = ", ".join(
        f"{backend} {share:.1%}" for backend, share in share_by_backend(profile).items()
    )
    fallbacks = [op for op in profile.ops if op.fallback]
    line = f"Time by where ops ran: {places or 'no ops recorded'}."
    if fallbacks:
        share = sum(op.share for op in fallbacks)
        ops = f"{len(fallbacks)} op" + ("s" if len(fallbacks) > 1 else "")
        line += (
            f" {ops} ({share:.1%} of the time) ran on a slower path than the artifact intends "
            f"({FALLBACK_LABEL})."
        )
    return line


def op_cells(op: OpRow) -> list[str]:
    """The cells of one row, in OP_COLUMNS order; the table and the Markdown share them."""
    return [
        op.op_type,
        _left_cut(op.name) if op.name != op.op_type else "",
        _left_cut(op.module_path or "-"),
        op.backend,
        {True: "yes", False: "no", None: "-"}[op.delegated],
        FALLBACK_LABEL if op.fallback else "",
        str(op.calls),
        _ms(op.total_ms),
        _ms(op.mean_ms),
        f"{op.share:.1%}",
    ]


def ops_table(profile: OpProfile, top: int) -> Table:
    """A rich table of the `top` slowest ops; fallback rows in bold red."""
    from rich.table import Table

    table = Table(
        title=_title(profile, top),
        caption="\n".join([summary(profile), *profile.notes]),
        caption_justify="left",
    )
    for column in OP_COLUMNS:
        table.add_column(column, justify="left" if column in TEXT_COLUMNS else "right")
    for op in top_ops(profile, top):
        table.add_row(*op_cells(op), style=FALLBACK_STYLE if op.fallback else None)
    return table


def ops_markdown(profile: OpProfile, top: int) -> str:
    """The same table in Markdown, with fallback cells in bold, then the summary and notes."""
    lines = [
        f"**{_title(profile, top)}**",
        "",
        "| " + " | ".join(OP_COLUMNS) + " |",
        "|" + "|".join("---" if c in TEXT_COLUMNS else "---:" for c in OP_COLUMNS) + "|",
    ]
    for op in top_ops(profile, top):
        cells = [_escape(cell) for cell in op_cells(op)]
        if op.fallback:
            cells = [f"**{cell}**" if cell else cell for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", summary(profile), *(f"- {note}" for note in profile.notes)]
    return "\n".join(lines) + "\n"


def _title(profile: OpProfile, top: int) -> str:
    shown = min(top, len(profile.ops))
    return (
        f"Top {shown} of {len(profile.ops)} ops by time ({profile.tool}, "
        f"summed over {profile.runs} runs)"
    )


def _ms(value: float) -> str:
    """Op times are often microseconds: three decimals below 10 ms."""
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def _left_cut(text: str, limit: int = CELL_CHARS) -> str:
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")
