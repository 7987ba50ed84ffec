"""The bench report schema: one format for host runs and for device runs from the demo apps.

A phone writes the same schema: everything a phone cannot measure (per-process memory on iOS,
FLOPs, per-op profiles) is optional. Results link to artifacts by the sha256 of the model file
recorded in the manifest, so a device row and a host row of the same artifact match even when
the folders live on different machines.

`python -m edgekit.bench.schema` rewrites the committed `edgekit/schemas/bench.schema.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from edgekit.json_schema import json_schema, write_json_schema

# 2.0: results grouped into runtime / memory / fidelity / reliability / compute, batch and
# status per row, raw samples, a confidence interval for the median, named estimators, per-op
# rows, Stable Diffusion pipeline breakdowns. 1.x files are refused by `bench ingest`.
# 2.1 added, all optional: machine.soc and thermal state, runtime.compute_units, sustained runs
# (what the demo apps measure on phones), instruction counts of emulated rows. 2.0 reports still
# read.
BENCH_SCHEMA_VERSION = "2.1"
SCHEMA_PATH = Path(__file__).parent.parent / "schemas" / "bench.schema.json"

# What each statistic is, written into every report: device benchmark apps have renamed a
# trimmed mean "avg", and a reader comparing numbers across tools needs to know.
ESTIMATORS = {
    "median_ms": "sample median of the timed runs (all rounds pooled)",
    "median_ci95_ms": "distribution-free 95% confidence interval for the median "
    "(order statistics at the binomial(n, 0.5) quantiles); null below 6 runs",
    "p90_ms": "90th percentile, linear interpolation between closest ranks; null below 10 runs",
    "p99_ms": "99th percentile, same method; null below 100 runs (too few samples above it)",
    "mean_ms": "arithmetic mean",
    "std_ms": "population standard deviation",
    "trimmed_mean_ms": "mean of the middle 80% (10% trimmed from each end)",
    "cv": "coefficient of variation, std / mean (reliability uses the CV of the middle 80%)",
    "throughput_per_s": "batch x 1000 / median_ms: images (or samples) per second, one stream",
    "speedup_vs_pytorch": "PyTorch eager median / this median, median of per-round ratios",
    "gflops_per_s": "model FLOPs (torch.utils.flop_counter on the PyTorch reference) / median",
}


class LatencyStats(BaseModel):
    """Milliseconds over the timed runs (after warm-up). Never a single run."""

    runs: int
    median_ms: float
    median_ci95_ms: tuple[float, float] | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float
    std_ms: float
    trimmed_mean_ms: float | None = None
    cv: float | None = None
    min_ms: float
    max_ms: float


class RuntimeInfo(BaseModel):
    name: str = Field(description="'onnxruntime', 'executorch', 'ai-edge-litert', 'pytorch', ...")
    version: str
    threads: int | None = None
    delegate: str | None = Field(
        None, description="Delegate or execution provider: 'xnnpack', 'CPUExecutionProvider'."
    )
    compute_units: str | None = Field(
        None,
        description="Core ML compute units the model was loaded with: cpuOnly, cpuAndGPU, "
        "cpuAndNeuralEngine or all (the OS decides where each op runs within them).",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings the runtime was created with (threads, delegate, execution "
        "provider, spinning, compute units), from the target profile and the command line.",
    )


class SustainedRun(BaseModel):
    """A run repeated for minutes on a phone, so thermal throttling shows: one median per window."""

    duration_s: float = Field(description="How long the model was run back to back.")
    window_s: float = Field(description="Length of each window whose median is recorded.")
    window_medians_ms: list[float] = Field(description="Median latency of each window, in order.")
    thermal_states: list[str] = Field(
        default_factory=list,
        description="The platform's thermal state at the end of each window (see MachineInfo).",
    )
    slowdown: float | None = Field(
        None, description="Last window's median / first window's: >1 means it slowed down."
    )


class MemoryStats(BaseModel):
    """Resident memory of the measuring process. The increase is what loading and running the
    model cost; the absolute peak also counts the runtime's imports, which differ per runtime
    and would otherwise rank import footprints instead of models."""

    increase_bytes: int | None = Field(
        None, description="Peak RSS during load and runs minus RSS after imports, before load."
    )
    peak_rss_bytes: int | None = None
    rss_after_imports_bytes: int | None = None


class Fidelity(BaseModel):
    """From the artifact's manifest: how close it came to PyTorch fp32 at export time."""

    verification_status: str | None = None
    worst_sqnr_db: float | None = None
    top1_agreement: float | None = None
    emulated_verification: dict[str, str] = Field(
        default_factory=dict,
        description="Emulated core -> 'passed'/'failed' from `edgekit verify --emulate`.",
    )


