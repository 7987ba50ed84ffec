"""The whole Stable Diffusion pipeline: one artifact, three components, and `generate`."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgekit import models, profiles
from edgekit.artifact import read_manifest, write_bytes_atomic
from edgekit.cli import app
from edgekit.errors import NoHostRuntimeError, VerificationError
from edgekit.export import VERIFY_SEEDS, export_artifact, export_for_target
from edgekit.generate import MIN_PIPELINE_PSNR_DB, GenerateError, generate
from edgekit.scheduling import SchedulerError, diffusers_config
from edgekit.validate import TOLERANCES

runner = CliRunner()
MIN_FP32_PIPELINE_PSNR_DB = MIN_PIPELINE_PSNR_DB["fp32"]


@pytest.fixture(scope="module")
def sd_onnx(tmp_path_factory):
    """tiny-sd on ONNX, exported for a target profile that pins the runtime to one thread, its
    UNet with batch 2 (guidance in one call per step)."""
    out = tmp_path_factory.mktemp("sd-onnx")
    profile_file = out / "one-thread.toml"
    profile_file.write_text('name = "one-thread"\nformat = "onnx"\n[runtime]\nthreads = 1\n')
    pipeline = models.load_pipeline("tiny-sd", unet_batch=2)
    folder, _ = export_for_target(pipeline, profiles.read_profile(profile_file), out)
    return folder


def test_pipeline_artifact_has_components_tokenizer_and_scheduler(sd_onnx):
    manifest = read_manifest(sd_onnx)
    assert manifest.model_kind == "sd-pipeline" and manifest.status == "verified"
    assert [c.name for c in manifest.components] == ["text-encoder", "unet", "vae-decoder"]
    for component in manifest.components:
        assert (sd_onnx / component.model_file).is_file()
        assert component.verification.outputs[0].sqnr_db >= TOLERANCES["fp32"].min_sqnr_db
        assert component.verification.input_seeds == list(VERIFY_SEEDS)  # several inputs each
    for name in [*manifest.pipeline.tokenizer_files, manifest.pipeline.scheduler_config_file]:
        assert (sd_onnx / name).is_file()
    assert {f.path for f in manifest.files} >= {"vocab.json", "merges.txt", "unet.onnx"}
    assert manifest.component("text-encoder").inputs[0].dtype == "int32"
    # One source of truth: the manifest names the sampler; the diffusers file is derived from it.
    scheduler = manifest.pipeline.scheduler
    assert scheduler.algorithm == "ddim" and scheduler.beta_schedule == "scaled_linear"
    written = json.loads((sd_onnx / manifest.pipeline.scheduler_config_file).read_text())
    assert written == diffusers_config(scheduler) and written["_class_name"] == "DDIMScheduler"


def test_generate_matches_pytorch(sd_onnx):
    manifest = read_manifest(sd_onnx)
    assert manifest.pipeline.unet_batch == 2
    assert [s.shape[0] for s in manifest.component("unet").inputs] == [2, 2, 2]
    result = generate(sd_onnx, "a photo of sks cat", steps=4, seed=1)
    assert result.image.shape == (32, 32, 3)
    assert result.image.std() > 0.01  # a picture, not a flat field
    assert result.psnr_db >= MIN_FP32_PIPELINE_PSNR_DB


def test_batched_guidance_is_one_unet_call_per_step_and_the_same_latents():
    """A UNet that takes batch 2 runs both guidance branches in one call; the latents equal those
    of the two-call loop (the batch rows are independent)."""
    from edgekit.generate import denoise
    from edgekit.models import clip_tokenizer

    one, two = (models.load_pipeline("tiny-sd", unet_batch=b) for b in (1, 2))
    tokenizer_dir = Path(tempfile.mkdtemp())
    one.write_assets(tokenizer_dir)
    tokenizer = clip_tokenizer.load_tokenizer(tokenizer_dir)
    latents, batches = {}, {}
    for name, pipeline in (("two calls", one), ("one call", two)):
        seen: list[int] = []
        unet = pipeline.components["unet"]

        def counting(inputs, unet=unet, seen=seen):
            seen.append(inputs["sample"].shape[0])
            return unet.run_torch(inputs)

        components = {**{n: m.run_torch for n, m in pipeline.components.items()}, "unet": counting}
        latents[name] = denoise(components, tokenizer, pipeline.info, "a cat", "", 3, 7.5, 0)
        batches[name] = seen
    assert batches == {"two calls": [1] * 6, "one call": [2] * 3}
    # Equal up to float rounding (batched convolutions sum in another order): latents span +-5.
    np.testing.assert_allclose(latents["one call"], latents["two calls"], rtol=1e-5, atol=1e-4)
    assert not np.array_equal(latents["one call"], np.zeros_like(latents["one call"]))


def test_generate_runs_a_pytorch_pipeline_folder(sd_pipeline_folder, tmp_path):
    """--model: a diffusers folder (what `edgekit train dreambooth` writes) through the same
    sampler, no export; --artifact and --model together are refused."""
    out = tmp_path / "moon.png"
    args = ["--prompt", "a photo of sks cat on the moon", "--steps", "2", "--seed", "1"]
    result = runner.invoke(
        app, ["generate", "--model", str(sd_pipeline_folder), *args, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(out))
    assert image.shape[2] == 3 and image.std() > 1  # a picture, not a flat field
    both = runner.invoke(
        app, ["generate", "-m", "tiny-sd", "-a", str(tmp_path), *args, "--out", str(out)]
    )
    assert both.exit_code == GenerateError.exit_code
    assert "Pass exactly one of --artifact" in both.output and "Traceback" not in both.output
    for source, message in [("nope/", "No model at 'nope/'"), ("tiny-mobilevit", "not a Stable")]:
        bad = runner.invoke(
            app, ["generate", "-m", source, *args, "--out", str(tmp_path / "new" / "x.png")]
        )
        assert bad.exit_code == 2 and message in bad.output and "Traceback" not in bad.output
        assert not (tmp_path / "new").exists()  # nothing written for a bad source


def test_generate_fails_on_a_broken_component_but_writes_the_images(sd_onnx, tmp_path, monkeypatch):
    from edgekit.exporters import onnx as onnx_exporter

    original = onnx_exporter.OnnxRuntime.__call__

    def shifted(self, inputs):
        results = original(self, inputs)
        return {k: v * np.float32(1.05) if k == "noise_pred" else v for k, v in results.items()}

    monkeypatch.setattr(onnx_exporter.OnnxRuntime, "__call__", shifted)
    out = tmp_path / "cat.png"
    args = ["--prompt", "a photo of sks cat", "--steps", "4", "--seed", "1", "--out", str(out)]
    result = runner.invoke(app, ["generate", "--artifact", str(sd_onnx), *args])
    assert result.exit_code == VerificationError.exit_code, result.output
    assert "dB PSNR from the PyTorch pipeline's" in result.output
    assert f"under the {MIN_FP32_PIPELINE_PSNR_DB:.1f} dB an fp32 pipeline must reach" in (
        result.output
    )
    assert "Traceback" not in result.output
    assert out.is_file() and (tmp_path / "cat-pytorch.png").is_file()  # to look at


def test_seed_and_prompt_change_the_image(sd_onnx):
    base = generate(sd_onnx, "a cat", steps=2, seed=1, compare_with_pytorch=False).image
    other_seed = generate(sd_onnx, "a cat", steps=2, seed=2, compare_with_pytorch=False).image
    other_prompt = generate(sd_onnx, "a dog", steps=2, seed=1, compare_with_pytorch=False).image
    assert np.abs(base - other_seed).max() > 0.01
    assert np.abs(base - other_prompt).max() > 1e-4


def test_cli_generate_writes_png_and_reports_psnr(sd_onnx, tmp_path):
    out = tmp_path / "cat.png"
    previous_umask = os.umask(0o022)
    try:
        result = runner.invoke(
            app,
            [
                "generate",
                "--artifact",
                str(sd_onnx),
                "--prompt",
                "a photo of sks cat",
                "--steps",
                "4",
                "--seed",
                "1",
                "--out",
                str(out),
            ],
        )
    finally:
        os.umask(previous_umask)
    assert result.exit_code == 0, result.output
    assert "PSNR artifact vs PyTorch" in result.output
    assert f"fp32 needs >= {MIN_FP32_PIPELINE_PSNR_DB:.1f} dB" in " ".join(result.output.split())
    assert Image.open(out).size == (32, 32)
    assert (tmp_path / "cat-pytorch.png").is_file()
    # Images get what open() gives any file (0666 minus the umask), not a temp file's 0600.
    for image in (out, tmp_path / "cat-pytorch.png"):
        assert image.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_reports_and_images_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = write_bytes_atomic(tmp_path / "report.json", b"{}")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_tflite_pipeline_and_generate(tmp_path):
    result = runner.invoke(app, ["export", "tiny-sd", "--target", "tflite", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "tiny-sd-tflite-fp32"
    manifest = read_manifest(folder)
    assert [c.model_file for c in manifest.components] == [
        "text-encoder.tflite",
        "unet.tflite",
        "vae-decoder.tflite",
    ]
    assert generate(folder, "a photo of sks cat", steps=4, seed=1).psnr_db >= (
        MIN_FP32_PIPELINE_PSNR_DB
    )


def test_coreml_pipeline_uses_apple_resource_names(tmp_path):
    result = runner.invoke(app, ["export", "tiny-sd", "--target", "coreml", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "tiny-sd-coreml-fp16"
    manifest = read_manifest(folder)
    assert [c.model_file for c in manifest.components] == [
        "TextEncoder.mlpackage",
        "Unet.mlpackage",
        "VAEDecoder.mlpackage",
    ]
    assert (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if manifest.status == "structure-only":  # Linux: say so, and refuse to generate
        assert "Numerics NOT checked" in result.output
        with pytest.raises(NoHostRuntimeError, match="Cannot generate with the coreml artifact"):
            generate(folder, "a cat", steps=1)


def test_generate_needs_a_full_pipeline(tmp_path, sd_pipeline_folder):
    folder, _ = export_artifact(
        models.load_pipeline(sd_pipeline_folder, components=["unet"]), "onnx", tmp_path
    )
    with pytest.raises(GenerateError, match="lacks text-encoder, vae-decoder"):
        generate(folder, "a cat", steps=1)
    mobilevit, _ = export_artifact(models.load("tiny-mobilevit"), "onnx", tmp_path)
    new_dir = tmp_path / "newdir"
    result = runner.invoke(
        app,
        ["generate", "--artifact", str(mobilevit), "--prompt", "x", "--out", f"{new_dir}/x.png"],
    )
    assert result.exit_code == GenerateError.exit_code
    assert "not a Stable Diffusion pipeline" in result.output
    assert not new_dir.exists()  # every input is checked before any output is created


@pytest.mark.parametrize(("steps", "message"), [("0", "--steps 0"), ("1001", "--steps 1001")])
def test_generate_refuses_a_step_count_before_creating_output(sd_onnx, tmp_path, steps, message):
    new_dir = tmp_path / "newdir"
    result = runner.invoke(
        app,
        ["generate", "-a", str(sd_onnx), "-p", "x", "--steps", steps, "--out", f"{new_dir}/x.png"],
    )
    assert result.exit_code == SchedulerError.exit_code == GenerateError.exit_code
    assert f"{message} is not allowed" in result.output
    assert not new_dir.exists()


def test_pipeline_folder_exports_with_its_own_tokenizer(sd_pipeline_folder, tmp_path):
    folder, manifest = export_artifact(
        models.load_pipeline(sd_pipeline_folder, components=["text-encoder"]),
        "executorch",
        tmp_path,
    )
    assert manifest.status == "verified"
    assert (folder / "vocab.json").read_bytes() == (
        sd_pipeline_folder / "tokenizer" / "vocab.json"
    ).read_bytes()


def test_bench_times_each_component_and_breaks_an_image_down(sd_onnx):
    from edgekit.bench import BenchSettings, TimingSettings, run_bench

    report = run_bench(
        [sd_onnx],
        timing=TimingSettings(warmup_runs=0, min_runs=2),
        settings=BenchSettings(threads=[1], compute=False, pipeline_steps=3, pipeline_images=1),
    )
    names = sorted(r.name for r in report.results)
    assert names == sorted(
        [f"tiny-sd-onnx-fp32/{c}" for c in ("text-encoder", "unet", "vae-decoder")]
        + [f"pytorch-eager:tiny-sd/{c}" for c in ("text-encoder", "unet", "vae-decoder")]
    )
    manifest = read_manifest(sd_onnx)
    medians = {}
    for result in report.results:
        if result.format == "onnx":
            component = manifest.component(result.component)
            assert result.model_size_bytes == sum(
                f.size_bytes for f in manifest.files if f.path.startswith(component.model_file)
            )
            assert result.model_kind == component.model_kind
            medians[result.component] = result.latency.median_ms
    # One image: the text encoder for prompt and negative prompt, the batch-2 UNet once per
    # step (guidance in one call), the decoder once; and a whole image measured end to end.
    (breakdown,) = report.pipelines
    assert breakdown.unet_calls_per_step == 1 and breakdown.steps == 3
    assert breakdown.component_median_ms == medians
    expected_ms = 2 * medians["text-encoder"] + 3 * medians["unet"] + medians["vae-decoder"]
    assert breakdown.estimated_image_s == pytest.approx(expected_ms / 1e3)
    assert len(breakdown.measured_image_s) == 1
    assert breakdown.cold_load_s is not None and breakdown.warm_load_s is not None


def test_generate_refuses_an_unwritable_output_before_running(sd_onnx, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    def must_not_run(*args, **kwargs):
        raise AssertionError("denoising started before the output folder was checked")

    monkeypatch.setattr("edgekit.generate.run_pipeline", must_not_run)
    result = runner.invoke(
        app,
        [
            "generate",
            "--artifact",
            str(sd_onnx),
            "--prompt",
            "a cat",
            "--out",
            str(blocker / "cat.png"),
        ],
    )
    assert result.exit_code != 0 and "Cannot write to output folder" in result.output
    assert "Traceback" not in result.output


def test_generate_runtimes_use_the_artifacts_profile_settings(sd_onnx):
    from edgekit.generate import open_components

    manifest = read_manifest(sd_onnx)
    for threads, expected in ((None, 1), (2, 2)):  # the profile's 1, or the --threads flag
        for runtime in open_components(sd_onnx, manifest, threads).values():
            assert runtime.session.get_session_options().intra_op_num_threads == expected
