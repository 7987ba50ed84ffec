"""ExecuTorch under ARM64 emulation: a C++ runner cross-compiled against executorch's aarch64
wheel (edgekit/emulate/executorch.py). Default tests need no emulator and no cross compiler; the
`slow` test builds the runner and runs verify and bench under qemu.

The slow test sets up its own emulator cache (as tests/test_emulator.py does, in the same place,
so one session builds it once) unless EDGEKIT_TEST_EMULATOR_CACHE names one already set up."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekit.artifact import read_manifest
from edgekit.cli import app
from edgekit.emulate import environment, executorch
from edgekit.emulate.verify import EMULATION_FILE, unsupported_format_reason

runner = CliRunner()

# fp32 XNNPACK on an emulated ARM core vs the same program on x86: only the order of float
# sums differs (tiny-mobilevit measured 1.3e-6); a wrong kernel is off by orders more.
FP32_ARM_VS_X86_MAX_ABS_DIFF = 1e-4
# Instructions per inference repeat run after run (the plugin counts, it does not time): a
# spread wider than this means the marks do not bracket one inference.
INSTRUCTION_COUNT_SPREAD = 0.01


def _one_line_error(result, exit_code: int, contains: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert contains in " ".join(result.output.split()) and "Traceback" not in result.output


def _which_without_cross_compiler(monkeypatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        shutil,
        "which",
        lambda tool: None if tool == executorch.CROSS_COMPILER else real_which(tool),
    )


@pytest.fixture
def cross_compiler(monkeypatch, tmp_path_factory):
    """This machine as if it had Debian's cross compiler (it is never run in default tests)."""
    libraries = tmp_path_factory.mktemp("aarch64-lib")
    (libraries / "libstdc++.so.6").write_bytes(b"")
    monkeypatch.setattr(executorch, "CROSS_LIBRARIES", libraries)
    real_which = shutil.which
    monkeypatch.setattr(
        shutil,
        "which",
        lambda tool: f"/usr/bin/{tool}" if tool == executorch.CROSS_COMPILER else real_which(tool),
    )


def test_a_missing_cross_compiler_is_named(
    mobilevit_artifacts, tmp_path, monkeypatch, cross_compiler
):
    assert unsupported_format_reason("executorch") is None
    _which_without_cross_compiler(monkeypatch)
    reason = unsupported_format_reason("executorch")
    assert "apt-get install g++-aarch64-linux-gnu" in reason and "\n" not in reason
    result = runner.invoke(
        app, ["verify", str(mobilevit_artifacts["executorch"]), "--emulate", "arm64", "--cpu",
              "cortex-a76", "--cache", str(tmp_path)],
    )  # fmt: skip
    _one_line_error(result, 2, "apt-get install g++-aarch64-linux-gnu")
    assert not (mobilevit_artifacts["executorch"] / EMULATION_FILE).exists()


def test_verify_before_setup_says_how_to_set_up(mobilevit_artifacts, tmp_path, cross_compiler):
    result = runner.invoke(
        app, ["verify", str(mobilevit_artifacts["executorch"]), "--emulate", "arm64", "--cpu",
              "cortex-a76", "--cache", str(tmp_path / "empty-cache")],
    )  # fmt: skip
    _one_line_error(result, 2, "The arm64 emulator is not set up")
    assert "edgekit emulator setup arm64" in result.output
    assert not (mobilevit_artifacts["executorch"] / EMULATION_FILE).exists()


def _environment(root: Path) -> environment.Environment:
    return environment.Environment(root=root, arch="arm64", identities={}, packages={})


def test_a_failed_runner_build_leaves_nothing_trusted(tmp_path, monkeypatch, cross_compiler):

    def fail_midway(env, version, staging):
        (staging / executorch.RUNNER_NAME).write_bytes(b"half a binary")
        (staging / executorch.RUNNER_INFO).write_text(json.dumps({"executorch": version}))
        raise environment.EmulatorError("Building the ExecuTorch runner failed at 'x': y")

    monkeypatch.setattr(executorch, "_build", fail_midway)
    with pytest.raises(environment.EmulatorError, match="failed at 'x'"):
        executorch.runner(_environment(tmp_path))
    assert list(tmp_path.iterdir()) == []  # no executorch/, no staging folder