class Reliability(BaseModel):
    reliable: bool = True
    reasons: list[str] = Field(
        default_factory=list,
        description="Why the spread says this measurement cannot be trusted (CV, p90/p50, "
        "rounds that disagree); no speed-up is printed from an unreliable row.",
    )


class ComputeEfficiency(BaseModel):
    flops: float | None = Field(None, description="FLOPs of one call at this batch.")
    gflops_per_s: float | None = None
    peak_gflops_per_s: float | None = Field(
        None, description="This host's measured matmul peak at the same threads and precision."
    )
    peak_kind: str | None = Field(None, description="'fp32' or 'int8': which peak is compared.")
    peak_fraction: float | None = None


class OpRow(BaseModel):
    """One operator (or delegate call) of a per-op profile, summed over the profiled runs."""

    name: str = Field(description="Node name, kernel or delegate event as the runtime names it.")
    op_type: str
    module_path: str | None = Field(None, description="The PyTorch module it came from.")
    backend: str = Field(description="Where it ran: 'XNNPACK', 'CPUExecutionProvider', ...")
    delegated: bool | None = None
    fallback: bool = Field(
        False,
        description="Ran on a slower path than the artifact intends (e.g. portable "
        "kernels outside the XNNPACK delegate).",
    )
    calls: int = 1
    total_ms: float
    mean_ms: float
    share: float = Field(description="Fraction of the profiled time.")


class OpProfile(BaseModel):
    runs: int = Field(description="Profiled runs the times are summed over.")
    tool: str = Field(description="What produced it: 'onnxruntime profiling', 'ETDump', ...")
    ops: list[OpRow]
    notes: list[str] = Field(default_factory=list)


class BenchResult(BaseModel):
    """One variant (an artifact on its runtime, or the PyTorch eager baseline) at one thread
    count and batch size, measured in a process of its own."""

    name: str = Field(description="Artifact name, or 'pytorch-eager:<source>' for the baseline.")
    status: Literal["ok", "error", "crashed", "timed-out"] = "ok"
    emulated: str | None = Field(
        None,
        description="Set for runs under emulation (e.g. 'qemu arm64 cortex-a76'): wall time "
        "in an emulator, for comparing artifacts on one core, never a phone's latency.",
    )
    error: str | None = Field(None, description="What went wrong, when status is not ok.")
    source: Literal["host", "device"] = "host"
    format: str = Field(description="'onnx', 'executorch', ... or 'pytorch'.")
    component: str = "model"
    model_kind: str
    precision: str = Field(description="Default precision of the plan ('fp32', 'int8', 'mixed').")
    plan: str | None = Field(None, description="Named plan or plan file the artifact realized.")
    artifact: str | None = Field(None, description="Artifact folder on the measuring machine.")
    artifact_sha256: str | None = Field(
        None, description="sha256 of the component's model file, from the manifest."
    )
    random_weights: bool = False
    model_size_bytes: int = Field(description="Artifact files (or fp32 parameters for PyTorch).")
    fp32_weight_bytes: int | None = Field(
        None, description="Parameter count x 4: what the weights take in fp32, for size ratios."
    )
    threads: int | None = None
    batch: int = 1
    runtime: RuntimeInfo
    load_ms: float | None = None
    first_inference_ms: float | None = None
    warmup_runs: int | None = None
    latency: LatencyStats | None = None
    throughput_per_s: float | None = None
    round_medians_ms: list[float] = Field(
        default_factory=list, description="Median of each interleaved round (when rounds > 1)."
    )
    instructions_per_inference: int | None = Field(
        None,
        description="Emulated rows: guest instructions one inference executed (median over the "
        "timed runs), counted by a qemu TCG plugin. Repeatable to 0.01-1% by runtime (see "
        "instructions_range), unlike emulated time; compares artifacts on the same emulated "
        "core, and is not a phone's latency.",
    )
    instructions_range: list[int] = Field(
        default_factory=list, description="Fewest and most instructions over the timed runs."
    )
    sustained: SustainedRun | None = Field(
        None, description="Device runs in sustained mode: latency per window over minutes."
    )
    samples_ms: list[float] = Field(
        default_factory=list,
        description="The timed runs in order, or a uniform reservoir of them when there were "
        "more than the report keeps (samples_total says how many there were).",
    )
    samples_total: int | None = None
    memory: MemoryStats | None = None
    fidelity: Fidelity = Field(default_factory=Fidelity)
    reliability: Reliability = Field(default_factory=Reliability)
    speedup_vs_pytorch: float | None = Field(
        None,
        description="PyTorch eager median / this median, median over rounds; >1 is "
        "faster. Null when either row is unreliable.",
    )
    compute: ComputeEfficiency | None = None
    op_profile: OpProfile | None = None
    op_profile_note: str | None = Field(
        None, description="Why no per-op profile was taken, when one was asked for."
    )

    @property
    def size_vs_fp32(self) -> float | None:
        """How many times smaller than its fp32 weights the artifact is (>1: smaller)."""
        if not self.fp32_weight_bytes or not self.model_size_bytes:
            return None
        return self.fp32_weight_bytes / self.model_size_bytes

    @property
    def settings_key(self) -> tuple:
        """What makes two rows comparable across reports: same artifact, runtime and settings."""
        return (
            self.artifact_sha256 or self.name,
            self.component,
            self.format,
            self.runtime.name,
            self.runtime.delegate,
            self.runtime.compute_units,
            self.threads,
            self.batch,
            self.source,
        )


