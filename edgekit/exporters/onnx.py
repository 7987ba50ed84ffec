"""ONNX through the dynamo exporter (torch.export based), run with onnxruntime; quantization plans
realized with onnxruntime's own quantizer.

The dynamo exporter is both faster at run time than the legacy TorchScript exporter (27 ms vs
40 ms for MobileViT-S on ORT, 2 threads, measured on a 2-core x86 VM) and keeps module paths in
node metadata (`pkg.torch.onnx.name_scopes`), which per-layer quantization needs.

Quantization (`onnxruntime.quantization`, on the float graph the exporter wrote):
- int8 (static W8A8) layers: QDQ format (QuantizeLinear/DequantizeLinear pairs that ORT fuses into
  integer kernels), per-channel int8 weights, uint8 activations whose ranges come from min/max
  calibration over the plan's calibration inputs;
- int8-dynamic layers: ConvInteger/MatMulInteger, activations quantized at run time.
A plan with both runs two passes over one graph: static, then dynamic.

Which nodes a pass may touch is decided per node from its module path, never from node names
alone: dynamo node names are generic (`node_MatMul_225`). A layer planned float keeps its whole
module scope float: excluding only an attention block's MatMul/Softmax still leaves int8 rounding
on the Transposes that feed them. Nodes outside every override follow the plan's default.
`quant_pre_process` is not run: it strips the metadata this selection reads, and the exporter's
own optimizer has already folded constants and batch norms.

The file itself says which layer each node computes: every conv/linear node carries the module
path of its layer (`edgekit.module`), stamped from the exporter's metadata and parameter names
before quantizing and re-stamped on the nodes the quantizer replaces. `read_layer_precisions`
decides each layer's precision from the ops around its node in the written file.

Attention products (Q K^T and softmax V: MatMul nodes whose operands are both activations) are
planned per attention block (`QuantSpec.matmuls`). Every op traced inside a block that computes
products, other than its conv/linear layers, takes the products' precision: int8 quantizes the
MatMuls' operands (and the Transposes and Softmax feeding them, so int8 flows into the product),
float keeps them all float, since a quantized Transpose or Softmax would hand the MatMul a
dequantized operand and onnxruntime would run the product on int8-rounded values (its static
QDQ quantizer quantizes activation-by-activation MatMuls unless told not to: `MatMulConstBOnly`
is off by default for static quantization). The read-back finds each product MatMul by its
module scope and reads what feeds its two operands: DequantizeLinear on both (onnxruntime fuses
DQ -> MatMul into an integer kernel) is int8, float on both is fp32.
"""

from __future__ import annotations

import ast
import logging
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import ExportError
from edgekit.exporters import ExportResult
from edgekit.quant.plan import LayerPrecision, MatmulPrecision, product_realization

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnx_ir
    import onnxruntime as ort

    from edgekit.bench.schema import OpProfile, OpRow
    from edgekit.models.base import LoadedModel, TensorSpec
    from edgekit.profiles import RuntimeSettings
    from edgekit.quant.spec import CalibrationInputs, QuantSpec

log = logging.getLogger(__name__)

OPSET_VERSION = 18
DEFAULT_PROVIDER = "CPUExecutionProvider"
# Protobuf cannot serialise a message over 2 GiB: bigger models keep weights in a side file.
PROTOBUF_LIMIT_BYTES = 2**31 - 1

