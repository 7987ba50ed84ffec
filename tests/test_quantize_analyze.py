"""Calibration data, `edgekit quantize analyze` and `edgekit quantize plan` on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekit import models
from edgekit.cli import app
from edgekit.preprocess import preprocess
from edgekit.quant import analyze as analyze_module
from edgekit.quant.analyze import SensitivityReport, analyze, weight_bytes
from edgekit.quant.calibration import (
    CalibrationError,
    image_calibration,
    prompt_calibration,
    synthetic_calibration,
)
from edgekit.quant.plan import LayerPrecision, quantizable_layers, read_plan, user_root
from edgekit.quant.planner import candidates
from edgekit.validate import SQNR_CEILING_DB

runner = CliRunner()


@pytest.fixture(scope="module")
def mobilevit():
    return models.load("tiny-mobilevit")


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Real photos (they ship in scikit-image), in class subfolders like a user's dataset."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for label, names in {"animals": ["chelsea", "cat"], "things": ["coffee", "rocket"]}.items():
        (folder / label).mkdir()
        for name in names:
            Image.fromarray(getattr(data, name)()).save(folder / label / f"{name}.png")
    return folder


@pytest.fixture
def sensitivity(tiny_sensitivity):
    return tiny_sensitivity


# ---------------------------------------------------------------- calibration data


def test_image_calibration_preprocesses_as_the_manifest_says(mobilevit, photo_folder):
    calibration = image_calibration(mobilevit, photo_folder, count=3)
    files = sorted(photo_folder.rglob("*.png"))
    # Three of four files, spread over the sorted list: both class folders are represented.
    chosen = [files[0], files[2], files[3]]
    arrays = [x["pixel_values"] for x in calibration]
    assert calibration.count == 3 and calibration.warning is None
    for array, path in zip(arrays, chosen, strict=True):
        assert np.array_equal(array, preprocess(path, mobilevit.preprocessing))
    # Iterating again reads the files again: the same inputs, nothing kept in between.
    assert all(
        np.array_equal(a, x["pixel_values"]) for a, x in zip(arrays, calibration, strict=True)
    )
    again = image_calibration(mobilevit, photo_folder, count=3)
    assert again.sha256 == calibration.sha256
    assert image_calibration(mobilevit, photo_folder, count=2).sha256 != calibration.sha256


def test_synthetic_calibration_warns_and_avoids_verification_seeds(mobilevit):
    calibration = synthetic_calibration(mobilevit, count=2)
    assert "synthetic" in calibration.warning and "--calib" in calibration.warning
    verification_input = mobilevit.sample_inputs(0)["pixel_values"]
    assert not any(np.array_equal(x["pixel_values"], verification_input) for x in calibration)


def test_prompt_calibration_records_every_component_input(tmp_path):
    pipeline = models.load_pipeline("tiny-sd")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a cat\n\na red car\n")
    recorded = prompt_calibration(pipeline, prompts, steps=2)
    # Two prompts: text encoder twice each (prompt and empty negative prompt), UNet twice per
    # step (guidance), the VAE once per prompt on its final latents.
    assert {name: c.count for name, c in recorded.items()} == {
        "text-encoder": 4,
        "unet": 8,
        "vae-decoder": 2,
    }
    unet_inputs = list(recorded["unet"])
    assert [set(x) for x in unet_inputs] == [{"sample", "timestep", "encoder_hidden_states"}] * 8
    timesteps = [float(x["timestep"][0]) for x in unet_inputs[:4]]
    assert timesteps[0] == timesteps[1] and timesteps[0] > timesteps[2]  # real denoising steps


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: None, "holds no images"),
        (lambda d: (d / "notes.txt").write_text("not a photo"), "notes.txt' in the calibration"),
    ],
)
def test_bad_calibration_folders_fail_in_one_line(tmp_path, photo_folder, make, message):
    folder = tmp_path / "calib"
    folder.mkdir()
    if "notes" in message:
        for photo in sorted(photo_folder.rglob("*.png"))[:2]:
            (folder / photo.name).write_bytes(photo.read_bytes())
    make(folder)
    out = tmp_path / "q"
    result = runner.invoke(
        app,
        [
            "export",
            "tiny-mobilevit",
            "--target",
            "onnx",
            "--quant",
            "int8",
            "--calib",
            str(folder),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == CalibrationError.exit_code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_prompts_for_a_classifier_are_refused(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    result = runner.invoke(
        app,
        [
            "quantize",
            "analyze",
            "tiny-mobilevit",
            "--prompts",
            str(prompts),
            "--out",
            str(tmp_path / "s.json"),
        ],
    )
    assert result.exit_code == CalibrationError.exit_code
    assert "--prompts calibrates Stable Diffusion" in result.output
    assert not (tmp_path / "s.json").exists()


# ---------------------------------------------------------------- analyze


def test_analysis_covers_every_layer_and_measures_real_damage(sensitivity, mobilevit):
    out, output = sensitivity
    report = SensitivityReport.model_validate_json(out.read_text())
    assert report.complete and report.calibration.kind == "synthetic"
    assert [e.path for e in report.layers] == list(quantizable_layers(mobilevit.module))
    assert report.schemes == [
        LayerPrecision.INT8,
        LayerPrecision.INT8_DYNAMIC,
        LayerPrecision.INT8_WEIGHT,
        LayerPrecision.INT4_WEIGHT,
    ]
    int8 = [e.sqnr_db[LayerPrecision.INT8] for e in report.layers]
    # Quantizing a layer changes the output (the fake quantization is applied) ...
    assert sum(s < 100 for s in int8) > 0.9 * len(int8)
    # ... and quantizing every layer at once hurts more than any one layer alone.
    assert report.whole_model[LayerPrecision.INT8]["sqnr_db"] < min(int8)
    assert all(e.top1_agreement.keys() == set(report.schemes) for e in report.layers)
    # The terminal shows the most sensitive layer first, and a PNG chart was written beside.
    worst = min(report.layers, key=lambda e: e.sqnr_db[LayerPrecision.INT8])
    assert worst.path in output and "warning:" in output and "synthetic" in output
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attention_matmuls_are_measured_per_attention_block(sensitivity, mobilevit):
    out, output = sensitivity
    report = SensitivityReport.model_validate_json(out.read_text())
    # Every transformer layer's self-attention runs Q K^T and softmax V: two products each.
    blocks = [
        path
        for path, module in user_root(mobilevit.module).named_modules()
        if type(module).__name__ == "MobileViTSelfAttention"
    ]
    assert blocks and [e.path for e in report.attention_matmuls] == blocks
    assert all(e.product_count == 2 for e in report.attention_matmuls)
    for entry in report.attention_matmuls:
        # Activation schemes only (a weight-only scheme leaves weightless products alone), and
        # the int8 operands change the output: below the ceiling, yet far from noise.
        assert set(entry.sqnr_db) == {LayerPrecision.INT8, LayerPrecision.INT8_DYNAMIC}
        assert all(20 < sqnr < 100 for sqnr in entry.sqnr_db.values()), entry
    worst = min(report.attention_matmuls, key=lambda e: e.sqnr_db[LayerPrecision.INT8])
    assert "Most sensitive attention matmuls" in output and worst.path in output


@pytest.mark.parametrize("mask", ["none", "causal", "bool", "float"])
def test_attention_products_are_intercepted_inside_fused_attention(mask):
    """scaled_dot_product_attention, computed the reference way so its products can be
    quantized: unchanged when the operands are, and each product's operands are the ones
    quantized (Q and K, then the softmax probabilities and V)."""
    import torch
    from torch import nn

    from edgekit.quant.attention import intercepted_products

    class Attention(nn.Module):
        def forward(self, q, k, v, attn_mask=None, is_causal=False):
            return nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, is_causal=is_causal
            )

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Attention()
            self.gain = nn.Parameter(torch.tensor(2.0))  # a parameter: the user's root

        def forward(self, q, k, v, **kwargs):
            return self.block(q, k, v, **kwargs) * self.gain

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=generator) for _ in range(3))
    kwargs = {
        "none": {},
        "causal": {"is_causal": True},
        "bool": {"attn_mask": torch.rand(5, 5, generator=generator) > 0.3},
        "float": {"attn_mask": torch.randn(5, 5, generator=generator)},
    }[mask]
    model = Model()
    expected = model(q, k, v, **kwargs)
    seen: list[tuple[str, int, tuple]] = []

    def identity(path, index, operands):
        seen.append((path, index, tuple(o.shape for o in operands)))
        return operands

    with intercepted_products(model, identity):
        same = model(q, k, v, **kwargs)
    torch.testing.assert_close(same, expected, rtol=1e-5, atol=1e-5)
    heads = (2, 3, 5, 4)
    assert seen == [("block", 0, (heads, heads)), ("block", 1, ((2, 3, 5, 5), heads))]

    def zero_values(path, index, operands):
        return operands if index == 0 else [operands[0], torch.zeros_like(operands[1])]

    with intercepted_products(model, zero_values):
        assert torch.count_nonzero(model(q, k, v, **kwargs)) == 0
    # Outside the context nothing is intercepted any more.
    torch.testing.assert_close(model(q, k, v, **kwargs), expected)


def test_an_interrupted_analysis_resumes_keeping_completed_layers(tmp_path, mobilevit, monkeypatch):
    out = tmp_path / "sens.json"
    calibration = synthetic_calibration(mobilevit, count=2)
    schemes = (LayerPrecision.INT8_WEIGHT,)

    def stop_at_third(index, total, path):
        if index == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        analyze(mobilevit, calibration, out, schemes=schemes, on_layer=stop_at_third)
    partial = SensitivityReport.model_validate_json(out.read_text())
    assert len(partial.layers) == 3 and not partial.complete

    measured: list[str] = []
    original = analyze_module.fake_quantized

    def counting(layers, scheme, ranges):
        measured.append(",".join(layers))
        return original(layers, scheme, ranges)

    monkeypatch.setattr(analyze_module, "fake_quantized", counting)
    report = analyze(mobilevit, calibration, out, schemes=schemes)
    layer_count = len(quantizable_layers(mobilevit.module))
    # Only the layers not done before were measured (plus the one whole-model run).
    assert len(measured) == layer_count - 3 + 1
    assert report.complete and report.layers[:3] == partial.layers[:3]
    # A different calibration set is a different analysis: it starts over.
    other = synthetic_calibration(mobilevit, count=3)
    measured.clear()
    analyze(mobilevit, other, out, schemes=schemes)
    assert len(measured) == layer_count + 1


def test_4_bit_round_trip_is_symmetric_per_channel_and_keeps_each_channels_largest_weight():
    import torch

    from edgekit.quant.analyze import fake_quantize_weight_int4

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 3, 3, 3, generator=generator) * torch.arange(1.0, 7.0).reshape(
        -1, 1, 1, 1
    )
    weight[2] = 0.0  # an all-zero channel stays zero
    rounded = fake_quantize_weight_int4(weight)
    largest = weight.abs().amax(dim=(1, 2, 3))
    scale = (largest / 7).reshape(-1, 1, 1, 1)
    live = largest > 0
    steps = rounded[live] / scale[live]
    # Whole steps of max|w| / 7 in -7..7 (symmetric: -8 is never reached), within half a step ...
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= 7 + 1e-4
    assert torch.all((rounded - weight).abs() <= scale / 2 + 1e-6)
    # ... and each channel's largest weight exact, as the converters store it (no clipping).
    assert torch.allclose(rounded.abs().amax(dim=(1, 2, 3)), largest)
    assert torch.count_nonzero(rounded[2]) == 0 and len(torch.unique(rounded[0])) <= 15


def test_4_bit_weights_round_more_than_8_bit_ones(sensitivity):
    """Same layer, same inputs: 4 bits fewer cost about 6 dB each (measured: 14-33 dB, median
    24), for every layer whose rounding reaches the output at all."""
    out, _ = sensitivity
    report = SensitivityReport.model_validate_json(out.read_text())
    # The last stage's attention sees one patch (softmax of one score is 1): its query and key
    # layers change nothing, at any precision.
    reaching = [e for e in report.layers if e.sqnr_db[LayerPrecision.INT8_WEIGHT] < SQNR_CEILING_DB]
    assert len(reaching) > 0.9 * len(report.layers)
    gaps = [
        e.sqnr_db[LayerPrecision.INT8_WEIGHT] - e.sqnr_db[LayerPrecision.INT4_WEIGHT]
        for e in reaching
    ]
    assert min(gaps) > 6, min(gaps)
    assert 18 < float(np.median(gaps)) < 30, float(np.median(gaps))
    whole = report.whole_model
    assert (
        whole[LayerPrecision.INT4_WEIGHT]["sqnr_db"] < whole[LayerPrecision.INT8_WEIGHT]["sqnr_db"]
    )


# ---------------------------------------------------------------- plan


def test_plan_is_the_smallest_within_the_sqnr_budget(sensitivity, tmp_path):
    out, _ = sensitivity
    plan_path = tmp_path / "plan.json"
    result = runner.invoke(
        app, ["quantize", "plan", str(out), "--min-sqnr", "20", "--out", str(plan_path)]
    )
    assert result.exit_code == 0, result.output
    assert "Pareto curve" in result.output
    plan = read_plan(plan_path)
    report = SensitivityReport.model_validate_json(out.read_text())
    curve = candidates(report, LayerPrecision.INT8)
    quantized = {e.path for e in report.layers if plan.precision_of(e.path) == LayerPrecision.INT8}
    chosen = next(c for c in curve if set(c.quantized) == quantized)
    following = curve[curve.index(chosen) + 1] if chosen is not curve[-1] else None
    assert chosen.predicted_sqnr_db >= 20
    assert following is None or following.predicted_sqnr_db < 20
    # The layers kept float are the most sensitive ones.
    kept = [e for e in report.layers if e.path not in quantized]
    assert max(e.sqnr_db[LayerPrecision.INT8] for e in kept) <= min(
        e.sqnr_db[LayerPrecision.INT8] for e in report.layers if e.path in quantized
    )


def test_size_budget_picks_the_least_quantization_that_fits(sensitivity, tmp_path):
    out, _ = sensitivity
    report = SensitivityReport.model_validate_json(out.read_text())
    curve = candidates(report, LayerPrecision.INT8)
    budget_mb = (curve[0].size_bytes + curve[-1].size_bytes) / 2 / 1e6
    plan_path = tmp_path / "plan.json"
    result = runner.invoke(
        app, ["quantize", "plan", str(out), "--max-size", f"{budget_mb}", "--out", str(plan_path)]
    )
    assert result.exit_code == 0, result.output
    fitting = [c for c in curve if c.size_bytes <= budget_mb * 1e6]
    plan = read_plan(plan_path)
    quantized = [e.path for e in report.layers if plan.precision_of(e.path) != LayerPrecision.FP32]
    assert len(quantized) == fitting[0].layer_count


def test_a_size_budget_int8_cannot_meet_puts_the_most_tolerant_layers_at_4_bits(
    sensitivity, tmp_path
):
    out, _ = sensitivity
    report = SensitivityReport.model_validate_json(out.read_text())
    int8 = candidates(report, LayerPrecision.INT8_WEIGHT)
    ladder = candidates(report, LayerPrecision.INT8_WEIGHT, LayerPrecision.INT4_WEIGHT)
    # Halfway between every layer at 8 bits and every layer at 4: out of int8's reach.
    budget_mb = (int8[-1].size_bytes + ladder[-1].size_bytes) / 2 / 1e6
    plan_path = tmp_path / "plan.json"
    args = ["quantize", "plan", str(out), "--max-size", f"{budget_mb}", "--out", str(plan_path)]
    result = runner.invoke(app, [*args, "--scheme", "int8-weight"])
    assert result.exit_code == 2 and "No plan meets the budget" in result.output, result.output

    result = runner.invoke(app, [*args, "--scheme", "int8-weight", "--scheme", "int4-weight"])
    assert result.exit_code == 0, result.output
    assert "int4-weight" in plan_path.read_text()
    plan = read_plan(plan_path)
    precisions = {e.path: plan.precision_of(e.path) for e in report.layers}
    int4 = [e for e in report.layers if precisions[e.path] == LayerPrecision.INT4_WEIGHT]
    int8_kept = [e for e in report.layers if precisions[e.path] == LayerPrecision.INT8_WEIGHT]
    assert int4 and int8_kept and len(int4) + len(int8_kept) == len(report.layers)
    # The layers 4 bits hurt least went down, and only as many as the budget needs: one fewer
    # would not fit.
    assert min(e.sqnr_db[LayerPrecision.INT4_WEIGHT] for e in int4) >= max(
        e.sqnr_db[LayerPrecision.INT4_WEIGHT] for e in int8_kept
    )
    assert weight_bytes(report, precisions) <= budget_mb * 1e6
    index = next(i for i, c in enumerate(ladder) if c.precisions == precisions)
    assert ladder[index - 1].size_bytes > budget_mb * 1e6
    assert f"{len(int4)} layers int4-weight" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-sqnr", "60", "--max-size", "0.2"], "No plan meets the budget"),
        ([], "No budget given"),
        (["--min-sqnr", "20", "--scheme", "int3"], "Unknown scheme 'int3'"),
        (
            ["--min-sqnr", "20", "--scheme", "int8", "--scheme", "int8-weight"],
            "int8 and int8-weight store weights of the same size",
        ),
    ],
)
def test_impossible_or_missing_budgets_fail_in_one_line(sensitivity, tmp_path, args, message):
    out, _ = sensitivity
    plan_path = tmp_path / "plan.json"
    result = runner.invoke(app, ["quantize", "plan", str(out), *args, "--out", str(plan_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not plan_path.exists()


def test_unfinished_or_foreign_sensitivity_files_are_refused(sensitivity, tmp_path):
    out, _ = sensitivity
    unfinished = tmp_path / "unfinished.json"
    data = json.loads(out.read_text())
    data["complete"] = False
    unfinished.write_text(json.dumps(data))
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"hello": 1}')
    for path, message in [(unfinished, "did not finish"), (foreign, "not an edgekit sensitivity")]:
        result = runner.invoke(
            app,
            ["quantize", "plan", str(path), "--min-sqnr", "20", "--out", str(tmp_path / "p.json")],
        )
        assert result.exit_code == 2 and message in result.output, result.output


def test_a_photo_calibrated_export_is_verified_on_photos(photo_folder, tmp_path):
    """int8 ranges fit to photos would clip synthetic noise: the artifact is judged on the
    calibration photos instead, and the manifest says so."""
    from edgekit.artifact import read_manifest

    result = runner.invoke(
        app,
        [
            "export",
            "tiny-mobilevit",
            "--target",
            "onnx",
            "--quant",
            "int8",
            "--calib",
            str(photo_folder),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    component = read_manifest(next(tmp_path.iterdir())).component()
    verification = component.verification
    assert verification.input_source == f"the first 4 of 4 images from {photo_folder}"
    assert verification.input_seeds == [0, 1, 2, 3]
    assert component.calibration.kind == "images" and "warning:" not in result.output
