"""`edgekit bench --device adb[:SERIAL]`: the Android demo app's benchmark mode, driven over adb.

The steps and names are a contract with the app, written down in android-demo/BENCH_PROTOCOL.md
(the app implements the receiving side from it): push the artifact folder into the app's
external files folder, start the benchmark activity with intent extras, poll for the report
file, pull it, and validate it as `bench ingest` does. The report is then an ordinary bench
report with `source: "device"` rows, merged beside host rows by the bench harness's own code.

Nothing here prints; failures are one-line `DeviceError`s saying what to do.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from edgekit.artifact import Manifest, read_manifest
from edgekit.bench.ingest import load_report
from edgekit.bench.schema import BenchReport
from edgekit.device.apps import ANDROID_DEMO, check_format
from edgekit.errors import BenchReportError, EdgekitError

log = logging.getLogger(__name__)

# --- the protocol (android-demo/BENCH_PROTOCOL.md says the same; change both together) -------
APP_PACKAGE = "dev.edgekit.demo"
BENCH_ACTIVITY = f"{APP_PACKAGE}/.BenchmarkActivity"
# The app's getExternalFilesDir(null) + /edgekit: adb can push and pull there and the app reads
# it without permissions (apps cannot read /data/local/tmp).
DEVICE_ROOT = f"/sdcard/Android/data/{APP_PACKAGE}/files/edgekit"
DEVICE_ARTIFACTS = f"{DEVICE_ROOT}/artifacts"
DEVICE_REPORTS = f"{DEVICE_ROOT}/reports"
# The app's log tag, named in the timeout hint.
APP_LOG_TAG = "EdgekitBench"

# The app's own default when neither --threads nor the artifact's profile names a count.
DEFAULT_DEVICE_THREADS = 4
# How often the reports folder is listed while the app measures: a report is seconds to
# minutes away, so once a second costs nothing and adds under a second of waiting.
POLL_INTERVAL_S = 1.0
# Quick adb commands (devices, shell mkdir/ls/cat, pm): a device that takes longer is hung.
ADB_COMMAND_TIMEOUT_S = 60.0
# Pushing a Stable Diffusion pipeline (over 1 GB) over USB 2 (about 30 MB/s) takes a minute.
PUSH_TIMEOUT_S = 1800.0
ADB_SETUP_HINT = (
    "install Android SDK platform-tools and put adb on PATH, or set ANDROID_HOME to the SDK."
)


class DeviceError(EdgekitError):
    """No adb, no device, the app not installed: the request cannot be served here."""

    exit_code = 2


class DeviceBenchError(DeviceError):
    """The device run itself failed: the app reported an error, or no report came in time."""

    exit_code = 5  # as BenchError: a benchmark that ran and failed


@dataclass
class DeviceRunSettings:
    runs: int = 100  # timed runs per component
    warmup: int = 5
    threads: int | None = None  # None: the artifact's profile, else DEFAULT_DEVICE_THREADS
    sustained_s: float = 0.0  # > 0: keep timing this long (throttling shows per minute)
    timeout_s: float = 600.0  # for the app to write its report, on top of sustained_s


def parse_device(spec: str) -> str | None:
    """'adb' -> None (the only device), 'adb:SERIAL' -> SERIAL."""
    kind, _, serial = spec.partition(":")
    if kind != "adb" or (spec.endswith(":") and not serial):
        raise DeviceError(
            f"--device '{spec}' is not a device this edgekit drives.",
            hint="use --device adb (the only connected Android device) or --device adb:SERIAL "
            "(a serial from `adb devices`).",
        )
    return serial or None


def find_adb() -> Path:
    """adb on PATH, else in the SDK that ANDROID_HOME (or the older ANDROID_SDK_ROOT) names."""
    found = shutil.which("adb")
    if found:
        return Path(found)
    for variable in ("ANDROID_HOME", "ANDROID_SDK_ROOT"):
        sdk = os.environ.get(variable)
        candidate = Path(sdk) / "platform-tools" / "adb" if sdk else None
        if candidate and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise DeviceError(
        "adb not found: it is not on PATH and there is no $ANDROID_HOME/platform-tools/adb.",
        hint=ADB_SETUP_HINT,
    )


class Adb:
    """One adb executable, optionally bound to one device (`-s SERIAL`)."""

    def __init__(self, executable: Path, serial: str | None = None) -> None:
        self.executable = executable
        self.serial = serial

    def run(self, *args: str, timeout_s: float = ADB_COMMAND_TIMEOUT_S) -> str:
        command = [str(self.executable), *(["-s", self.serial] if self.serial else []), *args]
        shown = "adb " + " ".join(args)
        log.debug("running %s", shlex.join(command))
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise DeviceBenchError(
                f"`{shown}` did not finish within {timeout_s:.0f} s.",
                hint="check the device's connection (`adb devices`) and try again.",
            ) from exc
        except OSError as exc:
            raise DeviceError(
                f"Cannot run adb at {self.executable}: {exc.strerror or exc}.", hint=ADB_SETUP_HINT
            ) from exc
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            on = f" on {self.serial}" if self.serial else ""
            raise DeviceError(
                f"`{shown}` failed{on} (exit {done.returncode}): {said}",
                hint="check the device's connection and storage, then try again.",
            )
        return done.stdout

    def shell(self, *words: str) -> str:
        # adb joins its arguments into one command line for the device's shell: quote each word
        # so names with spaces or shell characters arrive whole.
        return self.run("shell", *(shlex.quote(word) for word in words))


def pick_device(adb: Adb, serial: str | None) -> str:
    """The serial to use: the one asked for if it is ready, else the only ready device."""
    listed = _list_devices(adb.run("devices"))
    seen = ", ".join(f"{s} ({state})" for s, state in listed) or "none"
    if serial is not None:
        state = dict(listed).get(serial)
        if state is None:
            raise DeviceError(
                f"No device {serial}: adb lists {seen}.",
                hint="plug the device in, or use a serial from `adb devices`.",
            )
        _check_ready(serial, state)
        return serial
    ready = [s for s, state in listed if state == "device"]
    if len(ready) == 1:
        return ready[0]
    if len(ready) > 1:
        raise DeviceError(
            f"{len(ready)} devices connected ({', '.join(ready)}); edgekit benchmarks on one.",
            hint=f"pick one with --device adb:SERIAL, e.g. --device adb:{ready[0]}.",
        )
    if listed:  # connected but none usable: say why for the first
        _check_ready(*listed[0])
    raise DeviceError(
        "No Android device connected: `adb devices` lists none.",
        hint="connect a phone with USB debugging on (or start an emulator) and check "
        "`adb devices`.",
    )


def _list_devices(output: str) -> list[tuple[str, str]]:
    """`adb devices` lines 'SERIAL<TAB>STATE' -> [(serial, state)]. The header and the daemon's
    '* daemon started' lines are skipped."""
    devices = []
    for line in output.splitlines():
        if "\t" in line and not line.startswith("*"):
            serial, state = line.split("\t", 1)
            devices.append((serial.strip(), state.strip()))
    return devices


def _check_ready(serial: str, state: str) -> None:
    if state == "device":
        return
    hints = {
        "unauthorized": "unlock the phone and accept its 'Allow USB debugging?' prompt.",
        "offline": "reconnect the cable, or run `adb kill-server` and try again.",
    }
    raise DeviceError(
        f"Device {serial} is {state}, not ready for commands.",
        hint=hints.get(state, "see `adb devices`; reconnect the device and try again."),
    )


def check_app_installed(adb: Adb) -> None:
    listing = adb.shell("pm", "list", "packages", APP_PACKAGE)
    # The filter matches substrings (dev.edgekit.demo.test too): look for the exact line.
    if f"package:{APP_PACKAGE}" not in {line.strip() for line in listing.splitlines()}:
        raise DeviceError(
            f"The edgekit demo app ({APP_PACKAGE}) is not installed on {adb.serial}.",
            hint="build and install it: cd android-demo && ./gradlew :app:installDebug "
            "(android-demo/README.md).",
        )


def bench_on_device(
    artifacts: list[Path], device: str, settings: DeviceRunSettings | None = None
) -> BenchReport:
    """Benchmark each artifact in the Android app on one device; one report with all rows."""
    settings = settings or DeviceRunSettings()
    serial = parse_device(device)
    manifests = [(path, read_manifest(path)) for path in artifacts]
    for _, manifest in manifests:  # before touching the device: nothing is pushed in vain
        check_format(ANDROID_DEMO, manifest.format)
    executable = find_adb()
    serial = pick_device(Adb(executable), serial)
    adb = Adb(executable, serial)
    check_app_installed(adb)
    reports = [_run_one(adb, path, manifest, settings) for path, manifest in manifests]
    return _combine(reports)


def _run_one(
    adb: Adb, artifact: Path, manifest: Manifest, settings: DeviceRunSettings
) -> BenchReport:
    name = artifact.resolve().name
    remote_artifact = f"{DEVICE_ARTIFACTS}/{name}"
    # The run id names files on the device and is matched in `ls` output: shell-safe characters.
    safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_id = f"{safe_name}-{stamp}-{uuid.uuid4().hex[:8]}"
    remote_report = f"{DEVICE_REPORTS}/{run_id}.json"
    threads = settings.threads or _profile_threads(manifest) or DEFAULT_DEVICE_THREADS

    adb.shell("mkdir", "-p", DEVICE_ARTIFACTS, DEVICE_REPORTS)
    adb.shell("rm", "-rf", remote_artifact)  # a re-pushed artifact replaces the old one whole
    # The remote folder does not exist now, so adb creates it with the local folder's contents.
    adb.run("push", str(artifact), remote_artifact, timeout_s=PUSH_TIMEOUT_S)
    started = adb.shell(
        "am", "start", "-W", "-S", "-n", BENCH_ACTIVITY,
        "--es", "artifact", remote_artifact,
        "--es", "report", remote_report,
        "--ei", "runs", str(settings.runs),
        "--ei", "warmup", str(settings.warmup),
        "--ei", "threads", str(threads),
        "--ei", "sustained_s", str(round(settings.sustained_s)),
    )  # fmt: skip
    # am start exits 0 even when the activity does not exist; it says so on a line "Error: ...".
    errors = [line.strip() for line in started.splitlines() if line.startswith("Error")]
    if errors:
        raise DeviceBenchError(
            f"The benchmark activity did not start on {adb.serial}: {errors[-1]}",
            hint="reinstall the app from this edgekit's android-demo "
            "(./gradlew :app:installDebug).",
        )
    _wait_for_report(adb, run_id, settings.timeout_s + settings.sustained_s)
    return _pull_report(adb, remote_report, manifest, artifact)


def _profile_threads(manifest: Manifest) -> int | None:
    runtime = (manifest.profile or {}).get("runtime") or {}
    threads = runtime.get("threads")
    return threads if isinstance(threads, int) and threads > 0 else None


def _wait_for_report(adb: Adb, run_id: str, timeout_s: float) -> None:
    """Poll the reports folder until the app renames its finished report into place (or writes
    `<run id>.error`), or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        names = {line.strip() for line in adb.shell("ls", "-1", DEVICE_REPORTS).splitlines()}
        if f"{run_id}.json" in names:
            return
        if f"{run_id}.error" in names:
            said = adb.shell("cat", f"{DEVICE_REPORTS}/{run_id}.error").strip().splitlines()
            raise DeviceBenchError(
                f"The app's benchmark failed on {adb.serial}: "
                f"{said[0] if said else 'it wrote an empty error file'}",
                hint=f"see `adb -s {adb.serial} logcat -s {APP_LOG_TAG}` for details.",
            )
        if time.monotonic() >= deadline:
            raise DeviceBenchError(
                f"No report from the app on {adb.serial} after {timeout_s:.0f} s (waiting for "
                f"{DEVICE_REPORTS}/{run_id}.json).",
                hint=f"watch the phone's screen and `adb -s {adb.serial} logcat -s {APP_LOG_TAG}`;"
                " a slow model needs a longer --timeout.",
            )
        time.sleep(POLL_INTERVAL_S)