# Node metadata: the module path (traced module) of the conv/linear layer a node computes.
LAYER_KEY = "edgekit.module"
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
# The exporter also writes each node's Python stack trace, fx node and class hierarchy: debug
# text naming files on the exporting machine, 1.3 of the 2.1 MB of tiny-mobilevit's fp32 file
# (about 1 MB whatever the model's size, so it also blurs the size gain of quantizing a small
# model). Only the module path is kept.
KEPT_NODE_METADATA = frozenset({SCOPES_KEY, LAYER_KEY})
# Float ops a conv/linear layer exports to (weight as input 1), and their dynamic-int8 forms.
LAYER_OPS = frozenset({"Conv", "MatMul", "Gemm"})
INTEGER_LAYER_OPS = frozenset({"ConvInteger", "MatMulInteger"})
# Names onnxruntime gives the nodes it puts in place of a node N: quantize_dynamic first turns
# every Gemm into `N_MatMul` (+ `N_Add` for the bias; onnx_model.replace_gemm_with_matmul), and
# a dynamically quantized Conv/MatMul becomes `N_quant` (operators/conv.py, matmul.py).
ORT_RENAMES = ("_MatMul", "_Add", "_quant", "_MatMul_quant")
# Profiling: onnxruntime's trace has one `<node>_kernel_time` event per node and run; its NCHWc
# layout pass names a convolution it rewrites `<output>_nchwc`.
KERNEL_EVENT_SUFFIX = "_kernel_time"
ORT_NCHWC_SUFFIX = "_nchwc"
# Ops that do a layer's arithmetic, as onnxruntime runs them (fused and quantized forms
# included): on the CPU provider while another was asked for, they are a slow fallback.
ORT_COMPUTE_OPS = frozenset(
    {
        *LAYER_OPS,
        *INTEGER_LAYER_OPS,
        "FusedConv",
        "FusedMatMul",
        "FusedGemm",
        "QLinearConv",
        "QLinearMatMul",
        "NhwcFusedConv",
    }
)
# Weights reach a layer through these ops unchanged in value (a transposed Linear weight).
_WEIGHT_PASS_THROUGH = frozenset({"Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze"})
# Calibration inputs per range update. onnxruntime's min/max calibrator keeps every input's
# per-tensor minima and maxima until it merges them; it merges every this many inputs instead
# (`CalibStridedMinMax`). Its `CalibMaxIntermediateOutputs` option looks like the same bound but,
# in onnxruntime 1.32, drops the outputs collected so far without merging them (ranges then come
# from the last few inputs only, or calibration fails with "No data is collected").
CALIBRATION_CHUNK = 16


