"""A stand-in for `adb` that tests put on PATH (as an `adb` script that runs this file).

It records every argument list to a log (one JSON list a line) and plays a device with the
android-demo app as android-demo/BENCH_PROTOCOL.md describes: a folder stands for the device's
storage, `push`/`pull`/`shell mkdir|rm|ls|cat` act on it, `pm list packages` lists the
configured packages, and `am start` of the benchmark activity makes the "app" write its report
(a file the test prepared) to the `report` extra's path once the reports folder has been listed
a few times, as a real app finishes after a while. Configured by the JSON file that
$FAKE_ADB_CONFIG names:

    log                 file the argument lists are appended to
    storage             folder standing for the device's storage ("/" of the device)
    devices             [[serial, state], ...] as `adb devices` lists them
    packages            installed package names
    report              file the app "writes" as its report (null: it never finishes)
    error_line          when set, the app writes this to <run id>.error instead of a report
    report_after_polls  listings of the reports folder before the app is done (default 2)

Like adb, the words after `shell` are joined into one line and split by the device's shell, so
unquoted words with spaces come apart here as they would on a phone.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

APP_PACKAGE = "dev.edgekit.demo"
BENCH_ACTIVITY = f"{APP_PACKAGE}/.BenchmarkActivity"


class FakeDevice:
    def __init__(self, config: dict, state_path: Path) -> None:
        self.config = config
        self.storage = Path(config["storage"])
        self.state_path = state_path
        self.state = json.loads(state_path.read_text()) if state_path.is_file() else {}

    def path(self, device_path: str) -> Path:
        return self.storage / device_path.lstrip("/")

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state))

    # --- adb commands ---------------------------------------------------------------------

    def push(self, local: str, remote: str) -> int:
        target = self.path(remote)
        if target.is_dir():  # adb puts a folder inside an existing remote folder
            target = target / Path(local).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(local).is_dir():
            shutil.copytree(local, target)
        else:
            shutil.copyfile(local, target)
        print(f"{local}: 1 file pushed, 0 skipped.")
        return 0

    def pull(self, remote: str, local: str) -> int:
        source = self.path(remote)
        if not source.is_file():
            print(f"adb: error: failed to stat remote object '{remote}': No such file or directory")
            return 1
        shutil.copyfile(source, local)
        print(f"{remote}: 1 file pulled, 0 skipped.")
        return 0

    def shell(self, words: list[str]) -> int:
        command, args = words[0], words[1:]
        if command == "mkdir" and args[0] == "-p":
            for path in args[1:]:
                self.path(path).mkdir(parents=True, exist_ok=True)
            return 0
        if command == "rm" and args[0] == "-rf":
            for path in args[1:]:
                shutil.rmtree(self.path(path), ignore_errors=True)
            return 0
        if command == "ls" and args[0] == "-1":
            return self.list_folder(args[1])
        if command == "cat":
            print(self.path(args[0]).read_text(), end="")
            return 0
        if words[:3] == ["pm", "list", "packages"]:
            for package in self.config.get("packages", []):
                if not args[2:] or args[2] in package:
                    print(f"package:{package}")
            return 0
        if words[:2] == ["am", "start"]:
            return self.am_start(args[1:])
        print(f"/system/bin/sh: {command}: not found", file=sys.stderr)
        return 127

    def am_start(self, args: list[str]) -> int:
        component = args[args.index("-n") + 1]
        extras = {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a in {"--es", "--ei"}}
        if component != BENCH_ACTIVITY or APP_PACKAGE not in self.config.get("packages", []):
            print(f"Starting: Intent {{ cmp={component} }}")
            print("Error type 3")
            print(f"Error: Activity class {{{component}}} does not exist.")
            return 0
        self.state["running"] = {"extras": extras, "polls": 0}
        self.save()
        print(f"Starting: Intent {{ cmp={component} (has extras) }}")
        print("Status: ok\nLaunchState: COLD\nActivity: " + component + "\nTotalTime: 412")
        return 0

    def list_folder(self, folder: str) -> int:
        running = self.state.get("running")
        if running is not None:
            running["polls"] += 1
            if running["polls"] >= self.config.get("report_after_polls", 2):
                self.finish(running["extras"])
                self.state["running"] = None
            self.save()
        path = self.path(folder)
        if not path.is_dir():
            print(f"ls: {folder}: No such file or directory", file=sys.stderr)
            return 1
        for name in sorted(p.name for p in path.iterdir()):
            print(name)
        return 0

    def finish(self, extras: dict[str, str]) -> None:
        """What the app does when its benchmark ends: a report, or one line in `.error`."""
        report = self.path(extras["report"])
        error = report.with_suffix(".error")
        if not (self.path(extras["artifact"]) / "manifest.json").is_file():
            error.write_text(f"no manifest.json in {extras['artifact']}\n")
        elif self.config.get("error_line"):
            error.write_text(self.config["error_line"] + "\n")
        elif self.config.get("report"):
            shutil.copyfile(self.config["report"], report)


def main(argv: list[str]) -> int:
    config_path = Path(os.environ["FAKE_ADB_CONFIG"])
    config = json.loads(config_path.read_text())
    with open(config["log"], "a") as log:
        log.write(json.dumps(argv) + "\n")
    devices = [tuple(d) for d in config.get("devices", [])]
    if argv == ["devices"]:
        print("List of devices attached")
        for serial, state in devices:
            print(f"{serial}\t{state}")
        print()
        return 0
    serial, args = (argv[1], argv[2:]) if argv[:1] == ["-s"] else (None, argv)
    if serial is None and len(devices) != 1:
        problem = "no devices/emulators found" if not devices else "more than one device/emulator"
        print(f"adb: {problem}", file=sys.stderr)
        return 1
    if serial is not None and serial not in dict(devices):
        print(f"adb: device '{serial}' not found", file=sys.stderr)
        return 1
    device = FakeDevice(config, config_path.with_name("fake-adb-state.json"))
    if args[0] == "push":
        return device.push(args[1], args[2])
    if args[0] == "pull":
        return device.pull(args[1], args[2])
    if args[0] == "shell":
        return device.shell(shlex.split(" ".join(args[1:])))
    print(f"adb: unknown command {args[0]}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
