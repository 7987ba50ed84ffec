"""`edgekit bench compare A.json B.json`: per-row latency change from A to B, for CI gates.

Rows match by `BenchResult.settings_key`: the same artifact (by sha256), component, format,
runtime and delegate, threads, batch and source. Rows left over then match by artifact name
with the same settings, and say so: a re-export by a newer edgekit or converter is a new file
with the same name, which is exactly what a regression gate has to compare.

A row regresses when B is slower than A by more than the threshold AND the slowdown is outside
the noise of the two measurements:

    regressed  <=>  (median_B - median_A) / median_A > max_regression
                    and  low95(median_B) > high95(median_A)

The intervals are the distribution-free 95% confidence intervals of the medians that every
report carries (computed here from the kept samples when a report lacks them). Disjoint
intervals are a conservative test that the medians differ (two independent 95% intervals miss
each other by chance with probability well under 1%), so a busy machine's wide spread does not
fail a CI job, while a tight 6% slowdown still fails a 5% gate. The point estimate, not an
interval end, is held to the threshold: the gate asks "is it slower, and by more than we
allow", not "is it certainly more than 5% slower", which would miss most real regressions
near the threshold.

Rows that cannot be judged are listed, never counted as regressions: a status other than ok
(crashed, timed out, error), a row flagged unreliable in either report, or no interval (fewer
than 6 runs). Rows only in A or only in B are listed by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgekit.bench.report import runtime_label, variant_label
from edgekit.bench.schema import BenchReport, BenchResult
from edgekit.bench.timing import median_confidence_interval

REGRESSED = "REGRESSED"
SLOWER = "slower"  # outside the noise but within the allowed regression
FASTER = "faster"
WITHIN_NOISE = "within noise"
NOT_JUDGED = "not judged"

COMPARE_COLUMNS = ["variant", "A p50 [95% CI]", "B p50 [95% CI]", "change", "verdict"]


@dataclass
class RowComparison:
    label: str
    median_a_ms: float | None
    median_b_ms: float | None
    ci_a_ms: tuple[float, float] | None
    ci_b_ms: tuple[float, float] | None
    change: float | None  # (B - A) / A; +0.2 is 20% slower
    verdict: str
    detail: str = ""

    @property
    def regressed(self) -> bool:
        return self.verdict == REGRESSED


@dataclass
class Comparison:
    a_name: str
    b_name: str
    max_regression: float | None
    rows: list[RowComparison] = field(default_factory=list)
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[RowComparison]:
        return [r for r in self.rows if r.regressed]

    def summary(self) -> str:
        counts = {v: sum(r.verdict == v for r in self.rows) for v in _VERDICT_ORDER}
        if self.max_regression is None:
            outcome = f"{counts[SLOWER]} slower (no --max-regression given: nothing fails)"
        else:
            outcome = (
                f"{counts[REGRESSED]} regressed beyond {self.max_regression:.1%}, "
                f"{counts[SLOWER]} slower within it"
            )
        return (
            f"{len(self.rows)} matched rows: {outcome}, {counts[FASTER]} faster, "
            f"{counts[WITHIN_NOISE]} within noise, {counts[NOT_JUDGED]} not judged; "
            f"{len(self.only_in_a)} only in A, {len(self.only_in_b)} only in B."
        )


_VERDICT_ORDER = [REGRESSED, SLOWER, FASTER, WITHIN_NOISE, NOT_JUDGED]


def compare(
    a: BenchReport,
    b: BenchReport,
    max_regression: float | None,
    *,
    a_name: str = "A",
    b_name: str = "B",
) -> Comparison:
    comparison = Comparison(a_name=a_name, b_name=b_name, max_regression=max_regression)
    rows_a = _by_key(a, a_name, comparison.notes)
    rows_b = _by_key(b, b_name, comparison.notes)
    left_a = {_name_key(r): r for key, r in rows_a.items() if key not in rows_b}
    left_b = {_name_key(r): r for key, r in rows_b.items() if key not in rows_a}
    for key, result_a in rows_a.items():
        result_b = rows_b.get(key)
        by_name = False
        if result_b is None:
            result_b = left_b.get(_name_key(result_a))
            by_name = result_b is not None
        if result_b is None:
            comparison.only_in_a.append(_label(result_a, a))
            continue
        compared = _compare_row(result_a, result_b, _label(result_b, b), max_regression)
        if by_name:
            compared.detail = "; ".join(
                d for d in ("matched by name: the artifact files differ", compared.detail) if d
            )
        comparison.rows.append(compared)
    comparison.only_in_b = [_label(r, b) for key, r in left_b.items() if key not in left_a]
    if (a.machine.processor, a.machine.device) != (b.machine.processor, b.machine.device):
        comparison.notes.append(
            f"{a_name} ran on {a.machine.device} ({a.machine.processor}), {b_name} on "
            f"{b.machine.device} ({b.machine.processor}): the change includes the machine."
        )
    return comparison


def _by_key(report: BenchReport, name: str, notes: list[str]) -> dict[tuple, BenchResult]:
    rows: dict[tuple, BenchResult] = {}
    for result in report.results:
        if result.settings_key in rows:
            notes.append(f"{name}: '{_label(result, report)}' appears twice; the first is used.")
            continue
        rows[result.settings_key] = result
    return rows


def _name_key(result: BenchResult) -> tuple:
    """settings_key with the artifact's name in place of its sha256."""
    return (result.name, *result.settings_key[1:])