class OnnxExporter:
    name = "onnx"
    display_name = "ONNX"
    # No int4-weight (not built): onnxruntime's MatMulNBits covers MatMul only, not Conv, and its
    # QDQ quantizer stores 4-bit weights natively only from opset 21 (com.microsoft Q/DQ ops
    # before); this exporter writes opset 18 and reads back int8 QDQ only.
    layer_precisions = (LayerPrecision.FP32, LayerPrecision.INT8, LayerPrecision.INT8_DYNAMIC)
    layer_evidence = (
        "ops at each conv/linear node (tagged with its module path): float weights (fp32), "
        "int8 weights and activations through DequantizeLinear (int8), ConvInteger/MatMulInteger "
        "after DynamicQuantizeLinear (int8-dynamic)"
    )
    runtime_modules = ("onnxruntime",)
    tool_packages = ("onnx", "onnxscript", "onnxruntime")
    file_suffix = ".onnx"

    def export(
        self,
        model: LoadedModel,
        sample_inputs: dict[str, np.ndarray],
        model_path: Path,
        *,
        quant: QuantSpec,
    ) -> ExportResult:
        import torch

        static_layers = quant.layers_at(LayerPrecision.INT8) + quant.int8_matmuls
        if static_layers and (quant.calibration is None or quant.calibration.count == 0):
            raise ExportError(
                f"Static int8 needs calibration inputs for its activation ranges (layer "
                f"'{static_layers[0]}' and {len(static_layers) - 1} more are planned int8), "
                "and none were given.",
                hint="pass --calib IMAGES_DIR (classifiers) or --prompts FILE (Stable "
                "Diffusion), or plan int8-dynamic, which needs no calibration.",
            )
        args = tuple(torch.from_numpy(sample_inputs[spec.name]) for spec in model.inputs)
        debug = log.isEnabledFor(logging.DEBUG)
        if not debug:
            # torch re-creates its loggers at import; quiet the exporter's progress chatter here.
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            model.exported_program(),  # traced once per component, shared by the exporters
            args,
            dynamo=True,
            opset_version=OPSET_VERSION,
            input_names=[spec.name for spec in model.inputs],
            output_names=[spec.name for spec in model.outputs],
            optimize=True,
            verbose=debug,
        )
        graph = program.model.graph
        stamps = _stamp_layers(graph, quant)
        precisions = _node_precisions(graph, quant)
        int8_product_nodes = [
            node
            for node, block in _product_nodes(graph, quant)
            if quant.matmuls[block] == MatmulPrecision.INT8
        ]
        int8_products = [node.name for node in int8_product_nodes]
        probabilities = _probability_operands(int8_product_nodes)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.module.parameters())
        external = weight_bytes >= PROTOBUF_LIMIT_BYTES
        details: dict[str, Any] = {
            "opset": OPSET_VERSION,
            "exporter": "torch.onnx.export(dynamo=True)",
            "external_data": external,
        }
        passes = _quantization_passes(precisions, stamps, int8_products)
        if not passes:
            program.save(str(model_path), external_data=external)
            details["node_count"] = len(graph)
        else:
            with tempfile.TemporaryDirectory(prefix="edgekit-onnx-") as work:
                float_path = Path(work) / "float.onnx"
                program.save(str(float_path), external_data=external)
                _quantize(
                    float_path,
                    model_path,
                    passes,
                    calibration=quant.calibration,
                    input_names=[spec.name for spec in model.inputs],
                    external=external,
                    debug=debug,
                    probabilities=probabilities,
                )
            details["node_count"] = _restamp(model_path, stamps)
            details["quantization"] = {
                "tool": "onnxruntime.quantization",
                "passes": list(passes),
                "static": "QDQ, int8 per-channel weights, uint8 activations, min/max calibration"
                if "static" in passes
                else None,
                # TensorQuantOverrides: softmax outputs quantized over exactly [0, 1]
                "probability_ranges_fixed": probabilities,
            }
        files = [model_path]
        if external:
            files.append(model_path.with_name(model_path.name + ".data"))
        return ExportResult(files=files, details=details)

    def read_layer_precisions(
        self, model_path: Path, quant: QuantSpec
    ) -> dict[str, LayerPrecision | None]:
        import onnx

        # The graph only: weights (external data) are not needed to tell what a layer holds.
        proto = onnx.load(str(model_path), load_external_data=False)
        graph = proto.graph
        producers = {output: node for node in graph.node for output in node.output}
        tensor_types = {init.name: init.data_type for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                tensor_types[node.output[0]] = node.attribute[0].t.data_type
        found: dict[str, set[LayerPrecision | None]] = {}
        for node in graph.node:
            path = _metadata(node).get(LAYER_KEY)
            if path is not None:
                precision = _node_precision(node, producers, tensor_types)
                found.setdefault(path, set()).add(precision)
        realized: dict[str, LayerPrecision | None] = {}
        for user_path, planned in quant.layers.items():
            seen = found.get(quant.traced_path(user_path), set())
            if len(seen) <= 1:
                realized[user_path] = next(iter(seen), None)
            else:
                # A layer split over nodes of different precisions reports one that is not the
                # planned one, so the plan check fails on it instead of passing half a layer.
                realized[user_path] = sorted((p for p in seen if p != planned), key=str)[0]
        realized.update(_read_product_precisions(graph, producers, tensor_types, quant))
        return realized

    def host_runtime_unavailable_reason(self) -> str | None:
        return None  # the runtime is a pip dependency on every host OS

    def runtime(
        self,
        model_path: Path,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        *,
        settings: RuntimeSettings | None = None,
    ) -> OnnxRuntime:
        return OnnxRuntime(model_path, settings=settings)


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, model_path: Path, *, settings: RuntimeSettings | None) -> None:
        import onnxruntime as ort

        from edgekit.errors import ArtifactError

        self.version = ort.__version__
        threads = settings.threads if settings else None
        provider = (settings.execution_provider if settings else None) or DEFAULT_PROVIDER
        if provider not in ort.get_available_providers():
            raise ArtifactError(
                f"The target profile asks for ONNX Runtime's {provider}, which this host's "
                f"onnxruntime does not have (it has {', '.join(ort.get_available_providers())}).",
                hint="run it where that provider exists, or export with a profile that names "
                f"{DEFAULT_PROVIDER}.",
            )
        self.model_path = model_path
        self._threads = threads
        self._provider = provider
        self._spinning = settings.spinning if settings else None
        self.session = ort.InferenceSession(
            str(model_path), _session_options(threads, self._spinning), providers=[provider]
        )
        self.settings = {
            "threads": threads,
            "execution_provider": provider,
            # What the session runs with: onnxruntime spins unless told otherwise.
            "spinning": self._spinning is not False,
        }
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, results, strict=True))

    def profile_ops(self, inputs: dict[str, np.ndarray], runs: int) -> OpProfile:
        """onnxruntime's own profiler, in a second session with the same threads and provider:
        a profiling session records every node of every run, which would slow the timed one."""
        import json

        import onnxruntime as ort

        from edgekit.bench.schema import OpProfile

        with tempfile.TemporaryDirectory(prefix="edgekit-ort-profile-") as folder:
            options = _session_options(self._threads, self._spinning)
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(folder) / "ort")
            session = ort.InferenceSession(
                str(self.model_path), options, providers=[self._provider]
            )
            for _ in range(runs + 1):  # the first run warms up; its events are dropped
                session.run(self.output_names, inputs)
            # The trace is written into the temporary folder and removed with it.
            trace = json.loads(Path(session.end_profiling()).read_text())
        rows = _profile_rows(trace, _node_module_paths(self.model_path), self._provider, runs)
        return OpProfile(
            runs=runs,
            tool=f"onnxruntime {self.version} profiling",
            ops=rows,
            notes=[
                "Rows are the nodes of onnxruntime's optimized graph (fused ops, NCHWc "
                "convolutions, inserted layout reorders); each is mapped to the module path of "
                "the exported node it was made from, where onnxruntime kept that node's name "
                "or output name. Nodes onnxruntime inserted have none."
            ],
        )


