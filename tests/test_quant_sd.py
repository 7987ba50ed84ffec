"""Stable Diffusion quantizes with the same commands: analyze the UNet on recorded pipeline
inputs, plan, export the whole pipeline with the UNet plan, generate and compare with PyTorch."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgekit.artifact import read_manifest
from edgekit.cli import app
from edgekit.quant.analyze import SensitivityReport
from edgekit.quant.plan import LayerPrecision, read_plan
from edgekit.quant.planner import candidates

runner = CliRunner()
PROMPTS = "a photo of a cat\na red car on a street\n"


@pytest.fixture(scope="module")
def unet_plan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd-quant")
    prompts = folder / "prompts.txt"
    prompts.write_text(PROMPTS)
    sensitivity = folder / "unet-sens.json"
    result = runner.invoke(
        app,
        [
            "quantize",
            "analyze",
            "tiny-sd",
            "--component",
            "unet",
            "--prompts",
            str(prompts),
            "--steps",
            "2",
            "--scheme",
            "int8-dynamic",
            "--out",
            str(sensitivity),
        ],
    )
    assert result.exit_code == 0, result.output
    # A budget the all-int8 UNet misses, so the plan keeps its most sensitive layers float:
    # the prediction halfway along the Pareto curve.
    report = SensitivityReport.model_validate_json(sensitivity.read_text())
    budget = candidates(report, LayerPrecision.INT8_DYNAMIC)[len(report.layers) // 2]
    plan_path = folder / "unet-plan.json"
    plan_args = ["--min-sqnr", f"{budget.predicted_sqnr_db}", "--scheme", "int8-dynamic"]
    result = runner.invoke(
        app, ["quantize", "plan", str(sensitivity), *plan_args, "--out", str(plan_path)]
    )
    assert result.exit_code == 0, result.output
    return folder, prompts, sensitivity, plan_path


def test_unet_analysis_runs_on_recorded_pipeline_inputs(unet_plan):
    _, _, sensitivity, plan_path = unet_plan
    report = SensitivityReport.model_validate_json(sensitivity.read_text())
    assert report.component == "unet" and report.model_kind == "sd-unet"
    # Two prompts x two steps x guidance (two UNet calls per step).
    assert report.calibration.kind == "prompts" and report.calibration.count == 8
    assert any(e.in_attention for e in report.layers)
    # The denoising loop compounds each layer's error: the final latents are measured too, and
    # every layer quantized at once moves them further than any one layer does.
    scheme = LayerPrecision.INT8_DYNAMIC
    per_layer = [e.latent_psnr_db[scheme] for e in report.layers]
    assert all(psnr < 200 for psnr in per_layer)
    assert report.whole_model[scheme]["latent_psnr_db"] < min(per_layer)
    plan = read_plan(plan_path)
    assert plan.component == "unet"
    assert {plan.precision_of(e.path) for e in report.layers} == {
        LayerPrecision.INT8_DYNAMIC,
        LayerPrecision.FP32,
    }


def test_pipeline_exports_with_the_unet_plan_and_generates(unet_plan, tmp_path):
    _, prompts, _, plan_path = unet_plan
    result = runner.invoke(
        app,
        [
            "export",
            "tiny-sd",
            "--target",
            "tflite",
            "--quant",
            str(plan_path),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    artifact = next(tmp_path.iterdir())
    manifest = read_manifest(artifact)
    checks = {c.name: c.quant for c in manifest.components}
    # The plan applies to the UNet; the other components stay fp32, all read back as planned.
    assert all(check.status == "passed" for check in checks.values())
    assert set(checks["text-encoder"].counts) == {"fp32"}
    assert set(checks["unet"].counts) == {"fp32", "int8-dynamic"}
    assert manifest.status == "verified"
    image = tmp_path / "cat.png"
    generate_args = ["--artifact", str(artifact), "--prompt", "a photo of a cat", "--steps", "2"]
    result = runner.invoke(app, ["generate", *generate_args, "--out", str(image)])
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.output and image.is_file()


def test_a_unet_plan_refuses_a_pipeline_without_a_unet(unet_plan, tmp_path):
    _, _, _, plan_path = unet_plan
    result = runner.invoke(
        app,
        [
            "export",
            "tiny-sd",
            "--component",
            "text-encoder",
            "--target",
            "onnx",
            "--quant",
            str(plan_path),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "The plan is for the 'unet' component" in result.output
    assert list(tmp_path.iterdir()) == []
