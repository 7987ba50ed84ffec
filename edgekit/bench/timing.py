"""The timing loop and the statistics of its samples.

load, first inference, warm-up, then timed runs until both a count and a time are met. The
statistics say how far the samples can be trusted: a confidence interval for the median, and a
reliability verdict from the spread (a shared machine shows up as a long tail and rounds that
disagree long before it shows up in the median).
"""

from __future__ import annotations

import math
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.bench.schema import LatencyStats, Reliability

# Percentiles are reported only where enough samples lie above them: p90 from 10 runs, p99 from
# 100 (below that the "p99" is just the maximum, one outlier).
MIN_RUNS_FOR = {"p90": 10, "p99": 100}
# Bounded reservoir of raw samples kept in a report.
MAX_KEPT_SAMPLES = 1000

# When a measurement stops being trustworthy. On an idle machine a CPU model's runs vary by a
# few percent; the outside review that asked for this saw p90/p50 = 11 and speed-ups that
# changed on every run on a busy 2-core machine.
UNRELIABLE_CV = 0.25
UNRELIABLE_P90_OVER_P50 = 1.5
UNRELIABLE_ROUND_SPREAD = 0.25  # (max - min) / median of the per-round medians


@dataclass
class TimingSettings:
    warmup_runs: int = 5
    min_runs: int = 100
    # Keep running past min_runs until this much time has been spent timing, for fast models
    # whose percentiles need more samples.
    min_time_s: float = 0.0
    # Stop a slow model early: at most this many seconds of timed runs once 10 runs are done
    # (so a 2 s UNet does not take 200 s for the default 100 runs; p99 is then omitted).
    max_time_s: float = 30.0


def summarize(samples_ms: list[float]) -> LatencyStats:
    ordered = sorted(samples_ms)
    n = len(ordered)
    mean = statistics.fmean(ordered)
    std = statistics.pstdev(ordered) if n > 1 else 0.0
    return LatencyStats(
        runs=n,
        median_ms=statistics.median(ordered),
        median_ci95_ms=median_confidence_interval(ordered),
        p90_ms=_percentile(ordered, 0.90) if n >= MIN_RUNS_FOR["p90"] else None,
        p99_ms=_percentile(ordered, 0.99) if n >= MIN_RUNS_FOR["p99"] else None,
        mean_ms=mean,
        std_ms=std,
        trimmed_mean_ms=trimmed_mean(ordered, 0.1),
        cv=std / mean if mean > 0 else None,
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


def trimmed_mean(ordered: list[float], proportion: float) -> float:
    """Mean after dropping `proportion` of the samples from each end (scipy's trim_mean)."""
    cut = int(proportion * len(ordered))
    kept = ordered[cut : len(ordered) - cut] or ordered
    return statistics.fmean(kept)


def median_confidence_interval(
    ordered: list[float], confidence: float = 0.95
) -> tuple[float, float] | None:
    """Distribution-free interval for the median: the order statistics at ranks j and k with
    P(j <= B < k) >= confidence for B ~ Binomial(n, 1/2). Timing samples are skewed (a long
    right tail), so no normal approximation. None below 6 samples, where even the full range
    covers the median with less than 95%."""
    n = len(ordered)
    if n < 6:
        return None
    # Cumulative binomial(n, 1/2) probabilities; choose the widest symmetric trim that keeps
    # the coverage: coverage of [x_(j), x_(n-j+1)] (1-based) is 1 - 2 * P(B <= j - 1).
    tail = (1.0 - confidence) / 2.0
    cumulative = 0.0
    j = 0  # number of samples dropped from each end
    for i in range(n):
        # integer / integer: exact and correctly rounded, where 2.0**n overflows from n = 1024
        cumulative += math.comb(n, i) / (1 << n)
        if cumulative > tail:
            break
        j = i + 1
    j = max(j, 1)
    return ordered[j - 1], ordered[n - j]


def reliability(
    stats: LatencyStats, round_medians: list[float], samples_ms: list[float] | None = None
) -> Reliability:
    """Unreliable when the spread says so. The CV is taken over the middle 80% of the samples
    when they are given: one garbage-collection pause in 100 runs should not condemn a row, a
    machine that is busy half the time should."""
    reasons = []
    cv = _trimmed_cv(sorted(samples_ms)) if samples_ms else stats.cv
    if cv is not None and cv > UNRELIABLE_CV:
        reasons.append(f"CV {cv:.0%} > {UNRELIABLE_CV:.0%}")
    if stats.p90_ms is not None and stats.p90_ms > UNRELIABLE_P90_OVER_P50 * stats.median_ms:
        reasons.append(f"p90/p50 {stats.p90_ms / stats.median_ms:.2f} > {UNRELIABLE_P90_OVER_P50}")
    if len(round_medians) > 1:
        spread = (max(round_medians) - min(round_medians)) / statistics.median(round_medians)
        if spread > UNRELIABLE_ROUND_SPREAD:
            reasons.append(f"rounds disagree by {spread:.0%}")
    return Reliability(reliable=not reasons, reasons=reasons)


def _trimmed_cv(ordered: list[float]) -> float | None:
    cut = int(0.1 * len(ordered))
    kept = ordered[cut : len(ordered) - cut] or ordered
    mean = statistics.fmean(kept)
    return statistics.pstdev(kept) / mean if mean > 0 and len(kept) > 1 else None


def reservoir(samples: list[float], limit: int = MAX_KEPT_SAMPLES, seed: int = 0) -> list[float]:
    """All samples in order, or a uniform random subset of `limit` of them (order kept)."""
    if len(samples) <= limit:
        return list(samples)
    keep = sorted(random.Random(seed).sample(range(len(samples)), limit))
    return [samples[i] for i in keep]


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (since the last `reset_peak_rss`).

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


def reset_peak_rss() -> bool:
    """Start VmHWM afresh from the current RSS (Linux >= 4.0: write 5 to clear_refs), so the
    peak measures loading and running the model, not the imports before it. False where the
    kernel or OS does not allow it; the peak then includes the imports."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def current_rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


@dataclass
class Timing:
    load_ms: float
    first_inference_ms: float
    samples_ms: list[float]
    rss_after_imports_bytes: int
    peak_rss_bytes: int
    peak_is_since_imports: bool


def time_model(
    load: Callable[[], Callable[[Any], Any]], inputs: Any, settings: TimingSettings
) -> Timing:
    """Time `load()`, the first call of what it returns, warm-up calls, then timed calls."""
    peak_reset = reset_peak_rss()
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
    while True:
        elapsed = time.perf_counter() - timing_started
        enough = len(samples) >= settings.min_runs and elapsed >= settings.min_time_s
        out_of_time = len(samples) >= MIN_RUNS_FOR["p90"] and elapsed >= settings.max_time_s
        if enough or out_of_time:
            break
        started = time.perf_counter()
        run(inputs)
        samples.append((time.perf_counter() - started) * 1e3)
    return Timing(load_ms, first_ms, samples, rss_before, peak_rss_bytes(), peak_reset)
