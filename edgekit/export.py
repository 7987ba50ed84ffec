"""Export, then verify: the one function behind `edgekit export` and `edgekit quickstart`.

Steps, numbered as in the README's "How it fits together" (load, plan precision, export, verify):
  1. the model is loaded by the caller (`edgekit.models.load` / `load_pipeline`);
  3. each component is exported into a staging folder;
  4. each runs on its host runtime and is compared with PyTorch (or, where no runtime exists on
     this OS, its structure is checked); the manifest is written; the folder is published.
A verification failure still publishes the artifact, marked "failed", then raises.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import __version__, exporters
from edgekit.artifact import (
    ComponentManifest,
    ExportInfo,
    Manifest,
    file_entries,
    now_utc,
    prepare_output_dir,
    publish,
    staging_dir,
)
from edgekit.errors import EdgekitError, ExportError, VerificationError
from edgekit.models.base import LoadedModel, LoadedPipeline
from edgekit.profiles import RuntimeSettings, TargetProfile
from edgekit.quant.plan import LayerPrecision, QuantPlan, QuantPlanError, named_plan
from edgekit.quant.spec import (
    CalibrationInputs,
    CalibrationRecord,
    PlanCheck,
    QuantSpec,
    check_realized,
    executed_layers,
    quant_spec,
    unreadable_plan_check,
)
from edgekit.validate import (
    ARTIFACT_STATUS,
    Tolerance,
    Verification,
    check_reference,
    compare_outputs,
    runtime_failure,
    verification_tolerance,
)

log = logging.getLogger(__name__)

# Verification inputs: at least two, so an artifact that ignores its input (or a reference that
# does) shows. Classifiers get more: top-1 agreement over one input says little, and each run of
# a classifier costs milliseconds. The first seed also makes the inputs the exporter traces with.
VERIFY_SEEDS = (0, 1)
CLASSIFIER_VERIFY_SEEDS = (0, 1, 2, 3, 4, 5, 6, 7)
SINGLE_COMPONENT = "model"
# Failures named in the one-line error; the manifest lists every one (a plan whose overrides a
# converter ignored can fail dozens of layers at once).
MAX_FAILURES_NAMED = 5
# Packages every artifact's numbers depend on; each exporter adds its converter and runtime
# (`Exporter.tool_packages`), so the manifest names exactly what made and checked this artifact.
_COMMON_TOOLS = ("torch", "numpy", "transformers", "diffusers")


def tool_versions(exporter: exporters.Exporter) -> dict[str, str]:
    versions = {"edgekit": __version__}
    for tool in (*_COMMON_TOOLS, *exporter.tool_packages):
        try:
            versions[tool] = importlib.metadata.version(tool)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def artifact_name(source_name: str, format_name: str, precision: str, suffix: str = "") -> str:
    parts = [source_name, suffix, format_name, precision]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(p for p in parts if p))


def export_artifact(
    model: LoadedModel | LoadedPipeline,
    format_name: str,
    out_dir: Path,
    *,
    precision: str = "fp32",
    name: str | None = None,
    exporter_options: dict[str, Any] | None = None,
    profile: dict[str, Any] | None = None,
    on_replace: Callable[[Path], None] | None = None,
    plan: QuantPlan | str | None = None,
    calibration: dict[str, CalibrationInputs] | None = None,
) -> tuple[Path, Manifest]:
    """Export every component of `model` to `format_name` under `out_dir`, verify each, publish.

    Returns (artifact folder, manifest). `plan` (else the uniform `precision`) sets each layer's
    precision: a QuantPlan, or the name of a named plan (e.g. "mixed"), which is derived from
    each component's own structure; `calibration` maps a component to the inputs its static int8
    layers calibrate on.
    `exporter_options` go to the exporter's constructor (e.g. Core ML's minimum deployment
    target); `profile` is recorded in the manifest. `on_replace(folder)` is called when the new
    artifact replaced an existing one there.
    """
    exporter = exporters.get(format_name, **(exporter_options or {}))
    if isinstance(model, LoadedPipeline):
        components = model.components
    else:
        components = {model.source.component or SINGLE_COMPONENT: model}
    specs = _component_specs(
        components, plan, precision, calibration or {}, exporter.layer_precisions
    )
    for component_name, component in components.items():
        reason = exporters.unsupported_reason(exporter, component, quant=specs[component_name])
        if reason:
            raise ExportError(
                reason,
                hint=f"choose another --quant plan or --target for {component.model_kind}.",
            )
    labels = {spec.label for spec in specs.values()}
    label = labels.pop() if len(labels) == 1 else "mixed"
    prepare_output_dir(out_dir)
    final_dir = out_dir / (name or _default_name(model, components, format_name, label))

    with staging_dir(out_dir) as staging:
        # Verification checks numerics on the host's CPU path (XNNPACK for ExecuTorch and
        # LiteRT) with the profile's thread count; a device-only delegate or provider in the
        # profile (GPU, NNAPI, CUDA) is for the phone, and must not make export impossible.
        profile_threads = exporters.profile_runtime_settings(profile).threads
        runtime_settings = RuntimeSettings(threads=profile_threads)
        entries = [
            _export_component(
                exporter,
                component_name,
                component,
                staging,
                specs[component_name],
                runtime_settings,
            )
            for component_name, component in components.items()
        ]
        pipeline_info = None
        if isinstance(model, LoadedPipeline):
            model.write_assets(staging)
            pipeline_info = model.info
        statuses = {ARTIFACT_STATUS[e.verification.status] for e in entries}
        if any(e.quant and e.quant.status == "failed" for e in entries):
            statuses.add("failed")
        status = (
            "failed"
            if "failed" in statuses
            else ("structure-only" if "structure-only" in statuses else "verified")
        )
        first = next(iter(components.values()))
        manifest = Manifest(
            name=final_dir.name,
            created_utc=now_utc(),
            status=status,
            model_kind=model.model_kind,
            random_weights=model.source.random_weights,
            source=model.source,
            format=format_name,
            precision=label,
            quant_plan=_manifest_plan(plan, specs),
            profile=profile,
            preprocessing=first.preprocessing,
            labels=first.labels,
            pipeline=pipeline_info,
            components=entries,
            files=file_entries(staging),
            tool_versions=tool_versions(exporter),
        )
        replaced = publish(staging, manifest, final_dir)
    if replaced and on_replace:
        on_replace(final_dir)

    if status == "failed":
        failures = [f"{e.name}: {f}" for e in entries for f in _component_failures(e)]
        if len(failures) > MAX_FAILURES_NAMED:
            more = len(failures) - MAX_FAILURES_NAMED
            failures = [*failures[:MAX_FAILURES_NAMED], f"and {more} more (see manifest.json)"]
        runtime_broke = any(e.verification.runtime_error for e in entries)
        raise VerificationError(
            f"{final_dir.name} failed verification: {'; '.join(failures)}. "
            f"The artifact is kept, marked failed, at {final_dir}.",
            hint=(
                "the converter wrote a file its own runtime cannot run: report the converter and "
                "runtime versions (tool_versions in the manifest); try another --target meanwhile."
                if runtime_broke
                else "report the model and versions; try another --target meanwhile."
            ),
        )
    return final_dir, manifest


def export_for_target(
    model: LoadedModel | LoadedPipeline,
    profile: TargetProfile,
    out_dir: Path,
    *,
    precision: str | None = None,
    name: str | None = None,
    on_replace: Callable[[Path], None] | None = None,
    plan: QuantPlan | str | None = None,
    calibration: dict[str, CalibrationInputs] | None = None,
) -> tuple[Path, Manifest]:
    """`export_artifact` with a deployment target profile's format, precision and options."""
    return export_artifact(
        model,
        profile.format,
        out_dir,
        plan=plan,
        calibration=calibration,
        precision=precision or profile.precision,
        name=name,
        exporter_options=profile.export,
        profile=profile.model_dump(exclude_none=True),
        on_replace=on_replace,
    )


