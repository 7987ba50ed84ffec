"""Core ML export: structure-only verification off macOS, numeric verification on macOS.

Core ML prediction exists only on macOS, so on Linux these tests check what an artifact holds
(IO, deployment target, op histogram, weight dtypes) and that every report says plainly that
numerics were not checked. The `macos` test compares numerics where Core ML can run.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit import models
from edgekit.artifact import hash_file, read_manifest
from edgekit.cli import app
from edgekit.errors import UnknownChoiceError
from edgekit.export import export_artifact
from edgekit.exporters import get, unsupported_reason
from edgekit.exporters.coreml import (
    LARGE_WEIGHT_MIN_ELEMENTS,
    CoreMLExporter,
    NoHostRuntimeError,
)
from edgekit.models.base import seeded_inputs
from edgekit.quant.plan import LayerPrecision, QuantPlan
from edgekit.quant.spec import float_spec, quant_spec
from edgekit.validate import TOLERANCES, compare_outputs

runner = CliRunner()
ON_MACOS = sys.platform == "darwin"
off_macos_only = pytest.mark.skipif(ON_MACOS, reason="checks the Linux/Windows behaviour")
# Spelled out here, not imported, so a reworded message fails the test.
NOT_CHECKED = f"Core ML models can only run on macOS/iOS; this host is {platform.system()}."
PACKAGE_FILES = {
    "model.mlpackage/Manifest.json",
    "model.mlpackage/Data/com.apple.CoreML/model.mlmodel",
    "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin",
}


@pytest.fixture(scope="module")
def mobilevit() -> models.LoadedModel:
    return models.load("tiny-mobilevit")


@pytest.fixture(scope="module")
def coreml_artifacts(mobilevit, tmp_path_factory) -> dict[str, Path]:
    """tiny-mobilevit exported once per precision, shared by this module's tests."""
    out = tmp_path_factory.mktemp("coreml")
    return {p: export_artifact(mobilevit, "coreml", out, precision=p)[0] for p in ["fp16", "fp32"]}


@off_macos_only
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_mobilevit_is_structure_only_and_says_so(coreml_artifacts, precision):
    folder = coreml_artifacts[precision]
    manifest = read_manifest(folder)
    assert manifest.status == "structure-only" and manifest.format == "coreml"
    verification = manifest.component().verification
    assert verification.numerics_checked is False and verification.status == "not-checked"
    assert verification.outputs == []
    assert NOT_CHECKED in verification.message
    assert "The outputs were not compared with PyTorch" in verification.message
    assert verification.structure.passed and verification.structure.failures == []
    assert (
        manifest.component().model_file == "model.mlpackage"
        and (folder / "model.mlpackage").is_dir()
    )

    details = manifest.component().export.details
    assert details["minimum_deployment_target"] == "iOS17" and details["compute_units"] == "ALL"
    assert details["compute_precision"] == {"fp16": "FLOAT16", "fp32": "FLOAT32"}[precision]
    assert details["model_type"] == "mlProgram"


def test_package_files_are_listed_hashed_and_readable(coreml_artifacts):
    folder = coreml_artifacts["fp16"]
    manifest = read_manifest(folder)
    # coremltools' ExecuTorch debug map is all "null" for a torch.export program: dropped.
    assert {entry.path for entry in manifest.files} == PACKAGE_FILES
    for entry in manifest.files:
        path = folder / entry.path
        assert hash_file(path) == entry.sha256 and path.stat().st_size == entry.size_bytes
        # coremltools writes model.mlmodel as 0600; shared artifacts must be world-readable.
        assert path.stat().st_mode & 0o044 == 0o044, entry.path


def FP16(model):  # noqa: N802 - reads like the constant it stands for
    return float_spec("fp16", model.module)


