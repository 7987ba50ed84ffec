"""analyze -> plan -> export -> verify, through the CLI, on every target (tiny-mobilevit).

The per-target files (test_quant_<format>.py) cover each backend's realization and read-back in
depth; this one checks that the commands of the README chain together on all four, that the
chosen plan is what each artifact holds layer by layer, and that the bench shows it.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgekit.artifact import read_manifest
from edgekit.cli import app
from edgekit.quant.analyze import SensitivityReport
from edgekit.quant.plan import FLOAT_PRECISIONS, LayerPrecision, read_plan
from edgekit.quant.planner import candidates
from tests.conftest import host_formats

runner = CliRunner()
# The quantized scheme each target's plan uses: Core ML has no static int8 off macOS (its
# activation calibration needs the Core ML runtime), so it quantizes weights only.
SCHEMES = {"onnx": "int8", "executorch": "int8", "tflite": "int8", "coreml": "int8-weight"}


@pytest.fixture(scope="module")
def plans(tiny_sensitivity, tmp_path_factory):
    """A plan per scheme from the shared analysis. The SQNR budget is the prediction halfway
    along each scheme's Pareto curve, so the plan quantizes some layers and keeps others float
    (a fixed number of dB could keep all or none, depending on the scheme)."""
    sensitivity, _ = tiny_sensitivity
    report = SensitivityReport.model_validate_json(sensitivity.read_text())
    folder = tmp_path_factory.mktemp("plans")
    paths = {}
    for scheme in set(SCHEMES.values()):
        curve = candidates(report, LayerPrecision(scheme))
        budget = ["--min-sqnr", f"{curve[len(curve) // 2].predicted_sqnr_db}", "--scheme", scheme]
        path = folder / f"plan-{scheme}.json"
        result = runner.invoke(
            app, ["quantize", "plan", str(sensitivity), *budget, "--out", str(path)]
        )
        assert result.exit_code == 0, result.output
        paths[scheme] = path
    return paths


@pytest.mark.parametrize("format_name", sorted(SCHEMES))
def test_a_measured_plan_exports_and_is_realized_layer_by_layer(plans, tmp_path, format_name):
    plan_path = plans[SCHEMES[format_name]]
    plan = read_plan(plan_path)
    result = runner.invoke(
        app,
        [
            "export",
            "tiny-mobilevit",
            "--target",
            format_name,
            "--quant",
            str(plan_path),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = read_manifest(next(tmp_path.iterdir()))
    component = manifest.component()
    assert manifest.quant_plan == plan
    layers = component.quant.layers
    # The plan keeps some layers float and quantizes the rest: both kinds are present ...
    quantized = [p for p, r in layers.items() if r.planned not in FLOAT_PRECISIONS]
    kept = [p for p, r in layers.items() if r.planned in FLOAT_PRECISIONS]
    assert quantized and kept
    # ... and the file holds exactly that, read back per layer.
    assert component.quant.status == "passed", component.quant.failures
    assert all(layers[p].realized == LayerPrecision(SCHEMES[format_name]) for p in quantized)
    assert all(layers[p].realized in FLOAT_PRECISIONS for p in kept)
    # (Sizes against fp32 are compared per target in test_quant_<format>.py: a tiny model's
    # file is mostly graph, so this plan's size says little.)
    assert "as planned" in result.output and "of weights in fp32" in result.output
    if format_name in host_formats():
        assert manifest.status == "verified", component.verification.message
        assert component.calibration.kind == "synthetic"
        assert "warning:" in result.output and "synthetic" in result.output


def test_bench_shows_precision_and_size_against_fp32(tmp_path):
    for quant in ["fp32", "int8-dynamic"]:
        result = runner.invoke(
            app,
            [
                "export",
                "tiny-mobilevit",
                "--target",
                "onnx",
                "--quant",
                quant,
                "--out",
                str(tmp_path / "a"),
            ],
        )
        assert result.exit_code == 0, result.output
    json_path = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        [
            "bench",
            str(tmp_path / "a" / "tiny-mobilevit-onnx-fp32"),
            str(tmp_path / "a" / "tiny-mobilevit-onnx-int8-dynamic"),
            "--runs",
            "3",
            "--warmup",
            "1",
            "--no-pytorch",
            "--json",
            str(json_path),
        ],
    )
    assert result.exit_code == 0, result.output
    from edgekit.bench.schema import BenchReport

    report = BenchReport.model_validate_json(json_path.read_text())
    by_precision = {r.precision: r for r in report.results if r.format == "onnx"}
    assert set(by_precision) == {"fp32", "int8-dynamic"}
    # Same weights, so the int8 file is the one further below its fp32 weight bytes (a tiny
    # model's files are mostly graph, so the ratio itself is small).
    fp32, int8 = by_precision["fp32"], by_precision["int8-dynamic"]
    assert int8.model_size_bytes < fp32.model_size_bytes
    assert int8.size_vs_fp32 > fp32.size_vs_fp32
    assert "int8-dynamic" in result.output and "smaller" in result.output
