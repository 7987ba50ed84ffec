"""Numeric comparison: metrics are right, mismatches fail, degenerate references are refused."""

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


def _compare(ref, out, **kw):
    return compare_outputs(
        {"y": ref}, {"y": out}, precision="fp32", runtime="test", input_seed=0, **kw
    )


def test_sqnr_matches_definition():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=1000).astype(np.float32)
    noise = (rng.normal(size=1000) * 1e-3).astype(np.float32)
    result = _compare(ref, ref + noise).outputs[0]
    expected = 10 * np.log10(
        np.sum(ref.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2)
    )
    assert result.sqnr_db == pytest.approx(expected, abs=0.05)
    assert result.max_abs_diff == pytest.approx(np.max(np.abs(noise)), rel=1e-4)
    assert result.passed


def test_exact_match_reports_ceiling():
    ref = np.arange(1, 7, dtype=np.float32)
    result = _compare(ref, ref.copy())
    assert result.outputs[0].sqnr_db == SQNR_CEILING_DB
    assert result.status == "passed"


def test_wrong_values_fail_with_reason():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(2, 10)).astype(np.float32)
    wrong = ref + rng.normal(size=ref.shape).astype(np.float32) * 0.5
    result = _compare(ref, wrong, classifier_output="y")
    assert result.status == "failed"
    assert any("SQNR" in f for f in result.outputs[0].failures)
    assert result.outputs[0].sqnr_db < TOLERANCES["fp32"].min_sqnr_db


def test_shape_mismatch_and_missing_output_fail():
    ref = np.ones((1, 4), dtype=np.float32)
    assert "shape" in _compare(ref, np.ones((4,), dtype=np.float32)).outputs[0].failures[0]
    missing = compare_outputs({"y": ref}, {}, precision="fp32", runtime="t", input_seed=0)
    assert missing.outputs[0].failures == ["output missing"]


def test_nan_output_fails():
    ref = np.ones((3,), dtype=np.float32)
    bad = np.array([1.0, np.nan, 1.0], dtype=np.float32)
    assert _compare(ref, bad).status == "failed"


def test_top1_agreement_for_classifiers():
    ref = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)
    out = np.array([[0.1, 0.9], [0.2, 0.8]], dtype=np.float32)
    assert _compare(ref, out, classifier_output="y").outputs[0].top1_agreement == 0.5


def test_degenerate_reference_is_refused():
    tiny = np.full((1, 10), DEGENERATE_REFERENCE_MAX_ABS / 10, dtype=np.float32)
    with pytest.raises(DegenerateReferenceError, match="all near zero"):
        check_reference({"logits": tiny})
    with pytest.raises(DegenerateReferenceError, match="NaN"):
        check_reference({"logits": np.array([np.nan], dtype=np.float32)})
    check_reference({"logits": np.array([0.5, -0.2], dtype=np.float32)})
