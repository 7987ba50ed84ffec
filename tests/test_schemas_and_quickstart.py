"""Committed JSON Schemas match the typed models; quickstart runs end to end on a tiny preset."""

from __future__ import annotations

import json
import statistics

import jsonschema
import pytest
from typer.testing import CliRunner

from edgekit.artifact import SCHEMA_PATH as MANIFEST_SCHEMA_PATH
from edgekit.artifact import manifest_json_schema
from edgekit.bench.schema import SCHEMA_PATH as BENCH_SCHEMA_PATH
from edgekit.bench.schema import bench_json_schema
from edgekit.cli import app
from edgekit.exporters import format_names
from edgekit.quant.plan import SCHEMA_PATH as PLAN_SCHEMA_PATH
from edgekit.quant.plan import plan_json_schema
from tests.conftest import host_formats

runner = CliRunner()


def test_committed_schemas_are_current():
    # Regenerate with: python -m edgekit.artifact && python -m edgekit.bench.schema
    # && python -m edgekit.quant.plan
    assert json.loads(PLAN_SCHEMA_PATH.read_text()) == json.loads(
        json.dumps(plan_json_schema(), sort_keys=True)
    )
    assert json.loads(MANIFEST_SCHEMA_PATH.read_text()) == json.loads(
        json.dumps(manifest_json_schema(), sort_keys=True)
    )
    assert json.loads(BENCH_SCHEMA_PATH.read_text()) == json.loads(
        json.dumps(bench_json_schema(), sort_keys=True)
    )


def test_session_manifests_validate(mobilevit_artifacts):
    schema = json.loads(MANIFEST_SCHEMA_PATH.read_text())
    for folder in mobilevit_artifacts.values():
        jsonschema.validate(json.loads((folder / "manifest.json").read_text()), schema)


def test_schema_rejects_a_broken_manifest(mobilevit_artifacts):
    schema = json.loads(MANIFEST_SCHEMA_PATH.read_text())
    manifest = json.loads((mobilevit_artifacts["onnx"] / "manifest.json").read_text())
    del manifest["components"][0]["verification"]
    validator = jsonschema.Draft202012Validator(schema)
    assert any("verification" in e.message for e in validator.iter_errors(manifest))


def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs"
    result = runner.invoke(
        app,
        [
            "quickstart",
            "--preset",
            "tiny-mobilevit",
            "--out",
            str(out),
            "--runs",
            "3",
            "--rounds",
            "2",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output
    report = (out / "report.md").read_text()
    assert "Weights are random" in report
    for format_name in format_names():
        precision = "fp16" if format_name == "coreml" else "fp32"
        assert (out / f"tiny-mobilevit-{format_name}-{precision}" / "manifest.json").is_file()
    for format_name in host_formats():
        assert f"| {format_name} |" in report
    # Core ML cannot run on Linux: the report says so instead of timing it.
    if "coreml" not in host_formats():
        assert "not benchmarked: Core ML models can only run on macOS/iOS" in report
    bench = json.loads((out / "bench.json").read_text())
    baseline = next(r for r in bench["results"] if r["format"] == "pytorch")
    artifacts = [r for r in bench["results"] if r["format"] != "pytorch"]
    assert len(artifacts) == len(host_formats())
    page = (out / "bench-report" / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 2  # latency distribution, size/fidelity
    for result in artifacts:  # median over rounds of baseline median / artifact median
        if result["speedup_vs_pytorch"] is None:  # a busy machine: none from a noisy side
            assert not (result["reliability"]["reliable"] and baseline["reliability"]["reliable"])
            continue
        ratios = [
            b / a
            for b, a in zip(baseline["round_medians_ms"], result["round_medians_ms"], strict=True)
        ]
        assert result["speedup_vs_pytorch"] == pytest.approx(statistics.median(ratios))
