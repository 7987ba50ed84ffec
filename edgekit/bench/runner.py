"""Runs the workers and turns their samples into one `BenchReport`.

Methodology (README "What `bench` measures" says the same for users):
- every measurement runs in a process of its own, pinned to the same cores as every other
  measurement at that thread count, with a timeout; a variant that crashes or hangs becomes a
  row saying so, and the others are still measured;
- with `rounds > 1` every variant is measured once per round, round-robin, so slow drifts of a
  shared machine hit all variants alike; speed-ups are the median of per-round ratios, and
  none is given from a row whose spread says it is unreliable;
- memory is the increase over the process after its imports, next to the absolute peak.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit import __version__, exporters
from edgekit.artifact import MANIFEST_NAME, ComponentManifest, Manifest, now_utc, read_manifest
from edgekit.bench.schema import (
    BenchReport,
    BenchResult,
    ComputeEfficiency,
    Fidelity,
    MachineInfo,
    MemoryStats,
    OpProfile,
    PipelineBreakdown,
    RuntimeInfo,
)
from edgekit.bench.timing import TimingSettings, reliability, reservoir, summarize
from edgekit.errors import EdgekitError
from edgekit.validate import ARTIFACT_STATUS

# Other processes using more than this share of the CPU before a run make its numbers noisy.
BUSY_CPU_PERCENT = 25.0
DEFAULT_TIMEOUT_S = 600.0


class BenchError(EdgekitError):
    exit_code = 5


@dataclass
class BenchSettings:
    """What to measure besides the timing loop. threads/batches None: as each artifact says
    (its target profile's threads; the batch it was exported with)."""

    threads: list[int] | None = None
    batches: list[int] | None = None
    rounds: int = 1
    pytorch_baseline: bool = True
    compute: bool = True  # FLOPs, GFLOP/s and the host's matmul peak
    profile_runs: int = 0  # > 0: a per-op profile over this many runs, after the timed runs
    pipeline_steps: int = 0  # > 0: Stable Diffusion artifacts end to end at this many steps
    pipeline_images: int = 1
    timeout_s: float = DEFAULT_TIMEOUT_S
    # Emulated cores ("arm64", ["cortex-a76"]): the artifacts run there only, and their rows say
    # so; wall time under qemu is never mixed with host rows.
    emulate: tuple[str, list[str]] | None = None
    emulator_cache: Path | None = None


@dataclass
class _Variant:
    """One thing to time: a component of an artifact, or the PyTorch module it came from."""

    kind: str  # "artifact" or "pytorch"
    artifact: Path
    manifest: Manifest
    component: ComponentManifest
    threads: int
    rounds: list[dict[str, Any]] = field(default_factory=list)
    failure: BenchResult | None = None

    @property
    def name(self) -> str:
        suffix = "" if self.component.name == "model" else f"/{self.component.name}"
        if self.kind == "pytorch":
            return f"pytorch-eager:{Path(self.manifest.source.path).name}{suffix}"
        return f"{self.manifest.name}{suffix}"

    @property
    def batch(self) -> int:
        """The leading dimension of the first input: every format edgekit writes has a fixed
        batch, chosen at export (`--batch-size`)."""
        shape = self.component.inputs[0].shape
        return int(shape[0]) if shape else 1

    @property
    def baseline_key(self) -> str:
        """Variants with the same source at the same threads share one PyTorch baseline."""
        source = self.component.source
        return f"{source.sha256}{json.dumps(source.options, sort_keys=True)}@{self.threads}"

    @property
    def source_key(self) -> str:
        return self.baseline_key.rsplit("@", 1)[0]


def discover_artifacts(paths: list[Path]) -> list[Path]:
    """Artifact folders: each path is one (it holds a manifest.json) or holds them."""
    found: list[Path] = []
    for path in paths:
        if (path / MANIFEST_NAME).is_file():
            found.append(path)
            continue
        if not path.exists():
            raise BenchError(
                f"No artifact folder at '{path}'.",
                hint="pass artifact folders written by `edgekit export`, or a folder of them.",
            )
        inside = sorted(p.parent for p in path.glob(f"*/{MANIFEST_NAME}")) if path.is_dir() else []
        if not inside:
            raise BenchError(
                f"'{path}' has no {MANIFEST_NAME}, in it or in its subfolders: it holds no "
                "artifact.",
                hint="pass artifact folders written by `edgekit export`, or a folder of them.",
            )
        found.extend(inside)
    return found


def machine_info() -> MachineInfo:
    from edgekit.bench.compute import cpu_flags

    return MachineInfo(
        hostname=socket.gethostname(),
        os=f"{platform.system()} {platform.release()}",
        platform=platform.platform(),
        processor=_cpu_model() or platform.processor() or platform.machine(),
        cpu_count=os.cpu_count() or 0,
        cpu_flags=cpu_flags(),
        python=platform.python_version(),
        load_average=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    )


def _cpu_model() -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def busy_machine_warning(sample_s: float = 1.0) -> str | None:
    """A warning when other processes keep the CPU busy: their load lands in every sample."""
    import psutil

    used = psutil.cpu_percent(interval=sample_s)
    if used > BUSY_CPU_PERCENT:
        return (
            f"The machine was busy before the run ({used:.0f}% CPU in use by other processes): "
            "expect noisy numbers; close other work or use --rounds to spread it."
        )
    return None


def cores_for(threads: int) -> list[int]:
    """The cores every process at this thread count is pinned to: the first `threads` of the
    ones this process may use (all of them if it may use fewer)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return allowed[:threads] if len(allowed) >= threads else allowed


def run_bench(
    artifacts: list[Path],
    *,
    timing: TimingSettings,
    settings: BenchSettings | None = None,
) -> BenchReport:
    """Measure every component of `artifacts` (folders, or folders of them)."""
    settings = settings or BenchSettings()
    _check_settings(timing, settings)
    warnings = [w for w in [busy_machine_warning()] if w]
    notes: list[str] = []
    manifests = [(path, read_manifest(path)) for path in discover_artifacts(artifacts)]
    if settings.emulate:
        return _run_emulated(manifests, timing, settings)
    runnable = []
    for path, manifest in manifests:
        reason = exporters.get(manifest.format).host_runtime_unavailable_reason()
        if reason:
            notes.append(f"{manifest.name} not benchmarked: {reason}")
        else:
            runnable.append((path, manifest))

    variants = [
        _Variant("artifact", path, manifest, component, threads)
        for path, manifest in runnable
        for threads in _thread_counts(manifest, settings.threads)
        for component in manifest.components
    ]
    variants = _select_batches(variants, settings.batches, notes)
    baselines: dict[str, _Variant] = {}
    if settings.pytorch_baseline:
        for v in variants:
            baselines.setdefault(
                v.baseline_key,
                _Variant("pytorch", v.artifact, v.manifest, v.component, v.threads),
            )
    everything = list(baselines.values()) + variants

    host_peaks: dict[str, float] = {}
    if settings.compute:
        for threads in sorted({v.threads for v in variants}):
            host_peaks.update(_measure_host_peak(threads, settings, notes))

    for round_index in range(settings.rounds):
        last_round = round_index == settings.rounds - 1
        for variant in everything:
            if variant.failure is not None:
                continue
            request = _request(variant, timing, settings, profile=last_round)
            try:
                variant.rounds.append(_run_worker(request, variant.name, settings.timeout_s))
            except _WorkerFailure as failure:
                if variant.kind == "pytorch":
                    # A missing or changed source only costs the baseline row, not the bench.
                    notes.append(f"No PyTorch baseline for {variant.name}: {failure.message}")
                variant.failure = _failed_result(variant, failure)

    flops = _flops_by_source(everything, settings, notes)
    results = []
    for variant in everything:
        if variant.failure is not None:
            if variant.kind == "artifact":
                results.append(variant.failure)
            continue
        baseline = baselines.get(variant.baseline_key)
        baseline_rounds = baseline.rounds if baseline and baseline.failure is None else None
        results.append(
            _aggregate(variant, timing, baseline_rounds, flops.get(variant.source_key), host_peaks)
        )

    pipelines = []
    if settings.pipeline_steps:
        pipelines = _pipelines(runnable, results, settings, notes)

    return BenchReport(
        created_utc=now_utc(),
        edgekit_version=__version__,
        machine=machine_info(),
        settings={
            "threads": settings.threads or "target profile",
            "batches": settings.batches or "as exported",
            "rounds": settings.rounds,
            "cpu_affinity": {str(t): cores_for(t) for t in sorted({v.threads for v in variants})},
            "timeout_s": settings.timeout_s,
            "profile_runs": settings.profile_runs,
            **asdict(timing),
        },
        host_peak_gflops=host_peaks,
        results=results,
        pipelines=pipelines,
        warnings=warnings,
        notes=notes,
    )


def _run_emulated(
    manifests: list[tuple[Path, Manifest]], timing: TimingSettings, settings: BenchSettings
) -> BenchReport:
    """Each artifact on each emulated core: load once, run the timed runs, inside qemu."""
    from edgekit.emulate import environment
    from edgekit.emulate.verify import run_in_guest, unsupported_format_reason
    from edgekit.models.base import seeded_inputs

    arch, cores = settings.emulate
    environment.check_cores(cores)
    env = environment.load(arch, settings.emulator_cache)
    notes, results = [], []
    cannot_count = env.instruction_counter_unavailable()
    if cannot_count:
        notes.append(f"No instruction counts: {cannot_count}.")
    runs = max(timing.min_runs, 1)
    for path, manifest in manifests:
        reason = unsupported_format_reason(manifest.format)
        if reason:
            notes.append(f"{manifest.name} not benchmarked under emulation: {reason}")
            continue
        for component in manifest.components:
            inputs = seeded_inputs(component.inputs, 0)
            for core in cores:
                threads = (settings.threads or [1])[0]
                variant = _Variant("artifact", path, manifest, component, threads)
                emulated = f"qemu {arch} {core}"
                try:
                    _, timed = run_in_guest(
                        env, core, path / component.model_file, manifest, component, [inputs],
                        threads=threads, timed_runs=runs, timeout_s=settings.timeout_s,
                        count_instructions=cannot_count is None,
                    )  # fmt: skip
                except EdgekitError as exc:
                    failed = _failed_result(variant, _WorkerFailure("error", exc.message))
                    results.append(failed.model_copy(update={"emulated": emulated}))
                    continue
                latency = summarize(timed["samples_ms"])
                name, version = timed["runtime"].rsplit(" ", 1)
                results.append(
                    BenchResult(
                        **_artifact_fields(variant),
                        emulated=emulated,
                        runtime=RuntimeInfo(
                            name=name,
                            version=version,
                            threads=threads,
                            settings={"threads": threads, "emulator": emulated},
                        ),  # fmt: skip
                        load_ms=timed["load_s"] * 1e3,
                        warmup_runs=0,
                        latency=latency,
                        throughput_per_s=variant.batch * 1000.0 / latency.median_ms,
                        samples_ms=reservoir(timed["samples_ms"]),
                        samples_total=len(timed["samples_ms"]),
                        reliability=reliability(latency, [], timed["samples_ms"]),
                        **_instruction_fields(timed.get("instructions")),
                    )
                )
    notes.append(
        "Emulated rows are wall time under qemu user mode (about 100-300x slower than native): "
        "compare artifacts on the same core with them, never with a phone's or this host's "
        "latency. Warm-up: the verification pass before the timed runs."
    )
    return BenchReport(
        created_utc=now_utc(),
        edgekit_version=__version__,
        machine=machine_info(),
        settings={"emulate": arch, "cores": cores, "runs": runs, "timeout_s": settings.timeout_s},
        results=results,
        notes=notes,
    )


def _instruction_fields(counts: list[int] | None) -> dict:
    if not counts:
        return {}
    ordered = sorted(counts)
    return {
        "instructions_per_inference": int(statistics.median_low(ordered)),
        "instructions_range": [ordered[0], ordered[-1]],
    }


def _check_settings(timing: TimingSettings, settings: BenchSettings) -> None:
    counts = [*(settings.threads or []), *(settings.batches or [])]
    if (
        any(c < 1 for c in counts)
        or settings.rounds < 1
        or timing.min_runs < 1
        or timing.warmup_runs < 0
        or settings.timeout_s <= 0
    ):
        raise BenchError(
            "--threads, --batch, --rounds and --runs must be 1 or more, --warmup 0 or more, "
            "--timeout above 0.",
            hint="e.g. --threads 1,2 --batch 1,4 --runs 100 --warmup 5.",
        )


def _thread_counts(manifest: Manifest, threads: list[int] | None) -> list[int]:
    """--threads, else the profile's count (capped at this host's cores), else every core."""
    if threads:
        return threads
    return [exporters.profile_runtime_settings(manifest.profile).threads or os.cpu_count() or 1]


def _select_batches(
    variants: list[_Variant], batches: list[int] | None, notes: list[str]
) -> list[_Variant]:
    """Keep the variants whose artifact takes one of the asked batch sizes, and say which batch
    sizes no artifact of a source takes (every format edgekit writes has a fixed batch)."""
    if not batches:
        return variants
    kept = [v for v in variants if v.batch in batches]
    for name in sorted({v.manifest.name for v in variants}):
        taken = sorted({v.batch for v in variants if v.manifest.name == name})
        if not set(taken) & set(batches):
            notes.append(
                f"{name} skipped: it takes batch {', '.join(map(str, taken))} only (fixed at "
                "export); export it again with --batch-size N for each batch to compare."
            )
    sources = {v.manifest.source.path for v in variants}
    for source in sorted(sources):
        have = {v.batch for v in kept if v.manifest.source.path == source}
        missing = [b for b in batches if b not in have]
        if missing:
            notes.append(
                f"No artifact of {Path(source).name} takes batch "
                f"{', '.join(map(str, missing))}: edgekit exports a fixed batch in every format "
                "(export --batch-size N)."
            )
    return kept


def _request(
    variant: _Variant, timing: TimingSettings, settings: BenchSettings, *, profile: bool
) -> dict[str, Any]:
    return {
        "kind": variant.kind,
        "artifact": str(variant.artifact),
        "component": variant.component.name,
        "threads": variant.threads,
        "cpus": cores_for(variant.threads),
        "timing": asdict(timing),
        "profile_runs": settings.profile_runs if profile and variant.kind == "artifact" else 0,
    }


class _WorkerFailure(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _run_worker(request: dict[str, Any], name: str, timeout_s: float) -> dict[str, Any]:
    threads = int(request.get("threads") or 1)
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as scratch:
        request_path = Path(scratch) / "request.json"
        result_path = Path(scratch) / "result.json"
        request_path.write_text(json.dumps(request))
        # OpenMP pools (PyTorch, onnxruntime's MLAS on some builds) size themselves from this.
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "edgekit.bench.worker", str(request_path), str(result_path)],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:  # subprocess.run has killed the worker
            raise _WorkerFailure(
                "timed-out", f"{name} did not finish within {timeout_s:.0f} s and was stopped."
            ) from None
        if result_path.is_file():
            result = json.loads(result_path.read_text())
            if "error" not in result:
                return result
            raise _WorkerFailure("error", f"{name}: {result['error']}")
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise _WorkerFailure("crashed", f"{name} crashed (exit {completed.returncode}): {tail}")


def _artifact_fields(variant: _Variant) -> dict[str, Any]:
    """What a row says about what it measured, from the manifest: the same whether it was
    measured, failed, or ran under emulation. The PyTorch baseline is the fp32 source module."""
    manifest, component = variant.manifest, variant.component
    is_artifact = variant.kind == "artifact"
    return {
        "name": variant.name,
        "format": manifest.format if is_artifact else "pytorch",
        "component": component.name,
        "model_kind": component.model_kind,
        "precision": manifest.precision if is_artifact else "fp32",
        "plan": _plan_name(manifest) if is_artifact else None,
        "artifact": str(variant.artifact) if is_artifact else None,
        "artifact_sha256": _model_file_sha256(manifest, component) if is_artifact else None,
        "random_weights": manifest.random_weights,
        "model_size_bytes": _model_size(manifest, component),
        "fp32_weight_bytes": component.parameter_count * 4,
        "threads": variant.threads,
        "batch": variant.batch,
        "fidelity": _fidelity(component, variant.artifact) if is_artifact else Fidelity(),
    }


def _failed_result(variant: _Variant, failure: _WorkerFailure) -> BenchResult:
    return BenchResult(
        **_artifact_fields(variant),
        status=failure.status,
        error=failure.message,
        runtime=RuntimeInfo(name=f"{variant.manifest.format} runtime", version="not loaded"),
    )


def _measure_host_peak(threads: int, settings: BenchSettings, notes: list[str]) -> dict[str, float]:
    request = {"kind": "peak", "threads": threads, "cpus": cores_for(threads)}
    try:
        result = _run_worker(request, f"matmul peak at {threads} threads", settings.timeout_s)
    except _WorkerFailure as failure:
        notes.append(f"No host peak: {failure.message}")
        return {}
    if result.get("int8_unavailable") and not any("int8 peak" in n for n in notes):
        notes.append(f"No int8 peak: {result['int8_unavailable']}")
    return {f"{kind}@{threads}": value for kind, value in result["peaks"].items()}


def _flops_by_source(
    everything: list[_Variant], settings: BenchSettings, notes: list[str]
) -> dict[str, float]:
    """FLOPs of one call per source model, from the PyTorch baseline's worker, or a worker of
    its own when there is no baseline."""
    if not settings.compute:
        return {}
    flops: dict[str, float] = {}
    for variant in everything:
        if variant.kind == "pytorch" and variant.rounds and variant.rounds[0].get("flops"):
            flops[variant.source_key] = variant.rounds[0]["flops"]
    for variant in everything:
        if variant.kind != "artifact" or variant.source_key in flops or variant.failure:
            continue
        request = {**_request(variant, TimingSettings(), settings, profile=False), "kind": "flops"}
        try:
            result = _run_worker(request, f"FLOPs of {variant.name}", settings.timeout_s)
        except _WorkerFailure as failure:
            notes.append(f"No FLOPs for {variant.name}: {failure.message}")
            flops[variant.source_key] = 0.0
            continue
        flops[variant.source_key] = result["flops"] or 0.0
    return {k: v for k, v in flops.items() if v}


def _aggregate(
    variant: _Variant,
    timing: TimingSettings,
    baseline_rounds: list[dict[str, Any]] | None,
    flops: float | None,
    host_peaks: dict[str, float],
) -> BenchResult:
    from edgekit.bench.compute import efficiency, peak_kind_for

    manifest, component, rounds = variant.manifest, variant.component, variant.rounds
    all_samples = [s for r in rounds for s in r["samples_ms"]]
    round_medians = [statistics.median(r["samples_ms"]) for r in rounds]
    latency = summarize(all_samples)
    row_reliability = reliability(latency, round_medians, all_samples)
    speedup = None
    if baseline_rounds and variant.kind == "artifact":
        speedup = speedup_vs_baseline(rounds, baseline_rounds)
    is_artifact = variant.kind == "artifact"
    precision = manifest.precision if is_artifact else "fp32"
    compute = None
    if flops:
        realized = component.quant.counts if is_artifact and component.quant else {}
        kind = peak_kind_for(precision, realized)
        # The worker counted FLOPs of one call at the artifact's own batch.
        compute = efficiency(
            flops,
            latency.median_ms,
            peak_gflops=host_peaks.get(f"{kind}@{variant.threads}"),
            peak_kind=kind,
        )
    elif host_peaks:
        compute = ComputeEfficiency()
    runtime_settings = {
        **(rounds[0].get("runtime_settings") or {"threads": variant.threads}),
        "cpu_affinity": rounds[0].get("cpus"),
    }
    last = rounds[-1]
    return BenchResult(
        # The worker measured the size: the files the runtime loads, or the module's parameters.
        **{**_artifact_fields(variant), "model_size_bytes": rounds[0]["model_size_bytes"]},
        runtime=RuntimeInfo(
            **rounds[0]["runtime"],
            threads=runtime_settings.get("threads"),
            delegate=runtime_settings.get("delegate") or runtime_settings.get("execution_provider"),
            settings=runtime_settings,
        ),
        load_ms=statistics.median(r["load_ms"] for r in rounds),
        first_inference_ms=statistics.median(r["first_inference_ms"] for r in rounds),
        warmup_runs=timing.warmup_runs,
        latency=latency,
        throughput_per_s=variant.batch * 1000.0 / latency.median_ms,
        round_medians_ms=round_medians if len(rounds) > 1 else [],
        samples_ms=reservoir(all_samples),
        samples_total=len(all_samples),
        memory=MemoryStats(
            increase_bytes=max(r["peak_rss_bytes"] - r["rss_after_imports_bytes"] for r in rounds)
            if all(r["peak_is_since_imports"] for r in rounds)
            else None,
            peak_rss_bytes=max(r["peak_rss_bytes"] for r in rounds),
            rss_after_imports_bytes=min(r["rss_after_imports_bytes"] for r in rounds),
        ),
        reliability=row_reliability,
        speedup_vs_pytorch=speedup,
        compute=compute,
        op_profile=OpProfile.model_validate(last["op_profile"]) if "op_profile" in last else None,
        op_profile_note=last.get("op_profile_unavailable"),
    )


def speedup_vs_baseline(
    rounds: list[dict[str, Any]], baseline_rounds: list[dict[str, Any]]
) -> float | None:
    """Baseline median / variant median, the median of per-round ratios (rounds interleave, so
    a drift of the machine hits both sides of each ratio alike). A ratio of two medians is only
    as good as the noisier of them: None when either side's spread says it is unreliable."""
    if not (_reliable(rounds) and _reliable(baseline_rounds)):
        return None
    ratios = [
        statistics.median(b["samples_ms"]) / statistics.median(r["samples_ms"])
        for b, r in zip(baseline_rounds, rounds, strict=False)
    ]
    return statistics.median(ratios)


