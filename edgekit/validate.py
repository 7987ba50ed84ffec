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
# A reference whose largest magnitude is below this carries no signal (see the transformers 5.2x
# trap in shared/VERSIONS.md: logits of 1e-41 make every comparison pass).
DEGENERATE_REFERENCE_MAX_ABS = 1e-6


# A component's verification status -> the artifact status the manifest and bench report use.
ARTIFACT_STATUS = {"passed": "verified", "failed": "failed", "not-checked": "structure-only"}


class Tolerance(BaseModel):
    """Pass thresholds for one precision. Named here, next to what they judge."""

    min_sqnr_db: float
    min_cosine: float


# fp32 converters reorder float ops (fused kernels, different reductions): max abs diffs of
# 1e-7..4e-6 on O(1) outputs, i.e. well above 60 dB. 40 dB leaves room for deep UNets while still
# catching a wrong op, which lands far below 20 dB.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(min_sqnr_db=40.0, min_cosine=0.9999),
    "fp16": Tolerance(min_sqnr_db=25.0, min_cosine=0.999),
    "int8": Tolerance(min_sqnr_db=12.0, min_cosine=0.97),
}


class OutputComparison(BaseModel):
    name: str
    shape: list[int]
    sqnr_db: float | None = Field(
        None, description=f"Capped at {SQNR_CEILING_DB} for exact matches."
    )
    cosine: float | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    reference_max_abs: float | None = None
    top1_agreement: float | None = Field(
        None, description="Classifiers: argmax agreement over the batch."
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
    input_seed: int
    outputs: list[OutputComparison]
    structure: StructureCheck | None = None
    message: str

    @property
    def failures(self) -> list[str]:
        found = [f"{o.name}: {f}" for o in self.outputs for f in o.failures]
        return found + (self.structure.failures if self.structure else [])


def check_reference(reference: dict[str, np.ndarray]) -> None:
    """Refuse a reference that cannot tell a right artifact from a wrong one."""
    import numpy as np

    from edgekit.errors import DegenerateReferenceError

    for name, values in reference.items():
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
                hint="the weights are degenerate (e.g. never initialised); load real weights.",
            )


def compare_outputs(
    reference: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    *,
    precision: str,
    runtime: str,
    input_seed: int,
    classifier_output: str | None = None,
) -> Verification:
    """Compare every reference output with the artifact's; never raises on a mismatch."""
    tolerance = TOLERANCES[precision]
    outputs = [
        _compare_one(name, ref, actual.get(name), tolerance, classifier=name == classifier_output)
        for name, ref in reference.items()
    ]
    for extra in sorted(set(actual) - set(reference)):
        outputs.append(
            OutputComparison(
                name=extra,
                shape=list(actual[extra].shape),
                passed=False,
                failures=["output not produced by the PyTorch model"],
            )
        )
    passed = all(o.passed for o in outputs)
    worst = min((o.sqnr_db for o in outputs if o.sqnr_db is not None), default=None)
    verdict = "passed" if passed else "FAILED"
    summary = f"worst SQNR {worst:.1f} dB" if worst is not None else "no comparable output"
    return Verification(
        status="passed" if passed else "failed",
        numerics_checked=True,
        runtime=runtime,
        precision=precision,
        tolerance=tolerance,
        input_seed=input_seed,
        outputs=outputs,
        message=f"{runtime} vs PyTorch ({precision}): {verdict}, {summary}",
    )


def _compare_one(
    name: str,
    reference: np.ndarray,
    actual: np.ndarray | None,
    tolerance: Tolerance,
    *,
    classifier: bool,
) -> OutputComparison:
    import numpy as np

    shape = list(reference.shape)
    if actual is None:
        return OutputComparison(name=name, shape=shape, passed=False, failures=["output missing"])
    if list(actual.shape) != shape:
        return OutputComparison(
            name=name,
            shape=shape,
            passed=False,
            failures=[f"shape {list(actual.shape)} != reference {shape}"],
        )
    ref = reference.astype(np.float64).ravel()
    out = actual.astype(np.float64).ravel()
    if not np.all(np.isfinite(out)):
        return OutputComparison(
            name=name, shape=shape, passed=False, failures=["NaN or Inf in output"]
        )

    diff = out - ref
    noise = float(np.sum(diff**2))
    signal = float(np.sum(ref**2))
    sqnr = SQNR_CEILING_DB if noise == 0 else min(SQNR_CEILING_DB, 10 * np.log10(signal / noise))
    norms = float(np.linalg.norm(ref) * np.linalg.norm(out))
    cosine = float(np.dot(ref, out) / norms) if norms else 0.0
    failures = []
    if sqnr < tolerance.min_sqnr_db:
        failures.append(f"SQNR {sqnr:.1f} dB < {tolerance.min_sqnr_db} dB")
    if cosine < tolerance.min_cosine:
        failures.append(f"cosine {cosine:.6f} < {tolerance.min_cosine}")
    top1 = None
    if classifier and reference.ndim == 2:
        top1 = float(np.mean(reference.argmax(axis=1) == actual.argmax(axis=1)))
    return OutputComparison(
        name=name,
        shape=shape,
        sqnr_db=round(float(sqnr), 2),
        cosine=float(cosine),
        max_abs_diff=float(np.max(np.abs(diff))),
        mean_abs_diff=float(np.mean(np.abs(diff))),
        reference_max_abs=float(np.max(np.abs(ref))),
        top1_agreement=top1,
        passed=not failures,
        failures=failures,
    )
