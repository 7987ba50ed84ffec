"""Peers: edgekit's artifacts against the paths a user would otherwise pick, one run, as ratios.

    nice -n 5 .venv/bin/python benchmarks/bench_peers.py [--preset mobilevit-small] [--rounds 3]

For each host format, edgekit's fp32 artifact (`edgekit export PRESET --target FORMAT`) against
the same model written with the tool's own documented defaults, as a user would without edgekit:

- ONNX: `torch.onnx.export(model, args, f)` (torch 2.13: dynamo exporter, its default opset,
  weights in an external `.data` file), run by `onnxruntime.InferenceSession(f)`;
- TFLite: `litert_torch.convert(model, args).export(f)`, run by `ai_edge_litert`'s
  `Interpreter(model_path=f)` through its signature runner;
- ExecuTorch: `to_edge_transform_and_lower(torch.export.export(model, args),
  partitioner=[XnnpackPartitioner()]).to_executorch()`, run by `executorch.runtime`;

and PyTorch eager as the baseline. Every variant runs in a process of its own (runtimes keep
thread pools spinning after a run), pinned to the same cores, round-robin over `--rounds`
interleaved rounds so a shared machine's drifts hit all alike; ratios are medians of per-round
ratios. Each peer runs twice: at `--threads` (only the thread count changed from its defaults),
and at its runtime's own default thread count. Two cross rows per format (edgekit's file on the
peer's runtime set-up, the peer's file on edgekit's) say whether a difference comes from the
file or from how the runtime is set up. SQNR: each variant's output against PyTorch fp32 on the
same seeded input. Results go to OUT/peers-<preset>-<machine>.json and .md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
FORMATS = ("onnx", "executorch", "tflite")
PEER_FILES = {"onnx": "peer.onnx", "executorch": "peer.pte", "tflite": "peer.tflite"}
# What each peer path is, in the words of the tool's own docs.
PEER_PATHS = {
    "onnx": "torch.onnx.export(model, args, f) + ort.InferenceSession(f)",
    "executorch": "to_edge_transform_and_lower(torch.export.export(model, args), "
    "[XnnpackPartitioner()]).to_executorch() + executorch.runtime",
    "tflite": "litert_torch.convert(model, args).export(f) + ai_edge_litert Interpreter(f) "
    "signature runner",
}
# A row whose per-round ratios all lie on one side of 1 and whose median is this far from 1 is
# a difference; inside it, two variants are the same speed on this machine.
RATIO_NOISE = 0.05
# Generous: a worker imports torch and a runtime, loads, warms up and runs --runs times.
WORKER_TIMEOUT_S = 900
EXPORT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Variant:
    """One thing to time: a model file on a runtime set up one way, at a thread count."""

    format: str  # "pytorch", "onnx", "executorch", "tflite"
    file: str  # "edgekit", "peer", or "pytorch"
    setup: str  # "edgekit": edgekit's Runtime with the profile's settings; "default": the tool's
    threads: int | None  # None: the runtime's own default

    @property
    def key(self) -> str:
        return f"{self.format}/{self.file}-file/{self.setup}-setup@{self.threads or 'default'}"

    @property
    def label(self) -> str:
        if self.format == "pytorch":
            return "PyTorch eager"
        return {
            ("edgekit", "edgekit"): "edgekit",
            ("peer", "default"): "peer (tool defaults)",
            ("edgekit", "default"): "cross: edgekit file, peer's runtime set-up",
            ("peer", "edgekit"): "cross: peer file, edgekit's runtime set-up",
        }[(self.file, self.setup)]


# --- worker: runs in a process of its own ------------------------------------------------------


def worker(request_path: Path, result_path: Path) -> int:
    """Carry out one request (`export`, `measure` or `peak`) and write its JSON result."""
    import logging
    import warnings

    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    request = json.loads(request_path.read_text())
    if hasattr(os, "sched_setaffinity") and request.get("cpus"):
        os.sched_setaffinity(0, request["cpus"])
    try:
        task = {"export": _export_peer, "measure": _measure, "peak": _peak}[request["task"]]
        result = task(request)
    except Exception as exc:  # a peer tool failing is a result to record, not a crash
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        result_path.write_text(json.dumps({"error": f"{type(exc).__name__}: {message}"}))
        return 2
    result_path.write_text(json.dumps(result))
    return 0


def _export_peer(request: dict[str, Any]) -> dict[str, Any]:
    """Write the peer's file for one format exactly as that tool's docs show."""
    import torch

    from edgekit import models

    model = models.load(request["preset"])
    args = tuple(torch.from_numpy(array) for array in model.sample_inputs().values())
    module, path = model.module, request["path"]
    details: dict[str, Any] = {}
    started = time.perf_counter()
    if request["format"] == "onnx":
        torch.onnx.export(module, args, path)
        export_s = time.perf_counter() - started
        import onnx

        proto = onnx.load(path, load_external_data=False)
        details["opset"] = next(
            o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")
        )
        details["nodes"] = len(proto.graph.node)
    elif request["format"] == "tflite":
        import litert_torch

        litert_torch.convert(module, args).export(path)
        export_s = time.perf_counter() - started
    else:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        program = to_edge_transform_and_lower(
            torch.export.export(module, args), partitioner=[XnnpackPartitioner()]
        ).to_executorch()
        Path(path).write_bytes(program.buffer)
        export_s = time.perf_counter() - started
    return {"export_s": export_s, "details": details}


def _measure(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from edgekit.bench.timing import TimingSettings, time_model
    from edgekit.models.base import TensorSpec, seeded_inputs

    specs = [TensorSpec(**spec) for spec in request["inputs"]]
    inputs = seeded_inputs(specs, request["seed"])
    holder: dict[str, Any] = {}

    def load():
        run, holder["runtime"], holder["settings"] = _open(request, specs)
        holder["run"] = run
        return run

    threads_before = _os_threads()
    timing = time_model(load, inputs, TimingSettings(**request["timing"]))
    threads_after = _os_threads()
    if request.get("output_path"):
        np.save(request["output_path"], _first_output(holder["run"](inputs)))
    return {
        "runtime": holder["runtime"],
        "settings": holder["settings"],
        # Threads the process gained while loading and running: the pool the runtime really
        # used, which is the only way to see a "default" thread count.
        "os_threads_added": None if threads_before is None else threads_after - threads_before,
        "load_ms": timing.load_ms,
        "first_inference_ms": timing.first_inference_ms,
        "samples_ms": timing.samples_ms,
        "peak_rss_bytes": timing.peak_rss_bytes,
    }


def _open(request: dict[str, Any], specs: list) -> tuple[Any, str, dict[str, Any]]:
    """(callable on the input dict, runtime name and version, settings used) for a variant."""
    fmt, threads, path = request["format"], request["threads"], request["path"]
    names = [spec.name for spec in specs]
    if fmt == "pytorch":
        import torch

        from edgekit import models

        if threads:
            torch.set_num_threads(threads)
        model = models.load(request["preset"])
        return (
            model.run_torch,
            f"pytorch {torch.__version__} eager",
            {"threads": torch.get_num_threads()},
        )
    if request["setup"] == "edgekit":
        # edgekit's own Runtime with the artifact's profile settings, on either file.
        from edgekit import exporters
        from edgekit.artifact import read_manifest

        manifest = read_manifest(Path(request["artifact"]))
        component = manifest.component()
        profile = manifest.profile or {}
        runtime = exporters.get(fmt, **(profile.get("export") or {})).runtime(
            Path(path),
            component.inputs,
            component.outputs,
            settings=exporters.profile_runtime_settings(profile, threads=threads),
        )
        return runtime, f"{runtime.name} {runtime.version}", dict(runtime.settings)
    return _open_with_defaults(fmt, path, threads, names)


def _open_with_defaults(fmt: str, path: str, threads: int | None, names: list[str]):
    """The runtime as its docs show it, with at most the thread count changed."""
    import importlib.metadata

    if fmt == "onnx":
        import onnxruntime as ort

        if threads:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(path, options)
        else:
            session = ort.InferenceSession(path)
        feeds = [i.name for i in session.get_inputs()]

        def run_onnx(inputs):
            return session.run(
                None, {feed: inputs[n] for feed, n in zip(feeds, names, strict=True)}
            )

        settings = {"intra_op_num_threads": threads or "default", "other options": "defaults"}
        return run_onnx, f"onnxruntime {ort.__version__}", settings
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = (
            Interpreter(model_path=path, num_threads=threads)
            if threads
            else Interpreter(model_path=path)
        )
        runner = interpreter.get_signature_runner()
        feeds = list(runner.get_input_details())

        def run_tflite(inputs):
            return runner(**{feed: inputs[n] for feed, n in zip(feeds, names, strict=True)})

        version = importlib.metadata.version("ai-edge-litert")
        settings = {"num_threads": threads or "default", "call": "signature runner"}
        return run_tflite, f"ai-edge-litert {version}", settings
    import torch
    from executorch.runtime import Runtime

    if threads:
        # ExecuTorch's Python runtime has no public thread setting; this is the call its
        # pybindings expose for it (edgekit's runtime uses the same one).
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)
    method = Runtime.get().load_program(path).load_method("forward")

    def run_executorch(inputs):
        return method.execute([torch.from_numpy(inputs[n]) for n in names])

    version = importlib.metadata.version("executorch")
    return run_executorch, f"executorch {version}", {"threadpool": threads or "default"}


def _first_output(outputs: Any) -> Any:
    import numpy as np

    first = next(iter(outputs.values())) if isinstance(outputs, dict) else outputs[0]
    return np.asarray(first.numpy() if hasattr(first, "numpy") else first)


def _os_threads() -> int | None:
    tasks = Path("/proc/self/task")
    return len(list(tasks.iterdir())) if tasks.is_dir() else None


def _peak(request: dict[str, Any]) -> dict[str, Any]:
    from edgekit.bench.compute import host_peak_gflops

    return {"fp32_gflops": host_peak_gflops(request["threads"], "fp32")}


# --- parent: export, schedule rounds, aggregate ------------------------------------------------


def _call_worker(request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one request in a fresh process; failures come back as {'error': ...}."""
    with tempfile.TemporaryDirectory(prefix="edgekit-peers-") as scratch:
        request_path, result_path = Path(scratch) / "request.json", Path(scratch) / "result.json"
        request_path.write_text(json.dumps(request))
        env = dict(os.environ)
        threads = request.get("threads")
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        else:
            env.pop("OMP_NUM_THREADS", None)  # a runtime default must be the runtime's own
        try:
            completed = subprocess.run(
                [sys.executable, __file__, "--worker", str(request_path), str(result_path)],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s:.0f} s", "status": "timed-out"}
        if result_path.is_file():
            return json.loads(result_path.read_text())
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"crashed (exit {completed.returncode}): {tail}", "status": "crashed"}