@pytest.mark.parametrize(("precision", "weight_dtype"), [("fp16", "float16"), ("fp32", "float32")])
def test_structure_facts_hold_io_ops_and_weight_precision(
    coreml_artifacts, mobilevit, precision, weight_dtype
):
    check = CoreMLExporter().check_structure(
        coreml_artifacts[precision] / "model.mlpackage",
        mobilevit,
        quant=float_spec(precision, mobilevit.module),
    )
    facts = check.facts
    assert check.passed, check.failures
    assert facts["model_type"] == "mlProgram" and facts["specification_version"] == 8
    assert facts["inputs"] == [
        {"name": "pixel_values", "shape": [1, 3, 64, 64], "dtype": "float32"}
    ]
    # Outputs stay float32 even in fp16: the manifest promises float32 to the apps.
    assert facts["outputs"] == [{"name": "logits", "shape": [1, 10], "dtype": "float32"}]
    histogram = facts["op_histogram"]
    assert {"conv", "linear", "softmax", "layer_norm"} <= set(histogram)
    assert "const" not in histogram and all(count > 0 for count in histogram.values())
    # Every float weight has the asked precision; the large ones are the real layers.
    assert set(facts["weight_precision"]) == {weight_dtype}
    assert facts["weight_precision"][weight_dtype]["large_tensors"] > 10
    assert (
        facts["const_dtype_histogram"][weight_dtype]
        == (facts["weight_precision"][weight_dtype]["tensors"])
    )


def test_wrong_shape_fails_the_structure_check(coreml_artifacts, mobilevit):
    altered = mobilevit.outputs[0].model_copy(update={"shape": [1, 11]})
    wrong = models.LoadedModel(
        module=mobilevit.module,
        model_kind=mobilevit.model_kind,
        inputs=mobilevit.inputs,
        outputs=[altered],
        source=mobilevit.source,
    )
    check = CoreMLExporter().check_structure(
        coreml_artifacts["fp32"] / "model.mlpackage", wrong, quant=float_spec("fp32", wrong.module)
    )
    assert not check.passed
    assert check.failures == ["output 'logits' shape [1, 10] != model [1, 11]"]


def test_fp32_weights_fail_an_fp16_check(coreml_artifacts, mobilevit):
    check = CoreMLExporter().check_structure(
        coreml_artifacts["fp32"] / "model.mlpackage",
        mobilevit,
        quant=float_spec("fp16", mobilevit.module),
    )
    assert not check.passed and len(check.failures) == 1
    large = check.facts["weight_precision"]["float32"]["large_tensors"]
    assert check.failures[0].startswith(
        f"fp16 was asked but {large} large weights (>= {LARGE_WEIGHT_MIN_ELEMENTS} elements) "
        "are float32: "
    )


def test_deployment_target_is_checked(coreml_artifacts, mobilevit):
    exporter = CoreMLExporter(minimum_deployment_target="iOS18")
    check = exporter.check_structure(
        coreml_artifacts["fp16"] / "model.mlpackage",
        mobilevit,
        quant=float_spec("fp16", mobilevit.module),
    )
    assert check.failures == ["specification version 8 != 9 (iOS18 was asked)"]


def test_missing_package_is_a_failed_check_not_a_crash(tmp_path, mobilevit):
    check = CoreMLExporter().check_structure(
        tmp_path / "model.mlpackage", mobilevit, quant=FP16(mobilevit)
    )
    assert not check.passed and check.failures[0].startswith("cannot read model.mlpackage")


