"""Core ML `.mlpackage` (ML program) through torch.export -> coremltools.

Core ML runs only on Apple platforms: coremltools converts and saves anywhere, but its
`MLModel.predict` exists only on macOS. Off macOS the artifact is verified by structure (IO
names/shapes/dtypes, deployment target, op histogram, weight dtypes) and the manifest says
plainly that numerics were not checked ("Model prediction is only supported on macOS").

The input to coremltools is an ATen-dialect `ExportedProgram`, not a TorchScript trace:
`ct.convert` of a `torch.jit.trace` breaks under numpy 2.4, the torch.export path does not.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import platform
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import NoHostRuntimeError, UnknownChoiceError
from edgekit.exporters import ExportResult
from edgekit.quant.plan import LayerPrecision

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
CONVERTER = "coremltools.convert(torch.export.export(strict=False).run_decompositions({}))"

# platform.system() where Core ML (and so MLModel.predict) exists.
CORE_ML_HOST = "Darwin"
HOST_ONLY = "Core ML models can only run on macOS/iOS; this host is {system}"
NO_RUNTIME_HERE = HOST_ONLY + "."
NOT_LOADABLE = HOST_ONLY + ", so this artifact cannot be loaded or timed here."


class CoreMLExporter:
    name = "coreml"
    display_name = "Core ML"
    layer_precisions = (LayerPrecision.FP16, LayerPrecision.FP32)
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

    def export(
        self,
        model: LoadedModel,
        sample_inputs: dict[str, np.ndarray],
        model_path: Path,
        *,
        quant: QuantSpec,
    ) -> ExportResult:
        import numpy as np
        import torch

        ct = _coremltools()
        debug = log.isEnabledFor(logging.DEBUG)

        # 1. ATen-dialect program: what coremltools' torch.export frontend accepts.
        args = tuple(torch.from_numpy(sample_inputs[spec.name]) for spec in model.inputs)
        program = torch.export.export(model.module, args, strict=False).run_decompositions({})
        removed_aliases = _drop_aliases(program)

        # 2. Convert. IO dtypes are pinned to the TensorSpecs: with fp16 compute and iOS16+,
        # coremltools would otherwise make the outputs fp16, unlike what the manifest promises.
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
                compute_precision=getattr(ct.precision, compute_precision),
                minimum_deployment_target=_deployment_target(self.minimum_deployment_target),
                compute_units=getattr(ct.ComputeUnit, self.compute_units),
                # Loading compiles the model, which needs macOS; runtime() loads it there.
                skip_model_load=True,
            )

        # 3. Save, and make the package readable by others like every other artifact file.
        mlmodel.save(str(model_path))
        _drop_empty_debug_mapping(model_path)
        _make_shareable(model_path)
        spec = mlmodel.get_spec()
        op_count = sum(1 for op in _program_operations(spec) if op.type != "const")
        return ExportResult(
            files=sorted(p for p in model_path.rglob("*") if p.is_file()),
            details={
                "converter": CONVERTER,
                "aliases_removed": removed_aliases,
                "coremltools": ct.__version__,
                "model_type": spec.WhichOneof("Type"),
                "minimum_deployment_target": self.minimum_deployment_target,
                "specification_version": spec.specificationVersion,
                "compute_units": self.compute_units,
                "compute_precision": compute_precision,
                "op_count": op_count,
            },
        )

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
            weight_facts, weight_failures = _weight_precision(
                operations, quant.float_precision.value
            )
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


def _drop_empty_debug_mapping(package: Path) -> None:
    """Remove coremltools' ExecuTorch debug-handle map when it maps nothing.

    coremltools 9 writes it for torch.export programs too, but an ATen program has no ExecuTorch
    debug handles, so every op lands under the key "null": 150-220 KB (a third of the tiny
    MobileViT package) that no tool can use. A map with real handles is kept.
    """
    import json

    mapping_path = package / DEBUG_MAPPING_FILE
    if not mapping_path.is_file():
        return
    handles = set(json.loads(mapping_path.read_text()).get("mapping", {}))
    if handles <= {"null"}:
        mapping_path.unlink()


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


def _weight_precision(operations: list[Any], precision: str) -> tuple[dict[str, Any], list[str]]:
    """Dtype histogram of the const tensors, and whether the big float ones have `precision`."""
    from coremltools.proto import MIL_pb2

    histogram: Counter[str] = Counter()
    per_dtype: dict[str, dict[str, int]] = {}
    large: dict[str, list[str]] = {}
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
        if elements >= LARGE_WEIGHT_MIN_ELEMENTS:
            stats["large_tensors"] += 1
            large.setdefault(dtype, []).append(op.outputs[0].name)

    _, wanted = PRECISIONS.get(precision, (None, None))
    failures = []
    for dtype, names in sorted(large.items()):
        if wanted and dtype != wanted:
            shown = ", ".join(names[:MAX_NAMED_WEIGHTS]) + (
                ", ..." if len(names) > MAX_NAMED_WEIGHTS else ""
            )
            failures.append(
                f"{precision} was asked but {len(names)} large weights "
                f"(>= {LARGE_WEIGHT_MIN_ELEMENTS} elements) are {dtype}: {shown}"
            )
    facts = {
        "const_dtype_histogram": dict(histogram.most_common()),
        "weight_precision": dict(sorted(per_dtype.items())),
        "large_weight_min_elements": LARGE_WEIGHT_MIN_ELEMENTS,
    }
    return facts, failures
