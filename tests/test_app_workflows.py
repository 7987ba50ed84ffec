"""The demo apps' GitHub workflows name only things that exist in the repository.

Neither workflow can run here (no Android SDK, no Xcode, no network), so this checks what a
typo would break on the runner: the YAML parses, every working directory, Gradle module, Swift
package, XcodeGen spec and uploaded path exists, the Gradle version agrees with the committed
wrapper properties, and the Android app's identity agrees with the adb benchmark protocol.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
ANDROID = REPO / "android-demo"
IOS = REPO / "ios-demo"
# `./gradlew ... :core:test :app:assembleDebug`: a Gradle task path, module then task.
GRADLE_TASK = re.compile(r"(?<!\S):([A-Za-z][\w-]*):([A-Za-z]\w*)")


def _workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def _triggers(workflow: dict) -> dict:
    # YAML 1.1 reads the bare key `on` as the boolean true.
    return workflow.get("on") or workflow.get(True) or {}


def _steps(workflow: dict):
    """(job defaults' working directory, step) for every step of every job."""
    for job in workflow["jobs"].values():
        default_dir = job.get("defaults", {}).get("run", {}).get("working-directory")
        for step in job["steps"]:
            yield step.get("working-directory", default_dir), step


def _run_steps(workflow: dict, containing: str) -> list[tuple[Path, str]]:
    found = [
        (REPO / (directory or "."), step["run"])
        for directory, step in _steps(workflow)
        if containing in step.get("run", "")
    ]
    assert found, f"no step runs {containing!r}"
    return found


def _gradle_modules() -> set[str]:
    settings = (ANDROID / "settings.gradle.kts").read_text()
    return set(re.findall(r'"(:[\w-]+)"', " ".join(re.findall(r"include\((.*?)\)", settings))))


def missing_gradle_modules(command: str, modules: set[str], root: Path) -> list[str]:
    """The modules a Gradle command line names that settings does not include or that have no
    build file."""
    missing = []
    for module, _task in GRADLE_TASK.findall(command):
        build_file = root / module / "build.gradle.kts"
        if f":{module}" not in modules or not build_file.is_file():
            missing.append(f":{module}")
    return missing


@pytest.mark.parametrize("name", ["android-demo.yml", "ios-demo.yml"])
def test_workflow_parses_and_every_directory_exists(name):
    workflow = _workflow(name)
    assert workflow["jobs"], f"{name} has no jobs"
    for directory, step in _steps(workflow):
        assert "run" in step or "uses" in step, f"{name}: a step neither runs nor uses: {step}"
        if "uses" in step:
            assert "@" in step["uses"], f"{name}: {step['uses']} is not pinned to a version"
        if directory:
            assert (REPO / directory).is_dir(), f"{name}: working-directory {directory} is missing"
    for event in ("push", "pull_request"):
        for pattern in _triggers(workflow)[event]["paths"]:
            prefix = pattern.split("*")[0].rstrip("/")
            assert (REPO / prefix).exists(), f"{name}: path filter {pattern} matches nothing"


def test_android_workflow_builds_modules_that_exist():
    workflow = _workflow("android-demo.yml")
    modules = _gradle_modules()
    assert {":app", ":core"} <= modules
    ((directory, command),) = _run_steps(workflow, "./gradlew")
    assert directory == ANDROID
    assert ":core:test" in command and ":app:assembleDebug" in command
    assert missing_gradle_modules(command, modules, ANDROID) == []


def test_a_module_the_settings_lack_is_caught(tmp_path):
    # The check above must be able to fail: a module settings lacks, or one without a build
    # file, is reported by name.
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "build.gradle.kts").write_text("")
    (tmp_path / "core").mkdir()
    command = "./gradlew :core:test :nope:lint :app:assembleDebug"
    assert missing_gradle_modules(command, {":app", ":core"}, tmp_path) == [":core", ":nope"]


def test_android_workflow_gradle_version_matches_the_wrapper_properties():
    workflow = _workflow("android-demo.yml")
    version = workflow["env"]["GRADLE_VERSION"]
    properties = (ANDROID / "gradle" / "wrapper" / "gradle-wrapper.properties").read_text()
    url = re.search(r"^distributionUrl=(.+)$", properties, re.MULTILINE).group(1)
    assert url == rf"https\://services.gradle.org/distributions/gradle-{version}-bin.zip"
    ((_, command),) = _run_steps(workflow, "gradle wrapper")
    assert '--gradle-version "$GRADLE_VERSION"' in command


def test_android_workflow_uploads_the_apk_of_the_app_module():
    workflow = _workflow("android-demo.yml")
    uploads = [s for _, s in _steps(workflow) if s.get("uses", "").startswith("actions/upload")]
    (upload,) = uploads
    apk = Path(upload["with"]["path"])
    # The APK is built, not committed; the module that builds it must exist.
    assert apk.parts[:2] == ("android-demo", "app")
    assert (REPO / "android-demo" / "app" / "build.gradle.kts").is_file()


def test_ios_workflow_tests_the_swift_package_and_builds_the_app():
    workflow = _workflow("ios-demo.yml")
    ((package_dir, _),) = _run_steps(workflow, "swift test")
    assert (package_dir / "Package.swift").is_file()
    ((ios_dir, xcodebuild),) = _run_steps(workflow, "xcodebuild build")
    project = re.search(r"-project (\S+)\.xcodeproj", xcodebuild).group(1)
    scheme = re.search(r"-scheme (\S+)", xcodebuild).group(1)
    generated = [command for _, command in _run_steps(workflow, "xcodegen generate")]
    spec = ios_dir / re.search(r"--spec (\S+)", generated[0]).group(1)
    assert spec.is_file(), f"{spec} is missing: the workflow generates the Xcode project from it"
    spec_text = yaml.safe_load(spec.read_text())
    assert spec_text["name"] == project, f"{spec} names project {spec_text['name']}"
    assert scheme in spec_text.get("schemes", {}) or scheme in spec_text["targets"]


def test_android_app_matches_the_adb_benchmark_protocol():
    protocol = (ANDROID / "BENCH_PROTOCOL.md").read_text()
    application_id = re.search(r"\| application id \| `([\w.]+)` \|", protocol).group(1)
    activity = re.search(r"\| benchmark activity \| `([\w.]+)`", protocol).group(1)
    build = (ANDROID / "app" / "build.gradle.kts").read_text()
    assert f'applicationId = "{application_id}"' in build
    manifest = (ANDROID / "app" / "src" / "main" / "AndroidManifest.xml").read_text()
    short_name = activity.removeprefix(application_id)
    declared = re.search(
        rf'<activity\s+android:name="{re.escape(short_name)}"\s+android:exported="(\w+)"', manifest
    )
    assert declared and declared.group(1) == "true", f"{activity} must be declared exported"
    source = ANDROID / "app" / "src" / "main" / "java" / Path(*activity.split(".")[:-1])
    assert (source / f"{activity.split('.')[-1]}.kt").is_file()


def test_android_asset_folder_of_the_target_profiles_exists():
    for profile in sorted((REPO / "targets").glob("*.toml")):
        app = tomllib.loads(profile.read_text()).get("demo_app", {})
        if app.get("platform") == "android":
            assert (REPO / app["asset_folder"]).is_dir(), f"{profile.name}: no asset folder"
