"""Deployment target profiles: resolution, validation with the bad key named, and packaging."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
from typer.testing import CliRunner

from edgekit import exporters, profiles
from edgekit.artifact import read_manifest
from edgekit.bench import BenchSettings, TimingSettings, run_bench
from edgekit.cli import app
from edgekit.errors import ArtifactError, UnknownChoiceError

runner = CliRunner()
REQUIRED_PROFILES = {"coreml-ios17", "tflite-android", "executorch-xnnpack", "onnx-cpu"}


def test_builtin_profiles_cover_every_format():
    builtin = profiles.builtin_profiles()
    assert set(builtin) >= REQUIRED_PROFILES
    coreml = builtin["coreml-ios17"]
    assert (coreml.format, coreml.precision, coreml.minimum_os) == ("coreml", "fp16", "iOS17")
    assert coreml.export["minimum_deployment_target"] == "iOS17"
    for profile in builtin.values():
        assert profile.demo_app is not None and profile.demo_app.asset_folder


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("coreml", "coreml-ios17"),
        ("tflite", "tflite-android"),
        ("executorch", "executorch-xnnpack"),
        ("onnx", "onnx-cpu"),
        ("onnx-cpu", "onnx-cpu"),
    ],
)
def test_format_resolves_to_its_default_profile(target, expected):
    assert profiles.resolve(target).name == expected


def test_user_profile_file(tmp_path):
    phone = tmp_path / "my-phone.toml"
    phone.write_text(
        'name = "my-phone"\nformat = "coreml"\nprecision = "fp32"\n'
        '[export]\nminimum_deployment_target = "iOS16"\n'
    )
    profile = profiles.resolve(str(phone))
    assert (profile.name, profile.precision, profile.export) == (
        "my-phone",
        "fp32",
        {"minimum_deployment_target": "iOS16"},
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('name = "x"\nformat = "onnx"\nthreads = 4\n', "Bad key 'threads'"),
        ('name = "x"\nformat = "onnx"\n[runtime]\nthreds = 4\n', "Bad key 'runtime.threds'"),
        ('name = "x"\nformat = "onnx"\nprecision = "fp8"\n', "Bad key 'precision'"),
        ('name = "x"\nformat = "tensorrt"\n', "Bad key 'format'"),
        (
            'name = "x"\nformat = "coreml"\n[export]\ndeployment = "iOS17"\n',
            "Bad key 'export.deployment'",
        ),
        ('name = "x"\nformat = \n', "is not valid TOML"),
    ],
)
def test_bad_profile_names_the_bad_key(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(profiles.ProfileError, match=message):
        profiles.resolve(str(path))
    result = runner.invoke(
        app, ["export", "tiny-mobilevit", "--target", str(path), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_unknown_target_lists_formats_and_profiles():
    with pytest.raises(UnknownChoiceError, match="coreml-ios17"):
        profiles.resolve("tensorrt")


def test_export_with_profile_file_records_it(tmp_path):
    phone = tmp_path / "phone.toml"
    phone.write_text('name = "phone"\nformat = "onnx"\n[runtime]\nthreads = 6\n')
    result = runner.invoke(
        app, ["export", "tiny-mobilevit", "--target", str(phone), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "tiny-mobilevit-onnx-fp32"
    manifest = read_manifest(folder)
    assert manifest.profile["name"] == "phone" and manifest.profile["runtime"]["threads"] == 6

    # The profile's runtime settings reach the runtimes that bench, generate and classify open:
    # 6 threads on the phone, capped at this host's cores (more only adds contention here).
    expected = min(6, os.cpu_count())
    runtime = exporters.open_runtime(folder, manifest, manifest.component())
    assert runtime.session.get_session_options().intra_op_num_threads == expected
    assert runtime.settings["threads"] == expected
    override = exporters.open_runtime(folder, manifest, manifest.component(), threads=3)
    assert override.session.get_session_options().intra_op_num_threads == 3
    report = run_bench(
        [folder],
        timing=TimingSettings(warmup_runs=0, min_runs=2),
        settings=BenchSettings(pytorch_baseline=False, compute=False),
    )
    (result,) = report.results
    assert result.threads == expected and result.runtime.settings["threads"] == expected
    assert result.runtime.settings["execution_provider"] == "CPUExecutionProvider"


def test_onnxruntime_spinning_is_its_own_default_unless_the_profile_turns_it_off(
    mobilevit_artifacts,
):
    """Spinning is a per-runtime setting, recorded as applied, not switched off for one
    runtime behind the user's back."""
    from edgekit.exporters.onnx import OnnxRuntime
    from edgekit.profiles import RuntimeSettings

    folder = mobilevit_artifacts["onnx"]
    model_path = folder / read_manifest(folder).component().model_file

    def spinning_entry(runtime) -> str | None:
        try:
            options = runtime.session.get_session_options()
            return options.get_session_config_entry("session.intra_op.allow_spinning")
        except RuntimeError:  # not set: onnxruntime's default (spinning) applies
            return None

    default = OnnxRuntime(model_path, settings=None)
    assert default.settings["spinning"] is True and spinning_entry(default) is None
    off = OnnxRuntime(model_path, settings=RuntimeSettings(spinning=False))
    assert off.settings["spinning"] is False and spinning_entry(off) == "0"


