"""Runs the workers and turns their samples into one `BenchReport`.

With `rounds > 1` every variant is measured once per round, round-robin, so slow drifts of a
shared machine hit all variants alike; speed-ups are the median of per-round ratios.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit import __version__, exporters
from edgekit.artifact import ComponentManifest, Manifest, now_utc, read_manifest
from edgekit.bench.schema import BenchReport, BenchResult, MachineInfo
from edgekit.bench.timing import TimingSettings, summarize
from edgekit.errors import EdgekitError
from edgekit.validate import ARTIFACT_STATUS


class BenchError(EdgekitError):
    exit_code = 5


@dataclass
class _Variant:
    """One thing to time: a component of an artifact, or the PyTorch module it came from."""

    kind: str  # "artifact" or "pytorch"
    artifact: Path
    manifest: Manifest
    component: ComponentManifest
    threads: int  # --threads, else the artifact's target profile's, else every core

    @property
    def name(self) -> str:
        suffix = "" if self.component.name == "model" else f"/{self.component.name}"
        if self.kind == "pytorch":
            return f"pytorch-eager:{Path(self.manifest.source.path).name}{suffix}"
        return f"{self.manifest.name}{suffix}"

    @property
    def baseline_key(self) -> str:
        """Variants with the same source at the same threads share one PyTorch baseline."""
        source = self.component.source
        return f"{source.sha256}{json.dumps(source.options, sort_keys=True)}@{self.threads}"


def machine_info() -> MachineInfo:
    return MachineInfo(
        hostname=socket.gethostname(),
        platform=platform.platform(),
        processor=_cpu_model() or platform.processor() or platform.machine(),
        cpu_count=os.cpu_count() or 0,
        python=platform.python_version(),
    )


def _cpu_model() -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def run_bench(
    artifacts: list[Path],
    *,
    threads: int | None,
    timing: TimingSettings,
    rounds: int = 1,
    pytorch_baseline: bool = True,
) -> BenchReport:
    """Measure every component of `artifacts`. `threads=None` runs each artifact with the
    threads its target profile names (the PyTorch baseline beside it gets the same count)."""
    if (
        (threads is not None and threads < 1)
        or rounds < 1
        or timing.min_runs < 1
        or timing.warmup_runs < 0
    ):
        raise BenchError(
            "--threads, --rounds and --runs must be 1 or more, --warmup 0 or more.",
            hint="e.g. --threads 2 --runs 20 --warmup 3.",
        )
    manifests = [(path, read_manifest(path)) for path in artifacts]  # fail early on bad folders
    notes: list[str] = []
    runnable = []
    for path, manifest in manifests:
        reason = exporters.get(manifest.format).host_runtime_unavailable_reason()
        if reason:
            notes.append(f"{manifest.name} not benchmarked: {reason}")
        else:
            runnable.append((path, manifest))
    manifests = runnable
    variants = [
        _Variant("artifact", path, manifest, component, _threads_for(manifest, threads))
        for path, manifest in manifests
        for component in manifest.components
    ]
    baselines: dict[str, _Variant] = {}
    if pytorch_baseline:
        for v in variants:
            baselines.setdefault(
                v.baseline_key,
                _Variant("pytorch", v.artifact, v.manifest, v.component, v.threads),
            )
    everything = list(baselines.values()) + variants

    samples: dict[int, list[dict[str, Any]]] = {id(v): [] for v in everything}
    failed: set[int] = set()
    for _ in range(rounds):
        for variant in everything:
            if id(variant) in failed:
                continue
            try:
                samples[id(variant)].append(_run_worker(variant, timing))
            except BenchError as exc:
                if variant.kind != "pytorch":
                    raise
                # A missing or changed source only costs the baseline row, not the bench.
                failed.add(id(variant))
                notes.append(f"No PyTorch baseline for {variant.name}: {exc.message}")

    baseline_of = {
        id(v): baselines[v.baseline_key]
        for v in variants
        if v.baseline_key in baselines and id(baselines[v.baseline_key]) not in failed
    }
    results = []
    for variant in everything:
        if id(variant) in failed:
            continue
        baseline = baseline_of.get(id(variant))
        results.append(
            _aggregate(
                variant,
                samples[id(variant)],
                timing,
                samples[id(baseline)] if baseline else None,
            )
        )
    return BenchReport(
        created_utc=now_utc(),
        edgekit_version=__version__,
        machine=machine_info(),
        settings={
            "threads": threads if threads is not None else "target profile",
            "rounds": rounds,
            **asdict(timing),
        },
        results=results,
        notes=notes,
    )


def _threads_for(manifest: Manifest, threads: int | None) -> int:
    """--threads, else the profile's count (capped at this host's cores), else every core."""
    if threads is not None:
        return threads
    return exporters.profile_runtime_settings(manifest.profile).threads or os.cpu_count() or 1


def _run_worker(variant: _Variant, timing: TimingSettings) -> dict[str, Any]:
    threads = variant.threads
    request = {
        "kind": variant.kind,
        "artifact": str(variant.artifact),
        "component": variant.component.name,
        "threads": threads,
        "timing": asdict(timing),
    }
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as scratch:
        request_path = Path(scratch) / "request.json"
        result_path = Path(scratch) / "result.json"
        request_path.write_text(json.dumps(request))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        completed = subprocess.run(
            [sys.executable, "-m", "edgekit.bench.worker", str(request_path), str(result_path)],
            capture_output=True,
            text=True,
            env=env,
        )
        if result_path.is_file():
            result = json.loads(result_path.read_text())
            if "error" not in result:
                return result
            raise BenchError(f"{variant.name}: {result['error']}")
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(
            f"Measuring {variant.name} crashed (exit {completed.returncode}): {tail}",
            hint="run `python -m edgekit.bench.worker` by hand or re-export the artifact.",
        )


def _aggregate(
    variant: _Variant,
    rounds: list[dict[str, Any]],
    timing: TimingSettings,
    baseline_rounds: list[dict[str, Any]] | None,
) -> BenchResult:
    manifest, component = variant.manifest, variant.component
    all_samples = [s for r in rounds for s in r["samples_ms"]]
    round_medians = [statistics.median(r["samples_ms"]) for r in rounds]
    speedup = None
    if baseline_rounds and variant.kind == "artifact":
        ratios = [
            statistics.median(b["samples_ms"]) / statistics.median(r["samples_ms"])
            for b, r in zip(baseline_rounds, rounds, strict=False)
        ]
        speedup = statistics.median(ratios)
    is_artifact = variant.kind == "artifact"
    worst = min(
        (o.sqnr_db for o in component.verification.outputs if o.sqnr_db is not None), default=None
    )
    return BenchResult(
        name=variant.name,
        format=manifest.format if is_artifact else "pytorch",
        runtime=rounds[0]["runtime"],
        artifact=str(variant.artifact) if is_artifact else None,
        model_kind=component.model_kind,
        precision=manifest.precision if is_artifact else "fp32",
        random_weights=manifest.random_weights,
        threads=variant.threads,
        runtime_settings=rounds[0].get("runtime_settings", {"threads": variant.threads}),
        model_size_bytes=rounds[0]["model_size_bytes"],
        load_ms=statistics.median(r["load_ms"] for r in rounds),
        first_inference_ms=statistics.median(r["first_inference_ms"] for r in rounds),
        warmup_runs=timing.warmup_runs,
        latency=summarize(all_samples),
        round_medians_ms=round_medians if len(rounds) > 1 else [],
        peak_rss_bytes=max(r["peak_rss_bytes"] for r in rounds),
        rss_before_load_bytes=min(r["rss_before_load_bytes"] for r in rounds),
        speedup_vs_pytorch=speedup,
        verification_status=ARTIFACT_STATUS[component.verification.status] if is_artifact else None,
        worst_sqnr_db=worst if is_artifact else None,
        top1_agreement=_top1(component) if is_artifact else None,
        fp32_weight_bytes=component.parameter_count * 4,
    )


def _top1(component: Any) -> float | None:
    return next(
        (o.top1_agreement for o in component.verification.outputs if o.top1_agreement is not None),
        None,
    )
