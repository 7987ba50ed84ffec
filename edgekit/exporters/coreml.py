"""Core ML `.mlpackage` (ML program) through torch.export -> coremltools.

Core ML runs only on Apple platforms: coremltools converts and saves anywhere, but its
`MLModel.predict` exists only on macOS. Off macOS the artifact is verified by structure (IO
names/shapes/dtypes, deployment target, op histogram, weight dtypes) and the manifest says
plainly that numerics were not checked ("Model prediction is only supported on macOS").

The input to coremltools is an ATen-dialect `ExportedProgram`, not a TorchScript trace:
`ct.convert` of a `torch.jit.trace` breaks under numpy 2.4, the torch.export path does not.

Quantization plans are realized with coremltools.optimize: int8 or 4-bit weights (per-channel,
stored int8/int4 and dequantized by `constexpr_*` ops at load; 4-bit from iOS18) through
`linear_quantize_weights`, int8 activations through `linear_quantize_activations`, float layers
at fp16 or fp32. Per-layer configs are keyed by the names of the layers' weight consts, and those
names are made by edgekit: coremltools folds each BatchNorm into its convolution and names the
folded weight `const_382`, which says nothing about the layer. So every fx node is tagged with a
debug handle before conversion (coremltools carries handles through its passes as op scopes, the
folded conv taking its BatchNorm's), and a pass at the end of conversion names each layer's
weight after the layer: `p_<module path with _ for .>_weight` (torch.export's name of that
parameter). The package is thereby self-describing: the plan check reads the layers back by
those names, from the file.

Attention products (Q K^T, softmax V) stay float: edgekit quantizes Core ML activations only at
the inputs of the planned conv/linear ops, so a plan with int8 products is refused naming the
block. The read-back checks the program's activation-by-activation `matmul` ops as a whole (the
package keeps no module path on them): none taking a dequantized operand reads as every planned
block's products float; any, as int8, which fails the float plan.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import platform
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import NoHostRuntimeError, UnknownChoiceError
from edgekit.exporters import ExportResult
from edgekit.quant.plan import FLOAT_PRECISIONS, LayerPrecision, matmul_refusal

if TYPE_CHECKING:
    import numpy as np

    from edgekit.models.base import LoadedModel, TensorSpec
    from edgekit.profiles import RuntimeSettings
    from edgekit.quant.spec import QuantSpec
    from edgekit.validate import StructureCheck

log = logging.getLogger(__name__)

DEFAULT_DEPLOYMENT_TARGET = "iOS17"
# ML programs (typed fp16 weights, Neural Engine) start at iOS15 / macOS12; older targets would
# make coremltools produce the legacy neural-network format instead.
MIN_ML_PROGRAM_TARGET = "iOS15"
# Load-time choice of processors (MLComputeUnits); not stored in the package, so it is recorded
# in the manifest and used when the artifact is loaded on a Mac.
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
# edgekit precision -> (coremltools.precision member, dtype the weights must have in the package).
PRECISIONS = {"fp16": ("FLOAT16", "float16"), "fp32": ("FLOAT32", "float32")}
FLOAT_WEIGHT_DTYPES = ("float16", "bfloat16", "float32", "float64")
# A const this big is a real weight (a 32x32 matrix or more), not a scalar or a shape literal.
# The fp16 UNet keeps two 1-element fp32 consts (timestep arithmetic); those must not fail it.
LARGE_WEIGHT_MIN_ELEMENTS = 1024
# Offending weights named in a failure, so the message stays one readable line.
MAX_NAMED_WEIGHTS = 3
# numpy dtype name -> Core ML multi-array dtype (ArrayFeatureType.ArrayDataType).
IO_DTYPES = {"float32": "FLOAT32", "float16": "FLOAT16", "float64": "DOUBLE", "int32": "INT32"}
ML_PROGRAM = "mlProgram"
DEBUG_MAPPING_FILE = "executorch_debug_handle_mapping.json"

# Quantization. Int8 weights are constexpr ops, which ML programs have from iOS16; int8
# activations (quantize/dequantize ops, calibrated) from iOS17; 4-bit weights from iOS18 (the
# constexpr_blockwise_shift_scale op; coremltools refuses int4 for older targets).
MIN_QUANT_TARGETS = {
    LayerPrecision.INT8_WEIGHT: "iOS16",
    LayerPrecision.INT8: "iOS17",
    LayerPrecision.INT4_WEIGHT: "iOS18",
}
# Ops that hold a weight in int8 (or int4) and dequantize it when the model loads: the iOS16/17 op
# (data in its attributes) and the iOS18 one (data from an int8/int4 const input).
DEQUANTIZING_WEIGHT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")
INT8_DTYPES = ("int8", "uint8")
INT4_DTYPES = ("int4", "uint4")
# The op an int8-activation (W8A8) layer's input comes from: int8 values back to float.
ACTIVATION_DEQUANTIZE_OP = "dequantize"
# coremltools' linear quantizer for both weights and activations. Per-channel symmetric int8 is
# what the other targets use for weights too; weight_threshold=0 because a plan that asks a layer
# for int8 means it, however small the layer (the default 2048 silently skips small weights).
LINEAR_QUANTIZER = {"mode": "linear_symmetric", "dtype": "int8"}
WEIGHT_GRANULARITY = "per_channel"
# The stored weight dtype of each quantized precision: int4-weight the same linear symmetric
# per-channel quantizer with 4-bit data (range -7..7, scale max|w| / 7).
WEIGHT_DTYPES = {
    LayerPrecision.INT8: "int8",
    LayerPrecision.INT8_WEIGHT: "int8",
    LayerPrecision.INT4_WEIGHT: "int4",
}
# torch.export ops whose BatchNorm coremltools folds into the conv before it; the folded conv
# inherits the BatchNorm's scope, so the BatchNorm is tagged as part of the conv's layer.
BATCH_NORM_OP = "batch_norm"
# The graph pass, run last in conversion, that names every layer's weight const after the layer.
NAMING_PASS = "edgekit::name_layer_weights"
LAYER_EVIDENCE = (
    "per conv/linear op of the ML program: the weight feeding it, found by the layer name "
    "edgekit gives its const (fp16/fp32 const, or int8/int4 constexpr dequantize op), and "
    "whether its input comes from a dequantize op (int8 activations)"
)
# coremltools 9 collects activation ranges by running the float model with MLModel.predict
# (optimize.coreml.experimental ModelDebugger), which raises "Model prediction is only supported
# on macOS" elsewhere.
NO_ACTIVATION_CALIBRATION = (
    "Core ML cannot realize int8 for layer '{path}'{more} on {system}: its int8 activations "
    "are calibrated by running the model (coremltools' linear_quantize_activations), and Core "
    "ML runs only on macOS. Plan int8-weight for those layers here, or export on a Mac."
)
NO_INT8_PRODUCTS = (
    "edgekit quantizes Core ML activations only at conv/linear inputs (coremltools' "
    "linear_quantize_activations, op by op)"
)
CONVERTER = "coremltools.convert(torch.export.export(strict=False).run_decompositions({}))"

# platform.system() where Core ML (and so MLModel.predict) exists.
CORE_ML_HOST = "Darwin"
HOST_ONLY = "Core ML models can only run on macOS/iOS; this host is {system}"
NO_RUNTIME_HERE = HOST_ONLY + "."
NOT_LOADABLE = HOST_ONLY + ", so this artifact cannot be loaded or timed here."


class CoreMLExporter:
    name = "coreml"
    display_name = "Core ML"
    # No int8-dynamic: Core ML has no per-run activation quantization.
    layer_precisions = (
        LayerPrecision.FP32,
        LayerPrecision.FP16,
        LayerPrecision.INT8_WEIGHT,
        LayerPrecision.INT8,
        LayerPrecision.INT4_WEIGHT,
    )
    layer_evidence = LAYER_EVIDENCE
    runtime_modules = ("coremltools",)
    tool_packages = ("coremltools",)
    file_suffix = ".mlpackage"  # a folder; manifest file entries list what is inside it
    # apple/ml-stable-diffusion's Swift package loads these resource names (after compiling the
    # packages to .mlmodelc with `xcrun coremlcompiler compile`), beside vocab.json/merges.txt.
    component_file_names = {
        "text-encoder": "TextEncoder.mlpackage",
        "unet": "Unet.mlpackage",
        "vae-decoder": "VAEDecoder.mlpackage",
    }

    def __init__(
        self,
        *,
        minimum_deployment_target: str = DEFAULT_DEPLOYMENT_TARGET,
        compute_units: str = "ALL",
    ) -> None:
        if compute_units not in COMPUTE_UNITS:
            raise UnknownChoiceError(
                "Core ML compute units",
                compute_units,
                list(COMPUTE_UNITS),
                hint="ALL lets Core ML pick CPU, GPU or Neural Engine per op.",
            )
        # The target name is checked against coremltools in model_unsupported_reason(), so building
        # an exporter (the CLI does it before loading a model) does not import coremltools.
        self.minimum_deployment_target = minimum_deployment_target
        self.compute_units = compute_units

    def model_unsupported_reason(self, model: LoadedModel) -> str | None:
        for spec in [*model.inputs, *model.outputs]:
            if spec.dtype not in IO_DTYPES:
                return (
                    f"Core ML inputs and outputs must be one of {', '.join(IO_DTYPES)}; "
                    f"'{spec.name}' is {spec.dtype}."
                )
        ct = _coremltools()
        target = _deployment_target(self.minimum_deployment_target)
        if target < getattr(ct.target, MIN_ML_PROGRAM_TARGET):
            return (
                "Core ML export writes ML programs, which need "
                f"{MIN_ML_PROGRAM_TARGET} (macOS12) or newer, not {self.minimum_deployment_target}."
            )
        return None

    def plan_unsupported_reason(self, quant: QuantSpec, model: LoadedModel) -> str | None:
        if quant.int8_matmuls:
            return matmul_refusal(self.display_name, quant.int8_matmuls, NO_INT8_PRODUCTS)
        target = _deployment_target(self.minimum_deployment_target)
        for precision, oldest in MIN_QUANT_TARGETS.items():
            paths = quant.layers_at(precision)
            if paths and target < _deployment_target(oldest):
                return (
                    f"Core ML cannot realize {precision} for layer '{paths[0]}'{_more(paths)} "
                    f"before {oldest}; the deployment target is {self.minimum_deployment_target}."
                )
        int8 = quant.layers_at(LayerPrecision.INT8)
        if int8 and not _can_calibrate_activations():
            return NO_ACTIVATION_CALIBRATION.format(
                path=int8[0], more=_more(int8), system=platform.system()
            )
        if int8 and quant.calibration is None:
            return (
                f"Core ML cannot realize int8 for layer '{int8[0]}'{_more(int8)} without "
                "calibration inputs: int8 activations take their ranges from them."
            )
        return None

    def export(
        self,
        model: LoadedModel,
        sample_inputs: dict[str, np.ndarray],
        model_path: Path,
        *,
        quant: QuantSpec,
    ) -> ExportResult:
        import numpy as np

        ct = _coremltools()
        debug = log.isEnabledFor(logging.DEBUG)

        # 1. ATen-dialect program: what coremltools' torch.export frontend accepts. Its nodes are
        # tagged so each layer's ops can be found after conversion (module docstring).
        # run_decompositions returns a new program: the shared one (traced once per component
        # for every exporter) stays as it is, while the tagging below edits this copy.
        program = model.exported_program().run_decompositions({})
        removed_aliases = _drop_aliases(program)
        tags = _tag_layers(program, model.module, quant)
        compute_precision_option = _compute_precision(quant, tags)

        # 2. Convert, naming each layer's weight const after the layer. IO dtypes are pinned to
        # the TensorSpecs: with fp16 compute and iOS16+, coremltools would otherwise make the
        # outputs fp16, unlike what the manifest promises.
        _register_naming_pass()
        pipeline = ct.PassPipeline.DEFAULT
        pipeline.append_pass(NAMING_PASS)
        pipeline.set_options(NAMING_PASS, {"weights": tags.weights})
        compute_precision, _ = PRECISIONS[quant.float_precision.value]
        with _quiet_progress_bars(enabled=not debug):
            mlmodel = ct.convert(
                program,
                inputs=[
                    ct.TensorType(name=s.name, shape=tuple(s.shape), dtype=np.dtype(s.dtype))
                    for s in model.inputs
                ],
                outputs=[
                    ct.TensorType(name=s.name, dtype=np.dtype(s.dtype)) for s in model.outputs
                ],
                convert_to="mlprogram",
                compute_precision=compute_precision_option,
                minimum_deployment_target=_deployment_target(self.minimum_deployment_target),
                compute_units=getattr(ct.ComputeUnit, self.compute_units),
                # Loading compiles the model, which needs macOS; runtime() loads it there.
                skip_model_load=True,
                pass_pipeline=pipeline,
            )
            # 3. Quantize the layers the plan quantizes, by their weights' names.
            quantization = _quantize(mlmodel, quant) if quant.is_quantized else None
            if quantization:
                mlmodel = quantization.pop("model")

        # 4. Save, and make the package readable by others like every other artifact file.
        mlmodel.save(str(model_path))
        _drop_debug_mapping(model_path)
        _make_shareable(model_path)
        spec = mlmodel.get_spec()
        op_count = sum(1 for op in _program_operations(spec) if op.type != "const")
        details: dict[str, Any] = {
            "converter": CONVERTER,
            "aliases_removed": removed_aliases,
            "coremltools": ct.__version__,
            "model_type": spec.WhichOneof("Type"),
            "minimum_deployment_target": self.minimum_deployment_target,
            "specification_version": spec.specificationVersion,
            "compute_units": self.compute_units,
            "compute_precision": compute_precision,
            "op_count": op_count,
        }
        if tags.compute_mixed:
            details["compute_precision_by_module"] = tags.compute_mixed
        if quantization:
            details["quantization"] = quantization
        return ExportResult(
            files=sorted(p for p in model_path.rglob("*") if p.is_file()), details=details
        )

    def read_layer_precisions(
        self, model_path: Path, quant: QuantSpec
    ) -> dict[str, LayerPrecision | None]:
        """Each planned layer's precision as the package holds it: the spec alone (no weights,
        no runtime), so it is cheap enough for every export and works off macOS."""
        ct = _coremltools()
        operations = list(_program_operations(ct.utils.load_spec(str(model_path))))
        producers = {output.name: op for op in operations for output in op.outputs}
        realized: dict[str, LayerPrecision] = {}
        for path, op in _layer_ops(operations, quant):
            # A layer called twice has two ops on one weight: the first one speaks for both.
            realized.setdefault(path, _realized_precision(op, producers, path))
        products = _product_precision(operations, producers)
        return {
            **{path: realized.get(path) for path in quant.layers},
            **dict.fromkeys(quant.matmuls, products),
        }

    def host_runtime_unavailable_reason(self) -> str | None:
        system = platform.system()
        return None if system == CORE_ML_HOST else NO_RUNTIME_HERE.format(system=system)

    def check_structure(
        self, model_path: Path, model: LoadedModel, *, quant: QuantSpec
    ) -> StructureCheck:
        """Read the package's spec (no weights, no runtime) and compare it with the model."""
        from edgekit.validate import StructureCheck

        ct = _coremltools()
        try:
            spec = ct.utils.load_spec(str(model_path))
        except Exception as exc:  # a missing or corrupt package is a failed check, not a crash
            log.debug("cannot read %s", model_path, exc_info=True)
            return StructureCheck(
                passed=False, failures=[f"cannot read {model_path.name}: {exc}".strip()]
            )

        failures: list[str] = []
        facts: dict[str, Any] = {"model_type": spec.WhichOneof("Type")}
        if facts["model_type"] != ML_PROGRAM:
            failures.append(f"model type is {facts['model_type']}, not {ML_PROGRAM}")

        asked = int(_deployment_target(self.minimum_deployment_target))
        facts["deployment_target"] = self.minimum_deployment_target
        facts["specification_version"] = spec.specificationVersion
        if spec.specificationVersion != asked:
            failures.append(
                f"specification version {spec.specificationVersion} != {asked} "
                f"({self.minimum_deployment_target} was asked)"
            )

        for kind, features, specs in [
            ("input", spec.description.input, model.inputs),
            ("output", spec.description.output, model.outputs),
        ]:
            found = [_feature_fact(f) for f in features]
            facts[f"{kind}s"] = found
            failures += _io_failures(kind, found, specs)

        if facts["model_type"] == ML_PROGRAM:
            operations = list(_program_operations(spec))
            facts["opsets"] = sorted({f.opset for f in spec.mlProgram.functions.values()})
            # Consts are the weights and literals, accounted for below; the rest is compute.
            histogram = Counter(op.type for op in operations if op.type != "const")
            facts["op_histogram"] = dict(histogram.most_common())
            weight_facts, weight_failures = _weight_precision(operations, quant)
            facts.update(weight_facts)
            failures += weight_failures

        return StructureCheck(passed=not failures, facts=facts, failures=failures)

    def runtime(
        self,
        model_path: Path,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        *,
        settings: RuntimeSettings | None = None,
    ) -> CoreMLRuntime:
        system = platform.system()
        if system != CORE_ML_HOST:
            raise NoHostRuntimeError(
                NOT_LOADABLE.format(system=system),
                hint="run it on a Mac (or in the iOS demo app); bench another --target here.",
            )
        if settings and settings.threads:
            # Core ML schedules its own threads and processors; there is no knob for it.
            log.debug("Core ML ignores threads=%d", settings.threads)
        compute_units = (settings.compute_units if settings else None) or self.compute_units
        return CoreMLRuntime(model_path, outputs, compute_units=compute_units)