def _component_specs(
    components: dict[str, LoadedModel],
    plan: QuantPlan | str | None,
    precision: str,
    calibration: dict[str, CalibrationInputs],
    target_precisions: tuple[LayerPrecision, ...],
) -> dict[str, QuantSpec]:
    """Each component's plan resolved against its module. A named plan is built for every
    component from its own structure and from what the target realizes (`target_precisions`).
    A plan file made for one component of a pipeline (`plan.component`, e.g. the UNet) applies
    to that one; the others stay at `precision`."""
    if isinstance(plan, QuantPlan) and plan.component not in (None, *components):
        raise QuantPlanError(
            f"The plan is for the '{plan.component}' component, which this export does not have "
            f"(it has {', '.join(components)}).",
            hint="export the source the plan was made for, or pass --component.",
        )
    specs = {}
    for name, component in components.items():
        if isinstance(plan, str):
            component_plan = named_plan(plan, component.module, target_precisions)
        elif plan is not None and plan.component in (None, name):
            component_plan = plan
        else:
            component_plan = named_plan(precision, component.module)
        specs[name] = quant_spec(
            component_plan,
            component.module,
            calibration=calibration.get(name),
            executed=executed_layers(component),
        )
    return specs


def _manifest_plan(plan: QuantPlan | str | None, specs: dict[str, QuantSpec]) -> QuantPlan | None:
    """The plan as asked: a plan file as written; a named plan as built for the model (for a
    pipeline, where each component has its own, the per-layer plan is in each component's
    `quant` block, and a uniform named plan is recorded as its default alone)."""
    if not isinstance(plan, str):
        return plan
    built = [spec.plan for spec in specs.values()]
    return built[0] if len(built) == 1 else built[0].model_copy(update={"overrides": {}})