def _label(result: BenchResult, report: BenchReport) -> str:
    threads = "default threads" if result.threads is None else f"t{result.threads}"
    where = f"{runtime_label(result)}, {threads}, b{result.batch}"
    return f"{variant_label(result, report)} ({where})"


def _interval(result: BenchResult) -> tuple[float, float] | None:
    if result.latency and result.latency.median_ci95_ms is not None:
        return tuple(result.latency.median_ci95_ms)
    return median_confidence_interval(sorted(result.samples_ms))


def _not_judged(result: BenchResult, side: str) -> str | None:
    if result.status != "ok" or result.latency is None:
        return f"{side} {result.status}: {result.error or 'no latency recorded'}"
    if not result.reliability.reliable:
        return f"{side} unreliable: {'; '.join(result.reliability.reasons) or 'spread too wide'}"
    return None


def _compare_row(
    a: BenchResult, b: BenchResult, label: str, max_regression: float | None
) -> RowComparison:
    median_a = a.latency.median_ms if a.latency else None
    median_b = b.latency.median_ms if b.latency else None
    ci_a, ci_b = _interval(a), _interval(b)
    change = (median_b - median_a) / median_a if median_a and median_b is not None else None
    compared = RowComparison(label, median_a, median_b, ci_a, ci_b, change, NOT_JUDGED)
    reasons = [r for r in (_not_judged(a, "A"), _not_judged(b, "B")) if r]
    if not reasons and (ci_a is None or ci_b is None):
        reasons.append("no 95% interval for the median (fewer than 6 runs)")
    if reasons or change is None:
        compared.detail = "; ".join(reasons)
        return compared
    if ci_b[0] > ci_a[1]:
        exceeds = max_regression is not None and change > max_regression
        compared.verdict = REGRESSED if exceeds else SLOWER
    elif ci_b[1] < ci_a[0]:
        compared.verdict = FASTER
    else:
        compared.verdict = WITHIN_NOISE
        compared.detail = "the 95% intervals of the medians overlap"
    return compared


def _p50_cell(median_ms: float | None, interval: tuple[float, float] | None) -> str:
    if median_ms is None:
        return "-"
    text = f"{median_ms:.3g} ms"
    return text + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "")


def comparison_cells(compared: RowComparison) -> list[str]:
    verdict = compared.verdict + (f": {compared.detail}" if compared.detail else "")
    return [
        compared.label,
        _p50_cell(compared.median_a_ms, compared.ci_a_ms),
        _p50_cell(compared.median_b_ms, compared.ci_b_ms),
        "-" if compared.change is None else f"{compared.change:+.1%}",
        verdict,
    ]


def comparison_markdown(comparison: Comparison) -> str:
    lines = [
        f"# edgekit bench compare: {comparison.a_name} -> {comparison.b_name}",
        "",
        "| " + " | ".join(COMPARE_COLUMNS) + " |",
        "|" + "---|" * len(COMPARE_COLUMNS),
    ]
    for compared in comparison.rows:
        cells = [c.replace("|", "\\|") for c in comparison_cells(compared)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", comparison.summary()]
    lines += [f"- only in {comparison.a_name}: {label}" for label in comparison.only_in_a]
    lines += [f"- only in {comparison.b_name}: {label}" for label in comparison.only_in_b]
    lines += [f"- note: {note}" for note in comparison.notes]
    lines += [
        "",
        "A row regresses when its median is slower by more than the threshold and the 95% "
        "confidence intervals of the two medians do not overlap.",
    ]
    return "\n".join(lines) + "\n"