def _reliable(rounds: list[dict[str, Any]]) -> bool:
    samples = [s for r in rounds for s in r["samples_ms"]]
    medians = [statistics.median(r["samples_ms"]) for r in rounds]
    return reliability(summarize(samples), medians, samples).reliable


def _pipelines(
    runnable: list[tuple[Path, Manifest]],
    results: list[BenchResult],
    settings: BenchSettings,
    notes: list[str],
) -> list[PipelineBreakdown]:
    breakdowns = []
    for path, manifest in runnable:
        if manifest.pipeline is None:
            continue
        for threads in _thread_counts(manifest, settings.threads):
            rows = {
                r.component: r
                for r in results
                if r.artifact == str(path) and r.threads == threads and r.status == "ok"
            }
            if {c.name for c in manifest.components} - set(rows):
                continue  # a component failed; its row says why
            request = {
                "kind": "pipeline",
                "artifact": str(path),
                "threads": threads,
                "cpus": cores_for(threads),
                "steps": settings.pipeline_steps,
                "images": settings.pipeline_images,
            }
            measured: dict[str, Any] = {}
            try:
                measured = _run_worker(request, f"{manifest.name} end to end", settings.timeout_s)
            except _WorkerFailure as failure:
                notes.append(f"No end-to-end image time for {manifest.name}: {failure.message}")
            breakdowns.append(_breakdown(path, manifest, threads, rows, settings, measured))
    return breakdowns