class CoreMLRuntime:
    """An `.mlpackage` loaded by Core ML (macOS only): numpy dict in, numpy dict out."""

    name = "coreml"

    def __init__(self, model_path: Path, outputs: list[TensorSpec], *, compute_units: str) -> None:
        ct = _coremltools()
        self.version = ct.__version__
        self.settings = {"compute_units": compute_units}
        self.model = ct.models.MLModel(
            str(model_path), compute_units=getattr(ct.ComputeUnit, compute_units)
        )
        self.output_names = [spec.name for spec in outputs]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        results = self.model.predict(inputs)
        # Outputs in manifest order; anything unexpected is kept so verification can flag it.
        order = [n for n in self.output_names if n in results]
        order += sorted(set(results) - set(self.output_names))
        return {name: np.asarray(results[name]) for name in order}


def _coremltools() -> Any:
    """Import coremltools; without --verbose, drop its import-time version warnings first.

    It warns that torch 2.13 and the installed scikit-learn are untested: true, known (the
    torch.export path converts MobileViT and the SD UNet fine with coremltools 9.0), and noise
    in every export's output. Real errors still show.
    """
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools

    return coremltools


def _deployment_target(name: str) -> Any:
    """'iOS17' -> ct.target.iOS17, or an error listing the targets this coremltools knows."""
    ct = _coremltools()
    target = ct.target.__members__.get(name)
    if target is None:
        raise UnknownChoiceError(
            "Core ML deployment target",
            name,
            list(ct.target.__members__),
            hint=f"e.g. {DEFAULT_DEPLOYMENT_TARGET} or macOS14.",
        )
    return target


