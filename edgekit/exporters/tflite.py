"""TFLite (LiteRT) `.tflite` straight from the nn.Module with litert-torch, run with ai-edge-litert.

litert-torch goes torch.export -> StableHLO -> TFLite flatbuffer without a TensorFlow install
(onnx2tf produced a UNet that ran but was silently wrong; tflite-runtime 2.14 needs numpy<2),
and ai-edge-litert is the maintained interpreter (numpy 2, XNNPACK on by default: about 52 ms vs
380 ms without it for MobileViT-S on 2 threads).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import ArtifactError, ExportError
from edgekit.exporters import ExportResult, format_names
from edgekit.exporters._native import quiet_native_stderr
from edgekit.quant.plan import LayerPrecision

if TYPE_CHECKING:
    import numpy as np
    import torch

    from edgekit.models.base import LoadedModel, TensorSpec
    from edgekit.profiles import RuntimeSettings
    from edgekit.quant.spec import QuantSpec

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


class TFLiteExporter:
    name = "tflite"
    display_name = "TFLite"
    layer_precisions = (LayerPrecision.FP32,)
    runtime_modules = ("ai_edge_litert.interpreter",)
    tool_packages = ("litert-torch", "ai-edge-litert")
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

        # 1. Refuse what cannot fit in a flatbuffer, before any slow conversion.
        weight_bytes = fp32_weight_bytes(model.module)
        if weight_bytes >= FLATBUFFER_LIMIT_BYTES:
            raise self._too_large_error(model, weight_bytes)

        # 2. Convert, positional args in `model.inputs` order (the runtime relies on it).
        args = tuple(torch.from_numpy(sample_inputs[spec.name]) for spec in model.inputs)
        debug = log.isEnabledFor(logging.DEBUG)
        with _litert_progress(enabled=debug), quiet_native_stderr(enabled=not debug):
            import litert_torch

            edge_model = litert_torch.convert(model.module, args)
            edge_model.export(str(model_path))

        # 3. Describe what was written.
        op_histogram = tflite_op_histogram(model_path.read_bytes())
        log.info("TFLite graph: %d ops %s", sum(op_histogram.values()), op_histogram)
        return ExportResult(
            files=[model_path],
            details={
                "converter": "litert_torch.convert",
                "litert_torch_version": importlib.metadata.version("litert-torch"),
                "ai_edge_litert_version": importlib.metadata.version("ai-edge-litert"),
                "flatbuffer_size_bytes": model_path.stat().st_size,
                "fp32_weight_bytes": weight_bytes,
                "op_count": sum(op_histogram.values()),
                "op_histogram": op_histogram,
            },
        )

    def _too_large_error(self, model: LoadedModel, weight_bytes: int) -> ExportError:
        others = ", ".join(f"--target {n}" for n in format_names() if n != self.name)
        return ExportError(
            f"{model.model_kind} has {weight_bytes / 2**30:.2f} GiB ({weight_bytes} bytes) of "
            f"fp32 weights, and a TFLite flatbuffer cannot exceed the 2 GB limit "
            f"({FLATBUFFER_LIMIT_BYTES} bytes), so it cannot be exported to TFLite in fp32.",
            hint=f"quantize the weights to int8 or fp16 to bring them under the limit (edgekit's "
            f"tflite target does not offer that yet), or use {others}.",
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
