"""Pickle-based weights (.bin, .ckpt): refused without --allow-pickle; no code runs either way.

The payload files hold real weights plus an object whose `__reduce__` creates a marker file when
unpickled: harmless, but exactly what a malicious checkpoint would do with os.system. The first
test shows a full unpickler does create the marker from these very files, so "no marker" below
means the code was not run, not that the payload was a dud.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekit import models
from edgekit.artifact import read_manifest
from edgekit.cli import app
from edgekit.errors import PickleRefusedError, SourceError
from edgekit.models.weights import check_safetensors, is_pickle_file
from tests.ldm_checkpoint import text_encoder_to_ldm, unet_to_ldm, vae_to_ldm, write_ldm_checkpoint

runner = CliRunner()
# The same weights loaded twice run the same CPU kernels; this leaves room only for float noise.
SAME_WEIGHTS_ATOL = 1e-6
# The hint's conversion command, as the refusal prints it.
_CONVERT_COMMAND = re.compile(r'python -c "(.+?)" ;')
PAYLOADS = ["mobilevit-bin", "unet-bin", "ldm-ckpt"]


class TouchOnUnpickle:
    """Unpickling this calls Path.touch(marker); the class itself is not needed to unpickle it."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _tiny_sd_modules():
    pipeline = models.load_pipeline("tiny-sd")
    return (
        pipeline.components["text-encoder"].module.text_model,
        pipeline.components["unet"].module.unet,
        pipeline.components["vae-decoder"].module.vae,
    )


def _as_bin_folder(source, target, weights_name, state) -> pathlib.Path:
    """A copy of a save_pretrained folder whose weights are a torch.save'd .bin instead."""
    shutil.copytree(source, target)
    for weights in target.glob("*.safetensors"):
        weights.unlink()
    torch.save(state, target / weights_name)
    return target


@pytest.fixture(scope="module")
def unet_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unet") / "unet"
    _tiny_sd_modules()[1].save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clean_sources(tmp_path_factory, mobilevit_folder, unet_folder, sd_pipeline_folder):
    """Tensors-only pickles: (export arguments, pickled weight file) per kind of source."""
    base = tmp_path_factory.mktemp("clean")
    mobilevit_state = models.load(mobilevit_folder).module.model.state_dict()
    mobilevit = _as_bin_folder(
        mobilevit_folder, base / "mobilevit", "pytorch_model.bin", mobilevit_state
    )
    unet_state = models.load(unet_folder).module.unet.state_dict()
    unet = _as_bin_folder(unet_folder, base / "unet", "diffusion_pytorch_model.bin", unet_state)
    ckpt = write_ldm_checkpoint(*_tiny_sd_modules(), base / "clean.ckpt")
    return {
        "mobilevit-bin": ([str(mobilevit)], mobilevit / "pytorch_model.bin"),
        "unet-bin": ([str(unet)], unet / "diffusion_pytorch_model.bin"),
        "ldm-ckpt": ([str(ckpt), "--config", str(sd_pipeline_folder)], ckpt),
    }


@pytest.fixture(scope="module")
def payload_sources(tmp_path_factory, mobilevit_folder, unet_folder, sd_pipeline_folder):
    """The same sources with a code-running object beside the tensors: (args, file, marker)."""
    base = tmp_path_factory.mktemp("payload")
    markers = base / "markers"
    markers.mkdir()

    def payload(name):
        return TouchOnUnpickle(markers / f"{name}-ran")

    mobilevit_state = models.load(mobilevit_folder).module.model.state_dict()
    mobilevit = _as_bin_folder(
        mobilevit_folder,
        base / "mobilevit",
        "pytorch_model.bin",
        {**mobilevit_state, "hidden": payload("mobilevit-bin")},
    )
    unet_state = models.load(unet_folder).module.unet.state_dict()
    unet = _as_bin_folder(
        unet_folder,
        base / "unet",
        "diffusion_pytorch_model.bin",
        {**unet_state, "hidden": payload("unet-bin")},
    )
    text_encoder, unet_module, vae = _tiny_sd_modules()
    ldm_state = {
        **unet_to_ldm(unet_module),
        **vae_to_ldm(vae),
        **text_encoder_to_ldm(text_encoder),
    }
    ckpt = base / "trainer.ckpt"
    torch.save({"state_dict": ldm_state, "callbacks": payload("ldm-ckpt")}, ckpt)
    return {
        "mobilevit-bin": (
            [str(mobilevit)],
            mobilevit / "pytorch_model.bin",
            markers / "mobilevit-bin-ran",
        ),
        "unet-bin": (
            [str(unet)],
            unet / "diffusion_pytorch_model.bin",
            markers / "unet-bin-ran",
        ),
        "ldm-ckpt": (
            [str(ckpt), "--config", str(sd_pipeline_folder)],
            ckpt,
            markers / "ldm-ckpt-ran",
        ),
    }


