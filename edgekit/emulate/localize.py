"""`edgekit verify ARTIFACT --localize`: which layer does the error come from?

A final-output check says *that* an artifact differs from PyTorch; users of these runtimes then
bisect by hand to find *where*. This runs the artifact once with every module's output exposed,
runs the PyTorch model with a forward hook on every module, and compares the two layer by layer
in execution order, on the host or on an emulated ARM core (where it also compares with the
same probe on this x86 host, so a kernel that only ARM runs shows up as the first layer that
leaves x86's numbers).

How a runtime tensor is tied to a PyTorch module path:
- ONNX (torch.onnx dynamo exporter): every node carries `pkg.torch.onnx.name_scopes`, the module
  paths it was traced inside. A module's output is the last float value produced inside its scope.
  The probe adds those values as graph outputs, as onnxruntime's own QDQ debugging tool
  (`onnxruntime.quantization.qdq_loss_debug`) does.
- LiteRT (litert-torch): tensor names are the module stack, `pkg.Class_attr/pkg.Class_attr;N`.
  A module's output is the last tensor written by an operator (in execution order) inside its
  scope. The probe adds those tensors to the subgraph's outputs in the flatbuffer, so XNNPACK (the
  default delegate, where ARM kernel bugs live) still computes them; `experimental_preserve_all_
  tensors` would instead run the reference kernels.
- ExecuTorch and Core ML: not localized (see `unsupported_reason`).

Exposing a tensor can stop a runtime fusing across it (e.g. onnxruntime's QLinearConv, XNNPACK's
operator fusion), so the probed model may compute slightly differently from the artifact. The
report therefore also gives the SQNR of the probed model's final output against the unprobed
artifact's: when that is low, the probe changed what it measures, and says so.

"Where the error jumps": walking the compared modules in the order they finish, the first whose
SQNR is `jump_db` (default 10 dB) or more below the previous module's, and below a floor
(`JUMP_FLOOR_DB`) under which float rounding never goes, so fp32 noise at 120 dB is never named.
"""

from __future__ import annotations

import ast
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgekit.artifact import ComponentManifest, Manifest, now_utc, read_manifest, write_text_atomic
from edgekit.errors import EdgekitError
from edgekit.exporters.tflite import short_class_name, short_tensor_name
from edgekit.validate import sqnr_db

LOCALIZE_FILE = "localize.json"
DEFAULT_JUMP_DB = 10.0
# fp32 artifacts sit at 100+ dB, layer after layer; int8 ones at 20-45 dB. A drop that stays above
# this floor is rounding, not a bug.
JUMP_FLOOR_DB = 60.0
PERSISTENCE = 3  # layers after a jump that must stay down for it to count
SQNR_CAP_DB = 200.0  # identical tensors: sqnr_db's ceiling, capped so drops stay finite
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class LocalizeError(EdgekitError):
    exit_code = 2


@dataclass
class LayerComparison:
    module: str  # PyTorch module path, e.g. model.mobilevit.encoder.layer.2.conv_1x1
    kind: str  # the module's class name
    tensor: str  # the runtime value / tensor compared with it
    shape: list[int]
    sqnr_db: float  # vs PyTorch, over every input set
    max_abs_diff: float
    sqnr_vs_host_db: float | None = None  # emulated runs: vs the same probe on this x86 host
    # A lone low layer between good ones: the tensor is not really this module's output (a
    # converter folded the next op in, e.g. batch norm into a convolution, without naming it).
    mismatched: bool = False


@dataclass
class Localization:
    component: str
    runtime: str
    where: str  # "this host" or "emulated <core>"
    inputs: str  # what was fed: seeds or image files
    layers: list[LayerComparison]
    modules_total: int  # PyTorch modules with a tensor output
    probe_sqnr_db: float  # probed model's final output vs the unprobed artifact's
    jump_db: float
    first_jump: LayerComparison | None = None
    first_jump_drop_db: float | None = None
    first_host_divergence: LayerComparison | None = None  # emulated: first layer leaving x86
    notes: list[str] = field(default_factory=list)


def unsupported_reason(format_name: str) -> str | None:
    if format_name in {"onnx", "tflite"}:
        return None
    if format_name == "executorch":
        return (
            "ExecuTorch artifacts cannot be localized: XNNPACK runs the whole graph as one "
            "delegate call, and ETDump records no intermediate outputs inside a delegate."
        )
    return f"{format_name} artifacts cannot be localized (no intermediate outputs on this host)."


