"""The CLI surface: help everywhere, version, and a light `--help` (no torch, no converters)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgekit import __version__
from edgekit.cli import app

runner = CliRunner()
HEAVY_MODULES = [
    "torch",
    "coremltools",
    "executorch",
    "onnxruntime",
    "onnx",
    "transformers",
    "diffusers",
    "litert_torch",
]


def test_help_does_not_import_heavy_modules():
    probe = (
        "import sys\n"
        "from edgekit.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('LOADED=' + ','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "export" in out.stdout and "bench" in out.stdout
    assert "LOADED=\n" in out.stdout, out.stdout[-300:]


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["export"],
        ["bench"],
        ["quickstart"],
        ["classify"],
        ["train", "dreambooth"],
        ["train", "classifier"],
        ["install"],
        ["verify"],
        ["emulator", "setup"],
    ],
)
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_export_help_lists_formats():
    result = runner.invoke(app, ["export", "--help"])
    assert "executorch, onnx" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"edgekit {__version__}"
