"""TFLite (LiteRT) `.tflite` straight from the nn.Module with litert-torch, run with ai-edge-litert.

litert-torch goes torch.export -> StableHLO -> TFLite flatbuffer without a TensorFlow install
(onnx2tf produced a UNet that ran but was silently wrong; tflite-runtime 2.14 needs numpy<2),
and ai-edge-litert is the maintained interpreter (numpy 2, XNNPACK on by default: about 52 ms vs
380 ms without it for MobileViT-S on 2 threads).

Quantization plans are realized by ai-edge-quantizer on the converted fp32 flatbuffer, op by op.
Its recipes select ops by regexes over each op's output tensor names, and litert-torch names
tensors after the module hierarchy that produced them (`<class>_<attribute>/...;N`, with the
locations of fused ops joined by `;;`). A regex on a module path that matches nothing keeps a
layer float without a word, and one that matches a fused op's name quantizes a neighbour; so
edgekit resolves every op to the planned layer it computes (`_layer_ops`), decides each op's
precision itself, and hands the quantizer exact names. The written file is then read back layer
by layer (`read_layer_precisions`): weight dtypes, DEQUANTIZE ops and activation dtypes.

4-bit weights (int4-weight) go the same way, where the quantizer takes them: its policy gives
4-bit weight-only configs to CONV_2D and FULLY_CONNECTED but not to DEPTHWISE_CONV_2D, and a
rule for an op it cannot take leaves the op float without a word. So a plan with 4-bit depthwise
convolutions is refused before converting (`plan_unsupported_reason`), asking the quantizer
itself which ops take them.

A model whose fp32 weights reach the 2 GB flatbuffer limit (the SD 1.5 UNet) has no float file
to quantize: its conv/linear weights are quantized to int8 in PyTorch first (litert-torch's
PT2E path, int8-weight or int8-dynamic), and lowered as int8 constants. The same read-back
checks that file.

Attention products (Q K^T, softmax V) are BATCH_MATMUL ops whose operands are both computed.
Every op inside an attention block that computes products, other than its layers, takes the
products' planned precision (`QuantSpec.matmuls`): int8 gives them ai-edge-quantizer's static
int8 config (int8 operands from calibrated ranges), float keeps them out of the recipe's int8
rules, which would otherwise quantize them with the plan's default. The read-back finds each
product by module path and reads its operands' dtypes: INT8 on both is int8, FLOAT32 on both
fp32.
"""

from __future__ import annotations

import importlib.metadata
import logging
import mmap
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import ArtifactError, ExportError
from edgekit.exporters import ExportResult, format_names
from edgekit.exporters._native import quiet_native_stderr
from edgekit.quant.plan import LayerPrecision, MatmulPrecision, product_realization

if TYPE_CHECKING:
    import numpy as np
    import torch

    from edgekit.models.base import LoadedModel, TensorSpec
    from edgekit.profiles import RuntimeSettings
    from edgekit.quant.spec import CalibrationInputs, QuantSpec

log = logging.getLogger(__name__)

# A flatbuffer addresses its contents with signed 32-bit offsets, so one `.tflite` file (weights
# included) cannot reach 2 GiB. Checked before converting: the converter would otherwise spend
# minutes and gigabytes of RAM before failing with an opaque serialisation error.
FLATBUFFER_LIMIT_BYTES = 2**31
FP32_BYTES = 4
# litert-torch names signature tensors after their position in the traced call: the N-th
# positional argument is `args_N`, the N-th returned tensor `output_N`.
_POSITIONAL_NAME = re.compile(r"^(?:args|output)_(\d+)$")
# Environment switch read by litert-torch's rich progress printer at every step.
_PROGRESS_ENV = "LITERT_TORCH_SHOW_PROGRESS"
# The ops conv and linear layers become; input 0 is the activation, input 1 the weight.
_LAYER_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})
_ACTIVATION_INPUT, _WEIGHT_INPUT = 0, 1
# The op an attention product (activation x activation matmul) becomes.
_PRODUCT_OP = "BATCH_MATMUL"
# ai-edge-quantizer cuts an op's scope (its output names joined) at this length before matching.
_SCOPE_MAX_CHARS = 10_000
# Inputs per calibration call. ai-edge-quantizer's calibrate() lists its whole dataset before
# running it (to size a progress bar), so one call with every image would hold them all in
# memory; chunks go through one calibrator, whose min/max ranges span every chunk.
CALIBRATION_CHUNK = 16
# Why bench shows no per-op profile for .tflite artifacts. Checked in ai-edge-litert 2.3: the
# Interpreter's one profiling option (`experimental_force_delegate_node_profiling`) only says
# how delegated nodes are profiled once a profiler is attached, and the Python wrapper can
# neither attach one nor return its records; the bundled `litert-benchmark` times whole runs.
# LiteRT's per-op profile comes from its C++ benchmark tool.
OP_PROFILE_UNAVAILABLE = (
    "ai-edge-litert's Python Interpreter does not expose per-op profiling (it cannot attach a "
    "profiler or return its records); run LiteRT's benchmark_model with "
    "--enable_op_profiling=true on the device for a per-op table."
)


