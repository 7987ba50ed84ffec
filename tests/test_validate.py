"""Numeric comparison: metrics are right, wrong outputs fail (naming the check), degenerate
references are refused."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import DegenerateReferenceError
from edgekit.validate import (
    DEGENERATE_REFERENCE_MAX_ABS,
    SQNR_CEILING_DB,
    TOLERANCES,
    check_reference,
    compare_outputs,
)

SEEDS = [0, 1]


def _compare(refs, outs, precision="fp32", **kw):
    """Compare per-input lists of arrays for one output named y."""
    return compare_outputs(
        [{"y": r} for r in refs],
        [{"y": o} for o in outs],
        precision=precision,
        runtime="test",
        input_seeds=list(range(len(refs))),
        **kw,
    )


def test_sqnr_and_centered_sqnr_match_their_definitions():
    rng = np.random.default_rng(0)
    refs = [rng.normal(3.0, 1.0, size=1000) for _ in SEEDS]
    noise = [rng.normal(size=1000) * 1e-5 for _ in SEEDS]
    result = _compare(refs, [r + n for r, n in zip(refs, noise, strict=True)]).outputs[0]
    ref, err = np.concatenate(refs), np.concatenate(noise)
    assert result.sqnr_db == pytest.approx(
        10 * np.log10(np.mean(ref**2) / np.mean(err**2)), abs=0.01
    )
    assert result.centered_sqnr_db == pytest.approx(
        10 * np.log10(np.var(ref) / np.mean(err**2)), abs=0.01
    )
    # The offset of 3 adds power but no spread: the two metrics differ by 10*log10(1 + 9/1).
    assert result.sqnr_db - result.centered_sqnr_db == pytest.approx(10.0, abs=0.3)
    assert result.max_abs_diff == pytest.approx(np.max(np.abs(err)), rel=1e-6)
    assert result.passed


def test_exact_match_reports_ceiling():
    refs = [np.arange(1, 7, dtype=np.float32), np.arange(2, 8, dtype=np.float32)]
    result = _compare(refs, [r.copy() for r in refs])
    assert result.outputs[0].sqnr_db == SQNR_CEILING_DB
    assert result.outputs[0].centered_sqnr_db == SQNR_CEILING_DB
    assert result.status == "passed"


def test_offset_logits_with_independent_variation_fail():
    """The review's case: 100 + 0.1*N(0,1) logits vs an artifact whose variation is unrelated.

    Raw SQNR reads ~57 dB and cosine 0.999999, which a raw-power gate would pass."""
    rng = np.random.default_rng(2)
    refs = [100 + 0.1 * rng.normal(size=(1, 10)) for _ in range(8)]
    outs = [100 + 0.1 * rng.normal(size=(1, 10)) for _ in range(8)]
    result = _compare(refs, outs, classifier_output="y")
    out = result.outputs[0]
    assert out.sqnr_db > 50 and out.cosine > 0.9999  # what fooled the old check
    assert result.status == "failed"
    assert any(f.startswith("centered SQNR") for f in out.failures), out.failures
    assert any(f.startswith("top-1 agreement") for f in out.failures), out.failures
    assert any(f.startswith("y: centered SQNR") for f in result.failures)


def test_fp32_gate_catches_an_error_a_40_db_gate_let_through():
    rng = np.random.default_rng(3)
    refs = [rng.normal(size=500) for _ in SEEDS]
    # A relative RMS error of 1e-3 (60 dB): 1000x the error fp32 converters actually make.
    outs = [r + 1e-3 * rng.normal(size=500) for r in refs]
    result = _compare(refs, outs)
    assert 55 < result.outputs[0].centered_sqnr_db < TOLERANCES["fp32"].min_centered_sqnr_db
    assert result.status == "failed"


def test_top1_must_agree_on_every_input_for_fp32_and_fp16():
    refs = [np.array([[0.1, 0.9]]), np.array([[0.8, 0.2]])]
    # Nearly identical values, but the second input's argmax flips.
    outs = [np.array([[0.1, 0.9]]), np.array([[0.5, 0.5000001]])]
    for precision in ("fp32", "fp16"):
        out = _compare(refs, outs, precision=precision, classifier_output="y").outputs[0]
        assert out.top1_agreement == 0.5
        assert "top-1 agreement 50% < 100% over 2 inputs" in out.failures


def test_output_that_ignores_its_input_fails():
    rng = np.random.default_rng(4)
    refs = [rng.normal(size=(1, 10)) for _ in range(4)]
    stuck = [refs[0]] * 4  # right for the first input, returned for every input
    result = _compare(refs, stuck, classifier_output="y")
    assert result.status == "failed"
    assert any("centered SQNR" in f for f in result.outputs[0].failures)


def test_shape_mismatch_and_missing_output_fail():
    refs = [np.ones((1, 4)), np.zeros((1, 4))]
    bad_shape = _compare(refs, [np.ones((4,)), np.ones((4,))]).outputs[0]
    assert bad_shape.failures == ["shape [4] != reference [1, 4]"]
    missing = compare_outputs(
        [{"y": r} for r in refs], [{}, {}], precision="fp32", runtime="t", input_seeds=SEEDS
    )
    assert missing.outputs[0].failures == ["output missing"]


def test_nan_output_fails():
    refs = [np.ones((3,)), np.arange(3.0)]
    bad = [np.array([1.0, np.nan, 1.0]), np.arange(3.0)]
    assert _compare(refs, bad).outputs[0].failures == ["NaN or Inf in output"]


def test_degenerate_references_are_refused():
    varied = np.array([0.5, -0.2, 0.1])
    tiny = np.full((1, 10), DEGENERATE_REFERENCE_MAX_ABS / 10)
    with pytest.raises(DegenerateReferenceError, match="all near zero"):
        check_reference([{"logits": tiny}, {"logits": tiny * 2}], precision="fp32")
    with pytest.raises(DegenerateReferenceError, match="NaN"):
        check_reference(
            [{"logits": np.array([np.nan, 0.0, 1.0])}, {"logits": varied}], precision="fp32"
        )
    constant = np.full((1, 10), 3.0)
    with pytest.raises(DegenerateReferenceError, match="constant"):
        check_reference([{"logits": constant}, {"logits": constant}], precision="fp32")
    # Spread across classes, but the input moves it by 1e-6 of that: an input-blind artifact
    # would pass the fp32 gate, so the reference is refused.
    blind = [{"logits": varied + 1e-6 * i} for i in range(2)]
    with pytest.raises(DegenerateReferenceError, match="barely changes with its input"):
        check_reference(blind, precision="fp32")
    check_reference([{"logits": varied}, {"logits": varied[::-1].copy()}], precision="fp32")


def test_quantized_gate_rises_above_the_input_blind_answer():
    """Where outputs barely depend on the input, a quantized artifact must beat the mean answer
    by a margin; the fixed floor alone would pass an artifact that ignores its input."""
    from edgekit.validate import (
        QUANTIZED_MARGIN_OVER_INPUT_BLIND_DB,
        QUANTIZED_TOLERANCE,
        input_blind_sqnr_db,
        verification_tolerance,
    )

    rng = np.random.default_rng(0)
    shared = rng.normal(size=(1, 10))
    refs = [{"logits": shared + 0.1 * rng.normal(size=(1, 10))} for _ in range(8)]
    blind = input_blind_sqnr_db(refs)["logits"]
    assert blind > QUANTIZED_TOLERANCE.min_centered_sqnr_db  # the fixed floor would not do
    gate = verification_tolerance(refs, precision="int8")
    assert gate.min_centered_sqnr_db == pytest.approx(
        blind + QUANTIZED_MARGIN_OVER_INPUT_BLIND_DB, abs=0.01
    )
    # The input-blind artifact (the mean answer) now fails; float gates are unchanged.
    mean = np.mean([r["logits"] for r in refs], axis=0)
    verdict = _compare([r["logits"] for r in refs], [mean] * 8, precision="int8", tolerance=gate)
    assert verdict.status == "failed"
    assert verification_tolerance(refs, precision="fp32") == TOLERANCES["fp32"]
    # Inputs that matter leave the floor as it is.
    varied = [{"logits": rng.normal(size=(1, 10))} for _ in range(8)]
    assert verification_tolerance(varied, precision="int8") == QUANTIZED_TOLERANCE
