"""Numeric comparison of an artifact's outputs against the PyTorch reference.

Checks, in order, like optimum's exporter validation: output names, then shapes, then values.
Every failure is collected; the caller decides whether to raise (export does, always).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import numpy as np

# An exact match has infinite SQNR; JSON has no infinity, so it is reported as this ceiling.
SQNR_CEILING_DB = 200.0
# A reference whose largest magnitude is below this carries no signal: with transformers 5.2x a
# MobileViT built from a config without re-initialisation gives logits of about 1e-41, and every
# comparison against such a reference "passes".
DEGENERATE_REFERENCE_MAX_ABS = 1e-6
# A reference whose values span less than this fraction of its largest magnitude is constant: a
# comparison against it cannot tell a working artifact from one that returns a stored answer.
DEGENERATE_REFERENCE_RELATIVE_SPREAD = 1e-6

# A component's verification status -> the artifact status the manifest and bench report use.
ARTIFACT_STATUS = {"passed": "verified", "failed": "failed", "not-checked": "structure-only"}


class Tolerance(BaseModel):
    """Pass thresholds for one precision. Named here, next to what they judge."""

    min_sqnr_db: float = Field(description="Error power against the reference's raw power.")
    min_centered_sqnr_db: float = Field(
        description="Error power against the reference's variance (its spread around its mean), "
        "so an offset shared by every value cannot make a large error look small."
    )
    min_top1_agreement: float = Field(
        description="Classifiers: fraction of verification inputs whose argmax matches PyTorch."
    )


# Set from measurements, with margin, not from hope (benchmarks/measure_tolerances.py; recorded
# in benchmarks/results/tolerances-x86_64.md):
# - fp32: converters only reorder float ops. Measured centered SQNR: tiny-mobilevit 109.6-112.2 dB,
#   mobilevit-small 114.4-116.0 dB, tiny-sd components 116.2-138.4 dB on ONNX Runtime, ExecuTorch
#   and LiteRT; the full-size SD 1.5 UNet 104.6 dB (ExecuTorch) and 115.5 dB (ONNX). 80 dB (a
#   1e-4 relative RMS error) stays ~25 dB under the worst of those and fails an error 100x
#   smaller than the old 40 dB gate let through. A wrong op or weight lands far below 40 dB.
# - fp16: the same modules run in PyTorch with fp16 weights and activations measured 39.9 dB
#   (tiny-mobilevit), 47.3 dB (mobilevit-small), 53.2-64.3 dB (tiny-sd). Core ML's fp16 kernels
#   may accumulate in fp16 where PyTorch's CPU kernels use fp32, so the gate sits 10 dB under
#   the worst: 30 dB.
# - top-1: fp32 and fp16 agreed on every verification input in every measurement above: 1.0.
# - quantized (any plan with an int8 layer): see QUANTIZED_TOLERANCE below.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(min_sqnr_db=80.0, min_centered_sqnr_db=80.0, min_top1_agreement=1.0),
    "fp16": Tolerance(min_sqnr_db=30.0, min_centered_sqnr_db=30.0, min_top1_agreement=1.0),
}
# Any plan with int8 layers: a floor that catches a broken quantization, not a quality bar. How
# close a correct int8 artifact comes to fp32 depends on the weights far more than on the tool:
# measured on tiny-mobilevit (random weights, 8 verification inputs, 16 synthetic calibration
# inputs), correct artifacts gave centered SQNR 8.5 (ONNX int8), 9.0 (ONNX mixed), 9.6 (LiteRT
# int8), 10.5 (ExecuTorch int8), 15.5-19.1 (int8-dynamic), 23.9 dB (LiteRT int8-weight);
# mobilevit-small 16.2-20.5 dB on ONNX. The same ONNX exports calibrated on inputs scaled by 0.1
# or 10 (wrong activation ranges) gave -1.7 to -6.3 dB. 5 dB (error power a third of the
# signal's) sits between. Top-1 agreement is reported, not gated: a random network's logits are
# near ties, so correct int8 artifacts measured 0.25-0.875 and broken ones 0.0-0.5 - it cannot
# tell them apart; SQNR can. The user's own budget is the plan's (`edgekit quantize plan
# --min-sqnr / --max-top1-drop`), and every artifact records its measured SQNR and top-1.
QUANTIZED_TOLERANCE = Tolerance(min_sqnr_db=5.0, min_centered_sqnr_db=5.0, min_top1_agreement=0.0)


# A quantized artifact must also beat, by this much, the best input-blind answer (the mean output
# over the verification inputs): where a model's outputs barely depend on its input (the random
# mobilevit-small's logits: an input-blind answer scores 9.0 dB), a fixed 5 dB floor could not
# tell a working artifact from one that ignores its input. 3 dB: half the blind answer's error.
QUANTIZED_MARGIN_OVER_INPUT_BLIND_DB = 3.0


def tolerance_for(precision: str) -> Tolerance:
    """The gate for an artifact labelled `precision` (fp32, fp16, or a quantized plan's label)."""
    return TOLERANCES.get(precision, QUANTIZED_TOLERANCE)


def verification_tolerance(references: list[dict[str, np.ndarray]], *, precision: str) -> Tolerance:
    """The gate for these references: `tolerance_for(precision)`, raised for quantized artifacts
    to the input-blind answer's SQNR plus QUANTIZED_MARGIN_OVER_INPUT_BLIND_DB where that is
    higher. Float gates (80 / 30 dB) sit far above any input-blind answer and stay as they are;
    `check_reference` refuses references where they do not."""
    base = tolerance_for(precision)
    if precision in TOLERANCES:
        return base
    floor = max(input_blind_sqnr_db(references).values()) + QUANTIZED_MARGIN_OVER_INPUT_BLIND_DB
    if floor <= base.min_centered_sqnr_db:
        return base
    return base.model_copy(update={"min_centered_sqnr_db": round(floor, 2)})


def input_blind_sqnr_db(references: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Per output: the centered SQNR of the best answer that ignores the input (the mean output
    over the verification inputs), i.e. the reference's variance against what the input changes."""
    import numpy as np

    blind = {}
    for name in references[0]:
        values = np.stack([r[name] for r in references]).astype(np.float64)
        input_part = values - values.mean(axis=0, keepdims=True)
        blind[name] = _db(float(np.var(values)), float(np.mean(input_part**2)))
    return blind


class OutputComparison(BaseModel):
    name: str
    shape: list[int] = Field(description="Shape of one verification input's output.")
    sqnr_db: float | None = Field(
        None, description=f"Capped at {SQNR_CEILING_DB} for exact matches."
    )
    centered_sqnr_db: float | None = Field(
        None,
        description="SQNR against the reference's variance instead of its power; capped like "
        "sqnr_db.",
    )
    cosine: float | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    reference_max_abs: float | None = None
    top1_agreement: float | None = Field(
        None, description="Classifiers: argmax agreement over every verification input."
    )
    passed: bool
    failures: list[str] = Field(default_factory=list)


class StructureCheck(BaseModel):
    """What can be checked of an artifact without running it (e.g. Core ML off macOS)."""

    passed: bool
    facts: dict[str, Any] = Field(
        default_factory=dict, description="IO, op histogram, weight precision as found."
    )
    failures: list[str] = Field(default_factory=list)


class Verification(BaseModel):
    status: Literal["passed", "failed", "not-checked"]
    numerics_checked: bool
    runtime: str
    precision: str
    tolerance: Tolerance
    input_seeds: list[int] = Field(
        description="Seeds of the verification inputs; metrics are over all of them together."
    )
    input_source: str = Field(
        "seeded synthetic inputs",
        description="What the verification inputs were: seeded synthetic inputs (input_seeds), "
        "or, for quantized artifacts calibrated on real data, the first calibration inputs "
        "(input_seeds are then their indices): int8 ranges fit to photos clip synthetic noise, so "
        "noise would judge a correct artifact on data it was never meant for.",
    )
    outputs: list[OutputComparison]
    structure: StructureCheck | None = None
    runtime_error: str | None = Field(
        None, description="The host runtime could not load or run the artifact: its error."
    )
    message: str

    @property
    def failures(self) -> list[str]:
        found = [f"{o.name}: {f}" for o in self.outputs for f in o.failures]
        if self.runtime_error:
            found.append(f"{self.runtime} could not run the artifact: {self.runtime_error}")
        return found + (self.structure.failures if self.structure else [])


def check_reference(
    references: list[dict[str, np.ndarray]], *, precision: str, tolerance: Tolerance | None = None
) -> None:
    """Refuse a reference that cannot tell a right artifact from a wrong one.

    `references` holds the PyTorch outputs for each verification input (at least two). Refused:
    NaN/Inf, all near zero, constant, and an output that changes so little with its input that an
    artifact returning the same answer for every input would still pass `precision`'s gate.
    """
    import numpy as np

    from edgekit.errors import DegenerateReferenceError

    hint = "the weights are degenerate (e.g. never initialised); load real weights."
    tolerance = tolerance or tolerance_for(precision)
    for name in references[0]:
        values = np.stack([r[name] for r in references]).astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise DegenerateReferenceError(
                f"The PyTorch reference output '{name}' holds NaN or Inf.",
                hint="the weights or inputs are broken; check the checkpoint.",
            )
        peak = float(np.max(np.abs(values))) if values.size else 0.0
        if peak < DEGENERATE_REFERENCE_MAX_ABS:
            raise DegenerateReferenceError(
                f"The PyTorch reference output '{name}' is all near zero (max |x| = {peak:.3g}), "
                "so no comparison could fail.",
                hint=hint,
            )
        if float(np.ptp(values)) <= DEGENERATE_REFERENCE_RELATIVE_SPREAD * peak:
            raise DegenerateReferenceError(
                f"The PyTorch reference output '{name}' is constant ({values.flat[0]:.6g} "
                "everywhere), so it cannot show whether the artifact computes anything.",
                hint=hint,
            )
        # The best an input-blind artifact can do is return the mean answer over the inputs:
        # its centered SQNR is the reference's variance against what the input changes.
        input_part = values - values.mean(axis=0, keepdims=True)
        blind_db = input_blind_sqnr_db([{name: r[name]} for r in references])[name]
        if blind_db >= tolerance.min_centered_sqnr_db:
            change = float(np.max(np.abs(input_part)))
            raise DegenerateReferenceError(
                f"The PyTorch reference output '{name}' barely changes with its input (by at "
                f"most {change:.3g} over {len(references)} different inputs, while its values "
                f"span {float(np.ptp(values)):.3g}): an artifact that ignores its input would "
                f"pass at {blind_db:.1f} dB.",
                hint=hint,
            )


def compare_outputs(
    references: list[dict[str, np.ndarray]],
    actuals: list[dict[str, np.ndarray]],
    *,
    precision: str,
    runtime: str,
    input_seeds: list[int],
    classifier_output: str | None = None,
    tolerance: Tolerance | None = None,
) -> Verification:
    """Compare every reference output with the artifact's over all verification inputs.

    `references[i]` and `actuals[i]` are the outputs for the input made from `input_seeds[i]`.
    Never raises on a mismatch: every failure is collected, each naming the check that failed.
    """
    tolerance = tolerance or tolerance_for(precision)
    outputs = []
    for name in references[0]:
        outputs.append(
            _compare_one(
                name,
                [r[name] for r in references],
                [a.get(name) for a in actuals],
                tolerance,
                classifier=name == classifier_output,
            )
        )
    for extra in sorted(set().union(*actuals) - set(references[0])):
        outputs.append(
            OutputComparison(
                name=extra,
                shape=list(next(a[extra] for a in actuals if extra in a).shape),
                passed=False,
                failures=["output not produced by the PyTorch model"],
            )
        )
    passed = all(o.passed for o in outputs)
    worst = min(
        (o.centered_sqnr_db for o in outputs if o.centered_sqnr_db is not None), default=None
    )
    verdict = "passed" if passed else "FAILED"
    summary = (
        f"worst centered SQNR {worst:.1f} dB over {len(input_seeds)} inputs"
        if worst is not None
        else "no comparable output"
    )
    return Verification(
        status="passed" if passed else "failed",
        numerics_checked=True,
        runtime=runtime,
        precision=precision,
        tolerance=tolerance,
        input_seeds=list(input_seeds),
        outputs=outputs,
        message=f"{runtime} vs PyTorch ({precision}): {verdict}, {summary}",
    )


def runtime_failure(
    error: str, *, precision: str, runtime: str, input_seeds: list[int]
) -> Verification:
    """The verdict when the host runtime could not load or run the artifact at all."""
    return Verification(
        status="failed",
        numerics_checked=False,
        runtime=runtime,
        precision=precision,
        tolerance=tolerance_for(precision),
        input_seeds=list(input_seeds),
        outputs=[],
        runtime_error=error,
        message=f"{runtime} could not run the artifact: {error}",
    )


def sqnr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `actual` against `reference`, in dB (float64 sums;
    clamped to +-SQNR_CEILING_DB, the ceiling for identical arrays)."""
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(actual, dtype=np.float64)) ** 2))
    return _db(float(np.sum(ref**2)), noise)


def _db(signal: float, noise: float) -> float:
    import math

    if noise == 0:
        return SQNR_CEILING_DB
    if signal == 0:
        return -SQNR_CEILING_DB
    return max(-SQNR_CEILING_DB, min(SQNR_CEILING_DB, 10 * math.log10(signal / noise)))


def _compare_one(
    name: str,
    references: list[np.ndarray],
    actuals: list[np.ndarray | None],
    tolerance: Tolerance,
    *,
    classifier: bool,
) -> OutputComparison:
    import numpy as np

    shape = list(references[0].shape)
    if any(a is None for a in actuals):
        return OutputComparison(name=name, shape=shape, passed=False, failures=["output missing"])
    wrong_shapes = sorted({str(list(a.shape)) for a in actuals if list(a.shape) != shape})
    if wrong_shapes:
        return OutputComparison(
            name=name,
            shape=shape,
            passed=False,
            failures=[f"shape {', '.join(wrong_shapes)} != reference {shape}"],
        )
    ref = np.stack(references).astype(np.float64).ravel()
    out = np.stack(actuals).astype(np.float64).ravel()
    if not np.all(np.isfinite(out)):
        return OutputComparison(
            name=name, shape=shape, passed=False, failures=["NaN or Inf in output"]
        )

    diff = out - ref
    noise = float(np.mean(diff**2))
    sqnr = _db(float(np.mean(ref**2)), noise)
    # The error judged against the reference's spread: logits of 100 + 0.1*N(0,1) have a raw
    # power of 1e4 but a variance of 0.01, and only the latter says how big an error matters.
    centered_sqnr = _db(float(np.var(ref)), noise)
    norms = float(np.linalg.norm(ref) * np.linalg.norm(out))
    cosine = float(np.dot(ref, out) / norms) if norms else 0.0
    failures = []
    if sqnr < tolerance.min_sqnr_db:
        failures.append(f"SQNR {sqnr:.1f} dB < {tolerance.min_sqnr_db} dB")
    if centered_sqnr < tolerance.min_centered_sqnr_db:
        failures.append(
            f"centered SQNR {centered_sqnr:.1f} dB < {tolerance.min_centered_sqnr_db} dB "
            "(error against the reference's spread)"
        )
    top1 = None
    if classifier and references[0].ndim == 2:
        expected = np.concatenate([r.argmax(axis=1) for r in references])
        found = np.concatenate([a.argmax(axis=1) for a in actuals])
        top1 = float(np.mean(expected == found))
        if top1 < tolerance.min_top1_agreement:
            failures.append(
                f"top-1 agreement {top1:.0%} < {tolerance.min_top1_agreement:.0%} over "
                f"{expected.size} inputs"
            )
    return OutputComparison(
        name=name,
        shape=shape,
        sqnr_db=round(sqnr, 2),
        centered_sqnr_db=round(centered_sqnr, 2),
        cosine=cosine,
        max_abs_diff=float(np.max(np.abs(diff))),
        mean_abs_diff=float(np.mean(np.abs(diff))),
        reference_max_abs=float(np.max(np.abs(ref))),
        top1_agreement=top1,
        passed=not failures,
        failures=failures,
    )
