"""TFLite (LiteRT) target: export through litert-torch, verify on ai-edge-litert, refuse > 2 GB."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from edgekit import models
from edgekit.artifact import read_manifest
from edgekit.cli import app
from edgekit.errors import ArtifactError, ExportError
from edgekit.export import export_artifact
from edgekit.exporters import get
from edgekit.models.base import seeded_inputs
from edgekit.profiles import RuntimeSettings
from edgekit.validate import TOLERANCES, compare_outputs

runner = CliRunner()
# Not the seed export verification uses: a fresh input proves the artifact is the model.
SECOND_SEED = 42


@pytest.fixture(scope="module")
def mobilevit_tflite(tmp_path_factory) -> tuple[Path, Result]:
    """tiny-mobilevit exported once through the CLI; later tests read the artifact it wrote."""
    out = tmp_path_factory.mktemp("tflite-cli")
    result = runner.invoke(
        app, ["export", "tiny-mobilevit", "--target", "tflite", "--out", str(out)]
    )
    return out / "tiny-mobilevit-tflite-fp32", result


@pytest.fixture(scope="module")
def sd_unet_tflite(tmp_path_factory) -> Path:
    folder, _ = export_artifact(
        models.load("tiny-sd"), "tflite", tmp_path_factory.mktemp("tflite-sd")
    )
    return folder


def _reproduces_pytorch(folder: Path, model_name: str):
    """Run the artifact from its manifest alone on SECOND_SEED inputs, compare with PyTorch."""
    manifest = read_manifest(folder)
    runtime = get("tflite").runtime(
        folder / manifest.component().model_file,
        manifest.component().inputs,
        manifest.component().outputs,
        settings=RuntimeSettings(threads=1),
    )
    inputs = seeded_inputs(manifest.component().inputs, seed=SECOND_SEED)
    return compare_outputs(
        [models.load(model_name).run_torch(inputs)],
        [runtime(inputs)],
        precision="fp32",
        runtime=runtime.name,
        input_seeds=[SECOND_SEED],
    )


def test_cli_exports_mobilevit_to_tflite(mobilevit_tflite):
    folder, result = mobilevit_tflite
    assert result.exit_code == 0, result.output
    assert "passed" in result.output and "tflite artifact" in result.output
    assert (folder / "model.tflite").is_file()


def test_mobilevit_tflite_is_verified(mobilevit_tflite):
    folder, _ = mobilevit_tflite
    manifest = read_manifest(folder)
    assert manifest.status == "verified" and manifest.format == "tflite"
    assert (
        manifest.component().model_file == "model.tflite"
        and manifest.component().verification.numerics_checked
    )
    assert manifest.component().verification.runtime.startswith("ai-edge-litert ")
    logits = manifest.component().verification.outputs[0]
    assert logits.sqnr_db >= TOLERANCES["fp32"].min_sqnr_db and logits.top1_agreement == 1.0


def test_tflite_details_describe_the_flatbuffer(mobilevit_tflite):
    folder, _ = mobilevit_tflite
    details = read_manifest(folder).component().export.details
    assert details["converter"] == "litert_torch.convert"
    assert details["flatbuffer_size_bytes"] == (folder / "model.tflite").stat().st_size
    assert details["op_count"] == sum(details["op_histogram"].values())
    # Every Conv2d of MobileViT (stem, MobileNet blocks) is one CONV_2D or DEPTHWISE_CONV_2D.
    module = models.load("tiny-mobilevit").module
    convolutions = sum(isinstance(m, torch.nn.Conv2d) for m in module.modules())
    histogram = details["op_histogram"]
    assert histogram.get("CONV_2D", 0) + histogram.get("DEPTHWISE_CONV_2D", 0) == convolutions


def test_mobilevit_tflite_reproduces_pytorch_on_new_inputs(mobilevit_tflite):
    folder, _ = mobilevit_tflite
    verification = _reproduces_pytorch(folder, "tiny-mobilevit")
    assert verification.status == "passed", verification.message


def test_sd_unet_tflite_is_verified(sd_unet_tflite):
    manifest = read_manifest(sd_unet_tflite)
    assert manifest.status == "verified" and manifest.model_kind == "sd-unet"
    assert [s.name for s in manifest.component().inputs] == [
        "sample",
        "timestep",
        "encoder_hidden_states",
    ]
    assert manifest.component().verification.outputs[0].sqnr_db >= TOLERANCES["fp32"].min_sqnr_db


def test_sd_unet_tflite_reproduces_pytorch_on_new_inputs(sd_unet_tflite):
    verification = _reproduces_pytorch(sd_unet_tflite, "tiny-sd")
    assert verification.status == "passed", verification.message


def test_runtime_refuses_inputs_in_another_order(sd_unet_tflite):
    """Inputs map to args_0..args_N by position; a manifest in another order must not run."""
    manifest = read_manifest(sd_unet_tflite)
    swapped = list(reversed(manifest.component().inputs))
    with pytest.raises(ArtifactError, match="signature order"):
        get("tflite").runtime(
            sd_unet_tflite / manifest.component().model_file, swapped, manifest.component().outputs
        )


def test_model_over_flatbuffer_limit_is_refused_before_converting(tmp_path, monkeypatch):
    from edgekit.exporters import tflite

    # Pretend the 2 GB flatbuffer limit is tiny, so a tiny model trips it.
    monkeypatch.setattr(tflite, "FLATBUFFER_LIMIT_BYTES", 1024)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the converter ran on a model over the limit")

    monkeypatch.setattr("litert_torch.convert", must_not_run)
    loaded = models.load("tiny-mobilevit")
    with pytest.raises(ExportError) as caught:
        export_artifact(loaded, "tflite", tmp_path)
    message = str(caught.value)
    assert "2 GB" in message and "flatbuffer" in message
    assert f"({tflite.fp32_weight_bytes(loaded.module)} bytes)" in message
    assert "int8" in message and "--target onnx" in message and "--target executorch" in message
    assert not (tmp_path / "tiny-mobilevit-tflite-fp32").exists()
