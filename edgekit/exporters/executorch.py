"""ExecuTorch `.pte` through torch.export -> XNNPACK partitioner, run with executorch.runtime.

Quantized plans go through PT2E with the XNNPACK quantizer: torch.export -> prepare_pt2e ->
calibration -> convert_pt2e -> torch.export -> lowering to XNNPACK. Each layer gets the plan's
precision through a filter on the module path every graph node records (`nn_module_stack`).

Plan read-back reads the written `.pte`: the XNNPACK delegate payloads inside it are flatbuffers
whose convolution and fully-connected nodes name the datatypes of their input and weights
(qint8 + qcint8: static int8; qdint8: dynamic int8; fp32: float); layers XNNPACK did not take
are portable-kernel instructions whose weight tensors the program describes. Neither carries a
module path (a delegate node has a debug handle, an instruction an index), so export writes a
small layer map next to the program (`model.layers.json`: debug handle / instruction index ->
module path, from the lowered graph, bound to the `.pte` by its sha256) and the read-back joins
the two. The map says where a node came from; the precision always comes from the `.pte`.

Export also writes an ETRecord beside the program (`model.etrecord`), ExecuTorch's own record of
the graph it lowered, for its devtools: `profile_ops` runs the program with ETDump on and reads
the events with the Inspector against it, so each op's time lands on a module path.

Attention products (Q K^T, softmax V) stay float: the XNNPACK quantizer has no annotator for
activation-by-activation matmuls (it annotates convolutions, linear layers, adds, muls, pools,
...), so a plan with int8 products is refused naming the block (`plan_unsupported_reason`). The
read-back still reads them from the `.pte` (XNNPACK batch-matrix-multiply nodes and portable
bmm kernels, the datatypes of their two operands), so a product quantized by some later
quantizer change would fail the export, not pass unseen.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import ArtifactError, ExportError
from edgekit.exporters import ExportResult
from edgekit.exporters._native import quiet_native_stderr
from edgekit.quant.plan import LayerPrecision, matmul_refusal, realized_precision

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from edgekit.bench.schema import OpProfile, OpRow
    from edgekit.models.base import LoadedModel, TensorSpec
    from edgekit.profiles import RuntimeSettings
    from edgekit.quant.spec import QuantSpec

log = logging.getLogger(__name__)

# The layer map written next to each `.pte` (`model.pte` -> `model.layers.json`).
LAYER_MAP_SUFFIX = ".layers.json"
LAYER_MAP_FORMAT = 1
XNNPACK_BACKEND_ID = "XnnpackBackend"
# The ETRecord written next to each `.pte` (`model.pte` -> `model.etrecord`).
ETRECORD_SUFFIX = ".etrecord"
# ExecuTorch builds an ETRecord from a deep copy of the edge program taken before lowering, so
# recording one holds a second copy of the weights in memory while lowering. Above this many
# bytes of parameters (the SD 1.5 UNet's 3.4 GB) export skips it, and profiles of that model
# name ops without module paths.
ETRECORD_MAX_WEIGHT_BYTES = 2**30
# Backend ids of the program's delegates -> the name a profile shows.
_BACKEND_NAMES = {XNNPACK_BACKEND_ID: "XNNPACK"}
# Ops left outside the delegate that do a layer's arithmetic: on the portable kernels they are
# a fallback to a path many times slower than XNNPACK's (kernel names without ".out").
_FALLBACK_KERNELS = frozenset({"convolution", "linear", "addmm", "mm", "bmm", "matmul"})
# What the Inspector calls the events wrapping one instruction, and the method-level events.
_DELEGATE_CALL = "DELEGATE_CALL"
_OPERATOR_CALL = "OPERATOR_CALL"
_KERNEL_EVENT_PREFIX = "native_call_"
_EXECUTE_BLOCK = "Execute"
_METHOD_EVENTS = frozenset({"Method::execute", "Method::init", "Program::load_method"})

# XNNPACK nodes that plan layers (nn.Conv1d/Conv2d/Linear) lower to; Conv1d lowers to XNNConv2d.
_XNN_GEMM_NODES = frozenset(
    {"XNNConv2d", "XNNDepthwiseConv2d", "XNNConvTranspose2d", "XNNFullyConnected"}
)
_XNN_FP32 = "xnn_datatype_fp32"
# An attention product inside a delegate (XNNPACK's batched matmul of two tensors).
_XNN_PRODUCT_NODE = "XNNBatchMatrixMultiply"
# Portable kernels that compute a product of two activations when XNNPACK does not take it.
_PORTABLE_PRODUCT_OPS = frozenset({"aten::bmm", "aten::matmul"})
# Why XNNPACK cannot realize int8 attention products.
XNNPACK_NO_PRODUCTS = (
    "executorch's XNNPACKQuantizer has no annotator for activation-by-activation matmuls"
)
_XNN_FP16 = "xnn_datatype_fp16"
_XNN_INT8_WEIGHTS = frozenset({"xnn_datatype_qint8", "xnn_datatype_qcint8"})
_XNN_STATIC_INT8_INPUTS = frozenset({"xnn_datatype_qint8", "xnn_datatype_quint8"})
_XNN_DYNAMIC_INT8_INPUTS = frozenset({"xnn_datatype_qdint8", "xnn_datatype_qpint8"})
# Layers the XNNPACK delegate did not take run as portable kernels in the program itself:
# operator name -> index of the weight argument.
_PORTABLE_GEMM_WEIGHT_ARG = {"aten::convolution": 1, "aten::linear": 1, "aten::addmm": 2}
# Ops a weight may pass through between a dequantize and the layer (layout only).
_LAYOUT_OPS = frozenset(
    {
        "aten::permute_copy",
        "aten::t_copy",
        "aten::transpose_copy",
        "aten::view_copy",
        "aten::expand_copy",
        "aten::clone",
        "dim_order_ops::_to_dim_order_copy",
    }
)


class ExecuTorchExporter:
    name = "executorch"
    display_name = "ExecuTorch"
    # What the XNNPACK quantizer and delegate realize per layer: static int8 (per-channel
    # weights, calibrated activations) and dynamic int8 (activations quantized per run). No
    # int4-weight (not built): edgekit configures XNNPACKQuantizer with 8-bit weights only, and
    # reads back qint8/qcint8 weights, not XNNPACK's 4-bit (qcint4) ones.
    layer_precisions = (LayerPrecision.FP32, LayerPrecision.INT8, LayerPrecision.INT8_DYNAMIC)
    layer_evidence = (
        "datatypes of each convolution / fully-connected node's input and weights in the .pte's "
        "XNNPACK delegate payloads (qint8 input + qint8/qcint8 weights: int8; qdint8 input: "
        "int8-dynamic; fp32: fp32) and, for layers left on portable kernels, the weight "
        "tensor's dtype in the program; nodes joined to module paths by debug handle through "
        f"the export's layer map (*{LAYER_MAP_SUFFIX}, bound to the .pte by its sha256)"
    )
    runtime_modules = ("executorch.runtime", "executorch.extension.pybindings.portable_lib")
    tool_packages = ("executorch", "torchao")
    file_suffix = ".pte"

    def plan_unsupported_reason(self, quant: QuantSpec, model: LoadedModel) -> str | None:
        """The first convolution planned int8-dynamic, or attention block with int8 products,
        which XNNPACK does not realize."""
        blocks = quant.int8_matmuls
        if blocks:
            return matmul_refusal(self.display_name, blocks, XNNPACK_NO_PRODUCTS)
        return _dynamic_conv_refusal(model.module, quant)

    def export(
        self,
        model: LoadedModel,
        sample_inputs: dict[str, np.ndarray],
        model_path: Path,
        *,
        quant: QuantSpec,
    ) -> ExportResult:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        args = _tensors(sample_inputs, model.inputs)
        exported = model.exported_program()  # traced once per component, shared
        details: dict[str, Any] = {"backend": "xnnpack"}
        if quant.is_quantized:
            exported, details["quantization"] = _quantize_pt2e(exported, args, model, quant)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.module.parameters())
        record = weight_bytes <= ETRECORD_MAX_WEIGHT_BYTES
        edge = to_edge_transform_and_lower(
            exported, partitioner=[XnnpackPartitioner()], generate_etrecord=record
        )
        delegation = _delegation_summary(edge.exported_program().graph_module)
        delegated = _delegated_module_paths(edge.exported_program().graph_module)
        program = edge.to_executorch()
        model_path.write_bytes(program.buffer)
        map_path = write_layer_map(model_path, delegated, _instruction_module_paths(program))
        details["etrecord"] = write_etrecord(program, model_path).name if record else None
        log.info(
            "XNNPACK took %d of %d ops; not delegated: %s",
            delegation["delegated_ops"],
            delegation["delegated_ops"] + delegation["non_delegated_ops"],
            delegation["non_delegated_by_op"] or "none",
        )
        # The layer map and the ETRecord are for edgekit's read-back and profiles, not for the
        # device: not part of the model's size.
        return ExportResult(
            files=[model_path], details={**details, **delegation, "layer_map": map_path.name}
        )

    def read_layer_precisions(
        self, model_path: Path, quant: QuantSpec
    ) -> dict[str, LayerPrecision | None]:
        delegated, instructions = read_layer_map(model_path)
        found: dict[str, set[LayerPrecision]] = defaultdict(set)
        products: dict[str, set[LayerPrecision]] = defaultdict(set)
        for traced, precision, is_product in _pte_layer_precisions(
            model_path, delegated, instructions
        ):
            if not traced.startswith(quant.module_prefix):
                continue
            path = traced.removeprefix(quant.module_prefix)
            if not is_product:
                found[path].add(precision)
                continue
            block = max(
                (b for b in quant.matmuls if path == b or path.startswith(b + ".")),
                key=len,
                default=None,
            )
            if block is not None:
                products[block].add(precision)
        for block in quant.matmuls:
            found[block] = products.get(block, set())
        planned_all = {
            **quant.layers,
            **{b: LayerPrecision(p.value) for b, p in quant.matmuls.items()},
        }
        # A module called twice lowers to two nodes; if they differ, the one not planned shows.
        return {
            path: realized_precision(found.get(path, set()), planned)
            for path, planned in planned_all.items()
        }

    def host_runtime_unavailable_reason(self) -> str | None:
        return None  # the runtime is a pip dependency on every host OS

    def runtime(
        self,
        model_path: Path,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        *,
        settings: RuntimeSettings | None = None,
    ) -> ExecuTorchRuntime:
        return ExecuTorchRuntime(model_path, inputs, outputs, settings=settings)


# --- quantization ---------------------------------------------------------------------------


def _tensors(inputs: dict[str, np.ndarray], specs: list[TensorSpec]) -> tuple[torch.Tensor, ...]:
    import numpy as np
    import torch

    return tuple(
        torch.from_numpy(np.ascontiguousarray(inputs[spec.name], dtype=spec.dtype))
        for spec in specs
    )


def _dynamic_conv_refusal(module: nn.Module, quant: QuantSpec) -> str | None:
    """The first convolution a plan asks to quantize dynamically. The XNNPACK quantizer's
    dynamic int8 leaves convolutions float without a word when they are depthwise, 1-D, or
    followed by a ReLU (measured with executorch 1.5.1), so edgekit takes it for linear layers
    only and refuses the rest up front, naming the layer."""
    from torch import nn

    from edgekit.quant.plan import quantizable_layers

    dynamic = set(quant.layers_at(LayerPrecision.INT8_DYNAMIC))
    convolutions = [
        path
        for path, layer in quantizable_layers(module).items()
        if path in dynamic and isinstance(layer, nn.Conv1d | nn.Conv2d)
    ]
    if not convolutions:
        return None
    more = f" (and {len(convolutions) - 1} more convolutions)" if len(convolutions) > 1 else ""
    return (
        f"ExecuTorch (XNNPACK) cannot quantize the convolution '{convolutions[0]}'{more} "
        "dynamically (int8-dynamic): its quantizer keeps depthwise convolutions and those "
        "followed by a ReLU float, so edgekit realizes int8-dynamic on linear layers only."
    )


def _quantize_pt2e(
    exported: torch.export.ExportedProgram,
    args: tuple[torch.Tensor, ...],
    model: LoadedModel,
    quant: QuantSpec,
) -> tuple[torch.export.ExportedProgram, dict[str, Any]]:
    """PT2E with the XNNPACK quantizer, one quantizer per int8 flavour the plan uses, each
    restricted to the graph nodes whose module the plan gives that precision."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer

    static = bool(quant.layers_at(LayerPrecision.INT8))
    if static and quant.calibration is None:
        raise ExportError(
            "Static int8 needs calibration data to set activation ranges, and none was given.",
            hint="pass --calib IMAGES_DIR (or prompts for Stable Diffusion), or plan "
            "int8-dynamic for linear layers.",
        )
    # Selection by module path, not `set_module_type`/`set_module_name`: under torch 2.13 the
    # graph stores module types as strings, so a class object matches nothing (an all-int8
    # model, silently), and `set_module_name(name, None)` asserts. A filter sees every node.
    quantizers = []
    # Dynamic first: it annotates linear/conv only, and the static one skips annotated nodes.
    for precision, is_dynamic in (
        (LayerPrecision.INT8_DYNAMIC, True),
        (LayerPrecision.INT8, False),
    ):
        if quant.layers_at(precision):
            config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=is_dynamic)
            quantizer = XNNPACKQuantizer().set_global(config)
            quantizer.set_filter_function(_planned_as(quant, precision))
            quantizers.append(quantizer)
    quantizer = quantizers[0] if len(quantizers) == 1 else ComposableQuantizer(quantizers)
    prepared = prepare_pt2e(exported.module(), quantizer)
    calibrated = 0
    with torch.no_grad():
        if static:
            for sample in quant.calibration:  # streamed: one input in memory at a time
                prepared(*_tensors(sample, model.inputs))
                calibrated += 1
            if calibrated == 0:
                raise ExportError(
                    "The calibration data yielded no inputs; static int8 needs at least one.",
                    hint="check the calibration folder or prompts file.",
                )
        else:
            # Dynamic int8 only: activation ranges are taken per run, but the weight observers
            # still need one forward pass to see the weights.
            prepared(*args)
    converted = convert_pt2e(prepared)
    requantized = torch.export.export(converted, args, strict=False)
    return requantized, {
        "quantizer": "XNNPACKQuantizer (pt2e), symmetric int8, per-channel weights",
        "calibration_inputs": calibrated,
    }


