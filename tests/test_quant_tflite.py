"""TFLite realization of quantization plans with ai-edge-quantizer, and the read-back that proves
it: each layer's precision is read from the written .tflite (weight dtypes, DEQUANTIZE ops,
activation dtypes of the op carrying the layer's module path), and a file that holds something
else than the plan fails the export. Models over the 2 GB flatbuffer limit are quantized with
litert-torch's PT2E before lowering; tests pretend the limit is small."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import shutil
from pathlib import Path

import pytest

from edgekit import models
from edgekit.artifact import Manifest, read_manifest
from edgekit.errors import ExportError, VerificationError
from edgekit.export import export_artifact
from edgekit.exporters import tflite
from edgekit.exporters.tflite import TFLiteExporter
from edgekit.quant.calibration import synthetic_calibration
from edgekit.quant.plan import LayerPrecision, QuantPlan, named_plan, quantizable_layers
from edgekit.quant.spec import QuantSpec, check_realized, quant_spec
from tests.conftest import attention_float_plan

P = LayerPrecision
STEM = "mobilevit.conv_stem.convolution"
BLOCK = "mobilevit.encoder.layer.2.transformer.layer.0.attention"
QUERY = f"{BLOCK}.attention.query"
LAYER_COUNT = 90  # conv and linear layers of tiny-mobilevit
PLANS = ("fp32", "int8", "attention-float", "int8-dynamic", "int8-weight", "fp16")


@pytest.fixture(scope="module")
def mobilevit():
    return models.load("tiny-mobilevit")


@pytest.fixture(scope="module")
def convert_once(mobilevit, tmp_path_factory):
    """litert-torch converts tiny-mobilevit once (about 40 s here); every export in this module
    then quantizes a copy of that same fp32 flatbuffer. Conversion does not depend on the plan
    (test_tflite.py covers it), so the artifacts are the ones a fresh conversion would give."""
    import litert_torch

    real_convert = litert_torch.convert
    folder = tmp_path_factory.mktemp("converted")
    converted: dict[int, Path] = {}

    class Replay:
        def __init__(self, path: Path) -> None:
            self.path = path

        def export(self, path: str) -> None:
            shutil.copy(self.path, path)

    def convert(module, args, **options):
        if options:  # a PT2E-quantized graph (quant_config): not the fp32 conversion replayed
            return real_convert(module, args, **options)
        if id(module) not in converted:
            path = folder / f"{len(converted)}.tflite"
            real_convert(module, args).export(str(path))
            converted[id(module)] = path
        return Replay(converted[id(module)])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(litert_torch, "convert", convert)
        yield converted


class CountingCalibration:
    """Synthetic calibration that counts how often it is iterated and how many inputs it made."""

    def __init__(self, model, count: int = 20):
        self.inner = synthetic_calibration(model, count=count)
        self.iterations = self.produced = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __iter__(self):
        self.iterations += 1
        for inputs in self.inner:
            self.produced += 1
            yield inputs


def plan_named(name: str, module) -> QuantPlan:
    if name == "int8-weight":
        return QuantPlan(name=name, default=P.INT8_WEIGHT)
    if name == "attention-float":
        return attention_float_plan(module)
    return named_plan(name, module)


def export_plan(model, plan: QuantPlan, out: Path, name: str, calibration=None) -> Manifest:
    """Export under `plan`; a numeric verification failure still returns the (published)
    manifest, so tests can look at the plan check and SQNR separately."""
    with contextlib.suppress(VerificationError):
        export_artifact(
            model,
            "tflite",
            out,
            plan=plan,
            name=name,
            calibration={"model": calibration or synthetic_calibration(model)},
        )
    return read_manifest(out / name)


@pytest.fixture(scope="module")
def artifacts(mobilevit, convert_once, tmp_path_factory):
    out = tmp_path_factory.mktemp("quant-tflite")
    counting = CountingCalibration(mobilevit)
    manifests = {
        name: export_plan(
            mobilevit,
            plan_named(name, mobilevit.module),
            out,
            name,
            calibration=counting if name == "int8" else None,
        )
        for name in PLANS
    }
    return out, manifests, counting


def model_file(artifacts, name: str) -> Path:
    out, manifests, _ = artifacts
    return out / name / manifests[name].component().model_file


def realized(manifest: Manifest) -> dict[str, LayerPrecision | None]:
    return {path: entry.realized for path, entry in manifest.component().quant.layers.items()}


def is_attention(path: str) -> bool:
    return ".attention." in path


def signature_dtypes(path: Path):
    _, (inputs, outputs) = tflite._signature_dtypes(path.read_bytes())
    return {name: dtype.__name__ for name, dtype in {**inputs, **outputs}.items()}


@pytest.mark.parametrize(
    ("name", "precision"),
    [
        ("fp32", P.FP32),
        ("int8", P.INT8),
        ("int8-dynamic", P.INT8_DYNAMIC),
        ("int8-weight", P.INT8_WEIGHT),
        ("fp16", P.FP16),
    ],
)
def test_uniform_plans_read_back_on_every_layer(artifacts, name, precision):
    component = artifacts[1][name].component()
    assert component.quant.status == "passed", component.quant.failures
    assert component.quant.counts == {precision.value: LAYER_COUNT}
    # The app's tensors stay float whatever the plan: the quantizer adds QUANTIZE/DEQUANTIZE.
    assert set(signature_dtypes(model_file(artifacts, name)).values()) == {"float32"}
    assert component.verification.numerics_checked


def test_static_int8_is_int8_inside_with_float_edges(artifacts):
    component = artifacts[1]["int8"].component()
    ops = component.export.details["op_histogram"]
    assert ops["QUANTIZE"] >= 1 and ops["DEQUANTIZE"] >= 1
    assert component.export.details["calibration"] == "min/max over every input"
    assert component.calibration is not None and component.calibration.kind == "synthetic"


def test_calibration_reads_the_inputs_once_in_bounded_chunks(
    artifacts, mobilevit, convert_once, monkeypatch
):
    """One pass over the data, handed to one calibrator CALIBRATION_CHUNK inputs at a time (its
    calibrate() lists whatever it is given, so a single call would hold every input)."""
    from ai_edge_quantizer import calibrator

    counting = artifacts[2]  # what the int8 export calibrated on
    assert counting.iterations == 1 and counting.produced == counting.count

    calls = []
    real = calibrator.Calibrator.calibrate

    def spy(self, dataset, *args, **kwargs):
        calls.append((id(self), [len(inputs) for inputs in dataset.values()]))
        return real(self, dataset, *args, **kwargs)

    monkeypatch.setattr(calibrator.Calibrator, "calibrate", spy)
    (float_file,) = convert_once.values()
    recipe = tflite._recipe_manager([(".*", P.INT8)])
    count = 2 * tflite.CALIBRATION_CHUNK + 3
    again = CountingCalibration(mobilevit, count=count)
    ranges = tflite._calibrate(float_file.read_bytes(), recipe, mobilevit, again)
    assert ranges and again.iterations == 1 and again.produced == count
    assert len({calibrator_id for calibrator_id, _ in calls}) == 1
    chunk = tflite.CALIBRATION_CHUNK
    assert [sizes for _, sizes in calls] == [[chunk], [chunk], [3]]


def test_dynamic_weight_only_and_fp16_pass_numeric_verification(artifacts):
    for name in ("int8-dynamic", "int8-weight", "fp16"):
        component = artifacts[1][name].component()
        assert component.verification.status == "passed", (name, component.verification)


def test_attention_kept_float_and_convolutions_int8(artifacts):
    manifest = artifacts[1]["attention-float"]
    component = manifest.component()
    assert component.quant.status == "passed", component.quant.failures
    layers = realized(manifest)
    attention = {p: v for p, v in layers.items() if is_attention(p)}
    assert len(attention) == 36 and set(attention.values()) == {P.FP32}
    convolutions = {p: v for p, v in layers.items() if p.endswith(".convolution")}
    assert len(convolutions) == 35 and set(convolutions.values()) == {P.INT8}
    assert layers["classifier"] == P.INT8


def test_no_op_inside_a_float_attention_block_touches_int8(artifacts, mobilevit):
    """Not only the attention's Linear layers: its matmuls, softmax and reshapes see no int8
    tensor in the attention-float artifact, while the block's layers are int8 in the all-int8
    one. (The QUANTIZE op the quantizer adds for the int8 residual add after the block is named
    after the block's float output; it belongs to the int8 consumer.)"""
    from ai_edge_litert import schema_py_generated as schema

    spec = quant_spec(attention_float_plan(mobilevit.module), mobilevit.module)
    block = tflite._module_path(spec, BLOCK, tflite.module_types(mobilevit.module))

    def int8_ops_in_block(path: Path) -> tuple[int, int]:
        model = schema.Model.GetRootAs(path.read_bytes(), 0)
        graph = model.Subgraphs(0)
        inside = rounded = 0
        quantize = schema.BuiltinOperator.QUANTIZE
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = model.OperatorCodes(op.OpcodeIndex())
            if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == quantize:
                continue
            outputs = [graph.Tensors(op.Outputs(k)) for k in range(op.OutputsLength())]
            names = [t.Name().decode() for t in outputs]
            locations = [loc for name in names for loc in tflite._locations(name)]
            if not locations or not all(
                tflite._spells(loc, block, whole=False) for loc in locations
            ):
                continue
            inside += 1
            tensors = outputs + [
                graph.Tensors(op.Inputs(k)) for k in range(op.InputsLength()) if op.Inputs(k) >= 0
            ]
            rounded += any(t.Type() == schema.TensorType.INT8 for t in tensors)
        return inside, rounded

    inside, rounded = int8_ops_in_block(model_file(artifacts, "attention-float"))
    assert inside >= 15 and rounded == 0
    # `int8` keeps the attention products (and the ops feeding them) float too, as every named
    # plan does: only the block's own Linear layers touch int8 there.
    inside, rounded = int8_ops_in_block(model_file(artifacts, "int8"))
    assert inside >= 15 and 0 < rounded < 5


def test_int8_and_attention_float_pass_numeric_verification(artifacts):
    for plan in ("int8", "attention-float"):
        component = artifacts[1][plan].component()
        assert component.verification.status == "passed", component.verification.message


def test_quantized_files_are_smaller_than_fp32(artifacts):
    sizes = {name: m.component().size_bytes for name, m in artifacts[1].items()}
    for name in ("int8", "attention-float", "int8-dynamic", "int8-weight", "fp16"):
        assert sizes[name] < sizes["fp32"], (name, sizes)


def test_five_precisions_in_one_artifact(mobilevit, convert_once, tmp_path):
    """Float by default, with static, dynamic, weight-only and fp16 regions; the classifier
    writes the model's output, which must stay float although the layer is int8."""
    plan = QuantPlan(
        default=P.FP32,
        overrides={
            "mobilevit.encoder.layer.2": P.INT8,
            BLOCK: P.FP16,
            "mobilevit.encoder.layer.3": P.INT8_DYNAMIC,
            "mobilevit.conv_stem": P.INT8_WEIGHT,
            "classifier": P.INT8,
        },
    )
    manifest = export_plan(mobilevit, plan, tmp_path, "five")
    component = manifest.component()
    assert component.quant.status == "passed", component.quant.failures
    layers = realized(manifest)
    assert layers[STEM] == P.INT8_WEIGHT
    assert layers["classifier"] == P.INT8
    assert layers[QUERY] == P.FP16
    assert layers["mobilevit.encoder.layer.2.conv_kxk.convolution"] == P.INT8
    assert {v for p, v in layers.items() if p.startswith("mobilevit.encoder.layer.3.")} == {
        P.INT8_DYNAMIC
    }
    assert layers["mobilevit.encoder.layer.4.conv_kxk.convolution"] == P.FP32
    assert set(signature_dtypes(tmp_path / "five" / component.model_file).values()) == {"float32"}
    assert component.verification.outputs[0].centered_sqnr_db > 0


def test_a_recipe_that_misses_the_float_layers_fails_the_export(
    mobilevit, convert_once, tmp_path, monkeypatch
):
    """The trap of regexes that match no tensor name: the float rules select nothing, so every
    layer gets the int8 default. The read-back names a float-planned layer."""
    monkeypatch.setattr(tflite, "_recipe_rules", lambda ops, precisions, default: [(".*", default)])
    with pytest.raises(
        VerificationError, match=f"layer '{QUERY}' is int8 in the artifact, planned fp32"
    ):
        export_artifact(
            mobilevit,
            "tflite",
            tmp_path,
            plan=attention_float_plan(mobilevit.module),
            name="planted",
            calibration={"model": synthetic_calibration(mobilevit, count=4)},
        )
    manifest = read_manifest(tmp_path / "planted")
    assert manifest.status == "failed" and manifest.component().quant.status == "failed"
    assert manifest.component().quant.counts == {"int8": LAYER_COUNT}


def test_read_back_reads_the_file_not_the_plan(artifacts, mobilevit, tmp_path):
    """One int8 spec read against files of other precisions reports each file's own precision;
    and a copy of the int8 file whose classifier tensors lost their module path reports the
    classifier missing."""
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import Builder

    spec = quant_spec(named_plan("int8", mobilevit.module), mobilevit.module)
    exporter = TFLiteExporter()
    for name, precision in [("fp32", P.FP32), ("int8-weight", P.INT8_WEIGHT), ("fp16", P.FP16)]:
        read = exporter.read_layer_precisions(model_file(artifacts, name), spec)
        assert {read[path] for path in spec.layers} == {precision}, name
        assert {read[block] for block in spec.matmuls} == {P.FP32}, name

    model = schema.ModelT.InitFromPackedBuf(model_file(artifacts, "int8").read_bytes(), 0)
    for tensor in model.subgraphs[0].tensors:
        if b"Linear_classifier" in tensor.name:
            tensor.name = b"renamed"
    builder = Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    planted = tmp_path / "model.tflite"
    planted.write_bytes(builder.Output())
    check = check_realized(
        spec, exporter.read_layer_precisions(planted, spec), evidence=exporter.layer_evidence
    )
    assert check.failures == ["layer 'classifier' (planned int8) is not in the exported graph"]


@dataclasses.dataclass(frozen=True)
class SpecWithClasses(QuantSpec):
    """A spec that carries the traced module's class names, which read-back then matches."""

    module_types: dict[str, str] = dataclasses.field(default_factory=dict, compare=False)


def test_read_back_with_class_names_finds_the_same_layers(artifacts, mobilevit):
    plan = attention_float_plan(mobilevit.module)
    plain = quant_spec(plan, mobilevit.module)
    with_classes = SpecWithClasses(
        plan=plan,
        layers=plain.layers,
        module_prefix=plain.module_prefix,
        module_types=tflite.module_types(mobilevit.module),
    )
    path = model_file(artifacts, "attention-float")
    read = TFLiteExporter().read_layer_precisions(path, with_classes)
    assert read == realized(artifacts[1]["attention-float"]) == plain.layers


def test_static_int8_without_calibration_is_refused_before_converting(
    mobilevit, tmp_path, monkeypatch
):
    def must_not_run(*args, **kwargs):
        raise AssertionError("converted although the export cannot calibrate")

    monkeypatch.setattr("litert_torch.convert", must_not_run)
    with pytest.raises(ExportError, match="calibration") as raised:
        export_artifact(mobilevit, "tflite", tmp_path, plan=named_plan("int8", mobilevit.module))
    assert "--calib" in raised.value.hint and "int8-dynamic" in raised.value.hint


# --- 4-bit weights (int4-weight) -----------------------------------------------------------------

# Every Linear layer (the transformer blocks and the classifier) and one 1x1 convolution at 4 bits,
# the rest int8-weight: FULLY_CONNECTED and CONV_2D ops with 4-bit weights. All of tiny-mobilevit
# at 4 bits measures about -5 dB (its random weights' rounding compounds over 83 layers: under any
# gate); this plan 13.4 dB in PyTorch, 13.2 dB as exported.
INT4_OVERRIDES = (
    "mobilevit.encoder.layer.2.transformer",
    "mobilevit.encoder.layer.3.transformer",
    "mobilevit.encoder.layer.4.transformer",
    "mobilevit.conv_1x1_exp",
    "classifier",
)


def int4_plan() -> QuantPlan:
    return QuantPlan(default=P.INT8_WEIGHT, overrides=dict.fromkeys(INT4_OVERRIDES, P.INT4_WEIGHT))


@pytest.fixture(scope="module")
def int4_artifact(mobilevit, convert_once, tmp_path_factory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("quant-tflite-int4")
    return out, export_plan(mobilevit, int4_plan(), out, "int4")


def test_int4_weights_are_realized_read_back_and_verified(int4_artifact, artifacts, mobilevit):
    out, manifest = int4_artifact
    component = manifest.component()
    spec = quant_spec(int4_plan(), mobilevit.module)
    int4 = spec.layers_at(P.INT4_WEIGHT)
    modules = quantizable_layers(mobilevit.module)
    assert {tflite._layer_op_kind(modules[path]) for path in int4} == {"CONV_2D", "FULLY_CONNECTED"}
    assert component.quant.status == "passed", component.quant.failures
    assert realized(manifest) == spec.layers
    assert component.quant.counts == {"int4-weight": 56, "int8-weight": LAYER_COUNT - 56}
    # The gate of every quantized artifact (QUANTIZED_TOLERANCE, or the input-blind floor).
    assert manifest.status == "verified", component.verification.message
    assert component.verification.numerics_checked

    # What the file holds: the 4-bit weights packed two to a byte, the others int8, and no
    # float copy of either.
    constants = constant_bytes(out / "int4" / component.model_file)
    assert constants["INT4"] == sum((modules[path].weight.numel() + 1) // 2 for path in int4)
    assert constants["INT8"] == layer_weight_count(mobilevit, spec.layers_at(P.INT8_WEIGHT))
    # Against the int8-weight file quantized from the same float file: smaller by the planned
    # half byte per 4-bit weight (the graphs are the same; only the weight data differ), give or
    # take the padding of each weight buffer to 16 bytes. (Measured: exactly the 24,896 planned.)
    saved = artifacts[1]["int8-weight"].component().size_bytes - component.size_bytes
    planned = layer_weight_count(mobilevit, int4) / 2
    assert abs(saved - planned) <= 16 * len(int4), (saved, planned)


def test_layer_kinds_are_the_ops_litert_torch_writes(int4_artifact, convert_once, mobilevit):
    """The op each layer is predicted to become, which decides whether it may take 4 bits
    before converting, is the op the converted file has for it."""
    (float_file,) = convert_once.values()
    ops = tflite._read_ops(float_file.read_bytes())
    spec = quant_spec(int4_plan(), mobilevit.module)
    found = tflite._layer_ops(ops, spec, tflite.module_types(mobilevit.module))
    modules = quantizable_layers(mobilevit.module)
    kinds = {path: {ops[i].kind for i in found[path]} for path in spec.layers}
    assert kinds == {path: {tflite._layer_op_kind(modules[path])} for path in spec.layers}
    assert sum(kind == {"DEPTHWISE_CONV_2D"} for kind in kinds.values()) == 7


def test_4_bit_depthwise_convolutions_are_refused_before_converting(
    mobilevit, tmp_path, monkeypatch
):
    """ai-edge-quantizer has no 4-bit weight-only config for DEPTHWISE_CONV_2D and would keep
    those layers float without a word: refused up front, naming the layer and the backend."""
    import importlib.metadata

    def must_not_run(*args, **kwargs):
        raise AssertionError("converted although the plan cannot be realized")

    monkeypatch.setattr("litert_torch.convert", must_not_run)
    depthwise = "mobilevit.encoder.layer.0.layer.0.conv_3x3.convolution"
    with pytest.raises(ExportError) as raised:
        export_artifact(
            mobilevit, "tflite", tmp_path, plan=named_plan("int4-weight", mobilevit.module)
        )
    version = importlib.metadata.version("ai-edge-quantizer")
    assert raised.value.message == (
        f"TFLite cannot realize int4-weight for layer '{depthwise}' (and 6 more layers): it "
        f"becomes a DEPTHWISE_CONV_2D op, and ai-edge-quantizer {version} gives 4-bit weights "
        "only to CONV_2D, FULLY_CONNECTED ops. Plan int8-weight for those layers."
    )
    assert not list(tmp_path.iterdir())
    # The same plan with those layers at int8-weight passes the check.
    modules = quantizable_layers(mobilevit.module)
    kept = {
        p: P.INT8_WEIGHT
        for p, m in modules.items()
        if tflite._layer_op_kind(m) == "DEPTHWISE_CONV_2D"
    }
    plan = QuantPlan(default=P.INT4_WEIGHT, overrides=kept)
    spec = quant_spec(plan, mobilevit.module)
    assert TFLiteExporter().plan_unsupported_reason(spec, mobilevit) is None


def test_a_4_bit_layer_written_with_8_bits_fails_the_export(
    mobilevit, convert_once, tmp_path, monkeypatch
):
    """The recipe planted with one more rule giving one 4-bit layer's op 8-bit weights: the
    file is still a valid int8/int4 model, and only the read-back can tell."""
    real_rules = tflite._recipe_rules
    planted = []

    def one_layer_at_8_bits(ops, precisions, default):
        index = next(
            i
            for i, (op, precision) in enumerate(zip(ops, precisions, strict=True))
            if precision == P.INT4_WEIGHT and op.kind in tflite._LAYER_OPS
        )
        planted.append(ops[index])
        rule = (tflite._exact([ops[index].scope]) + "(?#planted)", P.INT8_WEIGHT)
        return [*real_rules(ops, precisions, default), rule]

    monkeypatch.setattr(tflite, "_recipe_rules", one_layer_at_8_bits)
    with pytest.raises(
        VerificationError, match="is int8-weight in the artifact, planned int4-weight"
    ):
        export_artifact(mobilevit, "tflite", tmp_path, plan=int4_plan(), name="planted")
    check = read_manifest(tmp_path / "planted").component().quant
    assert len(planted) == 1 and check.status == "failed" and len(check.failures) == 1
    assert check.counts == {"int4-weight": 55, "int8-weight": LAYER_COUNT - 55}


def test_4_bit_weights_read_back_only_when_computed_in_float():
    """INT4 through a DEQUANTIZE into a float op is int4-weight; INT4 straight into a float op
    would be a hybrid kernel quantizing activations per run, which no edgekit precision is."""
    from edgekit.errors import ArtifactError

    layer = op("FULLY_CONNECTED", location("l.Linear_a"))
    dequantized = dataclasses.replace(layer, weight_dequantized_from="INT4")
    assert tflite._realized_precision("a", [dequantized]) == P.INT4_WEIGHT
    hybrid = dataclasses.replace(layer, weight_dtype="INT4")
    with pytest.raises(ArtifactError, match="INT4 weights"):
        tflite._realized_precision("a", [hybrid])


# Layer ops from tensor names, without converting: the fused names litert-torch writes.
ROOT = "edgekit.Wrapper"
MODEL = "m.Model_model"
NO_CLASSES: dict[str, str] = {}  # what read-back has from a spec that carries no class names


def location(*segments: str) -> str:
    return "/".join((ROOT, MODEL, *segments)) + ";"


def op(kind: str, *locations: str) -> tflite._Op:
    name = ";".join(locations) + "1"  # fused locations are joined by ";", then a counter
    return tflite._Op(
        kind=kind,
        scope=name + ";",
        locations=tuple(tflite._locations(name)),
        activation_dtype="FLOAT32",
        weight_dtype="FLOAT32",
        weight_dequantized_from=None,
    )


def spec_of(*paths: str) -> QuantSpec:
    return QuantSpec(
        plan=QuantPlan(default=P.INT8),
        layers=dict.fromkeys(paths, P.INT8),
        module_prefix="model.",
    )


def path_of(path: str, types=NO_CLASSES) -> tflite._ModulePath:
    return tflite._module_path(spec_of(path), path, types)


def test_fused_projections_are_told_apart_by_elimination():
    """The key projection's name also carries the query's (and the LayerNorm before both)."""
    norm = location("a.Block_0", "n.LayerNorm_norm")
    query = location("a.Block_0", "a.Attention_attn", "l.Linear_query")
    key = location("a.Block_0", "a.Attention_attn", "l.Linear_key")
    ops = [op("FULLY_CONNECTED", norm, key, query), op("FULLY_CONNECTED", norm, query)]
    spec = spec_of("blocks.0.attn.query", "blocks.0.attn.key")
    found = tflite._layer_ops(ops, spec, NO_CLASSES)
    assert found == {"blocks.0.attn.key": [0], "blocks.0.attn.query": [1]}


def test_without_class_names_only_an_uncalled_list_may_be_skipped():
    """`blocks.0` shows as `Block_0` (the ModuleList is never called), but a location of
    `blocks.1.conv` must not pass for `blocks.0.inner.1.conv` by skipping called modules."""
    (conv,) = tflite._locations(location("a.Block_1", "c.Conv2d_conv"))
    assert tflite._spells(conv, path_of("blocks.1.conv"), whole=True)
    assert not tflite._spells(conv, path_of("blocks.0.inner.1.conv"), whole=True)
    assert tflite._spells(conv, path_of("blocks.1"), whole=False)
    assert not tflite._spells(conv, path_of("blocks.1"), whole=True)


# A UNet-like model whose `down_blocks.0` and `up_blocks.0` differ only by class.
LOOK_ALIKE_TYPES = {
    "": ROOT,
    "model": "m.Model",
    "model.down_blocks": "torch.nn.modules.container.ModuleList",
    "model.down_blocks.0": "d.DownBlock",
    "model.down_blocks.0.conv": "c.Conv2d",
    "model.up_blocks": "torch.nn.modules.container.ModuleList",
    "model.up_blocks.0": "u.UpBlock",
    "model.up_blocks.0.conv": "c.Conv2d",
}


def test_class_names_tell_look_alike_list_items_apart():
    """A UNet's `down_blocks.0` and `up_blocks.0` are both `..._0` in tensor names; only their
    classes differ. Without them both layers stay unassigned (missing), never guessed."""
    down = location("d.DownBlock_0", "c.Conv2d_conv")
    up = location("u.UpBlock_0", "c.Conv2d_conv")
    ops = [op("CONV_2D", down), op("CONV_2D", up)]
    spec = spec_of("down_blocks.0.conv", "up_blocks.0.conv")
    assert tflite._layer_ops(ops, spec, NO_CLASSES) == {}
    found = tflite._layer_ops(ops, spec, LOOK_ALIKE_TYPES)
    assert found == {"down_blocks.0.conv": [0], "up_blocks.0.conv": [1]}


def test_short_names_and_litert_torch_s_qualified_names_find_the_same_layers():
    """edgekit writes `Class_attr` segments; files from before (or from litert-torch directly)
    carry `package.module.Class_attr`. With class names known, both spellings match."""
    spec = spec_of("down_blocks.0.conv", "up_blocks.0.conv")
    qualified = [
        op("CONV_2D", location("d.DownBlock_0", "c.Conv2d_conv")),
        op("CONV_2D", location("u.UpBlock_0", "c.Conv2d_conv")),
    ]
    short = [
        op("CONV_2D", tflite.short_tensor_name(location("d.DownBlock_0", "c.Conv2d_conv"))),
        op("CONV_2D", tflite.short_tensor_name(location("u.UpBlock_0", "c.Conv2d_conv"))),
    ]
    short_location = ("Wrapper", "Model_model", "DownBlock_0", "Conv2d_conv")
    assert short[0].locations == qualified[0].locations == (short_location,)
    expected = {"down_blocks.0.conv": [0], "up_blocks.0.conv": [1]}
    assert tflite._layer_ops(qualified, spec, LOOK_ALIKE_TYPES) == expected
    assert tflite._layer_ops(short, spec, LOOK_ALIKE_TYPES) == expected


def test_exported_tensor_names_carry_no_python_modules(artifacts):
    """The written file's module stacks are `Class_attr` only (the bytes saved are recorded),
    and its layers still read back by them (the plan check passed)."""
    from ai_edge_litert import schema_py_generated as schema

    manifest = artifacts[1]["int8"]
    component = manifest.component()
    assert component.quant.status == "passed"
    assert component.export.details["tensor_name_bytes_saved"] > 0
    model = schema.Model.GetRootAs(model_file(artifacts, "int8").read_bytes(), 0)
    graph = model.Subgraphs(0)
    names = [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())]
    stacks = [n for n in names if ";" in n]
    assert stacks and not [n for n in stacks if "transformers.models" in n or "torch.nn" in n]
    assert any("MobileViTConvLayer_conv_stem" in n for n in stacks)


def test_an_op_no_name_tells_apart_stays_unassigned():
    both = (location("l.Linear_a"), location("l.Linear_b"))
    found = tflite._layer_ops([op("FULLY_CONNECTED", *both)] * 2, spec_of("a", "b"), NO_CLASSES)
    assert found == {}


def test_module_types_are_the_names_litert_torch_writes(mobilevit):
    types = tflite.module_types(mobilevit.module)
    assert types[""] == "edgekit.models.mobilevit.MobileViTClassifier"
    assert types[f"model.{STEM}"] == "torch.nn.modules.conv.Conv2d"


# --- Over the flatbuffer limit: PT2E quantization before lowering ------------------------------


def limit_between(model, plan: QuantPlan) -> int:
    """A flatbuffer limit that the model's fp32 weights reach and `plan`'s int8 weights fit
    under: what the 2 GB limit is to sd15-unet, at tiny scale."""
    spec = quant_spec(plan, model.module)
    fp32 = tflite.fp32_weight_bytes(model.module)
    planned = tflite.planned_weight_bytes(model.module, spec.layers)
    assert planned < fp32 / 2, (planned, fp32)
    return (fp32 + planned) // 2


def constant_bytes(path: Path) -> dict[str, int]:
    """Bytes of constant data in the file per tensor dtype, read from its buffers."""
    from ai_edge_litert import schema_py_generated as schema

    dtypes = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    found: dict[str, int] = {}
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        size = model.Buffers(tensor.Buffer()).DataLength()
        if size:
            found[dtypes[tensor.Type()]] = found.get(dtypes[tensor.Type()], 0) + size
    return found


def layer_weight_count(model, layers) -> int:
    modules = quantizable_layers(model.module)
    return sum(modules[path].weight.numel() for path in layers)


@pytest.fixture(scope="module")
def tiny_unet():
    return models.load_pipeline("tiny-sd", components=["unet"])


def export_over_limit(model, component, plan: QuantPlan, out: Path, name: str) -> Manifest:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tflite, "FLATBUFFER_LIMIT_BYTES", limit_between(component, plan))
        export_artifact(model, "tflite", out, plan=plan, name=name)
    return read_manifest(out / name)


@pytest.mark.slow  # PT2E conversions, about a minute each; the planted one runs by default
@pytest.mark.parametrize("precision", [P.INT8_WEIGHT, P.INT8_DYNAMIC])
@pytest.mark.parametrize("which", ["tiny-mobilevit", "tiny-sd-unet"])
def test_over_the_limit_int8_exports_through_pt2e(which, precision, mobilevit, tiny_unet, tmp_path):
    """fp32 weights over the limit, int8 weights under it: litert-torch quantizes in PyTorch
    before lowering, and the file holds int8 weights (no fp32 copy of them), every layer reads
    back as planned, and the artifact passes numeric verification."""
    model = mobilevit if which == "tiny-mobilevit" else tiny_unet
    component = mobilevit if which == "tiny-mobilevit" else tiny_unet.components["unet"]
    plan = QuantPlan(default=precision)
    manifest = export_over_limit(model, component, plan, tmp_path, "pt2e")
    entry = manifest.component()
    assert manifest.status == "verified", entry.verification.message
    assert entry.export.details["quantizer"] == "litert_torch PT2E (before lowering)"
    layers = quant_spec(plan, component.module).layers
    assert entry.quant.status == "passed", entry.quant.failures
    assert entry.quant.counts == {precision.value: len(layers)}
    assert entry.verification.numerics_checked and entry.verification.status == "passed"

    path = tmp_path / "pt2e" / entry.model_file
    constants = constant_bytes(path)
    weights = layer_weight_count(component, layers)
    assert constants["INT8"] >= weights
    # Float constants are what no plan quantizes (biases, norms) and a few scalars the converter
    # makes (timestep frequencies): less than the smallest layer's weight in fp32, so no
    # weight kept an fp32 copy.
    unquantized = tflite.fp32_weight_bytes(component.module) - tflite.FP32_BYTES * weights
    smallest = min(layer_weight_count(component, [path]) for path in layers)
    assert constants["FLOAT32"] - unquantized < tflite.FP32_BYTES * smallest
    ops = entry.export.details["op_histogram"]
    if precision == P.INT8_WEIGHT:
        assert ops["DEQUANTIZE"] == len(layers)  # one per weight, computed in float
    else:
        assert "DEQUANTIZE" not in ops  # hybrid conv/FC ops take the int8 weights
    assert set(signature_dtypes(path).values()) <= {"float32", "int32"}


@pytest.mark.slow  # PT2E conversions, about a minute each; the planted one runs by default
def test_pt2e_keeps_planned_layers_float(mobilevit, tmp_path):
    """Per layer: PT2EQuantizer's own module selectors match nothing under torch 2.13, so the
    plan's layers are chosen by module path; an fp32 attention block stays fp32 beside
    int8-weight layers."""
    plan = QuantPlan(default=P.INT8_WEIGHT, overrides={BLOCK: P.FP32})
    manifest = export_over_limit(mobilevit, mobilevit, plan, tmp_path, "per-layer")
    component = manifest.component()
    assert manifest.status == "verified", component.verification.message
    assert component.quant.status == "passed", component.quant.failures
    layers = realized(manifest)
    assert {p: v for p, v in layers.items() if p.startswith(BLOCK + ".")} == dict.fromkeys(
        [f"{BLOCK}.attention.{n}" for n in ("query", "key", "value")] + [f"{BLOCK}.output.dense"],
        P.FP32,
    )
    assert component.quant.counts == {"fp32": 4, "int8-weight": LAYER_COUNT - 4}


def test_pt2e_weight_only_without_strict_qdq_is_caught(mobilevit, tmp_path, monkeypatch):
    """Without the converter's strict QDQ mode, litert-torch folds a linear layer's weight-only
    int8 weight back into float32 (convolutions keep theirs): the read-back names it."""
    monkeypatch.setattr(tflite, "_strict_qdq_conversion", lambda enabled: contextlib.nullcontext())
    plan = QuantPlan(default=P.INT8_WEIGHT)
    with pytest.raises(VerificationError, match="layer '[^']+' is fp32 in the artifact, planned"):
        export_over_limit(mobilevit, mobilevit, plan, tmp_path, "planted")
    component = read_manifest(tmp_path / "planted").component()
    linear = {
        p for p, m in quantizable_layers(mobilevit.module).items() if type(m).__name__ == "Linear"
    }
    assert {
        p for p, v in realized(read_manifest(tmp_path / "planted")).items() if v == P.FP32
    } == linear
    assert component.quant.counts == {"fp32": len(linear), "int8-weight": LAYER_COUNT - len(linear)}


@pytest.mark.parametrize(
    ("plan", "reason"),
    [
        (QuantPlan(default=P.FP32), "this plan (fp32) keeps every weight in fp32"),
        (QuantPlan(default=P.INT8), f"not int8 as the plan asks for layer '{STEM}'"),
        (QuantPlan(default=P.FP16), "not fp16 as the plan asks for layer"),
        (
            QuantPlan(default=P.INT8_WEIGHT, overrides={BLOCK: P.INT8_DYNAMIC}),
            "either with int8-weight or with int8-dynamic layers, and this plan asks for both",
        ),
        (
            QuantPlan(default=P.FP32, overrides={"classifier": P.INT8_WEIGHT}),
            "this plan (mixed) would still put",
        ),
        (
            QuantPlan(default=P.INT8_DYNAMIC, overrides={BLOCK: P.FP32}),
            f"cannot keep layer '{QUERY}' fp32",
        ),
    ],
)
def test_over_the_limit_plans_that_do_not_fit_are_refused_before_converting(
    mobilevit, tmp_path, monkeypatch, plan, reason
):
    def must_not_run(*args, **kwargs):
        raise AssertionError("converted although the plan cannot fit")

    monkeypatch.setattr("litert_torch.convert", must_not_run)
    monkeypatch.setattr(tflite, "_convert_pt2e", must_not_run)
    monkeypatch.setattr(
        tflite, "FLATBUFFER_LIMIT_BYTES", limit_between(mobilevit, QuantPlan(default=P.INT8))
    )
    with pytest.raises(ExportError) as raised:
        export_artifact(mobilevit, "tflite", tmp_path, plan=plan)
    error = raised.value
    assert "2 GB limit" in error.message and reason in error.message
    assert "--quant int8-weight or --quant int8-dynamic fit" in error.hint
    assert "--target onnx" in error.hint
    assert not list(tmp_path.glob("*/manifest.json"))


def test_a_model_that_int8_cannot_bring_under_the_limit_is_refused(
    mobilevit, tmp_path, monkeypatch
):
    monkeypatch.setattr(tflite, "FLATBUFFER_LIMIT_BYTES", 1024)
    with pytest.raises(ExportError) as raised:
        export_artifact(mobilevit, "tflite", tmp_path, plan=QuantPlan(default=P.INT8_WEIGHT))
    assert "would still put" in raised.value.message
    assert raised.value.hint.startswith("even int8 weights do not fit")


def test_models_under_the_limit_keep_ai_edge_quantizer(artifacts):
    for name in ("int8-weight", "int8-dynamic"):
        details = artifacts[1][name].component().export.details
        assert details["quantizer"] == "ai_edge_quantizer", name


@pytest.mark.slow  # PT2E conversions, about a minute each; the planted one runs by default
def test_sd15_int8_bench_script_rehearses_on_tiny_sd(tiny_unet, tmp_path):
    """benchmarks/bench_sd15_unet_tflite_int8.py on the tiny UNet, the limit pretended small:
    it exports through PT2E and records the times, both peaks, the read-back and verification."""
    import json
    import subprocess
    import sys

    limit = limit_between(tiny_unet.components["unet"], QuantPlan(default=P.INT8_WEIGHT))
    script = Path(__file__).parent.parent / "benchmarks" / "bench_sd15_unet_tflite_int8.py"
    args = ["--preset", "tiny-sd", "--limit-bytes", str(limit), "--results-dir", str(tmp_path)]
    subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True)
    record = json.loads((tmp_path / f"tiny-sd-tflite-int8-{platform.machine()}.json").read_text())
    result = record["result"]
    assert result["outcome"] == "exported" and result["status"] == "verified", result
    assert result["details"]["quantizer"] == "litert_torch PT2E (before lowering)"
    assert result["plan_check"] == "passed" and list(result["realized_layers"]) == ["int8-weight"]
    assert result["size_bytes"] < limit < result["fp32_weight_bytes"]
    # Each phase's own peak: a process that loaded torch and the converter holds over 100 MiB.
    assert min(result["peak_rss_export_bytes"], result["peak_rss_verify_bytes"]) > 100 * 2**20
    assert result["export_s"] + result["verify_s"] <= result["wall_s"]
    table = (tmp_path / f"tiny-sd-tflite-int8-{platform.machine()}.md").read_text()
    assert "| exported |" in table and "passed int8-weight: 83" in table
