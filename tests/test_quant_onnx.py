"""ONNX realization of quantization plans with onnxruntime.quantization, and the read-back that
proves it: each layer's precision is read from the written .onnx file, and a file that holds
something else than the plan fails the export."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekit import models
from edgekit.artifact import Manifest, read_manifest
from edgekit.errors import ExportError, VerificationError
from edgekit.export import export_artifact
from edgekit.exporters import onnx as onnx_exporter
from edgekit.exporters.onnx import LAYER_KEY, OnnxExporter, _CalibrationReader
from edgekit.quant.calibration import synthetic_calibration
from edgekit.quant.plan import LayerPrecision, QuantPlan, named_plan, quantizable_layers
from edgekit.quant.spec import check_realized, quant_spec
from tests.conftest import attention_float_plan

P = LayerPrecision
STEM = "mobilevit.conv_stem.convolution"
QUERY = "mobilevit.encoder.layer.2.transformer.layer.0.attention.attention.query"


@pytest.fixture(scope="module")
def mobilevit():
    return models.load("tiny-mobilevit")


class CountingCalibration:
    """Synthetic calibration that counts how often it is iterated and how many inputs it made."""

    def __init__(self, model):
        self.inner = synthetic_calibration(model)
        self.iterations = self.produced = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __iter__(self):
        self.iterations += 1
        for batch in self.inner:
            self.produced += 1
            yield batch


def export_plan(model, plan: QuantPlan, out: Path, name: str, calibration=None) -> Manifest:
    """Export under `plan`; a numeric verification failure still returns the (published)
    manifest, so tests can look at the plan check and SQNR separately."""
    with contextlib.suppress(VerificationError):
        export_artifact(
            model,
            "onnx",
            out,
            plan=plan,
            name=name,
            calibration={"model": calibration or synthetic_calibration(model)},
        )
    return read_manifest(out / name)


@pytest.fixture(scope="module")
def artifacts(mobilevit, tmp_path_factory):
    out = tmp_path_factory.mktemp("quant-onnx")
    counting = CountingCalibration(mobilevit)
    plans = {
        name: named_plan(name, mobilevit.module, OnnxExporter.layer_precisions)
        for name in ("fp32", "int8", "mixed", "int8-dynamic")
    }
    plans["attention-float"] = attention_float_plan(mobilevit.module)
    manifests = {
        name: export_plan(
            mobilevit, plan, out, name, calibration=counting if name == "int8" else None
        )
        for name, plan in plans.items()
    }
    return out, manifests, counting


def model_file(artifacts, name: str) -> Path:
    out, manifests, _ = artifacts
    return out / name / manifests[name].component().model_file


def scopes_of(node: onnx.NodeProto) -> list[str]:
    return onnx_exporter._module_scopes({p.key: p.value for p in node.metadata_props})


def op_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_fp32_export_reads_back_every_layer_as_fp32(artifacts):
    component = artifacts[1]["fp32"].component()
    assert component.verification.status == "passed"
    assert component.quant.status == "passed" and component.quant.counts == {"fp32": 90}
    # Only the module path survives in node metadata: the exporter's stack traces name files on
    # the exporting machine and made up most of a small model's file.
    keys = {
        p.key
        for n in onnx.load(str(model_file(artifacts, "fp32"))).graph.node
        for p in n.metadata_props
    }
    assert keys == onnx_exporter.KEPT_NODE_METADATA


def test_int8_is_static_qdq_calibrated_on_every_input_once(artifacts):
    component = artifacts[1]["int8"].component()
    assert component.quant.status == "passed" and component.quant.counts == {"int8": 90}
    assert component.export.details["quantization"]["passes"] == ["static"]
    ops = op_counts(model_file(artifacts, "int8"))
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert "ConvInteger" not in ops and "MatMulInteger" not in ops
    # No float copy of any conv/linear weight is left in the file.
    graph = onnx.load(str(model_file(artifacts, "int8"))).graph
    float_weights = [
        i.name
        for i in graph.initializer
        if i.name.endswith(".weight")
        and i.data_type == onnx.TensorProto.FLOAT
        and "norm" not in i.name
    ]
    assert float_weights == []
    counting = artifacts[2]
    assert (counting.iterations, counting.produced) == (1, counting.count)
    assert component.calibration.kind == "synthetic" and component.calibration.count == 16
    assert component.verification.numerics_checked


@pytest.mark.parametrize(
    ("name", "attention_realized"), [("attention-float", P.FP32), ("mixed", P.INT8_DYNAMIC)]
)
def test_attention_layers_realized_as_planned_and_convolutions_int8(
    artifacts, name, attention_realized
):
    component = artifacts[1][name].component()
    layers = component.quant.layers
    attention = {p: e.realized for p, e in layers.items() if ".attention." in p}
    convolutions = {p: e.realized for p, e in layers.items() if p.endswith(".convolution")}
    assert len(attention) == 36 and set(attention.values()) == {attention_realized}
    assert len(convolutions) == 35 and set(convolutions.values()) == {P.INT8}
    assert component.quant.status == "passed"
    assert component.verification.numerics_checked


def test_mixed_stores_attention_weights_in_int8_and_attention_float_does_not(artifacts):
    """`mixed` holds every weight in int8 (the attention projections' too), so it stores about as
    many float numbers as all-int8 (biases, scales); the attention-float plan keeps the
    projections' weights fp32."""

    def float_values(name: str) -> int:
        graph = onnx.load(str(model_file(artifacts, name))).graph
        floats = [i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
        return sum(int(np.prod(i.dims)) for i in floats)

    attention = [
        layer
        for path, layer in quantizable_layers(models.load("tiny-mobilevit").module).items()
        if ".attention." in path
    ]
    weights = sum(layer.weight.numel() for layer in attention)
    # Dynamic layers keep their biases (and weight scales) float, static int8 ones int32.
    assert float_values("mixed") - float_values("int8") < weights / 10
    assert float_values("attention-float") >= float_values("int8") + weights


@pytest.mark.parametrize(
    ("name", "rounded"), [("attention-float", False), ("mixed", False), ("int8", True)]
)
def test_a_float_attention_scope_gets_no_int8_rounding_at_all(artifacts, name, rounded):
    """Excluding only an attention MatMul still quantizes the Transposes and Softmax feeding it:
    with the attention layers float (or quantized per run, as `mixed` does), no op traced inside
    an attention module reads a statically dequantized tensor."""
    graph = onnx.load(str(model_file(artifacts, name))).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    inside = [
        node
        for node in graph.node
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and any(s.endswith(".attention") for s in scopes_of(node))
    ]
    assert {n.op_type for n in inside} >= {"Softmax", "Transpose", "MatMul"}
    reads_int8 = [n for n in inside if any(producers.get(i) == "DequantizeLinear" for i in n.input)]
    assert bool(reads_int8) == rounded


def test_int8_and_mixed_pass_numeric_verification(artifacts):
    for plan in ("int8", "mixed", "attention-float"):
        component = artifacts[1][plan].component()
        assert component.verification.status == "passed", component.verification.message


def test_int8_dynamic_uses_integer_ops_for_every_layer(artifacts):
    component = artifacts[1]["int8-dynamic"].component()
    assert component.quant.status == "passed" and component.quant.counts == {"int8-dynamic": 90}
    # The classifier was a Gemm, which onnxruntime renames to MatMul before quantizing it.
    assert component.quant.layers["classifier"].realized == P.INT8_DYNAMIC
    ops = op_counts(model_file(artifacts, "int8-dynamic"))
    assert ops["ConvInteger"] == 35 and ops["MatMulInteger"] == 55
    assert ops["DynamicQuantizeLinear"] > 0 and "QuantizeLinear" not in ops
    assert component.verification.status == "passed"


def test_quantized_files_are_smaller_than_fp32(artifacts):
    sizes = {name: m.component().size_bytes for name, m in artifacts[1].items()}
    assert sizes["int8"] < sizes["fp32"]
    assert sizes["int8-dynamic"] < sizes["fp32"]
    assert sizes["mixed"] < sizes["fp32"]


def test_static_and_dynamic_layers_in_one_artifact(mobilevit, tmp_path):
    """Two onnxruntime passes over one graph. The dynamic pass rewrites every Gemm it finds,
    the static int8 classifier's included: it must still read back as int8."""
    block = "mobilevit.encoder.layer.3"
    plan = QuantPlan(
        default=P.INT8, overrides={block: P.INT8_DYNAMIC, "mobilevit.conv_stem": P.FP32}
    )
    manifest = export_plan(mobilevit, plan, tmp_path, "both")
    component = manifest.component()
    assert component.quant.status == "passed", component.quant.failures
    realized = {p: e.realized for p, e in component.quant.layers.items()}
    assert realized[STEM] == P.FP32
    assert {v for p, v in realized.items() if p.startswith(block + ".")} == {P.INT8_DYNAMIC}
    assert realized["mobilevit.encoder.layer.2.conv_kxk.convolution"] == P.INT8
    assert realized["classifier"] == P.INT8
    assert component.export.details["quantization"]["passes"] == ["static", "dynamic"]
    ops = op_counts(tmp_path / "both" / component.model_file)
    assert ops["ConvInteger"] == 7 and ops["MatMulInteger"] == 24 and "Gemm" not in ops
    assert component.verification.numerics_checked


def test_a_float_layer_the_quantizer_touched_fails_the_export(mobilevit, tmp_path, monkeypatch):
    """The trap of a silently ignored exclusion: one layer planned fp32 gets quantized anyway."""
    real = onnx_exporter._node_precisions

    def also_quantize_the_query(graph, quant):
        precisions = real(graph, quant)
        for node in graph:
            if node.metadata_props.get(LAYER_KEY) == quant.traced_path(QUERY):
                precisions[node.name] = P.INT8
        return precisions

    monkeypatch.setattr(onnx_exporter, "_node_precisions", also_quantize_the_query)
    plan = QuantPlan(default=P.FP32, overrides={"mobilevit.conv_stem": P.INT8})
    with pytest.raises(
        VerificationError, match=f"layer '{QUERY}' is int8 in the artifact, planned fp32"
    ):
        export_artifact(
            mobilevit,
            "onnx",
            tmp_path,
            plan=plan,
            name="planted",
            calibration={"model": synthetic_calibration(mobilevit, count=4)},
        )
    manifest = read_manifest(tmp_path / "planted")
    assert manifest.status == "failed" and manifest.component().quant.status == "failed"
    assert manifest.component().quant.layers[STEM].realized == P.INT8


def test_read_back_reads_the_file_not_the_plan(artifacts, mobilevit, tmp_path):
    """Rewrite the written int8 file so one layer computes from float weights again, and drop
    another's module tag: the read-back reports exactly those two layers."""
    source = model_file(artifacts, "int8")
    planted = tmp_path / "model.onnx"
    shutil.copy(source, planted)
    proto = onnx.load(str(planted))
    graph = proto.graph
    producers = {out: node for node in graph.node for out in node.output}
    inits = {i.name: i for i in graph.initializer}
    stem = next(
        n
        for n in graph.node
        if any(p.key == LAYER_KEY and p.value.endswith(STEM) for p in n.metadata_props)
    )
    dequantize = producers[stem.input[1]]
    weights, scale = (numpy_helper.to_array(inits[name]) for name in dequantize.input[:2])
    restored = (weights.astype(np.float32) * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    graph.initializer.append(numpy_helper.from_array(restored, "restored_stem_weight"))
    stem.input[1] = "restored_stem_weight"
    classifier = next(
        n
        for n in graph.node
        if any(p.key == LAYER_KEY and p.value.endswith("classifier") for p in n.metadata_props)
    )
    kept = [p for p in classifier.metadata_props if p.key != LAYER_KEY]
    del classifier.metadata_props[:]
    classifier.metadata_props.extend(kept)
    onnx.save(proto, str(planted))

    spec = quant_spec(named_plan("int8", mobilevit.module), mobilevit.module)
    exporter = OnnxExporter()
    check = check_realized(
        spec, exporter.read_layer_precisions(planted, spec), evidence=exporter.layer_evidence
    )
    assert check.status == "failed"
    assert check.failures == [
        f"layer '{STEM}' is fp32 in the artifact, planned int8",
        "layer 'classifier' (planned int8) is not in the exported graph",
    ]
    untouched = exporter.read_layer_precisions(source, spec)
    assert {untouched[path] for path in spec.layers} == {P.INT8}
    # Beside the layers, each attention block's products: float, as every named plan keeps them.
    assert {untouched[block] for block in spec.matmuls} == {P.FP32} and len(spec.matmuls) == 9


def test_static_int8_without_calibration_is_refused(mobilevit, tmp_path):
    with pytest.raises(ExportError, match="calibration") as raised:
        export_artifact(mobilevit, "onnx", tmp_path, plan=named_plan("int8", mobilevit.module))
    assert "--calib" in raised.value.hint and "int8-dynamic" in raised.value.hint


@pytest.mark.parametrize(("count", "chunk"), [(16, 16), (40, 10), (17, 1), (5, 5)])
def test_calibration_streams_in_windows_that_divide_the_count(count, chunk):
    """The windows onnxruntime's strided min/max walks (set_range over consecutive slices) see
    every input once, from a single pass over the data."""

    @dataclasses.dataclass
    class Inputs:
        count: int
        iterations: int = 0

        def __iter__(self):
            self.iterations += 1
            return ({"x": np.full(1, i, np.float32)} for i in range(self.count))

    inputs = Inputs(count)
    reader = _CalibrationReader(inputs, ["x"])
    assert reader.chunk == chunk and len(reader) == count
    seen = []
    for start in range(0, len(reader), reader.chunk):
        reader.set_range(start_index=start, end_index=start + reader.chunk)
        while (batch := reader.get_next()) is not None:
            seen.append(int(batch["x"][0]))
    assert seen == list(range(count)) and inputs.iterations == 1
