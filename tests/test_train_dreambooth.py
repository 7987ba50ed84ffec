"""`edgekit train dreambooth` on tiny-sd, on the CPU, with real cat photos (scikit-image).

The key test: a run killed (SIGKILL) right after its step-2 checkpoint and resumed with
`--resume latest` ends with the per-step losses and UNet weights of a run that never stopped,
bit for bit. Runs use 32 px (16x16 latents through tiny-sd's VAE), 2 class images and 2
denoising steps per class image, so each takes seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from edgekit import models
from edgekit.cli.train import app
from edgekit.models.base import TRAINING_CARD_FILE
from edgekit.train import checkpoints
from edgekit.train.class_images import RECORD_FILE, prepare_class_images
from edgekit.train.dreambooth import (
    LDM_CHECKPOINT_FILE,
    LORA_FILE,
    LR_SCHEDULERS,
    rare_token_warning,
)
from tests.launch import launch_two_processes

runner = CliRunner()
STEPS = 4


def _write_cats(folder: Path) -> Path:
    """Three different crops (one mirrored) of scikit-image's cat photo, as PNG."""
    from PIL import Image
    from skimage import data

    photo = data.chelsea()  # 300 x 451 RGB
    folder.mkdir(parents=True)
    crops = [photo[:, :300], photo[:, 151:], photo[20:280, 80:340][:, ::-1]]
    for index, crop in enumerate(crops):
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"cat-{index}.png")
    return folder


@pytest.fixture(scope="module")
def cats(tmp_path_factory) -> Path:
    return _write_cats(tmp_path_factory.mktemp("photos") / "cats")


def _settings(cats: Path, out: Path, class_dir: Path, **extra) -> dict:
    return {
        "base": "tiny-sd",
        "instance_dir": str(cats),
        "instance_prompt": "a photo of sks cat",
        "class_prompt": "a photo of cat",
        "class_dir": str(class_dir),
        "num_class_images": 2,
        "inference_steps": 2,
        "max_steps": STEPS,
        "checkpoint_every": 2,
        "checkpoints_total_limit": 1,
        "resolution": 32,
        "random_flip": True,  # random crops and flips: the resume must replay them too
        "learning_rate": 1e-4,
        "report_to": "none",
        "out": str(out),
        **extra,
    }


def _yaml(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture(scope="module")
def uninterrupted(cats, tmp_path_factory):
    """One 4-step run, start to end, through the CLI; it also generates the class images."""
    root = tmp_path_factory.mktemp("uninterrupted")
    class_dir = root / "class-images"
    config = _yaml(root / "db.yaml", _settings(cats, root / "db", class_dir))
    result = runner.invoke(app, ["dreambooth", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return root / "db", class_dir, result.output


def _card(out: Path) -> dict:
    return json.loads((out / TRAINING_CARD_FILE).read_text())


def _unet_weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "unet" / "diffusion_pytorch_model.safetensors")


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path), dtype=np.int16)