def _breakdown(path, manifest, threads, rows, settings, measured) -> PipelineBreakdown:
    """One image: the text encoder twice (prompt and negative prompt), the UNet once per step
    with a batch-2 UNet or twice without, the VAE decoder once."""
    unet_calls = 1 if manifest.pipeline.unet_batch == 2 else 2
    calls = {"text-encoder": 2, "unet": settings.pipeline_steps * unet_calls, "vae-decoder": 1}
    medians = {name: row.latency.median_ms for name, row in rows.items()}
    estimated_ms = sum(medians[name] * calls.get(name, 1) for name in medians)
    unet = rows.get("unet")
    return PipelineBreakdown(
        artifact=manifest.name,
        artifact_sha256=unet.artifact_sha256 if unet else None,
        format=manifest.format,
        threads=threads,
        steps=settings.pipeline_steps,
        unet_calls_per_step=unet_calls,
        component_median_ms=medians,
        estimated_image_s=estimated_ms / 1e3,
        measured_image_s=measured.get("image_s", []),
        cold_load_s=measured.get("cold_load_s"),
        warm_load_s=measured.get("warm_load_s"),
    )


def _plan_name(manifest: Manifest) -> str | None:
    plan = manifest.quant_plan
    return getattr(plan, "name", None) if plan is not None else None


def _model_file_sha256(manifest: Manifest, component: ComponentManifest) -> str | None:
    return next((f.sha256 for f in manifest.files if f.path == component.model_file), None)


def _model_size(manifest: Manifest, component: ComponentManifest) -> int:
    return sum(f.size_bytes for f in manifest.files if f.path.startswith(component.model_file))


def _fidelity(component: ComponentManifest, artifact: Path | None = None) -> Fidelity:
    from edgekit.emulate.verify import emulated_statuses

    outputs = component.verification.outputs
    return Fidelity(
        emulated_verification=emulated_statuses(artifact) if artifact else {},
        verification_status=ARTIFACT_STATUS[component.verification.status],
        worst_sqnr_db=min((o.sqnr_db for o in outputs if o.sqnr_db is not None), default=None),
        top1_agreement=next(
            (o.top1_agreement for o in outputs if o.top1_agreement is not None), None
        ),
    )
