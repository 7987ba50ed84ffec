"""`edgekit bench ARTIFACT --device adb[:SERIAL]` against a fake adb on PATH (tests/fake_adb.py).

The fake records every adb call and plays a phone with the demo app: the tests check the exact
command sequence of android-demo/BENCH_PROTOCOL.md, that the app's report lands beside the host
rows in a report folder, and the one-line failure for each thing that can be missing or wrong.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.artifact import read_manifest
from edgekit.bench.ingest import read_report_folder
from edgekit.bench.schema import BenchReport, BenchResult, MachineInfo, RuntimeInfo, SustainedRun
from edgekit.bench.timing import summarize
from edgekit.cli import app
from edgekit.device import adb as device_adb
from edgekit.device.adb import (
    BENCH_ACTIVITY,
    DEVICE_ARTIFACTS,
    DEVICE_REPORTS,
    DeviceBenchError,
    DeviceError,
)

runner = CliRunner()
FAKE_ADB = Path(__file__).with_name("fake_adb.py")
SERIAL = "R5CT40ABCDE"
OTHER_SERIAL = "emulator-5554"
PHONE = "Google Pixel 8"
# What the app writes into bench schema 2.1's machine fields (BENCH_PROTOCOL.md, "The report").
PHONE_SOC = "Google Tensor G3"
PHONE_THERMAL = ("none", "light")
# A sustained run's 60 s windows on a phone that heats up: +30% by the last one.
SUSTAINED_WINDOWS_MS = [18.0, 19.0, 21.5, 23.4]
DEVICE_MEDIAN_MS = 18.0
HOST_MEDIAN_MS = 9.0
RUNS = 12
# The fake app finishes after this many listings of its reports folder.
POLLS_UNTIL_DONE = 3
# Seconds a run that should succeed may wait for the fake app (it answers in well under one):
# a broken poll fails in this time instead of the default 600 s.
WAIT_S = "20"


def _report(
    artifact: Path, *, source: str, median_ms: float, sustained: bool = False
) -> BenchReport:
    manifest = read_manifest(artifact)
    component = manifest.component()
    sha = next(f.sha256 for f in manifest.files if f.path == component.model_file)
    samples = [median_ms * (1 + 0.01 * (i % 5 - 2)) for i in range(RUNS)]
    device = source == "device"
    return BenchReport(
        created_utc="2026-11-27T08:00:00+00:00" if device else "2026-11-27T07:00:00+00:00",
        edgekit_version="0.1.0",
        machine=MachineInfo(
            platform="android-arm64-v8a" if device else "Linux-x86_64",
            processor="zuma" if device else "x86_64 test CPU",
            device=PHONE if device else "host",
            os="Android 15 (API 35)" if device else "Linux",
            soc=PHONE_SOC if device else None,
            thermal_state_start=PHONE_THERMAL[0] if device else None,
            thermal_state_end=PHONE_THERMAL[1] if device else None,
        ),
        settings={"runs": RUNS, "threads": 3},
        results=[
            BenchResult(
                name=manifest.name,
                source=source,
                format=manifest.format,
                model_kind=component.model_kind,
                precision=manifest.precision,
                artifact_sha256=sha,
                model_size_bytes=sum(f.size_bytes for f in manifest.files),
                threads=3,
                runtime=RuntimeInfo(name="onnxruntime", version="1.20.0", threads=3),
                load_ms=40.0,
                first_inference_ms=median_ms * 2,
                warmup_runs=2,
                latency=summarize(samples),
                samples_ms=samples,
                sustained=SustainedRun(
                    duration_s=60.0 * len(SUSTAINED_WINDOWS_MS),
                    window_s=60.0,
                    window_medians_ms=SUSTAINED_WINDOWS_MS,
                    thermal_states=["none", "none", "light", "light"],
                    slowdown=SUSTAINED_WINDOWS_MS[-1] / SUSTAINED_WINDOWS_MS[0],
                )
                if sustained
                else None,
            )
        ],
    )


@pytest.fixture
def artifact(mobilevit_artifacts) -> Path:
    return mobilevit_artifacts["onnx"]


@pytest.fixture
def phone(tmp_path, monkeypatch, artifact):
    """A fake adb alone on PATH, one phone with the app; returns the config to adjust."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _write_adb(bin_dir / "adb")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("ANDROID_HOME", raising=False)
    monkeypatch.delenv("ANDROID_SDK_ROOT", raising=False)
    monkeypatch.setattr(device_adb, "POLL_INTERVAL_S", 0.01)
    report = tmp_path / "app-report.json"
    report.write_text(
        _report(artifact, source="device", median_ms=DEVICE_MEDIAN_MS).model_dump_json()
    )
    config = {
        "log": str(tmp_path / "adb-calls.jsonl"),
        "storage": str(tmp_path / "phone"),
        "devices": [[SERIAL, "device"]],
        "packages": ["com.android.chrome", "dev.edgekit.demo"],
        "report": str(report),
        "report_after_polls": POLLS_UNTIL_DONE,
    }
    config_path = tmp_path / "fake-adb.json"
    monkeypatch.setenv("FAKE_ADB_CONFIG", str(config_path))

    class Phone:
        def configure(self, **changes):
            config.update(changes)
            config_path.write_text(json.dumps(config))

        def calls(self) -> list[list[str]]:
            log = Path(config["log"])
            return (
                [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
            )

        def storage(self, device_path: str) -> Path:
            return Path(config["storage"]) / device_path.lstrip("/")

    fake = Phone()
    fake.configure()
    return fake


def _write_adb(path: Path) -> None:
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_ADB}" "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _bench(*args: str):
    return runner.invoke(app, ["bench", *args])