def _session_options(threads: int | None, spinning: bool | None) -> ort.SessionOptions:
    """The options of every session on an artifact: the timed one and the profiling one.

    Spinning is onnxruntime's default and its recommended setting for latency, so it stays on
    unless the target profile turns it off (`spinning = false`). It is per runtime, like every
    runtime's threading: bench measures each artifact in a process of its own, where a spinning
    pool steals no cores from a neighbour (in one process, PyTorch eager read 2,300 ms instead
    of 290 ms next to a spinning session)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if spinning is not None:
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
    return options


def _node_module_paths(model_path: Path) -> dict[str, str]:
    """Node name and output tensor name -> module path, for every node of the file that
    carries one: a layer node its layer's (`edgekit.module`), any other node the innermost
    module it was traced in."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    paths: dict[str, str] = {}
    for node in graph.node:
        props = _metadata(node)
        scopes = _module_scopes(props)
        path = props.get(LAYER_KEY) or (scopes[-1] if scopes else None)
        if path:
            for key in (node.name, *node.output):
                paths.setdefault(key, path)
    return paths


def _original_node_names(profiled: str) -> tuple[str, ...]:
    """Names the exported node a profiled node was made from may go by. onnxruntime names a
    fused node after the first node it fused (`node_MatMul_233/MatMulAddFusion`) and an NCHWc
    convolution after the output it replaced (`getitem_nchwc` for the Conv writing `getitem`)."""
    return (
        profiled,
        profiled.partition("/")[0],
        profiled.removesuffix(ORT_NCHWC_SUFFIX),
        *(profiled.removesuffix(suffix) for suffix in ORT_RENAMES),
    )