class TFLiteExporter:
    name = "tflite"
    display_name = "TFLite"
    # fp16: weights stored as float16, dequantized once at load (TFLite's float16 quantization).
    # int4-weight: not for every layer kind; `plan_unsupported_reason` says which.
    layer_precisions = (
        LayerPrecision.FP32,
        LayerPrecision.FP16,
        LayerPrecision.INT8,
        LayerPrecision.INT8_DYNAMIC,
        LayerPrecision.INT8_WEIGHT,
        LayerPrecision.INT4_WEIGHT,
    )
    layer_evidence = (
        "per conv/linear op found by module path in tensor names: weight dtype, DEQUANTIZE on "
        "the weight, activation dtype"
    )
    runtime_modules = ("ai_edge_litert.interpreter",)
    tool_packages = ("litert-torch", "ai-edge-litert", "ai-edge-quantizer")
    file_suffix = ".tflite"

    def export(
        self,
        model: LoadedModel,
        sample_inputs: dict[str, np.ndarray],
        model_path: Path,
        *,
        quant: QuantSpec,
    ) -> ExportResult:
        import torch

        # 1. Refuse what cannot fit in a flatbuffer, or cannot be calibrated, before any slow
        # conversion. A model whose fp32 weights reach the limit is quantized before lowering
        # (PT2E), where the plan allows it and brings the file under the limit.
        weight_bytes = fp32_weight_bytes(model.module)
        before_lowering = None
        if weight_bytes >= FLATBUFFER_LIMIT_BYTES:
            before_lowering = _pt2e_precision(quant)
            planned_bytes = planned_weight_bytes(model.module, quant.layers)
            if before_lowering is None or planned_bytes >= FLATBUFFER_LIMIT_BYTES:
                raise self._too_large_error(model, weight_bytes, quant)
        quantize = quant.is_quantized or quant.float_precision == LayerPrecision.FP16
        static = LayerPrecision.INT8 in quant.layers.values() or quant.int8_matmuls
        if static and quant.calibration is None:
            raise _no_calibration_error(model)

        # 2. Convert, positional args in `model.inputs` order (the runtime relies on it). A
        # quantized export converts to a float file beside the artifact, then quantizes it; one
        # too large for a float file is quantized in PyTorch and lowered with int8 weights.
        float_path = model_path.with_name(f"{model_path.stem}.float{model_path.suffix}")
        args = tuple(torch.from_numpy(sample_inputs[spec.name]) for spec in model.inputs)
        debug = log.isEnabledFor(logging.DEBUG)
        details: dict[str, Any] = {}
        try:
            with _litert_progress(enabled=debug), quiet_native_stderr(enabled=not debug):
                import litert_torch

                if before_lowering is not None:
                    details = _convert_pt2e(model, args, model_path, quant, before_lowering)
                else:
                    # litert-torch takes a module and runs torch.export itself (it has no
                    # public entry for a program): the one exporter that does not share
                    # `model.exported_program()`.
                    edge_model = litert_torch.convert(model.module, args)
                    edge_model.export(str(float_path if quantize else model_path))

            # 3. Quantize the float file as the plan says, layer by layer.
            if quantize and before_lowering is None:
                details = _quantize(float_path, model_path, model, quant)
        finally:
            float_path.unlink(missing_ok=True)
        names_saved = shorten_tensor_names(model_path)

        # 4. Describe what was written.
        op_histogram = tflite_op_histogram(model_path.read_bytes())
        log.info("TFLite graph: %d ops %s", sum(op_histogram.values()), op_histogram)
        return ExportResult(
            files=[model_path],
            details={
                "converter": "litert_torch.convert",
                "litert_torch_version": importlib.metadata.version("litert-torch"),
                "ai_edge_litert_version": importlib.metadata.version("ai-edge-litert"),
                **details,
                "flatbuffer_size_bytes": model_path.stat().st_size,
                "tensor_name_bytes_saved": names_saved,
                "fp32_weight_bytes": weight_bytes,
                "op_count": sum(op_histogram.values()),
                "op_histogram": op_histogram,
            },
        )

    def plan_unsupported_reason(self, quant: QuantSpec, model: LoadedModel) -> str | None:
        """Refuses 4-bit weights for a layer whose op ai-edge-quantizer gives none (depthwise
        convolutions): it would keep the op float silently, and the read-back would only fail
        the export after converting."""
        from edgekit.quant.plan import quantizable_layers

        planned = quant.layers_at(LayerPrecision.INT4_WEIGHT)
        if not planned:
            return None
        layers = quantizable_layers(model.module)
        takes = _int4_weight_ops()
        refused = [path for path in planned if _layer_op_kind(layers[path]) not in takes]
        if not refused:
            return None
        more = f" (and {len(refused) - 1} more layers)" if len(refused) > 1 else ""
        return (
            f"TFLite cannot realize int4-weight for layer '{refused[0]}'{more}: it becomes a "
            f"{_layer_op_kind(layers[refused[0]])} op, and ai-edge-quantizer "
            f"{importlib.metadata.version('ai-edge-quantizer')} gives 4-bit weights only to "
            f"{', '.join(sorted(takes))} ops. Plan int8-weight for those layers."
        )

    def read_layer_precisions(
        self, model_path: Path, quant: QuantSpec
    ) -> dict[str, LayerPrecision | None]:
        """Each planned layer's precision as the written file holds it: its op found by module
        path in the tensor names, then what feeds that op's weight input."""
        with _mapped(model_path) as flatbuffer:
            ops = _read_ops(flatbuffer)
        # Class names tell look-alike paths apart (`down_blocks.0` vs `up_blocks.0` of a UNet
        # are both `..._0`); the spec carries them where it was built from the module.
        found = _layer_ops(ops, quant, quant.module_types)
        realized = {
            path: _realized_precision(path, [ops[i] for i in found[path]])
            if found.get(path)
            else None
            for path in quant.layers
        }
        return {**realized, **_product_precisions(ops, quant, quant.module_types)}

    def _too_large_error(
        self, model: LoadedModel, weight_bytes: int, quant: QuantSpec
    ) -> ExportError:
        """The refusal of a model whose fp32 weights reach the limit, saying why this plan does
        not bring it under and which plans do."""
        others = ", ".join(f"--target {n}" for n in format_names() if n != self.name)
        gib = 2**30
        reason = _pt2e_unsupported_reason(quant)
        if reason is None:
            planned = planned_weight_bytes(model.module, quant.layers)
            reason = (
                f"this plan ({quant.label}) would still put {planned / gib:.2f} GiB "
                f"({planned} bytes) of weights in the file"
            )
        fitting = [
            precision
            for precision in _PT2E_PRECISIONS
            if _all_layers_bytes(model.module, quant, precision) < FLATBUFFER_LIMIT_BYTES
        ]
        if fitting:
            int8_bytes = _all_layers_bytes(model.module, quant, fitting[0])
            plans = " or ".join(_plan_spelling(p) for p in fitting)
            hint = (
                f"{plans} fit: every conv/linear weight in int8, about "
                f"{int8_bytes / gib:.2f} GiB ({int8_bytes} bytes), quantized in PyTorch before "
                "lowering (litert-torch PT2E); a plan file may keep some layers fp32 beside "
                f"int8-weight ones. Or use {others}."
            )
        else:
            hint = f"even int8 weights do not fit; use {others}."
        return ExportError(
            f"{model.model_kind} has {weight_bytes / gib:.2f} GiB ({weight_bytes} bytes) of "
            "fp32 weights, over the 2 GB limit of a TFLite flatbuffer "
            f"({FLATBUFFER_LIMIT_BYTES} bytes), and {reason}.",
            hint=hint,
        )

    def host_runtime_unavailable_reason(self) -> str | None:
        return None  # ai-edge-litert is a pip dependency on Linux and macOS

    def runtime(
        self,
        model_path: Path,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        *,
        settings: RuntimeSettings | None = None,
    ) -> TFLiteRuntime:
        return TFLiteRuntime(model_path, inputs, outputs, settings=settings)


def fp32_weight_bytes(module: torch.nn.Module) -> int:
    """Bytes the module's constants take in an fp32 flatbuffer: float tensors count 4 bytes each.

    Buffers count too (BatchNorm statistics, position ids): they become flatbuffer constants.
    """
    tensors = [*module.parameters(), *module.buffers()]
    return sum(
        t.numel() * (FP32_BYTES if t.is_floating_point() else t.element_size()) for t in tensors
    )