def test_killed_and_resumed_run_equals_uninterrupted_run(uninterrupted, cats, tmp_path):
    reference, class_dir, _ = uninterrupted
    out = tmp_path / "db"
    config = _yaml(tmp_path / "db.yaml", _settings(cats, out, class_dir))
    killed = subprocess.run(
        [sys.executable, "-c", "from edgekit.cli.train import app; app()", "dreambooth"]
        + ["--config", str(config)],
        env={**os.environ, checkpoints.KILL_AFTER_CHECKPOINT_ENV: "2"},
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    folder = checkpoints.checkpoints_dir(out)
    assert [step for step, _ in checkpoints.complete(folder)] == [2]
    assert not (out / TRAINING_CARD_FILE).exists()

    # What a kill during a save leaves: a temporary folder, and a folder without the marker.
    half_written = folder / ".tmp-checkpoint-000004"
    half_written.mkdir()
    (half_written / "model.safetensors").write_bytes(b"\0" * 10)
    (folder / "checkpoint-000003").mkdir()
    assert checkpoints.resolve("latest", folder) == folder / "checkpoint-000002"

    resumed = runner.invoke(app, ["dreambooth", "--config", str(config), "--resume", "latest"])
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in resumed.output
    assert "another engine" not in resumed.output  # the same fused AdamW as before the kill
    # The defaults on the CPU: fused AdamW (its state too must resume exactly), no compile.
    assert _card(reference)["engine"] == {"fused_adam": True, "compile_unet": False}
    assert _card(out)["losses"] == _card(reference)["losses"]
    assert len(_card(out)["losses"]) == STEPS
    assert _card(out)["resumed_from"].endswith("checkpoint-000002")
    expected, actual = _unet_weights(reference), _unet_weights(out)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    # The weights moved: equal runs are not runs that did nothing.
    base = models.load_pipeline("tiny-sd").components["unet"].module.unet.state_dict()
    assert not all(torch.equal(base[name], actual[name]) for name in base)
    assert not half_written.exists()  # cleared by the resumed run
    assert [step for step, _ in checkpoints.complete(folder)] == [4]  # total limit 1


def test_single_file_base_and_the_prediction_type_of_its_scheduler(uninterrupted, cats, tmp_path):
    out, _, _ = uninterrupted
    configs = tmp_path / "configs"  # what --base-config holds: configs, tokenizer, scheduler
    for part in ("unet", "vae", "text_encoder"):
        (configs / part).mkdir(parents=True)
        shutil.copy(out / part / "config.json", configs / part / "config.json")
    shutil.copytree(out / "tokenizer", configs / "tokenizer")
    (configs / "scheduler").mkdir()
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    first_losses = {}
    for prediction in ("epsilon", "v_prediction", "sample"):
        (configs / "scheduler" / "scheduler_config.json").write_text(
            json.dumps({**scheduler, "prediction_type": prediction})
        )
        settings = _settings(cats, tmp_path / prediction, tmp_path / "c", max_steps=1)
        settings.update(class_prompt=None, class_dir=None, checkpoint_every=10)
        settings.update(base=str(out / LDM_CHECKPOINT_FILE), base_config=str(configs))
        result = _invoke(tmp_path, settings)
        if prediction == "sample":
            assert result.exit_code == 2 and "predicts 'sample'" in result.output
            continue
        assert result.exit_code == 0, result.output
        card = _card(tmp_path / prediction)
        assert card["base"]["kind"] == "ldm-checkpoint"
        first_losses[prediction] = card["losses"][0]["loss"]
    # Same seed, so same latents, noise and timesteps: only the target differs.
    assert first_losses["epsilon"] != first_losses["v_prediction"]


@pytest.mark.parametrize(
    ("change", "listed"),
    [
        ({"lora_rank": 4}, "lora_rank 0 -> 4"),
        # Restored from the optimizer state, a new learning rate would be ignored without a word.
        ({"learning_rate": 1e-3}, "learning_rate 0.0001 -> 0.001"),
    ],
)
def test_resume_with_other_settings_is_refused(uninterrupted, cats, change, listed):
    out, class_dir, _ = uninterrupted
    config = _yaml(out.parent / "changed.yaml", _settings(cats, out, class_dir, **change))
    result = runner.invoke(app, ["dreambooth", "--config", str(config), "--resume", "latest"])
    assert result.exit_code == 2
    assert "Cannot resume from" in result.output and listed in " ".join(result.output.split())


def test_resume_with_another_engine_warns_and_goes_on(uninterrupted, cats, tmp_path):
    """A checkpoint may move to a machine without the fused kernel: that resume is allowed,
    and the user is told it will not be bit for bit. The engine is not among the state keys."""
    reference, class_dir, _ = uninterrupted
    out = tmp_path / "db"
    shutil.copytree(checkpoints.checkpoints_dir(reference), checkpoints.checkpoints_dir(out))
    settings = _settings(cats, out, class_dir, fused_adam=False, max_steps=STEPS + 1)
    config = _yaml(tmp_path / "db.yaml", settings)
    result = runner.invoke(app, ["dreambooth", "--config", str(config), "--resume", "latest"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "resuming with another engine (fused_adam True -> False)" in said
    assert "not equal those of an unbroken run bit for bit" in said
    card = _card(out)
    assert card["engine"] == {"fused_adam": False, "compile_unet": False}
    assert card["losses"][:STEPS] == _card(reference)["losses"] and len(card["losses"]) == STEPS + 1


def test_outputs_load_as_pipeline_and_single_file(uninterrupted):
    out, class_dir, output = uninterrupted
    card = _card(out)
    assert card["steps"] == STEPS and card["final_losses"] == card["losses"][-1]
    assert set(card["final_losses"]) == {"loss", "instance_loss", "prior_loss", "lr"}
    assert card["final_losses"]["loss"] == pytest.approx(
        card["final_losses"]["instance_loss"] + card["final_losses"]["prior_loss"]
    )
    unet = models.load_pipeline("tiny-sd").components["unet"].module
    assert card["trainable_parameters"] == sum(p.numel() for p in unet.parameters())
    assert sorted(card["instance_images"]) == ["cat-0.png", "cat-1.png", "cat-2.png"]
    assert card["class_images_origin"]["generated"] == 2
    for name, digest in card["class_images"].items():
        assert hashlib.sha256((class_dir / name).read_bytes()).hexdigest() == digest
    assert "generated 2 with tiny-sd, reused 0" in output

    # The diffusers folder, as export reads it, links the card by its sha256.
    pipeline = models.load_pipeline(out)
    assert pipeline.source.training_card.file == TRAINING_CARD_FILE
    card_digest = hashlib.sha256((out / TRAINING_CARD_FILE).read_bytes()).hexdigest()
    assert pipeline.source.training_card.sha256 == card_digest

    # The single file in the LDM layout gives the same weights, tensor for tensor.
    single = models.load_pipeline(out / LDM_CHECKPOINT_FILE, config=out)
    for name, component in pipeline.components.items():
        expected = component.module.state_dict()
        actual = single.components[name].module.state_dict()
        assert expected.keys() == actual.keys(), name
        assert all(torch.equal(expected[k], actual[k]) for k in expected), name
    assert (
        card["outputs"][LDM_CHECKPOINT_FILE]
        == hashlib.sha256((out / LDM_CHECKPOINT_FILE).read_bytes()).hexdigest()
    )


def _tensorboard_tags(logs: Path) -> tuple[set[str], set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, images = set(), set()
    for events in logs.rglob("events.out.tfevents*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        scalars |= set(accumulator.Tags()["scalars"])
        images |= set(accumulator.Tags()["images"])
    return scalars, images


def test_lora_with_text_encoder_saves_adapters_merges_them_and_logs(cats, tmp_path):
    out = tmp_path / "db"
    settings = _settings(cats, out, tmp_path / "unused", max_steps=2, checkpoint_every=10)
    settings.update(class_prompt=None, class_dir=None, lora_rank=4, train_text_encoder=True)
    settings.update(report_to="tensorboard", validation_prompt="a sks cat", validation_every=2)
    result = runner.invoke(
        app, ["dreambooth", "--config", str(_yaml(tmp_path / "c.yaml", settings))]
    )
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    scalars, images = _tensorboard_tags(out / "logs")
    assert {"loss", "instance_loss", "lr"} <= scalars and images == {"validation"}
    assert (out / "validation" / "step-000002.png").is_file()

    adapters = load_file(out / LORA_FILE)
    unet_keys = [k for k in adapters if k.startswith("unet.")]
    assert {k.split(".")[-4] for k in unet_keys} == {"to_q", "to_k", "to_v", "0"}
    assert any(k.startswith("text_encoder.") for k in adapters)
    assert "prior_loss" not in _card(out)["final_losses"]

    # Merged: W = W_base + B A (alpha = rank), and the saved UNet is the plain architecture.
    trained = _unet_weights(out)
    assert not any("lora" in name for name in trained)
    base = models.load_pipeline("tiny-sd").components["unet"].module.unet.state_dict()
    layer = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    down = adapters[f"unet.{layer}.lora.down.weight"]
    up = adapters[f"unet.{layer}.lora.up.weight"]
    torch.testing.assert_close(trained[f"{layer}.weight"], base[f"{layer}.weight"] + up @ down)
    assert not torch.equal(up @ down, torch.zeros_like(up @ down))
    text_encoder = load_file(out / "text_encoder" / "model.safetensors")
    base_text = models.load_pipeline("tiny-sd").components["text-encoder"].module
    base_text = base_text.text_model.state_dict()
    assert text_encoder.keys() == base_text.keys()  # merged back to the plain CLIP layout
    projection = "encoder.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(text_encoder[projection], base_text[projection])


class _FakeGenerator:
    """Stands for the base model: flat grey images, the record logic is what is tested."""

    def __init__(self) -> None:
        from edgekit.models.stable_diffusion import load_pipeline

        self.info = load_pipeline("tiny-sd", components=["unet"]).info
        self.calls: list[list[int]] = []

    def images(self, prompt, seeds, *, steps, guidance_scale):
        self.calls.append(list(seeds))
        return np.full((len(seeds), 8, 8, 3), 0.5, dtype=np.float32)


def test_class_images_are_recorded_and_reused_only_for_the_same_model_and_prompt(tmp_path):
    fake = _FakeGenerator()

    def prepare(count: int, sha: str = "a" * 64, prompt: str = "a photo of cat"):
        return prepare_class_images(
            tmp_path,
            prompt=prompt,
            count=count,
            model="tiny-sd",
            model_sha256=sha,
            seed=10,
            steps=2,
            guidance_scale=7.5,
            batch_size=2,
            generator=lambda: fake,
        )

    first = prepare(3)
    assert (first.generated, first.reused, fake.calls) == (3, 0, [[10, 11], [12]])
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert [(e["seed"], e["prompt"], e["model_sha256"]) for e in record["images"]] == [
        (s, "a photo of cat", "a" * 64) for s in (10, 11, 12)
    ]
    # More asked for later: only the missing ones, with the next seeds.
    second = prepare(4)
    assert (second.generated, second.reused, fake.calls[-1]) == (1, 3, [13])
    # A deleted image is made again, with its own seed, and recorded once.
    (tmp_path / first.paths[1].name).unlink()
    again = prepare(4)
    assert (again.generated, again.reused, fake.calls[-1]) == (1, 3, [11])
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert sorted(e["seed"] for e in record["images"]) == [10, 11, 12, 13]
    # A run killed between saving an image and recording it leaves a generated, unrecorded
    # file (here half-written): not taken for the user's own, made again and recorded.
    orphan = tmp_path / first.paths[0].name.replace("-000010.", "-000014.")
    orphan.write_bytes(b"half a PNG")
    resumed = prepare(5)
    assert (resumed.user_images, resumed.reused, resumed.generated) == (0, 4, 1)
    assert fake.calls[-1] == [14] and resumed.skipped_warning is None
    assert orphan.read_bytes() != b"half a PNG"
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert sorted(e["seed"] for e in record["images"]) == [10, 11, 12, 13, 14]
    # Another model: none reused, and the message says why.
    other = prepare(2, sha="b" * 64)
    assert (other.generated, other.reused) == (2, 0)
    assert "5 class image(s)" in other.not_reused_warning()
    assert "another model or prompt" in other.not_reused_warning()
    assert all(
        p.name in {e["file"] for e in json.loads((tmp_path / RECORD_FILE).read_text())["images"]}
        for p in other.paths
    )
    # A photo the user put there is theirs: kept, counted, not regenerated.
    (tmp_path / "mine.png").write_bytes((tmp_path / other.paths[0].name).read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    mine = prepare(3, sha="b" * 64)
    assert (mine.user_images, mine.reused, mine.generated) == (1, 2, 0)
    assert mine.paths[0].name == "mine.png"
    assert "notes.txt" in mine.skipped_warning
    # Same model, another prompt: not reused either (the user's photo still is).
    dogs = prepare(2, sha="b" * 64, prompt="a photo of dog")
    assert (dogs.user_images, dogs.reused, dogs.generated) == (1, 0, 1)
    assert "'a photo of cat'" in dogs.not_reused_warning()


# Batched sampling vs one loop per seed on tiny-sd (64 px, 3 steps, seeds 3-5): final images
# differed by at most 2.3e-6 (latents by 2.8e-5 at magnitudes up to 12.8): batched matmuls sum
# in another order. Swapped guidance rows moved pixels by 0.046.
BATCHED_IMAGE_ATOL = 1e-4


class _CountingUNet(torch.nn.Module):
    """The UNet, counting its calls and the batch of each."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.batches: list[int] = []

    def forward(self, sample, timestep, hidden, **kwargs):
        self.batches.append(len(sample))
        return self.unet(sample, timestep, hidden, **kwargs)


@pytest.fixture(scope="module")
def tiny_sd_sampler():
    """tiny-sd's modules at 64 px, as the trainer drives them for class images."""
    from edgekit.models import stable_diffusion
    from edgekit.train.class_images import ImageGenerator
    from edgekit.train.dreambooth import _tokenizer

    parts = stable_diffusion.load_diffusers_parts("tiny-sd")
    latent = 64 // parts.info.vae_scale_factor
    size = {"latent_height": latent, "latent_width": latent, "image_height": 64, "image_width": 64}
    info = parts.info.model_copy(update=size)
    modules = [m.eval() for m in (parts.text_encoder, _CountingUNet(parts.unet), parts.vae)]
    return ImageGenerator(*modules, _tokenizer(parts), info, torch.device("cpu"))


def test_class_images_of_a_batch_equal_those_made_one_seed_at_a_time(tiny_sd_sampler):
    from edgekit.generate import denoise

    sampler, seeds, steps, prompt = tiny_sd_sampler, [3, 4, 5], 3, "a photo of cat"
    components = sampler.components()
    sampler.unet.batches.clear()
    batched = sampler.images(prompt, seeds, steps=steps, guidance_scale=7.5)
    # One UNet call per step for the whole batch: both guidance branches of every seed.
    assert sampler.unet.batches == [2 * len(seeds)] * steps

    sampler.unet.batches.clear()
    one_by_one = sampler.decode(
        np.concatenate(
            [
                denoise(components, sampler.tokenizer, sampler.info, prompt, "", steps, 7.5, seed)
                for seed in seeds
            ]
        )
    )
    assert len(sampler.unet.batches) == 2 * steps * len(seeds)  # the loop it replaces
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=BATCHED_IMAGE_ATOL)
    # Different seeds, different images: the comparison is not between copies of one image.
    assert np.abs(batched[0] - batched[1]).max() > 100 * BATCHED_IMAGE_ATOL
    # A seed's image does not depend on the batch it lands in.
    alone = sampler.images(prompt, seeds[1:2], steps=steps, guidance_scale=7.5)
    np.testing.assert_allclose(alone[0], batched[1], rtol=0, atol=BATCHED_IMAGE_ATOL)


def _invoke(tmp_path: Path, settings: dict, *args: str):
    config = _yaml(tmp_path / "db.yaml", settings)
    return runner.invoke(app, ["dreambooth", "--config", str(config), *args])


ON_CPU = not torch.cuda.is_available()
WITHOUT_WANDB = importlib.util.find_spec("wandb") is None


@pytest.mark.parametrize(
    ("change", "args", "message"),
    [
        ({"instance_dir": "EMPTY"}, [], "holds no readable images"),
        ({"instance_dir": "NOT_IMAGES"}, [], "(1 file(s), none an image)"),
        ({"learning_rte": 1e-4}, [], "Unknown key 'learning_rte'"),
        # The misspelt key is named, not the required one it leaves missing.
        ({"instance_dri": None}, [], "did you mean 'instance_dir'?"),
        ({"max_steps": "many"}, [], "Bad value for 'max_steps'"),
        ({"resolution": 60}, [], "must be a multiple of 8"),
        ({}, ["--resume", "latest"], "no complete checkpoint"),
        ({"with_prior_preservation": True, "class_prompt": None}, [], "needs class_prompt"),
        ({"fused_adam": True, "use_8bit_adam": True}, [], "exclude each other"),
        pytest.param(
            {"mixed_precision": "fp16"},
            [],
            "fp16 needs a GPU",
            marks=pytest.mark.skipif(not ON_CPU, reason="fp16 is allowed on a GPU"),
        ),
        pytest.param(
            {"use_8bit_adam": True},
            [],
            "use_8bit_adam needs",  # bitsandbytes missing, or no CUDA
            marks=pytest.mark.skipif(not ON_CPU, reason="8-bit Adam may run on a GPU"),
        ),
        pytest.param(
            {"report_to": "wandb"},
            [],
            "wandb package",
            marks=pytest.mark.skipif(not WITHOUT_WANDB, reason="wandb is installed"),
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cats, tmp_path, change, args, message):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "NOT_IMAGES").mkdir()
    (tmp_path / "NOT_IMAGES" / "notes.txt").write_text("a cat")
    settings = _settings(cats, tmp_path / "out", tmp_path / "class")
    for key, value in change.items():
        if key == "instance_dri":  # instance_dir misspelt: the required key goes missing too
            settings[key] = settings.pop("instance_dir")
            continue
        folder = str(tmp_path / value) if key == "instance_dir" else value
        settings[key] = folder
    result = _invoke(tmp_path, settings, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "class").exists()


def test_instance_folder_with_a_stray_file_warns_and_lists_it(cats, tmp_path):
    from edgekit.train.data import load_examples

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes((cats / "cat-0.png").read_bytes())
    (folder / "README.txt").write_text("my cat")
    examples = load_examples(folder, "instance", 32)
    assert [p.name for p in examples.paths] == ["cat.png"]
    assert "README.txt" in examples.skipped_warning
    # Shorter side at the resolution, aspect kept: 300 x 300 -> 32 x 32.
    assert tuple(examples.pixels[0].shape) == (3, 32, 32)


def test_rare_token_warning():
    assert rare_token_warning("a photo of sks cat", "a photo of cat") is None
    assert "rare identifier" in rare_token_warning("a photo of cat", "a photo of cat")
    assert "rare identifier" in rare_token_warning("a cat photo", "a photo of a cat")
    assert rare_token_warning("a photo of cat", None) is None


def _engine(device: str, problem: str | None = None, **settings):
    from edgekit.train.dreambooth import DreamBoothConfig, choose_engine

    config = DreamBoothConfig.model_validate(
        {"base": "tiny-sd", "instance_dir": ".", "instance_prompt": "a sks", "out": "o"} | settings
    )
    return choose_engine(config, device, inductor_problem=lambda device_type: problem)


def test_engine_defaults_resolve_per_device():
    from edgekit.errors import EdgekitError

    # What a user gets with no flags: the fastest H100 setting on CUDA; fused AdamW
    # but no compile on the CPU.
    assert (_engine("cuda").fused_adam, _engine("cuda").compile_unet) == (True, True)
    assert (_engine("cpu").fused_adam, _engine("cpu").compile_unet) == (True, False)
    assert _engine("cuda", use_8bit_adam=True).fused_adam is False  # bitsandbytes' own kernels
    assert _engine("cpu", compile_unet=True).compile_unet is True
    off = _engine("cuda", fused_adam=False, compile_unet=False)
    assert (off.fused_adam, off.compile_unet) == (False, False)
    # The default steps back, and says why, where inductor cannot build; an explicit request
    # is refused with the reason.
    fallback = _engine("cuda", problem="no triton")
    assert fallback.compile_unet is False and "no triton" in fallback.note
    with pytest.raises(
        EdgekitError, match=r"compile_unet: .* cannot build for cpu here \(no cxx\)"
    ):
        _engine("cpu", problem="no cxx", compile_unet=True)
    with pytest.raises(EdgekitError, match="no fused AdamW kernel for meta"):
        _engine("meta", fused_adam=True)
    assert _engine("meta").fused_adam is False


def test_compile_without_a_cpp_compiler_is_one_line(cats, tmp_path, monkeypatch):
    import torch._inductor.config as inductor_config

    # What inductor finds on a machine without g++: none of the compilers it searches for.
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("edgekit-test-no-such-cxx",))
    settings = _settings(cats, tmp_path / "out", tmp_path / "class", compile_unet=True)
    result = _invoke(tmp_path, settings)
    assert result.exit_code == 2, result.output
    assert "compile_unet: torch.compile's inductor backend cannot build for cpu" in result.output
    assert "no working C++ compiler" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "out").exists()


def test_lr_scheduler_names_are_diffusers_ones():
    from diffusers.optimization import SchedulerType

    assert set(LR_SCHEDULERS) <= {member.value for member in SchedulerType}


@pytest.mark.gpu
def test_gpu_fp16_lora_8bit_adam_and_deterministic_resume_with_the_defaults(
    uninterrupted, cats, tmp_path
):
    # A GPU run is where 8-bit Adam is checked at all: a missing bitsandbytes fails, never skips.
    assert importlib.util.find_spec("bitsandbytes"), "pip install bitsandbytes (CUDA build)"
    _, class_dir, _ = uninterrupted
    mixed = _settings(cats, tmp_path / "mixed", class_dir, mixed_precision="fp16", lora_rank=4)
    mixed.update(train_text_encoder=True, use_8bit_adam=True, gradient_checkpointing=True)
    result = _invoke(tmp_path, mixed)
    assert result.exit_code == 0, result.output
    assert _card(tmp_path / "mixed")["device"].startswith("cuda")
    # 8-bit Adam has its own kernels: no fused AdamW; the UNet compiled, as by default on CUDA.
    assert _card(tmp_path / "mixed")["engine"] == {"fused_adam": False, "compile_unet": True}

    # CUDA's default kernels differ run to run in the last bits; deterministic ones do not.
    runs = {}
    for name, args, env in (
        ("unbroken", [], {}),
        ("resumed", [], {checkpoints.KILL_AFTER_CHECKPOINT_ENV: "2"}),
        ("resumed", ["--resume", "latest"], {}),
    ):
        config = _yaml(tmp_path / f"{name}.yaml", _settings(cats, tmp_path / name, class_dir))
        config.write_text(config.read_text() + "deterministic: true\n")
        runs[name] = subprocess.run(
            [sys.executable, "-c", "from edgekit.cli.train import app; app()", "dreambooth"]
            + ["--config", str(config), *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
    assert runs["resumed"].returncode == 0, runs["resumed"].stderr[-2000:]
    # With CUDA's defaults, fused AdamW and a compiled UNet, as a user runs it.
    assert _card(tmp_path / "unbroken")["engine"] == {"fused_adam": True, "compile_unet": True}
    assert _card(tmp_path / "resumed")["losses"] == _card(tmp_path / "unbroken")["losses"]
    expected, actual = _unet_weights(tmp_path / "unbroken"), _unet_weights(tmp_path / "resumed")
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


# Inductor's code for tiny-sd's UNet vs eager, the same 2 steps: losses differed by 1.1e-7
# relative (fused kernels sum in another order).
COMPILED_LOSS_RTOL = 1e-5


@pytest.mark.slow  # inductor compiles the UNet's forward and backward: minutes on 2 cores
def test_compiled_unet_trains_checkpoints_resumes_and_saves_plain_keys(cats, tmp_path):
    from safetensors.torch import load_file
    from torch._dynamo.utils import counters

    def run(name: str, max_steps: int, *args: str, **extra) -> dict:
        settings = _settings(cats, tmp_path / "db", tmp_path / "unused", max_steps=max_steps)
        settings.update(class_prompt=None, class_dir=None, checkpoint_every=2, **extra)
        settings["out"] = str(tmp_path / name)
        result = _invoke(tmp_path, settings, *args)
        assert result.exit_code == 0, result.output
        return _card(tmp_path / name)

    torch._dynamo.reset()
    counters.clear()
    first = run("compiled", 2, compile_unet=True)
    assert first["engine"]["compile_unet"] is True
    assert counters["stats"]["unique_graphs"] >= 1  # the steps ran through torch.compile
    resumed = run("compiled", 3, "--resume", "latest", compile_unet=True)
    assert resumed["losses"][:2] == first["losses"] and len(resumed["losses"]) == 3
    eager = run("eager", 2, compile_unet=False)
    for compiled_step, eager_step in zip(first["losses"], eager["losses"], strict=True):
        assert compiled_step["loss"] == pytest.approx(eager_step["loss"], rel=COMPILED_LOSS_RTOL)

    out = tmp_path / "compiled"
    [(_, checkpoint)] = checkpoints.complete(checkpoints.checkpoints_dir(out))
    files = [
        out / "unet" / "diffusion_pytorch_model.safetensors",
        out / "text_encoder" / "model.safetensors",
        out / LDM_CHECKPOINT_FILE,
        *checkpoint.glob("*.safetensors"),
    ]
    assert len(files) >= 4
    for path in files:
        leaked = [key for key in load_file(path) if "_orig_mod" in key]
        assert not leaked, f"{path}: {leaked[:3]}"
    # The pipeline loads as the plain architecture, with the trained weights.
    trained = models.load_pipeline(out).components["unet"].module.unet.state_dict()
    assert trained.keys() == _unet_weights(out).keys()


@pytest.mark.slow  # an ONNX export of three components (half a minute)
def test_export_records_the_training_card(uninterrupted, tmp_path):
    from edgekit.artifact import read_manifest
    from edgekit.cli import app as edgekit_app

    out, _, _ = uninterrupted
    result = runner.invoke(
        edgekit_app, ["export", str(out), "--target", "onnx", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "db-onnx-fp32")
    card = hashlib.sha256((out / TRAINING_CARD_FILE).read_bytes()).hexdigest()
    assert manifest.source.training_card.file == TRAINING_CARD_FILE
    assert manifest.source.training_card.sha256 == card


def test_two_processes_train_as_one_group_and_resume_bit_for_bit(uninterrupted, cats, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on the CPUs: one gloo group whose
    processes share the class images to generate and whose main process alone reports and
    writes, and whose run killed after a checkpoint (both processes) resumes to an unbroken
    two-process run's losses and weights, bit for bit."""
    _, one_process_class_dir, _ = uninterrupted
    class_dir = tmp_path / "class-images"
    # 3 images a batch each: process 0 makes seeds 0 and 2, process 1 seed 1 (idle in round 2).
    shared = {"num_class_images": 3, "sample_batch_size": 1}
    runs = {}
    for name, env in (("unbroken", {}), ("killed", {checkpoints.KILL_AFTER_CHECKPOINT_ENV: "2"})):
        settings = _settings(cats, tmp_path / name, class_dir, **shared)
        config = _yaml(tmp_path / f"{name}.yaml", settings)
        runs[name] = (
            config,
            launch_two_processes("train", "dreambooth", "--config", str(config), env=env),
        )
    config, unbroken = runs["unbroken"]
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    reference = _card(tmp_path / "unbroken")
    assert reference["num_processes"] == 2
    # The main process alone speaks: one summary line, one line per checkpoint.
    assert unbroken.stdout.count("✓ 4 steps") == 1, unbroken.stdout
    assert unbroken.stdout.count("checkpoint: ") == 2, unbroken.stdout
    assert "class images: generated 3 with tiny-sd, reused 0" in unbroken.stdout
    record = json.loads((class_dir / RECORD_FILE).read_text())
    assert sorted(entry["seed"] for entry in record["images"]) == [0, 1, 2]
    # An image depends on its seed alone: the two processes made those a single process made.
    compared = 0
    for entry in record["images"]:
        assert (
            hashlib.sha256((class_dir / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
        )
        alone = one_process_class_dir / entry["file"]
        if alone.exists():  # seeds 0 and 1
            difference = np.abs(_pixels(alone) - _pixels(class_dir / entry["file"]))
            assert difference.max() <= 1, entry["file"]  # 8-bit rounding of equal floats
            compared += 1
    assert compared == 2

    config, killed = runs["killed"]
    assert killed.returncode != 0
    out = tmp_path / "killed"
    assert [step for step, _ in checkpoints.complete(checkpoints.checkpoints_dir(out))] == [2]
    assert not (out / TRAINING_CARD_FILE).exists()
    # Each process has its own RNG state: one process cannot take the checkpoint over.
    alone = runner.invoke(app, ["dreambooth", "--config", str(config), "--resume", "latest"])
    assert alone.exit_code == 2, alone.output
    assert "num_processes 2 -> 1" in " ".join(alone.output.split())

    resumed = launch_two_processes(
        "train", "dreambooth", "--config", str(config), "--resume", "latest"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    card = _card(out)
    assert card["resumed_from"].endswith("checkpoint-000002") and card["num_processes"] == 2
    assert card["losses"] == reference["losses"] and len(card["losses"]) == STEPS
    expected, actual = _unet_weights(tmp_path / "unbroken"), _unet_weights(out)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    base = models.load_pipeline("tiny-sd").components["unet"].module.unet.state_dict()
    assert not all(torch.equal(base[name], actual[name]) for name in base)