def _profile_rows(
    trace: list[dict[str, Any]], module_paths: dict[str, str], provider: str, runs: int
) -> list[OpRow]:
    """Per-node rows from onnxruntime's Chrome-trace JSON, summed over the runs after the
    first. Kernel events (`<node>_kernel_time`, microseconds) are the node's compute; the
    fence events around them are synchronisation and are left out."""
    from edgekit.bench.schema import OpRow

    run_starts = sorted(e["ts"] for e in trace if e.get("name") == "model_run")
    if not run_starts:
        return []
    # Nodes of the warm-up run are the ones before the second run starts.
    counted_from = run_starts[1] if len(run_starts) > 1 else run_starts[0]
    durations: dict[str, list[float]] = defaultdict(list)
    kernel: dict[str, tuple[str, str]] = {}
    for event in trace:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith(KERNEL_EVENT_SUFFIX):
            continue
        if event["ts"] < counted_from:
            continue
        node = name.removesuffix(KERNEL_EVENT_SUFFIX)
        durations[node].append(event["dur"] / 1000)
        args = event.get("args", {})
        kernel[node] = (args.get("op_name", "?"), args.get("provider", provider))
    total_ms = sum(sum(d) for d in durations.values()) or 1.0
    # With only the CPU provider there is no delegate to speak of; with another provider
    # (XNNPACK, Core ML, NNAPI), a node it did not take ran on the CPU provider instead.
    delegating = provider != DEFAULT_PROVIDER
    rows = []
    for node, times in durations.items():
        op_type, ran_on = kernel[node]
        names = _original_node_names(node)
        path = next((module_paths[n] for n in names if n in module_paths), None)
        delegated = (ran_on == provider) if delegating else None
        rows.append(
            OpRow(
                name=node,
                op_type=op_type,
                module_path=path,
                backend=ran_on,
                delegated=delegated,
                fallback=delegated is False and op_type in ORT_COMPUTE_OPS,
                calls=len(times),
                total_ms=sum(times),
                mean_ms=sum(times) / len(times),
                share=sum(times) / total_ms,
            )
        )
    return sorted(rows, key=lambda row: row.total_ms, reverse=True)


def _stamp_layers(graph: onnx_ir.Graph, quant: QuantSpec) -> dict[str, dict[str, str]]:
    """Tag every conv/linear node with the module path of its layer, drop the debug metadata;
    returns node name -> the metadata kept, for re-stamping the nodes the quantizer replaces.

    A node's layer is the one whose weight it reads (`<path>.weight`: a convolution with its
    batch norm folded in carries the norm's scope, but keeps the convolution's weight name), else
    the innermost layer scope it was traced in (a Linear's weight is a transposed constant)."""
    traced = {quant.traced_path(path) for path in quant.layers}
    stamps: dict[str, dict[str, str]] = {}
    for node in graph:
        props = node.metadata_props
        for key in [k for k in props if k not in KEPT_NODE_METADATA]:
            del props[key]
        if node.op_type not in LAYER_OPS:
            continue
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        weight_owner = weight.name.removesuffix(".weight") if weight is not None else ""
        if weight_owner in traced:
            path = weight_owner
        else:
            path = next((s for s in reversed(_module_scopes(props)) if s in traced), None)
        if path is not None:
            props[LAYER_KEY] = path
            stamps[node.name] = dict(props)
    return stamps


def _module_scopes(props: dict[str, str]) -> list[str]:
    """The module paths a node was traced in, outermost first. The exporter writes them as a
    Python list literal whose last entry is the fx node's own name, not a module."""
    try:
        scopes = ast.literal_eval(props.get(SCOPES_KEY, "[]"))
    except (ValueError, SyntaxError):
        return []
    return [s for s in scopes[:-1] if isinstance(s, str)]


def _node_precisions(graph: onnx_ir.Graph, quant: QuantSpec) -> dict[str, LayerPrecision]:
    """Node name -> the precision the plan gives it: a layer node its layer's; any other node
    (activation, add, norm, transpose, softmax) that of the innermost module it was traced in,
    so a module planned float keeps all of its ops float."""
    users = {quant.traced_path(path): path for path in quant.layers}
    prefix = quant.module_prefix
    precisions = {}
    for node in graph:
        layer = node.metadata_props.get(LAYER_KEY)
        if layer is not None:
            precisions[node.name] = quant.layers[users[layer]]
            continue
        scopes = _module_scopes(node.metadata_props)
        module = scopes[-1] if scopes else ""
        # Ops outside the user's model (edgekit's wrapper, or made by the optimizer without
        # metadata) follow the plan's default, like the user's root module.
        if prefix:
            module = module.removeprefix(prefix) if module.startswith(prefix) else ""
        block = _product_block(module, quant)
        if block is not None:
            # Inside a block computing products: the products' precision (module docstring).
            products = quant.matmuls[block]
            int8 = products == MatmulPrecision.INT8
            precisions[node.name] = LayerPrecision.INT8 if int8 else LayerPrecision.FP32
            continue
        precisions[node.name] = quant.plan.precision_of(module)
    return precisions


