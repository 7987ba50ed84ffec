"""The bench JSON schema: one format for host runs and (later) device runs from the demo apps.

`python -m edgekit.bench.schema` rewrites the committed `edgekit/schemas/bench.schema.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from edgekit.json_schema import json_schema, write_json_schema

BENCH_SCHEMA_VERSION = "1.1"
SCHEMA_PATH = Path(__file__).parent.parent / "schemas" / "bench.schema.json"


class LatencyStats(BaseModel):
    """Milliseconds over the timed runs (after warm-up). Never a single run."""

    runs: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float


class BenchResult(BaseModel):
    """One variant (an artifact on its runtime, or the PyTorch eager baseline) in one process."""

    name: str = Field(description="Artifact name, or 'pytorch-eager:<source>' for the baseline.")
    format: str = Field(description="'onnx', 'executorch', ... or 'pytorch'.")
    runtime: str = Field(description="Runtime name and version.")
    artifact: str | None = Field(None, description="Artifact folder; None for the baseline.")
    model_kind: str
    precision: str
    random_weights: bool
    threads: int
    runtime_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings the runtime was created with (threads, delegate, execution "
        "provider, compute units), from the artifact's target profile and the command line.",
    )
    model_size_bytes: int = Field(description="Artifact files (or fp32 parameters for PyTorch).")
    load_ms: float
    first_inference_ms: float
    warmup_runs: int
    latency: LatencyStats
    round_medians_ms: list[float] = Field(
        default_factory=list, description="Median of each interleaved round (when rounds > 1)."
    )
    peak_rss_bytes: int = Field(description="Peak resident memory of the measuring process.")
    rss_before_load_bytes: int = Field(description="Resident memory before the model was loaded.")
    speedup_vs_pytorch: float | None = Field(
        None, description="PyTorch eager median / this median, median over rounds; >1 is faster."
    )
    verification_status: str | None = None
    worst_sqnr_db: float | None = None
    top1_agreement: float | None = Field(
        None, description="Classifiers: argmax agreement with PyTorch at export time."
    )
    fp32_weight_bytes: int | None = Field(
        None, description="Parameter count x 4: what the weights take in fp32, for size ratios."
    )

    @property
    def size_vs_fp32(self) -> float | None:
        """How many times smaller than its fp32 weights the artifact is (>1: smaller)."""
        if not self.fp32_weight_bytes or not self.model_size_bytes:
            return None
        return self.fp32_weight_bytes / self.model_size_bytes


class MachineInfo(BaseModel):
    hostname: str
    platform: str
    processor: str
    cpu_count: int
    python: str
    device: str = Field("host", description="'host', or the phone model for device runs.")


class BenchReport(BaseModel):
    schema_version: str = BENCH_SCHEMA_VERSION
    created_utc: str
    edgekit_version: str
    machine: MachineInfo
    settings: dict[str, Any]
    results: list[BenchResult]
    notes: list[str] = Field(
        default_factory=list, description="What could not be measured, and why."
    )


def bench_json_schema() -> dict[str, Any]:
    return json_schema(BenchReport, name="bench", version=BENCH_SCHEMA_VERSION)


def write_schema(path: Path = SCHEMA_PATH) -> None:
    write_json_schema(bench_json_schema(), path)


if __name__ == "__main__":
    write_schema()
