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

P = LayerPrecision
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


def test_mixed_quantizes_attention_projections_per_run_and_keeps_norms_float(mobilevit):
    """`mixed`: convolutions and feed-forward layers static int8; the attention projections
    int8-dynamic where the target has it, int8-weight where it has only that (Core ML), fp32
    where it has neither; norms named fp32."""
    from edgekit import exporters

    def attention_and_rest(target_precisions):
        plan = named_plan("mixed", mobilevit.module, target_precisions)
        layers = resolve(plan, mobilevit.module)
        attention = {v for p, v in layers.items() if ".attention." in p}
        rest = {v for p, v in layers.items() if ".attention." not in p}
        assert sum(".attention." in p for p in layers) == 36
        assert any(key.endswith("layernorm") for key in plan.overrides)
        return attention, rest

    for target in ("onnx", "executorch", "tflite"):
        precisions = exporters.get(target).layer_precisions
        assert attention_and_rest(precisions) == ({P.INT8_DYNAMIC}, {P.INT8}), target
    coreml = exporters.get("coreml").layer_precisions
    assert attention_and_rest(coreml) == ({P.INT8_WEIGHT}, {P.INT8})
    assert attention_and_rest((P.FP32, P.INT8)) == ({P.FP32}, {P.INT8})
    assert attention_and_rest(None) == ({P.INT8_DYNAMIC}, {P.INT8})


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
