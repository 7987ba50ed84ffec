"""Benchmarks of exported artifacts on host runtimes, against the PyTorch eager baseline."""

from __future__ import annotations

from edgekit.bench.runner import BenchError, BenchSettings, run_bench
from edgekit.bench.schema import BenchReport, BenchResult
from edgekit.bench.timing import TimingSettings

__all__ = [
    "BenchError",
    "BenchReport",
    "BenchResult",
    "BenchSettings",
    "TimingSettings",
    "run_bench",
]