def _product_block(module: str, quant: QuantSpec) -> str | None:
    """The attention block (user path) computing products that `module` is, or is inside."""
    matches = [b for b in quant.matmuls if module == b or module.startswith(b + ".")]
    return max(matches, key=len) if matches else None


def _product_nodes(graph: onnx_ir.Graph, quant: QuantSpec) -> list[tuple[onnx_ir.Node, str]]:
    """(MatMul node, attention block) for every attention product of the exported graph: a
    MatMul that is no conv/linear layer's, traced inside a block computing products, whose
    operands are both computed (neither is a weight)."""
    found = []
    for node in graph:
        if node.op_type != "MatMul" or LAYER_KEY in node.metadata_props:
            continue
        if any(value is None or value.const_value is not None for value in node.inputs[:2]):
            continue
        block = _traced_block(_module_scopes(node.metadata_props), quant)
        if block is not None:
            found.append((node, block))
    return found


def _traced_block(scopes: list[str], quant: QuantSpec) -> str | None:
    """The product block of the innermost scope a node was traced in (traced paths)."""
    if not scopes or not scopes[-1].startswith(quant.module_prefix):
        return None
    return _product_block(scopes[-1].removeprefix(quant.module_prefix), quant)


def _probability_operands(product_nodes: list[onnx_ir.Node]) -> list[str]:
    """The softmax outputs that int8 products take as an operand (softmax(scores) V).

    Their range is known: [0, 1]. Calibrated min/max would instead end at the largest probability
    the calibration inputs happened to produce, and clip any larger one at run time, where
    attention is most certain; a fixed [0, 1] costs nothing (scale 1/255, zero point 0)."""
    names = []
    for node in product_nodes:
        for value in node.inputs[:2]:
            producer = value.producer() if value is not None else None
            if producer is not None and producer.op_type == "Softmax":
                names.append(value.name)
    return names


def _read_product_precisions(
    graph: onnx.GraphProto,
    producers: dict[str, onnx.NodeProto],
    tensor_types: dict[str, int],
    quant: QuantSpec,
) -> dict[str, LayerPrecision | None]:
    """Each planned attention block's products as the file holds them (None: no product MatMul
    of that block in the graph). DequantizeLinear feeding both operands (or a QLinearMatMul)
    is int8; neither, fp32; a product with one int8 operand, or a block whose products differ,
    reads as the precision that is not planned, so the check names it."""
    seen: dict[str, set[LayerPrecision]] = {}
    for node in graph.node:
        if node.op_type not in ("MatMul", "QLinearMatMul") or LAYER_KEY in _metadata(node):
            continue
        operands = [node.input[0], node.input[3]] if node.op_type == "QLinearMatMul" else node.input
        if any(_is_weight(name, producers, tensor_types) for name in operands[:2]):
            continue
        block = _traced_block(_module_scopes(_metadata(node)), quant)
        if block is None:
            continue
        if node.op_type == "QLinearMatMul":
            held = {LayerPrecision.INT8}
        else:
            dequantized = [
                _producer_type(name, producers) == "DequantizeLinear" for name in operands
            ]
            held = {LayerPrecision.INT8 if d else LayerPrecision.FP32 for d in dequantized}
        seen.setdefault(block, set()).update(held)
    return product_realization(seen, quant.matmuls)


def _producer_type(name: str, producers: dict[str, onnx.NodeProto]) -> str | None:
    producer = producers.get(name)
    return producer.op_type if producer is not None else None


def _is_weight(
    name: str, producers: dict[str, onnx.NodeProto], tensor_types: dict[str, int]
) -> bool:
    """A stored tensor (initializer, Constant), directly or through a (de)quantize op or a
    reshaping op: a layer's weight, not an activation."""
    while name not in tensor_types:
        producer = producers.get(name)
        passes = {"DequantizeLinear", "QuantizeLinear", *_WEIGHT_PASS_THROUGH}
        if producer is None or producer.op_type not in passes or not producer.input:
            return False
        name = producer.input[0]
    return True


