"""`edgekit bench`: per-process measurements, methodology (pinning, timeouts, memory, spread),
sweeps, compute efficiency, the PyTorch baseline, and the report schema."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from edgekit import models
from edgekit.artifact import read_manifest
from edgekit.bench import BenchSettings, TimingSettings, run_bench
from edgekit.bench import runner as bench_runner
from edgekit.bench.schema import SCHEMA_PATH, BenchReport
from edgekit.bench.timing import (
    median_confidence_interval,
    reliability,
    reservoir,
    summarize,
    time_model,
)
from edgekit.cli import app

runner = CliRunner()
FEW_RUNS = TimingSettings(warmup_runs=1, min_runs=3)


def test_summary_statistics_and_when_percentiles_are_given():
    stats = summarize([float(v) for v in range(1, 101)])
    assert stats.runs == 100 and stats.median_ms == 50.5
    assert stats.p90_ms == pytest.approx(90.1) and stats.p99_ms == pytest.approx(99.01)
    assert stats.min_ms == 1 and stats.max_ms == 100
    assert stats.trimmed_mean_ms == pytest.approx(50.5)  # 11..90
    # Ranks 40 and 61 of 100: the textbook distribution-free 95% interval for the median.
    assert stats.median_ci95_ms == (40.0, 61.0)
    assert median_confidence_interval([float(v) for v in range(1, 21)]) == (6.0, 15.0)
    assert median_confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    # From 1024 runs 2.0**n overflows a float; the interval must still come out, where the
    # normal approximation puts it (n/2 -+ 1.96 sqrt(n)/2: ranks 518 and 583 of 1100).
    assert median_confidence_interval([float(v) for v in range(1, 1101)]) == (518.0, 583.0)
    # Below 100 runs the "p99" would be the maximum: not reported. p90 needs 10.
    assert summarize([float(v) for v in range(99)]).p99_ms is None
    assert summarize([float(v) for v in range(9)]).p90_ms is None
    # A trimmed mean ignores the outliers a plain mean follows.
    skewed = summarize([10.0] * 18 + [1000.0] * 2)
    assert skewed.trimmed_mean_ms == 10.0 and skewed.mean_ms == 109.0


def test_reliability_flags_spread_and_disagreeing_rounds():
    steady = [10.0 + 0.01 * (i % 7) for i in range(100)]
    assert reliability(summarize(steady), [10.0, 10.02], steady).reliable
    # One pause in 100 runs does not condemn a row (CV over the middle 80%) ...
    one_pause = steady[:99] + [500.0]
    assert reliability(summarize(one_pause), [], one_pause).reliable
    # ... a machine busy a third of the time does.
    busy = [10.0] * 60 + [40.0] * 40
    verdict = reliability(summarize(busy), [], busy)
    assert not verdict.reliable and any("p90/p50" in r for r in verdict.reasons)
    verdict = reliability(summarize(steady), [10.0, 14.0], steady)
    assert not verdict.reliable and verdict.reasons == ["rounds disagree by 33%"]


def test_no_speedup_from_an_unreliable_side():
    def rounds(*medians):
        return [{"samples_ms": [m] * 20} for m in medians]

    assert bench_runner.speedup_vs_baseline(rounds(2.0, 2.0), rounds(8.0, 7.0)) == 3.75
    noisy = [{"samples_ms": [1.0] * 10 + [5.0] * 10}]
    assert bench_runner.speedup_vs_baseline(noisy, rounds(8.0)) is None
    assert bench_runner.speedup_vs_baseline(rounds(2.0), noisy) is None


def test_reservoir_keeps_order_and_bounds_size():
    samples = [float(i) for i in range(5000)]
    kept = reservoir(samples, limit=100)
    assert len(kept) == 100 and kept == sorted(kept) and set(kept) <= set(samples)
    assert reservoir(samples[:10], limit=100) == samples[:10]


def test_time_model_counts_runs_and_stops_slow_models():
    calls = []
    timing = time_model(lambda: calls.append, None, TimingSettings(warmup_runs=2, min_runs=5))
    # one first inference, two warm-ups, five timed runs
    assert len(calls) == 8 and len(timing.samples_ms) == 5
    timing = time_model(
        lambda: calls.append, None, TimingSettings(warmup_runs=0, min_runs=1, min_time_s=0.02)
    )
    assert len(timing.samples_ms) > 1
    # A slow model stops at max_time once it has 10 runs, not after min_runs.
    timing = time_model(
        lambda: lambda _: time.sleep(0.002),
        None,
        TimingSettings(warmup_runs=0, min_runs=10_000, max_time_s=0.05),
    )
    assert 10 <= len(timing.samples_ms) < 100


def test_busy_machine_is_warned_about(monkeypatch):
    monkeypatch.setattr("psutil.cpu_percent", lambda interval: 80.0)
    assert "busy" in bench_runner.busy_machine_warning(0)
    monkeypatch.setattr("psutil.cpu_percent", lambda interval: 3.0)
    assert bench_runner.busy_machine_warning(0) is None


@pytest.fixture(scope="module")
def report(mobilevit_artifacts) -> BenchReport:
    return run_bench(
        list(mobilevit_artifacts.values()),
        timing=FEW_RUNS,
        settings=BenchSettings(threads=[1], rounds=2),
    )


def test_report_has_baseline_and_every_artifact(report, mobilevit_artifacts):
    formats = sorted(r.format for r in report.results)
    assert formats == sorted(["pytorch", *mobilevit_artifacts])
    for result in report.results:
        assert result.status == "ok" and result.batch == 1 and result.threads == 1
        assert result.latency.runs == FEW_RUNS.min_runs * 2  # both rounds pooled
        assert len(result.round_medians_ms) == 2 and len(result.samples_ms) == 6
        latency = result.latency
        assert latency.min_ms <= latency.median_ms <= latency.max_ms
        assert latency.p90_ms is None and latency.p99_ms is None  # 6 runs: too few
        assert result.throughput_per_s == pytest.approx(1000.0 / latency.median_ms)
        # Every process ran on the same core, as the report says.
        assert result.runtime.settings["cpu_affinity"] == bench_runner.cores_for(1)
        assert report.settings["cpu_affinity"]["1"] == bench_runner.cores_for(1)
        memory = result.memory
        # The runtime's imports come before the peak is reset: a process that imported a
        # runtime holds well over 50 MiB, and the increase over it is what the model cost.
        assert memory.rss_after_imports_bytes > 50 * 2**20
        assert memory.increase_bytes <= memory.peak_rss_bytes - memory.rss_after_imports_bytes
        assert result.random_weights
    baseline = next(r for r in report.results if r.format == "pytorch")
    parameters = list(models.load("tiny-mobilevit").module.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in parameters)
    assert baseline.model_size_bytes == weight_bytes
    # The PyTorch load reads the weights into the module, inside the measured window.
    assert baseline.memory.increase_bytes >= weight_bytes
    assert baseline.speedup_vs_pytorch is None
    for result in report.results:
        if result.format == "pytorch":
            continue
        manifest = read_manifest(Path(result.artifact))
        # The model file(s) the app loads; ExecuTorch's layer map (model.layers.json) is a side
        # file for verifying the plan, not shipped weight.
        model_file = manifest.component().model_file
        shipped = [f for f in manifest.files if f.path.startswith(model_file)]
        assert shipped and result.model_size_bytes == sum(f.size_bytes for f in shipped)
        assert result.artifact_sha256 == next(f.sha256 for f in shipped if f.path == model_file)
        assert result.fidelity.verification_status == "verified"
        assert result.runtime.delegate in {"xnnpack", "CPUExecutionProvider"}
        if result.speedup_vs_pytorch is not None:  # both sides steady enough to compare
            ratios = [
                b / a
                for b, a in zip(baseline.round_medians_ms, result.round_medians_ms, strict=True)
            ]
            assert result.speedup_vs_pytorch == pytest.approx(statistics.median(ratios))


def test_compute_efficiency_uses_the_reference_flops_and_the_measured_peak(report):
    from edgekit.bench.compute import loaded_model_flops
    from edgekit.models.base import seeded_inputs

    loaded = models.load("tiny-mobilevit")
    flops = loaded_model_flops(loaded, seeded_inputs(read_manifest_inputs(report), 0))
    assert report.host_peak_gflops["fp32@1"] > 0.5  # a matmul micro-benchmark ran
    for result in report.results:
        compute = result.compute
        assert compute.flops == flops
        assert compute.gflops_per_s == pytest.approx(flops / result.latency.median_ms / 1e6)
        assert compute.peak_kind == "fp32"
        assert compute.peak_fraction == pytest.approx(
            compute.gflops_per_s / report.host_peak_gflops["fp32@1"]
        )


def read_manifest_inputs(report):
    artifact = next(r.artifact for r in report.results if r.artifact)
    return read_manifest(Path(artifact)).component().inputs


def test_report_validates_against_committed_schema(report):
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validate(json.loads(report.model_dump_json()), schema)
    assert set(report.estimators) >= {"median_ms", "median_ci95_ms", "trimmed_mean_ms", "p99_ms"}


def _folder_of(artifacts: dict[str, Path], tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    for path in artifacts.values():
        (folder / path.name).symlink_to(path, target_is_directory=True)
    return folder


def test_cli_sweeps_threads_and_batches_over_a_folder_of_artifacts(mobilevit_artifacts, tmp_path):
    folder = _folder_of({"onnx": mobilevit_artifacts["onnx"]}, tmp_path)
    exported = runner.invoke(
        app, ["export", "tiny-mobilevit", "--target", "onnx", "--batch-size", "2", "--out",
              str(folder)],
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    assert (folder / "tiny-mobilevit-onnx-fp32-b2").is_dir()  # beside batch 1, not over it
    out = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        ["bench", str(folder), "--threads", "1,2", "--batch", "1,2,4", "--runs", "3",
         "--warmup", "1", "--no-compute", "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = BenchReport.model_validate_json(out.read_text())
    rows = {(r.format, r.threads, r.batch) for r in data.results}
    assert rows == {
        (fmt, threads, batch) for fmt in ("onnx", "pytorch") for threads in (1, 2)
        for batch in (1, 2)
    }  # fmt: skip
    for r in data.results:
        assert r.throughput_per_s == pytest.approx(r.batch * 1000 / r.latency.median_ms)
    # Batch 4 was asked for but no artifact takes it: said plainly, with the way to get one.
    assert any("batch 4" in n and "--batch-size" in n for n in data.notes)
    assert "--batch-size" in result.output.replace("\n", "")


def test_cli_profile_ops_shows_top_ops_or_says_why_not(mobilevit_artifacts, tmp_path):
    out = tmp_path / "ops.json"
    result = runner.invoke(
        app,
        ["bench", str(mobilevit_artifacts["onnx"]), str(mobilevit_artifacts["tflite"]),
         "--threads", "1", "--runs", "3", "--no-pytorch", "--no-compute", "--profile-ops",
         "--profile-runs", "2", "--top", "4", "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {r.format: r for r in BenchReport.model_validate_json(out.read_text()).results}
    profile = rows["onnx"].op_profile
    assert profile.runs == 2 and sum(op.share for op in profile.ops) == pytest.approx(1.0)
    assert "top 4 ops" in result.output and "conv_stem" in result.output
    assert rows["tflite"].op_profile is None
    assert "does not expose per-op profiling" in rows["tflite"].op_profile_note
    assert "no per-op profile for tiny-mobilevit-tflite-fp32" in result.output


def test_a_crashing_artifact_is_a_row_and_the_others_are_measured(mobilevit_artifacts, tmp_path):
    broken = tmp_path / "broken-onnx"
    shutil.copytree(mobilevit_artifacts["onnx"], broken)
    model_file = broken / read_manifest(broken).component().model_file
    model_file.write_bytes(b"not an onnx model")
    report = run_bench(
        [broken, mobilevit_artifacts["tflite"]],
        timing=FEW_RUNS,
        settings=BenchSettings(threads=[1], pytorch_baseline=False, compute=False),
    )
    by_format = {r.format: r for r in report.results}
    assert by_format["tflite"].status == "ok" and by_format["tflite"].latency.runs == 3
    assert by_format["onnx"].status in {"crashed", "error"} and by_format["onnx"].latency is None
    assert "tiny-mobilevit-onnx-fp32" in by_format["onnx"].error


def test_a_hanging_worker_is_stopped_and_reported(mobilevit_artifacts, tmp_path):
    json_out = tmp_path / "r.json"
    result = runner.invoke(
        app,
        # A worker that would time for a minute, stopped after 3 s: a hang, deterministically.
        ["bench", str(mobilevit_artifacts["onnx"]), "--threads", "1", "--min-time", "60",
         "--max-time", "120", "--timeout", "3", "--no-pytorch", "--no-compute", "--json",
         str(json_out)],
    )  # fmt: skip
    # The report is written with the row that timed out, and the exit code says it failed.
    assert result.exit_code == 5, result.output
    (row,) = BenchReport.model_validate_json(json_out.read_text()).results
    assert row.status == "timed-out" and "did not finish within 3 s" in row.error


def test_missing_source_costs_only_the_baseline(mobilevit_folder, tmp_path):
    from edgekit.export import export_artifact

    source = tmp_path / "movable"
    shutil.copytree(mobilevit_folder, source)
    folder, _ = export_artifact(models.load(source), "onnx", tmp_path / "out")
    shutil.rmtree(source)
    report = run_bench([folder], timing=FEW_RUNS, settings=BenchSettings(threads=[1]))
    assert [r.format for r in report.results] == ["onnx"]
    assert any("No PyTorch baseline" in note for note in report.notes)


def test_bad_settings_and_folders_are_refused(mobilevit_artifacts, tmp_path):
    for option, value in [("--threads", "0"), ("--threads", "1,x"), ("--batch", "four")]:
        result = runner.invoke(app, ["bench", str(mobilevit_artifacts["onnx"]), option, value])
        assert result.exit_code == 2 and option in result.output, result.output
        assert "Traceback" not in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["bench", str(empty)])
    assert result.exit_code == 5 and "has no manifest.json" in result.output
