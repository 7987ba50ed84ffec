"""`edgekit install ARTIFACT --app ...`: what lands where in the app, what is refused, and that a
copy that fails midway leaves the app as it was.

The apps here are minimal stand-ins (the file that marks each app, nothing else), made in
tmp_path so the repository's own apps are never written to.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.artifact import MANIFEST_NAME, read_manifest
from edgekit.cli import app
from edgekit.device import install as install_module
from edgekit.device.apps import ANDROID_DEMO, IOS_DEMO
from edgekit.errors import OutputError
from edgekit.profiles import resolve

runner = CliRunner()
# Where the built-in profiles put artifacts, relative to each app's root.
ANDROID_ASSETS = Path("app/src/main/assets/models")
IOS_MODELS = Path("EdgekitDemo/Models")


def _make_app(root: Path, demo) -> Path:
    marker = root / demo.marker
    if demo is IOS_DEMO:
        marker.mkdir(parents=True)
        (marker / "EdgekitDemoApp.swift").write_text("import SwiftUI\n")
    else:
        marker.parent.mkdir(parents=True)
        marker.write_text("<manifest/>\n")
    return root


@pytest.fixture
def apps(tmp_path, monkeypatch) -> Path:
    """android-demo and ios-demo in the current folder, as in an edgekit checkout."""
    _make_app(tmp_path / "android-demo", ANDROID_DEMO)
    _make_app(tmp_path / "ios-demo", IOS_DEMO)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def artifact(mobilevit_artifacts) -> Path:
    return mobilevit_artifacts["onnx"]


def _copy_with(artifact: Path, folder: Path, **manifest_changes) -> Path:
    """A copy of an artifact with manifest fields changed (still valid against the schema)."""
    copy = folder / artifact.name
    shutil.copytree(artifact, copy)
    data = json.loads((copy / MANIFEST_NAME).read_text())
    data.update(manifest_changes)
    (copy / MANIFEST_NAME).write_text(json.dumps(data, indent=2))
    return copy


def _with_extra_files(artifact: Path, folder: Path) -> Path:
    """A copy whose manifest lists a second file in a subfolder (as a pipeline's tokenizer files
    or a Core ML .mlpackage's contents are), and a stray file it does not list."""
    copy = _copy_with(artifact, folder)
    extra = copy / "tokenizer" / "vocab.json"
    extra.parent.mkdir()
    extra.write_text('{"hello</w>": 0}')
    (copy / "bench-report.json").write_text("{}")  # not in the manifest: stays behind
    data = json.loads((copy / MANIFEST_NAME).read_text())
    data["files"].append(
        {
            "path": "tokenizer/vocab.json",
            "size_bytes": extra.stat().st_size,
            "sha256": hashlib.sha256(extra.read_bytes()).hexdigest(),
        }
    )
    (copy / MANIFEST_NAME).write_text(json.dumps(data, indent=2))
    return copy


def _install(*args: str):
    return runner.invoke(app, ["install", *args])


def _listed(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _one_error_line(result, exit_code: int, *, contains: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], result.output
    assert contains in lines[-1], result.output


def test_installs_listed_files_into_the_profiles_asset_folder(apps, artifact, tmp_path):
    source = _with_extra_files(artifact, tmp_path / "exported")
    result = _install(str(source), "--app", "android-demo")
    assert result.exit_code == 0, result.output

    destination = apps / "android-demo" / ANDROID_ASSETS / source.name
    assert _listed(destination) == [MANIFEST_NAME, "model.onnx", "tokenizer/vocab.json"]
    for name in ["model.onnx", "tokenizer/vocab.json"]:
        assert (destination / name).read_bytes() == (source / name).read_bytes()
        assert f"{name} -> {destination / name}" in " ".join(result.output.split())
    assert read_manifest(destination) == read_manifest(source)
    assert _listed(destination.parent) == [f"{source.name}/{n}" for n in _listed(destination)]


def test_a_path_to_a_copy_of_the_app_gets_the_same_layout(apps, artifact, tmp_path):
    copy = _make_app(tmp_path / "elsewhere" / "my-phone-app", ANDROID_DEMO)
    result = _install(str(artifact), "--app", str(copy))
    assert result.exit_code == 0, result.output
    assert (copy / ANDROID_ASSETS / artifact.name / "model.onnx").is_file()
    assert not (apps / "android-demo" / "app" / "src" / "main" / "assets").exists()


def test_reinstalling_replaces_the_earlier_copy_whole(apps, artifact, tmp_path):
    first = _with_extra_files(artifact, tmp_path / "v1")
    assert _install(str(first), "--app", "android-demo").exit_code == 0
    second = _copy_with(artifact, tmp_path / "v2")  # no tokenizer file this time
    result = _install(str(second), "--app", "android-demo")
    assert result.exit_code == 0, result.output
    assert "Replaced the earlier copy of" in result.output
    assert _listed(apps / "android-demo" / ANDROID_ASSETS) == [
        f"{artifact.name}/{MANIFEST_NAME}",
        f"{artifact.name}/model.onnx",
    ]


def test_ios_demo_gets_core_ml_in_its_models_folder(apps, artifact, tmp_path):
    coreml = resolve("coreml").model_dump(exclude_none=True)
    source = _copy_with(artifact, tmp_path / "exported", format="coreml", profile=coreml)
    result = _install(str(source), "--app", "ios-demo")
    assert result.exit_code == 0, result.output
    assert (apps / "ios-demo" / IOS_MODELS / source.name / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("app_name", "fmt", "message"),
    [
        ("ios-demo", "onnx", "ios-demo runs Core ML artifacts only; this artifact is onnx."),
        (
            "android-demo",
            "coreml",
            "android-demo runs LiteRT (.tflite), ExecuTorch (.pte), ONNX Runtime (.onnx) "
            "artifacts only; this artifact is coreml.",
        ),
    ],
)
def test_a_format_the_app_cannot_run_is_refused(apps, artifact, tmp_path, app_name, fmt, message):
    source = _copy_with(artifact, tmp_path / "exported", format=fmt, profile=None)
    result = _install(str(source), "--app", app_name)
    _one_error_line(result, 2, contains=message)
    assert not list((apps / app_name).rglob(source.name))


def test_failed_verification_is_refused_unless_forced(apps, artifact, tmp_path):
    source = _copy_with(artifact, tmp_path / "exported", status="failed")
    destination = apps / "android-demo" / ANDROID_ASSETS / source.name

    refused = _install(str(source), "--app", "android-demo")
    _one_error_line(refused, 2, contains="failed verification")
    assert "pass --force to install it anyway" in refused.output
    assert not destination.exists()

    forced = _install(str(source), "--app", "android-demo", "--force")
    assert forced.exit_code == 0, forced.output
    assert "Installed with --force although its verification failed" in forced.output
    assert (destination / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("app_arg", "message"),
    [
        ("not-an-app", "Unknown app 'not-an-app'. Known: android-demo, ios-demo."),
        ("./plain-folder", "'./plain-folder' is not a demo app: it holds none of the files"),
        ("./missing", "No app folder at './missing'."),
    ],
)
def test_something_that_is_not_an_app_is_refused(apps, artifact, app_arg, message):
    (apps / "plain-folder").mkdir()
    result = _install(str(artifact), "--app", app_arg)
    _one_error_line(result, 2, contains=message)


def test_a_file_changed_after_export_is_refused(apps, artifact, tmp_path):
    source = _copy_with(artifact, tmp_path / "exported")
    with (source / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    result = _install(str(source), "--app", "android-demo")
    _one_error_line(result, 2, contains="model.onnx changed after export: its sha256 is")
    assert _listed(apps / "android-demo" / ANDROID_ASSETS) == []


def test_a_copy_that_fails_midway_leaves_the_earlier_install_untouched(
    apps, artifact, tmp_path, monkeypatch
):
    assets = apps / "android-demo" / ANDROID_ASSETS
    assert _install(str(artifact), "--app", "android-demo").exit_code == 0
    before = {name: (assets / name).read_bytes() for name in _listed(assets)}

    real_copy = install_module._copy_file
    copied = []

    def disk_fills_up(source: Path, target: Path) -> str:
        if copied:  # the second file: half of it is written, then the disk is full
            target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        copied.append(source)
        return real_copy(source, target)

    monkeypatch.setattr(install_module, "_copy_file", disk_fills_up)
    source = _with_extra_files(artifact, tmp_path / "new")
    result = _install(str(source), "--app", "android-demo")
    _one_error_line(
        result, OutputError.exit_code, contains="No space left on device; nothing was installed."
    )
    assert copied == [source / "model.onnx"]  # it did fail midway, after a whole file
    assert {name: (assets / name).read_bytes() for name in _listed(assets)} == before
    assert [p.name for p in assets.iterdir()] == [artifact.name]  # no staging folder left