def _pull_report(adb: Adb, remote_report: str, manifest: Manifest, artifact: Path) -> BenchReport:
    local_dir = Path(tempfile.mkdtemp(prefix="edgekit-device-report-"))
    local = local_dir / Path(remote_report).name
    adb.run("pull", remote_report, str(local))
    try:
        report = load_report(local)
    except BenchReportError as exc:
        # The pulled file stays where the message says, for a look at what the app wrote.
        raise DeviceBenchError(
            f"The app on {adb.serial} wrote a report edgekit cannot read: {exc.message}",
            hint="rebuild the app from this edgekit's android-demo; its reports follow "
            "edgekit/schemas/bench.schema.json.",
        ) from exc
    _check_rows(report, manifest, artifact, local)
    shutil.rmtree(local_dir, ignore_errors=True)
    return report


def _check_rows(report: BenchReport, manifest: Manifest, artifact: Path, local: Path) -> None:
    """A valid report can still be the wrong one: rows the device did not measure, or rows of
    another artifact (an app that ignored the pushed folder)."""
    host_rows = [r.name for r in report.results if r.source != "device"]
    if host_rows:
        raise DeviceBenchError(
            f'The report from the device ({local}) has rows not marked source "device": '
            f"{', '.join(host_rows)}.",
            hint="a device report's rows all say source: device; rebuild the app.",
        )
    hashes = {entry.sha256 for entry in manifest.files}
    if not any(r.artifact_sha256 in hashes for r in report.results):
        raise DeviceBenchError(
            f"The report from the device ({local}) has no row for {artifact}: no row's "
            "artifact_sha256 is a file of its manifest.",
            hint="the app measured another model; check the protocol's artifact extra.",
        )


def _combine(reports: list[BenchReport]) -> BenchReport:
    """One report for one device session: the first report's machine, every report's rows."""
    first = reports[0]
    if len(reports) == 1:
        return first

    def union(lists) -> list[str]:
        return list(dict.fromkeys(item for items in lists for item in items))

    return first.model_copy(
        update={
            "results": [row for report in reports for row in report.results],
            "pipelines": [p for report in reports for p in report.pipelines],
            "warnings": union(report.warnings for report in reports),
            "notes": union(report.notes for report in reports),
        }
    )