def planned_weight_bytes(module: torch.nn.Module, layers: Mapping[str, LayerPrecision]) -> int:
    """Bytes of the module's constants once the int8 layers among `layers` (user path ->
    precision) hold 1-byte weights; everything else counted as in `fp32_weight_bytes`.

    Per-channel scales and zero points add a few bytes per output channel: noise next to 2 GB.
    """
    from edgekit.quant.plan import quantizable_layers

    modules = quantizable_layers(module)
    saved = sum(
        modules[path].weight.numel() * (FP32_BYTES - 1)
        for path, precision in layers.items()
        if precision in _INT8_PRECISIONS
    )
    return fp32_weight_bytes(module) - saved


def tflite_op_histogram(flatbuffer: bytes) -> dict[str, int]:
    """Op type -> count over every subgraph, read from the flatbuffer without loading a runtime."""
    from ai_edge_litert import schema_py_generated as schema

    code_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(flatbuffer, 0)
    op_types = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes above 127 live only in BuiltinCode; older ones in the deprecated int8 field.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            op_types.append(f"CUSTOM:{code.CustomCode().decode()}")
        else:
            op_types.append(code_names.get(builtin, f"BUILTIN_{builtin}"))
    counts: Counter[str] = Counter()
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for o in range(subgraph.OperatorsLength()):
            counts[op_types[subgraph.Operators(o).OpcodeIndex()]] += 1
    return dict(sorted(counts.items()))


# --- Quantization plans: ai-edge-quantizer, op by op --------------------------------------------


@dataclass(frozen=True)
class _Op:
    """One operator of the flatbuffer, with what plan realization and read-back need."""

    kind: str  # builtin op name, e.g. "CONV_2D"
    # ai-edge-quantizer's scope for it: the output tensor names, each followed by ";".
    scope: str
    # Module hierarchies its tensor names carry, one tuple of `<class>_<attribute>` segments each.
    locations: tuple[tuple[str, ...], ...]
    activation_dtype: str | None  # of input 0, e.g. "FLOAT32", "INT8"
    weight_dtype: str | None  # of input 1 as the op sees it
    # Dtype of the constant a DEQUANTIZE op turns into the weight (weight-only int8, fp16).
    weight_dequantized_from: str | None
    # An attention product's operand dtypes (a BATCH_MATMUL whose operands are both computed
    # by other ops, neither a stored constant); empty for every other op.
    product_operand_dtypes: tuple[str | None, ...] = ()


def _no_calibration_error(model: LoadedModel) -> ExportError:
    return ExportError(
        f"The plan gives {model.model_kind} static int8 layers, whose activation ranges come "
        "from calibration inputs, and none were given.",
        hint="pass --calib IMAGES_DIR (classifiers) or --prompts FILE (Stable Diffusion), or "
        "use --quant int8-dynamic, which needs none.",
    )


@contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap]:
    """The file's bytes, memory-mapped: read-back after every export must not copy a 2 GB
    flatbuffer into memory to look at its operators."""
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as view:
        yield view


def _read_ops(flatbuffer: bytes | mmap.mmap) -> list[_Op]:
    """Every operator of the main subgraph, from the flatbuffer (no interpreter)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(flatbuffer, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        codes.append(names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?"))
    graph = model.Subgraphs(0)
    tensors = [graph.Tensors(t) for t in range(graph.TensorsLength())]
    tensor_names = [t.Name().decode() for t in tensors]
    operators = [graph.Operators(o) for o in range(graph.OperatorsLength())]
    producer = {
        op.Outputs(k): o for o, op in enumerate(operators) for k in range(op.OutputsLength())
    }

    def dtype(index: int) -> str | None:
        return dtypes.get(tensors[index].Type()) if index >= 0 else None

    ops = []
    for op in operators:
        kind = codes[op.OpcodeIndex()]
        inputs = [op.Inputs(k) for k in range(op.InputsLength())]
        outputs = [op.Outputs(k) for k in range(op.OutputsLength())]
        named = [tensor_names[t] for t in outputs if t >= 0 and tensor_names[t]]
        scope = "".join(f"{name};" for name in named)[:_SCOPE_MAX_CHARS]
        weight = activation = dequantized_from = None
        if kind in _LAYER_OPS and len(inputs) > _WEIGHT_INPUT:
            activation = dtype(inputs[_ACTIVATION_INPUT])
            weight = dtype(inputs[_WEIGHT_INPUT])
            source = producer.get(inputs[_WEIGHT_INPUT])
            if source is not None and codes[operators[source].OpcodeIndex()] == "DEQUANTIZE":
                dequantized_from = dtype(operators[source].Inputs(0))
        operand_dtypes: tuple[str | None, ...] = ()
        if kind == _PRODUCT_OP and len(inputs) >= 2:
            computed = [_computed(t, producer, operators, codes) for t in inputs[:2]]
            if all(computed):
                operand_dtypes = tuple(dtype(t) for t in inputs[:2])
        locations = [loc for name in named for loc in _locations(name)]
        if weight and not locations:
            # The last op of a graph writes a tensor named after the signature
            # (`serving_default_output_0`), with no module in it; its weight's name has one,
            # or, where PT2E quantized the weight before lowering (named after the re-traced
            # graph then), its bias's.
            constants = [t for t in inputs[_WEIGHT_INPUT:] if t >= 0]
            locations = [loc for t in constants for loc in _locations(tensor_names[t])]
        ops.append(
            _Op(
                kind=kind,
                scope=scope,
                locations=tuple(locations),
                activation_dtype=activation,
                weight_dtype=weight,
                weight_dequantized_from=dequantized_from,
                product_operand_dtypes=operand_dtypes,
            )
        )
    return ops


def _computed(
    tensor: int, producer: dict[int, int], operators: list[Any], codes: list[str]
) -> bool:
    """Whether an operand is computed by the graph (an activation), not a stored constant
    (directly, or through the DEQUANTIZE of a weight-only constant)."""
    source = producer.get(tensor)
    if source is None:
        return False
    if codes[operators[source].OpcodeIndex()] == "DEQUANTIZE":
        return operators[source].Inputs(0) in producer
    return True


# A qualified Python name (`torch.nn.modules.conv.Conv2d_convolution`): litert-torch writes each
# module of a tensor's stack as `<module>.<class>_<attribute>`.
_QUALIFIED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
# Files above this are left as litert-torch wrote them: their names are a negligible part of the
# file, and the rewrite holds the whole model in memory twice.
SHORTEN_NAMES_MAX_BYTES = 2**30


def short_class_name(qualified: str) -> str:
    """`transformers.models.mobilevit.modeling_mobilevit.MobileViTLayer_4` -> `MobileViTLayer_4`."""
    return qualified.rsplit(".", 1)[-1]


def short_tensor_name(name: str) -> str:
    """A litert-torch tensor name with every module stack segment's Python module dropped. The
    names keep each module's class and attribute (all the read-back and `verify --localize`
    match on); names without a module stack (no ";") are left alone."""
    if ";" not in name:
        return name
    return _QUALIFIED.sub(lambda m: short_class_name(m.group(0)), name)


def shorten_tensor_names(model_path: Path) -> int:
    """Rewrite the flatbuffer at `model_path` with `short_tensor_name`s; return the bytes saved.

    litert-torch names every tensor after its whole module stack with qualified class names:
    on mobilevit-small int8 that was 0.72 MB of a 6.9 MB file (958 tensors), the file's largest
    part after the weights. The short names keep what identifies a layer. LiteRT's own
    flatbuffer utilities (what ai-edge-quantizer reads and writes files with) do the rewrite."""
    from ai_edge_litert.tools import flatbuffer_utils

    before = model_path.stat().st_size
    if before > SHORTEN_NAMES_MAX_BYTES:
        return 0
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_path.read_bytes()))
    changed = False
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name
            short = short_tensor_name(name or "")
            if name and short != name:
                tensor.name = short.encode()
                changed = True
    if not changed:
        return 0
    data = flatbuffer_utils.convert_object_to_bytearray(model)
    staged = model_path.with_name(model_path.name + ".names")
    staged.write_bytes(data)
    staged.replace(model_path)
    return before - len(data)


def _locations(tensor_name: str) -> list[tuple[str, ...]]:
    """The module hierarchies in one litert-torch tensor name.

    `A/B_b/C_c;;A/B_b/D_d;2` -> [(A, B_b, C_c), (A, B_b, D_d)]: each hierarchy (root class,
    then `<class>_<attribute>` per called module) ends with ";", fused ops join theirs, and a
    tensor counter or a quantizer suffix (`;1_dequant`) follows the last ";". Names without ";"
    (`arith.constant3`, signature tensors) carry no module. Segments come back short
    (`short_class_name`), whether the file was written with edgekit's short names or with
    litert-torch's qualified ones, so both compare equal to `_module_path`'s.
    """
    if ";" not in tensor_name:
        return []
    body = tensor_name[: tensor_name.rindex(";")]
    return [tuple(map(short_class_name, loc.split("/"))) for loc in body.split(";;") if loc]


@dataclass(frozen=True)
class _ModulePath:
    """A traced module path as litert-torch's tensor names spell it."""

    components: tuple[str, ...]  # attribute names: ("model", "mobilevit", "conv_stem")
    # `<class>_<attribute>` of the module at each prefix of the path, where classes are known
    # (short class names, as `_locations` returns them).
    segments: tuple[str, ...] | None
    root: str | None  # the traced module's class, where known
    wrapper_depth: int  # leading components inside edgekit's export wrapper (`model.`)


