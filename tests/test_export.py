"""Export + verification for every format, both model families, and the manifest it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekit import models
from edgekit.artifact import hash_file, read_manifest
from edgekit.cli import app
from edgekit.errors import VerificationError
from edgekit.export import export_artifact
from edgekit.exporters import get
from edgekit.models.base import seeded_inputs
from edgekit.profiles import RuntimeSettings
from edgekit.validate import TOLERANCES
from tests.conftest import host_formats

runner = CliRunner()


@pytest.mark.parametrize("format_name", host_formats())
def test_mobilevit_artifact_is_verified_and_described(mobilevit_artifacts, format_name):
    folder = mobilevit_artifacts[format_name]
    manifest = read_manifest(folder)
    assert manifest.status == "verified" and manifest.format == format_name
    assert manifest.random_weights and manifest.source.is_preset
    assert manifest.component().verification.numerics_checked
    logits = manifest.component().verification.outputs[0]
    assert logits.sqnr_db >= TOLERANCES["fp32"].min_sqnr_db and logits.top1_agreement == 1.0
    assert [s.name for s in manifest.component().inputs] == ["pixel_values"]
    assert manifest.preprocessing.channel_order == "BGR" and len(manifest.labels) == 10
    for entry in manifest.files:
        assert hash_file(folder / entry.path) == entry.sha256
        assert (folder / entry.path).stat().st_size == entry.size_bytes
    # The tools that made and checked this artifact, and no others.
    expected_tools = {
        "onnx": {"onnx", "onnxscript", "onnxruntime"},
        "executorch": {"executorch", "torchao"},
        "tflite": {"litert-torch", "ai-edge-litert", "ai-edge-quantizer"},
    }[format_name]
    common = {"edgekit", "torch", "numpy", "transformers", "diffusers"}
    assert set(manifest.tool_versions) == common | expected_tools


def test_artifact_runtime_reproduces_pytorch_independently(mobilevit_artifacts):
    """Re-run each artifact from its manifest alone, on new inputs: the same model, not a copy."""
    reference = models.load("tiny-mobilevit")
    for format_name, folder in mobilevit_artifacts.items():
        manifest = read_manifest(folder)
        runtime = get(format_name).runtime(
            folder / manifest.component().model_file,
            manifest.component().inputs,
            manifest.component().outputs,
            settings=RuntimeSettings(threads=1),
        )
        inputs = seeded_inputs(manifest.component().inputs, seed=42)
        np.testing.assert_allclose(
            runtime(inputs)["logits"], reference.run_torch(inputs)["logits"], atol=1e-5
        )


def test_executorch_reports_delegation(mobilevit_artifacts):
    details = read_manifest(mobilevit_artifacts["executorch"]).component().export.details
    assert details["backend"] == "xnnpack"
    # Every convolution (and more: activations, norms folded in, matmuls) goes to XNNPACK.
    convolutions = sum(
        isinstance(m, torch.nn.Conv2d) for m in models.load("tiny-mobilevit").module.modules()
    )
    assert details["delegated_ops"] >= convolutions
    assert details["non_delegated_ops"] == sum(details["non_delegated_by_op"].values())


def test_onnx_opset(mobilevit_artifacts):
    import onnx

    proto = onnx.load(str(mobilevit_artifacts["onnx"] / "model.onnx"))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18


def test_cli_exports_sd_unet_from_pipeline_folder(sd_pipeline_folder, tmp_path):
    result = runner.invoke(
        app,
        [
            "export",
            str(sd_pipeline_folder),
            "--component",
            "unet",
            "--target",
            "onnx",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "sd-pipeline-unet-onnx-fp32"
    manifest = read_manifest(folder)
    assert manifest.model_kind == "sd-pipeline" and manifest.source.kind == "diffusers-folder"
    assert not manifest.random_weights and manifest.status == "verified"
    unet = manifest.component("unet")
    assert [c.name for c in manifest.components] == ["unet"]
    assert unet.model_kind == "sd-unet" and unet.model_file == "unet.onnx"
    assert [s.name for s in unet.inputs] == ["sample", "timestep", "encoder_hidden_states"]
    assert (folder / "unet.onnx").is_file() and (folder / "vocab.json").is_file()
    assert manifest.pipeline.latent_height == 16 and manifest.pipeline.vae_scale_factor == 2
    assert "passed" in result.output


# The SD UNet through XNNPACK lowering; the default run exports it to ONNX, TFLite and Core ML
# (test_pipeline) and lowers MobileViT to ExecuTorch.
@pytest.mark.slow
def test_sd_unet_to_executorch(tmp_path):
    loaded = models.load("tiny-sd")
    folder, manifest = export_artifact(loaded, "executorch", tmp_path)
    assert manifest.status == "verified"
    assert manifest.component().verification.outputs[0].sqnr_db >= TOLERANCES["fp32"].min_sqnr_db
    assert manifest.component().model_file == "unet.pte" and (folder / "unet.pte").is_file()


def test_large_onnx_uses_external_data(tmp_path, monkeypatch):
    from edgekit.exporters import onnx as onnx_exporter

    # Pretend the 2 GiB protobuf limit is tiny, so the external-data path runs on a small model.
    monkeypatch.setattr(onnx_exporter, "PROTOBUF_LIMIT_BYTES", 1024)
    folder, manifest = export_artifact(models.load("tiny-mobilevit"), "onnx", tmp_path)
    assert manifest.component().export.details["external_data"] is True
    import onnx

    names = {f.path for f in manifest.files}
    assert names == {"model.onnx", "model.onnx.data"}
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) > 10  # the big weights live in the side file
    assert manifest.status == "verified"  # and onnxruntime found them there


def test_several_targets_share_one_trace_and_a_failing_one_spares_the_others(tmp_path, monkeypatch):
    """`--target onnx,executorch`: the model is traced by torch.export once for both formats
    (LoadedModel.exported_program), and ONNX failing verification (its runtime corrupted here)
    marks that artifact failed and exits non-zero, while ExecuTorch's is still written."""
    from edgekit.exporters import onnx as onnx_exporter

    original = onnx_exporter.OnnxRuntime.__call__

    def corrupted(self, inputs):
        results = original(self, inputs)
        return {k: v + np.float32(0.5) * np.abs(v).max() for k, v in results.items()}

    traced = []
    real_export = torch.export.export

    def counting_export(module, *args, **kwargs):
        traced.append(type(module).__name__)
        return real_export(module, *args, **kwargs)

    monkeypatch.setattr(onnx_exporter.OnnxRuntime, "__call__", corrupted)
    monkeypatch.setattr(torch.export, "export", counting_export)
    result = runner.invoke(
        app,
        ["export", "tiny-mobilevit", "--target", "onnx,executorch", "--out", str(tmp_path)],
    )
    assert result.exit_code == VerificationError.exit_code
    output = " ".join(result.output.split())
    assert "onnx-cpu failed: tiny-mobilevit-onnx-fp32 failed verification" in output, output
    assert "1 of 2 targets failed: onnx-cpu." in output and "Traceback" not in output
    # One trace of the model, not one per format (the ONNX exporter also traces small helper
    # modules of its own, e.g. 'SDPA', which are not the model).
    assert traced.count("MobileViTClassifier") == 1, traced
    manifest = read_manifest(tmp_path / "tiny-mobilevit-onnx-fp32")
    assert manifest.status == "failed" and manifest.component().verification.status == "failed"
    executorch = tmp_path / "tiny-mobilevit-executorch-fp32"
    listed = read_manifest(executorch)
    assert listed.status == "verified"
    # The size printed is the program an app ships; the folder's total (with the host-side
    # ETRecord, several times the program) comes second, named as such.
    program = (executorch / "model.pte").stat().st_size
    folder = sum(f.size_bytes for f in listed.files)
    assert f"({program / 2**20:.1f} MiB model, {folder / 2**20:.1f} MiB folder," in output


def test_several_targets_refuse_one_name_and_a_repeated_format(tmp_path):
    for targets, extra, message in [
        ("onnx,tflite", ["--name", "x"], "--name names one artifact folder, and --target names 2"),
        ("onnx,onnx-cpu", [], "--target names the onnx format more than once (onnx, onnx-cpu)"),
    ]:
        result = runner.invoke(
            app, ["export", "tiny-mobilevit", "-t", targets, "-o", str(tmp_path), *extra]
        )
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_reexport_replaces_artifact_atomically_and_says_so(tmp_path):
    loaded = models.load("tiny-mobilevit")
    first, _ = export_artifact(loaded, "onnx", tmp_path)
    (first / "stale.txt").write_text("left from an older export")
    result = runner.invoke(
        app, ["export", "tiny-mobilevit", "--target", "onnx", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert f"Replaced the existing artifact at {first}" in " ".join(result.output.split())
    assert not (first / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-mobilevit-onnx-fp32"]
    assert json.loads((first / "manifest.json").read_text())["status"] == "verified"