def _quantization_passes(
    precisions: dict[str, LayerPrecision],
    stamps: dict[str, dict[str, str]],
    int8_products: list[str] | None = None,
) -> dict[str, list[str]]:
    """The onnxruntime passes to run, each with the node names it may quantize. Both lists are
    allow-lists: a name onnxruntime no longer finds leaves that node float, which the read-back
    then reports, where a stale exclusion list would silently quantize it. An empty list would
    mean "every node" to onnxruntime, so a pass with nothing to do is not run at all."""

    def with_renames(names: list[str]) -> list[str]:
        return [name + suffix for name in names for suffix in ("", *ORT_RENAMES)]

    layers = {n: p for n, p in precisions.items() if n in stamps}
    passes = {}
    if LayerPrecision.INT8 in layers.values() or int8_products:
        # Every op planned int8, layer or not, so int8 flows between layers without float hops;
        # with no int8 layer or product, ops alone are not quantized (nothing int8 would
        # consume them).
        passes["static"] = with_renames(
            [n for n, p in precisions.items() if p == LayerPrecision.INT8]
        )
    dynamic = [n for n, p in layers.items() if p == LayerPrecision.INT8_DYNAMIC]
    if dynamic:  # only the layers: the ops around them (activations, adds) stay float
        passes["dynamic"] = with_renames(dynamic)
    return passes