def _component_failures(entry: ComponentManifest) -> list[str]:
    plan_failures = entry.quant.failures if entry.quant else []
    return [*entry.verification.failures, *plan_failures]


def _default_name(
    model: LoadedModel | LoadedPipeline,
    components: dict[str, LoadedModel],
    format_name: str,
    precision: str,
) -> str:
    source = model.source
    base = source.path if source.is_preset else Path(source.path).name
    # A pipeline artifact with only some components names them: sd-pipeline-unet-onnx-fp32.
    available = source.options.get("available")
    partial = isinstance(model, LoadedPipeline) and list(components) != available
    suffix = "-".join(components) if partial else (source.component or "")
    name = artifact_name(base, format_name, precision, suffix)
    # Every format has a fixed batch: a batch-4 export must not replace the batch-1 one.
    batch = source.options.get("batch_size", 1)
    return f"{name}-b{batch}" if batch != 1 else name


def verify_seeds(model: LoadedModel) -> tuple[int, ...]:
    return CLASSIFIER_VERIFY_SEEDS if model.labels else VERIFY_SEEDS


def _verification_inputs(
    model: LoadedModel, quant: QuantSpec
) -> tuple[tuple[int, ...], list[dict], str]:
    """(seeds or indices, inputs, what they are). Seeded synthetic inputs, except for a quantized
    artifact calibrated on real data (images, recorded prompts): its int8 ranges fit that data
    and clip noise, so it is judged on the first calibration inputs (as many as seeds)."""
    seeds = verify_seeds(model)
    calibration = quant.calibration
    if quant.is_quantized and calibration is not None and calibration.kind != "synthetic":
        inputs = list(itertools.islice(calibration, len(seeds)))
        if len(inputs) >= 2:  # two at least, so an input-blind artifact still shows
            indices = tuple(range(len(inputs)))
            return indices, inputs, f"the first {len(inputs)} of {calibration.description}"
    return seeds, [model.sample_inputs(seed) for seed in seeds], "seeded synthetic inputs"


