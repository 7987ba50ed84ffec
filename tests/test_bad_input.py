"""Bad input: one clear line with a hint, non-zero exit, no traceback, nothing half-written."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgekit.cli import app
from tests.conftest import DELIBERATELY_CORRUPT

runner = CliRunner()


def _assert_one_clear_error(result, *, contains: str):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.output
    assert contains in result.output
    assert "Hint:" in result.output


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_missing_path(tmp_path):
    result = runner.invoke(
        app, ["export", str(tmp_path / "nope"), "--target", "onnx", "--out", str(tmp_path / "out")]
    )
    _assert_one_clear_error(result, contains="neither an existing path nor a preset")
    assert _leftovers(tmp_path / "out") == []


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("holiday pictures")
    result = runner.invoke(
        app,
        ["export", str(tmp_path / "photos"), "--target", "onnx", "--out", str(tmp_path / "out")],
    )
    _assert_one_clear_error(result, contains="is not a model folder")


def test_text_file_instead_of_folder(tmp_path):
    (tmp_path / "model.txt").write_text("not a model")
    result = runner.invoke(app, ["export", str(tmp_path / "model.txt"), "--target", "onnx"])
    _assert_one_clear_error(result, contains="is a file")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors(tmp_path, mobilevit_folder, damage):
    folder = tmp_path / "broken"
    shutil.copytree(mobilevit_folder, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 64)
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", str(folder), "--target", "onnx", "--out", str(out)])
    _assert_one_clear_error(result, contains="not a readable safetensors file")
    assert _leftovers(out) == []


def test_missing_weights(tmp_path, mobilevit_folder):
    folder = tmp_path / "noweights"
    shutil.copytree(mobilevit_folder, folder)
    (folder / "model.safetensors").unlink()
    result = runner.invoke(app, ["export", str(folder), "--target", "onnx"])
    _assert_one_clear_error(result, contains="No weights in")


def test_unknown_target(tmp_path):
    result = runner.invoke(
        app, ["export", "tiny-mobilevit", "--target", "tensorrt", "--out", str(tmp_path / "out")]
    )
    _assert_one_clear_error(
        result, contains="Unknown target 'tensorrt'. Known: coreml, coreml-ios17,"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("model", "option", "message"),
    [
        ("tiny-mobilevit", ["--unet-batch", "2"], "--unet-batch is for Stable Diffusion pipelines"),
        ("tiny-sd", ["--unet-batch", "3"], "UNet batch 3 is not allowed"),
    ],
)
def test_unet_batch_only_for_sd_and_only_1_or_2(tmp_path, model, option, message):
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", model, "-t", "onnx", "-o", str(out), *option])
    _assert_one_clear_error(result, contains=message)
    assert not out.exists()


def test_unknown_preset():
    result = runner.invoke(app, ["export", "mobilevit-huge", "--target", "onnx"])
    _assert_one_clear_error(result, contains="mobilevit-small")
    result = runner.invoke(app, ["quickstart", "--preset", "sd15-unet"])
    _assert_one_clear_error(result, contains="Unknown quickstart preset 'sd15-unet'")


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder should be")
    result = runner.invoke(
        app, ["export", "tiny-mobilevit", "--target", "onnx", "--out", str(blocker / "artifacts")]
    )
    _assert_one_clear_error(result, contains="Cannot write to output folder")


def test_bench_on_non_artifact(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["bench", str(tmp_path / "empty")])
    _assert_one_clear_error(result, contains="has no manifest.json")
    result = runner.invoke(app, ["bench", str(tmp_path / "absent")])
    _assert_one_clear_error(result, contains="No artifact folder")


def test_corrupt_manifest(tmp_path):
    folder = tmp_path / DELIBERATELY_CORRUPT
    folder.mkdir()
    (folder / "manifest.json").write_text('{"name": 3')
    result = runner.invoke(app, ["bench", str(folder)])
    _assert_one_clear_error(result, contains="not a valid edgekit manifest")


def test_real_process_prints_no_traceback(tmp_path):
    """The installed console script, not just CliRunner: one line on stderr, exit code 2."""
    completed = subprocess.run(
        [sys.executable, "-m", "edgekit", "export", str(tmp_path / "missing"), "--target", "onnx"],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert completed.stderr.strip().startswith("error:")