def test_unsupported_requests_are_refused_clearly(mobilevit):
    exporter = get("coreml")
    assert unsupported_reason(exporter, mobilevit, quant=FP16(mobilevit)) is None
    int8 = quant_spec(QuantPlan(default=LayerPrecision.INT8), mobilevit.module)
    assert unsupported_reason(exporter, mobilevit, quant=int8).startswith(
        "Core ML cannot realize int8 for layer 'mobilevit.conv_stem.convolution'"
    )
    old = CoreMLExporter(minimum_deployment_target="iOS14")
    assert "need iOS15 (macOS12) or newer, not iOS14" in unsupported_reason(
        old, mobilevit, quant=FP16(mobilevit)
    )
    with pytest.raises(UnknownChoiceError, match="Unknown Core ML deployment target 'iOS99'"):
        unsupported_reason(
            CoreMLExporter(minimum_deployment_target="iOS99"), mobilevit, quant=FP16(mobilevit)
        )
    with pytest.raises(UnknownChoiceError, match="Known: ALL, CPU_AND_GPU, CPU_AND_NE, CPU_ONLY"):
        CoreMLExporter(compute_units="NPU")


@off_macos_only
def test_no_host_runtime_off_macos(coreml_artifacts, mobilevit):
    exporter = CoreMLExporter()
    assert exporter.host_runtime_unavailable_reason() == NOT_CHECKED
    with pytest.raises(NoHostRuntimeError, match="can only run on macOS/iOS; this host is"):
        exporter.runtime(coreml_artifacts["fp16"], mobilevit.inputs, mobilevit.outputs)


@off_macos_only
def test_sd_unet_exports(tmp_path):
    unet = models.load("tiny-sd")
    folder, manifest = export_artifact(unet, "coreml", tmp_path, precision="fp16")
    assert manifest.status == "structure-only" and manifest.model_kind == "sd-unet"
    facts = manifest.component().verification.structure.facts
    assert [i["name"] for i in facts["inputs"]] == ["sample", "timestep", "encoder_hidden_states"]
    assert facts["outputs"] == [{"name": "noise_pred", "shape": [1, 4, 16, 16], "dtype": "float32"}]
    assert facts["weight_precision"]["float16"]["large_tensors"] > 10
    # The timestep embedding keeps a couple of fp32 scalars; none of them is a real weight.
    assert facts["weight_precision"].get("float32", {}).get("large_tensors", 0) == 0
    assert {"conv", "linear", "softmax", "upsample_nearest_neighbor"} <= set(facts["op_histogram"])
    # The name apple's ml-stable-diffusion Swift package loads for the UNet.
    assert manifest.component().model_file == "Unet.mlpackage"
    assert (folder / "Unet.mlpackage" / "Manifest.json").is_file()


@off_macos_only
def test_cli_export_says_numerics_were_not_checked(tmp_path):
    result = runner.invoke(
        app,
        [
            "export",
            "tiny-mobilevit",
            "--target",
            "coreml",
            "--precision",
            "fp16",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    # rich wraps the line to the table's width; compare with whitespace collapsed.
    assert f"Numerics NOT checked: {NOT_CHECKED}" in " ".join(result.output.split())
    manifest = read_manifest(tmp_path / "tiny-mobilevit-coreml-fp16")
    assert (
        manifest.status == "structure-only"
        and not manifest.component().verification.numerics_checked
    )


@pytest.mark.macos
@pytest.mark.skipif(not ON_MACOS, reason="Core ML prediction exists only on macOS")
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_numerics_match_pytorch_on_macos(coreml_artifacts, mobilevit, precision):
    folder = coreml_artifacts[precision]
    manifest = read_manifest(folder)
    assert manifest.status == "verified" and manifest.component().verification.numerics_checked
    logits = manifest.component().verification.outputs[0]
    assert logits.sqnr_db >= TOLERANCES[precision].min_sqnr_db
    # And again from the manifest alone, on inputs export never saw.
    runtime = get("coreml").runtime(
        folder / manifest.component().model_file,
        manifest.component().inputs,
        manifest.component().outputs,
    )
    inputs = seeded_inputs(manifest.component().inputs, seed=42)
    again = compare_outputs(
        [mobilevit.run_torch(inputs)],
        [runtime(inputs)],
        precision=precision,
        runtime="coreml",
        input_seeds=[42],
        classifier_output="logits",
    )
    assert again.status == "passed", again.failures