def _file_bytes(path: Path) -> int:
    """A model file plus its side files (ONNX external data: `model.onnx.data`)."""
    return sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*") if p.is_file())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _torch_default_threads() -> int:
    """torch's own thread count (its default: the physical cores), before anything sets it."""
    import torch

    return torch.get_num_threads()


def _variants(
    formats: list[str], threads: int, identical: set[str], torch_default_threads: int
) -> list[Variant]:
    rows = [Variant("pytorch", "pytorch", "default", threads)]
    if threads != torch_default_threads:  # else the PyTorch row at N is its default row too
        rows.append(Variant("pytorch", "pytorch", "default", None))
    for fmt in formats:
        rows += [
            Variant(fmt, "edgekit", "edgekit", threads),
            Variant(fmt, "peer", "default", threads),
            Variant(fmt, "peer", "default", None),
        ]
        if fmt not in identical:  # byte-identical files: the cross rows would repeat these
            rows += [
                Variant(fmt, "edgekit", "default", threads),
                Variant(fmt, "peer", "edgekit", threads),
            ]
    return rows


def _round_ratios(numerator: list[list[float]], denominator: list[list[float]]) -> list[float]:
    """numerator median / denominator median, round by round (rounds both completed)."""
    return [
        statistics.median(a) / statistics.median(b)
        for a, b in zip(numerator, denominator, strict=False)
        if a and b
    ]


