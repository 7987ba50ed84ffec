"""Export, then verify: the one function behind `edgekit export` and `edgekit quickstart`.

Steps, numbered as in shared/DESIGN.md:
  1. the model is loaded by the caller (`edgekit.models.load`);
  3. export into a staging folder;
  4. run the artifact on its host runtime, compare with PyTorch, write the manifest, publish.
A verification failure still publishes the artifact, marked "failed", then raises.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import time
from pathlib import Path

from edgekit import __version__, exporters
from edgekit.artifact import (
    ExportInfo,
    Manifest,
    file_entries,
    now_utc,
    prepare_output_dir,
    publish,
    staging_dir,
)
from edgekit.errors import EdgekitError, ExportError, VerificationError
from edgekit.models.base import LoadedModel
from edgekit.validate import TOLERANCES, Verification, check_reference, compare_outputs

log = logging.getLogger(__name__)

VERIFY_SEED = 0
_TOOLS = [
    "torch",
    "numpy",
    "transformers",
    "diffusers",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "executorch",
]


def tool_versions() -> dict[str, str]:
    versions = {"edgekit": __version__}
    for tool in _TOOLS:
        try:
            versions[tool] = importlib.metadata.version(tool)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def artifact_name(model: LoadedModel, format_name: str, precision: str) -> str:
    base = Path(model.source.path).name if not model.source.is_preset else model.source.path
    parts = [base]
    if model.source.component:
        parts.append(model.source.component)
    parts += [format_name, precision]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts))


def export_artifact(
    model: LoadedModel,
    format_name: str,
    out_dir: Path,
    *,
    precision: str = "fp32",
    name: str | None = None,
) -> tuple[Path, Manifest]:
    """Export `model` to `format_name` under `out_dir`, verify it, return (folder, manifest)."""
    exporter = exporters.get(format_name)
    reason = exporter.unsupported_reason(model, precision=precision)
    if reason:
        raise ExportError(
            reason, hint=f"choose another --precision or --target for {model.model_kind}."
        )
    prepare_output_dir(out_dir)
    final_dir = out_dir / (name or artifact_name(model, format_name, precision))

    inputs = model.sample_inputs(VERIFY_SEED)
    reference = model.run_torch(inputs)
    check_reference(reference)

    with staging_dir(out_dir) as staging:
        # 3. Export.
        started = time.perf_counter()
        try:
            result = exporter.export(model, inputs, staging, precision=precision)
        except EdgekitError:
            raise
        except Exception as exc:  # converters raise anything; the user gets one line, log the rest
            log.debug("export failed", exc_info=True)
            raise ExportError(
                f"{format_name} export of {model.model_kind} failed: {_first_line(exc)}",
                hint="run with --verbose for the converter's full trace.",
            ) from exc
        duration_s = time.perf_counter() - started

        # 4. Verify on the host runtime, or (where none exists on this OS) the structure only.
        verification = _verify(exporter, model, staging, inputs, reference, precision)
        manifest = Manifest(
            name=final_dir.name,
            created_utc=now_utc(),
            status=_STATUS[verification.status],
            model_kind=model.model_kind,
            random_weights=model.source.random_weights,
            source=model.source,
            format=format_name,
            precision=precision,
            model_file=exporter.model_file,
            inputs=model.inputs,
            outputs=model.outputs,
            preprocessing=model.preprocessing,
            labels=model.labels,
            parameter_count=model.parameter_count,
            files=file_entries(staging),
            export=ExportInfo(duration_s=round(duration_s, 2), details=result.details),
            verification=verification,
            tool_versions=tool_versions(),
        )
        publish(staging, manifest, final_dir)

    if verification.status == "failed":
        raise VerificationError(
            f"{final_dir.name} failed verification: {'; '.join(verification.failures)}. "
            f"The artifact is kept, marked failed, at {final_dir}.",
            hint="report the model and versions; try another --target meanwhile.",
        )
    return final_dir, manifest


_STATUS = {"passed": "verified", "failed": "failed", "not-checked": "structure-only"}


def _verify(
    exporter: exporters.Exporter,
    model: LoadedModel,
    artifact_dir: Path,
    inputs: dict,
    reference: dict,
    precision: str,
) -> Verification:
    no_runtime = exporter.host_runtime_unavailable_reason()
    if no_runtime:
        structure = exporter.check_structure(artifact_dir, model, precision=precision)
        verdict = "passed" if structure.passed else "FAILED"
        return Verification(
            status="not-checked" if structure.passed else "failed",
            numerics_checked=False,
            runtime="none on this host",
            precision=precision,
            tolerance=TOLERANCES[precision],
            input_seed=VERIFY_SEED,
            outputs=[],
            structure=structure,
            message=f"Numerics NOT checked: {no_runtime} Structure check {verdict}.",
        )
    runtime = exporter.runtime(artifact_dir, model.inputs, model.outputs)
    actual = runtime(inputs)
    return compare_outputs(
        reference,
        actual,
        precision=precision,
        runtime=f"{runtime.name} {runtime.version}",
        input_seed=VERIFY_SEED,
        classifier_output="logits" if model.labels else None,
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else '(no message)'}"
