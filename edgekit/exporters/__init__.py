"""Exporters, one module per format, behind one small protocol.

The registry maps a format name to a lazy import string, so `edgekit --help` imports no
converter. An unknown name lists the known ones.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from edgekit.errors import UnknownChoiceError

if TYPE_CHECKING:
    import numpy as np

    from edgekit.artifact import ComponentManifest, Manifest
    from edgekit.bench.schema import OpProfile
    from edgekit.models.base import LoadedModel, TensorSpec
    from edgekit.profiles import RuntimeSettings
    from edgekit.quant.plan import LayerPrecision
    from edgekit.quant.spec import QuantSpec
    from edgekit.validate import StructureCheck

_REGISTRY: dict[str, str] = {
    "onnx": "edgekit.exporters.onnx:OnnxExporter",
    "executorch": "edgekit.exporters.executorch:ExecuTorchExporter",
    "coreml": "edgekit.exporters.coreml:CoreMLExporter",
    "tflite": "edgekit.exporters.tflite:TFLiteExporter",
}


def format_names() -> list[str]:
    return sorted(_REGISTRY)


@dataclass
class ExportResult:
    """What an exporter wrote. `details` lands in the manifest (e.g. delegation counts)."""

    files: list[Path]
    details: dict[str, Any] = field(default_factory=dict)


class Runtime(Protocol):
    """A loaded artifact on a host runtime: numpy dict in, numpy dict out, like the reference."""

    name: str
    version: str
    # The settings the runtime was actually created with (threads, delegate, provider, compute
    # units), for reports: what the profile asked for, as applied on this host.
    settings: dict[str, Any]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Exporter(Protocol):
    name: str
    display_name: str  # for messages: "ONNX", "Core ML"
    # The precisions this format can give a layer (conv/linear). Data, not code: the one check
    # below reads it and names the first layer a plan asks the impossible of.
    layer_precisions: tuple[LayerPrecision, ...]
    # Extension of the model file (or package folder); demo apps read file names from the
    # manifest. An exporter may also define `component_file_names` (component -> file name).
    file_suffix: str
    # Python modules the runtime needs; bench imports them before timing the load, so load
    # time measures the model, not a one-off library import.
    runtime_modules: tuple[str, ...]
    # Distribution names of its converter and runtime, recorded in the manifest's tool_versions.
    tool_packages: tuple[str, ...]

    def export(
        self,
        model: LoadedModel,
        sample_inputs: dict[str, np.ndarray],
        model_path: Path,
        *,
        quant: QuantSpec,
    ) -> ExportResult:
        """Write the artifact with every layer at the precision `quant` gives it."""

    def host_runtime_unavailable_reason(self) -> str | None:
        """Why artifacts of this format cannot run on this machine (Core ML off macOS), or None."""

    def runtime(
        self,
        model_path: Path,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        *,
        settings: RuntimeSettings | None = None,
    ) -> Runtime:
        """Load the artifact; `settings` are the target profile's runtime settings."""


@runtime_checkable
class ModelLimits(Protocol):
    """Optional: an exporter whose format limits models beyond precision (Core ML's IO dtypes
    and minimum deployment target)."""

    def model_unsupported_reason(self, model: LoadedModel) -> str | None:
        """Why this format cannot take this model, or None if it can."""


@runtime_checkable
class StructureChecker(Protocol):
    """Optional: an exporter whose runtime may be missing on a host (Core ML off macOS) and that
    can check an artifact's structure instead of its numerics."""

    def check_structure(
        self, model_path: Path, model: LoadedModel, *, quant: QuantSpec
    ) -> StructureCheck:
        """Without a runtime: IO names/shapes/dtypes vs the model, op histogram, weight dtypes."""


@runtime_checkable
class LayerReader(Protocol):
    """Reads an artifact's per-layer precisions back from the file, for plan verification."""

    # What the read-back looks at, for the manifest: e.g. "QDQ nodes around each layer".
    layer_evidence: str

    def read_layer_precisions(
        self, model_path: Path, quant: QuantSpec
    ) -> dict[str, LayerPrecision | None]:
        """Read the written artifact back from disk: user module path -> the precision that
        layer holds (weight dtypes, quantize/dequantize ops around it), None where no layer of
        the artifact's graph carries that path. Never derived from what export meant to do."""