# ------------------------------------------------------------------------------------------------
# Inputs


def image_inputs(folder: Path, manifest: Manifest, component: ComponentManifest, limit: int):
    """(input sets, description) from up to `limit` photos in `folder`, through the manifest's
    preprocessing, exactly as `edgekit classify` feeds them."""
    from edgekit.preprocess import preprocess

    if not folder.is_dir():
        raise LocalizeError(
            f"--images '{folder}' is not a folder.", hint="pass a folder of photos."
        )
    pre = manifest.preprocessing
    if pre is None:
        raise LocalizeError(
            f"--images needs a model fed from photos; '{component.name}' has no preprocessing "
            "block in its manifest.",
            hint="leave out --images: the seeded verification inputs are used.",
        )
    photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not photos:
        raise LocalizeError(
            f"No photos in '{folder}' (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).",
            hint="point --images at a folder of JPEG or PNG photos.",
        )
    name = component.inputs[0].name
    sets = [{name: preprocess(photo, pre)} for photo in photos]  # ImageError names a bad file
    return sets, f"{len(photos)} photo(s) from {folder}"


# ------------------------------------------------------------------------------------------------
# PyTorch side


def torch_layer_outputs(module, loaded, input_sets) -> tuple[list[tuple[str, str]], dict, set]:
    """Run every input set with a forward hook on every submodule.

    Returns the modules in the order they finish (path, class name), per path one array per
    input set, and the paths of every module whose forward ran. Modules that return no single
    tensor (tuples, HF output objects) are left out of the first two."""
    import torch

    order: list[tuple[str, str]] = []
    outputs: dict[str, list[np.ndarray]] = {}
    called: set[str] = set()
    handles = []

    def hook_for(path):
        def hook(mod, args, output):
            called.add(path)
            if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return
            if path not in outputs:
                outputs[path] = []
                order.append((path, type(mod).__name__))
            outputs[path].append(output.detach().float().numpy().copy())

        return hook

    for path, sub in module.named_modules():
        if path:  # the root's output is the artifact's output, checked by plain verify
            handles.append(sub.register_forward_hook(hook_for(path)))
    try:
        for arrays in input_sets:
            loaded.run_torch(arrays)
    finally:
        for handle in handles:
            handle.remove()
    # A module called more than once per input set (shared weights) cannot be tied to one value.
    runs = len(input_sets)
    order = [(p, k) for p, k in order if len(outputs[p]) == runs]
    return order, outputs, called


# ------------------------------------------------------------------------------------------------
# ONNX probe


def onnx_module_values(model) -> dict[str, str]:
    """module path -> the last value produced inside its scope (dynamo exporter metadata)."""
    values: dict[str, str] = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = meta.get("pkg.torch.onnx.name_scopes")
        if not scopes or not node.output or not node.output[0]:
            continue
        try:
            names = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            continue
        # The list ends with the op's own name (e.g. 'silu_3'), which is not a module.
        for scope in names[1:-1]:
            values[scope] = node.output[0]
    return values


def write_onnx_probe(model_path: Path, destination: Path) -> dict[str, str]:
    """A copy of the model with every module's value as an extra graph output."""
    import onnx

    model = onnx.load(str(model_path))
    values = onnx_module_values(model)
    existing = {o.name for o in model.graph.output}
    for value in dict.fromkeys(values.values()):
        if value not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=value))
    onnx.save(model, str(destination), save_as_external_data=_too_big_for_protobuf(model))
    return values


def _too_big_for_protobuf(model) -> bool:
    return model.ByteSize() > 1_900_000_000


def run_onnx_probe(probe_path: Path, input_sets, output_names, threads=1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(probe_path), options, providers=["CPUExecutionProvider"])
    return [dict(zip(output_names, session.run(output_names, s), strict=True)) for s in input_sets]


# ------------------------------------------------------------------------------------------------
# LiteRT probe