def module_types(module: torch.nn.Module) -> dict[str, str]:
    """Traced-module path -> the class name litert-torch writes for it in tensor names."""
    return {
        path: f"{type(m).__module__}.{type(m).__qualname__}" for path, m in module.named_modules()
    }


def _module_path(quant: QuantSpec, user_path: str, types: dict[str, str]) -> _ModulePath:
    components = tuple(quant.traced_path(user_path).split("."))
    prefixes = [".".join(components[: k + 1]) for k in range(len(components))]
    known = "" in types and all(p in types for p in prefixes)
    return _ModulePath(
        components=components,
        segments=tuple(
            short_class_name(f"{types[p]}_{c}") for p, c in zip(prefixes, components, strict=True)
        )
        if known
        else None,
        root=short_class_name(types[""]) if known else None,
        wrapper_depth=len(quant.module_prefix.split(".")) - 1,
    )


def _spells(location: tuple[str, ...], path: _ModulePath, *, whole: bool) -> bool:
    """Whether `location` runs through the module at `path`; `whole`: ends at it exactly (the
    op is that layer's own).

    After the root class come the `<class>_<attribute>` segments of the modules that were
    CALLED: a container only indexed (nn.ModuleList: `layer.0` shows as `...Layer_0`) or a
    module entered through a method (the wrapper's `vae.decode`) has none. With class names
    known, any component may be skipped. Without them, `DownBlock2D_0` spells `down_blocks.0`
    and `up_blocks.0` alike, so skipping is limited to the wrapper and list containers, and
    look-alike layers stay ambiguous (missing, never guessed).
    """
    if path.root is not None and location[0] != path.root:
        return False
    count = len(path.components)
    j = 0
    for i, segment in enumerate(location[1:], start=1):
        while j < count and not _names(segment, path, j):
            if not _skippable(path, j):
                return False
            j += 1
        if j == count:
            return False
        j += 1
        if j == count:
            return i == len(location) - 1 if whole else True
    return False


def _names(segment: str, path: _ModulePath, j: int) -> bool:
    if path.segments is not None:
        return segment == path.segments[j]
    return segment.endswith("_" + path.components[j])


def _skippable(path: _ModulePath, j: int) -> bool:
    if path.segments is not None:
        return True
    next_is_index = j + 1 < len(path.components) and path.components[j + 1].isdigit()
    return j < path.wrapper_depth or next_is_index


def _layer_ops(ops: list[_Op], quant: QuantSpec, types: dict[str, str]) -> dict[str, list[int]]:
    """User path of each planned layer -> indices of the conv/linear ops computing it.

    Fused ops carry several modules: litert-torch names the key projection of an attention
    block after the LayerNorm, the key AND the query Linear. So an op whose names spell one
    planned layer is that layer's; then ops naming several take the one not already claimed,
    until nothing changes. An op still ambiguous stays unassigned, and its layers read back as
    missing (which fails the export) rather than as a guess.
    """
    paths = {path: _module_path(quant, path, types) for path in quant.layers}
    by_last: dict[str, list[str]] = {}
    for path, module_path in paths.items():
        by_last.setdefault(module_path.components[-1], []).append(path)
    candidates: dict[int, set[str]] = {}
    for index, op in enumerate(ops):
        if op.kind not in _LAYER_OPS:
            continue
        found = {
            path
            for location in op.locations
            for last, same_name in by_last.items()
            if location[-1].endswith("_" + last)
            for path in same_name
            if _spells(location, paths[path], whole=True)
        }
        if found:
            candidates[index] = found
    owner = {index: next(iter(found)) for index, found in candidates.items() if len(found) == 1}
    changed = True
    while changed:
        changed = False
        claimed = set(owner.values())
        for index, found in candidates.items():
            left = found - claimed
            if index not in owner and len(left) == 1:
                owner[index] = left.pop()
                claimed.add(owner[index])
                changed = True
    layers: dict[str, list[int]] = {}
    for index, path in sorted(owner.items()):
        layers.setdefault(path, []).append(index)
    return layers