def _quantize(
    float_path: Path,
    model_path: Path,
    passes: dict[str, list[str]],
    *,
    calibration: CalibrationInputs | None,
    input_names: list[str],
    external: bool,
    debug: bool,
    probabilities: list[str] | None = None,
) -> None:
    """Run the passes; the last writes `model_path`. `probabilities` (softmax outputs feeding
    int8 products) get the fixed range [0, 1] through onnxruntime's TensorQuantOverrides.

    Static goes first. The other order breaks: both passes name the tensors they add after the
    tensor they quantize (`<tensor>_quantized`, `_scale`, `_zero_point`), and a tensor the
    dynamic pass quantized for one consumer and the static pass for another gets two producers.
    Static first, every consumer reads the static pass's dequantized copy under a new name.
    quantize_dynamic then turns every Gemm left into MatMul + Add (a static int8 Gemm into a
    Transpose of its dequantized weight + MatMul: the same values)."""
    import numpy as np
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    source = float_path
    with _quiet_onnxruntime_logging(enabled=not debug):
        if "static" in passes:
            if calibration is None:  # export() refuses a static plan without it, before this
                raise ExportError("Static int8 needs calibration inputs.")
            target = float_path.with_name("static.onnx") if "dynamic" in passes else model_path
            reader = _CalibrationReader(calibration, input_names)
            quantize_static(
                source,
                target,
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                # uint8 activations x int8 weights: the pair onnxruntime recommends for x86 and
                # its ARM kernels also take; asymmetric, so a post-SiLU tensor (mostly >= 0)
                # keeps all 256 levels. reduce_range (7-bit weights) stays off: it only avoids
                # int16 overflow on x86 CPUs without VNNI, at a precision cost everywhere.
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=passes["static"],
                # Min/max keeps two numbers per tensor and input; histogram methods (entropy,
                # percentile) keep whole activations of every calibration input until the end.
                calibrate_method=CalibrationMethod.MinMax,
                use_external_data_format=external,
                extra_options={
                    "CalibStridedMinMax": reader.chunk,
                    # onnxruntime takes the range as float32 scalars (it reads their dtype).
                    "TensorQuantOverrides": {
                        name: [{"rmin": np.float32(0.0), "rmax": np.float32(1.0)}]
                        for name in probabilities or []
                    },
                },
            )
            source = target
        if "dynamic" in passes:
            quantize_dynamic(
                source,
                model_path,
                op_types_to_quantize=["Conv", "MatMul"],
                nodes_to_quantize=passes["dynamic"],
                per_channel=True,
                weight_type=QuantType.QInt8,
                use_external_data_format=external,
            )


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over streamed calibration inputs.

    With `CalibStridedMinMax`, quantize_static calls `set_range` for consecutive windows of
    `chunk` inputs and merges the ranges after each, so at most `chunk` inputs' statistics are
    held at once. One iterator serves every window: each input is produced (read, preprocessed)
    exactly once."""

    def __init__(self, calibration: CalibrationInputs, input_names: list[str]) -> None:
        self.count = calibration.count
        # The window must divide the count: the largest divisor up to CALIBRATION_CHUNK.
        self.chunk = max(
            d for d in range(1, min(self.count, CALIBRATION_CHUNK) + 1) if not self.count % d
        )
        self._inputs: Iterator[dict[str, np.ndarray]] = iter(calibration)
        self._input_names = input_names
        self._left_in_window = self.count

    def __len__(self) -> int:
        return self.count

    def set_range(self, start_index: int, end_index: int) -> None:
        self._left_in_window = end_index - start_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._left_in_window <= 0:
            return None
        self._left_in_window -= 1
        batch = next(self._inputs, None)
        if batch is None:
            return None
        missing = [name for name in self._input_names if name not in batch]
        if missing:
            raise ExportError(
                f"The calibration inputs lack the model input '{missing[0]}' (they have "
                f"{', '.join(batch) or 'none'}).",
                hint="calibrate with data made for this model or component.",
            )
        return {name: batch[name] for name in self._input_names}


@contextmanager
def _quiet_onnxruntime_logging(*, enabled: bool) -> Iterator[None]:
    """onnxruntime.quantization warns through the root logger ("consider pre-processing", per
    LayerNorm weight "axis out of range"), and `logging.warning` installs a stderr handler on a
    root logger that has none. Only the CLI prints: hold them back unless debugging."""
    if not enabled:
        yield
        return
    root = logging.getLogger()
    guard = logging.NullHandler()
    level = root.level
    root.addHandler(guard)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(guard)


def _restamp(model_path: Path, stamps: dict[str, dict[str, str]]) -> int:
    """Put each replaced layer node's module path back on its replacement (onnxruntime makes new
    nodes without metadata; the nodes it keeps, QDQ included, keep theirs). Returns the node
    count of the written graph."""
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    for node in proto.graph.node:
        if LAYER_KEY in _metadata(node):
            continue
        original = next(
            (
                node.name.removesuffix(suffix)
                for suffix in sorted(ORT_RENAMES, key=len, reverse=True)
                if node.name.endswith(suffix) and node.name.removesuffix(suffix) in stamps
            ),
            None,
        )
        if original is not None and node.op_type in LAYER_OPS | INTEGER_LAYER_OPS:
            for key, value in stamps[original].items():
                node.metadata_props.add(key=key, value=value)
    # External data stays where the quantizer wrote it: only the graph is rewritten.
    onnx.save(proto, str(model_path))
    return len(proto.graph.node)


def _metadata(node: onnx.NodeProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in node.metadata_props}


def _node_precision(
    node: onnx.NodeProto,
    producers: dict[str, onnx.NodeProto],
    tensor_types: dict[str, int],
) -> LayerPrecision | None:
    """What one layer node computes with, from the ops feeding it in the file."""
    import onnx

    def producer_type(name: str) -> str | None:
        producer = producers.get(name)
        return producer.op_type if producer is not None else None

    if node.op_type in INTEGER_LAYER_OPS:
        dynamic = producer_type(node.input[0]) == "DynamicQuantizeLinear"
        return LayerPrecision.INT8_DYNAMIC if dynamic else LayerPrecision.INT8
    if node.op_type not in LAYER_OPS or len(node.input) < 2:
        return None
    weight = node.input[1]
    while producer_type(weight) in _WEIGHT_PASS_THROUGH:
        weight = producers[weight].input[0]
    if producer_type(weight) == "DequantizeLinear":
        stored = producers[weight].input[0]
        eight_bit = tensor_types.get(stored) in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
        if not eight_bit and producer_type(stored) != "QuantizeLinear":
            return None  # another weight format (int4, int16) than any precision a plan names
        quantized_input = producer_type(node.input[0]) == "DequantizeLinear"
        return LayerPrecision.INT8 if quantized_input else LayerPrecision.INT8_WEIGHT
    # Float weights: the op computes in float, whatever rounding its input went through.
    if tensor_types.get(weight) == onnx.TensorProto.FLOAT16:
        return LayerPrecision.FP16
    return LayerPrecision.FP32
