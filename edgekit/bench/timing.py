"""The timing loop: load, first inference, warm-up, then timed runs until count and time are met."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.bench.schema import LatencyStats


@dataclass
class TimingSettings:
    warmup_runs: int = 3
    min_runs: int = 20
    # Keep running past min_runs until this much time has been spent timing, for fast models
    # whose percentiles need more samples.
    min_time_s: float = 0.0


def summarize(samples_ms: list[float]) -> LatencyStats:
    ordered = sorted(samples_ms)
    return LatencyStats(
        runs=len(ordered),
        median_ms=statistics.median(ordered),
        p90_ms=_percentile(ordered, 0.90),
        p99_ms=_percentile(ordered, 0.99),
        mean_ms=statistics.fmean(ordered),
        std_ms=statistics.pstdev(ordered) if len(ordered) > 1 else 0.0,
        min_ms=ordered[0],
        max_ms=ordered[-1],
    )


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process.

    On Linux, VmHWM of the current address space: getrusage's ru_maxrss survives fork+exec, so a
    worker started by a process that held a big model would report the parent's peak instead.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def current_rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


@dataclass
class Timing:
    load_ms: float
    first_inference_ms: float
    samples_ms: list[float]
    rss_before_load_bytes: int
    peak_rss_bytes: int


def time_model(
    load: Callable[[], Callable[[Any], Any]], inputs: Any, settings: TimingSettings
) -> Timing:
    """Time `load()`, the first call of what it returns, warm-up calls, then timed calls."""
    rss_before = current_rss_bytes()
    started = time.perf_counter()
    run = load()
    load_ms = (time.perf_counter() - started) * 1e3

    started = time.perf_counter()
    run(inputs)
    first_ms = (time.perf_counter() - started) * 1e3

    for _ in range(settings.warmup_runs):
        run(inputs)

    samples: list[float] = []
    timing_started = time.perf_counter()
    while len(samples) < settings.min_runs or (
        time.perf_counter() - timing_started < settings.min_time_s
    ):
        started = time.perf_counter()
        run(inputs)
        samples.append((time.perf_counter() - started) * 1e3)
    return Timing(load_ms, first_ms, samples, rss_before, peak_rss_bytes())