def _realized_precision(path: str, ops: list[_Op]) -> LayerPrecision:
    """What the file computes a layer at, from its op(s): int8 weights with int8 activations
    (static), int8 weights into a float op (dynamic range), a DEQUANTIZE from int8 or int4
    (weight-only) or from float16 (fp16 weights), or float32 weights. (INT4 weights straight
    into a float op would be a hybrid kernel quantizing activations per run: no edgekit
    precision, so not read as int4-weight.)"""
    realized = set()
    for op in ops:
        if op.weight_dequantized_from == "INT8" and op.activation_dtype == "FLOAT32":
            realized.add(LayerPrecision.INT8_WEIGHT)
        elif op.weight_dequantized_from == "INT4" and op.activation_dtype == "FLOAT32":
            realized.add(LayerPrecision.INT4_WEIGHT)
        elif op.weight_dequantized_from == "FLOAT16" and op.activation_dtype == "FLOAT32":
            realized.add(LayerPrecision.FP16)
        elif op.weight_dtype == "INT8" and op.activation_dtype == "INT8":
            realized.add(LayerPrecision.INT8)
        elif op.weight_dtype == "INT8" and op.activation_dtype == "FLOAT32":
            realized.add(LayerPrecision.INT8_DYNAMIC)
        elif op.weight_dtype == "FLOAT32" and op.weight_dequantized_from is None:
            realized.add(LayerPrecision.FP32)
        else:
            raise ArtifactError(
                f"layer '{path}' is a {op.kind} with {op.weight_dtype} weights "
                f"(dequantized from {op.weight_dequantized_from}) and {op.activation_dtype} "
                "activations, which no edgekit precision describes.",
                hint="re-export the model with `edgekit export --target tflite`.",
            )
    if len(realized) > 1:
        raise ArtifactError(
            f"layer '{path}' runs as {len(ops)} ops at different precisions "
            f"({', '.join(sorted(realized))}).",
            hint="re-export the model with `edgekit export --target tflite`.",
        )
    return realized.pop()


def _op_precisions(ops: list[_Op], quant: QuantSpec, types: dict[str, str]) -> list[LayerPrecision]:
    """The precision each op gets: a planned layer's op its layer's; any other op that of the
    plan's override around it (an attention block's softmax stays float when the block does).
    An op fused across regions takes the least quantized of theirs."""
    owner = {i: path for path, indices in _layer_ops(ops, quant, types).items() for i in indices}
    keys = sorted(quant.plan.overrides, key=len, reverse=True)  # most specific first
    modules = {key: _module_path(quant, key, types) for key in keys}
    blocks = {block: _module_path(quant, block, types) for block in quant.matmuls}

    def region(location: tuple[str, ...]) -> LayerPrecision:
        # Inside a block computing products: the products' precision (module docstring).
        block = next((b for b, m in blocks.items() if _spells(location, m, whole=False)), None)
        if block is not None:
            int8 = quant.matmuls[block] == MatmulPrecision.INT8
            return LayerPrecision.INT8 if int8 else LayerPrecision.FP32
        return next(
            (
                quant.plan.overrides[key]
                for key in keys
                if _spells(location, modules[key], whole=False)
            ),
            quant.plan.default,
        )

    gentlest_first = (
        LayerPrecision.FP32,
        LayerPrecision.FP16,
        LayerPrecision.INT8_WEIGHT,
        LayerPrecision.INT4_WEIGHT,
        LayerPrecision.INT8_DYNAMIC,
        LayerPrecision.INT8,
    )
    precisions = []
    for index, op in enumerate(ops):
        if index in owner:
            precisions.append(quant.layers[owner[index]])
            continue
        regions = {region(location) for location in op.locations} or {quant.plan.default}
        precisions.append(next(p for p in gentlest_first if p in regions))
    return precisions


def _product_precisions(
    ops: list[_Op], quant: QuantSpec, types: dict[str, str]
) -> dict[str, LayerPrecision | None]:
    """Each planned attention block's products as the file holds them (None: no product op of
    that block): INT8 operands on both sides int8, FLOAT32 on both fp32; a product with one
    int8 operand, or a block whose products differ, reads as the precision not planned."""
    blocks = {block: _module_path(quant, block, types) for block in quant.matmuls}
    seen: dict[str, set[LayerPrecision]] = {}
    for op in ops:
        if not op.product_operand_dtypes:
            continue
        owners = {
            block
            for location in op.locations
            for block, module in blocks.items()
            if _spells(location, module, whole=False)
        }
        if len(owners) != 1:
            continue  # outside every planned block, or ambiguous: never guessed
        held = {
            LayerPrecision.INT8 if dtype == "INT8" else LayerPrecision.FP32
            for dtype in op.product_operand_dtypes
        }
        if not set(op.product_operand_dtypes) <= {"INT8", "FLOAT32"}:
            raise ArtifactError(
                f"an attention product of '{next(iter(owners))}' takes "
                f"{'/'.join(map(str, op.product_operand_dtypes))} operands, which no edgekit "
                "precision describes.",
                hint="re-export the model with `edgekit export --target tflite`.",
            )
        seen.setdefault(owners.pop(), set()).update(held)
    return product_realization(seen, quant.matmuls)


def _recipe_rules(
    ops: list[_Op], precisions: list[LayerPrecision], default: LayerPrecision
) -> list[tuple[str, LayerPrecision]]:
    """(scope regex, precision) rules for ai-edge-quantizer, later rules winning.

    The plan's default goes first as a catch-all; then exact op scopes. Every op whose
    activations stay float (float, dynamic, weight-only layers and the ops around them) is first
    kept unquantized, so that where a weight-only or dynamic config does not apply to an op
    (a softmax, an add) the op falls back to float, not to a static int8 default.
    """
    differing = [(op, p) for op, p in zip(ops, precisions, strict=True) if p != default]
    rules = [(".*", default)]
    keep_float = [op.scope for op, p in differing if p != LayerPrecision.INT8]
    if keep_float:
        rules.append((_exact(keep_float), LayerPrecision.FP32))
    for precision in (
        LayerPrecision.FP16,
        LayerPrecision.INT8_WEIGHT,
        LayerPrecision.INT4_WEIGHT,
        LayerPrecision.INT8_DYNAMIC,
        LayerPrecision.INT8,
    ):
        scopes = [
            op.scope
            for op, p in differing
            if p == precision and (precision == LayerPrecision.INT8 or op.kind in _LAYER_OPS)
        ]
        if scopes:
            # A regex comment keeps each rule's key distinct: the quantizer keys rules by
            # regex, and a second rule with the same regex would replace the first.
            rules.append((f"{_exact(scopes)}(?#{precision.value})", precision))
    return rules


def _exact(scopes: Iterable[str]) -> str:
    return "^(?:" + "|".join(re.escape(s) for s in sorted(set(scopes)) if s) + ")$"


