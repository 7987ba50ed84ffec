"""Measure the fidelity that verification tolerances are set from (edgekit/validate.py).

    .venv/bin/python benchmarks/measure_tolerances.py [--presets tiny-mobilevit tiny-sd ...]

fp32: exports each preset to every format with a host runtime and records what verification
measured (SQNR and centered SQNR per output, worst over the verification inputs).
fp16: runs the same PyTorch modules with fp16 weights and activations on the CPU against the fp32
reference, on the same verification inputs. That is what an fp16 artifact can at best reach (Core
ML's fp16 kernels may accumulate in fp16 where PyTorch accumulates in fp32, so a device can be a
few dB worse); Core ML prediction itself cannot run off macOS.
Results go to benchmarks/results/tolerances-<machine>.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

from edgekit import exporters, models
from edgekit.artifact import read_manifest
from edgekit.cli._common import configure_logging
from edgekit.errors import VerificationError
from edgekit.export import export_artifact, verify_seeds
from edgekit.models.base import LoadedModel
from edgekit.validate import compare_outputs

RESULTS = Path(__file__).parent / "results"


def host_formats() -> list[str]:
    return [
        f
        for f in exporters.format_names()
        if exporters.get(f).host_runtime_unavailable_reason() is None
    ]


def components(preset: str) -> dict[str, LoadedModel]:
    if models.is_stable_diffusion(preset):
        return models.load_pipeline(preset).components
    return {"model": models.load(preset)}


def fp32_rows(preset: str, format_name: str, scratch: Path) -> list[dict[str, Any]]:
    loaded = models.load_pipeline(preset) if models.is_stable_diffusion(preset) else None
    loaded = loaded or models.load(preset)
    name = f"{preset}-{format_name}"
    # A failing artifact is still published, marked failed: its numbers are the point here.
    with contextlib.suppress(VerificationError):
        export_artifact(loaded, format_name, scratch, name=name)
    manifest = read_manifest(scratch / name)
    return [
        _row(preset, component.name, format_name, "fp32", output)
        for component in manifest.components
        for output in component.verification.outputs
    ]


def fp16_rows(preset: str) -> list[dict[str, Any]]:
    import numpy as np
    import torch

    rows = []
    for name, model in components(preset).items():
        seeds = verify_seeds(model)
        inputs = [model.sample_inputs(seed) for seed in seeds]
        references = [model.run_torch(x) for x in inputs]
        model.module.to(torch.float16)
        half = [
            {
                k: v.astype(np.float16) if np.issubdtype(v.dtype, np.floating) else v
                for k, v in x.items()
            }
            for x in inputs
        ]
        actuals = [{k: v.astype(np.float32) for k, v in model.run_torch(x).items()} for x in half]
        verification = compare_outputs(
            references,
            actuals,
            precision="fp16",
            runtime="pytorch-fp16-cpu",
            input_seeds=list(seeds),
            classifier_output="logits" if model.labels else None,
        )
        rows += [_row(preset, name, "pytorch-fp16", "fp16", o) for o in verification.outputs]
    return rows


def _row(preset: str, component: str, runtime: str, precision: str, output) -> dict[str, Any]:
    return {
        "preset": preset,
        "component": component,
        "runtime": runtime,
        "precision": precision,
        "output": output.name,
        "sqnr_db": output.sqnr_db,
        "centered_sqnr_db": output.centered_sqnr_db,
        "max_abs_diff": output.max_abs_diff,
        "top1_agreement": output.top1_agreement,
    }


def markdown(rows: list[dict[str, Any]], machine: str) -> str:
    lines = [
        f"# Verification fidelity by precision ({machine})",
        "",
        "| preset | component | runtime | precision | SQNR dB | centered SQNR dB | max abs diff "
        "| top-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        top1 = "-" if r["top1_agreement"] is None else f"{r['top1_agreement']:.0%}"
        lines.append(
            f"| {r['preset']} | {r['component']} | {r['runtime']} | {r['precision']} "
            f"| {r['sqnr_db']:.1f} | {r['centered_sqnr_db']:.1f} | {r['max_abs_diff']:.2e} "
            f"| {top1} |"
        )
    for precision in sorted({r["precision"] for r in rows}):
        worst = min(r["centered_sqnr_db"] for r in rows if r["precision"] == precision)
        lines.append(f"\nWorst centered SQNR at {precision}: {worst:.1f} dB.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny-mobilevit", "tiny-sd"])
    parser.add_argument("--formats", nargs="+", default=None)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure_logging(verbose=False)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-tolerances-") as scratch:
        for preset in args.presets:
            for format_name in args.formats or host_formats():
                rows += fp32_rows(preset, format_name, Path(scratch))
            rows += fp16_rows(preset)
    machine = f"{platform.machine()}-{platform.node()}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"tolerances-{platform.machine()}"
    stem.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(rows, machine))
    print(markdown(rows, machine))


if __name__ == "__main__":
    main()