@contextlib.contextmanager
def _quiet_progress_bars(*, enabled: bool) -> Iterator[None]:
    """coremltools draws tqdm bars on sys.stderr for every pass; they garble CLI output.

    tqdm looks up sys.stderr when a bar starts, so redirecting it catches them. Anything else
    written to stderr meanwhile (Python warnings) is dropped too; errors still raise, and with
    --verbose (DEBUG) nothing is redirected.
    """
    if not enabled:
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _drop_aliases(program: Any) -> int:
    """Replace `aten.alias` nodes by their input; returns how many there were.

    coremltools 9 has no converter for aten.alias (apple/coremltools#2517, open). CLIP's text
    model produces one from slicing its position-id buffer; in an inference graph an alias is
    the identity, so bypassing it changes nothing numerically.
    """
    import torch

    graph = program.graph_module.graph
    aliases = [n for n in graph.nodes if n.target is torch.ops.aten.alias.default]
    for node in aliases:
        node.replace_all_uses_with(node.args[0])
        graph.erase_node(node)
    if aliases:
        program.graph_module.recompile()
    return len(aliases)


def _drop_debug_mapping(package: Path) -> None:
    """Remove the ExecuTorch debug-handle map coremltools writes beside the model.

    It maps debug handles to MIL ops; the only handles in edgekit's programs are the ones
    `_tag_layers` set, which mean nothing outside one export (the layers' names are in the
    weights' names instead). It is 150-220 KB, a third of the tiny MobileViT package.
    """
    (package / DEBUG_MAPPING_FILE).unlink(missing_ok=True)


