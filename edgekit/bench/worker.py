"""Measures one variant in a process of its own: `python -m edgekit.bench.worker REQUEST RESULT`.

A process per measurement because runtimes keep thread pools spinning after a run and steal
cores from whatever runs next in the same process, and because peak RSS is per process
(on 2 cores, MobileViT-S under PyTorch read 2,300 ms interleaved run by run with ORT, ExecuTorch
and LiteRT in one process, and 290 ms on its own).

Request kinds: "artifact" (a component on its runtime), "pytorch" (the eager module it came
from), "flops" (FLOPs of that module only), "peak" (this host's matmul peak), "pipeline" (a
Stable Diffusion artifact end to end: cold and warm load, whole images).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from edgekit.bench.timing import TimingSettings, time_model
from edgekit.errors import EdgekitError


def measure(request: dict[str, Any]) -> dict[str, Any]:
    _pin(request.get("cpus"))
    kind = request["kind"]
    if kind == "peak":
        return _host_peak(int(request["threads"]))

    from edgekit.artifact import read_manifest

    artifact = Path(request["artifact"])
    manifest = read_manifest(artifact)
    if kind == "pipeline":
        return _pipeline(artifact, manifest, request)

    from edgekit.models.base import seeded_inputs

    component = manifest.component(request["component"])
    threads = int(request["threads"])
    inputs = seeded_inputs(component.inputs, request.get("seed", 0))
    if kind == "flops":
        return {"flops": _flops(_load_source(component), inputs)}
    settings = TimingSettings(**request["timing"])
    if kind == "pytorch":
        return _measure_pytorch(component, inputs, threads, settings)
    return _measure_artifact(artifact, manifest, component, inputs, threads, settings, request)


def _pin(cpus: list[int] | None) -> None:
    """Run on the same cores as every other variant at this thread count, so no variant gets a
    faster core or one shared with the measuring parent's bookkeeping by luck."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def _measure_pytorch(component, inputs, threads: int, settings: TimingSettings) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_model, save_model

    from edgekit.models import FRAMEWORK_MODULES

    _import_all(FRAMEWORK_MODULES)
    torch.set_num_threads(threads)
    # Rebuilding a preset and checking the source's sha256 is edgekit's bookkeeping, not loading
    # a model: do it untimed, free the weights (the module keeps its structure on the meta
    # device), then time what an app does: allocate and read the weights from a file. So load
    # time and the memory increase count the weights, as they do for every artifact.
    model = _load_source(component)
    module = model.module
    persistent = set(module.state_dict())
    # Buffers outside the state dict (e.g. CLIP's position ids) are not in the weights file.
    extra_buffers = {
        name: buffer.clone() for name, buffer in module.named_buffers() if name not in persistent
    }
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as scratch:
        weights = Path(scratch) / "weights.safetensors"
        save_model(module, str(weights))  # handles tied weights, unlike save_file
        module.to("meta")
        gc.collect()

        def load_weights():
            module.to_empty(device="cpu")
            load_model(module, str(weights))
            for name, buffer in extra_buffers.items():
                module.get_buffer(name).copy_(buffer)
            return model.run_torch

        timing = time_model(load_weights, inputs, settings)
    return {
        "runtime": {"name": "pytorch", "version": f"{torch.__version__} eager"},
        "runtime_settings": {
            "threads": threads,
            "interop_threads": torch.get_num_interop_threads(),
        },
        "model_size_bytes": sum(p.numel() * p.element_size() for p in model.module.parameters()),
        "flops": _flops(model, inputs),
        **timing.__dict__,
    }


def _measure_artifact(
    artifact, manifest, component, inputs, threads, settings, request
) -> dict[str, Any]:
    from edgekit import exporters

    _import_all(exporters.exporter_class(manifest.format).runtime_modules)
    runtimes: list[Any] = []

    def load_artifact():
        runtime = exporters.open_runtime(artifact, manifest, component, threads=threads)
        runtimes.append(runtime)
        return runtime

    timing = time_model(load_artifact, inputs, settings)
    runtime = runtimes[0]
    result = {
        "runtime": {"name": runtime.name, "version": runtime.version},
        "runtime_settings": runtime.settings,
        # The model file and its side files (ONNX external data, .mlpackage contents).
        "model_size_bytes": sum(
            f.size_bytes for f in manifest.files if f.path.startswith(component.model_file)
        ),
        **timing.__dict__,
    }
    if request.get("profile_runs"):
        from edgekit.bench.ops import profile_runtime

        # After the timed runs, so profiling never slows them.
        profile = profile_runtime(runtime, inputs, int(request["profile_runs"]))
        if isinstance(profile, str):
            result["op_profile_unavailable"] = profile
        else:
            result["op_profile"] = profile.model_dump()
    return result


def _flops(model, inputs) -> float | None:
    from edgekit.bench.compute import loaded_model_flops

    return loaded_model_flops(model, inputs)


def _host_peak(threads: int) -> dict[str, Any]:
    from edgekit.bench import compute

    peaks = {"fp32": compute.host_peak_gflops(threads, "fp32")}
    int8 = compute.host_peak_gflops(threads, "int8")
    if int8 is not None:
        peaks["int8"] = int8
    return {"peaks": peaks, "int8_unavailable": compute.int8_peak_unavailable_reason()}


def _pipeline(artifact: Path, manifest, request: dict[str, Any]) -> dict[str, Any]:
    """Open every component (cold: first time in this process; warm: again, the runtime's
    libraries and the files already in memory), then generate whole images."""
    from edgekit import exporters, generate

    threads = int(request["threads"])
    steps = int(request["steps"])
    generate.check_artifact(artifact, steps=steps)
    _import_all(exporters.exporter_class(manifest.format).runtime_modules)

    def open_all():
        return generate.open_components(artifact, manifest, threads)

    started = time.perf_counter()
    components = open_all()
    cold_s = time.perf_counter() - started
    del components
    started = time.perf_counter()
    components = open_all()
    warm_s = time.perf_counter() - started
    images_s = []
    for seed in range(int(request.get("images", 1))):
        started = time.perf_counter()
        generate.run_pipeline(
            components, artifact, manifest, "a photo of a cat", "", steps, 7.5, seed
        )
        images_s.append(time.perf_counter() - started)
    return {"cold_load_s": cold_s, "warm_load_s": warm_s, "image_s": images_s}


def _import_all(modules) -> None:
    import importlib

    for name in modules:
        importlib.import_module(name)


def _load_source(component):
    """Rebuild the PyTorch model the component came from, and check it is the same one."""
    from edgekit import models

    return models.reload(component.source)


def main(argv: list[str]) -> int:
    request_path, result_path = Path(argv[0]), Path(argv[1])
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    try:
        result = measure(json.loads(request_path.read_text()))
        if hasattr(os, "sched_getaffinity"):
            result["cpus"] = sorted(os.sched_getaffinity(0))  # the pinning, as applied
    except EdgekitError as exc:
        result_path.write_text(json.dumps({"error": str(exc)}))
        return 2
    result_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
