"""The whole Stable Diffusion pipeline: one artifact, three components, and `generate`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgekit import models
from edgekit.artifact import read_manifest
from edgekit.cli import app
from edgekit.export import export_artifact
from edgekit.generate import GenerateError, generate
from edgekit.validate import TOLERANCES

runner = CliRunner()
# End-to-end fidelity of an fp32 export: tiny numeric differences through 4 denoising steps and
# the decoder stay far below one grey level. A broken component lands below 40 dB.
MIN_FP32_PIPELINE_PSNR_DB = 60.0


@pytest.fixture(scope="module")
def sd_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("sd-onnx")
    folder, _ = export_artifact(models.load_pipeline("tiny-sd"), "onnx", out)
    return folder


def test_pipeline_artifact_has_components_tokenizer_and_scheduler(sd_onnx):
    manifest = read_manifest(sd_onnx)
    assert manifest.model_kind == "sd-pipeline" and manifest.status == "verified"
    assert [c.name for c in manifest.components] == ["text-encoder", "unet", "vae-decoder"]
    for component in manifest.components:
        assert (sd_onnx / component.model_file).is_file()
        assert component.verification.outputs[0].sqnr_db >= TOLERANCES["fp32"].min_sqnr_db
    for name in [*manifest.pipeline.tokenizer_files, manifest.pipeline.scheduler_config_file]:
        assert (sd_onnx / name).is_file()
    assert {f.path for f in manifest.files} >= {"vocab.json", "merges.txt", "unet.onnx"}
    assert manifest.component("text-encoder").inputs[0].dtype == "int32"


def test_generate_matches_pytorch(sd_onnx):
    result = generate(sd_onnx, "a photo of sks cat", steps=4, seed=1)
    assert result.image.shape == (32, 32, 3)
    assert result.image.std() > 0.01  # a picture, not a flat field
    assert result.psnr_db >= MIN_FP32_PIPELINE_PSNR_DB


def test_generate_detects_a_broken_component(sd_onnx, monkeypatch):
    from edgekit.exporters import onnx as onnx_exporter

    original = onnx_exporter.OnnxRuntime.__call__

    def shifted(self, inputs):
        results = original(self, inputs)
        return {k: v * np.float32(1.05) if k == "noise_pred" else v for k, v in results.items()}

    monkeypatch.setattr(onnx_exporter.OnnxRuntime, "__call__", shifted)
    result = generate(sd_onnx, "a photo of sks cat", steps=4, seed=1)
    assert result.psnr_db < MIN_FP32_PIPELINE_PSNR_DB


def test_seed_and_prompt_change_the_image(sd_onnx):
    base = generate(sd_onnx, "a cat", steps=2, seed=1, compare_with_pytorch=False).image
    other_seed = generate(sd_onnx, "a cat", steps=2, seed=2, compare_with_pytorch=False).image
    other_prompt = generate(sd_onnx, "a dog", steps=2, seed=1, compare_with_pytorch=False).image
    assert np.abs(base - other_seed).max() > 0.01
    assert np.abs(base - other_prompt).max() > 1e-4


def test_cli_generate_writes_png_and_reports_psnr(sd_onnx, tmp_path):
    out = tmp_path / "cat.png"
    result = runner.invoke(
        app,
        [
            "generate",
            "--artifact",
            str(sd_onnx),
            "--prompt",
            "a photo of sks cat",
            "--steps",
            "4",
            "--seed",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "PSNR artifact vs PyTorch" in result.output
    assert Image.open(out).size == (32, 32)
    assert (tmp_path / "cat-pytorch.png").is_file()


def test_tflite_pipeline_and_generate(tmp_path):
    result = runner.invoke(app, ["export", "tiny-sd", "--target", "tflite", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "tiny-sd-tflite-fp32"
    manifest = read_manifest(folder)
    assert [c.model_file for c in manifest.components] == [
        "text-encoder.tflite",
        "unet.tflite",
        "vae-decoder.tflite",
    ]
    assert generate(folder, "a photo of sks cat", steps=4, seed=1).psnr_db >= (
        MIN_FP32_PIPELINE_PSNR_DB
    )


def test_coreml_pipeline_uses_apple_resource_names(tmp_path):
    result = runner.invoke(app, ["export", "tiny-sd", "--target", "coreml", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "tiny-sd-coreml-fp16"
    manifest = read_manifest(folder)
    assert [c.model_file for c in manifest.components] == [
        "TextEncoder.mlpackage",
        "Unet.mlpackage",
        "VAEDecoder.mlpackage",
    ]
    assert (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if manifest.status == "structure-only":  # Linux: say so, and refuse to generate
        assert "Numerics NOT checked" in result.output
        with pytest.raises(GenerateError, match="can only run on macOS/iOS"):
            generate(folder, "a cat", steps=1)


def test_generate_needs_a_full_pipeline(tmp_path, sd_pipeline_folder):
    folder, _ = export_artifact(
        models.load_pipeline(sd_pipeline_folder, components=["unet"]), "onnx", tmp_path
    )
    with pytest.raises(GenerateError, match="lacks text-encoder, vae-decoder"):
        generate(folder, "a cat", steps=1)
    mobilevit, _ = export_artifact(models.load("tiny-mobilevit"), "onnx", tmp_path)
    result = runner.invoke(app, ["generate", "--artifact", str(mobilevit), "--prompt", "x"])
    assert result.exit_code != 0 and "not a Stable Diffusion pipeline" in result.output


def test_pipeline_folder_exports_with_its_own_tokenizer(sd_pipeline_folder, tmp_path):
    folder, manifest = export_artifact(
        models.load_pipeline(sd_pipeline_folder, components=["text-encoder"]),
        "executorch",
        tmp_path,
    )
    assert manifest.status == "verified"
    assert (folder / "vocab.json").read_bytes() == (
        sd_pipeline_folder / "tokenizer" / "vocab.json"
    ).read_bytes()


def test_bench_times_each_component_against_its_pytorch_module(sd_onnx):
    from edgekit.bench import TimingSettings, run_bench

    report = run_bench([sd_onnx], threads=1, timing=TimingSettings(warmup_runs=0, min_runs=2))
    names = sorted(r.name for r in report.results)
    assert names == sorted(
        [f"tiny-sd-onnx-fp32/{c}" for c in ("text-encoder", "unet", "vae-decoder")]
        + [f"pytorch-eager:tiny-sd/{c}" for c in ("text-encoder", "unet", "vae-decoder")]
    )
    for result in report.results:
        if result.format == "onnx":
            assert result.speedup_vs_pytorch > 0 and result.model_size_bytes > 0
            assert result.model_kind.startswith("sd-")


def test_generate_refuses_an_unwritable_output_before_running(sd_onnx, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = runner.invoke(
        app,
        [
            "generate",
            "--artifact",
            str(sd_onnx),
            "--prompt",
            "a cat",
            "--out",
            str(blocker / "cat.png"),
        ],
    )
    assert result.exit_code != 0 and "Cannot write to output folder" in result.output
    assert "Traceback" not in result.output