def _export(args, out, *extra):
    return runner.invoke(app, ["export", *args, "--target", "onnx", "--out", str(out), *extra])


def _error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("kind", PAYLOADS)
def test_payload_runs_under_a_full_unpickler(payload_sources, kind):
    """The control: the payload is real, so the absence of its marker elsewhere means something."""
    _, weights, marker = payload_sources[kind]
    assert not marker.exists()
    try:
        torch.load(weights, weights_only=False)
        assert marker.exists()
    finally:
        marker.unlink(missing_ok=True)


@pytest.mark.parametrize("kind", PAYLOADS)
def test_pickle_refused_without_consent(tmp_path, payload_sources, kind):
    args, weights, marker = payload_sources[kind]
    result = _export(args, tmp_path / "out")
    assert result.exit_code == PickleRefusedError.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(_error_lines(result)) == 1, result.output
    assert f"{weights} is a pickle-based weight file" in result.output
    assert "arbitrary code" in result.output
    assert "--allow-pickle" in result.output and "safetensors" in result.output
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("kind", PAYLOADS)
def test_payload_refused_with_consent_and_nothing_runs(tmp_path, payload_sources, kind):
    args, weights, marker = payload_sources[kind]
    result = _export(args, tmp_path / "out", "--allow-pickle")
    assert result.exit_code == SourceError.exit_code, result.output
    assert "Traceback" not in result.output
    assert len(_error_lines(result)) == 1, result.output
    assert f"{weights} holds pickled Python objects beyond tensors" in result.output
    assert "not even with --allow-pickle" in result.output
    assert not marker.exists()


def test_frameworks_read_bin_files_with_weights_only(payload_sources):
    """edgekit's own restricted read refuses first; the frameworks' reads behind it (transformers
    5 and diffusers 0.42 torch.load .bin files with weights_only=True) must be safe too."""
    from diffusers import UNet2DConditionModel
    from transformers import MobileViTForImageClassification

    for kind, loader in [
        ("mobilevit-bin", MobileViTForImageClassification),
        ("unet-bin", UNet2DConditionModel),
    ]:
        args, _, marker = payload_sources[kind]
        with pytest.raises(Exception) as refused:  # diffusers wraps the error in its own
            loader.from_pretrained(args[0], local_files_only=True, use_safetensors=False)
        assert any("Weights only load failed" in str(e) for e in _chain(refused.value)), kind
        assert not marker.exists(), kind


def _chain(exc: BaseException | None):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


@pytest.fixture(scope="module")
def bin_artifact(tmp_path_factory, clean_sources):
    args, _ = clean_sources["mobilevit-bin"]
    out = tmp_path_factory.mktemp("bin-artifact")
    result = _export(args, out, "--allow-pickle")
    assert result.exit_code == 0, result.output
    (path,) = list(out.iterdir())
    return path


@pytest.mark.parametrize("kind", PAYLOADS)
def test_tensors_only_pickle_is_refused_without_consent(tmp_path, clean_sources, kind):
    args, weights = clean_sources[kind]
    result = _export(args, tmp_path / "out")
    assert result.exit_code == 2 and len(_error_lines(result)) == 1, result.output
    assert f"{weights} is a pickle-based weight file" in result.output


def test_tensors_only_bin_with_consent_equals_safetensors(mobilevit_folder, clean_sources):
    args, _ = clean_sources["mobilevit-bin"]
    from_bin = models.load(args[0], allow_pickle=True)
    reference = models.load(mobilevit_folder)
    bin_state, reference_state = from_bin.module.state_dict(), reference.module.state_dict()
    assert bin_state.keys() == reference_state.keys()
    assert all(torch.equal(bin_state[k], reference_state[k]) for k in bin_state)
    inputs = reference.sample_inputs(0)
    np.testing.assert_allclose(
        from_bin.run_torch(inputs)["logits"],
        reference.run_torch(inputs)["logits"],
        rtol=0,
        atol=SAME_WEIGHTS_ATOL,
    )
    assert from_bin.source.options == {"batch_size": 1, "allow_pickle": True}
    assert "allow_pickle" not in reference.source.options  # recorded only where it was used


def test_tensors_only_bin_with_consent_exports_and_verifies(bin_artifact):
    manifest = read_manifest(bin_artifact)
    assert manifest.status == "verified"
    assert manifest.source.options["allow_pickle"] is True


