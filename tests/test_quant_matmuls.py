"""Attention products (Q K^T, softmax V) in plans: named by attention block, chosen by the
planner from their measured sensitivity, realized by onnxruntime and ai-edge-quantizer, read
back from the file (a product at another precision fails the export), refused in one line by
the targets whose quantizers cannot quantize them."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from edgekit import exporters, models
from edgekit.artifact import read_manifest
from edgekit.cli import app
from edgekit.errors import VerificationError
from edgekit.export import export_artifact
from edgekit.exporters import onnx as onnx_exporter
from edgekit.models.base import SourceInfo
from edgekit.quant.analyze import LayerSensitivity, MatmulSensitivity, SensitivityReport
from edgekit.quant.calibration import synthetic_calibration
from edgekit.quant.plan import (
    LayerPrecision,
    MatmulPrecision,
    QuantPlan,
    QuantPlanError,
    load_plan,
    named_plan,
    product_blocks,
)
from edgekit.quant.planner import PlanBudgetError, candidates, choose, plan_for, with_matmuls
from edgekit.quant.spec import CalibrationRecord, check_realized, quant_spec

P = LayerPrecision
LAYER = "mobilevit.encoder.layer.2.transformer.layer.0"
# The self-attention block that runs the products, and the attention block around it.
BLOCK = f"{LAYER}.attention.attention"
OUTER = f"{LAYER}.attention"
OTHER = "mobilevit.encoder.layer.3.transformer.layer.0.attention.attention"


@pytest.fixture(scope="module")
def mobilevit():
    return models.load("tiny-mobilevit")


# --- plans ------------------------------------------------------------------------------------


def test_products_are_planned_per_block_and_outer_keys_reach_inner_blocks(mobilevit):
    blocks = product_blocks(mobilevit.module)
    assert BLOCK in blocks and OUTER not in blocks and len(blocks) == 9
    plan = QuantPlan(default=P.INT8, attention_matmuls={OUTER: MatmulPrecision.INT8})
    spec = quant_spec(plan, mobilevit.module)
    assert spec.matmuls[BLOCK] == MatmulPrecision.INT8
    assert {spec.matmuls[b] for b in blocks if b != BLOCK} == {MatmulPrecision.FP32}
    assert spec.int8_matmuls == [BLOCK] and spec.label == "mixed"
    assert plan.quantizes_activations and plan.uniform_precision is None


@pytest.mark.parametrize("name", ["fp32", "int8", "mixed", "int8-dynamic", "int8-weight"])
def test_named_plans_keep_every_product_float(mobilevit, name):
    spec = quant_spec(named_plan(name, mobilevit.module), mobilevit.module)
    assert len(spec.matmuls) == 9 and not spec.int8_matmuls


def test_schema_1_0_plans_still_read(tmp_path, mobilevit):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema_version": "1.0", "default": "int8"}))
    plan = load_plan(str(path), mobilevit.module)
    assert plan.attention_matmuls == {} and plan.matmul_precision_of(BLOCK) == "fp32"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (BLOCK[:-2], f"names no attention block of this model. Hint: did you mean {BLOCK}"),
        (f"{BLOCK}.query", "names a module, but no attention block"),
    ],
)
def test_a_key_naming_no_attention_block_is_refused_with_the_closest(tmp_path, key, expected):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"default": "int8", "attention_matmuls": {key: "int8"}}))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["export", "tiny-mobilevit", "--target", "onnx", "--quant", str(plan), "--out", out]
    )
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not out.exists()  # nothing half-written


def test_a_precision_products_cannot_take_is_one_line(tmp_path, mobilevit):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"default": "int8", "attention_matmuls": {BLOCK: "int8-weight"}}))
    with pytest.raises(QuantPlanError, match=r"attention_matmuls.*precisions are fp32, int8;"):
        load_plan(str(path), mobilevit.module)


# --- planner ----------------------------------------------------------------------------------


def report_with_products() -> SensitivityReport:
    """Two layers and three attention blocks of known sensitivity (dB)."""
    int8 = {P.INT8: 40.0}
    return SensitivityReport(
        source=SourceInfo(
            kind="preset", path="tiny", sha256="0" * 64, is_preset=True, random_weights=True
        ),
        component=None,
        model_kind="test",
        calibration=CalibrationRecord(kind="synthetic", description="x", count=1, sha256="0"),
        schemes=[P.INT8, P.INT8_DYNAMIC],
        total_parameter_count=2000,
        layers=[
            LayerSensitivity(
                path=f"l{i}",
                layer_type="Linear",
                weight_count=1000,
                in_attention=False,
                sqnr_db=int8,
            )
            for i in range(2)
        ],
        attention_matmuls=[
            MatmulSensitivity(path=path, product_count=2, sqnr_db={P.INT8: db})
            for path, db in (("tolerant", 45.0), ("sensitive", 20.0), ("middle", 38.0))
        ],
        complete=True,
    )


def test_planner_adds_the_least_sensitive_products_within_the_budget():
    report = report_with_products()
    # Both layers: noise 2 x 1e-4 = 36.99 dB. +45 dB: 36.36 dB; +38 dB then: 34.6 dB.
    chosen = choose(candidates(report, P.INT8), min_sqnr_db=35)
    assert chosen.layer_count == 2
    with_products, verdicts = with_matmuls(report, chosen, min_sqnr_db=35)
    assert with_products.matmuls == ("tolerant",)
    assert [(v.path, v.chosen) for v in verdicts] == [
        ("tolerant", True),
        ("middle", False),
        ("sensitive", False),
    ]
    assert with_products.size_bytes == chosen.size_bytes  # no weights: the size is unchanged
    plan = plan_for(report, with_products, name="p")
    assert plan.attention_matmuls == {"tolerant": MatmulPrecision.INT8}


def test_products_need_a_fidelity_budget():
    report = report_with_products()
    chosen = choose(candidates(report, P.INT8), max_size_mb=1)
    with pytest.raises(PlanBudgetError, match="needs a fidelity budget"):
        with_matmuls(report, chosen)


def test_quantize_plan_prints_which_products_it_quantized(tmp_path):
    sensitivity = tmp_path / "sens.json"
    sensitivity.write_text(report_with_products().model_dump_json())
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(
        app,
        ["quantize", "plan", str(sensitivity), "--min-sqnr", "35", "--quantize-matmuls"]
        + ["--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "int8" in rows["tolerant"] and "over budget" in rows["sensitive"]
    assert json.loads(out.read_text())["attention_matmuls"] == {"tolerant": "int8"}
    assert "1 attention blocks' products int8" in result.output


# --- realization and read-back -----------------------------------------------------------------


def export(model, fmt: str, plan: QuantPlan, out: Path, name: str):
    with contextlib.suppress(VerificationError):
        export_artifact(
            model,
            fmt,
            out,
            plan=plan,
            name=name,
            calibration={"model": synthetic_calibration(model)},
        )
    return read_manifest(out / name)


# Default int8 with one block's products int8: that block int8, the others float (where
# onnxruntime's and ai-edge-quantizer's int8 defaults would quantize them all).
ONE_BLOCK = QuantPlan(default=P.INT8, attention_matmuls={BLOCK: MatmulPrecision.INT8})


@pytest.fixture(scope="module")
def onnx_artifact(mobilevit, tmp_path_factory):
    out = tmp_path_factory.mktemp("matmuls-onnx")
    manifest = export(mobilevit, "onnx", ONE_BLOCK, out, "one-block")
    return out / "one-block" / manifest.component().model_file, manifest


def realized_products(manifest) -> dict[str, str | None]:
    check = manifest.component().quant
    return {path: entry.realized for path, entry in check.matmuls.items()}


def test_onnx_quantizes_exactly_the_planned_products(onnx_artifact):
    model_path, manifest = onnx_artifact
    check = manifest.component().quant
    assert check.status == "passed", check.failures
    products = realized_products(manifest)
    assert products.pop(BLOCK) == P.INT8 and set(products.values()) == {P.FP32}
    assert check.matmul_counts == {"fp32": 8, "int8": 1}
    assert check.matmul_summary == "attention products (by block): 8 fp32, 1 int8"
    # In the file: both operands of the block's MatMuls come from DequantizeLinear.
    graph = onnx.load(str(model_path)).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    for node in product_nodes(graph, BLOCK):
        assert [producers[i] for i in node.input] == ["DequantizeLinear"] * 2
    assert len(product_nodes(graph, BLOCK)) == 2


def test_softmax_probabilities_are_quantized_over_exactly_0_to_1(onnx_artifact):
    """softmax(scores) V: the probability operand's range is fixed to [0, 1] (onnxruntime's
    TensorQuantOverrides), not the calibrated min/max, which would clip at run time any
    probability above the largest the calibration inputs produced."""
    from onnx import numpy_helper

    model_path, manifest = onnx_artifact
    graph = onnx.load(str(model_path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    fixed = manifest.component().export.details["quantization"]["probability_ranges_fixed"]
    checked = 0
    for node in product_nodes(graph, BLOCK):
        quantize = producers[producers[node.input[0]].input[0]]  # MatMul <- DQ <- Q
        if producers[quantize.input[0]].op_type != "Softmax":
            continue  # Q K^T: both operands are calibrated activations
        assert quantize.input[0] in fixed
        scale, zero_point = constants[quantize.input[1]], constants[quantize.input[2]]
        assert scale == pytest.approx(1 / 255, rel=1e-6) and zero_point == 0
        checked += 1
    assert checked == 1  # the block's softmax V product


def product_nodes(graph: onnx.GraphProto, block: str) -> list[onnx.NodeProto]:
    return [
        node
        for node in graph.node
        if node.op_type == "MatMul"
        and onnx_exporter.LAYER_KEY not in {p.key for p in node.metadata_props}
        and onnx_exporter._module_scopes({p.key: p.value for p in node.metadata_props})[-1:]
        == [f"model.{block}"]
    ]


def test_stripping_the_qdq_of_a_product_fails_the_check(onnx_artifact, mobilevit, tmp_path):
    """A planted artifact: one planned-int8 product MatMul rewired to the float tensors its
    QuantizeLinear/DequantizeLinear pairs round. The read-back sees a float operand."""
    model_path, _ = onnx_artifact
    planted = tmp_path / "planted.onnx"
    shutil.copy(model_path, planted)
    proto = onnx.load(str(planted))
    producers = {out: node for node in proto.graph.node for out in node.output}
    node = product_nodes(proto.graph, BLOCK)[0]
    for k, name in enumerate(node.input):
        quantize = producers[producers[name].input[0]]  # DQ <- Q <- float tensor
        node.input[k] = quantize.input[0]
    onnx.save(proto, str(planted))
    spec = quant_spec(ONE_BLOCK, mobilevit.module)
    exporter = onnx_exporter.OnnxExporter()
    check = check_realized(spec, exporter.read_layer_precisions(planted, spec), evidence="x")
    assert check.status == "failed"
    assert check.failures == [
        f"attention products of '{BLOCK}' are fp32 in the artifact, planned int8"
    ]


def test_onnxruntime_left_alone_quantizes_every_product(mobilevit, tmp_path, monkeypatch):
    """Why products are planned: onnxruntime's static QDQ quantizes activation-by-activation
    MatMuls by default. Without edgekit keeping them float, `int8` (products planned float)
    comes out with int8 products, and the export fails saying so."""
    original = onnx_exporter._node_precisions
    monkeypatch.setattr(
        onnx_exporter,
        "_node_precisions",
        lambda graph, quant: original(graph, dataclasses.replace(quant, matmuls={})),
    )
    manifest = export(mobilevit, "onnx", named_plan("int8", mobilevit.module), tmp_path, "left")
    check = manifest.component().quant
    assert check.status == "failed" and set(realized_products(manifest).values()) == {P.INT8}
    assert f"attention products of '{OTHER}' are int8 in the artifact, planned fp32" in (
        check.failures
    )


def test_tflite_quantizes_exactly_the_planned_products(mobilevit, tmp_path):
    manifest = export(mobilevit, "tflite", ONE_BLOCK, tmp_path, "one-block")
    check = manifest.component().quant
    assert check.status == "passed", check.failures
    products = realized_products(manifest)
    assert products.pop(BLOCK) == P.INT8 and set(products.values()) == {P.FP32}
    assert manifest.component().verification.status == "passed"


@pytest.mark.parametrize(
    ("fmt", "why"),
    [
        ("executorch", "XNNPACKQuantizer has no annotator for activation-by-activation matmuls"),
        ("coreml", "quantizes Core ML activations only at conv/linear inputs"),
    ],
)
def test_targets_that_cannot_quantize_products_refuse_in_one_line(mobilevit, fmt, why):
    spec = quant_spec(ONE_BLOCK, mobilevit.module)
    reason = exporters.unsupported_reason(exporters.get(fmt), mobilevit, quant=spec)
    assert reason is not None and "\n" not in reason
    assert reason.startswith(
        f"{exporters.get(fmt).display_name} cannot realize int8 attention products "
        f"(Q K^T, softmax V) for block '{BLOCK}': "
    )
    assert why in reason
