"""`edgekit verify ARTIFACT --emulate arm64 --cpu ...`: the artifact's verification inputs on
each emulated core, compared with PyTorch (the export's metrics and tolerances) and with the
same runtime on this x86 host. The results are written beside the manifest (`emulation.json`),
so `bench` can show which cores an artifact was verified on; a re-export replaces the folder and
with it the stale results."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import ComponentManifest, Manifest, now_utc, read_manifest, write_text_atomic
from edgekit.emulate import guest
from edgekit.emulate.environment import (
    GUEST_FORMATS,
    EmulatorError,
    Environment,
    instructions_per_run,
    load,
    run_on_core,
)
from edgekit.errors import EdgekitError, VerificationError
from edgekit.validate import Verification, compare_outputs

EMULATION_FILE = "emulation.json"
# Emulation runs about 100-300x slower than native: generous, but a hung guest still ends.
GUEST_TIMEOUT_S = 1800


@dataclass
class CoreCheck:
    core: str
    component: str
    vs_pytorch: Verification
    vs_host: Verification  # the host run as the reference: how far the ARM kernels moved


def unsupported_format_reason(format_name: str) -> str | None:
    if format_name in GUEST_FORMATS:
        return None
    if format_name == "executorch":
        from edgekit.emulate import executorch

        return executorch.unavailable_reason()
    return f"{format_name} artifacts have no runtime for Linux on ARM (Core ML runs on Apple OSes)."


def run_in_guest(
    environment: Environment,
    core: str,
    model_path: Path,
    manifest: Manifest,
    component: ComponentManifest,
    input_sets: list[dict[str, np.ndarray]],
    *,
    threads: int | None = None,
    timed_runs: int = 0,
    timeout_s: float = GUEST_TIMEOUT_S,
    probe_tensors: list[str] | None = None,
    count_instructions: bool = False,
) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Run `input_sets` through the artifact inside the emulator; (outputs per set, timings).

    `probe_tensors` (verify --localize): fetch these values instead of the declared outputs
    (ONNX value names, or LiteRT tensor indices as strings). `count_instructions`: run under the
    instruction-counting plugin; the timings then hold `instructions`, one count per timed run."""
    if manifest.format == "executorch":
        if probe_tensors:
            raise EmulatorError(
                "ExecuTorch programs have no intermediate outputs to probe under emulation.",
                hint="localize the onnx or tflite export of the same model.",
            )
        # No Python runtime for it in the guest: a cross-compiled C++ runner (see the module).
        from edgekit.emulate import executorch

        return executorch.run(
            environment, core, model_path, component, input_sets, threads=threads,
            timed_runs=timed_runs, timeout_s=timeout_s, count_instructions=count_instructions,
        )  # fmt: skip
    output_names = probe_tensors or [spec.name for spec in component.outputs]
    with tempfile.TemporaryDirectory(prefix="edgekit-emulate-") as scratch:
        scratch_path = Path(scratch)
        np.savez(
            scratch_path / "inputs.npz",
            **{f"{i}/{name}": value for i, s in enumerate(input_sets) for name, value in s.items()},
        )
        request = {
            "site": str(environment.site),
            "format": manifest.format,
            "model": str(model_path),
            "threads": threads,
            "inputs": str(scratch_path / "inputs.npz"),
            "inputs_order": [spec.name for spec in component.inputs],
            "outputs_order": [spec.name for spec in component.outputs],
            "probe_tensors": probe_tensors,
            "count_instructions": count_instructions,
            "outputs": str(scratch_path / "outputs.npz"),
            "result": str(scratch_path / "result.json"),
            "timed_runs": timed_runs,
        }
        (scratch_path / "request.json").write_text(json.dumps(request))
        counts = scratch_path / "instructions.json" if count_instructions else None
        command = [
            *environment.python(core, count_instructions_to=counts),
            guest.__file__,
            str(scratch_path / "request.json"),
        ]
        run_on_core(command, core, timeout_s)
        stored = np.load(scratch_path / "outputs.npz")
        outputs = [
            {name: stored[f"{i}/{name}"] for name in output_names} for i in range(len(input_sets))
        ]
        result = json.loads((scratch_path / "result.json").read_text())
        if counts is not None:
            result["instructions"] = instructions_per_run(counts)
        return outputs, result