def _export_component(
    exporter: exporters.Exporter,
    component_name: str,
    model: LoadedModel,
    staging: Path,
    quant: QuantSpec,
    runtime_settings: RuntimeSettings,
) -> ComponentManifest:
    model_path = staging / exporters.model_file_name(exporter, component_name)
    precision = quant.label
    started = time.perf_counter()
    seeds, inputs, input_source = _verification_inputs(model, quant)
    references = [model.run_torch(x) for x in inputs]
    tolerance = verification_tolerance(references, precision=precision)
    check_reference(references, precision=precision, tolerance=tolerance)
    reference_s = time.perf_counter() - started

    # 3. Export.
    started = time.perf_counter()
    try:
        result = exporter.export(model, inputs[0], model_path, quant=quant)
    except EdgekitError:
        raise
    except Exception as exc:  # converters raise anything; the user gets one line, log the rest
        log.debug("export failed", exc_info=True)
        raise ExportError(
            f"{exporter.name} export of {model.model_kind} failed: {_first_line(exc)}",
            hint="run with --verbose for the converter's full trace.",
        ) from exc
    duration_s = time.perf_counter() - started

    # 4. Verify: the plan, read back layer by layer from the artifact; then the numerics on the
    # host runtime, or (where none exists on this OS) the structure only.
    started = time.perf_counter()
    plan_check = _check_plan(exporter, model_path, quant)
    verification = _verify(
        exporter, model, model_path, seeds, inputs, references, quant, runtime_settings, tolerance
    )
    verification = verification.model_copy(update={"input_source": input_source})
    verify_s = reference_s + time.perf_counter() - started
    return ComponentManifest(
        name=component_name,
        model_kind=model.model_kind,
        model_file=model_path.name,
        inputs=model.inputs,
        outputs=model.outputs,
        parameter_count=model.parameter_count,
        source=model.source,
        export=ExportInfo(
            duration_s=round(duration_s, 2),
            verify_duration_s=round(verify_s, 2),
            details=result.details,
        ),
        verification=verification,
        quant=plan_check,
        # Only static int8 layers use calibration data; dynamic and weight-only ones do not.
        calibration=CalibrationRecord.of(quant.calibration)
        if quant.layers_at(LayerPrecision.INT8) and quant.calibration
        else None,
        size_bytes=sum(f.stat().st_size for f in result.files),
        fp32_weight_bytes=model.parameter_count * 4,
    )


def _check_plan(
    exporter: exporters.Exporter, model_path: Path, quant: QuantSpec
) -> PlanCheck | None:
    """The plan as the artifact realized it, read back from the written file."""
    if not isinstance(exporter, exporters.LayerReader):
        if quant.is_quantized:
            raise ExportError(f"{exporter.display_name} cannot read layer precisions back.")
        return None
    try:
        realized = exporter.read_layer_precisions(model_path, quant)
    except Exception as exc:  # an unreadable file fails the check; the runtime says more below
        log.debug("cannot read layer precisions back", exc_info=True)
        return unreadable_plan_check(quant, _first_line(exc), evidence=exporter.layer_evidence)
    return check_realized(quant, realized, evidence=exporter.layer_evidence)


def _verify(
    exporter: exporters.Exporter,
    model: LoadedModel,
    model_path: Path,
    seeds: tuple[int, ...],
    inputs: list[dict],
    references: list[dict],
    quant: QuantSpec,
    runtime_settings: RuntimeSettings,
    tolerance: Tolerance,
) -> Verification:
    precision = quant.label
    no_runtime = exporter.host_runtime_unavailable_reason()
    if no_runtime and not isinstance(exporter, exporters.StructureChecker):
        return runtime_failure(
            f"{no_runtime} and {exporter.display_name} has no structure check to fall back on",
            precision=precision,
            runtime="none on this host",
            input_seeds=list(seeds),
        )
    if no_runtime:
        structure = exporter.check_structure(model_path, model, quant=quant)
        verdict = "passed" if structure.passed else "FAILED"
        return Verification(
            status="not-checked" if structure.passed else "failed",
            numerics_checked=False,
            runtime="none on this host",
            precision=precision,
            tolerance=tolerance,
            input_seeds=list(seeds),
            outputs=[],
            structure=structure,
            message=f"Numerics NOT checked: {no_runtime} The outputs were not compared with "
            f"PyTorch; structure check {verdict}.",
        )
    runtime_label = exporter.name
    try:
        runtime = exporter.runtime(
            model_path, model.inputs, model.outputs, settings=runtime_settings
        )
        runtime_label = f"{runtime.name} {runtime.version}"
        actuals = [runtime(x) for x in inputs]
    except Exception as exc:  # a runtime that cannot load or run the file raises anything
        log.debug("host runtime failed on the artifact", exc_info=True)
        return runtime_failure(
            _first_line(exc), precision=precision, runtime=runtime_label, input_seeds=list(seeds)
        )
    return compare_outputs(
        references,
        actuals,
        precision=precision,
        runtime=runtime_label,
        input_seeds=list(seeds),
        classifier_output="logits" if model.labels else None,
        tolerance=tolerance,
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else '(no message)'}"