def _ratio_summary(ratios: list[float], *, reliable: bool) -> dict[str, Any] | None:
    """Median of per-round ratios and what it says; `reliable`: both rows' spreads allow it."""
    if not ratios:
        return None
    median = statistics.median(ratios)
    if all(r > 1 for r in ratios) and median > 1 + RATIO_NOISE:
        verdict = "faster"
    elif all(r < 1 for r in ratios) and median < 1 - RATIO_NOISE:
        verdict = "slower"
    else:
        verdict = "same"
    return {"median": median, "rounds": ratios, "verdict": verdict, "reliable": reliable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobilevit-small")
    parser.add_argument("--rounds", type=_positive, default=3)
    parser.add_argument("--runs", type=_positive, default=40)
    parser.add_argument("--warmup", type=_positive_or_zero, default=3)
    parser.add_argument("--threads", type=_positive, default=2)
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.exit(worker(*args.worker))
    formats = [f for f in args.formats.split(",") if f]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        parser.error(f"unknown format(s) {', '.join(unknown)}; known: {', '.join(FORMATS)}")

    from edgekit.errors import EdgekitError

    try:
        record = run(args, formats)
    except EdgekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    machine = re.sub(
        r"[^a-z0-9]+", "-", f"{platform.machine()}-{record['machine']['cpu_count']}core".lower()
    )
    stem = args.out / f"peers-{args.preset}-{machine}"
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(record))
    print(markdown(record))
    print(f"written: {stem}.json, {stem}.md")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _positive_or_zero(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def run(args: argparse.Namespace, formats: list[str]) -> dict[str, Any]:
    """Export, measure every variant over the rounds, and return the record."""
    from edgekit import __version__, models
    from edgekit.artifact import now_utc
    from edgekit.bench.compute import loaded_model_flops
    from edgekit.bench.runner import cores_for, machine_info
    from edgekit.cli._common import configure_logging

    configure_logging(verbose=False)
    machine = machine_info().model_dump()
    seed = 0

    # 1. The PyTorch reference: its output on the seeded input, and its FLOPs.
    loaded = models.load(args.preset)
    inputs = loaded.sample_inputs(seed)
    reference = next(iter(loaded.run_torch(inputs).values()))
    flops = loaded_model_flops(loaded, inputs)
    fp32_weight_bytes = loaded.parameter_count * 4
    torch_default_threads = _torch_default_threads()
    request_base = {
        "task": "measure",
        "preset": args.preset,
        "inputs": [spec.model_dump() for spec in loaded.inputs],
        "seed": seed,
        "timing": {"warmup_runs": args.warmup, "min_runs": args.runs, "min_time_s": 0.0},
    }

    with tempfile.TemporaryDirectory(prefix="edgekit-peers-") as scratch_name:
        scratch = Path(scratch_name)
        # 2. edgekit's artifacts, as `edgekit export PRESET --target FORMAT` writes them.
        exports = _export_edgekit(loaded, formats, scratch / "edgekit")
        del loaded
        # 3. The peers' files, each tool in a process of its own (litert-torch alone: ~1 GB).
        identical = _export_peers(args.preset, formats, scratch / "peers", exports)
        # 4. Interleaved rounds: every variant once per round, each in a fresh process.
        variants = [
            v
            for v in _variants(formats, args.threads, identical, torch_default_threads)
            if "error" not in exports.get(v.format, {}).get(v.file, {})
        ]
        measured, peaks = _measure_rounds(variants, exports, request_base, args, scratch, reference)

    # 5. Aggregate: per-variant statistics, then the ratios that answer the question.
    peak_gflops = statistics.median(peaks) if peaks else None
    rows = []
    for entry in measured.values():
        v = entry["variant"]
        size = (
            fp32_weight_bytes if v.format == "pytorch" else exports[v.format][v.file]["size_bytes"]
        )
        peak = peak_gflops if v.threads == args.threads else None  # the peak is at --threads
        rows.append(_row(entry, size_bytes=size, flops=flops, peak_gflops=peak))
    comparisons = _compare(rows, formats, args.threads, torch_default_threads, identical)
    return {
        "preset": args.preset,
        "created_utc": now_utc(),
        "edgekit_version": __version__,
        "machine": machine,
        "settings": {
            "threads": args.threads,
            "rounds": args.rounds,
            "cores_pinned": {
                str(args.threads): cores_for(args.threads),
                "default threads": cores_for(os.cpu_count() or 1),
            },
            "seed": seed,
            **request_base["timing"],
        },
        "flops": flops,
        "host_fp32_peak_gflops": peak_gflops,
        "host_fp32_peak_rounds": peaks,
        "exports": exports,
        "rows": rows,
        "comparisons": comparisons,
    }


def _export_edgekit(loaded: Any, formats: list[str], folder: Path) -> dict[str, dict[str, Any]]:
    from edgekit import profiles
    from edgekit.export import export_for_target

    exports: dict[str, dict[str, Any]] = {}
    for fmt in formats:
        artifact, manifest = export_for_target(loaded, profiles.resolve(fmt), folder)
        component = manifest.component()
        model_file = artifact / component.model_file
        exports[fmt] = {
            "edgekit": {
                "artifact": str(artifact),
                "path": str(model_file),
                "export_s": component.export.duration_s,
                "size_bytes": _file_bytes(model_file),
                "sha256": _sha256(model_file),
                "details": component.export.details,
            }
        }
        print(f"edgekit {fmt}: exported in {component.export.duration_s:.1f} s", flush=True)
    return exports


def _export_peers(
    preset: str, formats: list[str], folder: Path, exports: dict[str, dict[str, Any]]
) -> set[str]:
    """Write each peer's file into `exports`; returns the formats whose peer file is
    byte-identical to edgekit's."""
    identical: set[str] = set()
    for fmt in formats:
        path = folder / fmt / PEER_FILES[fmt]
        path.parent.mkdir(parents=True)
        request = {"task": "export", "format": fmt, "preset": preset, "path": str(path)}
        result = _call_worker(request, EXPORT_TIMEOUT_S)
        if "error" in result:
            exports[fmt]["peer"] = {"error": result["error"]}
            print(f"peer {fmt}: export failed: {result['error']}", flush=True)
            continue
        exports[fmt]["peer"] = {
            "path": str(path),
            "how": PEER_PATHS[fmt],
            "export_s": result["export_s"],
            "size_bytes": _file_bytes(path),
            "sha256": _sha256(path),
            "details": result["details"],
        }
        if exports[fmt]["peer"]["sha256"] == exports[fmt]["edgekit"]["sha256"]:
            identical.add(fmt)
        print(f"peer {fmt}: exported in {result['export_s']:.1f} s", flush=True)
    return identical


def _measure_rounds(
    variants: list[Variant],
    exports: dict[str, dict[str, Any]],
    request_base: dict[str, Any],
    args: argparse.Namespace,
    scratch: Path,
    reference: Any,
) -> tuple[dict[str, dict[str, Any]], list[float]]:
    """Every variant once per round (a host peak first), each in a fresh process. Round 1 also
    saves each variant's output, for its SQNR against `reference`."""
    import numpy as np

    from edgekit.bench.runner import cores_for
    from edgekit.validate import sqnr_db

    measured = {v.key: {"variant": v, "rounds": [], "results": [], "errors": []} for v in variants}
    peaks: list[float] = []
    for round_index in range(args.rounds):
        peak_request = {"task": "peak", "threads": args.threads, "cpus": cores_for(args.threads)}
        peaks += [p for p in [_call_worker(peak_request, 120).get("fp32_gflops")] if p]
        for index, v in enumerate(variants):
            entry = measured[v.key]
            if entry["errors"]:
                continue  # a variant that failed once is reported, not retried
            output_path = scratch / f"output-{index}.npy" if round_index == 0 else None
            files = exports.get(v.format, {})
            request = {
                **request_base,
                "format": v.format,
                "setup": v.setup,
                "threads": v.threads,
                "path": files[v.file]["path"] if v.file in files else None,
                "artifact": files["edgekit"]["artifact"] if files else None,
                # Pinned rows on the cores edgekit's bench pins that thread count to; a
                # runtime left at its default threads may use every core.
                "cpus": cores_for(v.threads or os.cpu_count() or 1),
                "output_path": str(output_path) if output_path else None,
            }
            result = _call_worker(request, WORKER_TIMEOUT_S)
            if "error" in result:
                entry["errors"].append(result)
                print(f"round {round_index + 1}: {v.key}: {result['error']}", flush=True)
                continue
            if output_path:
                result["sqnr_db"] = sqnr_db(reference, np.load(output_path))
            entry["rounds"].append(result["samples_ms"])
            entry["results"].append(result)
            median_ms = statistics.median(result["samples_ms"])
            print(f"round {round_index + 1}: {v.key}: {median_ms:.2f} ms", flush=True)
    return measured, peaks


def _row(
    entry: dict[str, Any], *, size_bytes: int, flops: float, peak_gflops: float | None
) -> dict[str, Any]:
    """One variant's statistics over every round, or its failure."""
    from edgekit.bench.timing import reliability, summarize

    v: Variant = entry["variant"]
    row: dict[str, Any] = {"key": v.key, "label": v.label, **asdict(v), "size_bytes": size_bytes}
    if entry["errors"]:
        failure = entry["errors"][0]
        return {**row, "status": failure.get("status", "error"), "error": failure["error"]}
    results = entry["results"]
    samples = [s for r in entry["rounds"] for s in r]
    stats = summarize(samples)
    round_medians = [statistics.median(r) for r in entry["rounds"]]
    verdict = reliability(stats, round_medians, samples)
    gflops_per_s = flops / stats.median_ms / 1e6
    return {
        **row,
        "status": "ok",
        "runtime": results[0]["runtime"],
        "settings": results[0]["settings"],
        "os_threads_added": results[0]["os_threads_added"],
        "sqnr_db": results[0].get("sqnr_db"),
        "load_ms": statistics.median(r["load_ms"] for r in results),
        "first_inference_ms": statistics.median(r["first_inference_ms"] for r in results),
        "latency": stats.model_dump(),
        "round_medians_ms": round_medians,
        # Ratios per round need every row's rounds, not only its pooled statistics.
        "round_samples_ms": entry["rounds"],
        "reliable": verdict.reliable,
        "unreliable_because": verdict.reasons,
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in results),
        "gflops_per_s": gflops_per_s,
        "fp32_peak_fraction": gflops_per_s / peak_gflops if peak_gflops else None,
    }


