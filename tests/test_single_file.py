"""Single-file LDM checkpoints (CompVis layout, as CompVis-style DreamBooth trainers write)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekit import models
from edgekit.artifact import read_manifest
from edgekit.cli import app
from edgekit.errors import PickleRefusedError, SourceError
from tests.ldm_checkpoint import write_ldm_checkpoint

runner = CliRunner()


class NotATensor:
    """Stands for the OmegaConf objects some trainers pickle into .ckpt files."""


def _tiny_modules():
    pipeline = models.load_pipeline("tiny-sd")
    return (
        pipeline.components["text-encoder"].module.text_model,
        pipeline.components["unet"].module.unet,
        pipeline.components["vae-decoder"].module.vae,
    )


@pytest.fixture(scope="module")
def ldm_safetensors(tmp_path_factory):
    return write_ldm_checkpoint(
        *_tiny_modules(), tmp_path_factory.mktemp("ldm") / "sks.safetensors"
    )


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_components_equal_the_diffusers_ones(
    tmp_path, sd_pipeline_folder, ldm_safetensors, suffix
):
    checkpoint = (
        ldm_safetensors
        if suffix == ".safetensors"
        else write_ldm_checkpoint(*_tiny_modules(), tmp_path / "sks.ckpt")
    )
    # A .ckpt is a pickle: read only with the user's consent (restricted unpickler).
    from_file = models.load_pipeline(
        checkpoint, config=sd_pipeline_folder, allow_pickle=suffix == ".ckpt"
    )
    reference = models.load_pipeline(sd_pipeline_folder)
    assert list(from_file.components) == ["text-encoder", "unet", "vae-decoder"]
    assert from_file.source.kind == "ldm-checkpoint"
    for name, component in reference.components.items():
        inputs = component.sample_inputs(0)
        expected = component.run_torch(inputs)
        actual = from_file.components[name].run_torch(inputs)
        for key in expected:
            np.testing.assert_allclose(actual[key], expected[key], atol=1e-5, err_msg=name)


def test_cli_exports_single_file_checkpoint(tmp_path, sd_pipeline_folder, ldm_safetensors):
    result = runner.invoke(
        app,
        [
            "export",
            str(ldm_safetensors),
            "--config",
            str(sd_pipeline_folder),
            "--target",
            "onnx",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "sks.safetensors-onnx-fp32")
    assert manifest.status == "verified" and manifest.source.kind == "ldm-checkpoint"
    assert manifest.component("unet").source.options["config"] == str(sd_pipeline_folder)
    assert (tmp_path / "sks.safetensors-onnx-fp32" / "merges.txt").is_file()


def test_checkpoint_without_config_is_refused(ldm_safetensors):
    result = runner.invoke(app, ["export", str(ldm_safetensors), "--target", "onnx"])
    assert result.exit_code != 0 and "needs --config" in result.output
    assert "Traceback" not in result.output


def test_pickled_objects_are_refused_with_a_hint(tmp_path, sd_pipeline_folder):
    checkpoint = tmp_path / "trainer.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hparams": NotATensor()}, checkpoint)
    with pytest.raises(PickleRefusedError, match="--allow-pickle"):
        models.load_pipeline(checkpoint, config=sd_pipeline_folder)
    with pytest.raises(SourceError, match="pickled Python objects") as refused:
        models.load_pipeline(checkpoint, config=sd_pipeline_folder, allow_pickle=True)
    assert "NotATensor" in str(refused.value)  # names what it would have had to build


def test_truncated_checkpoint(tmp_path, sd_pipeline_folder, ldm_safetensors):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(ldm_safetensors.read_bytes()[:5000])
    result = runner.invoke(
        app,
        [
            "export",
            str(broken),
            "--config",
            str(sd_pipeline_folder),
            "--target",
            "onnx",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code != 0 and "not a readable safetensors file" in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