def _quantize(
    float_path: Path, model_path: Path, model: LoadedModel, quant: QuantSpec
) -> dict[str, Any]:
    """Quantize the float flatbuffer at `float_path` into `model_path` as `quant` plans it;
    returns manifest details."""
    from ai_edge_quantizer import quantizer

    float_bytes = float_path.read_bytes()
    ops = _read_ops(float_bytes)
    precisions = _op_precisions(ops, quant, module_types(model.module))
    rules = _recipe_rules(ops, precisions, quant.plan.default)
    recipe = _recipe_manager(rules)
    calibration_result = None
    debug = log.isEnabledFor(logging.DEBUG)
    # The quantizer's tqdm bars write to stderr; library code stays quiet unless --verbose.
    with quiet_native_stderr(enabled=not debug):
        if recipe.need_calibration():
            if quant.calibration is None:
                raise _no_calibration_error(model)
            calibration_result = _calibrate(float_bytes, recipe, model, quant.calibration)
        engine = quantizer.Quantizer(float_bytes, recipe.get_quantization_recipe())
        result = engine.quantize(
            calibration_result, enable_progress_bar=debug, enable_progress_report=False
        )
    quantized = bytes(result.quantized_model)
    # The app feeds and reads the float tensors it always did; a quantized signature tensor
    # would make the runtime cast raw int8 codes to floats.
    _, (inputs, outputs) = _signature_dtypes(quantized)
    if (inputs, outputs) != _signature_dtypes(float_bytes)[1]:
        dtypes = ", ".join(
            f"{k}: {getattr(v, '__name__', v)}" for k, v in {**inputs, **outputs}.items()
        )
        raise ExportError(
            f"ai-edge-quantizer changed the model's input/output dtypes ({dtypes}).",
            hint="report it with the plan; export with --quant int8-dynamic meanwhile.",
        )
    model_path.write_bytes(quantized)
    planned_ops = Counter(p.value for p in precisions)
    return {
        "quantizer": "ai_edge_quantizer",
        "ai_edge_quantizer_version": importlib.metadata.version("ai-edge-quantizer"),
        "float_flatbuffer_size_bytes": len(float_bytes),
        "ops_by_planned_precision": dict(sorted(planned_ops.items())),
        "recipe_rule_count": len(rules),
        "calibration": "min/max over every input" if calibration_result is not None else None,
    }


def _recipe_manager(rules: list[tuple[str, LayerPrecision]]) -> Any:
    """ai-edge-quantizer's recipe for `rules`, in order (a later matching rule wins)."""
    from ai_edge_quantizer import algorithm_manager, qtyping, recipe_manager

    all_ops = qtyping.TFLOperationName.ALL_SUPPORTED
    algorithms = algorithm_manager.AlgorithmName
    manager = recipe_manager.RecipeManager()
    for regex, precision in rules:
        if precision == LayerPrecision.FP32:
            manager.add_quantization_config(regex, all_ops, algorithm_key=algorithms.NO_QUANTIZE)
        elif precision == LayerPrecision.FP16:
            manager.add_weight_only_config(
                regex, all_ops, num_bits=16, algorithm_key=algorithms.FLOAT_CASTING
            )
        elif precision == LayerPrecision.INT8_WEIGHT:
            manager.add_weight_only_config(regex, all_ops, num_bits=8)
        elif precision == LayerPrecision.INT4_WEIGHT:
            # Symmetric, per output channel (the defaults), packed two values to a byte.
            manager.add_weight_only_config(regex, all_ops, num_bits=4)
        elif precision == LayerPrecision.INT8_DYNAMIC:
            manager.add_dynamic_config(regex, all_ops, num_bits=8)
        else:
            manager.add_static_config(regex, all_ops, activation_num_bits=8, weight_num_bits=8)
    # The model's own inputs and outputs stay float: apps feed float pixels and latents, and
    # read float logits; the quantizer adds the QUANTIZE/DEQUANTIZE ops behind them. Last, under
    # a key of their own: the graph's output pseudo-op has the scope of the op writing the
    # output (the classifier), so that op's exact rule would otherwise make the output int8.
    for io in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        manager.add_quantization_config(
            ".*(?#model inputs and outputs)", io, algorithm_key=algorithms.NO_QUANTIZE
        )
    return manager


def _int4_weight_ops() -> frozenset[str]:
    """The conv/linear ops this ai-edge-quantizer gives 4-bit weight-only weights, asked the way
    it decides when quantizing: a recipe of that one rule, and the config it picks per op kind
    (NO_QUANTIZE where its policy has no such config for the op)."""
    from ai_edge_quantizer import algorithm_manager, qtyping

    recipe = _recipe_manager([(".*", LayerPrecision.INT4_WEIGHT)])
    return frozenset(
        kind
        for kind in _LAYER_OPS
        if recipe.get_quantization_configs(qtyping.TFLOperationName(kind), "")[0]
        != algorithm_manager.AlgorithmName.NO_QUANTIZE
    )


def _layer_op_kind(layer: torch.nn.Module) -> str:
    """The op litert-torch lowers a conv/linear layer to, as its files show: a Linear a
    FULLY_CONNECTED, a depthwise Conv2d (one group per input channel) a DEPTHWISE_CONV_2D, any
    other convolution (grouped ones and Conv1d too) a CONV_2D."""
    import torch

    if isinstance(layer, torch.nn.Linear):
        return "FULLY_CONNECTED"
    if isinstance(layer, torch.nn.Conv2d) and 1 < layer.groups == layer.in_channels:
        return "DEPTHWISE_CONV_2D"
    return "CONV_2D"


def _calibrate(
    float_bytes: bytes, recipe: Any, model: LoadedModel, calibration: CalibrationInputs
) -> dict[str, Any]:
    """Activation ranges over the calibration inputs, streamed CALIBRATION_CHUNK at a time.

    Ranges are the true min/max over every input, as onnxruntime's and PT2E's default observers
    take them. ai-edge-quantizer's default moving average (0.95 old, 0.05 new) mostly keeps the
    first input's range: on tiny-mobilevit it clipped the logits of later inputs at 0.31 when
    they reached 0.57, and one int8 classifier layer alone fell to about 11 dB SQNR.
    """
    import numpy as np
    from ai_edge_quantizer import calibrator
    from ai_edge_quantizer.utils import qsv_utils

    signature_key, (dtypes, _) = _signature_dtypes(float_bytes)
    ranges = calibrator.Calibrator(
        float_bytes, num_threads=os.cpu_count() or 1, qsv_update_func=qsv_utils.min_max_update
    )
    chunk: list[dict[str, np.ndarray]] = []
    for sample in calibration:
        # Signature inputs are positional (args_N) in `model.inputs` order; litert-torch
        # narrows int64 to int32.
        chunk.append(
            {
                f"args_{i}": np.asarray(sample[spec.name], dtype=dtypes[f"args_{i}"])
                for i, spec in enumerate(model.inputs)
            }
        )
        if len(chunk) == CALIBRATION_CHUNK:
            ranges.calibrate({signature_key: chunk}, recipe)
            chunk = []
    if chunk:
        ranges.calibrate({signature_key: chunk}, recipe)
    if not ranges.get_model_qsvs():
        raise _no_calibration_error(model)
    return ranges.get_model_qsvs()