def _compare(
    rows: list[dict[str, Any]],
    formats: list[str],
    threads: int,
    torch_default_threads: int,
    identical: set[str],
) -> dict[str, dict[str, Any]]:
    """Speed-ups vs PyTorch (written into the rows) and, per format, edgekit vs the peer."""
    by_key = {row["key"]: row for row in rows}

    def ratio(subject: Variant, other: Variant) -> dict[str, Any] | None:
        """other's time / subject's time per round: above 1, `subject` is faster."""
        a, b = by_key.get(subject.key), by_key.get(other.key)
        if not a or not b or a["status"] != "ok" or b["status"] != "ok":
            return None
        ratios = _round_ratios(b["round_samples_ms"], a["round_samples_ms"])
        return _ratio_summary(ratios, reliable=a["reliable"] and b["reliable"])

    pytorch_at = {threads: Variant("pytorch", "pytorch", "default", threads)}
    pytorch_at[None] = (
        Variant("pytorch", "pytorch", "default", None)
        if threads != torch_default_threads
        else pytorch_at[threads]
    )
    for row in rows:
        if row["format"] != "pytorch":
            subject = Variant(row["format"], row["file"], row["setup"], row["threads"])
            row["speedup_vs_pytorch"] = ratio(subject, pytorch_at[row["threads"]])
    comparisons = {}
    for fmt in formats:
        edgekit = Variant(fmt, "edgekit", "edgekit", threads)
        comparisons[fmt] = {
            # >1: edgekit is faster than the peer.
            "edgekit_vs_peer_same_threads": ratio(
                edgekit, Variant(fmt, "peer", "default", threads)
            ),
            "edgekit_vs_peer_default_threads": ratio(
                edgekit, Variant(fmt, "peer", "default", None)
            ),
            # Same file, runtime set up the peer's way vs edgekit's: >1, edgekit's set-up wins.
            "setup_effect_edgekit_file": ratio(
                edgekit, Variant(fmt, "edgekit", "default", threads)
            ),
            # Same set-up (edgekit's), edgekit's file vs the peer's: >1, edgekit's file wins.
            "file_effect_edgekit_setup": ratio(edgekit, Variant(fmt, "peer", "edgekit", threads)),
            "files_identical": fmt in identical,
        }
    return comparisons


