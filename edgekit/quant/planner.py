"""From a sensitivity report and a budget to a plan: which layers to quantize.

Candidate plans quantize layers in order of increasing sensitivity (the layer whose solo
quantization hurt the output least goes first). Each candidate's fidelity is predicted by adding
the layers' quantization noise: errors of different layers are close to independent, so their
powers add, and the model's SQNR is -10 log10(sum of 10^(-SQNR_i / 10)) over the quantized layers
(the additive model of AIMET's and apple's mixed-bit analyses). Top-1 drops are added likewise.
The candidates form the Pareto curve of size against predicted fidelity (each is the most faithful
plan of its size under the model); the chosen plan is the smallest one within every budget given.
The export then measures the real fidelity of what it wrote: the prediction picks, verification
judges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgekit.errors import EdgekitError
from edgekit.quant.analyze import SensitivityReport, weight_bytes
from edgekit.quant.plan import LayerPrecision, QuantPlan
from edgekit.validate import SQNR_CEILING_DB

MEGABYTE = 1_000_000


class PlanBudgetError(EdgekitError):
    exit_code = 2


@dataclass(frozen=True)
class Candidate:
    quantized: tuple[str, ...]  # layer paths quantized, least sensitive first
    size_bytes: float
    predicted_sqnr_db: float
    predicted_top1_drop: float | None  # fraction, classifiers only

    @property
    def layer_count(self) -> int:
        return len(self.quantized)


def candidates(report: SensitivityReport, scheme: LayerPrecision) -> list[Candidate]:
    """Plans quantizing the k least sensitive layers, k = 0 .. all: the Pareto curve."""
    if scheme not in report.schemes:
        raise PlanBudgetError(
            f"The sensitivity file has no {scheme} measurements (it has "
            f"{', '.join(s.value for s in report.schemes)}).",
            hint="choose one of those with --scheme, or analyze again with that scheme.",
        )
    order = sorted(report.layers, key=lambda entry: -entry.sqnr_db[scheme])
    curve: list[Candidate] = []
    noise = 0.0
    top1_drop: float | None = 0.0 if all(e.top1_agreement for e in order) else None
    chosen: list[str] = []
    for entry in [None, *order]:
        if entry is not None:
            chosen.append(entry.path)
            noise += 10 ** (-entry.sqnr_db[scheme] / 10)
            if top1_drop is not None:
                top1_drop = min(1.0, top1_drop + 1.0 - entry.top1_agreement[scheme])
        predicted = SQNR_CEILING_DB if noise == 0 else min(SQNR_CEILING_DB, -10 * math.log10(noise))
        size = weight_bytes(report, dict.fromkeys(chosen, scheme))
        curve.append(Candidate(tuple(chosen), size, round(predicted, 2), top1_drop))
    return curve


def choose(
    curve: list[Candidate],
    *,
    min_sqnr_db: float | None = None,
    max_top1_drop_pct: float | None = None,
    max_size_mb: float | None = None,
) -> Candidate:
    """The smallest candidate within every budget (with only --max-size: the most faithful that
    fits)."""
    if min_sqnr_db is None and max_top1_drop_pct is None and max_size_mb is None:
        raise PlanBudgetError(
            "No budget given.", hint="pass --min-sqnr DB, --max-top1-drop PCT or --max-size MB."
        )
    if max_top1_drop_pct is not None and curve[0].predicted_top1_drop is None:
        raise PlanBudgetError(
            "--max-top1-drop needs top-1 measurements, which only classifiers have.",
            hint="use --min-sqnr for this model.",
        )

    def fidelity_ok(c: Candidate) -> bool:
        sqnr_ok = min_sqnr_db is None or c.predicted_sqnr_db >= min_sqnr_db
        top1_ok = (
            max_top1_drop_pct is None or 100 * (c.predicted_top1_drop or 0) <= max_top1_drop_pct
        )
        return sqnr_ok and top1_ok

    def size_ok(c: Candidate) -> bool:
        return max_size_mb is None or c.size_bytes <= max_size_mb * MEGABYTE

    within = [c for c in curve if fidelity_ok(c) and size_ok(c)]
    if not within:
        smallest = curve[-1]
        raise PlanBudgetError(
            "No plan meets the budget: the smallest plan "
            f"({smallest.size_bytes / MEGABYTE:.2f} MB, all {smallest.layer_count} layers "
            f"quantized) predicts {smallest.predicted_sqnr_db:.1f} dB; keeping every layer float "
            f"takes {curve[0].size_bytes / MEGABYTE:.2f} MB.",
            hint="loosen --min-sqnr / --max-top1-drop or raise --max-size.",
        )
    if min_sqnr_db is None and max_top1_drop_pct is None:
        return within[0]  # size only: the least quantization that fits
    return within[-1]


def plan_for(
    report: SensitivityReport, candidate: Candidate, scheme: LayerPrecision, *, name: str
) -> QuantPlan:
    """The candidate as a plan: the scheme by default when most weights are quantized (short
    plans stay readable), with the other layers as overrides."""
    quantized = set(candidate.quantized)
    params = {e.path: e.weight_count for e in report.layers}
    quantized_params = sum(params[p] for p in quantized)
    default = scheme if quantized_params * 2 >= sum(params.values()) else LayerPrecision.FP32
    overrides = {
        entry.path: (scheme if entry.path in quantized else LayerPrecision.FP32)
        for entry in report.layers
        if (entry.path in quantized) != (default == scheme)
    }
    return QuantPlan(name=name, component=report.component, default=default, overrides=overrides)
