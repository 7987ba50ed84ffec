"""Classifier-free guidance: one UNet call of batch 2 vs two calls of batch 1, per runtime.

    .venv/bin/python benchmarks/bench_guidance_batch.py [--size 256] [--runs 15]

Each guided denoising step needs the UNet's unconditional and conditional predictions. A UNet
exported with batch 1 is called twice per step; one exported with `--unet-batch 2` (as apple's
ml-stable-diffusion exports it) once. This exports the tiny-sd UNet both ways to each host
runtime (ONNX Runtime, ExecuTorch XNNPACK, LiteRT), then times one step's worth of UNet work
both ways, interleaved round by round in one process per runtime so both variants see the same
machine state: the median of `--runs` rounds after two untimed ones, and the ratio
batched / two calls (below 1: batching is faster).

tiny-sd is a small UNet (random weights): its ratios show what batching saves in per-call
overhead and kernel efficiency at that size, not what the 860M SD 1.5 UNet gains on a phone.
`--size` sets the image side in pixels (latent = size / 8). Results go to
benchmarks/results/guidance-batch-tiny-sd-<size>-<machine>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
FORMATS = ("onnx", "executorch", "tflite")
WARMUP_ROUNDS = 2


def _runtime(folder: Path):
    from edgekit import exporters
    from edgekit.artifact import read_manifest

    manifest = read_manifest(folder)
    component = manifest.component("unet")
    return exporters.open_runtime(folder, manifest, component, threads=2), component


def _measure(format_name: str, size: int, runs: int, work: Path) -> dict:
    from edgekit import models
    from edgekit.export import export_artifact
    from edgekit.models.base import seeded_inputs

    folders = {}
    for batch in (1, 2):
        pipeline = models.load_pipeline(
            "tiny-sd", components=["unet"], height=size, width=size, unet_batch=batch
        )
        folders[batch], _ = export_artifact(pipeline, format_name, work, name=f"b{batch}")
    runtimes = {batch: _runtime(folder) for batch, folder in folders.items()}
    inputs = {batch: seeded_inputs(spec.inputs, 0) for batch, (_, spec) in runtimes.items()}
    single, batched = runtimes[1][0], runtimes[2][0]
    two_calls, one_call = [], []
    for round_index in range(WARMUP_ROUNDS + runs):
        started = time.perf_counter()
        single(inputs[1])
        single(inputs[1])
        middle = time.perf_counter()
        batched(inputs[2])
        ended = time.perf_counter()
        if round_index >= WARMUP_ROUNDS:
            two_calls.append((middle - started) * 1000)
            one_call.append((ended - middle) * 1000)
    two_ms, one_ms = statistics.median(two_calls), statistics.median(one_call)
    return {
        "format": format_name,
        "runtime": f"{single.name} {single.version}",
        "two_calls_batch1_ms": _timing(two_ms, two_calls),
        "one_call_batch2_ms": _timing(one_ms, one_call),
        "batched_over_two_calls": round(one_ms / two_ms, 3),
    }


def _timing(median: float, samples: list[float]) -> dict:
    return {"median": round(median, 3), "samples": [round(x, 3) for x in samples]}


def main() -> None:
    from edgekit.bench.runner import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="Image side in pixels.")
    parser.add_argument("--runs", type=int, default=15, help="Timed rounds per runtime.")
    args = parser.parse_args()
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edgekit-guidance-") as work:
        for format_name in FORMATS:
            rows.append(_measure(format_name, args.size, args.runs, Path(work) / format_name))
            print(f"{format_name}: batched / two calls = {rows[-1]['batched_over_two_calls']}")
    machine = f"{platform.machine()}-{os.cpu_count()}core"
    record = {
        "benchmark": "guidance batch: one UNet call of batch 2 vs two of batch 1",
        "model": "tiny-sd UNet (random weights)",
        "image_size": args.size,
        "threads": 2,
        "machine": machine_info().model_dump(),
        "method": f"interleaved rounds in one process per runtime, {WARMUP_ROUNDS} untimed, "
        f"median of {args.runs}",
        # Other work on the machine inflates both variants; the ratio is what to read.
        "load_average_1min": {"before": round(load_before[0], 2), "after": os.getloadavg()[0]},
        "results": rows,
    }
    stem = RESULTS / f"guidance-batch-tiny-sd-{args.size}-{machine}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# Guidance batch on tiny-sd's UNet, {args.size}x{args.size}, {machine}",
        "",
        f"{record['method']}; 2 threads. Ratio below 1: one batch-2 call is faster than two "
        "batch-1 calls. 1-minute load average before/after: "
        f"{record['load_average_1min']['before']} / {record['load_average_1min']['after']:.2f}.",
        "",
        "| runtime | two calls, batch 1 (ms) | one call, batch 2 (ms) | batched / two calls |",
        "|---|---|---|---|",
        *(
            f"| {r['runtime']} | {r['two_calls_batch1_ms']['median']:.2f} | "
            f"{r['one_call_batch2_ms']['median']:.2f} | {r['batched_over_two_calls']:.2f} |"
            for r in rows
        ),
        "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
