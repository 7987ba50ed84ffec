"""Emulated ARM64 cores: the command's errors (default run), core identities, and a `slow`
end-to-end run (set-up cached, verify and bench under qemu) where qemu and debootstrap exist."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.emulate import environment
from edgekit.emulate.cores import CoreIdentity

runner = CliRunner()

# What the probe reads inside qemu 7.2 for cortex-a76 and max (HWCAP, HWCAP2, MIDR_EL1).
CORTEX_A76 = CoreIdentity(core="cortex-a76", hwcap=1155067, hwcap2=0, midr=0x414FD0B1)
MAX = CoreIdentity(core="max", hwcap=3976200187, hwcap2=2139586559, midr=0x000F0510)


def _one_line_error(result, exit_code: int, contains: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert contains in result.output and "Traceback" not in result.output


def test_cpuinfo_is_written_from_the_probed_identity():
    text = CORTEX_A76.cpuinfo(processors=2)
    assert text.count("processor\t:") == 2
    # MIDR 0x414fd0b1: Arm (0x41), variant 4, part 0xd0b (Cortex-A76), revision 1.
    for line in ["CPU implementer\t: 0x41", "CPU variant\t: 0x4", "CPU part\t: 0xd0b",
                 "CPU revision\t: 1"]:  # fmt: skip
        assert line in text
    assert "asimddp" in CORTEX_A76.features and "i8mm" not in CORTEX_A76.features
    assert {"i8mm", "bf16", "sve2", "asimddp", "sme", "smei8i32", "smefa64"} <= set(MAX.features)
    assert "CPU part\t: 0x051" in MAX.cpuinfo(1)  # qemu's 'max' has part 'Q'


def test_unknown_emulator_and_cores_are_refused(tmp_path):
    result = runner.invoke(app, ["emulator", "setup", "riscv64", "--cache", str(tmp_path)])
    _one_line_error(result, 2, "Unknown emulator 'riscv64'")
    result = runner.invoke(
        app, ["verify", str(tmp_path), "--emulate", "arm64", "--cpu", "cortex-a99"]
    )
    _one_line_error(result, 2, "Unknown core cortex-a99")
    assert "cortex-a76" in result.output  # the hint lists the cores


def test_verify_before_setup_says_how_to_set_up(mobilevit_artifacts, tmp_path):
    result = runner.invoke(
        app,
        ["verify", str(mobilevit_artifacts["onnx"]), "--emulate", "arm64", "--cache",
         str(tmp_path / "empty-cache")],
    )  # fmt: skip
    _one_line_error(result, 2, "The arm64 emulator is not set up")
    assert "edgekit emulator setup arm64" in result.output
    assert not (mobilevit_artifacts["onnx"] / "emulation.json").exists()


def test_verify_on_this_host_and_a_damaged_file(mobilevit_artifacts, tmp_path):
    result = runner.invoke(app, ["verify", str(mobilevit_artifacts["tflite"])])
    assert result.exit_code == 0, result.output
    assert "on this host vs PyTorch (fp32): passed" in " ".join(result.output.split())
    assert not (mobilevit_artifacts["tflite"] / "emulation.json").exists()
    damaged = tmp_path / "damaged"
    shutil.copytree(mobilevit_artifacts["onnx"], damaged)
    (damaged / "model.onnx").write_bytes(b"not a model")
    result = runner.invoke(app, ["verify", str(damaged)])
    _one_line_error(result, 4, "This host's runtime could not run model.onnx")


def test_setup_without_qemu_or_root_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    result = runner.invoke(app, ["emulator", "setup", "arm64", "--cache", str(tmp_path)])
    _one_line_error(result, 2, "needs qemu-aarch64-static, debootstrap, dpkg-deb")
    assert "apt-get install qemu-user-static debootstrap" in result.output
    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    result = runner.invoke(app, ["emulator", "setup", "arm64", "--cache", str(tmp_path)])
    _one_line_error(result, 2, "has to run as root")


def test_a_failed_setup_leaves_nothing_a_later_run_would_trust(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr("os.geteuid", lambda: 0)

    def fail_midway(arch, root, progress):
        (root / "rootfs" / "usr").mkdir(parents=True)
        (root / "environment.json").write_text("{}")  # even a marker written early
        raise environment.EmulatorError("Emulator set-up failed at 'pip install' (exit 1): x")

    monkeypatch.setattr(environment, "_build", fail_midway)
    result = runner.invoke(app, ["emulator", "setup", "arm64", "--cache", str(tmp_path)])
    _one_line_error(result, 2, "failed at 'pip install'")
    assert list(tmp_path.iterdir()) == []  # no arm64/, no half-built staging folder


def test_instruction_counts_need_the_dynamic_qemu(tmp_path, monkeypatch):
    env = environment.Environment(
        root=tmp_path, arch="arm64", identities={}, packages={}, qemu=(7, 2, 22)
    )
    monkeypatch.setattr(environment.shutil, "which", lambda name: None)
    reason = env.instruction_counter_unavailable()
    assert "static qemu builds cannot load TCG plugins" in reason
    with pytest.raises(environment.EmulatorError, match="Counting instructions needs"):
        env.instruction_counter()
    # Installed, but a static build (Debian's qemu-user 10): no -plugin option.
    monkeypatch.setattr(environment.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(environment, "loads_plugins", lambda binary: False)
    assert "static qemu builds cannot load TCG plugins" in env.instruction_counter_unavailable()
    # A plugin-capable qemu of another version than the one that runs the cores.
    monkeypatch.setattr(environment, "loads_plugins", lambda binary: True)
    monkeypatch.setattr(environment, "qemu_version", lambda binary: (8, 2, 0))
    reason = env.instruction_counter_unavailable()
    assert "would run qemu-aarch64 8.2.0, not the qemu 7.2.22 that probed" in reason


@pytest.mark.parametrize(("qemu", "api"), [((7, 2, 22), 1), ((8, 2, 2), 1), ((10, 0, 2), 2)])
def test_the_counter_is_built_for_the_plugin_api_of_the_qemu(tmp_path, monkeypatch, qemu, api):
    """qemu 9.0 refuses plugins that declare API 1 and dropped the inline op they use: the
    plugin edgekit builds declares the API of the qemu that runs the cores, and calls only that
    API's functions (undefined symbols, resolved by qemu when it loads the plugin)."""
    import ctypes

    env = environment.Environment(
        root=tmp_path, arch="arm64", identities={}, packages={}, qemu=qemu
    )
    monkeypatch.setattr(environment.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(environment, "loads_plugins", lambda binary: True)
    monkeypatch.setattr(environment, "qemu_version", lambda binary: qemu)
    plugin = env.instruction_counter()
    # Lazy binding: the qemu functions it calls stay unresolved, the version can be read.
    declared = ctypes.c_int.in_dll(
        ctypes.CDLL(str(plugin), mode=os.RTLD_LAZY), "qemu_plugin_version"
    )
    assert declared.value == api
    needs = subprocess.run(["nm", "-D", "--undefined-only", str(plugin)], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert ("qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu" in needs) == (api == 2)
    assert ("qemu_plugin_register_vcpu_tb_exec_inline\n" in needs) == (api == 1)


def _fake_environment(cache, qemu: list[int] | None) -> None:
    """An arm64 environment.json as `setup` writes it (probed under `qemu`; None: written
    before edgekit recorded the version), with no root behind it."""
    info = {
        "arch": "arm64",
        "suite": environment.DEBIAN_SUITE,
        "packages": environment.host_versions(),
        "cores": {core.core: vars(core) for core in (CORTEX_A76, MAX)},
    }
    if qemu is not None:
        info["qemu"] = qemu
    (cache / "arm64").mkdir(parents=True)
    (cache / "arm64" / environment.ENVIRONMENT_FILE).write_text(json.dumps(info))


@pytest.mark.parametrize("recorded", [[7, 2, 22], None], ids=["other-qemu", "not-recorded"])
def test_cores_probed_under_another_qemu_must_be_probed_again(tmp_path, monkeypatch, recorded):
    _fake_environment(tmp_path, recorded)
    monkeypatch.setattr(environment.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(environment, "qemu_version", lambda binary: (10, 0, 2))
    with pytest.raises(environment.EmulatorError, match="probed under qemu") as refused:
        environment.load("arm64", tmp_path)
    assert "this machine's qemu-aarch64-static is 10.0.2" in str(refused.value)
    assert "emulator setup arm64 --rebuild" in str(refused.value)


def test_a_qemu_patch_release_keeps_the_probed_cores(tmp_path, monkeypatch):
    _fake_environment(tmp_path, [10, 0, 1])
    monkeypatch.setattr(environment.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(environment, "qemu_version", lambda binary: (10, 0, 2))
    assert environment.load("arm64", tmp_path).qemu == (10, 0, 2)


def test_max_is_refused_under_a_qemu_that_emulates_it_wrongly(
    mobilevit_artifacts, tmp_path, monkeypatch
):
    """qemu 7.2 computes other int8 results on `max` than qemu 10.0 and x86 (measured):
    verify refuses before any work instead of blaming the model; cortex-a76 stays available."""
    _fake_environment(tmp_path, [7, 2, 22])
    monkeypatch.setattr(environment.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(environment, "qemu_version", lambda binary: (7, 2, 22))
    result = runner.invoke(
        app,
        ["verify", str(mobilevit_artifacts["onnx"]), "--emulate", "arm64", "--cpu",
         "cortex-a76,max", "--cache", str(tmp_path)],
    )  # fmt: skip
    _one_line_error(result, 2, "qemu 7.2.22 is older than 10.0, the first qemu measured")
    assert "apt-get install -t bookworm-backports qemu-user-static" in result.output
    assert not (mobilevit_artifacts["onnx"] / "emulation.json").exists()
    env = environment.load("arm64", tmp_path)
    assert env.python("cortex-a76")[:3] == ["qemu-aarch64-static", "-cpu", "cortex-a76"]
    newer = environment.Environment(
        root=tmp_path / "arm64", arch="arm64", identities=env.identities, packages={},
        qemu=(10, 0, 2),
    )  # fmt: skip
    assert newer.python("max")[:3] == ["qemu-aarch64-static", "-cpu", "max"]


@pytest.mark.slow
def test_setup_verify_and_bench_under_emulation(mobilevit_artifacts, tmp_path_factory):
    missing = environment.missing_tools("arm64")
    assert not missing, f"install {missing} (apt-get install qemu-user-static debootstrap)"
    cache = tmp_path_factory.getbasetemp() / "emulator-cache"
    result = runner.invoke(app, ["emulator", "setup", "arm64", "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    assert "cortex-a76 (MIDR 0x414fd0b1)" in result.output
    # Cached: a second set-up reuses it.
    stamp = (cache / "arm64" / "environment.json").stat().st_mtime_ns
    assert runner.invoke(app, ["emulator", "setup", "arm64", "--cache", str(cache)]).exit_code == 0
    assert (cache / "arm64" / "environment.json").stat().st_mtime_ns == stamp

    folder = tmp_path_factory.mktemp("emu") / "onnx"
    shutil.copytree(mobilevit_artifacts["onnx"], folder)
    result = runner.invoke(
        app, ["verify", str(folder), "--emulate", "arm64", "--cpu", "cortex-a76,max", "--cache",
              str(cache)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((folder / "emulation.json").read_text())
    assert [c["core"] for c in record["checks"]] == ["cortex-a76", "max"]
    for check in record["checks"]:
        assert check["status"] == "passed"
        (logits,) = check["vs_host"]["outputs"]
        assert logits["top1_agreement"] == 1.0 and logits["max_abs_diff"] < 1e-3

    out = tmp_path_factory.mktemp("emu-bench") / "emu.json"
    result = runner.invoke(
        app, ["bench", str(folder), "--emulate", "arm64", "--cpu", "cortex-a76", "--runs", "3",
              "--emulator-cache", str(cache), "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["results"]
    assert row["emulated"] == "qemu arm64 cortex-a76" and row["latency"]["runs"] == 3
    assert row["fidelity"]["emulated_verification"] == {"cortex-a76": "passed", "max": "passed"}
    # Instructions per inference from the qemu plugin: the same count, run after run, to 1%.
    # A qemu that cannot load plugins (Debian's static builds) gives none, and the report says why.
    cannot_count = environment.load("arm64", cache).instruction_counter_unavailable()
    if cannot_count is None:
        low, high = row["instructions_range"]
        assert low <= row["instructions_per_inference"] <= high and (high - low) < 0.01 * low
    else:
        assert row.get("instructions_per_inference") is None
        assert f"No instruction counts: {cannot_count}." in json.loads(out.read_text())["notes"]

    # The layer-by-layer comparison runs inside the emulator too, and finds no jump in fp32.
    result = runner.invoke(
        app, ["verify", str(folder), "--localize", "--emulate", "arm64", "--cpu", "cortex-a76",
              "--cache", str(cache)], terminal_width=250,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "model on emulated cortex-a76: no layer's error jumps" in result.output