def _signature_dtypes(flatbuffer: bytes) -> tuple[str, tuple[dict[str, Any], dict[str, Any]]]:
    """The first signature's key, and its input and output names -> numpy dtypes."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    to_numpy = {
        schema.TensorType.FLOAT32: np.float32,
        schema.TensorType.FLOAT16: np.float16,
        schema.TensorType.INT32: np.int32,
        schema.TensorType.INT64: np.int64,
        schema.TensorType.INT8: np.int8,
        schema.TensorType.UINT8: np.uint8,
        schema.TensorType.BOOL: np.bool_,
    }
    model = schema.Model.GetRootAs(flatbuffer, 0)
    signature = model.SignatureDefs(0)
    graph = model.Subgraphs(signature.SubgraphIndex())

    def dtypes(entries: list[Any]) -> dict[str, Any]:
        return {
            e.Name().decode(): to_numpy.get(graph.Tensors(e.TensorIndex()).Type()) for e in entries
        }

    inputs = [signature.Inputs(i) for i in range(signature.InputsLength())]
    outputs = [signature.Outputs(i) for i in range(signature.OutputsLength())]
    return signature.SignatureKey().decode(), (dtypes(inputs), dtypes(outputs))


# --- Models over the flatbuffer limit: litert-torch PT2E, before lowering -------------------
#
# ai-edge-quantizer works on a flatbuffer, and the fp32 one of such a model cannot be written.
# PT2E quantizes the exported PyTorch graph instead (conv/linear weights -> quantize/dequantize
# pairs), and litert-torch's converter folds those into int8 constants, so the file never holds
# the fp32 weights. What it realizes, read back from files (tiny-mobilevit, tiny-sd UNet):
# - int8-dynamic: the DYNAMIC conversion gives CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED
#   int8 weights and float activations (TFLite's hybrid kernels quantize them per run). It does
#   so to EVERY float conv/linear weight, annotated or not: a layer planned fp32 comes back
#   int8-dynamic, so this conversion takes uniform plans only.
# - int8-weight: the STATIC conversion of a weight-only graph keeps a DEQUANTIZE from int8 before
#   each conv, but folds a linear layer's back into FLOAT32 weights (the 2 GB problem again);
#   only the converter's strict QDQ mode keeps every pair as written (`_strict_qdq_conversion`).
# - Static int8 is not offered: PT2E calibration of the SD UNet fails ("histogram_cpu not
#   implemented for 'Long'", the timestep path), and fp16 has no PT2E form.
# Per layer, PT2EQuantizer's own selectors silently select nothing or too much under torch 2.13:
# `set_module_name` strips "L__self___" (three underscores) from nn_module_stack keys spelled
# "L__self__block.conv_a" and turns every "_" into ".", so it matches no module; `set_module_type`
# compares class OBJECTS with the type-name strings the stack holds, so it matches nothing (a
# string name works); `set_module_name(name, None)` asserts. So edgekit annotates the planned
# layers itself, by the traced module path each op's nn_module_stack ends with.

# The precisions PT2E gives a layer here (one of them per model: the conversion mode is global),
# and how a user asks for a whole model at each.
_PT2E_PRECISIONS = (LayerPrecision.INT8_WEIGHT, LayerPrecision.INT8_DYNAMIC)
_INT8_PRECISIONS = frozenset(
    {LayerPrecision.INT8, LayerPrecision.INT8_DYNAMIC, LayerPrecision.INT8_WEIGHT}
)


def _plan_spelling(precision: LayerPrecision) -> str:
    from edgekit.quant.plan import NAMED_PLANS

    if precision.value in NAMED_PLANS:
        return f"--quant {precision.value}"
    return f'a plan file with "default": "{precision.value}"'


def _pt2e_unsupported_reason(quant: QuantSpec) -> str | None:
    """Why PT2E before lowering cannot realize `quant`, or None if it can."""
    allowed = (LayerPrecision.FP32, *_PT2E_PRECISIONS)
    refused = [(path, p) for path, p in quant.layers.items() if p not in allowed]
    if refused or quant.float_precision != LayerPrecision.FP32:
        path, precision = next(iter(refused), ("(float layers)", quant.float_precision))
        return (
            "a model this large is quantized before conversion (litert-torch PT2E), which gives "
            "conv/linear layers int8 weights (int8-weight or int8-dynamic) or keeps them fp32, "
            f"not {precision} as the plan asks for layer '{path}'"
        )
    quantized = set(quant.layers.values()) - {LayerPrecision.FP32}
    if not quantized:
        return f"this plan ({quant.label}) keeps every weight in fp32"
    if len(quantized) > 1:
        return (
            "litert-torch converts a PT2E-quantized model either with int8-weight or with "
            "int8-dynamic layers, and this plan asks for both"
        )
    kept = quant.layers_at(LayerPrecision.FP32)
    if quantized == {LayerPrecision.INT8_DYNAMIC} and kept:
        return (
            "litert-torch's dynamic conversion gives every conv/linear layer int8 weights, so "
            f"it cannot keep layer '{kept[0]}' fp32 as the plan asks (int8-weight layers can "
            "sit beside fp32 ones)"
        )
    return None


def _pt2e_precision(quant: QuantSpec) -> LayerPrecision | None:
    """The one int8 precision of `quant`'s quantized layers, if PT2E can realize the plan."""
    if _pt2e_unsupported_reason(quant) is not None:
        return None
    return next(p for p in quant.layers.values() if p != LayerPrecision.FP32)


def _all_layers_bytes(module: torch.nn.Module, quant: QuantSpec, precision: LayerPrecision) -> int:
    return planned_weight_bytes(module, dict.fromkeys(quant.layers, precision))


def _convert_pt2e(
    model: LoadedModel,
    args: tuple[torch.Tensor, ...],
    model_path: Path,
    quant: QuantSpec,
    precision: LayerPrecision,
) -> dict[str, Any]:
    """Quantize the planned layers' weights in the exported graph, then lower it to
    `model_path` with int8 weights; returns manifest details."""
    import litert_torch
    import torch
    from litert_torch.quantize import quant_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = _plan_quantizer(quant, precision)
    graph = model.exported_program().module()  # a fresh graph module: prepare_pt2e edits it
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        prepared(*args)  # the weight observers see each weight: per-channel scales
    # fold_quantize=True would hand the converter plain int8 tensors, which it refuses
    # ("uniform_dequantize ... must be ranked tensor of ... quantized values").
    converted = convert_pt2e(prepared, fold_quantize=False)
    # Traced from the eval-mode module; the flag only silences litert-torch's training warning
    # (exported graphs refuse .eval()).
    converted.training = False
    config = quant_config.QuantConfig(pt2e_quantizer=quantizer)
    with _strict_qdq_conversion(enabled=precision == LayerPrecision.INT8_WEIGHT):
        litert_torch.convert(converted, args, quant_config=config).export(str(model_path))
    return {
        "quantizer": "litert_torch PT2E (before lowering)",
        "pt2e_conversion": "dynamic"
        if precision == LayerPrecision.INT8_DYNAMIC
        else "weight-only, strict QDQ",
        "torchao_version": importlib.metadata.version("torchao"),
        "planned_weight_bytes": planned_weight_bytes(model.module, quant.layers),
        "layers_by_planned_precision": dict(
            sorted(Counter(p.value for p in quant.layers.values()).items())
        ),
    }


