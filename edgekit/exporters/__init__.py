"""Exporters, one module per format, behind one small protocol.

The registry maps a format name to a lazy import string, so `edgekit --help` imports no
converter. An unknown name lists the known ones.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgekit.errors import UnknownChoiceError

if TYPE_CHECKING:
    import numpy as np

    from edgekit.models.base import LoadedModel, TensorSpec
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

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Exporter(Protocol):
    name: str
    # Extension of the model file (or package folder); demo apps read file names from the
    # manifest. An exporter may also define `component_file_names` (component -> file name).
    file_suffix: str
    # Python modules the runtime needs; bench imports them before timing the load, so load
    # time measures the model, not a one-off library import.
    runtime_modules: tuple[str, ...]

    def unsupported_reason(self, model: LoadedModel, *, precision: str) -> str | None:
        """Why this exporter cannot handle this request, or None if it can."""

    def export(
        self,
        model: LoadedModel,
        sample_inputs: dict[str, np.ndarray],
        model_path: Path,
        *,
        precision: str,
    ) -> ExportResult: ...

    def host_runtime_unavailable_reason(self) -> str | None:
        """Why artifacts of this format cannot run on this machine (Core ML off macOS), or None."""

    def check_structure(
        self, model_path: Path, model: LoadedModel, *, precision: str
    ) -> StructureCheck:
        """Without a runtime: IO names/shapes/dtypes vs the model, op histogram, weight dtypes."""

    def runtime(
        self,
        model_path: Path,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        *,
        threads: int | None = None,
    ) -> Runtime: ...


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