class PipelineBreakdown(BaseModel):
    """Stable Diffusion: one image = text encoder + UNet x steps x (2, or 1 with a batch-2
    UNet or no guidance) + VAE decoder, from the component rows of the same run."""

    artifact: str
    artifact_sha256: str | None = None
    format: str
    threads: int | None = None
    steps: int
    unet_calls_per_step: int
    component_median_ms: dict[str, float]
    estimated_image_s: float = Field(description="Sum of component medians x calls.")
    measured_image_s: list[float] = Field(
        default_factory=list, description="End-to-end seconds of whole images, if measured."
    )
    cold_load_s: float | None = Field(
        None, description="Loading all components in a fresh process (page cache warm)."
    )
    warm_load_s: float | None = Field(None, description="Loading them again in that process.")


class MachineInfo(BaseModel):
    hostname: str | None = None
    os: str | None = None
    platform: str
    processor: str
    cpu_count: int | None = None
    cpu_flags: list[str] = Field(
        default_factory=list, description="ISA extensions that change kernels (avx2, vnni, ...)."
    )
    python: str | None = None
    device: str = Field("host", description="'host', or the phone model for device runs.")
    soc: str | None = Field(None, description="System on chip of a phone (e.g. 'Tensor G3').")
    thermal_state_start: str | None = Field(
        None,
        description="Thermal state when the run started, as the platform names it: Android "
        "PowerManager status (none, light, moderate, severe, critical, emergency, shutdown), iOS "
        "ProcessInfo.thermalState (nominal, fair, serious, critical).",
    )
    thermal_state_end: str | None = Field(None, description="Thermal state when it ended.")
    load_average: float | None = Field(
        None, description="1-minute load average when the run started."
    )


class BenchReport(BaseModel):
    schema_version: str = BENCH_SCHEMA_VERSION
    created_utc: str
    edgekit_version: str
    machine: MachineInfo
    settings: dict[str, Any]
    estimators: dict[str, str] = Field(default_factory=lambda: dict(ESTIMATORS))
    host_peak_gflops: dict[str, float] = Field(
        default_factory=dict,
        description="Measured matmul peak of this host, e.g. {'fp32@2': 90.1, 'int8@2': 310.0}.",
    )
    results: list[BenchResult]
    pipelines: list[PipelineBreakdown] = Field(default_factory=list)
    warnings: list[str] = Field(
        default_factory=list, description="Conditions that make the numbers less trustworthy."
    )
    notes: list[str] = Field(
        default_factory=list, description="What could not be measured, and why."
    )


def bench_json_schema() -> dict[str, Any]:
    schema = json_schema(BenchReport, name="bench", version=BENCH_SCHEMA_VERSION)
    # Defaulted in Python for convenience, but a file (e.g. from a demo app) must say which
    # schema it follows, and what its estimators are.
    schema["required"] = sorted({*schema.get("required", []), "schema_version", "estimators"})
    return schema


def write_schema(path: Path = SCHEMA_PATH) -> None:
    write_json_schema(bench_json_schema(), path)


if __name__ == "__main__":
    write_schema()