def verify_emulated(
    artifact_dir: Path, cores: list[str], *, arch: str = "arm64", cache: Path | None = None
) -> list[CoreCheck]:
    from edgekit import exporters, models

    """`cores` empty: this host only (the export's check, run again, e.g. after a copy)."""
    manifest = read_manifest(artifact_dir)
    if not cores:
        exporters.require_host_runtime(manifest, action="verify")
    reason = unsupported_format_reason(manifest.format) if cores else None
    if reason:
        raise EmulatorError(reason, hint="verify the onnx or tflite export of the same model.")
    environment = load(arch, cache) if cores else None
    for core in cores:
        environment.python(core)  # unknown cores fail before any work
    checks = []
    for component in manifest.components:
        model = models.reload(component.source)
        seeds = component.verification.input_seeds
        inputs = [model.sample_inputs(seed) for seed in seeds]
        references = [model.run_torch(x) for x in inputs]
        try:
            host = exporters.open_runtime(artifact_dir, manifest, component, threads=1)
            host_outputs = [host(x) for x in inputs]
        except EdgekitError:
            raise
        except Exception as exc:  # a runtime that cannot load or run the file raises anything
            raise VerificationError(
                f"This host's runtime could not run {component.model_file}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                hint="the file is damaged or not what the manifest says: export it again.",
            ) from None
        classifier = "logits" if model.labels else None
        if not cores:
            host_check = compare_outputs(
                references, host_outputs, precision=manifest.precision,
                runtime=f"{host.name} {host.version} on this host", input_seeds=seeds,
                classifier_output=classifier, tolerance=component.verification.tolerance,
            )  # fmt: skip
            checks.append(CoreCheck("this host", component.name, host_check, host_check))
        for core in cores:
            outputs, result = run_in_guest(
                environment, core, artifact_dir / component.model_file, manifest, component,
                inputs, threads=1,
            )  # fmt: skip
            label = f"{result['runtime']} on emulated {core}"
            common = {"precision": manifest.precision, "runtime": label, "input_seeds": seeds}
            checks.append(
                CoreCheck(
                    core=core,
                    component=component.name,
                    vs_pytorch=compare_outputs(
                        references,
                        outputs,
                        classifier_output=classifier,
                        tolerance=component.verification.tolerance,
                        **common,
                    ),  # fmt: skip
                    vs_host=compare_outputs(
                        host_outputs,
                        outputs,
                        classifier_output=classifier,
                        tolerance=component.verification.tolerance,
                        **common,
                    ),  # fmt: skip
                )
            )
    if cores:
        _record(artifact_dir, arch, environment, checks)
    return checks


def _record(artifact_dir: Path, arch: str, environment: Environment, checks: list[CoreCheck]):
    record = {
        "created_utc": now_utc(),
        "emulator": f"qemu {environment.qemu_release} user mode, {arch}",
        "packages": environment.packages,
        "checks": [
            {
                "core": c.core,
                "component": c.component,
                "status": c.vs_pytorch.status,
                "vs_pytorch": c.vs_pytorch.model_dump(),
                "vs_host": c.vs_host.model_dump(),
            }
            for c in checks
        ],
    }
    write_text_atomic(artifact_dir / EMULATION_FILE, json.dumps(record, indent=2) + "\n")


def emulated_statuses(artifact_dir: Path) -> dict[str, str]:
    """core -> 'passed' / 'failed' (every component), from a previous `verify --emulate`."""
    path = artifact_dir / EMULATION_FILE
    if not path.is_file():
        return {}
    statuses: dict[str, str] = {}
    for check in json.loads(path.read_text())["checks"]:
        if statuses.get(check["core"]) != "failed":
            statuses[check["core"]] = check["status"]
    return statuses