def tflite_scope_names(module, called: set[str]) -> dict[str, str]:
    """litert-torch's tensor-name prefix for each module path: the stack of `Class_attr`
    segments of the modules whose forward ran (as edgekit's exporter shortens them; files with
    litert-torch's qualified `pkg.Class_attr` are shortened on reading). Containers without a
    forward (ModuleList) and modules only reached through another method (diffusers'
    `vae.decode` calls `vae.decoder`, never `vae.forward`) leave no segment of their own."""
    import torch

    def segment(mod, attr):
        return short_class_name(f"{type(mod).__qualname__}_{attr}")

    root = short_class_name(type(module).__qualname__)
    names: dict[str, str] = {}
    stack: dict[str, str] = {"": root}
    for path, sub in module.named_modules():
        if not path:
            continue
        parent, _, attr = path.rpartition(".")
        parent_name = stack[parent]
        name = f"{parent_name}/{segment(sub, attr)}"
        if isinstance(sub, torch.nn.ModuleList | torch.nn.ModuleDict) or path not in called:
            # no segment: its children hang off its parent with their own key
            # (encoder.layer.4 -> .../MobileViTEncoder_encoder/MobileViTLayer_4)
            stack[path] = parent_name
            continue
        stack[path] = name
        names[path] = name
    return names


def tflite_module_tensors(model_path: Path, module, called: set[str]) -> dict[str, int]:
    """module path -> index of the last tensor an operator writes inside its scope."""
    from ai_edge_litert import schema_py_generated as schema

    buffer = model_path.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(bytearray(buffer), 0)
    subgraph = model.subgraphs[0]
    by_scope: dict[str, int] = {}
    for op in subgraph.operators:
        for index in op.outputs if op.outputs is not None else []:
            if index < 0:
                continue
            name = subgraph.tensors[index].name
            name = name.decode() if isinstance(name, bytes) else name
            scope = _tensor_scope(short_tensor_name(name))
            if scope:
                by_scope[scope] = index  # last writer wins: the scope's output
    position = _op_order(subgraph)
    tensors: dict[str, int] = {}
    for path, prefix in tflite_scope_names(module, called).items():
        # a module's scope covers its own name and its descendants': take the last write to any
        written = [i for scope, i in by_scope.items() if scope == prefix or
                   scope.startswith(prefix + "/")]  # fmt: skip
        if written:
            tensors[path] = max(written, key=position.get)
    return tensors


def _tensor_scope(name: str) -> str:
    """The module scope a LiteRT tensor was written in. A tensor of fused ops names every op it
    came from (`A;B;2`, e.g. a LayerNorm folded into the next Linear, in no reliable order): it
    belongs only to the scope they share, so no single fused module is credited with it."""
    parts = [p for p in name.split(";") if p and not p.isdigit()]
    if not parts:
        return ""
    shared = parts[0].split("/")
    for part in parts[1:]:
        segments = part.split("/")
        length = 0
        while length < min(len(shared), len(segments)) and shared[length] == segments[length]:
            length += 1
        shared = shared[:length]
    return "/".join(shared)


def _op_order(subgraph) -> dict[int, int]:
    order: dict[int, int] = {}
    for position, op in enumerate(subgraph.operators):
        for index in op.outputs if op.outputs is not None else []:
            order[index] = position
    return order


def write_tflite_probe(model_path: Path, destination: Path, tensors: list[int]) -> None:
    """A copy of the flatbuffer whose first subgraph also outputs `tensors`. LiteRT's own
    flatbuffer utilities read it, so weights stored after the flatbuffer (by offset, as
    litert-torch writes larger models) come back inline (models under 2 GB)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_path.read_bytes()))
    subgraph = model.subgraphs[0]
    outputs = [int(i) for i in subgraph.outputs]
    subgraph.outputs = outputs + [i for i in dict.fromkeys(tensors) if i not in outputs]
    destination.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def run_tflite_probe(probe_path: Path, input_sets, input_names, tensors, threads=1):
    """Run the probe on this host: {tensor index as str: float array} per input set, int8
    tensors dequantized (guest.py does the same inside the emulator)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(probe_path), num_threads=threads)
    interpreter.allocate_tensors()
    inputs = interpreter.get_input_details()
    quantization = {d["index"]: d["quantization"] for d in interpreter.get_tensor_details()}
    results = []
    for feed in input_sets:
        for name, detail in zip(input_names, inputs, strict=True):
            interpreter.set_tensor(detail["index"], np.asarray(feed[name], detail["dtype"]))
        interpreter.invoke()
        results.append(
            {str(i): dequantized(interpreter.get_tensor(i), quantization[i]) for i in tensors}
        )
    return results


