"""The manifest's scheduler spec and edgekit's numpy DDIM, against diffusers' DDIMScheduler."""

from __future__ import annotations

import inspect
import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekit import models
from edgekit.cli import app
from edgekit.errors import SourceError
from edgekit.models.stable_diffusion import SD15_SCHEDULER_CONFIG
from edgekit.scheduling import (
    SOURCE_CONFIG_DEFAULTS,
    BetaSchedule,
    DDIMSampler,
    PredictionType,
    SamplerAlgorithm,
    SchedulerError,
    SchedulerSpec,
    TimestepSpacing,
    diffusers_config,
    spec_from_source_config,
    timesteps,
)

runner = CliRunner()

# edgekit computes the schedule (abar) in float64; diffusers in float32, whose abar tables are
# up to 144 ulps off for the cosine schedule. Step outputs, relative to max(1, |reference|),
# measured over every beta schedule x prediction type x spacing x clip x set_alpha_to_one at
# 1-50 steps: worst 2.2e-5 (epsilon and v_prediction: 6.7e-6), except 'sample' prediction on the
# cosine schedule: 3.3e-4, at t=1 where eps = (x - sqrt(abar) x0) / sqrt(1 - abar) divides by
# sqrt(1 - abar) ~ 0.006, and diffusers' 1 - abar (float32) is 5e-4 off. A real bug (abar read
# one timestep off) gives 1.1e-2 to 0.58.
STEP_RTOL = 1e-4
SAMPLE_PREDICTION_COSINE_STEP_RTOL = 1e-3


def _sd15_spec() -> SchedulerSpec:
    return spec_from_source_config(SD15_SCHEDULER_CONFIG, origin="SD 1.5")


def _diffusers(spec: SchedulerSpec):
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(diffusers_config(spec))


def test_source_defaults_are_diffusers_ddim_defaults():
    from diffusers import DDIMScheduler

    parameters = inspect.signature(DDIMScheduler.__init__).parameters
    assert {k: parameters[k].default for k in SOURCE_CONFIG_DEFAULTS} == SOURCE_CONFIG_DEFAULTS


def test_pndm_config_becomes_ddim_with_the_same_noise_schedule():
    spec = _sd15_spec()
    assert spec.algorithm == SamplerAlgorithm.DDIM and spec.eta == 0.0
    for key in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "steps_offset"):
        assert getattr(spec, key) == SD15_SCHEDULER_CONFIG[key]
    assert (spec.set_alpha_to_one, spec.clip_sample) == (False, False)
    # Keys SD 1.5's config leaves out get DDIM's defaults, not PNDM's or a guess.
    assert (spec.prediction_type, spec.timestep_spacing) == ("epsilon", "leading")