def test_device_bench_runs_the_protocol_and_merges_beside_host_rows(phone, artifact, tmp_path):
    folder = tmp_path / "reports"
    host = _report(artifact, source="host", median_ms=HOST_MEDIAN_MS)
    from edgekit.bench.html import write_report_folder

    write_report_folder(folder, [host])
    json_out = tmp_path / "device.json"

    result = _bench(
        str(artifact), "--device", "adb", "--runs", str(RUNS), "--warmup", "2",
        "--threads", "3", "--json", str(json_out), "--report", str(folder), "--timeout", WAIT_S,
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    calls = phone.calls()
    start = calls[5]
    run_id = Path(start[start.index("report") + 1]).stem
    assert re.fullmatch(rf"{artifact.name}-\d{{8}}T\d{{6}}Z-[0-9a-f]{{8}}", run_id), run_id
    remote_artifact = f"{DEVICE_ARTIFACTS}/{artifact.name}"
    remote_report = f"{DEVICE_REPORTS}/{run_id}.json"
    on_phone = ["-s", SERIAL]
    assert calls[:-1] == [
        ["devices"],
        [*on_phone, "shell", "pm", "list", "packages", "dev.edgekit.demo"],
        [*on_phone, "shell", "mkdir", "-p", DEVICE_ARTIFACTS, DEVICE_REPORTS],
        [*on_phone, "shell", "rm", "-rf", remote_artifact],
        [*on_phone, "push", str(artifact), remote_artifact],
        [
            *on_phone, "shell", "am", "start", "-W", "-S", "-n", BENCH_ACTIVITY,
            "--es", "artifact", remote_artifact, "--es", "report", remote_report,
            "--ei", "runs", str(RUNS), "--ei", "warmup", "2", "--ei", "threads", "3",
            "--ei", "sustained_s", "0",
        ],
        *[[*on_phone, "shell", "ls", "-1", DEVICE_REPORTS]] * POLLS_UNTIL_DONE,
    ]  # fmt: skip
    pull = calls[-1]
    assert pull[:4] == [*on_phone, "pull", remote_report]
    assert Path(pull[4]).name == f"{run_id}.json"
    assert not Path(pull[4]).exists()  # the temp copy is gone once read

    pushed = phone.storage(remote_artifact)
    for entry in read_manifest(artifact).files:
        assert (pushed / entry.path).read_bytes() == (artifact / entry.path).read_bytes()

    written = BenchReport.model_validate_json(json_out.read_text())
    assert written == BenchReport.model_validate_json((tmp_path / "app-report.json").read_text())
    assert [r.source for r in written.results] == ["device"]
    merged = read_report_folder(folder)
    sha = host.results[0].artifact_sha256
    rows = {(rep.machine.device, r.source) for rep in merged for r in rep.results}
    assert rows == {("host", "host"), (PHONE, "device")}
    assert all(r.artifact_sha256 == sha for rep in merged for r in rep.results)
    text = (folder / "index.md").read_text()
    assert f"| {artifact.name} @ {PHONE} |" in text and f"| {artifact.name} |" in text
    # The phone's facts travel in their schema fields and reach the report's machine line.
    assert (written.machine.soc, written.machine.thermal_state_start) == (PHONE_SOC, "none")
    assert f"{PHONE} ({PHONE_SOC} SoC, zuma); thermal state none -> light;" in text


def test_several_devices_with_a_serial_talk_to_that_one_in_sustained_mode(
    phone, artifact, tmp_path
):
    phone.configure(devices=[[SERIAL, "device"], [OTHER_SERIAL, "device"]])
    played = _report(artifact, source="device", median_ms=DEVICE_MEDIAN_MS, sustained=True)
    (tmp_path / "app-report.json").write_text(played.model_dump_json())
    json_out = tmp_path / "device.json"
    result = _bench(
        str(artifact), "--device", f"adb:{OTHER_SERIAL}", "--min-time", "90",
        "--timeout", WAIT_S, "--json", str(json_out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    serials = {call[1] for call in phone.calls() if call[0] == "-s"}
    assert serials == {OTHER_SERIAL}
    start = next(call for call in phone.calls() if "am" in call)
    assert start[start.index("sustained_s") + 1] == "90"  # --min-time is the sustained mode
    # The windows arrive as a sustained run with its slowdown, not as rounds that disagree.
    row = BenchReport.model_validate_json(json_out.read_text()).results[0]
    assert row.sustained == played.results[0].sustained
    assert row.sustained.slowdown == pytest.approx(1.3)
    assert row.round_medians_ms == [] and row.reliability.reliable


def test_a_folder_name_with_a_space_arrives_whole(phone, artifact, tmp_path):
    spaced = tmp_path / "my model"
    shutil.copytree(artifact, spaced)
    result = _bench(str(spaced), "--device", "adb", "--timeout", WAIT_S)
    assert result.exit_code == 0, result.output
    assert (phone.storage(f"{DEVICE_ARTIFACTS}/my model") / "manifest.json").is_file()
    start = next(call for call in phone.calls() if "am" in call)
    assert f"'{DEVICE_ARTIFACTS}/my model'" in start  # quoted for the device's shell
    assert re.fullmatch(r".*/my_model-\S+\.json", start[start.index("report") + 1])


def test_adb_is_found_in_android_home(phone, monkeypatch, tmp_path):
    tools = tmp_path / "sdk" / "platform-tools"
    tools.mkdir(parents=True)
    _write_adb(tools / "adb")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("ANDROID_HOME", str(tmp_path / "sdk"))
    assert device_adb.find_adb() == tools / "adb"


def _one_error_line(result, exit_code: int, *, contains: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], result.output
    assert contains in lines[-1], result.output


DEVICE_ERROR, RUN_ERROR = DeviceError.exit_code, DeviceBenchError.exit_code


@pytest.mark.parametrize(
    ("setup", "args", "exit_code", "message"),
    [
        (
            {"no_adb": True},
            [],
            DEVICE_ERROR,
            "adb not found: it is not on PATH and there is no $ANDROID_HOME/platform-tools/adb.",
        ),
        (
            {"devices": []},
            [],
            DEVICE_ERROR,
            "No Android device connected: `adb devices` lists none.",
        ),
        (
            {"devices": [[SERIAL, "device"], [OTHER_SERIAL, "device"]]},
            [],
            DEVICE_ERROR,
            f"2 devices connected ({SERIAL}, {OTHER_SERIAL}); edgekit benchmarks on one. Hint: "
            f"pick one with --device adb:SERIAL, e.g. --device adb:{SERIAL}.",
        ),
        (
            {},
            ["--device", f"adb:{OTHER_SERIAL}"],
            DEVICE_ERROR,
            f"No device {OTHER_SERIAL}: adb lists {SERIAL} (device).",
        ),
        (
            {"devices": [[SERIAL, "unauthorized"]]},
            [],
            DEVICE_ERROR,
            f"Device {SERIAL} is unauthorized, not ready for commands. Hint: unlock the phone",
        ),
        (
            {"packages": ["com.android.chrome", "dev.edgekit.demo.test"]},
            [],
            DEVICE_ERROR,
            f"The edgekit demo app (dev.edgekit.demo) is not installed on {SERIAL}.",
        ),
        (
            {"report": None},
            ["--timeout", "1"],
            RUN_ERROR,
            f"No report from the app on {SERIAL} after 1 s (waiting for {DEVICE_REPORTS}/",
        ),
        (
            {"error_line": "ONNX Runtime could not load model.onnx: out of memory"},
            [],
            RUN_ERROR,
            f"The app's benchmark failed on {SERIAL}: ONNX Runtime could not load model.onnx: "
            "out of memory",
        ),
        (
            {"damage": "drop-runtime-version"},
            [],
            RUN_ERROR,
            f"The app on {SERIAL} wrote a report edgekit cannot read: ",
        ),
        ({"damage": "host-row"}, [], RUN_ERROR, 'has rows not marked source "device": '),
        ({"damage": "other-artifact"}, [], RUN_ERROR, "no row's artifact_sha256 is a file of"),
        ({}, ["--device", "usb"], DEVICE_ERROR, "--device 'usb' is not a device this edgekit"),
        ({}, ["--emulate", "arm64"], 2, "--emulate cannot be combined with --device"),
        ({}, ["--threads", "1,4"], 2, "--threads 1,4: --device runs one thread count per run."),
    ],
    ids=[
        "no-adb", "no-device", "two-devices", "unknown-serial", "unauthorized", "app-missing",
        "timeout", "app-error", "report-fails-schema", "report-with-host-rows",
        "report-of-another-artifact", "bad-spec",
        "emulate", "thread-sweep",
    ],
)  # fmt: skip
def test_each_failure_is_one_line_and_writes_nothing(
    phone, artifact, tmp_path, monkeypatch, setup, args, exit_code, message
):
    setup = dict(setup)
    if setup.pop("no_adb", False):
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    damage = setup.pop("damage", None)
    if damage:
        _damage_app_report(tmp_path / "app-report.json", damage)
    phone.configure(**setup)
    json_out, folder = tmp_path / "device.json", tmp_path / "reports"
    if "--device" not in args:
        args = ["--device", "adb", *args]
    args = ["--timeout", WAIT_S, *args]  # the timeout case's own --timeout comes later and wins
    result = _bench(str(artifact), *args, "--json", str(json_out), "--report", str(folder))
    _one_error_line(result, exit_code, contains=message)
    if damage == "drop-runtime-version":
        assert "missing required field results[0].runtime.version" in result.output
    assert not json_out.exists() and not folder.exists()


def _damage_app_report(path: Path, damage: str) -> None:
    data = json.loads(path.read_text())
    row = data["results"][0]
    if damage == "drop-runtime-version":
        del row["runtime"]["version"]
    elif damage == "host-row":
        row["source"] = "host"
    elif damage == "other-artifact":
        row["artifact_sha256"] = "0" * 64
    path.write_text(json.dumps(data))