def dequantized(values: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    """A quantized LiteRT activation as the float it stands for: (q - zero_point) * scale
    (activations are quantized per tensor); float tensors pass through."""
    scale, zero_point = quantization
    if np.issubdtype(values.dtype, np.floating) or not scale:
        return values.copy()
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Comparison


def layouts(actual: np.ndarray, reference: np.ndarray) -> list[np.ndarray]:
    """`actual` in the reference's layout: as it is (equal shapes, or equal but for size-1
    axes), or NHWC read as NCHW (LiteRT keeps convolutions channels-last). Empty when it cannot
    be the same tensor. Both when the shape cannot tell (C == H == W): the caller keeps the
    closer one, since a wrong layout scrambles the values (about 0 dB) and a right one does not."""
    candidates = []
    if [d for d in actual.shape if d != 1] == [d for d in reference.shape if d != 1]:
        candidates.append(actual.reshape(reference.shape))
    if actual.ndim == 4 and reference.ndim == 4:
        nchw = actual.transpose(0, 3, 1, 2)
        if nchw.shape == reference.shape:
            candidates.append(nchw)
    return candidates


def _aligned(runs, tensor, reference) -> np.ndarray | None:
    """One flat array over every input set, in the reference's layout (the same layout choice
    for every set)."""
    if not all(np.issubdtype(run[tensor].dtype, np.floating) for run in runs):
        return None  # a quantized value (ONNX QuantizeLinear): its DequantizeLinear is compared
    arrays = [np.asarray(run[tensor], np.float32) for run in runs]
    reference_flat = np.concatenate([r.ravel() for r in reference])
    best, best_sqnr = None, -np.inf
    for choice in range(len(layouts(arrays[0], reference[0]))):
        flat = np.concatenate([layouts(a, r)[choice].ravel()
                               for a, r in zip(arrays, reference, strict=True)])  # fmt: skip
        score = sqnr_db(reference_flat, flat)
        if score > best_sqnr:
            best, best_sqnr = flat, score
    return best


def _capped(value: float) -> float:
    return float(min(value, SQNR_CAP_DB))


def compare_layers(order, torch_outputs, runtime_outputs, tensor_of, host_outputs=None):
    layers = []
    for path, kind in order:
        tensor = tensor_of.get(path)
        if tensor is None or any(tensor not in run for run in runtime_outputs):
            continue
        reference = torch_outputs[path]
        act_all = _aligned(runtime_outputs, tensor, reference)
        if act_all is None:
            continue
        ref_all = np.concatenate([r.ravel() for r in reference])
        layer = LayerComparison(
            module=path,
            kind=kind,
            tensor=tensor,
            shape=list(reference[0].shape),
            sqnr_db=_capped(sqnr_db(ref_all, act_all)),
            max_abs_diff=float(np.max(np.abs(ref_all.astype(np.float64) - act_all))),
        )
        if host_outputs is not None:
            host_all = _aligned(host_outputs, tensor, reference)
            if host_all is not None:
                layer.sqnr_vs_host_db = _capped(sqnr_db(host_all, act_all))
        layers.append(layer)
    return layers


def first_jump(values: list[float], jump_db: float) -> tuple[int, float] | None:
    """Index and size of the first drop of `jump_db` or more that lands below JUMP_FLOOR_DB and
    stays down: none of the next PERSISTENCE layers climbs back within `jump_db` of the level
    before the drop. A real divergence carries through to the output; a lone low layer followed
    by good ones is a tensor tied to the wrong module (e.g. a convolution whose batch norm the
    converter folded in without saying so), not an error."""
    for index in range(1, len(values)):
        before = values[index - 1]
        drop = before - values[index]
        after = values[index + 1 : index + 1 + PERSISTENCE]
        # The last module's output is the artifact's own output, which plain verify checks; with
        # nothing after it, a drop there cannot be told from a mis-tied tensor.
        if (
            after
            and drop >= jump_db
            and values[index] < JUMP_FLOOR_DB
            and all(v <= before - jump_db for v in after)
        ):
            return index, drop
    # No jump named at the first layer: a quantized artifact starts at its quantization error
    # (20-40 dB) by design; the table shows that level.
    return None


# ------------------------------------------------------------------------------------------------
# The command


def localize(
    artifact_dir: Path,
    *,
    images: Path | None = None,
    image_limit: int = 8,
    cores: list[str] | None = None,
    arch: str = "arm64",
    cache: Path | None = None,
    jump_db: float = DEFAULT_JUMP_DB,
) -> list[Localization]:
    """Localize every component of the artifact, on this host or on each emulated core."""
    from edgekit import models

    manifest = read_manifest(artifact_dir)
    reason = unsupported_reason(manifest.format)
    if reason:
        raise LocalizeError(reason, hint="localize the onnx or tflite export of the same model.")
    environment = None
    if cores:
        from edgekit.emulate.environment import load

        environment = load(arch, cache)
        for core in cores:
            environment.python(core)  # unknown or missing cores fail before any work
    results: list[Localization] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-localize-") as scratch:
        for component in manifest.components:
            loaded = models.reload(component.source)
            if images is not None:
                input_sets, described = image_inputs(images, manifest, component, image_limit)
            else:
                seeds = component.verification.input_seeds
                input_sets = [loaded.sample_inputs(seed) for seed in seeds]
                described = "seeded inputs " + ", ".join(map(str, seeds))
            order, torch_outputs, called = torch_layer_outputs(loaded.module, loaded, input_sets)
            model_path = artifact_dir / component.model_file
            probe = Path(scratch) / f"{component.name}-probe{model_path.suffix}"
            probe_host = _probe_onnx if manifest.format == "onnx" else _probe_tflite
            try:
                tensor_of, host_runs, probe_sqnr, runtime = probe_host(
                    model_path, probe, component, loaded, input_sets, called
                )
            except EdgekitError:
                raise
            except Exception as exc:  # a damaged file fails inside the parser or the runtime
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise LocalizeError(
                    f"{component.model_file} cannot be read or run for localizing: "
                    f"{type(exc).__name__}: {detail}",
                    hint="the file is damaged or not what the manifest says: export it again.",
                ) from None
            targets = [("this host", host_runs, None)]
            for core in cores or []:
                guest_runs = _run_probe_in_guest(
                    environment, core, probe, manifest, component, input_sets, tensor_of
                )
                targets.append((f"emulated {core}", guest_runs, host_runs))
            if cores:
                targets = targets[1:]  # the host run is the x86 column of each core's table
            for where, runs, host in targets:
                layers = compare_layers(order, torch_outputs, runs, tensor_of, host)
                result = Localization(
                    component=component.name,
                    runtime=runtime,
                    where=where,
                    inputs=described,
                    layers=layers,
                    modules_total=len(order),
                    probe_sqnr_db=probe_sqnr,
                    jump_db=jump_db,
                )
                _name_jumps(result)
                results.append(result)
    _record(artifact_dir, results)
    return results


def mark_mismatches(layers: list[LayerComparison], jump_db: float) -> None:
    """Flag lone dips: a layer `jump_db` below both the layer before and the best of the next
    PERSISTENCE layers. A divergence stays down; a tensor tied to the wrong module does not."""
    for index, layer in enumerate(layers):
        before = layers[index - 1].sqnr_db if index else SQNR_CAP_DB
        after = [other.sqnr_db for other in layers[index + 1 : index + 1 + PERSISTENCE]]
        layer.mismatched = (
            layer.sqnr_db < JUMP_FLOOR_DB
            and before - layer.sqnr_db >= jump_db
            and bool(after)
            and max(after) - layer.sqnr_db >= jump_db
        )


def trusted(layers: list[LayerComparison]) -> list[LayerComparison]:
    return [layer for layer in layers if not layer.mismatched]


def _probe_onnx(model_path, probe, component, loaded, input_sets, called):
    """Write the ONNX probe and run it on this host: (module -> value name, runs, probe's final
    output SQNR vs the unprobed model's, runtime)."""
    final = component.outputs[0].name
    tensor_of = write_onnx_probe(model_path, probe)
    names = list(
        dict.fromkeys([o.name for o in component.outputs] + sorted(set(tensor_of.values())))
    )
    unprobed = run_onnx_probe(model_path, input_sets, [final])
    host_runs = run_onnx_probe(probe, input_sets, names)
    return tensor_of, host_runs, _final_sqnr(unprobed, host_runs, final), _version("onnxruntime")


def _probe_tflite(model_path, probe, component, loaded, input_sets, called):
    """`_probe_onnx` for LiteRT: values are tensor indices (as strings)."""
    final = component.outputs[0].name
    indices = tflite_module_tensors(model_path, loaded.module, called)
    tensor_of = {path: str(i) for path, i in indices.items()}
    final_index = _tflite_output_index(model_path)
    write_tflite_probe(model_path, probe, list(indices.values()))
    input_names = [spec.name for spec in component.inputs]
    unprobed = [
        {final: run[str(final_index)]}
        for run in run_tflite_probe(model_path, input_sets, input_names, [final_index])
    ]
    host_runs = run_tflite_probe(probe, input_sets, input_names, [final_index, *indices.values()])
    for run in host_runs:
        run[final] = run[str(final_index)]
    return tensor_of, host_runs, _final_sqnr(unprobed, host_runs, final), _version("ai-edge-litert")


def _final_sqnr(unprobed, probed, final: str) -> float:
    return _capped(
        sqnr_db(
            np.concatenate([run[final].ravel() for run in unprobed]),
            np.concatenate([run[final].ravel() for run in probed]),
        )
    )


def _name_jumps(result: Localization) -> None:
    mark_mismatches(result.layers, result.jump_db)
    layers = trusted(result.layers)
    jump = first_jump([layer.sqnr_db for layer in layers], result.jump_db)
    if jump:
        result.first_jump = layers[jump[0]]
        result.first_jump_drop_db = jump[1]
    host = [layer.sqnr_vs_host_db for layer in layers]
    if host and all(v is not None for v in host):
        diverged = first_jump(host, result.jump_db)
        if diverged:
            result.first_host_divergence = layers[diverged[0]]
    mismatched = len(result.layers) - len(layers)
    if mismatched:
        result.notes.append(
            f"{mismatched} layer(s) dip alone and recover at once: their tensor is not the "
            "module's own output (an op folded in by the converter), so they are left out"
        )
    if result.probe_sqnr_db < JUMP_FLOOR_DB:
        result.notes.append(
            f"exposing the layers changed the final output ({result.probe_sqnr_db:.1f} dB vs the "
            "artifact itself): a fusion across a probed tensor was undone, so these numbers are "
            "near, not equal to, what the artifact computes"
        )
    if len(result.layers) < result.modules_total // 2:
        result.notes.append(
            f"only {len(result.layers)} of {result.modules_total} modules could be tied to a "
            "runtime tensor (fused away or renamed by the exporter)"
        )


def _tflite_output_index(model_path: Path) -> int:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_path.read_bytes()), 0)
    return int(model.subgraphs[0].outputs[0])


