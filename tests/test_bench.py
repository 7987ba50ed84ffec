"""`edgekit bench`: per-process measurements, the PyTorch baseline, reports and their schema."""

from __future__ import annotations

import json

import jsonschema
import pytest
from typer.testing import CliRunner

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
        assert result.latency.median_ms > 0 and result.load_ms > 0
        assert result.first_inference_ms > 0
        assert result.peak_rss_bytes >= result.rss_before_load_bytes > 0
        assert result.model_size_bytes > 0
        assert result.random_weights
        if result.format == "pytorch":
            assert result.speedup_vs_pytorch is None
        else:
            assert result.speedup_vs_pytorch > 0 and result.verification_status == "verified"


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
    assert data["schema_version"] == "1.0"
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
