"""Quantization plans: typed, hand-editable JSON checked against the model; named plans derived
from the model's structure; exports take a plan and refuse what no target realizes yet."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgekit import models
from edgekit.artifact import read_manifest
from edgekit.cli import app
from edgekit.errors import ExportError
from edgekit.quant.plan import (
    LayerPrecision,
    QuantPlan,
    QuantPlanError,
    load_plan,
    named_plan,
    quantizable_layers,
    resolve,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def mobilevit():
    return models.load("tiny-mobilevit")


def test_paths_are_the_users_own_without_edgekits_wrapper(mobilevit):
    layers = quantizable_layers(mobilevit.module)
    assert "mobilevit.conv_stem.convolution" in layers and "classifier" in layers
    assert not any(path.startswith("model.") for path in layers)
    assert len([p for p in layers if "convolution" in p]) == 35  # every Conv2d of tiny-mobilevit


def test_longest_matching_override_wins():
    plan = QuantPlan(
        default=LayerPrecision.INT8,
        overrides={"a.b": LayerPrecision.FP32, "a.b.c": LayerPrecision.INT8_WEIGHT},
    )
    assert plan.precision_of("a.b.c.d") == LayerPrecision.INT8_WEIGHT
    assert plan.precision_of("a.b.x") == LayerPrecision.FP32
    assert plan.precision_of("a.bc") == LayerPrecision.INT8  # a prefix of a name is no match
    assert plan.uniform_precision is None
    assert QuantPlan(default=LayerPrecision.FP16).uniform_precision == LayerPrecision.FP16


def test_mixed_keeps_attention_and_norms_float_and_quantizes_the_rest(mobilevit):
    plan = named_plan("mixed", mobilevit.module)
    layers = resolve(plan, mobilevit.module)
    attention = {p: v for p, v in layers.items() if ".attention." in p}
    assert attention and set(attention.values()) == {LayerPrecision.FP32}
    convolutions = {p: v for p, v in layers.items() if p.endswith(".convolution")}
    assert set(convolutions.values()) == {LayerPrecision.INT8}
    assert any(key.endswith("layernorm") for key in plan.overrides)


def test_plan_file_round_trips_and_unknown_module_is_named(tmp_path, mobilevit):
    plan = named_plan("mixed", mobilevit.module)
    path = tmp_path / "plan.json"
    path.write_text(plan.model_dump_json(indent=2))
    assert load_plan(str(path), mobilevit.module) == plan

    data = json.loads(path.read_text())
    data["overrides"]["mobilevit.encoder.layer.9"] = "fp32"
    path.write_text(json.dumps(data))
    with pytest.raises(QuantPlanError, match="'mobilevit.encoder.layer.9' names no module") as e:
        load_plan(str(path), mobilevit.module)
    assert "did you mean mobilevit.encoder.layer" in str(e.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "is not valid JSON"),
        ('{"default": "int7"}', "Bad key 'default'"),
        ('{"default": "fp32", "overides": {}}', "Bad key 'overides'"),
    ],
)
def test_malformed_plan_files_get_one_line(tmp_path, text, expected):
    path = tmp_path / "plan.json"
    path.write_text(text)
    result = runner.invoke(
        app,
        [
            "export",
            "tiny-mobilevit",
            "--target",
            "onnx",
            "--quant",
            str(path),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == QuantPlanError.exit_code, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_float_plan_exports_and_is_recorded(tmp_path):
    result = runner.invoke(
        app,
        ["export", "tiny-mobilevit", "--target", "onnx", "--quant", "fp32", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "tiny-mobilevit-onnx-fp32")
    assert manifest.quant_plan == QuantPlan(name="fp32", default=LayerPrecision.FP32)
    assert manifest.precision == "fp32" and manifest.status == "verified"


@pytest.mark.parametrize(
    ("target", "quant", "name"),
    [
        ("onnx", "fp16", "ONNX"),
        # 4-bit weights: TFLite and Core ML (iOS18) only; the others refuse them up front.
        ("onnx", "int4-weight", "ONNX"),
        ("executorch", "int4-weight", "ExecuTorch"),
    ],
)
def test_a_precision_the_format_cannot_express_is_refused_naming_the_layer(
    tmp_path, target, quant, name
):
    result = runner.invoke(
        app,
        ["export", "tiny-mobilevit", "--target", target, "--quant", quant, "--out", str(tmp_path)],
    )
    assert result.exit_code == ExportError.exit_code, result.output
    assert (
        f"{name} cannot realize {quant} for layer 'mobilevit.conv_stem.convolution' "
        "(and 89 more layers); it supports fp32, int8, int8-dynamic per layer." in result.output
    )
    assert list(tmp_path.iterdir()) == []


def test_int4_weight_is_a_uniform_named_plan(mobilevit):
    plan = load_plan("int4-weight", mobilevit.module)
    assert plan == QuantPlan(name="int4-weight", default=LayerPrecision.INT4_WEIGHT)
    assert set(resolve(plan, mobilevit.module).values()) == {LayerPrecision.INT4_WEIGHT}


def test_quant_and_precision_together_are_refused(tmp_path):
    result = runner.invoke(
        app,
        [
            "export",
            "tiny-mobilevit",
            "--target",
            "coreml",
            "--quant",
            "fp16",
            "--precision",
            "fp16",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and "--quant and --precision" in result.output


def test_a_plan_file_is_used_as_written_even_when_named_like_a_named_plan(tmp_path):
    """A file's `name` is a label: a plan called "int8" that keeps everything fp32 is not
    replaced by the named int8 plan."""
    plan_path = tmp_path / "plan.json"
    plan_path.write_text('{"schema_version": "1.0", "name": "int8", "default": "fp32"}')
    result = runner.invoke(
        app,
        [
            "export",
            "tiny-mobilevit",
            "--target",
            "onnx",
            "--quant",
            str(plan_path),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = read_manifest(next((tmp_path / "out").iterdir()))
    # As written, schema 1.0 included: older plans read unchanged.
    written = QuantPlan(schema_version="1.0", name="int8", default=LayerPrecision.FP32)
    assert manifest.quant_plan == written
    assert manifest.component().quant.counts == {"fp32": 90}


def test_calibration_data_an_export_cannot_use_is_reported(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    result = runner.invoke(
        app,
        [
            "export",
            "tiny-mobilevit",
            "--target",
            "onnx",
            "--quant",
            "int8-dynamic",
            "--calib",
            str(photos),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "warning: --calib is not used" in result.output
    assert read_manifest(next((tmp_path / "out").iterdir())).component().calibration is None
