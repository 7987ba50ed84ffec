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

Several schemes make a ladder of weight sizes (int8-weight, then int4-weight): once every layer
is at the larger one, the curve goes on stepping layers down to the next, the least sensitive at
that scheme first, each step swapping the layer's noise at the larger scheme for its noise at the
smaller. A size budget that every layer at int8 cannot meet then puts the layers that tolerate 4
bits best at 4 bits, and only as many as the budget needs.

Attention products (`--quantize-matmuls`) hold no weights: quantizing them changes no size, only
speed (where a runtime has int8 batched matmuls) and fidelity. So they are added after the layer
plan is chosen, with what its fidelity budget leaves: the least sensitive block first (highest
measured int8 SQNR), each kept only while the predicted SQNR and top-1 drop, its noise added to
the layers', stay within --min-sqnr / --max-top1-drop.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise

from edgekit.errors import EdgekitError
from edgekit.quant.analyze import WEIGHT_BYTES, SensitivityReport, weight_bytes
from edgekit.quant.plan import LayerPrecision, MatmulPrecision, QuantPlan
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
    # Quantized layer path -> its scheme (one scheme unless the curve has a ladder of them).
    precisions: dict[str, LayerPrecision] = field(default_factory=dict)
    # Attention blocks whose products are int8 (`with_matmuls`), least sensitive first.
    matmuls: tuple[str, ...] = ()

    @property
    def layer_count(self) -> int:
        return len(self.quantized)

    def count_at(self, scheme: LayerPrecision) -> int:
        return sum(1 for p in self.precisions.values() if p == scheme)


def scheme_ladder(schemes: Iterable[LayerPrecision]) -> tuple[LayerPrecision, ...]:
    """`schemes` from the largest weights to the smallest; refuses two of one size (a layer
    would step from one to the other and save nothing)."""
    ladder = tuple(sorted(dict.fromkeys(schemes), key=lambda s: -WEIGHT_BYTES[s]))
    for larger, smaller in pairwise(ladder):
        if WEIGHT_BYTES[larger] == WEIGHT_BYTES[smaller]:
            raise PlanBudgetError(
                f"{larger} and {smaller} store weights of the same size, so a layer gains nothing "
                "from stepping from one to the other.",
                hint="give --scheme once per weight size, e.g. --scheme int8-weight --scheme "
                "int4-weight.",
            )
    return ladder


def candidates(report: SensitivityReport, *schemes: LayerPrecision) -> list[Candidate]:
    """Plans quantizing the k least sensitive layers, k = 0 .. all, at the largest scheme; then,
    for each smaller scheme, every layer at the scheme before with the k least sensitive at this
    one (module docstring): the Pareto curve."""
    for scheme in schemes:
        if scheme not in report.schemes:
            raise PlanBudgetError(
                f"The sensitivity file has no {scheme} measurements (it has "
                f"{', '.join(s.value for s in report.schemes)}).",
                hint="choose one of those with --scheme, or analyze again with that scheme.",
            )
    precisions: dict[str, LayerPrecision] = {}  # in the order layers were first quantized
    curve = [_candidate(report, precisions)]
    for scheme in scheme_ladder(schemes):
        for entry in sorted(report.layers, key=lambda entry: -entry.sqnr_db[scheme]):
            precisions[entry.path] = scheme
            curve.append(_candidate(report, precisions))
    return curve


