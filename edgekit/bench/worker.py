"""Measures one variant in a process of its own: `python -m edgekit.bench.worker REQUEST RESULT`.

A process per measurement because runtimes keep thread pools spinning after a run and steal
cores from whatever runs next in the same process, and because peak RSS is per process
(on 2 cores, MobileViT-S under PyTorch read 2,300 ms interleaved run by run with ORT, ExecuTorch
and LiteRT in one process, and 290 ms on its own).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from edgekit.bench.timing import TimingSettings, time_model
from edgekit.errors import EdgekitError


def measure(request: dict[str, Any]) -> dict[str, Any]:
    from edgekit import exporters
    from edgekit.artifact import read_manifest
    from edgekit.models.base import seeded_inputs

    artifact = Path(request["artifact"])
    manifest = read_manifest(artifact)
    component = manifest.component(request["component"])
    threads = int(request["threads"])
    settings = TimingSettings(**request["timing"])
    inputs = seeded_inputs(component.inputs, request.get("seed", 0))

    if request["kind"] == "pytorch":
        import torch

        from edgekit.models import FRAMEWORK_MODULES

        _import_all(FRAMEWORK_MODULES)
        torch.set_num_threads(threads)
        holder: dict[str, Any] = {}

        def load_torch():
            model = _load_source(component)
            holder["model"] = model
            return model.run_torch

        timing = time_model(load_torch, inputs, settings)
        model = holder["model"]
        return {
            "runtime": f"pytorch {torch.__version__} eager",
            "model_size_bytes": sum(
                p.numel() * p.element_size() for p in model.module.parameters()
            ),
            **timing.__dict__,
        }

    _import_all(exporters.exporter_class(manifest.format).runtime_modules)
    runtimes: list[Any] = []

    def load_artifact():
        runtime = exporters.open_runtime(artifact, manifest, component, threads=threads)
        runtimes.append(runtime)
        return runtime

    timing = time_model(load_artifact, inputs, settings)
    return {
        "runtime": f"{runtimes[0].name} {runtimes[0].version}",
        "runtime_settings": runtimes[0].settings,
        # The model file and its side files (ONNX external data, .mlpackage contents).
        "model_size_bytes": sum(
            f.size_bytes for f in manifest.files if f.path.startswith(component.model_file)
        ),
        **timing.__dict__,
    }


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
    except EdgekitError as exc:
        result_path.write_text(json.dumps({"error": str(exc)}))
        return 2
    result_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