def _make_shareable(package: Path) -> None:
    # coremltools 9.0 leaves model.mlmodel at 0600 even under umask 022; publish() makes the
    # artifact folder 0755 so others can use it, so the files inside must be readable too.
    for path in [package, *package.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def _program_operations(spec: Any) -> Iterator[Any]:
    """Every MIL operation of every function, nested blocks (cond, loops) included."""

    def walk(block: Any) -> Iterator[Any]:
        for op in block.operations:
            yield op
            for inner in op.blocks:
                yield from walk(inner)

    if spec.WhichOneof("Type") != ML_PROGRAM:
        return
    for function in spec.mlProgram.functions.values():
        yield from walk(function.block_specializations[function.opset])


def _feature_fact(feature: Any) -> dict[str, Any]:
    """A model description input/output as {name, shape, dtype} in TensorSpec spelling."""
    from coremltools.proto import FeatureTypes_pb2

    kind = feature.type.WhichOneof("Type")
    if kind != "multiArrayType":
        return {"name": feature.name, "shape": None, "dtype": kind}
    array = feature.type.multiArrayType
    core_ml_dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
    numpy_dtype = {v: k for k, v in IO_DTYPES.items()}.get(core_ml_dtype, core_ml_dtype.lower())
    return {"name": feature.name, "shape": list(array.shape), "dtype": numpy_dtype}


def _io_failures(kind: str, found: list[dict[str, Any]], specs: list[TensorSpec]) -> list[str]:
    """Names first, then shape and dtype per name, like the numeric validation's order."""
    names = [f["name"] for f in found]
    expected = [s.name for s in specs]
    if names != expected:
        return [f"{kind} names {names} != model {expected}"]
    failures = []
    for fact, spec in zip(found, specs, strict=True):
        if fact["shape"] != spec.shape:
            failures.append(f"{kind} '{spec.name}' shape {fact['shape']} != model {spec.shape}")
        if fact["dtype"] != spec.dtype:
            failures.append(f"{kind} '{spec.name}' dtype {fact['dtype']} != model {spec.dtype}")
    return failures


def _weight_precision(operations: list[Any], quant: QuantSpec) -> tuple[dict[str, Any], list[str]]:
    """Dtype histogram of the const tensors, and whether the big float ones have the precision
    the plan gives them: a layer's weight its layer's float precision, every other weight the
    plan's float precision (or fp32 inside modules the plan keeps fp32). A quantized layer's
    weight is an int8 constexpr op, not a const; the plan check judges those layer by layer."""
    from coremltools.proto import MIL_pb2

    weight_names = _layer_weight_names(quant)
    float_dtype = PRECISIONS[quant.float_precision.value][1]
    # Modules computing in another float precision than the plan's (`_module_precision`).
    other_dtypes = {float_dtype} | {
        PRECISIONS[_module_precision(quant, p).value][1]
        for p in {quant.plan.default, *quant.plan.overrides.values()}
    }
    histogram: Counter[str] = Counter()
    per_dtype: dict[str, dict[str, int]] = {}
    # (what was asked, dtype found) -> names of the large weights that differ
    wrong: dict[tuple[str, str], list[str]] = {}
    for op in operations:
        if op.type != "const":
            continue
        tensor = op.outputs[0].type.tensorType
        dtype = MIL_pb2.DataType.Name(tensor.dataType).lower()
        histogram[dtype] += 1
        if dtype not in FLOAT_WEIGHT_DTYPES:
            continue
        elements = math.prod(d.constant.size for d in tensor.dimensions)
        stats = per_dtype.setdefault(dtype, {"tensors": 0, "elements": 0, "large_tensors": 0})
        stats["tensors"] += 1
        stats["elements"] += elements
        if elements < LARGE_WEIGHT_MIN_ELEMENTS:
            continue
        stats["large_tensors"] += 1
        name = op.outputs[0].name
        layer = _layer_of_weight(name, weight_names)
        planned = quant.layers[layer] if layer else None
        if planned is not None and planned not in FLOAT_PRECISIONS:
            continue
        asked = planned.value if planned else quant.float_precision.value
        wanted = {PRECISIONS[planned.value][1]} if planned else other_dtypes
        if dtype not in wanted:
            wrong.setdefault((asked, dtype), []).append(name)

    failures = []
    for (asked, dtype), names in sorted(wrong.items()):
        shown = ", ".join(names[:MAX_NAMED_WEIGHTS]) + (
            ", ..." if len(names) > MAX_NAMED_WEIGHTS else ""
        )
        failures.append(
            f"{asked} was asked but {len(names)} large weights "
            f"(>= {LARGE_WEIGHT_MIN_ELEMENTS} elements) are {dtype}: {shown}"
        )
    facts = {
        "const_dtype_histogram": dict(histogram.most_common()),
        "weight_precision": dict(sorted(per_dtype.items())),
        "large_weight_min_elements": LARGE_WEIGHT_MIN_ELEMENTS,
    }
    return facts, failures


# Layers: finding them in the program, naming their weights, quantizing them, reading them back.


def layer_weight_name(traced_path: str) -> str:
    """The name of a layer's weight const in the package: torch.export's name for that
    parameter (`p_` + module path with `_` for `.`), which coremltools keeps for the weights it
    does not fold, and edgekit gives the folded ones too."""
    return "p_" + re.sub(r"[^0-9A-Za-z]", "_", traced_path) + "_weight"


def _layer_weight_names(quant: QuantSpec) -> dict[str, str]:
    """Weight const name -> user path of its layer, for every layer of the plan."""
    return {layer_weight_name(quant.traced_path(path)): path for path in quant.layers}


def _layer_of_weight(name: str, weight_names: dict[str, str]) -> str | None:
    """The layer a const of this name belongs to: its name is the layer's weight name, or that
    plus the suffixes coremltools adds (`_to_fp16`, `_quantized`). The longest name wins, so
    `..._layer_1_weight` never claims `..._layer_10_weight`."""
    for end in [len(name), *(i for i in range(len(name) - 1, 0, -1) if name[i] == "_")]:
        path = weight_names.get(name[:end])
        if path is not None:
            return path
    return None


def _product_precision(operations: list[Any], producers: dict[str, Any]) -> LayerPrecision | None:
    """The precision of the program's attention products, read as a whole (module docstring):
    `matmul` ops whose two operands are both computed (neither comes from a const or a constexpr
    weight op). None when the program has no such op."""
    dequantized = []
    for op in operations:
        if op.type != "matmul":
            continue
        sources = [producers.get(_argument(op, name) or "") for name in ("x", "y")]
        if any(
            s is None or s.type == "const" or s.type in DEQUANTIZING_WEIGHT_OPS for s in sources
        ):
            continue
        dequantized.append(any(s.type == ACTIVATION_DEQUANTIZE_OP for s in sources))
    if not dequantized:
        return None
    return LayerPrecision.INT8 if any(dequantized) else LayerPrecision.FP32


def _argument(op: Any, name: str) -> str | None:
    """Name of the var an op takes as input `name` (None for an inline value or no input)."""
    arguments = op.inputs[name].arguments if name in op.inputs else []
    return arguments[0].name if arguments and arguments[0].name else None


def _layer_ops(operations: Iterable[Any], quant: QuantSpec) -> Iterator[tuple[str, Any]]:
    """(user path, op) for every op of the program whose weight is a planned layer's."""
    weight_names = _layer_weight_names(quant)
    for op in operations:
        weight = _argument(op, "weight") if op.type != "const" else None
        path = _layer_of_weight(weight, weight_names) if weight else None
        if path is not None:
            yield path, op


def _input_dtype(op: Any, name: str, producers: dict[str, Any]) -> str:
    """Dtype of an op's input `name`: a var made by another op, or a value written inline
    (coremltools 9 writes the iOS18 int8 weight data inline, as a blob file value)."""
    arguments = op.inputs[name].arguments if name in op.inputs else []
    if not arguments:
        return "missing"
    if arguments[0].WhichOneof("binding") == "value":
        return _tensor_dtype(arguments[0].value.type)
    producer = producers.get(arguments[0].name)
    return _tensor_dtype(producer.outputs[0].type) if producer is not None else "unknown"


def _tensor_dtype(value_type: Any) -> str:
    from coremltools.proto import MIL_pb2

    return MIL_pb2.DataType.Name(value_type.tensorType.dataType).lower()


def _realized_precision(op: Any, producers: dict[str, Any], path: str) -> LayerPrecision:
    """The precision of one layer op, from the op that produces its weight: a float const
    (fp16/fp32), or an int8 or int4 constexpr dequantize op (int8 or 4-bit weights), the int8 one
    with int8 activations when the op's input comes from a dequantize op."""
    weight = producers.get(_argument(op, "weight") or "")
    if weight is None:
        raise ValueError(f"no op of the program produces the weight of layer '{path}'")
    if weight.type == "const":
        dtype = _tensor_dtype(weight.outputs[0].type)
        float_precision = {"float16": LayerPrecision.FP16, "float32": LayerPrecision.FP32}
        if dtype not in float_precision:
            raise ValueError(f"layer '{path}' has a {dtype} const weight")
        return float_precision[dtype]
    if weight.type not in DEQUANTIZING_WEIGHT_OPS:
        raise ValueError(f"the weight of layer '{path}' comes from a {weight.type} op")
    if weight.type == "constexpr_affine_dequantize":
        stored = _tensor_dtype(weight.attributes["quantized_data"].type)
    else:
        stored = _input_dtype(weight, "data", producers)
    if stored not in INT8_DTYPES + INT4_DTYPES:
        raise ValueError(f"the weight of layer '{path}' is stored as {stored}, not int8 or int4")
    source = producers.get(_argument(op, "x") or "")
    int8_activations = source is not None and source.type == ACTIVATION_DEQUANTIZE_OP
    if stored in INT4_DTYPES:
        if int8_activations:
            raise ValueError(f"layer '{path}' has int4 weights and int8 activations")
        return LayerPrecision.INT4_WEIGHT
    return LayerPrecision.INT8 if int8_activations else LayerPrecision.INT8_WEIGHT


@dataclass
class _LayerTags:
    """What `_tag_layers` learnt from the fx graph, by the debug handle it gave each node."""

    # Handle -> user module path of the node (of the conv, for a BatchNorm folded into it).
    module_paths: dict[int, str] = field(default_factory=dict)
    # Handle -> (name for the layer's weight const, the weight's shape), for each planned
    # layer's conv/linear node and the BatchNorm coremltools folds into it.
    weights: dict[int, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    # Where modules compute in different float precisions: precision -> how many modules.
    compute_mixed: dict[str, int] = field(default_factory=dict)


def _tag_layers(program: Any, module: Any, quant: QuantSpec) -> _LayerTags:
    """Give every call node of `program` a debug handle (coremltools keeps it on the MIL ops
    made from the node, as a scope) and note which node is which layer.

    A layer's node is the one taking the layer's weight parameter as its weight argument. Its
    weight is named by the layer's traced path, which is what the placeholder is bound to.
    """
    from edgekit.quant.plan import quantizable_layers

    tags = _LayerTags()
    layers = quantizable_layers(module)
    nodes = list(program.graph_module.graph.nodes)
    for handle, node in enumerate(nodes, start=1):
        if node.op == "call_function":
            node.meta["debug_handle"] = handle
            tags.module_paths[handle] = _user_module_path(node, quant.module_prefix)

    weight_of = {quant.traced_path(path) + ".weight": path for path in quant.layers}
    parameters = program.graph_signature.inputs_to_parameters
    for node in nodes:
        path = weight_of.get(parameters.get(node.name, "")) if node.op == "placeholder" else None
        if path is None:
            continue
        named = (layer_weight_name(quant.traced_path(path)), tuple(layers[path].weight.shape))
        for user in node.users:
            if user.op != "call_function" or len(user.args) < 2 or user.args[1] is not node:
                continue
            for tagged in [user, *_folded_batch_norm(user)]:
                handle = tagged.meta["debug_handle"]
                tags.weights[handle] = named
                tags.module_paths[handle] = path

    return tags


def _user_module_path(node: Any, module_prefix: str) -> str:
    """The user's module path of the innermost module a node was traced in ("" outside them)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    traced = list(stack.values())[-1][0]
    return traced[len(module_prefix) :] if traced.startswith(module_prefix) else ""


def _folded_batch_norm(node: Any) -> list[Any]:
    """The BatchNorm node (and the getitems taking its outputs) right after a conv node, which
    coremltools folds into the conv: the folded conv carries the BatchNorm's scope."""
    users = list(node.users)
    if len(users) != 1 or BATCH_NORM_OP not in str(users[0].target):
        return []
    return [users[0], *users[0].users]


def _debug_handles(op: Any) -> list[int]:
    from coremltools.converters.mil.mil.scope import ScopeSource

    return [h for h in op.scopes.get(ScopeSource.EXIR_DEBUG_HANDLE) or [] if h is not None]


def _module_precision(quant: QuantSpec, planned: LayerPrecision) -> LayerPrecision:
    """The float precision a module planned `planned` computes in. Int8-activation (W8A8)
    modules compute in fp16: Core ML dequantizes int8 activations to fp16, and coremltools 9
    gives every activation scale fp16, which an fp32 op rejects ("scale has dtype fp16 whereas
    input has dtype fp32")."""
    if planned in FLOAT_PRECISIONS:
        return planned
    return LayerPrecision.FP16 if planned is LayerPrecision.INT8 else quant.float_precision


def _compute_precision(quant: QuantSpec, tags: _LayerTags) -> Any:
    """fp32 or fp16 for the whole program, or, where the plan mixes them, op by op by the
    module each op was traced in (ops with no module, e.g. input casts, at the float
    precision)."""
    ct = _coremltools()
    by_module = {
        path: _module_precision(quant, quant.plan.precision_of(path))
        for path in set(tags.module_paths.values())
    }
    fp16_handles = {
        h for h, path in tags.module_paths.items() if by_module[path] is LayerPrecision.FP16
    }
    default_fp16 = quant.float_precision is LayerPrecision.FP16
    if len(fp16_handles) == len(tags.module_paths) and default_fp16:
        return ct.precision.FLOAT16
    if not fp16_handles and not default_fp16:
        return ct.precision.FLOAT32
    tags.compute_mixed = dict(Counter(p.value for p in by_module.values()))

    def cast_to_fp16(op: Any) -> bool:
        handles = _debug_handles(op)
        return handles[-1] in fp16_handles if handles else default_fp16

    return ct.transform.FP16ComputePrecision(op_selector=cast_to_fp16)


def _register_naming_pass() -> None:
    """Register the pass that names layer weights (once per process; coremltools keeps one
    instance of each pass, its options set per conversion)."""
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY, register_pass

    if NAMING_PASS in PASS_REGISTRY:
        return
    namespace, _, name = NAMING_PASS.partition("::")

    class NameLayerWeights(AbstractGraphPass):
        weights: dict[int, tuple[str, tuple[int, ...]]] = {}

        def apply(self, prog: Any) -> None:
            for function in prog.functions.values():
                _name_layer_weights(function, self.weights)

    register_pass(namespace=namespace, name=name)(NameLayerWeights)


def _name_layer_weights(block: Any, weights: dict[int, tuple[str, tuple[int, ...]]]) -> None:
    """Rename the weight const of every layer op in `block` (by the op's debug handle) to the
    layer's weight name. A weight that is not a const of the layer's shape is left alone: the
    plan check then finds the layer missing instead of trusting a wrong name."""
    from coremltools.converters.mil.mil import Builder as mb

    taken = {v.name for op in block.operations for v in op.outputs}
    named: dict[int, str] = {}  # id of a const var -> the layer name it was given
    with block:
        for op in list(block.operations):
            for inner in op.blocks:
                _name_layer_weights(inner, weights)
            layer = [weights[h] for h in _debug_handles(op) if h in weights]
            weight = op.inputs.get("weight")
            if not layer or weight is None:
                continue
            name, shape = layer[-1]
            if weight.op is None or weight.op.op_type != "const" or weight.shape != shape:
                log.debug(
                    "not naming %s: weight %s is no const of shape %s", op.name, weight, shape
                )
                continue
            given = named.get(id(weight))
            if given == name:
                continue
            if given is None:
                if weight.name != name:
                    unique = _unique_name(name, taken)
                    weight.op.name = weight.name = unique
                named[id(weight)] = name
                continue
            # coremltools merged identical weights of two layers into one const
            # (const_deduplication): this layer gets a copy, under its own name, so the two can
            # be found, and quantized, each as its plan says.
            copy = mb.const(val=weight.val, name=_unique_name(name, taken), before_op=op)
            block.replace_uses_of_var_after_op(
                anchor_op=copy.op, old_var=weight, new_var=copy, end_op=op
            )
            named[id(copy)] = name


def _unique_name(name: str, taken: set[str]) -> str:
    unique = name
    while unique in taken:
        unique += "_"
    taken.add(unique)
    return unique


def _quantize(mlmodel: Any, quant: QuantSpec) -> dict[str, Any]:
    """Apply coremltools.optimize to the planned layers only, keyed by their weights' names
    (and op names for activations). Returns {"model": the quantized model, facts...}.

    No global config: every other const (norm parameters, embeddings) keeps its float
    precision, and a layer whose name were not found would stay float, for the plan check to
    catch, instead of being quantized by a catch-all.
    """
    import coremltools.optimize.coreml as cto

    operations = list(_program_operations(mlmodel.get_spec()))
    layer_ops = list(_layer_ops(operations, quant))
    facts: dict[str, Any] = {}
    int8 = set(quant.layers_at(LayerPrecision.INT8))
    if int8:
        # Input activations of the int8 layers: coremltools runs the float model on the
        # calibration inputs (streamed), then inserts quantize/dequantize pairs.
        act_config = cto.OptimizationConfig(
            op_name_configs={
                op.outputs[0].name: cto.OpLinearQuantizerConfig(**LINEAR_QUANTIZER)
                for path, op in layer_ops
                if path in int8
            }
        )
        mlmodel = cto.linear_quantize_activations(
            mlmodel, act_config, _StreamedSamples(quant.calibration)
        )
        facts["activations"] = "linear_quantize_activations int8 symmetric"
        facts["calibration_inputs"] = quant.calibration.count if quant.calibration else 0

    weight_configs = {
        precision: cto.OpLinearQuantizerConfig(
            **{**LINEAR_QUANTIZER, "dtype": dtype},
            granularity=WEIGHT_GRANULARITY,
            weight_threshold=0,
        )
        for precision, dtype in WEIGHT_DTYPES.items()
    }
    configs = {
        _argument(op, "weight"): weight_configs.get(quant.layers[path]) for path, op in layer_ops
    }
    mlmodel = cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(op_name_configs=configs))
    quantized = [path for path, p in quant.layers.items() if p not in FLOAT_PRECISIONS]
    dtypes = "/".join(sorted({WEIGHT_DTYPES[quant.layers[path]] for path in quantized}))
    facts["weights"] = f"linear_quantize_weights {dtypes} {WEIGHT_GRANULARITY} symmetric"
    facts["quantized_layers"] = len(quantized)
    return {"model": mlmodel, **facts}


class _StreamedSamples:
    """Calibration inputs as the sized, re-iterable sequence coremltools' calibration takes
    (it iterates twice), produced one at a time instead of as a list in memory."""

    def __init__(self, calibration: Any) -> None:
        self.calibration = calibration

    def __len__(self) -> int:
        return self.calibration.count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.calibration)


def _can_calibrate_activations() -> bool:
    """Whether coremltools can run the model to calibrate activations here (macOS only)."""
    return platform.system() == CORE_ML_HOST


def _more(paths: list[str]) -> str:
    return f" (and {len(paths) - 1} more layers)" if len(paths) > 1 else ""
