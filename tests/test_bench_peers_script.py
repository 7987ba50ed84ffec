"""benchmarks/bench_peers.py: its verdicts and findings, and (slow) a rehearsal end to end."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import host_formats
from tests.test_bench_compute import PLAUSIBLE_PEAK_GFLOPS

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "bench_peers.py"
# fp32 exports of the same module on any runtime agree with PyTorch to ~1e-6 (100+ dB); a wrong
# input order, layout or output index gives 0 dB or less.
FP32_SQNR_FLOOR_DB = 60.0


def _load_script():
    spec = importlib.util.spec_from_file_location("bench_peers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


peers = _load_script()


@pytest.mark.parametrize(
    ("rounds", "verdict"),
    [
        ([1.20, 1.30, 1.10], "faster"),
        ([0.80, 0.85, 0.90], "slower"),
        ([0.90, 1.10, 0.95], "same"),  # rounds disagree
        ([1.02, 1.03, 1.04], "same"),  # consistent, but within the noise band
    ],
)
def test_ratio_verdict_needs_every_round_and_a_margin(rounds, verdict):
    assert peers._ratio_summary(rounds, reliable=True)["verdict"] == verdict


def test_no_bare_ratio_from_an_unreliable_row():
    unreliable = peers._ratio_summary([2.0, 2.1, 2.2], reliable=False)
    assert peers._x(unreliable) == "unreliable (rounds 2.00, 2.10, 2.20)"
    reliable = peers._ratio_summary([2.0, 2.1, 2.2], reliable=True)
    assert peers._x(reliable) == "2.10x (faster; rounds 2.00, 2.10, 2.20)"


def _comparison(same, setup=None, file=None, identical=False):
    def summary(rounds):
        return peers._ratio_summary(rounds, reliable=True) if rounds else None

    return {
        "edgekit_vs_peer_same_threads": summary(same),
        "edgekit_vs_peer_default_threads": None,
        "setup_effect_edgekit_file": summary(setup),
        "file_effect_edgekit_setup": summary(file),
        "files_identical": identical,
    }


def test_findings_say_whether_the_file_or_the_setup_makes_edgekit_slower():
    record = {
        "exports": {"onnx": {}, "tflite": {}, "executorch": {"peer": {"error": "ValueError: x"}}},
        "comparisons": {
            # Slower, and edgekit's own file runs faster set up the peer's way: the set-up.
            "onnx": _comparison([0.80, 0.82, 0.85], setup=[0.79, 0.80, 0.84], file=[1.0, 1.01]),
            "tflite": _comparison([1.0, 1.01, 0.99], identical=True),
            "executorch": _comparison(None),
        },
    }

    lines = peers.findings(record)

    assert lines[0].startswith("onnx: edgekit is SLOWER than the peer at the same threads (0.82x)")
    assert "the runtime set-up (edgekit's file runs 1.25x faster set up the peer's way)" in lines[0]
    assert "the peer's file runs" not in lines[0]
    assert lines[1] == "tflite: edgekit is as fast as the peer at the same threads (1.00x)."
    assert lines[2] == "executorch: no comparison (ValueError: x)."


def test_unknown_format_is_one_line_and_writes_nothing(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--formats", "onnx,coreml", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith("unknown format(s) coreml; known: onnx, executorch, tflite")
    )
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


# Exports tiny-mobilevit six times (edgekit's and each peer's) and times 15 variants: minutes.
@pytest.mark.slow
def test_rehearsal_on_tiny_mobilevit(tmp_path):
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--preset",
            "tiny-mobilevit",
            "--rounds",
            "2",
            "--runs",
            "3",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads(next(tmp_path.glob("peers-tiny-mobilevit-*.json")).read_text())
    formats = [f for f in peers.FORMATS if f in host_formats()]
    assert sorted(record["comparisons"]) == sorted(formats)
    failed = [(row["key"], row.get("error")) for row in record["rows"] if row["status"] != "ok"]
    assert failed == []
    for fmt in formats:
        kinds = {(row["file"], row["setup"]) for row in record["rows"] if row["format"] == fmt}
        assert {("edgekit", "edgekit"), ("peer", "default")} <= kinds
    for row in record["rows"]:
        assert row["sqnr_db"] >= FP32_SQNR_FLOOR_DB, row["key"]
        assert len(row["round_medians_ms"]) == 2, row["key"]
    from edgekit import models
    from edgekit.bench.compute import loaded_model_flops

    model = models.load("tiny-mobilevit")
    assert record["flops"] == loaded_model_flops(model, model.sample_inputs(0))
    low, high = PLAUSIBLE_PEAK_GFLOPS
    assert low <= record["host_fp32_peak_gflops"] <= high
    text = next(tmp_path.glob("peers-tiny-mobilevit-*.md")).read_text()
    findings = text.split("## Findings")[1]
    assert all(f"- {fmt}:" in findings for fmt in formats)