def test_a_sampler_only_config_gets_ddim_defaults_and_drops_foreign_keys():
    spec = spec_from_source_config(
        {"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True}, origin="x"
    )
    assert spec.beta_schedule == "linear" and spec.clip_sample is True
    assert "use_karras_sigmas" not in diffusers_config(spec)


@pytest.mark.parametrize("spacing", list(TimestepSpacing))
@pytest.mark.parametrize("steps_offset", [0, 1])
def test_timesteps_match_diffusers_for_every_step_count(spacing, steps_offset):
    spec = _sd15_spec().model_copy(
        update={"timestep_spacing": spacing, "steps_offset": steps_offset}
    )
    scheduler = _diffusers(spec)
    overshoots = 0
    for steps in range(1, spec.num_train_timesteps + 1):
        if spacing == "leading" and steps_offset and steps == spec.num_train_timesteps:
            # diffusers returns timestep 1000 here and then indexes past its 1000-entry table.
            with pytest.raises(SchedulerError, match="reaches timestep 1000"):
                timesteps(spec, steps)
            continue
        scheduler.set_timesteps(steps)
        theirs = scheduler.timesteps.tolist()
        ours = timesteps(spec, steps)
        if len(theirs) == steps + 1:  # np.arange overshoot in diffusers' 'trailing' branch
            assert spacing == "trailing" and theirs[-1] == -1
            theirs, overshoots = theirs[:-1], overshoots + 1
        assert ours == theirs, steps
    assert overshoots == (62 if spacing == "trailing" else 0)


def test_more_steps_than_the_schedule_has_is_refused():
    with pytest.raises(SchedulerError, match="--steps 1001 is not allowed"):
        timesteps(_sd15_spec(), 1001)


@pytest.fixture(scope="module")
def tiny_sd_spec() -> SchedulerSpec:
    """The spec an export of the tiny-sd preset writes into its manifest."""
    return models.load_pipeline("tiny-sd", components=["unet"]).info.scheduler


def _spec_variants(base: SchedulerSpec):
    for prediction in PredictionType:
        for spacing in TimestepSpacing:
            yield base.model_copy(
                update={"prediction_type": prediction, "timestep_spacing": spacing}
            )
    for schedule in BetaSchedule:
        for prediction in PredictionType:
            yield base.model_copy(
                update={
                    "beta_schedule": schedule,
                    "prediction_type": prediction,
                    "clip_sample": True,
                    "set_alpha_to_one": True,
                }
            )


@pytest.mark.parametrize("source", ["sd15", "tiny-sd"])
def test_step_matches_diffusers(source, tiny_sd_spec):
    base = _sd15_spec() if source == "sd15" else tiny_sd_spec
    rng = np.random.default_rng(0)
    for spec in _spec_variants(base):
        tolerance = (
            SAMPLE_PREDICTION_COSINE_STEP_RTOL
            if (spec.prediction_type, spec.beta_schedule) == ("sample", "squaredcos_cap_v2")
            else STEP_RTOL
        )
        reference, ours = _diffusers(spec), DDIMSampler(spec)
        for steps in (1, 2, 4, 20):
            reference.set_timesteps(steps)
            assert ours.set_timesteps(steps) == reference.timesteps.tolist()
            sample = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
            for t in ours.timesteps:
                output = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
                assert np.array_equal(ours.scale_model_input(sample, t), sample)
                got = ours.step(output, t, sample)
                want = reference.step(torch.from_numpy(output), t, torch.from_numpy(sample))
                for mine, theirs in (
                    (got.prev_sample, want.prev_sample.numpy()),
                    (got.pred_original_sample, want.pred_original_sample.numpy()),
                ):
                    assert mine.dtype == np.float32
                    scale = max(1.0, float(np.abs(theirs).max()))
                    error = float(np.abs(mine - theirs).max()) / scale
                    assert error <= tolerance, (spec, steps, t, error)
                sample = want.prev_sample.numpy()  # both continue from the same latents


def test_a_pndm_source_folder_exports_ddim_with_the_sources_betas(sd_pipeline_folder, tmp_path):
    source = json.loads((sd_pipeline_folder / "scheduler" / "scheduler_config.json").read_text())
    assert source["_class_name"] == "PNDMScheduler"
    pipeline = models.load_pipeline(sd_pipeline_folder, components=["text-encoder"])
    spec = pipeline.info.scheduler
    assert spec.algorithm == "ddim"
    assert (spec.beta_start, spec.beta_end, spec.beta_schedule) == (
        source["beta_start"],
        source["beta_end"],
        source["beta_schedule"],
    )
    pipeline.write_assets(tmp_path)
    written = json.loads((tmp_path / pipeline.info.scheduler_config_file).read_text())
    assert written == diffusers_config(spec) and written["_class_name"] == "DDIMScheduler"
    # diffusers, reading that file, runs the sampler the manifest describes.
    scheduler = _diffusers(spec)
    for key in ("beta_start", "beta_end", "set_alpha_to_one", "steps_offset", "clip_sample"):
        assert scheduler.config[key] == getattr(spec, key)


@pytest.fixture()
def custom_schedule_folder(sd_pipeline_folder, tmp_path):
    """The pipeline folder with its own scheduler config, for the tests to rewrite."""
    folder = tmp_path / "custom-sd"
    shutil.copytree(sd_pipeline_folder, folder)
    return folder


def _write_scheduler(folder, **changes):
    config = {**SD15_SCHEDULER_CONFIG, **changes}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))


def test_the_sources_schedule_not_sd15s_reaches_the_manifest(custom_schedule_folder):
    _write_scheduler(
        custom_schedule_folder,
        beta_schedule="linear",
        beta_end=0.015,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        steps_offset=0,
    )
    spec = models.load_pipeline(custom_schedule_folder, components=["text-encoder"]).info.scheduler
    assert (spec.beta_schedule, spec.beta_end, spec.prediction_type, spec.timestep_spacing) == (
        "linear",
        0.015,
        "v_prediction",
        "trailing",
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trained_betas": [0.001] * 1000}, "lists its betas explicitly (trained_betas)"),
        ({"beta_schedule": "sigmoid"}, "beta_schedule='sigmoid'; edgekit supports: linear"),
        ({"prediction_type": "flow"}, "prediction_type='flow'; edgekit supports: epsilon"),
        ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr=True; edgekit's DDIM"),
        ({"thresholding": True}, "thresholding=True; edgekit's DDIM supports only false"),
        ({"beta_end": 1.5}, "has a value edgekit cannot use (beta_end"),
    ],
)
def test_a_schedule_edgekit_cannot_express_is_refused(
    custom_schedule_folder, tmp_path, changes, message
):
    _write_scheduler(custom_schedule_folder, **changes)
    with pytest.raises(SourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        models.load_pipeline(custom_schedule_folder, components=["text-encoder"])
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["export", str(custom_schedule_folder), "--target", "onnx", "--out", str(out)]
    )
    assert result.exit_code == SourceError.exit_code
    assert message in result.output and "Traceback" not in result.output
    assert not any(p.name.startswith("custom-sd") for p in out.glob("*"))