# --- report -------------------------------------------------------------------------------------


def _mib(size: int | None) -> str:
    return f"{size / 2**20:.1f} MiB" if size else "-"


def _ms(value: float | None) -> str:
    return f"{value:.2f} ms" if value is not None else "-"


def _x(summary: dict[str, Any] | None) -> str:
    """A ratio with its rounds; from an unreliable row, the rounds only, no bare ratio."""
    if not summary:
        return "-"
    rounds = ", ".join(f"{r:.2f}" for r in summary["rounds"])
    if not summary["reliable"]:
        return f"unreliable (rounds {rounds})"
    return f"{summary['median']:.2f}x ({summary['verdict']}; rounds {rounds})"


def findings(record: dict[str, Any]) -> list[str]:
    """Where edgekit is slower than a peer on the same runtime, what the cross rows point at."""
    lines = []
    for fmt, comparison in record["comparisons"].items():
        same = comparison["edgekit_vs_peer_same_threads"]
        if not same:
            peer = record["exports"][fmt].get("peer", {})
            lines.append(f"{fmt}: no comparison ({peer.get('error', 'a variant failed')}).")
            continue
        if not same["reliable"]:
            lines.append(f"{fmt}: no verdict: the machine was too busy for a row (see the table).")
            continue
        if same["verdict"] != "slower":
            outcome = {"faster": "edgekit is faster than", "same": "edgekit is as fast as"}
            lines.append(
                f"{fmt}: {outcome[same['verdict']]} the peer at the same threads "
                f"({same['median']:.2f}x)."
            )
            continue
        setup, file = (
            comparison["setup_effect_edgekit_file"],
            comparison["file_effect_edgekit_setup"],
        )
        causes = []
        if setup and setup["verdict"] == "slower":
            causes.append(
                f"the runtime set-up (edgekit's file runs {1 / setup['median']:.2f}x faster "
                "set up the peer's way)"
            )
        if file and file["verdict"] == "slower":
            causes.append(
                f"the file (the peer's file runs {1 / file['median']:.2f}x faster on edgekit's "
                "set-up)"
            )
        cause = " and ".join(causes) or "not isolated by the cross rows"
        lines.append(
            f"{fmt}: edgekit is SLOWER than the peer at the same threads "
            f"({same['median']:.2f}x); cause: {cause}."
        )
    return lines


