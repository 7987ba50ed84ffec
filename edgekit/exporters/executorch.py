"""ExecuTorch `.pte` through torch.export -> XNNPACK partitioner, run with executorch.runtime."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import ArtifactError
from edgekit.exporters import ExportResult
from edgekit.exporters._native import quiet_native_stderr
from edgekit.quant.plan import LayerPrecision

if TYPE_CHECKING:
    import numpy as np

    from edgekit.models.base import LoadedModel, TensorSpec
    from edgekit.profiles import RuntimeSettings
    from edgekit.quant.spec import QuantSpec

log = logging.getLogger(__name__)


class ExecuTorchExporter:
    name = "executorch"
    display_name = "ExecuTorch"
    layer_precisions = (LayerPrecision.FP32,)
    runtime_modules = ("executorch.runtime", "executorch.extension.pybindings.portable_lib")
    tool_packages = ("executorch", "torchao")
    file_suffix = ".pte"

    def export(
        self,
        model: LoadedModel,
        sample_inputs: dict[str, np.ndarray],
        model_path: Path,
        *,
        quant: QuantSpec,
    ) -> ExportResult:
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        args = tuple(torch.from_numpy(sample_inputs[spec.name]) for spec in model.inputs)
        exported = torch.export.export(model.module, args, strict=False)
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        delegation = _delegation_summary(edge.exported_program().graph_module)
        program = edge.to_executorch()
        model_path.write_bytes(program.buffer)
        log.info(
            "XNNPACK took %d of %d ops; not delegated: %s",
            delegation["delegated_ops"],
            delegation["delegated_ops"] + delegation["non_delegated_ops"],
            delegation["non_delegated_by_op"] or "none",
        )
        return ExportResult(files=[model_path], details={"backend": "xnnpack", **delegation})

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
