"""`edgekit verify --localize`: layer-by-layer comparison with PyTorch names the module where an
artifact's error starts. The broken artifacts here are the exported tiny MobileViT with one
convolution's weights changed inside the file, as a converter bug would: localize must name that
module and not one before it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.emulate.localize import (
    JUMP_FLOOR_DB,
    LOCALIZE_FILE,
    LayerComparison,
    first_jump,
    localize,
    mark_mismatches,
    trusted,
)

BROKEN_MODULE = "model.mobilevit.encoder.layer.2.conv_kxk"
runner = CliRunner()


def _copy(artifact: Path, tmp_path: Path) -> Path:
    copy = tmp_path / artifact.name
    shutil.copytree(artifact, copy)
    (copy / LOCALIZE_FILE).unlink(missing_ok=True)
    return copy


def _break_onnx_conv(folder: Path, module: str) -> None:
    """Scale the weights of the Conv node exported for `module`'s convolution by 1.5."""
    import onnx
    from onnx import numpy_helper

    path = folder / "model.onnx"
    model = onnx.load(str(path))
    node = next(
        n for n in model.graph.node if n.op_type == "Conv" and any(
            p.key == "edgekit.module" and p.value == f"{module}.convolution"
            for p in n.metadata_props)
    )  # fmt: skip
    weight = next(i for i in model.graph.initializer if i.name == node.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(model, str(path))


def _break_tflite_conv(folder: Path, module_segment: str) -> None:
    """Scale the filter of the first CONV_2D whose output tensor lies in `module_segment`'s scope
    (litert-torch names tensors by module stack) by 1.5."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    path = folder / "model.tflite"
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    subgraph = model.subgraphs[0]
    conv_codes = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D}
    for op in subgraph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) not in conv_codes:
            continue
        if module_segment in subgraph.tensors[op.outputs[0]].name.decode():
            buffer = model.buffers[subgraph.tensors[op.inputs[1]].buffer]
            weights = np.frombuffer(bytes(bytearray(buffer.data)), dtype=np.float32) * 1.5
            buffer.data = np.frombuffer(weights.astype(np.float32).tobytes(), dtype=np.uint8)
            break
    else:
        raise AssertionError(f"no convolution in {module_segment}")
    path.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_faithful_fp32_artifact_has_no_jump(fmt, mobilevit_artifacts, tmp_path):
    artifact = _copy(mobilevit_artifacts[fmt], tmp_path)
    [result] = localize(artifact)
    layers = trusted(result.layers)
    assert result.first_jump is None
    # Most modules are tied to a tensor, and every trusted one agrees like fp32 does.
    assert len(result.layers) >= result.modules_total // 2
    assert min(layer.sqnr_db for layer in layers) > JUMP_FLOOR_DB
    assert result.probe_sqnr_db > JUMP_FLOOR_DB
    assert (artifact / LOCALIZE_FILE).is_file()


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_a_corrupted_convolution_is_named(fmt, mobilevit_artifacts, tmp_path):
    artifact = _copy(mobilevit_artifacts[fmt], tmp_path)
    if fmt == "onnx":
        _break_onnx_conv(artifact, BROKEN_MODULE)
    else:
        _break_tflite_conv(artifact, "MobileViTLayer_2/MobileViTConvLayer_conv_kxk")
    [result] = localize(artifact)
    assert result.first_jump is not None, [(x.module, x.sqnr_db) for x in result.layers]
    assert result.first_jump.module.startswith(BROKEN_MODULE)
    # Every trusted layer before it is still fp32-exact: the error starts there.
    layers = trusted(result.layers)
    before = layers[: layers.index(result.first_jump)]
    assert before and min(layer.sqnr_db for layer in before) > JUMP_FLOOR_DB


def test_cli_names_the_module_and_real_photos_feed_it(mobilevit_artifacts, tmp_path):
    import skimage

    artifact = _copy(mobilevit_artifacts["onnx"], tmp_path)
    _break_onnx_conv(artifact, BROKEN_MODULE)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coffee.png", "chelsea.png"):
        shutil.copy(Path(skimage.__file__).parent / "data" / name, photos / name)
    result = runner.invoke(
        app, ["verify", str(artifact), "--localize", "--images", str(photos)], terminal_width=250
    )
    assert result.exit_code == 0, result.output
    assert "2 photo(s)" in result.output
    assert f"error jumps at {BROKEN_MODULE}" in result.output


def test_localize_errors_are_one_line(mobilevit_artifacts, tmp_path):
    result = runner.invoke(app, ["verify", str(mobilevit_artifacts["executorch"]), "--localize"])
    assert result.exit_code == 2
    assert "ETDump records no intermediate outputs inside a delegate" in result.output
    onnx_artifact = str(mobilevit_artifacts["onnx"])
    result = runner.invoke(app, ["verify", onnx_artifact, "--images", str(tmp_path)])
    assert result.exit_code != 0 and "--images is used by --localize only" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["verify", onnx_artifact, "--localize", "--images", str(empty)])
    assert result.exit_code == 2 and f"No photos in '{empty}'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_a_truncated_model_file_is_one_line_and_writes_nothing(fmt, mobilevit_artifacts, tmp_path):
    artifact = _copy(mobilevit_artifacts[fmt], tmp_path)
    model = next(artifact.glob(f"model.{fmt}"))
    model.write_bytes(model.read_bytes()[:1000])
    result = runner.invoke(app, ["verify", str(artifact), "--localize"])
    assert result.exit_code == 2, result.output
    assert f"model.{fmt} cannot be read or run for localizing" in result.output
    assert "Traceback" not in result.output and not (artifact / LOCALIZE_FILE).exists()


def _layers(values: list[float]) -> list[LayerComparison]:
    return [LayerComparison(f"m{i}", "Conv2d", str(i), [1], v, 0.0) for i, v in enumerate(values)]


def test_jump_rules():
    # fp32 rounding noise never counts, however it wanders above the floor
    assert first_jump([130, 118, 125, 104, 110], 10) is None
    # a drop that stays down is named at its first layer
    assert first_jump([120, 118, 40, 35, 30, 28], 10) == (2, 78)
    # a lone dip is a mis-tied tensor: marked and skipped, the real jump after it is still found
    layers = _layers([120, 118, 5, 117, 116, 30, 29, 28])
    mark_mismatches(layers, 10)
    assert [layer.mismatched for layer in layers] == [False, False, True] + [False] * 5
    kept = trusted(layers)
    index, _ = first_jump([layer.sqnr_db for layer in kept], 10)
    assert kept[index].module == "m5"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_every_stable_diffusion_component_is_localized(fmt, tmp_path):
    """Text encoder, UNet and VAE decoder: most modules tied to a tensor (the VAE decoder runs
    through `vae.decode`, never `vae.forward`, which litert-torch's names reflect), no jump in
    fp32."""
    from edgekit import models
    from edgekit.export import export_artifact

    folder, _ = export_artifact(models.load_pipeline("tiny-sd"), fmt, tmp_path)
    results = localize(folder)
    assert [r.component for r in results] == ["text-encoder", "unet", "vae-decoder"]
    for result in results:
        assert result.first_jump is None, (result.component, result.first_jump)
        assert len(result.layers) >= result.modules_total // 2, result.component