def markdown(record: dict[str, Any]) -> str:
    settings, machine = record["settings"], record["machine"]
    threads = settings["threads"]
    lines = [
        f"# {record['preset']}: edgekit vs the paths a user would otherwise pick",
        "",
        f"{machine['processor']}, {machine['cpu_count']} cores "
        f"({', '.join(machine['cpu_flags']) or 'flags unknown'}), load average "
        f"{machine['load_average']:.2f} at start; every variant in its own process pinned to "
        f"cores {settings['cores_pinned']}; {settings['warmup_runs']} warm-up runs, >= "
        f"{settings['min_runs']} timed runs x {settings['rounds']} interleaved rounds; batch 1. "
        "Weights are the preset's seeded RANDOM ones: latency and SQNR are real, predictions "
        "are not.",
        "",
        f"Model: {record['flops'] / 1e9:.3f} GFLOP per call (torch.utils.flop_counter: "
        "convolutions and matmuls, 2 per multiply-add). Host fp32 matmul peak at "
        f"{threads} threads: "
        + (
            f"{record['host_fp32_peak_gflops']:.1f} GFLOP/s (median of "
            f"{len(record['host_fp32_peak_rounds'])} rounds)."
            if record["host_fp32_peak_gflops"]
            else "not measured."
        ),
        "",
        "## Exports",
        "",
        "| format | file | how | size | export | sha256 |",
        "|---|---|---|---|---|---|",
    ]
    for fmt, files in record["exports"].items():
        lines.append(
            f"| {fmt} | edgekit | `edgekit export {record['preset']} --target {fmt}` | "
            f"{_mib(files['edgekit']['size_bytes'])} | {files['edgekit']['export_s']:.1f} s "
            f"(with verification) | {files['edgekit']['sha256'][:12]} |"
        )
        peer = files.get("peer", {})
        if "error" in peer:
            lines.append(f"| {fmt} | peer | {PEER_PATHS[fmt]} | - | FAILED: {peer['error']} | - |")
        else:
            lines.append(
                f"| {fmt} | peer | {peer['how']} | {_mib(peer['size_bytes'])} | "
                f"{peer['export_s']:.1f} s | {peer['sha256'][:12]} |"
            )
    lines += [
        "",
        "## Latency",
        "",
        "vs PyTorch: PyTorch eager median / variant median at the same thread setting (median "
        "of per-round ratios); above 1x is faster. SQNR: output vs PyTorch fp32 on the same "
        "seeded input. Threads added: OS threads the process gained while loading and running "
        "(how a runtime's default thread count shows). Load: opening the file, first call "
        "excluded.",
        "",
        "| format | variant | threads | runtime, settings | size | SQNR | load | p50 | p90 | "
        "threads added | GFLOP/s | % fp32 peak | vs PyTorch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        head = f"| {row['format']} | {row['label']} | {row['threads'] or 'default'} |"
        if row["status"] != "ok":
            lines.append(f"{head} {row['status']}: {row['error']} |" + " |" * 9)
            continue
        latency = row["latency"]
        noisy = "" if row["reliable"] else f" (UNRELIABLE: {'; '.join(row['unreliable_because'])})"
        fraction = row["fp32_peak_fraction"]
        settings_text = ", ".join(f"{k}={v}" for k, v in row["settings"].items())
        # PyTorch's "load" rebuilds the preset (seeded init, BatchNorm calibration): not a load.
        load = "-" if row["format"] == "pytorch" else f"{row['load_ms']:.0f} ms"
        lines.append(
            f"{head} {row['runtime']}; {settings_text} | {_mib(row.get('size_bytes'))} | "
            f"{row['sqnr_db']:.1f} dB | {load} | "
            f"{latency['median_ms']:.2f} ms{noisy} | {_ms(latency['p90_ms'])} | "
            f"{row['os_threads_added']} | {row['gflops_per_s']:.1f} | "
            f"{f'{fraction:.0%}' if fraction is not None else '-'} | "
            f"{_x(row.get('speedup_vs_pytorch'))} |"
        )
    lines += [
        "",
        "## edgekit vs peer, same runtime",
        "",
        "Ratios are peer median / edgekit median per round (above 1x: edgekit is faster). "
        f"'same' means the rounds disagree or the median is within {RATIO_NOISE:.0%} of 1x. "
        "Set-up effect: edgekit's file set up edgekit's way vs the peer's way. File effect: "
        "edgekit's file vs the peer's file, both on edgekit's set-up.",
        "",
        f"| format | same threads ({threads}) | peer at its default threads | set-up effect | "
        "file effect |",
        "|---|---|---|---|---|",
    ]
    for fmt, c in record["comparisons"].items():
        identical = "files byte-identical" if c["files_identical"] else None
        lines.append(
            f"| {fmt} | {_x(c['edgekit_vs_peer_same_threads'])} | "
            f"{_x(c['edgekit_vs_peer_default_threads'])} | "
            f"{identical or _x(c['setup_effect_edgekit_file'])} | "
            f"{identical or _x(c['file_effect_edgekit_setup'])} |"
        )
    lines += ["", "## Findings", "", *[f"- {line}" for line in findings(record)], ""]
    lines.append(
        f"Measured {record['created_utc']} with edgekit {record['edgekit_version']} on "
        f"{machine['platform']}, Python {machine['python']}."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