def test_profile_threads_apply_as_written_when_the_host_has_the_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    settings = exporters.profile_runtime_settings({"runtime": {"threads": 6}})
    assert settings.threads == 6
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert exporters.profile_runtime_settings({"runtime": {"threads": 6}}).threads == 2
    assert exporters.profile_runtime_settings({"runtime": {"threads": 6}}, threads=5).threads == 5


def test_profile_delegates_a_host_runtime_lacks_are_refused(mobilevit_artifacts):
    for format_name in ("tflite", "executorch"):
        folder = mobilevit_artifacts[format_name]
        manifest = read_manifest(folder)
        phone = manifest.model_copy(update={"profile": {"runtime": {"delegate": "gpu"}}})
        with pytest.raises(ArtifactError, match="'gpu' delegate"):
            exporters.open_runtime(folder, phone, phone.component())
    folder = mobilevit_artifacts["onnx"]
    manifest = read_manifest(folder)
    cuda = manifest.model_copy(
        update={"profile": {"runtime": {"execution_provider": "CUDAExecutionProvider"}}}
    )
    with pytest.raises(ArtifactError, match="CUDAExecutionProvider, which this host"):
        exporters.open_runtime(folder, cuda, cuda.component())


def test_wheel_ships_builtin_profiles(tmp_path):
    """Build the wheel and look inside: profiles must travel with the package."""
    from pathlib import Path

    root = Path(__file__).parent.parent
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("edgekit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for profile in REQUIRED_PROFILES:
        assert f"edgekit/targets/{profile}.toml" in names
    assert "edgekit/models/data/bpe_simple_vocab_16e6.txt.gz" in names
    assert "edgekit/schemas/manifest.schema.json" in names


def test_a_profile_names_a_default_plan_and_flags_override_it(tmp_path):
    """onnx-cpu-mixed exports the `mixed` plan without --quant; a plan file named by a profile
    is found next to the profile; --precision overrides the profile's plan."""

    result = runner.invoke(
        app, ["export", "tiny-mobilevit", "--target", "onnx-cpu-mixed", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "tiny-mobilevit-onnx-mixed")
    assert manifest.quant_plan.name == "mixed" and manifest.profile["quant"] == "mixed"
    assert set(manifest.component().quant.counts) == {"int8-dynamic", "int8"}

    plan = tmp_path / "profiles" / "my-plan.json"
    plan.parent.mkdir()
    plan.write_text('{"schema_version": "1.0", "name": "mine", "default": "int8-dynamic"}')
    profile = plan.parent / "mine.toml"
    profile.write_text('name = "mine"\nformat = "onnx"\nquant = "my-plan.json"\n')
    assert profiles.resolve(str(profile)).quant == str(plan)
    result = runner.invoke(
        app,
        [
            "export",
            "tiny-mobilevit",
            "--target",
            str(profile),
            "--precision",
            "fp32",
            "--out",
            str(tmp_path / "fp32"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "fp32" / "tiny-mobilevit-onnx-fp32").quant_plan is None
