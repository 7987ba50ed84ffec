"""The scripts in benchmarks/ run end to end (on tiny presets, few runs) and write their records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import host_formats

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        check=True,
    )


# The benchmark scripts' rehearsals export and time every format: minutes on 2 cores, and they
# check scripts, not the product (whose paths the default run covers). Run with -m slow.
@pytest.mark.slow
def test_format_comparison_script(tmp_path):
    _run(
        "bench_mobilevit.py",
        "--preset",
        "tiny-mobilevit",
        "--rounds",
        "2",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--results-dir",
        str(tmp_path),
    )
    record = json.loads(next(tmp_path.glob("tiny-mobilevit-*.json")).read_text())
    formats = sorted(r["format"] for r in record["results"])
    assert formats == sorted(["pytorch", *host_formats()])
    assert all(len(r["round_medians_ms"]) == 2 for r in record["results"])
    assert next(tmp_path.glob("tiny-mobilevit-*.md")).read_text().count("| tiny-mobilevit-") == len(
        host_formats()
    )


@pytest.mark.slow
def test_fullsize_script_records_exports_and_refusals(tmp_path):
    # A target the exporter refuses (ONNX has no fp16 layers) is recorded with its reason,
    # beside a format that exports; the refusal is the expected result, not a crash.
    refused = tmp_path / "onnx-fp16.toml"
    refused.write_text('name = "onnx-fp16"\nformat = "onnx"\nprecision = "fp16"\n')
    _run(
        "bench_fullsize_export.py",
        "--preset",
        "tiny-sd",
        "--formats",
        "onnx",
        str(refused),
        "--results-dir",
        str(tmp_path),
    )
    record = json.loads(next(tmp_path.glob("fullsize-tiny-sd-*.json")).read_text())
    by_format = {r["format"]: r for r in record["results"]}
    exported, refusal = by_format["onnx"], by_format[str(refused)]
    assert exported["outcome"] == "exported" and exported["status"] == "verified"
    # The child's own peak: a process that loaded torch and onnxruntime holds over 100 MiB.
    assert exported["peak_rss_bytes"] > 100 * 2**20
    assert exported["export_s"] + exported["verify_s"] <= exported["wall_s"]
    assert refusal["outcome"] == "refused" and "ONNX cannot realize fp16" in refusal["error"]
    table = next(tmp_path.glob("fullsize-tiny-sd-*.md")).read_text()
    assert "| refused |" in table and "ONNX cannot realize fp16" in table


@pytest.mark.slow
def test_gpu_dreambooth_script_rehearses_every_variant_on_the_cpu(tmp_path):
    """The GPU benchmark's plumbing, on tiny-sd at 64 px: each variant runs with its own engine
    settings (a variant whose settings were dropped would show the defaults' engine), the timed
    steps are those after the warm-up, and a CPU run records nothing."""
    import ast

    run = _run(
        "bench_dreambooth_gpu.py",
        *("--base", "tiny-sd", "--resolution", "64", "--steps", "3", "--warmup", "1"),
        *("--results-dir", str(tmp_path)),
    )
    rows = [ast.literal_eval(line) for line in run.stdout.splitlines() if line.startswith("{")]
    engines = {row["variant"]: (row["fused_adam"], row["compile_unet"]) for row in rows}
    # On the CPU edgekit's defaults are fused AdamW without a compiled UNet (compiling takes
    # minutes there); on CUDA they compile too, which the GPU run records.
    assert engines == {
        "plain loop": (False, False),
        "fused AdamW": (True, False),
        "edgekit defaults": (True, False),
        "edgekit defaults + gradient checkpointing": (True, False),
        "edgekit defaults, LoRA rank 4": (True, False),
    }
    assert {row["steps_timed"] for row in rows} == {2}
    assert list(tmp_path.iterdir()) == []


def test_gpu_check_carries_the_versions_pyproject_declares():
    """benchmarks/gpu_check.sh downloads pinned wheels for the GPU machine; a pin outside the
    range pyproject.toml declares would have the machine train with a version CI never ran."""
    import re
    import tomllib

    from packaging.requirements import Requirement

    script = (BENCHMARKS / "gpu_check.sh").read_text()
    carried = re.search(r"WHEELS_NEEDED=\(\n(.*?)\n\)", script, re.S).group(1).split()
    pins = dict(pin.lower().split("==") for pin in carried)
    declared = {
        requirement.name.lower(): requirement.specifier
        for requirement in map(
            Requirement,
            tomllib.loads((BENCHMARKS.parent / "pyproject.toml").read_text())["project"][
                "dependencies"
            ],
        )
    }
    checked = {name: pins[name] for name in pins if name in declared}
    assert {"diffusers", "pydantic", "peft"} <= set(checked)
    outside = {name: v for name, v in checked.items() if v not in declared[name]}
    assert outside == {}, f"gpu_check.sh pins outside pyproject.toml's ranges: {outside}"