def test_bench_reload_honours_recorded_consent(bin_artifact):
    """The bench worker (a subprocess) rebuilds the PyTorch baseline from source.options."""
    from edgekit.bench.worker import _load_source

    component = read_manifest(bin_artifact).components[0]
    assert _load_source(component).source.sha256 == component.source.sha256
    without = component.model_copy(deep=True)
    del without.source.options["allow_pickle"]
    with pytest.raises(PickleRefusedError):
        _load_source(without)


def test_generate_reload_honours_recorded_consent(sd_pipeline_folder, clean_sources):
    from edgekit.generate import GenerateError, _pytorch_components

    _, ckpt = clean_sources["ldm-ckpt"]
    pipeline = models.load_pipeline(ckpt, config=sd_pipeline_folder, allow_pickle=True)
    assert pipeline.source.options["allow_pickle"] is True
    assert all(c.source.options["allow_pickle"] is True for c in pipeline.components.values())

    def manifest(source):
        entries = [
            SimpleNamespace(name=name, source=model.source)
            for name, model in pipeline.components.items()
        ]
        return SimpleNamespace(name="sks", source=source, components=entries)

    assert set(_pytorch_components(manifest(pipeline.source))) == set(pipeline.components)
    without = pipeline.source.model_copy(deep=True)
    del without.options["allow_pickle"]
    with pytest.raises(GenerateError, match="pickle-based weight file"):
        _pytorch_components(manifest(without))


@pytest.mark.parametrize("kind", PAYLOADS)
def test_the_hints_conversion_command_works(tmp_path, clean_sources, sd_pipeline_folder, kind):
    """Run the one-liner the refusal prints; the converted source then loads without consent,
    with the same weights."""
    args, weights = clean_sources[kind]
    source = tmp_path / pathlib.Path(args[0]).name
    if pathlib.Path(args[0]).is_dir():
        shutil.copytree(args[0], source)
    else:
        shutil.copy(args[0], source)
    with pytest.raises(PickleRefusedError) as refused:
        _load(source, sd_pipeline_folder, allow_pickle=False)
    expected = _load(source, sd_pipeline_folder, allow_pickle=True).module.state_dict()
    command = _CONVERT_COMMAND.search(str(refused.value)).group(1)
    completed = subprocess.run(
        [sys.executable, "-c", command],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    # A folder is converted in place (edgekit prefers the .safetensors beside the .bin); a
    # checkpoint gets a .safetensors beside it.
    converted = source.with_suffix(".safetensors") if source.is_file() else source
    actual_model = _load(converted, sd_pipeline_folder, allow_pickle=False)
    assert "allow_pickle" not in actual_model.source.options
    actual = actual_model.module.state_dict()
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[k], expected[k]) for k in actual)


def _load(source, config, *, allow_pickle):
    if source.is_file():  # a single-file checkpoint: its UNet stands for all three components
        return models.load(source, config=config, allow_pickle=allow_pickle)
    return models.load(source, allow_pickle=allow_pickle)


def test_pickle_is_detected_by_content_under_any_name(tmp_path):
    renamed = tmp_path / "weights.data"
    torch.save({"w": torch.zeros(2)}, renamed)
    legacy = tmp_path / "legacy.data"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    assert is_pickle_file(renamed) and is_pickle_file(legacy)
    assert is_pickle_file(tmp_path / "absent.ckpt")  # by suffix, before anything is read
    # A safetensors header of 640 bytes makes the file begin 0x80 0x02, like a protocol-2
    # pickle: the "{" that follows the length tells them apart.
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'.ljust(0x280)
    lookalike = tmp_path / "lookalike.safetensors"
    lookalike.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    assert lookalike.read_bytes()[:2] == b"\x80\x02"
    check_safetensors(lookalike)  # a real safetensors file
    assert not is_pickle_file(lookalike)


@pytest.mark.parametrize("consent", [[], ["--allow-pickle"]])
def test_pickle_named_safetensors_is_never_unpickled(tmp_path, mobilevit_folder, consent):
    folder = tmp_path / "disguised"
    shutil.copytree(mobilevit_folder, folder)
    marker = tmp_path / "ran"
    torch.save({"hidden": TouchOnUnpickle(marker)}, folder / "model.safetensors")
    result = _export([str(folder)], tmp_path / "out", *consent)
    assert result.exit_code == 2 and len(_error_lines(result)) == 1, result.output
    assert "is named .safetensors but holds a pickle" in result.output
    assert not marker.exists()
