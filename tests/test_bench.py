"""`edgekit bench`: per-process measurements, the PyTorch baseline, reports and their schema."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from edgekit import models
from edgekit.artifact import read_manifest
from edgekit.bench import TimingSettings, run_bench
from edgekit.bench.report import markdown
from edgekit.bench.schema import SCHEMA_PATH, BenchReport
from edgekit.bench.timing import summarize, time_model
from edgekit.cli import app

runner = CliRunner()
FEW_RUNS = TimingSettings(warmup_runs=1, min_runs=3)


def test_summary_statistics():
    stats = summarize([float(v) for v in range(1, 101)])
    assert stats.runs == 100 and stats.median_ms == 50.5
    assert stats.p90_ms == pytest.approx(90.1) and stats.p99_ms == pytest.approx(99.01)
    assert stats.min_ms == 1 and stats.max_ms == 100


def test_time_model_counts_runs_and_honours_min_time():
    calls = []
    timing = time_model(lambda: calls.append, None, TimingSettings(warmup_runs=2, min_runs=5))
    # one first inference, two warm-ups, five timed runs
    assert len(calls) == 8 and len(timing.samples_ms) == 5
    timing = time_model(
        lambda: calls.append, None, TimingSettings(warmup_runs=0, min_runs=1, min_time_s=0.02)
    )
    assert len(timing.samples_ms) > 1


@pytest.fixture(scope="module")
def report(mobilevit_artifacts) -> BenchReport:
    return run_bench(list(mobilevit_artifacts.values()), threads=1, timing=FEW_RUNS, rounds=2)


def test_report_has_baseline_and_every_artifact(report, mobilevit_artifacts):
    formats = sorted(r.format for r in report.results)
    assert formats == sorted(["pytorch", *mobilevit_artifacts])
    for result in report.results:
        assert result.latency.runs == FEW_RUNS.min_runs * 2  # both rounds pooled
        assert len(result.round_medians_ms) == 2
        latency = result.latency
        assert latency.min_ms <= latency.median_ms <= latency.p90_ms <= latency.p99_ms
        assert latency.p99_ms <= latency.max_ms
        # A process that imported a runtime holds well over 50 MiB: a VmHWM read in the wrong
        # unit (kB as bytes) would not.
        assert result.peak_rss_bytes >= result.rss_before_load_bytes > 50 * 2**20
        assert result.random_weights
    baseline = next(r for r in report.results if r.format == "pytorch")
    parameters = models.load("tiny-mobilevit").module.parameters()
    assert baseline.model_size_bytes == sum(p.numel() * p.element_size() for p in parameters)
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
        assert result.model_size_bytes <= sum(f.size_bytes for f in manifest.files)
        assert result.verification_status == "verified"
        # The speed-up is the median over rounds of baseline median / artifact median.
        ratios = [
            b / a for b, a in zip(baseline.round_medians_ms, result.round_medians_ms, strict=True)
        ]
        assert result.speedup_vs_pytorch == pytest.approx(statistics.median(ratios))


def test_report_validates_against_committed_schema(report):
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validate(json.loads(report.model_dump_json()), schema)


def test_markdown_report_states_machine_and_random_weights(report):
    text = markdown(report)
    assert report.machine.processor in text
    assert "RANDOM" in text
    assert text.count("\n| ") == len(report.results) + 1  # header + one row per variant


def test_cli_bench_writes_json(mobilevit_artifacts, tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        [
            "bench",
            str(mobilevit_artifacts["onnx"]),
            "--threads",
            "1",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["schema_version"] == "1.1"
    assert {r["format"] for r in data["results"]} == {"onnx", "pytorch"}
    assert "p90" in result.output and "vs PyTorch" in result.output


def test_missing_source_costs_only_the_baseline(mobilevit_folder, tmp_path):
    import shutil

    from edgekit import models
    from edgekit.export import export_artifact

    source = tmp_path / "movable"
    shutil.copytree(mobilevit_folder, source)
    folder, _ = export_artifact(models.load(source), "onnx", tmp_path / "out")
    shutil.rmtree(source)
    report = run_bench([folder], threads=1, timing=FEW_RUNS)
    assert [r.format for r in report.results] == ["onnx"]
    assert "No PyTorch baseline" in report.notes[0]


def test_bad_settings_are_refused(mobilevit_artifacts):
    result = runner.invoke(app, ["bench", str(mobilevit_artifacts["onnx"]), "--threads", "0"])
    assert result.exit_code != 0 and "--threads" in result.output
