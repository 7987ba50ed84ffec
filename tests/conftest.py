"""Shared fixtures. Everything is offline: sockets are blocked, hubs are told to stay offline."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to open a network connection fails the test that made it."""

    def refuse(*args, **kwargs):
        raise RuntimeError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def mobilevit_folder(tmp_path_factory) -> Path:
    """A Hugging Face MobileViT folder as save_pretrained writes it, with a preprocessor config."""
    from edgekit.models.mobilevit import load_preset

    folder = tmp_path_factory.mktemp("hf") / "my-mobilevit"
    model = load_preset("tiny-mobilevit").module.model
    model.config.id2label = {i: f"flower_{i}" for i in range(model.config.num_labels)}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "MobileViTImageProcessor",
                "do_resize": True,
                "size": {"shortest_edge": 72},
                "do_center_crop": True,
                "crop_size": {"height": 64, "width": 64},
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_flip_channel_order": True,
            }
        )
    )
    return folder


@pytest.fixture(scope="session")
def sd_pipeline_folder(tmp_path_factory) -> Path:
    """A diffusers pipeline folder as save_pretrained writes it, from the tiny-sd preset."""
    from edgekit import models
    from edgekit.models import clip_tokenizer
    from edgekit.models.stable_diffusion import SD15_SCHEDULER_CONFIG

    folder = tmp_path_factory.mktemp("sd") / "sd-pipeline"
    pipeline = models.load_pipeline("tiny-sd")
    pipeline.components["text-encoder"].module.text_model.save_pretrained(folder / "text_encoder")
    pipeline.components["unet"].module.unet.save_pretrained(folder / "unet")
    pipeline.components["vae-decoder"].module.vae.save_pretrained(folder / "vae")
    clip_tokenizer.write_tokenizer_files(folder / "tokenizer")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_CONFIG))
    (folder / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "scheduler": ["diffusers", "PNDMScheduler"],
            }
        )
    )
    return folder


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


def attention_float_plan(module):
    """int8 everywhere except the attention blocks and norms, which stay fp32 whole: the plan
    that keeps attention float (the named `mixed` quantizes the attention projections per run
    instead; see edgekit.quant.plan)."""
    from edgekit.quant.plan import LayerPrecision, QuantPlan, named_plan

    mixed = named_plan("mixed", module)
    return QuantPlan(
        name="attention-float",
        default=LayerPrecision.INT8,
        overrides=dict.fromkeys(mixed.overrides, LayerPrecision.FP32),
    )


def host_formats() -> list[str]:
    """Formats whose runtime exists on this machine (Core ML runs on macOS only)."""
    from edgekit import exporters

    return [
        f
        for f in exporters.format_names()
        if exporters.get(f).host_runtime_unavailable_reason() is None
    ]


@pytest.fixture(scope="session")
def mobilevit_artifacts(artifacts_dir) -> dict[str, Path]:
    """tiny-mobilevit exported once per session to every host-runnable format."""
    from edgekit import models
    from edgekit.export import export_artifact

    loaded = models.load("tiny-mobilevit")
    return {f: export_artifact(loaded, f, artifacts_dir)[0] for f in host_formats()}


# Tests that write broken manifests on purpose put them under a folder with this name.
DELIBERATELY_CORRUPT = "deliberately-corrupt"


def pytest_sessionfinish(session, exitstatus):
    """Every manifest any test wrote must validate against the committed JSON Schema. Under
    pytest-xdist the controller checks them all: its base temp folder holds the workers'."""
    if hasattr(session.config, "workerinput"):  # an xdist worker
        return
    base = (
        session.config._tmp_path_factory.getbasetemp()
        if hasattr(session.config, "_tmp_path_factory")
        else None
    )
    if base is None or not Path(base).exists():
        return
    manifests = [
        manifest
        for manifest in Path(base).rglob("manifest.json")
        if DELIBERATELY_CORRUPT not in str(manifest)
    ]
    bad = []
    if manifests:
        # Imported only when there is something to check: a run of the training tests alone
        # (benchmarks/gpu_check.sh on a GPU machine's own Python) needs no jsonschema.
        import jsonschema

        from edgekit.artifact import SCHEMA_PATH

        validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
        for manifest in manifests:
            errors = list(validator.iter_errors(json.loads(manifest.read_text())))
            if errors:
                bad.append(f"{manifest}: {errors[0].message}")
    checked = len(manifests)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter:
        reporter.write_line(f"manifest schema check: {checked} manifests, {len(bad)} invalid")
    if bad:
        for line in bad:
            reporter.write_line(f"INVALID MANIFEST {line}")
        session.exitstatus = 1


# Calibration inputs for the shared analysis: few, so the test suite stays fast; enough that a
# layer's damage shows in the output.
ANALYSIS_CALIB_COUNT = 4


@pytest.fixture(scope="session")
def tiny_sensitivity(tmp_path_factory) -> tuple[Path, str]:
    """One `edgekit quantize analyze tiny-mobilevit` run (all schemes), shared by the analysis,
    plan and end-to-end tests: (sensitivity file, terminal output)."""
    from typer.testing import CliRunner

    from edgekit.cli import app

    out = tmp_path_factory.mktemp("analysis") / "sens.json"
    result = CliRunner().invoke(
        app,
        [
            "quantize",
            "analyze",
            "tiny-mobilevit",
            "--calib-count",
            str(ANALYSIS_CALIB_COUNT),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    return out, result.output
