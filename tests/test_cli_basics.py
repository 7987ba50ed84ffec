"""The CLI surface: help everywhere, version, and a light `--help` (no torch, no converters)."""

from __future__ import annotations

import os
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


def test_commands_turn_off_the_hugging_face_progress_bars():
    """transformers prints a tqdm "Loading weights" bar for each model it loads from a folder
    (`generate --model`, `export` of a pipeline), between edgekit's own lines. Commands set up
    logging before they import it; a fresh process shows the bar is then off (and on with
    --verbose, where every library's output is wanted)."""
    probe = (
        "import sys\n"
        "from edgekit.cli._common import configure_logging\n"
        "configure_logging(verbose=sys.argv[1] == 'verbose')\n"
        "from transformers.utils import logging\n"
        "print(logging.is_progress_bar_enabled())\n"
    )
    # Without the variable commands run in this test process may have set (CliRunner).
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    shown = {
        mode: subprocess.run(
            [sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True, env=env
        ).stdout.strip()
        for mode in ("quiet", "verbose")
    }
    assert shown == {"quiet": "False", "verbose": "True"}
