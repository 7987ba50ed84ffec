"""Model loading: presets, Hugging Face MobileViT folders, diffusers folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit import models
from edgekit.errors import SourceError, UnknownChoiceError

# A non-degenerate output varies across its elements by at least this much (the transformers
# 5.2x default init of a MobileViT built from a config gives logits of ~1e-41).
MIN_OUTPUT_STD = 1e-3


@pytest.mark.parametrize("preset", ["tiny-mobilevit", "tiny-sd"])
def test_presets_are_random_but_not_degenerate(preset):
    loaded = models.load(preset)
    assert loaded.source.is_preset and loaded.source.random_weights
    outputs = loaded.run_torch(loaded.sample_inputs(0))
    for name, values in outputs.items():
        assert values.std() > MIN_OUTPUT_STD, name
        assert list(values.shape) == next(o.shape for o in loaded.outputs if o.name == name)


def test_presets_are_seeded_and_reproducible():
    first, second = models.load("tiny-mobilevit"), models.load("tiny-mobilevit")
    assert first.source.sha256 == second.source.sha256
    inputs = first.sample_inputs(3)
    np.testing.assert_array_equal(
        first.run_torch(inputs)["logits"], second.run_torch(inputs)["logits"]
    )


def test_mobilevit_small_preset_matches_published_size():
    # apple/mobilevit-small has 5.6M parameters; the preset must be that architecture.
    loaded = models.load("mobilevit-small")
    assert 5.5e6 < loaded.parameter_count < 5.7e6
    assert loaded.inputs[0].shape == [1, 3, 256, 256]
    assert loaded.preprocessing.channel_order == "BGR"
    assert loaded.preprocessing.resize_shortest_edge == 288


def test_hf_folder_reads_preprocessing_and_labels(mobilevit_folder):
    loaded = models.load(mobilevit_folder)
    assert loaded.source.kind == "hf-folder" and not loaded.source.random_weights
    assert loaded.labels[:2] == ["flower_0", "flower_1"]
    pre = loaded.preprocessing
    assert (pre.resize_shortest_edge, pre.crop_height, pre.crop_width) == (72, 64, 64)
    assert pre.channel_order == "BGR"
    assert loaded.inputs[0].shape == [1, 3, 64, 64]


def test_hf_folder_weights_equal_saved_model(mobilevit_folder):
    preset = models.load("tiny-mobilevit")
    folder = models.load(mobilevit_folder)
    inputs = preset.sample_inputs(0)
    np.testing.assert_allclose(
        folder.run_torch(inputs)["logits"], preset.run_torch(inputs)["logits"], rtol=0, atol=1e-6
    )


def test_rgb_processor_is_respected(tmp_path, mobilevit_folder):
    import shutil

    folder = tmp_path / "rgb"
    shutil.copytree(mobilevit_folder, folder)
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config["do_flip_channel_order"] = False
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    assert models.load(folder).preprocessing.channel_order == "RGB"


def test_pipeline_folder_gives_unet_with_plain_inputs(sd_pipeline_folder):
    loaded = models.load(sd_pipeline_folder)
    assert loaded.model_kind == "sd-unet"
    assert [s.name for s in loaded.inputs] == ["sample", "timestep", "encoder_hidden_states"]
    assert loaded.inputs[0].shape == [1, 4, 16, 16]
    assert loaded.inputs[2].shape == [1, 77, 32]


def test_bare_unet_folder_and_custom_size(sd_pipeline_folder):
    loaded = models.load(sd_pipeline_folder / "unet", height=256, width=192)  # VAE factor 8
    assert loaded.inputs[0].shape == [1, 4, 32, 24]
    assert loaded.outputs[0].shape == [1, 4, 32, 24]
    out = loaded.run_torch(loaded.sample_inputs(0))["noise_pred"]
    assert out.shape == (1, 4, 32, 24)


def test_bad_sd_size_is_rejected(sd_pipeline_folder):
    # The fixture's VAE has 2 blocks (factor 2), the tiny UNet 2 blocks (factor 2): step 4.
    with pytest.raises(SourceError, match="multiple of 4 "):
        models.load(sd_pipeline_folder, height=102)
    # SD 1.5 proportions: VAE 8 x UNet 8.
    with pytest.raises(SourceError, match="multiple of 64 "):
        models.load("sd15-unet", height=500)


def test_unknown_component_lists_known():
    with pytest.raises(UnknownChoiceError, match="Known: text-encoder, unet, vae-decoder"):
        models.load("tiny-sd", component="vae-encoder")


def test_sd_options_rejected_for_mobilevit():
    with pytest.raises(SourceError, match="Stable Diffusion sources only"):
        models.load("tiny-mobilevit", height=256)


def test_unet_only_source_has_no_other_components(sd_pipeline_folder):
    with pytest.raises(SourceError, match="has no text-encoder; it has: unet"):
        models.load(sd_pipeline_folder / "unet", component="text-encoder")


def test_pipeline_components_fit_together(sd_pipeline_folder):
    pipeline = models.load_pipeline(sd_pipeline_folder)
    assert list(pipeline.components) == ["text-encoder", "unet", "vae-decoder"]
    text, unet, vae = pipeline.components.values()
    # The text encoder's output is what the UNet cross-attends to; the UNet's output is a latent
    # of the shape the VAE decoder takes.
    assert text.outputs[0].shape == unet.inputs[2].shape
    assert unet.outputs[0].shape == vae.inputs[0].shape
    assert vae.outputs[0].shape == [1, 3, pipeline.info.image_height, pipeline.info.image_width]
    assert pipeline.info.vae_scale_factor == 2 and pipeline.info.vae_scaling_factor == 0.18215


def test_pipeline_folder_weights_match_preset(sd_pipeline_folder):
    preset = models.load_pipeline("tiny-sd")
    folder = models.load_pipeline(sd_pipeline_folder)
    for name, component in preset.components.items():
        inputs = component.sample_inputs(0)
        expected = component.run_torch(inputs)
        actual = folder.components[name].run_torch(inputs)
        for key in expected:
            np.testing.assert_allclose(actual[key], expected[key], atol=1e-5)
