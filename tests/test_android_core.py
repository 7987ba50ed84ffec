"""The Android app's pure-Kotlin core, compiled and tested here on the JVM.

android-demo/core/jvm-test.sh compiles `dev.edgekit.core` and its JUnit tests with kotlinc and
runs them: they read the contract vectors (tests/contract) and must reproduce edgekit's tensors
to 1e-6 and its token ids exactly. One of them writes a bench report as the app does; edgekit's
own ingest (JSON Schema + pydantic) must accept it, and its statistics must be edgekit's.

A missing toolchain fails with what to install: skipping would let the core rot unseen.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from edgekit.bench.ingest import load_report
from edgekit.bench.schema import BENCH_SCHEMA_VERSION, ESTIMATORS
from edgekit.bench.timing import reliability, summarize

REPO = Path(__file__).resolve().parent.parent
JVM_TEST = REPO / "android-demo" / "core" / "jvm-test.sh"
# Compiling the core and its tests takes about 45 s on 2 cores; a hung JVM must not hang CI.
JVM_TEST_TIMEOUT_S = 600
# jvm-test.sh's exit code when a tool is missing.
MISSING_TOOL_EXIT = 3
# Both sides round exact sums and square roots once (fsum, exact pstdev); JSON keeps 17 digits.
STATS_RTOL = 1e-12
# What BenchReportWriterTest.writesASchemaReportWithDeviceRows feeds the writer (bench schema
# 2.1's device fields); the report must carry them in those fields, not in `settings`.
FED_SOC = "Google Tensor G3"
FED_THERMAL = ("none", "moderate")
FED_WINDOW_MEDIANS_MS = [30.0, 31.0, 36.0, 41.0]
FED_WINDOW_THERMAL_STATES = ["none", "light", "moderate", "moderate"]
FED_DURATION_S, FED_WINDOW_S = 120.0, 30.0
INSTALL_HINT = (
    "install the Kotlin toolchain the Android core is tested with: "
    "`npm install --prefix .tools kotlin-compiler@2.4.20` (or set KOTLIN_HOME), "
    "`apt-get install -y openjdk-17-jdk-headless libgoogle-gson-java`, and JUnit 4.13.2 + "
    "hamcrest-core 1.3 in ~/.m2/repository (or set JUNIT_JAR / HAMCREST_JAR)."
)


def _run_jvm_tests(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(JVM_TEST)],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=JVM_TEST_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def device_report(tmp_path_factory) -> Path:
    report = tmp_path_factory.mktemp("android-core") / "bench.json"
    result = _run_jvm_tests({"EDGEKIT_REPORT_OUT": str(report)})
    if result.returncode == MISSING_TOOL_EXIT:
        pytest.fail(f"{result.stderr.strip()}\n{INSTALL_HINT}", pytrace=False)
    output = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, f"Kotlin core tests failed:\n{output}"
    assert "OK (" in result.stdout, output
    return report


def test_kotlin_core_reproduces_the_contract_vectors(device_report):
    # The JUnit run above is the test; it also wrote the report the next test checks.
    assert device_report.is_file()


def test_the_report_the_core_writes_is_a_valid_bench_report(device_report):
    report = load_report(device_report)  # JSON Schema + pydantic, as `bench ingest` reads it
    assert {row.source for row in report.results} == {"device"}
    measured = [row for row in report.results if row.status == "ok"]
    assert measured and all(row.artifact_sha256 for row in measured)
    for key, description in report.estimators.items():
        assert ESTIMATORS[key] == description, f"the core's estimator '{key}' drifted"
    for row in measured:
        # The Kotlin statistics are edgekit's, recomputed here from the samples it reported.
        expected = summarize(row.samples_ms)
        for field, value in expected.model_dump().items():
            got = getattr(row.latency, field)
            assert got == pytest.approx(value, rel=STATS_RTOL), field
        verdict = reliability(expected, row.round_medians_ms, row.samples_ms)
        assert row.reliability == verdict


def test_the_report_carries_the_device_facts_in_their_schema_fields(device_report):
    report = load_report(device_report)
    assert report.schema_version == BENCH_SCHEMA_VERSION
    machine = report.machine
    assert (machine.soc, machine.thermal_state_start, machine.thermal_state_end) == (
        FED_SOC,
        *FED_THERMAL,
    )
    assert not {key for key in report.settings if "thermal" in key or "sustained" in key}
    sustained_rows = [row for row in report.results if row.sustained is not None]
    assert len(sustained_rows) == 1, [row.name for row in report.results]
    row = sustained_rows[0]
    assert row.sustained.model_dump() == {
        "duration_s": FED_DURATION_S,
        "window_s": FED_WINDOW_S,
        "window_medians_ms": FED_WINDOW_MEDIANS_MS,
        "thermal_states": FED_WINDOW_THERMAL_STATES,
        "slowdown": FED_WINDOW_MEDIANS_MS[-1] / FED_WINDOW_MEDIANS_MS[0],
    }
    # Throttling windows are not rounds: they must not turn into "rounds disagree".
    assert row.round_medians_ms == []
    assert not any(reason.startswith("rounds disagree") for reason in row.reliability.reasons)


def test_missing_kotlin_compiler_is_one_clear_message(tmp_path):
    result = _run_jvm_tests({"KOTLIN_HOME": str(tmp_path / "no-kotlin")})
    assert result.returncode == MISSING_TOOL_EXIT
    assert result.stderr.strip() == (
        f"jvm-test.sh: missing kotlinc at {tmp_path / 'no-kotlin'}/bin/kotlinc "
        "(npm install --prefix .tools kotlin-compiler@2.4.20, or set KOTLIN_HOME)"
    )