def test_a_runner_built_for_another_executorch_is_rebuilt(tmp_path, monkeypatch, cross_compiler):
    stale = tmp_path / executorch.RUNNER_FOLDER
    stale.mkdir()
    (stale / executorch.RUNNER_INFO).write_text(json.dumps({"executorch": "0.0.1"}))
    built = []

    def build(env, version, staging):
        built.append(version)
        (staging / executorch.RUNNER_INFO).write_text(json.dumps({"executorch": version}))

    monkeypatch.setattr(executorch, "_build", build)
    folder = executorch.runner(_environment(tmp_path))
    assert built == [importlib.metadata.version("executorch")]
    assert executorch.runner(_environment(tmp_path)) == folder and len(built) == 1  # cached


def test_outputs_unlike_the_manifest_are_refused(mobilevit_artifacts, tmp_path):
    (component,) = read_manifest(mobilevit_artifacts["executorch"]).components
    (spec,) = component.outputs
    logits = np.arange(np.prod(spec.shape), dtype=np.float32).reshape(spec.shape)
    logits.tofile(tmp_path / "0.out0.bin")
    as_declared = [{"dtype": spec.dtype, "shape": spec.shape}]
    read = executorch._read_outputs(tmp_path, 0, component, as_declared)
    np.testing.assert_array_equal(read[spec.name], logits)
    transposed = [{"dtype": spec.dtype, "shape": spec.shape[::-1]}]
    with pytest.raises(environment.EmulatorError, match="the manifest declares"):
        executorch._read_outputs(tmp_path, 0, component, transposed)


@pytest.mark.slow
def test_verify_and_bench_executorch_under_emulation(mobilevit_artifacts, tmp_path_factory):
    missing = environment.missing_tools("arm64")
    assert not missing, f"install {missing} (apt-get install qemu-user-static debootstrap)"
    assert executorch.unavailable_reason() is None, executorch.unavailable_reason()
    # The runner builds from scratch, in a root of its own (a shared cache keeps its runner).
    scratch_root = tmp_path_factory.mktemp("runner-build")
    folder = executorch.runner(_environment(scratch_root))
    assert [p.name for p in scratch_root.iterdir()] == [executorch.RUNNER_FOLDER]
    assert {"executorch_runner", "libstdc++.so.6", "libexecutorch_backend_xnnpack.so"} <= {
        p.name for p in folder.iterdir()
    }

    given = os.environ.get("EDGEKIT_TEST_EMULATOR_CACHE")
    cache = Path(given) if given else tmp_path_factory.getbasetemp() / "emulator-cache"
    result = runner.invoke(app, ["emulator", "setup", "arm64", "--cache", str(cache)])
    assert result.exit_code == 0, result.output

    artifact = tmp_path_factory.mktemp("emu-et") / "executorch"
    shutil.copytree(mobilevit_artifacts["executorch"], artifact)
    result = runner.invoke(
        app, ["verify", str(artifact), "--emulate", "arm64", "--cpu", "cortex-a76,max", "--cache",
              str(cache)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((artifact / EMULATION_FILE).read_text())
    assert [c["core"] for c in record["checks"]] == ["cortex-a76", "max"]
    for check in record["checks"]:
        assert check["status"] == "passed"
        assert check["vs_pytorch"]["runtime"].startswith("executorch ")
        (logits,) = check["vs_host"]["outputs"]
        assert logits["top1_agreement"] == 1.0
        assert logits["max_abs_diff"] < FP32_ARM_VS_X86_MAX_ABS_DIFF

    out = tmp_path_factory.mktemp("emu-et-bench") / "emu.json"
    result = runner.invoke(
        app, ["bench", str(artifact), "--emulate", "arm64", "--cpu", "cortex-a76", "--runs", "3",
              "--emulator-cache", str(cache), "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["results"]
    assert row["emulated"] == "qemu arm64 cortex-a76" and row["runtime"]["name"] == "executorch"
    assert row["latency"]["runs"] == 3
    assert row["fidelity"]["emulated_verification"] == {"cortex-a76": "passed", "max": "passed"}
    # A qemu that cannot load plugins (Debian's static builds) gives none, and the report says why.
    cannot_count = environment.load("arm64", cache).instruction_counter_unavailable()
    if cannot_count is None:
        low, high = row["instructions_range"]
        assert low <= row["instructions_per_inference"] <= high
        assert high - low < INSTRUCTION_COUNT_SPREAD * low
    else:
        assert row.get("instructions_per_inference") is None
        assert f"No instruction counts: {cannot_count}." in json.loads(out.read_text())["notes"]