def _planned_as(quant: QuantSpec, precision: LayerPrecision) -> Callable[[Any], bool]:
    """Quantizer filter: True for graph nodes the plan gives `precision`, judged by the
    innermost module in the node's `nn_module_stack` (the plan's longest matching key wins,
    as in `QuantPlan.precision_of`)."""

    def selects(node: Any) -> bool:
        if node.op != "call_function":
            # Weights, biases and inputs have no module stack; the quantizer puts them in one
            # pattern with the op that uses them, and that op decides.
            return True
        return _planned_at(quant, _innermost_module(node)) == precision

    return selects


def _innermost_module(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = next(reversed(stack.values()))[0]
    # torch.export's strict mode spells the root "L['self']."; the non-strict mode does not.
    return path.removeprefix("L['self'].")


def _planned_at(quant: QuantSpec, traced_path: str) -> LayerPrecision:
    if traced_path.startswith(quant.module_prefix):
        return quant.plan.precision_of(traced_path.removeprefix(quant.module_prefix))
    return quant.plan.default  # edgekit's wrapper around the user's model


# --- lowering bookkeeping -------------------------------------------------------------------


def _delegation_summary(graph_module: Any) -> dict[str, Any]:
    """How many edge ops XNNPACK took, and which ops stayed on the portable CPU kernels."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    not_delegated = Counter(
        {op: b.non_delegated for op, b in info.delegation_by_operator.items() if b.non_delegated}
    )
    # getitem only unpacks the delegate's tuple output: bookkeeping, not computation.
    not_delegated.pop("getitem", None)
    return {
        "delegated_ops": info.num_delegated_nodes,
        "non_delegated_ops": sum(not_delegated.values()),
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "non_delegated_by_op": dict(sorted(not_delegated.items())),
    }


def _delegated_module_paths(graph_module: Any) -> dict[int, str]:
    """Debug handle -> module path of the nodes inside each XNNPACK subgraph: the handles the
    delegate's own nodes carry in the payload. Quantize/dequantize nodes share their op's handle
    and have no module."""
    paths: dict[int, str] = {}
    for child in graph_module.children():
        original = getattr(child, "original_module", None)  # a LoweredBackendModule
        if original is None:
            continue
        for node in original.graph_module.graph.nodes:
            handle = node.meta.get("debug_handle")
            path = _innermost_module(node) if node.op == "call_function" else ""
            if isinstance(handle, int) and path:
                paths.setdefault(handle, path)
    return paths


def _instruction_module_paths(program: Any) -> dict[int, str]:
    """Instruction index -> module path of the ops left on portable kernels. The emitter
    replaces each emitted node's debug handle with its instruction's index in the chain (that
    index is what ExecuTorch's profiler logs); nodes it does not emit (getitem, allocations)
    have no op schema and are skipped."""
    paths: dict[int, str] = {}
    for node in program.exported_program().graph_module.graph.nodes:
        handle = node.meta.get("debug_handle")
        if node.op == "call_function" and hasattr(node.target, "_schema"):
            path = _innermost_module(node)
            if isinstance(handle, int) and path:
                paths[handle] = path
    return paths


def layer_map_path(model_path: Path) -> Path:
    return model_path.with_suffix(LAYER_MAP_SUFFIX)


def write_layer_map(
    model_path: Path, delegated: dict[int, str], instructions: dict[int, str]
) -> Path:
    """Where the `.pte`'s nodes came from: XNNPACK node debug handle -> module path, and
    portable-kernel instruction index -> module path. Bound to the `.pte` by its sha256."""
    from edgekit.artifact import hash_file

    path = layer_map_path(model_path)
    layer_map = {
        "format": LAYER_MAP_FORMAT,
        "program_file": model_path.name,
        "program_sha256": hash_file(model_path),
        "delegated": {str(h): p for h, p in sorted(delegated.items())},
        "instructions": {str(i): p for i, p in sorted(instructions.items())},
    }
    path.write_text(json.dumps(layer_map, indent=0) + "\n")
    return path


def read_layer_map(model_path: Path) -> tuple[dict[int, str], dict[int, str]]:
    """(XNNPACK debug handle -> module path, instruction index -> module path) for this .pte."""
    from edgekit.artifact import hash_file

    path = layer_map_path(model_path)
    if not path.is_file():
        raise ArtifactError(
            f"No layer map {path.name} next to {model_path.name}.",
            hint="re-export with this edgekit version; the map joins the .pte's nodes to "
            "module paths.",
        )
    layer_map = json.loads(path.read_text())
    if layer_map.get("format") != LAYER_MAP_FORMAT:
        raise ArtifactError(f"{path.name} has an unknown format {layer_map.get('format')!r}.")
    if layer_map["program_sha256"] != hash_file(model_path):
        raise ArtifactError(
            f"{path.name} describes another program than {model_path.name} (sha256 differs).",
            hint="the .pte was replaced after export; re-export.",
        )
    delegated = {int(h): p for h, p in layer_map["delegated"].items()}
    return delegated, {int(i): p for i, p in layer_map["instructions"].items()}


def etrecord_path(model_path: Path) -> Path:
    return model_path.with_suffix(ETRECORD_SUFFIX)


def write_etrecord(program: Any, model_path: Path) -> Path:
    """Save the ETRecord ExecuTorch made while lowering (`generate_etrecord=True`): the edge
    graph before partitioning, whose nodes carry the debug handles the program and its XNNPACK
    payloads refer to, and the program's debug-handle maps.

    Kept to what maps events to the graph: the ATen program (for numerical comparison against
    eager ops) is left out, and the record's own copy of the weights becomes zero-stride
    placeholders, one element of storage each. A full record stores the weights twice (ATen
    and edge programs: 1.2 of tiny-mobilevit's 5.5 MB, and 45 MB more for MobileViT-S's 22 MB
    of weights); this one is the edge graph alone (2.9 MB for tiny-mobilevit)."""
    import torch

    record = program.get_etrecord()
    record.exported_program = None
    record.export_graph_id = None
    edge_programs = record.edge_dialect_program
    if not isinstance(edge_programs, dict):
        edge_programs = {"forward": edge_programs}
    for edge_program in edge_programs.values():
        for table in (edge_program.state_dict, edge_program.constants):
            for name, value in list(table.items()):
                if isinstance(value, torch.Tensor):
                    table[name] = torch.zeros((), dtype=value.dtype).expand(value.shape)
    path = etrecord_path(model_path)
    record.save(str(path))
    return path


# --- reading the .pte -----------------------------------------------------------------------


def _pte_layer_precisions(
    model_path: Path, delegated: dict[int, str], instructions: dict[int, str]
) -> Iterator[tuple[str, LayerPrecision, bool]]:
    """(module path, precision, is an attention product) of every convolution / matrix-multiply
    node in the program: inside XNNPACK payloads, and left on portable kernels. Reads the
    program flatbuffer and the delegates' graphs only, never the weights, so it stays cheap for
    large files."""
    from executorch.exir._serialize._program import _flatbuffer_to_program, _get_extended_header

    with model_path.open("rb") as file:
        header = _get_extended_header(file.read(64))
        file.seek(0)
        program = _flatbuffer_to_program(file.read(header.program_size if header else -1))
        plan = program.execution_plan[0]
        payloads = [
            _xnnpack_flatbuffer(program, file, header.segment_base_offset if header else 0, d)
            for d in plan.delegates
        ]
    graphs = [p for p in payloads if p is not None]
    for handle, precision, is_product in _xnnpack_gemm_precisions(graphs):
        if handle in delegated:
            yield delegated[handle], precision, is_product
    for index, precision, is_product in _portable_gemm_precisions(plan):
        if index in instructions:
            yield instructions[index], precision, is_product


def _xnnpack_flatbuffer(program: Any, file: Any, segment_base: int, delegate: Any) -> bytes | None:
    """The XNNPACK flatbuffer inside one delegate's payload (not its constant data)."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir.schema import DataLocation

    if delegate.id != XNNPACK_BACKEND_ID:
        return None
    processed = delegate.processed
    if processed.location == DataLocation.INLINE:
        payload = program.backend_delegate_data[processed.index].data
        start, size = 0, len(payload)
    else:  # a segment after the program, at the extended header's base offset
        segment = program.segments[processed.index]
        file.seek(segment_base + segment.offset)
        payload = file.read(XNNHeader.EXPECTED_LENGTH)
        start, size = segment_base + segment.offset, segment.size
    if payload[4:8] != XNNHeader.EXPECTED_MAGIC:  # an older payload: the flatbuffer alone
        offset, length = 0, size
    else:
        xnn = XNNHeader.from_bytes(payload[: XNNHeader.EXPECTED_LENGTH])
        offset, length = xnn.flatbuffer_offset, xnn.flatbuffer_size
    if processed.location == DataLocation.INLINE:
        return bytes(payload[offset : offset + length])
    file.seek(start + offset)
    return file.read(length)


def _xnnpack_gemm_precisions(
    payloads: list[bytes],
) -> Iterator[tuple[int, LayerPrecision, bool]]:
    for graph in _xnnpack_graphs(payloads):
        datatypes = {}
        constants = set()
        for value in graph["xvalues"]:
            tensor = value["xvalue_union"]
            tensor = tensor.get("tensor_value", tensor)  # quantized values wrap a tensor value
            datatypes[tensor["id_out"]] = tensor["datatype"]
            if tensor.get("constant_buffer_idx", 0):
                constants.add(tensor["id_out"])
        for node in graph["xnodes"]:
            fields = node["xnode_union"]
            if node["xnode_union_type"] == _XNN_PRODUCT_NODE:
                operands = [fields["input1_id"], fields["input2_id"]]
                if not constants.intersection(operands):
                    types = {datatypes[i] for i in operands}
                    yield node["debug_handle"], _xnn_product_precision(types), True
                continue
            if node["xnode_union_type"] not in _XNN_GEMM_NODES:
                continue
            precision = _xnn_precision(
                datatypes[fields["input1_id"]], datatypes[fields["filter_id"]]
            )
            if precision is None:
                log.warning(
                    "XNNPACK node %s (debug handle %s) has input %s and weights %s, which no "
                    "plan precision describes",
                    node["xnode_union_type"],
                    node["debug_handle"],
                    datatypes[fields["input1_id"]],
                    datatypes[fields["filter_id"]],
                )
                continue
            yield node["debug_handle"], precision, False


def _xnn_product_precision(types: set[str]) -> LayerPrecision:
    """A batch matmul's precision from its operands' datatypes: int8 only if both are."""
    if types <= _XNN_STATIC_INT8_INPUTS | _XNN_DYNAMIC_INT8_INPUTS:
        return LayerPrecision.INT8
    return LayerPrecision.FP32 if types & {_XNN_FP32, _XNN_FP16} else LayerPrecision.INT8


def _xnn_precision(input_type: str, weight_type: str) -> LayerPrecision | None:
    if weight_type in _XNN_INT8_WEIGHTS:
        if input_type in _XNN_STATIC_INT8_INPUTS:
            return LayerPrecision.INT8
        if input_type in _XNN_DYNAMIC_INT8_INPUTS:
            return LayerPrecision.INT8_DYNAMIC
        if input_type == _XNN_FP32:
            return LayerPrecision.INT8_WEIGHT
    if input_type == weight_type == _XNN_FP32:
        return LayerPrecision.FP32
    if input_type == weight_type == _XNN_FP16:
        return LayerPrecision.FP16
    return None


def _xnnpack_graphs(payloads: list[bytes]) -> list[dict[str, Any]]:
    """The XNNPACK flatbuffers as JSON, decoded by flatc (shipped with executorch) against the
    schema shipped with the XNNPACK backend: one flatc run for all of them."""
    import importlib.resources
    import subprocess
    import tempfile

    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    if not payloads:
        return []
    schema = importlib.resources.files("executorch.backends.xnnpack.serialization") / "schema.fbs"
    with (
        tempfile.TemporaryDirectory() as folder,
        importlib.resources.as_file(schema) as schema_path,
    ):
        binaries = []
        for index, payload in enumerate(payloads):
            binary = Path(folder) / f"graph{index}.bin"
            binary.write_bytes(payload)
            binaries.append(str(binary))
        subprocess.run(
            [_get_flatc_path(), "--json", "--strict-json", "--defaults-json", "--raw-binary",
             "-o", folder, str(schema_path), "--", *binaries],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return [_json_with_non_finite(Path(b).with_suffix(".json").read_text()) for b in binaries]


def _json_with_non_finite(text: str) -> dict[str, Any]:
    """flatc writes infinite clamp bounds as bare `inf` (and `nan`); Python's json reads
    `Infinity` and `NaN`."""
    import re

    text = re.sub(r"(?<=[\s:\[,])(-?)inf\b", r"\1Infinity", text)
    return json.loads(re.sub(r"(?<=[\s:\[,])-?nan\b", "NaN", text))


def _portable_gemm_precisions(plan: Any) -> Iterator[tuple[int, LayerPrecision, bool]]:
    """Convolutions and linear layers XNNPACK did not take: they run as portable kernels in
    float; a weight that a dequantize op produced is int8 stored, computed in float.
    Yields (instruction index, precision)."""
    from executorch.exir.schema import KernelCall

    kernel_calls = []
    index = 0
    for chain in plan.chains:
        for instruction in chain.instructions:
            call = instruction.instr_args
            if isinstance(call, KernelCall):
                kernel_calls.append((index, plan.operators[call.op_index].name, call.args))
            index += 1
    producers = {args[-1]: (name, args) for _, name, args in kernel_calls if args}
    for index, name, args in kernel_calls:
        if name in _PORTABLE_PRODUCT_OPS:
            # Portable kernels compute in float (int8 would be a quantized kernel of its own).
            yield index, LayerPrecision.FP32, True
            continue
        weight_arg = _PORTABLE_GEMM_WEIGHT_ARG.get(name)
        if weight_arg is not None:
            precision = _portable_weight_precision(plan, args[weight_arg], producers)
            if precision is not None:
                yield index, precision, False


def _portable_weight_precision(
    plan: Any, value_index: int, producers: dict[int, tuple[str, list[int]]]
) -> LayerPrecision | None:
    from executorch.exir.scalar_type import ScalarType
    from executorch.exir.schema import Tensor

    tensor = plan.values[value_index].val
    if not isinstance(tensor, Tensor) or tensor.scalar_type not in (
        ScalarType.FLOAT,
        ScalarType.HALF,
    ):
        return None
    seen = value_index
    while seen in producers:  # follow the weight back through layout ops
        name, args = producers[seen]
        if name.startswith("quantized_decomposed::dequantize"):
            return LayerPrecision.INT8_WEIGHT
        if name not in _LAYOUT_OPS:
            break
        seen = args[0]
    return LayerPrecision.FP32 if tensor.scalar_type == ScalarType.FLOAT else LayerPrecision.FP16


# --- runtime --------------------------------------------------------------------------------


class ExecuTorchRuntime:
    name = "executorch"

    def __init__(
        self,
        model_path: Path,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        *,
        settings: RuntimeSettings | None,
    ) -> None:
        import importlib.metadata

        from executorch.runtime import Runtime

        self.version = importlib.metadata.version("executorch")
        threads = settings.threads if settings else None
        delegate = settings.delegate if settings else None
        if delegate not in (None, "xnnpack"):
            raise ArtifactError(
                f"The target profile names the '{delegate}' delegate; edgekit's .pte files are "
                "lowered to XNNPACK, the delegate is chosen at export, not at load.",
                hint='use a profile with delegate = "xnnpack" (or none) for ExecuTorch.',
            )
        # The delegate is baked into the program at export; recorded, not switched here.
        self.settings = {"threads": threads, "delegate": "xnnpack"}
        if threads:
            # XNNPACK's pool is process-wide; this is the supported way to size it from Python.
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(threads)
        error: RuntimeError | None = None
        with quiet_native_stderr(enabled=not log.isEnabledFor(logging.DEBUG)) as native_log:
            # XNNPACK's cpuinfo prints probe failures for ARM-only files on x86 when the
            # delegate initialises, in load_method.
            try:
                self.program = Runtime.get().load_program(model_path)
                self.method = self.program.load_method("forward")
            except RuntimeError as exc:
                error = exc
        if error is not None:
            # The runtime's exception says only "error: 0x23"; its log says what was wrong.
            detail = f" ({native_log.last_line})" if native_log.last_line else ""
            raise RuntimeError(f"{error}{detail}") from error
        self.model_path = model_path
        self.input_names = [spec.name for spec in inputs]
        self.output_names = [spec.name for spec in outputs]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        tensors = [torch.from_numpy(inputs[name]) for name in self.input_names]
        results = self.method.execute(tensors)
        return {
            name: r.numpy() if hasattr(r, "numpy") else r
            for name, r in zip(self.output_names, results, strict=True)
        }

    def profile_ops(self, inputs: dict[str, np.ndarray], runs: int) -> OpProfile:
        """ETDump from a second load of the program with event tracing on (the timed one runs
        without it), read with ExecuTorch's Inspector against the export's ETRecord."""
        import tempfile
        import warnings

        import torch
        from executorch.devtools import Inspector
        from executorch.runtime import Runtime

        from edgekit.bench.schema import OpProfile

        tensors = [torch.from_numpy(inputs[name]) for name in self.input_names]
        record = _read_etrecord(self.model_path)
        with (
            tempfile.TemporaryDirectory(prefix="edgekit-etdump-") as folder,
            quiet_native_stderr(enabled=not log.isEnabledFor(logging.DEBUG)),
            warnings.catch_warnings(),
        ):
            # The Inspector warns once per graph node whose keyword arguments its graph view
            # does not parse, and that no intermediate outputs were recorded: neither bears on
            # timings.
            warnings.simplefilter("ignore")
            program = Runtime.get().load_program(self.model_path, enable_etdump=True)
            method = program.load_method("forward")
            for _ in range(runs + 1):  # the first run warms up; its times are dropped
                method.execute(tensors)
            etdump = Path(folder) / "profile.etdp"
            program.write_etdump_result_to_file(str(etdump), str(Path(folder) / "debug.bin"))
            inspector = Inspector(etdump_path=str(etdump), etrecord=record)
        events = [
            event
            for block in inspector.event_blocks
            if block.name == _EXECUTE_BLOCK
            for event in block.events
            if event.name not in _METHOD_EVENTS and event.perf_data is not None
        ]
        notes = [
            "XNNPACK times its operators in whole microseconds; a 'delegate call overhead' row "
            "is the rest of one delegate call (copying inputs and outputs, per-call setup)."
        ]
        handle_paths: dict[int, str] = {}
        payload_handles: dict[int, list[int]] = {}
        if record is None:
            notes.append(
                f"No ETRecord ({etrecord_path(self.model_path).name}) beside the program, so "
                "ops are named without module paths: re-export with this edgekit version to "
                "write one (export skips it for models over "
                f"{ETRECORD_MAX_WEIGHT_BYTES // 2**30} GiB of weights)."
            )
        else:
            handle_paths = _etrecord_module_paths(record)
            payload_handles = _delegate_node_handles(self.model_path)
        rows, unaligned = _etdump_rows(events, runs, handle_paths, payload_handles)
        if unaligned:
            notes.append(
                f"{unaligned} XNNPACK calls ran another number of operators than their payload "
                "has nodes; their operators are shown without module paths."
            )
        return OpProfile(
            runs=runs, tool=f"ETDump + Inspector (executorch {self.version})", ops=rows, notes=notes
        )


# --- per-op profiles ------------------------------------------------------------------------


def _read_etrecord(model_path: Path) -> Any | None:
    from executorch.devtools.etrecord import parse_etrecord

    path = etrecord_path(model_path)
    return parse_etrecord(str(path)) if path.is_file() else None


def _etrecord_module_paths(record: Any) -> dict[int, str]:
    """Debug handle -> module path, from the nodes of the ETRecord's edge graph. Several nodes
    share a handle when they come from one op (a matmul's expand, view and bmm): one module."""
    programs = record.edge_dialect_program
    if isinstance(programs, dict):
        programs = programs.get("forward")
    paths: dict[int, str] = {}
    for node in programs.graph.nodes:
        handle = node.meta.get("debug_handle")
        path = _innermost_module(node) if node.op == "call_function" else ""
        if isinstance(handle, int) and path:
            paths.setdefault(handle, path)
    return paths


def _delegate_node_handles(model_path: Path) -> dict[int, list[int]]:
    """Instruction index of each XNNPACK delegate call -> the debug handles of its payload's
    nodes in order. XNNPACK creates one operator per node in that order, and its profiler
    names them by operator kind only (`Convolution (NHWC, F32) IGEMM #1`), so position is the
    one link from a timed operator back to a graph node."""
    from executorch.exir._serialize._program import _flatbuffer_to_program, _get_extended_header
    from executorch.exir.schema import DelegateCall

    with model_path.open("rb") as file:
        header = _get_extended_header(file.read(64))
        file.seek(0)
        program = _flatbuffer_to_program(file.read(header.program_size if header else -1))
        plan = program.execution_plan[0]
        base = header.segment_base_offset if header else 0
        calls = {}
        index = 0
        for chain in plan.chains:
            for instruction in chain.instructions:
                call = instruction.instr_args
                if isinstance(call, DelegateCall):
                    delegate = plan.delegates[call.delegate_index]
                    payload = _xnnpack_flatbuffer(program, file, base, delegate)
                    if payload is not None:
                        calls[index] = payload
                index += 1
    graphs = _xnnpack_graphs(list(calls.values()))
    return {
        index: [node["debug_handle"] for node in graph["xnodes"]]
        for index, graph in zip(calls, graphs, strict=True)
    }


def _etdump_rows(
    events: list[Any],
    runs: int,
    handle_paths: dict[int, str],
    payload_handles: dict[int, list[int]],
) -> tuple[list[OpRow], int]:
    """One row per XNNPACK operator, per delegate call's remainder and per kernel left outside
    the delegate, summed over the runs after the warm-up. Returns the rows and how many
    delegate calls could not be aligned with their payload's nodes."""
    by_instruction: dict[int, list[Any]] = defaultdict(list)
    for event in events:
        # The Inspector keeps the instruction an event belongs to only in a private field;
        # it is the one link between XNNPACK's operator events and their delegate call.
        by_instruction[event._instruction_id].append(event)
    rows: list[dict[str, Any]] = []
    unaligned = 0
    for index, group in by_instruction.items():
        outer = next((e for e in group if e.name in (_DELEGATE_CALL, _OPERATOR_CALL)), None)
        if outer is None:
            continue
        outer_path = _common_module(outer.debug_handles, handle_paths)
        if outer.name == _OPERATOR_CALL:
            kernel = next((e.name for e in group if e.name.startswith(_KERNEL_EVENT_PREFIX)), "")
            kernel = kernel.removeprefix(_KERNEL_EVENT_PREFIX) or _OPERATOR_CALL
            op = kernel.split(".")[0]
            rows.append(
                _row(kernel, op, outer_path, "portable kernels", False, op in _FALLBACK_KERNELS)
                | {"times": _run_times(outer)}
            )
            continue
        backend = _BACKEND_NAMES.get(outer.delegate_backend_name or "", "XNNPACK")
        operators = [e for e in group if e.is_delegated_op]
        handles = payload_handles.get(index)
        aligned = handles is not None and len(handles) == len(operators)
        if handles is not None and not aligned:
            unaligned += 1
        inside = [0.0] * runs
        for position, event in enumerate(operators):
            times = _run_times(event)
            inside = [a + b for a, b in zip(inside, times, strict=False)]
            path = handle_paths.get(handles[position]) if aligned else None
            op_type = event.name.rpartition(" #")[0] or event.name
            rows.append(_row(event.name, op_type, path, backend, True, False) | {"times": times})
        remainder = [max(t - i, 0.0) for t, i in zip(_run_times(outer), inside, strict=False)]
        rows.append(
            _row("delegate call overhead", _DELEGATE_CALL, outer_path, backend, True, False)
            | {"times": remainder}
        )
    return _op_rows(rows), unaligned


def _run_times(event: Any) -> list[float]:
    """Milliseconds of each run after the warm-up (the Inspector converts from the ETDump's
    nanoseconds)."""
    return [float(t) for t in event.perf_data.raw[1:]]


def _row(
    name: str, op_type: str, path: str | None, backend: str, delegated: bool, fallback: bool
) -> dict[str, Any]:
    return {
        "name": name,
        "op_type": op_type,
        "module_path": path,
        "backend": backend,
        "delegated": delegated,
        "fallback": fallback,
    }


def _common_module(handles: Any, handle_paths: dict[int, str]) -> str | None:
    """The innermost module holding every node of an instruction (a delegate call spans many
    layers: their common parent)."""
    if handles is None:
        return None
    handles = handles if isinstance(handles, list) else [handles]
    paths = {handle_paths[h] for h in handles if h in handle_paths}
    if not paths:
        return None
    parts = [path.split(".") for path in paths]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common) or None


def _op_rows(rows: list[dict[str, Any]]) -> list[OpRow]:
    from edgekit.bench.schema import OpRow

    total_ms = sum(sum(row["times"]) for row in rows) or 1.0
    ops = [
        OpRow(
            **{k: v for k, v in row.items() if k != "times"},
            calls=len(row["times"]),
            total_ms=sum(row["times"]),
            mean_ms=sum(row["times"]) / max(len(row["times"]), 1),
            share=sum(row["times"]) / total_ms,
        )
        for row in rows
    ]
    return sorted(ops, key=lambda op: op.total_ms, reverse=True)