def _candidate(
    report: SensitivityReport,
    precisions: dict[str, LayerPrecision],
    matmuls: tuple[str, ...] = (),
) -> Candidate:
    """The plan quantizing each layer of `precisions` at its scheme (and the int8 products of
    the `matmuls` blocks), predicted by adding their noise powers and top-1 losses."""
    entries = {entry.path: entry for entry in report.layers}
    products = {entry.path: entry for entry in report.attention_matmuls}
    int8 = LayerPrecision.INT8
    noise = sum(10 ** (-entries[p].sqnr_db[s] / 10) for p, s in precisions.items())
    noise += sum(10 ** (-products[b].sqnr_db[int8] / 10) for b in matmuls)
    predicted = SQNR_CEILING_DB if noise == 0 else min(SQNR_CEILING_DB, -10 * math.log10(noise))
    top1_drop = None
    if all(entry.top1_agreement for entry in report.layers):
        lost = sum(1.0 - entries[p].top1_agreement[s] for p, s in precisions.items())
        lost += sum(1.0 - products[b].top1_agreement.get(int8, 1.0) for b in matmuls)
        top1_drop = min(1.0, lost)
    return Candidate(
        quantized=tuple(precisions),
        size_bytes=weight_bytes(report, precisions),
        predicted_sqnr_db=round(predicted, 2),
        predicted_top1_drop=top1_drop,
        precisions=dict(precisions),
        matmuls=matmuls,
    )


@dataclass(frozen=True)
class MatmulChoice:
    """One attention block's products as `with_matmuls` judged them."""

    path: str
    sqnr_db: float  # measured, int8, these products alone
    predicted_sqnr_db: float  # of the plan with these products added (where tried)
    chosen: bool


def with_matmuls(
    report: SensitivityReport,
    chosen: Candidate,
    *,
    min_sqnr_db: float | None = None,
    max_top1_drop_pct: float | None = None,
) -> tuple[Candidate, list[MatmulChoice]]:
    """`chosen` with int8 attention products added while the fidelity budget allows (module
    docstring), and the verdict on every block, least sensitive first."""
    if min_sqnr_db is None and max_top1_drop_pct is None:
        raise PlanBudgetError(
            "--quantize-matmuls needs a fidelity budget: attention products hold no weights, "
            "so --max-size alone says nothing about them.",
            hint="add --min-sqnr DB (or --max-top1-drop PCT for classifiers).",
        )
    measured = [e for e in report.attention_matmuls if LayerPrecision.INT8 in e.sqnr_db]
    if not measured:
        raise PlanBudgetError(
            "The sensitivity file has no int8 measurements of attention products "
            f"({len(report.attention_matmuls)} blocks measured).",
            hint="analyze again (schema 1.1, with the int8 scheme) on a model with attention.",
        )
    current = chosen
    verdicts = []
    for entry in sorted(measured, key=lambda e: -e.sqnr_db[LayerPrecision.INT8]):
        trial = _candidate(report, current.precisions, (*current.matmuls, entry.path))
        sqnr_ok = min_sqnr_db is None or trial.predicted_sqnr_db >= min_sqnr_db
        top1_ok = max_top1_drop_pct is None or (
            100 * (trial.predicted_top1_drop or 0) <= max_top1_drop_pct
        )
        if sqnr_ok and top1_ok:
            current = trial
        verdicts.append(
            MatmulChoice(
                path=entry.path,
                sqnr_db=entry.sqnr_db[LayerPrecision.INT8],
                predicted_sqnr_db=trial.predicted_sqnr_db,
                chosen=sqnr_ok and top1_ok,
            )
        )
    return current, verdicts


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


def plan_for(report: SensitivityReport, candidate: Candidate, *, name: str) -> QuantPlan:
    """The candidate as a plan: the precision holding most weights by default (a quantized one
    on a tie; short plans stay readable), with the other layers as overrides."""
    precision = {
        e.path: candidate.precisions.get(e.path, LayerPrecision.FP32) for e in report.layers
    }
    weights: Counter[LayerPrecision] = Counter()
    for entry in report.layers:
        weights[precision[entry.path]] += entry.weight_count
    default = max(
        weights, key=lambda p: (weights[p], p != LayerPrecision.FP32), default=LayerPrecision.FP32
    )
    overrides = {path: p for path, p in precision.items() if p != default}
    return QuantPlan(
        name=name,
        component=report.component,
        default=default,
        overrides=overrides,
        attention_matmuls=dict.fromkeys(candidate.matmuls, MatmulPrecision.INT8),
    )