def _plan_quantizer(quant: QuantSpec, precision: LayerPrecision) -> Any:
    """A PT2EQuantizer that gives int8 weights (per output channel, symmetric) to the layers
    `quant` plans at `precision` and leaves every other op alone.

    Weight-only and dynamic graphs are the same (no activation observers); the global config's
    `is_dynamic` picks litert-torch's conversion (DYNAMIC: hybrid ops; STATIC: DEQUANTIZE).
    """
    import dataclasses

    from litert_torch.quantize import pt2e_quantizer as pt2eq

    dynamic = pt2eq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    config = (
        dynamic
        if precision == LayerPrecision.INT8_DYNAMIC
        else dataclasses.replace(dynamic, is_dynamic=False)
    )
    layers = frozenset(quant.traced_path(path) for path in quant.layers_at(precision))

    class PlanQuantizer(pt2eq.PT2EQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            self._annotate_all_dynamic_patterns(model, config, lambda n: _in_layers(n, layers))
            pt2eq.propagate_annotation(model)
            return model

    return PlanQuantizer().set_global(config)


def _in_layers(node: torch.fx.Node, layers: frozenset[str]) -> bool:
    """Whether an exported-graph node belongs to one of `layers` (traced module paths).

    A call belongs to the innermost module on its nn_module_stack. Parameters (get_attr) carry
    no stack and pass: the annotators also test a conv's weight and bias nodes, and the call
    that uses them decides.
    """
    if node.op != "call_function":
        return True
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return False
    path, _ = list(stack.values())[-1]
    return path in layers


@contextmanager
def _strict_qdq_conversion(*, enabled: bool) -> Iterator[None]:
    """Run litert-torch's converter in strict QDQ mode: every quantize/dequantize pair is kept
    as written, so a linear layer's int8 weight keeps its DEQUANTIZE instead of being folded
    back to float32. litert-torch has no argument for it; it builds the converter's config
    from this class at each call, so the class is swapped for the call."""
    if not enabled:
        yield
        return
    from litert_torch._convert import litert_converter

    api = litert_converter.converter_api_ext
    make_config = api.ConvertToTFLConfig
    if not hasattr(make_config(), "strict_qdq_mode"):
        raise ExportError(
            "This litert-torch converter has no strict QDQ mode, which int8-weight layers need "
            "when a model is quantized before conversion.",
            hint="use --quant int8-dynamic, or the litert-torch version edgekit pins.",
        )

    def strict_config() -> Any:
        config = make_config()
        config.strict_qdq_mode = True
        return config

    api.ConvertToTFLConfig = strict_config
    try:
        yield
    finally:
        api.ConvertToTFLConfig = make_config


@contextmanager
def _litert_progress(*, enabled: bool) -> Iterator[None]:
    """Turn litert-torch's step-by-step console printing on or off, then restore the setting.

    Library code does not print (only cli/ does), and the lines would tear through the CLI's
    spinner; with --verbose they are useful.
    """
    previous = os.environ.get(_PROGRESS_ENV)
    os.environ[_PROGRESS_ENV] = "y" if enabled else "n"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_PROGRESS_ENV, None)
        else:
            os.environ[_PROGRESS_ENV] = previous


def _by_position(signature_details: dict[str, Any], kind: str, path: Path) -> list[dict]:
    """Signature tensors sorted by the position in their name (`args_10` after `args_9`)."""
    positions = {}
    for key, detail in signature_details.items():
        match = _POSITIONAL_NAME.match(key)
        if match is None:
            raise ArtifactError(
                f"{path} has a signature {kind} named '{key}'; expected litert-torch's "
                "positional names (args_N / output_N).",
                hint="re-export the model with `edgekit export --target tflite`.",
            )
        positions[int(match.group(1))] = detail
    return [positions[i] for i in sorted(positions)]


class TFLiteRuntime:
    name = "ai-edge-litert"
    # Not an OpProfiler: the Python interpreter has no per-op profile to give.
    op_profile_unavailable_reason = OP_PROFILE_UNAVAILABLE

    def __init__(
        self,
        model_path: Path,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        *,
        settings: RuntimeSettings | None,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.version = importlib.metadata.version("ai-edge-litert")
        threads = settings.threads if settings else None
        delegate = (settings.delegate if settings else None) or "xnnpack"
        # ai-edge-litert applies XNNPACK by default; "none" asks for the plain builtin kernels.
        resolvers = {
            "xnnpack": OpResolverType.AUTO,
            "none": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        }
        if delegate not in resolvers:
            raise ArtifactError(
                f"The target profile names the '{delegate}' delegate, which the host LiteRT "
                "interpreter cannot load (GPU and NNAPI delegates exist on the phone only).",
                hint='bench it in the Android demo app, or use delegate = "xnnpack" here.',
            )
        self.settings = {"threads": threads, "delegate": delegate}
        with quiet_native_stderr(enabled=not log.isEnabledFor(logging.DEBUG)):
            # The XNNPACK delegate announces itself on stderr at every load.
            self.interpreter = Interpreter(
                model_path=str(model_path),
                num_threads=threads,
                experimental_op_resolver_type=resolvers[delegate],
            )
            self.interpreter.allocate_tensors()
        runner = self.interpreter.get_signature_runner()
        input_details = _by_position(runner.get_input_details(), "input", model_path)
        output_details = _by_position(runner.get_output_details(), "output", model_path)
        self._check_matches(model_path, "inputs", inputs, input_details)
        self._check_matches(model_path, "outputs", outputs, output_details)
        # (name, tensor index, dtype the interpreter wants): set_tensor/invoke directly, since
        # the signature runner re-allocates every tensor on each call, which would skew benchmarks.
        self._inputs = [
            (spec.name, d["index"], d["dtype"])
            for spec, d in zip(inputs, input_details, strict=True)
        ]
        self._outputs = [
            (spec.name, d["index"], spec.dtype)
            for spec, d in zip(outputs, output_details, strict=True)
        ]

    @staticmethod
    def _check_matches(
        path: Path, kind: str, specs: list[TensorSpec], details: list[dict[str, Any]]
    ) -> None:
        """Positions map to names only if count and every shape agree with the manifest."""
        found = [list(map(int, d["shape"])) for d in details]
        expected = [spec.shape for spec in specs]
        if found != expected:
            raise ArtifactError(
                f"{path} {kind} have shapes {found} in signature order; the manifest says "
                f"{expected} for {[spec.name for spec in specs]}.",
                hint="the artifact and its manifest do not belong together; re-export.",
            )

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        for name, index, dtype in self._inputs:
            # litert-torch narrows int64 inputs to int32 (its enable_x64=False default).
            self.interpreter.set_tensor(index, np.asarray(inputs[name], dtype=dtype))
        self.interpreter.invoke()
        return {
            name: self.interpreter.get_tensor(index).astype(dtype, copy=False)
            for name, index, dtype in self._outputs
        }
