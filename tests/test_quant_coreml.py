"""Core ML realization of quantization plans with coremltools.optimize, and the read-back that
proves it: each layer's precision is read from the written .mlpackage's spec, and a package that
holds something else than the plan fails the export.

Core ML runs only on macOS, so off macOS these tests check what the package holds (per-layer
weight ops and dtypes, the int8 weight values themselves), never its outputs; int8 activations
(W8A8) need Core ML to calibrate, so off macOS they are refused, and their realization is checked
with planted activation ranges instead.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit import models
from edgekit.artifact import Manifest, read_manifest
from edgekit.errors import ExportError, VerificationError
from edgekit.export import export_artifact
from edgekit.exporters import get, unsupported_reason
from edgekit.exporters.coreml import LAYER_EVIDENCE, CoreMLExporter, layer_weight_name
from edgekit.quant.calibration import synthetic_calibration
from edgekit.quant.plan import LayerPrecision, QuantPlan, named_plan, quantizable_layers
from edgekit.quant.spec import check_realized, quant_spec
from tests.conftest import attention_float_plan

P = LayerPrecision
ON_MACOS = sys.platform == "darwin"
off_macos_only = pytest.mark.skipif(ON_MACOS, reason="checks the Linux/Windows behaviour")
macos_only = pytest.mark.skipif(not ON_MACOS, reason="Core ML calibrates and runs only on macOS")
# (macOS tests also carry the project's `macos` marker, which the default run deselects.)

STEM = "mobilevit.conv_stem.convolution"
QUERY = "mobilevit.encoder.layer.2.transformer.layer.0.attention.attention.query"
# The attention block the mixed plan below keeps fp32 inside an otherwise fp16 float part. Its
# linear weights are 32x32, big enough (>= 1024 elements) for the structure check to judge.
FP32_BLOCK = "mobilevit.encoder.layer.4.transformer.layer.0.attention"
WEIGHTS_DIR = "Data/com.apple.CoreML/weights"
LAYER_COUNT = 90  # conv and linear layers of tiny-mobilevit
# SQNR of a weight in the package vs PyTorch's. Rounding to int8 per channel gives about 48 dB
# on tiny-mobilevit, to fp16 about 73 dB, an fp32 copy over 140 dB (only the BatchNorm fold's
# float rounding), a weight given another layer's name about 0 dB or another shape.
INT8_WEIGHT_SQNR_DB = (40.0, 60.0)
# 4-bit per channel: 22.8-25.0 dB measured (6 dB per bit fewer).
INT4_WEIGHT_SQNR_DB = (18.0, 30.0)
FP16_WEIGHT_SQNR_DB = (60.0, 90.0)
FP32_WEIGHT_MIN_SQNR_DB = 100.0


@pytest.fixture(scope="module")
def mobilevit():
    return models.load("tiny-mobilevit")


def mixed_plan(module) -> QuantPlan:
    """int8 weights by default; the layers the named `mixed` plan keeps float kept fp16, except
    one attention block kept fp32: three precisions in one package."""
    overrides = dict.fromkeys(named_plan("mixed", module).overrides, P.FP16)
    overrides[FP32_BLOCK] = P.FP32
    return QuantPlan(default=P.INT8_WEIGHT, overrides=overrides)


def export_plan(model, plan: QuantPlan | None, out: Path, name: str, **options) -> Manifest:
    folder, manifest = export_artifact(
        model,
        "coreml",
        out,
        plan=plan,
        precision="fp16",
        name=name,
        calibration={"model": synthetic_calibration(model)},
        **options,
    )
    assert folder == out / name
    return manifest


@pytest.fixture(scope="module")
def artifacts(mobilevit, tmp_path_factory) -> dict[str, Path]:
    """tiny-mobilevit exported once per plan (fp16: plan None, precision fp16), shared."""
    out = tmp_path_factory.mktemp("quant-coreml")
    plans = {
        "fp16": None,
        "int8-weight": QuantPlan(default=P.INT8_WEIGHT),
        "mixed": mixed_plan(mobilevit.module),
    }
    for name, plan in plans.items():
        export_plan(mobilevit, plan, out, name)
    return {name: out / name for name in plans}


def package(folder: Path) -> Path:
    return folder / "model.mlpackage"


def package_weights(mlpackage: Path) -> dict[str, tuple[str, np.ndarray]]:
    """Weight var name -> (the op making it, its float value) for every conv/linear op of the
    written package, int8 weights dequantized here from their stored data, scale and zero
    point: the values Core ML computes with, read independently of edgekit's read-back."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    spec = ct.utils.load_spec(str(mlpackage))
    program = load(spec, spec.specificationVersion, file_weights_dir=str(mlpackage / WEIGHTS_DIR))
    weights = {}
    for op in program.functions["main"].operations:
        weight = op.inputs.get("weight") if op.op_type in ("conv", "linear") else None
        if weight is None:
            continue
        maker = weight.op
        if maker.op_type == "constexpr_affine_dequantize":  # iOS16/17
            assert maker.quantized_data.val.dtype == np.int8
            stored = maker.quantized_data.val.astype(np.float64)
            shape = [1] * stored.ndim
            shape[maker.axis.val] = -1
            zero_point = maker.zero_point.val.astype(np.float64).reshape(shape)
            value = (stored - zero_point) * maker.scale.val.astype(np.float64).reshape(shape)
        elif maker.op_type == "constexpr_blockwise_shift_scale":  # iOS18
            assert maker.data.val.dtype == np.int8
            stored = maker.data.val.astype(np.float64)
            offset = maker.offset.val.astype(np.float64) if maker.offset is not None else 0.0
            # One scale per block of the data; per channel, a block is a whole channel.
            scale = maker.scale.val.astype(np.float64)
            for axis, (size, blocks) in enumerate(zip(stored.shape, scale.shape, strict=True)):
                scale = np.repeat(scale, size // blocks, axis=axis)
                if not np.isscalar(offset):
                    offset = np.repeat(offset, size // blocks, axis=axis)
            value = (stored - offset) * scale
        else:
            value = np.asarray(weight.val, dtype=np.float64)
        weights[weight.name] = (maker.op_type, value)
    return weights


def torch_weights(module, spec) -> dict[str, np.ndarray]:
    """Each layer's weight as Core ML should hold it: coremltools folds the BatchNorm after a
    convolution into the convolution's weight, so those are folded here too."""
    modules = dict(module.named_modules())
    expected = {}
    for path, layer in quantizable_layers(module).items():
        weight = layer.weight.detach().double()
        parent = modules[spec.traced_path(path).rpartition(".")[0]]
        norm = getattr(parent, "normalization", None)
        if isinstance(norm, torch.nn.BatchNorm2d):
            scale = norm.weight.detach().double() / torch.sqrt(norm.running_var.double() + norm.eps)
            weight = weight * scale.reshape(-1, 1, 1, 1)
        expected[path] = weight.numpy()
    return expected


def within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] < value < bounds[1]


def sqnr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    noise = float(((reference - actual) ** 2).sum())
    return 10 * np.log10(float((reference**2).sum()) / max(noise, 1e-300))


def layer_weights(mlpackage: Path, model, plan: QuantPlan) -> dict[str, tuple[str, float]]:
    """User path -> (op making the layer's weight, SQNR of its value vs PyTorch's), matching
    weights to layers by the names edgekit gives them; a weight given the wrong layer's name
    shows as a low SQNR or a shape error."""
    spec = quant_spec(plan, model.module)
    weights = package_weights(mlpackage)
    result = {}
    for path, expected in torch_weights(model.module, spec).items():
        base = layer_weight_name(spec.traced_path(path))
        names = [n for n in weights if n == base or n.startswith(base + "_")]
        assert len(names) == 1, f"{path}: weights named {names}"
        op_type, value = weights[names[0]]
        result[path] = (op_type, sqnr_db(expected, value.reshape(expected.shape)))
    return result


# Refusals: data-driven precisions, deployment targets, int8 activations off macOS.


def test_int8_dynamic_is_refused_naming_the_layer(mobilevit):
    assert P.INT8_DYNAMIC not in CoreMLExporter.layer_precisions
    spec = quant_spec(
        QuantPlan(default=P.INT8_WEIGHT, overrides={QUERY: P.INT8_DYNAMIC}), mobilevit.module
    )
    assert unsupported_reason(get("coreml"), mobilevit, quant=spec) == (
        f"Core ML cannot realize int8-dynamic for layer '{QUERY}'; "
        "it supports fp32, fp16, int8-weight, int8, int4-weight per layer."
    )


def test_quantized_layers_need_a_recent_deployment_target(mobilevit):
    int8_weight = quant_spec(QuantPlan(default=P.INT8_WEIGHT), mobilevit.module)
    old = CoreMLExporter(minimum_deployment_target="iOS15")
    assert unsupported_reason(old, mobilevit, quant=int8_weight) == (
        f"Core ML cannot realize int8-weight for layer '{STEM}' (and {LAYER_COUNT - 1} more "
        "layers) before iOS16; the deployment target is iOS15."
    )
    assert (
        unsupported_reason(
            CoreMLExporter(minimum_deployment_target="iOS16"), mobilevit, quant=int8_weight
        )
        is None
    )
    one_int8 = quant_spec(
        QuantPlan(default=P.FP16, overrides={QUERY: P.INT8}),
        mobilevit.module,
        calibration=synthetic_calibration(mobilevit),
    )
    reason = unsupported_reason(
        CoreMLExporter(minimum_deployment_target="iOS16"), mobilevit, quant=one_int8
    )
    assert reason == (
        f"Core ML cannot realize int8 for layer '{QUERY}' before iOS17; "
        "the deployment target is iOS16."
    )


@off_macos_only
def test_int8_activations_are_refused_off_macos(mobilevit, tmp_path):
    """W8A8 calibration runs the float model in Core ML (MLModel.predict), which exists only on
    macOS: refused before anything is converted, naming a layer and the reason."""
    import platform

    with pytest.raises(ExportError) as refused:
        export_artifact(
            mobilevit,
            "coreml",
            tmp_path,
            plan="mixed",
            calibration={"model": synthetic_calibration(mobilevit)},
        )
    # Spelled out, not imported, so a reworded message fails the test.
    assert refused.value.message == (
        f"Core ML cannot realize int8 for layer '{STEM}' (and 53 more layers) on "
        f"{platform.system()}: its int8 activations are calibrated by running the model "
        "(coremltools' linear_quantize_activations), and Core ML runs only on macOS. Plan "
        "int8-weight for those layers here, or export on a Mac."
    )
    assert not list(tmp_path.glob("*coreml*"))


@pytest.mark.macos
@macos_only
def test_int8_activations_without_calibration_are_refused(mobilevit):
    spec = quant_spec(QuantPlan(default=P.INT8), mobilevit.module)
    assert unsupported_reason(get("coreml"), mobilevit, quant=spec) == (
        f"Core ML cannot realize int8 for layer '{STEM}' (and {LAYER_COUNT - 1} more layers) "
        "without calibration inputs: int8 activations take their ranges from them."
    )


# Realization and read-back.


def test_int8_weights_everywhere_are_realized_and_read_back(artifacts):
    manifest = read_manifest(artifacts["int8-weight"])
    component = manifest.component()
    assert manifest.status == ("verified" if ON_MACOS else "structure-only")
    check = component.quant
    assert check.status == "passed" and check.failures == []
    assert check.evidence == LAYER_EVIDENCE
    assert check.counts == {"int8-weight": LAYER_COUNT}
    assert all(layer.realized is P.INT8_WEIGHT for layer in check.layers.values())
    structure = component.verification.structure
    if not ON_MACOS:
        assert component.verification.numerics_checked is False
        assert structure.passed and structure.failures == []
        # Every layer's weight is an int8 constexpr op; the float part is fp32 (no fp16 asked).
        assert structure.facts["op_histogram"]["constexpr_affine_dequantize"] == LAYER_COUNT
    details = component.export.details
    assert details["compute_precision"] == "FLOAT32"
    assert details["quantization"]["quantized_layers"] == LAYER_COUNT
    # Weight-only int8 uses no calibration data, so none is recorded.
    assert component.calibration is None


def test_int8_weights_in_the_package_are_the_layers_weights(artifacts, mobilevit):
    """The stored int8 data times its scales is each layer's (BatchNorm-folded) PyTorch weight,
    rounded as int8 per channel rounds (INT8_WEIGHT_SQNR_DB)."""
    found = layer_weights(
        package(artifacts["int8-weight"]), mobilevit, QuantPlan(default=P.INT8_WEIGHT)
    )
    assert len(found) == LAYER_COUNT
    for path, (op_type, sqnr) in found.items():
        assert op_type == "constexpr_affine_dequantize", path
        assert within(sqnr, INT8_WEIGHT_SQNR_DB), f"{path}: weight SQNR {sqnr:.1f} dB"


def test_mixed_plan_keeps_attention_float(artifacts, mobilevit):
    plan = mixed_plan(mobilevit.module)
    manifest = read_manifest(artifacts["mixed"])
    component = manifest.component()
    assert manifest.precision == "mixed"
    check = component.quant
    assert check.status == "passed", check.failures
    attention = [p for p in check.layers if ".attention." in p]
    fp32 = [p for p in attention if p.startswith(FP32_BLOCK + ".")]
    assert len(attention) == 36 and len(fp32) == 4
    for path, layer in check.layers.items():
        expected = P.FP32 if path in fp32 else P.FP16 if path in attention else P.INT8_WEIGHT
        assert layer.planned is expected and layer.realized is expected, path
    assert check.counts == {"fp16": 32, "fp32": 4, "int8-weight": 54}
    # fp16 compute with the fp32 block computing fp32: op by op, by module.
    assert component.export.details["compute_precision_by_module"]["fp32"] > 0
    if not ON_MACOS:
        # The fp32 block's large fp32 weights are what its layers planned, not a failure.
        structure = component.verification.structure
        assert structure.passed and structure.failures == []
        assert structure.facts["weight_precision"]["float32"]["large_tensors"] >= len(fp32)

    # What the package holds, read independently: float weights exact to their dtype.
    found = layer_weights(package(artifacts["mixed"]), mobilevit, plan)
    for path in fp32:
        assert found[path][0] == "const" and found[path][1] > FP32_WEIGHT_MIN_SQNR_DB, path
    for path in set(attention) - set(fp32):
        assert found[path][0] == "const" and within(found[path][1], FP16_WEIGHT_SQNR_DB), path
    assert found[STEM][0] == "constexpr_affine_dequantize"


def test_ios18_weights_are_read_back_too(mobilevit, tmp_path):
    """From iOS18 coremltools writes int8 weights as constexpr_blockwise_shift_scale ops whose
    int8 data is an inline blob value, not an attribute: the read-back reads both forms."""
    plan = QuantPlan(default=P.FP16, overrides={"mobilevit.encoder.layer.2": P.INT8_WEIGHT})
    manifest = export_plan(
        mobilevit, plan, tmp_path, "ios18", exporter_options={"minimum_deployment_target": "iOS18"}
    )
    check = manifest.component().quant
    assert check.status == "passed", check.failures
    int8 = [path for path in check.layers if path.startswith("mobilevit.encoder.layer.2.")]
    assert check.counts == {"fp16": LAYER_COUNT - len(int8), "int8-weight": len(int8)} and int8
    found = layer_weights(package(tmp_path / "ios18"), mobilevit, plan)
    for path, (op_type, sqnr) in found.items():
        if check.layers[path].planned is P.INT8_WEIGHT:
            assert op_type == "constexpr_blockwise_shift_scale", path
            assert within(sqnr, INT8_WEIGHT_SQNR_DB), f"{path}: weight SQNR {sqnr:.1f} dB"
        else:
            assert op_type == "const" and within(sqnr, FP16_WEIGHT_SQNR_DB), path


def test_int4_weights_need_ios18_and_the_default_profile_refuses_them(tmp_path):
    """`--target coreml` is the coreml-ios17 profile: 4-bit weights are refused before anything
    is converted, naming the first layer and the target that would take them."""
    from typer.testing import CliRunner

    from edgekit.cli import app

    args = ["export", "tiny-mobilevit", "--target", "coreml", "--quant", "int4-weight"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == ExportError.exit_code, result.output
    assert (
        f"Core ML cannot realize int4-weight for layer '{STEM}' (and {LAYER_COUNT - 1} more "
        "layers) before iOS18; the deployment target is iOS17." in result.output
    )
    assert list(tmp_path.iterdir()) == []


def test_int4_weights_are_realized_and_read_back_on_ios18(artifacts, mobilevit, tmp_path):
    """4-bit weights as iOS18 constexpr_blockwise_shift_scale ops with int4 data, every layer
    read back int4-weight from the package, the stored values each layer's weight rounded to 4
    bits, and the package smaller than the int8-weight one by the 4-bit half byte."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load
    from coremltools.converters.mil.mil import types

    plan = QuantPlan(default=P.INT4_WEIGHT)
    manifest = export_plan(
        mobilevit, plan, tmp_path, "int4", exporter_options={"minimum_deployment_target": "iOS18"}
    )
    component = manifest.component()
    assert manifest.status == ("verified" if ON_MACOS else "structure-only")
    check = component.quant
    assert check.status == "passed" and check.counts == {"int4-weight": LAYER_COUNT}
    assert component.export.details["quantization"]["weights"].startswith(
        "linear_quantize_weights int4 per_channel"
    )
    if not ON_MACOS:
        structure = component.verification.structure
        assert structure.passed, structure.failures
        assert structure.facts["op_histogram"]["constexpr_blockwise_shift_scale"] == LAYER_COUNT

    # Read independently of edgekit's read-back: int4 data, -7..7 (linear symmetric) ...
    mlpackage = package(tmp_path / "int4")
    spec = ct.utils.load_spec(str(mlpackage))
    program = load(spec, spec.specificationVersion, file_weights_dir=str(mlpackage / WEIGHTS_DIR))
    stored = [
        op.data
        for op in program.functions["main"].operations
        if op.op_type == "constexpr_blockwise_shift_scale"
    ]
    assert {types.builtin_to_string(data.dtype) for data in stored} == {"int4"}
    assert max(int(np.abs(data.val).max()) for data in stored) == 7
    # ... whose values are the layers' weights rounded to 4 bits per channel.
    for path, (op_type, sqnr) in layer_weights(mlpackage, mobilevit, plan).items():
        assert op_type == "constexpr_blockwise_shift_scale", path
        assert within(sqnr, INT4_WEIGHT_SQNR_DB), f"{path}: weight SQNR {sqnr:.1f} dB"
    # The read-back tells 4 bits from 8: against an int8-weight plan this package fails.
    int8_weight = quant_spec(QuantPlan(default=P.INT8_WEIGHT), mobilevit.module)
    exporter = CoreMLExporter(minimum_deployment_target="iOS18")
    realized = exporter.read_layer_precisions(mlpackage, int8_weight)
    assert {realized[path] for path in int8_weight.layers} == {P.INT4_WEIGHT}
    check = check_realized(int8_weight, realized, evidence=exporter.layer_evidence)
    assert (
        check.failures[0] == f"layer '{STEM}' is int4-weight in the artifact, planned int8-weight"
    )

    # Half a byte per weight less than the int8-weight package; that one (iOS17) also stores
    # per-channel zero points, so this is a lower bound.
    def weight_bytes(folder: Path) -> int:
        return (package(folder) / WEIGHTS_DIR / "weight.bin").stat().st_size

    saved = weight_bytes(artifacts["int8-weight"]) - weight_bytes(tmp_path / "int4")
    planned = sum(layer.weight.numel() for layer in quantizable_layers(mobilevit.module).values())
    assert saved >= 0.9 * planned / 2, (saved, planned / 2)


def test_quantized_package_is_smaller_than_fp16(artifacts):
    def weight_bytes(name: str) -> int:
        return (package(artifacts[name]) / WEIGHTS_DIR / "weight.bin").stat().st_size

    sizes = {
        name: read_manifest(folder).component().size_bytes for name, folder in artifacts.items()
    }
    assert sizes["int8-weight"] < sizes["fp16"]
    # int8 weights (1 byte) vs fp16 (2 bytes); biases, norms and scales stay fp32 here, and
    # they weigh a lot in a model this small.
    assert weight_bytes("int8-weight") < 0.75 * weight_bytes("fp16")
    assert weight_bytes("mixed") < 0.75 * weight_bytes("fp16")


def test_read_back_reads_the_package_not_the_plan(artifacts, mobilevit):
    """The fp16 package read against an int8-weight plan shows fp16 layers, and against a plan
    whose module paths sit elsewhere shows no layers: the read-back looks at the file."""
    exporter = CoreMLExporter()
    fp16_package = package(artifacts["fp16"])
    int8_weight = quant_spec(QuantPlan(default=P.INT8_WEIGHT), mobilevit.module)
    realized = exporter.read_layer_precisions(fp16_package, int8_weight)
    layers = {path: realized[path] for path in int8_weight.layers}
    assert set(layers.values()) == {P.FP16} and len(layers) == LAYER_COUNT
    check = check_realized(int8_weight, realized, evidence=exporter.layer_evidence)
    assert check.status == "failed"
    assert check.failures[0] == f"layer '{STEM}' is fp16 in the artifact, planned int8-weight"

    elsewhere = dataclasses.replace(int8_weight, module_prefix="other.")
    read = exporter.read_layer_precisions(fp16_package, elsewhere)
    assert {read[path] for path in elsewhere.layers} == {None}


def test_overrides_keyed_by_fx_names_are_caught(mobilevit, tmp_path, monkeypatch):
    """Plant the trap coremltools sets: per-layer configs keyed by fx node names (`conv2d_3`)
    are ignored without a word where no MIL op or const has that name; those layers stay
    float, and the read-back fails the export."""
    import coremltools.optimize.coreml as cto

    args = tuple(torch.from_numpy(mobilevit.sample_inputs(0)[s.name]) for s in mobilevit.inputs)
    program = torch.export.export(mobilevit.module, args, strict=False)
    parameters = program.graph_signature.inputs_to_parameters
    fx_names = {
        layer_weight_name(parameters[node.name].removesuffix(".weight")): next(
            iter(node.users)
        ).name
        for node in program.graph.nodes
        if node.op == "placeholder" and parameters.get(node.name, "").endswith(".weight")
    }
    real_config = cto.OptimizationConfig
    rekeyed = []

    def keyed_by_fx_names(*, op_name_configs=None, **options):
        configs = {}
        for name, config in (op_name_configs or {}).items():
            weight = max((w for w in fx_names if name == w or name.startswith(w + "_")), key=len)
            configs[fx_names[weight]] = config
        rekeyed.extend(configs)
        return real_config(op_name_configs=configs, **options)

    monkeypatch.setattr(cto, "OptimizationConfig", keyed_by_fx_names)
    with pytest.raises(VerificationError) as failed:
        export_plan(mobilevit, QuantPlan(default=P.INT8_WEIGHT), tmp_path, "planted")
    assert len(rekeyed) == LAYER_COUNT and "conv2d" in rekeyed
    assert f"layer '{STEM}' is fp32 in the artifact, planned int8-weight" in str(failed.value)
    manifest = read_manifest(tmp_path / "planted")
    assert manifest.status == "failed"
    # Partly silent: MIL ops that kept their fx node's name (most linears) match, and those
    # layers are int8; convolutions renamed by the BatchNorm fold, among others, stay fp32.
    check = manifest.component().quant
    assert check.layers[STEM].realized is P.FP32
    assert check.counts["fp32"] >= 30
    assert check.counts["fp32"] + check.counts["int8-weight"] == LAYER_COUNT
    assert len(check.failures) == check.counts["fp32"]
    assert all(f.endswith("is fp32 in the artifact, planned int8-weight") for f in check.failures)


@off_macos_only
def test_int8_activations_are_realized_with_planted_ranges(mobilevit, tmp_path, monkeypatch):
    """The W8A8 path off macOS, with activation ranges planted where Core ML would measure
    them: checks which layers get quantize/dequantize ops and int8 weights and that the
    read-back tells int8 from int8-weight, not the numerics (the ranges are made up)."""
    import coremltools.optimize.coreml._post_training_quantization as ptq

    from edgekit.exporters import coreml

    calibrated = []

    def planted_ranges(model, samples, *args):
        calibrated.append(sum(1 for _ in samples))
        return collections.defaultdict(lambda: {"rmin": -4.0, "rmax": 4.0})

    monkeypatch.setattr(coreml, "_can_calibrate_activations", lambda: True)
    monkeypatch.setattr(ptq, "_get_activation_calibration_stats", planted_ranges)
    # int8 with attention fp32, one conv int8-weight right after an int8 conv.
    mixed = attention_float_plan(mobilevit.module)
    weight_only = "mobilevit.encoder.layer.0.layer.0.reduce_1x1.convolution"
    plan = mixed.model_copy(update={"overrides": {**mixed.overrides, weight_only: P.INT8_WEIGHT}})
    manifest = export_plan(mobilevit, plan, tmp_path, "w8a8")
    component = manifest.component()
    assert calibrated == [synthetic_calibration(mobilevit).count]
    check = component.quant
    assert check.status == "passed", check.failures
    assert check.counts == {"fp32": 36, "int8": 53, "int8-weight": 1}
    assert check.layers[weight_only].realized is P.INT8_WEIGHT
    assert check.layers[STEM].realized is P.INT8
    histogram = component.verification.structure.facts["op_histogram"]
    assert histogram["quantize"] == histogram["dequantize"] > 53
    assert component.export.details["quantization"]["activations"].startswith(
        "linear_quantize_activations"
    )


@pytest.mark.macos
@macos_only
def test_int8_activations_calibrate_on_macos(mobilevit, tmp_path):
    with contextlib.suppress(VerificationError):  # the numerics are judged elsewhere
        export_plan(mobilevit, QuantPlan(default=P.INT8), tmp_path, "int8")
    check = read_manifest(tmp_path / "int8").component().quant
    assert check.status == "passed" and check.counts == {"int8": LAYER_COUNT}