def _run_probe_in_guest(environment, core, probe, manifest, component, input_sets, tensor_of):
    from edgekit.emulate.verify import run_in_guest

    tensors = sorted(set(tensor_of.values()))
    outputs, _ = run_in_guest(
        environment, core, probe, manifest, component, input_sets, threads=1,
        probe_tensors=tensors,
    )  # fmt: skip
    return outputs


def _version(package: str) -> str:
    import importlib.metadata

    return f"{package} {importlib.metadata.version(package)}"


def _record(artifact_dir: Path, results: list[Localization]) -> None:
    record = {"created_utc": now_utc(), "localizations": [asdict(r) for r in results]}
    write_text_atomic(artifact_dir / LOCALIZE_FILE, json.dumps(record, indent=2) + "\n")


def describe_jump(result: Localization) -> str:
    if result.first_jump is None:
        worst = min(trusted(result.layers), key=lambda layer: layer.sqnr_db, default=None)
        lowest = f"; lowest {worst.sqnr_db:.1f} dB at {worst.module}" if worst else ""
        return f"no layer's error jumps by {result.jump_db:.0f} dB or more{lowest}"
    layer = result.first_jump
    return (
        f"error jumps at {layer.module} ({layer.kind}): {layer.sqnr_db:.1f} dB vs PyTorch, "
        f"{result.first_jump_drop_db:.1f} dB below the layer before"
    )