@runtime_checkable
class OpProfiler(Protocol):
    """Optional, on a *Runtime*: a per-op profile from the runtime's own profiler (onnxruntime's
    trace, ExecuTorch's ETDump). A runtime whose library offers none does not implement it and
    may say why in a class attribute `op_profile_unavailable_reason` (str), which bench prints."""

    def profile_ops(self, inputs: dict[str, np.ndarray], runs: int) -> OpProfile:
        """Run `inputs` `runs` times (after one untimed warm-up run) with the profiler on, in a
        session of its own so the timed one is never slowed by it; every op's time summed over
        the runs, where it ran (backend, delegated or not), and its module path where the
        artifact records one."""


@runtime_checkable
class PlanLimits(Protocol):
    """Optional: an exporter that cannot realize some combinations of per-layer precisions."""

    def plan_unsupported_reason(self, quant: QuantSpec, model: LoadedModel) -> str | None:
        """Why this format cannot realize `quant` for `model`, or None if it can (e.g. XNNPACK
        has no dynamic int8 convolutions; Core ML calibrates int8 activations only on macOS)."""


def unsupported_reason(exporter: Exporter, model: LoadedModel, *, quant: QuantSpec) -> str | None:
    """Why `exporter` cannot export `model` as `quant` plans it, or None if it can. Names the
    first layer whose planned precision the format cannot express."""
    supported = exporter.layer_precisions
    refused = {path: p for path, p in quant.layers.items() if p not in supported}
    if refused or quant.float_precision not in supported:
        path, precision = next(iter(refused.items()), ("(float layers)", quant.float_precision))
        more = f" (and {len(refused) - 1} more layers)" if len(refused) > 1 else ""
        return (
            f"{exporter.display_name} cannot realize {precision} for layer '{path}'{more}; "
            f"it supports {', '.join(p.value for p in supported)} per layer."
        )
    if isinstance(exporter, PlanLimits):
        reason = exporter.plan_unsupported_reason(quant, model)
        if reason:
            return reason
    if isinstance(exporter, ModelLimits):
        return exporter.model_unsupported_reason(model)
    return None


def model_file_name(exporter: Exporter, component: str) -> str:
    """File name of one component inside the artifact: `model.onnx` for single-model artifacts,
    `unet.onnx` etc. for pipelines, unless the format has names its apps expect."""
    special = getattr(exporter, "component_file_names", {})
    return special.get(component, f"{component}{exporter.file_suffix}")


def exporter_class(name: str) -> type:
    target = _REGISTRY.get(name)
    if target is None:
        raise UnknownChoiceError(
            "format", name, format_names(), hint="pass --target with one of the known formats."
        )
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def get(name: str, **options: Any) -> Exporter:
    """The exporter for format `name`; `options` go to its constructor (from target profiles)."""
    return exporter_class(name)(**options)


def profile_runtime_settings(
    profile: dict[str, Any] | None, *, threads: int | None = None
) -> RuntimeSettings:
    """The runtime settings an artifact's target profile names; `threads` overrides its count.

    A profile's thread count is for the device (e.g. 4 big cores); on a host with fewer cores it
    is capped at the host's count, since more threads than cores only adds contention.
    """
    import os

    from edgekit.profiles import RuntimeSettings

    settings = RuntimeSettings(**((profile or {}).get("runtime") or {}))
    if threads:
        return settings.model_copy(update={"threads": threads})
    host_cores = os.cpu_count() or 1
    if settings.threads and settings.threads > host_cores:
        return settings.model_copy(update={"threads": host_cores})
    return settings


def require_host_runtime(manifest: Manifest, *, action: str) -> None:
    """Refuse in one line to `action` (e.g. "generate") with an artifact whose format has no
    runtime on this host, before anything is loaded or written."""
    from edgekit.errors import NoHostRuntimeError

    reason = get(manifest.format).host_runtime_unavailable_reason()
    if reason:
        raise NoHostRuntimeError(
            f"Cannot {action} with the {manifest.format} artifact here: {reason}",
            hint=f"{action} with an onnx, executorch or tflite export of the same source.",
        )


def open_runtime(
    artifact_dir: Path,
    manifest: Manifest,
    component: ComponentManifest,
    *,
    threads: int | None = None,
) -> Runtime:
    """A component's host runtime set up as the artifact's target profile says: the exporter
    options (e.g. Core ML compute units) and runtime settings (threads, delegate, execution
    provider) recorded in the manifest. `threads` (a command-line flag) overrides the profile's.
    bench, generate and classify all open artifacts through here."""
    profile = manifest.profile or {}
    exporter = get(manifest.format, **(profile.get("export") or {}))
    return exporter.runtime(
        artifact_dir / component.model_file,
        component.inputs,
        component.outputs,
        settings=profile_runtime_settings(profile, threads=threads),
    )
